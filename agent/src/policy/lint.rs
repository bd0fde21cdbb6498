//! Rules that are valid but almost certainly not what was meant: a user rule that can never
//! match because an earlier rule decides every packet it would, and a deny of every source on
//! SSH's port with the failsafe switched off. `nodewall check` reports them as warnings.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::addrset::AddrSet;
use super::model::{Action, CtState, Mode, Origin, Packet, Policy, PortSet, Protocol, Rule, L4};

/// One warning about `policy.rules[rule]` (`policy.egress.rules[rule]` when `egress`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub rule: usize,
    pub egress: bool,
    pub message: String,
}

pub fn lint(policy: &Policy) -> Vec<Finding> {
    lint_partial(policy, |_| false)
}

/// [`lint`] of a policy compiled before all of its sources are known (a config whose networks
/// are read from the Kubernetes API, checked offline): a rule for which `partial` is true may
/// hold more sources when the agent runs than it does now, so it is never said to be unable
/// to match.
pub fn lint_partial(policy: &Policy, partial: impl Fn(&Rule) -> bool) -> Vec<Finding> {
    let mut out = Vec::new();
    for (j, later) in policy.rules.iter().enumerate() {
        if later.origin != Origin::User || partial(later) {
            continue;
        }
        if !has_sources(later) {
            out.push(Finding {
                rule: j,
                egress: false,
                message: format!(
                    "rule `{}` can never match: protocol {} is {} only, and none of its sources is",
                    later.name,
                    proto_name(later.protocol),
                    if later.protocol == Protocol::Icmp {
                        "IPv4"
                    } else {
                        "IPv6"
                    }
                ),
            });
            continue;
        }
        if let Some(earlier) = policy.rules[..j].iter().find(|e| covers(e, later)) {
            out.push(Finding {
                rule: j,
                egress: false,
                message: format!(
                    "rule `{}` can never match: the earlier rule `{}` ({}) matches every packet it would",
                    later.name,
                    earlier.name,
                    action_name(earlier.action)
                ),
            });
        } else if let Some(together) = covered_together(&policy.rules[..j], later) {
            let names: Vec<String> = together
                .iter()
                .map(|e| format!("`{}` ({})", e.name, action_name(e.action)))
                .collect();
            out.push(Finding {
                rule: j,
                egress: false,
                message: format!(
                    "rule `{}` can never match: the earlier rules {} together match every packet it would",
                    later.name,
                    names.join(", ")
                ),
            });
        }
    }
    out.extend(ssh_denied_without_failsafe(policy));
    out.extend(super::egress_lint::lint_egress(policy));
    out
}

/// With `failsafe: []`, a deny rule that covers every address of a family on tcp/22: a typo
/// away from locking everybody out, and nothing accepted before it.
fn ssh_denied_without_failsafe(policy: &Policy) -> Option<Finding> {
    if policy.mode != Mode::Enforce || policy.rules.iter().any(|r| r.origin == Origin::Failsafe) {
        return None;
    }
    let any_source = [
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
    ];
    any_source.into_iter().find_map(|src| {
        let ssh = Packet {
            src,
            l4: L4::Tcp {
                sport: 40000,
                dport: 22,
            },
            ct: CtState::New,
        };
        let i = super::evaluate(policy, &ssh).rule?;
        let rule = &policy.rules[i];
        let everyone = match src {
            IpAddr::V4(_) => rule.sources.v4_ranges() == [(0, u32::MAX)],
            IpAddr::V6(_) => rule.sources.v6_ranges() == [(0, u128::MAX)],
        };
        (rule.action == Action::Deny && everyone).then(|| Finding {
            rule: i,
            egress: false,
            message: format!(
                "the failsafe is disabled (`failsafe: []`) and rule `{}` drops new SSH connections (tcp/22) from every address: a management network in `failsafe` keeps the node reachable",
                rule.name
            ),
        })
    })
}

