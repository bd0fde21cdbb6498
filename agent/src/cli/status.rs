//! `nodewall status` and `nodewall flush`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use nodewall::apply::state::{self, StateDir};
use nodewall::backend::Status;
use nodewall::drops::wire::{self, Get, Message, Request, RuleUsage};
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
    /// The running agent's state directory, asked which rules have not matched since they
    /// were applied (`nodewall run --state-dir`).
    #[arg(long, value_name = "DIR", default_value = state::DEFAULT_DIR)]
    state_dir: PathBuf,
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
    let usage = status
        .installed
        .then(|| rule_usage(&args.state_dir))
        .flatten();
    if args.json {
        let mut value = serde_json::to_value(&status)?;
        value["unmatched_rules"] = match &usage {
            Some(rules) => {
                serde_json::to_value(rules.iter().filter(|r| !r.matched).collect::<Vec<_>>())?
            }
            None => serde_json::Value::Null,
        };
        output::print_json(&value)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = output::stdout();
    print_text(&mut out, &status)?;
    if status.installed {
        print_unmatched(&mut out, usage.as_deref())?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// The running agent's record of which rules matched since they were applied; `None` when
/// no agent answers (a policy installed by `nodewall apply` has nobody watching it).
fn rule_usage(state_dir: &std::path::Path) -> Option<Vec<RuleUsage>> {
    use std::io::{BufRead, BufReader};
    let stream = std::os::unix::net::UnixStream::connect(wire::socket_path(state_dir)).ok()?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(2)))
        .ok()?;
    let mut request = serde_json::to_string(&Request { get: Get::Rules }).ok()?;
    request.push('\n');
    (&stream).write_all(request.as_bytes()).ok()?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line).ok()?;
    match serde_json::from_str(&line).ok()? {
        Message::RuleUsage { rules } => Some(rules),
        _ => None,
    }
}

fn print_unmatched(out: &mut impl Write, usage: Option<&[RuleUsage]>) -> std::io::Result<()> {
    writeln!(out)?;
    let Some(usage) = usage else {
        return writeln!(
            out,
            "rules never matched: unknown (no `nodewall run` answers on its socket; see --state-dir)"
        );
    };
    let unmatched: Vec<&RuleUsage> = usage.iter().filter(|r| !r.matched).collect();
    if unmatched.is_empty() {
        return writeln!(
            out,
            "rules never matched: none (every rule matched since it was applied)"
        );
    }
    writeln!(out, "RULES NEVER MATCHED SINCE APPLIED")?;
    writeln!(out, "{:<40} {:<6} {:<22}", "RULE", "ACTION", "APPLIED")?;
    for r in unmatched {
        writeln!(out, "{:<40} {:<6} {:<22}", r.rule, r.action, r.since)?;
    }
    Ok(())
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
