//! Policy -> the content of one map generation, computed in memory (no kernel involved), so
//! that applying is a diff between two images and can be tested on its own.
//!
//! The classifier wants, for a packet, "which rules could match" from two independent keys:
//! - the source address: prefixes, each carrying the rules whose sources
//!   *contain* that prefix (bits are pushed down from containing prefixes), so the longest
//!   match alone answers for the address;
//! - the protocol and destination port: a table per protocol, piecewise constant over ports.
//!
//! Bit `i` is rule `i`; the lowest bit of the intersection is the first matching rule.
//! The prefixes are then expanded into flat tables ([`SourceTables`]) when they fit; the LPM
//! tries only hold a generation whose sources do not.
//!
//! Egress rules follow the inbound ones in the same bit space, their destinations in the same
//! address tables (see `RuleRef` in `nodewall_common::xdp`): one set of tables, and a policy
//! that restricts nothing outbound costs nothing more.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use nodewall_common::ct::Timeouts;
use nodewall_common::xdp::{flags, RuleBits, MAX_NAME_LEN, MAX_RULES};

use super::flat::{host_mask, SourceTables};
use crate::policy::{Action, Mode, Protocol, Traffic};
use crate::policy::{AddrSet, Policy, PortSet};

/// A destination-port table: `(first port, rules)` segments, sorted, the first at port 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortTable(pub Vec<(u16, RuleBits)>);

impl PortTable {
    pub fn empty() -> Self {
        Self(vec![(0, RuleBits::EMPTY)])
    }

    pub fn get(&self, port: u16) -> RuleBits {
        let i = self.0.partition_point(|&(start, _)| start <= port);
        self.0[i - 1].1
    }

    /// The ports whose rules differ between `self` and `other`, as inclusive ranges.
    pub fn diff(&self, other: &PortTable) -> Vec<(u16, u16)> {
        let mut starts: Vec<u16> = self.0.iter().chain(&other.0).map(|&(s, _)| s).collect();
        starts.sort_unstable();
        starts.dedup();
        let mut out: Vec<(u16, u16)> = Vec::new();
        for (i, &s) in starts.iter().enumerate() {
            let end = starts.get(i + 1).map_or(u16::MAX, |&next| next - 1);
            if self.get(s) != other.get(s) {
                match out.last_mut() {
                    Some(last) if last.1 as u32 + 1 == s as u32 => last.1 = end,
                    _ => out.push((s, end)),
                }
            }
        }
        out
    }
}

/// One generation's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    pub flags: u32,
    /// Rule names and actions in evaluation order (bit positions): the inbound rules, then
    /// the egress rules.
    pub rules: Vec<(String, Action)>,
    /// How many of `rules` are inbound.
    pub ningress: usize,
    /// Egress rules judging what the node sends itself, and what it forwards.
    pub egress_host: RuleBits,
    pub egress_pod: RuleBits,
    pub icmp4: RuleBits,
    pub icmp6: RuleBits,
    pub other: RuleBits,
    /// (network address, prefix length) -> rules containing that prefix.
    pub src4: BTreeMap<(u32, u8), RuleBits>,
    pub src6: BTreeMap<(u128, u8), RuleBits>,
    /// `src4` and `src6` as the maps will hold them: flat tables, unless they need more
    /// than a generation holds.
    pub sources: SourceTables,
    pub tcp: PortTable,
    pub udp: PortTable,
    /// Flow timeouts (not part of the policy: the backend sets the node's, see `conntrack`).
    pub ct: Timeouts,
}

impl Image {
    /// What an all-zero generation holds: no rule, nothing allowed.
    pub fn empty() -> Self {
        Self {
            flags: 0,
            rules: Vec::new(),
            ningress: 0,
            egress_host: RuleBits::EMPTY,
            egress_pod: RuleBits::EMPTY,
            icmp4: RuleBits::EMPTY,
            icmp6: RuleBits::EMPTY,
            other: RuleBits::EMPTY,
            src4: BTreeMap::new(),
            src6: BTreeMap::new(),
            sources: SourceTables::flat(&BTreeMap::new(), &BTreeMap::new())
                .expect("no prefix fits"),
            tcp: PortTable::empty(),
            udp: PortTable::empty(),
            ct: Timeouts::DEFAULT,
        }
    }

