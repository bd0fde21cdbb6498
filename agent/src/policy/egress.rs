//! Egress: the outbound half of the security group. What the node itself and the pods it
//! forwards may open towards the network through the uplinks, and the reference evaluator for
//! it.
//!
//! Order of evaluation for a packet leaving through an uplink (first match wins), identical in
//! every backend:
//! 1. nothing is judged while egress is open (default `allow`, no rule, the metadata switch
//!    off): every existing config means what it meant before egress existed;
//! 2. packets of live flows (`established`, never a bare SYN) and errors about them
//!    (`related`) pass: replies to inbound connections are never judged by egress rules;
//! 3. ICMPv6 neighbour discovery (133-137), if the implicit allowance is on;
//! 4. the metadata switch (pods to the instance metadata service: its exceptions, then deny);
//! 5. `egress.failsafe`, then the profile's outbound rows (with `default: deny`), then
//!    `egress.rules`;
//! 6. the default action, reason `default-allow` or `default-deny`.
//!
//! Connection-tracking `invalid` is not a verdict here: an outbound packet that belongs to no
//! flow and cannot open one (a stray SYN+ACK, RST or FIN, an ICMP error about nothing) is
//! judged by the rules like a new one, so that nothing leaves to a destination the rules
//! forbid by dressing up as a reply.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use super::evaluate::is_icmp_error;
use super::model::{
    Action, AddrSet, CtState, Mode, Origin, Policy, PortSet, Protocol, Reason, Verdict,
    ICMPV6_ND_TYPES, L4,
};

pub use crate::config::EgressSource as Traffic;

impl Traffic {
    /// The `source:` value, `any` when the rule has none.
    pub fn as_str(self) -> &'static str {
        match self {
            Traffic::Any => "any",
            Traffic::Host => "host",
            Traffic::Pod => "pod",
        }
    }

    pub fn includes(self, sender: Sender) -> bool {
        matches!(
            (self, sender),
            (Traffic::Any, _) | (Traffic::Host, Sender::Host) | (Traffic::Pod, Sender::Pod(_))
        )
    }
}

/// One normalised egress rule. Names are unique across both directions (they are the `rule`
/// label of metrics).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EgressRule {
    pub name: String,
    pub action: Action,
    pub protocol: Protocol,
    /// Destination ports (tcp/udp only; `any` otherwise).
    pub ports: PortSet,
    pub destinations: AddrSet,
    pub traffic: Traffic,
    /// Only forwarded packets whose (pre-SNAT) source is in this set; `None`: any source.
    /// Only the metadata switch's exceptions set it, always with `traffic: pod`.
    pub pod_sources: Option<AddrSet>,
    pub origin: Origin,
}

impl EgressRule {
    pub fn matches(&self, pkt: &EgressPacket) -> bool {
        let v6 = pkt.dst.is_ipv6();
        let proto_ok = match (self.protocol, pkt.l4) {
            (Protocol::All, _) => true,
            (Protocol::Tcp, L4::Tcp { .. }) | (Protocol::Udp, L4::Udp { .. }) => true,
            (Protocol::Icmp, L4::Icmp { .. }) => !v6,
            (Protocol::Icmpv6, L4::Icmp { .. }) => v6,
            _ => false,
        };
        let port_ok = match pkt.l4 {
            L4::Tcp { dport, .. } | L4::Udp { dport, .. } if self.protocol.has_ports() => {
                self.ports.contains(dport)
            }
            _ => true,
        };
        let source_ok = match (&self.pod_sources, pkt.from) {
            (None, _) => true,
            (Some(set), Sender::Pod(src)) => set.contains(src),
            (Some(_), Sender::Host) => false,
        };
        proto_ok
            && port_ok
            && self.traffic.includes(pkt.from)
            && source_ok
            && self.destinations.contains(pkt.dst)
    }
}

/// The egress half of a policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Egress {
    /// What a new outbound flow that no rule matches gets.
    pub default: Action,
    /// In evaluation order: metadata switch, failsafe, profile rows, user rules.
    pub rules: Vec<EgressRule>,
}

