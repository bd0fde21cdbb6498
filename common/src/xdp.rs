//! Layout of the XDP datapath's maps: keys, values, indexes and flags.
//!
//! The agent compiles a policy into these maps and the XDP program reads them. Everything the
//! policy says lives in two *generations*: the program reads [`Switch::active`] once per packet
//! and looks only at that generation, so the agent can rewrite the other one at leisure and
//! publish it with a single 4-byte write. Counters are indexed by a *slot* that stays with a
//! rule name across applies, so inserting a rule does not shift other rules' counters.

use crate::ct::Timeouts;

/// Bumped whenever a map's key, value or size changes; pinned maps of another layout are not
/// adopted.
pub const LAYOUT_VERSION: u32 = 9;

/// Rules per policy: the width of [`RuleBits`].
pub const MAX_RULES: usize = 256;
pub const RULE_WORDS: usize = MAX_RULES / 64;
/// Counter slots: enough for two generations whose rule names are all different.
pub const MAX_SLOTS: u32 = 2 * MAX_RULES as u32;
pub const GENERATIONS: u32 = 2;
/// Longest rule name a counter slot can hold.
pub const MAX_NAME_LEN: usize = 248;

/// Pin names of the maps (the symbol names in the eBPF object).
pub mod map_names {
    pub const SWITCH: &str = "NW_SWITCH";
    pub const CONFIG: &str = "NW_CONFIG";
    pub const SRC4: &str = "NW_SRC4";
    pub const SRC6: &str = "NW_SRC6";
    pub const SRC_BUCKETS: &str = "NW_SRC_BUCKETS";
    pub const PORTS: &str = "NW_PORTS";
    pub const FLOWS: &str = "NW_FLOWS";
    pub const FLOWS_NEW: &str = "NW_FLOWS_NEW";
    pub const RULE_STATS: &str = "NW_RULE_STATS";
    pub const DROP_STATS: &str = "NW_DROP_STATS";
    pub const PASS_STATS: &str = "NW_PASS_STATS";
    pub const SLOT_NAMES: &str = "NW_SLOT_NAMES";
    pub const DROP_SAMPLES: &str = "NW_DROP_SAMPLES";
    pub const SAMPLE_BUDGET: &str = "NW_SAMPLE_BUDGET";
    pub const FLOW_MARKS: &str = "NW_FLOW_MARKS";
    pub const SOURCES: &str = "NW_SOURCES";
    pub const XDP_SCRATCH: &str = "NW_XDP_SCRATCH";
    pub const EGRESS_SCRATCH: &str = "NW_EGRESS_SCRATCH";
    pub const SAMPLE_RATE: &str = "NW_SAMPLE_RATE";
    pub const ALL: [&str; 19] = [
        SWITCH,
        CONFIG,
        SRC4,
        SRC6,
        SRC_BUCKETS,
        PORTS,
        FLOWS,
        FLOWS_NEW,
        RULE_STATS,
        DROP_STATS,
        PASS_STATS,
        SLOT_NAMES,
        DROP_SAMPLES,
        SAMPLE_BUDGET,
        FLOW_MARKS,
        SOURCES,
        XDP_SCRATCH,
        EGRESS_SCRATCH,
        SAMPLE_RATE,
    ];
}

/// Names of the programs in the eBPF object.
pub const XDP_PROGRAM: &str = "nodewall_xdp";
/// The TC egress program: tracks the node's outbound packets in the flow tables.
pub const TC_EGRESS_PROGRAM: &str = "nodewall_egress";
/// A bare `XDP_PASS`, only loaded by the benchmark as its baseline.
pub const BENCH_PASS_PROGRAM: &str = "nodewall_bench_pass";
/// Parses the headers like the classifier and passes: the benchmark's second baseline.
pub const BENCH_PARSE_PROGRAM: &str = "nodewall_bench_parse";

/// One bit per rule position: bit `i` is rule `i` of the policy (first match wins, so the
/// lowest set bit of an intersection is the verdict).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct RuleBits(pub [u64; RULE_WORDS]);

impl RuleBits {
    pub const EMPTY: RuleBits = RuleBits([0; RULE_WORDS]);