    pub fn build(policy: &Policy) -> Result<Self> {
        let all = positions(policy)?;
        let imp = &policy.implicit;
        let mut flags = 0;
        for (on, bit) in [
            (imp.established, flags::ESTABLISHED),
            (imp.icmp_errors, flags::ICMP_ERRORS),
            (imp.neighbour_discovery, flags::NEIGHBOUR_DISCOVERY),
            (imp.dhcp_client, flags::DHCP_CLIENT),
            (policy.mode == Mode::Audit, flags::AUDIT),
            (!policy.egress.is_open(), flags::EGRESS),
            (policy.egress.default == Action::Deny, flags::EGRESS_DENY),
        ] {
            if on {
                flags |= bit;
            }
        }
        let bits_where = |pred: &dyn Fn(&Position) -> bool| {
            let mut bits = RuleBits::EMPTY;
            for (i, r) in all.iter().enumerate() {
                if pred(r) {
                    bits.set(i);
                }
            }
            bits
        };
        let addrs: Vec<&AddrSet> = all.iter().map(|r| r.addrs).collect();
        let (src4, src6) = push_down_both(&addrs);
        let sends =
            |t: Traffic| move |r: &Position| r.traffic.is_some_and(|x| x == Traffic::Any || x == t);
        Ok(Self {
            flags,
            rules: all.iter().map(|r| (r.name.to_string(), r.action)).collect(),
            ningress: policy.rules.len(),
            egress_host: bits_where(&sends(Traffic::Host)),
            egress_pod: bits_where(&sends(Traffic::Pod)),
            icmp4: bits_where(&|r| matches!(r.protocol, Protocol::Icmp | Protocol::All)),
            icmp6: bits_where(&|r| matches!(r.protocol, Protocol::Icmpv6 | Protocol::All)),
            other: bits_where(&|r| r.protocol == Protocol::All),
            sources: SourceTables::build(&src4, &src6)?,
            src4,
            src6,
            tcp: port_table(&all, Protocol::Tcp),
            udp: port_table(&all, Protocol::Udp),
            ct: Timeouts::DEFAULT,
        })
    }
}

/// A rule at its bit position, whichever its direction.
struct Position<'a> {
    name: &'a str,
    action: Action,
    protocol: Protocol,
    ports: &'a PortSet,
    /// Sources of an inbound rule, destinations of an egress one.
    addrs: &'a AddrSet,
    /// The senders an egress rule judges; `None` for an inbound rule.
    traffic: Option<Traffic>,
}

/// The policy's rules in bit order: inbound, then egress. Refuses what the XDP backend
/// cannot hold or enforce exactly, before anything is touched.
fn positions(policy: &Policy) -> Result<Vec<Position<'_>>> {
    let egress = &policy.egress.rules;
    let total = policy.rules.len() + egress.len();
    if total > MAX_RULES {
        bail!(
            "rules: the policy has {total} rules ({} inbound, {} egress; failsafe, profile and metadata entries included); the xdp backend supports at most {MAX_RULES}",
            policy.rules.len(),
            egress.len()
        );
    }
    for (i, rule) in policy.rules.iter().enumerate() {
        if rule.name.len() > MAX_NAME_LEN {
            bail!("rules[{i}].name: {} bytes long; the xdp backend keeps names of at most {MAX_NAME_LEN}", rule.name.len());
        }
    }
    for rule in egress {
        if rule.name.len() > MAX_NAME_LEN {
            bail!("egress rule {:?}: {} bytes long; the xdp backend keeps names of at most {MAX_NAME_LEN}", rule.name, rule.name.len());
        }
        if rule.pod_sources.is_some() {
            bail!(
                "egress.metadata.except: backend xdp cannot tell pods apart by their own addresses (its egress hook sees forwarded packets after SNAT); refused rather than applied to the wrong pods: use backend nft"
            );
        }
    }
    let inbound = policy.rules.iter().map(|r| Position {
        name: &r.name,
        action: r.action,
        protocol: r.protocol,
        ports: &r.ports,
        addrs: &r.sources,
        traffic: None,
    });
    let outbound = egress.iter().map(|r| Position {
        name: &r.name,
        action: r.action,
        protocol: r.protocol,
        ports: &r.ports,
        addrs: &r.destinations,
        traffic: Some(r.traffic),
    });
    Ok(inbound.chain(outbound).collect())
}

