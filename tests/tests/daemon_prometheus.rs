//! A real Prometheus server scrapes the agent: both run inside the test's node namespace (the
//! agent on 127.0.0.1:9469, Prometheus on 127.0.0.1:9090 there), so nothing listens or is
//! scraped outside the sandbox. The drops the test causes must come back from a PromQL query,
//! and `promtool check metrics` must have nothing to say about the exposition.

mod daemon_support;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use daemon_support::{http_get, wait_until, Agent, TempDir};
use nodewall_netns_tests::netns::Netns;
use nodewall_netns_tests::nodewall::Config;
use nodewall_netns_tests::topology::{node_addr, Topology};
use nodewall_netns_tests::traffic::tcp_ok;
use nodewall_netns_tests::{backend_tests, Backend};
use serde_json::Value;

const PROMETHEUS: &str = "127.0.0.1:9090";
const SERIES: &str =
    "nodewall_dropped_packets_total{reason=\"default-deny\",family=\"ipv4\",protocol=\"tcp\"}";

/// `prometheus` in `ns`, killed on drop; its runtime is bounded by the test's waits.
struct Prometheus {
    child: Child,
    ns: String,
}

impl Prometheus {
    fn start(ns: &Netns, dir: &TempDir) -> anyhow::Result<Option<Self>> {
        if Command::new("prometheus")
            .arg("--version")
            .output()
            .is_err()
        {
            if std::env::var("CI").as_deref() == Ok("true") {
                bail!("the prometheus binary is required on CI (Debian package `prometheus`)");
            }
            eprintln!("skipped: no prometheus binary (apt-get install prometheus)");
            return Ok(None);
        }
        let config = dir.0.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: nodewall\n    static_configs:\n      - targets: ['{}']\n",
                daemon_support::METRICS
            ),
        )?;
        let log = std::fs::File::create(dir.0.join("prometheus.log"))?;
        let child = ns
            .command("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.0.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={PROMETHEUS}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting prometheus")?;
        Ok(Some(Self {
            child,
            ns: ns.name().to_string(),
        }))
    }

    /// The result vector of an instant query.
    fn query(&self, promql: &str) -> anyhow::Result<Vec<Value>> {
        let path = format!("/api/v1/query?query={}", urlencode(promql));
        let (code, body) = http_get(&self.ns, PROMETHEUS, &path, "application/json")?;
        ensure!(code == 200, "query {promql}: HTTP {code}: {body}");
        let v: Value = serde_json::from_str(&body)?;
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// The single value of an instant query, if it has exactly one series.
    fn value(&self, promql: &str) -> Option<f64> {
        let result = self.query(promql).ok()?;
        match result.as_slice() {
            [one] => one["value"][1].as_str()?.parse().ok(),
            _ => None,
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn prometheus_scrapes_the_drops(backend: Backend) -> anyhow::Result<()> {
    let topo = Topology::new()?;
    let (dir, config) =
        TempDir::with_config("prometheus", &Config::new(backend, Some("tke-node")).yaml())?;
    let agent = Agent::start(&topo.node, backend, &config, &dir, &[])?;
    let Some(prom) = Prometheus::start(&topo.node, &dir)? else {
        return Ok(());
    };
    let up = wait_until(Duration::from_secs(30), || {
        prom.value("up{job=\"nodewall\"}") == Some(1.0)
    });
    if !up {
        let log = std::fs::read_to_string(dir.0.join("prometheus.log")).unwrap_or_default();
        bail!("Prometheus never saw up == 1; its log:\n{log}");
    }

    // Connection attempts from the internet to ports tke-node does not open.
    let series = format!("nodewall_dropped_packets_total{{backend=\"{}\",direction=\"ingress\",reason=\"default-deny\",rule=\"\",family=\"ipv4\",protocol=\"tcp\"}}", backend.config_name());
    let before = agent.metric(&series).unwrap_or(0.0);
    for port in [10250, 2379, 6443, 8443] {
        ensure!(
            !tcp_ok(&topo.internet.ns, node_addr(false), port),
            "tcp/{port} is dropped"
        );
    }
    let caused = agent.metric(&series).unwrap_or(0.0) - before;
    ensure!(caused >= 4.0, "the agent counted the drops ({caused})");
    let expected = agent.metric(&series).unwrap_or(0.0);
    let seen = wait_until(Duration::from_secs(10), || {
        prom.value(&format!("sum({SERIES})")) == Some(expected)
    });
    ensure!(
        seen,
        "Prometheus returns the drops: wanted {expected}, got {:?}",
        prom.value(&format!("sum({SERIES})"))
    );
    let by_backend = prom.query(SERIES)?;
    ensure!(
        by_backend
            .iter()
            .all(|s| s["metric"]["backend"] == backend.config_name()),
        "series are labelled with the backend"
    );
    ensure!(
        prom.value("nodewall_build_info") == Some(1.0),
        "build_info is scraped"
    );

    // The classic text exposition is what promtool lints.
    let (code, text) = agent.get("/metrics")?;
    ensure!(code == 200, "GET /metrics: {code}");
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running promtool")?;
    promtool.stdin.take().unwrap().write_all(text.as_bytes())?;
    let out = promtool.wait_with_output()?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics reported:\n{said}"
    );
    Ok(())
}

backend_tests!(prometheus_scrapes_the_drops);
