//! `nodewall confirm`: keep the policy installed by `apply --confirm`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use nodewall::apply::confirm::{self, Confirmed};
use nodewall::apply::state::{self, StateDir};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long, value_name = "DIR", default_value = state::DEFAULT_DIR)]
    state_dir: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match confirm::confirm(&StateDir::new(&args.state_dir))? {
        Confirmed::Kept(s) => {
            let mut out = super::output::stdout();
            writeln!(out, "confirmed: {} stays installed", s.config_path)?;
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        Confirmed::NothingPending(last) => {
            match last {
                Some(p) => eprintln!(
                    "nodewall: nothing to confirm; the last unconfirmed apply ({}) was rolled back {} s ago",
                    p.new.config_path,
                    confirm::now_unix().saturating_sub(p.deadline_unix)
                ),
                None => match StateDir::new(&args.state_dir).applied() {
                    Ok(Some(s)) => eprintln!(
                        "nodewall: nothing to confirm; the policy of {} is installed and confirmed",
                        s.config_path
                    ),
                    _ => eprintln!("nodewall: nothing to confirm"),
                },
            }
            Ok(ExitCode::from(1))
        }
    }
}
