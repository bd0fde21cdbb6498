//! The daemon's decisions against an in-memory backend: reloads, rejection of bad configs,
//! drift repair, retries, the lock, probes and metrics. Kernel behaviour is tested with real
//! namespaces in `tests/tests/daemon_*.rs`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::apply::fake::{self, FakeKernel};

struct Harness {
    dir: PathBuf,
    config: PathBuf,
    kernel: FakeKernel,
    handle: Handle,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nodewall-daemon-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn options(dir: &Path, config: &Path, flush_on_exit: bool) -> Options {
    Options {
        config: config.to_path_buf(),
        metrics_addr: "127.0.0.1:0".parse().unwrap(),
        flush_on_exit,
        state_dir: dir.join("state"),
        check_interval: Duration::from_millis(100),
    }
}

fn parser() -> Parser {
    Arc::new(fake::parse)
}

fn opener(kernel: &FakeKernel) -> OpenBackend {
    let k = kernel.clone();
    Box::new(move |_| Ok(k.backend()))
}

impl Harness {
    async fn start(name: &str, text: &str) -> Harness {
        Self::start_with(name, text, false, FakeKernel::default()).await
    }

    async fn start_with(name: &str, text: &str, flush: bool, kernel: FakeKernel) -> Harness {
        let dir = temp_dir(name);
        let config = dir.join("config.yaml");
        std::fs::write(&config, text).unwrap();
        let (daemon, handle) =
            Daemon::start(options(&dir, &config, flush), parser(), opener(&kernel))
                .await
                .unwrap_or_else(|e| panic!("start: {e}"));
        let addr = daemon.metrics_addr();
        let task = tokio::spawn(daemon.run());
        Harness {
            dir,
            config,
            kernel,
            handle,
            addr,
            task,
        }
    }

