//! The seed tables, cell by cell, in both address families: every allowed source, protocol and
//! port gets through; every other source, and the ports just outside each range, are dropped
//! (unless another row allows them: the expected verdicts come from `nodewall explain`, and the
//! in-range cells are asserted to be allowed by it too). Then real connections to real
//! listeners, the uplink-only scope, and forwarded traffic to local pods.

use std::net::IpAddr;

use nodewall::config::Protocol;
use nodewall::profiles::{self, From};
use nodewall_netns_tests::nodewall::{apply, explain, Config};
use nodewall_netns_tests::probe::{mismatches, Probe, Prober};
use nodewall_netns_tests::topology::{node_addr, Topology};
use nodewall_netns_tests::traffic::{ping_ok, tcp_ok, udp_ok, Checks, Server};
use nodewall_netns_tests::{backend_tests, Backend};

/// Probes for one profile rule, from `src`: in-range cells (`true`) and neighbours (`false`).
fn cells(rule: &profiles::ProfileRule, src: IpAddr) -> Vec<(Probe, bool)> {
    let mut out = Vec::new();
    // The rule's port ranges, each with its two ends (in) and the ports just outside (out).
    let port_cells = || -> Vec<(u16, bool)> {
        if rule.ports.is_empty() {
            return vec![(1, true), (10250, true), (65535, true)];
        }
        let mut v = Vec::new();
        for r in rule.ports {
            v.push((r.start, true));
            v.push((r.end, true));
            if r.start > 1 {
                v.push((r.start - 1, false));
            }
            if r.end < 65535 {
                v.push((r.end + 1, false));
            }
        }
        v
    };
    let on_port: Option<fn(IpAddr, u16) -> Probe> = match rule.protocol {
        Protocol::Tcp => Some(Probe::tcp),
        Protocol::Udp => Some(Probe::udp),
        _ => None,
    };
    if let Some(probe) = on_port {
        out.extend(port_cells().into_iter().map(|(p, c)| (probe(src, p), c)));
    }
    match rule.protocol {
        Protocol::Tcp | Protocol::Udp => {}
        Protocol::Icmp if src.is_ipv4() => out.push((Probe::ping(src), true)),
        Protocol::Icmpv6 if src.is_ipv6() => out.push((Probe::ping(src), true)),
        Protocol::Icmp | Protocol::Icmpv6 => {}
        Protocol::All => {
            out.push((Probe::tcp(src, 10250), true));
            out.push((Probe::udp(src, 53), true));
            out.push((Probe::ping(src), true));
            out.push((Probe::other(src, 253), true));
        }
    }
    out
}

fn seed_table_cells(backend: Backend) -> anyhow::Result<()> {
    let topo = Topology::new()?;
    let mut prober = Prober::new(&topo)?;
    let mut failures = Vec::new();
    let mut count = 0;
    for profile in profiles::all() {
        let file = Config::new(backend, Some(profile.name)).write()?;
        apply(&topo.node, &file)?;
        // (probe, is an allowed cell of this rule)
        let mut probes: Vec<(Probe, bool, String)> = Vec::new();
        for rule in profile.rules {
            for v6 in [false, true] {
                for (peer, network) in topo.remote_peers() {
                    let allowed_source = rule.from.iter().any(|f| match f {
                        From::Anywhere => true,
                        From::Network(n) => Some(*n) == network,
                    });
                    for (probe, in_range) in cells(rule, peer.addr(v6)) {
                        let what = format!(
                            "{}/{} from {} ({})",
                            profile.name,
                            rule.name,
                            network.unwrap_or("internet"),
                            if in_range { "cell" } else { "neighbour port" }
                        );
                        probes.push((probe, allowed_source && in_range, what));
                    }
                }
            }
        }
        let list: Vec<Probe> = probes.iter().map(|p| p.0).collect();
        let verdicts = explain(&file, &list)?;
        let expect: Vec<bool> = verdicts.iter().map(|v| v["verdict"] == "accept").collect();
        for (i, (probe, cell, what)) in probes.iter().enumerate() {
            if *cell && !expect[i] {
                failures.push(format!("explain drops an allowed cell: {what}: {probe:?}"));
            }
        }
        for i in mismatches(&mut prober, &list, &expect)? {
            failures.push(format!(
                "{}: {:?}: expected {} ({}), datapath did the opposite",
                probes[i].2, probes[i].0, verdicts[i]["verdict"], verdicts[i]["reason"]
            ));
        }
        let dropped = expect.iter().filter(|e| !**e).count();
        assert!(dropped > 0, "{}: no probe expected to drop", profile.name);
        count += list.len();
    }
    if !failures.is_empty() {
        anyhow::bail!("{} failures:\n{}", failures.len(), failures.join("\n"));
    }
    eprintln!("{count} seed-table probes as expected");
    Ok(())
}

/// What a real client does to the node: a TCP connection, a UDP exchange or a ping.
#[derive(Clone, Copy, Debug)]
enum Real {
    Tcp(u16),
    Udp(u16),
    Ping,
}

const NODE_TCP: [u16; 4] = [30080, 10250, 443, 22];
const NODE_UDP: [u16; 2] = [30053, 53];

