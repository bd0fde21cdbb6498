//! Connection tracking of our own: the TC egress program records every flow the node sends
//! on, keyed as its replies will look; the XDP program looks replies (and ICMP errors quoting
//! our packets) up.
//!
//! Why not the kernel's conntrack through the `bpf_xdp_ct_lookup` kfunc: conntrack only
//! tracks a namespace once some netfilter rule asks for it, so with the XDP backend alone
//! the lookup would find nothing; the kfunc also needs `nf_conntrack` loaded, and cannot be
//! exercised with BPF_PROG_TEST_RUN without that whole setup. An LRU map of our own works on
//! any kernel with TCX/clsact, is testable packet by packet, and its cost per packet is one
//! hash lookup.

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    maps::{Array, LruHashMap},
};
use nodewall_common::xdp::{
    flow_mark_index, FlowKey, FAMILY_IPV4, FLOW_REFRESH_NS, FLOW_TIMEOUT_ICMP_NS, FLOW_TIMEOUT_OTHER_NS,
    FLOW_TIMEOUT_TCP_NS, FLOW_TIMEOUT_UDP_NS, PORT_PROTO_TCP, PORT_PROTO_UDP,
};

use crate::parse::{Addr, Frame, Ip, Ipv4Header, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, L4};

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;

#[inline(always)]
fn key(family: u32, proto: u8, remote: Addr, local: Addr, remote_port: u16, local_port: u16) -> FlowKey {
    FlowKey { remote: remote.0, local: local.0, remote_port, local_port, proto, family: family as u8, _pad: [0; 2] }
}

#[inline(always)]
fn is_echo_request(family: u32, icmp_type: u8) -> bool {
    icmp_type == if family == FAMILY_IPV4 { ICMP_ECHO_REQUEST } else { ICMPV6_ECHO_REQUEST }
}

#[inline(always)]
fn is_echo_reply(family: u32, icmp_type: u8) -> bool {
    icmp_type == if family == FAMILY_IPV4 { ICMP_ECHO_REPLY } else { ICMPV6_ECHO_REPLY }
}

/// The key under which the replies of an outbound packet will be found, if it opens or
/// continues something that has replies (ICMP other than echo requests does not).
#[inline(always)]
pub fn outbound_key(ip: &Ip, l4: L4) -> Option<FlowKey> {
    let (rport, lport) = match l4 {
        L4::Tcp { sport, dport } | L4::Udp { sport, dport } => (dport, sport),
        L4::Icmp { icmp_type, id } if is_echo_request(ip.family, icmp_type) => (id, 0),
        L4::Icmp { .. } => return None,
        L4::Other { .. } => (0, 0),
    };
    Some(key(ip.family, ip.proto, ip.dst, ip.src, rport, lport))
}

/// The key an inbound packet would be found under if it is return traffic.
#[inline(always)]
pub fn inbound_key(ip: &Ip, l4: L4) -> Option<FlowKey> {
    let (rport, lport) = match l4 {
        L4::Tcp { sport, dport } | L4::Udp { sport, dport } => (sport, dport),
        L4::Icmp { icmp_type, id } if is_echo_reply(ip.family, icmp_type) => (id, 0),
        L4::Icmp { .. } => return None,
        L4::Other { .. } => (0, 0),
    };
    Some(key(ip.family, ip.proto, ip.src, ip.dst, rport, lport))
}

