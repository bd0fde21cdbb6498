//! `nodewall run` with the nft backend: partial drift (a deleted set element, a flushed chain)
//! is repaired within 2 seconds and counted, the generation goes on after the table was
//! deleted, and dropped packets become rate-limited structured log lines.

mod daemon_support;

use std::collections::HashMap;
use std::net::{IpAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use daemon_support::{wait_until, Agent, TempDir};
use nodewall::backend::nft::nflog::KERNEL_SAMPLE_RATE;
use nodewall_netns_tests::netns::Netns;
use nodewall_netns_tests::nodewall::{self as cli, drop_packets, Config};
use nodewall_netns_tests::topology::{node_addr, Topology};
use nodewall_netns_tests::traffic::{tcp_ok, Server};
use nodewall_netns_tests::{can_run, Backend};

const REPAIR_WITHIN: Duration = Duration::from_secs(2);
/// Two IPv4 networks, so that they are a set (one network is a compare) whose element the
/// sabotage can delete.
const DENY_RULE: &str = "  - name: deny-inet\n    action: deny\n    protocol: tcp\n    ports: [\"10250\"]\n    from: [\"198.19.0.0/16\", \"198.18.200.0/24\", \"fd00:99::/64\"]";

fn config() -> String {
    let mut cfg = Config::new(Backend::Nft, Some("tke-node"));
    cfg.rules = vec![DENY_RULE.into()];
    cfg.yaml()
}

fn nft(node: &Netns, cmd: &str) -> anyhow::Result<String> {
    let args: Vec<&str> = cmd.split(' ').collect();
    node.exec("nft", &args)
        .with_context(|| format!("nft {cmd}"))
}

/// Runs a test body with a topology, a kubelet-like server and a running agent.
fn with_agent(name: &str, body: fn(&Topology, &Agent) -> anyhow::Result<()>) {
    if !can_run(name) {
        return;
    }
    let run = || -> anyhow::Result<()> {
        let topo = Topology::new()?;
        let _kubelet = Server::tcp(&topo.node, 10250)?;
        let (dir, config) = TempDir::with_config(name, &config())?;
        let agent = Agent::start(&topo.node, Backend::Nft, &config, &dir, &[])?;
        body(&topo, &agent)
    };
    if let Err(e) = run() {
        panic!("{name}: {e:#}");
    }
}

fn partial_drift(topo: &Topology, agent: &Agent) -> anyhow::Result<()> {
    let node = &topo.node;
    let source_set = || nft(node, "list set inet nodewall src4.deny-inet").unwrap_or_default();
    let default_deny = || {
        nft(node, "list chain inet nodewall drop.default-deny")
            .map(|l| l.lines().filter(|r| r.ends_with(" drop")).count())
            .unwrap_or(0)
    };
    ensure!(source_set().contains("198.19.0.0/16"));
    ensure!(default_deny() == 8, "8 counting drop rules");
    let generation = || agent.metric("nodewall_policy_generation").unwrap_or(0.0);
    let start_generation = generation();

    let rounds: [(&str, &str, &dyn Fn() -> bool); 2] = [
        (
            "a deleted set element",
            "delete element inet nodewall src4.deny-inet { 198.19.0.0/16 }",
            &|| source_set().contains("198.19.0.0/16"),
        ),
        (
            "a flushed chain",
            "flush chain inet nodewall drop.default-deny",
            &|| default_deny() == 8,
        ),
    ];
    for (i, (what, sabotage, repaired)) in rounds.iter().enumerate() {
        let round = i as f64 + 1.0;
        nft(node, sabotage)?;
        let t = Instant::now();
        ensure!(
            wait_until(REPAIR_WITHIN, repaired),
            "{what}: restored within {REPAIR_WITHIN:?}"
        );
        eprintln!("{what}: restored after {} ms", t.elapsed().as_millis());
        let repairs = agent.metric_reaches("nodewall_drift_repairs_total", round, REPAIR_WITHIN);
        ensure!(repairs == round, "{what}: {repairs} repairs counted");
        ensure!(
            !tcp_ok(&topo.internet.ns, node_addr(false), 10250),
            "{what}: enforcing again"
        );
    }
    ensure!(
        generation() == start_generation + 2.0,
        "one generation per repair"
    );

    // The table deleted as a whole: repaired too, and the generation goes on from where it was.
    let before = generation();
    nft(node, "delete table inet nodewall")?;
    ensure!(
        wait_until(REPAIR_WITHIN, || source_set().contains("198.19.0.0/16")),
        "the table is restored"
    );
    agent.metric_reaches("nodewall_drift_repairs_total", 3.0, REPAIR_WITHIN);
    ensure!(
        generation() == before + 1.0,
        "generation {} after {before}: it must not restart at 1",
        generation()
    );
    let status = cli::status(node, Backend::Nft)?;
    ensure!(
        status["generation"].as_f64() == Some(before + 1.0),
        "{status}"
    );
    Ok(())
}

#[test]
fn partial_drift_is_repaired() {
    with_agent("partial_drift_is_repaired", partial_drift);
}

/// `key=value` fields of the agent's log lines for drop samples.
fn samples(log: &str) -> Vec<HashMap<String, String>> {
    log.lines()
        .filter(|l| l.contains("nodewall::drops") && l.contains("packet dropped"))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|w| w.split_once('='))
                .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
                .collect()
        })
        .collect()
}

