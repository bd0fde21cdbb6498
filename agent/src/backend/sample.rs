//! A dropped packet as a datapath reports it (see [`super::DropSamples`]).

use std::net::IpAddr;

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
    /// `inbound` or `egress`.
    pub direction: &'static str,
    pub reason: String,
    pub rule: String,
    /// Input interface index, when known.
    pub ifindex: Option<u32>,
}
