//! Dropped-packet samples: what the kernel hands the agent about individual drops, and the
//! rate-limited log line each becomes.
//!
//! Contract with the datapaths: the nft backend sends a (kernel rate-limited) sample of every
//! drop to NFLOG group [`NFLOG_GROUP`] with the prefix [`nflog_prefix`]`(reason, rule)`; the
//! daemon reads the group (see `daemon::nflog`) and parses the prefix back with
//! [`parse_nflog_prefix`]. Counters do not depend on samples: these are for humans.

use std::net::IpAddr;
use std::time::{Duration, Instant};

/// NFLOG group the nft backend logs drops to ("nw" in ASCII).
pub const NFLOG_GROUP: u16 = 0x6e77;
/// Kernel-side limit the backend should put on samples (per drop rule), in packets per second.
pub const KERNEL_SAMPLE_RATE: u32 = 20;

const PREFIX_TAG: &str = "nodewall:";

/// The NFLOG prefix for drops of `reason` (`default-deny`, `rule`, `invalid`) by `rule` (empty
/// unless the reason is `rule`). nft limits prefixes to 127 bytes; long rule names are cut.
pub fn nflog_prefix(reason: &str, rule: &str) -> String {
    let mut p = format!("{PREFIX_TAG}{reason}:{rule}");
    if p.len() > 127 {
        let mut end = 127;
        while !p.is_char_boundary(end) {
            end -= 1;
        }
        p.truncate(end);
    }
    p
}

/// `(reason, rule)` from a prefix made by [`nflog_prefix`]; `None` for anyone else's.
pub fn parse_nflog_prefix(prefix: &str) -> Option<(&str, &str)> {
    prefix
        .trim_end_matches(['\0', ' '])
        .strip_prefix(PREFIX_TAG)?
        .split_once(':')
}

/// One dropped packet, as much of it as the sample carried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DropEvent {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// `tcp`, `udp`, `icmp`, `icmpv6` or the IP protocol number.
    pub protocol: String,
    /// Source and destination ports (tcp/udp), or ICMP type and code.
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub reason: String,
    pub rule: String,
    /// Input interface index, when known.
    pub ifindex: Option<u32>,
}

impl DropEvent {
    /// Writes the sample as one structured log line. In audit mode nothing was dropped: the
    /// line says the packet *would have been*, so nobody hunts for a loss that did not happen.
    pub fn log(&self, audit: bool) {
        // tracing wants the message as a literal, hence one call per wording.
        macro_rules! line {
            ($mode:literal, $message:literal) => {
                tracing::info!(
                    target: "nodewall::drops",
                    src = %self.src,
                    dst = %self.dst,
                    protocol = %self.protocol,
                    sport = self.sport,
                    dport = self.dport,
                    reason = %self.reason,
                    rule = %self.rule,
                    ifindex = self.ifindex,
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
    fn prefixes_round_trip() {
        let p = nflog_prefix("rule", "tke-node/kubelet");
        assert_eq!(p, "nodewall:rule:tke-node/kubelet");
        assert_eq!(parse_nflog_prefix(&p), Some(("rule", "tke-node/kubelet")));
        assert_eq!(
            parse_nflog_prefix("nodewall:default-deny:\0"),
            Some(("default-deny", ""))
        );
        assert_eq!(parse_nflog_prefix("IN=eth0 "), None);
        assert_eq!(nflog_prefix("rule", &"x".repeat(300)).len(), 127);
    }

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
