//! `nodewall confirm`: keep the policy installed by `apply --confirm`.

use std::path::PathBuf;
use std::process::ExitCode;

use nodewall::daemon::confirm::{self, Confirmed};
use nodewall::daemon::state::{self, StateDir};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long, value_name = "DIR", default_value = state::DEFAULT_DIR)]
    state_dir: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match confirm::confirm(&StateDir::new(&args.state_dir))? {
        Confirmed::Kept(s) => {
            println!("confirmed: {} stays installed", s.config_path);
            Ok(ExitCode::SUCCESS)
        }
        Confirmed::NothingPending(last) => {
            match last {
                Some(p) => eprintln!(
                    "nodewall: nothing to confirm; the last unconfirmed apply ({}) was rolled back {} s ago",
                    p.new.config_path,
                    confirm::now_unix().saturating_sub(p.deadline_unix)
                ),
                None => eprintln!("nodewall: nothing to confirm"),
            }
            Ok(ExitCode::from(1))
        }
    }
}
