//! Drop samples a backend hands over itself ([`Backend::drop_samples`], the XDP ring buffer),
//! read on the event loop and logged like the NFLOG ones.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

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

/// Asks the backend for its samples and, if it has any, logs them from now on. Failing to
/// open them only disables sampling: it is an aid, never a reason to stop enforcing.
pub async fn spawn_sampler(worker: &Worker, metrics: Arc<Metrics>) {
    let opened = worker
        .call(|b: &mut dyn Backend| b.drop_samples())
        .await
        .and_then(|r| r);
    let samples = match opened {
        Ok(Some(s)) => s,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "drop sampling disabled");
            return;
        }
    };
    // SAFETY: the descriptor is owned by `samples`, which moves into the AsyncFd and stays
    // open until the AsyncFd (and the registration with it) is dropped.
    let fd = match unsafe { AsyncFd::register_with_interest(Source(samples), Interest::READABLE) } {
        Ok(fd) => fd,
        Err(e) => {
            tracing::warn!(error = %e, "drop sampling disabled: cannot poll the samples");
            return;
        }
    };
    super::spawn(async move {
        let mut fd = fd;
        let mut log = SampleLog::new(metrics);
        loop {
            let mut guard = match fd.readable_mut().await {
                Ok(g) => g,
                Err(e) => {
                    tracing::warn!(error = %e, "drop sampling stopped");
                    return;
                }
            };
            let events = guard.get_inner_mut().0.drain();
            if events.is_empty() {
                // Clears only if nothing arrived since the wakeup (tokio tracks that), so no
                // sample committed in between is left waiting.
                guard.clear_ready();
                continue;
            }
            log.record(events);
        }
    });
}