    /// Replaces the config the way editors do: write a new file, rename it over the old one.
    fn write_config(&self, text: &str) {
        let tmp = self.dir.join(".config.yaml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.config).unwrap();
    }

    async fn get(&self, path: &str) -> (u16, String) {
        http_get(self.addr, path).await
    }

    async fn metric(&self, name: &str) -> f64 {
        let (_, body) = self.get("/metrics").await;
        sample(&body, name).unwrap_or_else(|| panic!("no {name} in\n{body}"))
    }

    /// Waits (up to 2 s) for a metric to reach `want`, and returns its last value.
    async fn metric_reaches(&self, name: &str, want: f64) -> f64 {
        let deadline = Instant::now() + 2 * SECOND;
        loop {
            let v = self.metric(name).await;
            if v >= want || Instant::now() > deadline {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(mut self) -> FakeKernel {
        self.handle.send(Event::Shutdown);
        tokio::time::timeout(Duration::from_secs(5), &mut self.task)
            .await
            .expect("daemon stops within 5 s")
            .unwrap();
        self.kernel.clone()
    }
}

impl Drop for Harness {
    /// Also on a failed assertion: no temporary directory is left behind.
    fn drop(&mut self) {
        self.handle.send(Event::Shutdown);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let code = out[9..12].parse().unwrap();
    let body = out.split_once("\r\n\r\n").unwrap().1.to_string();
    (code, body)
}

fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix) && l[prefix.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Polls `cond` until it holds or `within` has passed.
async fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

fn names(v: &[&str]) -> Option<Vec<String>> {
    Some(v.iter().map(|s| s.to_string()).collect())
}

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applies_at_start_and_becomes_ready() {
    let h = Harness::start("start", "ssh 22\nweb 80\n").await;
    assert_eq!(h.kernel.rule_names(), names(&["ssh", "web"]));
    assert_eq!(h.get("/readyz").await.0, 200);
    assert_eq!(h.get("/healthz").await.0, 200);
    assert_eq!(h.get("/nope").await.0, 404);
    assert_eq!(h.metric("nodewall_policy_generation").await, 1.0);
    assert_eq!(
        h.metric("nodewall_build_info{version=\"0.1.0\",backend=\"fake\"}")
            .await,
        1.0
    );
    let state = StateDir::new(h.dir.join("state"));
    assert_eq!(state.applied().unwrap().unwrap().config, "ssh 22\nweb 80\n");
    let k = h.stop().await;
    assert!(
        k.rule_names().is_some(),
        "the policy stays installed on exit by default"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_bounded_and_never_block_a_scrape() {
    let h = Harness::start("idle", "ssh 22\n").await;
    assert_eq!(h.metric("nodewall_mode{mode=\"enforce\"}").await, 1.0);
    assert_eq!(h.metric("nodewall_mode{mode=\"audit\"}").await, 0.0);
    // Connections that never send a request, as a slow or hostile client leaves them.
    let extra = 40;
    let mut idle = Vec::new();
    for _ in 0..http::MAX_CONNECTIONS + extra {
        idle.push(tokio::net::TcpStream::connect(h.addr).await.unwrap());
    }
    // Past the grace a new connection has to send its request head.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let t = Instant::now();
    let (code, body) = tokio::time::timeout(2 * SECOND, h.get("/metrics"))
        .await
        .expect("a scrape is answered at once, idle connections or not");
    assert_eq!(code, 200);
    assert!(body.contains("nodewall_policy_generation"));
    assert!(t.elapsed() < 2 * SECOND);
    // The server holds at most MAX_CONNECTIONS: the oldest idle ones were closed (EOF).
    let mut closed = 0;
    for s in &mut idle {
        let mut buf = [0u8; 1];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await
        {
            closed += 1;
        }
    }
    assert!(
        closed > extra,
        "{closed} of {} idle connections closed; the server keeps at most {}",
        idle.len(),
        http::MAX_CONNECTIONS
    );
    // More scrapes at once than the limit: each waits its turn, none is cut off.
    let scrapes: Vec<_> = (0..http::MAX_CONNECTIONS + 36)
        .map(|_| tokio::spawn(http_get(h.addr, "/metrics")))
        .collect();
    for s in scrapes {
        assert_eq!(s.await.unwrap().0, 200);
    }
    h.stop().await;
}

/// A client that sends its request and then closes its side (`socat`, `nc -N`, scripts that
/// write then shut down) still gets the answer: the end of the request is not the end of the
/// exchange.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_half_closes_gets_its_answer() {
    let h = Harness::start("half-close", "ssh 22\n").await;
    for version in ["HTTP/1.0", "HTTP/1.1"] {
        let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
        s.write_all(format!("GET /metrics {version}\r\nHost: t\r\n\r\n").as_bytes())
            .await
            .unwrap();
        s.shutdown().await.unwrap();
        let mut out = String::new();
        tokio::time::timeout(2 * SECOND, s.read_to_string(&mut out))
            .await
            .expect("answered in time")
            .unwrap();
        assert!(
            out.starts_with("HTTP/1.") && out[9..12] == *"200",
            "{version}: {out:?}"
        );
        assert!(out.contains("nodewall_policy_generation"), "{version}");
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopts_a_previous_runs_policy_without_a_gap() {
    let kernel = FakeKernel::default();
    let first = Harness::start_with("adopt", "ssh 22\n", false, kernel.clone()).await;
    let k = first.stop().await;
    // The new run replaces the old policy in one apply: never flushed in between.
    let (applies, generation) = k.with(|k| (k.applies, k.generation));
    let second = Harness::start_with("adopt", "ssh 22\n", false, k.clone()).await;
    assert_eq!(
        k.with(|k| (k.applies, k.generation)),
        (applies + 1, generation)
    );
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_on_exit_removes_the_policy() {
    let h = Harness::start_with("flush", "ssh 22\n", true, FakeKernel::default()).await;
    assert!(h.kernel.rule_names().is_some());
    let k = h.stop().await;
    assert_eq!(k.rule_names(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_when_the_file_is_replaced() {
    let h = Harness::start("reload", "ssh 22\n").await;
    h.write_config("ssh 22\nweb 443\n");
    assert!(
        eventually(2 * SECOND, || h.kernel.rule_names()
            == names(&["ssh", "web"]))
        .await,
        "new policy applied after the file changed"
    );
    assert_eq!(h.metric("nodewall_policy_generation").await, 2.0);
    h.stop().await;
}

/// The kubelet's atomic ConfigMap update: new dir, new symlink renamed over `..data`, old dir
/// removed.
fn configmap_swap(dir: &Path, old: &str, new: &str, text: &str) {
    std::fs::create_dir(dir.join(new)).unwrap();
    std::fs::write(dir.join(new).join("config.yaml"), text).unwrap();
    std::os::unix::fs::symlink(new, dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    std::fs::remove_dir_all(dir.join(old)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_on_a_configmap_symlink_swap() {
    // Kubernetes' layout: config.yaml -> ..data/config.yaml, ..data -> ..<timestamp>/
    let dir = temp_dir("configmap");
    let v1 = dir.join("..2024_01");
    std::fs::create_dir(&v1).unwrap();
    std::fs::write(v1.join("config.yaml"), "ssh 22\n").unwrap();
    std::os::unix::fs::symlink("..2024_01", dir.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/config.yaml", dir.join("config.yaml")).unwrap();
    let kernel = FakeKernel::default();
    let (daemon, handle) = Daemon::start(
        options(&dir, &dir.join("config.yaml"), false),
        parser(),
        opener(&kernel),
    )
    .await
    .unwrap();
    let task = tokio::spawn(daemon.run());
    assert_eq!(kernel.rule_names(), names(&["ssh"]));

    configmap_swap(&dir, "..2024_01", "..2024_02", "ssh 22\nkubelet 10250\n");
    assert!(
        eventually(2 * SECOND, || kernel.rule_names()
            == names(&["ssh", "kubelet"]))
        .await,
        "swap seen"
    );
    // And a second swap, now that the target directory changed.
    configmap_swap(&dir, "..2024_02", "..2024_03", "ssh 22\n");
    assert!(
        eventually(2 * SECOND, || kernel.rule_names() == names(&["ssh"])).await,
        "second swap seen"
    );
    handle.send(Event::Shutdown);
    task.await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_config_is_rejected_and_the_running_policy_stays() {
    let h = Harness::start("invalid", "ssh 22\n").await;
    h.write_config("ssh 22\nweb eighty\n");
    let errors = "nodewall_config_reload_errors_total";
    assert_eq!(h.metric_reaches(errors, 1.0).await, 1.0);
    assert_eq!(h.kernel.rule_names(), names(&["ssh"]));
    // Touching the same bad file again is not a new error.
    h.write_config("ssh 22\nweb eighty\n");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(h.metric(errors).await, 1.0);
    assert_eq!(h.get("/readyz").await.0, 200);
    // Fixing it applies.
    h.write_config("ssh 22\nweb 80\n");
    assert!(
        eventually(2 * SECOND, || h.kernel.rule_names()
            == names(&["ssh", "web"]))
        .await
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_change_needs_a_restart() {
    let h = Harness::start("backend-change", "ssh 22\n").await;
    h.write_config("backend xdp\nssh 22\nweb 80\n");
    assert_eq!(
        h.metric_reaches("nodewall_config_reload_errors_total", 1.0)
            .await,
        1.0
    );
    assert_eq!(h.kernel.rule_names(), names(&["ssh"]));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reapplies_even_an_unchanged_file() {
    let h = Harness::start("sighup", "ssh 22\n").await;
    let before = h.kernel.with(|k| k.applies);
    h.handle.send(Event::Reload);
    assert!(eventually(SECOND, || h.kernel.with(|k| k.applies) == before + 1).await);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_repaired_and_counted() {
    let h = Harness::start("drift", "ssh 22\nweb 80\n").await;
    // Someone deletes the table.
    h.kernel.with(|k| k.installed = None);
    assert!(
        eventually(2 * SECOND, || h.kernel.rule_names().is_some()).await,
        "restored within 2 s"
    );
    // Someone removes one rule (a set element, a chain...).
    h.kernel.with(|k| {
        k.installed.as_mut().unwrap().rules.pop();
    });
    assert!(
        eventually(2 * SECOND, || h.kernel.rule_names()
            == names(&["ssh", "web"]))
        .await
    );
    assert_eq!(
        h.metric_reaches("nodewall_drift_repairs_total", 2.0).await,
        2.0
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_apply_is_retried_and_counted() {
    let kernel = FakeKernel::default();
    kernel.with(|k| k.fail_applies = 2);
    let h = Harness::start_with("retry", "ssh 22\n", false, kernel).await;
    assert_eq!(
        h.get("/readyz").await.0,
        503,
        "not ready before an apply succeeded"
    );
    // Retries after 1 s then 2 s.
    assert!(eventually(5 * SECOND, || h.kernel.rule_names().is_some()).await);
    assert_eq!(h.get("/readyz").await.0, 200);
    assert_eq!(
        h.metric_reaches("nodewall_apply_errors_total", 2.0).await,
        2.0
    );
    assert_eq!(h.metric("nodewall_apply_duration_seconds_count").await, 3.0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_survive_a_reload_that_resets_them() {
    let h = Harness::start("counters", "ssh 22\n").await;
    h.kernel.with(|k| k.drop_packets = 40);
    let drops = "nodewall_dropped_packets_total";
    assert_eq!(h.metric(drops).await, 40.0);
    h.kernel.with(|k| k.drop_packets = 50);
    // The reload replaces the policy, which zeroes the fake kernel's counters.
    h.write_config("ssh 22\nweb 80\n");
    assert!(eventually(2 * SECOND, || h.kernel.with(|k| k.generation) == 2).await);
    h.kernel.with(|k| k.drop_packets += 7);
    assert_eq!(h.metric(drops).await, 57.0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_agent_is_refused_by_the_lock() {
    let h = Harness::start("lock", "ssh 22\n").await;
    let other = FakeKernel::default();
    let err = Daemon::start(options(&h.dir, &h.config, false), parser(), opener(&other))
        .await
        .err()
        .expect("second agent refused");
    assert_eq!(err.exit_code(), 1);
    assert!(err.to_string().contains("another nodewall (pid"), "{err}");
    assert_eq!(
        other.with(|k| k.applies),
        0,
        "the refused agent touched nothing"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_config_at_start_exits_2_and_applies_nothing() {
    let dir = temp_dir("invalid-start");
    let config = dir.join("config.yaml");
    std::fs::write(&config, "web eighty\n").unwrap();
    let kernel = FakeKernel::default();
    let err = Daemon::start(options(&dir, &config, false), parser(), opener(&kernel))
        .await
        .err()
        .unwrap();
    assert_eq!(err.exit_code(), 2);
    assert!(
        err.to_string()
            .contains("config.yaml:1:1: rules[0]: port must be"),
        "{err}"
    );
    assert_eq!(kernel.with(|k| k.applies), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}
