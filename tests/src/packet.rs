//! Hand-built Ethernet frames for probes: any source address, protocol and port, with correct
//! checksums (conntrack marks packets with bad checksums invalid) and a tag the observer reads
//! back (IPv4 identification, IPv6 flow label) that no policy looks at.

use std::net::IpAddr;

/// What a probe carries above IP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    /// A TCP segment with the given flags (0x02 = SYN).
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    /// ICMP for IPv4, ICMPv6 for IPv6.
    Icmp {
        icmp_type: u8,
        code: u8,
        id: u16,
    },
    /// Any other IP protocol, empty payload.
    Other {
        proto: u8,
    },
    /// A TCP SYN whose header claims a data offset of 16 bytes, below TCP's 20-byte minimum:
    /// malformed for conntrack (`invalid`) and for the XDP parser alike.
    TcpBadOffset {
        sport: u16,
        dport: u16,
    },
}

pub const TCP_SYN: u8 = 0x02;
pub const TCP_FIN: u8 = 0x01;

/// Builds an Ethernet frame from `src` to `dst` (same family).
pub fn frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: IpAddr,
    dst: IpAddr,
    l4: L4,
    tag: u32,
) -> Vec<u8> {
    let v6 = src.is_ipv6();
    let (proto, payload) = transport(src, dst, l4);
    let mut f = Vec::with_capacity(14 + 40 + payload.len());
    f.extend(dst_mac);
    f.extend(src_mac);
    f.extend(if v6 { [0x86, 0xdd] } else { [0x08, 0x00] });
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut h = [0u8; 20];
            h[0] = 0x45;
            h[2..4].copy_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
            h[4..6].copy_from_slice(&(tag as u16).to_be_bytes());
            h[8] = 64;
            h[9] = proto;
            h[12..16].copy_from_slice(&s.octets());
            h[16..20].copy_from_slice(&d.octets());
            let c = checksum(&[&h]);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            f.extend(h);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let flow = tag & 0x000f_ffff;
            f.extend((0x6000_0000u32 | flow).to_be_bytes());
            f.extend((payload.len() as u16).to_be_bytes());
            f.push(proto);
            f.push(64);
            f.extend(s.octets());
            f.extend(d.octets());
        }
        _ => panic!("mixed address families"),
    }
    f.extend(payload);
    f
}

/// The IP protocol number and the transport header (+ payload) with its checksum.
fn transport(src: IpAddr, dst: IpAddr, l4: L4) -> (u8, Vec<u8>) {
    let v6 = src.is_ipv6();
    let (proto, mut p, csum_at): (u8, Vec<u8>, Option<usize>) = match l4 {
        L4::Tcp {
            sport,
            dport,
            flags,
        } => (6, tcp_header(sport, dport, flags, 5), Some(16)),
        // A data offset of 4 words (16 bytes) in a 20-byte header.
        L4::TcpBadOffset { sport, dport } => (6, tcp_header(sport, dport, TCP_SYN, 4), Some(16)),
        L4::Udp { sport, dport } => {
            let mut h = vec![0u8; 8];
            h[0..2].copy_from_slice(&sport.to_be_bytes());
            h[2..4].copy_from_slice(&dport.to_be_bytes());
            h.extend(b"nodewall");
            let len = h.len() as u16;
            h[4..6].copy_from_slice(&len.to_be_bytes());
            (17, h, Some(6))
        }
        L4::Icmp {
            icmp_type,
            code,
            id,
        } => {
            let mut h = vec![icmp_type, code, 0, 0];
            h.extend(id.to_be_bytes());
            h.extend(1u16.to_be_bytes());
            h.extend(b"nodewall");
            (if v6 { 58 } else { 1 }, h, Some(2))
        }
        L4::Other { proto } => (proto, Vec::new(), None),
    };
    if let Some(at) = csum_at {
        // ICMPv4 has no pseudo-header; TCP, UDP and ICMPv6 do.
        let c = if proto == 1 {
            checksum(&[&p])
        } else {
            let pseudo = pseudo_header(src, dst, proto, p.len());
            checksum(&[&pseudo, &p])
        };
        // A computed UDP checksum of 0 is sent as 0xffff.
        let c = if proto == 17 && c == 0 { 0xffff } else { c };
        p[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }
    (proto, p)
}

/// A 20-byte TCP header (no options) whose data offset field says `offset` 32-bit words.
fn tcp_header(sport: u16, dport: u16, flags: u8, offset: u8) -> Vec<u8> {
    let mut h = vec![0u8; 20];
    h[0..2].copy_from_slice(&sport.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h[4..8].copy_from_slice(&0x1000_0000u32.to_be_bytes());
    h[12] = offset << 4;
    h[13] = flags;
    h[14..16].copy_from_slice(&64240u16.to_be_bytes());
    h
}

pub fn pseudo_header(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> Vec<u8> {
    let mut v = Vec::new();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            v.extend(s.octets());
            v.extend(d.octets());
            v.extend([0, proto]);
            v.extend((len as u16).to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            v.extend(s.octets());
            v.extend(d.octets());
            v.extend((len as u32).to_be_bytes());
            v.extend([0, 0, 0, proto]);
        }
        _ => panic!("mixed address families"),
    }
    v
}

/// The Internet checksum over the concatenation of `parts` (each of even length but the last).
pub fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let bytes: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
    for chunk in bytes.chunks(2) {
        let word = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            u16::from_be_bytes([chunk[0], 0])
        };
        sum += word as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_header_checksum_verifies() {
        let f = frame(
            [0; 6],
            [0; 6],
            "198.18.0.1".parse().unwrap(),
            "198.18.0.2".parse().unwrap(),
            L4::Udp { sport: 1, dport: 2 },
            7,
        );
        assert_eq!(checksum(&[&f[14..34]]), 0);
    }
}
