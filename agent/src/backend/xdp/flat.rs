//! A generation's source tables (see `nodewall_common::xdp::SrcNode`): the pushed-down
//! prefixes of an [`super::image::Image`] expanded into a multibit trie of stride 8, so that
//! the XDP program finds a source's rules with one load per address byte
//! instead of a walk of the kernel's LPM trie, whose cost grows with the number of prefixes.
//! Runs of nodes that lead on through one byte only (a prefix scattered away from the others)
//! are then path-compressed into `SrcSkip`s, a sixth of a node's size each.
//! A policy whose prefixes need more than a generation holds moves its most numerous prefixes
//! of one length (per family) that contain no longer prefix into the source hash, one lookup
//! each, beside the flat tables; and if even the rest does not fit, it keeps the LPM tries.
//! Hash and tries map prefixes to class ids: every path ends in the same class lookup.

use std::collections::{BTreeMap, HashMap};

use anyhow::Result;
use nodewall_common::xdp::{
    RuleBits, SrcBucket, SrcNode, SrcSkip, BUCKET_CLASS, BUCKET_USED, SRC_CHILD,
    SRC_CLASSES_PER_GEN, SRC_HASH_PER_GEN, SRC_SKIP,
};

use super::buckets;
use super::runs::Compressor;

/// Nodes a build may expand before compression: as many as a child entry can name.
const EXPANDED_NODES: usize = SRC_CHILD as usize;

/// What a generation's source maps hold: either flat tables (`roots`: IPv4's 65,536 entries
/// then IPv6's, `nodes` and `skips`) with the source hash's entries (`src4`/`src6`: prefixes
/// of one length per family, each containing no other, -> class id; laid out in `buckets`
/// by `seeds`), or LPM entries (`src4`/`src6`, prefix -> class id); in both cases the
/// classes (the empty set first).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SourceTables {
    pub roots: Vec<u16>,
    pub nodes: Vec<SrcNode>,
    pub skips: Vec<SrcSkip>,
    pub classes: Vec<RuleBits>,
    pub src4: BTreeMap<(u32, u8), u32>,
    pub src6: BTreeMap<(u128, u8), u32>,
    /// A generation's buckets of the source hash when it holds anything, else empty.
    pub buckets: Vec<SrcBucket>,
    pub seeds: [u64; 2],
}

impl SourceTables {
    /// Whether the flat tables are in use (otherwise the LPM tries are).
    pub fn is_flat(&self) -> bool {
        !self.roots.is_empty()
    }

    /// The prefix length of `family`'s entries in the source hash, if it has any there.
    pub fn hashed_len(&self, family: usize) -> Option<u8> {
        if !self.is_flat() {
            return None;
        }
        if family == 0 {
            self.src4.keys().next().map(|k| k.1)
        } else {
            self.src6.keys().next().map(|k| k.1)
        }
    }

    /// The flat tables when they fit a generation; else the flat tables with the most
    /// numerous hashable prefixes of one family in the source hash, then of both; else LPM
    /// entries. Fails only when even the distinct rule sets exceed the class table.
    pub fn build(
        src4: &BTreeMap<(u32, u8), RuleBits>,
        src6: &BTreeMap<(u128, u8), RuleBits>,
    ) -> Result<Self> {
        if let Some(flat) = Self::flat(src4, src6) {
            return Ok(flat);
        }
        let (g4, g6) = (
            hashable(src4, 32, 32, |&(a, l)| (a as u128, l)),
            hashable(src6, 128, 64, |&k| k),
        );
        let count = |g: Option<(u8, usize)>| g.map_or(0, |g| g.1);
        let first = if count(g6) > count(g4) {
            [false, true]
        } else {
            [true, false]
        };
        for hash in [first, [true, true]] {
            let lens = [g4.filter(|_| hash[0]), g6.filter(|_| hash[1])];
            let total = count(lens[0]) + count(lens[1]);
            if total == 0 || total > SRC_HASH_PER_GEN as usize {
                continue;
            }
            if let Some(t) = Self::flat_hashing(src4, src6, lens.map(|g| g.map(|g| g.0))) {
                return Ok(t);
            }
        }
        let mut b = Builder::new(false);
        let mut lpm = |bits: &RuleBits| {
            b.class(bits).map(u32::from).ok_or_else(|| {
                anyhow::anyhow!(
                    "rules[].from: the sources form more than {SRC_CLASSES_PER_GEN} distinct sets of rules; \
                     the xdp backend holds at most {SRC_CLASSES_PER_GEN}"
                )
            })
        };
        let mut out4 = BTreeMap::new();
        for (k, bits) in src4 {
            out4.insert(*k, lpm(bits)?);
        }
        let mut out6 = BTreeMap::new();
        for (k, bits) in src6 {
            out6.insert(*k, lpm(bits)?);
        }
        Ok(Self {
            src4: out4,
            src6: out6,
            ..b.tables
        })
    }

