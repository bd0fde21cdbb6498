//! The top level of a config file: every section, defaults, and the checks that span
//! sections (profile networks, unique rule names, "something to enforce").

use std::collections::BTreeMap;

use ipnet::IpNet;

use super::fields;
use super::model::{BackendKind, Config, Implicit, Mode, RuleConfig};
use super::rules::{self, Parsed, Section};
use super::suggest::suggest;
use super::walk::{index, Ctx, Fields, DOCUMENT};
use super::yaml::{Kind, Node, Pos};
use crate::profiles;

pub const TOP_KEYS: &[&str] = &[
    "backend",
    "mode",
    "interfaces",
    "profile",
    "networks",
    "rules",
    "failsafe",
    "implicit",
];
pub const BACKENDS: &[(&str, BackendKind)] = &[
    ("nft", BackendKind::Nft),
    ("xdp", BackendKind::Xdp),
    ("auto", BackendKind::Auto),
];
pub const MODES: &[(&str, Mode)] = &[("enforce", Mode::Enforce), ("audit", Mode::Audit)];
pub const IMPLICIT_KEYS: &[&str] = &[
    "established",
    "icmp-errors",
    "neighbour-discovery",
    "neighbor-discovery",
    "dhcp-client",
];

/// Builds the config, recording every problem in `ctx`; `None` when there was any.
pub fn document(ctx: &mut Ctx, root: &Node) -> Option<Config> {
    if root.kind == Kind::Null {
        ctx.error(DOCUMENT, root.pos, "the file is empty; expected a mapping with keys such as `profile`, `networks` and `rules`");
        return None;
    }
    let f = ctx.map(root, "", Some(TOP_KEYS))?;
    let backend = optional(&f, "backend", BackendKind::Nft, |n, p| {
        ctx.choice(n, p, "backend", BACKENDS)
    });
    let mode = optional(&f, "mode", Mode::Enforce, |n, p| {
        ctx.choice(n, p, "mode", MODES)
    });
    let interfaces = optional(&f, "interfaces", Vec::new(), |n, p| interfaces(ctx, n, p));
    let networks = optional(&f, "networks", BTreeMap::new(), |n, p| networks(ctx, n, p));
    let names: Option<Vec<&str>> = match f.get("networks").map(|n| &n.kind) {
        Some(Kind::Map(entries)) => Some(entries.iter().filter_map(|(k, _)| key_str(k)).collect()),
        Some(_) => None,
        None => Some(Vec::new()),
    };
    let profile = optional(&f, "profile", None, |n, p| {
        profile(ctx, n, p, names.as_deref()).map(Some)
    });
    let mut rules = optional(&f, "rules", Vec::new(), |n, p| {
        rule_list(ctx, n, p, Section::Rules, names.as_deref())
    });
    // Absent: the default failsafe; `Some(None)`: present but not a list.
    let mut failsafe = f
        .get("failsafe")
        .map(|n| rule_list(ctx, n, "failsafe", Section::Failsafe, names.as_deref()));
    let implicit = optional(&f, "implicit", Implicit::default(), |n, p| {
        implicit(ctx, n, p)
    });

    if f.get("profile").is_none() && matches!(&rules, Some(r) if r.is_empty()) {
        let pos = f.get("rules").map_or(f.pos, |n| n.pos);
        ctx.error(
            "rules",
            pos,
            "nothing to enforce: set `profile` to a built-in baseline or add `rules`",
        );
    }
    name_rules(
        ctx,
        rules.as_deref_mut().unwrap_or_default(),
        failsafe
            .as_mut()
            .and_then(Option::as_deref_mut)
            .unwrap_or_default(),
    );

    let config = Config {
        backend: backend?,
        mode: mode?,
        interfaces: interfaces?,
        profile: profile?,
        networks: networks?,
        rules: valid(rules)?,
        failsafe: match failsafe {
            None => Config::default_failsafe(),
            Some(list) => valid(list)?,
        },
        implicit: implicit?,
    };
    ctx.errors.is_empty().then_some(config)
}

