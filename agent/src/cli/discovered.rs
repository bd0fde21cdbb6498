//! Where `explain` and `render` take the networks a config reads from the Kubernetes API:
//! listed once from a cluster (`--kubeconfig`), or the sets an agent persisted (`--state-dir`).

use std::path::PathBuf;
use std::process::ExitCode;

use nodewall::apply::state::{self, StateDir};
use nodewall::config::{Config, Kubernetes};
use nodewall::discovery::{self, sets::located, Discovered};
use nodewall::policy::Policy;

use super::{output, ConfigArg, EXIT_INVALID};

#[derive(clap::Args, Debug)]
pub struct DiscoveredArgs {
    /// Read the config's Kubernetes API entries (nodes, pod-cidrs, api-server) once from the
    /// cluster of this kubeconfig.
    #[arg(long, value_name = "FILE", conflicts_with = "state_dir")]
    kubeconfig: Option<PathBuf>,
    /// Read them from what an agent persisted in DIR (its --state-dir).
    #[arg(long, value_name = "DIR", default_value = state::DEFAULT_DIR)]
    state_dir: PathBuf,
}

/// The config, and its policy with every API entry resolved; on failure prints why and returns
/// the exit code (2: an entry has no addresses to go by).
pub fn load_policy(arg: &ConfigArg, args: &DiscoveredArgs) -> Result<(Config, Policy), ExitCode> {
    let config = output::load_config(arg)?;
    if config.discovered.is_empty() {
        let policy = output::compile(arg, &config)?;
        return Ok((config, policy));
    }
    let file = arg.config.display().to_string();
    let sets = sets(&config, args).map_err(|e| {
        eprintln!("nodewall: {e}");
        ExitCode::from(EXIT_INVALID)
    })?;
    let resolved = discovery::resolve(&config, &sets);
    if !resolved.missing.is_empty() {
        for item in &resolved.missing {
            eprintln!(
                "{}",
                located(
                    &file,
                    item,
                    "read from the Kubernetes API, and not found in the discovered sets"
                )
            );
        }
        eprintln!("nodewall: give --kubeconfig FILE to read them from the cluster, or --state-dir DIR where an agent keeps them");
        return Err(ExitCode::from(EXIT_INVALID));
    }
    for (network, item) in &resolved.empty {
        let message = format!("found no address; network `{network}` holds only its other entries");
        eprintln!("nodewall: warning: {}", located(&file, item, &message));
    }
    if let Some(at) = sets.synced_at {
        eprintln!(
            "nodewall: networks from the Kubernetes API as read at {}",
            discovery::status::rfc3339(at)
        );
    }
    let policy = output::compile(arg, &resolved.config)?;
    Ok((config, policy))
}

fn sets(config: &Config, args: &DiscoveredArgs) -> Result<Discovered, String> {
    let Some(kubeconfig) = &args.kubeconfig else {
        let dir = StateDir::new(&args.state_dir);
        return Ok(dir
            .discovered()
            .map_err(|e| format!("{e:#}"))?
            .unwrap_or_default());
    };
    let settings = Kubernetes {
        kubeconfig: Some(kubeconfig.display().to_string()),
        ..config.kubernetes.clone().unwrap_or_default()
    };
    let sources: Vec<_> = config
        .discovered
        .values()
        .flatten()
        .map(|i| i.source.clone())
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(discovery::fetch::once(Some(&settings), &sources))
}
