//! Policy -> the objects of table `inet nodewall`: sets, named counters, chains and rules.
//!
//! This description is the single source for both outputs of the backend: the `nft -f` script
//! (`script.rs`) and the netlink batch (`netlink/`). Both must therefore map every [`Match`] to
//! exactly what `nft` itself generates for the rendered text, so `nft list` shows the same
//! table whichever way it was loaded.
//!
//! Each policy rule becomes, per address family, an nft rule testing protocol and port first
//! and the source last (the source is the costly lookup; see [`Builder::rule`]). Sources are an
//! interval set, or, for many networks of few prefix lengths, one hash set per prefix length
//! and one nft rule per set (see [`by_prefix_length`]): these adjacent rules share the policy
//! rule's counter and verdict and match disjoint sources, so they act as one rule.

use std::collections::BTreeMap;

use nodewall_common::DropReason;

use super::names::{self, comment};
use crate::config::{Action, Mode};
use crate::metrics::drops;
use crate::policy::{
    Policy, Protocol, Rule, DHCP_CLIENT_PORT, DHCP_SERVER_PORT, ICMPV4_ERROR_TYPES,
    ICMPV6_ERROR_TYPES, ICMPV6_ND_TYPES,
};

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const BOTH: [Family; 2] = [Family::V4, Family::V6];

    /// The `family` label of drop counters.
    pub fn label(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }

    /// Bits in an address of this family.
    pub fn bits(self) -> u32 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    /// The ICMP protocol of this family.
    pub fn icmp(self) -> u8 {
        match self {
            Family::V4 => IPPROTO_ICMP,
            Family::V6 => IPPROTO_ICMPV6,
        }
    }
}

/// The complete table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ruleset {
    pub sets: Vec<SetDef>,
    pub counters: Vec<CounterDef>,
    /// Base chain first, then the chains it reaches, in the order they are created.
    pub chains: Vec<ChainDef>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SetKind {
    Addr4,
    Addr6,
    Port,
    IfName,
    IcmpType,
    Icmpv6Type,
    /// Network addresses of one prefix length (a hash set, looked up with the packet's masked
    /// source address).
    Net4,
    Net6,
}

impl SetKind {
    /// Interval sets hold ranges; the others single values.
    pub fn interval(self) -> bool {
        matches!(self, SetKind::Addr4 | SetKind::Addr6 | SetKind::Port)
    }
}

