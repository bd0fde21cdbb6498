//! [`RuleDef`] -> libnftnl rule: the same expressions `nft -f` generates for the rendered text
//! (checked by comparing `nft list` of both in the integration tests).

use nftnl::nftnl_sys as sys;

use super::super::plan::{Family, Match, RuleDef, Verdict};
use super::udata::udata_comment;
use super::wrap::{Expr, Rule, NFT_OBJECT_COUNTER};

const REG1: u32 = libc::NFT_REG_1 as u32;
const REG_VERDICT: u32 = libc::NFT_REG_VERDICT as u32;
const IPV4_SADDR: (u32, u32) = (12, 4);
const IPV6_SADDR: (u32, u32) = (8, 16);
const IPV4_DADDR: (u32, u32) = (16, 4);
const IPV6_DADDR: (u32, u32) = (24, 16);
/// `limit` counts packets (not bytes); its unit is seconds.
const NFT_LIMIT_PKTS: u32 = 0;

pub fn build_rule(chain: &str, def: &RuleDef) -> Rule {
    let rule = Rule::ours(chain);
    let mut family = None;
    for m in &def.matches {
        for e in match_exprs(m, &mut family) {
            rule.push(e);
        }
    }
    if let Some(l) = &def.log {
        rule.push(
            Expr::new("log")
                .str(sys::NFTNL_EXPR_LOG_PREFIX, &l.prefix)
                .u16(sys::NFTNL_EXPR_LOG_GROUP, l.group),
        );
    }
    if let Some(c) = &def.counter {
        rule.push(
            Expr::new("objref")
                .u32(sys::NFTNL_EXPR_OBJREF_IMM_TYPE, NFT_OBJECT_COUNTER)
                .str(sys::NFTNL_EXPR_OBJREF_IMM_NAME, c),
        );
    }
    if let Some(v) = &def.verdict {
        rule.push(verdict(v));
    }
    if let Some(c) = &def.comment {
        rule.set_userdata(&udata_comment(c));
    }
    rule
}

