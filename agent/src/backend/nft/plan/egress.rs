//! Policy egress -> chains: what leaves through the uplinks, in the evaluation order of
//! `policy::egress`.
//!
//! Two base chains send packets leaving an uplink to the egress chains: `output` (what the
//! node itself sends) to `egress-host`, and `forward` (what it routes, its pods' traffic) to
//! `egress-pod`. Both hook at filter priority 0: a forwarded packet still carries the pod's own
//! source address there (SNAT comes later, at postrouting), so per-pod exceptions can match it.
//! Each egress chain lets replies and errors of live flows through (`ct state established`
//! but never a bare SYN, `ct state related`), then neighbour discovery, then the rules that
//! apply to its sender in order, then the default action.

use nodewall_common::DropReason;

use super::lower::Builder;
use super::{
    ChainDef, Elem, Family, Hook, HookPoint, Match, RuleDef, SetKind, Verdict, CT_ESTABLISHED,
    CT_RELATED, IPPROTO_TCP,
};
use crate::backend::nft::names;
use crate::policy::{Action, AddrSet, EgressRule, Policy, Protocol, Traffic};

impl Builder {
    /// Adds the egress base chains, the two egress chains and what they use.
    pub(super) fn egress(&mut self, policy: &Policy, interfaces: &[String]) {
        let mut host = self.replies("egress.established", "egress.related");
        let mut pod = host.clone();
        if policy.implicit.neighbour_discovery {
            let nd = self.nd_set();
            let counter = self.counter(
                "egress.neighbour-discovery".into(),
                "egress neighbour-discovery (accepted)".into(),
            );
            let rule = RuleDef {
                matches: vec![Match::IcmpTypeIn(Family::V6, nd)],
                log: None,
                counter: Some(counter),
                verdict: Some(Verdict::Accept),
                comment: Some("egress: neighbour-discovery".into()),
            };
            host.push(rule.clone());
            pod.push(rule);
        }
        for rule in &policy.egress.rules {
            let defs = self.egress_rule(policy, rule);
            if matches!(rule.traffic, Traffic::Any | Traffic::Host) && rule.pod_sources.is_none() {
                host.extend(defs.iter().map(|(d, _)| d.clone()));
            }
            if matches!(rule.traffic, Traffic::Any | Traffic::Pod) {
                pod.extend(defs.into_iter().map(|(mut d, src)| {
                    d.matches.extend(src);
                    d
                }));
            }
        }
        if policy.egress.default == Action::Deny {
            let chain = self.drop_chain_for(policy.mode, DropReason::DefaultDeny, None, true);
            for out in [&mut host, &mut pod] {
                out.push(RuleDef {
                    matches: vec![],
                    log: None,
                    counter: None,
                    verdict: Some(Verdict::Goto(chain.clone())),
                    comment: Some("egress default-deny".into()),
                });
            }
        }
        for (name, rules) in [
            (names::EGRESS_HOST_CHAIN, host),
            (names::EGRESS_POD_CHAIN, pod),
        ] {
            self.chains.push(ChainDef {
                name: name.into(),
                hook: None,
                rules,
            });
        }
        for (base, point, target) in [
            (
                names::OUTPUT_CHAIN,
                HookPoint::Output,
                names::EGRESS_HOST_CHAIN,
            ),
            (
                names::FORWARD_CHAIN,
                HookPoint::Forward,
                names::EGRESS_POD_CHAIN,
            ),
        ] {
            let jump = |m: Match, comment: Option<String>| RuleDef {
                matches: vec![m],
                log: None,
                counter: None,
                verdict: Some(Verdict::Goto(target.into())),
                comment,
            };
            let mut rules = vec![jump(Match::OifnameIn(names::UPLINKS_SET.into()), None)];
            rules.extend(interfaces.iter().filter(|i| i.ends_with('*')).map(|p| {
                jump(
                    Match::OifnamePrefix(p.trim_end_matches('*').to_string()),
                    Some(format!("{}{p}", names::UPLINK_PATTERN_PREFIX)),
                )
            }));
            self.chains.push(ChainDef {
                name: base.into(),
                hook: Some(Hook {
                    point,
                    priority: names::EGRESS_PRIORITY,
                }),
                rules,
            });
        }
    }

