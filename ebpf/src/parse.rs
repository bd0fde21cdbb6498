//! Header parsing shared by the XDP (ingress) and TC (egress) programs.
//!
//! Every read is bounds-checked against the end of the frame, and every variable offset is
//! bounded first, because that is what the verifier needs to accept packet access. Lengths
//! that only take part in comparisons come from `data_end - data` (a scalar for a privileged
//! loader); offsets into the packet never do.

use core::mem::size_of;

use nodewall_common::xdp::{FAMILY_IPV4, FAMILY_IPV6, PROTO_ICMP, PROTO_ICMPV6, PROTO_OTHER, PROTO_TCP, PROTO_UDP};

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;

pub use nodewall_common::ct::{
    pkt, Pkt, IPPROTO_DCCP, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_UDPLITE,
};
const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_DSTOPTS: u8 = 60;

/// VLAN tags read before giving up. The kernel strips priority tags (VID 0) at any depth and
/// delivers what is under them to IP, so a frame still tagged after these is `invalid`
/// (dropped), never passed unparsed.
pub const MAX_VLAN_TAGS: usize = 8;
/// IPv6 extension headers walked before giving up (and calling the packet invalid).
const MAX_EXT_HEADERS: usize = 8;
/// No header is looked for beyond this offset; it bounds offsets for the verifier.
const MAX_L4_OFFSET: usize = 1024;
const L4_OFFSET_MASK: usize = 2047;
const _: () = assert!(MAX_L4_OFFSET <= L4_OFFSET_MASK && (L4_OFFSET_MASK + 1).is_power_of_two());

/// The packet bytes `[start, end)` as the program sees them, in a frame of `wire` bytes.
///
/// At XDP the two ends are the whole frame. At TC only the linear part of the skb is
/// readable (the headers, pulled in), while the rest of a large or segmentation-offloaded
/// packet sits in pages: its IP length is checked against `wire`, the skb's length, or every
/// data segment the node sends would look truncated.
#[derive(Clone, Copy)]
pub struct Frame {
    pub start: usize,
    pub end: usize,
    pub wire: usize,
}

impl Frame {
    /// A frame whose bytes are all readable (XDP).
    #[inline(always)]
    pub fn whole(start: usize, end: usize) -> Frame {
        Frame { start, end, wire: end - start }
    }

    #[inline(always)]
    pub fn load<T: Copy>(&self, off: usize) -> Option<T> {
        let p = self.start + off;
        if p + size_of::<T>() > self.end {
            return None;
        }
        // SAFETY: [p, p + size_of::<T>()) lies inside the packet, checked just above.
        Some(unsafe { core::ptr::read_unaligned(p as *const T) })
    }

    #[inline(always)]
    pub fn u16be(&self, off: usize) -> Option<u16> {
        self.load::<[u8; 2]>(off).map(u16::from_be_bytes)
    }

    /// Bytes from `off` to the end of the frame on the wire (0 when `off` is past it).
    #[inline(always)]
    pub fn avail(&self, off: usize) -> usize {
        self.wire.saturating_sub(off)
    }
}

/// An IP packet whose network header is valid.
pub struct Ip {
    pub family: u32,
    pub src: Addr,
    pub dst: Addr,
    /// Upper-layer protocol, after IPv6 extension headers.
    pub proto: u8,
    /// Offset of the upper-layer header in the frame.
    pub l4: usize,
    /// Bytes from `l4` to the end of the IP packet (of this fragment).
    pub l4_len: usize,
    /// Length of the IP packet: what the counters add up, like nft's.
    pub len: u32,
}

pub enum Parsed {
    /// ARP, LLDP and every other frame the kernel never hands to IP.
    NotIp,
    /// A fragment other than the first: it cannot be reassembled without the first one,
    /// which carried the ports and was classified (or dropped).
    LaterFragment,
    Invalid {
        family: u32,
        len: u32,
    },
    Ip(Ip),
}

