//! `nodewall completions SHELL` and `nodewall man [COMMAND]`, generated from the command line
//! definition itself so that they never fall behind it.

use std::io::Write;
use std::process::ExitCode;

use clap::CommandFactory;

use super::{output, Cli, EXIT_CODES, EXIT_INVALID};

#[derive(clap::Args, Debug)]
pub struct CompletionsArgs {
    shell: clap_complete::Shell,
}

#[derive(clap::Args, Debug)]
pub struct ManArgs {
    /// The command whose page to print; without it, nodewall's own.
    command: Option<String>,
}

pub fn completions(args: &CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut text = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "nodewall", &mut text);
    let mut out = output::stdout();
    out.write_all(&text)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

pub fn man(args: &ManArgs) -> anyhow::Result<ExitCode> {
    let mut cmd = Cli::command();
    cmd.build();
    let page = match &args.command {
        None => cmd,
        Some(name) => match cmd.find_subcommand(name) {
            Some(sub) => sub.clone(),
            None => {
                let names: Vec<_> = cmd.get_subcommands().map(clap::Command::get_name).collect();
                eprintln!(
                    "nodewall: man: unknown command {name:?}; commands: {}",
                    names.join(", ")
                );
                return Ok(ExitCode::from(EXIT_INVALID));
            }
        },
    };
    let mut text = Vec::new();
    clap_mangen::Man::new(page).render(&mut text)?;
    text.extend_from_slice(b".SH \"EXIT STATUS\"\n");
    for line in EXIT_CODES.lines().skip(1) {
        text.extend_from_slice(format!("{}\n.br\n", line.trim()).as_bytes());
    }
    let mut out = output::stdout();
    out.write_all(&text)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
