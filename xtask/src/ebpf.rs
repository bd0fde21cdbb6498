//! Builds the XDP program (`ebpf/`, its own workspace) into a BPF object.
//!
//! One function for two callers: `cargo xtask build-ebpf`, and the agent's `build.rs`, which
//! includes this file with `#[path]` so that `cargo build -p nodewall` builds everything.
//! The toolchain is the nightly pinned in `ebpf/rust-toolchain.toml`, run through rustup so
//! that the outer cargo's toolchain and flags never leak into the BPF build.

use std::path::{Path, PathBuf};
use std::process::Command;

pub const TARGET: &str = "bpfel-unknown-none";
pub const BIN: &str = "nodewall-ebpf";

/// Files whose change must rebuild the object (used by agent/build.rs, which includes this file).
#[allow(dead_code)]
pub fn inputs(root: &Path) -> Vec<PathBuf> {
    [
        "ebpf/src",
        "ebpf/Cargo.toml",
        "ebpf/Cargo.lock",
        "ebpf/rust-toolchain.toml",
        "ebpf/.cargo",
        "common/src",
        "common/Cargo.toml",
    ]
    .iter()
    .map(|p| root.join(p))
    .collect()
}

/// The `channel` of `ebpf/rust-toolchain.toml`.
pub fn toolchain(root: &Path) -> Result<String, String> {
    let path = root.join("ebpf/rust-toolchain.toml");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("channel"))
        .filter_map(|rest| rest.trim_start().strip_prefix('='))
        .map(|v| v.trim().trim_matches('"').to_string())
        .next()
        .ok_or_else(|| format!("{}: no `channel = \"...\"` line", path.display()))
}

/// Builds the object in release mode and returns its path
/// (`ebpf/target/bpfel-unknown-none/release/nodewall-ebpf`).
pub fn build(root: &Path) -> Result<PathBuf, String> {
    let toolchain = toolchain(root)?;
    let missing = |what: &str| {
        format!(
            "building the XDP program needs {what}.\n  Install: `rustup toolchain install {toolchain} --component rust-src` \
             and `cargo install bpf-linker@0.13.0`;\n  or set NODEWALL_EBPF_OBJECT to a prebuilt object \
             (`cargo xtask build-ebpf` prints its path)."
        )
    };
    match Command::new("bpf-linker").arg("--version").output() {
        Ok(o) if o.status.success() => {}
        _ => return Err(missing("bpf-linker on PATH")),
    }
    let ebpf = root.join("ebpf");
    let mut cmd = Command::new("rustup");
    cmd.args([
        "run",
        &toolchain,
        "cargo",
        "build",
        "--locked",
        "--release",
        "--target",
        TARGET,
        "-Z",
        "build-std=core",
    ])
    .current_dir(&ebpf);
    // Everything the outer cargo sets for its own (host, stable) build must not reach this one.
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let outer = (key.starts_with("CARGO") && key != "CARGO_HOME")
            || key.starts_with("RUSTC")
            || key.starts_with("RUSTDOC")
            || key == "RUSTFLAGS"
            || key == "RUSTUP_TOOLCHAIN";
        if outer {
            cmd.env_remove(key);
        }
    }
    cmd.env(
        "CARGO_ENCODED_RUSTFLAGS",
        // As in ebpf/.cargo/config.toml (why: see there).
        [
            "-C",
            "debuginfo=2",
            "-C",
            "link-arg=--btf",
            "-C",
            "link-arg=--cpu-features=+allows-misaligned-mem-access",
        ]
        .join("\x1f"),
    );
    let status = cmd.status().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => missing("rustup on PATH"),
        _ => format!("running rustup: {e}"),
    })?;
    if !status.success() {
        return Err(format!(
            "building the XDP program in {} failed ({status}); see the cargo output above.\n{}",
            ebpf.display(),
            missing(&format!(
                "the {toolchain} toolchain with rust-src, and bpf-linker"
            ))
        ));
    }
    Ok(ebpf.join("target").join(TARGET).join("release").join(BIN))
}
