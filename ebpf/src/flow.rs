//! The flow tables: connection tracking of our own. The XDP program tracks what arrives on the
//! uplinks, the TC egress program what leaves through them; both run every packet through
//! [`nodewall_common::ct`] (classification and state machine), which the agent's reference
//! tracker uses too.
//!
//! Why not the kernel's conntrack through the `bpf_xdp_ct_lookup` kfunc (measured and tried
//! on this project's kernel and toolchain, see also README "The XDP backend"):
//! - the loader cannot call it: aya 0.14 (pinned; newer releases need a newer Rust) does not
//!   relocate kfunc calls (`.ksyms`), and Rust has no CO-RE field access, so the TCP state
//!   inside `struct nf_conn` could only be read at offsets of one kernel build;
//! - conntrack only tracks a namespace once a netfilter rule there asks for it, so the XDP
//!   backend alone would find nothing; it would need an nft table of its own to switch it on;
//! - at XDP, conntrack has not seen the packet yet: the lookup answers with the state *before*
//!   it (a RST or the last FIN still finds the flow open), so the closing rules below could
//!   not be enforced at the same point;
//! - it needs Linux 5.18 (6.1 for what reads state), where everything else here needs 5.8,
//!   and cannot be exercised with BPF_PROG_TEST_RUN without a conntrack entry per case.
//! The cost of our own table is a hash lookup per packet that may belong to a flow (the port
//! marks below spare unsolicited traffic even that), and an insert per new flow that passes.

use aya_ebpf::{
    helpers::bpf_ktime_get_coarse_ns,
    macros::map,
    maps::{Array, LruHashMap},
    programs::XdpContext,
};
use nodewall_common::ct::{self, icmp, Class, Dir, FlowState, Write};
use nodewall_common::xdp::{
    flags, flow_mark_index, FlowKey, FlowMark, GenConfig, PassReason, FAMILY_IPV4, FLOW_MARK_ENTRIES,
    FLOW_NEW_TABLE_ENTRIES, FLOW_TABLE_ENTRIES, PORT_PROTO_TCP, PORT_PROTO_UDP,
};

use crate::parse::{
    l4_offset, pkt, Addr, Frame, Ipv4Header, Pkt, IPPROTO_DCCP, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP,
    IPPROTO_TCP, IPPROTO_UDP, IPPROTO_UDPLITE,
};

/// Assured flows (see [`nodewall_common::xdp::FLOW_TABLE_ENTRIES`]).
#[map]
pub(crate) static NW_FLOWS: LruHashMap<FlowKey, FlowState> = LruHashMap::with_max_entries(FLOW_TABLE_ENTRIES, 0);
/// Flows not assured yet: a flood of new flows evicts only these.
#[map]
static NW_FLOWS_NEW: LruHashMap<FlowKey, FlowState> = LruHashMap::with_max_entries(FLOW_NEW_TABLE_ENTRIES, 0);
#[map]
static NW_FLOW_MARKS: Array<FlowMark> = Array::with_max_entries(FLOW_MARK_ENTRIES, 0);

/// The key of the flow an ICMP error is about. The error quotes the IP header and the first 8
/// bytes of a packet that went `sent` (the node's, for an inbound error), and goes back to
/// that packet's sender (conntrack checks the outer destination against the quoted source
/// too). Quoted IPv6 packets with extension headers, and quoted non-first fragments, are not
/// matched (so `invalid`).
#[inline(always)]
pub fn quoted_key(f: &Frame, p: &Pkt, sent: Dir) -> Option<FlowKey> {
    let at = l4_offset(p) + 8;
    let mut q = Pkt::EMPTY;
    q.family = p.family;
    let ql4 = if p.family == FAMILY_IPV4 {
        let h = f.load::<Ipv4Header>(at)?;
        let ihl = h.ihl();
        if h.version() != 4 || ihl < 20 || h.is_later_fragment() {
            return None;
        }
        q.proto = h.proto;
        q.src = Addr::v4(h.src).0;
        q.dst = Addr::v4(h.dst).0;
        at + ihl
    } else {
        let h = f.load::<[u8; 8]>(at)?;
        if h[0] >> 4 != 6 {
            return None;
        }
        q.proto = h[6];
        q.src = f.load::<[u8; 16]>(at + 8)?;
        q.dst = f.load::<[u8; 16]>(at + 24)?;
        at + 40
    };
    if q.src != p.dst {
        return None;
    }
    let icmp = if p.family == FAMILY_IPV4 { IPPROTO_ICMP } else { IPPROTO_ICMPV6 };
    match q.proto {
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_UDPLITE | IPPROTO_SCTP | IPPROTO_DCCP => {
            let h = f.load::<[u8; 4]>(ql4)?;
            q.kind = if q.proto == IPPROTO_TCP {
                pkt::TCP
            } else if q.proto == IPPROTO_UDP {
                pkt::UDP
            } else {
                pkt::OTHER
            };
            q.sport = u16::from_be_bytes([h[0], h[1]]);
            q.dport = u16::from_be_bytes([h[2], h[3]]);
        }
        proto if proto == icmp => {
            let h = f.load::<[u8; 6]>(ql4)?;
            q.kind = pkt::ICMP;
            q.flags = h[0];
            q.sport = u16::from_be_bytes([h[4], h[5]]);
        }
        _ => q.kind = pkt::OTHER,
    }
    ct::quoted_key(&q, sent)
}

