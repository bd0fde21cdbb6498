//! A small positioned YAML tree built from `saphyr-parser` events.
//!
//! Why not `saphyr::MarkedYaml`: its mappings are hash maps, so a duplicated key silently
//! replaces the first one, and we want to report it. Here a mapping keeps every entry in
//! document order, and each node carries the 1-based `line:column` where it starts.
//! Scalars are resolved with the YAML 1.2 core schema (`saphyr::Scalar`), so `yes` is a
//! string and `true` a boolean.
//! Long one-line lists of simple scalars (big CIDR lists) are read past the parser's scanner,
//! into the same nodes at the same positions: see [`super::flow`].

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};

use saphyr::{Scalar, ScalarStyle, Tag};
use saphyr_parser::{Event, Parser, Span};

use super::flow::{self, Flow};

/// 1-based position of a node in the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    fn of(span: Span) -> Self {
        Self {
            line: span.start.line(),
            column: span.start.col() + 1,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Entries in document order, duplicates kept.
    Map(Vec<(Node, Node)>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub kind: Kind,
    pub pos: Pos,
}

impl Node {
    /// What the node is, for "expected X, found Y" messages.
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::Null => "nothing (null)".into(),
            Kind::Bool(b) => format!("boolean {b}"),
            Kind::Int(i) => format!("integer {i}"),
            Kind::Float(f) => format!("number {f}"),
            Kind::Str(s) => format!("string {:?}", super::fields::shown(s)),
            Kind::Seq(_) => "a list".into(),
            Kind::Map(_) => "a mapping".into(),
        }
    }
}

/// A YAML syntax problem: the parser stops at the first one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

/// Aliases are expanded by copying; this bounds the copied nodes so that a "billion laughs"
/// document fails fast instead of exhausting memory. Nodes written out in the file are not
/// bounded here: they cost what the file costs (a 100k-CIDR network list is a real config).
const MAX_ALIAS_COPIES: usize = 100_000;

/// A collection being built; `size` counts the nodes of its subtree so far.
enum Frame {
    Seq {
        pos: Pos,
        anchor: usize,
        size: usize,
        items: Vec<Node>,
    },
    Map {
        pos: Pos,
        anchor: usize,
        size: usize,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
    },
}

#[derive(Default)]
struct Builder<'t> {
    stack: Vec<Frame>,
    anchors: HashMap<usize, (Node, usize)>,
    /// Nodes created by expanding aliases so far.
    copies: usize,
    root: Option<Node>,
    /// Lists emptied out of the parsed text (see [`flow`]), in document order: each is filled
    /// back in when the parser reports a sequence at its position.
    hollowed: VecDeque<Flow<'t>>,
    /// Set when the sequence just filled in must end at once, as an emptied list does.
    filled: bool,
}

