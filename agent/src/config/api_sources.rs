//! Network entries that come from the Kubernetes API (`{nodes: {...}}`, `{pod-cidrs: {...}}`,
//! `{api-server: {}}`) and the `kubernetes` section that says how to reach the API.
//!
//! ```yaml
//! networks:
//!   cluster: [10.0.0.0/16, {nodes: {}}]     # literal + every Node's InternalIP
//!   container: [{pod-cidrs: {}}]             # every Node's spec.podCIDRs
//!   control-plane:
//!     - {nodes: {selector: node-role.kubernetes.io/control-plane, addresses: [InternalIP]}}
//!     - {api-server: {}}                     # the default/kubernetes EndpointSlices
//! kubernetes:
//!   kubeconfig: /path    # default: in-cluster, else $KUBECONFIG / ~/.kube/config
//!   node-name: node-1    # default: $NODE_NAME, else the host name
//!   status: true         # write this node's NodewallNodeStatus object
//! ```

use kube::core::Expression;
use serde::Serialize;

use super::walk::Ctx;
use super::yaml::{Kind, Node};

pub const SOURCE_KEYS: &[&str] = &["nodes", "pod-cidrs", "api-server"];
pub const NODES_KEYS: &[&str] = &["selector", "addresses"];
pub const POD_CIDRS_KEYS: &[&str] = &["selector"];
pub const KUBERNETES_KEYS: &[&str] = &["kubeconfig", "node-name", "status"];
pub const ADDRESS_TYPES: &[(&str, AddressType)] = &[
    ("InternalIP", AddressType::InternalIp),
    ("ExternalIP", AddressType::ExternalIp),
];

/// A Node's `status.addresses[].type` that holds an IP address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum AddressType {
    #[serde(rename = "InternalIP")]
    InternalIp,
    #[serde(rename = "ExternalIP")]
    ExternalIp,
}

impl AddressType {
    /// The name the Kubernetes API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            AddressType::InternalIp => "InternalIP",
            AddressType::ExternalIp => "ExternalIP",
        }
    }
}

/// What an API entry of a network stands for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApiSource {
    /// The addresses of the given types of every Node whose labels match `selector`.
    Nodes {
        selector: Vec<Expression>,
        addresses: Vec<AddressType>,
    },
    /// `spec.podCIDRs` of every Node whose labels match `selector`.
    PodCidrs { selector: Vec<Expression> },
    /// The endpoints of the `default/kubernetes` Service (its EndpointSlices).
    ApiServer,
}

impl ApiSource {
    /// `nodes`, `pod-cidrs` or `api-server`.
    pub fn kind(&self) -> &'static str {
        match self {
            ApiSource::Nodes { .. } => "nodes",
            ApiSource::PodCidrs { .. } => "pod-cidrs",
            ApiSource::ApiServer => "api-server",
        }
    }

    /// A canonical one-line name, equal for equal sources: the key of the discovered sets and
    /// what logs show, e.g. `nodes selector="a=b" addresses=InternalIP`.
    pub fn key(&self) -> String {
        let selector = |s: &[Expression]| {
            let text: Vec<String> = s.iter().map(ToString::to_string).collect();
            if text.is_empty() {
                String::new()
            } else {
                format!(" selector={:?}", text.join(","))
            }
        };
        match self {
            ApiSource::Nodes {
                selector: s,
                addresses,
            } => {
                let types: Vec<&str> = addresses.iter().map(|a| a.as_str()).collect();
                format!("nodes{} addresses={}", selector(s), types.join(","))
            }
            ApiSource::PodCidrs { selector: s } => format!("pod-cidrs{}", selector(s)),
            ApiSource::ApiServer => "api-server".into(),
        }
    }

    /// Whether it is read from Nodes (else from EndpointSlices).
    pub fn from_nodes(&self) -> bool {
        !matches!(self, ApiSource::ApiServer)
    }
}

/// An API entry where the config file has it, for messages about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ApiItem {
    pub source: ApiSource,
    /// Field path, e.g. `networks.cluster[1]`.
    pub path: String,
    pub line: usize,
    pub column: usize,
}

/// The `kubernetes` section.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Kubernetes {
    /// Default: in-cluster config, else `$KUBECONFIG` / `~/.kube/config`.
    pub kubeconfig: Option<String>,
    /// Default: `$NODE_NAME` (the Downward API), else the host name.
    pub node_name: Option<String>,
    /// Write the node's NodewallNodeStatus object (default true).
    pub status: bool,
}

