//! Connection tracking in the XDP datapath, through BPF_PROG_TEST_RUN: the XDP program on
//! inbound frames and the TC egress program on outbound ones, against the reference tracker
//! (`policy::track`) and evaluator: random two-way sequences on a few tuples (so that flows
//! open, answer, close and reopen), timeouts, and a flood of new flows that must not evict
//! live connections.

mod xdp_support;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use nodewall::backend::xdp::Datapath;
use nodewall::config::{Action, Protocol};
use nodewall::policy::track::{build, Tracker};
use nodewall::policy::{Policy, Reason};
use nodewall_common::ct::{Pkt, Timeouts};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use xdp_support::*;

fn me4() -> IpAddr {
    ME4_ADDR.parse().unwrap()
}
fn me6() -> IpAddr {
    ME6_ADDR.parse().unwrap()
}

const REMOTES: [&str; 6] = [
    "198.19.1.1",
    "198.19.2.2",
    "198.19.3.3",
    "fd00:1::1",
    "fd00:2::2",
    "fd00:3::3",
];
const PORTS: [u16; 4] = [22, 80, 40000, 40001];

/// Allows everything from the remotes whose bit is set in `mask`, and tcp/80 from anywhere.
fn policy_for(mask: u8) -> Policy {
    let mut rules = vec![rule(
        "web",
        Action::Allow,
        Protocol::Tcp,
        &[(80, 80)],
        &["0.0.0.0/0", "::/0"],
    )];
    for (i, r) in REMOTES.iter().enumerate() {
        if mask & (1 << i) != 0 {
            let len = if r.contains(':') { 128 } else { 32 };
            let net = format!("{r}/{len}");
            rules.push(rule(
                &format!("remote-{i}"),
                Action::Allow,
                Protocol::All,
                &[],
                &[&net],
            ));
        }
    }
    let mut p = policy(rules);
    p.implicit.dhcp_client = false;
    p
}

fn setup(pol: &Policy, ct: Timeouts) -> Option<(Datapath, Vec<u16>)> {
    if !privileged() {
        return None;
    }
    let mut dp = Datapath::load(None).unwrap();
    install_with(&mut dp, pol, ct);
    let slots = dp.rule_slots();
    Some((dp, slots))
}

const TCP_FLAGS: [u8; 12] = [
    SYN,
    SYN | ACK,
    ACK,
    ACK | PSH,
    FIN | ACK,
    RST,
    RST | ACK,
    SYN | ECE | CWR,
    0,
    SYN | FIN,
    FIN,
    ACK | URG,
];

/// A random packet between the node and one of the remotes, seen from `remote`'s side as
/// the sender when `inbound`.
fn random_pkt(rng: &mut rand::rngs::StdRng, inbound: bool) -> Pkt {
    let remote: IpAddr = REMOTES.choose(rng).unwrap().parse().unwrap();
    let me = if remote.is_ipv6() { me6() } else { me4() };
    let (src, dst) = if inbound { (remote, me) } else { (me, remote) };
    let (sport, dport) = (*PORTS.choose(rng).unwrap(), *PORTS.choose(rng).unwrap());
    match rng.gen_range(0..10) {
        0..=4 => {
            let flags = if rng.gen_bool(0.1) {
                rng.gen()
            } else {
                *TCP_FLAGS.choose(rng).unwrap()
            };
            build::tcp(src, dst, sport, dport, flags)
        }
        5 | 6 => build::udp(src, dst, sport, dport),
        7 | 8 => {
            let t = if remote.is_ipv6() {
                *[128u8, 129, 139, 140, 130, 137].choose(rng).unwrap()
            } else {
                *[8u8, 0, 13, 14, 9].choose(rng).unwrap()
            };
            build::icmp(src, dst, t, rng.gen_range(1..3))
        }
        _ => {
            let (proto, ports) = *[(47u8, false), (132, true), (253, false)]
                .choose(rng)
                .unwrap();
            if ports {
                build::other(src, dst, proto, sport, dport)
            } else {
                build::other(src, dst, proto, 0, 0)
            }
        }
    }
}

/// An ICMP error from a router to the node, about an outbound packet of the node's.
fn random_error(rng: &mut rand::rngs::StdRng) -> (Pkt, Pkt) {
    let quoted = loop {
        let q = random_pkt(rng, false);
        if q.kind != nodewall_common::ct::pkt::ICMP || [8, 128].contains(&q.flags) {
            break q;
        }
    };
    let v6 = quoted.is_v6();
    let router: IpAddr = if v6 { "fd00:9::1" } else { "198.18.9.9" }.parse().unwrap();
    let me = if v6 { me6() } else { me4() };
    let t = if v6 {
        *[1u8, 2, 3, 4, 100].choose(rng).unwrap()
    } else {
        *[3u8, 4, 5, 11, 12].choose(rng).unwrap()
    };
    (build::icmp(router, me, t, 0), quoted)
}

