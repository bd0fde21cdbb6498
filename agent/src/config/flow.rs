//! A shortcut past the YAML scanner for the one shape that makes configs big: a long flow
//! sequence of simple scalars on one line (`from: ["10.0.0.0/8", "fd00::/8", ...]` with
//! thousands of CIDRs). `saphyr-parser` scans such a list a character at a time, which was
//! most of the wall time of `nodewall apply` on a 10k-CIDR config; the bytes of these items
//! need no YAML processing at all (no escapes, no folding, no indicators).
//!
//! How it stays exact: [`find`] recognises only lists whose every item is a double-quoted
//! string without escapes, a single-quoted string without quotes, or a plain word of address
//! characters, on a single line; [`hollow`] empties those lists (`[...]` becomes `[]`, nothing
//! else moves: every line and column stays where it was). The parser then reads the hollowed
//! text, and the tree builder fills each list it finds back in with the items read here. The
//! text before each `[` is the same in both documents, so when the parser reports a sequence
//! starting at that `[` it is the same sequence it would have read in the original; a `[` that
//! turned out to be text (inside a block scalar, say) is never reported, and then, like on any
//! error, the original text is parsed the slow way. Errors therefore always come from the
//! original text, exactly as before.

use super::yaml::Pos;
use saphyr::ScalarStyle;

/// Lists shorter than this are left to the parser: the shortcut only pays on long ones.
const MIN_ITEMS: usize = 16;

/// One list found in the text, with its items.
#[derive(Debug)]
pub struct Flow<'t> {
    /// Byte offsets of its `[` and `]`.
    open: usize,
    close: usize,
    /// Where the parser will report the sequence to start (its `[`).
    pub pos: Pos,
    pub items: Vec<Item<'t>>,
}

#[derive(Debug)]
pub struct Item<'t> {
    /// The scalar's value: its text without the quotes.
    pub text: &'t str,
    pub style: ScalarStyle,
    pub pos: Pos,
}

/// Every long single-line list of simple scalars in `text`, in document order. Empty when the
/// text has a carriage return (line breaks are then not only `\n`, and positions would need
/// the parser's own line counting).
pub fn find(text: &str) -> Vec<Flow<'_>> {
    if text.contains('\r') {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut start = 0;
    for (n, line) in text.split('\n').enumerate() {
        if let Some(flow) = in_line(text, start, line, n + 1) {
            out.push(flow);
        }
        start += line.len() + 1;
    }
    out
}

/// The text with every list of `flows` emptied (`[]`), all else in place.
pub fn hollow(text: &str, flows: &[Flow<'_>]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for f in flows {
        out.push_str(&text[at..=f.open]);
        at = f.close;
    }
    out.push_str(&text[at..]);
    out
}

/// The list starting at the first `[` of `line` (which starts at byte `start` of `text`),
/// if it is one the shortcut handles.
fn in_line<'t>(text: &'t str, start: usize, line: &str, number: usize) -> Option<Flow<'t>> {
    let open = line.find('[')?;
    let before = &line.as_bytes()[..open];
    // Columns are counted in characters; ASCII keeps them equal to byte offsets. A quote or
    // `#` before the `[` means it may be inside a string or a comment: not worth a try.
    if !before
        .iter()
        .all(|&b| b.is_ascii() && !matches!(b, b'"' | b'\'' | b'#' | b'{' | b'[' | b'\t'))
    {
        return None;
    }
    let b = line.as_bytes();
    let mut i = open + 1;
    let mut items = Vec::new();
    let close = loop {
        i = skip_spaces(b, i);
        if items.is_empty() && b.get(i) == Some(&b']') {
            break i;
        }
        let (from, to, end, style) = item(b, i)?;
        items.push(Item {
            text: &text[start + from..start + to],
            style,
            pos: Pos {
                line: number,
                column: i + 1,
            },
        });
        i = skip_spaces(b, end);
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b']') => break i,
            _ => return None,
        }
    };
    // Only a line end or a comment may follow: a `:` would make the list a mapping key, whose
    // length the parser limits, and anything else is for the parser to judge.
    let rest = &b[close + 1..];
    let tail = skip_spaces(rest, 0);
    let fine = tail == rest.len() || (tail > 0 && rest[tail] == b'#');
    if !fine || items.len() < MIN_ITEMS {
        return None;
    }
    Some(Flow {
        open: start + open,
        close: start + close,
        pos: Pos {
            line: number,
            column: open + 1,
        },
        items,
    })
}

fn skip_spaces(b: &[u8], mut i: usize) -> usize {
    while b.get(i) == Some(&b' ') {
        i += 1;
    }
    i
}

/// The item starting at `i`: its value's byte range, where it ends, and its style. `None` for
/// anything but the three simple forms (a trailing comma included: `, ]`).
fn item(b: &[u8], i: usize) -> Option<(usize, usize, usize, ScalarStyle)> {
    match *b.get(i)? {
        q @ (b'"' | b'\'') => {
            let len = b[i + 1..].iter().position(|&c| c == q)?;
            let value = &b[i + 1..i + 1 + len];
            // Printable ASCII only; in a double-quoted string no escapes.
            if !value
                .iter()
                .all(|&c| (b' '..=b'~').contains(&c) && c != b'\\')
            {
                return None;
            }
            let style = if q == b'"' {
                ScalarStyle::DoubleQuoted
            } else {
                ScalarStyle::SingleQuoted
            };
            Some((i + 1, i + 1 + len, i + len + 2, style))
        }
        c if c.is_ascii_alphanumeric() => {
            let mut j = i;
            while let Some(&c) = b.get(j) {
                // A `:` belongs to the word only when another word character follows (else
                // it would make a mapping: `[a: b]`).
                let word =
                    plain(c) || (c == b':' && b.get(j + 1).is_some_and(|&n| plain(n) || n == b':'));
                if !word {
                    break;
                }
                j += 1;
            }
            Some((i, j, j, ScalarStyle::Plain))
        }
        _ => None,
    }
}

/// Characters of a plain item besides `:`: what addresses, prefixes and names are made of.
fn plain(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'/' | b'-' | b'_')
}
