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
use nodewall_netns_tests::traffic::{ping_ok, tcp_ok, udp_ok, Server};
use nodewall_netns_tests::{backend_tests, Backend};

/// Probes for one profile rule, from `src`: in-range cells (`true`) and neighbours (`false`).
fn cells(rule: &profiles::ProfileRule, src: IpAddr) -> Vec<(Probe, bool)> {
    let mut out = Vec::new();
    let ports = |p: Protocol| -> Vec<(u16, bool)> {
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
        let _ = p;
        v
    };
    match rule.protocol {
        Protocol::Tcp => out.extend(
            ports(Protocol::Tcp)
                .into_iter()
                .map(|(p, c)| (Probe::tcp(src, p), c)),
        ),
        Protocol::Udp => out.extend(
            ports(Protocol::Udp)
                .into_iter()
                .map(|(p, c)| (Probe::udp(src, p), c)),
        ),
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

/// Real TCP/UDP listeners and ping in the node, reached from the peers.
fn real_connections(backend: Backend) -> anyhow::Result<()> {
    let topo = Topology::new()?;
    let _servers = [
        Server::tcp(&topo.node, 30080)?,
        Server::tcp(&topo.node, 10250)?,
        Server::tcp(&topo.node, 443)?,
        Server::udp(&topo.node, 30053)?,
        Server::udp(&topo.node, 53)?,
    ];
    let mut failures = Vec::new();
    let mut check = |what: String, got: bool, want: bool| {
        if got != want {
            failures.push(format!("{what}: got {got}, want {want}"));
        }
    };
    // Before any policy everything is reachable: the checks below can fail.
    check(
        "no policy: internet tcp/10250".into(),
        tcp_ok(&topo.internet.ns, node_addr(false), 10250),
        true,
    );

    let tke = Config::new(backend, Some("tke-node")).write()?;
    apply(&topo.node, &tke)?;
    for v6 in [false, true] {
        let node = node_addr(v6);
        let f = if v6 { "v6" } else { "v4" };
        let (inet, clus, pods) = (&topo.internet.ns, &topo.cluster.ns, &topo.pods.ns);
        check(
            format!("tke {f}: internet tcp/30080 (NodePort)"),
            tcp_ok(inet, node, 30080),
            true,
        );
        check(
            format!("tke {f}: internet tcp/10250"),
            tcp_ok(inet, node, 10250),
            false,
        );
        check(
            format!("tke {f}: internet udp/30053 (NodePort)"),
            udp_ok(inet, node, 30053),
            true,
        );
        check(
            format!("tke {f}: internet udp/53"),
            udp_ok(inet, node, 53),
            false,
        );
        check(format!("tke {f}: internet ping"), ping_ok(inet, node), true);
        check(
            format!("tke {f}: cluster tcp/10250"),
            tcp_ok(clus, node, 10250),
            true,
        );
        check(
            format!("tke {f}: cluster udp/53"),
            udp_ok(clus, node, 53),
            true,
        );
        check(
            format!("tke {f}: pods tcp/443"),
            tcp_ok(pods, node, 443),
            true,
        );
    }
    let eks = Config::new(backend, Some("eks-node")).write()?;
    apply(&topo.node, &eks)?;
    for v6 in [false, true] {
        let node = node_addr(v6);
        let f = if v6 { "v6" } else { "v4" };
        let (inet, clus, cp) = (&topo.internet.ns, &topo.cluster.ns, &topo.control_plane.ns);
        check(
            format!("eks {f}: internet tcp/30080"),
            tcp_ok(inet, node, 30080),
            false,
        );
        check(
            format!("eks {f}: internet ping"),
            ping_ok(inet, node),
            false,
        );
        check(
            format!("eks {f}: control plane tcp/10250"),
            tcp_ok(cp, node, 10250),
            true,
        );
        check(
            format!("eks {f}: control plane tcp/443"),
            tcp_ok(cp, node, 443),
            false,
        );
        check(
            format!("eks {f}: control plane udp/53"),
            udp_ok(cp, node, 53),
            false,
        );
        check(
            format!("eks {f}: cluster udp/53"),
            udp_ok(clus, node, 53),
            true,
        );
        check(format!("eks {f}: cluster ping"), ping_ok(clus, node), true);
    }
    if !failures.is_empty() {
        anyhow::bail!("{}", failures.join("\n"));
    }
    Ok(())
}

/// Only the uplink is filtered: the local pod (on cni0) and loopback reach every port.
fn only_uplinks_are_filtered(backend: Backend) -> anyhow::Result<()> {
    let topo = Topology::new()?;
    let _s = Server::tcp(&topo.node, 10250)?;
    let _u = Server::udp(&topo.node, 53)?;
    apply(
        &topo.node,
        &Config::new(backend, Some("eks-control-plane")).write()?,
    )?;
    for v6 in [false, true] {
        let node = node_addr(v6);
        anyhow::ensure!(
            !tcp_ok(&topo.cluster.ns, node, 10250),
            "uplink traffic is filtered (v6={v6})"
        );
        anyhow::ensure!(
            tcp_ok(&topo.local_pod.ns, node, 10250),
            "local pod on cni0 passes (v6={v6})"
        );
        anyhow::ensure!(
            udp_ok(&topo.local_pod.ns, node, 53),
            "local pod udp passes (v6={v6})"
        );
        anyhow::ensure!(tcp_ok(&topo.node, node, 10250), "loopback passes (v6={v6})");
    }
    Ok(())
}

/// Traffic forwarded to a pod on this node arrives on the uplink and meets the same baseline.
fn forwarded_traffic_to_pods_is_filtered(backend: Backend) -> anyhow::Result<()> {
    let topo = Topology::new()?;
    let _s = Server::tcp(&topo.local_pod.ns, 8080)?;
    apply(&topo.node, &Config::new(backend, Some("tke-node")).write()?)?;
    for v6 in [false, true] {
        let pod = topo.local_pod.addr(v6);
        anyhow::ensure!(
            !tcp_ok(&topo.internet.ns, pod, 8080),
            "internet -> pod:8080 dropped (v6={v6})"
        );
        anyhow::ensure!(
            tcp_ok(&topo.cluster.ns, pod, 8080),
            "cluster -> pod:8080 allowed (v6={v6})"
        );
        anyhow::ensure!(
            tcp_ok(&topo.pods.ns, pod, 8080),
            "remote pod -> pod:8080 allowed (v6={v6})"
        );
    }
    Ok(())
}

backend_tests!(
    seed_table_cells,
    real_connections,
    only_uplinks_are_filtered,
    forwarded_traffic_to_pods_is_filtered,
);