#[test]
fn random_two_way_sequences_agree_with_the_tracker() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xc0ffee);
    let mut mask: u8 = 0b010101;
    let Some((mut dp, mut slots)) = setup(&policy_for(mask), NEVER) else {
        return;
    };
    let mut t = Tracker::new(NEVER);
    let mut pol = policy_for(mask);
    let mut bad = Vec::new();
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for step in 0..60_000 {
        if step % 2_000 == 1_999 {
            // A new policy: flows stay, in the kernel and in the tracker.
            mask = rng.gen();
            pol = policy_for(mask);
            install_with(&mut dp, &pol, NEVER);
            slots = dp.rule_slots();
        }
        match rng.gen_range(0..20) {
            0..=9 => {
                let p = random_pkt(&mut rng, true);
                let want = t.judge(&pol, &p, None, now_ns());
                *seen.entry(format!("{:?}", want.reason)).or_default() += 1;
                if let Err(e) = check_verdict(&mut dp, &slots, &want, &p, &frame_of_pkt(&p)) {
                    bad.push(format!("step {step}: {p:?}: {e}"));
                }
            }
            10 => {
                let (err, quoted) = random_error(&mut rng);
                let want = t.judge(&pol, &err, Some(&quoted), now_ns());
                *seen.entry(format!("error/{:?}", want.reason)).or_default() += 1;
                let frame = frame_of_error(&err, &quoted);
                if let Err(e) = check_verdict(&mut dp, &slots, &want, &err, &frame) {
                    bad.push(format!("step {step}: error about {quoted:?}: {e}"));
                }
            }
            _ => {
                let p = random_pkt(&mut rng, false);
                t.outbound(&p, now_ns());
                egress(&mut dp, &frame_of_pkt(&p));
            }
        }
    }
    println!("{seen:#?}");
    for reason in [
        "Established",
        "Invalid",
        "Rule",
        "DefaultDeny",
        "error/IcmpError",
        "error/Invalid",
    ] {
        assert!(
            seen.get(reason).copied().unwrap_or(0) > 50,
            "too few {reason} in {seen:?}"
        );
    }
    assert!(
        bad.is_empty(),
        "{} mismatches, first ones:\n{}",
        bad.len(),
        bad[..bad.len().min(15)].join("\n")
    );
}

/// Timeouts of one or two seconds (the agent reads them from conntrack's sysctls).
fn short() -> Timeouts {
    Timeouts {
        tcp_syn_sent: 1,
        tcp_time_wait: 1,
        tcp_close: 1,
        udp: 2,
        udp_stream: 2,
        icmp: 1,
        generic: 1,
        ..NEVER
    }
}

/// Sends inbound `p` and returns the reason it was counted under, checking it against the
/// tracker at the same moment.
fn inbound(dp: &mut Datapath, slots: &[u16], t: &mut Tracker, pol: &Policy, p: &Pkt) -> Reason {
    let want = t.judge(pol, p, None, now_ns());
    check_verdict(dp, slots, &want, p, &frame_of_pkt(p)).unwrap_or_else(|e| panic!("{p:?}: {e}"));
    want.reason
}

fn outbound(dp: &mut Datapath, t: &mut Tracker, p: &Pkt) {
    t.outbound(p, now_ns());
    egress(dp, &frame_of_pkt(p));
}

fn sleep_until(start: Instant, secs: f64) {
    let at = start + Duration::from_secs_f64(secs);
    if let Some(d) = at.checked_duration_since(Instant::now()) {
        std::thread::sleep(d);
    }
}

