//! Driving the real `nodewall` binary (release build) inside a namespace, and finding out which
//! of its backends this checkout has, so sections print "not available yet" rows instead of
//! failing while a backend is still being written.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::netns::{Netns, Pair, NODE_IF};
use super::workload::Workload;
use crate::shell::{cargo, root, run as sh};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Backend {
    Nft,
    /// XDP attached in the driver (veth's native mode) or in generic (skb) mode.
    Xdp {
        generic: bool,
    },
}

impl Backend {
    pub fn arg(self) -> &'static str {
        match self {
            Backend::Nft => "nft",
            Backend::Xdp { .. } => "xdp",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Backend::Nft => "nodewall-nft",
            Backend::Xdp { generic: false } => "nodewall-xdp (native)",
            Backend::Xdp { generic: true } => "nodewall-xdp (generic)",
        }
    }
}

pub struct Nodewall {
    pub bin: PathBuf,
    pub version: String,
    pub render: bool,
    pub nft: bool,
    pub xdp_native: bool,
    pub xdp_generic: bool,
    pub daemon: bool,
    /// Subcommands that take `--state-dir` (lock and state files, one per node): each bench
    /// namespace gets its own, so concurrent namespaces never share a lock.
    state_dir_in: Vec<&'static str>,
    /// Why each unavailable feature is unavailable (first line of its error).
    pub why: Vec<(String, String)>,
}

/// Timings of one `nodewall apply`.
pub struct Applied {
    /// The whole command, as a user or a script would wait for it.
    pub wall: Duration,
    /// The backend's own figure from `--json` (kernel round trips), when reported.
    pub reported: Option<Duration>,
}

impl Nodewall {
    /// Builds `nodewall` (`--release` unless `debug`, which the smoke run uses so that it reuses
    /// the test suite's build) unless `no_build` and the binary exists.
    pub fn build(no_build: bool, debug: bool) -> anyhow::Result<PathBuf> {
        let bin = root().join(if debug {
            "target/debug/nodewall"
        } else {
            "target/release/nodewall"
        });
        if !no_build || !bin.exists() {
            let mut cmd = cargo();
            cmd.args(["build", "--quiet", "--bin", "nodewall"]);
            if !debug {
                cmd.arg("--release");
            }
            sh(&mut cmd)?;
        }
        Ok(bin)
    }

    pub fn probe(bin: PathBuf) -> anyhow::Result<Self> {
        let version = std::process::Command::new(&bin)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let state_dir_in = ["apply", "flush", "run"]
            .into_iter()
            .filter(|sub| {
                std::process::Command::new(&bin)
                    .args([sub, "--help"])
                    .output()
                    .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--state-dir"))
            })
            .collect();
        let mut nw = Self {
            bin,
            version,
            render: false,
            nft: false,
            xdp_native: false,
            xdp_generic: false,
            daemon: false,
            state_dir_in,
            why: Vec::new(),
        };
        let pair = Pair::new("probe")?;
        let dir = scratch_dir()?;
        let w = Workload::mixed(1, 10);
        let cfg = dir.join("probe.yaml");
        let note = |nw: &mut Self, what: &str, r: &anyhow::Result<()>| {
            if let Err(e) = r {
                let line = format!("{e:#}")
                    .lines()
                    .next()
                    .unwrap_or("")
                    .chars()
                    .take(160)
                    .collect();
                nw.why.push((what.to_string(), line));
            }
        };
        std::fs::write(&cfg, w.config_yaml("nft", NODE_IF, ""))?;
        let r = nw.render_script(&cfg).map(drop);
        nw.render = r.is_ok();
        note(&mut nw, "render", &r);
        let r = nw
            .apply(&pair.node, &cfg, Backend::Nft)
            .and_then(|_| nw.flush(&pair.node, Backend::Nft));
        nw.nft = r.is_ok();
        note(&mut nw, Backend::Nft.label(), &r);
        for generic in [false, true] {
            let b = Backend::Xdp { generic };
            let pair = Pair::new("probe")?;
            let r = Self::prepare(&pair, b)
                .and_then(|_| {
                    std::fs::write(&cfg, nw.config(&w, b, "")).map_err(anyhow::Error::from)
                })
                .and_then(|_| nw.apply(&pair.node, &cfg, b))
                .and_then(|_| check_xdp_mode(&pair.node, generic))
                .and_then(|_| nw.flush(&pair.node, b));
            if generic {
                nw.xdp_generic = r.is_ok();
            } else {
                nw.xdp_native = r.is_ok();
            }
            note(&mut nw, b.label(), &r);
        }
        let help = std::process::Command::new(&nw.bin)
            .args(["run", "--help"])
            .output()?;
        let help_text = String::from_utf8_lossy(&help.stdout);
        nw.daemon = help.status.success() && help_text.contains("metrics-addr");
        if !nw.daemon {
            nw.why.push((
                "daemon".into(),
                "`nodewall run --metrics-addr` is not in this build".into(),
            ));
        }
        Ok(nw)
    }

    pub fn has(&self, b: Backend) -> bool {
        match b {
            Backend::Nft => self.nft,
            Backend::Xdp { generic: false } => self.xdp_native,
            Backend::Xdp { generic: true } => self.xdp_generic,
        }
    }

