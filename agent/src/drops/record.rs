//! [`DropRecord`]: one dropped (or, in audit mode, would-be dropped) packet, with when, where
//! and why. Its JSON is the line format of `nodewall drops --json` and of the flow log; the
//! fields are documented in the README ("Flow log").

use std::net::IpAddr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::backend::{Direction, DropEvent};

/// What happened to the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Drop,
    /// Audit mode: the packet passed; enforcing the policy would have dropped it.
    WouldDrop,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Drop => "drop",
            Action::WouldDrop => "would-drop",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropRecord {
    /// When the agent read the sample (RFC 3339, UTC, microseconds): within milliseconds of
    /// the drop.
    pub time: String,
    /// `NODE_NAME` (the Kubernetes node), else the host name.
    pub node: String,
    /// `nft` or `xdp`.
    pub backend: String,
    pub direction: Direction,
    pub action: Action,
    /// `default-deny`, `rule` or `invalid`.
    pub reason: String,
    /// The deny rule that matched; empty unless `reason` is `rule`.
    pub rule: String,
    /// `ipv4` or `ipv6`.
    pub family: String,
    /// `tcp`, `udp`, `icmp`, `icmpv6`, or the IP protocol number.
    pub protocol: String,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// TCP and UDP only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sport: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dport: Option<u16>,
    /// ICMP and ICMPv6 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_code: Option<u8>,
    /// The interface the packet arrived on, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifindex: Option<u32>,
}

/// What the agent adds to every sample it reads.
#[derive(Clone, Debug)]
pub struct Stamp {
    pub node: String,
    pub backend: String,
}

impl Stamp {
    /// `NODE_NAME` (set from the Downward API in the DaemonSet, from `%H` in the systemd
    /// unit), else the kernel's host name.
    pub fn for_this_node(backend: &str) -> Self {
        let node = std::env::var("NODE_NAME")
            .ok()
            .filter(|n| !n.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|h| h.trim().to_string())
            })
            .unwrap_or_default();
        Self {
            node,
            backend: backend.to_string(),
        }
    }
}

impl DropRecord {
    /// The record of `event`, read at `at`; `interface` names its input interface.
    pub fn new(
        event: &DropEvent,
        at: SystemTime,
        stamp: &Stamp,
        interface: Option<String>,
    ) -> Self {
        let icmp = matches!(event.protocol.as_str(), "icmp" | "icmpv6");
        let (ports, types) = if icmp {
            ((None, None), (byte(event.sport), byte(event.dport)))
        } else {
            ((event.sport, event.dport), (None, None))
        };
        DropRecord {
            time: humantime::format_rfc3339_micros(at).to_string(),
            node: stamp.node.clone(),
            backend: stamp.backend.clone(),
            direction: event.direction,
            action: if event.audit {
                Action::WouldDrop
            } else {
                Action::Drop
            },
            reason: event.reason.clone(),
            rule: event.rule.clone(),
            family: if event.src.is_ipv4() { "ipv4" } else { "ipv6" }.to_string(),
            protocol: event.protocol.clone(),
            src: event.src,
            dst: event.dst,
            sport: ports.0,
            dport: ports.1,
            icmp_type: types.0,
            icmp_code: types.1,
            interface,
            ifindex: event.ifindex,
        }
    }

    /// The record as one line of JSON (no newline).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a record serialises")
    }
}

fn byte(v: Option<u16>) -> Option<u8> {
    v.and_then(|v| u8::try_from(v).ok())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn event(protocol: &str, audit: bool) -> DropEvent {
        DropEvent {
            src: "198.19.0.2".parse().unwrap(),
            dst: "198.18.16.2".parse().unwrap(),
            protocol: protocol.into(),
            sport: Some(40000),
            dport: Some(10250),
            reason: "rule".into(),
            rule: "deny-kubelet".into(),
            ifindex: Some(3),
            direction: Direction::Ingress,
            audit,
        }
    }

    #[test]
    fn the_json_line_is_the_documented_one() {
        let stamp = Stamp {
            node: "node-a".into(),
            backend: "xdp".into(),
        };
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_micros(1_700_000_000_123_456);
        let r = DropRecord::new(&event("tcp", false), at, &stamp, Some("eth0".into()));
        assert_eq!(
            r.to_json(),
            r#"{"time":"2023-11-14T22:13:20.123456Z","node":"node-a","backend":"xdp","direction":"ingress","action":"drop","reason":"rule","rule":"deny-kubelet","family":"ipv4","protocol":"tcp","src":"198.19.0.2","dst":"198.18.16.2","sport":40000,"dport":10250,"interface":"eth0","ifindex":3}"#
        );
        let back: DropRecord = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(back, r);

        let mut ping = event("icmp", true);
        (ping.sport, ping.dport) = (Some(8), Some(0));
        let r = DropRecord::new(&ping, at, &stamp, None);
        assert_eq!(r.action, Action::WouldDrop);
        assert_eq!((r.sport, r.dport), (None, None));
        assert_eq!((r.icmp_type, r.icmp_code), (Some(8), Some(0)));
        assert!(r.to_json().contains(r#""action":"would-drop""#));
    }
}
