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
//! The record lives in the [`Nft`](super::Nft) value (the daemon's applies) and, for one-shot
//! `nodewall apply` processes, in a small file of the state directory ([`Store`]), keyed by the
//! boot and the network namespace's cookie so that another namespace or boot never reads it.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::super::plan::SetDef;

/// Bumped whenever what a fingerprint stands for changes (e.g. how elements are encoded).
const FORMAT: u32 = 1;
const FILE: &str = "nft-sets.json";

/// The sets as our last commit left them, at ruleset generation id `genid`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installed {
    pub genid: u32,
    /// Set name -> [`fingerprint`] of the planned set it holds exactly.
    pub sets: BTreeMap<String, u64>,
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

    /// The record of these sets installed at ruleset generation id `genid`.
    pub fn at(&self, genid: u32) -> Installed {
        Installed {
            genid,
            sets: self.0.clone(),
        }
    }
}

/// A hash of a set's kind and elements: equal fingerprints mean the same kernel elements.
/// SipHash with fixed keys, so it is stable across runs of one build; the file records the
/// build's version, so another build never compares its fingerprints with these.
pub fn fingerprint(set: &SetDef) -> u64 {
    let mut h = DefaultHasher::new();
    set.kind.hash(&mut h);
    set.elems.hash(&mut h);
    h.finish()
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
            .and_then(|bytes| std::fs::File::create(&self.path)?.write_all(&bytes));
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
        let rec = Planned::of(&old).at(7);
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
        let rec = Planned::of(&[set("a", vec![Elem::V4(1, 2)])]).at(3);
        let mine = Store::new(dir.path(), Some(11)).unwrap();
        mine.save(Some(&rec));
        assert_eq!(mine.load(), Some(rec));
        assert_eq!(Store::new(dir.path(), Some(12)).unwrap().load(), None);
        assert!(Store::new(dir.path(), None).is_none());
        mine.save(None);
        assert_eq!(mine.load(), None);
    }
}
