//! Connection tracking: one state machine for the XDP datapath (which keeps its own flow
//! table) and for the agent's reference tracker (which tells `explain` and the tests what
//! state conntrack gives a packet), so that the two cannot drift apart.
//!
//! It reproduces what the kernel's conntrack decides that matters to a firewall: whether a
//! packet belongs to a *live* flow (`established`), is an error about one (`related`), opens
//! one (`new`: the policy decides), or cannot be part of any (`invalid`: dropped before the
//! policy). The nft backend gets these states from conntrack itself; the tests send the same
//! sequences through both and compare.
//!
//! The TCP states and transitions are conntrack's (`tcp_conntracks` in
//! `nf_conntrack_proto_tcp.c`), folded into fewer states where conntrack's only differ in
//! their timeouts. Deliberate differences, all on the strict side:
//! - a TCP SYN without ACK is never `established`: it always goes to the policy (conntrack
//!   lets a SYN on a live connection pass as established; the nft backend skips the
//!   established accept for such SYNs, so both backends agree);
//! - a closing flow (TIME_WAIT after FINs both ways, CLOSE after a RST) ends at a deadline set
//!   when it began closing, which later segments do not extend (conntrack refreshes it);
//! - sequence numbers are not tracked: an in-state segment with a wrong sequence number is
//!   `established` here and `invalid` for conntrack (the TCP stack discards it either way).

/// TCP header flag bits.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

/// Which way a packet crosses the uplink: `In` from the remote to the node (XDP), `Out` from
/// the node (or a pod behind it) to the remote (TC egress).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dir {
    In = 0,
    Out = 1,
}

/// A TCP segment as conntrack classifies it (`get_conntrack_index`), after dropping the
/// flags it ignores (ECE, CWR, PSH).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Seg {
    Syn,
    SynAck,
    Fin,
    Ack,
    Rst,
    /// A combination conntrack refuses (`tcp_valid_flags`): no flags, SYN+FIN, SYN+RST,
    /// FIN without ACK, ...
    Invalid,
}

/// conntrack's `tcp_valid_flags` and `get_conntrack_index`.
#[inline(always)]
pub fn tcp_segment(flags: u8) -> Seg {
    use tcp_flags::*;
    match flags & !(ECE | CWR | PSH) {
        SYN | 0x22 /* SYN|URG */ => Seg::Syn,
        0x12 /* SYN|ACK */ => Seg::SynAck,
        RST | 0x14 /* RST|ACK */ => Seg::Rst,
        0x11 /* FIN|ACK */ | 0x31 /* FIN|ACK|URG */ => Seg::Fin,
        ACK | 0x30 /* ACK|URG */ => Seg::Ack,
        _ => Seg::Invalid,
    }
}

/// ICMP types the policy and the tracker care about: one definition for the agent and the
/// eBPF program.
pub mod icmp {
    /// ICMPv4 errors the implicit `icmp-errors` allowance accepts when they quote a live flow:
    /// unreachable (incl. frag needed), source quench, time exceeded, parameter problem.
    pub const V4_ERRORS: [u8; 4] = [3, 4, 11, 12];
    /// ICMPv6 errors the implicit allowance accepts: unreachable, packet too big, time
    /// exceeded, parameter problem.
    pub const V6_ERRORS: [u8; 4] = [1, 2, 3, 4];
    /// ICMPv6 neighbour discovery: router solicitation/advertisement, neighbour
    /// solicitation/advertisement, redirect.
    pub const ND_FIRST: u8 = 133;
    pub const ND_LAST: u8 = 137;

    #[inline(always)]
    pub fn is_error(v6: bool, t: u8) -> bool {
        if v6 {
            matches!(t, 1..=4)
        } else {
            matches!(t, 3 | 4 | 11 | 12)
        }
    }

    #[inline(always)]
    pub fn is_nd(v6: bool, t: u8) -> bool {
        v6 && (ND_FIRST..=ND_LAST).contains(&t)
    }
}

/// DHCP: the implicit `dhcp-client` allowance accepts udp from 67 to 68.
pub const DHCP_SERVER_PORT: u16 = 67;
pub const DHCP_CLIENT_PORT: u16 = 68;

/// What an ICMP message is to conntrack (`nf_conntrack_proto_icmp{,v6}.c`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IcmpKind {
    /// A query that opens a flow (echo, timestamp, info, address mask; ICMPv6 echo and node
    /// information). The value is the query type, which keys the flow with the identifier.
    Query(u8),
    /// The answer to a query of the given type: `established` if that query is live,
    /// otherwise `invalid`.
    Answer(u8),
    /// An error: `related` if the packet it quotes belongs to a live flow, else `invalid`.
    Error,
    /// ICMPv6 neighbour discovery and multicast listener messages: never tracked, the policy
    /// decides.
    Untracked,
    /// Anything else: conntrack cannot track it (`invalid`).
    Invalid,
}

