//! The elements our last commit put in each set, kept beside the record of that commit (see
//! [`super::cache`]), so that a re-apply learns what a changed set holds without dumping it.
//!
//! The record already vouches for the sets whose planned content is unchanged; a set whose
//! content changed still had to be dumped to compute its element diff, and that dump (about
//! 0.3 ms for a set of 625 /32s here) was the largest part of a re-apply that changes one CIDR.
//! The same trust applies: the kernel's ruleset generation id is still the one our commit
//! left, so the set holds exactly what we wrote, and an entry is used only when its elements
//! hash to the fingerprint the record holds for that set (a torn or stale file is dumped
//! around, never believed).
//!
//! One small file per set, in a directory beside the record: a kind byte, then the elements
//! as [`encode`] writes them. An apply rewrites only the files of the sets whose content it
//! changed (a re-apply that moves one CIDR writes one or two files of a few KiB, where one
//! file of every set cost 0.13 ms at 10k CIDRs) and deletes those of sets it no longer has.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::super::plan::{Elem, SetDef, SetKind, Verdict};

const MAGIC: &[u8; 8] = b"nwelems1";

const KINDS: [SetKind; 10] = [
    SetKind::Addr4,
    SetKind::Addr6,
    SetKind::Port,
    SetKind::IfName,
    SetKind::IcmpType,
    SetKind::Icmpv6Type,
    SetKind::Net4,
    SetKind::Net6,
    SetKind::PortVerdict,
    SetKind::PortVerdictExact,
];

/// The directory of set files in a state directory.
pub struct ElemDir {
    dir: PathBuf,
}

impl ElemDir {
    pub fn new(state: &Path) -> Self {
        Self {
            dir: state.join("nft-elems"),
        }
    }

    /// The file of set `name`; `None` for a name that is not a plain file name (nft allows
    /// more characters than a path component should carry; such a set is dumped instead).
    fn file(&self, name: &str) -> Option<PathBuf> {
        let plain = !name.is_empty()
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        plain.then(|| self.dir.join(name))
    }

    /// Writes the files of `changed` and deletes those of `gone`, or of every set not in
    /// `all` when `gone` is unknown (best effort, as the record: a missing or unreadable file
    /// only costs the next apply a dump). Listing the directory is left to applies that know
    /// nothing of the last one: metadata operations cost tens of microseconds each on ext4
    /// here. Each file is written with [`overwrite`].
    pub fn save<'a>(
        &self,
        all: &[SetDef],
        changed: impl Iterator<Item = &'a SetDef>,
        gone: Option<Vec<&str>>,
    ) {
        self.write(changed);
        self.remove(all, gone);
    }

    /// Writes the files of `changed`. A file vouches for nothing until a record holds its
    /// fingerprint, so they may be written before the commit whose record will.
    pub fn write<'a>(&self, changed: impl Iterator<Item = &'a SetDef>) {
        let mut changed = changed.peekable();
        if changed.peek().is_some() {
            let _ = std::fs::create_dir_all(&self.dir);
        }
        for s in changed {
            let Some(path) = self.file(&s.name) else {
                continue;
            };
            let mut buf = MAGIC.to_vec();
            buf.push(kind_byte(s.kind));
            for e in &s.elems {
                encode(e, &mut buf);
            }
            if let Err(e) = overwrite(&path, &buf) {
                tracing::debug!(path = %path.display(), error = %e, "could not save a set's elements");
                let _ = std::fs::remove_file(&path);
            }
        }
    }

    /// Deletes the files of `gone`, or of every set not in `all` when `gone` is unknown.
    fn remove(&self, all: &[SetDef], gone: Option<Vec<&str>>) {
        match gone {
            Some(names) => {
                for path in names.into_iter().filter_map(|n| self.file(n)) {
                    let _ = std::fs::remove_file(path);
                }
            }
            None => {
                let keep: HashSet<&str> = all.iter().map(|s| s.name.as_str()).collect();
                for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
                    let name = entry.file_name();
                    if !name.to_str().is_some_and(|n| keep.contains(n)) {
                        let _ = std::fs::remove_file(entry.path());
                    }
                }
            }
        }
    }

    /// Deletes every file: without a record they vouch for nothing (`nodewall flush`, a failed
    /// batch).
    pub fn clear(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// Set `name` as recorded, if its file decodes and hashes to `print` (the fingerprint the
    /// record vouches the kernel's set has).
    pub fn set(&self, name: &str, print: u64) -> Option<SetDef> {
        let bytes = std::fs::read(self.file(name)?).ok()?;
        let (&kind, elems) = bytes.strip_prefix(MAGIC.as_slice())?.split_first()?;
        let set = SetDef {
            name: name.to_string(),
            kind: *KINDS.get(kind as usize)?,
            elems: decode(elems)?,
        };
        (fingerprint(&set) == print).then_some(set)
    }
}

