//! Shared by the XDP tests: frame crafting, policy shorthands, and a probe that runs frames
//! through the real programs with BPF_PROG_TEST_RUN and reports which counter moved.
#![allow(dead_code)]

use std::net::IpAddr;

use aya::programs::{TestRun, TestRunOptions};
use nodewall::backend::xdp::Datapath;
use nodewall::config::{Action, Implicit, Mode, PortRange, Protocol};
use nodewall::policy::{AddrSet, Origin, Policy, PortSet, Rule};
use nodewall_common::xdp::{
    drop_index, PassReason, DROP_CAUSE_DEFAULT, DROP_CAUSE_INVALID, DROP_CAUSE_RULE_BASE,
};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;

/// BPF_PROG_TEST_RUN needs root (CAP_BPF/CAP_NET_ADMIN); without it the tests say why and
/// skip, except under CI where they must not pass silently.
pub fn privileged() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("the XDP tests need root (BPF_PROG_TEST_RUN), and CI=true forbids skipping them");
    }
    eprintln!("skipping: the XDP tests need root (BPF_PROG_TEST_RUN)");
    false
}

// ---- frames ---------------------------------------------------------------------------

pub const ETH_IP: u16 = 0x0800;
pub const ETH_IPV6: u16 = 0x86dd;
pub const ETH_ARP: u16 = 0x0806;

pub fn eth(ethertype: u16, vlans: &[u16], l3: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    for (i, vid) in vlans.iter().enumerate() {
        f.extend_from_slice(
            &(if i == 0 && vlans.len() > 1 {
                0x88a8u16
            } else {
                0x8100u16
            })
            .to_be_bytes(),
        );
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(l3);
    f
}

/// An IPv4 header (with `options`, a multiple of 4 bytes) followed by `payload`.
pub fn ipv4_opts(
    src: [u8; 4],
    dst: [u8; 4],
    proto: u8,
    frag: u16,
    options: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let ihl = 5 + options.len() / 4;
    let total = (ihl * 4 + payload.len()) as u16;
    let mut h = vec![0x40 | ihl as u8, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0, 1]);
    h.extend_from_slice(&frag.to_be_bytes());
    h.extend_from_slice(&[64, proto, 0, 0]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(options);
    h.extend_from_slice(payload);
    h
}

pub fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, payload: &[u8]) -> Vec<u8> {
    ipv4_opts(src, dst, proto, 0, &[], payload)
}