    /// Expands both families' prefixes (each carrying the rules of every prefix containing
    /// it); `None` when the tables would exceed what a generation holds.
    pub fn flat(
        src4: &BTreeMap<(u32, u8), RuleBits>,
        src6: &BTreeMap<(u128, u8), RuleBits>,
    ) -> Option<Self> {
        Self::flat_hashing(src4, src6, [None, None])
    }

    /// [`Self::flat`], with the prefixes of length `hash[family]` that contain no other
    /// prefix in the source hash instead: an address inside one of those is inside no longer
    /// prefix, so the hash's answer is the longest match, and outside them the flat tables
    /// answer as if they were not there (they hold every other prefix, the ones containing
    /// the hashed ones included).
    pub fn flat_hashing(
        src4: &BTreeMap<(u32, u8), RuleBits>,
        src6: &BTreeMap<(u128, u8), RuleBits>,
        hash: [Option<u8>; 2],
    ) -> Option<Self> {
        let mut b = Builder::new(true);
        let (flat4, hashed4) = split(src4, 32, |&(a, l)| (a as u128, l), hash[0]);
        let (flat6, hashed6) = split(src6, 128, |&k| k, hash[1]);
        let v4 = flat4
            .into_iter()
            .map(|((a, len), bits)| ((a as u128) << 96, len, bits));
        b.insert_all(0, 4, v4.collect())?;
        let v6 = flat6.into_iter().map(|((a, len), bits)| (a, len, bits));
        b.insert_all(1, 16, v6.collect())?;
        let mut entries = Vec::with_capacity(hashed4.len() + hashed6.len());
        for (&(a, len), bits) in hashed4 {
            let c = b.class(bits)?;
            b.tables.src4.insert((a, len), c.into());
            entries.push((buckets::key4(a), buckets::tag(0, c)));
        }
        for (&(a, len), bits) in hashed6 {
            let c = b.class(bits)?;
            b.tables.src6.insert((a, len), c.into());
            entries.push((buckets::key6(a), buckets::tag(1, c)));
        }
        if !entries.is_empty() {
            // Displacement rarely fails below the load the table is sized for; another pair of
            // multipliers then places the same keys differently.
            let (seeds, table) = (0..4)
                .map(buckets::seeds)
                .find_map(|seeds| buckets::build(&entries, seeds).map(|t| (seeds, t)))?;
            b.tables.buckets = table;
            b.tables.seeds = seeds;
        }
        Some(b.tables)
    }

    /// The rules of an address, as the XDP program finds them (`addr` in network order:
    /// 4 bytes for IPv4, 16 for IPv6).
    pub fn lookup(&self, addr: &[u8]) -> RuleBits {
        let family = usize::from(addr.len() != 4);
        if let Some(len) = self.hashed_len(family) {
            let key = buckets::key_of(addr) & buckets::mask(family, len);
            if let Some(c) = buckets::find(&self.buckets, self.seeds, family, key) {
                return self.classes[c as usize];
            }
        }
        let root = family << 16;
        let mut e = self.roots[root | (addr[0] as usize) << 8 | addr[1] as usize];
        for (i, &byte) in addr.iter().enumerate().skip(2) {
            e = match child(e) {
                None => break,
                Some(Child::Node(n)) => self.nodes[n].0[byte as usize],
                Some(Child::Skip(s)) => {
                    let run = &self.skips[s];
                    if byte == run.bytes[i] {
                        run.matched[i]
                    } else {
                        run.other[i]
                    }
                }
            };
        }
        assert_eq!(
            e & SRC_CHILD,
            0,
            "the last address byte always ends in a class"
        );
        self.classes[e as usize]
    }
}

