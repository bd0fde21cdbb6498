//! `nodewall status` and `nodewall flush`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use nodewall::apply::state::{self, StateDir};
use nodewall::backend::Status;
use nodewall::policy::Mode;

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
    /// Lock directory shared with `nodewall run` and `nodewall apply`: flush refuses while an
    /// agent runs (it would re-install the policy at once).
    #[arg(long, value_name = "DIR", default_value = state::DEFAULT_DIR)]
    state_dir: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let backend = select::for_inspect(args.backend)?;
    let status = backend.status()?;
    if args.json {
        output::print_json(&status)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = output::stdout();
    print_text(&mut out, &status)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn print_text(out: &mut impl Write, status: &Status) -> std::io::Result<()> {
    if !status.installed {
        return writeln!(out, "backend {}: nothing installed", status.backend);
    }
    let audit = status.mode == Some(Mode::Audit);
    writeln!(
        out,
        "backend {} generation {} mode {} on {}",
        status.backend,
        status.generation,
        if audit {
            "audit (nothing is dropped: would-be drops are counted and accepted)"
        } else {
            "enforce"
        },
        status.interfaces.join(",")
    )?;
    writeln!(
        out,
        "{:<40} {:<6} {:>12} {:>14}",
        "RULE", "ACTION", "PACKETS", "BYTES"
    )?;
    for c in &status.counters.rules {
        writeln!(
            out,
            "{:<40} {:<6} {:>12} {:>14}",
            c.rule,
            format!("{:?}", c.action).to_lowercase(),
            c.packets,
            c.bytes
        )?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "{:<9} {:<16} {:<32} {:<6} {:<8} {:>12} {:>14}",
        "DIRECTION",
        if audit { "WOULD DROP" } else { "DROP REASON" },
        "RULE",
        "FAMILY",
        "PROTO",
        "PACKETS",
        "BYTES"
    )?;
    for d in &status.counters.drops {
        writeln!(
            out,
            "{:<9} {:<16} {:<32} {:<6} {:<8} {:>12} {:>14}",
            d.direction, d.reason, d.rule, d.family, d.protocol, d.packets, d.bytes
        )?;
    }
    Ok(())
}

pub fn flush(args: FlushArgs) -> anyhow::Result<ExitCode> {
    let state = StateDir::new(&args.state_dir);
    let _lock = match super::lock::take(&state, StateDir::lock_for_flush) {
        Ok(l) => l,
        Err(code) => return Ok(code),
    };
    let mut backend = select::for_inspect(args.backend)?;
    backend.flush()?;
    let mut out = output::stdout();
    writeln!(out, "backend {}: flushed", backend.name())?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
