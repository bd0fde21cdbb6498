//! The attacker inside: crafted packets that a pod behind the node, or a process on the node,
//! sends towards a destination the egress policy forbids, in the shapes that could slip past
//! an outbound filter: stray replies (SYN+ACK, mid-stream ACK, RST, FIN), ICMP errors about
//! flows that never were, tunnels, IPv6 extension-header chains short and too long, IPv4 and
//! IPv6 fragments, a TCP header split over two fragments. On every backend.
//!
//! The ground truth is what the destination's kernel delivers (raw sockets there). Each case is
//! first sent with no policy and must arrive, so a case that proves nothing fails; under the
//! policy, the denied ones must not arrive and the allowed ones (same shapes to the one open
//! port) must, so a policy that drops everything fails too.

use std::net::IpAddr;

use anyhow::ensure;
use nodewall_netns_tests::craft::*;
use nodewall_netns_tests::delivery::Delivery;
use nodewall_netns_tests::inject::RawIp;
use nodewall_netns_tests::installed::describe;
use nodewall_netns_tests::nodewall::{apply, flush, Config};
use nodewall_netns_tests::topology::{node_addr, Topology};
use nodewall_netns_tests::{backend_tests, Backend};

/// Denied outbound (tcp and udp), and the one port open outbound (udp).
const DENIED: u16 = 8443;
const OPEN: u16 = 443;

/// `egress.default: deny`, no failsafe, udp/443 open to anywhere.
fn config(backend: Backend) -> Config {
    let mut c = Config::new(backend, None);
    c.egress = Some(format!(
        "egress:\n  default: deny\n  failsafe: []\n  rules:\n    - name: open\n      action: allow\n      protocol: udp\n      ports: [\"{OPEN}\"]\n      to: [\"0.0.0.0/0\", \"::/0\"]"
    ));
    c
}

struct Case {
    name: String,
    packets: Vec<Vec<u8>>,
    id: u32,
    allowed: bool,
}

/// Every shape, from `src` to `dst`, markers from `next`.
fn cases(src: IpAddr, dst: IpAddr, next: &mut u32) -> Vec<Case> {
    let v6 = dst.is_ipv6();
    let mut out = Vec::new();
    let mut add = |name: &str, allowed: bool, make: &dyn Fn(u32) -> Vec<Vec<u8>>| {
        *next += 1;
        out.push(Case {
            name: format!("{name} (v6={v6})"),
            packets: make(*next),
            id: *next,
            allowed,
        });
    };
    let ip = |proto: u8, id: u32, payload: &[u8]| -> Vec<u8> {
        if v6 {
            ipv6(src, dst, proto, payload)
        } else {
            ipv4(src, dst, proto, id as u16, 0, &[], payload)
        }
    };
    for (port, allowed) in [(DENIED, false), (OPEN, true)] {
        add(&format!("udp/{port}"), allowed, &|id| {
            vec![ip(17, id, &udp(src, dst, 40000, port, &marker(id)))]
        });
        let chain = if v6 {
            "three extension headers"
        } else {
            "fragments"
        };
        add(&format!("udp/{port} in {chain}"), allowed, &|id| {
            let dgram = udp(src, dst, 40001, port, &[marker(id), vec![0; 40]].concat());
            if v6 {
                let mut rest = ext_options(60);
                rest.extend(ext_options(43));
                rest.extend(ext_routing(17));
                rest.extend(&dgram);
                vec![ipv6(src, dst, 60, &rest)]
            } else {
                ipv4_fragments(src, dst, 17, id as u16, &dgram, &[0, 16, 32])
            }
        });
        if v6 {
            add(&format!("udp/{port} in fragments"), allowed, &|id| {
                let dgram = udp(src, dst, 40002, port, &[marker(id), vec![0; 40]].concat());
                ipv6_fragments(src, dst, 17, id, &dgram, &[0, 16, 32])
            });
        }
    }
    for (name, flags) in [
        ("tcp SYN+ACK (a reply to nothing)", SYN | ACK),
        ("tcp ACK+PSH (mid-stream)", ACK | PSH),
        ("tcp RST", RST),
        ("tcp FIN+ACK", FIN | ACK),
        ("tcp SYN", SYN),
    ] {
        add(&format!("{name} to {DENIED}"), false, &|id| {
            let seg = tcp(src, dst, 40100, DENIED, flags, 7, 9, &marker(id));
            vec![ip(6, id, &seg)]
        });
    }
    if !v6 {
        // IPv6 forbids it (RFC 7112): Linux discards such a first fragment by itself.
        add(
            "tcp SYN, its header split over two fragments",
            false,
            &|id| {
                let seg = tcp(src, dst, 40101, DENIED, SYN, 7, 0, &marker(id));
                ipv4_fragments(src, dst, 6, id as u16, &seg, &[0, 8])
            },
        );
    }
    add("udp in nine extension headers", false, &|id| {
        let dgram = udp(src, dst, 40003, DENIED, &marker(id));
        if !v6 {
            return vec![ip(17, id, &dgram)];
        }
        let mut rest = Vec::new();
        for _ in 0..8 {
            rest.extend(ext_options(60));
        }
        rest.extend(ext_options(17));
        rest.extend(&dgram);
        vec![ipv6(src, dst, 60, &rest)]
    });
    add(
        "port unreachable about a flow that never was",
        false,
        &|id| {
            // Quotes a datagram the destination supposedly sent to the sender.
            let quoted_l4 = udp(dst, src, 53, 40004, &marker(id));
            let quoted = ip(17, id, &quoted_l4);
            let (t, code) = if v6 { (1, 4) } else { (3, 3) };
            vec![ip(
                if v6 { 58 } else { 1 },
                id,
                &icmp(src, dst, t, code, [0; 4], &quoted),
            )]
        },
    );
    if v6 {
        // The observer watches tunnels over IPv4 only (see `delivery.rs`).
        return out;
    }
    add("IPIP", false, &|id| {
        let inner = ip(17, id, &udp(src, dst, 40005, OPEN, &marker(id)));
        vec![ip(4, id, &inner)]
    });
    add("GRE", false, &|id| {
        let inner = ip(17, id, &udp(src, dst, 40006, OPEN, &marker(id)));
        let mut gre = vec![0, 0, 0x08, 0x00];
        gre.extend(inner);
        vec![ip(47, id, &gre)]
    });
    out
}