impl SourceTables {
    /// The same tables with node and class ids chosen to match `old` (what the generation
    /// about to be written holds) wherever the same path or the same rule set exists there,
    /// so that the diff-based writer touches only what really changed: a fresh build numbers
    /// nodes and classes in prefix order, and one inserted prefix would shift every later id.
    pub fn renumbered_like(&self, old: &SourceTables) -> SourceTables {
        // Only the classes `old` refers to count: its other slots may hold anything.
        let live: HashMap<RuleBits, usize> = old
            .live_classes()
            .into_iter()
            .filter_map(|c| old.classes.get(c).map(|bits| (*bits, c)))
            .collect();
        let classes = remap_ids(
            self.classes.len(),
            old.classes.len(),
            self.classes
                .iter()
                .enumerate()
                .filter_map(|(c, bits)| live.get(bits).map(|&o| (c, o))),
        );
        let mut out = SourceTables {
            classes: vec![RuleBits::EMPTY; classes.len],
            src4: self
                .src4
                .iter()
                .map(|(k, &c)| (*k, classes.map[c as usize] as u32))
                .collect(),
            src6: self
                .src6
                .iter()
                .map(|(k, &c)| (*k, classes.map[c as usize] as u32))
                .collect(),
            buckets: self
                .buckets
                .iter()
                .map(|b| SrcBucket {
                    tags: b.tags.map(|t| {
                        let c = classes.map[(t & BUCKET_CLASS) as usize] as u16;
                        if t & BUCKET_USED == 0 {
                            0
                        } else {
                            t & !BUCKET_CLASS | c
                        }
                    }),
                    ..*b
                })
                .collect(),
            seeds: self.seeds,
            ..SourceTables::default()
        };
        for (i, c) in out.classes.iter_mut().enumerate() {
            *c = old.classes.get(i).copied().unwrap_or(RuleBits::EMPTY);
        }
        for (c, bits) in self.classes.iter().enumerate() {
            out.classes[classes.map[c]] = *bits;
        }
        if !self.is_flat() {
            return out;
        }
        // Nodes and runs reached by the same path (root entry, then entry by entry) in both.
        // The walk follows the new tables, a tree of bounded depth, so it ends whatever the
        // old ones hold.
        let (mut node_pairs, mut skip_pairs) = (Vec::new(), Vec::new());
        if old.is_flat() {
            let mut stack: Vec<(u16, u16)> = self
                .roots
                .iter()
                .copied()
                .zip(old.roots.iter().copied())
                .collect();
            while let Some((n, o)) = stack.pop() {
                match (child(n), child(o)) {
                    (Some(Child::Node(a)), Some(Child::Node(b))) if b < old.nodes.len() => {
                        node_pairs.push((a, b));
                        stack.extend(self.nodes[a].0.iter().copied().zip(old.nodes[b].0));
                    }
                    (Some(Child::Skip(a)), Some(Child::Skip(b))) if b < old.skips.len() => {
                        skip_pairs.push((a, b));
                        // A run's own positions name the run itself: not a step down.
                        let next = self.skips[a].matched.iter().zip(old.skips[b].matched);
                        stack.extend(
                            next.map(|(&x, y)| (x, y))
                                .filter(|&(x, y)| x != n && y != o),
                        );
                    }
                    _ => {}
                }
            }
        }
        let nodes = remap_ids(self.nodes.len(), old.nodes.len(), node_pairs.into_iter());
        let skips = remap_ids(self.skips.len(), old.skips.len(), skip_pairs.into_iter());
        let entry = |e: u16| match child(e) {
            Some(Child::Node(n)) => SRC_CHILD | nodes.map[n] as u16,
            Some(Child::Skip(s)) => SRC_CHILD | SRC_SKIP | skips.map[s] as u16,
            None => classes.map[e as usize] as u16,
        };
        out.roots = self.roots.iter().map(|&e| entry(e)).collect();
        // Unused slots keep what `old` has there, so that they cost no write.
        out.nodes = (0..nodes.len)
            .map(|i| old.nodes.get(i).copied().unwrap_or(SrcNode([0; 256])))
            .collect();
        for (n, node) in self.nodes.iter().enumerate() {
            out.nodes[nodes.map[n]] = SrcNode(node.0.map(entry));
        }
        out.skips = (0..skips.len)
            .map(|i| old.skips.get(i).copied().unwrap_or(SrcSkip::EMPTY))
            .collect();
        for (s, run) in self.skips.iter().enumerate() {
            out.skips[skips.map[s]] = SrcSkip {
                bytes: run.bytes,
                matched: run.matched.map(entry),
                other: run.other.map(entry),
            };
        }
        out
    }
}