impl<'t> Builder<'t> {
    /// Attaches a finished node to its parent (or makes it the document root). `size` is the
    /// node count of its subtree.
    fn finish(&mut self, node: Node, anchor: usize, size: usize) -> Result<(), SyntaxError> {
        if anchor != 0 {
            self.anchors.insert(anchor, (node.clone(), size));
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq {
                items, size: total, ..
            }) => {
                *total += size;
                items.push(node);
            }
            Some(Frame::Map {
                entries,
                key,
                size: total,
                ..
            }) => {
                *total += size;
                match key.take() {
                    None => *key = Some(node),
                    Some(k) => entries.push((k, node)),
                }
            }
        }
        Ok(())
    }

    fn scalar(
        &mut self,
        text: Cow<'_, str>,
        style: ScalarStyle,
        anchor: usize,
        tag: Option<Cow<'_, Tag>>,
        pos: Pos,
    ) -> Result<(), SyntaxError> {
        // Only a tag can make resolution fail, and only then is the text needed again: a
        // copy of every scalar (10k CIDRs are 10k of them) is not.
        let shown = tag.is_some().then(|| text.clone());
        let kind = match Scalar::parse_from_cow_and_metadata(text, style, tag.as_ref()) {
            Some(Scalar::Null) => Kind::Null,
            Some(Scalar::Boolean(b)) => Kind::Bool(b),
            Some(Scalar::Integer(i)) => Kind::Int(i),
            Some(Scalar::FloatingPoint(f)) => Kind::Float(f.into_inner()),
            Some(Scalar::String(s)) => Kind::Str(s.into_owned()),
            None => {
                let tag = tag.map(|t| t.to_string()).unwrap_or_default();
                let text = shown.unwrap_or_default();
                return Err(SyntaxError {
                    pos,
                    message: format!("value {text:?} does not match its tag {tag}"),
                });
            }
        };
        self.finish(Node { kind, pos }, anchor, 1)
    }

    fn event(&mut self, ev: Event<'_>, span: Span) -> Result<(), SyntaxError> {
        let pos = Pos::of(span);
        if let Event::Scalar(_, _, _, Some(tag))
        | Event::SequenceStart(_, Some(tag))
        | Event::MappingStart(_, Some(tag)) = &ev
        {
            check_tag(tag, pos)?;
        }
        if std::mem::take(&mut self.filled) && ev != Event::SequenceEnd {
            return Err(SyntaxError {
                pos,
                message: "an emptied list was not empty".into(),
            });
        }
        match ev {
            Event::Scalar(text, style, anchor, tag) => {
                self.scalar(text, style, anchor, tag, pos)?
            }
            Event::SequenceStart(anchor, _) => {
                self.stack.push(Frame::Seq {
                    pos,
                    anchor,
                    size: 1,
                    items: Vec::new(),
                });
                let here = self.hollowed.front().is_some_and(|f| f.pos == pos);
                if let Some(f) = here.then(|| self.hollowed.pop_front()).flatten() {
                    if let Some(Frame::Seq { items, .. }) = self.stack.last_mut() {
                        items.reserve_exact(f.items.len());
                    }
                    for it in f.items {
                        self.scalar(Cow::Borrowed(it.text), it.style, 0, None, it.pos)?;
                    }
                    self.filled = true;
                }
            }
            Event::MappingStart(anchor, _) => self.stack.push(Frame::Map {
                pos,
                anchor,
                size: 1,
                entries: Vec::new(),
                key: None,
            }),
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor, size) = match self.stack.pop() {
                    Some(Frame::Seq {
                        pos,
                        anchor,
                        size,
                        items,
                    }) => (
                        Node {
                            kind: Kind::Seq(items),
                            pos,
                        },
                        anchor,
                        size,
                    ),
                    Some(Frame::Map {
                        pos,
                        anchor,
                        size,
                        entries,
                        ..
                    }) => (
                        Node {
                            kind: Kind::Map(entries),
                            pos,
                        },
                        anchor,
                        size,
                    ),
                    None => unreachable!("the parser balances collection events"),
                };
                self.finish(node, anchor, size)?;
            }
            Event::Alias(id) => {
                // The parser rejects undefined aliases, so the anchor exists.
                let (mut node, size) = self
                    .anchors
                    .get(&id)
                    .cloned()
                    .expect("alias of a known anchor");
                node.pos = pos;
                self.copies += size;
                if self.copies > MAX_ALIAS_COPIES {
                    return Err(SyntaxError {
                        pos,
                        message: format!(
                            "document too large: more than {MAX_ALIAS_COPIES} nodes copied by aliases"
                        ),
                    });
                }
                self.finish(node, 0, size)?;
            }
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
            Event::DocumentStart(_) => {
                if self.root.is_some() {
                    return Err(SyntaxError {
                        pos,
                        message: "only one YAML document is allowed in a config file".into(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Refuses every tag but the core schema's: a config is plain data, and a tag such as
/// `!!python/object` or `!Ref` asks for a meaning this reader would otherwise silently drop.
fn check_tag(tag: &Tag, pos: Pos) -> Result<(), SyntaxError> {
    const CORE: [&str; 7] = ["str", "int", "bool", "null", "float", "seq", "map"];
    if tag.is_yaml_core_schema() && CORE.contains(&tag.suffix.as_str()) {
        return Ok(());
    }
    let shown = if tag.is_yaml_core_schema() {
        format!("!!{}", tag.suffix)
    } else if tag.handle == "!" {
        format!("!{}", tag.suffix)
    } else {
        format!("{}{}", tag.handle, tag.suffix)
    };
    Err(SyntaxError {
        pos,
        message: format!(
            "YAML tag `{shown}` is not supported: a nodewall config is plain data (only the core schema's !!str, !!int, !!bool, !!null, !!float, !!seq and !!map)"
        ),
    })
}

/// Parses one YAML document. An empty document is `Null` at 1:1.
pub fn load(text: &str) -> Result<Node, SyntaxError> {
    let flows = flow::find(text);
    if !flows.is_empty() {
        // Any error, or a list not found where it was cut out, and the original text is
        // parsed the slow way: it is the one that tells what is wrong, and where.
        let hollow = flow::hollow(text, &flows);
        if let Ok((root, rest)) = build(&hollow, flows) {
            if rest.is_empty() {
                return Ok(root);
            }
        }
    }
    build(text, Vec::new()).map(|(root, _)| root)
}

/// The tree of `text`, with the lists of `hollowed` filled back in; the lists that were not
/// found are returned.
fn build<'t>(text: &str, hollowed: Vec<Flow<'t>>) -> Result<(Node, Vec<Flow<'t>>), SyntaxError> {
    let mut builder = Builder {
        hollowed: hollowed.into(),
        ..Builder::default()
    };
    for item in Parser::new_from_str(text) {
        let (ev, span) = item.map_err(|e| SyntaxError {
            pos: Pos {
                line: e.marker().line(),
                column: e.marker().col() + 1,
            },
            message: format!("YAML syntax error: {}", e.info()),
        })?;
        builder.event(ev, span)?;
    }
    let root = builder.root.unwrap_or(Node {
        kind: Kind::Null,
        pos: Pos { line: 1, column: 1 },
    });
    Ok((root, builder.hollowed.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(line: usize, column: usize) -> Pos {
        Pos { line, column }
    }

    #[test]
    fn positions_and_types() {
        let doc = load("a: 1\nb:\n  - \"x\"\n  - yes\n  - true\n").unwrap();
        let Kind::Map(entries) = &doc.kind else {
            panic!("{doc:?}")
        };
        assert_eq!(entries[0].0.pos, at(1, 1));
        assert_eq!(
            entries[0].1,
            Node {
                kind: Kind::Int(1),
                pos: at(1, 4)
            }
        );
        let Kind::Seq(items) = &entries[1].1.kind else {
            panic!()
        };
        assert_eq!(
            items[0],
            Node {
                kind: Kind::Str("x".into()),
                pos: at(3, 5)
            }
        );
        assert_eq!(items[1].kind, Kind::Str("yes".into()));
        assert_eq!(items[2].kind, Kind::Bool(true));
    }

    #[test]
    fn tags_outside_the_core_schema_are_refused() {
        for doc in [
            "a: !!python/object:os.system x\n",
            "a: !Ref x\n",
            "a: !!set {x: null}\n",
            "a: !custom [1]\n",
        ] {
            let e = load(doc).unwrap_err();
            assert!(e.message.contains("is not supported"), "{doc}: {e:?}");
            assert_eq!(e.pos.line, 1, "{doc}");
        }
        assert_eq!(load("a: !!str 5\n").unwrap(), load("a: \"5\"\n").unwrap());
    }

    #[test]
    fn duplicate_keys_are_kept() {
        let doc = load("a: 1\na: 2\n").unwrap();
        let Kind::Map(entries) = &doc.kind else {
            panic!()
        };
        assert_eq!(entries.len(), 2);
    }

    #[test]
    fn aliases_expand_at_the_alias_position() {
        let doc = load("a: &x [1]\nb: *x\n").unwrap();
        let Kind::Map(entries) = &doc.kind else {
            panic!()
        };
        assert_eq!(entries[1].1.pos, at(2, 4));
        assert_eq!(
            entries[1].1.kind,
            Kind::Seq(vec![Node {
                kind: Kind::Int(1),
                pos: at(1, 8)
            }])
        );
    }

    #[test]
    fn syntax_errors_and_extra_documents() {
        assert!(load("a: [1\n").is_err());
        let e = load("a: 1\n---\nb: 2\n").unwrap_err();
        assert_eq!(e.pos.line, 2);
        assert_eq!(load("").unwrap().kind, Kind::Null);
    }

    #[test]
    fn alias_bombs_are_bounded() {
        let mut doc = String::from("a0: &a0 [1,1,1,1,1,1,1,1,1,1]\n");
        for i in 1..8 {
            let p = i - 1;
            doc += &format!(
                "a{i}: &a{i} [*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p}]\n"
            );
        }
        // Never Debug-print the expanded tree: it is what this test guards against.
        assert!(matches!(load(&doc), Err(e) if e.message.contains("too large")));
    }

    /// `n` items of `item(i)`, as the inside of a flow list.
    fn items(n: usize, item: impl Fn(usize) -> String) -> String {
        (0..n).map(item).collect::<Vec<_>>().join(", ")
    }

    /// The shortcut past the scanner (see `flow`) gives the tree, positions included, or the
    /// error that the parser alone gives; `taken` says whether it must have been used.
    fn same_as_parser(doc: &str, taken: bool) {
        let slow = build(doc, Vec::new()).map(|(root, _)| root);
        assert_eq!(load(doc), slow, "{doc}");
        let flows = flow::find(doc);
        let used = !flows.is_empty()
            && build(&flow::hollow(doc, &flows), flows).is_ok_and(|(_, rest)| rest.is_empty());
        assert_eq!(used, taken, "{}", &doc[..doc.len().min(120)]);
    }

    #[test]
    fn long_flow_lists_read_as_the_parser_reads_them() {
        let quoted = items(40, |i| format!("\"198.18.{i}.0/24\""));
        let mixed = items(20, |i| {
            [
                "\"fd00::/64\"",
                "'10.0.0.0/8'",
                "10.1.0.0/16",
                "fd00::1",
                "a::b",
                "true",
                "null",
                "0x1f",
                "1e3",
                "12",
                "yes",
                "\" spaced  out \"",
                "'it''s'",
                "cluster-net_1",
            ][i % 14]
                .to_string()
        });
        let big = items(20_000, |i| format!("\"fd00:0:{i:x}::/64\""));
        for doc in [
            format!("rules:\n  - name: a\n    from: [{quoted}]\n    ports: [\"1\"]\n"),
            format!("a: [{mixed}]   # comment\nb: [{quoted}]\nc:\n  - [{quoted}]\n"),
            format!("[{quoted}]\n"),
            format!("a: [ {quoted} ]\n"),
            format!("n\u{e9}: 1\nb: [{quoted}]\n"),
            format!("? [{quoted}]\n: v\n"),
            format!("a: [{big}]\n"),
        ] {
            same_as_parser(&doc, true);
        }
        for doc in [
            // Text, not lists: the shortcut finds them but the parser does not report them.
            format!("a: |\n  b: [{quoted}]\nc: [{quoted}]\n"),
            format!("a: \"x\n  [{quoted}]\"\n"),
            // Forms the shortcut leaves to the parser.
            format!("a: &x [{quoted}]\nb: *x\n"),
            format!("a: !!seq [{quoted}]\n"),
            format!("a: [{quoted}, ]\n"),
            format!("a: [{quoted}, x: y]\n"),
            format!("a: [{quoted}, fd00::]\n"),
            format!("a: [{quoted}, \"\\t\"]\n"),
            format!("a: [{quoted}, \"caf\u{e9}\"]\n"),
            format!("a: [{quoted}, two words]\n"),
            format!("a: [{quoted}]: v\n"),
            format!("a: [{quoted}]#x\n"),
            format!("a: {{b: [{quoted}]}}\n"),
            format!("a: [{quoted}]\r\nb: 1\r\n"),
            format!("a: [{}]\n", items(15, |i| i.to_string())),
            // Errors are the parser's.
            format!("a: [{quoted}]\n b: 1\n"),
            format!("a: [{quoted}]\n---\nb: [{quoted}]\n"),
            format!("a: [{quoted}]\nb: [1\n"),
            format!("a: [{quoted}]\n\tb: 1\n"),
        ] {
            same_as_parser(&doc, false);
        }
    }

    #[test]
    fn large_literal_documents_are_not_bounded() {
        // 150k CIDRs written out: a real (if large) network list, not an alias bomb.
        let mut doc = String::from("cidrs:\n");
        for i in 0..150_000u32 {
            doc += &format!("  - 10.{}.{}.0/24\n", i >> 8 & 0xff, i & 0xff);
        }
        assert!(load(&doc).is_ok());
    }
}