/// The expressions of `m`. `family` is the family an earlier match of the rule established:
/// like nft, a source match adds its `meta nfproto` dependency only when none did.
fn match_exprs(m: &Match, family: &mut Option<Family>) -> Vec<Expr> {
    match m {
        Match::IifnameIn(set) => vec![meta(libc::NFT_META_IIFNAME), lookup(set)],
        // The name and its NUL: a whole-name compare (nft compares all IFNAMSIZ bytes; the
        // bytes after the NUL are zero in the register either way).
        Match::Iifname(name) => {
            let mut bytes = name.as_bytes().to_vec();
            bytes.push(0);
            vec![meta(libc::NFT_META_IIFNAME), cmp(libc::NFT_CMP_EQ, &bytes)]
        }
        // As nft compiles `iifname "eth*"`: the name's first bytes, without the NUL.
        Match::IifnamePrefix(prefix) => vec![
            meta(libc::NFT_META_IIFNAME),
            cmp(libc::NFT_CMP_EQ, prefix.as_bytes()),
        ],
        Match::OifnameIn(set) => vec![meta(libc::NFT_META_OIFNAME), lookup(set)],
        Match::OifnamePrefix(prefix) => vec![
            meta(libc::NFT_META_OIFNAME),
            cmp(libc::NFT_CMP_EQ, prefix.as_bytes()),
        ],
        Match::DaddrIn(f, set) => {
            let (offset, len) = match f {
                Family::V4 => IPV4_DADDR,
                Family::V6 => IPV6_DADDR,
            };
            let mut v = dependency(*f, family);
            v.push(payload(
                libc::NFT_PAYLOAD_NETWORK_HEADER as u32,
                offset,
                len,
            ));
            v.push(lookup(set));
            v
        }
        Match::CtState(bit) => vec![
            Expr::new("ct")
                .u32(sys::NFTNL_EXPR_CT_KEY, libc::NFT_CT_STATE as u32)
                .u32(sys::NFTNL_EXPR_CT_DREG, REG1),
            Expr::new("bitwise")
                .u32(sys::NFTNL_EXPR_BITWISE_SREG, REG1)
                .u32(sys::NFTNL_EXPR_BITWISE_DREG, REG1)
                .u32(sys::NFTNL_EXPR_BITWISE_LEN, 4)
                .data(sys::NFTNL_EXPR_BITWISE_MASK, &bit.to_ne_bytes())
                .data(sys::NFTNL_EXPR_BITWISE_XOR, &0u32.to_ne_bytes()),
            cmp(libc::NFT_CMP_NEQ, &0u32.to_ne_bytes()),
        ],
        Match::NfProto(f) => {
            *family = Some(*f);
            nfproto(*f)
        }
        Match::L4Proto(p) => vec![meta(libc::NFT_META_L4PROTO), cmp(libc::NFT_CMP_EQ, &[*p])],
        Match::L4ProtoNot(p) => {
            vec![meta(libc::NFT_META_L4PROTO), cmp(libc::NFT_CMP_NEQ, &[*p])]
        }
        Match::SaddrIn(f, set) => {
            let (offset, len) = match f {
                Family::V4 => IPV4_SADDR,
                Family::V6 => IPV6_SADDR,
            };
            let mut v = dependency(*f, family);
            v.push(payload(
                libc::NFT_PAYLOAD_NETWORK_HEADER as u32,
                offset,
                len,
            ));
            v.push(lookup(set));
            v
        }
        Match::SaddrPrefixIn(f, len, set) => {
            let mut v = saddr_masked(*f, *len, family);
            v.push(lookup(set));
            v
        }
        Match::SaddrNet(f, len, net) => {
            let mut v = saddr_masked(*f, *len, family);
            let bytes = net.to_be_bytes();
            let bytes = match f {
                Family::V4 => &bytes[12..],
                Family::V6 => &bytes[..],
            };
            v.push(cmp(libc::NFT_CMP_EQ, bytes));
            v
        }
        Match::DportIn(p, set) => vec![
            meta(libc::NFT_META_L4PROTO),
            cmp(libc::NFT_CMP_EQ, &[*p]),
            payload(libc::NFT_PAYLOAD_TRANSPORT_HEADER as u32, 2, 2),
            lookup(set),
        ],
        Match::DportVmap(p, map) => vec![
            meta(libc::NFT_META_L4PROTO),
            cmp(libc::NFT_CMP_EQ, &[*p]),
            payload(libc::NFT_PAYLOAD_TRANSPORT_HEADER as u32, 2, 2),
            // The element's data goes to the verdict register: the map decides.
            lookup(map).u32(sys::NFTNL_EXPR_LOOKUP_DREG, REG_VERDICT),
        ],
        Match::Dport(p, a, b) => {
            let mut v = vec![
                meta(libc::NFT_META_L4PROTO),
                cmp(libc::NFT_CMP_EQ, &[*p]),
                payload(libc::NFT_PAYLOAD_TRANSPORT_HEADER as u32, 2, 2),
            ];
            v.push(if a == b {
                cmp(libc::NFT_CMP_EQ, &a.to_be_bytes())
            } else {
                Expr::new("range")
                    .u32(sys::NFTNL_EXPR_RANGE_SREG, REG1)
                    .u32(sys::NFTNL_EXPR_RANGE_OP, libc::NFT_RANGE_EQ as u32)
                    .data(sys::NFTNL_EXPR_RANGE_FROM_DATA, &a.to_be_bytes())
                    .data(sys::NFTNL_EXPR_RANGE_TO_DATA, &b.to_be_bytes())
            });
            v
        }
        Match::IcmpTypeIn(f, set) => {
            let mut v = dependency(*f, family);
            v.push(meta(libc::NFT_META_L4PROTO));
            v.push(cmp(libc::NFT_CMP_EQ, &[f.icmp()]));
            v.push(payload(libc::NFT_PAYLOAD_TRANSPORT_HEADER as u32, 0, 1));
            v.push(lookup(set));
            v
        }
        Match::UdpPorts(sport, dport) => {
            let mut ports = sport.to_be_bytes().to_vec();
            ports.extend(dport.to_be_bytes());
            vec![
                meta(libc::NFT_META_L4PROTO),
                cmp(libc::NFT_CMP_EQ, &[super::super::plan::IPPROTO_UDP]),
                payload(libc::NFT_PAYLOAD_TRANSPORT_HEADER as u32, 0, 4),
                cmp(libc::NFT_CMP_EQ, &ports),
            ]
        }
        Match::TcpNotBareSyn => vec![
            meta(libc::NFT_META_L4PROTO),
            cmp(libc::NFT_CMP_EQ, &[super::super::plan::IPPROTO_TCP]),
            payload(libc::NFT_PAYLOAD_TRANSPORT_HEADER as u32, 13, 1),
            Expr::new("bitwise")
                .u32(sys::NFTNL_EXPR_BITWISE_SREG, REG1)
                .u32(sys::NFTNL_EXPR_BITWISE_DREG, REG1)
                .u32(sys::NFTNL_EXPR_BITWISE_LEN, 1)
                .data(sys::NFTNL_EXPR_BITWISE_MASK, &[TCP_SYN | TCP_ACK])
                .data(sys::NFTNL_EXPR_BITWISE_XOR, &[0]),
            cmp(libc::NFT_CMP_NEQ, &[TCP_SYN]),
        ],
        Match::Limit { per_second, burst } => vec![Expr::new("limit")
            .u64(sys::NFTNL_EXPR_LIMIT_RATE, *per_second as u64)
            .u64(sys::NFTNL_EXPR_LIMIT_UNIT, 1)
            .u32(sys::NFTNL_EXPR_LIMIT_BURST, *burst)
            .u32(sys::NFTNL_EXPR_LIMIT_TYPE, NFT_LIMIT_PKTS)
            .u32(sys::NFTNL_EXPR_LIMIT_FLAGS, 0)],
    }
}

