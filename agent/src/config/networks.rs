//! `networks` (named address lists) and `profile`, which needs some of them.

use std::collections::BTreeMap;

use ipnet::IpNet;

use super::api_sources::{self, ApiItem};
use super::fields;
use super::suggest::did_you_mean;
use super::walk::Ctx;
use super::yaml::{Kind, Node};
use crate::profiles;

/// The CIDRs of each network, and its entries that come from the Kubernetes API.
pub type Networks = (BTreeMap<String, Vec<IpNet>>, BTreeMap<String, Vec<ApiItem>>);

pub fn networks(ctx: &mut Ctx, node: &Node, path: &str) -> Option<Networks> {
    let f = ctx.map(node, path, None)?;
    let (mut out, mut discovered) = (BTreeMap::new(), BTreeMap::new());
    let mut ok = true;
    for (name, key_pos, value) in f.iter() {
        let p = f.path_of(name);
        if let Err(e) = fields::network_name(name) {
            // Point at the key: the name is what is wrong.
            ctx.error(&p, key_pos, e);
            ok = false;
        }
        let mut api = Vec::new();
        let nets = ctx.each(value, &p, |ctx, item, ip| match &item.kind {
            Kind::Map(_) => {
                api.push(api_sources::item(ctx, item, &ip)?);
                Some(None)
            }
            _ => {
                let s = ctx.str(item, &ip)?;
                let net = fields::cidr(s)
                    .map_err(|e| ctx.error(ip, item.pos, e))
                    .ok()?;
                Some(Some(net))
            }
        });
        match nets {
            Some(nets) if nets.is_empty() => {
                ctx.error(
                    &p,
                    value.pos,
                    format!("network `{name}` is empty; list at least one CIDR or API source (e.g. `{{nodes: {{}}}}`)"),
                );
                ok = false;
            }
            Some(nets) => {
                out.insert(name.to_string(), nets.into_iter().flatten().collect());
                if !api.is_empty() {
                    discovered.insert(name.to_string(), api);
                }
            }
            None => ok = false,
        }
    }
    ok.then_some((out, discovered))
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
