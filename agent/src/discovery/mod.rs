//! Networks discovered from the Kubernetes API, and this node's status object there.
//!
//! Data flow: the config's API entries (`{nodes: ...}`, `{pod-cidrs: ...}`, `{api-server: {}}`)
//! name what to [`watch`] (kube-rs watchers into reflector stores: Nodes, the
//! `default/kubernetes` EndpointSlices); the [`task`] resolves every entry to addresses
//! ([`extract`]) when the stores change (debounced) and hands the daemon a [`Change`]: the new
//! [`Discovered`] sets with what changed and why. The daemon resolves the config against them
//! ([`sets::resolve`]), compiles and applies through the backend's ordinary, diffing apply (only
//! the changed set elements or table entries are written, counters stay), persists the sets in
//! its state directory, and reports the outcome to the [`status`] writer.
//!
//! The sets never shrink because the API is unreachable: the stores change only on what the API
//! says, and the daemon keeps the last sets it applied (also across restarts, from the state
//! directory) until the API answers again.

pub mod client;
pub mod extract;
pub mod fetch;
pub mod sets;
pub mod status;
mod task;
pub mod watch;

use std::sync::Arc;

use tokio::sync::{mpsc, watch as channel};
use tracing::Instrument;

use crate::config::{ApiSource, Kubernetes};
use crate::metrics::Metrics;
pub use sets::{resolve, Discovered, Resolved};
pub use status::NodeStatus;
pub use task::{ENDPOINTSLICES, NODES};

/// New sets, and a one-line account of them for the apply log.
#[derive(Debug, Clone)]
pub struct Change {
    pub sets: Arc<Discovered>,
    /// Per entry, the addresses added and removed.
    pub what: String,
    /// Nodes that joined or left, or the first sync.
    pub why: String,
}

/// A running discovery: its watches and, if asked for, the status writer.
pub struct Discovery {
    settings: Option<Kubernetes>,
    sources: channel::Sender<Vec<ApiSource>>,
    changes: mpsc::UnboundedReceiver<Change>,
    status: Option<channel::Sender<Option<NodeStatus>>>,
}

impl Discovery {
    /// Connects (see [`client::connect`]) and starts the task, which begins with `persisted`
    /// (what the agent applied last) and watches nothing until [`Self::set_sources`].
    pub async fn start(
        settings: Option<&Kubernetes>,
        write_status: bool,
        persisted: Discovered,
        metrics: Arc<Metrics>,
    ) -> Result<Self, String> {
        let client = client::connect(settings).await?;
        let node = client::node_name(settings);
        let (sources, sources_rx) = channel::channel(Vec::new());
        let (out, changes) = mpsc::unbounded_channel();
        let task = task::Task {
            client: client.clone(),
            metrics: metrics.clone(),
            sources: sources_rx,
            out,
            published: Arc::new(persisted),
        };
        tokio::spawn(task.run().in_current_span());
        let status = write_status.then(|| {
            let (tx, rx) = channel::channel(None);
            tracing::info!(node, "writing this node's {} object", status::KIND);
            tokio::spawn(status::run(client, node, rx, metrics).in_current_span());
            tx
        });
        Ok(Self {
            settings: settings.cloned(),
            sources,
            changes,
            status,
        })
    }

    /// The `kubernetes` section it was started with.
    pub fn settings(&self) -> Option<&Kubernetes> {
        self.settings.as_ref()
    }

    /// The API entries to resolve from now on (watches start and stop to match).
    pub fn set_sources(&self, sources: Vec<ApiSource>) {
        self.sources.send_if_modified(|s| {
            let changed = *s != sources;
            *s = sources;
            changed
        });
    }

    /// The next change of the sets, the latest one when several are waiting. Cancel-safe.
    pub async fn next_change(&mut self) -> Option<Change> {
        let mut change = self.changes.recv().await?;
        while let Ok(later) = self.changes.try_recv() {
            change = Change {
                what: format!("{}; {}", change.what, later.what),
                why: format!("{}; {}", change.why, later.why),
                sets: later.sets,
            };
        }
        Some(change)
    }

    /// What the node's status object should say now (a no-op without a status writer).
    pub fn report(&self, status: NodeStatus) {
        if let Some(tx) = &self.status {
            tx.send_replace(Some(status));
        }
    }
}