    /// Replies and errors of live flows: `established` except a bare SYN (never a reply,
    /// whatever conntrack says; see the inbound chain), and `related`.
    fn replies(&mut self, established: &str, related: &str) -> Vec<RuleDef> {
        let est = self.counter(established.into(), format!("{established} (accepted)"));
        let rel = self.counter(related.into(), format!("{related} (accepted)"));
        let mut out: Vec<RuleDef> = [Match::L4ProtoNot(IPPROTO_TCP), Match::TcpNotBareSyn]
            .into_iter()
            .map(|m| RuleDef {
                matches: vec![Match::CtState(CT_ESTABLISHED), m],
                log: None,
                counter: Some(est.clone()),
                verdict: Some(Verdict::Accept),
                comment: Some("egress: established".into()),
            })
            .collect();
        out.push(RuleDef {
            matches: vec![Match::CtState(CT_RELATED)],
            log: None,
            counter: Some(rel),
            verdict: Some(Verdict::Accept),
            comment: Some("egress: related".into()),
        });
        out
    }

    /// One egress rule as nft rules (one per family with destinations, sharing one counter),
    /// each with the pod-source match that only the pod chain adds.
    fn egress_rule(&mut self, policy: &Policy, rule: &EgressRule) -> Vec<(RuleDef, Option<Match>)> {
        let id = names::ident(&rule.name);
        let counter = self.counter(
            names::rule_counter(&id),
            names::comment::rule(rule.action, true, &rule.name),
        );
        let verdict = match rule.action {
            Action::Allow => Verdict::Accept,
            Action::Deny => Verdict::Goto(self.drop_chain_for(
                policy.mode,
                DropReason::Rule,
                Some(&rule.name),
                true,
            )),
        };
        let (l4, ports) = self.proto_ports(&id, rule.protocol, &rule.ports);
        let mut out = Vec::new();
        for f in Family::BOTH {
            let family_ok = match rule.protocol {
                Protocol::Icmp => f == Family::V4,
                Protocol::Icmpv6 => f == Family::V6,
                _ => true,
            };
            if !family_ok {
                continue;
            }
            let Some(dst) = self.addr_match(f, &rule.destinations, &id, names::dst_set, true)
            else {
                continue;
            };
            let src = match &rule.pod_sources {
                None => None,
                Some(set) => match self.addr_match(f, set, &id, names::src_set, false) {
                    Some(m) => m,
                    // No pod source of this family: the rule matches nothing of it.
                    None => continue,
                },
            };
            let mut matches = vec![Match::NfProto(f)];
            match (l4, &ports) {
                (Some(_), Some(port)) => matches.push(port.clone()),
                (Some(p), None) => matches.push(Match::L4Proto(p)),
                (None, _) => {}
            }
            matches.extend(dst);
            out.push((
                RuleDef {
                    matches,
                    log: None,
                    counter: Some(counter.clone()),
                    verdict: Some(verdict.clone()),
                    comment: Some(rule.name.clone()),
                },
                src,
            ));
        }
        out
    }

    /// `Some(None)`: every address of the family; `Some(Some(m))`: a set lookup; `None`: no
    /// address of the family.
    fn addr_match(
        &mut self,
        f: Family,
        set: &AddrSet,
        id: &str,
        name: fn(bool, &str) -> String,
        dst: bool,
    ) -> Option<Option<Match>> {
        let (v6, kind, elems): (bool, SetKind, Vec<Elem>) = match f {
            Family::V4 => (
                false,
                SetKind::Addr4,
                set.v4_ranges()
                    .iter()
                    .map(|&(s, e)| Elem::V4(s, e))
                    .collect(),
            ),
            Family::V6 => (
                true,
                SetKind::Addr6,
                set.v6_ranges()
                    .iter()
                    .map(|&(s, e)| Elem::V6(s, e))
                    .collect(),
            ),
        };
        if elems.is_empty() {
            return None;
        }
        if matches!(
            elems[..],
            [Elem::V4(0, u32::MAX)] | [Elem::V6(0, u128::MAX)]
        ) {
            return Some(None);
        }
        let set = self.set(name(v6, id), kind, elems);
        Some(Some(if dst {
            Match::DaddrIn(f, set)
        } else {
            Match::SaddrIn(f, set)
        }))
    }
}
