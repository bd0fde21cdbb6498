//! nodewall's datapath: an XDP program that enforces the policy on inbound packets, and a TC
//! egress program that tracks the node's outbound packets, so that return traffic of live
//! flows passes (connection tracking: `flow.rs` and `nodewall_common::ct`).
//!
//! Per-packet work does not depend on the size of the policy: a walk of the flat source
//! tables, one load per address byte until a class (source -> rules containing it;
//! the LPM tries instead when the policy did not fit them), one array lookup (protocol/port ->
//! rules matching it), and the lowest set bit of their intersection is the first matching
//! rule. The flow tables are only hashed for packets that may belong to a flow.
#![no_std]
#![no_main]
// See common/src/lib.rs: no made-up memset or memcpy calls.
#![no_builtins]

mod flow;
mod parse;
mod rules;
mod sample;

use aya_ebpf::{
    bindings::{
        xdp_action::{XDP_DROP, XDP_PASS},
        xdp_md,
    },
    macros::{classifier, map, xdp},
    maps::{Array, PerCpuArray},
    programs::{TcContext, XdpContext},
};
use nodewall_common::ct::{DHCP_CLIENT_PORT, DHCP_SERVER_PORT};
use nodewall_common::xdp::*;

use crate::flow::{nw_conntrack, step, Opens};
use crate::parse::{parse_ip, parse_pkt, pkt, Frame, Parsed, Pkt};

#[map]
static NW_SWITCH: Array<Switch> = Array::with_max_entries(1, 0);
#[map]
static NW_CONFIG: Array<GenConfig> = Array::with_max_entries(GENERATIONS, 0);
#[map]
static NW_RULE_STATS: PerCpuArray<Stat> = PerCpuArray::with_max_entries(MAX_SLOTS, 0);
#[map]
static NW_DROP_STATS: PerCpuArray<Stat> = PerCpuArray::with_max_entries(DROP_STATS_ENTRIES, 0);
#[map]
static NW_PASS_STATS: PerCpuArray<Stat> = PerCpuArray::with_max_entries(PASS_STATS_ENTRIES, 0);
/// Only the agent reads and writes it; it lives here so it is created and pinned with the rest.
#[map]
static NW_SLOT_NAMES: Array<SlotName> = Array::with_max_entries(MAX_SLOTS, 0);

/// TCX_NEXT / TC_ACT_UNSPEC: the egress program never decides, it only watches.
const TC_NEXT: i32 = -1;

/// What the XDP program keeps per packet outside its stack: BPF allows 512 bytes of stack
/// along a chain of calls, and the parse, the decision and connection tracking each need a
/// frame of their own (see [`nw_xdp`]).
#[repr(C)]
pub struct Scratch {
    pkt: Pkt,
    opens: Opens,
}

#[map]
static NW_XDP_SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

#[xdp]
pub fn nodewall_xdp(ctx: XdpContext) -> u32 {
    let Some(s) = NW_XDP_SCRATCH.get_ptr_mut(0) else {
        return XDP_DROP;
    };
    let Some(cfg) = NW_SWITCH.get(0).and_then(|sw| NW_CONFIG.get(sw.active & 1)) else {
        return XDP_PASS;
    };
    // SAFETY: a per-CPU value, only this CPU writes it, and this program runs to completion.
    let step = unsafe {
        (*s).pkt = parse_pkt(&Frame { start: ctx.data(), end: ctx.data_end() });
        (*s).opens.valid = 0;
        match (*s).pkt.kind {
            pkt::NOT_IP | pkt::LATER_FRAGMENT => step::PASS + PassReason::Unfiltered as u32,
            pkt::INVALID => step::INVALID,
            _ => nw_conntrack(ctx.ctx, &(*s).pkt, cfg, &mut (*s).opens),
        }
    };
    nw_xdp(ctx.ctx, s, step)
}