#[inline(always)]
pub fn icmp_kind(v6: bool, t: u8) -> IcmpKind {
    if v6 {
        match t {
            // icmpv6_error: every type below 128 is an error.
            0..=127 => IcmpKind::Error,
            128 | 139 => IcmpKind::Query(t),
            129 | 140 => IcmpKind::Answer(t - 1),
            // noct_valid_new: MLD queries/reports/done, RS/RA/NS/NA, MLDv2 reports.
            130..=136 | 143 => IcmpKind::Untracked,
            _ => IcmpKind::Invalid,
        }
    } else {
        match t {
            3 | 4 | 5 | 11 | 12 => IcmpKind::Error,
            8 | 13 | 15 | 17 => IcmpKind::Query(t),
            0 => IcmpKind::Answer(8),
            14 | 16 | 18 => IcmpKind::Answer(t - 1),
            _ => IcmpKind::Invalid,
        }
    }
}

/// The flow key's `local_port` for an ICMP query flow: the query type, plus 0x100 when the
/// remote asked (so that the node's echo to a peer and the peer's echo to the node, with the
/// same identifier, are different flows, as for conntrack, whose ICMP tuples include the type).
#[inline(always)]
pub fn icmp_query_port(query: u8, asked_by: Dir) -> u16 {
    query as u16
        | if asked_by as u8 == Dir::In as u8 {
            0x100
        } else {
            0
        }
}

/// What [`Pkt::kind`] says a frame is.
pub mod pkt {
    pub const NOT_IP: u8 = 0;
    /// A fragment other than the first.
    pub const LATER_FRAGMENT: u8 = 1;
    /// The IP header (or what is above it) is malformed or truncated.
    pub const INVALID: u8 = 2;
    pub const TCP: u8 = 3;
    pub const UDP: u8 = 4;
    pub const ICMP: u8 = 5;
    pub const OTHER: u8 = 6;
}

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_DCCP: u8 = 33;
pub const IPPROTO_GRE: u8 = 47;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_SCTP: u8 = 132;
pub const IPPROTO_UDPLITE: u8 = 136;

/// A parsed packet as plain scalars: what the XDP program's parser produces, what the rules
/// and the tracker read, and what the agent's reference tracker builds for the same questions.
/// The eBPF program keeps it in map memory between the parse and the rest (see `forget` there).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Pkt {
    /// Addresses in network order; IPv4 in the first 4 bytes, the rest zero.
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Length of the IP packet: what counters add up, like nft's.
    pub len: u32,
    /// Offset and length of the upper-layer header in the frame (ICMP errors read their
    /// quote there).
    pub l4: u32,
    pub l4_len: u32,
    /// `FAMILY_IPV4` / `FAMILY_IPV6`.
    pub family: u32,
    /// One of [`pkt`].
    pub kind: u8,
    /// The IP protocol number (after IPv6 extension headers).
    pub proto: u8,
    /// TCP flags, or the ICMP type.
    pub flags: u8,
    pub _pad: u8,
    /// TCP/UDP (and SCTP, DCCP, UDP-Lite) ports; for ICMP the identifier in `sport`.
    pub sport: u16,
    pub dport: u16,
}

impl Pkt {
    pub const EMPTY: Pkt = Pkt {
        src: [0; 16],
        dst: [0; 16],
        len: 0,
        l4: 0,
        l4_len: 0,
        family: 0,
        kind: pkt::NOT_IP,
        proto: 0,
        flags: 0,
        _pad: 0,
        sport: 0,
        dport: 0,
    };

    #[inline(always)]
    pub fn is_v6(&self) -> bool {
        self.family == crate::xdp::FAMILY_IPV6
    }
}

/// What a packet is to tracking.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// Part of a flow: its key (as inbound packets look) and kind.
    Flow(FlowKey, Kind),
    /// An ICMP error: related to the flow of the packet it quotes, or invalid.
    Error,
    /// Never tracked (ICMPv6 neighbour discovery, MLD): the policy decides.
    Untracked,
    /// Nothing conntrack could track: dropped as invalid.
    Invalid,
}

#[inline(always)]
fn other_dir(dir: Dir) -> Dir {
    if dir as u8 == Dir::In as u8 {
        Dir::Out
    } else {
        Dir::In
    }
}

#[inline(always)]
fn key(p: &Pkt, dir: Dir, sport: u16, dport: u16) -> FlowKey {
    let inbound = dir as u8 == Dir::In as u8;
    FlowKey {
        remote: if inbound { p.src } else { p.dst },
        local: if inbound { p.dst } else { p.src },
        remote_port: if inbound { sport } else { dport },
        local_port: if inbound { dport } else { sport },
        proto: p.proto,
        family: p.family as u8,
        _pad: [0; 2],
    }
}