/// The clock flows live by: the coarse monotonic clock, which ticks with jiffies as
/// conntrack's timeouts do. The fine one reads the clocksource through an indirect call; on
/// this project's VM (retpolines) it cost ~25 ns more per packet of a flow. Packets without
/// one read no clock at all unless they pass (see [`conntrack`]).
#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: a helper without preconditions.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// Where a flow's value is (null: no entry), and whether in `NW_FLOWS_NEW`. No padding and
/// no `Option` around it: undefined bytes in a value the program copies let LLVM fill them
/// from any register, which the verifier refuses.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct Entry {
    ptr: *mut FlowState,
    fresh: u64,
}

impl Entry {
    pub const NONE: Entry = Entry { ptr: core::ptr::null_mut(), fresh: 0 };

    #[inline(always)]
    pub fn state(&self) -> Option<&FlowState> {
        // SAFETY: null or the value of a map lookup, valid for the rest of this program run.
        unsafe { self.ptr.as_ref() }
    }
}

/// The flow stored under `k`, assured or not.
#[inline(always)]
pub fn lookup(k: &FlowKey) -> Entry {
    lookup_in(k, &FlowMark { new: 1, assured: 1 })
}

/// The flow stored under `k`, looked for only in the tables `m` marks.
#[inline(always)]
fn lookup_in(k: &FlowKey, m: &FlowMark) -> Entry {
    if m.assured != 0 {
        if let Some(ptr) = NW_FLOWS.get_ptr_mut(k) {
            return Entry { ptr, fresh: 0 };
        }
    }
    if m.new != 0 {
        if let Some(ptr) = NW_FLOWS_NEW.get_ptr_mut(k) {
            return Entry { ptr, fresh: 1 };
        }
    }
    Entry::NONE
}

/// Carries out what [`ct::track`] decided (`w`, with the new state `n`) for the flow `k`
/// found as `e`.
#[inline(always)]
pub fn apply(k: &FlowKey, e: Entry, w: Write, n: &FlowState) {
    match w {
        Write::Keep => {}
        Write::Update => {
            if e.ptr.is_null() {
                return;
            }
            if e.fresh != 0 && n.assured() != 0 {
                // Marked first, as in `create`.
                mark(k, Table::Assured);
                if NW_FLOWS.insert(k, n, 0).is_ok() {
                    let _ = NW_FLOWS_NEW.remove(k);
                }
            } else {
                // SAFETY: as in `Entry::state`; a plain store of the whole value.
                unsafe { *e.ptr = n.copy() };
            }
        }
        Write::Delete => remove(k, e),
        Write::Create => {
            remove(k, e);
            create(k, n);
        }
    }
}

/// Removes the flow `k` found as `e`, if any.
#[inline(always)]
pub fn remove(k: &FlowKey, e: Entry) {
    if e.ptr.is_null() {
        return;
    }
    let _ = if e.fresh != 0 { NW_FLOWS_NEW.remove(k) } else { NW_FLOWS.remove(k) };
}

/// Stores a new flow (the caller removed whatever it replaces).
#[inline(always)]
pub fn create(k: &FlowKey, n: &FlowState) {
    // Marked first: once the flow is in the table, its packets find the mark set.
    mark(k, Table::New);
    let _ = NW_FLOWS_NEW.insert(k, n, 0);
}

/// The mark of a local TCP/UDP port; other protocols have none.
#[inline(always)]
fn mark_index(proto: u8, local_port: u16) -> Option<u32> {
    match proto {
        IPPROTO_TCP => Some(flow_mark_index(PORT_PROTO_TCP, local_port)),
        IPPROTO_UDP => Some(flow_mark_index(PORT_PROTO_UDP, local_port)),
        _ => None,
    }
}

/// The flow tables an inbound packet's flow may be in: none when no flow was ever stored in
/// them with its local (destination) TCP/UDP port, so a lookup could not hit. Other protocols
/// are always looked up in both.
#[inline(always)]
fn marks(p: &Pkt) -> FlowMark {
    let i = match p.kind {
        pkt::TCP => flow_mark_index(PORT_PROTO_TCP, p.dport),
        pkt::UDP => flow_mark_index(PORT_PROTO_UDP, p.dport),
        _ => return FlowMark { new: 1, assured: 1 },
    };
    NW_FLOW_MARKS.get(i).copied().unwrap_or_default()
}

/// The table a flow is stored in.
#[derive(Clone, Copy)]
enum Table {
    New,
    Assured,
}