/// Replaces the content of `path` by `bytes`: written from the start and then cut to length,
/// never truncated to zero first. On ext4 a file truncated to zero and rewritten is flushed to
/// disk when closed (the `auto_da_alloc` heuristic for editors that do so), which cost about
/// 200 µs of a 1.5 ms re-apply here. Readers must reject what a process killed between the
/// write and the cut leaves: the new content followed by the old one's tail.
pub fn overwrite(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    f.write_all(bytes)?;
    f.set_len(bytes.len() as u64)
}

/// A hash of a set's kind and elements: equal fingerprints mean the same kernel elements.
/// xxh3 is a fixed function, so it is stable across runs and builds; the record names its
/// format, and a change of what is hashed bumps it.
///
/// The elements go in as one buffer of their shortest encoding (a tag byte, then the values
/// big-endian), the same bytes the file holds. Every set of the plan is hashed on every apply:
/// at 10k CIDRs that is about 110 kB, and with xxh3 instead of SipHash (std's `DefaultHasher`)
/// fingerprinting a 10k-CIDR plan in a re-apply went from about 85 µs to 60-70 µs here (what
/// is left is mostly the encoding).
pub fn fingerprint(set: &SetDef) -> u64 {
    let mut buf = Vec::with_capacity(1 + set.elems.len() * 17);
    buf.push(kind_byte(set.kind));
    for e in &set.elems {
        encode(e, &mut buf);
    }
    xxhash_rust::xxh3::xxh3_64(&buf)
}

/// The byte that names a set's kind in the file and the fingerprint: its index in [`KINDS`]
/// (a match, so that a new kind cannot be left out).
fn kind_byte(kind: SetKind) -> u8 {
    match kind {
        SetKind::Addr4 => 0,
        SetKind::Addr6 => 1,
        SetKind::Port => 2,
        SetKind::IfName => 3,
        SetKind::IcmpType => 4,
        SetKind::Icmpv6Type => 5,
        SetKind::Net4 => 6,
        SetKind::Net6 => 7,
        SetKind::PortVerdict => 8,
        SetKind::PortVerdictExact => 9,
    }
}

