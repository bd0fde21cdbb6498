//! Stateful differential: random two-way packet sequences on a few tuples between remotes on
//! the wire and the local pod, through the real kernel, against the reference tracker and
//! evaluator (`policy::track`, what `explain` answers with). Connections open, answer, close,
//! reset and reopen, UDP and ICMP flows come and go, ICMP errors quote them, the policy
//! changes underneath; every inbound packet's fate must be what the tracker says.
//!
//! The pod end is silent (its input drops everything), so the only packets are the test's:
//! inbound ones are injected from the fabric, outbound ones sent by the pod through the node.
//! What passed the firewall is seen leaving on `cni0`; what the node sent, arriving at the
//! fabric. conntrack checks TCP sequence windows and the tracker does not (documented in
//! `common/src/ct.rs`); the test keeps sequence numbers right and sets conntrack liberal, so
//! that the comparison is of the state machines.

use std::net::IpAddr;
use std::time::Duration;

use nodewall::policy::track::{build, Tracker};
use nodewall::policy::Policy;
use nodewall_common::ct::{Pkt, Timeouts};
use nodewall_netns_tests::capture::Capture;
use nodewall_netns_tests::craft::{self, ACK, FIN, PSH, RST, SYN};
use nodewall_netns_tests::inject::{Injector, RawIp};
use nodewall_netns_tests::installed::describe;
use nodewall_netns_tests::nodewall::{apply, Config, ConfigFile};
use nodewall_netns_tests::rng::Rng;
use nodewall_netns_tests::topology::Topology;
use nodewall_netns_tests::{backend_tests, Backend};

const STEPS: usize = 1500;
/// Long enough that no flow expires during the test, the same for conntrack (sysctls), the
/// XDP program (which reads them) and the tracker.
const LONG: u32 = 3600;

fn timeouts() -> Timeouts {
    Timeouts {
        tcp_syn_sent: LONG,
        tcp_syn_recv: LONG,
        tcp_established: LONG,
        tcp_fin_wait: LONG,
        tcp_last_ack: LONG,
        tcp_time_wait: LONG,
        tcp_close: LONG,
        tcp_unacknowledged: LONG,
        udp: LONG,
        udp_stream: LONG,
        icmp: LONG,
        icmpv6: LONG,
        gre: LONG,
        gre_stream: LONG,
        generic: LONG,
        tcp_loose: 1,
    }
}

const SYSCTLS: [&str; 11] = [
    "tcp_timeout_syn_sent",
    "tcp_timeout_syn_recv",
    "tcp_timeout_established",
    "tcp_timeout_fin_wait",
    "tcp_timeout_close_wait",
    "tcp_timeout_last_ack",
    "tcp_timeout_time_wait",
    "tcp_timeout_close",
    "tcp_timeout_unacknowledged",
    "udp_timeout",
    "udp_timeout_stream",
];

/// Remote A is allowed everything under the open policy; B never is. tcp/80 is open to all.
const REMOTES: [&str; 4] = ["198.19.66.1", "198.19.66.2", "fd00:66::1", "fd00:66::2"];
const POD4: &str = "198.18.34.2";
const POD6: &str = "fd00:34::2";

fn configs(backend: Backend) -> anyhow::Result<Vec<(ConfigFile, Policy)>> {
    let web = "  - name: web\n    action: allow\n    protocol: tcp\n    ports: [\"80\"]\n    from: [\"0.0.0.0/0\", \"::/0\"]";
    let a = "  - name: remote-a\n    action: allow\n    protocol: all\n    from: [\"198.19.66.1/32\", \"fd00:66::1/128\"]";
    let mut out = Vec::new();
    for (rules, implicit) in [
        (vec![web, a], None),
        (vec![web], None),
        (vec![web, a], Some("implicit:\n  established: false")),
    ] {
        let mut c = Config::new(backend, None);
        c.rules = rules.into_iter().map(String::from).collect();
        c.implicit = implicit.map(String::from);
        let yaml = c.yaml();
        let cfg =
            nodewall::config::parse(&yaml, "test.yaml").map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let policy = nodewall::policy::compile(&cfg).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        out.push((c.write()?, policy));
    }
    Ok(out)
}

