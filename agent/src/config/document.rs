//! The top level of a config file: every section, defaults, and the checks that span
//! sections (profile networks, unique rule names, "something to enforce").

use super::api_sources;
use super::drops::{self, Drops};
use super::egress;
use super::fields;
use super::model::{BackendKind, Config, EgressConfig, Implicit, Mode};
use super::naming::{name_rules, valid};
use super::networks::{network_names, networks, profile};
use super::rules::{self, Section};
use super::walk::{Ctx, DOCUMENT};
use super::yaml::{Kind, Node, Pos};

pub const TOP_KEYS: &[&str] = &[
    "backend",
    "mode",
    "interfaces",
    "profile",
    "networks",
    "rules",
    "failsafe",
    "implicit",
    "kubernetes",
    "drops",
    "egress",
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
    let backend = f.optional("backend", BackendKind::Nft, |n, p| {
        ctx.choice(n, p, "backend", BACKENDS)
    });
    let mode = f.optional("mode", Mode::Enforce, |n, p| {
        ctx.choice(n, p, "mode", MODES)
    });
    let interfaces = f.optional("interfaces", Vec::new(), |n, p| interfaces(ctx, n, p));
    let networks = f.optional("networks", Default::default(), |n, p| networks(ctx, n, p));
    let names = network_names(f.get("networks"));
    let profile = f.optional("profile", None, |n, p| {
        profile(ctx, n, p, names.as_deref()).map(Some)
    });
    let mut rules = f.optional("rules", Vec::new(), |n, p| {
        rules::list(ctx, n, p, Section::Rules, names.as_deref())
    });
    // Absent: the default failsafe; `Some(None)`: present but not a list.
    let mut failsafe = f
        .get("failsafe")
        .map(|n| rules::list(ctx, n, "failsafe", Section::Failsafe, names.as_deref()));
    let implicit = f.optional("implicit", Implicit::default(), |n, p| implicit(ctx, n, p));
    let kubernetes = f.optional("kubernetes", None, |n, p| {
        api_sources::kubernetes(ctx, n, p).map(Some)
    });
    let drops = f.optional("drops", Drops::default(), |n, p| drops::drops(ctx, n, p));
    // Absent: open egress, as before egress existed; `Some(None)`: present but malformed.
    let mut egress = f.get("egress").map(|n| {
        let profile = egress::profile_name(f.get("profile"));
        egress::read(ctx, n, "egress", names.as_deref(), profile)
    });

    let egress_written = matches!(egress, Some(Some(_)));
    let mut no_egress = egress::EgressSection::empty();
    let e = match egress.as_mut() {
        Some(Some(e)) => e,
        _ => &mut no_egress,
    };
    name_rules(
        ctx,
        &mut [
            rules.as_deref_mut().unwrap_or_default(),
            e.rules.as_deref_mut().unwrap_or_default(),
        ],
        &mut [
            failsafe
                .as_mut()
                .and_then(Option::as_deref_mut)
                .unwrap_or_default(),
            e.failsafe
                .as_mut()
                .and_then(Option::as_deref_mut)
                .unwrap_or_default(),
        ],
    );
    // The default egress failsafe's names are taken whenever it may be in force (`egress`
    // written, its `failsafe` absent): a rule of the same name would share its counter. A file
    // without `egress` keeps every name it could use before egress existed.
    if egress_written && e.failsafe.is_none() {
        let defaults = EgressConfig::default_failsafe();
        let all = [
            rules.as_deref(),
            failsafe.as_ref().and_then(Option::as_deref),
            e.rules.as_deref(),
        ];
        for parsed in all.into_iter().flatten().flatten() {
            if let Some((name, pos)) = &parsed.name {
                if defaults.iter().any(|d| &d.name == name) {
                    ctx.error(
                        format!("{}.name", parsed.path),
                        *pos,
                        format!("`{name}` is the name of a default egress failsafe entry; choose another name"),
                    );
                }
            }
        }
    }
    let egress = match egress {
        None => Some(EgressConfig::default()),
        Some(e) => e.and_then(egress::build),
    };

    let (networks, discovered) = networks?;
    let config = Config {
        backend: backend?,
        mode: mode?,
        interfaces: interfaces?,
        profile: profile?,
        networks,
        discovered,
        kubernetes: kubernetes?,
        rules: valid(rules)?,
        failsafe: match failsafe {
            None => Config::default_failsafe(),
            Some(list) => valid(list)?,
        },
        implicit: implicit?,
        drops: drops?,
        egress: egress?,
    };
    if config.backend == BackendKind::Xdp && config.egress.has_pod_exceptions() {
        if let Some(n) = f.get("backend") {
            ctx.error("backend", n.pos, "backend `xdp` cannot enforce `egress.metadata.except` (its egress hook sees forwarded packets after SNAT, without the pod's own address): use `nft`, or `auto` (which picks nft for per-pod exceptions)");
        }
    }
    ctx.errors.is_empty().then_some(config)
}

fn interfaces(ctx: &mut Ctx, node: &Node, path: &str) -> Option<Vec<String>> {
    let mut seen: Vec<(String, Pos)> = Vec::new();
    let list = ctx.each(node, path, |ctx, item, p| {
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

fn implicit(ctx: &mut Ctx, node: &Node, path: &str) -> Option<Implicit> {
    let f = ctx.map(node, path, Some(IMPLICIT_KEYS))?;
    let (british, american) = ("neighbour-discovery", "neighbor-discovery");
    if let (Some(b), Some(a)) = (f.get(british), f.get(american)) {
        let (key, later) = if a.pos > b.pos {
            (american, a)
        } else {
            (british, b)
        };
        let message = format!("`{american}` is an alias of `{british}`; give only one");
        ctx.error(f.path_of(key), later.pos, message);
        return None;
    }
    let mut flag = |key: &str| match f.get(key) {
        Some(n) => ctx.bool(n, &f.path_of(key)),
        None => Some(true),
    };
    let established = flag("established");
    let icmp_errors = flag("icmp-errors");
    let nd = flag(if f.get(american).is_some() {
        american
    } else {
        british
    });
    let dhcp_client = flag("dhcp-client");
    Some(Implicit {
        established: established?,
        icmp_errors: icmp_errors?,
        neighbour_discovery: nd?,
        dhcp_client: dhcp_client?,
    })
}