/// Classifies a packet (of kind TCP, UDP, ICMP or OTHER) going `dir`.
#[inline(always)]
pub fn classify(p: &Pkt, dir: Dir) -> Class {
    match p.kind {
        pkt::TCP => match tcp_segment(p.flags) {
            Seg::Invalid => Class::Invalid,
            seg => Class::Flow(key(p, dir, p.sport, p.dport), Kind::Tcp(seg)),
        },
        pkt::UDP => Class::Flow(key(p, dir, p.sport, p.dport), Kind::Udp),
        pkt::ICMP => {
            let v6 = p.is_v6();
            // The identifier keys the flow from either end: it takes the remote port's place,
            // the query type and who asked the local port's.
            let (query, asked_by, kind) = match icmp_kind(v6, p.flags) {
                IcmpKind::Query(q) => (q, dir, Kind::IcmpQuery { v6 }),
                IcmpKind::Answer(q) => (q, other_dir(dir), Kind::IcmpAnswer { v6 }),
                IcmpKind::Error => return Class::Error,
                IcmpKind::Untracked => return Class::Untracked,
                IcmpKind::Invalid => return Class::Invalid,
            };
            let port = icmp_query_port(query, asked_by);
            let (s, d) = if dir as u8 == Dir::In as u8 {
                (p.sport, port)
            } else {
                (port, p.sport)
            };
            Class::Flow(key(p, dir, s, d), kind)
        }
        pkt::OTHER => {
            let kind = match p.proto {
                IPPROTO_UDPLITE => Kind::Udp,
                IPPROTO_GRE => Kind::Gre,
                _ => Kind::Other,
            };
            Class::Flow(key(p, dir, p.sport, p.dport), kind)
        }
        _ => Class::Invalid,
    }
}

/// The key of the flow of a packet that went `sent` (the node's own: `Out`; one it received:
/// `In`), as quoted by an ICMP error about it, which travels the other way (whose quote holds
/// only the first 8 bytes above IP: TCP flags are not among them).
#[inline(always)]
pub fn quoted_key(q: &Pkt, sent: Dir) -> Option<FlowKey> {
    let out = sent as u8 == Dir::Out as u8;
    match q.kind {
        pkt::TCP | pkt::UDP | pkt::OTHER => Some(key(q, sent, q.sport, q.dport)),
        pkt::ICMP => match icmp_kind(q.is_v6(), q.flags) {
            IcmpKind::Query(query) => {
                let port = icmp_query_port(query, sent);
                Some(if out {
                    key(q, sent, port, q.sport)
                } else {
                    key(q, sent, q.sport, port)
                })
            }
            _ => None,
        },
        _ => None,
    }
}

/// What tracking needs to know of a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Tcp(Seg),
    /// UDP and UDP-Lite: 30 s, 120 s once both sides spoke after the first 2 s.
    Udp,
    /// An ICMP query or answer (errors and untracked types are decided before tracking).
    IcmpQuery {
        v6: bool,
    },
    IcmpAnswer {
        v6: bool,
    },
    /// GRE: like UDP, with its own timeouts and no 2 s rule.
    Gre,
    /// Any other protocol: one flow per address pair (and ports for SCTP/DCCP).
    Other,
}

/// TCP state of a flow entry.
pub mod tcp_state {
    /// The origin sent a SYN.
    pub const SYN_SENT: u8 = 1;
    /// The other side answered with SYN+ACK.
    pub const SYN_RECV: u8 = 2;
    pub const ESTABLISHED: u8 = 3;
    /// One side sent a FIN.
    pub const FIN_WAIT: u8 = 4;
    /// The last ACK after FINs both ways came: the flow ends at its deadline, which no segment
    /// extends.
    pub const TIME_WAIT: u8 = 5;
    /// A RST ended an answered flow: as TIME_WAIT, with conntrack's CLOSE timeout.
    pub const CLOSE: u8 = 6;
    /// Both sides sent a FIN, the last ACK has not come (a SYN does not reopen the tuple yet).
    pub const LAST_ACK: u8 = 7;
}

/// The value of a flow entry: 24 bytes, three words. The small fields are bytes of `bits`
/// behind accessors rather than fields of their own: built on the eBPF program's stack, byte
/// fields next to each other came out as misaligned 2-byte stores, which the verifier refuses
/// (the build allows misaligned access for packet reads), and copies of them as `memmove`
/// calls of byte loops.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct FlowState {
    /// The flow is live while the monotonic clock (ns) is before this.
    pub deadline: u64,
    /// When it was created (ns): UDP's 2 s rule.
    pub created: u64,
    /// [`tcp_state`] (0 for other protocols), the [`Dir`] of the packet that opened the flow,
    /// whether the other side has sent anything (conntrack's `SEEN_REPLY`), whether the flow
    /// is in the assured table (conntrack's `ASSURED`: it survives floods of new flows), FIN
    /// seen from the remote and from the node, and the last TCP segment when conntrack's next
    /// decision depends on it ([`last`]): a byte each, from the lowest.
    pub bits: u64,
}

macro_rules! byte_field {
    ($get:ident, $set:ident, $at:expr) => {
        #[inline(always)]
        pub fn $get(&self) -> u8 {
            (self.bits >> $at) as u8
        }
        #[inline(always)]
        pub fn $set(&mut self, v: u8) {
            self.bits = (self.bits & !(0xff << $at)) | ((v as u64) << $at);
        }
    };
}

