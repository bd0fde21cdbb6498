//! Typed access to the YAML tree that records an error instead of stopping, so that one run
//! reports every problem in the file.
//!
//! Every accessor takes the field path of the node it reads; on a mismatch it records
//! `path: expected X, found Y` at the node's position and returns `None`, and the caller
//! carries on with the next field.

use super::parse::ConfigError;
use super::suggest::{did_you_mean, one_of};
use super::yaml::{Kind, Node, Pos};

/// `parent.key`, or `key` at the top level.
pub fn field(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// `parent[i]`.
pub fn index(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

/// Collected errors.
#[derive(Default)]
pub struct Ctx {
    pub errors: Vec<ConfigError>,
}

/// The entries of a mapping whose keys were all strings, known and unique.
pub struct Fields<'n> {
    pub pos: Pos,
    pub path: String,
    /// Key, key position, value.
    entries: Vec<(&'n str, Pos, &'n Node)>,
}

impl<'n> Fields<'n> {
    pub fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, _, v)| *v)
    }

    /// Entries in document order, with the position of each key.
    pub fn iter(&self) -> impl Iterator<Item = (&'n str, Pos, &'n Node)> + '_ {
        self.entries.iter().copied()
    }

    /// The value of an optional key: `default` when absent, `None` when present but invalid.
    pub fn optional<T>(
        &self,
        key: &str,
        default: T,
        read: impl FnOnce(&'n Node, &str) -> Option<T>,
    ) -> Option<T> {
        match self.get(key) {
            Some(node) => read(node, &self.path_of(key)),
            None => Some(default),
        }
    }

    /// Path of the value of `key`.
    pub fn path_of(&self, key: &str) -> String {
        field(&self.path, key)
    }
}

/// Longest error message kept whole (see [`Ctx::error`]).
const MAX_MESSAGE: usize = 1024;

impl Ctx {
    /// Records an error. Messages quote the values they complain about; one that quotes a
    /// huge value (a 50 MB scalar) is cut, so that the error stays readable.
    pub fn error(&mut self, path: impl Into<String>, pos: Pos, message: impl Into<String>) {
        let mut message = message.into();
        if message.len() > MAX_MESSAGE {
            let cut = (0..=MAX_MESSAGE)
                .rev()
                .find(|&i| message.is_char_boundary(i))
                .unwrap_or(0);
            let total = message.len();
            message.truncate(cut);
            message.push_str(&format!("... (message cut, {total} bytes)"));
        }
        self.errors.push(ConfigError {
            path: path.into(),
            line: pos.line,
            column: pos.column,
            message,
        });
    }

    fn wrong_type(&mut self, path: &str, node: &Node, expected: &str) {
        let mut msg = format!("expected {expected}, found {}", node.describe());
        if let Kind::Null = node.kind {
            msg.push_str("; remove the key to use the default");
        }
        self.error(path_or_doc(path), node.pos, msg);
    }

    /// A mapping with string keys. `known = None` accepts any key (user-chosen names);
    /// otherwise unknown keys are reported with a suggestion and skipped. Duplicate keys are
    /// reported at the second occurrence and the first is kept.
    pub fn map<'n>(
        &mut self,
        node: &'n Node,
        path: &str,
        known: Option<&[&str]>,
    ) -> Option<Fields<'n>> {
        let Kind::Map(entries) = &node.kind else {
            self.wrong_type(path, node, "a mapping");
            return None;
        };
        let mut fields = Fields {
            pos: node.pos,
            path: path.to_string(),
            entries: Vec::new(),
        };
        let mut seen: Vec<(&str, Pos)> = Vec::new();
        for (key, value) in entries {
            let Kind::Str(name) = &key.kind else {
                self.error(
                    path_or_doc(path),
                    key.pos,
                    format!("keys must be strings, found {}", key.describe()),
                );
                continue;
            };
            let key_path = field(path, name);
            if let Some((_, first)) = seen.iter().find(|(k, _)| k == name) {
                self.error(
                    key_path,
                    key.pos,
                    format!(
                        "duplicate key `{name}` (first given at line {})",
                        first.line
                    ),
                );
                continue;
            }
            seen.push((name, key.pos));
            if let Some(known) = known {
                if !known.contains(&name.as_str()) {
                    let hint = did_you_mean(name, known);
                    self.error(
                        key_path,
                        key.pos,
                        format!(
                            "unknown key `{name}`; {hint}valid keys: {}",
                            known.join(", ")
                        ),
                    );
                    continue;
                }
            }
            fields.entries.push((name, key.pos, value));
        }
        Some(fields)
    }

    pub fn seq<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n [Node]> {
        match &node.kind {
            Kind::Seq(items) => Some(items),
            _ => {
                self.wrong_type(path, node, "a list");
                None
            }
        }
    }

    /// Reads each item of a list with `read`; `None` if the list or any item was invalid
    /// (every item is still read, so that all their errors are reported).
    pub fn each<'n, T>(
        &mut self,
        node: &'n Node,
        path: &str,
        mut read: impl FnMut(&mut Ctx, &'n Node, String) -> Option<T>,
    ) -> Option<Vec<T>> {
        let items = self.seq(node, path)?;
        let out: Vec<Option<T>> = items
            .iter()
            .enumerate()
            .map(|(i, item)| read(self, item, index(path, i)))
            .collect();
        out.into_iter().collect()
    }

    pub fn str<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n str> {
        match &node.kind {
            Kind::Str(s) => Some(s),
            Kind::Int(_) | Kind::Float(_) | Kind::Bool(_) => {
                self.error(
                    path,
                    node.pos,
                    format!(
                        "expected a string, found {}; quote it if it is meant as text",
                        node.describe()
                    ),
                );
                None
            }
            _ => {
                self.wrong_type(path, node, "a string");
                None
            }
        }
    }

    pub fn bool(&mut self, node: &Node, path: &str) -> Option<bool> {
        match node.kind {
            Kind::Bool(b) => Some(b),
            _ => {
                self.wrong_type(path, node, "true or false");
                None
            }
        }
    }

    /// A string out of a fixed set of words, e.g. `backend: nft|xdp|auto`.
    pub fn choice<T: Copy>(
        &mut self,
        node: &Node,
        path: &str,
        what: &str,
        choices: &[(&str, T)],
    ) -> Option<T> {
        let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
        let Kind::Str(s) = &node.kind else {
            self.wrong_type(path, node, &one_of(&names));
            return None;
        };
        if let Some((_, v)) = choices.iter().find(|(n, _)| n == s) {
            return Some(*v);
        }
        let hint = did_you_mean(s, &names);
        self.error(
            path,
            node.pos,
            format!("unknown {what} `{s}`; {hint}expected {}", one_of(&names)),
        );
        None
    }
}

/// Errors about the document itself have no field path.
pub fn path_or_doc(path: &str) -> &str {
    if path.is_empty() {
        DOCUMENT
    } else {
        path
    }
}

/// Path used for errors about the whole document (syntax, top-level type).
pub const DOCUMENT: &str = "(document)";