/// Where one tuple's TCP conversation is, as its two ends see it. The generator plays both
/// ends by TCP's rules, so the sequences are ones real stacks produce (and conntrack's window
/// checks can follow); the attacker's part is the stray segments sent while the tuple is idle,
/// and the late ones after a close.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Conv {
    #[default]
    Idle,
    /// `client` (true: the remote) sent a SYN.
    SynSent {
        client: bool,
    },
    SynRecv {
        client: bool,
    },
    Established {
        client: bool,
    },
    /// `by` sent the first FIN.
    FinWait {
        client: bool,
        by: bool,
    },
    /// Both FINs went; the last ACK, from `by` (who sent the first), has not.
    LastAck {
        client: bool,
        by: bool,
    },
    /// The last ACK went: only late segments, or a new SYN.
    TimeWait {
        client: bool,
    },
    /// `by` reset the connection.
    Reset {
        client: bool,
        by: bool,
    },
    /// A stray ACK from the remote, which the rules let through: the pod resets it.
    Stray,
}

#[derive(Clone, Copy, Default)]
struct Tuple {
    conv: Conv,
    /// What each side sends next (sequence numbers).
    remote: u32,
    pod: u32,
    /// Each side's initial sequence number, which a retransmitted SYN (or SYN+ACK) repeats.
    remote_isn: u32,
    pod_isn: u32,
}

struct Gen {
    rng: Rng,
    tuples: std::collections::HashMap<(usize, u16, u16), Tuple>,
    next_id: u32,
    /// The tuple of the last segment, what its conversation becomes if the segment arrives,
    /// and the tuple as it was (to return to if it does not: the ends never saw it).
    pending: Option<((usize, u16, u16), Conv, Tuple)>,
}

impl Gen {
    fn id(&mut self) -> u32 {
        self.next_id += 1;
        self.next_id
    }

    fn tuple(&mut self) -> (usize, u16, u16) {
        let r = self.rng.below(4) as usize;
        let rport = *self.rng.pick(&[40000u16, 40001]);
        let lport = *self.rng.pick(&[80u16, 8080]);
        (r, rport, lport)
    }

    /// Moves the last segment's conversation on if it `got` through, else back.
    fn arrived(&mut self, got: bool) {
        if let Some((key, then, before)) = self.pending.take() {
            let t = self.tuples.entry(key).or_default();
            if got {
                t.conv = then;
            } else {
                *t = before;
            }
        }
    }

    /// The next segment of tuple `t`'s conversation: (from the remote?, flags), and what the
    /// conversation becomes if the segment gets through (a segment the firewall drops changes
    /// nothing for the ends: they retry, or give up).
    fn next_segment(&mut self, t: &Tuple) -> (bool, u8, Conv) {
        use Conv::*;
        let flip = self.rng.chance(50);
        match t.conv {
            Idle => match self.rng.below(10) {
                0..=5 => (flip, SYN, SynSent { client: flip }),
                // Strays from the wire: nothing a connection could start with, or a lone ACK.
                _ => {
                    let f = *self.rng.pick(&[
                        SYN | ACK,
                        FIN | ACK,
                        RST,
                        RST | ACK,
                        ACK,
                        ACK | PSH,
                        0,
                        SYN | FIN,
                    ]);
                    (
                        true,
                        f,
                        if f & (SYN | FIN | RST) == 0 && f != 0 {
                            Stray
                        } else {
                            Idle
                        },
                    )
                }
            },
            Stray => (false, RST, Idle),
            SynSent { client } => match self.rng.below(10) {
                0..=5 => (!client, SYN | ACK, SynRecv { client }),
                6..=7 => (!client, RST | ACK, Idle),
                _ => (client, SYN, SynSent { client }),
            },
            SynRecv { client } => match self.rng.below(10) {
                0..=7 => (client, ACK, Established { client }),
                8 => (!client, SYN | ACK, SynRecv { client }),
                _ => (client, RST, Reset { client, by: client }),
            },
            Established { client } => match self.rng.below(10) {
                0..=5 => (flip, ACK | PSH, Established { client }),
                6..=7 => (flip, FIN | ACK, FinWait { client, by: flip }),
                _ => (flip, RST | ACK, Reset { client, by: flip }),
            },
            FinWait { client, by } => match self.rng.below(10) {
                0..=4 => (!by, ACK | PSH, FinWait { client, by }),
                5..=8 => (!by, FIN | ACK, LastAck { client, by }),
                _ => (!by, RST, Reset { client, by: !by }),
            },
            LastAck { client, by } => (by, ACK, TimeWait { client }),
            // After a close: a late segment from either side, or a new connection.
            TimeWait { client } | Reset { client, .. } => match self.rng.below(10) {
                0..=3 => (flip, *self.rng.pick(&[ACK, FIN | ACK, RST]), t.conv),
                _ => {
                    let by = match t.conv {
                        Reset { by, .. } => by,
                        _ => client,
                    };
                    (by, SYN, SynSent { client: by })
                }
            },
        }
    }
}