impl FlowState {
    byte_field!(tcp, set_tcp, 0);
    byte_field!(origin, set_origin, 8);
    byte_field!(replied, set_replied, 16);
    byte_field!(assured, set_assured, 24);
    byte_field!(fin_in, set_fin_in, 32);
    byte_field!(fin_out, set_fin_out, 40);
    byte_field!(last, set_last, 48);

    /// A copy made word by word. A plain `*e` of a value in map memory is an aggregate copy
    /// that LLVM may lower to a `memmove` call, which the BPF backend turns into a call of a
    /// byte-by-byte loop.
    #[inline(always)]
    pub fn copy(&self) -> FlowState {
        FlowState {
            deadline: self.deadline,
            created: self.created,
            bits: self.bits,
        }
    }
}

impl FlowState {
    /// The flow [`track`] created at time 0, created at `now` instead.
    #[inline(always)]
    pub fn started(&self, now: u64) -> FlowState {
        FlowState {
            deadline: self.deadline + now,
            created: self.created + now,
            bits: self.bits,
        }
    }
}

/// Values of [`FlowState::last`]: conntrack remembers the last segment (`last_index`,
/// `last_dir`); a closed flow reopens on a SYN only from the side whose RST closed it (or
/// after FINs), and a SYN it ignored is confirmed by the other side's SYN+ACK.
pub mod last {
    pub const OTHER: u8 = 0;
    pub const RST_IN: u8 = 1;
    pub const RST_OUT: u8 = 2;
    pub const SYN_IN: u8 = 3;
    pub const SYN_OUT: u8 = 4;
}

/// Timeouts in seconds, from the network namespace's `net.netfilter.nf_conntrack_*`
/// sysctls (so the nft and XDP backends of one node agree), or conntrack's defaults.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct Timeouts {
    pub tcp_syn_sent: u32,
    pub tcp_syn_recv: u32,
    pub tcp_established: u32,
    pub tcp_fin_wait: u32,
    pub tcp_last_ack: u32,
    pub tcp_time_wait: u32,
    pub tcp_close: u32,
    /// A flow picked up in the middle (no reply seen yet).
    pub tcp_unacknowledged: u32,
    pub udp: u32,
    pub udp_stream: u32,
    pub icmp: u32,
    pub icmpv6: u32,
    pub gre: u32,
    pub gre_stream: u32,
    pub generic: u32,
    /// `nf_conntrack_tcp_loose`: pick up connections in the middle (a lone ACK opens a flow).
    pub tcp_loose: u32,
}

impl Timeouts {
    /// conntrack's defaults (Linux 6.x).
    pub const DEFAULT: Timeouts = Timeouts {
        tcp_syn_sent: 120,
        tcp_syn_recv: 60,
        tcp_established: 432_000,
        tcp_fin_wait: 120,
        tcp_last_ack: 30,
        tcp_time_wait: 120,
        tcp_close: 10,
        tcp_unacknowledged: 300,
        udp: 30,
        udp_stream: 120,
        icmp: 30,
        icmpv6: 30,
        gre: 30,
        gre_stream: 180,
        generic: 600,
        tcp_loose: 1,
    };
}

impl Default for Timeouts {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The state conntrack gives a packet.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ct {
    /// Opens a flow (or belongs to one the other side has not answered): the policy decides.
    New,
    Established,
    Invalid,
}

/// What to do with the flow table after a packet.
///
/// Not an enum with the new state inside: in the eBPF program, the undefined payload of the
/// variants without one lets LLVM fill it from any register, which the verifier refuses.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Write {
    Keep,
    /// A new flow, [`Tracked::next`]: stored only if the packet passes (conntrack confirms a
    /// flow when its first packet leaves the stack).
    Create,
    /// The existing entry becomes [`Tracked::next`], whatever happens to the packet (as
    /// conntrack's).
    Update,
    Delete,
}

/// `repr(C)`: the two verdict bytes after the words of `next` (see [`FlowState`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tracked {
    /// The entry to store for `Create` and `Update` (all zero otherwise).
    pub next: FlowState,
    pub ct: Ct,
    pub write: Write,
}

impl Tracked {
    #[inline(always)]
    pub fn new(ct: Ct, write: Write, next: FlowState) -> Tracked {
        Tracked { next, ct, write }
    }
}

use crate::xdp::FlowKey;

const NS: u64 = 1_000_000_000;
/// An entry's deadline is rewritten only when it would move by more than this, so that a
/// busy flow does not write its (shared) cache line on every packet.
pub const REFRESH_NS: u64 = NS;
/// UDP flows that still speak this long after they began get the stream timeout.
pub const UDP_STREAM_AFTER_NS: u64 = 2 * NS;

#[inline(always)]
fn secs(s: u32) -> u64 {
    s as u64 * NS
}

#[inline(always)]
fn tracked(ct: Ct, write: Write) -> Tracked {
    Tracked::new(ct, write, FlowState::default())
}

