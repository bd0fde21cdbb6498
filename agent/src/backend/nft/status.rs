//! [`Status`] and [`Counters`] from the table read back from the kernel, without the policy:
//! counter comments name the rules, the inbound chains give their order.

use std::collections::{HashMap, HashSet};

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
                .map(|(k, _, _)| {
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

/// Policy rule names in evaluation order: comments of the inbound chain's rules and of its
/// port-dispatch chains' that name a rule counter (each policy rule may be one nft rule per
/// address family, and in several dispatch chains), then the egress chains'.
fn rule_order(cur: &Current) -> Vec<String> {
    let known: HashSet<&str> = cur
        .counters
        .values()
        .filter_map(|c| match comment::parse(c.comment.as_deref()?)? {
            comment::Parsed::Rule { name, .. } => Some(name),
            _ => None,
        })
        .collect();
    // Inbound first (with the port-dispatch chains, which hold the rest of the inbound rules),
    // then egress (the pod chain holds every egress rule but host-only ones).
    let dispatched = cur
        .chains
        .iter()
        .filter(|c| names::is_dispatch_chain(&c.name));
    let chains = cur
        .chains
        .iter()
        .filter(|c| c.name == names::INBOUND_CHAIN)
        .chain(dispatched)
        .chain(
            [names::EGRESS_POD_CHAIN, names::EGRESS_HOST_CHAIN]
                .iter()
                .filter_map(|n| cur.chains.iter().find(|c| c.name == *n)),
        );
    let seqs: Vec<Vec<&str>> = chains
        .map(|c| {
            let mut seq: Vec<&str> = Vec::new();
            for r in &c.rules {
                match r.comment.as_deref() {
                    Some(n) if known.contains(n) && seq.last() != Some(&n) => seq.push(n),
                    _ => {}
                }
            }
            seq
        })
        .collect();
    let mut out: Vec<String> = merge(&seqs).into_iter().map(String::from).collect();
    // Rules without any nft rule (no source in either family) still have a counter.
    let mut rest: Vec<&str> = known
        .into_iter()
        .filter(|k| !out.iter().any(|n| n == k))
        .collect();
    rest.sort();
    out.extend(rest.into_iter().map(String::from));
    out
}

/// One order of the names in `seqs` that keeps the order of each sequence (each is a chain's
/// rules, in policy order): a chain walk in which one name comes before another says so.
/// Where no chain orders two names (rules dispatched to different port classes, and no rule
/// in both), the first seen comes first.
fn merge<'a>(seqs: &[Vec<&'a str>]) -> Vec<&'a str> {
    let mut names: Vec<&str> = Vec::new();
    let mut after: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut before: HashMap<&str, usize> = HashMap::new();
    for seq in seqs {
        for (i, &n) in seq.iter().enumerate() {
            if !before.contains_key(n) {
                names.push(n);
                before.insert(n, 0);
            }
            if let Some(&next) = seq.get(i + 1) {
                if next != n && !after.get(n).is_some_and(|a| a.contains(&next)) {
                    after.entry(n).or_default().push(next);
                    *before.entry(next).or_insert(0) += 1;
                    if !names.contains(&next) {
                        names.push(next);
                    }
                }
            }
        }
    }
    let mut out = Vec::with_capacity(names.len());
    let mut done: HashSet<&str> = HashSet::new();
    while out.len() < names.len() {
        // The first name nothing left has to precede; on a cycle (inconsistent chains), the
        // first name left.
        let next = names
            .iter()
            .find(|n| !done.contains(*n) && before[*n] == 0)
            .or_else(|| names.iter().find(|n| !done.contains(*n)))
            .copied()
            .expect("names left");
        done.insert(next);
        out.push(next);
        for a in after.get(next).into_iter().flatten() {
            let b = before.get_mut(a).expect("a known name");
            *b = b.saturating_sub(1);
        }
    }
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

#[cfg(test)]
mod tests {
    use super::merge;

    #[test]
    fn chain_orders_merge_into_the_policy_order() {
        // Inbound keeps `all` and `ping`; the dispatch chains each hold some port rules and
        // `all` (protocol all is in every class).
        let seqs = vec![
            vec!["all", "ping"],
            vec!["dns", "all", "low"],
            vec!["all", "web"],
            vec!["all", "low", "high"],
        ];
        assert_eq!(
            merge(&seqs),
            ["dns", "all", "ping", "low", "web", "high"],
            "every chain's order kept; unordered names as first seen"
        );
        for (a, b) in [("dns", "all"), ("all", "ping"), ("low", "high")] {
            let out = merge(&seqs);
            let pos = |n| out.iter().position(|x| *x == n).unwrap();
            assert!(pos(a) < pos(b), "{a} before {b}");
        }
        // A cycle (chains that disagree) still lists every name once.
        let mut out = merge(&[vec!["a", "b"], vec!["b", "a"]]);
        out.sort();
        assert_eq!(out, ["a", "b"]);
    }
}