impl SourceTables {
    /// The class ids the tables refer to, in order. Marked in a table indexed by id rather
    /// than collected and sorted: the roots alone are 131,072 entries, and this runs on every
    /// apply (twice on a change).
    fn live_classes(&self) -> Vec<usize> {
        let mut live = vec![false; self.classes.len()];
        let mut mark = |c: usize| {
            if c >= live.len() {
                live.resize(c + 1, false);
            }
            live[c] = true;
        };
        for &c in self.src4.values().chain(self.src6.values()) {
            mark(c as usize);
        }
        // Each node and run once: tables read back from the kernel need not be a tree.
        let mut seen_nodes = vec![false; self.nodes.len()];
        let mut seen_skips = vec![false; self.skips.len()];
        let mut stack: Vec<u16> = self.roots.clone();
        while let Some(e) = stack.pop() {
            match child(e) {
                None => mark(e as usize),
                Some(Child::Node(n)) => {
                    if let (Some(node), Some(seen)) = (self.nodes.get(n), seen_nodes.get_mut(n)) {
                        if !std::mem::replace(seen, true) {
                            stack.extend(node.0);
                        }
                    }
                }
                Some(Child::Skip(s)) => {
                    if let (Some(run), Some(seen)) = (self.skips.get(s), seen_skips.get_mut(s)) {
                        if !std::mem::replace(seen, true) {
                            stack.extend(run.matched.iter().chain(&run.other));
                        }
                    }
                }
            }
        }
        live.iter()
            .enumerate()
            .filter_map(|(c, &l)| l.then_some(c))
            .collect()
    }
}

/// New ids for `count` items: `matched` (new id, old id) pairs keep the old id (each old id
/// at most once), the others take the lowest ids left free.
struct Remap {
    map: Vec<usize>,
    /// One past the highest id used.
    len: usize,
}

fn remap_ids(
    count: usize,
    old_count: usize,
    matched: impl Iterator<Item = (usize, usize)>,
) -> Remap {
    let mut map = vec![usize::MAX; count];
    let mut taken = vec![false; count.max(old_count)];
    for (n, o) in matched {
        if map[n] == usize::MAX && !taken[o] {
            map[n] = o;
            taken[o] = true;
        }
    }
    let mut free = (0..).filter(|&i| i >= taken.len() || !taken[i]);
    for m in map.iter_mut().filter(|m| **m == usize::MAX) {
        *m = free.next().expect("unbounded");
    }
    let len = map.iter().map(|&m| m + 1).max().unwrap_or(0);
    Remap { map, len }
}

struct Builder {
    tables: SourceTables,
    class_of: HashMap<RuleBits, u16>,
    /// The nodes of the root entry being built, one per byte step (entries name these, not
    /// the tables' nodes), until [`Compressor`] rewrites them into the tables.
    expanded: Vec<SrcNode>,
}

impl Builder {
    /// With `flat`, the two (empty) roots to insert into.
    fn new(flat: bool) -> Self {
        let roots = if flat { vec![0; 2 * 65536] } else { Vec::new() };
        Self {
            tables: SourceTables {
                roots,
                classes: vec![RuleBits::EMPTY],
                ..SourceTables::default()
            },
            class_of: HashMap::from([(RuleBits::EMPTY, 0)]),
            expanded: Vec::new(),
        }
    }

    /// Inserts the prefixes of family `root` (addresses of `width` bytes, left-aligned in a
    /// `u128`). Prefixes that fit the roots first, then those below each root entry, one entry
    /// at a time: expanded, then compressed, so that the expansion never holds more than one
    /// root entry's prefixes (5,000 scattered IPv6 /64s expand to 25,000 nodes, 12 MiB).
    /// Shorter prefixes first within each: a longer one then only overwrites, within what a
    /// shorter one set, the entries it covers, and a child node starts as a copy of the
    /// class of the entry it replaces (leaf pushing), which is already final.
    fn insert_all(
        &mut self,
        root: usize,
        width: usize,
        mut prefixes: Vec<(u128, u8, &RuleBits)>,
    ) -> Option<()> {
        // Integer keys: sorting a million prefixes by byte slices took ~0.2 s of an apply.
        prefixes.sort_unstable_by_key(|&(a, len, _)| (len > 16, a >> 112, len, a));
        let mut building: Option<usize> = None;
        for (a, len, bits) in prefixes {
            let class = self.class(bits)?;
            let addr = a.to_be_bytes();
            let top = root << 16 | (a >> 112) as usize;
            if len > 16 && building != Some(top) {
                if let Some(done) = building {
                    self.compress(done)?;
                }
                building = Some(top);
            }
            self.insert(top, &addr[..width], len as usize, class)?;
        }
        if let Some(done) = building {
            self.compress(done)?;
        }
        Some(())
    }

    /// Rewrites root entry `top`'s expanded nodes into the tables.
    fn compress(&mut self, top: usize) -> Option<()> {
        let mut c = Compressor {
            expanded: &self.expanded,
            nodes: &mut self.tables.nodes,
            skips: &mut self.tables.skips,
        };
        self.tables.roots[top] = c.entry(self.tables.roots[top], 2)?;
        self.expanded.clear();
        Some(())
    }

