//! Loading a config for a command, printing located errors the same way everywhere.

use std::process::ExitCode;

use nodewall::config::{self, Config};
use nodewall::policy::{self, Policy};

use super::{ConfigArg, EXIT_INVALID};

/// Loads and validates.
pub fn load_config(arg: &ConfigArg) -> Result<Config, ExitCode> {
    config::load(&arg.config).map_err(|errs| {
        eprintln!("{errs}");
        eprintln!("nodewall: {} error(s) in {}", errs.errors.len(), errs.file);
        ExitCode::from(EXIT_INVALID)
    })
}

pub fn compile(arg: &ConfigArg, config: &Config) -> Result<Policy, ExitCode> {
    policy::compile(config).map_err(|e| {
        eprintln!("{}: {e}", arg.config.display());
        ExitCode::from(EXIT_INVALID)
    })
}

pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