/// An IPv6 header with `next` as next header, followed by `payload` (extension headers
/// included, if any).
pub fn ipv6(src: [u8; 16], dst: [u8; 16], next: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    h.extend_from_slice(&[next, 64]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(payload);
    h
}

/// A generic IPv6 extension header (hop-by-hop, routing, destination options) of `8 * units` bytes.
pub fn ext(next: u8, units: usize) -> Vec<u8> {
    let mut e = vec![0u8; 8 * units];
    e[0] = next;
    e[1] = (units - 1) as u8;
    e
}

/// An IPv6 fragment header; `offset` in 8-byte units.
pub fn frag6(next: u8, offset: u16, more: bool) -> Vec<u8> {
    let fo = (offset << 3) | more as u16;
    let mut e = vec![next, 0];
    e.extend_from_slice(&fo.to_be_bytes());
    e.extend_from_slice(&[0, 0, 0, 1]);
    e
}

/// A TCP SYN.
pub fn tcp(sport: u16, dport: u16) -> Vec<u8> {
    tcpf(sport, dport, SYN)
}

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;
pub const URG: u8 = 0x20;
pub const ECE: u8 = 0x40;
pub const CWR: u8 = 0x80;

/// A TCP header with the given flags.
pub fn tcpf(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut h = vec![0u8; 20];
    h[0..2].copy_from_slice(&sport.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h[12] = 5 << 4;
    h[13] = flags;
    h
}

pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 8];
    h[0..2].copy_from_slice(&sport.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// ICMP/ICMPv6 with the echo identifier `id` (bytes 4-5) and `payload` after the 8 bytes.
pub fn icmp(icmp_type: u8, code: u8, id: u16, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![icmp_type, code, 0, 0];
    h.extend_from_slice(&id.to_be_bytes());
    h.extend_from_slice(&[0, 1]);
    h.extend_from_slice(payload);
    h
}

pub fn v4(s: &str) -> [u8; 4] {
    s.parse::<std::net::Ipv4Addr>().unwrap().octets()
}

pub fn v6(s: &str) -> [u8; 16] {
    s.parse::<std::net::Ipv6Addr>().unwrap().octets()
}

// ---- policies -------------------------------------------------------------------------

pub fn rule(
    name: &str,
    action: Action,
    protocol: Protocol,
    ports: &[(u16, u16)],
    from: &[&str],
) -> Rule {
    let nets: Vec<ipnet::IpNet> = from.iter().map(|s| s.parse().unwrap()).collect();
    Rule {
        name: name.into(),
        action,
        protocol,
        ports: if protocol.has_ports() {
            PortSet::new(ports.iter().map(|&(a, b)| PortRange::new(a, b)).collect())
        } else {
            PortSet::any()
        },
        sources: AddrSet::from_nets(&nets),
        origin: Origin::User,
    }
}

pub fn policy(rules: Vec<Rule>) -> Policy {
    Policy {
        mode: Mode::Enforce,
        implicit: Implicit::default(),
        rules,
        interfaces: Vec::new(),
        profile: None,
        samples_per_second: nodewall::config::DEFAULT_SAMPLES_PER_SECOND,
        egress: Default::default(),
    }
}

// ---- observing verdicts ---------------------------------------------------------------

/// Which counter a packet moved: exactly one per packet (a deny rule moves its rule counter
/// and its drop counter, reported as `Rule`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    Pass(PassReasonName),
    Rule(String),
    /// reason, family, protocol
    Drop(&'static str, &'static str, &'static str),
}

pub type PassReasonName = &'static str;

pub fn pass_name(r: PassReason) -> PassReasonName {
    match r {
        PassReason::Established => "established",
        PassReason::IcmpError => "icmp-error",
        PassReason::NeighbourDiscovery => "neighbour-discovery",
        PassReason::DhcpClient => "dhcp-client",
        PassReason::Unfiltered => "unfiltered",
    }
}

pub const PASS_REASONS: [PassReason; 5] = [
    PassReason::Established,
    PassReason::IcmpError,
    PassReason::NeighbourDiscovery,
    PassReason::DhcpClient,
    PassReason::Unfiltered,
];

pub struct Probe {
    pub dp: Datapath,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Snapshot {
    rules: Vec<(String, u64, u64)>,
    drops: Vec<(&'static str, String, &'static str, &'static str, u64, u64)>,
    passes: Vec<(PassReasonName, u64)>,
}

impl Probe {
    pub fn new() -> Self {
        Self {
            dp: Datapath::load(None).expect("loading the XDP object"),
        }
    }

    pub fn install(&mut self, p: &Policy) {
        self.dp.install(p).expect("installing the policy");
    }

    fn snapshot(&self) -> Snapshot {
        let c = self.dp.counters().unwrap();
        Snapshot {
            rules: c
                .rules
                .iter()
                .map(|r| (r.rule.clone(), r.packets, r.bytes))
                .collect(),
            drops: c
                .drops
                .iter()
                .map(|d| {
                    (
                        d.reason,
                        d.rule.clone(),
                        d.family,
                        d.protocol,
                        d.packets,
                        d.bytes,
                    )
                })
                .collect(),
            passes: PASS_REASONS
                .iter()
                .map(|&r| (pass_name(r), self.dp.passes(r).unwrap().packets))
                .collect(),
        }
    }

    /// Runs the XDP program on `frame`; returns its action and the one counter it moved.
    pub fn xdp(&mut self, frame: &[u8]) -> (u32, Seen) {
        let before = self.snapshot();
        let ret = run(self.dp.xdp().unwrap(), frame);
        let after = self.snapshot();
        let mut seen = Vec::new();
        for (a, b) in after.rules.iter().zip(&before.rules) {
            if a.1 != b.1 {
                assert_eq!(a.1, b.1 + 1, "rule counter {} moved by more than one", a.0);
                seen.push(Seen::Rule(a.0.clone()));
            }
        }
        for d in &after.drops {
            let old = before
                .drops
                .iter()
                .find(|o| (o.0, &o.1, o.2, o.3) == (d.0, &d.1, d.2, d.3))
                .map_or(0, |o| o.4);
            if d.4 != old {
                assert_eq!(d.4, old + 1);
                if d.0 != "rule" {
                    seen.push(Seen::Drop(d.0, d.2, d.3));
                }
            }
        }
        for (a, b) in after.passes.iter().zip(&before.passes) {
            if a.1 != b.1 {
                seen.push(Seen::Pass(a.0));
            }
        }
        assert_eq!(
            seen.len(),
            1,
            "one packet must move exactly one counter, moved {seen:?}"
        );
        (ret, seen.pop().unwrap())
    }

    /// Runs the TC egress program on an outbound frame (records its flow).
    pub fn egress(&mut self, frame: &[u8]) {
        let prog = self.dp.egress().unwrap();
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            r.return_value as i32, -1,
            "the egress program never decides"
        );
    }

    /// The drop counter a deny rule moved, with its labels.
    pub fn rule_drops(&self, rule: &str) -> Vec<(&'static str, &'static str, u64)> {
        self.dp
            .counters()
            .unwrap()
            .drops
            .iter()
            .filter(|d| d.rule == rule)
            .map(|d| (d.family, d.protocol, d.packets))
            .collect()
    }
}

pub fn run(prog: &aya::programs::Xdp, frame: &[u8]) -> u32 {
    let mut out = vec![0u8; frame.len() + 256];
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..Default::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    r.return_value
}

/// The index a verdict counts under, for the fast per-packet checks of the differential.
pub fn drop_cause_index(reason: &str, slot: Option<u16>, family: u32, proto: u32) -> u32 {
    let cause = match reason {
        "default-deny" => DROP_CAUSE_DEFAULT,
        "invalid" => DROP_CAUSE_INVALID,
        _ => DROP_CAUSE_RULE_BASE + slot.expect("rule drops have a slot") as u32,
    };
    drop_index(cause, family, proto)
}

pub fn family_of(ip: IpAddr) -> u32 {
    if ip.is_ipv4() {
        0
    } else {
        1
    }
}

/// The frame an evaluator packet describes, sent to ME (198.18.0.1 / fd00::1).
pub fn frame_of(pkt: &nodewall::policy::Packet) -> Vec<u8> {
    use nodewall::policy::L4;
    let is_v6 = pkt.src.is_ipv6();
    let (proto, payload) = match pkt.l4 {
        L4::Tcp { sport, dport } => (6, tcp(sport, dport)),
        L4::Udp { sport, dport } => (17, udp(sport, dport, b"")),
        L4::Icmp { icmp_type, code } => (if is_v6 { 58 } else { 1 }, icmp(icmp_type, code, 0, b"")),
        L4::Other { number } => (number, vec![0u8; 8]),
    };
    match pkt.src {
        IpAddr::V4(a) => eth(
            ETH_IP,
            &[],
            &ipv4(a.octets(), [198, 18, 0, 1], proto, &payload),
        ),
        IpAddr::V6(a) => eth(
            ETH_IPV6,
            &[],
            &ipv6(a.octets(), v6("fd00::1"), proto, &payload),
        ),
    }
}

/// The `protocol` label index of an evaluator packet.
pub fn proto_label(pkt: &nodewall::policy::Packet) -> u32 {
    use nodewall::policy::L4;
    match pkt.l4 {
        L4::Tcp { .. } => 0,
        L4::Udp { .. } => 1,
        L4::Icmp { .. } if pkt.src.is_ipv4() => 2,
        L4::Icmp { .. } => 3,
        L4::Other { .. } => 4,
    }
}

// ---- stateful packets -----------------------------------------------------------------

use nodewall::policy::track::{build, Tracker};
use nodewall_common::ct::{pkt, Pkt, Timeouts};

/// Timeouts no test run outlives: the tests that check expiry set their own.
pub const NEVER: Timeouts = Timeouts {
    tcp_syn_sent: 86_400,
    tcp_syn_recv: 86_400,
    tcp_established: 86_400,
    tcp_fin_wait: 86_400,
    tcp_last_ack: 86_400,
    tcp_time_wait: 86_400,
    tcp_close: 86_400,
    tcp_unacknowledged: 86_400,
    udp: 86_400,
    udp_stream: 86_400,
    icmp: 86_400,
    icmpv6: 86_400,
    gre: 86_400,
    gre_stream: 86_400,
    generic: 86_400,
    tcp_loose: 1,
};

/// Installs `pol` with flow timeouts `ct` (the agent would read the node's conntrack sysctls).
pub fn install_with(dp: &mut Datapath, pol: &Policy, ct: Timeouts) {
    let mut img = nodewall::backend::xdp::Image::build(pol).expect("building the image");
    img.ct = ct;
    dp.install_image(img).expect("installing the policy");
}

/// The monotonic clock; the eBPF program reads its coarse form, up to a tick behind.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub const ME4_ADDR: &str = "198.18.0.1";
pub const ME6_ADDR: &str = "fd00::1";

/// The parsed form of an evaluator packet sent to ME (as [`frame_of`] builds it), with TCP
/// flags `flags`.
pub fn pkt_of(p: &nodewall::policy::Packet, flags: u8) -> Pkt {
    use nodewall::policy::L4;
    let me: IpAddr = if p.src.is_ipv6() { ME6_ADDR } else { ME4_ADDR }
        .parse()
        .unwrap();
    match p.l4 {
        L4::Tcp { sport, dport } => build::tcp(p.src, me, sport, dport, flags),
        L4::Udp { sport, dport } => build::udp(p.src, me, sport, dport),
        L4::Icmp { icmp_type, .. } => build::icmp(p.src, me, icmp_type, 0),
        L4::Other { number } => build::other(p.src, me, number, 0, 0),
    }
}

/// The Ethernet frame of a parsed packet (IPv4 or IPv6 by its family), with `payload` after
/// the transport header.
pub fn frame_of_pkt(p: &Pkt) -> Vec<u8> {
    let l4 = match p.kind {
        pkt::TCP => tcpf(p.sport, p.dport, p.flags),
        pkt::UDP => udp(p.sport, p.dport, b""),
        pkt::ICMP => icmp(p.flags, 0, p.sport, b""),
        _ => {
            let mut h = vec![0u8; 8];
            h[0..2].copy_from_slice(&p.sport.to_be_bytes());
            h[2..4].copy_from_slice(&p.dport.to_be_bytes());
            h
        }
    };
    if p.is_v6() {
        eth(ETH_IPV6, &[], &ipv6(p.src, p.dst, p.proto, &l4))
    } else {
        let a = |b: &[u8; 16]| [b[0], b[1], b[2], b[3]];
        eth(ETH_IP, &[], &ipv4(a(&p.src), a(&p.dst), p.proto, &l4))
    }
}

/// A tracker with the datapath's timeouts.
pub fn tracker(ct: Timeouts) -> Tracker {
    Tracker::new(ct)
}

/// The IP packet (no Ethernet header) of a parsed packet, with `payload` after a transport
/// header built from its fields (for ICMP: the type, code 0 and the identifier).
pub fn ip_of_pkt(p: &Pkt, payload: &[u8]) -> Vec<u8> {
    let l4 = match p.kind {
        pkt::TCP => {
            let mut h = tcpf(p.sport, p.dport, p.flags);
            h.extend_from_slice(payload);
            h
        }
        pkt::UDP => udp(p.sport, p.dport, payload),
        pkt::ICMP => icmp(p.flags, 0, p.sport, payload),
        _ => {
            let mut h = vec![0u8; 8];
            h[0..2].copy_from_slice(&p.sport.to_be_bytes());
            h[2..4].copy_from_slice(&p.dport.to_be_bytes());
            h.extend_from_slice(payload);
            h
        }
    };
    if p.is_v6() {
        ipv6(p.src, p.dst, p.proto, &l4)
    } else {
        let a = |b: &[u8; 16]| [b[0], b[1], b[2], b[3]];
        ipv4(a(&p.src), a(&p.dst), p.proto, &l4)
    }
}

/// The Ethernet frame of an ICMP error `err` quoting (the start of) `quoted`, as routers
/// send them: the quoted IP header and 8 bytes above it.
pub fn frame_of_error(err: &Pkt, quoted: &Pkt) -> Vec<u8> {
    let q = ip_of_pkt(quoted, b"");
    let header = if quoted.is_v6() { 40 } else { 20 };
    let mut e = *err;
    e.sport = 0;
    let ip = ip_of_pkt(&e, &q[..(header + 8).min(q.len())]);
    eth(if err.is_v6() { ETH_IPV6 } else { ETH_IP }, &[], &ip)
}

/// Runs `frame` (whose parsed form is `p`) through the XDP program and checks it against the
/// verdict `want` and the one counter it names (rule slot, drop reason with family and
/// protocol, or implicit allowance), which must move by exactly one. Returns how many
/// counter moves the verdict accounts for (a deny rule moves its rule and its drop counter).
pub fn check_verdict(
    dp: &mut Datapath,
    slots: &[u16],
    want: &nodewall::policy::Verdict,
    p: &Pkt,
    frame: &[u8],
) -> Result<u64, String> {
    use nodewall::policy::Reason;
    let family = p.family;
    let proto = match (p.kind, p.proto) {
        (pkt::TCP, _) => 0,
        (pkt::UDP, _) => 1,
        (pkt::ICMP, _) if family == 0 => 2,
        (pkt::ICMP, _) => 3,
        _ => 4,
    };
    let m = dp.maps();
    let (map, index) = match want.reason {
        Reason::Rule => (&m.rule_stats, slots[want.rule.unwrap()] as u32),
        Reason::DefaultDeny => (
            &m.drop_stats,
            drop_cause_index("default-deny", None, family, proto),
        ),
        Reason::Invalid => (
            &m.drop_stats,
            drop_cause_index("invalid", None, family, proto),
        ),
        Reason::NeighbourDiscovery => (&m.pass_stats, PassReason::NeighbourDiscovery as u32),
        Reason::DhcpClient => (&m.pass_stats, PassReason::DhcpClient as u32),
        Reason::Established => (&m.pass_stats, PassReason::Established as u32),
        Reason::IcmpError => (&m.pass_stats, PassReason::IcmpError as u32),
        Reason::DefaultAllow => unreachable!("an inbound verdict"),
    };
    let old = nodewall::backend::xdp::Maps::stat(map, index)
        .unwrap()
        .packets;
    let ret = run(dp.xdp().unwrap(), frame);
    let m = dp.maps();
    let map = match want.reason {
        Reason::Rule => &m.rule_stats,
        Reason::DefaultDeny | Reason::Invalid => &m.drop_stats,
        _ => &m.pass_stats,
    };
    let moved = nodewall::backend::xdp::Maps::stat(map, index)
        .unwrap()
        .packets
        - old;
    let want_ret = if want.passes() { XDP_PASS } else { XDP_DROP };
    if ret != want_ret || moved != 1 {
        return Err(format!(
            "evaluate {want:?}, xdp returned {ret} and moved the expected counter by {moved}"
        ));
    }
    let deny_rule = want.reason == Reason::Rule && want.action == nodewall::config::Action::Deny;
    Ok(1 + u64::from(deny_rule))
}

/// Runs an outbound frame through the TC egress program (which only tracks).
pub fn egress(dp: &mut Datapath, frame: &[u8]) {
    let r = dp
        .egress()
        .unwrap()
        .test_run(TestRunOptions {
            data_in: Some(frame),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        r.return_value as i32, -1,
        "the egress program never decides"
    );
}
