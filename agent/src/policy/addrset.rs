//! Address sets normalised to sorted, merged, non-overlapping inclusive ranges per family.
//!
//! Ranges are the canonical form because both backends want them: nft interval sets take
//! ranges directly, and the XDP backend cuts them into the fewest prefixes for its LPM tries.
//! IPv4 and IPv6 never mix: a v4 prefix does not match a v4-mapped v6 address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::Serialize;

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct AddrSet {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl AddrSet {
    /// Every IPv4 and IPv6 address.
    pub fn any() -> Self {
        Self {
            v4: vec![(0, u32::MAX)],
            v6: vec![(0, u128::MAX)],
        }
    }

    pub fn from_nets<'a>(nets: impl IntoIterator<Item = &'a IpNet>) -> Self {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for net in nets {
            match net {
                IpNet::V4(n) => v4.push((u32::from(n.network()), u32::from(n.broadcast()))),
                IpNet::V6(n) => v6.push((u128::from(n.network()), u128::from(n.broadcast()))),
            }
        }
        Self {
            v4: merge(v4),
            v6: merge(v6),
        }
    }

    pub fn union(&self, other: &AddrSet) -> AddrSet {
        let v4 = self.v4.iter().chain(&other.v4).copied().collect();
        let v6 = self.v6.iter().chain(&other.v6).copied().collect();
        Self {
            v4: merge(v4),
            v6: merge(v6),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    pub fn v4_ranges(&self) -> &[(u32, u32)] {
        &self.v4
    }

    pub fn v6_ranges(&self) -> &[(u128, u128)] {
        &self.v6
    }

    pub fn contains(&self, addr: IpAddr) -> bool {
        match addr {
            IpAddr::V4(a) => contains(&self.v4, u32::from(a)),
            IpAddr::V6(a) => contains(&self.v6, u128::from(a)),
        }
    }

    /// The fewest IPv4 prefixes that cover exactly this set's IPv4 ranges.
    pub fn v4_prefixes(&self) -> Vec<Ipv4Net> {
        self.v4
            .iter()
            .flat_map(|&(s, e)| prefixes(u128::from(s), u128::from(e), 32))
            .map(|(a, len)| Ipv4Net::new(Ipv4Addr::from(a as u32), len).expect("valid prefix"))
            .collect()
    }

    /// The fewest IPv6 prefixes that cover exactly this set's IPv6 ranges.
    pub fn v6_prefixes(&self) -> Vec<Ipv6Net> {
        self.v6
            .iter()
            .flat_map(|&(s, e)| prefixes(s, e, 128))
            .map(|(a, len)| Ipv6Net::new(Ipv6Addr::from(a), len).expect("valid prefix"))
            .collect()
    }
}

/// Sorts and merges overlapping or adjacent inclusive ranges.
fn merge<T: Copy + Ord + One>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (s, e) in ranges {
        match out.last_mut() {
            Some(last) if last.1 == T::MAX || s <= last.1.add_one() => {
                if e > last.1 {
                    last.1 = e;
                }
            }
            _ => out.push((s, e)),
        }
    }
    out
}

fn contains<T: Copy + Ord>(ranges: &[(T, T)], x: T) -> bool {
    // Ranges are sorted and disjoint: the only candidate is the last one starting at or below x.
    let idx = ranges.partition_point(|&(s, _)| s <= x);
    idx > 0 && x <= ranges[idx - 1].1
}

/// The aligned prefixes (network, length) whose union is exactly `[s, e]` in a `bits`-wide
/// space, in address order. An iterator that sizes each block in O(1): a re-apply builds the
/// plan of every rule again, 10k ranges and more. The one range-to-prefix routine: the nft
/// backend's hash sets by prefix length and the XDP backend's LPM tries both use it.
pub fn prefixes(s: u128, e: u128, bits: u32) -> Prefixes {
    Prefixes {
        next: Some(s),
        end: e,
        bits,
    }
}

pub struct Prefixes {
    /// The start of the next block, `None` once `end` was reached.
    next: Option<u128>,
    end: u128,
    bits: u32,
}

impl Iterator for Prefixes {
    type Item = (u128, u8);

    fn next(&mut self) -> Option<(u128, u8)> {
        let s = self.next?;
        // The largest block aligned at `s` ...
        let aligned = if s == 0 {
            self.bits
        } else {
            s.trailing_zeros().min(self.bits)
        };
        // ... that ends within `end`: 2^k - 1 <= end - s.
        let fits = match (self.end - s).checked_add(1) {
            Some(n) => 127 - n.leading_zeros(),
            None => 128,
        };
        let k = aligned.min(fits);
        let last = if k >= 128 {
            u128::MAX
        } else {
            s | ((1u128 << k) - 1)
        };
        self.next = if last == self.end {
            None
        } else {
            Some(last + 1)
        };
        Some((s, (self.bits - k) as u8))
    }
}

trait One: Sized {
    const MAX: Self;
    fn add_one(self) -> Self;
}
impl One for u32 {
    const MAX: Self = u32::MAX;
    fn add_one(self) -> Self {
        self + 1
    }
}
impl One for u128 {
    const MAX: Self = u128::MAX;
    fn add_one(self) -> Self {
        self + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_cover_exactly_their_range() {
        assert_eq!(
            prefixes(0, u32::MAX as u128, 32).collect::<Vec<_>>(),
            vec![(0, 0)]
        );
        assert_eq!(
            prefixes(0, u128::MAX, 128).collect::<Vec<_>>(),
            vec![(0, 0)]
        );
        assert_eq!(prefixes(8, 11, 32).collect::<Vec<_>>(), vec![(8, 30)]);
        assert_eq!(prefixes(5, 5, 32).collect::<Vec<_>>(), vec![(5, 32)]);
        // 1..=14: 1/32, 2/31, 4/30, 8/30, 12/31, 14/32.
        assert_eq!(
            prefixes(1, 14, 32).collect::<Vec<_>>(),
            vec![(1, 32), (2, 31), (4, 30), (8, 30), (12, 31), (14, 32)]
        );
        assert_eq!(
            prefixes(u32::MAX as u128 - 1, u32::MAX as u128, 32).collect::<Vec<_>>(),
            vec![(u32::MAX as u128 - 1, 31)]
        );
        assert_eq!(
            prefixes(u128::MAX - 1, u128::MAX, 128).collect::<Vec<_>>(),
            vec![(u128::MAX - 1, 127)]
        );
        assert_eq!(
            prefixes(1, u128::MAX, 128).count(),
            128,
            "one block per bit from 1 up to the top"
        );
        // Every address of a few odd ranges is in exactly one prefix, and nothing outside.
        for (s, e) in [(3u128, 200u128), (0, 77), (64, 191), (255, 256)] {
            let ps: Vec<_> = prefixes(s, e, 32).collect();
            for a in 0..300u128 {
                let hits = ps
                    .iter()
                    .filter(|&&(n, len)| a >> (32 - len) == n >> (32 - len))
                    .count();
                assert_eq!(hits, usize::from((s..=e).contains(&a)), "{a} in {s}-{e}");
            }
        }
    }
}
