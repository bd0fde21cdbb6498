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
            .flat_map(|&(s, e)| range_to_prefixes(s as u128, e as u128, 32))
            .map(|(a, len)| Ipv4Net::new(Ipv4Addr::from(a as u32), len).expect("valid prefix"))
            .collect()
    }

    /// The fewest IPv6 prefixes that cover exactly this set's IPv6 ranges.
    pub fn v6_prefixes(&self) -> Vec<Ipv6Net> {
        self.v6
            .iter()
            .flat_map(|&(s, e)| range_to_prefixes(s, e, 128))
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

/// Splits an inclusive range of a `bits`-wide address space into the fewest aligned prefixes.
fn range_to_prefixes(mut start: u128, end: u128, bits: u8) -> Vec<(u128, u8)> {
    let mut out = Vec::new();
    loop {
        let align = if start == 0 {
            bits as u32
        } else {
            start.trailing_zeros().min(bits as u32)
        };
        let span = end - start;
        // floor(log2(span + 1)): the largest block that fits in what is left of the range.
        let fit = if span == u128::MAX {
            128
        } else {
            127 - (span + 1).leading_zeros()
        };
        let k = align.min(fit);
        out.push((start, bits - k as u8));
        if k == 128 {
            return out;
        }
        let last = start + ((1u128 << k) - 1);
        if last >= end {
            return out;
        }
        start = last + 1;
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
