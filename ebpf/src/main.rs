//! nodewall's datapath: an XDP program that enforces the policy on inbound packets, and a TC
//! egress program that records the node's own flows so their return traffic passes.
//!
//! Per-packet work does not depend on the size of the policy: a walk of the flat source
//! tables, one load per address byte until a class (source -> rules containing it;
//! the LPM tries instead when the policy did not fit them), one array lookup (protocol/port ->
//! rules matching it), and the lowest set bit of their intersection is the first matching
//! rule. The flow table (return traffic) is only hashed for ports the node has sent from.
#![no_std]
#![no_main]

mod flow;
mod parse;
mod sample;

use aya_ebpf::{
    bindings::{
        xdp_action::{XDP_DROP, XDP_PASS},
        BPF_F_MMAPABLE,
    },
    macros::{classifier, map, xdp},
    maps::{lpm_trie::Key, Array, LpmTrie, LruHashMap, PerCpuArray},
    programs::{TcContext, XdpContext},
};
use nodewall_common::xdp::*;

use crate::parse::{parse_ip, Frame, Ip, Parsed, L4};

#[map]
static NW_SWITCH: Array<Switch> = Array::with_max_entries(1, 0);
#[map]
static NW_CONFIG: Array<GenConfig> = Array::with_max_entries(GENERATIONS, 0);
#[map]
static NW_SRC4: LpmTrie<Src4Key, u32> = LpmTrie::with_max_entries(SRC_TRIE_ENTRIES, 0);
#[map]
static NW_SRC6: LpmTrie<Src6Key, u32> = LpmTrie::with_max_entries(SRC_TRIE_ENTRIES, 0);
#[map]
static NW_SOURCES: Array<SrcTables> = Array::with_max_entries(GENERATIONS, BPF_F_MMAPABLE);
#[map]
static NW_PORTS: Array<RuleBits> = Array::with_max_entries(PORT_TABLE_ENTRIES, 0);
#[map]
static NW_FLOWS: LruHashMap<FlowKey, u64> = LruHashMap::with_max_entries(FLOW_TABLE_ENTRIES, 0);
#[map]
static NW_FLOW_MARKS: Array<u8> = Array::with_max_entries(FLOW_MARK_ENTRIES, 0);
#[map]
static NW_RULE_STATS: PerCpuArray<Stat> = PerCpuArray::with_max_entries(MAX_SLOTS, 0);
#[map]
static NW_DROP_STATS: PerCpuArray<Stat> = PerCpuArray::with_max_entries(DROP_STATS_ENTRIES, 0);
#[map]
static NW_PASS_STATS: PerCpuArray<Stat> = PerCpuArray::with_max_entries(PASS_STATS_ENTRIES, 0);
/// Only the agent reads and writes it; it lives here so it is created and pinned with the rest.
#[map]
static NW_SLOT_NAMES: Array<SlotName> = Array::with_max_entries(MAX_SLOTS, 0);

const ND_FIRST: u8 = 133;
const ND_LAST: u8 = 137;
const DHCP_SERVER_PORT: u16 = 67;
const DHCP_CLIENT_PORT: u16 = 68;
/// TCX_NEXT / TC_ACT_UNSPEC: the egress program never decides, it only watches.
const TC_NEXT: i32 = -1;

enum Verdict {
    Pass(PassReason, u32),
    Rule { rule: RuleRef, family: u32, proto: u32, len: u32 },
    Drop { cause: u32, family: u32, proto: u32, len: u32 },
}

#[xdp]
pub fn nodewall_xdp(ctx: XdpContext) -> u32 {
    let f = Frame { start: ctx.data(), end: ctx.data_end() };
    let Some(sw) = NW_SWITCH.get(0) else {
        return XDP_PASS;
    };
    let gen = sw.active & 1;
    let Some(cfg) = NW_CONFIG.get(gen) else {
        return XDP_PASS;
    };
    let drop = if cfg.flags & flags::AUDIT != 0 { XDP_PASS } else { XDP_DROP };
    let (cause, family, proto, len) = match decide(&f, gen, cfg) {
        Verdict::Pass(reason, len) => {
            bump(&NW_PASS_STATS, reason as u32, len);
            return XDP_PASS;
        }
        Verdict::Rule { rule, family, proto, len } => {
            bump(&NW_RULE_STATS, rule.slot as u32, len);
            if rule.action == ACTION_ALLOW {
                return XDP_PASS;
            }
            (DROP_CAUSE_RULE_BASE + rule.slot as u32, family, proto, len)
        }
        Verdict::Drop { cause, family, proto, len } => (cause, family, proto, len),
    };
    bump(&NW_DROP_STATS, drop_index(cause, family, proto), len);
    sample::record(&ctx, &f, cause);
    drop
}

