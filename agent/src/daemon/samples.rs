//! Drop samples a backend hands over itself ([`Backend::drop_samples`], the XDP ring buffer),
//! read on the event loop and logged like the NFLOG ones.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::hub::Hub;
use super::nflog::SampleLog;
use super::worker::Worker;
use crate::backend::{Backend, DropSamples};
use crate::metrics::Metrics;

struct Source(Box<dyn DropSamples>);

impl AsRawFd for Source {
    fn as_raw_fd(&self) -> RawFd {
        self.0.fd().as_raw_fd()
    }
}

/// How often the sampler checks that its source is still the datapath's, and retries opening
/// one it could not open: a rebuilt datapath (its pins removed and restored) writes to a new
/// ring buffer, and the old one would never become readable again.
const RECHECK: Duration = Duration::from_secs(2);

/// Asks the backend for its samples and, if it has any, logs them from now on, following the
/// datapath when it is rebuilt. Failing to open them only pauses sampling until the next
/// check: it is an aid, never a reason to stop enforcing.
pub async fn spawn_sampler(worker: &Worker, metrics: Arc<Metrics>, hub: Arc<Hub>) {
    let worker = worker.clone();
    let Some(first) = open(&worker, true).await else {
        return;
    };
    super::spawn(async move {
        let mut log = SampleLog::new(metrics, hub);
        let mut source = first;
        let mut recheck = tokio::time::interval(RECHECK);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let stale = match &mut source {
                Some(fd) => tokio::select! {
                    ready = fd.readable_mut() => {
                        let mut guard = match ready {
                            Ok(g) => g,
                            Err(e) => {
                                tracing::warn!(error = %e, "drop sampling stopped");
                                return;
                            }
                        };
                        let events = guard.get_inner_mut().0.drain();
                        if events.is_empty() {
                            // Clears only if nothing arrived since the wakeup (tokio tracks
                            // that), so no sample committed in between is left waiting.
                            guard.clear_ready();
                        } else {
                            log.record(events);
                        }
                        false
                    }
                    _ = recheck.tick() => fd.get_ref().0.replaced(),
                },
                None => {
                    recheck.tick().await;
                    true
                }
            };
            if stale {
                if source.is_some() {
                    tracing::info!(
                        "drop samples: the datapath was rebuilt; reading its new ring buffer"
                    );
                }
                source = open(&worker, false).await.flatten();
            }
        }
    });
}

/// The backend's samples, registered with the event loop: `None` when the backend has none of
/// its own (nothing to follow), `Some(None)` when opening failed (logged once, on the first
/// attempt).
async fn open(worker: &Worker, first: bool) -> Option<Option<AsyncFd<Source>>> {
    let opened = worker
        .call(|b: &mut dyn Backend| b.drop_samples())
        .await
        .and_then(|r| r);
    let samples = match opened {
        Ok(Some(s)) => s,
        Ok(None) => return None,
        Err(e) => {
            if first {
                tracing::warn!(error = %format!("{e:#}"), "drop sampling paused: cannot open the samples; retrying");
            }
            return Some(None);
        }
    };
    // SAFETY: the descriptor is owned by `samples`, which moves into the AsyncFd and stays
    // open until the AsyncFd (and the registration with it) is dropped.
    match unsafe { AsyncFd::register_with_interest(Source(samples), Interest::READABLE) } {
        Ok(fd) => Some(Some(fd)),
        Err(e) => {
            tracing::warn!(error = %e, "drop sampling paused: cannot poll the samples");
            Some(None)
        }
    }
}
