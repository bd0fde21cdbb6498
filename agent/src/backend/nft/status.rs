//! [`Status`] and [`Counters`] from the table read back from the kernel, without the policy:
//! counter comments name the rules, the inbound chain gives their order.

use nodewall_common::DropReason;

use super::names::{self, comment};
use super::netlink::state::Current;
use crate::backend::{Counters, Direction, DropCounter, RuleCounter, Status};
use crate::policy::Mode;

const FAMILIES: [&str; 2] = ["ipv4", "ipv6"];
const PROTOCOLS: [&str; 5] = ["tcp", "udp", "icmp", "icmpv6", "other"];

pub fn status(cur: &Current) -> Status {
    if !cur.table {
        return Status {
            backend: "nft",
            installed: false,
            generation: 0,
            mode: None,
            interfaces: Vec::new(),
            rules: Vec::new(),
            counters: Counters::default(),
        };
    }
    let mut interfaces: Vec<String> = cur
        .sets
        .get(names::UPLINKS_SET)
        .map(|s| {
            s.elems
                .iter()
                .map(|(k, _)| {
                    let end = k.iter().position(|&b| b == 0).unwrap_or(k.len());
                    String::from_utf8_lossy(&k[..end]).into_owned()
                })
                .collect()
        })
        .unwrap_or_default();
    let base = cur.chains.iter().find(|c| c.name == names::BASE_CHAIN);
    interfaces.extend(
        base.map(|c| c.rules.as_slice())
            .unwrap_or_default()
            .iter()
            .filter_map(|r| {
                r.comment
                    .as_deref()?
                    .strip_prefix(names::UPLINK_PATTERN_PREFIX)
            })
            .map(String::from),
    );
    interfaces.sort();
    let rules = rule_order(cur);
    Status {
        backend: "nft",
        installed: true,
        generation: super::netlink::generation(cur),
        mode: Some(mode(cur)),
        interfaces,
        counters: counters(cur, &rules),
        rules,
    }
}

/// The mode the table enforces: the drop chains' verdict is `accept` in audit mode (would-be
/// drops are counted, then accepted).
fn mode(cur: &Current) -> Mode {
    let chain = names::drop_chain(DropReason::DefaultDeny.as_str(), None);
    let audit = cur
        .chains
        .iter()
        .filter(|c| c.name == chain)
        .flat_map(|c| &c.rules)
        .any(|r| r.fingerprint.contains("immediate reg 0 accept"));
    if audit {
        Mode::Audit
    } else {
        Mode::Enforce
    }
}

/// Policy rule names in evaluation order: comments of the inbound chain's rules that name a
/// rule counter (each policy rule may be one nft rule per address family), then the egress
/// chains'.
fn rule_order(cur: &Current) -> Vec<String> {
    let known: std::collections::HashSet<&str> = cur
        .counters
        .values()
        .filter_map(|c| match comment::parse(c.comment.as_deref()?)? {
            comment::Parsed::Rule { name, .. } => Some(name),
            _ => None,
        })
        .collect();
    let mut out: Vec<String> = Vec::new();
    // Inbound first, then egress (the pod chain holds every egress rule but host-only ones).
    for chain in [
        names::INBOUND_CHAIN,
        names::EGRESS_POD_CHAIN,
        names::EGRESS_HOST_CHAIN,
    ] {
        let rules = cur.chains.iter().find(|c| c.name == chain);
        for r in rules.map(|c| c.rules.as_slice()).unwrap_or_default() {
            if let Some(c) = r.comment.as_deref() {
                if known.contains(c) && !out.iter().any(|n| n == c) {
                    out.push(c.to_string());
                }
            }
        }
    }
    // Rules without any nft rule (no source in either family) still have a counter.
    let mut rest: Vec<&str> = known
        .into_iter()
        .filter(|k| !out.iter().any(|n| n == k))
        .collect();
    rest.sort();
    out.extend(rest.into_iter().map(String::from));
    out
}

pub fn counters(cur: &Current, order: &[String]) -> Counters {
    let pos = |name: &str| order.iter().position(|n| n == name).unwrap_or(usize::MAX);
    let mut rules = Vec::new();
    let mut drops = Vec::new();
    for c in cur.counters.values() {
        match c.comment.as_deref().and_then(comment::parse) {
            Some(comment::Parsed::Rule {
                action,
                egress,
                name,
            }) => rules.push(RuleCounter {
                rule: name.to_string(),
                direction: if egress {
                    Direction::Egress
                } else {
                    Direction::Ingress
                },
                action,
                packets: c.packets,
                bytes: c.bytes,
            }),
            Some(comment::Parsed::Drop {
                egress,
                reason,
                family,
                protocol,
                rule,
            }) => {
                let (Some(reason), Some(family), Some(protocol)) = (
                    DropReason::ALL
                        .iter()
                        .map(|r| r.as_str())
                        .find(|r| *r == reason),
                    FAMILIES.iter().find(|f| **f == family),
                    PROTOCOLS.iter().find(|p| **p == protocol),
                ) else {
                    continue;
                };
                drops.push(DropCounter {
                    direction: if egress {
                        Direction::Egress
                    } else {
                        Direction::Ingress
                    },
                    reason,
                    rule: rule.to_string(),
                    family,
                    protocol,
                    packets: c.packets,
                    bytes: c.bytes,
                });
            }
            None => {}
        }
    }
    rules.sort_by_key(|r| pos(&r.rule));
    let reason_rank = |r: &str| match r {
        "invalid" => 0,
        "rule" => 1,
        _ => 2,
    };
    drops.sort_by_key(|d| {
        (
            d.direction != Direction::Ingress,
            reason_rank(d.reason),
            pos(&d.rule),
            FAMILIES.iter().position(|f| *f == d.family),
            PROTOCOLS.iter().position(|p| *p == d.protocol),
        )
    });
    Counters { rules, drops }
}
