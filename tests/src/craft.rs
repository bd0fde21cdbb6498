//! Hand-made packets for the adversarial suite: any TCP flags, IPv4 options and fragments,
//! IPv6 extension headers and fragments, VLAN stacks, tunnels. Checksums are right (a packet
//! the kernel would discard for its checksum proves nothing about the firewall), and every
//! packet carries a marker in its payload that the delivery observer looks for.

use std::net::IpAddr;

use crate::packet::{checksum, pseudo_header};
use crate::topology::{FABRIC_MAC, NODE_MAC};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;
pub const URG: u8 = 0x20;
pub const ECE: u8 = 0x40;
pub const CWR: u8 = 0x80;

/// The payload that identifies a packet to the observer: 8 bytes no other traffic carries.
pub fn marker(id: u32) -> Vec<u8> {
    let mut m = b"nwadv".to_vec();
    m.extend(&id.to_be_bytes()[1..]);
    m
}

/// A TCP segment (header and payload) with its checksum for `src` -> `dst`.
#[allow(clippy::too_many_arguments)]
pub fn tcp(
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    flags: u8,
    seq: u32,
    ack: u32,
    payload: &[u8],
) -> Vec<u8> {
    let mut h = vec![0u8; 20];
    h[0..2].copy_from_slice(&sport.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h[4..8].copy_from_slice(&seq.to_be_bytes());
    h[8..12].copy_from_slice(&ack.to_be_bytes());
    h[12] = 5 << 4;
    h[13] = flags;
    h[14..16].copy_from_slice(&64240u16.to_be_bytes());
    h.extend_from_slice(payload);
    let c = checksum(&[&pseudo_header(src, dst, 6, h.len()), &h]);
    h[16..18].copy_from_slice(&c.to_be_bytes());
    h
}

pub fn udp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 8];
    h[0..2].copy_from_slice(&sport.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    h.extend_from_slice(payload);
    let c = checksum(&[&pseudo_header(src, dst, 17, h.len()), &h]);
    let c = if c == 0 { 0xffff } else { c };
    h[6..8].copy_from_slice(&c.to_be_bytes());
    h
}

/// ICMP (IPv4) or ICMPv6 (IPv6, by the addresses) with 4 bytes after type, code and checksum
/// (identifier and sequence for echoes, unused for errors) and `payload`.
pub fn icmp(
    src: IpAddr,
    dst: IpAddr,
    icmp_type: u8,
    code: u8,
    rest: [u8; 4],
    payload: &[u8],
) -> Vec<u8> {
    let mut h = vec![icmp_type, code, 0, 0];
    h.extend_from_slice(&rest);
    h.extend_from_slice(payload);
    let c = if src.is_ipv6() {
        checksum(&[&pseudo_header(src, dst, 58, h.len()), &h])
    } else {
        checksum(&[&h])
    };
    h[2..4].copy_from_slice(&c.to_be_bytes());
    h
}

