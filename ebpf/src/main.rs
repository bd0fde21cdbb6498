//! nodewall's datapath: an XDP program that enforces the policy on inbound packets, and a TC
//! egress program that tracks the node's outbound packets, so that return traffic of live
//! flows passes (connection tracking: `flow.rs` and `nodewall_common::ct`), and judges the new
//! flows they open when the policy restricts egress (`egress.rs`).
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

mod bench;
mod egress;
mod flow;
mod parse;
mod rules;
mod sample;
mod stats;

use aya_ebpf::{
    bindings::{
        xdp_action::{XDP_DROP, XDP_PASS},
    },
    macros::{classifier, map, xdp},
    maps::{Array, PerCpuArray},
    programs::{TcContext, XdpContext},
};
use nodewall_common::ct::{DHCP_CLIENT_PORT, DHCP_SERVER_PORT};
use nodewall_common::xdp::*;

use crate::flow::{conntrack, step, Opens};
use crate::parse::{parse_pkt, pkt, Frame, Pkt};
use crate::stats::{bump, NW_DROP_STATS, NW_PASS_STATS, NW_RULE_STATS};

#[map]
static NW_SWITCH: Array<Switch> = Array::with_max_entries(1, 0);
#[map]
static NW_CONFIG: Array<GenConfig> = Array::with_max_entries(GENERATIONS, 0);
/// Only the agent reads and writes it; it lives here so it is created and pinned with the rest.
#[map]
static NW_SLOT_NAMES: Array<SlotName> = Array::with_max_entries(MAX_SLOTS, 0);

/// TCX_NEXT / TC_ACT_UNSPEC: the egress program lets the packet go on to whatever is next.
const TC_NEXT: i32 = -1;
/// TCX_DROP / TC_ACT_SHOT.
const TC_DROP: i32 = 2;

/// What the XDP program keeps per packet in map memory: the parse (see [`forget`]) and the
/// flow the packet opens if it passes.
#[repr(C)]
pub struct Scratch {
    pkt: Pkt,
    opens: Opens,
}