/// One element's bytes (for [`fingerprint`] and the file): a distinct tag per variant, fixed
/// widths, and a length before the variable parts, so that distinct element lists never
/// encode alike.
pub fn encode(e: &Elem, out: &mut Vec<u8>) {
    let text = |s: &str, out: &mut Vec<u8>| {
        out.extend_from_slice(&(s.len() as u32).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    };
    match e {
        Elem::V4(a, b) => {
            out.push(0);
            out.extend_from_slice(&a.to_be_bytes());
            out.extend_from_slice(&b.to_be_bytes());
        }
        Elem::V6(a, b) => {
            out.push(1);
            out.extend_from_slice(&a.to_be_bytes());
            out.extend_from_slice(&b.to_be_bytes());
        }
        Elem::Port(a, b) => {
            out.push(2);
            out.extend_from_slice(&a.to_be_bytes());
            out.extend_from_slice(&b.to_be_bytes());
        }
        Elem::IfName(n) => {
            out.push(3);
            text(n, out);
        }
        Elem::Icmp(t) => out.extend_from_slice(&[4, *t]),
        Elem::Net4(a) => {
            out.push(5);
            out.extend_from_slice(&a.to_be_bytes());
        }
        Elem::Net6(a) => {
            out.push(6);
            out.extend_from_slice(&a.to_be_bytes());
        }
        Elem::PortVerdict(a, b, v) => {
            out.push(7);
            out.extend_from_slice(&a.to_be_bytes());
            out.extend_from_slice(&b.to_be_bytes());
            match v {
                Verdict::Accept => out.push(0),
                Verdict::Drop => out.push(1),
                Verdict::Goto(c) => {
                    out.push(2);
                    text(c, out);
                }
                Verdict::Jump(c) => {
                    out.push(3);
                    text(c, out);
                }
            }
        }
    }
}

/// The elements [`encode`] wrote, or `None` if the bytes are not exactly such a list.
fn decode(mut b: &[u8]) -> Option<Vec<Elem>> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = b.split_at_checked(n)?;
        *b = rest;
        Some(head)
    }
    fn arr<const N: usize>(b: &mut &[u8]) -> Option<[u8; N]> {
        take(b, N)?.try_into().ok()
    }
    fn text(b: &mut &[u8]) -> Option<String> {
        let n = u32::from_be_bytes(arr(b)?) as usize;
        String::from_utf8(take(b, n)?.to_vec()).ok()
    }
    let mut out = Vec::new();
    while let Some((&tag, rest)) = b.split_first() {
        b = rest;
        let b = &mut b;
        out.push(match tag {
            0 => Elem::V4(u32::from_be_bytes(arr(b)?), u32::from_be_bytes(arr(b)?)),
            1 => Elem::V6(u128::from_be_bytes(arr(b)?), u128::from_be_bytes(arr(b)?)),
            2 => Elem::Port(u16::from_be_bytes(arr(b)?), u16::from_be_bytes(arr(b)?)),
            3 => Elem::IfName(text(b)?),
            4 => Elem::Icmp(arr::<1>(b)?[0]),
            5 => Elem::Net4(u32::from_be_bytes(arr(b)?)),
            6 => Elem::Net6(u128::from_be_bytes(arr(b)?)),
            7 => {
                let (s, e) = (u16::from_be_bytes(arr(b)?), u16::from_be_bytes(arr(b)?));
                let v = match arr::<1>(b)?[0] {
                    0 => Verdict::Accept,
                    1 => Verdict::Drop,
                    2 => Verdict::Goto(text(b)?),
                    3 => Verdict::Jump(text(b)?),
                    _ => return None,
                };
                Elem::PortVerdict(s, e, v)
            }
            _ => return None,
        });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_is_named_by_its_index() {
        for (i, k) in KINDS.iter().enumerate() {
            assert_eq!(kind_byte(*k) as usize, i, "{k:?}");
        }
    }

    fn every_kind() -> Vec<SetDef> {
        let set = |name: &str, kind, elems| SetDef {
            name: name.into(),
            kind,
            elems,
        };
        vec![
            set("a4", SetKind::Addr4, vec![Elem::V4(1, 9), Elem::V4(20, 20)]),
            set("a6", SetKind::Addr6, vec![Elem::V6(1 << 100, u128::MAX)]),
            set(
                "p",
                SetKind::Port,
                vec![Elem::Port(80, 80), Elem::Port(30000, 32767)],
            ),
            set("if", SetKind::IfName, vec![Elem::IfName("eth0".into())]),
            set("ic", SetKind::IcmpType, vec![Elem::Icmp(3), Elem::Icmp(11)]),
            set("n4", SetKind::Net4, vec![Elem::Net4(0xc612_0000)]),
            set("n6", SetKind::Net6, vec![Elem::Net6(0xfd << 120)]),
            set("empty", SetKind::Net6, vec![]),
            set(
                "vm",
                SetKind::PortVerdictExact,
                vec![
                    Elem::PortVerdict(22, 22, Verdict::Accept),
                    Elem::PortVerdict(53, 53, Verdict::Drop),
                    Elem::PortVerdict(80, 80, Verdict::Goto("rule.web".into())),
                    Elem::PortVerdict(443, 443, Verdict::Jump("rule.tls".into())),
                ],
            ),
        ]
    }

    #[test]
    fn every_set_comes_back_by_its_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let files = ElemDir::new(dir.path());
        let sets = every_kind();
        files.save(&sets, sets.iter(), None);
        for s in &sets {
            assert_eq!(
                files.set(&s.name, fingerprint(s)).as_ref(),
                Some(s),
                "{}",
                s.name
            );
            assert_eq!(files.set(&s.name, fingerprint(s) ^ 1), None, "{}", s.name);
        }
        assert_eq!(files.set("nope", 0), None);
        assert_eq!(files.set("../nope", 0), None);
    }

    #[test]
    fn only_changed_sets_are_written_and_gone_ones_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let files = ElemDir::new(dir.path());
        let sets = every_kind();
        files.save(&sets, sets.iter(), None);
        let mut next = sets[1..].to_vec();
        next[0].elems.push(Elem::V6(7, 7));
        files.save(&next, next.iter().take(1), Some(vec![&sets[0].name]));
        assert_eq!(files.set(&sets[0].name, fingerprint(&sets[0])), None);
        assert_eq!(
            files.set(&next[0].name, fingerprint(&next[0])).as_ref(),
            Some(&next[0])
        );
        assert_eq!(files.set(&next[0].name, fingerprint(&sets[1])), None);
        assert_eq!(
            files.set(&next[1].name, fingerprint(&next[1])).as_ref(),
            Some(&next[1])
        );
        let left = std::fs::read_dir(dir.path().join("nft-elems"))
            .unwrap()
            .count();
        assert_eq!(left, next.len());
    }

    #[test]
    fn a_torn_file_is_not_believed() {
        let dir = tempfile::tempdir().unwrap();
        let files = ElemDir::new(dir.path());
        let long = every_kind().pop().unwrap();
        let mut short = long.clone();
        short.elems = vec![Elem::PortVerdict(22, 22, Verdict::Drop)];
        files.save(std::slice::from_ref(&long), [&long].into_iter(), None);
        let path = dir.path().join("nft-elems").join(&long.name);
        let whole = std::fs::read(&path).unwrap();
        // Cut anywhere: either the file does not decode or it does not hash to the fingerprint
        // of what was written; never a set with elements missing.
        for cut in 0..whole.len() {
            std::fs::write(&path, &whole[..cut]).unwrap();
            assert_eq!(
                files.set(&long.name, fingerprint(&long)),
                None,
                "cut at {cut}"
            );
        }
        // A shorter set written over the longer one, killed before the cut: the old tail is
        // still there behind the new elements.
        files.save(std::slice::from_ref(&short), [&short].into_iter(), None);
        let new = std::fs::read(&path).unwrap();
        let mut torn = new.clone();
        torn.extend_from_slice(&whole[new.len()..]);
        std::fs::write(&path, &torn).unwrap();
        assert_eq!(files.set(&short.name, fingerprint(&short)), None);
        assert_eq!(files.set(&long.name, fingerprint(&long)), None);
    }

    #[test]
    fn distinct_lists_encode_differently() {
        let enc = |elems: &[Elem]| {
            let mut b = Vec::new();
            elems.iter().for_each(|e| encode(e, &mut b));
            b
        };
        assert_ne!(
            enc(&[Elem::IfName("ab".into()), Elem::IfName("c".into())]),
            enc(&[Elem::IfName("a".into()), Elem::IfName("bc".into())])
        );
        assert_ne!(enc(&[Elem::Net4(1)]), enc(&[Elem::Icmp(0), Elem::Icmp(1)]));
        for s in every_kind() {
            assert_eq!(decode(&enc(&s.elems)), Some(s.elems));
        }
    }
}
