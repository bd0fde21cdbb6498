//! One entry of `rules` or `failsafe`, or of `egress.rules` / `egress.failsafe` (the same
//! shape with `to` instead of `from`, and an optional `source`).

use super::fields;
use super::model::{Action, EgressSource, PortRange, Protocol, RuleConfig, Source};
use super::suggest::did_you_mean;
use super::walk::{index, Ctx, Fields};
use super::yaml::{Kind, Node, Pos};

pub const RULE_KEYS: &[&str] = &["name", "action", "protocol", "ports", "from"];
pub const EGRESS_RULE_KEYS: &[&str] = &["name", "action", "protocol", "ports", "to", "source"];
pub const EGRESS_SOURCES: &[(&str, EgressSource)] =
    &[("host", EgressSource::Host), ("pod", EgressSource::Pod)];

pub const ACTIONS: &[(&str, Action)] = &[("allow", Action::Allow), ("deny", Action::Deny)];
pub const PROTOCOLS: &[(&str, Protocol)] = &[
    ("tcp", Protocol::Tcp),
    ("udp", Protocol::Udp),
    ("icmp", Protocol::Icmp),
    ("icmpv6", Protocol::Icmpv6),
    ("all", Protocol::All),
];

/// `rules` entries need every field; `failsafe` entries may omit `name`, `action`, `from`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Rules,
    Failsafe,
    EgressRules,
    EgressFailsafe,
}

impl Section {
    fn failsafe(self) -> bool {
        matches!(self, Section::Failsafe | Section::EgressFailsafe)
    }

    fn egress(self) -> bool {
        matches!(self, Section::EgressRules | Section::EgressFailsafe)
    }

    /// The key that lists the peers: sources inbound, destinations outbound.
    fn peer_key(self) -> &'static str {
        if self.egress() {
            "to"
        } else {
            "from"
        }
    }
}

/// One entry. `name` is its valid explicit name, kept even when another field is wrong so
/// that duplicate names are still reported; `rule` is `None` when any field was wrong.
/// A failsafe entry without a name is named later, once every explicit name is known.
/// For egress entries, `rule.from` holds the destinations (`to`) and `source` the `source`.
pub struct Parsed {
    pub name: Option<(String, Pos)>,
    pub rule: Option<RuleConfig>,
    pub path: String,
    pub source: EgressSource,
}

