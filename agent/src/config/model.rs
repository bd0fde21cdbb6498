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
