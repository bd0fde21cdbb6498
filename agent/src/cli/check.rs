use std::io::Write;
use std::process::ExitCode;

use super::{output, ConfigArg};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
    /// Print the errors (or the compiled policy) as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.json {
        return match nodewall::config::load(&args.config.config) {
            Err(errs) => {
                output::print_json(&errs)?;
                Ok(ExitCode::from(super::EXIT_INVALID))
            }
            Ok(config) => match nodewall::policy::compile(&config) {
                Ok(policy) => {
                    output::print_json(
                        &serde_json::json!({ "valid": true, "rules": policy.rules.len() }),
                    )?;
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    output::print_json(
                        &serde_json::json!({ "valid": false, "error": e.to_string() }),
                    )?;
                    Ok(ExitCode::from(super::EXIT_INVALID))
                }
            },
        };
    }
    match output::load_policy(&args.config) {
        Ok((_, policy)) => {
            let mut out = output::stdout();
            writeln!(
                out,
                "{}: valid ({} rules)",
                args.config.config.display(),
                policy.rules.len()
            )?;
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        Err(code) => Ok(code),
    }
}