/// Marks the local port of a flow stored in `table`, written only when not set yet so that a
/// busy port's cache line stays shared between CPUs.
#[inline(always)]
fn mark(k: &FlowKey, table: Table) {
    if let Some(m) = mark_index(k.proto, k.local_port).and_then(|i| NW_FLOW_MARKS.get_ptr_mut(i)) {
        // SAFETY: a value of an array map; each byte is only ever set to 1, by any CPU.
        unsafe {
            let b = match table {
                Table::New => &mut (*m).new,
                Table::Assured => &mut (*m).assured,
            };
            if *b == 0 {
                *b = 1;
            }
        }
    }
}

/// What [`conntrack`] decided about an inbound packet.
pub mod step {
    /// On to the rules: a new flow, an untracked message, a related error the implicit
    /// allowance does not cover, or return traffic with the `established` allowance off.
    pub const RULES: u32 = 0;
    /// Dropped as invalid.
    pub const INVALID: u32 = 1;
    /// Passed: `PASS + PassReason`.
    pub const PASS: u32 = 2;
}

/// A flow an inbound packet opens (`valid != 0`): stored only if the packet passes (conntrack
/// confirms a flow when its first packet leaves the stack, so a dropped packet opens
/// nothing). A flag rather than an `Option`, for the reason given at [`Entry`].
#[repr(C)]
pub struct Opens {
    pub key: FlowKey,
    pub state: FlowState,
    /// 0, [`Opens::DATED`], or [`Opens::UNDATED`]: `state` created at time 0, to be dated
    /// when stored.
    pub valid: u64,
}

impl Opens {
    pub const DATED: u64 = 1;
    pub const UNDATED: u64 = 2;

    /// Stores the flow, if there is one.
    #[inline(always)]
    pub fn open(&self) {
        match self.valid {
            Opens::DATED => create(&self.key, &self.state),
            Opens::UNDATED => create(&self.key, &self.state.started(now())),
            _ => {}
        }
    }
}

/// Connection tracking of an inbound packet `p` under `cfg`, up to where the rules take over
/// (the order of `nodewall::policy::evaluate`): ICMPv6 neighbour discovery, `invalid`, return
/// traffic of live flows, ICMP errors about them. A flow the packet would open is left in
/// `opens`.
#[inline(always)]
pub fn conntrack(ctx: &XdpContext, p: &Pkt, cfg: &GenConfig, opens: &mut Opens) -> u32 {
    let flags = cfg.flags;
    let v6 = p.is_v6();
    // Neighbour discovery first: conntrack does not track it, and marks redirects invalid.
    if p.kind == pkt::ICMP && flags & flags::NEIGHBOUR_DISCOVERY != 0 && icmp::is_nd(v6, p.flags) {
        return step::PASS + PassReason::NeighbourDiscovery as u32;
    }
    match ct::classify(p, Dir::In) {
        Class::Invalid => step::INVALID,
        Class::Untracked => step::RULES,
        Class::Error => {
            let f = Frame::whole(ctx.data(), ctx.data_end());
            let quoted = match quoted_key(&f, p, Dir::Out) {
                Some(k) => lookup(&k),
                None => Entry::NONE,
            };
            if quoted.ptr.is_null() || !ct::error_is_related(quoted.state(), now()) {
                return step::INVALID;
            }
            // conntrack's `related`: accepted if it is one of the errors the implicit allowance
            // names, otherwise judged by the rules like a new packet.
            if flags & flags::ICMP_ERRORS != 0 && icmp::is_error(v6, p.flags) {
                step::PASS + PassReason::IcmpError as u32
            } else {
                step::RULES
            }
        }
        Class::Flow(key, kind) => {
            let found = lookup_in(&key, &marks(p));
            // Without a flow the clock only dates the one this packet may open (see
            // `ct::track`), and is read when that is stored: not for packets that are dropped.
            let now = if found.ptr.is_null() { 0 } else { now() };
            let t = ct::track(found.state(), kind, Dir::In, now, &cfg.ct);
            if t.write == Write::Create {
                // What it replaces (an ended flow, or one closing that a SYN reopens) goes now,
                // whether or not the new flow is stored: conntrack kills the old connection
                // before it looks at the new one.
                remove(&key, found);
                let valid = if now == 0 { Opens::UNDATED } else { Opens::DATED };
                *opens = Opens { key, state: t.next, valid };
            } else {
                apply(&key, found, t.write, &t.next);
            }
            match t.ct {
                ct::Ct::Invalid => step::INVALID,
                ct::Ct::Established if flags & flags::ESTABLISHED != 0 => step::PASS + PassReason::Established as u32,
                _ => step::RULES,
            }
        }
    }
}

/// Connection tracking of an outbound packet (the TC egress program).
#[inline(always)]
pub fn egress_track(p: &Pkt, cfg: &GenConfig) {
    if let Class::Flow(key, kind) = ct::classify(p, Dir::Out) {
        let found = lookup(&key);
        let t = ct::track(found.state(), kind, Dir::Out, now(), &cfg.ct);
        apply(&key, found, t.write, &t.next);
    }
}
