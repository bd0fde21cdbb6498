//! Builds the XDP program and hands its object to `include_bytes!` (see
//! `src/backend/xdp/object.rs`), so `cargo build -p nodewall` needs no separate step.
//! Set NODEWALL_EBPF_OBJECT to use a prebuilt object instead (e.g. from `cargo xtask build-ebpf`).

#[path = "../xtask/src/ebpf.rs"]
mod ebpf;

use std::path::{Path, PathBuf};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("agent lives in the workspace")
        .to_path_buf();
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("nodewall-ebpf.o");
    println!("cargo:rerun-if-env-changed=NODEWALL_EBPF_OBJECT");
    let object = match std::env::var_os("NODEWALL_EBPF_OBJECT") {
        Some(path) => PathBuf::from(path),
        None => {
            for input in ebpf::inputs(&root) {
                println!("cargo:rerun-if-changed={}", input.display());
            }
            ebpf::build(&root).unwrap_or_else(|e| panic!("\n{e}\n"))
        }
    };
    std::fs::copy(&object, &out)
        .unwrap_or_else(|e| panic!("copying the XDP object {}: {e}", object.display()));
}
