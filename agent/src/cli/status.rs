use std::process::ExitCode;

use super::output;
use super::select::{self, BackendArg};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    backend: BackendArg,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
pub struct FlushArgs {
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    backend: BackendArg,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let backend = select::for_inspect(args.backend)?;
    let status = backend.status()?;
    if args.json {
        output::print_json(&status)?;
        return Ok(ExitCode::SUCCESS);
    }
    if !status.installed {
        println!("backend {}: nothing installed", status.backend);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "backend {} generation {} on {}",
        status.backend,
        status.generation,
        status.interfaces.join(",")
    );
    println!(
        "{:<40} {:<6} {:>12} {:>14}",
        "RULE", "ACTION", "PACKETS", "BYTES"
    );
    for c in &status.counters.rules {
        println!(
            "{:<40} {:<6} {:>12} {:>14}",
            c.rule,
            format!("{:?}", c.action).to_lowercase(),
            c.packets,
            c.bytes
        );
    }
    println!();
    println!(
        "{:<14} {:<32} {:<6} {:<8} {:>12} {:>14}",
        "DROP REASON", "RULE", "FAMILY", "PROTO", "PACKETS", "BYTES"
    );
    for d in &status.counters.drops {
        println!(
            "{:<14} {:<32} {:<6} {:<8} {:>12} {:>14}",
            d.reason, d.rule, d.family, d.protocol, d.packets, d.bytes
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn flush(args: FlushArgs) -> anyhow::Result<ExitCode> {
    let mut backend = select::for_inspect(args.backend)?;
    backend.flush()?;
    println!("backend {}: flushed", backend.name());
    Ok(ExitCode::SUCCESS)
}