/// The verdict on a parsed packet that connection tracking has seen (`step`, see
/// [`nw_conntrack`]): the rules if it says so, then counters, drop samples, and the flow the
/// packet opens if it passes.
///
/// The steps after the parse are BPF global functions, called one after the other from the
/// program. The verifier follows every path through a program with the values it knows; each
/// VLAN depth and IPv6 extension-header chain leaves the headers at other offsets, and checked
/// inline, those paths times the ones through connection tracking and the rules were past its
/// limit of a million instructions. It checks a global function once, with the parse result
/// unknown, and gives it a stack frame of its own; BPF allows 512 bytes of stack along a
/// chain of calls, which is why they are not called from one another.
#[no_mangle]
#[inline(never)]
pub extern "C" fn nw_xdp(ctx: *mut xdp_md, s: *mut Scratch, step: u32) -> u32 {
    // SAFETY: the verifier checked the pointer's size against its type; null is checked here.
    let Some(s) = (unsafe { s.as_mut() }) else {
        return XDP_DROP;
    };
    let (p, opens) = (&s.pkt, &mut s.opens);
    let Some(sw) = NW_SWITCH.get(0) else {
        return XDP_PASS;
    };
    let gen = sw.active & 1;
    let Some(cfg) = NW_CONFIG.get(gen) else {
        return XDP_PASS;
    };
    let family = p.family & 1;
    let proto = parse::proto_label(family, p.proto);
    let len = p.len;
    let cause = match step {
        step::INVALID => DROP_CAUSE_INVALID,
        step::RULES => match rule(p, cfg, gen) {
            Ok(()) => {
                opens.open();
                return XDP_PASS;
            }
            Err(cause) => cause,
        },
        reason => {
            let reason = reason - step::PASS;
            let len = if reason == PassReason::Unfiltered as u32 {
                // SAFETY: `ctx` is the program's context.
                let ctx = XdpContext::new(ctx);
                (ctx.data_end() - ctx.data()) as u32
            } else {
                len
            };
            bump(&NW_PASS_STATS, reason, len);
            opens.open();
            return XDP_PASS;
        }
    };
    bump(&NW_DROP_STATS, drop_index(cause, family, proto), len);
    sample::record(&XdpContext::new(ctx), p, cause);
    if cfg.flags & flags::AUDIT != 0 {
        opens.open();
        return XDP_PASS;
    }
    XDP_DROP
}

/// DHCP replies, then the rules: `Ok` for a packet that passes (counted), `Err(cause)` for a
/// drop (a deny rule's counted, the drop left to the caller).
#[inline(always)]
fn rule(p: &Pkt, cfg: &GenConfig, gen: u32) -> Result<(), u32> {
    if p.kind == pkt::UDP && p.sport == DHCP_SERVER_PORT && p.dport == DHCP_CLIENT_PORT && cfg.flags & flags::DHCP_CLIENT != 0 {
        bump(&NW_PASS_STATS, PassReason::DhcpClient as u32, p.len);
        return Ok(());
    }
    let r = rules::nw_rules(p, cfg, gen);
    if r == rules::NO_RULE {
        return Err(DROP_CAUSE_DEFAULT);
    }
    let slot = r & 0xffff;
    bump(&NW_RULE_STATS, slot, p.len);
    if (r >> 16) as u8 == ACTION_ALLOW {
        return Ok(());
    }
    Err(DROP_CAUSE_RULE_BASE + slot)
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

/// Tracks every packet leaving through an uplink: the node's own and those it forwards for
/// its pods, after SNAT (so keyed as their replies will arrive).
/// Tracks every packet leaving through an uplink: the node's own and those it forwards for
/// its pods, after SNAT (so keyed as their replies will arrive).
#[classifier]
pub fn nodewall_egress(ctx: TcContext) -> i32 {
    let len = ctx.len();
    let _ = ctx.pull_data(if len < EGRESS_PULL { len } else { EGRESS_PULL });
    let p = parse_pkt(&Frame { start: ctx.data(), end: ctx.data_end() });
    if let Some(cfg) = NW_SWITCH.get(0).and_then(|sw| NW_CONFIG.get(sw.active & 1)) {
        flow::nw_egress_track(&p, cfg);
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
