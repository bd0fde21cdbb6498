//! What changed between two policies, by rule name, for the one log line of each apply.

use std::collections::BTreeMap;
use std::fmt;

use crate::policy::{Policy, Rule};

#[derive(Debug, Default, PartialEq, Eq)]
pub struct PolicyDiff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Same name, different protocol, ports, sources or action.
    pub changed: Vec<String>,
}

impl PolicyDiff {
    pub fn between(old: Option<&Policy>, new: &Policy) -> Self {
        let index = |p: &'_ Policy| -> BTreeMap<String, Rule> {
            p.rules
                .iter()
                .map(|r| (r.name.clone(), r.clone()))
                .collect()
        };
        let old = old.map(index).unwrap_or_default();
        let new = index(new);
        let mut d = PolicyDiff::default();
        for (name, rule) in &new {
            match old.get(name) {
                None => d.added.push(name.clone()),
                Some(o) if o != rule => d.changed.push(name.clone()),
                Some(_) => {}
            }
        }
        d.removed = old
            .keys()
            .filter(|n| !new.contains_key(*n))
            .cloned()
            .collect();
        d
    }
}

/// `a,b`, for the log fields that name rules; their counts are numeric fields of their own,
/// so that JSON logs carry numbers where a program would sum or compare.
pub struct Names<'a>(pub &'a [String]);

impl fmt::Display for Names<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(","))
    }
}
