//! Property tests of address/port normalisation: merged sets must contain exactly the addresses
//! of the input prefixes, never mix families, and split back into prefixes that cover the same.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use nodewall::config::PortRange;
use nodewall::policy::{AddrSet, PortSet};
use proptest::prelude::*;

fn v4net() -> impl Strategy<Value = IpNet> {
    // Few distinct high bits so prefixes overlap and touch often.
    (0u32..16, any::<u32>(), 0u8..=32).prop_map(|(hi, lo, len)| {
        let addr = (hi << 28) | (lo & 0x0fff_ffff);
        IpNet::V4(Ipv4Net::new(Ipv4Addr::from(addr), len).unwrap().trunc())
    })
}

fn v6net() -> impl Strategy<Value = IpNet> {
    (0u128..16, any::<u128>(), 0u8..=128).prop_map(|(hi, lo, len)| {
        let addr = (hi << 124) | (lo >> 4);
        IpNet::V6(Ipv6Net::new(Ipv6Addr::from(addr), len).unwrap().trunc())
    })
}

fn nets() -> impl Strategy<Value = Vec<IpNet>> {
    prop::collection::vec(prop_oneof![v4net(), v6net()], 0..12)
}

/// Addresses worth probing: each prefix's edges and their neighbours, plus random ones.
fn probes(nets: &[IpNet], extra: &[u32]) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for n in nets {
        match n {
            IpNet::V4(n) => {
                let (s, e) = (u32::from(n.network()), u32::from(n.broadcast()));
                for a in [s.wrapping_sub(1), s, e, e.wrapping_add(1)] {
                    out.push(IpAddr::V4(a.into()));
                    // The same bits as IPv6 must not match a v4 set (families never mix).
                    out.push(IpAddr::V6(Ipv6Addr::from(a as u128)));
                }
            }
            IpNet::V6(n) => {
                let (s, e) = (u128::from(n.network()), u128::from(n.broadcast()));
                for a in [s.wrapping_sub(1), s, e, e.wrapping_add(1)] {
                    out.push(IpAddr::V6(a.into()));
                }
            }
        }
    }
    out.extend(extra.iter().map(|&a| IpAddr::V4(a.into())));
    out
}

fn naive_contains(nets: &[IpNet], a: IpAddr) -> bool {
    nets.iter().any(|n| n.contains(&a))
}

proptest! {
    #[test]
    fn merged_set_contains_exactly_the_inputs(nets in nets(), extra in prop::collection::vec(any::<u32>(), 8)) {
        let set = AddrSet::from_nets(&nets);
        for a in probes(&nets, &extra) {
            prop_assert_eq!(set.contains(a), naive_contains(&nets, a), "address {}", a);
        }
    }

    #[test]
    fn ranges_are_sorted_disjoint_and_not_adjacent(nets in nets()) {
        let set = AddrSet::from_nets(&nets);
        for w in set.v4_ranges().windows(2) {
            prop_assert!(w[0].0 <= w[0].1 && (w[0].1 as u64) + 1 < w[1].0 as u64);
        }
        for w in set.v6_ranges().windows(2) {
            prop_assert!(w[0].0 <= w[0].1 && w[0].1.checked_add(1).unwrap() < w[1].0);
        }
    }

    #[test]
    fn families_stay_separate(nets in nets()) {
        let set = AddrSet::from_nets(&nets);
        prop_assert_eq!(set.v4_ranges().is_empty(), !nets.iter().any(|n| matches!(n, IpNet::V4(_))));
        prop_assert_eq!(set.v6_ranges().is_empty(), !nets.iter().any(|n| matches!(n, IpNet::V6(_))));
    }

    #[test]
    fn prefixes_cover_the_same_addresses(nets in nets(), extra in prop::collection::vec(any::<u32>(), 8)) {
        let set = AddrSet::from_nets(&nets);
        let back: Vec<IpNet> = set.v4_prefixes().into_iter().map(IpNet::V4)
            .chain(set.v6_prefixes().into_iter().map(IpNet::V6)).collect();
        // Re-normalising the prefixes gives the same set, and membership agrees everywhere probed.
        prop_assert_eq!(&AddrSet::from_nets(&back), &set);
        for a in probes(&nets, &extra) {
            prop_assert_eq!(naive_contains(&back, a), set.contains(a));
        }
        // Prefixes are aligned and do not overlap.
        let mut v4: Vec<_> = set.v4_prefixes().iter().map(|p| (u32::from(p.network()), u32::from(p.broadcast()))).collect();
        v4.sort();
        for w in v4.windows(2) { prop_assert!(w[0].1 < w[1].0); }
    }

    #[test]
    fn union_is_set_union(a in nets(), b in nets(), extra in prop::collection::vec(any::<u32>(), 8)) {
        let u = AddrSet::from_nets(&a).union(&AddrSet::from_nets(&b));
        let all: Vec<IpNet> = a.iter().chain(&b).copied().collect();
        prop_assert_eq!(&u, &AddrSet::from_nets(&all));
        for x in probes(&all, &extra) {
            prop_assert_eq!(u.contains(x), naive_contains(&all, x));
        }
    }

    #[test]
    fn port_sets_merge_exactly(ranges in prop::collection::vec((1u16..=65535, 0u16..2000), 1..10), probe in prop::collection::vec(1u16..=65535, 32)) {
        let ranges: Vec<PortRange> = ranges.into_iter().map(|(s, len)| PortRange::new(s, s.saturating_add(len))).collect();
        let set = PortSet::new(ranges.clone());
        for w in set.ranges().windows(2) {
            prop_assert!((w[0].end as u32) + 1 < w[1].start as u32);
        }
        let edges = ranges.iter().flat_map(|r| [r.start.saturating_sub(1).max(1), r.start, r.end, r.end.saturating_add(1)]);
        for p in probe.into_iter().chain(edges) {
            prop_assert_eq!(set.contains(p), ranges.iter().any(|r| r.start <= p && p <= r.end), "port {}", p);
        }
    }
}

#[test]
fn whole_address_spaces_split_into_one_prefix_each() {
    let set = AddrSet::any();
    assert_eq!(
        set.v4_prefixes(),
        vec!["0.0.0.0/0".parse::<Ipv4Net>().unwrap()]
    );
    assert_eq!(set.v6_prefixes(), vec!["::/0".parse::<Ipv6Net>().unwrap()]);
}

#[test]
fn adjacent_prefixes_merge_into_one_range() {
    let nets: Vec<IpNet> = ["10.0.0.0/25", "10.0.0.128/25", "10.0.1.0/24"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let set = AddrSet::from_nets(&nets);
    assert_eq!(set.v4_ranges().len(), 1);
    assert_eq!(
        set.v4_prefixes(),
        vec!["10.0.0.0/23".parse::<Ipv4Net>().unwrap()]
    );
}