/// Finds and validates the IP header after the Ethernet header and up to [`MAX_VLAN_TAGS`]
/// 802.1Q / 802.1ad tags.
#[inline(always)]
pub fn parse_ip(f: &Frame) -> Parsed {
    let Some(mut ethertype) = f.u16be(12) else {
        return Parsed::NotIp;
    };
    let mut l3 = ETH_HLEN;
    for _ in 0..MAX_VLAN_TAGS {
        if !is_vlan(ethertype) {
            break;
        }
        match f.u16be(l3 + 2) {
            Some(t) => ethertype = t,
            // A truncated tag: nothing the kernel could deliver to IP.
            None => return Parsed::NotIp,
        }
        l3 += 4;
    }
    if is_vlan(ethertype) {
        // Deeper than we read: the IP family is unknown, counted as IPv4.
        return Parsed::Invalid { family: FAMILY_IPV4, len: f.avail(l3) as u32 };
    }
    match ethertype {
        ETH_P_IP => parse_v4(f, l3),
        ETH_P_IPV6 => parse_v6(f, l3),
        _ => Parsed::NotIp,
    }
}

#[inline(always)]
fn is_vlan(ethertype: u16) -> bool {
    ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD
}

#[inline(always)]
fn parse_v4(f: &Frame, l3: usize) -> Parsed {
    let avail = f.avail(l3);
    let invalid = Parsed::Invalid { family: FAMILY_IPV4, len: avail as u32 };
    let Some(hdr) = f.load::<Ipv4Header>(l3) else {
        return invalid;
    };
    let ihl = hdr.ihl();
    let total = u16::from_be_bytes(hdr.total) as usize;
    if hdr.version() != 4 || ihl < 20 || total < ihl || total > avail {
        return invalid;
    }
    if hdr.is_later_fragment() {
        return Parsed::LaterFragment;
    }
    Parsed::Ip(Ip {
        family: FAMILY_IPV4,
        src: Addr::v4(hdr.src),
        dst: Addr::v4(hdr.dst),
        proto: hdr.proto,
        l4: l3 + ihl,
        l4_len: total - ihl,
        len: total as u32,
    })
}

/// The fixed IPv4 header. The addresses are words: read from a `[u8; 20]`, LLVM assembled
/// each from four byte loads, shifts and ORs.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct Ipv4Header {
    version_ihl: u8,
    _tos: u8,
    total: [u8; 2],
    _id: [u8; 2],
    frag: [u8; 2],
    _ttl: u8,
    pub proto: u8,
    _check: [u8; 2],
    pub src: u32,
    pub dst: u32,
}

impl Ipv4Header {
    #[inline(always)]
    pub fn version(&self) -> u8 {
        self.version_ihl >> 4
    }

    /// Header length in bytes.
    #[inline(always)]
    pub fn ihl(&self) -> usize {
        ((self.version_ihl & 0x0f) as usize) * 4
    }

    /// A fragment other than the first (non-zero offset).
    #[inline(always)]
    pub fn is_later_fragment(&self) -> bool {
        u16::from_be_bytes(self.frag) & 0x1fff != 0
    }
}

/// An address, IPv4 in the first 4 bytes and the rest zero. 8-aligned: zeroing the 12
/// trailing bytes of a plain `[u8; 16]` compiles to a call of a byte-by-byte `memset`, where an
/// aligned one takes two 8-byte stores.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub struct Addr(pub [u8; 16]);

impl Addr {
    /// An IPv4 address as read from the header, in network order.
    #[inline(always)]
    pub fn v4(a: u32) -> Self {
        // SAFETY: same size and alignment; every bit pattern is a valid `[u8; 16]`. On a
        // little-endian target the address's bytes come first.
        unsafe { core::mem::transmute::<[u64; 2], Addr>([a as u64, 0]) }
    }
}

