//! What the kernel's sets hold, remembered from our own last commit, so that a re-apply does not
//! have to dump them.
//!
//! Dumping the elements of every set is what a re-apply of a large policy spends its time on
//! (10k CIDRs are 20k kernel elements), although after our own commit we know exactly what the
//! sets hold. The kernel's ruleset generation id (NFT_MSG_GETGEN) says whether anybody committed
//! anything since: it goes up by one on every nftables transaction in the namespace, by any
//! process and on any table. So after a commit that moved the id by exactly one (ours alone),
//! [`Installed`] records the id and, per set, a fingerprint of the planned content. The next
//! apply trusts a set without dumping it only while the kernel still reports that very id and
//! the new plan wants the set with the same fingerprint; anything else is dumped as before.
//!
//! The record also keeps the rest of the table as our commit left it ([`Layout`]): the sets'
//! shapes, the counters, the chains and every rule's handle (echoed by the kernel at commit)
//! with a hash of its planned definition. While the id is unchanged the table is exactly that,
//! so a re-apply dumps nothing but the elements of the sets whose content changed, and
//! compares rules by hashing their definitions instead of building and printing them: the
//! fixed cost of a small change no longer grows with the table.
//!
//! The record lives in the [`Nft`](super::Nft) value (the daemon's applies) and, for one-shot
//! `nodewall apply` processes, in a small file of the state directory ([`Store`]), keyed by the
//! boot and the network namespace's cookie so that another namespace or boot never reads it.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::super::names;
use super::super::plan::{RuleDef, Ruleset, SetDef};
use super::elems::{key_spec, set_flags};
use super::recorded::{fingerprint, overwrite};
use super::state::{Current, CurrentChain, CurrentCounter, CurrentRule, CurrentSet, RulePrints};

/// Bumped whenever what a fingerprint stands for changes (e.g. how elements are encoded).
const FORMAT: u32 = 6;
const FILE: &str = "nft-sets.json";

/// The sets as our last commit left them, at ruleset generation id `genid`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installed {
    pub genid: u32,
    /// Set name -> [`fingerprint`] of the planned set it holds exactly.
    pub sets: BTreeMap<String, u64>,
    /// Everything but the set elements, when the commit told every rule's handle.
    pub layout: Option<Layout>,
}

/// The table as our commit left it, elements aside.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// The generation in the base rule's comment.
    pub generation: u64,
    /// Set name -> (key type, key length, set flags, declared size or 0).
    pub sets: BTreeMap<String, (u32, u32, u32, u32)>,
    pub counters: Vec<String>,
    pub chains: Vec<LaidChain>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaidChain {
    pub name: String,
    pub hook: Option<(u32, i32)>,
    /// Every rule as (kernel handle, [`rule_print`] of its definition), in order.
    pub rules: Vec<(u64, u64)>,
}

impl Layout {
    /// The layout of `plan` (installed exactly, at `generation`) whose chain `i` holds rules
    /// with the handles `handles[i]`.
    pub fn of(plan: &Ruleset, generation: u64, handles: Vec<Vec<u64>>) -> Option<Self> {
        let chains = plan
            .chains
            .iter()
            .zip(handles)
            .map(|(c, h)| {
                (c.rules.len() == h.len()).then(|| LaidChain {
                    name: c.name.clone(),
                    hook: c.hook.map(|h| h.kernel()),
                    rules: h.into_iter().zip(c.rules.iter().map(rule_print)).collect(),
                })
            })
            .collect::<Option<Vec<_>>>()?;
        (chains.len() == plan.chains.len()).then(|| Self {
            generation,
            sets: plan
                .sets
                .iter()
                .map(|s| {
                    let (key_type, key_len, _) = key_spec(s.kind);
                    let size = s.size().unwrap_or(0);
                    (s.name.clone(), (key_type, key_len, set_flags(s.kind), size))
                })
                .collect(),
            counters: plan.counters.iter().map(|c| c.name.clone()).collect(),
            chains,
        })
    }

    /// The table this layout describes, as a dump would show it with no elements read: rules
    /// carry [`rule_print`]s, counters no values (the diff never needs them for a table it
    /// keeps).
    pub fn current(&self) -> Current {
        let base_comment = format!("{}{}", names::GENERATION_PREFIX, self.generation);
        Current {
            table: true,
            table_flags: 0,
            sets: self
                .sets
                .iter()
                .map(|(name, &(key_type, key_len, flags, size))| {
                    let set = CurrentSet {
                        key_type,
                        key_len,
                        flags,
                        size,
                        elems: Vec::new(),
                        as_planned: false,
                        recorded: None,
                    };
                    (name.clone(), set)
                })
                .collect(),
            counters: self
                .counters
                .iter()
                .map(|n| {
                    let c = CurrentCounter {
                        comment: None,
                        packets: 0,
                        bytes: 0,
                    };
                    (n.clone(), c)
                })
                .collect(),
            chains: self
                .chains
                .iter()
                .map(|c| CurrentChain {
                    name: c.name.clone(),
                    hook: c.hook,
                    policy: c.hook.map(|_| libc::NF_ACCEPT as u32),
                    rules: c
                        .rules
                        .iter()
                        .enumerate()
                        .map(|(i, &(handle, print))| CurrentRule {
                            handle,
                            fingerprint: print_text(print),
                            comment: (i == 0 && c.name == names::BASE_CHAIN)
                                .then(|| base_comment.clone()),
                        })
                        .collect(),
                })
                .collect(),
            rule_prints: RulePrints::Plan,
        }
    }
}