/// Whether `rule` has a source of a family its protocol exists in.
pub(super) fn has_sources(rule: &Rule) -> bool {
    match rule.protocol {
        Protocol::Icmp => !rule.sources.v4_ranges().is_empty(),
        Protocol::Icmpv6 => !rule.sources.v6_ranges().is_empty(),
        _ => !rule.sources.is_empty(),
    }
}

/// Whether every packet `later` matches is matched by `earlier`.
pub(super) fn covers(earlier: &Rule, later: &Rule) -> bool {
    let protocol = match (earlier.protocol, later.protocol) {
        (Protocol::All, _) => true,
        (a, b) => a == b && ports_cover(&earlier.ports, &later.ports),
    };
    let (v4, v6) = match later.protocol {
        Protocol::Icmp => (true, false),
        Protocol::Icmpv6 => (false, true),
        _ => (true, true),
    };
    protocol
        && (!v4 || ranges_cover(earlier.sources.v4_ranges(), later.sources.v4_ranges()))
        && (!v6 || ranges_cover(earlier.sources.v6_ranges(), later.sources.v6_ranges()))
        // An ICMP rule matches IPv4 sources only: it cannot cover another protocol's IPv6 ones.
        && !(earlier.protocol == Protocol::Icmp && !later.sources.v6_ranges().is_empty() && v6)
        && !(earlier.protocol == Protocol::Icmpv6 && !later.sources.v4_ranges().is_empty() && v4)
}

pub(super) fn action_name(a: Action) -> &'static str {
    match a {
        Action::Allow => "allow",
        Action::Deny => "deny",
    }
}

/// The earlier rules whose sources, together, cover `later`'s, among those that match every
/// protocol and port `later` does (the common split: one rule per source range). Sources
/// split across rules of other ports as well are not found: a warning, never a false one.
pub(super) fn covered_together<'a>(earlier: &'a [Rule], later: &Rule) -> Option<Vec<&'a Rule>> {
    let mut used = Vec::new();
    let mut sources = AddrSet::default();
    for e in earlier {
        let wide = Rule {
            sources: AddrSet::any(),
            ..e.clone()
        };
        let narrow = Rule {
            sources: AddrSet::any(),
            ..later.clone()
        };
        // The same protocol and ports, or wider: only the sources decide.
        if !covers(&wide, &narrow) {
            continue;
        }
        // An ICMP (ICMPv6) rule matches IPv4 (IPv6) sources only.
        let own = match e.protocol {
            Protocol::Icmp => AddrSet::from_nets(
                &e.sources
                    .v4_prefixes()
                    .into_iter()
                    .map(IpNet::V4)
                    .collect::<Vec<_>>(),
            ),
            Protocol::Icmpv6 => AddrSet::from_nets(
                &e.sources
                    .v6_prefixes()
                    .into_iter()
                    .map(IpNet::V6)
                    .collect::<Vec<_>>(),
            ),
            _ => e.sources.clone(),
        };
        if own.is_empty() {
            continue;
        }
        sources = sources.union(&own);
        used.push(e);
    }
    let together = Rule {
        sources,
        protocol: later.protocol,
        ports: later.ports.clone(),
        ..later.clone()
    };
    (used.len() > 1 && covers(&together, later)).then_some(used)
}

fn ports_cover(earlier: &PortSet, later: &PortSet) -> bool {
    if earlier.is_any() {
        return true;
    }
    if later.is_any() {
        return false;
    }
    later.ranges().iter().all(|l| {
        earlier
            .ranges()
            .iter()
            .any(|e| e.start <= l.start && l.end <= e.end)
    })
}

/// Whether the sorted, merged ranges `outer` contain every range of `inner`.
fn ranges_cover<T: Copy + Ord>(outer: &[(T, T)], inner: &[(T, T)]) -> bool {
    inner.iter().all(|&(s, e)| {
        let i = outer.partition_point(|&(os, _)| os <= s);
        i > 0 && e <= outer[i - 1].1
    })
}

pub(super) fn proto_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Icmp => "icmp",
        Protocol::Icmpv6 => "icmpv6",
        Protocol::All => "all",
    }
}
