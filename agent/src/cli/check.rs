//! `nodewall check`: every error of a config, or "valid" with the warnings about rules that
//! cannot do what they seem to (see `policy::lint`).

use std::collections::BTreeSet;
use std::io::Write;
use std::process::ExitCode;

use nodewall::config::{self, Config, Source};
use nodewall::discovery::{self, Discovered};
use nodewall::policy::{self, Finding, Origin, Policy};

use super::{output, ConfigArg, EXIT_INVALID};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
    /// Print the errors (or the compiled policy) as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Treat warnings (rules shadowed by earlier ones, ...) as errors: exit 2.
    #[arg(long)]
    strict: bool,
}

/// A warning as `check` reports it: `FILE:LINE:COL: FIELD: warning: REASON`.
#[derive(serde::Serialize)]
struct Warning {
    path: String,
    line: usize,
    column: usize,
    message: String,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let path = &args.config.config;
    let file = path.display().to_string();
    let loaded = config::read(path).and_then(|text| config::parse(&text, &file).map(|c| (text, c)));
    let (text, config) = match loaded {
        Ok(v) => v,
        Err(errs) if args.json => {
            output::print_json(&errs)?;
            return Ok(ExitCode::from(EXIT_INVALID));
        }
        Err(errs) => return Ok(output::invalid_config(&errs)),
    };
    // Entries read from the Kubernetes API resolve when the agent runs; here they add nothing.
    let discovered: Vec<&str> = config.discovered.keys().map(String::as_str).collect();
    let offline = discovery::resolve(&config, &Discovered::default()).config;
    let policy = match policy::compile(&offline) {
        Ok(p) => p,
        Err(e) if args.json => {
            output::print_json(&serde_json::json!({ "valid": false, "error": e.to_string() }))?;
            return Ok(ExitCode::from(EXIT_INVALID));
        }
        Err(e) => {
            eprintln!("{file}: {e}");
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    // A rule drawing on such a network holds only its written-out sources here.
    let partial: BTreeSet<&str> = config
        .rules
        .iter()
        .filter(|r| {
            r.from
                .iter()
                .any(|s| matches!(s, Source::Network(n) if config.discovered.contains_key(n)))
        })
        .map(|r| r.name.as_str())
        .collect();
    let found = policy::lint_partial(&policy, |r| partial.contains(r.name.as_str()));
    let warnings = warnings(&text, &config, &policy, &found);
    let failed = args.strict && !warnings.is_empty();
    let code = if failed {
        ExitCode::from(EXIT_INVALID)
    } else {
        ExitCode::SUCCESS
    };
    if args.json {
        output::print_json(&serde_json::json!({
            "valid": !failed,
            "rules": policy.rules.len(),
            "egress_rules": policy.egress.rules.len(),
            "warnings": warnings,
            "discovered_networks": discovered,
        }))?;
        return Ok(code);
    }
    let severity = if args.strict { "error" } else { "warning" };
    for w in &warnings {
        eprintln!(
            "{file}:{}:{}: {}: {severity}: {}",
            w.line, w.column, w.path, w.message
        );
    }
    if failed {
        eprintln!(
            "nodewall: {} warning(s) in {file}, errors under --strict",
            warnings.len()
        );
        return Ok(code);
    }
    let api = if discovered.is_empty() {
        String::new()
    } else {
        format!(
            "; read from the Kubernetes API when the agent runs: networks {}",
            discovered.join(", ")
        )
    };
    let mut out = output::stdout();
    let rules = match policy.egress.rules.len() {
        0 => format!("{} rules", policy.rules.len()),
        n => format!("{} rules, {n} egress rules", policy.rules.len()),
    };
    match warnings.len() {
        0 => writeln!(out, "{file}: valid ({rules}{api})")?,
        n => writeln!(out, "{file}: valid ({rules}{api}), {n} warning(s)")?,
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Each finding located at its rule in the file (a profile's rules are at `profile`).
fn warnings(text: &str, config: &Config, policy: &Policy, found: &[Finding]) -> Vec<Warning> {
    let rules = config::item_positions(text, "rules");
    let failsafe = config::item_positions(text, "failsafe");
    let egress_rules = config::item_positions(text, "egress.rules");
    found
        .iter()
        .map(|f| {
            if f.egress {
                // Only user egress rules are linted.
                let name = &policy.egress.rules[f.rule].name;
                let i = config
                    .egress
                    .rules
                    .iter()
                    .position(|r| &r.name == name)
                    .unwrap_or(0);
                let (line, column) = egress_rules.get(i).copied().unwrap_or((1, 1));
                return Warning {
                    path: format!("egress.rules[{i}]"),
                    line,
                    column,
                    message: f.message.clone(),
                };
            }
            let rule = &policy.rules[f.rule];
            let index = |list: &[config::RuleConfig]| list.iter().position(|r| r.name == rule.name);
            let (path, at) = match rule.origin {
                Origin::User => {
                    let i = index(&config.rules).unwrap_or(0);
                    (format!("rules[{i}]"), rules.get(i))
                }
                Origin::Failsafe => {
                    let i = index(&config.failsafe).unwrap_or(0);
                    (format!("failsafe[{i}]"), failsafe.get(i))
                }
                Origin::Profile { .. } | Origin::Metadata => ("profile".to_string(), None),
            };
            let (line, column) = at.copied().unwrap_or((1, 1));
            Warning {
                path,
                line,
                column,
                message: f.message.clone(),
            }
        })
        .collect()
}