    pub fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }

    pub fn contains(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }

    pub fn union_with(&mut self, other: &RuleBits) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a |= *b;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }

    /// Position of the first rule present in both sets: the rule that decides.
    #[inline(always)]
    pub fn first_common(&self, other: &RuleBits) -> Option<u32> {
        // Unrolled: the eBPF verifier and the per-packet cost both prefer straight-line code.
        let w0 = self.0[0] & other.0[0];
        if w0 != 0 {
            return Some(lowest_bit(w0));
        }
        let w1 = self.0[1] & other.0[1];
        if w1 != 0 {
            return Some(64 + lowest_bit(w1));
        }
        let w2 = self.0[2] & other.0[2];
        if w2 != 0 {
            return Some(128 + lowest_bit(w2));
        }
        let w3 = self.0[3] & other.0[3];
        if w3 != 0 {
            return Some(192 + lowest_bit(w3));
        }
        None
    }
}

/// Index of the lowest set bit of a non-zero word. BPF has no count-trailing-zeros
/// instruction: the bit is isolated, multiplied by a de Bruijn sequence (whose top 6 bits then
/// differ for each of the 64 powers of two), and those bits index a table in `.rodata`. Five
/// instructions and a load, where a branchy binary search took over fifty.
#[inline(always)]
pub fn lowest_bit(x: u64) -> u32 {
    LOWEST_BIT[debruijn_slot(x & x.wrapping_neg())] as u32
}

const DEBRUIJN: u64 = 0x03f7_9d71_b4cb_0a89;

#[inline(always)]
const fn debruijn_slot(power_of_two: u64) -> usize {
    (power_of_two.wrapping_mul(DEBRUIJN) >> 58) as usize
}

/// Slot -> bit index; a `static`, so the eBPF object holds it once, as data.
static LOWEST_BIT: [u8; 64] = {
    let mut t = [0u8; 64];
    let mut i = 0;
    while i < 64 {
        t[debruijn_slot(1 << i)] = i as u8;
        i += 1;
    }
    t
};

/// Bits of [`GenConfig::flags`].
pub mod flags {
    pub const ESTABLISHED: u32 = 1 << 0;
    pub const ICMP_ERRORS: u32 = 1 << 1;
    pub const NEIGHBOUR_DISCOVERY: u32 = 1 << 2;
    pub const DHCP_CLIENT: u32 = 1 << 3;
    /// Count drops but pass the packets.
    pub const AUDIT: u32 = 1 << 4;
    /// Sources are in the flat tables (roots and nodes of [`SrcTables`]), not the LPM tries.
    pub const FLAT_SOURCES: u32 = 1 << 5;
    /// The TC egress program judges new outbound flows (unset: egress is open, it only tracks).
    pub const EGRESS: u32 = 1 << 6;
    /// With [`EGRESS`]: a new outbound flow no rule matches is dropped (`default-deny`).
    pub const EGRESS_DENY: u32 = 1 << 7;
}

pub const ACTION_ALLOW: u8 = 0;
pub const ACTION_DENY: u8 = 1;

/// [`RuleRef::direction`] of an inbound rule.
pub const RULE_INGRESS: u8 = 0;
/// [`RuleRef::direction`] of an egress rule (matched by destination, by the TC program).
pub const RULE_EGRESS: u8 = 1;

/// Rule position -> counter slot and action.
///
/// Inbound and egress rules share one bit space (and so the source tables and port tables):
/// positions `0..ningress` are inbound rules, matched by source address, and the rest egress
/// rules, matched by destination address. An address's class then holds the rules of both
/// directions containing it; the XDP program only takes a first match below `ningress`, and the
/// egress program masks with the rules of its sender (`egress_host` / `egress_pod`), which hold
/// egress rules only.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct RuleRef {
    pub slot: u16,
    pub action: u8,
    /// [`RULE_INGRESS`] or [`RULE_EGRESS`]: read by the agent only, to label counters.
    pub direction: u8,
}