fn addrs(r: usize) -> (IpAddr, IpAddr) {
    let remote: IpAddr = REMOTES[r].parse().unwrap();
    let pod: IpAddr = if remote.is_ipv6() { POD6 } else { POD4 }.parse().unwrap();
    (remote, pod)
}

fn ip(src: IpAddr, dst: IpAddr, proto: u8, l4: &[u8], id: u32) -> Vec<u8> {
    if src.is_ipv6() {
        craft::ipv6(src, dst, proto, l4)
    } else {
        craft::ipv4(src, dst, proto, id as u16, 0, &[], l4)
    }
}

/// One random packet: its direction (inbound?), its bytes, its parsed form, and for an ICMP
/// error the packet it quotes.
fn step(g: &mut Gen) -> (bool, Vec<u8>, Pkt, Option<Pkt>, u32) {
    let id = g.id();
    g.pending = None;
    let inbound = g.rng.chance(55);
    let (r, rport, lport) = g.tuple();
    let (remote, pod) = addrs(r);
    let (src, dst, sport, dport) = if inbound {
        (remote, pod, rport, lport)
    } else {
        (pod, remote, lport, rport)
    };
    let data = craft::marker(id);
    match g.rng.below(20) {
        0..=12 => {
            let key = (r, rport, lport);
            let t = g.tuples.get(&key).copied().unwrap_or_default();
            let (from_remote, flags, then) = g.next_segment(&t);
            let (src, dst, sport, dport) = if from_remote {
                (remote, pod, rport, lport)
            } else {
                (pod, remote, lport, rport)
            };
            let before = g.tuples.get(&key).copied().unwrap_or_default();
            let t = g.tuples.entry(key).or_default();
            if flags & SYN != 0 {
                // A retransmission repeats its initial sequence number; anything else starts
                // a new one.
                let again = matches!(
                    (before.conv, then),
                    (Conv::SynSent { .. }, Conv::SynSent { .. })
                        | (Conv::SynRecv { .. }, Conv::SynRecv { .. })
                );
                let isn = 0x1000_0000u32.wrapping_add(id.wrapping_mul(7919));
                let (next, first) = if from_remote {
                    (&mut t.remote, &mut t.remote_isn)
                } else {
                    (&mut t.pod, &mut t.pod_isn)
                };
                if !again {
                    *first = isn;
                }
                *next = *first;
            }
            let (mut seq, ack) = if from_remote {
                (t.remote, t.pod)
            } else {
                (t.pod, t.remote)
            };
            if matches!(before.conv, Conv::SynSent { .. }) && flags & RST != 0 {
                // A refusal, as a stack answers a SYN: sequence number 0, the SYN acknowledged.
                seq = 0;
            }
            let l4 = craft::tcp(
                src,
                dst,
                sport,
                dport,
                flags,
                seq,
                if flags & ACK != 0 { ack } else { 0 },
                &data,
            );
            let used =
                data.len() as u32 + u32::from(flags & SYN != 0) + u32::from(flags & FIN != 0);
            if from_remote {
                t.remote = t.remote.wrapping_add(used)
            } else {
                t.pod = t.pod.wrapping_add(used)
            }
            // The caller learns whether it got through and moves the conversation then.
            g.pending = Some((key, then, before));
            (
                from_remote,
                ip(src, dst, 6, &l4, id),
                build::tcp(src, dst, sport, dport, flags),
                None,
                id,
            )
        }
        13..=15 => {
            let l4 = craft::udp(src, dst, sport, dport, &data);
            (
                inbound,
                ip(src, dst, 17, &l4, id),
                build::udp(src, dst, sport, dport),
                None,
                id,
            )
        }
        16 | 17 => {
            let v6 = src.is_ipv6();
            let t = match (v6, g.rng.chance(50)) {
                (false, true) => 8,
                (false, false) => 0,
                (true, true) => 128,
                (true, false) => 129,
            };
            let icmp_id = 1 + g.rng.below(2) as u16;
            let l4 = craft::icmp(
                src,
                dst,
                t,
                0,
                [(icmp_id >> 8) as u8, icmp_id as u8, 0, 1],
                &data,
            );
            let proto = if v6 { 58 } else { 1 };
            (
                inbound,
                ip(src, dst, proto, &l4, id),
                build::icmp(src, dst, t, icmp_id),
                None,
                id,
            )
        }
        _ => {
            // An error from the remote about a TCP or UDP packet the pod sent it.
            let v6 = remote.is_ipv6();
            let udp = g.rng.chance(50);
            let quoted_l4 = if udp {
                craft::udp(pod, remote, lport, rport, b"q")
            } else {
                craft::tcp(pod, remote, lport, rport, ACK, 1, 1, b"")
            };
            let quoted_ip = ip(pod, remote, if udp { 17 } else { 6 }, &quoted_l4, 7);
            let quoted = if udp {
                build::udp(pod, remote, lport, rport)
            } else {
                build::tcp(pod, remote, lport, rport, ACK)
            };
            let header = if v6 { 40 } else { 20 };
            let mut payload = quoted_ip[..header + 8].to_vec();
            payload.extend(&data);
            let (t, proto) = if v6 { (1, 58) } else { (3, 1) };
            let l4 = craft::icmp(remote, pod, t, 1, [0; 4], &payload);
            (
                true,
                ip(remote, pod, proto, &l4, id),
                build::icmp(remote, pod, t, 0),
                Some(quoted),
                id,
            )
        }
    }
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn random_sequences_match_the_tracker(backend: Backend) -> anyhow::Result<()> {
    let topo = Topology::new()?;
    for s in SYSCTLS {
        topo.node.sysctl(
            &format!("net.netfilter.nf_conntrack_{s}"),
            &LONG.to_string(),
        )?;
    }
    topo.node
        .sysctl("net.netfilter.nf_conntrack_tcp_be_liberal", "1")?;
    // The node's traffic to the remotes vanishes in the fabric; the pod answers nothing but
    // neighbour discovery.
    topo.fabric
        .ip(&["route", "add", "blackhole", "198.19.66.0/24"])?;
    topo.fabric
        .ip(&["-6", "route", "add", "blackhole", "fd00:66::/64"])?;
    topo.local_pod.ns.nft_load(
        // Neighbour discovery still answered: without it the node loses the pod's IPv6 address
        // once the neighbour entry goes stale (after 15-45 s), and drops what it forwards.
        b"table inet sink {\n chain input {\n type filter hook input priority 0; policy drop;\n icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept\n }\n}\n",
    )?;
    let configs = configs(backend)?;
    let wire = Injector::new(&topo)?;
    let pod = RawIp::new(&topo.local_pod.ns)?;
    let mut passed = Capture::new(&topo.node, "cni0")?;
    let mut sent = Capture::new(&topo.fabric, "n0")?;
    let mut rng = Rng::from_env(0x7e57_5eed);
    let mut current = rng.below(configs.len() as u64) as usize;
    apply(&topo.node, &configs[current].0)?;
    let mut tracker = Tracker::new(timeouts());
    let mut g = Gen {
        rng,
        tuples: Default::default(),
        next_id: 0,
        pending: None,
    };
    let mut mismatches = Vec::new();
    // Packets found dropped: none may show up later (a late pass is a pass).
    let mut dropped = Vec::new();
    // Every packet so far, to show a mismatch's tuple's history.
    let mut history: Vec<(usize, bool, Pkt, Option<&'static str>)> = Vec::new();
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for n in 0..STEPS {
        if n % 300 == 299 {
            current = g.rng.below(configs.len() as u64) as usize;
            apply(&topo.node, &configs[current].0)?;
        }
        let (inbound, bytes, pkt, quoted, id) = step(&mut g);
        if inbound {
            let want = tracker.judge(&configs[current].1, &pkt, quoted.as_ref(), now_ns());
            *kinds
                .entry(format!(
                    "{:?}/{}",
                    want.reason,
                    if want.passes() { "pass" } else { "drop" }
                ))
                .or_default() += 1;
            wire.send(&craft::frame(&bytes))?;
            let got = passed.saw(
                id,
                if want.passes() {
                    Duration::from_millis(300)
                } else {
                    Duration::from_millis(15)
                },
            );
            history.push((n, true, pkt, Some(if got { "passed" } else { "dropped" })));
            if !got {
                dropped.push(id);
            }
            g.arrived(got);
            if got != want.passes() {
                let conntrack = if backend == Backend::Nft {
                    topo.node
                        .exec("cat", &["/proc/net/nf_conntrack"])
                        .unwrap_or_default()
                } else {
                    String::new()
                };
                mismatches.push(format!(
                    "step {n} (policy {current}): inbound {} quoting {quoted:?}: tracker says {:?}/{:?}, the kernel {}\n  history of the tuple:\n{}\n  conntrack:\n{conntrack}",
                    show(&pkt),
                    want.reason,
                    want.action,
                    if got { "let it through" } else { "dropped it" },
                    tuple_history(&history, &pkt)
                ));
                if mismatches.len() >= 10 {
                    break;
                }
            }
        } else {
            tracker.outbound(&pkt, now_ns());
            history.push((n, false, pkt, None));
            pod.send(&bytes)?;
            g.arrived(true);
            anyhow::ensure!(
                sent.saw(id, Duration::from_millis(500)),
                "step {n}: the pod's packet did not leave the node: {pkt:?}"
            );
        }
    }
    eprintln!("{kinds:#?}");
    std::thread::sleep(Duration::from_millis(300));
    let late = passed.seen_of(&dropped);
    anyhow::ensure!(
        late.is_empty(),
        "packets judged dropped got through later: {late:?}"
    );
    anyhow::ensure!(
        mismatches.is_empty(),
        "{} mismatches:\n{}\n{}",
        mismatches.len(),
        mismatches.join("\n"),
        describe(&topo.node, backend)
    );
    for reason in [
        "Established/pass",
        "Invalid/drop",
        "Rule/pass",
        "DefaultDeny/drop",
        "IcmpError/pass",
    ] {
        anyhow::ensure!(
            kinds.get(reason).copied().unwrap_or(0) >= 5,
            "too few {reason}: {kinds:?}"
        );
    }
    Ok(())
}

/// A packet in a line: direction-free, with its TCP flags spelled out.
fn show(p: &Pkt) -> String {
    let flags: Vec<&str> = [(SYN, "S"), (ACK, "A"), (FIN, "F"), (RST, "R"), (PSH, "P")]
        .iter()
        .filter(|(b, _)| p.flags & b != 0)
        .map(|(_, n)| *n)
        .collect();
    let addr = |b: &[u8; 16]| -> String {
        if p.family == 0 {
            format!("{}.{}.{}.{}", b[0], b[1], b[2], b[3])
        } else {
            std::net::Ipv6Addr::from(*b).to_string()
        }
    };
    match p.kind {
        nodewall_common::ct::pkt::TCP => format!(
            "tcp {}:{} > {}:{} [{}]",
            addr(&p.src),
            p.sport,
            addr(&p.dst),
            p.dport,
            flags.join("")
        ),
        nodewall_common::ct::pkt::UDP => format!(
            "udp {}:{} > {}:{}",
            addr(&p.src),
            p.sport,
            addr(&p.dst),
            p.dport
        ),
        _ => format!(
            "icmp {} > {} type {} id {}",
            addr(&p.src),
            addr(&p.dst),
            p.flags,
            p.sport
        ),
    }
}

fn tuple_history(h: &[(usize, bool, Pkt, Option<&str>)], p: &Pkt) -> String {
    let same = |q: &Pkt| {
        q.proto == p.proto
            && ((q.src == p.src && q.dst == p.dst && q.sport == p.sport && q.dport == p.dport)
                || (q.src == p.dst && q.dst == p.src && q.sport == p.dport && q.dport == p.sport))
    };
    h.iter()
        .filter(|(_, _, q, _)| same(q))
        .map(|(n, inbound, q, fate)| {
            format!(
                "    {n:5} {} {} {}",
                if *inbound { "in " } else { "out" },
                show(q),
                fate.unwrap_or("")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

backend_tests!(random_sequences_match_the_tracker);