/// The keys of `networks`, which `from` entries are checked against; `None` when `networks`
/// itself is malformed, so that its error is not echoed by every rule that uses a name.
pub type NetworkNames<'a> = Option<&'a [&'a str]>;

pub fn rule(
    ctx: &mut Ctx,
    node: &Node,
    path: &str,
    section: Section,
    networks: NetworkNames,
) -> Parsed {
    let keys = if section.egress() {
        EGRESS_RULE_KEYS
    } else {
        RULE_KEYS
    };
    let Some(f) = ctx.map(node, path, Some(keys)) else {
        return Parsed {
            name: None,
            rule: None,
            path: path.to_string(),
            source: EgressSource::Any,
        };
    };
    // Called when `key` is absent: an error under `rules`, the default under `failsafe`.
    let missing = |ctx: &mut Ctx, key: &str| {
        if section.failsafe() {
            return Some(());
        }
        ctx.error(
            f.path_of(key),
            f.pos,
            format!("missing required key `{key}`"),
        );
        None
    };

    let name = match f.get("name") {
        Some(n) => ctx
            .str(n, &f.path_of("name"))
            .and_then(|s| match fields::rule_name(s) {
                Ok(()) => Some(Some((s.to_string(), n.pos))),
                Err(e) => {
                    ctx.error(f.path_of("name"), n.pos, e);
                    None
                }
            }),
        None => missing(ctx, "name").map(|()| None),
    };
    let action = match f.get("action") {
        Some(n) => ctx.choice(n, &f.path_of("action"), "action", ACTIONS).and_then(|a| {
            if section.failsafe() && a == Action::Deny {
                let rules = if section.egress() { "egress.rules" } else { "rules" };
                ctx.error(f.path_of("action"), n.pos, format!("failsafe entries can only `allow`: they are evaluated before every other rule; put deny rules under `{rules}`"));
                return None;
            }
            Some(a)
        }),
        None => missing(ctx, "action").map(|()| Action::Allow),
    };
    let protocol = match f.get("protocol") {
        Some(n) => ctx.choice(n, &f.path_of("protocol"), "protocol", PROTOCOLS),
        None => {
            // Always required: a failsafe entry without a protocol is too easy to get wrong.
            ctx.error(
                f.path_of("protocol"),
                f.pos,
                "missing required key `protocol`",
            );
            None
        }
    };
    let ports = ports(ctx, &f, protocol);
    let peer = section.peer_key();
    let from = match f.get(peer) {
        Some(n) => sources(ctx, n, &f.path_of(peer), networks),
        None => missing(ctx, peer).map(|()| {
            vec![
                Source::Cidr("0.0.0.0/0".parse().unwrap()),
                Source::Cidr("::/0".parse().unwrap()),
            ]
        }),
    };

    let source = match f.get("source") {
        Some(n) => ctx.choice(n, &f.path_of("source"), "source", EGRESS_SOURCES),
        None => Some(EgressSource::Any),
    };

    let rule = (|| {
        source?;
        Some(RuleConfig {
            // Empty for an unnamed failsafe entry: named by the caller.
            name: name.clone()?.map(|(n, _)| n).unwrap_or_default(),
            action: action?,
            protocol: protocol?,
            ports: ports?,
            from: from?,
        })
    })();
    Parsed {
        name: name.flatten(),
        rule,
        path: path.to_string(),
        source: source.unwrap_or_default(),
    }
}

/// The entries of `rules` or `failsafe`; `None` when the section is not a list.
pub fn list(
    ctx: &mut Ctx,
    node: &Node,
    path: &str,
    section: Section,
    networks: NetworkNames,
) -> Option<Vec<Parsed>> {
    let items = ctx.seq(node, path)?;
    Some(
        items
            .iter()
            .enumerate()
            .map(|(i, item)| rule(ctx, item, &index(path, i), section, networks))
            .collect(),
    )
}

/// `ports`: only for tcp/udp; absent means every port.
fn ports(ctx: &mut Ctx, f: &Fields, protocol: Option<Protocol>) -> Option<Vec<PortRange>> {
    let path = f.path_of("ports");
    let Some(node) = f.get("ports") else {
        return Some(Vec::new());
    };
    if let Some(p) = protocol.filter(|p| !p.has_ports()) {
        let name = PROTOCOLS
            .iter()
            .find(|(_, v)| *v == p)
            .map(|(n, _)| *n)
            .unwrap_or_default();
        ctx.error(
            &path,
            node.pos,
            format!("ports only apply to tcp and udp; remove `ports` for protocol `{name}`"),
        );
        return None;
    }
    let items = ctx.seq(node, &path)?;
    if items.is_empty() {
        ctx.error(
            &path,
            node.pos,
            "empty list; omit `ports` to match every port",
        );
        return None;
    }
    let mut out = Vec::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        match fields::port_range(item) {
            Ok(r) => out.push(r),
            Err(e) => {
                ctx.error(index(&path, i), item.pos, e);
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

/// `from`: CIDRs, bare addresses, or names of `networks` entries; never empty.
pub fn sources(
    ctx: &mut Ctx,
    node: &Node,
    path: &str,
    networks: NetworkNames,
) -> Option<Vec<Source>> {
    let items = ctx.seq(node, path)?;
    if items.is_empty() {
        let what = if path.ends_with(".to") {
            "goes to"
        } else {
            "comes from"
        };
        ctx.error(path, node.pos, format!("empty list: a rule must say where traffic {what} (use 0.0.0.0/0 and ::/0 for anywhere)"));
        return None;
    }
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    // The item's path is only formatted for an error: lists of 10k CIDRs are common.
    for (i, item) in items.iter().enumerate() {
        let s = match &item.kind {
            Kind::Str(s) => s.as_str(),
            _ => {
                // Not a string: this records why.
                ctx.str(item, &index(path, i));
                ok = false;
                continue;
            }
        };
        match source(s, networks) {
            Ok(src) => out.push(src),
            Err(e) => {
                ctx.error(index(path, i), item.pos, e);
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

fn source(s: &str, networks: NetworkNames) -> Result<Source, String> {
    if fields::looks_like_address(s) {
        return fields::cidr(s).map(Source::Cidr);
    }
    let networks = match networks {
        Some(names) if !names.contains(&s) => names,
        _ => return Ok(Source::Network(s.to_string())),
    };
    let hint = did_you_mean(s, networks);
    let defined = if networks.is_empty() {
        "no networks are defined; add it under `networks:` or write a CIDR".to_string()
    } else {
        format!("defined networks: {}", networks.join(", "))
    };
    Err(format!("unknown network `{s}`; {hint}{defined}"))
}
