use std::io::Write;
use std::process::ExitCode;

use clap::ValueEnum;

use super::{discovered, output, ConfigArg};

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
    #[arg(long, value_delimiter = ',', value_name = "NAMES", value_parser = interface)]
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
    let text = match args.backend {
        RenderBackend::Nft => nodewall::backend::nft::render(&policy, &interfaces),
    };
    let mut out = output::stdout();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// An interface name or `PREFIX*` pattern, as the config's `interfaces` takes them.
fn interface(s: &str) -> Result<String, String> {
    nodewall::policy::interface_name(s).map(|()| s.to_string())
}
