//! Loading a config for a command, printing located errors the same way everywhere, and the
//! standard output every command writes through.
//!
//! Output goes through [`stdout`], never `println!`: a reader that goes away (`| head -1`)
//! makes the next write fail with `BrokenPipe`, which travels up as an error like any other
//! and ends the process quietly with exit 0 (see [`is_broken_pipe`]), as ripgrep does, where
//! `println!` would panic.

use std::io::{BufWriter, StdoutLock, Write};
use std::process::ExitCode;

use nodewall::config::{self, Config, ConfigErrors};
use nodewall::policy::{self, Policy};

use super::{ConfigArg, EXIT_INVALID};

/// Buffered standard output; callers end with `flush()?` so that a failed write is seen.
pub fn stdout() -> BufWriter<StdoutLock<'static>> {
    BufWriter::with_capacity(64 * 1024, std::io::stdout().lock())
}

/// Whether `err` is a write to a closed pipe: the reader has all it wanted.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Prints every error of an invalid config to stderr, then their count; returns the exit code
/// to use.
pub fn invalid_config(errs: &ConfigErrors) -> ExitCode {
    eprintln!("{errs}");
    eprintln!("nodewall: {} error(s) in {}", errs.errors.len(), errs.file);
    ExitCode::from(EXIT_INVALID)
}

/// Loads and validates (see [`invalid_config`] for what invalid input prints). Commands that
/// need the policy too load it with `discovered::load_policy`, which resolves the networks
/// read from the Kubernetes API before [`compile`].
pub fn load_config(arg: &ConfigArg) -> Result<Config, ExitCode> {
    config::load(&arg.config).map_err(|errs| invalid_config(&errs))
}

/// Compiles a loaded config; on failure prints `FILE: FIELD: REASON` and returns the exit code
/// to use.
pub fn compile(arg: &ConfigArg, config: &Config) -> Result<Policy, ExitCode> {
    policy::compile(config).map_err(|e| {
        eprintln!("{}: {e}", arg.config.display());
        ExitCode::from(EXIT_INVALID)
    })
}

/// Pretty JSON and a newline on standard output.
pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    // Serialised first: serde_json's error would hide the `BrokenPipe` of a failed write.
    let mut text = serde_json::to_vec_pretty(value)?;
    text.push(b'\n');
    let mut out = stdout();
    out.write_all(&text)?;
    out.flush()?;
    Ok(())
}