/// The evaluation order of `nodewall::policy::evaluate`, step by step.
#[inline(always)]
fn decide(f: &Frame, gen: u32, cfg: &GenConfig) -> Verdict {
    let ip = match parse_ip(f) {
        Parsed::NotIp | Parsed::LaterFragment => return Verdict::Pass(PassReason::Unfiltered, f.avail(0) as u32),
        Parsed::Invalid { family, len } => {
            return Verdict::Drop { cause: DROP_CAUSE_INVALID, family, proto: PROTO_OTHER, len };
        }
        Parsed::Ip(ip) => ip,
    };
    let (family, proto, len) = (ip.family, ip.proto_label(), ip.len);
    let Some(l4) = ip.l4(f) else {
        return Verdict::Drop { cause: DROP_CAUSE_INVALID, family, proto, len };
    };
    let flags = cfg.flags;
    if let L4::Icmp { icmp_type, .. } = l4 {
        if is_icmp_error(family, icmp_type) {
            // conntrack's `related`: an error quoting a packet of one of our flows.
            if flags & flags::ICMP_ERRORS != 0 {
                if let Some(k) = flow::quoted_key(f, &ip) {
                    if flow::is_tracked(&NW_FLOWS, &k) {
                        return Verdict::Pass(PassReason::IcmpError, len);
                    }
                }
            }
        } else if flags & flags::ESTABLISHED != 0 && established(&ip, l4) {
            return Verdict::Pass(PassReason::Established, len);
        }
        if family == FAMILY_IPV6 && flags & flags::NEIGHBOUR_DISCOVERY != 0 && (ND_FIRST..=ND_LAST).contains(&icmp_type)
        {
            return Verdict::Pass(PassReason::NeighbourDiscovery, len);
        }
    } else if flags & flags::ESTABLISHED != 0 && established(&ip, l4) {
        return Verdict::Pass(PassReason::Established, len);
    }
    if let L4::Udp { sport: DHCP_SERVER_PORT, dport: DHCP_CLIENT_PORT } = l4 {
        if flags & flags::DHCP_CLIENT != 0 {
            return Verdict::Pass(PassReason::DhcpClient, len);
        }
    }
    let by_l4 = match l4 {
        L4::Tcp { dport, .. } => NW_PORTS.get(port_index(gen, PORT_PROTO_TCP, dport)),
        L4::Udp { dport, .. } => NW_PORTS.get(port_index(gen, PORT_PROTO_UDP, dport)),
        L4::Icmp { .. } if family == FAMILY_IPV4 => Some(&cfg.icmp4),
        L4::Icmp { .. } => Some(&cfg.icmp6),
        L4::Other { .. } => Some(&cfg.other),
    };
    let Some(tables) = NW_SOURCES.get(gen) else {
        return Verdict::Drop { cause: DROP_CAUSE_DEFAULT, family, proto, len };
    };
    let class = if flags & flags::FLAT_SOURCES != 0 { flat_source_class(&ip, tables) } else { source_class(&ip, gen) };
    let by_src = class.map(|c| &tables.classes[(c & (SRC_CLASSES_PER_GEN - 1)) as usize]);
    if let (Some(a), Some(b)) = (by_src, by_l4) {
        if let Some(pos) = a.first_common(b) {
            if pos < cfg.nrules && (pos as usize) < MAX_RULES {
                return Verdict::Rule { rule: cfg.rules[pos as usize], family, proto, len };
            }
        }
    }
    Verdict::Drop { cause: DROP_CAUSE_DEFAULT, family, proto, len }
}

#[inline(always)]
fn established(ip: &Ip, l4: L4) -> bool {
    if !flow::may_be_tracked(&NW_FLOW_MARKS, l4) {
        return false;
    }
    match flow::inbound_key(ip, l4) {
        Some(k) => flow::is_tracked(&NW_FLOWS, &k),
        None => false,
    }
}

#[inline(always)]
fn is_icmp_error(family: u32, icmp_type: u8) -> bool {
    if family == FAMILY_IPV4 {
        matches!(icmp_type, 3 | 4 | 11 | 12)
    } else {
        matches!(icmp_type, 1..=4)
    }
}