/// Everything of one generation that is not keyed by address or port.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct GenConfig {
    pub flags: u32,
    pub nrules: u32,
    /// Nodes and classes of the flat source tables this generation uses (0 with LPM tries).
    pub src_nodes: u32,
    pub src_classes: u32,
    /// Inbound rules: positions `0..ningress` of `rules` (see [`RuleRef`]).
    pub ningress: u32,
    /// Path-compressed runs ([`SrcSkip`]) of the flat source tables this generation uses.
    pub src_skips: u32,
    /// By family: the one prefix length whose prefixes (of that family) sit in the source
    /// hash (`NW_SRC_BUCKETS`) beside the flat tables, 0 when none do; the netmask of that
    /// length as [`SrcBucket::keys`] hold addresses; and the multipliers of the hash's two
    /// bucket choices ([`bucket_of`]).
    pub hash_len: [u32; 2],
    pub hash_mask: [u64; 2],
    pub hash_seeds: [u64; 2],
    /// Rules matching an ICMP packet from an IPv4 source (`icmp` and `all` rules).
    pub icmp4: RuleBits,
    /// Rules matching an ICMPv6 packet from an IPv6 source (`icmpv6` and `all` rules).
    pub icmp6: RuleBits,
    /// Rules matching any other protocol (`all` rules).
    pub other: RuleBits,
    /// Egress rules that judge what the node itself sends, and what it forwards (its pods'
    /// traffic); no inbound rule is in either.
    pub egress_host: RuleBits,
    pub egress_pod: RuleBits,
    /// Connection-tracking timeouts (the node's conntrack sysctls when the policy was applied).
    pub ct: Timeouts,
    pub rules: [RuleRef; MAX_RULES],
}

impl GenConfig {
    pub const EMPTY: GenConfig = GenConfig {
        flags: 0,
        nrules: 0,
        src_nodes: 0,
        src_classes: 0,
        ningress: 0,
        src_skips: 0,
        hash_len: [0; 2],
        hash_mask: [0; 2],
        hash_seeds: [0; 2],
        icmp4: RuleBits::EMPTY,
        icmp6: RuleBits::EMPTY,
        other: RuleBits::EMPTY,
        egress_host: RuleBits::EMPTY,
        egress_pod: RuleBits::EMPTY,
        ct: Timeouts::DEFAULT,
        rules: [RuleRef {
            slot: 0,
            action: 0,
            direction: 0,
        }; MAX_RULES],
    };
}

/// The one value the agent flips to publish a generation (index 0 of `NW_SWITCH`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct Switch {
    pub layout: u32,
    /// Generation the program reads: 0 or 1.
    pub active: u32,
    /// Number of applies that changed something, for `status`.
    pub generation: u64,
    /// Network namespace (device, inode) the pins belong to, so an agent in another
    /// namespace never adopts them.
    pub netns_dev: u64,
    pub netns_ino: u64,
}

/// LPM trie key data: generation byte, then the address in network order. The prefix length
/// of a key is `GEN_PREFIX_BITS +` the address prefix length.
pub type Src4Key = [u8; 5];
pub type Src6Key = [u8; 17];
pub const GEN_PREFIX_BITS: u32 = 8;

/// The flat source tables: a multibit trie whose root is indexed by the first 16 bits of the
/// address and every further node by the next byte (so at most 3 steps for IPv4 and 15 for
/// IPv6), each step one load, so that the cost per packet depends on the depth of the
/// address's longest prefix and not on how many prefixes there are (the kernel's LPM trie
/// walks one node per prefix bit that distinguishes stored prefixes, with a helper call per
/// lookup).
///
/// An entry is either a child (`SRC_CHILD | node`, or `SRC_CHILD | SRC_SKIP | skip`) or a
/// *class*: an index into [`SrcTables::classes`], which holds the distinct rule sets (a
/// policy has few, however many prefixes it lists; class 0 is empty). Prefixes are expanded
/// and leaf-pushed by the agent, so the first class met is the answer. A policy that needs
/// more nodes, runs or classes than a generation holds falls back to the LPM tries
/// ([`flags::FLAT_SOURCES`] unset), whose values are class indexes too.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct SrcNode(pub [u16; 256]);

