//! Flows end, on every backend: a live connection outlives a policy that no longer admits its
//! peer, but once it is closed (FIN both ways or RST) and past conntrack's close timeouts, or
//! once a UDP flow has been idle past its timeout, its tuple admits nothing the policy denies;
//! a SYN from a source port an earlier, allowed connection used is a new connection; an ICMP
//! error is let in only about a live flow.
//!
//! conntrack's timeouts are shortened in the node's namespace (the nft backend uses conntrack,
//! the XDP backend reads the same sysctls at apply), so "past the timeout" takes seconds.

use std::net::IpAddr;

use nodewall_netns_tests::craft::{self, ACK, FIN, PSH, RST};
use nodewall_netns_tests::delivery::Delivery;
use nodewall_netns_tests::inject::Injector;
use nodewall_netns_tests::installed::describe;
use nodewall_netns_tests::nodewall::{apply, Config};
use nodewall_netns_tests::topology::{node_addr, Topology};
use nodewall_netns_tests::traffic::{tcp_drain_from, tcp_ok_from, udp_ok_from, Close, Server};
use nodewall_netns_tests::{backend_tests, Backend};

const WEB: u16 = 8443;
const WEB2: u16 = 8444;
const ECHO: u16 = 5353;
/// Seconds, for TIME_WAIT, CLOSE and unanswered-again UDP.
const SHORT: &str = "2";
/// Comfortably past [`SHORT`].
const PAST: std::time::Duration = std::time::Duration::from_millis(3500);

fn shorten_timeouts(topo: &Topology) -> anyhow::Result<()> {
    for key in [
        "net.netfilter.nf_conntrack_tcp_timeout_time_wait",
        "net.netfilter.nf_conntrack_tcp_timeout_close",
        "net.netfilter.nf_conntrack_udp_timeout",
    ] {
        topo.node.sysctl(key, SHORT)?;
    }
    Ok(())
}

/// The internet peer may use the web servers and the UDP echo (`open`), or nothing.
fn config(backend: Backend, open: bool) -> Config {
    let mut c = Config::new(backend, None);
    if open {
        c.rules = vec![
            format!("  - name: web\n    action: allow\n    protocol: tcp\n    ports: [\"{WEB}\", \"{WEB2}\"]\n    from: [\"198.19.0.0/16\", \"fd00:99::/64\"]"),
            format!("  - name: echo\n    action: allow\n    protocol: udp\n    ports: [\"{ECHO}\"]\n    from: [\"198.19.0.0/16\", \"fd00:99::/64\"]"),
        ];
    }
    c
}

fn reused_source_port_is_a_new_connection(backend: Backend) -> anyhow::Result<()> {
    let topo = Topology::new()?;
    let _web = Server::tcp(&topo.node, WEB)?;
    let _web2 = Server::tcp(&topo.node, WEB2)?;
    let (open, closed) = (
        config(backend, true).write()?,
        config(backend, false).write()?,
    );
    for v6 in [false, true] {
        let node = node_addr(v6);
        let sport = if v6 { 47006 } else { 47004 };
        apply(&topo.node, &open)?;
        anyhow::ensure!(
            tcp_ok_from(&topo.internet.ns, node, WEB, sport, Close::Fin),
            "allowed connection from port {sport} (v6={v6})"
        );
        apply(&topo.node, &closed)?;
        anyhow::ensure!(
            !tcp_ok_from(&topo.internet.ns, node, WEB, sport, Close::Fin),
            "the same source port again, under a policy that denies the peer (v6={v6}):\n{}",
            describe(&topo.node, backend)
        );
        // The peer and port are fine under the open policy: what refused it above was the
        // policy, not the port.
        apply(&topo.node, &open)?;
        anyhow::ensure!(
            tcp_ok_from(&topo.internet.ns, node, WEB2, sport, Close::Fin),
            "allowed again (v6={v6})"
        );
    }
    Ok(())
}