#[test]
fn flows_end_on_time() {
    // The remote is denied: whatever passes, passes as part of a flow.
    let pol = policy_for(0);
    let Some((mut dp, slots)) = setup(&pol, short()) else {
        return;
    };
    let mut t = Tracker::new(short());
    let peer: IpAddr = REMOTES[0].parse().unwrap();
    let me = me4();
    let start = Instant::now();
    // UDP answered once: alive 2 s after its last packet, then forgotten.
    let q = build::udp(me, peer, 5353, 53);
    let a = build::reversed(&q);
    outbound(&mut dp, &mut t, &q);
    assert_eq!(
        inbound(&mut dp, &slots, &mut t, &pol, &a),
        Reason::Established
    );
    // TCP: the node connects, the peer answers, both close.
    let syn = build::tcp(me, peer, 41000, 443, SYN);
    outbound(&mut dp, &mut t, &syn);
    let synack = build::reversed(&build::tcp(me, peer, 41000, 443, SYN | ACK));
    assert_eq!(
        inbound(&mut dp, &slots, &mut t, &pol, &synack),
        Reason::Established
    );
    outbound(&mut dp, &mut t, &build::tcp(me, peer, 41000, 443, ACK));
    outbound(
        &mut dp,
        &mut t,
        &build::tcp(me, peer, 41000, 443, FIN | ACK),
    );
    let fin = build::reversed(&build::tcp(me, peer, 41000, 443, FIN | ACK));
    let ack = build::reversed(&build::tcp(me, peer, 41000, 443, ACK));
    let rst = build::reversed(&build::tcp(me, peer, 41000, 443, RST));
    assert_eq!(
        inbound(&mut dp, &slots, &mut t, &pol, &fin),
        Reason::Established
    );
    assert_eq!(
        inbound(&mut dp, &slots, &mut t, &pol, &ack),
        Reason::Established
    );
    // A node SYN nobody answers.
    outbound(&mut dp, &mut t, &build::tcp(me, peer, 41001, 443, SYN));
    sleep_until(start, 1.5);
    // TIME_WAIT (1 s) is over: a stale ACK is a new packet (the rules drop it), a stale FIN
    // or RST belongs to nothing (invalid); the late SYN+ACK finds no connection attempt.
    assert_eq!(
        inbound(&mut dp, &slots, &mut t, &pol, &ack),
        Reason::DefaultDeny
    );
    assert_eq!(
        inbound(&mut dp, &slots, &mut t, &pol, &fin),
        Reason::Invalid
    );
    assert_eq!(
        inbound(&mut dp, &slots, &mut t, &pol, &rst),
        Reason::Invalid
    );
    let late = build::reversed(&build::tcp(me, peer, 41001, 443, SYN | ACK));
    assert_eq!(
        inbound(&mut dp, &slots, &mut t, &pol, &late),
        Reason::Invalid
    );
    // The UDP flow still lives (2 s from its last packet, which was at ~0 s).
    assert_eq!(
        inbound(&mut dp, &slots, &mut t, &pol, &a),
        Reason::Established
    );
    sleep_until(start, 4.0);
    assert_eq!(
        inbound(&mut dp, &slots, &mut t, &pol, &a),
        Reason::DefaultDeny
    );
}

#[test]
fn a_flood_of_new_flows_does_not_evict_live_connections() {
    // tcp/80 is open to anyone: every SYN to it opens a flow.
    let pol = policy_for(0b1);
    let Some((mut dp, slots)) = setup(&pol, NEVER) else {
        return;
    };
    let mut t = Tracker::new(NEVER);
    let peer: IpAddr = REMOTES[0].parse().unwrap();
    let me = me4();
    // An SSH session from the peer, then the peer is no longer allowed.
    let syn = build::tcp(peer, me, 50000, 22, SYN);
    assert_eq!(inbound(&mut dp, &slots, &mut t, &pol, &syn), Reason::Rule);
    outbound(
        &mut dp,
        &mut t,
        &build::reversed(&build::tcp(peer, me, 50000, 22, SYN | ACK)),
    );
    let ack = build::tcp(peer, me, 50000, 22, ACK);
    assert_eq!(
        inbound(&mut dp, &slots, &mut t, &pol, &ack),
        Reason::Established
    );
    let closed = policy_for(0);
    install_with(&mut dp, &closed, NEVER);
    let slots = dp.rule_slots();
    assert_eq!(
        inbound(&mut dp, &slots, &mut t, &closed, &ack),
        Reason::Established
    );
    // More new flows than the table of new flows holds.
    let n = nodewall_common::xdp::FLOW_NEW_TABLE_ENTRIES + 4096;
    for i in 0..n {
        let src = IpAddr::from([198, 19, 100 + (i >> 16) as u8, (i >> 8) as u8]);
        let f = frame_of_pkt(&build::tcp(src, me, i as u16, 80, SYN));
        assert_eq!(run(dp.xdp().unwrap(), &f), XDP_PASS);
    }
    let (assured, fresh) = dp.maps().flows().unwrap();
    assert!(
        fresh.len() as u32 > nodewall_common::xdp::FLOW_NEW_TABLE_ENTRIES / 2,
        "the SYNs opened flows: {}",
        fresh.len()
    );
    assert_eq!(assured.len(), 1, "only the SSH session is assured");
    let f = frame_of_pkt(&ack);
    assert_eq!(
        run(dp.xdp().unwrap(), &f),
        XDP_PASS,
        "the SSH session survived the flood"
    );
}

#[test]
fn dropped_packets_open_no_flow() {
    let pol = policy_for(0);
    let Some((mut dp, _)) = setup(&pol, NEVER) else {
        return;
    };
    let me = me4();
    for i in 0..2000u16 {
        let src = IpAddr::from([198, 19, 7, (i % 250) as u8]);
        let f = frame_of_pkt(&build::tcp(src, me, i, 22, SYN));
        assert_eq!(run(dp.xdp().unwrap(), &f), XDP_DROP);
        let f = frame_of_pkt(&build::udp(src, me, i, 53));
        assert_eq!(run(dp.xdp().unwrap(), &f), XDP_DROP);
    }
    let (assured, fresh) = dp.maps().flows().unwrap();
    assert_eq!((assured.len(), fresh.len()), (0, 0));
}
