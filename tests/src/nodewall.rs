//! Running the real `nodewall` binary: configs written to files, `apply`/`status`/`flush` inside
//! the node namespace, `explain --batch` for the reference verdicts.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context};
use serde_json::Value;

use crate::netns::Netns;
use crate::probe::Probe;
use crate::rng::Rng;
use crate::topology::{CLUSTER, CONTAINER, CONTROL_PLANE, UPLINK};
use crate::Backend;

/// The `nodewall` binary: `$NODEWALL_BIN`, else the newest of `target/{debug,release}/nodewall`
/// under `$CARGO_TARGET_DIR` or the workspace root.
pub fn binary() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("NODEWALL_BIN") {
        return Ok(PathBuf::from(p));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let newest = ["debug", "release"]
        .iter()
        .map(|p| target.join(p).join("nodewall"))
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .max();
    match newest {
        Some((_, p)) => Ok(p.canonicalize()?),
        None => bail!(
            "no nodewall binary under {}: run `cargo build --bin nodewall` or set NODEWALL_BIN",
            target.display()
        ),
    }
}

/// A config file in a private temporary directory (removed on drop).
pub struct ConfigFile {
    dir: PathBuf,
    pub path: PathBuf,
    /// The backend it was written for (its environment goes to `apply`), when known.
    pub backend: Option<Backend>,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl ConfigFile {
    pub fn new(yaml: &str) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "nwt-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("config.yaml");
        std::fs::write(&path, yaml)?;
        Ok(Self {
            dir,
            path,
            backend: None,
        })
    }

    pub fn rewrite(&self, yaml: &str) -> anyhow::Result<()> {
        Ok(std::fs::write(&self.path, yaml)?)
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A test config: the topology's networks, uplink `eth0`, no failsafe unless given.
#[derive(Clone, Debug)]
pub struct Config {
    pub backend: Backend,
    pub mode: &'static str,
    pub profile: Option<String>,
    /// Extra YAML under `rules:` (already indented by two spaces per item).
    pub rules: Vec<String>,
    pub failsafe: Vec<String>,
    /// Overrides of `networks` entries.
    pub networks: Vec<(String, Vec<String>)>,
    pub implicit: Option<String>,
    /// The `egress:` section as YAML (its key included), if any.
    pub egress: Option<String>,
}

impl Config {
    pub fn new(backend: Backend, profile: Option<&str>) -> Self {
        Self {
            backend,
            mode: "enforce",
            profile: profile.map(String::from),
            rules: Vec::new(),
            failsafe: Vec::new(),
            networks: vec![
                (
                    "cluster".into(),
                    CLUSTER.iter().map(|s| s.to_string()).collect(),
                ),
                (
                    "container".into(),
                    CONTAINER.iter().map(|s| s.to_string()).collect(),
                ),
                (
                    "control-plane".into(),
                    CONTROL_PLANE.iter().map(|s| s.to_string()).collect(),
                ),
            ],
            implicit: None,
            egress: None,
        }
    }

    pub fn yaml(&self) -> String {
        let mut y = format!(
            "backend: {}\nmode: {}\ninterfaces: [{UPLINK}]\n",
            self.backend.config_name(),
            self.mode
        );
        if let Some(p) = &self.profile {
            y.push_str(&format!("profile: {p}\n"));
        }
        y.push_str("networks:\n");
        for (name, nets) in &self.networks {
            let list: Vec<String> = nets.iter().map(|n| format!("\"{n}\"")).collect();
            y.push_str(&format!("  {name}: [{}]\n", list.join(", ")));
        }
        if self.failsafe.is_empty() {
            y.push_str("failsafe: []\n");
        } else {
            y.push_str("failsafe:\n");
            for r in &self.failsafe {
                y.push_str(r);
                y.push('\n');
            }
        }
        if !self.rules.is_empty() {
            y.push_str("rules:\n");
            for r in &self.rules {
                y.push_str(r);
                y.push('\n');
            }
        }
        if let Some(i) = &self.implicit {
            y.push_str(i);
            y.push('\n');
        }
        if let Some(e) = &self.egress {
            y.push_str(e);
            y.push('\n');
        }
        y
    }

    pub fn write(&self) -> anyhow::Result<ConfigFile> {
        let mut file = ConfigFile::new(&self.yaml())?;
        file.backend = Some(self.backend);
        Ok(file)
    }
}

/// A config rule (for [`Config::rules`]) allowing `protocol` to `port` from `from`.
pub fn allow_rule(name: &str, protocol: &str, port: u16, from: &[String]) -> String {
    let from: Vec<String> = from.iter().map(|c| format!("\"{c}\"")).collect();
    format!(
        "  - name: {name}\n    action: allow\n    protocol: {protocol}\n    ports: [\"{port}\"]\n    from: [{}]",
        from.join(", ")
    )
}

/// `n` non-adjacent host /32s of 198.18.200.0/22 (what the nft backend keeps in a hash set of
/// /32s).
pub fn host_cidrs(n: u32) -> Vec<String> {
    (0..n)
        .map(|k| format!("198.18.{}.{}/32", 200 + k / 64, 4 * (k % 64) + 1))
        .collect()
}

/// `n` random IPv6 /64s of fd00:abcd::/32 (a space no topology network uses), each a path of
/// its own below the /32: past about 16,000 of them the XDP backend's flat tables overflow.
pub fn scattered_64s(rng: &mut Rng, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let net = 0xfd00_abcd_u128 << 96 | u128::from(rng.next_u64() as u32) << 64;
            format!("{}/64", std::net::Ipv6Addr::from(net))
        })
        .collect()
}

