//! The objects of table `inet nodewall` (sets, named counters, chains and rules), and how a
//! policy becomes them.
//!
//! This description is the single source for both outputs of the backend: the `nft -f` script
//! (`script.rs`) and the netlink batch (`netlink/`). Both must therefore map every [`Match`] to
//! exactly what `nft` itself generates for the rendered text, so `nft list` shows the same
//! table whichever way it was loaded.
//!
//! Each policy rule becomes, per address family, an nft rule testing protocol and port first
//! and the source last (the source is the costly lookup; see [`Builder::rule`]). Sources are an
//! interval set, or, for many networks of few prefix lengths, one hash set per prefix length
//! and one nft rule per set (see [`by_prefix_length`]): these adjacent rules share the policy
//! rule's counter and verdict and match disjoint sources, so they act as one rule.
//!
//! A transport protocol with several port rules is dispatched by port instead of walked rule by
//! rule: one verdict-map lookup sends a packet to the chain holding only the rules its port can
//! match (see [`dispatch`]).
//!
//! Here: the description itself (an IR of nft objects). [`lower`]: policy -> IR. [`cost`]: the
//! measured cost model that picks how a rule's sources are looked up. [`dispatch`]: the port
//! dispatch of the inbound rules.

mod cost;
mod dispatch;
mod egress;
mod lower;

pub use lower::{build, restamp};

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const BOTH: [Family; 2] = [Family::V4, Family::V6];

    /// The `family` label of drop counters.
    pub fn label(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }

    /// Bits in an address of this family.
    pub fn bits(self) -> u32 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    /// The ICMP protocol of this family.
    pub fn icmp(self) -> u8 {
        match self {
            Family::V4 => IPPROTO_ICMP,
            Family::V6 => IPPROTO_ICMPV6,
        }
    }
}

/// The complete table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ruleset {
    pub sets: Vec<SetDef>,
    pub counters: Vec<CounterDef>,
    /// Base chain first, then the chains it reaches, in the order they are created.
    pub chains: Vec<ChainDef>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SetKind {
    Addr4,
    Addr6,
    Port,
    IfName,
    IcmpType,
    Icmpv6Type,
    /// Network addresses of one prefix length (a hash set, looked up with the packet's masked
    /// source address).
    Net4,
    Net6,
    /// A verdict map of port ranges (`type inet_service : verdict; flags interval`), looked up
    /// by a [`Match::DportVmap`].
    PortVerdict,
    /// A verdict map of single ports (`type inet_service : verdict`, a hash; its elements are
    /// [`Elem::PortVerdict`]s of one port each): the dispatch when the named ports are few
    /// enough to list one by one. On kernel 6.18 an interval map's lookup is a binary search
    /// through a callback per step, about 100 ns per packet on this VM against about 25 for
    /// the hash (perf of the bench's dropped frame).
    PortVerdictExact,
}

impl SetKind {
    /// Interval sets hold ranges; the others single values.
    pub fn interval(self) -> bool {
        matches!(
            self,
            SetKind::Addr4 | SetKind::Addr6 | SetKind::Port | SetKind::PortVerdict
        )
    }

    /// Maps hold a verdict per element ([`Elem::PortVerdict`]).
    pub fn map(self) -> bool {
        matches!(self, SetKind::PortVerdict | SetKind::PortVerdictExact)
    }
}

/// One element. Ranges are inclusive; a single value is a range of one for interval sets.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Elem {
    V4(u32, u32),
    V6(u128, u128),
    Port(u16, u16),
    IfName(String),
    Icmp(u8),
    /// The network address of a prefix, in a [`SetKind::Net4`] / [`SetKind::Net6`] set.
    Net4(u32),
    Net6(u128),
    /// A port range and its verdict, in a [`SetKind::PortVerdict`] map.
    PortVerdict(u16, u16, Verdict),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetDef {
    pub name: String,
    pub kind: SetKind,
    pub elems: Vec<Elem>,
}

