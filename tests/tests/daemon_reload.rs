//! `nodewall run` follows its config file: an edit (rename over), a Kubernetes ConfigMap update
//! (`..data` symlink swap) and SIGHUP re-apply it; an invalid file is rejected, counted, and the
//! running policy keeps enforcing. Checked with real connections through the node's uplink.

mod daemon_support;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::ensure;
use daemon_support::{replace_file, wait_until, Agent, TempDir};
use nodewall_netns_tests::nodewall::Config;
use nodewall_netns_tests::topology::{node_addr, Topology};
use nodewall_netns_tests::traffic::{tcp_ok, Server};
use nodewall_netns_tests::{backend_tests, Backend};

const PORT: u16 = 8080;
const WEB_FROM_INTERNET: &str = "  - name: web-from-internet\n    action: allow\n    protocol: tcp\n    ports: [\"8080\"]\n    from: [\"198.19.0.0/24\", \"fd00:99::/64\"]";
/// How long a reload may take (inotify, a 150 ms settle, the apply).
const RELOAD: Duration = Duration::from_secs(3);

fn configs(backend: Backend) -> (String, String) {
    let closed = Config::new(backend, Some("tke-node"));
    let mut open = closed.clone();
    open.rules.push(WEB_FROM_INTERNET.into());
    (closed.yaml(), open.yaml())
}

fn web_open(topo: &Topology) -> bool {
    tcp_ok(&topo.internet.ns, node_addr(false), PORT)
        && tcp_ok(&topo.internet.ns, node_addr(true), PORT)
}

fn web_closed(topo: &Topology) -> bool {
    !tcp_ok(&topo.internet.ns, node_addr(false), PORT)
        && !tcp_ok(&topo.internet.ns, node_addr(true), PORT)
}

fn reload_on_file_change(backend: Backend) -> anyhow::Result<()> {
    let topo = Topology::new()?;
    let _web = Server::tcp(&topo.node, PORT)?;
    let (closed, open) = configs(backend);
    let (dir, config) = TempDir::with_config("reload", &closed)?;
    let agent = Agent::start(&topo.node, backend, &config, &dir, &[])?;
    ensure!(
        web_closed(&topo),
        "tcp/8080 from the internet is dropped at first"
    );

    let t = Instant::now();
    replace_file(&config, &open)?;
    ensure!(
        wait_until(RELOAD, || web_open(&topo)),
        "tcp/8080 allowed after the edit"
    );
    eprintln!("edit -> open: {} ms", t.elapsed().as_millis());
    ensure!(
        agent.log().contains("trigger=\"config-change\""),
        "the apply is logged with its trigger"
    );
    ensure!(
        agent.log().contains("rules_added=1")
            && agent.log().contains("added_rules=web-from-internet"),
        "the log line carries the diff"
    );

    // Editors that write in place (no rename) are seen too.
    std::fs::write(&config, &closed)?;
    ensure!(
        wait_until(RELOAD, || web_closed(&topo)),
        "tcp/8080 dropped again after the second edit"
    );
    Ok(())
}

/// The kubelet's atomic ConfigMap update: new timestamped dir, `..data_tmp` symlink renamed over
/// `..data`, old dir removed. `config.yaml` -> `..data/config.yaml` itself never changes.
fn configmap_swap(dir: &Path, old: &str, new: &str, text: &str) -> anyhow::Result<()> {
    std::fs::create_dir(dir.join(new))?;
    std::fs::write(dir.join(new).join("config.yaml"), text)?;
    std::os::unix::fs::symlink(new, dir.join("..data_tmp"))?;
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data"))?;
    std::fs::remove_dir_all(dir.join(old))?;
    Ok(())
}

