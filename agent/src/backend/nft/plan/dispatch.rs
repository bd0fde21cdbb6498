//! Port dispatch of the inbound rules: one verdict-map lookup instead of a walk.
//!
//! A linear chain makes a packet whose port only the last rule names pay the family, protocol
//! and port tests of every rule before it. For a transport protocol with [`MIN_RULES`] or more
//! port rules, the inbound chain instead looks the destination port up once in an interval map
//! covering the whole port range, whose elements `goto` a chain per port class: the rules (in
//! policy order, each with all its matches, port test included, so nothing depends on the
//! routing being right) of that protocol or of protocol `all` whose ports can hold a port of
//! the class, then the default deny. Ports no rule of the protocol names go straight to the
//! default deny when no protocol-`all` rule applies either.
//!
//! A packet of the protocol whose port cannot be read (the payload load breaks the lookup's
//! rule) goes on in the inbound chain, which keeps, in policy order, every rule that was not
//! dispatched: other protocols, protocol `all`, and port-less rules of the protocol. Those
//! are exactly the rules that could match such a packet in the linear chain (a port test cannot
//! match without a port), so it is judged as before.

use std::collections::BTreeMap;

use super::{ChainDef, Elem, Match, RuleDef, SetDef, SetKind, Verdict, IPPROTO_TCP, IPPROTO_UDP};
use crate::backend::nft::names;
use crate::policy::{Protocol, Rule};

/// The fewest port rules of a protocol that get a dispatch. The lookup's rule costs about what
/// one port rule does (protocol test, port load, a lookup in a map of a few intervals, and
/// the goto), so below three rules the walk is as cheap and the table simpler.
pub const MIN_RULES: usize = 3;

/// The most single ports a dispatch lists one by one in a hash map ([`SetKind::PortVerdictExact`]);
/// a policy naming more (wide ranges) keeps the interval map. The NodePort range alone is
/// 2,768 ports; a hash element costs about 100 bytes of kernel memory.
pub const MAX_EXACT_PORTS: usize = 8_192;

/// The dispatched part of the inbound chain.
#[derive(Debug, Default)]
pub struct Dispatched {
    /// Where the policy rules start in the inbound chain: one lookup per dispatched protocol,
    /// then every nft rule no dispatch took, in policy order.
    pub inbound: Vec<RuleDef>,
    pub maps: Vec<SetDef>,
    pub chains: Vec<ChainDef>,
}

/// One port class: the ports `start..=end` and the policy rules (indices, in order) that can
/// match a packet of the protocol to one of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Class {
    pub start: u16,
    pub end: u16,
    pub rules: Vec<usize>,
}

/// Dispatches the nft rules `lowered[i]` of the policy `rules[i]`; `default` is the default
/// deny's drop chain.
pub fn dispatch(rules: &[Rule], lowered: Vec<Vec<RuleDef>>, default: &str) -> Dispatched {
    let mut out = Dispatched::default();
    let mut dispatched = Vec::new();
    for (proto, number, label) in [
        (Protocol::Tcp, IPPROTO_TCP, "tcp"),
        (Protocol::Udp, IPPROTO_UDP, "udp"),
    ] {
        let ported = |i: usize| {
            let r = &rules[i];
            r.protocol == proto && !r.ports.is_any() && !lowered[i].is_empty()
        };
        if (0..rules.len()).filter(|&i| ported(i)).count() < MIN_RULES {
            continue;
        }
        dispatched.push(proto);
        let map = names::dispatch_map(label);
        let mut chains: BTreeMap<&[usize], String> = BTreeMap::new();
        let all = classes(rules, &lowered, proto);
        // A hash of the named ports when they are few: ports no rule of the protocol names
        // (their class holds no port rule of it) then miss the lookup, and the inbound chain
        // after it holds exactly the rules their class would (protocol `all`, port-less rules
        // of the protocol), in the same order, then the default deny.
        let named = |c: &Class| c.rules.iter().any(|&i| ported(i));
        let width: usize = all
            .iter()
            .filter(|c| named(c))
            .map(|c| usize::from(c.end - c.start) + 1)
            .sum();
        let exact = width <= MAX_EXACT_PORTS;
        let mut elems = Vec::with_capacity(if exact { width } else { all.len() });
        for class in &all {
            if exact && !named(class) {
                continue;
            }
            let target = if class.rules.is_empty() {
                default.to_string()
            } else if let Some(name) = chains.get(class.rules.as_slice()) {
                name.clone()
            } else {
                let name = names::dispatch_chain(label, class.start);
                let mut body: Vec<RuleDef> = class
                    .rules
                    .iter()
                    .flat_map(|&i| lowered[i].iter().cloned())
                    .collect();
                body.push(goto_default(default));
                out.chains.push(ChainDef {
                    name: name.clone(),
                    hook: None,
                    rules: body,
                });
                chains.insert(&class.rules, name.clone());
                name
            };
            if exact {
                elems.extend(
                    (class.start..=class.end)
                        .map(|p| Elem::PortVerdict(p, p, Verdict::Goto(target.clone()))),
                );
            } else {
                elems.push(Elem::PortVerdict(
                    class.start,
                    class.end,
                    Verdict::Goto(target),
                ));
            }
        }
        out.maps.push(SetDef {
            name: map.clone(),
            kind: if exact {
                SetKind::PortVerdictExact
            } else {
                SetKind::PortVerdict
            },
            elems,
        });
        out.inbound.push(RuleDef {
            matches: vec![Match::DportVmap(number, map)],
            log: None,
            counter: None,
            verdict: None,
            comment: None,
        });
    }
    for (i, nft) in lowered.into_iter().enumerate() {
        let r = &rules[i];
        // Port rules of a dispatched protocol are in its port classes only.
        let taken = dispatched.contains(&r.protocol) && !r.ports.is_any();
        if !taken {
            out.inbound.extend(nft);
        }
    }
    out
}

fn goto_default(default: &str) -> RuleDef {
    RuleDef {
        matches: vec![],
        log: None,
        counter: None,
        verdict: Some(Verdict::Goto(default.into())),
        comment: Some("default-deny".into()),
    }
}

/// The port classes of protocol `proto`, covering 0-65535 in order: the boundaries are those
/// of the protocol's port rules, and adjacent classes always differ in their rules. Rules
/// without any nft rule (`lowered[i]` empty: no source) take no part.
pub fn classes(rules: &[Rule], lowered: &[Vec<RuleDef>], proto: Protocol) -> Vec<Class> {
    let live = |i: usize| !lowered[i].is_empty();
    let mut starts = vec![0u16];
    for (i, r) in rules.iter().enumerate() {
        if r.protocol == proto && live(i) {
            for p in r.ports.ranges() {
                starts.push(p.start);
                starts.extend(p.end.checked_add(1));
            }
        }
    }
    starts.sort_unstable();
    starts.dedup();
    let mut out: Vec<Class> = Vec::with_capacity(starts.len());
    for (k, &start) in starts.iter().enumerate() {
        let end = starts.get(k + 1).map_or(u16::MAX, |next| next - 1);
        // Within [start, end] every rule of the protocol holds all ports or none: testing
        // `start` tells.
        let members: Vec<usize> = (0..rules.len())
            .filter(|&i| live(i))
            .filter(|&i| {
                let r = &rules[i];
                r.protocol == Protocol::All || (r.protocol == proto && r.ports.contains(start))
            })
            .collect();
        match out.last_mut() {
            Some(last) if last.rules == members => last.end = end,
            _ => out.push(Class {
                start,
                end,
                rules: members,
            }),
        }
    }
    out
}
