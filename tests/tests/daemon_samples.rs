//! Drop sampling: `nodewall run` logs individual dropped packets (source, destination,
//! protocol, ports, reason, rule), rate-limited, and counts the samples it read.
//!
//! The XDP program hands samples to the agent through a ring buffer (rate-limited in the
//! program, then by the log); the nft backend's go through NFLOG (see also daemon_drift_nft).

mod daemon_support;

use std::time::{Duration, Instant};

use anyhow::ensure;
use daemon_support::{wait_until, Agent, TempDir};
use nodewall::backend::xdp::SAMPLES_PER_SECOND;
use nodewall_netns_tests::nodewall::Config;
use nodewall_netns_tests::probe::{Probe, Prober};
use nodewall_netns_tests::topology::{node_addr, Topology};
use nodewall_netns_tests::traffic::{tcp_ok, udp_ok, Checks};
use nodewall_netns_tests::{backend_tests, Backend};

const DENY_UDP: &str = "  - name: deny-partner-udp\n    action: deny\n    protocol: udp\n    from: [\"198.19.0.0/24\", \"fd00:99::/64\"]";

/// The agent's `packet dropped` lines that mention every one of `parts`.
fn sampled(agent: &Agent, parts: &[&str]) -> usize {
    agent
        .log()
        .lines()
        .filter(|l| l.contains("packet dropped") && parts.iter().all(|p| l.contains(p)))
        .count()
}

fn drop_samples_are_logged(backend: Backend) -> anyhow::Result<()> {
    let topo = Topology::new()?;
    let topo = &topo;
    let mut cfg = Config::new(backend, Some("tke-node"));
    cfg.rules.push(DENY_UDP.into());
    let (dir, config) = TempDir::with_config("samples", &cfg.yaml())?;
    let agent = Agent::start(&topo.node, backend, &config, &dir, &[])?;

    let mut checks = Checks::default();
    for v6 in [false, true] {
        let node = node_addr(v6);
        checks.expect(format!("internet -> kubelet (v6={v6})"), false, move || {
            tcp_ok(&topo.internet.ns, node, 10250)
        });
        checks.expect(
            format!("internet -> udp/5353 (v6={v6})"),
            false,
            move || udp_ok(&topo.internet.ns, node, 5353),
        );
    }
    checks.run()?;

    let within = Duration::from_secs(3);
    for (what, parts) in [
        (
            "default-deny, IPv4",
            vec![
                "src=198.19.0.2",
                "dst=198.18.16.2",
                "protocol=tcp",
                "dport=10250",
                "reason=default-deny",
            ],
        ),
        (
            "default-deny, IPv6",
            vec!["src=fd00:99::2", "dst=fd00:16::2", "dport=10250"],
        ),
        (
            "a deny rule, IPv4",
            vec![
                "src=198.19.0.2",
                "protocol=udp",
                "dport=5353",
                "reason=rule",
                "rule=deny-partner-udp",
            ],
        ),
        (
            "a deny rule, IPv6",
            vec!["src=fd00:99::2", "dport=5353", "rule=deny-partner-udp"],
        ),
    ] {
        ensure!(
            wait_until(within, || sampled(&agent, &parts) > 0),
            "no drop sample logged for {what} ({parts:?})"
        );
    }
    let logged = agent.metric_reaches(
        "nodewall_drop_samples_total{outcome=\"logged\"}",
        4.0,
        within,
    );
    ensure!(logged >= 4.0, "samples counted as logged: {logged}");
    if let Some(line) = agent.log().lines().find(|l| l.contains("packet dropped")) {
        eprintln!("a sample: {line}");
    }

    // A flood of drops: the program samples at most SAMPLES_PER_SECOND per CPU and second,
    // and the log takes at most a burst plus its rate of those.
    let count = |outcome: &str| {
        agent
            .metric(&format!(
                "nodewall_drop_samples_total{{outcome=\"{outcome}\"}}"
            ))
            .unwrap_or(0.0)
    };
    let (logged0, suppressed0) = (count("logged"), count("suppressed"));
    let mut prober = Prober::new(topo)?;
    let flood: Vec<Probe> = (0..2000)
        .map(|_| Probe::tcp(topo.internet.addr(false), 10250))
        .collect();
    let started = Instant::now();
    let seen = prober.send(&flood)?;
    ensure!(seen.iter().all(|s| !*s), "the flood is dropped");
    std::thread::sleep(Duration::from_millis(500));
    let secs = started.elapsed().as_secs_f64().ceil() + 1.0;
    let (logged, suppressed) = (count("logged") - logged0, count("suppressed") - suppressed0);
    let cpus = std::thread::available_parallelism().map_or(64, |n| n.get()) as f64;
    let kernel_cap = SAMPLES_PER_SECOND as f64 * cpus * secs;
    eprintln!("flood of 2000 drops in {secs} s: {logged} samples logged, {suppressed} suppressed");
    ensure!(
        logged + suppressed > 0.0 && logged + suppressed <= kernel_cap,
        "samples read: {} (at most {kernel_cap} = {SAMPLES_PER_SECOND}/s/CPU)",
        logged + suppressed
    );
    ensure!(
        logged <= 20.0 + 10.0 * secs,
        "{logged} log lines: more than the log's burst and rate allow"
    );
    Ok(())
}

/// In audit mode nothing is dropped, and the samples say so: "would be dropped", mode=audit,
/// never "packet dropped".
fn audit_samples_say_would_be_dropped(backend: Backend) -> anyhow::Result<()> {
    let topo = Topology::new()?;
    let mut cfg = Config::new(backend, Some("tke-node"));
    cfg.mode = "audit";
    let (dir, config) = TempDir::with_config("samples-audit", &cfg.yaml())?;
    let agent = Agent::start(&topo.node, backend, &config, &dir, &[])?;
    let mut prober = Prober::new(&topo)?;
    let probes: Vec<Probe> = [false, true]
        .iter()
        .map(|&v6| Probe::tcp(topo.internet.addr(v6), 10250))
        .collect();
    let would = |agent: &Agent| {
        agent
            .log()
            .lines()
            .filter(|l| {
                l.contains("packet would be dropped")
                    && l.contains("mode=audit")
                    && l.contains("dport=10250")
                    && l.contains("reason=default-deny")
            })
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while would(&agent) < 2 && Instant::now() < deadline {
        let seen = prober.send(&probes)?;
        ensure!(
            seen.iter().all(|s| *s),
            "audit mode passes every probe: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    ensure!(
        would(&agent) >= 1,
        "no audit sample logged:\n{}",
        agent.log()
    );
    ensure!(
        sampled(&agent, &[]) == 0,
        "an audit-mode sample claims a drop"
    );
    Ok(())
}

mod audit_samples_say_would_be_dropped {
    use nodewall_netns_tests::{run_case, Backend};

    #[test]
    fn nft() {
        run_case(
            "audit_samples_say_would_be_dropped",
            super::audit_samples_say_would_be_dropped,
            Backend::Nft,
        );
    }

    #[test]
    fn xdp_native() {
        run_case(
            "audit_samples_say_would_be_dropped",
            super::audit_samples_say_would_be_dropped,
            Backend::XdpNative,
        );
    }
}

backend_tests!(xdp: drop_samples_are_logged);
