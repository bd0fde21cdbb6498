//! The backend-neutral policy: what both backends compile from and what `explain` evaluates.
//!
//! Order of evaluation (first match wins), identical in every backend:
//! 1. ICMPv6 neighbour discovery (133-137), if switched on: conntrack does not track it as flows
//!    and marks redirects invalid, so it must be decided before the invalid check;
//! 2. `ct state invalid` (or a malformed packet) -> drop, reason `invalid`;
//! 3. the other implicit allowances that are switched on: established/related return traffic,
//!    ICMP errors of tracked flows, DHCP client replies;
//! 4. `rules` in order: failsafe entries, then the profile's rules, then the user's rules;
//! 5. everything else -> drop, reason `default-deny`.
//!
//! In audit mode every drop is counted the same way but the packet is accepted.

use serde::Serialize;

pub use crate::config::{interface_name, Action, Mode, PortRange, Protocol};
pub use crate::policy::addrset::AddrSet;
use crate::profiles::Provenance;

/// Destination ports, sorted and merged. Empty means "any port".
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct PortSet(Vec<PortRange>);

impl PortSet {
    pub fn any() -> Self {
        Self(Vec::new())
    }

    pub fn new(mut ranges: Vec<PortRange>) -> Self {
        ranges.sort_unstable();
        let mut out: Vec<PortRange> = Vec::with_capacity(ranges.len());
        for r in ranges {
            match out.last_mut() {
                Some(last) if (r.start as u32) <= last.end as u32 + 1 => {
                    last.end = last.end.max(r.end)
                }
                _ => out.push(r),
            }
        }
        Self(out)
    }

    pub fn is_any(&self) -> bool {
        self.0.is_empty()
    }

    pub fn ranges(&self) -> &[PortRange] {
        &self.0
    }

    pub fn contains(&self, port: u16) -> bool {
        self.is_any() || self.0.iter().any(|r| r.start <= port && port <= r.end)
    }
}

/// Where a rule came from, shown by `explain` and `profiles`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Origin {
    Failsafe,
    Profile {
        profile: String,
        provenance: Provenance,
    },
    User,
    /// The egress metadata switch (`egress.metadata`): built in, not written as a rule.
    Metadata,
}

/// One normalised rule. `name` is unique within a policy and is the `rule` label of metrics.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub name: String,
    pub action: Action,
    pub protocol: Protocol,
    /// Only meaningful for tcp/udp; always `any` otherwise.
    pub ports: PortSet,
    pub sources: AddrSet,
    pub origin: Origin,
}

impl Rule {
    /// Whether this rule matches a new inbound packet (connection tracking is not consulted here).
    pub fn matches(&self, pkt: &Packet) -> bool {
        let proto_ok = match (self.protocol, pkt.l4) {
            (Protocol::All, _) => true,
            (Protocol::Tcp, L4::Tcp { .. }) | (Protocol::Udp, L4::Udp { .. }) => true,
            (Protocol::Icmp, L4::Icmp { .. }) => pkt.src.is_ipv4(),
            (Protocol::Icmpv6, L4::Icmp { .. }) => pkt.src.is_ipv6(),
            _ => false,
        };
        let port_ok = match pkt.l4 {
            L4::Tcp { dport, .. } | L4::Udp { dport, .. } if self.protocol.has_ports() => {
                self.ports.contains(dport)
            }
            _ => true,
        };
        proto_ok && port_ok && self.sources.contains(pkt.src)
    }
}

/// Implicit allowances, listed explicitly so every backend installs the same ones.
pub use crate::config::Implicit;

/// ICMP types that are errors about another flow (carried as `related` by conntrack).
pub const ICMPV4_ERROR_TYPES: [u8; 4] = [3, 4, 11, 12]; // unreachable (incl. frag needed), quench, time exceeded, parameter problem
pub const ICMPV6_ERROR_TYPES: [u8; 4] = [1, 2, 3, 4]; // unreachable, packet too big, time exceeded, parameter problem
/// ICMPv6 neighbour discovery: router solicitation/advertisement, neighbour solicitation/advertisement, redirect.
pub const ICMPV6_ND_TYPES: std::ops::RangeInclusive<u8> = 133..=137;
pub const DHCP_SERVER_PORT: u16 = 67;
pub const DHCP_CLIENT_PORT: u16 = 68;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Policy {
    pub mode: Mode,
    pub implicit: Implicit,
    /// Failsafe, then profile, then user rules: first match wins.
    pub rules: Vec<Rule>,
    /// Uplinks the policy is enforced on; empty means "default-route interfaces", resolved at apply.
    pub interfaces: Vec<String>,
    /// The profile the rules came from, if any.
    pub profile: Option<String>,
    /// Dropped packets the datapath samples per second (per CPU on XDP, per drop reason and
    /// rule on nft); 0: none. Not part of [`Policy::digest`]: it changes no verdict.
    pub samples_per_second: u32,
    /// What leaves through the uplinks (see `egress.rs`); open unless the config says more.
    pub egress: super::egress::Egress,
}

/// Connection-tracking state of a packet, as the kernel sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CtState {
    #[default]
    New,
    Established,
    Related,
    Invalid,
}

/// Layer-4 header fields that the policy looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "protocol", rename_all = "lowercase")]
pub enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    /// ICMP for IPv4 sources, ICMPv6 for IPv6 sources.
    Icmp {
        icmp_type: u8,
        code: u8,
    },
    /// Any other IP protocol number (e.g. 47 GRE, 132 SCTP).
    Other {
        number: u8,
    },
}

/// An inbound packet as the evaluator sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Packet {
    pub src: std::net::IpAddr,
    pub l4: L4,
    pub ct: CtState,
}

/// Why a packet was accepted or dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    Established,
    IcmpError,
    NeighbourDiscovery,
    DhcpClient,
    /// A rule matched (allow or deny); `Verdict::rule` names it.
    Rule,
    DefaultDeny,
    Invalid,
    /// Egress only: no rule matched and the default egress action is `allow`.
    DefaultAllow,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Established => "established",
            Reason::IcmpError => "icmp-error",
            Reason::NeighbourDiscovery => "neighbour-discovery",
            Reason::DhcpClient => "dhcp-client",
            Reason::Rule => "rule",
            Reason::DefaultDeny => "default-deny",
            Reason::Invalid => "invalid",
            Reason::DefaultAllow => "default-allow",
        }
    }
}

/// The policy's decision for one packet. In audit mode `action` is what would have happened;
/// `enforced` tells whether the packet is really dropped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub action: Action,
    pub reason: Reason,
    /// Index into `Policy::rules` when `reason == Rule`.
    pub rule: Option<usize>,
    pub enforced: bool,
}

impl Verdict {
    /// True when the kernel lets the packet through (audit mode passes would-be drops).
    pub fn passes(&self) -> bool {
        self.action == Action::Allow || !self.enforced
    }
}