/// Real TCP/UDP listeners and ping in the node, reached from every peer in both families,
/// under every profile; the expected outcome is `nodewall explain`'s verdict.
fn real_connections(backend: Backend) -> anyhow::Result<()> {
    let topo = Topology::new()?;
    // Eight source ports per peer: a later profile's connection reuses the port of an earlier
    // one (often one that profile allowed and this one denies). A connection attempt is judged
    // by the rules whatever the tuple did before: before connection tracking in the XDP
    // datapath, this failed on every run.
    for (peer, _) in topo.remote_peers() {
        peer.ns
            .sysctl("net.ipv4.ip_local_port_range", "40000 40007")?;
    }
    let mut servers = Vec::new();
    for p in NODE_TCP {
        servers.push(Server::tcp(&topo.node, p)?);
    }
    for p in NODE_UDP {
        servers.push(Server::udp(&topo.node, p)?);
    }
    let mut kinds: Vec<Real> = NODE_TCP.iter().map(|&p| Real::Tcp(p)).collect();
    kinds.extend(NODE_UDP.iter().map(|&p| Real::Udp(p)));
    kinds.push(Real::Ping);
    let mut failures = Vec::new();
    for profile in profiles::all() {
        let file = Config::new(backend, Some(profile.name)).write()?;
        apply(&topo.node, &file)?;
        let mut cases = Vec::new();
        for (peer, network) in topo.remote_peers() {
            for v6 in [false, true] {
                for &kind in &kinds {
                    let src = peer.addr(v6);
                    let probe = match kind {
                        Real::Tcp(p) => Probe::tcp(src, p),
                        Real::Udp(p) => Probe::udp(src, p),
                        Real::Ping => Probe::ping(src),
                    };
                    cases.push((peer, network.unwrap_or("internet"), v6, kind, probe));
                }
            }
        }
        let probes: Vec<Probe> = cases.iter().map(|c| c.4).collect();
        let verdicts = explain(&file, &probes)?;
        let mut checks = Checks::default();
        for ((peer, from, v6, kind, _), v) in cases.into_iter().zip(&verdicts) {
            let node = node_addr(v6);
            let what = format!("{}: {from} -> node {kind:?} (v6={v6})", profile.name);
            checks.expect(what, v["verdict"] == "accept", move || match kind {
                Real::Tcp(p) => tcp_ok(&peer.ns, node, p),
                Real::Udp(p) => udp_ok(&peer.ns, node, p),
                Real::Ping => ping_ok(&peer.ns, node),
            });
        }
        if let Err(e) = checks.run() {
            failures.push(format!("{e:#}"));
        }
    }
    anyhow::ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

/// Only the uplink is filtered: the local pod (on cni0) and loopback reach every port. (nft
/// matches the input interface; XDP is attached to the uplinks only.)
fn only_uplinks_are_filtered(backend: Backend) -> anyhow::Result<()> {
    let topo = Topology::new()?;
    let topo = &topo;
    let _s = Server::tcp(&topo.node, 10250)?;
    let _u = Server::udp(&topo.node, 53)?;
    let file = Config::new(backend, Some("eks-control-plane")).write()?;
    apply(&topo.node, &file)?;
    let mut checks = Checks::default();
    for v6 in [false, true] {
        let node = node_addr(v6);
        checks.expect(
            format!("cluster -> node tcp/10250 on the uplink (v6={v6})"),
            false,
            move || tcp_ok(&topo.cluster.ns, node, 10250),
        );
        checks.expect(
            format!("local pod on cni0 -> node tcp/10250 (v6={v6})"),
            true,
            move || tcp_ok(&topo.local_pod.ns, node, 10250),
        );
        checks.expect(
            format!("local pod on cni0 -> node udp/53 (v6={v6})"),
            true,
            move || udp_ok(&topo.local_pod.ns, node, 53),
        );
        checks.expect(format!("loopback tcp/10250 (v6={v6})"), true, move || {
            tcp_ok(&topo.node, node, 10250)
        });
    }
    checks.run()
}

/// Traffic forwarded to a pod on this node arrives on the uplink and meets the same baseline:
/// nft filters at prerouting, before the routing decision; XDP sees every packet arriving on
/// the interface, whatever its destination.
fn forwarded_traffic_to_pods_is_filtered(backend: Backend) -> anyhow::Result<()> {
    let topo = Topology::new()?;
    let topo = &topo;
    let _s = Server::tcp(&topo.local_pod.ns, 8080)?;
    apply(&topo.node, &Config::new(backend, Some("tke-node")).write()?)?;
    let mut checks = Checks::default();
    for v6 in [false, true] {
        let pod = topo.local_pod.addr(v6);
        for (peer, from, want) in [
            (&topo.internet, "internet", false),
            (&topo.cluster, "cluster", true),
            (&topo.pods, "remote pod", true),
        ] {
            checks.expect(
                format!("{from} -> local pod tcp/8080 (v6={v6})"),
                want,
                move || tcp_ok(&peer.ns, pod, 8080),
            );
        }
    }
    checks.run()
}

backend_tests!(
    seed_table_cells,
    real_connections,
    only_uplinks_are_filtered,
    forwarded_traffic_to_pods_is_filtered,
);
