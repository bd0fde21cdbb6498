//! `nodewall run`: the agent that keeps a node's firewall equal to its config file.
//!
//! Layout: [`watch`] (inotify), [`worker`] (the backend on its own thread), `control` (the
//! loop that applies, reloads and repairs drift), `http` (metrics and probes), `hub` (where
//! drop samples go: the live stream served on `socket`, the `flowlog`). The lock, the
//! state directory and the config source are [`crate::apply`]'s, shared with `nodewall apply`.

mod control;
mod diff;
mod flowlog;
mod health;
mod http;
mod hub;
pub mod nflog;
mod samples;
mod socket;
pub mod watch;
pub mod worker;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::apply::lock::{LockError, StateLock};
use crate::apply::source::{self, Parser};
use crate::apply::state::StateDir;
use crate::backend::Backend;
use crate::config::BackendKind;
use crate::metrics::Metrics;
pub use control::Event;
use control::{Context, Control};
use health::Health;
use watch::ConfigWatcher;
use worker::Worker;

pub const DEFAULT_METRICS_ADDR: &str = "0.0.0.0:9469";

pub struct Options {
    pub config: PathBuf,
    pub metrics_addr: SocketAddr,
    pub flush_on_exit: bool,
    pub state_dir: PathBuf,
    /// How often the installed policy is verified (drift repair happens within this).
    pub check_interval: Duration,
}

/// Opens the backend the config asks for; runs on the backend thread.
pub type OpenBackend =
    Box<dyn FnOnce(BackendKind) -> anyhow::Result<Box<dyn Backend>> + Send + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The config file at start: nothing was applied.
    #[error("{0}")]
    InvalidConfig(String),
    #[error("{0:#}")]
    Runtime(#[from] anyhow::Error),
}

impl DaemonError {
    /// The process exit code: 2 for invalid input, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            DaemonError::InvalidConfig(_) => 2,
            _ => 1,
        }
    }
}

/// Sends events to a running daemon (what signals do in `nodewall run`).
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::UnboundedSender<Event>,
}

impl Handle {
    pub fn send(&self, event: Event) {
        let _ = self.tx.send(event);
    }
}

/// A started daemon: lock held, config loaded, backend open, metrics listening, first apply
/// attempted.
pub struct Daemon {
    control: Control,
    watcher: ConfigWatcher,
    events: mpsc::UnboundedReceiver<Event>,
    metrics_addr: SocketAddr,
    flush_on_exit: bool,
    hub: Arc<hub::Hub>,
    /// Removes the socket file when the daemon ends (before the lock is released).
    _socket: Option<socket::Socket>,
    _lock: StateLock,
}