#[inline(always)]
fn parse_v6(f: &Frame, l3: usize) -> Parsed {
    let avail = f.avail(l3);
    let invalid = Parsed::Invalid { family: FAMILY_IPV6, len: avail as u32 };
    let Some(hdr) = f.load::<[u8; 8]>(l3) else {
        return invalid;
    };
    let total = 40 + u16::from_be_bytes([hdr[4], hdr[5]]) as usize;
    if hdr[0] >> 4 != 6 || total > avail {
        return invalid;
    }
    let (Some(src), Some(dst)) = (f.load::<[u8; 16]>(l3 + 8), f.load::<[u8; 16]>(l3 + 24)) else {
        return invalid;
    };
    let end = l3 + total;
    let mut nh = hdr[6];
    let mut off = l3 + 40;
    let mut walked = 0;
    while walked < MAX_EXT_HEADERS {
        if !matches!(nh, IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_FRAGMENT | IPPROTO_AH | IPPROTO_DSTOPTS) {
            break;
        }
        // Every extension header is at least 8 bytes, and must lie inside the payload.
        if off + 8 > end {
            return invalid;
        }
        let Some(ext) = f.load::<[u8; 4]>(off) else {
            return invalid;
        };
        let len = match nh {
            IPPROTO_FRAGMENT => {
                if u16::from_be_bytes([ext[2], ext[3]]) >> 3 != 0 {
                    return Parsed::LaterFragment;
                }
                8
            }
            IPPROTO_AH => (ext[1] as usize + 2) * 4,
            _ => (ext[1] as usize + 1) * 8,
        };
        nh = ext[0];
        off += len;
        if off > MAX_L4_OFFSET || off > end {
            return invalid;
        }
        walked += 1;
    }
    if walked == MAX_EXT_HEADERS
        && matches!(nh, IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_FRAGMENT | IPPROTO_AH | IPPROTO_DSTOPTS)
    {
        return invalid;
    }
    Parsed::Ip(Ip {
        family: FAMILY_IPV6,
        src: Addr(src),
        dst: Addr(dst),
        proto: nh,
        l4: off,
        l4_len: end - off,
        len: total as u32,
    })
}

/// The upper-layer header fields the policy and the flow table look at.
///
/// `repr(C, u8)` and the zeroed payload of `Other`: with an undefined payload LLVM may fill
/// those bits from any register, a stack pointer included, and the verifier rejects the
/// masking that follows.
#[derive(Clone, Copy)]
#[repr(C, u8)]
pub enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    /// ICMP in IPv4 or ICMPv6 in IPv6; `id` is only meaningful for queries and their answers.
    Icmp {
        icmp_type: u8,
        id: u16,
    },
    /// Any other protocol; the ports of SCTP, DCCP and UDP-Lite (which conntrack keys flows
    /// by), 0 for the rest.
    Other {
        sport: u16,
        dport: u16,
    },
}

impl Ip {
    /// Whether `proto` is this family's ICMP.
    #[inline(always)]
    pub fn is_icmp(&self) -> bool {
        (self.family == FAMILY_IPV4 && self.proto == IPPROTO_ICMP)
            || (self.family == FAMILY_IPV6 && self.proto == IPPROTO_ICMPV6)
    }