    /// A node whose every entry is `fill` (leaf pushing: the class of the entry it replaces).
    fn new_node(&mut self, fill: u16) -> Option<usize> {
        let child = self.expanded.len();
        if child >= EXPANDED_NODES {
            return None;
        }
        self.expanded.push(SrcNode([fill; 256]));
        Some(child)
    }

    fn class(&mut self, bits: &RuleBits) -> Option<u16> {
        if let Some(&c) = self.class_of.get(bits) {
            return Some(c);
        }
        let c = self.tables.classes.len();
        if c >= SRC_CLASSES_PER_GEN as usize {
            return None;
        }
        self.tables.classes.push(*bits);
        self.class_of.insert(*bits, c as u16);
        Some(c as u16)
    }

    fn insert(&mut self, top: usize, addr: &[u8], len: usize, class: u16) -> Option<()> {
        if len <= 16 {
            let span = 1usize << (16 - len);
            let first = top & !(span - 1);
            for e in &mut self.tables.roots[first..first + span] {
                debug_assert_eq!(*e & SRC_CHILD, 0, "shorter prefixes come first");
                *e = class;
            }
            return Some(());
        }
        let e = self.tables.roots[top];
        let mut node = if e & SRC_CHILD != 0 {
            (e & !SRC_CHILD) as usize
        } else {
            let child = self.new_node(e)?;
            self.tables.roots[top] = SRC_CHILD | child as u16;
            child
        };
        // `node` is indexed by address byte `depth`.
        let mut depth = 2;
        while len > 8 * (depth + 1) {
            let e = self.expanded[node].0[addr[depth] as usize];
            node = if e & SRC_CHILD != 0 {
                (e & !SRC_CHILD) as usize
            } else {
                let child = self.new_node(e)?;
                self.expanded[node].0[addr[depth] as usize] = SRC_CHILD | child as u16;
                child
            };
            depth += 1;
        }
        let span = 1usize << (8 * (depth + 1) - len);
        let first = addr[depth] as usize & !(span - 1);
        for e in &mut self.expanded[node].0[first..first + span] {
            debug_assert_eq!(*e & SRC_CHILD, 0, "shorter prefixes come first");
            *e = class;
        }
        Some(())
    }
}

/// Keys of `src` in order, as (address right-aligned in a u128, length), for [`hashable`]
/// and [`split`].
type Widen<K> = fn(&K) -> (u128, u8);

/// Whether each prefix of `src` (in key order) contains no other: the next key in (address,
/// length) order is the first prefix inside it, if any is.
fn leaves<K, V>(src: &BTreeMap<K, V>, bits: u8, widen: Widen<K>) -> Vec<bool> {
    let keys: Vec<(u128, u8)> = src.keys().map(widen).collect();
    let mut out = Vec::with_capacity(keys.len());
    for (i, &(a, len)) in keys.iter().enumerate() {
        let last = a | host_mask(len, bits);
        out.push(keys.get(i + 1).is_none_or(|&(next, _)| next > last));
    }
    out
}

/// The length the source hash would take for this family, and how many prefixes it would
/// hold: the most common length, up to `longest`, among the prefixes that contain no other.
fn hashable<K, V>(
    src: &BTreeMap<K, V>,
    bits: u8,
    longest: u8,
    widen: Widen<K>,
) -> Option<(u8, usize)> {
    let mut count = [0usize; 129];
    for (k, leaf) in src.keys().zip(leaves(src, bits, widen)) {
        let len = widen(k).1;
        if leaf && len <= longest {
            count[len as usize] += 1;
        }
    }
    let (len, &n) = count.iter().enumerate().max_by_key(|&(len, &n)| (n, len))?;
    (n > 0).then_some((len as u8, n))
}

/// `src` split into what stays in the flat tables and what goes into the source hash: the
/// prefixes of length `hashed` that contain no other.
#[allow(clippy::type_complexity)]
fn split<K: Copy, V>(
    src: &BTreeMap<K, V>,
    bits: u8,
    widen: Widen<K>,
    hashed: Option<u8>,
) -> (Vec<(K, &V)>, Vec<(&K, &V)>) {
    let Some(len) = hashed else {
        return (src.iter().map(|(k, v)| (*k, v)).collect(), Vec::new());
    };
    let (mut flat, mut hash) = (Vec::new(), Vec::new());
    for ((k, v), leaf) in src.iter().zip(leaves(src, bits, widen)) {
        if leaf && widen(k).1 == len {
            hash.push((k, v));
        } else {
            flat.push((*k, v));
        }
    }
    (flat, hash)
}