/// One element. Ranges are inclusive; a single value is a range of one for interval sets.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Elem {
    V4(u32, u32),
    V6(u128, u128),
    Port(u16, u16),
    IfName(String),
    Icmp(u8),
    /// The network address of a prefix, in a [`SetKind::Net4`] / [`SetKind::Net6`] set.
    Net4(u32),
    Net6(u128),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetDef {
    pub name: String,
    pub kind: SetKind,
    pub elems: Vec<Elem>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CounterDef {
    pub name: String,
    pub comment: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainDef {
    pub name: String,
    /// Some for the base chain: hooked at prerouting with this priority, policy accept.
    pub hook_priority: Option<i32>,
    pub rules: Vec<RuleDef>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RuleDef {
    pub matches: Vec<Match>,
    /// Sends the packet to an NFLOG group (a drop sample for the daemon).
    pub log: Option<Log>,
    /// Name of the counter object this rule updates.
    pub counter: Option<String>,
    /// `None`: evaluation goes on with the next rule (a rule that only logs).
    pub verdict: Option<Verdict>,
    pub comment: Option<String>,
}

/// `log prefix PREFIX group GROUP`: a copy of the packet's headers to an NFLOG group.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Log {
    pub prefix: String,
    pub group: u16,
}

/// `ct state` bits as the kernel defines them.
pub const CT_INVALID: u32 = 1;
pub const CT_ESTABLISHED: u32 = 2;
pub const CT_RELATED: u32 = 4;

/// A match, with the dependencies `nft` adds for it (e.g. `ip saddr` implies `meta nfproto ipv4`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Match {
    /// `iifname @SET`
    IifnameIn(String),
    /// `iifname "PREFIX*"`: every interface whose name starts with PREFIX, including those
    /// created later.
    IifnamePrefix(String),
    /// `ct state S` for one state bit.
    CtState(u32),
    /// `meta nfproto ipv4|ipv6`
    NfProto(Family),
    /// `meta l4proto P`
    L4Proto(u8),
    /// `meta l4proto != P`
    L4ProtoNot(u8),
    /// `ip saddr @SET` / `ip6 saddr @SET`
    SaddrIn(Family, String),
    /// `ip saddr & MASK @SET` / `ip6 saddr & MASK @SET`, MASK the prefix length's netmask
    /// (no mask at the full length), SET a [`SetKind::Net4`] / [`SetKind::Net6`] set.
    SaddrPrefixIn(Family, u8, String),
    /// `tcp dport @SET` / `udp dport @SET`
    DportIn(u8, String),
    /// `tcp dport A` / `udp dport A-B`: a compare (or range) of one port range, no set.
    Dport(u8, u16, u16),
    /// `icmp type @SET` / `icmpv6 type @SET`
    IcmpTypeIn(Family, String),
    /// `udp sport A udp dport B`; nft loads both ports with one 4-byte payload expression.
    UdpPorts(u16, u16),
    /// `limit rate R/second burst B packets`: true while the rule's token bucket has packets
    /// left.
    Limit { per_second: u32, burst: u32 },
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    Accept,
    Drop,
    Goto(String),
}

/// Drop samples a drop chain may send at once: one second's worth.
const SAMPLE_BURST: u32 = drops::KERNEL_SAMPLE_RATE;

const ICMP_ERRORS_SET: &str = "icmp-errors";
const ICMPV6_ERRORS_SET: &str = "icmpv6-errors";
const ND_SET: &str = "nd-types";

/// The protocols drop counters are split by, per family.
pub fn drop_protocols(f: Family) -> [(&'static str, Option<u8>); 4] {
    let icmp = match f {
        Family::V4 => "icmp",
        Family::V6 => "icmpv6",
    };
    [
        ("tcp", Some(IPPROTO_TCP)),
        ("udp", Some(IPPROTO_UDP)),
        (icmp, Some(f.icmp())),
        ("other", None),
    ]
}

/// Builds the table for `policy` filtering `interfaces`; `generation` goes into the base rule's
/// comment.
/// The comment of the base chain's rule, which carries the generation.
fn generation_comment(generation: u64) -> String {
    format!("{}{generation}", names::GENERATION_PREFIX)
}

/// Turns `rs`, built for some generation, into the plan of `generation`: only the base rule's
/// comment depends on it, so an apply builds (and hashes) the sets of a large plan once.
pub fn restamp(rs: &mut Ruleset, generation: u64) {
    if let Some(rule) = rs
        .chains
        .iter_mut()
        .find(|c| c.name == names::BASE_CHAIN)
        .and_then(|c| c.rules.first_mut())
    {
        rule.comment = Some(generation_comment(generation));
    }
}

pub fn build(policy: &Policy, interfaces: &[String], generation: u64) -> Ruleset {
    let mut b = Builder::default();
    // Names go into the set (nft matches them by name, so an interface created later is
    // filtered as it appears); each `eth*` pattern is a prefix compare of its own.
    let (patterns, names): (Vec<&String>, Vec<&String>) =
        interfaces.iter().partition(|i| i.ends_with('*'));
    b.sets.push(SetDef {
        name: names::UPLINKS_SET.into(),
        kind: SetKind::IfName,
        elems: names.into_iter().map(|i| Elem::IfName(i.clone())).collect(),
    });
    let mut base = vec![RuleDef {
        matches: vec![Match::IifnameIn(names::UPLINKS_SET.into())],
        log: None,
        counter: None,
        verdict: Some(Verdict::Goto(names::INBOUND_CHAIN.into())),
        comment: Some(generation_comment(generation)),
    }];
    base.extend(patterns.into_iter().map(|p| RuleDef {
        matches: vec![Match::IifnamePrefix(p.trim_end_matches('*').to_string())],
        log: None,
        counter: None,
        verdict: Some(Verdict::Goto(names::INBOUND_CHAIN.into())),
        comment: Some(format!("{}{p}", names::UPLINK_PATTERN_PREFIX)),
    }));
    b.chains.push(ChainDef {
        name: names::BASE_CHAIN.into(),
        hook_priority: Some(names::PRIORITY),
        rules: base,
    });
    let mut inbound = Vec::new();
    // Neighbour discovery comes before the invalid check: conntrack does not track ND and marks
    // redirects (137) invalid, yet IPv6 needs all of 133-137 (see policy::model).
    b.neighbour_discovery(policy, &mut inbound);
    let invalid = b.drop_chain(policy.mode, DropReason::Invalid, None);
    inbound.push(RuleDef {
        matches: vec![Match::CtState(CT_INVALID)],
        log: None,
        counter: None,
        verdict: Some(Verdict::Goto(invalid)),
        comment: Some("invalid: malformed or not trackable".into()),
    });
    b.implicit(policy, &mut inbound);
    for rule in &policy.rules {
        b.rule(policy.mode, rule, &mut inbound);
    }
    let default = b.drop_chain(policy.mode, DropReason::DefaultDeny, None);
    inbound.push(RuleDef {
        matches: vec![],
        log: None,
        counter: None,
        verdict: Some(Verdict::Goto(default)),
        comment: Some("default-deny".into()),
    });
    // The inbound chain must exist before the base chain's rule that jumps to it, and the drop
    // chains before the inbound rules: chains are created in this order.
    b.chains.insert(
        1,
        ChainDef {
            name: names::INBOUND_CHAIN.into(),
            hook_priority: None,
            rules: inbound,
        },
    );
    Ruleset {
        sets: b.sets,
        counters: b.counters,
        chains: b.chains,
    }
}

#[derive(Default)]
struct Builder {
    sets: Vec<SetDef>,
    counters: Vec<CounterDef>,
    chains: Vec<ChainDef>,
}

impl Builder {
    fn counter(&mut self, name: String, comment: String) -> String {
        self.counters.push(CounterDef {
            name: name.clone(),
            comment,
        });
        name
    }

    fn set(&mut self, name: String, kind: SetKind, elems: Vec<Elem>) -> String {
        self.sets.push(SetDef {
            name: name.clone(),
            kind,
            elems,
        });
        name
    }

    /// A chain that samples a drop to the daemon, counts it by family and protocol, then
    /// drops (or accepts, in audit).
    fn drop_chain(&mut self, mode: Mode, reason: DropReason, rule: Option<&Rule>) -> String {
        let ident = rule.map(|r| names::ident(&r.name));
        let chain = names::drop_chain(reason.as_str(), ident.as_deref());
        let verdict = match mode {
            Mode::Enforce => Verdict::Drop,
            Mode::Audit => Verdict::Accept,
        };
        // The sample is a rule of its own, without a verdict: over the rate limit it simply
        // does not match, and the counting and dropping rules below see every packet.
        let mut rules = vec![RuleDef {
            matches: vec![Match::Limit {
                per_second: drops::KERNEL_SAMPLE_RATE,
                burst: SAMPLE_BURST,
            }],
            log: Some(Log {
                prefix: drops::nflog_prefix(
                    reason.as_str(),
                    rule.map(|r| r.name.as_str()).unwrap_or(""),
                ),
                group: drops::NFLOG_GROUP,
            }),
            counter: None,
            verdict: None,
            comment: None,
        }];
        for f in Family::BOTH {
            for (proto, number) in drop_protocols(f) {
                let counter = self.counter(
                    names::drop_counter(&chain, f.label(), proto),
                    comment::drop(
                        reason.as_str(),
                        f.label(),
                        proto,
                        rule.map(|r| r.name.as_str()),
                    ),
                );
                let mut matches = vec![Match::NfProto(f)];
                matches.extend(number.map(Match::L4Proto));
                rules.push(RuleDef {
                    matches,
                    log: None,
                    counter: Some(counter),
                    verdict: Some(verdict.clone()),
                    comment: None,
                });
            }
        }
        self.chains.push(ChainDef {
            name: chain.clone(),
            hook_priority: None,
            rules,
        });
        chain
    }

    /// Implicit allowances, in the evaluator's order.
    /// An accepting rule with its own counter, for an implicit allowance.
    fn allow(&mut self, out: &mut Vec<RuleDef>, what: &str, matches: Vec<Match>) {
        let counter = self.counter(
            format!("implicit.{what}"),
            format!("implicit {what} (accepted)"),
        );
        out.push(RuleDef {
            matches,
            log: None,
            counter: Some(counter),
            verdict: Some(Verdict::Accept),
            comment: Some(format!("implicit: {what}")),
        });
    }

    fn neighbour_discovery(&mut self, policy: &Policy, out: &mut Vec<RuleDef>) {
        if policy.implicit.neighbour_discovery {
            let nd = self.set(
                ND_SET.into(),
                SetKind::Icmpv6Type,
                ICMPV6_ND_TYPES.map(Elem::Icmp).collect(),
            );
            self.allow(
                out,
                "neighbour-discovery",
                vec![Match::IcmpTypeIn(Family::V6, nd)],
            );
        }
    }

    fn implicit(&mut self, policy: &Policy, out: &mut Vec<RuleDef>) {
        let imp = policy.implicit;
        let mut allow = |b: &mut Self, what: &str, matches: Vec<Match>| b.allow(out, what, matches);
        if imp.established {
            allow(self, "established", vec![Match::CtState(CT_ESTABLISHED)]);
            // Related ICMP is the `icmp-errors` allowance's business; every other related flow
            // (e.g. an FTP data connection) is return traffic.
            for f in Family::BOTH {
                allow(
                    self,
                    &format!("related-{}", f.label()),
                    vec![
                        Match::CtState(CT_RELATED),
                        Match::NfProto(f),
                        Match::L4ProtoNot(f.icmp()),
                    ],
                );
            }
        }
        if imp.icmp_errors {
            let v4 = self.set(
                ICMP_ERRORS_SET.into(),
                SetKind::IcmpType,
                ICMPV4_ERROR_TYPES.iter().map(|&t| Elem::Icmp(t)).collect(),
            );
            let v6 = self.set(
                ICMPV6_ERRORS_SET.into(),
                SetKind::Icmpv6Type,
                ICMPV6_ERROR_TYPES.iter().map(|&t| Elem::Icmp(t)).collect(),
            );
            allow(
                self,
                "icmp-errors",
                vec![
                    Match::CtState(CT_RELATED),
                    Match::IcmpTypeIn(Family::V4, v4),
                ],
            );
            allow(
                self,
                "icmpv6-errors",
                vec![
                    Match::CtState(CT_RELATED),
                    Match::IcmpTypeIn(Family::V6, v6),
                ],
            );
        }
        if imp.dhcp_client {
            allow(
                self,
                "dhcp-client",
                vec![Match::UdpPorts(DHCP_SERVER_PORT, DHCP_CLIENT_PORT)],
            );
        }
    }

    /// One policy rule: one nft rule per address family it has sources in, sharing one counter.
    fn rule(&mut self, mode: Mode, rule: &Rule, out: &mut Vec<RuleDef>) {
        let id = names::ident(&rule.name);
        let counter = self.counter(
            names::rule_counter(&id),
            comment::rule(rule.action, &rule.name),
        );
        let verdict = match rule.action {
            Action::Allow => Verdict::Accept,
            Action::Deny => Verdict::Goto(self.drop_chain(mode, DropReason::Rule, Some(rule))),
        };
        let l4 = match rule.protocol {
            Protocol::Tcp => Some(IPPROTO_TCP),
            Protocol::Udp => Some(IPPROTO_UDP),
            Protocol::Icmp => Some(IPPROTO_ICMP),
            Protocol::Icmpv6 => Some(IPPROTO_ICMPV6),
            Protocol::All => None,
        };
        // One port range is a compare, as cheap as the protocol test; a set lookup (a tree
        // walk, then the catch-all check on a miss) costs tens of ns more for every packet of
        // that protocol that reaches the rule, and most rules name one port or one range.
        let ports = match (l4, rule.ports.ranges()) {
            _ if rule.ports.is_any() => None,
            (Some(p), [r]) => Some(Match::Dport(p, r.start, r.end)),
            (Some(p), ranges) => {
                let elems = ranges.iter().map(|r| Elem::Port(r.start, r.end)).collect();
                Some(Match::DportIn(
                    p,
                    self.set(names::ports_set(&id), SetKind::Port, elems),
                ))
            }
            (None, _) => None,
        };
        for f in Family::BOTH {
            let family_ok = match rule.protocol {
                Protocol::Icmp => f == Family::V4,
                Protocol::Icmpv6 => f == Family::V6,
                _ => true,
            };
            let elems: Vec<Elem> = match f {
                Family::V4 => rule
                    .sources
                    .v4_ranges()
                    .iter()
                    .map(|&(s, e)| Elem::V4(s, e))
                    .collect(),
                Family::V6 => rule
                    .sources
                    .v6_ranges()
                    .iter()
                    .map(|&(s, e)| Elem::V6(s, e))
                    .collect(),
            };
            if !family_ok || elems.is_empty() {
                continue;
            }
            let everything = matches!(
                elems[..],
                [Elem::V4(0, u32::MAX)] | [Elem::V6(0, u128::MAX)]
            );
            // The family, protocol and port come before the source: nft stops a rule at its
            // first failing match, the family and protocol are register compares, and the port
            // test (a compare, or a lookup in a set of a few port ranges) is far cheaper than a
            // source lookup in a set of thousands of intervals. Rules mostly differ by port, so
            // a packet pays the source lookup only in the rules its port matches, not in every
            // rule before its verdict, and no lookup at all in the other family's rules.
            let mut matches = vec![Match::NfProto(f)];
            match (l4, &ports) {
                (Some(_), Some(port)) => matches.push(port.clone()),
                (Some(p), None) => matches.push(Match::L4Proto(p)),
                (None, _) => {}
            }
            let sources = if everything {
                vec![None]
            } else {
                self.sources(f, &id, elems).into_iter().map(Some).collect()
            };
            // Several nft rules for one policy rule are adjacent, share its counter and verdict
            // and match disjoint sources: together they act as one rule.
            for src in sources {
                let mut matches = matches.clone();
                matches.extend(src);
                out.push(RuleDef {
                    matches,
                    log: None,
                    counter: Some(counter.clone()),
                    verdict: Some(verdict.clone()),
                    comment: Some(rule.name.clone()),
                });
            }
        }
    }

    /// The source matches of one rule and family: one interval-set lookup, or one hash-set
    /// lookup per prefix length when [`by_prefix_length`] finds that cheaper.
    fn sources(&mut self, f: Family, id: &str, elems: Vec<Elem>) -> Vec<Match> {
        let v6 = f == Family::V6;
        let ranges: Vec<(u128, u128)> = elems
            .iter()
            .map(|e| match *e {
                Elem::V4(s, e) => (s as u128, e as u128),
                Elem::V6(s, e) => (s, e),
                _ => unreachable!("source elements are addresses"),
            })
            .collect();
        let Some(groups) = by_prefix_length(&ranges, f.bits()) else {
            let kind = if v6 { SetKind::Addr6 } else { SetKind::Addr4 };
            let set = self.set(names::src_set(v6, id), kind, elems);
            return vec![Match::SaddrIn(f, set)];
        };
        groups
            .into_iter()
            .map(|(len, nets)| {
                let (kind, elems) = if v6 {
                    (SetKind::Net6, nets.into_iter().map(Elem::Net6).collect())
                } else {
                    let nets = nets.into_iter().map(|n| Elem::Net4(n as u32));
                    (SetKind::Net4, nets.collect())
                };
                let set = self.set(names::src_prefix_set(v6, len, id), kind, elems);
                Match::SaddrPrefixIn(f, len, set)
            })
            .collect()
    }
}

/// Fewest intervals for which hash sets by prefix length may replace the interval set: below,
/// the tree is shallow, the gain within noise, and the interval set reads better in `nft list`.
const HASHED_MIN_INTERVALS: usize = 16;

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
fn by_prefix_length(ranges: &[(u128, u128)], bits: u32) -> Option<BTreeMap<u8, Vec<u128>>> {
    if ranges.len() < HASHED_MIN_INTERVALS {
        return None;
    }
    let tree = TREE_BASE_NS + TREE_LEVEL_NS * ((2 * ranges.len()) as f64).log2();
    let max_lengths = (tree / HASH_LOOKUP_NS) as usize;
    let mut groups: BTreeMap<u8, Vec<u128>> = BTreeMap::new();
    for &(s, e) in ranges {
        for (net, len) in prefixes(s, e, bits) {
            groups.entry(len).or_default().push(net);
            if groups.len() > max_lengths {
                return None;
            }
        }
    }
    Some(groups)
}

/// The aligned prefixes (network, length) whose union is exactly `[s, e]` in a `bits`-wide
/// space, in address order. An iterator that sizes each block in O(1): a re-apply builds the
/// plan of every rule again, 10k ranges and more.
fn prefixes(s: u128, e: u128, bits: u32) -> Prefixes {
    Prefixes {
        next: Some(s),
        end: e,
        bits,
    }
}

struct Prefixes {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Implicit, PortRange};
    use crate::policy::{AddrSet, Origin, PortSet};

    fn policy(rules: Vec<Rule>) -> Policy {
        Policy {
            mode: Mode::Enforce,
            implicit: Implicit::default(),
            rules,
            interfaces: vec!["eth0".into()],
            profile: None,
        }
    }

    fn rule(name: &str, action: Action, protocol: Protocol, nets: &[&str]) -> Rule {
        let nets: Vec<ipnet::IpNet> = nets.iter().map(|n| n.parse().unwrap()).collect();
        Rule {
            name: name.into(),
            action,
            protocol,
            ports: if protocol.has_ports() {
                PortSet::new(vec![PortRange::new(30000, 32768)])
            } else {
                PortSet::any()
            },
            sources: AddrSet::from_nets(&nets),
            origin: Origin::User,
        }
    }

    #[test]
    fn names_are_unique_and_rules_split_by_family() {
        let p = policy(vec![
            rule(
                "a",
                Action::Allow,
                Protocol::Tcp,
                &["10.0.0.0/8", "fd00::/8"],
            ),
            rule("b", Action::Deny, Protocol::Icmp, &["0.0.0.0/0", "::/0"]),
        ]);
        let rs = build(&p, &["eth0".into()], 1);
        let mut names: Vec<_> = rs.sets.iter().map(|s| &s.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), rs.sets.len());
        let inbound = &rs.chains[1];
        let a: Vec<_> = inbound
            .rules
            .iter()
            .filter(|r| r.comment.as_deref() == Some("a"))
            .collect();
        assert_eq!(a.len(), 2, "one nft rule per family");
        // The family first, then one port range as a compare (no set), then the source.
        assert_eq!(
            a[1].matches,
            vec![
                Match::NfProto(Family::V6),
                Match::Dport(IPPROTO_TCP, 30000, 32768),
                Match::SaddrIn(Family::V6, "src6.a".into())
            ]
        );
        assert!(!rs.sets.iter().any(|s| s.name == "ports.a"));
        let b: Vec<_> = inbound
            .rules
            .iter()
            .filter(|r| r.comment.as_deref() == Some("b"))
            .collect();
        assert_eq!(b.len(), 1, "icmp is IPv4 only");
        assert_eq!(
            b[0].matches,
            vec![Match::NfProto(Family::V4), Match::L4Proto(IPPROTO_ICMP)],
            "0.0.0.0/0 needs no set"
        );
        assert_eq!(b[0].verdict, Some(Verdict::Goto("drop.rule.b".into())));
        let drop_b = rs.chains.iter().find(|c| c.name == "drop.rule.b").unwrap();
        // The drop sample comes first and has no verdict: the rules that count and drop see
        // every packet, whatever the sample's rate limit does.
        let sample = &drop_b.rules[0];
        assert_eq!(sample.verdict, None);
        assert_eq!(sample.counter, None);
        assert_eq!(
            sample.log,
            Some(Log {
                prefix: "nodewall:rule:b".into(),
                group: drops::NFLOG_GROUP
            })
        );
        assert_eq!(
            sample.matches,
            vec![Match::Limit {
                per_second: drops::KERNEL_SAMPLE_RATE,
                burst: SAMPLE_BURST
            }]
        );
        assert!(drop_b.rules[1..]
            .iter()
            .all(|r| r.counter.is_some() && r.verdict == Some(Verdict::Drop)));
        // 8 drop counters for each of invalid, default-deny and the deny rule.
        assert_eq!(
            rs.counters
                .iter()
                .filter(|c| c.name.starts_with("drop."))
                .count(),
            24
        );
    }

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

    #[test]
    fn many_sources_of_few_prefix_lengths_become_hash_sets() {
        let nets = |n: usize, len: u8| -> Vec<String> {
            (0..n)
                .map(|i| format!("198.18.{}.{}/{len}", i / 8, (i % 8) * 32))
                .collect()
        };
        let build_one = |nets: Vec<String>| {
            let nets: Vec<&str> = nets.iter().map(String::as_str).collect();
            build(
                &policy(vec![rule("a", Action::Allow, Protocol::Udp, &nets)]),
                &["eth0".into()],
                1,
            )
        };
        let a_rules = |rs: &Ruleset| -> Vec<Vec<Match>> {
            rs.chains[1]
                .rules
                .iter()
                .filter(|r| r.comment.as_deref() == Some("a"))
                .map(|r| r.matches.clone())
                .collect()
        };
        // Few intervals: one interval set, the family and port tested before the source.
        let rs = build_one(nets(HASHED_MIN_INTERVALS - 1, 28));
        let port = Match::Dport(IPPROTO_UDP, 30000, 32768);
        let v4 = Match::NfProto(Family::V4);
        assert_eq!(
            a_rules(&rs),
            vec![vec![
                v4.clone(),
                port.clone(),
                Match::SaddrIn(Family::V4, "src4.a".into())
            ]]
        );
        // Many, of two lengths: one hash set and one rule per length, sharing the counter.
        let mut two = nets(HASHED_MIN_INTERVALS, 28);
        two.push("198.19.0.0/24".into());
        let rs = build_one(two);
        assert_eq!(
            a_rules(&rs),
            vec![
                vec![
                    v4.clone(),
                    port.clone(),
                    Match::SaddrPrefixIn(Family::V4, 24, "src4p24.a".into())
                ],
                vec![
                    v4.clone(),
                    port.clone(),
                    Match::SaddrPrefixIn(Family::V4, 28, "src4p28.a".into())
                ],
            ]
        );
        let p28 = rs.sets.iter().find(|s| s.name == "src4p28.a").unwrap();
        assert_eq!(p28.kind, SetKind::Net4);
        assert_eq!(p28.elems.len(), HASHED_MIN_INTERVALS);
        assert_eq!(p28.elems[1], Elem::Net4(0xc612_0020));
        // More lengths than that: back to the interval set.
        let mut three = nets(HASHED_MIN_INTERVALS, 28);
        three.extend(["198.19.0.0/24".into(), "198.19.2.0/23".into()]);
        assert_eq!(
            a_rules(&build_one(three))[0][2],
            Match::SaddrIn(Family::V4, "src4.a".into())
        );
    }

    #[test]
    fn several_port_ranges_are_a_set_one_is_a_compare() {
        let mut r = rule("a", Action::Allow, Protocol::Udp, &["10.0.0.0/8"]);
        r.ports = PortSet::new(vec![PortRange::new(53, 53), PortRange::new(8000, 8080)]);
        let mut one = rule("b", Action::Allow, Protocol::Udp, &["10.0.0.0/8"]);
        one.ports = PortSet::new(vec![PortRange::new(53, 53)]);
        let rs = build(&policy(vec![r, one]), &["eth0".into()], 1);
        let ports = rs.sets.iter().find(|s| s.name == "ports.a").unwrap();
        assert_eq!(
            ports.elems,
            vec![Elem::Port(53, 53), Elem::Port(8000, 8080)]
        );
        let matches = |name: &str| {
            let r = rs.chains[1]
                .rules
                .iter()
                .find(|r| r.comment.as_deref() == Some(name));
            r.unwrap().matches[1].clone()
        };
        assert_eq!(matches("a"), Match::DportIn(IPPROTO_UDP, "ports.a".into()));
        assert_eq!(matches("b"), Match::Dport(IPPROTO_UDP, 53, 53));
        assert!(!rs.sets.iter().any(|s| s.name == "ports.b"));
    }
}