/// One mapping item of a network list: `{KIND: OPTIONS}` with exactly one key.
pub fn item(ctx: &mut Ctx, node: &Node, path: &str) -> Option<ApiItem> {
    let f = ctx.map(node, path, Some(SOURCE_KEYS))?;
    let mut entries = f.iter();
    let Some((kind, _, options)) = entries.next() else {
        if !matches!(&node.kind, Kind::Map(m) if m.is_empty()) {
            return None; // its keys were reported
        }
        ctx.error(path, node.pos, "empty mapping; a network entry is a CIDR or one of {nodes: {}}, {pod-cidrs: {}}, {api-server: {}}");
        return None;
    };
    if let Some((second, pos, _)) = entries.next() {
        let message =
            format!("one source per entry: `{kind}` and `{second}` must be two list items");
        ctx.error(f.path_of(second), pos, message);
        return None;
    }
    let p = f.path_of(kind);
    let source = match kind {
        "nodes" => {
            let o = options_of(ctx, options, &p, NODES_KEYS)?;
            let selector = o.optional("selector", Vec::new(), |n, p| selector(ctx, n, p));
            let addresses = o.optional("addresses", vec![AddressType::InternalIp], |n, p| {
                addresses(ctx, n, p)
            });
            ApiSource::Nodes {
                selector: selector?,
                addresses: addresses?,
            }
        }
        "pod-cidrs" => {
            let o = options_of(ctx, options, &p, POD_CIDRS_KEYS)?;
            let selector = o.optional("selector", Vec::new(), |n, p| selector(ctx, n, p));
            ApiSource::PodCidrs {
                selector: selector?,
            }
        }
        _ => {
            options_of(ctx, options, &p, &[])?;
            ApiSource::ApiServer
        }
    };
    Some(ApiItem {
        source,
        path: path.to_string(),
        line: node.pos.line,
        column: node.pos.column,
    })
}

/// The options mapping of a source; `null` (`- api-server:`) counts as `{}`.
fn options_of<'n>(
    ctx: &mut Ctx,
    node: &'n Node,
    path: &str,
    known: &[&str],
) -> Option<super::walk::Fields<'n>> {
    static EMPTY: Node = Node {
        kind: Kind::Map(Vec::new()),
        pos: super::yaml::Pos { line: 0, column: 0 },
    };
    let node = if node.kind == Kind::Null {
        &EMPTY
    } else {
        node
    };
    if known.is_empty() {
        if let Kind::Map(entries) = &node.kind {
            if let Some((key, _)) = entries.first() {
                let message = "`api-server` takes no options; write `{api-server: {}}`";
                ctx.error(path, key.pos, message);
                return None;
            }
        }
    }
    ctx.map(node, path, Some(known))
}

fn selector(ctx: &mut Ctx, node: &Node, path: &str) -> Option<Vec<Expression>> {
    let s = ctx.str(node, path)?;
    super::selector::parse(s)
        .map_err(|e| ctx.error(path, node.pos, e))
        .ok()
}

fn addresses(ctx: &mut Ctx, node: &Node, path: &str) -> Option<Vec<AddressType>> {
    let list = ctx.each(node, path, |ctx, item, p| {
        if let Kind::Str(s) = &item.kind {
            if matches!(s.as_str(), "Hostname" | "InternalDNS" | "ExternalDNS") {
                let message = format!(
                    "`{s}` addresses are names, not IP addresses; use InternalIP or ExternalIP"
                );
                ctx.error(p, item.pos, message);
                return None;
            }
        }
        ctx.choice(item, &p, "address type", ADDRESS_TYPES)
    })?;
    if list.is_empty() {
        ctx.error(
            path,
            node.pos,
            "empty list; omit `addresses` for [InternalIP]",
        );
        return None;
    }
    let mut unique = list.clone();
    unique.sort();
    unique.dedup();
    if unique.len() != list.len() {
        ctx.error(path, node.pos, "an address type is listed twice");
        return None;
    }
    Some(unique)
}

/// The `kubernetes` section.
pub fn kubernetes(ctx: &mut Ctx, node: &Node, path: &str) -> Option<Kubernetes> {
    let f = ctx.map(node, path, Some(KUBERNETES_KEYS))?;
    let kubeconfig = f.optional("kubeconfig", None, |n, p| {
        let s = ctx.str(n, p)?;
        if s.is_empty() {
            ctx.error(p, n.pos, "empty path; omit `kubeconfig` for the default");
            return None;
        }
        Some(Some(s.to_string()))
    });
    let node_name = f.optional("node-name", None, |n, p| {
        let s = ctx.str(n, p)?;
        if !dns_subdomain(s) {
            let message = format!("`{s}` is not a Node name: lowercase letters, digits, '-' and '.', at most 253 characters, starting and ending with a letter or digit");
            ctx.error(p, n.pos, message);
            return None;
        }
        Some(Some(s.to_string()))
    });
    let status = f.optional("status", true, |n, p| ctx.bool(n, p));
    Some(Kubernetes {
        kubeconfig: kubeconfig?,
        node_name: node_name?,
        status: status?,
    })
}

/// A DNS subdomain (RFC 1123) as Kubernetes names and label prefixes are.
pub fn dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            let edge =
                |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
            edge(label.chars().next())
                && edge(label.chars().last())
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}
