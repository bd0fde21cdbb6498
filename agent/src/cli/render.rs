use std::process::ExitCode;

use clap::ValueEnum;

use super::{discovered, ConfigArg};

#[derive(Copy, Clone, Debug, ValueEnum)]
pub enum RenderBackend {
    /// The nft script (`nft -f`) that the nft backend installs.
    Nft,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
    #[command(flatten)]
    discovered: discovered::DiscoveredArgs,
    #[arg(long, value_enum, default_value_t = RenderBackend::Nft)]
    backend: RenderBackend,
    /// Interfaces to render for, overriding the config (default: the config's, or `eth0` when
    /// the config leaves them to be discovered at apply time).
    #[arg(long, value_delimiter = ',')]
    interfaces: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (_, policy) = match discovered::load_policy(&args.config, &args.discovered) {
        Ok(v) => v,
        Err(code) => return Ok(code),
    };
    let interfaces = if !args.interfaces.is_empty() {
        args.interfaces
    } else if !policy.interfaces.is_empty() {
        policy.interfaces.clone()
    } else {
        vec!["eth0".to_string()]
    };
    match args.backend {
        RenderBackend::Nft => print!("{}", nodewall::backend::nft::render(&policy, &interfaces)),
    }
    Ok(ExitCode::SUCCESS)
}
