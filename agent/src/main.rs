//! The `nodewall` command line.

use std::process::ExitCode;

use clap::Parser;

mod cli;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::init_logging(args.log_format, args.verbose);
    match cli::run(args) {
        Ok(code) => code,
        // The reader of our output went away (`| head`): it has what it wanted.
        Err(err) if cli::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("nodewall: error: {err:#}");
            ExitCode::from(1)
        }
    }
}
