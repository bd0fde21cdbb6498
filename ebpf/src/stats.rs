//! Counters shared by the two programs: per rule slot, per drop cause, per implicit pass.

use aya_ebpf::{macros::map, maps::PerCpuArray};
use nodewall_common::xdp::{Stat, DROP_STATS_ENTRIES, MAX_SLOTS, PASS_STATS_ENTRIES};

#[map]
pub static NW_RULE_STATS: PerCpuArray<Stat> = PerCpuArray::with_max_entries(MAX_SLOTS, 0);
#[map]
pub static NW_DROP_STATS: PerCpuArray<Stat> = PerCpuArray::with_max_entries(DROP_STATS_ENTRIES, 0);
#[map]
pub static NW_PASS_STATS: PerCpuArray<Stat> = PerCpuArray::with_max_entries(PASS_STATS_ENTRIES, 0);

#[inline(always)]
pub fn bump(map: &PerCpuArray<Stat>, index: u32, bytes: u32) {
    if let Some(p) = map.get_ptr_mut(index) {
        // SAFETY: a per-CPU value, only this CPU writes it, and this program runs to completion.
        unsafe {
            (*p).packets += 1;
            (*p).bytes += bytes as u64;
        }
    }
}
