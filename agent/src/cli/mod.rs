//! Subcommands. Exit codes: 0 success, 1 runtime failure (kernel, I/O), 2 invalid input
//! (config errors, bad arguments; clap also uses 2 for usage errors); `explain --expect`
//! exits 1 when the decision differs. Output into a closed pipe ends quietly with 0.

mod apply;
mod check;
mod confirm;
mod discovered;
mod docs;
mod drops;
mod explain;
mod lock;
mod output;
mod profiles;
mod render;
mod run;
mod select;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

pub use output::is_broken_pipe;

pub const EXIT_INVALID: u8 = 2;

/// The exit codes, shown under `--help` and in the man page.
pub const EXIT_CODES: &str = "Exit codes:
  0  success
  1  runtime failure (kernel, I/O, lock held by another nodewall); explain --expect: the
     decision differs
  2  invalid input: config errors (FILE:LINE:COL: FIELD: REASON), bad arguments";

#[derive(Parser, Debug)]
#[command(
    name = "nodewall",
    version,
    about = "Node-local firewall enforcing cloud security-group baselines (nftables or XDP)",
    after_help = EXIT_CODES
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// More logging (-v nodewall's debug lines, -vv its trace, -vvv every library's too).
    /// RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `-c FILE`, shared by every command that reads a config.
#[derive(clap::Args, Debug, Clone)]
pub struct ConfigArg {
    /// Path of the YAML config file.
    #[arg(
        short,
        long = "config",
        value_name = "FILE",
        default_value = "/etc/nodewall/config.yaml"
    )]
    pub config: PathBuf,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List the built-in profiles, or show one with the provenance of each rule.
    Profiles(profiles::Args),
    /// Validate a config file: exit 0 if valid, 2 with every error (FILE:LINE:COL: FIELD: REASON).
    Check(check::Args),
    /// Print the JSON Schema of the config file (for editor validation).
    Schema,
    /// Print what a backend would install for a config (nft: an `nft -f` script).
    Render(render::Args),
    /// Evaluate the policy for one packet (or a JSON-lines batch) and say why.
    Explain(explain::Args),
    /// Install the policy into the kernel of the current network namespace, atomically.
    Apply(apply::Args),
    /// Keep the policy installed by `apply --confirm` (otherwise it rolls back).
    Confirm(confirm::Args),
    /// Run the agent: apply, then follow config changes, repair drift, serve metrics.
    Run(run::Args),
    /// Show what nodewall has installed, with counters.
    Status(status::Args),
    /// Stream the running agent's drop samples (tcpdump-style lines, or JSON lines).
    Drops(drops::Args),
    /// Remove everything nodewall installed (and nothing else); refused while `nodewall run`
    /// holds the node lock.
    Flush(status::FlushArgs),
    /// Print a shell completion script (e.g. `nodewall completions bash >
    /// /etc/bash_completion.d/nodewall`).
    Completions(docs::CompletionsArgs),
    /// Print the man page (roff): `nodewall man | man -l -`; `nodewall man apply` for one
    /// command.
    Man(docs::ManArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Profiles(a) => profiles::run(a),
        Command::Check(a) => check::run(a),
        Command::Schema => {
            output::print_json(&nodewall::config::json_schema())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Render(a) => render::run(a),
        Command::Explain(a) => explain::run(a),
        Command::Apply(a) => apply::run(a),
        Command::Confirm(a) => confirm::run(a),
        Command::Run(a) => run::run(a),
        Command::Status(a) => status::run(a),
        Command::Drops(a) => drops::run(a),
        Command::Flush(a) => status::flush(a),
        Command::Completions(a) => docs::completions(&a),
        Command::Man(a) => docs::man(&a),
    }
}

pub fn init_logging(format: LogFormat, verbose: u8) {
    use tracing_subscriber::EnvFilter;
    // -v and -vv are about nodewall: the libraries' own debug lines (every netlink message of
    // `mnl::socket`) drown it out, and come only with -vvv or RUST_LOG.
    let default = match verbose {
        0 => "info",
        1 => "info,nodewall=debug",
        2 => "info,nodewall=trace",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // Colour only for a person at a terminal: journald, kubectl logs and files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