fn has_sample(agent: &Agent, want: &[(&str, &str)]) -> bool {
    samples(&agent.log()).iter().any(|s| {
        want.iter()
            .all(|(k, v)| s.get(*k).map(String::as_str) == Some(*v))
    })
}

/// Sends `n` UDP datagrams from `peer` to the node, paced so that no queue on the way drops
/// any; returns how long it took.
fn udp_flood(peer: &Netns, to: IpAddr, port: u16, n: usize) -> anyhow::Result<Duration> {
    peer.enter(|| -> anyhow::Result<Duration> {
        let sock = UdpSocket::bind("0.0.0.0:0")?;
        let t = Instant::now();
        for i in 0..n {
            sock.send_to(b"flood", (to, port))?;
            if i % 20 == 19 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Ok(t.elapsed())
    })?
}

fn drop_samples(topo: &Topology, agent: &Agent) -> anyhow::Result<()> {
    let internet = &topo.internet;
    // One dropped connection attempt per family: one sample each, with every field.
    for v6 in [false, true] {
        ensure!(!tcp_ok(&internet.ns, node_addr(v6), 10250));
        let (src, dst) = (internet.addr(v6).to_string(), node_addr(v6).to_string());
        let want = [
            ("src", src.as_str()),
            ("dst", dst.as_str()),
            ("protocol", "tcp"),
            ("dport", "10250"),
            ("reason", "rule"),
            ("rule", "deny-inet"),
        ];
        ensure!(
            wait_until(Duration::from_secs(3), || has_sample(agent, &want)),
            "a sample line with {want:?}; samples: {:#?}",
            samples(&agent.log())
        );
    }

    // A flood: every packet is counted, few are sampled.
    const FLOOD: usize = 600;
    const PORT: u16 = 9999;
    let node = &topo.node;
    let counted = || -> anyhow::Result<u64> {
        let s = cli::status(node, Backend::Nft)?;
        Ok(drop_packets(&s, "default-deny", "", "ipv4", "udp"))
    };
    let sampled = || {
        ["logged", "suppressed"]
            .iter()
            .map(|o| {
                agent
                    .metric(&format!("nodewall_drop_samples_total{{outcome=\"{o}\"}}"))
                    .unwrap_or(0.0)
            })
            .sum::<f64>()
    };
    let is_flood = |s: &HashMap<String, String>| {
        s.get("dport").map(String::as_str) == Some("9999")
            && s.get("reason").map(String::as_str) == Some("default-deny")
    };
    let before = (counted()?, sampled());
    let took = udp_flood(&internet.ns, node_addr(false), PORT, FLOOD)?;
    // Samples arrive within moments; give them a second, then they must have stopped.
    std::thread::sleep(Duration::from_secs(1));
    let dropped = counted()? - before.0;
    let samples_read = sampled() - before.1;
    let lines = samples(&agent.log()).iter().filter(|s| is_flood(s)).count();
    eprintln!(
        "flood of {FLOOD} in {} ms: {dropped} counted, {samples_read} sampled, {lines} logged",
        took.as_millis()
    );
    ensure!(dropped == FLOOD as u64, "every packet counted: {dropped}");
    // The kernel's bucket: a burst of one second's worth, then the rate.
    let limit = KERNEL_SAMPLE_RATE as f64 * (1.0 + took.as_secs_f64()) + 1.0;
    ensure!(
        samples_read >= 1.0 && samples_read <= limit,
        "{samples_read} samples, at most {limit} allowed"
    );
    ensure!(
        lines >= 1 && lines as f64 <= samples_read,
        "{lines} lines logged"
    );
    Ok(())
}

#[test]
fn drops_are_sampled_to_the_log() {
    with_agent("drops_are_sampled_to_the_log", drop_samples);
}