/// A path-compressed run of nodes that each lead on through one byte value only, every other
/// value ending in one class: what a prefix scattered away from all others (a lone IPv6 /64
/// is 5 such nodes below its /24) becomes. 80 bytes where the nodes took 512 each, so that
/// thousands of scattered prefixes fit a generation; the walk still takes one step per byte,
/// with the run's loads in one or two cache lines.
///
/// Indexed by the position `i` of the address byte (positions outside the run are unused):
/// `addr[i] == bytes[i]` continues with `matched[i]` (this run again, or at its last position
/// what follows it), any other byte ends in the class `other[i]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct SrcSkip {
    pub bytes: [u8; 16],
    pub matched: [u16; 16],
    pub other: [u16; 16],
}

impl SrcSkip {
    pub const EMPTY: SrcSkip = SrcSkip {
        bytes: [0; 16],
        matched: [0; 16],
        other: [0; 16],
    };
}

/// One generation's source tables: entry `g` of `NW_SOURCES`. One value rather than a map
/// entry per root, node and class: the program looks the generation up once per packet and
/// then the root, every step of the walk and the class are loads at bounded offsets, where an
/// entry each cost an (inlined) map lookup per step, with its key spilled to the stack, its
/// bounds check and its null check. The map is created mmapable: the agent writes the
/// entries that changed in place, in the generation the switch does not point at. The value
/// stays below the 4 MiB (`KMALLOC_MAX_SIZE`) an array map's value may have.
#[repr(C)]
#[derive(Clone, Copy)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct SrcTables {
    pub classes: [RuleBits; SRC_CLASSES_PER_GEN as usize],
    /// By family ([`FAMILY_IPV4`], [`FAMILY_IPV6`]), then the first 16 address bits.
    pub roots: [[u16; 65536]; 2],
    pub nodes: [SrcNode; SRC_NODES_PER_GEN as usize],
    pub skips: [SrcSkip; SRC_SKIPS_PER_GEN as usize],
}

pub const SRC_CHILD: u16 = 0x8000;
/// With [`SRC_CHILD`]: the child is a [`SrcSkip`].
pub const SRC_SKIP: u16 = 0x4000;
pub const SRC_NODES_PER_GEN: u32 = 4096;
pub const SRC_CLASSES_PER_GEN: u32 = 4096;
pub const SRC_SKIPS_PER_GEN: u32 = 16384;
// An array map refuses values above KMALLOC_MAX_SIZE (4 MiB with 4 KiB pages).
const _: () = assert!(core::mem::size_of::<SrcTables>() <= 4 << 20);
/// Roots of both families, IPv4's first.
pub const SRC_ROOT_ENTRIES_PER_GEN: u32 = 2 * 65536;

/// A bucket of the source hash (`NW_SRC_BUCKETS`: [`SRC_BUCKETS_PER_GEN`] per generation),
/// which holds, beside the flat tables, what they cannot: the prefixes of one length per
/// family that contain no longer prefix (a million scattered IPv6 /64s), each in one of two
/// buckets chosen by [`bucket_of`] (cuckoo hashing, built by the agent). A lookup is one or
/// two array loads and compares inside one cache line each, no helper or kernel function
/// call, where the LPM tries walk a node per distinguishing bit, and a kernel hash map costs
/// calls whose returns this CPU mitigates.
///
/// A key is the first 8 bytes of the address as they lie in the packet, read as a native
/// word and masked to the prefix (IPv4: the 4 address bytes, then zeros; so only IPv6
/// prefixes up to /64 go here). Its tag is [`BUCKET_USED`], [`BUCKET_V6`] for IPv6, and the
/// class id. `spilled` is set when a key whose first choice is this bucket lives in its
/// second one: a lookup that misses a bucket without it is over.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct SrcBucket {
    pub keys: [u64; SRC_BUCKET_SLOTS],
    pub tags: [u16; SRC_BUCKET_SLOTS],
    pub spilled: u32,
}

impl SrcBucket {
    pub const EMPTY: SrcBucket = SrcBucket {
        keys: [0; SRC_BUCKET_SLOTS],
        tags: [0; SRC_BUCKET_SLOTS],
        spilled: 0,
    };
}