fn reload_on_configmap_swap(backend: Backend) -> anyhow::Result<()> {
    let topo = Topology::new()?;
    let _web = Server::tcp(&topo.node, PORT)?;
    let (closed, open) = configs(backend);
    let dir = TempDir::new("configmap")?;
    let mount = dir.0.join("mount");
    std::fs::create_dir_all(mount.join("..2026_01"))?;
    std::fs::write(mount.join("..2026_01/config.yaml"), &closed)?;
    std::os::unix::fs::symlink("..2026_01", mount.join("..data"))?;
    std::os::unix::fs::symlink("..data/config.yaml", mount.join("config.yaml"))?;
    let _agent = Agent::start(&topo.node, backend, &mount.join("config.yaml"), &dir, &[])?;
    ensure!(web_closed(&topo), "dropped at first");

    configmap_swap(&mount, "..2026_01", "..2026_02", &open)?;
    ensure!(
        wait_until(RELOAD, || web_open(&topo)),
        "allowed after the first swap"
    );
    configmap_swap(&mount, "..2026_02", "..2026_03", &closed)?;
    ensure!(
        wait_until(RELOAD, || web_closed(&topo)),
        "dropped after the second swap"
    );
    Ok(())
}

fn invalid_reload_keeps_the_running_policy(backend: Backend) -> anyhow::Result<()> {
    let topo = Topology::new()?;
    let _web = Server::tcp(&topo.node, PORT)?;
    let (_, open) = configs(backend);
    let (dir, config) = TempDir::with_config("invalid", &open)?;
    let agent = Agent::start(&topo.node, backend, &config, &dir, &[])?;
    ensure!(web_open(&topo), "allowed by the running policy");

    let broken = open.replace("ports: [\"8080\"]", "ports: [\"80800\"]");
    replace_file(&config, &broken)?;
    let errors = agent.metric_reaches("nodewall_config_reload_errors_total", 1.0, RELOAD);
    ensure!(errors == 1.0, "reload error counted once (got {errors})");
    ensure!(
        agent
            .log()
            .contains("config rejected; the running policy stays installed")
            && agent.log().contains("port 80800"),
        "the rejection is logged with the reason"
    );
    ensure!(
        web_open(&topo),
        "the running policy still enforces (and still allows tcp/8080)"
    );
    ensure!(
        web_closed_for_others(&topo),
        "and still drops what it dropped"
    );
    ensure!(agent.get("/readyz")?.0 == 200, "still ready");

    // SIGHUP re-reads the file: still invalid, counted again, still enforcing.
    agent.signal(libc::SIGHUP);
    let errors = agent.metric_reaches("nodewall_config_reload_errors_total", 2.0, RELOAD);
    ensure!(
        errors == 2.0,
        "SIGHUP with a bad file is a second reload error (got {errors})"
    );
    ensure!(web_open(&topo), "still enforcing the last good policy");
    Ok(())
}

/// kubelet (10250) from the internet: dropped by every config in this file.
fn web_closed_for_others(topo: &Topology) -> bool {
    !tcp_ok(&topo.internet.ns, node_addr(false), 10250)
}

fn sighup_reapplies(backend: Backend) -> anyhow::Result<()> {
    let topo = Topology::new()?;
    let (closed, _) = configs(backend);
    let (dir, config) = TempDir::with_config("sighup", &closed)?;
    let agent = Agent::start(&topo.node, backend, &config, &dir, &[])?;
    let before = agent
        .metric("nodewall_apply_duration_seconds_count")
        .unwrap_or(0.0);
    agent.signal(libc::SIGHUP);
    let after = agent.metric_reaches(
        "nodewall_apply_duration_seconds_count",
        before + 1.0,
        RELOAD,
    );
    ensure!(
        after == before + 1.0,
        "SIGHUP applies once more ({before} -> {after})"
    );
    ensure!(
        agent.log().contains("trigger=\"sighup\""),
        "logged as a SIGHUP apply"
    );
    Ok(())
}

backend_tests!(
    reload_on_file_change,
    reload_on_configmap_swap,
    invalid_reload_keeps_the_running_policy,
    sighup_reapplies,
);