    pub fn why(&self, what: &str) -> String {
        self.why
            .iter()
            .find(|(k, _)| k == what)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| "not available".into())
    }

    /// The config for `w` on `b`, with `extra_rules` in front of the workload's rules.
    pub fn config(&self, w: &Workload, b: Backend, extra_rules: &str) -> String {
        w.config_yaml(b.arg(), NODE_IF, extra_rules)
    }

    /// `--state-dir DIR` for `sub` in `ns`, if `sub` takes it.
    pub fn state_args(&self, ns: &Netns, sub: &str) -> anyhow::Result<Vec<String>> {
        if !self.state_dir_in.contains(&sub) {
            return Ok(Vec::new());
        }
        let dir = scratch_dir()?.join("state").join(ns.name());
        std::fs::create_dir_all(&dir)?;
        Ok(vec![
            "--state-dir".into(),
            dir.to_str().context("state dir")?.into(),
        ])
    }

    /// Readies the pair for `b`. The agent attaches XDP natively and falls back to generic mode
    /// where the driver refuses; veth refuses native XDP while its peer's MTU exceeds a page, so
    /// a 9000-byte MTU on the client side is how the bench gets the generic path (the same
    /// fallback a NIC without XDP support takes).
    pub fn prepare(pair: &Pair, b: Backend) -> anyhow::Result<()> {
        if let Backend::Xdp { generic: true } = b {
            pair.client
                .ip(&["link", "set", "dev", super::netns::CLIENT_IF, "mtu", "9000"])?;
        }
        Ok(())
    }

    pub fn apply(&self, ns: &Netns, cfg: &Path, b: Backend) -> anyhow::Result<Applied> {
        let cfg = cfg.to_str().context("config path")?;
        let mut args = vec!["apply", "-c", cfg, "--backend", b.arg(), "--json"];
        let state = self.state_args(ns, "apply")?;
        args.extend(state.iter().map(String::as_str));
        let start = Instant::now();
        let out = ns.run(self.bin.to_str().context("bin path")?, &args)?;
        let wall = start.elapsed();
        let reported = serde_json::from_str::<serde_json::Value>(&out)
            .ok()
            .and_then(|v| v["duration"].as_f64())
            .map(Duration::from_secs_f64);
        Ok(Applied { wall, reported })
    }

    pub fn flush(&self, ns: &Netns, b: Backend) -> anyhow::Result<()> {
        let state = self.state_args(ns, "flush")?;
        let mut args = vec!["flush", "--backend", b.arg()];
        args.extend(state.iter().map(String::as_str));
        ns.run(self.bin.to_str().context("bin path")?, &args)
            .map(drop)
    }

    /// `nodewall render` of a config: the nft script the nft backend installs.
    pub fn render_script(&self, cfg: &Path) -> anyhow::Result<String> {
        let out = std::process::Command::new(&self.bin)
            .args(["render", "-c"])
            .arg(cfg)
            .args(["--interfaces", NODE_IF])
            .output()?;
        if !out.status.success() {
            anyhow::bail!(
                "nodewall render failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    }
}

/// Where generated configs and scripts go (inside the target dir, never in the tree).
pub fn scratch_dir() -> anyhow::Result<PathBuf> {
    let d = root().join("target/bench");
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// The id of the XDP program attached to the node's uplink, as `ip link` reports it (whichever
/// way nodewall attached it: netlink or bpf_link, native or generic).
pub fn xdp_prog_id(ns: &Netns) -> anyhow::Result<u32> {
    let text = ns.ip(&["-j", "link", "show", "dev", NODE_IF])?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    let xdp = &v[0]["xdp"];
    xdp["prog"]["id"]
        .as_u64()
        .or_else(|| {
            xdp["attached"]
                .as_array()
                .and_then(|a| a.iter().find_map(|p| p["prog"]["id"].as_u64()))
        })
        .map(|id| id as u32)
        .with_context(|| format!("no XDP program on {NODE_IF} in {}", ns.name()))
}

/// `bpftool prog show` of program `id`, as JSON: its maps, and its run-time statistics while
/// they are on.
pub fn prog_info(id: u32) -> anyhow::Result<serde_json::Value> {
    let out = super::netns::output(std::process::Command::new("bpftool").args([
        "-j",
        "prog",
        "show",
        "id",
        &id.to_string(),
    ]))?;
    Ok(serde_json::from_str(&out)?)
}

/// Fails unless the uplink's XDP program is attached in the expected mode.
pub fn check_xdp_mode(ns: &Netns, generic: bool) -> anyhow::Result<()> {
    let text = ns.ip(&["-j", "link", "show", "dev", NODE_IF])?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    // XDP_ATTACHED_DRV = 1, XDP_ATTACHED_SKB = 2 (include/uapi/linux/if_link.h).
    let mode = v[0]["xdp"]["mode"].as_u64();
    let want = if generic { 2 } else { 1 };
    if mode != Some(want) {
        anyhow::bail!(
            "XDP on {NODE_IF} is attached in mode {mode:?}, expected {want} ({})",
            if generic { "generic" } else { "native" }
        );
    }
    Ok(())
}

pub fn ifindex(ns: &Netns, dev: &str) -> anyhow::Result<u32> {
    let text = ns.ip(&["-j", "link", "show", "dev", dev])?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    v[0]["ifindex"]
        .as_u64()
        .map(|i| i as u32)
        .context("no ifindex in `ip link` output")
}