impl Default for Egress {
    /// Open: nothing judged, as before egress existed.
    fn default() -> Self {
        Self {
            default: Action::Allow,
            rules: Vec::new(),
        }
    }
}

impl Egress {
    /// Whether nothing outbound is judged at all (no backend installs anything for it).
    pub fn is_open(&self) -> bool {
        self.default == Action::Allow && self.rules.is_empty()
    }
}

/// Who sends an outbound packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "address")]
pub enum Sender {
    /// The node itself.
    Host,
    /// A pod (anything the node forwards), with its own address before any SNAT.
    Pod(IpAddr),
}

/// An outbound packet as the evaluator sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct EgressPacket {
    pub from: Sender,
    pub dst: IpAddr,
    pub l4: L4,
    pub ct: CtState,
}

/// What the policy says about one outbound packet ([`Verdict::rule`] indexes
/// `policy.egress.rules`).
pub fn evaluate_egress(policy: &Policy, pkt: &EgressPacket) -> Verdict {
    let enforced = policy.mode == Mode::Enforce;
    let verdict = |action, reason, rule| Verdict {
        action,
        reason,
        rule,
        enforced,
    };
    let allow = |reason| verdict(Action::Allow, reason, None);
    let egress = &policy.egress;
    if egress.is_open() {
        return allow(Reason::DefaultAllow);
    }
    let v6 = pkt.dst.is_ipv6();
    match pkt.ct {
        CtState::Established => return allow(Reason::Established),
        CtState::Related => {
            return match pkt.l4 {
                L4::Icmp { icmp_type, .. } if is_icmp_error(v6, icmp_type) => {
                    allow(Reason::IcmpError)
                }
                _ => allow(Reason::Established),
            }
        }
        CtState::New | CtState::Invalid => {}
    }
    if let L4::Icmp { icmp_type, .. } = pkt.l4 {
        if policy.implicit.neighbour_discovery && v6 && ICMPV6_ND_TYPES.contains(&icmp_type) {
            return allow(Reason::NeighbourDiscovery);
        }
    }
    for (i, rule) in egress.rules.iter().enumerate() {
        if rule.matches(pkt) {
            return verdict(rule.action, Reason::Rule, Some(i));
        }
    }
    match egress.default {
        Action::Allow => allow(Reason::DefaultAllow),
        Action::Deny => verdict(Action::Deny, Reason::DefaultDeny, None),
    }
}

/// An instance metadata service address, with where its provider documents it.
pub struct MetadataAddress {
    pub net: &'static str,
    pub provider: &'static str,
    pub source: &'static str,
}

/// The cloud instance metadata services the metadata switch keeps pods away from, each
/// confirmed from its provider's documentation.
pub const METADATA_ADDRESSES: &[MetadataAddress] = &[
    MetadataAddress {
        net: "169.254.169.254/32",
        provider: "AWS EC2 instance metadata service (IMDS), IPv4",
        // "To view all categories of instance metadata from within a running instance, use
        // the following IPv4 or IPv6 URIs: http://169.254.169.254/latest/meta-data/,
        // http://[fd00:ec2::254]/latest/meta-data/".
        source:
            "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/instancedata-data-retrieval.html",
    },
    MetadataAddress {
        net: "fd00:ec2::254/128",
        provider: "AWS EC2 instance metadata service (IMDS), IPv6 (Nitro instances)",
        source:
            "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/instancedata-data-retrieval.html",
    },
    MetadataAddress {
        net: "100.100.100.200/32",
        provider: "Alibaba Cloud ECS instance metadata service",
        // `curl http://100.100.100.200/latest/meta-data/instance-id` (normal mode), and the
        // token of the security hardening mode from http://100.100.100.200/latest/api/token.
        source: "https://www.alibabacloud.com/help/en/ecs/user-guide/view-instance-metadata",
    },
    MetadataAddress {
        net: "169.254.0.23/32",
        provider: "Tencent Cloud CVM instance metadata service",
        // Tencent's page names the service `http://metadata.tencentyun.com/latest/meta-data/`,
        // a name its VPC DNS resolves to 169.254.0.23; agents that cannot rely on that
        // resolver call the address directly (Datadog's agent:
        // pkg/util/cloudproviders/tencent, `metadataURL = "http://169.254.0.23"`).
        source: "https://www.tencentcloud.com/document/product/213/4934",
    },
];

