use std::process::ExitCode;

use nodewall::backend::interfaces;

use super::select::{self, BackendArg};
use super::{output, ConfigArg};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
    /// Override the config's backend.
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    backend: BackendArg,
    /// Print the apply report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (config, mut policy) = match output::load_policy(&args.config) {
        Ok(v) => v,
        Err(code) => return Ok(code),
    };
    policy.interfaces = interfaces::resolve(&policy.interfaces)?;
    let mut backend = select::for_apply(args.backend, config.backend)?;
    let report = backend.apply(&policy)?;
    if args.json {
        output::print_json(&report)?;
    } else {
        println!(
            "applied generation {} with backend {} on {} ({} rules, +{} -{}, {:.1} ms{})",
            report.generation,
            backend.name(),
            policy.interfaces.join(","),
            policy.rules.len(),
            report.added,
            report.removed,
            report.duration.as_secs_f64() * 1e3,
            if report.changed { "" } else { ", unchanged" }
        );
    }
    Ok(ExitCode::SUCCESS)
}
