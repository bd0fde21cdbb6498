//! What `/healthz` and `/readyz` answer.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The control loop beats every check interval; a loop stuck this long (e.g. a backend call
/// that never returns) makes `/healthz` fail so that Kubernetes restarts the pod.
const STALL: Duration = Duration::from_secs(30);

pub struct Health {
    start: Instant,
    ready: AtomicBool,
    /// Milliseconds since `start` of the last control loop beat.
    beat_ms: AtomicU64,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            start: Instant::now(),
            ready: AtomicBool::new(false),
            beat_ms: AtomicU64::new(0),
        }
    }
}

impl Health {
    pub fn beat(&self) {
        self.beat_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Ready once the first apply succeeded, and from then on.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub fn live(&self) -> bool {
        let last = Duration::from_millis(self.beat_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last) < STALL
    }
}
