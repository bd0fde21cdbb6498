//! `cargo xtask <task>`: the project's entry points, so a newcomer needs no other instructions.
//!
//! - `setup`: install what building and testing need (idempotent; apt, rustup, cargo install).
//! - `test`:  setup, then every test (unit, property, netns integration, deploy checks).
//! - `demo`:  setup, then the sandbox demo in network namespaces.
//! - `build-ebpf`: build the XDP object alone and print its path (the agent's build.rs does
//!   the same on every `cargo build`).
//! - `bench`: benchmarks against peers and baselines, written to docs/benchmarks.md.

mod bench;
mod demo;
mod ebpf;
mod setup;
mod shell;
mod test;

use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask <setup|test|demo|build-ebpf|bench> [args]

  setup   install the system packages and toolchains nodewall needs (idempotent)
  test    setup, build, then run every test (needs root for the netns suites; CI=true makes a
          missing prerequisite a failure instead of a skip)
  demo    setup, build, then run the sandbox demo in throwaway network namespaces
  build-ebpf  build the XDP object (ebpf/) and print its path
  bench   measure nodewall against peers and baselines; writes docs/benchmarks.md (--quick: < 2 min)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup::run(),
        Some("test") => test::run(&args[1..]),
        Some("demo") => setup::run_setup().and_then(|()| demo::demo()),
        Some("build-ebpf") => ebpf::build(&shell::root())
            .map(|o| println!("{}", o.display()))
            .map_err(anyhow::Error::msg),
        Some("bench") => bench::run(&args[1..]),
        // Hidden: the demo's UDP listener, started inside the node namespace.
        Some("udp-echo") => demo::udp_echo(&args[1..]),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}