/// The key of the flow an ICMP error is about: the error quotes the IP header and the first
/// 8 bytes of a packet the node sent, so the quoted packet is looked up as outbound.
/// Quoted IPv6 packets with extension headers, and quoted non-first fragments, are not matched.
#[inline(always)]
pub fn quoted_key(f: &Frame, ip: &Ip) -> Option<FlowKey> {
    let q = ip.l4 + 8;
    let (proto, src, dst, ql4) = if ip.family == FAMILY_IPV4 {
        let h = f.load::<Ipv4Header>(q)?;
        let ihl = h.ihl();
        if h.version() != 4 || ihl < 20 || h.is_later_fragment() {
            return None;
        }
        (h.proto, Addr::v4(h.src), Addr::v4(h.dst), q + ihl)
    } else {
        let h = f.load::<[u8; 8]>(q)?;
        if h[0] >> 4 != 6 {
            return None;
        }
        (h[6], Addr(f.load::<[u8; 16]>(q + 8)?), Addr(f.load::<[u8; 16]>(q + 24)?), q + 40)
    };
    let icmp = if ip.family == FAMILY_IPV4 { IPPROTO_ICMP } else { IPPROTO_ICMPV6 };
    // The ports as `outbound_key` would take them, computed directly: an `L4::Other` built
    // here (its payload undefined) leads LLVM to code the verifier rejects.
    let (rport, lport) = match proto {
        IPPROTO_TCP | IPPROTO_UDP => {
            let h = f.load::<[u8; 4]>(ql4)?;
            (u16::from_be_bytes([h[2], h[3]]), u16::from_be_bytes([h[0], h[1]]))
        }
        p if p == icmp => {
            let h = f.load::<[u8; 6]>(ql4)?;
            if !is_echo_request(ip.family, h[0]) {
                return None;
            }
            (u16::from_be_bytes([h[4], h[5]]), 0)
        }
        _ => (0, 0),
    };
    Some(key(ip.family, proto, dst, src, rport, lport))
}

/// The mark of a local TCP/UDP port; other protocols have none.
#[inline(always)]
fn mark_index(proto: u8, local_port: u16) -> Option<u32> {
    match proto {
        IPPROTO_TCP => Some(flow_mark_index(PORT_PROTO_TCP, local_port)),
        IPPROTO_UDP => Some(flow_mark_index(PORT_PROTO_UDP, local_port)),
        _ => None,
    }
}

/// Whether an inbound packet may be return traffic at all: false when its local (destination)
/// TCP/UDP port never sent anything, so the flow-table lookup could not hit. Other protocols
/// are always looked up.
#[inline(always)]
pub fn may_be_tracked(marks: &Array<u8>, l4: L4) -> bool {
    let i = match l4 {
        L4::Tcp { dport, .. } => flow_mark_index(PORT_PROTO_TCP, dport),
        L4::Udp { dport, .. } => flow_mark_index(PORT_PROTO_UDP, dport),
        _ => return true,
    };
    marks.get(i).is_some_and(|m| *m != 0)
}

/// Marks the local port of an outbound flow, written only when not set yet so that a busy
/// port's cache line stays shared between CPUs.
#[inline(always)]
pub fn mark(marks: &Array<u8>, k: &FlowKey) {
    if let Some(m) = mark_index(k.proto, k.local_port).and_then(|i| marks.get_ptr_mut(i)) {
        // SAFETY: a byte of an array map; concurrent writers all store the same value.
        unsafe {
            if *m == 0 {
                *m = 1;
            }
        }
    }
}

#[inline(always)]
fn timeout(proto: u8) -> u64 {
    match proto {
        IPPROTO_TCP => FLOW_TIMEOUT_TCP_NS,
        IPPROTO_UDP => FLOW_TIMEOUT_UDP_NS,
        IPPROTO_ICMP | IPPROTO_ICMPV6 => FLOW_TIMEOUT_ICMP_NS,
        _ => FLOW_TIMEOUT_OTHER_NS,
    }
}

#[inline(always)]
pub fn is_tracked(flows: &LruHashMap<FlowKey, u64>, k: &FlowKey) -> bool {
    // SAFETY: the value is a plain u64 copied out at once.
    match unsafe { flows.get(k) } {
        Some(seen) => {
            let now = unsafe { bpf_ktime_get_ns() };
            now.wrapping_sub(*seen) < timeout(k.proto)
        }
        None => false,
    }
}

/// Records (or refreshes, at most every [`FLOW_REFRESH_NS`]) an outbound flow.
#[inline(always)]
pub fn record(flows: &LruHashMap<FlowKey, u64>, k: &FlowKey) {
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: as above.
    if let Some(seen) = unsafe { flows.get(k) } {
        if now.wrapping_sub(*seen) < FLOW_REFRESH_NS {
            return;
        }
    }
    let _ = flows.insert(k, now, 0);
}