/// The value of an optional key: `default` when absent, `None` when present but invalid.
fn optional<'n, T>(
    f: &Fields<'n>,
    key: &str,
    default: T,
    read: impl FnOnce(&'n Node, &str) -> Option<T>,
) -> Option<T> {
    match f.get(key) {
        Some(node) => read(node, &f.path_of(key)),
        None => Some(default),
    }
}

fn key_str(node: &Node) -> Option<&str> {
    match &node.kind {
        Kind::Str(s) => Some(s),
        _ => None,
    }
}

/// Reads each item of a list with `read`; `None` if the list or any item was invalid.
fn each<'n, T>(
    ctx: &mut Ctx,
    node: &'n Node,
    path: &str,
    mut read: impl FnMut(&mut Ctx, &'n Node, String) -> Option<T>,
) -> Option<Vec<T>> {
    let items = ctx.seq(node, path)?;
    let out: Vec<Option<T>> = items
        .iter()
        .enumerate()
        .map(|(i, item)| read(ctx, item, index(path, i)))
        .collect();
    out.into_iter().collect()
}

fn interfaces(ctx: &mut Ctx, node: &Node, path: &str) -> Option<Vec<String>> {
    let mut seen: Vec<(String, Pos)> = Vec::new();
    let list = each(ctx, node, path, |ctx, item, p| {
        let name = ctx.str(item, &p)?;
        if let Err(e) = fields::interface_name(name) {
            ctx.error(p, item.pos, e);
            return None;
        }
        if let Some((_, first)) = seen.iter().find(|(n, _)| n == name) {
            ctx.error(
                p,
                item.pos,
                format!(
                    "duplicate interface `{name}` (first listed at line {})",
                    first.line
                ),
            );
            return None;
        }
        seen.push((name.to_string(), item.pos));
        Some(name.to_string())
    });
    list
}