impl SetDef {
    /// The `size` a set of networks of one prefix length is declared with, `None` for other
    /// sets. Declared, the kernel picks its fixed-size hash and allocates the buckets once:
    /// undeclared, it picks the resizable hash, which starts at a handful of buckets and
    /// inserts a large set through its slow path while rehashing behind it (40% of the time
    /// of applying a million /64s; 1.29 s of kernel time against 0.59 s declared). The size
    /// is also the most the set will hold, so it leaves room (half as many again, rounded up
    /// to a power of two, at least 64): a re-apply that needs another size rebuilds the table
    /// in the same transaction (see `netlink::diff::compatible`).
    pub fn size(&self) -> Option<u32> {
        matches!(
            self.kind,
            SetKind::Net4 | SetKind::Net6 | SetKind::PortVerdictExact
        )
        .then(|| {
            let room = self.elems.len().saturating_mul(3) / 2;
            room.max(64).next_power_of_two().min(1 << 31) as u32
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CounterDef {
    pub name: String,
    pub comment: String,
}

/// Where a base chain hooks (a `filter` chain with policy accept).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HookPoint {
    /// Inbound: everything arriving on an uplink, before DNAT.
    Prerouting,
    /// Egress of forwarded (pod) traffic: the pod's own source address, before SNAT.
    Forward,
    /// Egress of what the node itself sends.
    Output,
}

impl HookPoint {
    pub fn name(self) -> &'static str {
        match self {
            HookPoint::Prerouting => "prerouting",
            HookPoint::Forward => "forward",
            HookPoint::Output => "output",
        }
    }

    /// The netfilter hook number.
    pub fn number(self) -> u32 {
        (match self {
            HookPoint::Prerouting => libc::NF_INET_PRE_ROUTING,
            HookPoint::Forward => libc::NF_INET_FORWARD,
            HookPoint::Output => libc::NF_INET_LOCAL_OUT,
        }) as u32
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Hook {
    pub point: HookPoint,
    pub priority: i32,
}

impl Hook {
    /// As the kernel reports it: (hook number, priority).
    pub fn kernel(self) -> (u32, i32) {
        (self.point.number(), self.priority)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainDef {
    pub name: String,
    /// Some for a base chain: hooked there, policy accept.
    pub hook: Option<Hook>,
    pub rules: Vec<RuleDef>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RuleDef {
    pub matches: Vec<Match>,
    /// Sends the packet to an NFLOG group (a drop sample for the daemon).
    pub log: Option<Log>,
    /// Name of the counter object this rule updates.
    pub counter: Option<String>,
    /// `None`: evaluation goes on with the next rule (a rule that only logs).
    pub verdict: Option<Verdict>,
    pub comment: Option<String>,
}

/// `log prefix PREFIX group GROUP`: a copy of the packet's headers to an NFLOG group.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Log {
    pub prefix: String,
    pub group: u16,
}

/// `ct state` bits as the kernel defines them.
pub const CT_INVALID: u32 = 1;
pub const CT_ESTABLISHED: u32 = 2;
pub const CT_RELATED: u32 = 4;

/// A match, with the dependencies `nft` adds for it (e.g. `ip saddr` implies `meta nfproto ipv4`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Match {
    /// `iifname @SET`
    IifnameIn(String),
    /// `iifname "NAME"`: one interface by its exact name (a compare where a set lookup would
    /// cost a hash of the whole name).
    Iifname(String),
    /// `iifname "PREFIX*"`: every interface whose name starts with PREFIX, including those
    /// created later.
    IifnamePrefix(String),
    /// `oifname @SET`
    OifnameIn(String),
    /// `oifname "PREFIX*"`
    OifnamePrefix(String),
    /// `ct state S` for one state bit.
    CtState(u32),
    /// `meta nfproto ipv4|ipv6`
    NfProto(Family),
    /// `meta l4proto P`
    L4Proto(u8),
    /// `meta l4proto != P`
    L4ProtoNot(u8),
    /// `ip saddr @SET` / `ip6 saddr @SET`
    SaddrIn(Family, String),
    /// `ip saddr & MASK @SET` / `ip6 saddr & MASK @SET`, MASK the prefix length's netmask
    /// (no mask at the full length), SET a [`SetKind::Net4`] / [`SetKind::Net6`] set.
    SaddrPrefixIn(Family, u8, String),
    /// `ip saddr NET/LEN` / `ip6 saddr NET/LEN`: one network, compared (no set).
    SaddrNet(Family, u8, u128),
    /// `ip daddr @SET` / `ip6 daddr @SET`
    DaddrIn(Family, String),
    /// `tcp dport @SET` / `udp dport @SET`
    DportIn(u8, String),
    /// `tcp dport A` / `udp dport A-B`: a compare (or range) of one port range, no set.
    Dport(u8, u16, u16),
    /// `icmp type @SET` / `icmpv6 type @SET`
    IcmpTypeIn(Family, String),
    /// `udp sport A udp dport B`; nft loads both ports with one 4-byte payload expression.
    UdpPorts(u16, u16),
    /// `tcp flags & (syn | ack) != syn`: anything but a bare SYN (a connection attempt).
    TcpNotBareSyn,
    /// `limit rate R/second burst B packets`: true while the rule's token bucket has packets
    /// left.
    Limit { per_second: u32, burst: u32 },
    /// `tcp dport vmap @SET` / `udp dport vmap @SET`: the verdict of the element of map SET (a
    /// [`SetKind::PortVerdict`]) holding the packet's port. Decides, so it is a rule's last
    /// match and the rule has no verdict of its own; a packet whose port cannot be read (or
    /// that no element holds) goes on to the next rule.
    DportVmap(u8, String),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    Accept,
    Drop,
    Goto(String),
    /// To a chain that returns here when none of its rules decides.
    Jump(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(kind: SetKind, n: u32) -> SetDef {
        SetDef {
            name: "s".into(),
            kind,
            elems: (0..n).map(Elem::Net4).collect(),
        }
    }

    /// Room for half as many again, rounded up to a power of two: a policy that grows by a
    /// few networks keeps its table, one that doubles gets it rebuilt once.
    #[test]
    fn network_sets_are_sized_with_room() {
        let sizes: Vec<Option<u32>> = [0, 43, 44, 171, 172, 1_000_000]
            .into_iter()
            .map(|n| set(SetKind::Net4, n).size())
            .collect();
        assert_eq!(
            sizes,
            [
                Some(64),
                Some(64),
                Some(128),
                Some(256),
                Some(512),
                Some(2_097_152)
            ]
        );
        assert_eq!(set(SetKind::Net6, 10).size(), Some(64));
        // Interval sets, maps and small fixed sets stay unsized (resizable or tree-backed).
        for kind in [
            SetKind::Addr4,
            SetKind::Port,
            SetKind::PortVerdict,
            SetKind::IfName,
        ] {
            assert_eq!(set(kind, 10).size(), None);
        }
    }
}
