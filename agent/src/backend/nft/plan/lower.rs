//! Policy -> [`Ruleset`]: the evaluation order of `policy::model` as nft chains and rules.

use nodewall_common::DropReason;

use super::cost::by_prefix_length;
use super::dispatch::dispatch;
use super::{
    ChainDef, CounterDef, Elem, Family, Hook, HookPoint, Log, Match, RuleDef, Ruleset, SetDef,
    SetKind, Verdict, CT_ESTABLISHED, CT_INVALID, CT_RELATED, IPPROTO_ICMP, IPPROTO_ICMPV6,
    IPPROTO_TCP, IPPROTO_UDP,
};
use crate::backend::nft::names::{self, comment};
use crate::backend::nft::nflog as drops;
use crate::policy::{
    prefixes, Action, Mode, Policy, PortSet, Protocol, Rule, DHCP_CLIENT_PORT, DHCP_SERVER_PORT,
    ICMPV4_ERROR_TYPES, ICMPV6_ERROR_TYPES, ICMPV6_ND_TYPES,
};

const ICMP_ERRORS_SET: &str = "icmp-errors";
const ICMPV6_ERRORS_SET: &str = "icmpv6-errors";
const ND_SET: &str = "nd-types";
/// The most uplinks the base chain names one rule each; more are looked up in the set.
const MAX_DIRECT_UPLINKS: usize = 3;

/// The protocols drop counters are split by, per family.
fn drop_protocols(f: Family) -> [(&'static str, Option<u8>); 4] {
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

/// Builds the table for `policy` filtering `interfaces`; `generation` goes into the base rule's
/// comment.
pub fn build(policy: &Policy, interfaces: &[String], generation: u64) -> Ruleset {
    let mut b = Builder {
        sample_rate: policy.samples_per_second,
        ..Builder::default()
    };
    // Names go into the set (nft matches them by name, so an interface created later is
    // filtered as it appears); each `eth*` pattern is a prefix compare of its own.
    let (patterns, names): (Vec<&String>, Vec<&String>) =
        interfaces.iter().partition(|i| i.ends_with('*'));
    b.sets.push(SetDef {
        name: names::UPLINKS_SET.into(),
        kind: SetKind::IfName,
        elems: names.iter().map(|i| Elem::IfName((*i).clone())).collect(),
    });
    let to_inbound = |m: Match, comment: Option<String>| RuleDef {
        matches: vec![m],
        log: None,
        counter: None,
        verdict: Some(Verdict::Goto(names::INBOUND_CHAIN.into())),
        comment,
    };
    // A few names are compared one by one: a compare costs less than hashing the name for
    // a set lookup (the set still lists them, for the egress chains and `status`).
    let mut base: Vec<RuleDef> = if (1..=MAX_DIRECT_UPLINKS).contains(&names.len()) {
        let each = names.iter().map(|n| Match::Iifname((*n).clone()));
        each.map(|m| to_inbound(m, None)).collect()
    } else {
        vec![to_inbound(
            Match::IifnameIn(names::UPLINKS_SET.into()),
            None,
        )]
    };
    base[0].comment = Some(generation_comment(generation));
    base.extend(patterns.into_iter().map(|p| {
        let m = Match::IifnamePrefix(p.trim_end_matches('*').to_string());
        to_inbound(m, Some(format!("{}{p}", names::UPLINK_PATTERN_PREFIX)))
    }));
    b.chains.push(ChainDef {
        name: names::BASE_CHAIN.into(),
        hook: Some(Hook {
            point: HookPoint::Prerouting,
            priority: names::PRIORITY,
        }),
        rules: base,
    });
    let mut inbound = Vec::new();
    // Neighbour discovery comes before the invalid check: conntrack does not track ND and marks
    // redirects (137) invalid, yet IPv6 needs all of 133-137 (see policy::model).
    b.neighbour_discovery(policy, &mut inbound);
    let invalid = b.drop_chain(policy.mode, DropReason::Invalid, None);
    // Established first: it is nearly every packet a node receives, and conntrack gives a packet
    // exactly one of these states, so the order changes no verdict and no counter, only how
    // many tests the common packet pays (an invalid one, dropped anyway, pays the rest).
    let mut tracked = Vec::new();
    b.implicit_tracked(policy, &mut tracked);
    tracked.push(RuleDef {
        matches: vec![Match::CtState(CT_INVALID)],
        log: None,
        counter: None,
        verdict: Some(Verdict::Goto(invalid)),
        comment: Some("invalid: malformed or not trackable".into()),
    });
    inbound.push(RuleDef {
        matches: vec![Match::CtState(CT_INVALID | CT_ESTABLISHED | CT_RELATED)],
        log: None,
        counter: None,
        verdict: Some(Verdict::Jump(names::TRACKED_CHAIN.into())),
        comment: Some("known to conntrack".into()),
    });
    let mut dhcp = Vec::new();
    b.dhcp_client(policy, &mut dhcp);
    let lowered: Vec<Vec<RuleDef>> = policy
        .rules
        .iter()
        .map(|rule| {
            let mut nft = Vec::new();
            b.rule(policy.mode, rule, &mut nft);
            nft
        })
        .collect();
    let default = b.drop_chain(policy.mode, DropReason::DefaultDeny, None);
    let mut routed = dispatch(&policy.rules, lowered, &default);
    // The DHCP allowance only matches UDP to port 68. Behind an exact UDP dispatch that does
    // not list 68 such a packet misses the lookup and reaches it, still ahead of every rule
    // that could judge it: there it spares every other packet its test.
    let late = routed.maps.iter().any(|m| {
        m.name == names::dispatch_map("udp")
            && m.kind == SetKind::PortVerdictExact
            && !m
                .elems
                .iter()
                .any(|e| matches!(e, Elem::PortVerdict(p, _, _) if *p == DHCP_CLIENT_PORT))
    });
    if late {
        let at = routed.maps.len();
        routed.inbound.splice(at..at, dhcp);
    } else {
        inbound.append(&mut dhcp);
    }
    inbound.extend(routed.inbound);
    b.sets.extend(routed.maps);
    b.chains.extend(routed.chains);
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
            hook: None,
            rules: inbound,
        },
    );
    b.chains.insert(
        2,
        ChainDef {
            name: names::TRACKED_CHAIN.into(),
            hook: None,
            rules: tracked,
        },
    );
    if !policy.egress.is_open() {
        b.egress(policy, interfaces);
    }
    Ruleset {
        sets: b.sets,
        counters: b.counters,
        chains: b.chains,
    }
}

