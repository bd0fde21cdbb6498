//! Loading a config for a command, printing located errors the same way everywhere.

use std::process::ExitCode;

use nodewall::config::{self, Config};
use nodewall::policy::{self, Policy};

use super::{ConfigArg, EXIT_INVALID};

/// Loads, validates and compiles; on invalid input prints every error to stderr and returns the
/// exit code to use.
pub fn load_policy(arg: &ConfigArg) -> Result<(Config, Policy), ExitCode> {
    let config = config::load(&arg.config).map_err(|errs| {
        eprintln!("{errs}");
        eprintln!("nodewall: {} error(s) in {}", errs.errors.len(), errs.file);
        ExitCode::from(EXIT_INVALID)
    })?;
    let policy = policy::compile(&config).map_err(|e| {
        eprintln!("{}: {e}", arg.config.display());
        ExitCode::from(EXIT_INVALID)
    })?;
    Ok((config, policy))
}

pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