pub const SRC_BUCKET_SLOTS: usize = 6;
pub const SRC_BUCKET_BITS: u32 = 18;
pub const SRC_BUCKETS_PER_GEN: u32 = 1 << SRC_BUCKET_BITS;
/// Prefixes a generation may keep in the source hash: two thirds of its slots, a load at
/// which building the table by cuckoo displacement is quick. The map is allocated whole when
/// it is created: 32 MiB (64 bytes a bucket) for both generations.
pub const SRC_HASH_PER_GEN: u32 = 1 << 20;
pub const BUCKET_USED: u16 = 0x8000;
pub const BUCKET_V6: u16 = 0x4000;
pub const BUCKET_CLASS: u16 = 0x0fff;
const _: () = assert!(core::mem::size_of::<SrcBucket>() == 64);
const _: () = assert!(SRC_CLASSES_PER_GEN <= BUCKET_CLASS as u32 + 1);
const _: () = assert!(SRC_HASH_PER_GEN as usize <= SRC_BUCKETS_PER_GEN as usize * SRC_BUCKET_SLOTS);

/// A bucket of a generation for `key`: multiply-shift hashing (the top bits of the product
/// with an odd multiplier), the same code in the program and the agent.
#[inline(always)]
pub const fn bucket_of(key: u64, seed: u64) -> u32 {
    (key.wrapping_mul(seed | 1) >> (64 - SRC_BUCKET_BITS)) as u32
}

/// The destination-port tables: one `RuleBits` per (generation, protocol, port).
pub const PORT_PROTO_TCP: u32 = 0;
pub const PORT_PROTO_UDP: u32 = 1;
pub const PORT_TABLE_ENTRIES: u32 = GENERATIONS * 2 * 65536;

#[inline(always)]
pub const fn port_index(gen: u32, proto: u32, port: u16) -> u32 {
    ((gen * 2 + proto) << 16) | port as u32
}

/// Packets and bytes (of the IP packet, as nft counts them) in a per-CPU counter.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct Stat {
    pub packets: u64,
    pub bytes: u64,
}

/// Accepted without consulting the rules; `NW_PASS_STATS` is indexed by these.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PassReason {
    Established = 0,
    IcmpError = 1,
    NeighbourDiscovery = 2,
    DhcpClient = 3,
    /// Not subject to the policy: non-IP (ARP, LLDP...) and non-first fragments.
    Unfiltered = 4,
}

pub const PASS_STATS_ENTRIES: u32 = 5;

/// `family` label index.
pub const FAMILY_IPV4: u32 = 0;
pub const FAMILY_IPV6: u32 = 1;
pub const FAMILIES: [&str; 2] = ["ipv4", "ipv6"];

/// `protocol` label index.
pub const PROTO_TCP: u32 = 0;
pub const PROTO_UDP: u32 = 1;
pub const PROTO_ICMP: u32 = 2;
pub const PROTO_ICMPV6: u32 = 3;
pub const PROTO_OTHER: u32 = 4;
pub const PROTOCOLS: [&str; 5] = ["tcp", "udp", "icmp", "icmpv6", "other"];

/// Drop counters are indexed by (cause, family, protocol); the cause is `default-deny` or
/// `invalid` of either direction, or the counter slot of a deny rule (whose direction is the
/// rule's).
pub const DROP_CAUSE_DEFAULT: u32 = 0;
pub const DROP_CAUSE_INVALID: u32 = 1;
pub const DROP_CAUSE_EGRESS_DEFAULT: u32 = 2;
/// An outbound packet the parser cannot read (see `ebpf/src/egress.rs`).
pub const DROP_CAUSE_EGRESS_INVALID: u32 = 3;
pub const DROP_CAUSE_RULE_BASE: u32 = 4;
pub const DROP_STATS_ENTRIES: u32 = (DROP_CAUSE_RULE_BASE + MAX_SLOTS) * 2 * 5;

#[inline(always)]
pub const fn drop_index(cause: u32, family: u32, proto: u32) -> u32 {
    (cause * 2 + family) * 5 + proto
}