/// `n` (up to about 28,000) IPv4 /32s, one in every other /16 from 1.0.0.0 on, past 127/8 and
/// 198/8: configuration only (no test sends from them), each a path of its own below its
/// /16, so that they overflow the XDP backend's flat tables as [`scattered_64s`] do.
pub fn spread_32s(rng: &mut Rng, n: usize) -> Vec<String> {
    (256u32..)
        .step_by(2)
        .filter(|i| i >> 8 != 127 && i >> 8 != 198)
        .take(n)
        .map(|i| {
            let net = i << 16 | (rng.next_u64() as u32 & 0xffff);
            format!("{}/32", std::net::Ipv4Addr::from(net))
        })
        .collect()
}

/// `nodewall` to run in `ns`, with the namespace's bpffs (`NODEWALL_BPFFS`) and `env`.
pub fn command(ns: &Netns, env: &[(&str, &str)]) -> anyhow::Result<Command> {
    let bin = binary()?;
    let mut cmd = ns.command(bin.to_str().context("binary path is not UTF-8")?);
    cmd.env(::nodewall::backend::xdp::BPFFS_ENV, ns.bpffs()?);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Ok(cmd)
}

/// `nodewall ARGS...` in `ns` with extra environment; returns the raw output (not checked).
pub fn run(ns: &Netns, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Output> {
    command(ns, env)?
        .args(args)
        .output()
        .context("running nodewall")
}

fn checked(out: Output, what: &str) -> anyhow::Result<String> {
    if !out.status.success() {
        bail!(
            "nodewall {what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `nodewall apply -c FILE --json` in the node namespace, with the node's state directory:
/// the apply report.
pub fn apply(node: &Netns, config: &ConfigFile) -> anyhow::Result<Value> {
    let path = config.path.to_str().unwrap();
    let state = node.state_dir()?;
    let args = [
        "apply",
        "-c",
        path,
        "--json",
        "--state-dir",
        state.to_str().unwrap(),
    ];
    let env = config.backend.map(Backend::env).unwrap_or_default();
    let out = run(node, &args, env)?;
    Ok(serde_json::from_str(&checked(out, "apply")?)?)
}

/// `nodewall apply -c FILE --state-dir STATE [extra...]` in `node`, its outcome unchecked: for
/// tests of what `apply` refuses.
pub fn try_apply(
    node: &Netns,
    file: &ConfigFile,
    extra: &[&str],
    env: &[(&str, &str)],
) -> anyhow::Result<Output> {
    let state = node.state_dir()?;
    let mut args = vec![
        "apply",
        "-c",
        file.path.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run(node, &args, env)
}

/// `nodewall status --json` in the node namespace.
pub fn status(node: &Netns, backend: Backend) -> anyhow::Result<Value> {
    let out = run(
        node,
        &["status", "--json", "--backend", backend.cli_name()],
        backend.env(),
    )?;
    Ok(serde_json::from_str(&checked(out, "status")?)?)
}

pub fn flush(node: &Netns, backend: Backend) -> anyhow::Result<()> {
    let out = run(
        node,
        &["flush", "--backend", backend.cli_name()],
        backend.env(),
    )?;
    checked(out, "flush").map(|_| ())
}

/// The reference verdicts (`accept`/`drop`) of `nodewall explain --batch` for `probes`.
pub fn explain(config: &ConfigFile, probes: &[Probe]) -> anyhow::Result<Vec<Value>> {
    let mut child = Command::new(binary()?)
        .args(["explain", "--batch", "-c", config.path.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut input = String::new();
    for p in probes {
        input.push_str(&p.explain_json().to_string());
        input.push('\n');
    }
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output()?;
    writer.join().unwrap()?;
    let text = checked(out, "explain --batch")?;
    let verdicts: Vec<Value> = text
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    if verdicts.len() != probes.len() {
        bail!(
            "explain returned {} verdicts for {} probes",
            verdicts.len(),
            probes.len()
        );
    }
    Ok(verdicts)
}

/// Packets of a drop counter (by reason, rule, family, protocol) in a `status --json` value.
pub fn drop_packets(status: &Value, reason: &str, rule: &str, family: &str, protocol: &str) -> u64 {
    status["counters"]["drops"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| {
            d["reason"] == reason
                && d["rule"] == rule
                && d["family"] == family
                && d["protocol"] == protocol
        })
        .map(|d| d["packets"].as_u64().unwrap_or(0))
        .sum()
}

/// Packets of a rule counter in a `status --json` value.
pub fn rule_packets(status: &Value, rule: &str) -> u64 {
    status["counters"]["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["rule"] == rule)
        .map(|r| r["packets"].as_u64().unwrap_or(0))
        .sum()
}

/// Set to `1` in `apply`'s environment to make the nft backend's next batch fail in the kernel.
pub use ::nodewall::backend::nft::FAULT_ENV;

/// Names of the built-in profiles.
pub fn profiles_list() -> Vec<&'static str> {
    ::nodewall::profiles::all().iter().map(|p| p.name).collect()
}
