//! `nodewall drops`: the running agent streams its drop samples on its local socket
//! (`<state-dir>/agent.sock`) to several readers at once; a reader that stops reading costs
//! the agent nothing; the flow log rotates at its limits; audit mode says "would-drop"; the
//! rules that never matched are listed. Real agent, real packets, on each backend.

mod daemon_support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use daemon_support::{replace_file, wait_until, Agent, TempDir};
use nodewall_netns_tests::nodewall::{command, Config};
use nodewall_netns_tests::probe::{Probe, Prober};
use nodewall_netns_tests::topology::{node_addr, Topology};
use nodewall_netns_tests::traffic::{tcp_ok, Server};
use nodewall_netns_tests::{backend_tests, Backend};
use serde_json::Value;

const DENY_UDP: &str = "  - name: deny-partner-udp\n    action: deny\n    protocol: udp\n    from: [\"198.19.0.0/24\", \"fd00:99::/64\"]";
/// A rule nothing in these tests sends to.
const NEVER: &str = "  - name: never-hit\n    action: deny\n    protocol: tcp\n    ports: [7]\n    from: [\"198.18.99.0/24\"]";

/// A `nodewall drops` child process; its stdout lines arrive on a channel with the instant
/// each was read. Killed on drop.
struct Reader {
    child: Child,
    lines: Receiver<(Instant, String)>,
}

