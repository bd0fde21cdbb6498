//! Where every drop sample goes once read, whichever datapath it came from: stamped into a
//! [`DropRecord`], counted towards the top dropped sources and ports, kept among the recent
//! ones, broadcast to the readers of the live stream (`socket`) and offered to the flow log.
//!
//! Nothing here waits for a consumer. The broadcast keeps the last [`LIVE_CAPACITY`] records
//! for each reader to catch up with: a reader further behind loses the oldest and is told how
//! many (see `socket`). The flow log gets a bounded queue of its own (see `flowlog`). So a
//! stalled reader or a slow disk costs samples, never the agent's time or the datapath's.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use tokio::sync::broadcast;

use super::flowlog::FlowLog;
use crate::backend::{interfaces, DropEvent};
use crate::config;
use crate::drops::{DropRecord, Stamp};
use crate::metrics::Metrics;
use crate::policy::{Mode, Policy};

/// Samples a live reader may fall behind by before it loses the oldest.
pub const LIVE_CAPACITY: usize = 1024;
/// Recent samples sent to a reader as it connects (what `nodewall drops` without `--follow`
/// prints).
pub const RECENT: usize = 256;

/// What a reader is told about the policy in force when it connects.
#[derive(Clone, Debug)]
pub struct InForce {
    pub mode: Mode,
    pub samples_per_second: u32,
}

pub struct Hub {
    stamp: Stamp,
    live: broadcast::Sender<Arc<DropRecord>>,
    recent: Mutex<VecDeque<Arc<DropRecord>>>,
    in_force: Mutex<InForce>,
    flow_log: FlowLog,
    metrics: Arc<Metrics>,
}

impl Hub {
    pub fn new(backend: &str, metrics: Arc<Metrics>) -> Self {
        Self {
            stamp: Stamp::for_this_node(backend),
            live: broadcast::channel(LIVE_CAPACITY).0,
            recent: Mutex::new(VecDeque::with_capacity(RECENT)),
            in_force: Mutex::new(InForce {
                mode: Mode::Enforce,
                samples_per_second: config::DEFAULT_SAMPLES_PER_SECOND,
            }),
            flow_log: FlowLog::new(metrics.clone()),
            metrics,
        }
    }

    pub fn stamp(&self) -> &Stamp {
        &self.stamp
    }

    /// A policy was applied: what readers are told from now on, and the flow log it asks for.
    pub fn applied(&self, policy: &Policy, flow_log: Option<&config::FlowLog>) {
        *self.in_force.lock().unwrap_or_else(PoisonError::into_inner) = InForce {
            mode: policy.mode,
            samples_per_second: policy.samples_per_second,
        };
        self.flow_log.configure(flow_log);
    }

    pub fn in_force(&self) -> InForce {
        self.in_force
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Hands a sample read just now to every consumer.
    pub fn publish(&self, event: &DropEvent) -> Arc<DropRecord> {
        let interface = event.ifindex.and_then(interfaces::index_name);
        let record = Arc::new(DropRecord::new(
            event,
            SystemTime::now(),
            &self.stamp,
            interface,
        ));
        self.metrics.samples.sampled(&record);
        self.flow_log.offer(&record);
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(record.clone());
        // Under the lock, so that `subscribe` sees each record either among the recent ones
        // or live, never both nor neither. No receivers is fine.
        let _ = self.live.send(record.clone());
        record
    }

    /// The recent samples, oldest first, and every later one as it comes.
    pub fn subscribe(&self) -> (Vec<Arc<DropRecord>>, broadcast::Receiver<Arc<DropRecord>>) {
        let recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        (recent.iter().cloned().collect(), self.live.subscribe())
    }

    /// Stops the flow log, writing out what it holds.
    pub fn shutdown(&self) {
        self.flow_log.configure(None);
    }
}
