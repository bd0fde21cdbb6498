//! Installs what nodewall needs, only what is missing, so running it twice is cheap.

use std::process::Command;

use anyhow::bail;

use crate::shell::{output, root, run as sh, succeeds};

/// Debian packages: C libraries the nftnl/mnl bindings link, LLVM 22 for bpf-linker, the tools
/// the tests drive (nft, socat, bpftool, iproute2, ping, python3 for probes), Prometheus for the
/// scrape test and promtool.
pub const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "zlib1g-dev",
    "libzstd-dev",
    "libnftnl-dev",
    "libmnl-dev",
    "pkg-config",
    "nftables",
    "socat",
    "bpftool",
    "iproute2",
    "iputils-ping",
    "python3",
    "python3-venv",
    "prometheus",
    "systemd",
    "iptables",
    "ipset",
    "ethtool",
    "fonts-dejavu-core",
];

/// The eBPF program builds with this nightly; its LLVM (22) must equal bpf-linker's.
pub const NIGHTLY: &str = "nightly-2026-05-20";
pub const BPF_LINKER: &str = "0.13.0";

pub fn run_setup() -> anyhow::Result<()> {
    apt()?;
    nightly()?;
    bpf_linker()?;
    test_venv()?;
    Ok(())
}

pub fn run() -> anyhow::Result<()> {
    run_setup()?;
    eprintln!("xtask setup: everything is installed");
    Ok(())
}

fn apt() -> anyhow::Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !output(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]))
                .contains("install ok installed")
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing Debian packages {missing:?}: run as root, or `apt-get install -y {}`",
            missing.join(" ")
        );
    }
    eprintln!(
        "xtask setup: installing {} Debian package(s): {}",
        missing.len(),
        missing.join(" ")
    );
    sh(Command::new("apt-get").args(["update", "-qq"]))?;
    sh(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn nightly() -> anyhow::Result<()> {
    let have = output(Command::new("rustup").args(["toolchain", "list"]));
    let components = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        NIGHTLY,
    ]));
    if have.lines().any(|l| l.starts_with(NIGHTLY)) && components.contains("rust-src") {
        return Ok(());
    }
    eprintln!("xtask setup: installing Rust {NIGHTLY} with rust-src (for the eBPF program)");
    sh(Command::new("rustup").args([
        "toolchain",
        "install",
        NIGHTLY,
        "--profile",
        "minimal",
        "--component",
        "rust-src",
    ]))
}

fn bpf_linker() -> anyhow::Result<()> {
    if output(Command::new("bpf-linker").arg("--version")).contains(BPF_LINKER) {
        return Ok(());
    }
    eprintln!("xtask setup: building bpf-linker {BPF_LINKER} against LLVM 22 (about a minute)");
    let path = format!(
        "/usr/lib/llvm-22/bin:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    sh(Command::new("cargo")
        .args([
            "install",
            "--locked",
            &format!("bpf-linker@{BPF_LINKER}"),
            "--no-default-features",
            "--features",
            "llvm-22",
        ])
        .env("PATH", path)
        .env("LLVM_PREFIX", "/usr/lib/llvm-22")
        .env("LLVM_SYS_221_PREFIX", "/usr/lib/llvm-22"))
}

/// The Python tools of the tests (the kmock Kubernetes API emulator), pinned in
/// tests/kube/requirements.txt, in target/test-venv; reinstalled only when that file changes.
fn test_venv() -> anyhow::Result<()> {
    let req = root().join("tests/kube/requirements.txt");
    let venv = root().join("target/test-venv");
    let stamp = venv.join(".requirements");
    let want = std::fs::read_to_string(&req)?;
    let python = venv.join("bin/python");
    if python.exists() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(want.as_str()) {
        return Ok(());
    }
    eprintln!(
        "xtask setup: installing the test API emulator (kmock) into {}",
        venv.display()
    );
    sh(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    sh(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(&req))?;
    std::fs::write(&stamp, want)?;
    Ok(())
}

pub fn is_root() -> bool {
    succeeds(Command::new("sh").args(["-c", "[ \"$(id -u)\" = 0 ]"]))
}
