//! `nodewall run` as a child process inside a test's node namespace, and what the daemon tests
//! need around it: its HTTP endpoints, its log, signals.

#![allow(dead_code)] // each daemon_*.rs test crate uses a different part

use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nodewall_netns_tests::netns::Netns;
use nodewall_netns_tests::nodewall::command;
use nodewall_netns_tests::Backend;

pub const METRICS: &str = "127.0.0.1:9469";

/// A private directory for one agent's state and log, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A new directory holding `config.yaml` with `yaml`; returns both.
    pub fn with_config(what: &str, yaml: &str) -> anyhow::Result<(Self, PathBuf)> {
        let dir = Self::new(what)?;
        let config = dir.0.join("config.yaml");
        std::fs::write(&config, yaml)?;
        Ok((dir, config))
    }

    pub fn new(what: &str) -> anyhow::Result<Self> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("nwt-{}-{what}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `nodewall run`. Stopped (SIGTERM, then SIGKILL) on drop; its log is printed then,
/// so a failing test shows what the agent did.
pub struct Agent {
    child: Option<Child>,
    node: String,
    pub state_dir: PathBuf,
    pub log_path: PathBuf,
}

impl Agent {
    /// Starts the agent on `config` in `node` (state under `dir`, the environment of
    /// `backend`) and waits until `/readyz`.
    pub fn start(
        node: &Netns,
        backend: Backend,
        config: &Path,
        dir: &TempDir,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let agent = Self::spawn(node, backend, config, dir, extra)?;
        agent.wait_ready(Duration::from_secs(10))?;
        Ok(agent)
    }

    /// Starts the agent without waiting for it.
    pub fn spawn(
        node: &Netns,
        backend: Backend,
        config: &Path,
        dir: &TempDir,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let state_dir = dir.0.join("state");
        // Appended to across restarts of the agent in one test.
        let log_path = dir.0.join("agent.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let child = command(node, backend.env())?
            .args(["run", "-c"])
            .arg(config)
            .arg("--state-dir")
            .arg(&state_dir)
            .args(["--metrics-addr", METRICS])
            .args(extra)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting nodewall run")?;
        Ok(Self {
            child: Some(child),
            node: node.name().to_string(),
            state_dir,
            log_path,
        })
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    pub fn wait_ready(&self, within: Duration) -> anyhow::Result<()> {
        let ok = wait_until(within, || matches!(self.get("/readyz"), Ok((200, _))));
        if !ok {
            bail!(
                "nodewall run not ready within {within:?}; log:\n{}",
                self.log()
            );
        }
        Ok(())
    }

    /// `GET path` on the agent's metrics address, from inside its namespace.
    pub fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        http_get(&self.node, METRICS, path, "text/plain")
    }

    /// The value of the first sample whose line starts with `series` (name, or name{labels}).
    pub fn metric(&self, series: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics").ok()?;
        sample(&body, series)
    }

    /// Waits until `series` reaches at least `want`; returns the last value seen.
    pub fn metric_reaches(&self, series: &str, want: f64, within: Duration) -> f64 {
        let mut last = 0.0;
        wait_until(within, || {
            last = self.metric(series).unwrap_or(0.0);
            last >= want
        });
        last
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on our own child's pid, not yet reaped.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    /// Sends `sig` and waits (up to 10 s) for the agent to exit.
    pub fn stop_with(&mut self, sig: i32) -> anyhow::Result<ExitStatus> {
        self.signal(sig);
        let mut child = self.child.take().context("agent already stopped")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("nodewall run did not exit within 10 s of signal {sig}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop_with(libc::SIGTERM);
        }
        if std::thread::panicking() {
            eprintln!("---- nodewall run log ----\n{}", self.log());
        }
    }
}

/// A plain HTTP/1.1 GET from inside namespace `ns` (by name); returns (status, body).
pub fn http_get(ns: &str, addr: &str, path: &str, accept: &str) -> anyhow::Result<(u16, String)> {
    let head = format!("GET {path} HTTP/1.1\r\nAccept: {accept}\r\nConnection: close");
    nodewall_netns_tests::http::request(ns, addr, &head, "")
}

pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Polls `cond` every 20 ms until it holds or `within` has passed.
pub fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `nft list table inet nodewall` succeeds in `node`.
pub fn table_present(node: &Netns) -> bool {
    node.exec("nft", &["list", "table", "inet", "nodewall"])
        .is_ok()
}

/// Replaces a file the way editors do: write a sibling, rename it over.
pub fn replace_file(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp-new");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