/// The inverse of [`drop_index`]: (cause, family, protocol).
pub const fn drop_index_parts(index: u32) -> (u32, u32, u32) {
    (index / 10, (index / 5) % 2, index % 5)
}

/// A rule name kept with its counter slot so `status` can label counters after a restart.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct SlotName {
    pub len: u16,
    pub action: u8,
    pub used: u8,
    pub _pad: u32,
    pub name: [u8; MAX_NAME_LEN],
}

impl SlotName {
    pub const EMPTY: SlotName = SlotName {
        len: 0,
        action: 0,
        used: 0,
        _pad: 0,
        name: [0; MAX_NAME_LEN],
    };
}

/// A flow the node takes part in, keyed as its *inbound* packets look: `remote` sent them to
/// `local` (the node, or a pod behind it). Ports are host-order; TCP, UDP, UDP-Lite, SCTP and
/// DCCP have both, ICMP queries carry the identifier in `remote_port` and
/// [`crate::ct::icmp_query_port`] in `local_port`, other protocols have both 0. IPv4
/// addresses fill the first 4 bytes. The value is a [`crate::ct::FlowState`].
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct FlowKey {
    pub remote: [u8; 16],
    pub local: [u8; 16],
    pub remote_port: u16,
    pub local_port: u16,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}

/// Flows live in two LRU tables, as conntrack's unassured and assured entries do: a flow
/// starts in `NW_FLOWS_NEW` and moves to `NW_FLOWS` once it is assured (a TCP handshake
/// completed, a UDP exchange that lasts). A flood of new flows (spoofed SYNs to an open port)
/// then evicts only other new flows, never a live connection, the way conntrack's early drop
/// spares assured entries.
pub const FLOW_TABLE_ENTRIES: u32 = 65536;
pub const FLOW_NEW_TABLE_ENTRIES: u32 = 65536;

/// `NW_FLOW_MARKS`: one [`FlowMark`] per (TCP or UDP, local port). A TCP or UDP packet whose
/// destination port has no mark for a table cannot belong to a flow in that table, so the XDP
/// program skips that table's hash: unsolicited traffic (what a firewall drops under a flood)
/// never pays for a lookup, and traffic to a port whose flows never became assured (a UDP
/// service that does not answer, a port under a SYN flood) pays for one, not two. Marks are
/// never cleared; a stale one only costs the lookup it would have cost anyway.
pub const FLOW_MARK_ENTRIES: u32 = 2 * 65536;

/// Which flow tables may hold a flow of a local port: each byte is 0 until the first flow with
/// that port goes into the table (`new`: `NW_FLOWS_NEW`, `assured`: `NW_FLOWS`), then 1 for
/// good. One byte per table rather than bits of one byte: CPUs that mark the two tables at
/// once each store a byte of their own, where setting bits would be a read-modify-write that
/// can lose the other's bit (BPF has no atomic operation on bytes) and with it the lookups of
/// that table's flows.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct FlowMark {
    pub new: u8,
    pub assured: u8,
}

#[inline(always)]
pub const fn flow_mark_index(proto: u32, port: u16) -> u32 {
    (proto << 16) | port as u32
}

/// One dropped (or, in audit mode, would-be dropped) packet, as the XDP program hands it to the
/// agent through the `NW_DROP_SAMPLES` ring buffer. Ports are host-order; for ICMP, `sport` is
/// the type and `dport` the code. A packet too malformed to parse leaves what it lacks at 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct DropSample {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// As in [`drop_index`]: `DROP_CAUSE_DEFAULT`, `DROP_CAUSE_INVALID`, or a deny rule's slot
    /// plus `DROP_CAUSE_RULE_BASE`.
    pub cause: u32,
    pub ifindex: u32,
    pub sport: u16,
    pub dport: u16,
    /// `FAMILY_IPV4` / `FAMILY_IPV6`.
    pub family: u8,
    /// The IP protocol number (0 when the IP header itself was malformed).
    pub proto: u8,
    /// [`SAMPLE_AUDIT`] when the generation that judged the packet was in audit mode: the
    /// packet passed, it would only have been dropped. Set by the program, so a sample taken
    /// just before or after a mode change is labelled as the packet was treated.
    pub flags: u8,
    pub _pad: u8,
}

