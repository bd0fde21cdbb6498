//! What an operator does next to a running agent (issue 13): `flush` is refused while the agent
//! runs (it would put the policy back within a second), and JSON logs carry counts as numbers.

mod daemon_support;

use std::time::Duration;

use anyhow::ensure;
use daemon_support::{Agent, TempDir};
use nodewall_netns_tests::nodewall::{run, status, Config};
use nodewall_netns_tests::topology::lone_node;
use nodewall_netns_tests::{backend_tests, Backend};

fn flush_is_refused_while_the_agent_runs(backend: Backend) -> anyhow::Result<()> {
    let node = lone_node("node")?;
    let (dir, config) =
        TempDir::with_config("flush", &Config::new(backend, Some("tke-node")).yaml())?;
    let agent = Agent::start(&node, backend, &config, &dir, &[])?;
    let state = agent.state_dir.to_str().unwrap().to_string();
    let out = run(
        &node,
        &[
            "flush",
            "--backend",
            backend.cli_name(),
            "--state-dir",
            &state,
        ],
        backend.env(),
    )?;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    ensure!(out.status.code() == Some(1), "{stdout}{stderr}");
    ensure!(!stdout.contains("flushed"), "{stdout}");
    ensure!(
        stderr.contains(&format!("pid {}, `nodewall run`", agent.pid())),
        "names the agent: {stderr}"
    );
    std::thread::sleep(Duration::from_millis(1500));
    ensure!(
        status(&node, backend)?["installed"] == true,
        "the policy was never removed"
    );
    Ok(())
}

fn json_logs_carry_counts_as_numbers(backend: Backend) -> anyhow::Result<()> {
    let node = lone_node("node")?;
    let (dir, config) =
        TempDir::with_config("json", &Config::new(backend, Some("tke-node")).yaml())?;
    let agent = Agent::start(&node, backend, &config, &dir, &["--log-format", "json"])?;
    let log = agent.log();
    let applied: serde_json::Value = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["fields"]["message"] == "policy applied")
        .ok_or_else(|| anyhow::anyhow!("no `policy applied` line in:\n{log}"))?;
    let fields = &applied["fields"];
    for count in [
        "rules_added",
        "rules_removed",
        "rules_changed",
        "entries_added",
        "generation",
    ] {
        ensure!(fields[count].is_u64(), "{count} is a number: {applied}");
    }
    ensure!(fields["rules_added"].as_u64() > Some(0), "{applied}");
    ensure!(fields["mode"] == "enforce", "{applied}");
    Ok(())
}

backend_tests!(
    flush_is_refused_while_the_agent_runs,
    json_logs_carry_counts_as_numbers
);