#[inline(always)]
fn create(dir: Dir, tcp: u8, now: u64, timeout: u32) -> Tracked {
    let mut next = FlowState {
        deadline: now + secs(timeout),
        created: now,
        bits: 0,
    };
    next.set_tcp(tcp);
    next.set_origin(dir as u8);
    Tracked::new(Ct::New, Write::Create, next)
}

/// Writes `n` if it differs from `old` in anything but a deadline moved by less than
/// [`REFRESH_NS`].
#[inline(always)]
fn update(ct: Ct, old: &FlowState, n: FlowState) -> Tracked {
    let mut same = n;
    same.deadline = old.deadline;
    if same == old.copy() && n.deadline < old.deadline + REFRESH_NS {
        return tracked(ct, Write::Keep);
    }
    Tracked::new(ct, Write::Update, n)
}

/// Whether `e` is a live flow at `now`.
#[inline(always)]
pub fn live(e: &FlowState, now: u64) -> bool {
    now < e.deadline
}

/// The state of a packet of kind `kind` going `dir`, given the entry stored under its flow
/// key (live or not), and what to write back.
///
/// Without an entry, nothing in the answer depends on `now` but the new flow's times, which
/// are `now` plus constants: a caller may judge with `now = 0` and [`FlowState::started`] the
/// flow when it stores it. The XDP program does, so that unsolicited packets (most of what it
/// drops) never read the clock.
#[inline(always)]
pub fn track(entry: Option<&FlowState>, kind: Kind, dir: Dir, now: u64, t: &Timeouts) -> Tracked {
    let e = match entry {
        Some(e) if live(e, now) => Some(e),
        _ => None,
    };
    match kind {
        Kind::Tcp(seg) => tcp(e, seg, dir, now, t),
        Kind::Udp => datagram(e, dir, now, t.udp, t.udp_stream, UDP_STREAM_AFTER_NS),
        Kind::Gre => datagram(e, dir, now, t.gre, t.gre_stream, 0),
        Kind::Other => datagram(e, dir, now, t.generic, t.generic, u64::MAX),
        Kind::IcmpQuery { v6 } | Kind::IcmpAnswer { v6 } => {
            let timeout = if v6 { t.icmpv6 } else { t.icmp };
            let answer = matches!(kind, Kind::IcmpAnswer { .. });
            match e {
                None if answer => tracked(Ct::Invalid, Write::Keep),
                None => create(dir, 0, now, timeout),
                Some(e) => {
                    let mut n = e.copy();
                    n.deadline = now + secs(timeout);
                    if answer {
                        n.set_replied(1);
                    }
                    let ct = if answer || e.replied() != 0 {
                        Ct::Established
                    } else {
                        Ct::New
                    };
                    update(ct, e, n)
                }
            }
        }
    }
}

/// UDP, GRE and other protocols: `reply_timeout` once the other side has spoken, and for
/// UDP only if the flow began more than `stream_after` ago (conntrack's stream detection).
#[inline(always)]
fn datagram(
    e: Option<&FlowState>,
    dir: Dir,
    now: u64,
    timeout: u32,
    reply_timeout: u32,
    stream_after: u64,
) -> Tracked {
    let Some(e) = e else {
        return create(dir, 0, now, timeout);
    };
    let reply = dir as u8 != e.origin();
    let ct = if reply || e.replied() != 0 {
        Ct::Established
    } else {
        Ct::New
    };
    let mut n = e.copy();
    // conntrack looks at SEEN_REPLY as it was before this packet.
    let stream = e.replied() != 0 && now.saturating_sub(e.created) > stream_after;
    n.deadline = now + secs(if stream { reply_timeout } else { timeout });
    if reply {
        n.set_replied(1);
    }
    if stream {
        n.set_assured(1);
    }
    update(ct, e, n)
}

#[inline(always)]
fn tcp(e: Option<&FlowState>, seg: Seg, dir: Dir, now: u64, t: &Timeouts) -> Tracked {
    use tcp_state::*;
    let Some(e) = e else {
        return match seg {
            Seg::Syn => create(dir, SYN_SENT, now, t.tcp_syn_sent),
            Seg::Ack if t.tcp_loose != 0 => create(dir, ESTABLISHED, now, t.tcp_unacknowledged),
            _ => tracked(Ct::Invalid, Write::Keep),
        };
    };
    let reply = dir as u8 != e.origin();
    let r = tcp_live(e, seg, reply, dir, now, t);
    if r.ct == Ct::Invalid || !matches!(r.write, Write::Keep | Write::Update) {
        return r;
    }
    let mut n = if r.write == Write::Update {
        r.next
    } else {
        e.copy()
    };
    // Whatever conntrack accepts from the answering side, even a packet it ignores, marks the
    // flow answered (`SEEN_REPLY`): a RST then closes it rather than killing it.
    if reply {
        n.set_replied(1);
    }
    let inbound = dir as u8 == Dir::In as u8;
    n.set_last(match seg {
        Seg::Rst if inbound => last::RST_IN,
        Seg::Rst => last::RST_OUT,
        // A SYN conntrack ignores (the flow is not new to it).
        Seg::Syn if inbound => last::SYN_IN,
        Seg::Syn => last::SYN_OUT,
        _ => last::OTHER,
    });
    if n == e.copy() {
        return tracked(r.ct, Write::Keep);
    }
    Tracked::new(r.ct, Write::Update, n)
}

