//! Types shared between the nodewall agent and its eBPF/XDP program.
//!
//! `no_std` and `#[repr(C)]` so the same layout is read by the kernel program and by the agent.
#![no_std]
// In the eBPF program a memset or memcpy LLVM makes up is a call of a byte-by-byte loop (the BPF
// backend expands neither inline): a few of them cost more than the classifier.
#![cfg_attr(target_arch = "bpf", no_builtins)]

pub mod ct;
pub mod xdp;

/// Why a packet was dropped (or, in audit mode, would have been). The numeric values index the
/// per-CPU drop counters of the XDP program and are stable: changing them breaks pinned maps.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// No rule matched: the policy's default action.
    DefaultDeny = 0,
    /// An explicit `deny` rule matched.
    Rule = 1,
    /// Malformed, truncated or untrackable packet (nft: `ct state invalid`).
    Invalid = 2,
}

impl DropReason {
    pub const COUNT: usize = 3;
    pub const ALL: [DropReason; Self::COUNT] = [Self::DefaultDeny, Self::Rule, Self::Invalid];

    /// The label value used in metrics and in `explain`, identical for every backend.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::DefaultDeny => "default-deny",
            Self::Rule => "rule",
            Self::Invalid => "invalid",
        }
    }
}