/// The class (index into [`SrcTables::classes`]) of the rules whose sources contain the packet's
/// source: the longest prefix holds them all, because the agent pushes every rule's bit down
/// into the prefixes its sources contain. This is the LPM tries' path, for policies whose
/// prefixes do not fit the flat tables.
#[inline(always)]
fn source_class(ip: &Ip, gen: u32) -> Option<u32> {
    if ip.family == FAMILY_IPV4 {
        let mut k = Key::new(GEN_PREFIX_BITS + 32, [gen as u8; 5]);
        put_bytes(&mut k.data[1..], &ip.src.0[..4]);
        NW_SRC4.get(&k).copied()
    } else {
        let mut k = Key::new(GEN_PREFIX_BITS + 128, [gen as u8; 17]);
        put_bytes(&mut k.data[1..], &ip.src.0);
        NW_SRC6.get(&k).copied()
    }
}

/// Copies byte by byte, each store volatile so LLVM cannot merge them: behind the generation
/// byte the address sits at an odd offset on the stack, and the verifier rejects misaligned
/// stack access (unlike packet access, which the build allows, see ebpf/.cargo/config.toml).
#[inline(always)]
fn put_bytes(dst: &mut [u8], src: &[u8]) {
    for (d, s) in dst.iter_mut().zip(src) {
        // SAFETY: `d` is a valid, exclusive reference.
        unsafe { core::ptr::write_volatile(d, *s) };
    }
}

/// [`source_class`] from the flat tables: the root by the first two address bytes, then one
/// load per further byte until a class.
#[inline(always)]
fn flat_source_class(ip: &Ip, tables: &SrcTables) -> Option<u32> {
    let bytes = if ip.family == FAMILY_IPV4 { 4 } else { 16 };
    let top = ((ip.src.0[0] as usize) << 8) | ip.src.0[1] as usize;
    let mut e = tables.roots[(ip.family & 1) as usize][top];
    // Every way out of the walk leads to the one test below: with a return per step, the
    // verifier would check the rest of the program once per step, and loading would take
    // twice as long.
    for i in 2..16 {
        if e & SRC_CHILD == 0 || i >= bytes {
            break;
        }
        // Masked, the index is provably inside the value: no bounds check, for LLVM or the verifier.
        e = tables.nodes[(e & (SRC_NODES_PER_GEN as u16 - 1)) as usize].0[ip.src.0[i] as usize];
    }
    if e & SRC_CHILD == 0 {
        Some(e as u32)
    } else {
        None
    }
}

#[inline(always)]
fn bump(map: &PerCpuArray<Stat>, index: u32, bytes: u32) {
    if let Some(p) = map.get_ptr_mut(index) {
        // SAFETY: a per-CPU value, only this CPU writes it, and this program runs to completion.
        unsafe {
            (*p).packets += 1;
            (*p).bytes += bytes as u64;
        }
    }
}

/// The baseline of the benchmark in the agent's tests: the cost of an XDP program that does
/// nothing, against which the classifier's cost per packet is measured.
#[xdp]
pub fn nodewall_bench_pass(_ctx: XdpContext) -> u32 {
    XDP_PASS
}

/// The second baseline of the benchmark: parses the Ethernet, IP and L4 headers exactly as
/// [`nodewall_xdp`] does and passes, so that the classifier's cost splits into parsing and
/// classifying.
#[xdp]
pub fn nodewall_bench_parse(ctx: XdpContext) -> u32 {
    let f = Frame { start: ctx.data(), end: ctx.data_end() };
    match parse_ip(&f) {
        Parsed::Ip(ip) if ip.l4(&f).is_some() => XDP_PASS,
        Parsed::NotIp | Parsed::LaterFragment => XDP_PASS,
        _ => XDP_DROP,
    }
}

/// Headers the egress program needs in the linear part of the skb.
const EGRESS_PULL: u32 = 128;

#[classifier]
pub fn nodewall_egress(ctx: TcContext) -> i32 {
    let len = ctx.len();
    let _ = ctx.pull_data(if len < EGRESS_PULL { len } else { EGRESS_PULL });
    let f = Frame { start: ctx.data(), end: ctx.data_end() };
    if let Parsed::Ip(ip) = parse_ip(&f) {
        if let Some(l4) = ip.l4(&f) {
            if let Some(k) = flow::outbound_key(&ip, l4) {
                // Marked first: once the flow is in the table, its replies find the mark set.
                flow::mark(&NW_FLOW_MARKS, &k);
                flow::record(&NW_FLOWS, &k);
            }
        }
    }
    TC_NEXT
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
