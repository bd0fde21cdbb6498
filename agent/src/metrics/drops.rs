//! Dropped-packet samples ([`DropEvent`]s, which the datapaths hand the agent) as the
//! rate-limited log lines they become. Counters do not depend on samples: these are for
//! humans.

use std::time::{Duration, Instant};

use crate::backend::DropEvent;

/// Writes the sample as one structured log line. In audit mode nothing was dropped: the
/// line says the packet *would have been*, so nobody hunts for a loss that did not happen.
pub fn log(event: &DropEvent, audit: bool) {
    // tracing wants the message as a literal, hence one call per wording.
    macro_rules! line {
        ($mode:literal, $message:literal) => {
            tracing::info!(
                target: "nodewall::drops",
                src = %event.src,
                dst = %event.dst,
                protocol = %event.protocol,
                sport = event.sport,
                dport = event.dport,
                direction = %event.direction,
                reason = %event.reason,
                rule = %event.rule,
                ifindex = event.ifindex,
                mode = %$mode,
                $message
            )
        };
    }
    if audit {
        line!("audit", "packet would be dropped (audit mode: passed)");
    } else {
        line!("enforce", "packet dropped");
    }
}

/// A token bucket: at most `rate` lines per second, bursts of `burst`.
pub struct RateLimit {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    suppressed: u64,
    last_report: Instant,
}

impl RateLimit {
    pub fn new(rate: u32, burst: u32, now: Instant) -> Self {
        Self {
            rate: rate as f64,
            burst: burst as f64,
            tokens: burst as f64,
            last: now,
            suppressed: 0,
            last_report: now,
        }
    }

    /// Whether one more line may be written at `now`.
    pub fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }

    /// The number of lines suppressed since the last call, at most once per `every`.
    pub fn take_suppressed(&mut self, now: Instant, every: Duration) -> Option<u64> {
        if self.suppressed == 0 || now.saturating_duration_since(self.last_report) < every {
            return None;
        }
        self.last_report = now;
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut rl = RateLimit::new(10, 5, t0);
        let allowed = (0..100).filter(|_| rl.allow(t0)).count();
        assert_eq!(allowed, 5);
        // One second later the bucket has refilled, but only up to the burst.
        let t1 = t0 + Duration::from_secs(1);
        let allowed = (0..100).filter(|_| rl.allow(t1)).count();
        assert_eq!(allowed, 5, "refill is capped by the burst");
        assert_eq!(rl.take_suppressed(t1, Duration::from_secs(1)), Some(190));
        assert_eq!(rl.take_suppressed(t1, Duration::from_secs(1)), None);
    }
}
