//! Anti-lockout and one-agent-per-node, through the real binary in a node namespace:
//! `apply --confirm` rolls back unless `nodewall confirm` runs in time; `apply` refuses a policy
//! that would cut the SSH session it runs from (`--force` overrides); a second agent, or an
//! `apply` while an agent runs, is refused by the lock.

mod daemon_support;

use std::process::Output;
use std::time::Duration;

use anyhow::ensure;
use daemon_support::{wait_until, Agent, TempDir};
use nodewall_netns_tests::netns::Netns;
use nodewall_netns_tests::nodewall::{run, Config};
use nodewall_netns_tests::topology::{node_addr, Topology};
use nodewall_netns_tests::traffic::{tcp_ok, Server};
use nodewall_netns_tests::{backend_tests, Backend};

const WEB: &str = "  - name: web-from-internet\n    action: allow\n    protocol: tcp\n    ports: [\"8080\"]\n    from: [\"198.19.0.0/24\"]";

/// `nodewall ARGS` in `node` with `env` and the backend's own environment.
fn nodewall(
    node: &Netns,
    backend: Backend,
    args: &[&str],
    env: &[(&str, &str)],
) -> anyhow::Result<Output> {
    let env: Vec<(&str, &str)> = backend.env().iter().chain(env).copied().collect();
    let out = run(node, args, &env)?;
    eprintln!(
        "nodewall {}: {}\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn confirm_or_roll_back(backend: Backend) -> anyhow::Result<()> {
    let topo = Topology::new()?;
    let _web = Server::tcp(&topo.node, 8080)?;
    let web_open = || tcp_ok(&topo.internet.ns, node_addr(false), 8080);
    let dir = TempDir::new("confirm")?;
    let state = dir.0.join("state");
    let state = state.to_str().unwrap();
    let open_cfg = dir.0.join("open.yaml");
    let closed_cfg = dir.0.join("closed.yaml");
    let mut open = Config::new(backend, Some("tke-node"));
    open.rules.push(WEB.into());
    std::fs::write(&open_cfg, open.yaml())?;
    std::fs::write(&closed_cfg, Config::new(backend, Some("tke-node")).yaml())?;
    let (open_cfg, closed_cfg) = (open_cfg.to_str().unwrap(), closed_cfg.to_str().unwrap());

    let apply = |cfg: &str, extra: &[&str]| {
        let mut args = vec!["apply", "-c", cfg, "--state-dir", state];
        args.extend_from_slice(extra);
        nodewall(&topo.node, backend, &args, &[])
    };
    let confirm = || nodewall(&topo.node, backend, &["confirm", "--state-dir", state], &[]);

    let out = apply(open_cfg, &[])?;
    ensure!(
        out.status.success() && web_open(),
        "the first policy is applied and open"
    );

    // Not confirmed: rolled back after 2 s.
    let out = apply(closed_cfg, &["--confirm", "2"])?;
    ensure!(out.status.success(), "apply --confirm succeeds");
    ensure!(
        stderr(&out).contains("rolls back in 2 s"),
        "and says when it rolls back"
    );
    ensure!(!web_open(), "the new policy is in force");
    let out = apply(open_cfg, &[])?;
    ensure!(
        out.status.code() == Some(1) && stderr(&out).contains("is pending"),
        "another apply is refused while one awaits confirmation"
    );
    ensure!(
        wait_until(Duration::from_secs(5), &web_open),
        "rolled back to the previous policy after the deadline"
    );
    let out = confirm()?;
    ensure!(
        out.status.code() == Some(1) && stderr(&out).contains("was rolled back"),
        "confirm after the deadline fails and says it was rolled back"
    );

    // Confirmed in time: stays after the deadline.
    let out = apply(closed_cfg, &["--confirm", "2"])?;
    ensure!(
        out.status.success() && !web_open(),
        "second confirmed apply in force"
    );
    ensure!(confirm()?.status.success(), "confirm in time succeeds");
    std::thread::sleep(Duration::from_secs(3));
    ensure!(!web_open(), "a confirmed policy is not rolled back");
    ensure!(
        apply(open_cfg, &[])?.status.success(),
        "the lock is free again once confirmed"
    );
    Ok(())
}

fn refuses_to_cut_the_ssh_session(backend: Backend) -> anyhow::Result<()> {
    let topo = Topology::new()?;
    let dir = TempDir::new("ssh")?;
    let state = dir.0.join("state");
    let state = state.to_str().unwrap();
    // tke-node with `failsafe: []`: nothing allows tcp/22 from the internet.
    let cfg = dir.0.join("no-ssh.yaml");
    std::fs::write(&cfg, Config::new(backend, Some("tke-node")).yaml())?;
    let cfg = cfg.to_str().unwrap();
    let session = format!("{} 50022 {} 22", topo.internet.v4, node_addr(false));
    let env = [("SSH_CONNECTION", session.as_str())];

    let out = nodewall(
        &topo.node,
        backend,
        &["apply", "-c", cfg, "--state-dir", state],
        &env,
    )?;
    ensure!(out.status.code() == Some(2), "refused with exit 2");
    ensure!(
        stderr(&out).contains("SSH") && stderr(&out).contains("--force"),
        "the refusal names the session and the way out"
    );
    ensure!(
        !nodewall_netns_tests::installed::present(&topo.node, backend),
        "nothing was applied"
    );
    // From the cluster network, SSH is allowed by tke-node (all traffic from the cluster).
    let allowed = format!("{} 50022 {} 22", topo.cluster.v4, node_addr(false));
    let out = nodewall(
        &topo.node,
        backend,
        &["apply", "-c", cfg, "--state-dir", state],
        &[("SSH_CONNECTION", allowed.as_str())],
    )?;
    ensure!(
        out.status.success(),
        "a session the policy allows is no obstacle"
    );
    let out = nodewall(
        &topo.node,
        backend,
        &["apply", "-c", cfg, "--state-dir", state, "--force"],
        &env,
    )?;
    ensure!(out.status.success(), "--force applies anyway");
    Ok(())
}

fn one_agent_per_node(backend: Backend) -> anyhow::Result<()> {
    let topo = Topology::new()?;
    let (dir, config) =
        TempDir::with_config("lock", &Config::new(backend, Some("tke-node")).yaml())?;
    let agent = Agent::start(&topo.node, backend, &config, &dir, &[])?;
    let cfg = config.to_str().unwrap();
    let state = agent.state_dir.to_str().unwrap();
    let holder = format!("pid {}", agent.pid());

    let out = nodewall(
        &topo.node,
        backend,
        &[
            "run",
            "-c",
            cfg,
            "--state-dir",
            state,
            "--metrics-addr",
            "127.0.0.1:9470",
        ],
        &[],
    )?;
    ensure!(out.status.code() == Some(1), "a second agent exits 1");
    ensure!(
        stderr(&out).contains("another nodewall") && stderr(&out).contains(&holder),
        "and names the running one"
    );
    let out = nodewall(
        &topo.node,
        backend,
        &["apply", "-c", cfg, "--state-dir", state],
        &[],
    )?;
    ensure!(
        out.status.code() == Some(1) && stderr(&out).contains(&holder),
        "apply is refused while the agent runs"
    );
    ensure!(
        agent.get("/readyz")?.0 == 200,
        "the running agent is undisturbed"
    );
    Ok(())
}

backend_tests!(
    confirm_or_roll_back,
    refuses_to_cut_the_ssh_session,
    one_agent_per_node,
);
