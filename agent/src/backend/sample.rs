//! A dropped packet as a datapath reports it (see [`super::DropSamples`]).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Which way the packet was going: into the node (or a pod on it), or out of it (`egress:`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    #[default]
    Ingress,
    Egress,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

impl std::fmt::Display for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One dropped packet, as much of it as the sample carried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DropEvent {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// `tcp`, `udp`, `icmp`, `icmpv6` or the IP protocol number.
    pub protocol: String,
    /// Source and destination ports (tcp/udp), or ICMP type and code.
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub reason: String,
    pub rule: String,
    /// Input interface index, when known.
    pub ifindex: Option<u32>,
    pub direction: Direction,
    /// The datapath passed the packet (audit mode): it would have been dropped. Told by the
    /// datapath with each sample, so it is right across a change of mode.
    pub audit: bool,
}
