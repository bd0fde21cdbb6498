//! State and address translation: return traffic of the node's own connections passes a
//! baseline that blocks new inbound traffic, and NodePorts behind a kube-proxy style DNAT are
//! judged by the port the client used, not the one DNAT rewrote it to.

use nodewall_netns_tests::nodewall::{apply, Config};
use nodewall_netns_tests::topology::{node_addr, Topology};
use nodewall_netns_tests::traffic::{tcp_ok, udp_ok, Server};
use nodewall_netns_tests::{backend_tests, Backend};

/// eks-node lets nothing in from the internet; the node's own TCP and UDP (DNS to an upstream)
/// connections to the internet still get their answers.
fn return_traffic_passes(backend: Backend) -> anyhow::Result<()> {
    let topo = Topology::new()?;
    let _web = Server::tcp(&topo.internet.ns, 8443)?;
    let _dns = Server::udp(&topo.internet.ns, 53)?;
    let _node_web = Server::tcp(&topo.node, 8443)?;
    let _node_dns = Server::udp(&topo.node, 53)?;
    apply(&topo.node, &Config::new(backend, Some("eks-node")).write()?)?;
    for v6 in [false, true] {
        let upstream = topo.internet.addr(v6);
        anyhow::ensure!(
            tcp_ok(&topo.node, upstream, 8443),
            "node -> internet tcp/8443: the answer must come back (v6={v6})"
        );
        anyhow::ensure!(
            udp_ok(&topo.node, upstream, 53),
            "node -> internet udp/53 (DNS): the answer must come back (v6={v6})"
        );
        // The same ports opened from the other side are new connections, and dropped.
        let node = node_addr(v6);
        anyhow::ensure!(
            !tcp_ok(&topo.internet.ns, node, 8443),
            "internet -> node tcp/8443 dropped (v6={v6})"
        );
        anyhow::ensure!(
            !udp_ok(&topo.internet.ns, node, 53),
            "internet -> node udp/53 dropped (v6={v6})"
        );
    }
    Ok(())
}

/// kube-proxy style DNAT in a table of its own: NodePort 30080 -> pod:8080 (allowed: 30080 is
/// a NodePort), and 29999 -> pod:30500 (dropped: 29999 is not, though 30500 would be).
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

fn nodeport_matches_the_original_port(backend: Backend) -> anyhow::Result<()> {
    let topo = Topology::new()?;
    let _pod = Server::tcp(&topo.local_pod.ns, 8080)?;
    let _pod2 = Server::tcp(&topo.local_pod.ns, 30500)?;
    let mut nft = topo
        .node
        .command("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()?;
    std::io::Write::write_all(nft.stdin.as_mut().unwrap(), KUBE_NAT.as_bytes())?;
    drop(nft.stdin.take());
    anyhow::ensure!(nft.wait()?.success(), "installing the DNAT tables");
    for v6 in [false, true] {
        let node = node_addr(v6);
        // Without a policy both NodePorts work: the checks below can fail.
        anyhow::ensure!(
            tcp_ok(&topo.internet.ns, node, 29999),
            "DNAT 29999 works without policy (v6={v6})"
        );
    }
    apply(&topo.node, &Config::new(backend, Some("tke-node")).write()?)?;
    for v6 in [false, true] {
        let node = node_addr(v6);
        anyhow::ensure!(
            tcp_ok(&topo.internet.ns, node, 30080),
            "internet -> node:30080 (NodePort, DNAT to pod:8080) allowed (v6={v6})"
        );
        anyhow::ensure!(
            !tcp_ok(&topo.internet.ns, node, 29999),
            "internet -> node:29999 (DNAT to pod:30500) dropped by its original port (v6={v6})"
        );
        anyhow::ensure!(
            !tcp_ok(&topo.internet.ns, topo.local_pod.addr(v6), 8080),
            "internet -> pod:8080 directly dropped (v6={v6})"
        );
    }
    Ok(())
}

backend_tests!(return_traffic_passes, nodeport_matches_the_original_port);