/// [`tcp`] for a live flow `e`, `reply` when the packet comes from the side that answered.
#[inline(always)]
fn tcp_live(e: &FlowState, seg: Seg, reply: bool, dir: Dir, now: u64, t: &Timeouts) -> Tracked {
    use tcp_state::*;
    let ct = if reply || e.replied() != 0 {
        Ct::Established
    } else {
        Ct::New
    };
    let inbound = dir as u8 == Dir::In as u8;
    // conntrack reopens a closed tuple on a SYN (kills the old flow and starts a new one)
    // after FINs, or when the last segment was a RST from the SYN's own side.
    let fins = e.fin_in() != 0 || e.fin_out() != 0;
    let own_rst = e.last() == if inbound { last::RST_IN } else { last::RST_OUT };
    let reopens = e.tcp() == TIME_WAIT || (e.tcp() == CLOSE && !reply && (fins || own_rst));
    match seg {
        Seg::Invalid => tracked(Ct::Invalid, Write::Keep),
        // A SYN is never return traffic.
        Seg::Syn if reopens => create(dir, SYN_SENT, now, t.tcp_syn_sent),
        // From the answering side of a flow past its first SYN, conntrack refuses a SYN; to
        // the first one it is a simultaneous open (SYN_SENT, answered).
        Seg::Syn if reply && e.tcp() != SYN_SENT => tracked(Ct::Invalid, Write::Keep),
        Seg::Syn => tracked(Ct::New, Write::Keep),
        Seg::SynAck => {
            // Answering the first SYN, or, in a simultaneous open, either side's SYN; or a
            // SYN conntrack ignored (the ends restarted their connection): it gets in step.
            let answers_ignored = e.last() == if inbound { last::SYN_OUT } else { last::SYN_IN };
            if (e.tcp() == SYN_SENT && (reply || e.replied() != 0))
                || (answers_ignored && e.tcp() != SYN_SENT)
            {
                let mut n = e.copy();
                n.set_tcp(SYN_RECV);
                n.set_replied(1);
                n.deadline = now + secs(t.tcp_syn_recv);
                Tracked::new(Ct::Established, Write::Update, n)
            } else if reply || e.tcp() == SYN_RECV {
                // A retransmitted SYN+ACK: ignored, not a change.
                tracked(ct, Write::Keep)
            } else {
                tracked(Ct::Invalid, Write::Keep)
            }
        }
        // A RST before any answer kills the flow (the origin's is judged as new).
        Seg::Rst if e.replied() == 0 && !reply => tracked(ct, Write::Delete),
        Seg::Rst if e.replied() == 0 => tracked(Ct::Established, Write::Delete),
        Seg::Rst if e.tcp() == CLOSE => tracked(ct, Write::Keep),
        Seg::Rst => {
            let mut n = e.copy();
            n.set_tcp(CLOSE);
            n.deadline = now + secs(t.tcp_close);
            Tracked::new(ct, Write::Update, n)
        }
        Seg::Ack | Seg::Fin if e.tcp() == SYN_SENT => {
            if reply && seg == Seg::Ack {
                tracked(Ct::Established, Write::Keep)
            } else {
                tracked(Ct::Invalid, Write::Keep)
            }
        }
        Seg::Ack | Seg::Fin if e.tcp() == CLOSE => tracked(ct, Write::Keep),
        Seg::Ack | Seg::Fin => {
            let mut n = e.copy();
            if reply {
                n.set_replied(1);
            }
            if seg == Seg::Fin {
                if dir as u8 == Dir::In as u8 {
                    n.set_fin_in(1);
                } else {
                    n.set_fin_out(1);
                }
            }
            n.set_tcp(match e.tcp() {
                TIME_WAIT => TIME_WAIT,
                LAST_ACK if seg == Seg::Ack => TIME_WAIT,
                LAST_ACK => LAST_ACK,
                _ if n.fin_in() != 0 && n.fin_out() != 0 => LAST_ACK,
                _ if seg == Seg::Fin || e.tcp() == FIN_WAIT => FIN_WAIT,
                SYN_RECV if !reply => ESTABLISHED,
                s => s,
            });
            n.deadline = match n.tcp() {
                TIME_WAIT | LAST_ACK if e.tcp() == n.tcp() => e.deadline,
                TIME_WAIT => now + secs(t.tcp_time_wait),
                LAST_ACK => now + secs(t.tcp_last_ack),
                FIN_WAIT => now + secs(t.tcp_fin_wait),
                SYN_RECV => now + secs(t.tcp_syn_recv),
                _ if n.replied() != 0 => now + secs(t.tcp_established),
                _ => now + secs(t.tcp_unacknowledged),
            };
            if n.tcp() == ESTABLISHED && n.replied() != 0 {
                n.set_assured(1);
            }
            update(ct, e, n)
        }
    }
}