fn networks(ctx: &mut Ctx, node: &Node, path: &str) -> Option<BTreeMap<String, Vec<IpNet>>> {
    let f = ctx.map(node, path, None)?;
    let mut out = BTreeMap::new();
    let mut ok = true;
    for (name, value) in f.iter() {
        let p = f.path_of(name);
        if let Err(e) = fields::network_name(name) {
            // Point at the key: the name is what is wrong.
            let key_pos = match &node.kind {
                Kind::Map(entries) => entries
                    .iter()
                    .find(|(k, _)| key_str(k) == Some(name))
                    .map_or(value.pos, |(k, _)| k.pos),
                _ => value.pos,
            };
            ctx.error(&p, key_pos, e);
            ok = false;
        }
        let nets = each(ctx, value, &p, |ctx, item, ip| {
            let s = ctx.str(item, &ip)?;
            fields::cidr(s).map_err(|e| ctx.error(ip, item.pos, e)).ok()
        });
        match nets {
            Some(nets) if nets.is_empty() => {
                ctx.error(
                    &p,
                    value.pos,
                    format!("network `{name}` is empty; list at least one CIDR"),
                );
                ok = false;
            }
            Some(nets) => {
                out.insert(name.to_string(), nets);
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn profile(ctx: &mut Ctx, node: &Node, path: &str, networks: Option<&[&str]>) -> Option<String> {
    let name = ctx.str(node, path)?;
    let Some(profile) = profiles::find(name) else {
        let valid: Vec<&str> = profiles::all().iter().map(|p| p.name).collect();
        let hint = match suggest(name, &valid) {
            Some(g) => format!("did you mean `{g}`? "),
            None => String::new(),
        };
        ctx.error(
            path,
            node.pos,
            format!(
                "unknown profile `{name}`; {hint}built-in profiles: {}",
                valid.join(", ")
            ),
        );
        return None;
    };
    let mut ok = true;
    for needed in profile.networks() {
        if networks.is_some_and(|defined| !defined.contains(&needed)) {
            ctx.error(path, node.pos, format!("profile `{name}` needs network `{needed}`: define it under `networks:` (e.g. `{needed}: [10.0.0.0/16]`)"));
            ok = false;
        }
    }
    ok.then(|| name.to_string())
}

/// `None` when the section is not a list.
fn rule_list(
    ctx: &mut Ctx,
    node: &Node,
    path: &str,
    section: Section,
    networks: Option<&[&str]>,
) -> Option<Vec<Parsed>> {
    let items = ctx.seq(node, path)?;
    Some(
        items
            .iter()
            .enumerate()
            .map(|(i, item)| rules::rule(ctx, item, &index(path, i), section, networks))
            .collect(),
    )
}

fn implicit(ctx: &mut Ctx, node: &Node, path: &str) -> Option<Implicit> {
    let f = ctx.map(node, path, Some(IMPLICIT_KEYS))?;
    if let (Some(_), Some(second)) = (f.get("neighbour-discovery"), f.get("neighbor-discovery")) {
        let both = [f.get("neighbour-discovery").unwrap(), second];
        let later = both.iter().max_by_key(|n| n.pos).unwrap();
        let key = if later.pos == second.pos {
            "neighbor-discovery"
        } else {
            "neighbour-discovery"
        };
        ctx.error(
            f.path_of(key),
            later.pos,
            "`neighbor-discovery` is an alias of `neighbour-discovery`; give only one",
        );
        return None;
    }
    let mut flag = |key: &str| match f.get(key) {
        Some(n) => ctx.bool(n, &f.path_of(key)),
        None => Some(true),
    };
    let established = flag("established");
    let icmp_errors = flag("icmp-errors");
    let nd = if f.get("neighbor-discovery").is_some() {
        flag("neighbor-discovery")
    } else {
        flag("neighbour-discovery")
    };
    let dhcp_client = flag("dhcp-client");
    Some(Implicit {
        established: established?,
        icmp_errors: icmp_errors?,
        neighbour_discovery: nd?,
        dhcp_client: dhcp_client?,
    })
}

/// Rule names are the `rule` label of metrics and must be unique across `rules` and
/// `failsafe`. The later one (in document order) is reported. Unnamed failsafe entries are
/// then named `failsafe-PROTO[-PORTS]`, with a suffix if that name is taken.
fn name_rules(ctx: &mut Ctx, rules: &mut [Parsed], failsafe: &mut [Parsed]) {
    let mut named: Vec<(&str, Pos, &str)> = rules
        .iter()
        .chain(failsafe.iter())
        .filter_map(|r| {
            r.name
                .as_ref()
                .map(|(n, pos)| (n.as_str(), *pos, r.path.as_str()))
        })
        .collect();
    named.sort_by_key(|(_, pos, _)| *pos);
    for (i, (name, pos, path)) in named.iter().enumerate() {
        if let Some((_, first, _)) = named[..i].iter().find(|(n, _, _)| n == name) {
            ctx.error(
                format!("{path}.name"),
                *pos,
                format!(
                    "duplicate rule name `{name}` (first used at line {})",
                    first.line
                ),
            );
        }
    }
    let mut taken: Vec<String> = named.iter().map(|(n, _, _)| n.to_string()).collect();
    for (i, entry) in failsafe.iter_mut().enumerate() {
        let Some(rule) = entry.rule.as_mut().filter(|_| entry.name.is_none()) else {
            continue;
        };
        let mut name = auto_name(rule);
        let mut n = i;
        while taken.contains(&name) || fields::rule_name(&name).is_err() {
            name = format!("failsafe-{n}");
            n += 1;
        }
        taken.push(name.clone());
        rule.name = name;
    }
}

/// The rules of a section, `None` if the section or any entry was invalid.
fn valid(section: Option<Vec<Parsed>>) -> Option<Vec<RuleConfig>> {
    section?.into_iter().map(|p| p.rule).collect()
}

fn auto_name(rule: &RuleConfig) -> String {
    let proto = rules::PROTOCOLS
        .iter()
        .find(|(_, p)| *p == rule.protocol)
        .map_or("all", |(n, _)| n);
    let ports: Vec<String> = rule
        .ports
        .iter()
        .map(|r| {
            if r.start == r.end {
                r.start.to_string()
            } else {
                format!("{}-{}", r.start, r.end)
            }
        })
        .collect();
    if ports.is_empty() {
        format!("failsafe-{proto}")
    } else {
        format!("failsafe-{proto}-{}", ports.join("_"))
    }
}