    /// Reads the upper-layer header; `None` when it is truncated or malformed (conntrack's
    /// `invalid`), including a first fragment too short to hold it.
    #[inline(always)]
    pub fn l4(&self, f: &Frame) -> Option<L4> {
        match self.proto {
            IPPROTO_TCP => {
                if self.l4_len < 20 {
                    return None;
                }
                let h = f.load::<[u8; 20]>(self.l4)?;
                let doff = ((h[12] >> 4) as usize) * 4;
                if doff < 20 || doff > self.l4_len {
                    return None;
                }
                Some(L4::Tcp {
                    sport: u16::from_be_bytes([h[0], h[1]]),
                    dport: u16::from_be_bytes([h[2], h[3]]),
                    flags: h[13],
                })
            }
            IPPROTO_UDP => {
                if self.l4_len < 8 {
                    return None;
                }
                let h = f.load::<[u8; 8]>(self.l4)?;
                Some(L4::Udp { sport: u16::from_be_bytes([h[0], h[1]]), dport: u16::from_be_bytes([h[2], h[3]]) })
            }
            _ if self.is_icmp() => {
                if self.l4_len < 8 {
                    return None;
                }
                let h = f.load::<[u8; 8]>(self.l4)?;
                Some(L4::Icmp { icmp_type: h[0], id: u16::from_be_bytes([h[4], h[5]]) })
            }
            IPPROTO_SCTP | IPPROTO_DCCP | IPPROTO_UDPLITE => {
                // Too short to hold the ports: conntrack cannot track it either.
                if self.l4_len < 4 {
                    return None;
                }
                let h = f.load::<[u8; 4]>(self.l4)?;
                Some(L4::Other { sport: u16::from_be_bytes([h[0], h[1]]), dport: u16::from_be_bytes([h[2], h[3]]) })
            }
            _ => Some(L4::Other { sport: 0, dport: 0 }),
        }
    }
}

/// Parses a frame into the plain [`Pkt`] the rest of the program reads. Built in one
/// literal, the addresses as words: a zeroed `Pkt` or a 16-byte array expression becomes a
/// `memset` call, which the BPF backend makes a byte-by-byte loop.
#[inline(always)]
pub fn parse_pkt(f: &Frame) -> Pkt {
    let (kind, family, len) = match parse_ip(f) {
        Parsed::Ip(ip) => return ip_pkt(f, &ip),
        Parsed::NotIp => (pkt::NOT_IP, FAMILY_IPV4, 0),
        Parsed::LaterFragment => (pkt::LATER_FRAGMENT, FAMILY_IPV4, 0),
        Parsed::Invalid { family, len } => (pkt::INVALID, family, len),
    };
    let zero = Addr::v4(0).0;
    Pkt {
        src: zero,
        dst: zero,
        len,
        l4: 0,
        l4_len: 0,
        family,
        kind,
        proto: 0,
        flags: 0,
        _pad: 0,
        sport: 0,
        dport: 0,
    }
}

#[inline(always)]
fn ip_pkt(f: &Frame, ip: &Ip) -> Pkt {
    let (kind, sport, dport, flags) = match ip.l4(f) {
        None => (pkt::INVALID, 0, 0, 0),
        Some(L4::Tcp { sport, dport, flags }) => (pkt::TCP, sport, dport, flags),
        Some(L4::Udp { sport, dport }) => (pkt::UDP, sport, dport, 0),
        Some(L4::Icmp { icmp_type, id }) => (pkt::ICMP, id, 0, icmp_type),
        Some(L4::Other { sport, dport }) => (pkt::OTHER, sport, dport, 0),
    };
    Pkt {
        src: ip.src.0,
        dst: ip.dst.0,
        len: ip.len,
        l4: ip.l4 as u32,
        l4_len: ip.l4_len as u32,
        family: ip.family,
        kind,
        proto: ip.proto,
        flags,
        _pad: 0,
        sport,
        dport,
    }
}

/// [`Pkt::l4`], bounded for the verifier (which reads a `Pkt` back from map memory as unknown
/// values, see `forget`): the parser never puts the header past [`MAX_L4_OFFSET`], so the mask
/// changes nothing.
#[inline(always)]
pub fn l4_offset(p: &Pkt) -> usize {
    p.l4 as usize & L4_OFFSET_MASK
}

/// The `protocol` label of counters.
#[inline(always)]
pub fn proto_label(family: u32, proto: u8) -> u32 {
    match proto {
        IPPROTO_TCP => PROTO_TCP,
        IPPROTO_UDP => PROTO_UDP,
        IPPROTO_ICMP if family == FAMILY_IPV4 => PROTO_ICMP,
        IPPROTO_ICMPV6 if family == FAMILY_IPV6 => PROTO_ICMPV6,
        _ => PROTO_OTHER,
    }
}