/// Segments with the tuple of a connection that has ended, from the wire, carrying markers.
fn stale(v6: bool, peer: IpAddr, sport: u16, first_id: u32) -> Vec<(u32, Vec<u8>)> {
    let node = node_addr(v6);
    [ACK | PSH, ACK, FIN | ACK, RST, RST | ACK]
        .iter()
        .enumerate()
        .map(|(i, &flags)| {
            let id = first_id + i as u32;
            let seg = craft::tcp(
                peer,
                node,
                sport,
                WEB,
                flags,
                0x4242_0000 + id,
                1,
                &craft::marker(id),
            );
            let ip = if v6 {
                craft::ipv6(peer, node, 6, &seg)
            } else {
                craft::ipv4(peer, node, 6, id as u16, 0, &[], &seg)
            };
            (id, craft::frame(&ip))
        })
        .collect()
}

/// Sends [`stale`] segments from the wire: the ids of those the node's stack received.
fn stale_through(
    wire: &Injector,
    seen: &Delivery,
    v6: bool,
    peer: IpAddr,
    sport: u16,
    first_id: u32,
) -> anyhow::Result<Vec<u32>> {
    seen.clear();
    let segs = stale(v6, peer, sport, first_id);
    for (_, f) in &segs {
        wire.send(f)?;
    }
    let got = seen.settle();
    Ok(segs
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| got.iter().any(|d| d.0 == *id))
        .collect())
}

fn stale_segments_after_a_close_are_judged_anew(backend: Backend) -> anyhow::Result<()> {
    let topo = Topology::new()?;
    shorten_timeouts(&topo)?;
    let _web = Server::tcp(&topo.node, WEB)?;
    let wire = Injector::new(&topo)?;
    let seen = Delivery::new(&topo.node)?;
    let (open, closed) = (
        config(backend, true).write()?,
        config(backend, false).write()?,
    );
    // Control: with no firewall, such segments reach the stack.
    seen.clear();
    let control = stale(false, topo.internet.addr(false), 47100, 1);
    for (_, f) in &control {
        wire.send(f)?;
    }
    let got = seen.settle();
    anyhow::ensure!(
        control.iter().all(|(id, _)| got.iter().any(|d| d.0 == *id)),
        "without a firewall the crafted segments must reach the stack: {got:?}"
    );
    let mut next = 100;
    for v6 in [false, true] {
        for close in [Close::Fin, Close::Rst] {
            let node = node_addr(v6);
            let peer = topo.internet.addr(v6);
            let sport = 47200 + next as u16;
            apply(&topo.node, &open)?;
            anyhow::ensure!(
                tcp_ok_from(&topo.internet.ns, node, WEB, sport, close),
                "connection from {sport} ({close:?}, v6={v6})"
            );
            apply(&topo.node, &closed)?;
            std::thread::sleep(PAST);
            let through = stale_through(&wire, &seen, v6, peer, sport, next)?;
            next += 10;
            anyhow::ensure!(
                through.is_empty(),
                "after a {close:?} close and its timeout, stale segments {through:?} (ids from {}) got through (v6={v6}):\n{}",
                next - 10,
                describe(&topo.node, backend)
            );
        }
    }
    Ok(())
}

