//! The validated configuration: what a user wrote, with every value checked and typed.
//!
//! Parsing and validation (with `line:column` locations) live in `parse.rs`; this file is only
//! the shape that the rest of nodewall consumes.

use std::collections::BTreeMap;

use ipnet::IpNet;
use serde::Serialize;

/// Which datapath enforces the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Nft,
    Xdp,
    /// XDP where the kernel and driver support it, nft otherwise.
    Auto,
}

/// `audit` counts would-be drops but accepts the packets: a safe first rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Enforce,
    Audit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Allow,
    Deny,
}

pub use crate::vocab::{PortRange, Protocol};

/// A rule source: a literal prefix or the name of an entry of `networks`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Source {
    Cidr(IpNet),
    Network(String),
}

/// One allow/deny rule (user rules and failsafe entries share this shape).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleConfig {
    pub name: String,
    pub action: Action,
    pub protocol: Protocol,
    /// Empty means every port (and is the only value allowed for icmp/icmpv6/all).
    pub ports: Vec<PortRange>,
    /// Empty is rejected by validation: a rule must say where traffic comes from.
    pub from: Vec<Source>,
}

/// The implicit allowances of a stateful security group, each switchable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Implicit {
    /// Return traffic of connections the node opened (`ct state established,related`).
    pub established: bool,
    /// ICMP errors (fragmentation needed, packet too big, unreachable, time exceeded) that
    /// belong to tracked flows: path MTU discovery breaks without them.
    pub icmp_errors: bool,
    /// ICMPv6 neighbour discovery, types 133-137: IPv6 does not work without it.
    pub neighbour_discovery: bool,
    /// DHCP replies to the node's client (udp 67 -> 68), so leases renew.
    pub dhcp_client: bool,
}

impl Default for Implicit {
    fn default() -> Self {
        Self {
            established: true,
            icmp_errors: true,
            neighbour_discovery: true,
            dhcp_client: true,
        }
    }
}

pub use super::api_sources::{AddressType, ApiItem, ApiSource, Kubernetes};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Config {
    pub backend: BackendKind,
    pub mode: Mode,
    /// Uplinks to filter. Empty means "the interfaces that carry default routes", resolved at
    /// apply time (`render`/`explain` do not need it).
    pub interfaces: Vec<String>,
    pub profile: Option<String>,
    /// The CIDRs written out in each network (empty for a network whose entries all come from
    /// the Kubernetes API).
    pub networks: BTreeMap<String, Vec<IpNet>>,
    /// The entries of each network that come from the Kubernetes API, by network name; a
    /// network's addresses are its CIDRs plus what these resolve to (`discovery::resolve`).
    /// Compiling a config with any left is an error: see [`crate::policy::compile`].
    pub discovered: BTreeMap<String, Vec<ApiItem>>,
    /// The `kubernetes` section; `None` when absent.
    pub kubernetes: Option<Kubernetes>,
    pub rules: Vec<RuleConfig>,
    /// Accepted before everything else. Default: tcp/22 from anywhere; `[]` disables.
    pub failsafe: Vec<RuleConfig>,
    pub implicit: Implicit,
    /// Drop sampling and the flow log (`drops`).
    pub drops: super::Drops,
    /// The outbound half; [`EgressConfig::default`] (open) when the file has no `egress`.
    pub egress: EgressConfig,
}

/// Which outbound traffic an egress rule judges (`source:`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EgressSource {
    /// What the node opens and what it forwards (`source` absent).
    #[default]
    Any,
    /// Only what the node itself opens (its processes, host-network pods included).
    Host,
    /// Only what the node forwards out of an uplink: its pods' traffic, judged by the pod's
    /// own address (before any SNAT).
    Pod,
}

/// One `egress.rules` / `egress.failsafe` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EgressRuleConfig {
    pub name: String,
    pub action: Action,
    pub protocol: Protocol,
    /// Destination ports; empty means every port.
    pub ports: Vec<PortRange>,
    /// Destinations; never empty.
    pub to: Vec<Source>,
    pub source: EgressSource,
}

/// `egress.metadata`: keep pods away from the cloud instance metadata service.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MetadataConfig {
    pub deny_pods: bool,
    /// Pod addresses (CIDRs or network names) still allowed to reach it.
    pub except: Vec<Source>,
}

/// `egress`: what leaves through the uplinks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EgressConfig {
    /// For new outbound flows no rule matches: `allow` unless the file says `deny`.
    pub default: Action,
    pub rules: Vec<EgressRuleConfig>,
    /// Allowed before every other egress rule while egress is restricted; see
    /// [`EgressConfig::default_failsafe`].
    pub failsafe: Vec<EgressRuleConfig>,
    pub metadata: MetadataConfig,
}