/// [`push_down`] for both families: (IPv4, IPv6) prefixes -> rules containing them.
#[allow(clippy::type_complexity)]
pub(super) fn push_down_both(
    sources: &[&AddrSet],
) -> (
    BTreeMap<(u32, u8), RuleBits>,
    BTreeMap<(u128, u8), RuleBits>,
) {
    let src4 = push_down(
        sources,
        |s| {
            s.v4_prefixes()
                .iter()
                .map(|n| (u32::from(n.network()) as u128, n.prefix_len()))
                .collect()
        },
        |s| {
            s.v4_ranges()
                .iter()
                .map(|&(a, b)| (a as u128, b as u128))
                .collect()
        },
        32,
    )
    .into_iter()
    .map(|((a, len), bits)| ((a as u32, len), bits))
    .collect();
    let src6 = push_down(
        sources,
        |s| {
            s.v6_prefixes()
                .iter()
                .map(|n| (u128::from(n.network()), n.prefix_len()))
                .collect()
        },
        |s| s.v6_ranges().to_vec(),
        128,
    );
    (src4, src6)
}

/// Every prefix of every rule's sources, each with the bits of all rules containing it.
/// Addresses are widened to u128 so one function serves both families.
fn push_down(
    sources: &[&AddrSet],
    prefixes_of: impl Fn(&AddrSet) -> Vec<(u128, u8)>,
    ranges_of: impl Fn(&AddrSet) -> Vec<(u128, u128)>,
    bits: u8,
) -> BTreeMap<(u128, u8), RuleBits> {
    let ranges: Vec<Vec<(u128, u128)>> = sources.iter().map(|s| ranges_of(s)).collect();
    let mut prefixes: Vec<(u128, u8)> = sources.iter().flat_map(|s| prefixes_of(s)).collect();
    prefixes.sort_unstable();
    prefixes.dedup();
    // Collected in key order, then built in bulk (linear), not inserted one by one.
    let mut out = Vec::with_capacity(prefixes.len());
    // Per rule, how many of its ranges start at or below the current prefix: prefixes come
    // in address order, so each cursor only moves forward (one sweep per rule instead of a
    // binary search per prefix and rule: 100k prefixes x 8 rules).
    let mut starts = vec![0usize; ranges.len()];
    for (addr, len) in prefixes {
        let last = addr | host_mask(len, bits);
        let mut set = RuleBits::EMPTY;
        for (i, (r, idx)) in ranges.iter().zip(&mut starts).enumerate() {
            while *idx < r.len() && r[*idx].0 <= addr {
                *idx += 1;
            }
            // Ranges are sorted and disjoint: the prefix is inside iff the last range starting
            // at or below it also ends at or past its end.
            if *idx > 0 && last <= r[*idx - 1].1 {
                set.set(i);
            }
        }
        out.push(((addr, len), set));
    }
    BTreeMap::from_iter(out)
}

/// Rules matching a packet of `proto` by destination port: that protocol's rules whose port
/// set holds the port, and every `all` rule.
fn port_table(rules: &[Position], proto: Protocol) -> PortTable {
    let applies = |p: Protocol| p == proto || p == Protocol::All;
    let mut starts = vec![0u32];
    for r in rules.iter().filter(|r| r.protocol == proto) {
        for range in r.ports.ranges() {
            starts.push(range.start as u32);
            starts.push(range.end as u32 + 1);
        }
    }
    starts.sort_unstable();
    starts.dedup();
    let mut segments: Vec<(u16, RuleBits)> = Vec::new();
    for s in starts.into_iter().filter(|&s| s <= u16::MAX as u32) {
        let port = s as u16;
        let mut bits = RuleBits::EMPTY;
        for (i, r) in rules.iter().enumerate() {
            if applies(r.protocol) && ports_of(r.protocol, r.ports).contains(port) {
                bits.set(i);
            }
        }
        if segments.last().is_none_or(|&(_, last)| last != bits) {
            segments.push((port, bits));
        }
    }
    PortTable(segments)
}

fn ports_of(protocol: Protocol, ports: &PortSet) -> PortSet {
    if protocol.has_ports() {
        ports.clone()
    } else {
        PortSet::any()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_table_diff_finds_changed_ranges() {
        let mut a = RuleBits::EMPTY;
        a.set(1);
        let t1 = PortTable(vec![(0, RuleBits::EMPTY), (22, a), (23, RuleBits::EMPTY)]);
        let t2 = PortTable(vec![(0, RuleBits::EMPTY), (22, a), (24, RuleBits::EMPTY)]);
        assert_eq!(t1.diff(&t2), vec![(23, 23)]);
        assert_eq!(t1.diff(&PortTable::empty()), vec![(22, 22)]);
        assert_eq!(t1.get(22), a);
        assert_eq!(t1.get(65535), RuleBits::EMPTY);
    }

    #[test]
    fn host_mask_spans_the_host_bits() {
        assert_eq!(host_mask(0, 128), u128::MAX);
        assert_eq!(host_mask(0, 32), u32::MAX as u128);
        assert_eq!(host_mask(24, 32), 255);
    }
}
