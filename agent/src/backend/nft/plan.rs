//! Policy -> the objects of table `inet nodewall`: sets, named counters, chains and rules.
//!
//! This description is the single source for both outputs of the backend: the `nft -f` script
//! (`script.rs`) and the netlink batch (`netlink/`). Both must therefore map every [`Match`] to
//! exactly what `nft` itself generates for the rendered text, so `nft list` shows the same
//! table whichever way it was loaded.

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

#[derive(Clone, Debug, PartialEq, Eq)]
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Log {
    pub prefix: String,
    pub group: u16,
}

/// `ct state` bits as the kernel defines them.
pub const CT_INVALID: u32 = 1;
pub const CT_ESTABLISHED: u32 = 2;
pub const CT_RELATED: u32 = 4;

/// A match, with the dependencies `nft` adds for it (e.g. `ip saddr` implies `meta nfproto ipv4`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Match {
    /// `iifname @SET`
    IifnameIn(String),
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
    /// `tcp dport @SET` / `udp dport @SET`
    DportIn(u8, String),
    /// `icmp type @SET` / `icmpv6 type @SET`
    IcmpTypeIn(Family, String),
    /// `udp sport A udp dport B`; nft loads both ports with one 4-byte payload expression.
    UdpPorts(u16, u16),
    /// `limit rate R/second burst B packets`: true while the rule's token bucket has packets
    /// left.
    Limit { per_second: u32, burst: u32 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
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
pub fn build(policy: &Policy, interfaces: &[String], generation: u64) -> Ruleset {
    let mut b = Builder::default();
    b.sets.push(SetDef {
        name: names::UPLINKS_SET.into(),
        kind: SetKind::IfName,
        elems: interfaces.iter().map(|i| Elem::IfName(i.clone())).collect(),
    });
    b.chains.push(ChainDef {
        name: names::BASE_CHAIN.into(),
        hook_priority: Some(names::PRIORITY),
        rules: vec![RuleDef {
            matches: vec![Match::IifnameIn(names::UPLINKS_SET.into())],
            log: None,
            counter: None,
            verdict: Some(Verdict::Goto(names::INBOUND_CHAIN.into())),
            comment: Some(format!("{}{generation}", names::GENERATION_PREFIX)),
        }],
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
        let ports = (!rule.ports.is_any()).then(|| {
            let elems = rule
                .ports
                .ranges()
                .iter()
                .map(|r| Elem::Port(r.start, r.end))
                .collect();
            self.set(names::ports_set(&id), SetKind::Port, elems)
        });
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
            let mut matches = Vec::new();
            if everything {
                matches.push(Match::NfProto(f));
            } else {
                let kind = match f {
                    Family::V4 => SetKind::Addr4,
                    Family::V6 => SetKind::Addr6,
                };
                let set = self.set(names::src_set(f == Family::V6, &id), kind, elems);
                matches.push(Match::SaddrIn(f, set));
            }
            match (l4, &ports) {
                (Some(p), Some(set)) => matches.push(Match::DportIn(p, set.clone())),
                (Some(p), None) => matches.push(Match::L4Proto(p)),
                (None, _) => {}
            }
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
}