/// [`METADATA_ADDRESSES`] as prefixes.
pub fn metadata_nets() -> Vec<IpNet> {
    METADATA_ADDRESSES
        .iter()
        .map(|m| m.net.parse().expect("valid built-in prefix"))
        .collect()
}

/// Names of the rules the metadata switch adds.
pub const METADATA_EXCEPT_RULE: &str = "metadata/except";
pub const METADATA_DENY_RULE: &str = "metadata/deny-pods";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Implicit, PortRange};

    fn rule(name: &str, action: Action, traffic: Traffic, to: &str) -> EgressRule {
        EgressRule {
            name: name.into(),
            action,
            protocol: Protocol::Tcp,
            ports: PortSet::new(vec![PortRange::single(443)]),
            destinations: AddrSet::from_nets(&[to.parse().unwrap()]),
            traffic,
            pod_sources: None,
            origin: Origin::User,
        }
    }

    fn policy(default: Action, rules: Vec<EgressRule>) -> Policy {
        Policy {
            mode: Mode::Enforce,
            implicit: Implicit::default(),
            rules: Vec::new(),
            interfaces: Vec::new(),
            profile: None,
            samples_per_second: crate::config::DEFAULT_SAMPLES_PER_SECOND,
            egress: Egress { default, rules },
        }
    }

    fn https(from: Sender, dst: &str, ct: CtState) -> EgressPacket {
        EgressPacket {
            from,
            dst: dst.parse().unwrap(),
            l4: L4::Tcp {
                sport: 40000,
                dport: 443,
            },
            ct,
        }
    }

    #[test]
    fn open_egress_judges_nothing() {
        let p = policy(Action::Allow, Vec::new());
        let v = evaluate_egress(&p, &https(Sender::Host, "198.18.0.1", CtState::Invalid));
        assert_eq!((v.action, v.reason), (Action::Allow, Reason::DefaultAllow));
    }

    #[test]
    fn rules_apply_to_their_traffic_and_replies_pass() {
        let pod: IpAddr = "198.18.34.2".parse().unwrap();
        let p = policy(
            Action::Deny,
            vec![rule("api", Action::Allow, Traffic::Host, "198.18.48.0/24")],
        );
        let host = evaluate_egress(&p, &https(Sender::Host, "198.18.48.2", CtState::New));
        assert_eq!((host.action, host.rule), (Action::Allow, Some(0)));
        let from_pod = evaluate_egress(&p, &https(Sender::Pod(pod), "198.18.48.2", CtState::New));
        assert_eq!(
            (from_pod.action, from_pod.reason),
            (Action::Deny, Reason::DefaultDeny)
        );
        let reply = evaluate_egress(
            &p,
            &https(Sender::Pod(pod), "198.19.0.9", CtState::Established),
        );
        assert_eq!(reply.reason, Reason::Established);
        // Not a reply of anything: judged, not waved through.
        let stray = evaluate_egress(&p, &https(Sender::Host, "198.19.0.9", CtState::Invalid));
        assert_eq!(stray.reason, Reason::DefaultDeny);
    }

    #[test]
    fn metadata_addresses_parse() {
        let nets = metadata_nets();
        assert_eq!(nets.len(), 4);
        let set = AddrSet::from_nets(&nets);
        for a in [
            "169.254.169.254",
            "fd00:ec2::254",
            "100.100.100.200",
            "169.254.0.23",
        ] {
            assert!(set.contains(a.parse().unwrap()), "{a}");
        }
    }
}
