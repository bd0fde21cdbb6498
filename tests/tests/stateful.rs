//! State and address translation, under every profile in both families: return traffic of the
//! node's own connections passes even where new inbound traffic is dropped, and NodePorts behind
//! a kube-proxy style DNAT are judged by the port the client used, not the one DNAT rewrote it
//! to. Expected outcomes come from `nodewall explain`.

use nodewall::profiles;
use nodewall_netns_tests::installed::describe;
use nodewall_netns_tests::nodewall::{apply, explain, Config};
use nodewall_netns_tests::probe::Probe;
use nodewall_netns_tests::topology::{node_addr, Topology};
use nodewall_netns_tests::traffic::{tcp_ok, udp_ok, Checks, Server};
use nodewall_netns_tests::{backend_tests, Backend};

/// The node's own TCP and UDP (DNS to an upstream) connections to the internet get their
/// answers; the same ports opened from the internet side are new connections. (nft: conntrack;
/// XDP: the flow table its TC egress program fills from the node's outbound packets.)
fn return_traffic_passes(backend: Backend) -> anyhow::Result<()> {
    let topo = Topology::new()?;
    let topo = &topo;
    let _web = Server::tcp(&topo.internet.ns, 8443)?;
    let _dns = Server::udp(&topo.internet.ns, 53)?;
    let _node_web = Server::tcp(&topo.node, 8443)?;
    let _node_dns = Server::udp(&topo.node, 53)?;
    for profile in profiles::all() {
        let file = Config::new(backend, Some(profile.name)).write()?;
        apply(&topo.node, &file)?;
        let inbound: Vec<Probe> = [false, true]
            .iter()
            .flat_map(|&v6| {
                let src = topo.internet.addr(v6);
                [Probe::tcp(src, 8443), Probe::udp(src, 53)]
            })
            .collect();
        let verdicts = explain(&file, &inbound)?;
        let mut checks = Checks::default();
        for (i, v6) in [false, true].into_iter().enumerate() {
            let (up, node) = (topo.internet.addr(v6), node_addr(v6));
            let p = profile.name;
            checks.expect(
                format!("{p}: node -> internet tcp/8443 answered (v6={v6})"),
                true,
                move || tcp_ok(&topo.node, up, 8443),
            );
            checks.expect(
                format!("{p}: node -> internet udp/53 answered (v6={v6})"),
                true,
                move || udp_ok(&topo.node, up, 53),
            );
            let (tcp_in, udp_in) = (&verdicts[2 * i], &verdicts[2 * i + 1]);
            checks.expect(
                format!("{p}: internet -> node tcp/8443 (v6={v6})"),
                tcp_in["verdict"] == "accept",
                move || tcp_ok(&topo.internet.ns, node, 8443),
            );
            checks.expect(
                format!("{p}: internet -> node udp/53 (v6={v6})"),
                udp_in["verdict"] == "accept",
                move || udp_ok(&topo.internet.ns, node, 53),
            );
        }
        checks
            .run()
            .map_err(|e| e.context(describe(&topo.node, backend)))?;
    }
    Ok(())
}

/// kube-proxy style DNAT in tables of its own: NodePort 30080 -> pod:8080, and
/// 29999 -> pod:30500 (30500 is inside the NodePort range, 29999 is not).
const KUBE_NAT: &str = "
table ip kube-nat {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		tcp dport 30080 dnat to 198.18.34.2:8080
		tcp dport 29999 dnat to 198.18.34.2:30500
	}
}
table ip6 kube-nat6 {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		tcp dport 30080 dnat to [fd00:34::2]:8080
		tcp dport 29999 dnat to [fd00:34::2]:30500
	}
}
";

/// nft's chain runs at prerouting before DNAT (priority -150 < dstnat); XDP runs before the
/// stack, so it only ever sees the original port.
fn nodeport_matches_the_original_port(backend: Backend) -> anyhow::Result<()> {
    let topo = Topology::new()?;
    let topo = &topo;
    let _pod = Server::tcp(&topo.local_pod.ns, 8080)?;
    let _pod2 = Server::tcp(&topo.local_pod.ns, 30500)?;
    topo.node.nft_load(KUBE_NAT.as_bytes())?;
    // Without a policy both NodePorts work: the checks below can fail.
    let mut checks = Checks::default();
    for v6 in [false, true] {
        checks.expect(
            format!("no policy: DNAT 29999 (v6={v6})"),
            true,
            move || tcp_ok(&topo.internet.ns, node_addr(v6), 29999),
        );
    }
    checks.run()?;
    let mut checked_29999_drop = false;
    for profile in profiles::all() {
        let file = Config::new(backend, Some(profile.name)).write()?;
        apply(&topo.node, &file)?;
        let mut cases = Vec::new();
        for (peer, network) in topo.remote_peers() {
            for v6 in [false, true] {
                for port in [30080u16, 29999] {
                    cases.push((peer, network.unwrap_or("internet"), v6, port));
                }
            }
        }
        let probes: Vec<Probe> = cases
            .iter()
            .map(|c| Probe::tcp(c.0.addr(c.2), c.3))
            .collect();
        let verdicts = explain(&file, &probes)?;
        // explain judges by the original port: 29999 -> 30500 is never allowed as a NodePort.
        let mut checks = Checks::default();
        for ((peer, from, v6, port), v) in cases.into_iter().zip(&verdicts) {
            let want = v["verdict"] == "accept";
            checked_29999_drop |= port == 29999 && !want && profile.name == "tke-node";
            checks.expect(
                format!("{}: {from} -> node:{port} via DNAT (v6={v6})", profile.name),
                want,
                move || tcp_ok(&peer.ns, node_addr(v6), port),
            );
        }
        checks
            .run()
            .map_err(|e| e.context(describe(&topo.node, backend)))?;
    }
    anyhow::ensure!(
        checked_29999_drop,
        "tke-node must drop 29999 -> 30500 from the internet"
    );
    Ok(())
}

backend_tests!(return_traffic_passes, nodeport_matches_the_original_port);