/// The state of an ICMP error quoting a packet of the flow `quoted` (looked up by the
/// quoted packet's key): `related` when that flow is live, else `invalid`.
#[inline(always)]
pub fn error_is_related(quoted: Option<&FlowState>, now: u64) -> bool {
    matches!(quoted, Some(e) if live(e, now))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timeouts = Timeouts::DEFAULT;

    /// Runs `steps` (direction, kind, seconds since start) against one entry, applying every
    /// write as the datapath does (a create only when `passes`), and returns each state.
    fn run(steps: &[(Dir, Kind, u64)]) -> [Option<Ct>; 16] {
        let mut e: Option<FlowState> = None;
        let mut out = [None; 16];
        for (i, &(dir, kind, at)) in steps.iter().enumerate() {
            let r = track(e.as_ref(), kind, dir, at * NS, &T);
            out[i] = Some(r.ct);
            match r.write {
                Write::Keep => {}
                Write::Create if r.ct != Ct::Invalid => e = Some(r.next),
                Write::Create => {}
                Write::Update => e = Some(r.next),
                Write::Delete => e = None,
            }
        }
        out
    }

    use Ct::*;
    use Dir::*;
    const SYN: Kind = Kind::Tcp(Seg::Syn);
    const SYNACK: Kind = Kind::Tcp(Seg::SynAck);
    const ACK: Kind = Kind::Tcp(Seg::Ack);
    const FIN: Kind = Kind::Tcp(Seg::Fin);
    const RST: Kind = Kind::Tcp(Seg::Rst);

    /// What lets the XDP program leave the clock unread for packets without a flow.
    #[test]
    fn judging_without_an_entry_does_not_need_the_clock() {
        let kinds = [
            Kind::Udp,
            Kind::Gre,
            Kind::Other,
            Kind::IcmpQuery { v6: false },
            Kind::IcmpQuery { v6: true },
            Kind::IcmpAnswer { v6: false },
            Kind::IcmpAnswer { v6: true },
            Kind::Tcp(Seg::Syn),
            Kind::Tcp(Seg::SynAck),
            Kind::Tcp(Seg::Fin),
            Kind::Tcp(Seg::Ack),
            Kind::Tcp(Seg::Rst),
            Kind::Tcp(Seg::Invalid),
        ];
        let strict = Timeouts { tcp_loose: 0, ..T };
        for t in [T, strict] {
            for &kind in &kinds {
                for dir in [In, Out] {
                    for now in [1, 7 * NS + 3, u64::MAX / 4] {
                        let at_zero = track(None, kind, dir, 0, &t);
                        let want = track(None, kind, dir, now, &t);
                        assert_eq!(
                            (at_zero.ct, at_zero.write),
                            (want.ct, want.write),
                            "{kind:?} {dir:?}"
                        );
                        assert!(
                            matches!(want.write, Write::Create | Write::Keep),
                            "{kind:?} {dir:?}"
                        );
                        if want.write == Write::Create {
                            assert_eq!(
                                at_zero.next.started(now),
                                want.next,
                                "{kind:?} {dir:?} at {now}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn segments_follow_conntracks_flag_table() {
        use tcp_flags::*;
        assert_eq!(tcp_segment(SYN | ECE | CWR), Seg::Syn);
        assert_eq!(tcp_segment(SYN | ACK | PSH), Seg::SynAck);
        assert_eq!(tcp_segment(ACK | PSH), Seg::Ack);
        assert_eq!(tcp_segment(FIN | ACK | PSH), Seg::Fin);
        for bad in [
            0,
            FIN,
            SYN | FIN,
            SYN | RST,
            FIN | PSH | URG,
            0x3f,
            SYN | ACK | URG,
            PSH,
        ] {
            assert_eq!(tcp_segment(bad), Seg::Invalid, "flags {bad:#x}");
        }
    }

    #[test]
    fn inbound_connection_lifecycle() {
        let s = run(&[
            (In, SYN, 0),
            (Out, SYNACK, 0),
            (In, ACK, 0),
            (In, ACK, 1),
            (Out, ACK, 1),
        ]);
        assert_eq!(
            &s[..5],
            &[
                Some(New),
                Some(Established),
                Some(Established),
                Some(Established),
                Some(Established)
            ]
        );
    }

    #[test]
    fn a_syn_is_never_established() {
        // From the side that answered, a SYN on a live flow is invalid, as for conntrack.
        let s = run(&[
            (Out, SYN, 0),
            (In, SYNACK, 0),
            (Out, ACK, 0),
            (In, SYN, 1),
            (Out, SYN, 1),
        ]);
        assert_eq!(
            &s[..5],
            &[
                Some(New),
                Some(Established),
                Some(Established),
                Some(Invalid),
                Some(New)
            ]
        );
        let s = run(&[(In, SYN, 0), (Out, SYNACK, 0), (In, ACK, 0), (In, SYN, 1)]);
        assert_eq!(s[3], Some(New));
    }

    #[test]
    fn rst_ends_the_flow_after_the_close_timeout() {
        let s = run(&[
            (In, SYN, 0),
            (Out, SYNACK, 0),
            (In, ACK, 0),
            (In, RST, 1),
            (In, ACK, 5),
            (Out, SYN, 5),
            (In, RST, 12),
            (In, FIN, 12),
            (In, ACK, 12),
        ]);
        let want = [
            New,
            Established,
            Established,
            Established,
            Established,
            Invalid,
            Invalid,
            Invalid,
            New,
        ];
        assert_eq!(&s[..9], &want.map(Some));
        // Refused: the answer is the RST, and the flow goes at once.
        let s = run(&[(Out, SYN, 0), (In, RST, 0), (In, ACK, 0)]);
        assert_eq!(&s[..3], &[Some(New), Some(Established), Some(New)]);
    }

    #[test]
    fn fin_close_lives_for_time_wait_from_the_second_fin() {
        let s = run(&[
            (Out, SYN, 0),
            (In, SYNACK, 0),
            (Out, ACK, 0),
            (Out, FIN, 10),
            (In, FIN, 10),
            (Out, ACK, 10),
            (In, ACK, 100),
            (In, ACK, 129),
            (In, ACK, 131),
            (In, FIN, 131),
            (In, SYN, 131),
        ]);
        assert_eq!(s[6], Some(Established), "within TIME_WAIT");
        assert_eq!(
            s[7],
            Some(Established),
            "segments do not extend TIME_WAIT, but it is 120 s"
        );
        assert_eq!(
            s[8],
            Some(New),
            "past TIME_WAIT a lone ACK is picked up as new"
        );
        assert_eq!(
            s[9],
            Some(New),
            "the pickup above (had it passed) now holds the tuple"
        );
        assert_eq!(s[10], Some(New));
    }

    #[test]
    fn stray_segments_without_a_flow_are_invalid() {
        for k in [SYNACK, FIN, RST, Kind::Tcp(Seg::Invalid)] {
            assert_eq!(run(&[(In, k, 0)])[0], Some(Invalid), "{k:?}");
        }
        assert_eq!(run(&[(In, ACK, 0)])[0], Some(New), "loose pickup");
    }

    #[test]
    fn origin_segments_before_an_answer_are_new_or_invalid() {
        let s = run(&[(In, SYN, 0), (In, ACK, 0), (In, FIN, 0), (In, SYN, 0)]);
        assert_eq!(
            &s[..4],
            &[Some(New), Some(Invalid), Some(Invalid), Some(New)]
        );
    }

    #[test]
    fn udp_timeouts_follow_conntrack() {
        // One exchange: 30 s after the last packet.
        let s = run(&[(Out, Kind::Udp, 0), (In, Kind::Udp, 1), (In, Kind::Udp, 31)]);
        assert_eq!(&s[..3], &[Some(New), Some(Established), Some(New)]);
        // A stream (replies after 2 s): 120 s.
        let s = run(&[
            (Out, Kind::Udp, 0),
            (In, Kind::Udp, 1),
            (Out, Kind::Udp, 3),
            (In, Kind::Udp, 100),
        ]);
        assert_eq!(s[3], Some(Established));
        // Unanswered: the origin's own packets stay new.
        let s = run(&[
            (In, Kind::Udp, 0),
            (In, Kind::Udp, 1),
            (Out, Kind::Udp, 2),
            (In, Kind::Udp, 3),
        ]);
        assert_eq!(
            &s[..4],
            &[Some(New), Some(New), Some(Established), Some(Established)]
        );
    }

    #[test]
    fn icmp_answers_need_a_query() {
        let q = Kind::IcmpQuery { v6: false };
        let a = Kind::IcmpAnswer { v6: false };
        assert_eq!(run(&[(In, a, 0)])[0], Some(Invalid));
        let s = run(&[(Out, q, 0), (In, a, 1), (In, a, 32)]);
        assert_eq!(&s[..3], &[Some(New), Some(Established), Some(Invalid)]);
    }

    #[test]
    fn icmp_kinds() {
        assert_eq!(icmp_kind(false, 8), IcmpKind::Query(8));
        assert_eq!(icmp_kind(false, 0), IcmpKind::Answer(8));
        assert_eq!(icmp_kind(false, 5), IcmpKind::Error);
        assert_eq!(icmp_kind(false, 9), IcmpKind::Invalid);
        assert_eq!(icmp_kind(false, 19), IcmpKind::Invalid);
        assert_eq!(icmp_kind(true, 129), IcmpKind::Answer(128));
        assert_eq!(icmp_kind(true, 135), IcmpKind::Untracked);
        assert_eq!(icmp_kind(true, 137), IcmpKind::Invalid);
        assert_eq!(icmp_kind(true, 100), IcmpKind::Error);
        assert_ne!(icmp_query_port(8, In), icmp_query_port(8, Out));
    }
}