/// A hash of a rule's planned definition: equal prints mean the same kernel rule.
pub fn rule_print(rule: &RuleDef) -> u64 {
    let mut h = DefaultHasher::new();
    rule.hash(&mut h);
    h.finish()
}

/// How a [`rule_print`] is written where the diff compares fingerprints.
pub fn print_text(print: u64) -> String {
    format!("plan:{print:016x}")
}

impl Installed {
    /// The sets of `planned` this record vouches for while the kernel reports `genid`: those
    /// whose content is unchanged since our commit.
    pub fn vouched<'a>(&self, genid: u32, planned: &'a Planned) -> Vec<&'a str> {
        if genid != self.genid {
            return Vec::new();
        }
        planned
            .0
            .iter()
            .filter(|(name, print)| self.sets.get(*name) == Some(print))
            .map(|(name, _)| name.as_str())
            .collect()
    }
}

/// The fingerprints of the sets of a plan.
pub struct Planned(BTreeMap<String, u64>);

impl Planned {
    pub fn of(sets: &[SetDef]) -> Self {
        Self(
            sets.iter()
                .map(|s| (s.name.clone(), fingerprint(s)))
                .collect(),
        )
    }

    /// Set name -> fingerprint.
    pub fn prints(&self) -> &BTreeMap<String, u64> {
        &self.0
    }

    /// The record of these sets (and, if known, the rest of the table) installed at ruleset
    /// generation id `genid`.
    pub fn at(&self, genid: u32, layout: Option<Layout>) -> Installed {
        Installed {
            genid,
            sets: self.0.clone(),
            layout,
        }
    }
}

/// Which boot and network namespace a record belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Key {
    format: u32,
    version: String,
    boot_id: String,
    /// SO_NETNS_COOKIE: unique per namespace for the life of the boot, never reused (unlike
    /// the inode of /proc/self/ns/net, which a later namespace can get again).
    netns_cookie: u64,
}

#[derive(Serialize, Deserialize)]
struct Record {
    key: Key,
    installed: Installed,
}

/// The record's file in a state directory.
pub struct Store {
    path: PathBuf,
    key: Key,
}

impl Store {
    /// `None` when the namespace cannot be told apart from others (no SO_NETNS_COOKIE, kernels
    /// before 5.14) or the boot id is unreadable: then nothing is persisted.
    pub fn new(dir: &Path, netns_cookie: Option<u64>) -> Option<Self> {
        let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        Some(Self {
            path: dir.join(FILE),
            key: Key {
                format: FORMAT,
                version: env!("CARGO_PKG_VERSION").into(),
                boot_id: boot_id.trim().into(),
                netns_cookie: netns_cookie?,
            },
        })
    }

    /// The record of this boot and namespace, if there is a readable one.
    pub fn load(&self) -> Option<Installed> {
        let bytes = std::fs::read(&self.path).ok()?;
        let r: Record = serde_json::from_slice(&bytes).ok()?;
        (r.key == self.key).then_some(r.installed)
    }

    /// Replaces the record (`None` removes it). Best effort: a record that cannot be written
    /// only costs the next apply a full dump. Written in place and not synced: a reader that
    /// catches it half-written finds no valid record and dumps, and after a reboot the key no
    /// longer matches anyway.
    /// Written with [`overwrite`]: a process killed half way leaves the old record's tail
    /// behind the new one, which does not parse, and the next apply dumps.
    pub fn save(&self, installed: Option<&Installed>) {
        let Some(installed) = installed else {
            let _ = std::fs::remove_file(&self.path);
            return;
        };
        let record = Record {
            key: self.key.clone(),
            installed: installed.clone(),
        };
        let written = serde_json::to_vec(&record)
            .map_err(std::io::Error::other)
            .and_then(|bytes| overwrite(&self.path, &bytes));
        if let Err(e) = written {
            tracing::debug!(path = %self.path.display(), error = %e, "could not save the nft set record");
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::plan::{Elem, SetKind};
    use super::*;

    fn set(name: &str, elems: Vec<Elem>) -> SetDef {
        SetDef {
            name: name.into(),
            kind: SetKind::Addr4,
            elems,
        }
    }

    #[test]
    fn vouches_only_for_unchanged_sets_at_the_same_genid() {
        let old = [
            set("a", vec![Elem::V4(1, 2)]),
            set("b", vec![Elem::V4(3, 4)]),
        ];
        let rec = Planned::of(&old).at(7, None);
        let new = [
            set("a", vec![Elem::V4(1, 2)]),
            set("b", vec![Elem::V4(3, 5)]),
            set("c", vec![]),
        ];
        let new = Planned::of(&new);
        assert_eq!(rec.vouched(7, &new), vec!["a"]);
        assert!(rec.vouched(8, &new).is_empty());
    }

    #[test]
    fn a_record_is_read_back_only_by_its_namespace() {
        let dir = tempfile::tempdir().unwrap();
        let rec = Planned::of(&[set("a", vec![Elem::V4(1, 2)])]).at(3, None);
        let mine = Store::new(dir.path(), Some(11)).unwrap();
        mine.save(Some(&rec));
        assert_eq!(mine.load(), Some(rec));
        assert_eq!(Store::new(dir.path(), Some(12)).unwrap().load(), None);
        assert!(Store::new(dir.path(), None).is_none());
        mine.save(None);
        assert_eq!(mine.load(), None);
    }
}
