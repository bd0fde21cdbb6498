//! How a rule's sources are looked up: one interval set, or one hash set per prefix length,
//! whichever the measured costs below say is cheaper.

use crate::policy::prefixes;

/// Fewest intervals for which hash sets by prefix length may replace the interval set: below,
/// the tree is shallow, the gain within noise, and the interval set reads better in `nft list`.
pub(super) const HASHED_MIN_INTERVALS: usize = 16;

/// Per-packet costs of a source lookup in a rule whose other matches passed, measured on veth
/// with kernel 6.18 (50 identical rules in one chain, a dropped frame, against no rule): a
/// one-field interval set (the kernel's red-black tree) costs about 145 ns at 1 interval,
/// 355 ns at 40 and 600 ns at 1 250, i.e. about TREE_BASE + TREE_LEVEL x log2(2 x intervals);
/// a masked lookup in a hash set about HASH_LOOKUP at any size (130 to 200 ns across runs).
const TREE_BASE_NS: f64 = 110.0;
const TREE_LEVEL_NS: f64 = 37.0;
const HASH_LOOKUP_NS: f64 = 140.0;

/// The sources `ranges` (inclusive, in a `bits`-wide space) as network addresses grouped by
/// prefix length, when one hash lookup per length is cheaper than one interval-set lookup.
///
/// A tree lookup grows with the set; a hash lookup does not. A rule whose sources are many
/// networks of few prefix lengths (the usual shape of a cloud provider's address list) is thus
/// faster as one masked hash lookup per length, the way ipset's `hash:net` does it: a packet
/// that no rule accepts (the default-deny path) pays that for every rule its port matches.
pub(super) fn by_prefix_length(ranges: &[(u128, u128)], bits: u32) -> Option<Vec<(u8, Vec<u128>)>> {
    if ranges.len() < HASHED_MIN_INTERVALS {
        return None;
    }
    let tree = TREE_BASE_NS + TREE_LEVEL_NS * ((2 * ranges.len()) as f64).log2();
    let max_lengths = (tree / HASH_LOOKUP_NS) as usize;
    // Indexed by length rather than a map, which also yields them by length: a `BTreeMap`
    // entry per prefix cost about 10 µs of the 125 µs that planning 10k CIDRs took in a loop.
    let mut groups: Vec<Vec<u128>> = vec![Vec::new(); bits as usize + 1];
    let mut lengths = 0;
    for &(s, e) in ranges {
        for (net, len) in prefixes(s, e, bits) {
            let group = &mut groups[len as usize];
            if group.is_empty() {
                lengths += 1;
                if lengths > max_lengths {
                    return None;
                }
            }
            group.push(net);
        }
    }
    Some(
        groups
            .into_iter()
            .enumerate()
            .filter(|(_, nets)| !nets.is_empty())
            .map(|(len, nets)| (len as u8, nets))
            .collect(),
    )
}