impl Default for EgressConfig {
    fn default() -> Self {
        Self {
            default: Action::Allow,
            rules: Vec::new(),
            failsafe: Self::default_failsafe(),
            metadata: MetadataConfig::default(),
        }
    }
}

/// The built-in network the default egress failsafe sends DNS to: when `networks` does not
/// define it, the nameservers of the node's resolver configuration (see
/// `policy::resolvers`).
pub const NET_NODE_RESOLVERS: &str = "node-resolvers";
/// The built-in network the default egress failsafe lets the node itself (not its pods) reach
/// the cloud instance metadata service in (tcp 80): when `networks` does not define it, the
/// addresses of the metadata switch (see `policy::egress::METADATA_ADDRESSES`). Cloud nodes
/// get their credentials and identity there.
pub const NET_INSTANCE_METADATA: &str = "instance-metadata";
/// The network the default egress failsafe lets the node reach the API server in, when
/// `networks` defines it (the name the profiles use for the control plane).
pub const NET_CONTROL_PLANE: &str = "control-plane";

impl EgressConfig {
    /// Whether nothing outbound is judged: the default `allow`, no rule, no metadata switch.
    /// Failsafe entries alone change nothing (they only allow).
    pub fn is_open(&self) -> bool {
        self.default == Action::Allow && self.rules.is_empty() && !self.metadata.deny_pods
    }

    /// Whether some egress rule is limited to some pods' own addresses (the metadata switch's
    /// exceptions): only a hook before SNAT can tell them apart, which the XDP backend has not.
    pub fn has_pod_exceptions(&self) -> bool {
        self.metadata.deny_pods && !self.metadata.except.is_empty()
    }

    /// What keeps a node alive under `egress.default: deny`: DNS to the node's resolvers,
    /// DHCP (v4 and v6) to anywhere, the instance metadata service for the node itself, and
    /// the API server (TCP 443 and 6443) in the `control-plane` network (only when that
    /// network is defined).
    pub fn default_failsafe() -> Vec<EgressRuleConfig> {
        let entry =
            |name: &str, protocol, ports: Vec<PortRange>, to: Vec<Source>| EgressRuleConfig {
                name: name.into(),
                action: Action::Allow,
                protocol,
                ports,
                to,
                source: EgressSource::Any,
            };
        let resolvers = || vec![Source::Network(NET_NODE_RESOLVERS.into())];
        let anywhere = || {
            vec![
                Source::Cidr("0.0.0.0/0".parse().unwrap()),
                Source::Cidr("::/0".parse().unwrap()),
            ]
        };
        vec![
            entry(
                "egress-failsafe-dns-udp",
                Protocol::Udp,
                vec![PortRange::single(53)],
                resolvers(),
            ),
            entry(
                "egress-failsafe-dns-tcp",
                Protocol::Tcp,
                vec![PortRange::single(53)],
                resolvers(),
            ),
            entry(
                "egress-failsafe-dhcp",
                Protocol::Udp,
                vec![PortRange::single(67), PortRange::single(547)],
                anywhere(),
            ),
            EgressRuleConfig {
                source: EgressSource::Host,
                ..entry(
                    "egress-failsafe-instance-metadata",
                    Protocol::Tcp,
                    vec![PortRange::single(80)],
                    vec![Source::Network(NET_INSTANCE_METADATA.into())],
                )
            },
            entry(
                "egress-failsafe-apiserver",
                Protocol::Tcp,
                vec![PortRange::single(443), PortRange::single(6443)],
                vec![Source::Network(NET_CONTROL_PLANE.into())],
            ),
        ]
    }
}

impl Config {
    /// Whether the agent talks to the Kubernetes API: a network has an API source, or the
    /// `kubernetes` section is there.
    pub fn uses_api(&self) -> bool {
        !self.discovered.is_empty() || self.kubernetes.is_some()
    }

    /// Whether the agent writes its node's status object (`kubernetes.status`, on by default
    /// when the agent talks to the API).
    pub fn writes_status(&self) -> bool {
        self.uses_api() && self.kubernetes.as_ref().is_none_or(|k| k.status)
    }

    /// The default failsafe: SSH from anywhere, like Calico's failsafe inbound ports.
    pub fn default_failsafe() -> Vec<RuleConfig> {
        vec![RuleConfig {
            name: "failsafe-ssh".into(),
            action: Action::Allow,
            protocol: Protocol::Tcp,
            ports: vec![PortRange::single(22)],
            from: vec![
                Source::Cidr("0.0.0.0/0".parse().unwrap()),
                Source::Cidr("::/0".parse().unwrap()),
            ],
        }]
    }
}