/// The node's FIN riding on a data segment longer than the headers (a corked answer) ends the
/// flow like a bare FIN: once both FINs are acknowledged and TIME_WAIT is over, stale
/// segments are judged anew. The TC egress program once read only the pulled-in headers and
/// took such a segment for a truncated packet, so the node's FIN went unseen and the flow
/// stayed open for FIN_WAIT's two minutes.
fn a_fin_on_a_data_segment_ends_the_flow(backend: Backend) -> anyhow::Result<()> {
    const BODY: usize = 2000;
    let topo = Topology::new()?;
    shorten_timeouts(&topo)?;
    let _web = Server::tcp_corked(&topo.node, WEB, BODY)?;
    let wire = Injector::new(&topo)?;
    let seen = Delivery::new(&topo.node)?;
    let (open, closed) = (
        config(backend, true).write()?,
        config(backend, false).write()?,
    );
    for (v6, sport, first_id) in [(false, 47400, 400), (true, 47401, 410)] {
        let (node, peer) = (node_addr(v6), topo.internet.addr(v6));
        apply(&topo.node, &open)?;
        let got = tcp_drain_from(&topo.internet.ns, node, WEB, sport);
        anyhow::ensure!(got == Some(BODY), "the corked answer (v6={v6}): {got:?}");
        apply(&topo.node, &closed)?;
        std::thread::sleep(PAST);
        let through = stale_through(&wire, &seen, v6, peer, sport, first_id)?;
        anyhow::ensure!(
            through.is_empty(),
            "after a close whose FIN rode on data, stale segments {through:?} got through (v6={v6}):\n{}",
            describe(&topo.node, backend)
        );
    }
    Ok(())
}

fn udp_flows_expire(backend: Backend) -> anyhow::Result<()> {
    let topo = Topology::new()?;
    shorten_timeouts(&topo)?;
    let _echo = Server::udp(&topo.node, ECHO)?;
    let (open, closed) = (
        config(backend, true).write()?,
        config(backend, false).write()?,
    );
    for v6 in [false, true] {
        let node = node_addr(v6);
        let sport = if v6 { 47306 } else { 47304 };
        apply(&topo.node, &open)?;
        anyhow::ensure!(
            udp_ok_from(&topo.internet.ns, node, ECHO, sport),
            "first exchange (v6={v6})"
        );
        apply(&topo.node, &closed)?;
        // The flow is live: its datagrams pass whatever the policy now says of new ones.
        anyhow::ensure!(
            udp_ok_from(&topo.internet.ns, node, ECHO, sport),
            "a live UDP flow under the closed policy (v6={v6}):\n{}",
            describe(&topo.node, backend)
        );
        std::thread::sleep(PAST);
        anyhow::ensure!(
            !udp_ok_from(&topo.internet.ns, node, ECHO, sport),
            "the same tuple past its timeout (v6={v6}):\n{}",
            describe(&topo.node, backend)
        );
    }
    Ok(())
}

/// A bare SYN is never return traffic, even with the tuple of a live connection (conntrack
/// would call it `established`): the policy, which no longer admits the peer, decides.
fn a_syn_on_a_live_connection_is_judged_by_the_rules(backend: Backend) -> anyhow::Result<()> {
    let topo = Topology::new()?;
    let wire = Injector::new(&topo)?;
    let seen = Delivery::new(&topo.node)?;
    let listener = topo
        .node
        .enter(|| std::net::TcpListener::bind(("::", WEB)))??;
    let (open, closed) = (
        config(backend, true).write()?,
        config(backend, false).write()?,
    );
    apply(&topo.node, &open)?;
    let mut id = 700;
    for v6 in [false, true] {
        let node = node_addr(v6);
        let client = topo.internet.ns.enter(|| {
            std::net::TcpStream::connect_timeout(
                &std::net::SocketAddr::new(node, WEB),
                std::time::Duration::from_secs(2),
            )
        })??;
        let (mut server, _) = listener.accept()?;
        let sport = client.local_addr()?.port();
        apply(&topo.node, &closed)?;
        // The connection is live: its data still flows.
        std::io::Write::write_all(&mut &client, b"still here")?;
        let mut buf = [0u8; 10];
        server.set_read_timeout(Some(std::time::Duration::from_secs(2)))?;
        std::io::Read::read_exact(&mut server, &mut buf)
            .map_err(|e| anyhow::anyhow!("data of the live connection (v6={v6}): {e}"))?;
        id += 1;
        let peer = topo.internet.addr(v6);
        let syn = craft::tcp(peer, node, sport, WEB, craft::SYN, 7, 0, &craft::marker(id));
        let ip = if v6 {
            craft::ipv6(peer, node, 6, &syn)
        } else {
            craft::ipv4(peer, node, 6, id as u16, 0, &[], &syn)
        };
        seen.clear();
        wire.send(&craft::frame(&ip))?;
        let got = seen.settle();
        anyhow::ensure!(
            !got.iter().any(|d| d.0 == id),
            "a SYN with the tuple of a live connection got through a policy that denies its source (v6={v6}):\n{}",
            describe(&topo.node, backend)
        );
        apply(&topo.node, &open)?;
    }
    Ok(())
}

