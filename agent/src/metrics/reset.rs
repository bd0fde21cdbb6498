//! Turning raw kernel counters, which go back to zero when a table or program is replaced,
//! into increments of monotonic counters.

use std::collections::HashMap;

use super::{DropLabels, RuleCountLabels};

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub(super) enum Key {
    Rule(RuleCountLabels),
    Drop(DropLabels),
}

/// The last raw (packets, bytes) seen for each series. Series are never forgotten: a rule that
/// is removed and later added back starts again from zero in the kernel, which this detects.
#[derive(Default)]
pub(super) struct ResetTracker {
    last: HashMap<Key, (u64, u64)>,
}

impl ResetTracker {
    /// Records a raw reading and returns how much to add to the exported (packets, bytes).
    pub(super) fn advance(&mut self, key: Key, packets: u64, bytes: u64) -> (u64, u64) {
        let last = self.last.entry(key).or_insert((0, 0));
        let out = (delta(last.0, packets), delta(last.1, bytes));
        *last = (packets, bytes);
        out
    }
}

/// New counts since `last`: a value below `last` means the kernel counter was reset, so all
/// of it is new.
fn delta(last: u64, raw: u64) -> u64 {
    if raw >= last {
        raw - last
    } else {
        raw
    }
}
