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
    let loaded = if args.json {
        nodewall::config::load(&args.config.config)
            .map_err(|errs| output::print_json(&errs).map(|()| ExitCode::from(super::EXIT_INVALID)))
    } else {
        output::load_config(&args.config).map_err(Ok)
    };
    let config = match loaded {
        Ok(c) => c,
        Err(code) => return code,
    };
    // Entries read from the Kubernetes API resolve when the agent runs; here they add nothing.
    let discovered: Vec<&String> = config.discovered.keys().collect();
    let offline = nodewall::discovery::resolve(&config, &Default::default()).config;
    match nodewall::policy::compile(&offline) {
        Ok(policy) if args.json => {
            output::print_json(&serde_json::json!({
                "valid": true,
                "rules": policy.rules.len(),
                "discovered_networks": discovered,
            }))?;
            Ok(ExitCode::SUCCESS)
        }
        Ok(policy) => {
            let api = if discovered.is_empty() {
                String::new()
            } else {
                let names: Vec<&str> = discovered.iter().map(|s| s.as_str()).collect();
                format!(
                    "; read from the Kubernetes API when the agent runs: networks {}",
                    names.join(", ")
                )
            };
            println!(
                "{}: valid ({} rules{api})",
                args.config.config.display(),
                policy.rules.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if args.json => {
            output::print_json(&serde_json::json!({ "valid": false, "error": e.to_string() }))?;
            Ok(ExitCode::from(super::EXIT_INVALID))
        }
        Err(e) => {
            eprintln!("{}: {e}", args.config.config.display());
            Ok(ExitCode::from(super::EXIT_INVALID))
        }
    }
}