#[map]
static NW_XDP_SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// Parses the packet, then connection tracking, the rules if it says so, counters, drop
/// samples, and the flow the packet opens if it passes.
#[xdp]
pub fn nodewall_xdp(ctx: XdpContext) -> u32 {
    let Some(s) = NW_XDP_SCRATCH.get_ptr_mut(0) else {
        return XDP_DROP;
    };
    // SAFETY: a per-CPU value, only this CPU writes it, and this program runs to completion.
    let s = unsafe { &mut *s };
    let p = forget(&mut s.pkt, parse_pkt(&Frame::whole(ctx.data(), ctx.data_end())));
    let (p, opens) = (&p, &mut s.opens);
    opens.valid = 0;
    let Some(sw) = NW_SWITCH.get(0) else {
        return XDP_PASS;
    };
    let gen = sw.active & 1;
    let Some(cfg) = NW_CONFIG.get(gen) else {
        return XDP_PASS;
    };
    let step = match p.kind {
        pkt::NOT_IP | pkt::LATER_FRAGMENT => step::PASS + PassReason::Unfiltered as u32,
        pkt::INVALID => step::INVALID,
        _ => conntrack(&ctx, p, cfg, opens),
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
    let audit = cfg.flags & flags::AUDIT != 0;
    let sample_flags = if audit { SAMPLE_AUDIT } else { 0 };
    let frame = Frame::whole(ctx.data(), ctx.data_end());
    sample::record(&frame, ctx.ingress_ifindex() as u32, p, cause, sample_flags);
    if audit {
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
    let r = rules::first_match(p, cfg, gen);
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

/// `p` stored in map memory at `at` and read back. The verifier follows every path through
/// the program with the values it knows; each VLAN depth and IPv6 extension-header chain
/// leaves other offsets and kinds in registers, and those paths times the ones through
/// connection tracking and the rules were past its limit of a million instructions. Read from
/// map memory, the parse is unknown to it: the paths meet here and the rest is checked once
/// (~39,000 instructions for the whole program). BPF global functions would split it the same
/// way, but each BPF-to-BPF call costs ~20 ns on CPUs whose returns are mitigated (SRSO "safe
/// RET" on AMD, this project's VM): as much as the rules.
///
/// Copied as whole words: a volatile read of the struct is split by field, and the two address
/// arrays came back one byte at a time (32 loads, then put together again wherever used),
/// ~12 ns per packet of the ~13 this program spent above the floor before classifying.
#[inline(always)]
fn forget(at: &mut Pkt, p: Pkt) -> Pkt {
    // SAFETY: `Pkt` is plain data, `PKT_WORDS` words exactly (asserted below).
    let words: [u64; PKT_WORDS] = unsafe { core::mem::transmute(p) };
    let at = (at as *mut Pkt).cast::<u64>();
    let mut out = [0u64; PKT_WORDS];
    // SAFETY: `at` is a valid, exclusive, 8-byte aligned place of `PKT_WORDS` words; any bits
    // read back form a valid `Pkt` (integers and byte arrays only).
    unsafe {
        for (i, w) in words.iter().enumerate() {
            core::ptr::write_volatile(at.add(i), *w);
        }
        for (i, o) in out.iter_mut().enumerate() {
            *o = core::ptr::read_volatile(at.add(i));
        }
        core::mem::transmute::<[u64; PKT_WORDS], Pkt>(out)
    }
}

/// [`Pkt`] in words, for [`forget`].
const PKT_WORDS: usize = core::mem::size_of::<Pkt>() / 8;
const _: () = assert!(core::mem::size_of::<Pkt>() == PKT_WORDS * 8 && core::mem::align_of::<Pkt>() == 8);

/// Headers the egress program needs in the linear part of the skb.
const EGRESS_PULL: u32 = 128;

/// The egress program's parse, in map memory for the reason given at [`forget`]; a map of its
/// own, so that nothing depends on whether the two programs can interrupt each other.
#[map]
static NW_EGRESS_SCRATCH: PerCpuArray<Pkt> = PerCpuArray::with_max_entries(1, 0);

/// Tracks every packet leaving through an uplink: the node's own and those it forwards for
/// its pods, after SNAT (so keyed as their replies will arrive); and when the policy restricts
/// egress, judges the new flows they open (see `egress.rs`).
#[classifier]
pub fn nodewall_egress(ctx: TcContext) -> i32 {
    let len = ctx.len();
    let _ = ctx.pull_data(if len < EGRESS_PULL { len } else { EGRESS_PULL });
    let Some(at) = NW_EGRESS_SCRATCH.get_ptr_mut(0) else {
        return TC_NEXT;
    };
    let Some(sw) = NW_SWITCH.get(0) else {
        return TC_NEXT;
    };
    let gen = sw.active & 1;
    let Some(cfg) = NW_CONFIG.get(gen) else {
        return TC_NEXT;
    };
    let frame = Frame { start: ctx.data(), end: ctx.data_end(), wire: len as usize };
    // SAFETY: a per-CPU value, only this CPU writes it, and this program runs to completion.
    let p = forget(unsafe { &mut *at }, parse_pkt(&frame));
    if cfg.flags & flags::EGRESS == 0 {
        flow::egress_track(&p, cfg);
        return TC_NEXT;
    }
    let audit = cfg.flags & flags::AUDIT != 0;
    let cause = egress::judge(&ctx, &frame, &p, cfg, gen, audit);
    if cause == egress::PASS {
        return TC_NEXT;
    }
    let family = p.family & 1;
    bump(&NW_DROP_STATS, drop_index(cause, family, parse::proto_label(family, p.proto)), p.len);
    let sample_flags = SAMPLE_EGRESS | if audit { SAMPLE_AUDIT } else { 0 };
    // SAFETY: the context's skb pointer is valid for the whole program run.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    sample::record(&frame, ifindex, &p, cause, sample_flags);
    if audit {
        TC_NEXT
    } else {
        TC_DROP
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
