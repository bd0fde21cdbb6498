//! `networks` (named address lists) and `profile`, which needs some of them.

use std::collections::BTreeMap;

use ipnet::IpNet;

use super::fields;
use super::suggest::did_you_mean;
use super::walk::Ctx;
use super::yaml::{Kind, Node};
use crate::profiles;

pub fn networks(ctx: &mut Ctx, node: &Node, path: &str) -> Option<BTreeMap<String, Vec<IpNet>>> {
    let f = ctx.map(node, path, None)?;
    let mut out = BTreeMap::new();
    let mut ok = true;
    for (name, key_pos, value) in f.iter() {
        let p = f.path_of(name);
        if let Err(e) = fields::network_name(name) {
            // Point at the key: the name is what is wrong.
            ctx.error(&p, key_pos, e);
            ok = false;
        }
        let nets = ctx.each(value, &p, |ctx, item, ip| {
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

/// The keys of the `networks` node, for checking `from` and `profile` against them:
/// `None` when `networks` is not a mapping, empty when it is absent.
pub fn network_names(node: Option<&Node>) -> Option<Vec<&str>> {
    match node.map(|n| &n.kind) {
        None => Some(Vec::new()),
        Some(Kind::Map(entries)) => Some(
            entries
                .iter()
                .filter_map(|(k, _)| match &k.kind {
                    Kind::Str(s) => Some(s.as_str()),
                    _ => None,
                })
                .collect(),
        ),
        Some(_) => None,
    }
}

/// `networks`: the names `networks` defines, `None` when it is malformed (see
/// [`super::rules::NetworkNames`]).
pub fn profile(
    ctx: &mut Ctx,
    node: &Node,
    path: &str,
    networks: Option<&[&str]>,
) -> Option<String> {
    let name = ctx.str(node, path)?;
    let Some(profile) = profiles::find(name) else {
        let valid: Vec<&str> = profiles::all().iter().map(|p| p.name).collect();
        let hint = did_you_mean(name, &valid);
        let message = format!(
            "unknown profile `{name}`; {hint}built-in profiles: {}",
            valid.join(", ")
        );
        ctx.error(path, node.pos, message);
        return None;
    };
    let mut ok = true;
    for needed in profile.networks() {
        if networks.is_some_and(|defined| !defined.contains(&needed)) {
            let message = format!(
                "profile `{name}` needs network `{needed}`: define it under `networks:` (e.g. `{needed}: [10.0.0.0/16]`)"
            );
            ctx.error(path, node.pos, message);
            ok = false;
        }
    }
    ok.then(|| name.to_string())
}