/// [`DropSample::flags`]: the packet was passed (audit mode), not dropped.
pub const SAMPLE_AUDIT: u8 = 1;
/// [`DropSample::flags`]: an outbound packet (the TC egress program's; `ifindex` is the uplink
/// it was leaving through).
pub const SAMPLE_EGRESS: u8 = 2;

/// Samples each CPU may emit per second unless the config says otherwise
/// (`drops.samples-per-second`): the kernel-side rate limit, so that a flood of drops costs the
/// agent nothing beyond this. The agent writes the configured rate into `NW_SAMPLE_RATE`
/// (index 0) at every apply; 0 there takes no samples.
pub const SAMPLES_PER_SECOND: u32 = 20;
/// Ring buffer size (a power of two, a multiple of the page size): room for ~5,000 samples.
pub const SAMPLE_RING_BYTES: u32 = 256 * 1024;

/// The per-CPU state of the sample rate limit (`NW_SAMPLE_BUDGET`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct SampleBudget {
    pub window_start_ns: u64,
    pub taken: u32,
    /// Drops refused a sample since the budget ran out: the clock is only read every
    /// [`SAMPLE_CLOCK_EVERY`]th of them.
    pub refused: u32,
}

/// While the budget is spent, the clock (a helper call, which costs more than the rest of a
/// drop's bookkeeping) is read once per this many drops to see whether a new second began:
/// under a flood, sampling resumes at most this many drops late.
pub const SAMPLE_CLOCK_EVERY: u32 = 16;

/// The LPM tries (prefix -> class id, the fallback of the flat tables) allocate on insert, so
/// their size is only a ceiling.
pub const SRC_TRIE_ENTRIES: u32 = 1 << 22;

#[cfg(feature = "user")]
mod pod {
    use super::*;

    /// aya's `Pod` has no derive: each type's `bytemuck::Pod` derive above is the compile-time
    /// proof (`repr(C)`, no padding, every bit pattern valid) that implementing it is sound.
    macro_rules! aya_pod {
        ($($t:ty),* $(,)?) => {$(
            const _: fn() = || {
                fn proven<T: bytemuck::Pod>() {}
                proven::<$t>();
            };
            // SAFETY: `$t: bytemuck::Pod`, checked just above.
            unsafe impl aya::Pod for $t {}
        )*};
    }

    aya_pod!(
        RuleBits,
        SrcNode,
        SrcTables,
        SrcBucket,
        GenConfig,
        Switch,
        Stat,
        SlotName,
        FlowKey,
        crate::ct::FlowState,
        DropSample,
        SampleBudget,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_bit_matches_trailing_zeros() {
        for i in 0..64 {
            let x = 1u64 << i;
            assert_eq!(lowest_bit(x), i);
            assert_eq!(lowest_bit(x | (x << 1)), i);
            assert_eq!(lowest_bit(u64::MAX << i), i);
        }
    }

    #[test]
    fn first_common_is_lowest_shared_position() {
        let mut a = RuleBits::EMPTY;
        let mut b = RuleBits::EMPTY;
        a.set(3);
        a.set(200);
        b.set(200);
        b.set(255);
        assert_eq!(a.first_common(&b), Some(200));
        b.set(3);
        assert_eq!(a.first_common(&b), Some(3));
        assert_eq!(RuleBits::EMPTY.first_common(&a), None);
    }

    #[test]
    fn drop_index_round_trips() {
        for cause in [
            DROP_CAUSE_DEFAULT,
            DROP_CAUSE_INVALID,
            DROP_CAUSE_RULE_BASE + MAX_SLOTS - 1,
        ] {
            for fam in 0..2 {
                for proto in 0..5 {
                    let i = drop_index(cause, fam, proto);
                    assert!(i < DROP_STATS_ENTRIES);
                    assert_eq!(drop_index_parts(i), (cause, fam, proto));
                }
            }
        }
    }
}