#[derive(Default)]
pub(super) struct Builder {
    /// Drop samples each drop chain sends per second (and at once: one second's worth).
    sample_rate: u32,
    pub(super) sets: Vec<SetDef>,
    pub(super) counters: Vec<CounterDef>,
    pub(super) chains: Vec<ChainDef>,
}

impl Builder {
    pub(super) fn counter(&mut self, name: String, comment: String) -> String {
        self.counters.push(CounterDef {
            name: name.clone(),
            comment,
        });
        name
    }

    pub(super) fn set(&mut self, name: String, kind: SetKind, elems: Vec<Elem>) -> String {
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
        self.drop_chain_for(mode, reason, rule.map(|r| r.name.as_str()), false)
    }

    /// [`Self::drop_chain`] for a rule name, inbound or egress (whose counters' comments say
    /// so, for the `direction` label).
    pub(super) fn drop_chain_for(
        &mut self,
        mode: Mode,
        reason: DropReason,
        rule: Option<&str>,
        egress: bool,
    ) -> String {
        let ident = rule.map(names::ident);
        let chain = match (egress, rule) {
            (true, None) => names::egress_drop_chain(reason.as_str()),
            _ => names::drop_chain(reason.as_str(), ident.as_deref()),
        };
        let verdict = match mode {
            Mode::Enforce => Verdict::Drop,
            Mode::Audit => Verdict::Accept,
        };
        // The sample is a rule of its own, without a verdict: over the rate limit it simply
        // does not match, and the counting and dropping rules below see every packet.
        let mut rules = Vec::new();
        if self.sample_rate > 0 {
            rules.push(RuleDef {
                matches: vec![Match::Limit {
                    per_second: self.sample_rate,
                    burst: self.sample_rate,
                }],
                log: Some(Log {
                    prefix: drops::nflog_prefix(mode, egress, reason.as_str(), rule.unwrap_or("")),
                    group: drops::NFLOG_GROUP,
                }),
                counter: None,
                verdict: None,
                comment: None,
            });
        }
        for f in Family::BOTH {
            for (proto, number) in drop_protocols(f) {
                let counter = self.counter(
                    names::drop_counter(&chain, f.label(), proto),
                    comment::drop(egress, reason.as_str(), f.label(), proto, rule),
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
            hook: None,
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

    /// The set of ICMPv6 neighbour-discovery types, created on first use.
    pub(super) fn nd_set(&mut self) -> String {
        if !self.sets.iter().any(|s| s.name == ND_SET) {
            self.set(
                ND_SET.into(),
                SetKind::Icmpv6Type,
                ICMPV6_ND_TYPES.map(Elem::Icmp).collect(),
            );
        }
        ND_SET.into()
    }

    fn neighbour_discovery(&mut self, policy: &Policy, out: &mut Vec<RuleDef>) {
        if policy.implicit.neighbour_discovery {
            let nd = self.nd_set();
            self.allow(
                out,
                "neighbour-discovery",
                vec![Match::IcmpTypeIn(Family::V6, nd)],
            );
        }
    }

    /// The implicit allowances about packets conntrack knows, in the evaluator's order.
    fn implicit_tracked(&mut self, policy: &Policy, out: &mut Vec<RuleDef>) {
        let imp = policy.implicit;
        if imp.established {
            // A bare SYN is never return traffic, whatever conntrack says: conntrack lets one
            // pass as `established` when it reuses the tuple of a connection it still holds
            // (one whose end it did not see), and the XDP backend sends every connection
            // attempt to the rules. Two rules, one counter.
            let counter = self.counter(
                "implicit.established".into(),
                "implicit established (accepted)".into(),
            );
            for m in [Match::L4ProtoNot(IPPROTO_TCP), Match::TcpNotBareSyn] {
                out.push(RuleDef {
                    matches: vec![Match::CtState(CT_ESTABLISHED), m],
                    log: None,
                    counter: Some(counter.clone()),
                    verdict: Some(Verdict::Accept),
                    comment: Some("implicit: established".into()),
                });
            }
        }
        let mut allow = |b: &mut Self, what: &str, matches: Vec<Match>| b.allow(out, what, matches);
        if imp.established {
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
    }

    /// DHCP replies to the node's client: new to conntrack (they answer a broadcast).
    fn dhcp_client(&mut self, policy: &Policy, out: &mut Vec<RuleDef>) {
        if policy.implicit.dhcp_client {
            self.allow(
                out,
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
            comment::rule(rule.action, false, &rule.name),
        );
        let verdict = match rule.action {
            Action::Allow => Verdict::Accept,
            Action::Deny => Verdict::Goto(self.drop_chain(mode, DropReason::Rule, Some(rule))),
        };
        let (l4, ports) = self.proto_ports(&id, rule.protocol, &rule.ports);
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

    /// The protocol number of a rule (`None` for all) and its port match: one port range is a
    /// compare, as cheap as the protocol test; a set lookup (a tree walk, then the catch-all
    /// check on a miss) costs tens of ns more for every packet of that protocol that reaches
    /// the rule, and most rules name one port or one range.
    pub(super) fn proto_ports(
        &mut self,
        id: &str,
        protocol: Protocol,
        ports: &PortSet,
    ) -> (Option<u8>, Option<Match>) {
        let l4 = match protocol {
            Protocol::Tcp => Some(IPPROTO_TCP),
            Protocol::Udp => Some(IPPROTO_UDP),
            Protocol::Icmp => Some(IPPROTO_ICMP),
            Protocol::Icmpv6 => Some(IPPROTO_ICMPV6),
            Protocol::All => None,
        };
        let ports = match (l4, ports.ranges()) {
            _ if ports.is_any() => None,
            (Some(p), [r]) => Some(Match::Dport(p, r.start, r.end)),
            (Some(p), ranges) => {
                let elems = ranges.iter().map(|r| Elem::Port(r.start, r.end)).collect();
                Some(Match::DportIn(
                    p,
                    self.set(names::ports_set(id), SetKind::Port, elems),
                ))
            }
            (None, _) => None,
        };
        (l4, ports)
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
        // One network: a compare, no set (a lookup costs a hash or a tree walk).
        if let [(s, e)] = ranges[..] {
            let mut nets = prefixes(s, e, f.bits());
            if let (Some((net, len)), None) = (nets.next(), nets.next()) {
                return vec![Match::SaddrNet(f, len, net)];
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{AddrSet, Origin, PortSet};
    use crate::policy::{Implicit, PortRange};

    fn policy(rules: Vec<Rule>) -> Policy {
        Policy {
            mode: Mode::Enforce,
            implicit: Implicit::default(),
            rules,
            interfaces: vec!["eth0".into()],
            profile: None,
            samples_per_second: crate::config::DEFAULT_SAMPLES_PER_SECOND,
            egress: Default::default(),
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
    fn a_new_packet_meets_one_conntrack_test() {
        let p = policy(vec![rule(
            "a",
            Action::Allow,
            Protocol::Tcp,
            &["10.0.0.0/8"],
        )]);
        let rs = build(&p, &["eth0".into()], 1);
        let (inbound, tracked) = (&rs.chains[1], &rs.chains[2]);
        assert_eq!(inbound.name, names::INBOUND_CHAIN);
        assert_eq!(tracked.name, names::TRACKED_CHAIN);
        let ct = |r: &RuleDef| r.matches.iter().any(|m| matches!(m, Match::CtState(_)));
        let in_inbound: Vec<_> = inbound.rules.iter().filter(|r| ct(r)).collect();
        assert_eq!(in_inbound.len(), 1, "{inbound:#?}");
        assert_eq!(
            in_inbound[0].matches,
            vec![Match::CtState(CT_INVALID | CT_ESTABLISHED | CT_RELATED)]
        );
        assert_eq!(
            in_inbound[0].verdict,
            Some(Verdict::Jump(names::TRACKED_CHAIN.into()))
        );
        // The allowances, established first, then invalid; none of them is left in `inbound`.
        assert_eq!(
            tracked.rules[0].matches,
            vec![
                Match::CtState(CT_ESTABLISHED),
                Match::L4ProtoNot(IPPROTO_TCP)
            ]
        );
        let last = tracked.rules.last().expect("rules");
        assert_eq!(last.matches, vec![Match::CtState(CT_INVALID)]);
        assert!(matches!(&last.verdict, Some(Verdict::Goto(_))), "{last:#?}");
        assert!(tracked.rules.iter().all(ct), "{tracked:#?}");
        assert!(tracked.rules.len() >= 5, "{tracked:#?}");
    }

    /// A range that is not one network (10.0.0.1-10.0.0.2 is two) keeps its set.
    #[test]
    fn only_a_single_network_is_compared() {
        let p = policy(vec![
            rule("one", Action::Allow, Protocol::Udp, &["198.18.0.7/32"]),
            rule(
                "two",
                Action::Allow,
                Protocol::Udp,
                &["198.18.0.1/32", "198.18.0.2/32"],
            ),
        ]);
        let rs = build(&p, &["eth0".into()], 1);
        let src = |name: &str| {
            let r = rs.chains[1]
                .rules
                .iter()
                .find(|r| r.comment.as_deref() == Some(name));
            r.unwrap().matches.last().unwrap().clone()
        };
        assert_eq!(src("one"), Match::SaddrNet(Family::V4, 32, 0xc612_0007));
        assert_eq!(src("two"), Match::SaddrIn(Family::V4, "src4.two".into()));
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
        // The family first, then one port range as a compare (no set), then the source: one
        // network is a compare too.
        assert_eq!(
            a[1].matches,
            vec![
                Match::NfProto(Family::V6),
                Match::Dport(IPPROTO_TCP, 30000, 32768),
                Match::SaddrNet(Family::V6, 8, 0xfd << 120)
            ]
        );
        assert!(!rs
            .sets
            .iter()
            .any(|s| s.name == "ports.a" || s.name == "src6.a"));
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
                burst: drops::KERNEL_SAMPLE_RATE
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
        let rs = build_one(nets(super::super::cost::HASHED_MIN_INTERVALS - 1, 28));
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
        let mut two = nets(super::super::cost::HASHED_MIN_INTERVALS, 28);
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
        assert_eq!(p28.elems.len(), super::super::cost::HASHED_MIN_INTERVALS);
        assert_eq!(p28.elems[1], Elem::Net4(0xc612_0020));
        // More lengths than that: back to the interval set.
        let mut three = nets(super::super::cost::HASHED_MIN_INTERVALS, 28);
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

    /// A UDP rule on `ports`.
    fn udp(name: &str, ports: &[(u16, u16)]) -> Rule {
        let mut r = rule(
            name,
            Action::Allow,
            Protocol::Udp,
            &["10.0.0.0/8", "fd00::/8"],
        );
        r.ports = PortSet::new(ports.iter().map(|&(a, b)| PortRange::new(a, b)).collect());
        r
    }

    /// The policy rule names of a chain's rules, in order, each once per run.
    fn rule_names(chain: &ChainDef) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for r in &chain.rules {
            let policy_rule = r.counter.as_deref().is_some_and(|c| c.starts_with("rule."));
            if let Some(c) = r.comment.as_deref().filter(|_| policy_rule) {
                if out.last() != Some(&c) {
                    out.push(c);
                }
            }
        }
        out
    }

    fn chain<'a>(rs: &'a Ruleset, name: &str) -> &'a ChainDef {
        let c = rs.chains.iter().find(|c| c.name == name);
        c.unwrap_or_else(|| panic!("no chain {name}"))
    }

    /// Where the UDP dispatch's lookup stands in `inbound`.
    fn udp_lookup_at(inbound: &ChainDef) -> usize {
        let lookup = vec![Match::DportVmap(IPPROTO_UDP, "inbound.udp".into())];
        let at = inbound.rules.iter().position(|r| r.matches == lookup);
        at.expect("a udp dispatch")
    }

    /// The map's verdict for `port`.
    fn verdict_of(map: &SetDef, port: u16) -> &Verdict {
        let mut hits = map.elems.iter().filter_map(|e| match e {
            Elem::PortVerdict(a, b, v) if (*a..=*b).contains(&port) => Some(v),
            _ => None,
        });
        let v = hits.next().expect("every port is in the map");
        assert!(hits.next().is_none(), "port {port} in two elements");
        v
    }

    #[test]
    fn udp_rules_dispatch_by_port_keeping_first_match() {
        let mut all = rule("all", Action::Deny, Protocol::All, &["198.19.0.0/16"]);
        all.ports = PortSet::any();
        let icmp = rule("ping", Action::Allow, Protocol::Icmp, &["10.0.0.0/8"]);
        let mut anyport = udp("anyport", &[]);
        anyport.ports = PortSet::any();
        let p = policy(vec![
            udp("dns", &[(53, 53)]),
            all,
            udp("web", &[(8000, 8080)]),
            udp("low", &[(53, 60)]),
            icmp,
            anyport,
            udp("high", &[(9000, 65535)]),
        ]);
        let rs = build(&p, &["eth0".into()], 1);
        let inbound = chain(&rs, names::INBOUND_CHAIN);
        // The lookup stands where the policy rules start: right after the implicit rules.
        let at = udp_lookup_at(inbound);
        assert_eq!(inbound.rules[at].verdict, None);
        assert!(inbound.rules[..at].iter().all(|r| r
            .counter
            .as_deref()
            .is_none_or(|c| c.starts_with("implicit."))));
        // No port rule of udp is left in inbound; every other rule is, in order, then the
        // default deny.
        assert_eq!(rule_names(inbound)[..], ["all", "ping", "anyport"]);
        assert!(!inbound.rules.iter().any(|r| r
            .matches
            .iter()
            .any(|m| matches!(m, Match::Dport(..) | Match::DportIn(..)))));
        assert_eq!(
            inbound.rules.last().unwrap().verdict,
            Some(Verdict::Goto("drop.default-deny".into()))
        );
        // Too few tcp rules: no tcp dispatch.
        assert!(!rs.sets.iter().any(|s| s.name == "inbound.tcp"));
        let map = rs.sets.iter().find(|s| s.name == "inbound.udp").unwrap();
        // 9000-65535 is too wide to list port by port: an interval map.
        assert_eq!(map.kind, SetKind::PortVerdict);
        // The whole port range, in order, without gaps.
        let mut next = 0u32;
        for e in &map.elems {
            let Elem::PortVerdict(a, b, _) = e else {
                panic!("{e:?}")
            };
            assert_eq!(*a as u32, next);
            next = *b as u32 + 1;
        }
        assert_eq!(next, 65536);
        let class = |port: u16| -> Vec<&str> {
            let Verdict::Goto(c) = verdict_of(map, port) else {
                panic!("a goto")
            };
            let ch = chain(&rs, c);
            assert_eq!(
                ch.rules.last().unwrap().verdict,
                Some(Verdict::Goto("drop.default-deny".into()))
            );
            rule_names(ch)
        };
        // Policy order kept; protocol all and any-port udp rules everywhere.
        assert_eq!(class(53), ["dns", "all", "low", "anyport"]);
        assert_eq!(class(54), ["all", "low", "anyport"]);
        assert_eq!(class(60), ["all", "low", "anyport"]);
        assert_eq!(class(61), ["all", "anyport"]);
        assert_eq!(class(8080), ["all", "web", "anyport"]);
        assert_eq!(class(0), ["all", "anyport"]);
        assert_eq!(class(9000), ["all", "anyport", "high"]);
        assert_eq!(class(65535), ["all", "anyport", "high"]);
        // Ports of one rule list share one chain, adjacent or not.
        assert_eq!(verdict_of(map, 0), verdict_of(map, 61));
        assert_eq!(verdict_of(map, 0), verdict_of(map, 8081));
        assert_eq!(verdict_of(map, 0), &Verdict::Goto("inbound.udp.0".into()));
        assert_eq!(verdict_of(map, 54), &Verdict::Goto("inbound.udp.54".into()));
        // The class chains hold the rules whole, port test included.
        let dns = chain(&rs, "inbound.udp.53");
        assert_eq!(
            dns.rules[0].matches[..2],
            [
                Match::NfProto(Family::V4),
                Match::Dport(IPPROTO_UDP, 53, 53)
            ]
        );
        assert_eq!(dns.rules[0].counter.as_deref(), Some("rule.dns"));
    }

    /// Named ports few enough to list: a hash map of exactly those ports. Another port misses
    /// the lookup and meets what the chain holds after it: the DHCP allowance (port 68 is not
    /// named), the rules no dispatch took, the default deny.
    #[test]
    fn ports_no_rule_names_miss_the_exact_dispatch() {
        let mut all = rule("all", Action::Allow, Protocol::All, &["198.19.0.0/16"]);
        all.ports = PortSet::any();
        let mut p = policy(vec![
            udp("a", &[(53, 53)]),
            udp("b", &[(80, 80)]),
            all,
            udp("c", &[(443, 444)]),
        ]);
        p.implicit.dhcp_client = true;
        let rs = build(&p, &["eth0".into()], 1);
        let map = rs.sets.iter().find(|s| s.name == "inbound.udp").unwrap();
        assert_eq!(map.kind, SetKind::PortVerdictExact);
        let ports: Vec<(u16, u16)> = map
            .elems
            .iter()
            .map(|e| match e {
                Elem::PortVerdict(a, b, _) => (*a, *b),
                e => panic!("{e:?}"),
            })
            .collect();
        assert_eq!(ports, [(53, 53), (80, 80), (443, 443), (444, 444)]);
        assert_eq!(verdict_of(map, 443), verdict_of(map, 444));
        assert_eq!(
            rule_names(chain(&rs, "inbound.udp.53")),
            ["a", "all"],
            "a named port's chain holds the protocol-all rule too"
        );
        let inbound = chain(&rs, names::INBOUND_CHAIN);
        let at = udp_lookup_at(inbound);
        let after: Vec<Option<&str>> = inbound.rules[at + 1..]
            .iter()
            .map(|r| r.comment.as_deref())
            .collect();
        assert_eq!(
            after,
            [
                Some("implicit: dhcp-client"),
                Some("all"),
                Some("default-deny")
            ]
        );
    }

    /// A rule naming port 68 takes DHCP replies into its chain: the allowance then stays ahead
    /// of the lookup.
    #[test]
    fn dhcp_stays_ahead_of_a_dispatch_naming_its_port() {
        let mut p = policy(vec![
            udp("a", &[(53, 53)]),
            udp("b", &[(60, 70)]),
            udp("c", &[(443, 443)]),
        ]);
        p.implicit.dhcp_client = true;
        let rs = build(&p, &["eth0".into()], 1);
        let inbound = chain(&rs, names::INBOUND_CHAIN);
        let dhcp = inbound
            .rules
            .iter()
            .position(|r| r.comment.as_deref() == Some("implicit: dhcp-client"));
        assert!(dhcp.expect("the DHCP allowance") < udp_lookup_at(inbound));
    }

    /// One uplink is compared by name; more than a few are looked up in the set.
    #[test]
    fn few_uplinks_are_compared_many_looked_up() {
        let p = policy(vec![udp("a", &[(53, 53)])]);
        let base = |ifs: &[&str]| {
            let ifs: Vec<String> = ifs.iter().map(|s| s.to_string()).collect();
            let rs = build(&p, &ifs, 7);
            let ch = chain(&rs, names::BASE_CHAIN).clone();
            assert_eq!(
                ch.rules[0].comment.as_deref(),
                Some(generation_comment(7).as_str())
            );
            ch.rules.into_iter().map(|r| r.matches).collect::<Vec<_>>()
        };
        assert_eq!(base(&["eth0"]), [vec![Match::Iifname("eth0".into())]]);
        assert_eq!(
            base(&["a", "b", "c", "d"]),
            [vec![Match::IifnameIn(names::UPLINKS_SET.into())]]
        );
    }

    #[test]
    fn few_port_rules_stay_linear() {
        let p = policy(vec![udp("a", &[(53, 53)]), udp("b", &[(80, 80)])]);
        let rs = build(&p, &["eth0".into()], 1);
        assert!(!rs.sets.iter().any(|s| s.kind == SetKind::PortVerdict));
        assert!(!rs.chains.iter().any(|c| names::is_dispatch_chain(&c.name)));
        assert_eq!(rule_names(chain(&rs, names::INBOUND_CHAIN)), ["a", "b"]);
    }

    #[test]
    fn audit_mode_and_deny_rules_keep_their_chains_in_dispatch() {
        let mut p = policy(vec![
            udp("a", &[(53, 53)]),
            udp("b", &[(80, 80)]),
            udp("c", &[(443, 443)]),
        ]);
        p.rules[1].action = Action::Deny;
        p.mode = Mode::Audit;
        let rs = build(&p, &["eth0".into()], 1);
        let b = chain(&rs, "inbound.udp.80");
        assert!(b.rules[..b.rules.len() - 1]
            .iter()
            .all(|r| r.verdict == Some(Verdict::Goto("drop.rule.b".into()))));
        let drop_b = chain(&rs, "drop.rule.b");
        assert_eq!(drop_b.rules.last().unwrap().verdict, Some(Verdict::Accept));
    }
}