/// An IPv4 packet: `frag` is the flags/fragment-offset field (offset in 8-byte units, 0x2000
/// = more fragments), `options` a multiple of 4 bytes.
pub fn ipv4(
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    id: u16,
    frag: u16,
    options: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let (IpAddr::V4(s), IpAddr::V4(d)) = (src, dst) else {
        panic!("ipv4 needs IPv4 addresses");
    };
    assert_eq!(options.len() % 4, 0, "IPv4 options are whole words");
    let ihl = 5 + options.len() / 4;
    let mut h = vec![0u8; 20];
    h[0] = 0x40 | ihl as u8;
    h[2..4].copy_from_slice(&((ihl * 4 + payload.len()) as u16).to_be_bytes());
    h[4..6].copy_from_slice(&id.to_be_bytes());
    h[6..8].copy_from_slice(&frag.to_be_bytes());
    h[8] = 64;
    h[9] = proto;
    h[12..16].copy_from_slice(&s.octets());
    h[16..20].copy_from_slice(&d.octets());
    h.extend_from_slice(options);
    let c = checksum(&[&h]);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// An IPv6 packet whose first next-header is `next`, and `rest` (extension headers, then the
/// upper layer) after the fixed header.
pub fn ipv6(src: IpAddr, dst: IpAddr, next: u8, rest: &[u8]) -> Vec<u8> {
    let (IpAddr::V6(s), IpAddr::V6(d)) = (src, dst) else {
        panic!("ipv6 needs IPv6 addresses");
    };
    let mut h = vec![0x60, 0, 0, 0];
    h.extend((rest.len() as u16).to_be_bytes());
    h.push(next);
    h.push(64);
    h.extend(s.octets());
    h.extend(d.octets());
    h.extend_from_slice(rest);
    h
}

/// An IPv6 options header (hop-by-hop or destination options) of 8 bytes, padded with PadN.
pub fn ext_options(next: u8) -> Vec<u8> {
    vec![next, 0, 1, 4, 0, 0, 0, 0]
}

/// A routing header of an experimental type with no segments left, which every node
/// processes by skipping it (RFC 8200 4.4).
pub fn ext_routing(next: u8) -> Vec<u8> {
    let mut h = vec![next, 2, 253, 0];
    h.extend([0u8; 20]);
    h
}

/// An IPv6 fragment header: `offset` in 8-byte units.
pub fn ext_fragment(next: u8, offset: u16, more: bool, id: u32) -> Vec<u8> {
    let mut h = vec![next, 0];
    h.extend(((offset << 3) | more as u16).to_be_bytes());
    h.extend(id.to_be_bytes());
    h
}

/// An Ethernet frame from the fabric to the node, under VLAN tags `(tpid, tci)`, outermost
/// first.
pub fn eth(tags: &[(u16, u16)], ethertype: u16, l3: &[u8]) -> Vec<u8> {
    let mut f = NODE_MAC.to_vec();
    f.extend(FABRIC_MAC);
    for (tpid, tci) in tags {
        f.extend(tpid.to_be_bytes());
        f.extend(tci.to_be_bytes());
    }
    f.extend(ethertype.to_be_bytes());
    f.extend_from_slice(l3);
    f
}

/// An IP packet in an untagged frame (the family by its first byte).
pub fn frame(ip: &[u8]) -> Vec<u8> {
    eth(
        &[],
        if ip[0] >> 4 == 6 {
            ETH_P_IPV6
        } else {
            ETH_P_IP
        },
        ip,
    )
}

/// The IPv4 fragments of `payload` (an upper-layer packet of protocol `proto`): `cuts` are
/// the offsets (multiples of 8) where a fragment starts, each fragment running to the next
/// cut.
pub fn ipv4_fragments(
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    id: u16,
    payload: &[u8],
    cuts: &[usize],
) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (i, &start) in cuts.iter().enumerate() {
        assert_eq!(start % 8, 0);
        let end = cuts.get(i + 1).copied().unwrap_or(payload.len());
        let more = if i + 1 < cuts.len() { 0x2000 } else { 0 };
        out.push(ipv4(
            src,
            dst,
            proto,
            id,
            more | (start / 8) as u16,
            &[],
            &payload[start..end],
        ));
    }
    out
}

/// The IPv6 fragments of `payload` (an upper-layer packet with next header `next`), cut as in
/// [`ipv4_fragments`].
pub fn ipv6_fragments(
    src: IpAddr,
    dst: IpAddr,
    next: u8,
    id: u32,
    payload: &[u8],
    cuts: &[usize],
) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (i, &start) in cuts.iter().enumerate() {
        assert_eq!(start % 8, 0);
        let end = cuts.get(i + 1).copied().unwrap_or(payload.len());
        let mut rest = ext_fragment(next, (start / 8) as u16, i + 1 < cuts.len(), id);
        rest.extend_from_slice(&payload[start..end]);
        out.push(ipv6(src, dst, 44, &rest));
    }
    out
}
