//! `cargo xtask test`: setup, build, every test, then the deploy checks.

use std::process::Command;

use crate::setup;
use crate::shell::{cargo, root, run as sh};

pub fn run(extra: &[String]) -> anyhow::Result<()> {
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