fn icmp_errors_need_a_live_flow(backend: Backend) -> anyhow::Result<()> {
    let topo = Topology::new()?;
    // The node's datagrams to this range vanish in the fabric (no real answer, no error).
    topo.fabric
        .ip(&["route", "add", "blackhole", "198.19.77.0/24"])?;
    topo.fabric
        .ip(&["-6", "route", "add", "blackhole", "fd00:77::/64"])?;
    let wire = Injector::new(&topo)?;
    let seen = Delivery::new(&topo.node)?;
    // No ICMP rule: only `related` lets an error in.
    let file = config(backend, false).write()?;
    apply(&topo.node, &file)?;
    let mut id = 500;
    for v6 in [false, true] {
        let node = node_addr(v6);
        let far: IpAddr = if v6 { "fd00:77::9" } else { "198.19.77.9" }
            .parse()
            .unwrap();
        let router: IpAddr = if v6 { "fd00:16::1" } else { "198.18.16.1" }
            .parse()
            .unwrap();
        // The node sends a datagram; routers answer with errors quoting it, or quoting one
        // it never sent (another source port).
        topo.node.enter(|| -> std::io::Result<()> {
            let bind: IpAddr = if v6 {
                "::".parse().unwrap()
            } else {
                "0.0.0.0".parse().unwrap()
            };
            let s = std::net::UdpSocket::bind((bind, 47400))?;
            s.send_to(b"x", (far, 53))?;
            Ok(())
        })??;
        let mut errors = Vec::new();
        for (sport, related) in [(47400u16, true), (47401, false)] {
            id += 1;
            let quoted_l4 = craft::udp(node, far, sport, 53, b"x");
            let quoted = if v6 {
                craft::ipv6(node, far, 17, &quoted_l4)
            } else {
                craft::ipv4(node, far, 17, 1, 0, &[], &quoted_l4)
            };
            let mut payload = quoted;
            payload.extend(craft::marker(id));
            let (t, code, proto) = if v6 { (1, 4, 58) } else { (3, 3, 1) };
            let m = craft::icmp(router, node, t, code, [0; 4], &payload);
            let ip = if v6 {
                craft::ipv6(router, node, proto, &m)
            } else {
                craft::ipv4(router, node, proto, id as u16, 0, &[], &m)
            };
            errors.push((id, related, craft::frame(&ip)));
        }
        seen.clear();
        for (_, _, f) in &errors {
            wire.send(f)?;
        }
        let got = seen.settle();
        for (id, related, _) in errors {
            let delivered = got.iter().any(|d| d.0 == id);
            anyhow::ensure!(
                delivered == related,
                "ICMP error about {} flow (v6={v6}): delivered={delivered}\n{}",
                if related {
                    "the node's live"
                } else {
                    "a made-up"
                },
                describe(&topo.node, backend)
            );
        }
    }
    Ok(())
}

backend_tests!(
    a_fin_on_a_data_segment_ends_the_flow,
    a_syn_on_a_live_connection_is_judged_by_the_rules,
    reused_source_port_is_a_new_connection,
    stale_segments_after_a_close_are_judged_anew,
    udp_flows_expire,
    icmp_errors_need_a_live_flow
);
