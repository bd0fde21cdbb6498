//! Where every drop sample goes once read, whichever datapath it came from: stamped into a
//! [`DropRecord`], counted towards the top dropped sources and ports, kept among the recent
//! ones, queued for each reader of the live stream (`socket`) and offered to the flow log.
//!
//! Nothing here waits for a consumer. Each reader has a queue of its own, of
//! [`LIVE_CAPACITY`] records: when it is full, the new record is not queued for that reader,
//! and the loss is counted at once (`nodewall_drop_stream_lost_samples_total`, and the
//! reader is told how many when it catches up, see `socket`). The flow log gets a bounded
//! queue of its own (see `flowlog`). So a stalled reader or a slow disk costs samples, never
//! the agent's time or the datapath's.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

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

/// One live reader's end: its queue and what it lost since it last looked.
struct Subscriber {
    tx: mpsc::Sender<Arc<DropRecord>>,
    lost: Arc<AtomicU64>,
}

/// A reader's side of its queue.
pub struct Subscription {
    pub rx: mpsc::Receiver<Arc<DropRecord>>,
    lost: Arc<AtomicU64>,
}

impl Subscription {
    /// Records lost since the last call (the queue was full).
    pub fn take_lost(&self) -> u64 {
        self.lost.swap(0, Ordering::Relaxed)
    }
}

/// Recent records, and the readers; under one lock, so that a new reader gets each record
/// either among the recent ones or live, never both nor neither.
#[derive(Default)]
struct Shared {
    recent: VecDeque<Arc<DropRecord>>,
    readers: Vec<Subscriber>,
}

pub struct Hub {
    stamp: Stamp,
    shared: Mutex<Shared>,
    in_force: Mutex<InForce>,
    flow_log: FlowLog,
    metrics: Arc<Metrics>,
}

impl Hub {
    pub fn new(backend: &str, metrics: Arc<Metrics>) -> Self {
        Self {
            stamp: Stamp::for_this_node(backend),
            shared: Mutex::new(Shared::default()),
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
        let mut shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        if shared.recent.len() == RECENT {
            shared.recent.pop_front();
        }
        shared.recent.push_back(record.clone());
        shared
            .readers
            .retain(|r| match r.tx.try_send(record.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    r.lost.fetch_add(1, Ordering::Relaxed);
                    self.metrics.samples.reader_lost(1);
                    true
                }
                // The reader left.
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
        record
    }

    /// The recent samples, oldest first, and every later one as it comes.
    pub fn subscribe(&self) -> (Vec<Arc<DropRecord>>, Subscription) {
        let mut shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        let (tx, rx) = mpsc::channel(LIVE_CAPACITY);
        let lost = Arc::new(AtomicU64::new(0));
        shared.readers.push(Subscriber {
            tx,
            lost: lost.clone(),
        });
        (
            shared.recent.iter().cloned().collect(),
            Subscription { rx, lost },
        )
    }

    /// Stops the flow log, writing out what it holds.
    pub fn shutdown(&self) {
        self.flow_log.configure(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drops::record::tests::event;

    #[test]
    fn a_reader_that_does_not_read_loses_samples_never_time() {
        let metrics = Arc::new(Metrics::new("nft"));
        let hub = Hub::new("nft", metrics.clone());
        let (_, stalled) = hub.subscribe();
        let (_, gone) = hub.subscribe();
        drop(gone);
        let n = LIVE_CAPACITY + 500;
        for _ in 0..n {
            hub.publish(&event("tcp", false));
        }
        assert_eq!(stalled.take_lost(), 500);
        assert_eq!(stalled.take_lost(), 0, "told once");
        assert!(metrics
            .encode()
            .contains("nodewall_drop_stream_lost_samples_total 500\n"));
        let shared = hub.shared.lock().unwrap();
        assert_eq!(shared.readers.len(), 1, "the reader that left is forgotten");
        assert_eq!(shared.recent.len(), RECENT);
        drop(shared);
        // A new reader gets the recent samples, then the live ones.
        let (recent, mut live) = hub.subscribe();
        assert_eq!(recent.len(), RECENT);
        hub.publish(&event("udp", true));
        let next = live.rx.try_recv().unwrap();
        assert_eq!(
            (next.protocol.as_str(), next.action),
            ("udp", crate::drops::Action::WouldDrop)
        );
    }
}