impl Reader {
    fn start(
        topo: &Topology,
        backend: Backend,
        agent: &Agent,
        args: &[&str],
    ) -> anyhow::Result<Self> {
        let mut child = command(&topo.node, backend.env())?
            .arg("drops")
            .args(args)
            .arg("--state-dir")
            .arg(&agent.state_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting nodewall drops")?;
        let out = child.stdout.take().context("stdout")?;
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                if tx.send((Instant::now(), line)).is_err() {
                    return;
                }
            }
        });
        Ok(Self { child, lines })
    }

    /// The next record (as JSON) matching `want`, within `within`; lines before it are skipped.
    fn wait_for(
        &self,
        within: Duration,
        want: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<(Instant, Value)> {
        let end = Instant::now() + within;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let (at, line) = match self.lines.recv_timeout(left) {
                Ok(x) => x,
                Err(_) => bail!("no matching sample within {within:?}"),
            };
            let v: Value = serde_json::from_str(&line)
                .with_context(|| format!("`nodewall drops --json` printed {line:?}"))?;
            if want(&v) {
                return Ok((at, v));
            }
        }
    }

    /// Every line read so far.
    fn drain(&self) -> Vec<Value> {
        self.lines
            .try_iter()
            .filter_map(|(_, l)| serde_json::from_str(&l).ok())
            .collect()
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The agent running `cfg` with `drops` (YAML of the `drops:` section, given the test's
/// directory) in `topo`'s node; returns its directory and config file too.
fn agent_with_drops(
    topo: &Topology,
    cfg: &mut Config,
    what: &str,
    drops: impl FnOnce(&std::path::Path) -> String,
) -> anyhow::Result<(TempDir, std::path::PathBuf, Agent)> {
    let dir = TempDir::new(what)?;
    cfg.implicit = Some(drops(&dir.0));
    let config = dir.0.join("config.yaml");
    std::fs::write(&config, cfg.yaml())?;
    let agent = Agent::start(&topo.node, cfg.backend, &config, &dir, &[])?;
    Ok((dir, config, agent))
}

fn readers(agent: &Agent) -> f64 {
    agent.metric("nodewall_drop_stream_readers").unwrap_or(-1.0)
}

fn is(v: &Value, key: &str, want: &str) -> bool {
    v[key].as_str() == Some(want) || v[key].as_u64().map(|n| n.to_string()).as_deref() == Some(want)
}

/// Denied probes show up in `nodewall drops --json` within a second, with the right fields,
/// on two readers at once (one filtered); the flow log gets them too and rotates at its
/// limit; rules no packet matched are listed by `status` and the metric.
fn drops_are_streamed_to_several_readers(backend: Backend) -> anyhow::Result<()> {
    let topo = Topology::new()?;
    let mut cfg = Config::new(backend, Some("tke-node"));
    cfg.rules.push(DENY_UDP.into());
    cfg.rules.push(NEVER.into());
    let (dir, _, agent) = agent_with_drops(&topo, &mut cfg, "drops", |dir| {
        format!(
            "drops:\n  flow-log:\n    path: {}\n    max-size: 1KiB\n    max-files: 2",
            dir.join("flow.jsonl").display()
        )
    })?;
    let flow = dir.0.join("flow.jsonl");
    let all = Reader::start(&topo, backend, &agent, &["--follow", "--json"])?;
    let rules_only = Reader::start(
        &topo,
        backend,
        &agent,
        &[
            "-f",
            "--json",
            "--reason",
            "rule",
            "--from",
            "198.19.0.0/24",
        ],
    )?;
    ensure!(
        wait_until(Duration::from_secs(5), || readers(&agent) >= 2.0),
        "two readers connected: the metric says {}",
        readers(&agent)
    );

    let mut prober = Prober::new(&topo)?;
    let v4 = topo.internet.addr(false);
    let sent = Instant::now();
    let seen = prober.send(&[Probe::tcp(v4, 10250), Probe::udp(v4, 5353)])?;
    ensure!(seen.iter().all(|s| !*s), "the probes are dropped: {seen:?}");
    let second = Duration::from_secs(1);
    let (at, kubelet) = all.wait_for(second, |v| {
        is(v, "dport", "10250") && is(v, "protocol", "tcp")
    })?;
    eprintln!("sample after {:?}: {kubelet}", at - sent);
    for (key, want) in [
        ("src", "198.19.0.2"),
        ("dst", "198.18.16.2"),
        ("reason", "default-deny"),
        ("rule", ""),
        ("action", "drop"),
        ("direction", "ingress"),
        ("family", "ipv4"),
        ("backend", backend.config_name()),
    ] {
        ensure!(is(&kubelet, key, want), "{key} is not {want:?}: {kubelet}");
    }
    ensure!(
        kubelet["sport"].as_u64().is_some(),
        "a source port: {kubelet}"
    );
    ensure!(
        kubelet["time"].as_str().is_some_and(|t| t.ends_with('Z')),
        "a UTC time: {kubelet}"
    );
    all.wait_for(second, |v| {
        is(v, "rule", "deny-partner-udp") && is(v, "dport", "5353")
    })?;
    let (_, udp) = rules_only.wait_for(second, |_| true)?;
    ensure!(
        is(&udp, "rule", "deny-partner-udp") && is(&udp, "reason", "rule"),
        "the filtered reader's first sample is the rule's: {udp}"
    );
    // IPv6 too, and the filtered reader never sees what its filter excludes.
    let v6 = topo.internet.addr(true);
    prober.send(&[Probe::tcp(v6, 10250), Probe::udp(v6, 5353)])?;
    all.wait_for(second, |v| {
        is(v, "src", "fd00:99::2") && is(v, "family", "ipv6")
    })?;
    std::thread::sleep(Duration::from_millis(300));
    for v in rules_only.drain() {
        ensure!(
            is(&v, "reason", "rule")
                && v["src"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("198.19.0.")),
            "the filtered reader printed {v}"
        );
    }

    // The flow log: whole JSON lines, rotated at 1 KiB, at most 2 rotated files.
    let flood: Vec<Probe> = (0..40).map(|_| Probe::udp(v4, 5353)).collect();
    prober.send(&flood)?;
    let numbered = |n: u32| std::path::PathBuf::from(format!("{}.{n}", flow.display()));
    ensure!(
        wait_until(Duration::from_secs(3), || numbered(2).exists()),
        "the flow log rotated twice; metrics:\n{}",
        agent.get("/metrics").map(|x| x.1).unwrap_or_default()
    );
    // Rotation renames FILE before it opens the next one: read once the writer is done.
    let written = || {
        agent
            .metric("nodewall_flow_log_records_total{outcome=\"written\"}")
            .unwrap_or(0.0)
    };
    let mut last = -1.0;
    ensure!(
        wait_until(Duration::from_secs(5), || {
            let now = written();
            let quiet = now == last;
            last = now;
            std::thread::sleep(Duration::from_millis(300));
            quiet
        }),
        "the flow log writer never went quiet"
    );
    ensure!(!numbered(3).exists(), "more rotated files than max-files");
    for p in [flow.clone(), numbered(1), numbered(2)] {
        let text = std::fs::read_to_string(&p)?;
        ensure!(
            text.len() <= 1024,
            "{} is {} bytes",
            p.display(),
            text.len()
        );
        for line in text.lines() {
            let v: Value =
                serde_json::from_str(line).with_context(|| format!("{}: {line}", p.display()))?;
            ensure!(
                v["reason"].as_str().is_some() && v["node"].as_str().is_some(),
                "{line}"
            );
        }
    }
    let rotations = agent
        .metric("nodewall_flow_log_rotations_total")
        .unwrap_or(0.0);
    ensure!(rotations >= 2.0, "rotations counted: {rotations}");

    // Rules that never matched: `never-hit` (nothing sent to it), not `deny-partner-udp`.
    let out = command(&topo.node, backend.env())?
        .args([
            "status",
            "--json",
            "--backend",
            backend.cli_name(),
            "--state-dir",
        ])
        .arg(&agent.state_dir)
        .output()?;
    ensure!(
        out.status.success(),
        "status: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: Value = serde_json::from_slice(&out.stdout)?;
    let unmatched: Vec<&str> = status["unmatched_rules"]
        .as_array()
        .context("status lists unmatched rules")?
        .iter()
        .filter_map(|r| r["rule"].as_str())
        .collect();
    ensure!(unmatched.contains(&"never-hit"), "{unmatched:?}");
    ensure!(!unmatched.contains(&"deny-partner-udp"), "{unmatched:?}");
    let unmatched_metric = |rule: &str| {
        agent.metric(&format!(
            "nodewall_rule_unmatched{{rule=\"{rule}\",action=\"deny\"}}"
        ))
    };
    ensure!(
        unmatched_metric("never-hit") == Some(1.0),
        "never-hit: {:?}",
        unmatched_metric("never-hit")
    );
    ensure!(
        wait_until(Duration::from_secs(3), || unmatched_metric(
            "deny-partner-udp"
        ) == Some(0.0)),
        "deny-partner-udp: {:?}",
        unmatched_metric("deny-partner-udp")
    );
    // The top-N metric names the source and port dropped most.
    let (_, metrics) = agent.get("/metrics")?;
    ensure!(
        metrics.contains("nodewall_top_dropped_sources{source=\"198.19.0.2\"}")
            && metrics.contains("nodewall_top_dropped_ports{protocol=\"udp\",port=\"5353\"}"),
        "top-N series:\n{metrics}"
    );
    Ok(())
}

/// A reader that connects and never reads: the agent goes on counting drops and applying
/// policies, other readers still get samples, and what the stalled one missed is counted.
fn a_stalled_reader_does_not_stall_the_agent(backend: Backend) -> anyhow::Result<()> {
    let topo = Topology::new()?;
    let mut cfg = Config::new(backend, Some("tke-node"));
    let (_dir, config, agent) = agent_with_drops(&topo, &mut cfg, "drops-stall", |_| {
        "drops:\n  samples-per-second: 1000".into()
    })?;
    // The unix socket is a path: this process connects like `nodewall drops` would, and then
    // reads nothing.
    let stalled = std::os::unix::net::UnixStream::connect(agent.state_dir.join("agent.sock"))?;
    (&stalled).write_all(b"{\"get\":\"drops\"}\n")?;
    ensure!(
        wait_until(Duration::from_secs(5), || readers(&agent) >= 1.0),
        "the stalled reader is connected"
    );
    let dropped = || {
        let (_, m) = agent.get("/metrics").unwrap_or_default();
        m.lines()
            .filter(|l| l.starts_with("nodewall_dropped_packets_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let lost = || {
        agent
            .metric("nodewall_drop_stream_lost_samples_total")
            .unwrap_or(0.0)
    };
    let mut prober = Prober::new(&topo)?;
    let v4 = topo.internet.addr(false);
    let before = dropped();
    // Each round: more samples than the socket buffer and the reader's backlog hold.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut rounds = 0;
    while lost() == 0.0 && Instant::now() < deadline {
        let flood: Vec<Probe> = (0..2000).map(|_| Probe::tcp(v4, 10250)).collect();
        prober.send(&flood)?;
        rounds += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    ensure!(
        lost() > 0.0,
        "after {rounds} floods the stalled reader lost nothing: is it really not read?"
    );
    let after = dropped();
    ensure!(
        after - before >= 2000.0 * f64::from(rounds) * 0.9,
        "drop counters kept up: {} of {} drops counted",
        after - before,
        2000 * rounds
    );
    // An apply still happens while the reader is stalled.
    let generation = || agent.metric("nodewall_policy_generation").unwrap_or(0.0);
    let g0 = generation();
    cfg.rules.push(DENY_UDP.into());
    replace_file(&config, &cfg.yaml())?;
    ensure!(
        wait_until(Duration::from_secs(5), || generation() > g0),
        "no apply while a reader is stalled (generation {})",
        generation()
    );
    // And a fresh reader still gets fresh samples.
    let fresh = Reader::start(&topo, backend, &agent, &["-f", "--json", "--port", "10250"])?;
    ensure!(
        wait_until(Duration::from_secs(5), || readers(&agent) >= 2.0),
        "second reader"
    );
    prober.send(&[Probe::tcp(v4, 10250)])?;
    fresh.wait_for(Duration::from_secs(1), |v| is(v, "dport", "10250"))?;
    // Readers are bounded: with 16 connected, the next is told so and closed.
    let connect = || -> anyhow::Result<std::os::unix::net::UnixStream> {
        let s = std::os::unix::net::UnixStream::connect(agent.state_dir.join("agent.sock"))?;
        (&s).write_all(b"{\"get\":\"drops\"}\n")?;
        Ok(s)
    };
    let more: Vec<_> = (0..14).map(|_| connect()).collect::<Result<_, _>>()?;
    ensure!(
        wait_until(Duration::from_secs(5), || readers(&agent) >= 16.0),
        "16 readers: {}",
        readers(&agent)
    );
    let refused = connect()?;
    refused.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut answer = String::new();
    BufReader::new(&refused).read_line(&mut answer)?;
    ensure!(
        answer.contains("\"type\":\"error\"") && answer.contains("16 readers"),
        "the 17th reader got {answer:?}"
    );
    drop(more);
    drop(stalled);
    Ok(())
}

/// Audit mode: the packet passes, the sample says `would-drop` (text: WOULD-DROP), the
/// metric says `mode="audit"`, so does `status` and the apply log.
fn audit_is_labelled(backend: Backend) -> anyhow::Result<()> {
    let topo = Topology::new()?;
    let mut cfg = Config::new(backend, Some("tke-node"));
    cfg.mode = "audit";
    let (dir, config) = TempDir::with_config("drops-audit", &cfg.yaml())?;
    let agent = Agent::start(&topo.node, backend, &config, &dir, &[])?;
    let json = Reader::start(&topo, backend, &agent, &["-f", "--json"])?;
    ensure!(
        wait_until(Duration::from_secs(5), || readers(&agent) >= 1.0),
        "reader"
    );
    let mut prober = Prober::new(&topo)?;
    let v4 = topo.internet.addr(false);
    let seen = prober.send(&[Probe::tcp(v4, 10250)])?;
    ensure!(seen == [true], "audit mode passes the probe");
    let (_, v) = json.wait_for(Duration::from_secs(1), |v| is(v, "dport", "10250"))?;
    ensure!(is(&v, "action", "would-drop"), "{v}");
    // The text form, of the recent samples, without --follow.
    let out = command(&topo.node, backend.env())?
        .args(["drops", "--port", "10250", "--state-dir"])
        .arg(&agent.state_dir)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "drops: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        text.lines()
            .any(|l| l.contains(" WOULD-DROP IP 198.19.0.2.") && l.ends_with("tcp default-deny"))
            && !text.contains(" DROP "),
        "text lines:\n{text}"
    );
    ensure!(
        String::from_utf8_lossy(&out.stderr).contains("mode audit"),
        "the banner names the mode: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        agent.metric("nodewall_mode{mode=\"audit\"}") == Some(1.0),
        "mode metric"
    );
    following_into_head_ends_quietly(&topo, backend, &agent)?;
    ensure!(
        agent.log().contains("policy applied in audit mode"),
        "the apply log says audit"
    );
    let status = command(&topo.node, backend.env())?
        .args(["status", "--backend", backend.cli_name(), "--state-dir"])
        .arg(&agent.state_dir)
        .output()?;
    ensure!(
        String::from_utf8_lossy(&status.stdout).contains("mode audit"),
        "status: {}",
        String::from_utf8_lossy(&status.stdout)
    );
    Ok(())
}

/// `nodewall drops -f | head -n 1`: once `head` has its line and leaves, `drops` ends with 0
/// and says nothing, even though no further sample comes to fail a write.
fn following_into_head_ends_quietly(
    topo: &Topology,
    backend: Backend,
    agent: &Agent,
) -> anyhow::Result<()> {
    let mut child = command(&topo.node, backend.env())?
        .args(["drops", "-f", "--state-dir"])
        .arg(&agent.state_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut out = BufReader::new(child.stdout.take().context("stdout")?);
    let mut first = String::new();
    out.read_line(&mut first)?;
    ensure!(first.contains("WOULD-DROP"), "first line: {first:?}");
    drop(out);
    let end = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() > end {
            let _ = child.kill();
            bail!("nodewall drops -f went on after its reader left");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().context("stderr")?, &mut err)?;
    ensure!(status.success(), "exit {status}: {err}");
    ensure!(!err.contains("error"), "stderr: {err}");
    Ok(())
}

/// `drops.samples-per-second`: 0 takes no samples (drops are still counted); a reload to 5
/// takes some, at most about 5 a second (per CPU on XDP, per drop rule on nft).
fn the_sample_rate_is_configurable(backend: Backend) -> anyhow::Result<()> {
    let topo = Topology::new()?;
    let mut cfg = Config::new(backend, Some("tke-node"));
    let (_dir, config, agent) = agent_with_drops(&topo, &mut cfg, "drops-rate", |_| {
        "drops:\n  samples-per-second: 0".into()
    })?;
    let reader = Reader::start(&topo, backend, &agent, &["-f", "--json"])?;
    ensure!(
        wait_until(Duration::from_secs(5), || readers(&agent) >= 1.0),
        "reader"
    );
    let mut prober = Prober::new(&topo)?;
    let v4 = topo.internet.addr(false);
    let flood = |n| -> Vec<Probe> { (0..n).map(|_| Probe::tcp(v4, 10250)).collect() };
    prober.send(&flood(50))?;
    ensure!(
        wait_until(Duration::from_secs(3), || {
            let (_, m) = agent.get("/metrics").unwrap_or_default();
            m.lines()
                .any(|l| l.starts_with("nodewall_dropped_packets_total{") && !l.ends_with(" 0"))
        }),
        "drops are counted"
    );
    std::thread::sleep(Duration::from_millis(500));
    let got = reader.drain();
    ensure!(
        got.is_empty(),
        "samples-per-second 0 sampled {} packets: {:?}",
        got.len(),
        got.first()
    );

    let generation = || agent.metric("nodewall_policy_generation").unwrap_or(0.0);
    let applies = || {
        agent
            .metric("nodewall_last_apply_success_timestamp_seconds")
            .unwrap_or(0.0)
    };
    let (g0, t0) = (generation(), applies());
    cfg.implicit = Some("drops:\n  samples-per-second: 5".into());
    replace_file(&config, &cfg.yaml())?;
    ensure!(
        wait_until(Duration::from_secs(5), || generation() > g0
            || applies() > t0),
        "the new rate was applied"
    );
    let started = Instant::now();
    prober.send(&flood(200))?;
    std::thread::sleep(Duration::from_millis(700));
    let secs = started.elapsed().as_secs_f64().ceil();
    let got = reader.drain();
    let cpus = std::thread::available_parallelism().map_or(64, |n| n.get()) as f64;
    // A window's budget, and one more window per second that passed.
    let cap = 5.0 * (secs + 1.0) * if backend.is_xdp() { cpus } else { 1.0 };
    ensure!(
        !got.is_empty() && got.len() as f64 <= cap,
        "{} samples of 200 drops at 5/s (at most {cap})",
        got.len()
    );
    Ok(())
}

/// Outbound drops: new connections from the node and from its pod under `egress.default:
/// deny` and an egress deny rule are streamed with `direction: egress` (a reader filtering on
/// it sees nothing inbound), and counted by direction in the metrics, the rule's own counter
/// included.
fn egress_drops_are_streamed(backend: Backend) -> anyhow::Result<()> {
    let topo = Topology::new()?;
    let _web = Server::tcp(&topo.internet.ns, 8443)?;
    let mut cfg = Config::new(backend, None);
    cfg.egress = Some(
        "egress:\n  default: deny\n  failsafe: []\n  rules:\n    - name: no-cluster\n      action: deny\n      protocol: tcp\n      to: [cluster]".into(),
    );
    let (_dir, _, agent) = agent_with_drops(&topo, &mut cfg, "egress-drops", |_| String::new())?;
    let out = Reader::start(
        &topo,
        backend,
        &agent,
        &["-f", "--json", "--direction", "egress"],
    )?;
    ensure!(
        wait_until(Duration::from_secs(5), || readers(&agent) >= 1.0),
        "the reader connected"
    );
    let inet = topo.internet.addr(false);
    let cluster = topo.cluster.addr(false);
    ensure!(!tcp_ok(&topo.node, inet, 8443), "node -> internet got out");
    ensure!(
        !tcp_ok(&topo.local_pod.ns, cluster, 8443),
        "pod -> cluster got out"
    );
    // Something inbound is dropped too, and must not reach this reader.
    ensure!(
        !tcp_ok(&topo.internet.ns, node_addr(false), 10250),
        "inbound got in"
    );
    let second = Duration::from_secs(2);
    let (_, node) = out.wait_for(second, |v| is(v, "dst", &inet.to_string()))?;
    for (key, want) in [
        ("src", "198.18.16.2"),
        ("dport", "8443"),
        ("reason", "default-deny"),
        ("direction", "egress"),
        ("protocol", "tcp"),
    ] {
        ensure!(is(&node, key, want), "{key} is not {want:?}: {node}");
    }
    let (_, pod) = out.wait_for(second, |v| is(v, "dst", &cluster.to_string()))?;
    ensure!(
        is(&pod, "rule", "no-cluster")
            && is(&pod, "reason", "rule")
            && is(&pod, "src", "198.18.34.2"),
        "the pod's sample: {pod}"
    );
    std::thread::sleep(Duration::from_millis(300));
    for v in out.drain() {
        ensure!(
            is(&v, "direction", "egress"),
            "the egress reader printed {v}"
        );
    }
    let metric = |m: &str| agent.metric(m).unwrap_or(0.0);
    ensure!(
        wait_until(Duration::from_secs(5), || {
            metric("nodewall_rule_packets_total{rule=\"no-cluster\",direction=\"egress\",action=\"deny\"}") >= 1.0
        }),
        "the egress rule's counter: {}",
        agent.get("/metrics").map(|x| x.1).unwrap_or_default()
    );
    let text = agent.get("/metrics").map(|x| x.1).unwrap_or_default();
    let egress_drops = text
        .lines()
        .filter(|l| {
            l.starts_with("nodewall_dropped_packets_total{") && l.contains("direction=\"egress\"")
        })
        .count();
    ensure!(egress_drops >= 2, "egress drop series: {text}");
    Ok(())
}

backend_tests!(
    egress_drops_are_streamed,
    the_sample_rate_is_configurable,
    drops_are_streamed_to_several_readers,
    a_stalled_reader_does_not_stall_the_agent,
    audit_is_labelled
);
