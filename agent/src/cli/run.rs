//! `nodewall run`: the daemon (see `nodewall::daemon`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use nodewall::apply::{source, state};
use nodewall::daemon::{self, Options};
use tracing::Instrument;

use super::select::{self, BackendArg};
use super::ConfigArg;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
    /// Where to serve /metrics, /healthz and /readyz.
    #[arg(long, value_name = "ADDR", default_value = daemon::DEFAULT_METRICS_ADDR)]
    metrics_addr: SocketAddr,
    /// Remove the policy on SIGTERM/SIGINT. By default it stays: a restarting pod must not
    /// leave the node open.
    #[arg(long)]
    flush_on_exit: bool,
    /// Lock and state files; one per node (per network namespace).
    #[arg(long, value_name = "DIR", default_value = state::DEFAULT_DIR)]
    state_dir: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("nodewall")
        .enable_all()
        .build()?;
    let state_dir = args.state_dir.clone();
    let opts = Options {
        config: args.config.config,
        metrics_addr: args.metrics_addr,
        flush_on_exit: args.flush_on_exit,
        state_dir: args.state_dir,
        check_interval: Duration::from_secs(1),
    };
    let open: daemon::OpenBackend =
        Box::new(move |kind| select::for_apply(BackendArg::Auto, kind, Some(&state_dir)));
    let result =
        runtime.block_on(daemon::run(opts, source::config_parser(), open).instrument(node_span()));
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            tracing::error!("{e}");
            Ok(ExitCode::from(e.exit_code()))
        }
    }
}

/// NODE_NAME and HOST_IP (the Downward API in a DaemonSet) on every log line, when set.
fn node_span() -> tracing::Span {
    let node = std::env::var("NODE_NAME").ok();
    let host_ip = std::env::var("HOST_IP").ok();
    if node.is_none() && host_ip.is_none() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        "nodewall",
        node = node.as_deref().unwrap_or(""),
        host_ip = host_ip.as_deref().unwrap_or("")
    )
}
