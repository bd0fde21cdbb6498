//! Drop samples: a few dropped packets per second and CPU, copied into a ring buffer for the
//! agent to log. The rate limit is here, in the program, so that a flood of drops costs no
//! more than the counters it already bumps; the agent limits its log lines on top.

use aya_ebpf::{
    helpers::bpf_ktime_get_coarse_ns,
    macros::map,
    maps::{PerCpuArray, RingBuf},
    programs::XdpContext,
};
use nodewall_common::xdp::{DropSample, SampleBudget, SAMPLES_PER_SECOND, SAMPLE_CLOCK_EVERY, SAMPLE_RING_BYTES};

use crate::parse::{parse_ip, Frame, Parsed, L4};

#[map]
static NW_DROP_SAMPLES: RingBuf = RingBuf::with_byte_size(SAMPLE_RING_BYTES, 0);
#[map]
static NW_SAMPLE_BUDGET: PerCpuArray<SampleBudget> = PerCpuArray::with_max_entries(1, 0);

const SECOND_NS: u64 = 1_000_000_000;

/// Takes one sample from this CPU's budget for the current second, if any is left.
///
/// The clock is read only when the budget is spent (and then once per
/// [`SAMPLE_CLOCK_EVERY`] drops): while samples are left they are taken without it, and the
/// window restarts when a spent budget finds a second has passed since it started. So at most
/// [`SAMPLES_PER_SECOND`] samples per window, windows at least a second apart, and a flood of
/// drops pays for the clock on one drop in [`SAMPLE_CLOCK_EVERY`].
#[inline(always)]
fn take_budget() -> bool {
    let Some(b) = NW_SAMPLE_BUDGET.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: a per-CPU value, only this CPU writes it, and this program runs to completion.
    unsafe {
        if (*b).taken < SAMPLES_PER_SECOND {
            if (*b).taken == 0 {
                (*b).window_start_ns = bpf_ktime_get_coarse_ns();
            }
            (*b).taken += 1;
            return true;
        }
        (*b).refused = (*b).refused.wrapping_add(1);
        if (*b).refused % SAMPLE_CLOCK_EVERY != 1 {
            return false;
        }
        // The coarse clock: a tick's resolution is plenty for a one-second window.
        let now = bpf_ktime_get_coarse_ns();
        if now.wrapping_sub((*b).window_start_ns) < SECOND_NS {
            return false;
        }
        (*b).window_start_ns = now;
        (*b).taken = 1;
        (*b).refused = 0;
    }
    true
}

/// Samples the packet in `f`, dropped for `cause`, unless the budget is spent or the ring full.
#[inline(always)]
pub fn record(ctx: &XdpContext, f: &Frame, cause: u32) {
    if !take_budget() {
        return;
    }
    let mut s = DropSample { cause, ifindex: ctx.ingress_ifindex() as u32, ..DropSample::default() };
    match parse_ip(f) {
        Parsed::Ip(ip) => {
            s.family = ip.family as u8;
            s.proto = ip.proto;
            s.src = ip.src.0;
            s.dst = ip.dst.0;
            match ip.l4(f) {
                Some(L4::Tcp { sport, dport }) | Some(L4::Udp { sport, dport }) => {
                    s.sport = sport;
                    s.dport = dport;
                }
                Some(L4::Icmp { .. }) => {
                    if let Some(h) = f.load::<[u8; 2]>(ip.l4) {
                        s.sport = h[0] as u16;
                        s.dport = h[1] as u16;
                    }
                }
                _ => {}
            }
        }
        Parsed::Invalid { family, .. } => s.family = family as u8,
        Parsed::NotIp | Parsed::LaterFragment => {}
    }
    let _ = NW_DROP_SAMPLES.output::<DropSample>(&s, 0);
}
