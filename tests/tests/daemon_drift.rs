//! Drift repair: whatever removes the installed policy behind the agent's back, `nodewall run`
//! notices within 2 seconds, restores it and counts the repair.

mod daemon_support;

use std::time::{Duration, Instant};

use anyhow::ensure;
use daemon_support::{table_present, wait_until, Agent, TempDir};
use nodewall_netns_tests::nodewall::Config;
use nodewall_netns_tests::topology::{node_addr, Topology};
use nodewall_netns_tests::traffic::{tcp_ok, Server};
use nodewall_netns_tests::{backend_tests, installed, Backend};

const REPAIR_WITHIN: Duration = Duration::from_secs(2);

/// Removes what `backend` installed, the way an operator or another tool would.
fn sabotage(topo: &Topology, backend: Backend) -> anyhow::Result<()> {
    match backend {
        Backend::Nft => {
            topo.node
                .exec("nft", &["delete", "table", "inet", "nodewall"])?;
        }
        // `ip link set dev eth0 xdp off` is refused for a link-based attachment (EBUSY); an
        // operator detaches the link (it stays pinned, dead) or removes its pin.
        Backend::XdpNative => installed::detach_xdp_link(&topo.node)?,
        Backend::XdpGeneric => installed::unpin_xdp_link(&topo.node)?,
    }
    Ok(())
}

/// Whether what `backend` installs is present.
fn installed(topo: &Topology, backend: Backend) -> bool {
    match backend {
        Backend::Nft => table_present(&topo.node),
        Backend::XdpNative | Backend::XdpGeneric => installed::present(&topo.node, backend),
    }
}

fn drift_is_repaired(backend: Backend) -> anyhow::Result<()> {
    let topo = Topology::new()?;
    let _kubelet = Server::tcp(&topo.node, 10250)?;
    let (dir, config) =
        TempDir::with_config("drift", &Config::new(backend, Some("tke-node")).yaml())?;
    let agent = Agent::start(&topo.node, backend, &config, &dir, &[])?;
    let kubelet_from_internet = || tcp_ok(&topo.internet.ns, node_addr(false), 10250);
    ensure!(
        !kubelet_from_internet(),
        "kubelet is closed to the internet"
    );

    for round in 1..=2 {
        sabotage(&topo, backend)?;
        let t = Instant::now();
        ensure!(
            !installed(&topo, backend),
            "round {round}: the policy is gone"
        );
        ensure!(
            wait_until(REPAIR_WITHIN, || installed(&topo, backend)),
            "round {round}: restored within {REPAIR_WITHIN:?}"
        );
        eprintln!(
            "round {round}: restored after {} ms",
            t.elapsed().as_millis()
        );
        let repairs =
            agent.metric_reaches("nodewall_drift_repairs_total", round as f64, REPAIR_WITHIN);
        ensure!(
            repairs == round as f64,
            "round {round}: {repairs} repairs counted"
        );
        ensure!(!kubelet_from_internet(), "round {round}: enforcing again");
    }
    ensure!(
        agent.log().contains("trigger=\"drift-repair\""),
        "repairs are logged"
    );
    Ok(())
}

backend_tests!(drift_is_repaired);