/// The host bits of a prefix of `len` in an address of `bits`, right-aligned.
pub(super) fn host_mask(len: u8, bits: u8) -> u128 {
    match bits - len {
        128 => u128::MAX,
        host => (1u128 << host) - 1,
    }
}

/// Where a child entry leads.
enum Child {
    Node(usize),
    Skip(usize),
}

/// The child `e` names, if it names one (else it is a class).
fn child(e: u16) -> Option<Child> {
    let index = (e & !(SRC_CHILD | SRC_SKIP)) as usize;
    match (e & SRC_CHILD != 0, e & SRC_SKIP != 0) {
        (false, _) => None,
        (true, false) => Some(Child::Node(index)),
        (true, true) => Some(Child::Skip(index)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::AddrSet;
    use nodewall_common::xdp::{SRC_NODES_PER_GEN, SRC_SKIPS_PER_GEN};
    use proptest::prelude::*;

    fn bits(i: usize) -> RuleBits {
        let mut b = RuleBits::EMPTY;
        b.set(i);
        b
    }

    #[test]
    fn longest_prefix_wins_at_every_edge() {
        let mut v4 = BTreeMap::new();
        let mut both = bits(0);
        both.union_with(&bits(1));
        v4.insert((u32::from_be_bytes([10, 0, 0, 0]), 8), bits(0));
        v4.insert((u32::from_be_bytes([10, 1, 2, 0]), 23), both);
        let mut v6 = BTreeMap::new();
        v6.insert((0u128, 0), bits(2));
        let flat = SourceTables::flat(&v4, &v6).unwrap();
        assert_eq!(flat.lookup(&[10, 0, 0, 0]), bits(0));
        assert_eq!(flat.lookup(&[10, 1, 1, 255]), bits(0));
        assert_eq!(flat.lookup(&[10, 1, 2, 0]), both);
        assert_eq!(flat.lookup(&[10, 1, 3, 255]), both);
        assert_eq!(flat.lookup(&[10, 1, 4, 0]), bits(0));
        assert_eq!(flat.lookup(&[10, 255, 255, 255]), bits(0));
        assert_eq!(flat.lookup(&[11, 0, 0, 0]), RuleBits::EMPTY);
        assert_eq!(flat.lookup(&[9, 255, 255, 255]), RuleBits::EMPTY);
        assert_eq!(flat.lookup(&[0xff; 16]), bits(2));
        assert_eq!(flat.classes.len(), 4);
    }

    #[test]
    fn too_many_nodes_is_refused() {
        // Distinct /32s spread so that each needs a node or a run of its own.
        let n = SRC_NODES_PER_GEN + SRC_SKIPS_PER_GEN;
        let spread = |i: u32| i.wrapping_mul(2_654_435_761);
        let mut v4: BTreeMap<(u32, u8), RuleBits> =
            (0..n).map(|i| ((spread(i), 32), bits(0))).collect();
        assert!(SourceTables::flat(&v4, &BTreeMap::new()).is_none());
        // ... so they go into the hash, beside the flat tables, which share the classes.
        let hashed = SourceTables::build(&v4, &BTreeMap::new()).unwrap();
        assert!(hashed.is_flat());
        assert_eq!(hashed.hashed_len(0), Some(32));
        assert_eq!(hashed.hashed_len(1), None);
        assert_eq!(hashed.classes, vec![RuleBits::EMPTY, bits(0)]);
        assert_eq!(hashed.src4.len(), n as usize);
        assert!(hashed.src4.values().all(|&c| c == 1));
        assert_eq!(hashed.lookup(&spread(7).to_be_bytes()), bits(0));
        assert_eq!(
            hashed.lookup(&(spread(7) ^ 1).to_be_bytes()),
            RuleBits::EMPTY
        );
        // As many scattered /30s, of another rule, do not fit beside them: LPM entries.
        v4.extend((0..n).map(|i| ((spread(i + n) & !3, 30), bits(1))));
        let lpm = SourceTables::build(&v4, &BTreeMap::new()).unwrap();
        assert!(!lpm.is_flat());
        assert_eq!(lpm.hashed_len(0), None);
        assert_eq!(lpm.src4.len(), v4.len());
    }

    /// A prefix of the hashed length that contains a longer one stays in the flat tables:
    /// in the hash, its answer would shadow the longer prefix's.
    #[test]
    fn only_prefixes_containing_no_other_are_hashed() {
        let net = |a: [u8; 4]| u32::from_be_bytes(a);
        let mut both = bits(0);
        both.union_with(&bits(1));
        let v4 = BTreeMap::from([
            ((net([10, 0, 0, 0]), 8), bits(0)),
            ((net([10, 1, 0, 0]), 16), both),
            ((net([11, 0, 0, 0]), 8), bits(0)),
            ((net([12, 0, 0, 0]), 8), bits(0)),
        ]);
        assert_eq!(
            hashable(&v4, 32, 32, |&(a, l)| (a as u128, l)),
            Some((8, 2))
        );
        let t = SourceTables::flat_hashing(&v4, &BTreeMap::new(), [Some(8), None]).unwrap();
        let hashed: Vec<_> = t.src4.keys().copied().collect();
        assert_eq!(hashed, [(net([11, 0, 0, 0]), 8), (net([12, 0, 0, 0]), 8)]);
        assert_eq!(t.lookup(&[10, 1, 2, 3]), both);
        assert_eq!(t.lookup(&[10, 2, 0, 0]), bits(0));
        assert_eq!(t.lookup(&[11, 2, 0, 0]), bits(0));
        assert_eq!(t.lookup(&[13, 0, 0, 0]), RuleBits::EMPTY);
    }

    /// IPv6 /64s scattered over fd00::/8 (as the bench's), so that each is a path of its own
    /// below its /24: in runs they fit a generation, where as nodes (5 each below the /24,
    /// 4,096 in all) 800 did.
    #[test]
    fn scattered_prefixes_fit_in_runs() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut v6 = BTreeMap::new();
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let net = 0xfdu128 << 120 | u128::from(x >> 8) << 64;
            v6.insert((net, 64), bits(1));
        }
        let flat = SourceTables::flat(&BTreeMap::new(), &v6).expect("fits");
        // A node for each /16 and for each /24 two of them share.
        assert!(flat.nodes.len() < 1_500, "{} nodes", flat.nodes.len());
        // A run for each /64, and one above each node that two of them share below the /24.
        assert!(
            (10_000..10_100).contains(&flat.skips.len()),
            "{} runs",
            flat.skips.len()
        );
        for &(net, _) in v6.keys() {
            assert_eq!(flat.lookup(&net.to_be_bytes()), bits(1));
            assert_eq!(flat.lookup(&(net | 0xffff).to_be_bytes()), bits(1));
            // Off the run at every byte below the /24.
            for byte in 3..8 {
                let off = net ^ (1u128 << (8 * (15 - byte)));
                let want = if v6.contains_key(&(off, 64)) {
                    bits(1)
                } else {
                    RuleBits::EMPTY
                };
                assert_eq!(flat.lookup(&off.to_be_bytes()), want);
            }
        }
    }

    /// Builds the tables for rules with the given sources, with their membership oracle.
    fn tables_of(rules: &[(Vec<ipnet::Ipv4Net>, Vec<ipnet::Ipv6Net>)]) -> SourceTables {
        let sets: Vec<AddrSet> = rules
            .iter()
            .map(|(a, b)| {
                let nets: Vec<ipnet::IpNet> = a
                    .iter()
                    .map(|&n| n.into())
                    .chain(b.iter().map(|&n| n.into()))
                    .collect();
                AddrSet::from_nets(&nets)
            })
            .collect();
        let refs: Vec<&AddrSet> = sets.iter().collect();
        let (src4, src6) = super::super::image::push_down_both(&refs);
        SourceTables::build(&src4, &src6).unwrap()
    }

    fn net4() -> impl Strategy<Value = ipnet::Ipv4Net> {
        // A narrow space so prefixes nest and overlap.
        (0u32..4096, 0u8..=32).prop_map(|(a, len)| {
            ipnet::Ipv4Net::new(
                std::net::Ipv4Addr::from(0x0a00_0000 | (a << 12) | (a & 0xfff)),
                len,
            )
            .unwrap()
            .trunc()
        })
    }

    fn net6() -> impl Strategy<Value = ipnet::Ipv6Net> {
        (0u128..4096, 0u8..=128).prop_map(|(a, len)| {
            ipnet::Ipv6Net::new(
                std::net::Ipv6Addr::from((0xfd00u128 << 112) | (a << 100) | a),
                len,
            )
            .unwrap()
            .trunc()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Renumbering like another generation changes ids, never answers; renumbering like
        /// itself changes nothing (so an unchanged policy is recognised as such).
        #[test]
        fn renumbering_keeps_lookups(
            a in prop::collection::vec(
                (prop::collection::vec(net4(), 0..8), prop::collection::vec(net6(), 0..8)), 1..5),
            b in prop::collection::vec(
                (prop::collection::vec(net4(), 0..8), prop::collection::vec(net6(), 0..8)), 1..5),
            probes4 in prop::collection::vec(any::<u32>(), 64),
            probes6 in prop::collection::vec(0u128..4096, 64),
        ) {
            let (ta, tb) = (tables_of(&a), tables_of(&b));
            let tb2 = tb.renumbered_like(&ta);
            prop_assert!(tb2.nodes.len() <= ta.nodes.len().max(tb.nodes.len()));
            prop_assert!(tb2.classes.len() <= ta.classes.len().max(tb.classes.len()));
            for p in probes4 {
                let a = p.to_be_bytes();
                prop_assert_eq!(tb2.lookup(&a), tb.lookup(&a));
            }
            for p in probes6 {
                let a = ((0xfd00u128 << 112) | (p << 100) | p).to_be_bytes();
                prop_assert_eq!(tb2.lookup(&a), tb.lookup(&a));
            }
            prop_assert_eq!(&tb.renumbered_like(&tb2), &tb2);
        }

        /// The flat tables give every address exactly the rules whose sources contain it.
        #[test]
        fn lookup_is_addrset_membership(
            rules in prop::collection::vec(
                (prop::collection::vec(net4(), 0..12), prop::collection::vec(net6(), 0..12)),
                1..6,
            ),
            probes4 in prop::collection::vec(0u32..4096, 32),
            probes6 in prop::collection::vec(0u128..4096, 32),
        ) {
            let sets: Vec<AddrSet> = rules
                .iter()
                .map(|(a, b)| {
                    let nets: Vec<ipnet::IpNet> =
                        a.iter().map(|&n| n.into()).chain(b.iter().map(|&n| n.into())).collect();
                    AddrSet::from_nets(&nets)
                })
                .collect();
            let refs: Vec<&AddrSet> = sets.iter().collect();
            let (src4, src6) = super::super::image::push_down_both(&refs);
            let flat = SourceTables::flat(&src4, &src6).unwrap();
            // Probe each prefix's edges and nearby addresses.
            let mut addrs4: Vec<u32> = probes4.iter().map(|&a| 0x0a00_0000 | (a << 12) | (a & 0xfff)).collect();
            for &(a, len) in src4.keys() {
                let last = a | (((1u64 << (32 - len)) - 1) as u32);
                addrs4.extend([a, last, a.wrapping_sub(1), last.wrapping_add(1)]);
            }
            // The rules whose sources contain `ip`, by the policy model's own membership test.
            let want = |ip: std::net::IpAddr| {
                let mut bits = RuleBits::EMPTY;
                for (i, s) in sets.iter().enumerate() {
                    if s.contains(ip) {
                        bits.set(i);
                    }
                }
                bits
            };
            for a in addrs4 {
                let ip = std::net::IpAddr::V4(a.into());
                prop_assert_eq!(flat.lookup(&a.to_be_bytes()), want(ip), "{}", ip);
            }
            let mut addrs6: Vec<u128> = probes6.iter().map(|&a| (0xfd00u128 << 112) | (a << 100) | a).collect();
            for &(a, len) in src6.keys() {
                let host = if len == 0 { u128::MAX } else { (1u128 << (128 - len)) - 1 };
                addrs6.extend([a, a | host, a.wrapping_sub(1), (a | host).wrapping_add(1)]);
            }
            // The same with each family's commonest prefixes that contain no other in the
            // hash instead.
            let lens = [
                hashable(&src4, 32, 32, |&(a, l)| (a as u128, l)).map(|g| g.0),
                hashable(&src6, 128, 64, |&k| k).map(|g| g.0),
            ];
            let hashed = SourceTables::flat_hashing(&src4, &src6, lens).unwrap();
            prop_assert_eq!(hashed.hashed_len(0), lens[0]);
            prop_assert_eq!(hashed.hashed_len(1), lens[1]);
            for a in addrs6 {
                let ip = std::net::IpAddr::V6(a.into());
                prop_assert_eq!(flat.lookup(&a.to_be_bytes()), want(ip), "{}", ip);
                prop_assert_eq!(hashed.lookup(&a.to_be_bytes()), want(ip), "{}", ip);
            }
            for &(a, len) in src4.keys() {
                let last = a | (((1u64 << (32 - len)) - 1) as u32);
                for a in [a, last, a.wrapping_sub(1), last.wrapping_add(1)] {
                    let ip = std::net::IpAddr::V4(a.into());
                    prop_assert_eq!(hashed.lookup(&a.to_be_bytes()), want(ip), "{}", ip);
                }
            }
        }
    }
}