impl Daemon {
    pub async fn start(
        opts: Options,
        parser: Parser,
        open: OpenBackend,
    ) -> Result<(Daemon, Handle), DaemonError> {
        let state = StateDir::new(&opts.state_dir);
        let lock = state.lock_for_run()?;
        let text = source::read(&opts.config).map_err(DaemonError::InvalidConfig)?;
        let desired = parser(&text, &opts.config).map_err(DaemonError::InvalidConfig)?;
        // Watch before the first apply, so that no change after the read is missed.
        let watcher = ConfigWatcher::new(&opts.config)
            .map_err(|e| anyhow::anyhow!("watching {}: {e}", opts.config.display()))?;
        let kind = desired.backend;
        let worker = Worker::spawn(move || open(kind)).await?;
        let metrics = Arc::new(Metrics::new(worker.backend_name()));
        let health = Arc::new(Health::default());
        let listener = TcpListener::bind(opts.metrics_addr)
            .await
            .map_err(|e| anyhow::anyhow!("--metrics-addr {}: {e}", opts.metrics_addr))?;
        let metrics_addr = listener.local_addr().map_err(anyhow::Error::from)?;
        tracing::info!(
            config = %opts.config.display(),
            backend = worker.backend_name(),
            metrics = %metrics_addr,
            lock = %lock.path().display(),
            "nodewall starting"
        );
        spawn(http::serve(
            listener,
            http::Endpoints {
                worker: worker.clone(),
                metrics: metrics.clone(),
                health: health.clone(),
            },
        ));
        let hub = Arc::new(hub::Hub::new(worker.backend_name(), metrics.clone()));
        // The local socket is an aid (`nodewall drops`, `status`): failing to bind it is
        // logged, never a reason not to enforce.
        let socket = match socket::Socket::bind(&opts.state_dir) {
            Ok(mut s) => {
                tracing::info!(socket = %s.path().display(), "serving drop samples and rule usage");
                spawn(s.serve(hub.clone(), metrics.clone()));
                Some(s)
            }
            Err(e) => {
                tracing::warn!(error = %e, dir = %opts.state_dir.display(), "cannot bind the agent socket: no `nodewall drops`");
                None
            }
        };
        if worker.backend_name() == "nft" {
            nflog::spawn_sampler(metrics.clone(), hub.clone());
        }
        let (sample_worker, sample_metrics) = (worker.clone(), metrics.clone());
        let cx = Context {
            hub: hub.clone(),
            config: opts.config,
            parser,
            worker,
            metrics,
            health,
            state,
            check_interval: opts.check_interval,
        };
        let mut control = Control::new(cx, desired);
        control
            .connect()
            .await
            .map_err(DaemonError::InvalidConfig)?;
        control.start().await;
        // After the first apply: that is what creates the XDP ring buffer.
        samples::spawn_sampler(&sample_worker, sample_metrics, hub.clone()).await;
        let (tx, events) = mpsc::unbounded_channel();
        let daemon = Daemon {
            control,
            watcher,
            events,
            metrics_addr,
            flush_on_exit: opts.flush_on_exit,
            hub,
            _socket: socket,
            _lock: lock,
        };
        Ok((daemon, Handle { tx }))
    }

    /// Where `/metrics`, `/healthz` and `/readyz` are served (useful with port 0).
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// Runs until [`Event::Shutdown`]; then flushes if asked to and releases the lock.
    pub async fn run(mut self) {
        self.control.run(self.watcher, self.events).await;
        self.control.shutdown(self.flush_on_exit).await;
        self.hub.shutdown();
    }
}

/// `nodewall run`: start, then forward SIGHUP (reload) and SIGTERM/SIGINT (stop).
pub async fn run(opts: Options, parser: Parser, open: OpenBackend) -> Result<(), DaemonError> {
    use tokio::signal::unix::{signal, SignalKind};
    // Register before starting so that an early SIGHUP is not lost or fatal.
    let mut hup = signal(SignalKind::hangup()).map_err(anyhow::Error::from)?;
    let mut term = signal(SignalKind::terminate()).map_err(anyhow::Error::from)?;
    let mut int = signal(SignalKind::interrupt()).map_err(anyhow::Error::from)?;
    let (daemon, handle) = Daemon::start(opts, parser, open).await?;
    spawn(async move {
        loop {
            let event = tokio::select! {
                _ = hup.recv() => Event::Reload,
                _ = term.recv() => Event::Shutdown,
                _ = int.recv() => Event::Shutdown,
            };
            tracing::info!(?event, "signal received");
            handle.send(event);
        }
    });
    daemon.run().await;
    Ok(())
}

/// `tokio::spawn` inside the caller's span, so that every log line of the daemon's tasks
/// carries the node's fields (NODE_NAME, HOST_IP).
fn spawn<F>(task: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    use tracing::Instrument;
    tokio::spawn(task.instrument(tracing::Span::current()))
}

/// Reads the kernel counters into the metrics. Runs on the backend thread, so readings are
/// ordered with applies.
fn observe_counters(backend: &dyn Backend, metrics: &Metrics) {
    match backend.counters() {
        Ok(c) => metrics.observe_counters(&c),
        Err(e) => tracing::debug!(error = %format!("{e:#}"), "reading counters"),
    }
}

#[cfg(test)]
mod tests;
