//! `cargo xtask test` and `cargo xtask demo`.

use std::process::Command;

use crate::setup;
use crate::shell::{cargo, root, run as sh};

pub fn run_tests(extra: &[String]) -> anyhow::Result<()> {
    setup::run_setup()?;
    // The netns suites run the real binary: build it first so tests never race a build.
    sh(cargo().args(["build", "--workspace", "--bins"]))?;
    sh(cargo()
        .args(["test", "--workspace", "--no-fail-fast"])
        .args(extra))?;
    let deploy_check = root().join("deploy/check.sh");
    if deploy_check.exists() {
        sh(Command::new("bash").arg(deploy_check).current_dir(root()))?;
    }
    Ok(())
}

pub fn run(extra: &[String]) -> anyhow::Result<()> {
    run_tests(extra)
}

/// Until the sandbox demo lands: explain and render an example config.
pub fn demo() -> anyhow::Result<()> {
    setup::run_setup()?;
    sh(cargo().args(["build", "--bin", "nodewall"]))?;
    let bin = root().join("target/debug/nodewall");
    let example = root().join("deploy/examples/tke-node.yaml");
    sh(Command::new(&bin).args(["profiles", "tke-node"]))?;
    for (from, proto, port) in [
        ("203.0.113.7", "tcp", "30080"),
        ("203.0.113.7", "tcp", "10250"),
        ("10.0.1.5", "tcp", "10250"),
    ] {
        sh(Command::new(&bin)
            .arg("explain")
            .arg("-c")
            .arg(&example)
            .args(["--from", from, "--protocol", proto, "--port", port]))?;
    }
    sh(Command::new(&bin).arg("render").arg("-c").arg(&example))
}