const TCP_SYN: u8 = nodewall_common::ct::tcp_flags::SYN;
const TCP_ACK: u8 = nodewall_common::ct::tcp_flags::ACK;

/// The netmask of a `len`-bit prefix in a `bits`-wide space, as 16 big-endian bytes
/// right-aligned (an IPv4 mask is the last 4).
/// The source address masked to its first `len` bits, in register 1 (no mask at full length).
fn saddr_masked(f: Family, len: u8, family: &mut Option<Family>) -> Vec<Expr> {
    let ((offset, size), mask) = match f {
        Family::V4 => (IPV4_SADDR, netmask(len, 32)[12..].to_vec()),
        Family::V6 => (IPV6_SADDR, netmask(len, 128).to_vec()),
    };
    let mut v = dependency(f, family);
    v.push(payload(
        libc::NFT_PAYLOAD_NETWORK_HEADER as u32,
        offset,
        size,
    ));
    if len as u32 != f.bits() {
        v.push(
            Expr::new("bitwise")
                .u32(sys::NFTNL_EXPR_BITWISE_SREG, REG1)
                .u32(sys::NFTNL_EXPR_BITWISE_DREG, REG1)
                .u32(sys::NFTNL_EXPR_BITWISE_LEN, size)
                .data(sys::NFTNL_EXPR_BITWISE_MASK, &mask)
                .data(sys::NFTNL_EXPR_BITWISE_XOR, &vec![0u8; size as usize]),
        );
    }
    v
}

fn netmask(len: u8, bits: u32) -> [u8; 16] {
    let ones = u128::MAX.checked_shl(bits - len as u32).unwrap_or(0);
    let mask = if bits == 128 {
        ones
    } else {
        ones & ((1u128 << bits) - 1)
    };
    mask.to_be_bytes()
}

/// `meta nfproto` for a match of family `f`, unless an earlier match of the rule tested it.
fn dependency(f: Family, family: &mut Option<Family>) -> Vec<Expr> {
    if *family == Some(f) {
        return Vec::new();
    }
    *family = Some(f);
    nfproto(f)
}

fn nfproto(f: Family) -> Vec<Expr> {
    let v = match f {
        Family::V4 => libc::NFPROTO_IPV4,
        Family::V6 => libc::NFPROTO_IPV6,
    } as u8;
    vec![meta(libc::NFT_META_NFPROTO), cmp(libc::NFT_CMP_EQ, &[v])]
}

fn meta(key: i32) -> Expr {
    Expr::new("meta")
        .u32(sys::NFTNL_EXPR_META_KEY, key as u32)
        .u32(sys::NFTNL_EXPR_META_DREG, REG1)
}

fn cmp(op: i32, data: &[u8]) -> Expr {
    Expr::new("cmp")
        .u32(sys::NFTNL_EXPR_CMP_SREG, REG1)
        .u32(sys::NFTNL_EXPR_CMP_OP, op as u32)
        .data(sys::NFTNL_EXPR_CMP_DATA, data)
}

fn payload(base: u32, offset: u32, len: u32) -> Expr {
    Expr::new("payload")
        .u32(sys::NFTNL_EXPR_PAYLOAD_DREG, REG1)
        .u32(sys::NFTNL_EXPR_PAYLOAD_BASE, base)
        .u32(sys::NFTNL_EXPR_PAYLOAD_OFFSET, offset)
        .u32(sys::NFTNL_EXPR_PAYLOAD_LEN, len)
}

fn lookup(set: &str) -> Expr {
    Expr::new("lookup")
        .u32(sys::NFTNL_EXPR_LOOKUP_SREG, REG1)
        .str(sys::NFTNL_EXPR_LOOKUP_SET, set)
        .u32(sys::NFTNL_EXPR_LOOKUP_FLAGS, 0)
}

fn verdict(v: &Verdict) -> Expr {
    let e = Expr::new("immediate").u32(sys::NFTNL_EXPR_IMM_DREG, REG_VERDICT);
    match v {
        Verdict::Accept => e.u32(sys::NFTNL_EXPR_IMM_VERDICT, libc::NF_ACCEPT as u32),
        Verdict::Drop => e.u32(sys::NFTNL_EXPR_IMM_VERDICT, libc::NF_DROP as u32),
        Verdict::Goto(chain) => e
            .u32(sys::NFTNL_EXPR_IMM_VERDICT, libc::NFT_GOTO as u32)
            .str(sys::NFTNL_EXPR_IMM_CHAIN, chain),
        Verdict::Jump(chain) => e
            .u32(sys::NFTNL_EXPR_IMM_VERDICT, libc::NFT_JUMP as u32)
            .str(sys::NFTNL_EXPR_IMM_CHAIN, chain),
    }
}