/// Sends every case and returns the names of those whose marker arrived (`true`) or not.
fn outcome(
    sender: &RawIp,
    seen: &Delivery,
    cases: &[Case],
) -> anyhow::Result<Vec<(String, bool, bool)>> {
    seen.clear();
    for c in cases {
        for p in &c.packets {
            // Refused by the node's own output hook counts as not arriving, which it won't.
            sender.offer(p)?;
        }
    }
    let got = seen.settle();
    Ok(cases
        .iter()
        .map(|c| {
            let arrived = got.iter().any(|d| d.0 == c.id);
            (c.name.clone(), c.allowed, arrived)
        })
        .collect())
}

fn crafted_egress_is_judged(backend: Backend) -> anyhow::Result<()> {
    let topo = Topology::new()?;
    let seen = Delivery::new(&topo.internet.ns)?;
    let file = config(backend).write()?;
    let mut next = 0;
    for (who, ns, pod) in [
        ("pod", &topo.local_pod.ns, true),
        ("node", &topo.node, false),
    ] {
        let sender = RawIp::new(ns)?;
        for v6 in [false, true] {
            let src = if pod {
                topo.local_pod.addr(v6)
            } else {
                node_addr(v6)
            };
            let list = cases(src, topo.internet.addr(v6), &mut next);
            flush(&topo.node, backend)?;
            let lost: Vec<String> = outcome(&sender, &seen, &list)?
                .into_iter()
                .filter(|(_, _, arrived)| !arrived)
                .map(|(name, _, _)| name)
                .collect();
            ensure!(
                lost.is_empty(),
                "with no policy these {who} cases never arrived, so they prove nothing: {lost:?}"
            );
            apply(&topo.node, &file)?;
            let wrong: Vec<String> = outcome(&sender, &seen, &list)?
                .into_iter()
                .filter(|(_, allowed, arrived)| allowed != arrived)
                .map(|(name, allowed, _)| {
                    format!("{name}: {}", if allowed { "blocked" } else { "got out" })
                })
                .collect();
            ensure!(
                wrong.is_empty(),
                "from the {who}: {wrong:#?}\n{}",
                describe(&topo.node, backend)
            );
        }
    }
    Ok(())
}

backend_tests!(crafted_egress_is_judged);
