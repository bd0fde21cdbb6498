//! Developer tasks: `cargo xtask <task>`.

mod ebpf;

use std::path::Path;

fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace");
    match std::env::args().nth(1).as_deref() {
        Some("build-ebpf") => println!(
            "{}",
            ebpf::build(root).map_err(anyhow::Error::msg)?.display()
        ),
        _ => anyhow::bail!("usage: cargo xtask build-ebpf"),
    }
    Ok(())
}
