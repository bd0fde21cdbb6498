//! Drop samples: a few dropped packets per second and CPU, copied into a ring buffer for the
//! agent to log, stream (`nodewall drops`) and write to its flow log. The rate limit is here,
//! in the program, so that a flood of drops costs no more than the counters it already bumps;
//! the agent limits its log lines on top.

use aya_ebpf::{
    helpers::bpf_ktime_get_coarse_ns,
    macros::map,
    maps::{Array, PerCpuArray, RingBuf},
};
use nodewall_common::xdp::{DropSample, SampleBudget, SAMPLE_CLOCK_EVERY, SAMPLE_RING_BYTES};

use crate::parse::{l4_offset, pkt, Frame, Pkt};

#[map]
static NW_DROP_SAMPLES: RingBuf = RingBuf::with_byte_size(SAMPLE_RING_BYTES, 0);
#[map]
static NW_SAMPLE_BUDGET: PerCpuArray<SampleBudget> = PerCpuArray::with_max_entries(1, 0);
/// Samples per second and CPU, as configured (`drops.samples-per-second`); written by the agent
/// at every apply, 0 (no samples) until then. An array lookup the verifier inlines: no helper
/// call, and only on the drop path.
#[map]
static NW_SAMPLE_RATE: Array<u32> = Array::with_max_entries(1, 0);

const SECOND_NS: u64 = 1_000_000_000;

/// Takes one sample from this CPU's budget for the current second, if any is left.
///
/// The clock is read only when the budget is spent (and then once per
/// [`SAMPLE_CLOCK_EVERY`] drops): while samples are left they are taken without it, and the
/// window restarts when a spent budget finds a second has passed since it started. So at most
/// `NW_SAMPLE_RATE` samples per window, windows at least a second apart, and a flood of drops
/// pays for the clock on one drop in [`SAMPLE_CLOCK_EVERY`].
#[inline(always)]
fn take_budget() -> bool {
    let (Some(b), Some(rate)) = (NW_SAMPLE_BUDGET.get_ptr_mut(0), NW_SAMPLE_RATE.get(0)) else {
        return false;
    };
    let rate = *rate;
    if rate == 0 {
        return false;
    }
    // SAFETY: a per-CPU value, only this CPU writes it, and this program runs to completion.
    unsafe {
        if (*b).taken < rate {
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

#[inline(always)]
fn words(a: &[u8; 16]) -> [u64; 2] {
    // SAFETY: 16 bytes read as two unaligned words.
    unsafe { core::ptr::read_unaligned(a.as_ptr() as *const [u64; 2]) }
}

/// Samples the packet `p` of frame `f` on interface `ifindex`, dropped for `cause`, with
/// `flags` ([`nodewall_common::xdp::SAMPLE_AUDIT`]: only counted; `SAMPLE_EGRESS`: outbound),
/// unless the budget is spent or the ring full.
#[inline(always)]
pub fn record(f: &Frame, ifindex: u32, p: &Pkt, cause: u32, flags: u8) {
    if !take_budget() {
        return;
    }
    let Some(mut entry) = NW_DROP_SAMPLES.reserve::<DropSample>(0) else {
        return;
    };
    let (mut sport, mut dport) = (0, 0);
    match p.kind {
        pkt::TCP | pkt::UDP | pkt::OTHER => (sport, dport) = (p.sport, p.dport),
        pkt::ICMP => {
            if let Some(h) = f.load::<[u8; 2]>(l4_offset(p)) {
                (sport, dport) = (h[0] as u16, h[1] as u16);
            }
        }
        _ => {}
    }
    let ip = p.kind != pkt::NOT_IP && p.kind != pkt::LATER_FRAGMENT;
    let s = entry.as_mut_ptr();
    // Field by field, straight into the ring buffer: a `DropSample` built on the stack came out
    // with misaligned stack stores, which the verifier refuses (packet and ring-buffer memory
    // may be accessed misaligned, the stack may not).
    // SAFETY: `s` points to a reserved, writable `DropSample`.
    unsafe {
        // As words, and volatile: a 16-byte array store is a `memset`/`memmove` call of a byte
        // loop in BPF. Ring-buffer records are 8-byte aligned, and the addresses come first.
        let (src, dst) = if ip { (words(&p.src), words(&p.dst)) } else { ([0; 2], [0; 2]) };
        let at = s as *mut u64;
        core::ptr::write_volatile(at, src[0]);
        core::ptr::write_volatile(at.add(1), src[1]);
        core::ptr::write_volatile(at.add(2), dst[0]);
        core::ptr::write_volatile(at.add(3), dst[1]);
        core::ptr::addr_of_mut!((*s).cause).write(cause);
        core::ptr::addr_of_mut!((*s).ifindex).write(ifindex);
        core::ptr::addr_of_mut!((*s).sport).write(sport);
        core::ptr::addr_of_mut!((*s).dport).write(dport);
        core::ptr::addr_of_mut!((*s).family).write(p.family as u8);
        core::ptr::addr_of_mut!((*s).proto).write(if ip { p.proto } else { 0 });
        core::ptr::addr_of_mut!((*s).flags).write(flags);
        core::ptr::addr_of_mut!((*s)._pad).write(0);
    }
    entry.submit(0);
}
