//! XDP drift: every way the XDP datapath can be taken apart behind `nodewall run`, one after
//! the other against one agent, in both attach modes. Each time the agent notices within 3 s,
//! restores exactly what was removed, counts one repair, and enforces again.
//!
//! - the XDP link detached (`bpftool link detach`): pinned but dead;
//! - the XDP link's pin removed: the kernel detaches it;
//! - the TC egress link detached: return traffic would stop being recognised;
//! - the policy switch flipped to the other generation (`bpftool map update`);
//! - the whole pin directory removed: links detached and maps unpinned.
//!
//! After each repair, a dropped packet is sampled to the log again.

mod daemon_support;

use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use daemon_support::{wait_until, Agent, TempDir};
use nodewall_netns_tests::installed::{self, xdp_pins};
use nodewall_netns_tests::netns::Netns;
use nodewall_netns_tests::nodewall::{status, Config};
use nodewall_netns_tests::topology::{node_addr, Topology, UPLINK};
use nodewall_netns_tests::traffic::{tcp_ok, Server};
use nodewall_netns_tests::{backend_tests, Backend};

/// One drift check (every second) plus the repair. Restoring removed pins reloads the
/// programs (the verifier alone takes a few hundred ms), 1.2-1.6 s in all on a quiet machine;
/// the margin is for a loaded CI machine running both attach modes at once.
const REPAIR_WITHIN: Duration = Duration::from_secs(3);

#[derive(Clone, Copy, Debug)]
enum Sabotage {
    DetachXdpLink,
    UnpinXdpLink,
    DetachTcLink,
    FlipSwitch,
    RemovePins,
}

fn sabotage(node: &Netns, how: Sabotage) -> anyhow::Result<()> {
    match how {
        Sabotage::DetachXdpLink => installed::detach_xdp_link(node),
        Sabotage::UnpinXdpLink => installed::unpin_xdp_link(node),
        Sabotage::DetachTcLink => {
            let pin = installed::xdp_link_pin(node, "tc")?;
            let id = installed::link_id(node, &pin)?.to_string();
            node.exec("bpftool", &["link", "detach", "id", &id])?;
            Ok(())
        }
        Sabotage::FlipSwitch => flip_switch(node),
        Sabotage::RemovePins => {
            let pins = xdp_pins(node)?;
            std::fs::remove_dir_all(&pins).with_context(|| format!("removing {}", pins.display()))
        }
    }
}

/// Points the XDP program at the generation the agent is not using (`Switch::active`, the
/// second u32 of the `NW_SWITCH` value).
fn flip_switch(node: &Netns) -> anyhow::Result<()> {
    installed::edit_switch(node, |bytes| {
        bytes[4] = if bytes[4] == "0x00" { "0x01" } else { "0x00" }.to_string();
    })
}

/// Everything in place: XDP on the uplink in `backend`'s mode, our TCX egress program, both
/// link pins, and the switch on a generation that holds the policy's rules.
fn intact(node: &Netns, backend: Backend, rules: usize) -> bool {
    let egress =
        installed::tcx_egress(node, UPLINK).is_ok_and(|p| p.iter().any(|n| n == "nodewall_egress"));
    let pins = ["xdp", "tc"]
        .iter()
        .all(|k| installed::xdp_link_pin(node, k).is_ok_and(|p| p.exists()));
    let policy = status(node, backend)
        .is_ok_and(|s| s["rules"].as_array().is_some_and(|r| r.len() == rules));
    installed::present(node, backend) && egress && pins && policy
}

/// Drop samples logged for connections to the kubelet port.
fn kubelet_samples(agent: &Agent) -> usize {
    agent
        .log()
        .lines()
        .filter(|l| l.contains("packet dropped") && l.contains("dport=10250"))
        .count()
}

fn every_kind_of_xdp_drift_is_repaired(backend: Backend) -> anyhow::Result<()> {
    let topo = Topology::new()?;
    let _kubelet = Server::tcp(&topo.node, 10250)?;
    let _web = Server::tcp(&topo.internet.ns, 8443)?;
    let cfg = Config::new(backend, Some("tke-node"));
    let (dir, config) = TempDir::with_config("drift-xdp", &cfg.yaml())?;
    let agent = Agent::start(&topo.node, backend, &config, &dir, &[])?;
    let rules = status(&topo.node, backend)?["rules"]
        .as_array()
        .map_or(0, Vec::len);
    ensure!(rules > 0, "the policy has rules");
    ensure!(intact(&topo.node, backend, rules), "installed at start");
    let kubelet_closed = || !tcp_ok(&topo.internet.ns, node_addr(false), 10250);
    let return_traffic = || tcp_ok(&topo.node, topo.internet.addr(false), 8443);
    ensure!(kubelet_closed() && return_traffic(), "enforcing at start");

    let kinds = [
        Sabotage::DetachXdpLink,
        Sabotage::UnpinXdpLink,
        Sabotage::DetachTcLink,
        Sabotage::FlipSwitch,
        Sabotage::RemovePins,
    ];
    for (i, how) in kinds.into_iter().enumerate() {
        let round = i as f64 + 1.0;
        sabotage(&topo.node, how)?;
        let t = Instant::now();
        ensure!(
            !intact(&topo.node, backend, rules),
            "{how:?}: the sabotage took effect"
        );
        ensure!(
            wait_until(REPAIR_WITHIN, || intact(&topo.node, backend, rules)),
            "{how:?}: restored within {REPAIR_WITHIN:?}"
        );
        eprintln!("{how:?}: restored after {} ms", t.elapsed().as_millis());
        let repairs = agent.metric_reaches("nodewall_drift_repairs_total", round, REPAIR_WITHIN);
        ensure!(
            repairs == round,
            "{how:?}: {repairs} repairs counted, want {round}"
        );
        let sampled_before = kubelet_samples(&agent);
        ensure!(kubelet_closed(), "{how:?}: enforcing again");
        // The drop is sampled too: after the pins are removed, the rebuilt datapath writes to
        // a new ring buffer, which the agent must find.
        ensure!(
            wait_until(Duration::from_secs(5), || kubelet_samples(&agent)
                > sampled_before),
            "{how:?}: a dropped kubelet connection is sampled again"
        );
        ensure!(return_traffic(), "{how:?}: return traffic recognised again");
        // Let one drift check pass clean, so the repairs do not count as a streak.
        std::thread::sleep(Duration::from_millis(1200));
    }
    ensure!(
        agent.log().matches("trigger=\"drift-repair\"").count() == kinds.len(),
        "each repair is logged once"
    );
    Ok(())
}

backend_tests!(xdp: every_kind_of_xdp_drift_is_repaired);
