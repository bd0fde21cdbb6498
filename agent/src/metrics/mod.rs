//! Prometheus metrics of the agent, encoded as OpenMetrics text.
//!
//! Kernel counters are read from the backend (at scrape time and around every apply) and fed
//! to [`Metrics::observe_counters`]. Replacing a table or reloading an XDP program may reset
//! the kernel's counters; the exported counters must stay monotonic anyway, so each series
//! remembers the last raw value it saw and adds only what is new: the difference when the raw
//! value grew, the whole raw value when it went down (a reset happened in between).

pub mod discovery;
pub mod drops;
mod reset;
pub mod samples;
mod text;
mod top;
pub mod usage;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::backend::Counters;
use reset::ResetTracker;

/// The content type of [`Metrics::encode`]'s output.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    pub backend: String,
    /// `ingress` or `egress`.
    pub direction: String,
    pub reason: String,
    pub rule: String,
    pub family: String,
    pub protocol: String,
}

/// Labels of `nodewall_rule_unmatched`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    pub rule: String,
    pub action: String,
}

/// Labels of the per-rule counters: which way the rule judges (`ingress` or `egress`) too.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleCountLabels {
    pub rule: String,
    pub direction: String,
    pub action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabels {
    digest: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModeLabels {
    mode: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

/// Every metric the agent exports. Cheap to share behind an `Arc`: all updates are atomic or
/// behind short locks.
pub struct Metrics {
    registry: Registry,
    backend: String,
    dropped_packets: Family<DropLabels, Counter>,
    dropped_bytes: Family<DropLabels, Counter>,
    rule_packets: Family<RuleCountLabels, Counter>,
    rule_bytes: Family<RuleCountLabels, Counter>,
    apply_duration: Histogram,
    apply_errors: Counter,
    config_reload_errors: Counter,
    drift_repairs: Counter,
    generation: Gauge,
    policy_info: Family<PolicyLabels, Gauge>,
    /// 1 for the mode in force (`enforce` or `audit`), 0 for the other.
    mode: Family<ModeLabels, Gauge>,
    last_apply_success: Gauge<f64, AtomicU64>,
    drop_samples: Family<OutcomeLabels, Counter>,
    /// Whether the enforced policy is in audit mode (drop samples then say "would be dropped").
    audit: std::sync::atomic::AtomicBool,
    /// Last raw kernel values, per series; the lock also serialises concurrent observations.
    raw: Mutex<ResetTracker>,
    /// Packets and bytes of every drop series, for the node's status object.
    dropped_totals: (AtomicU64, AtomicU64),
    pub discovery: discovery::DiscoveryMetrics,
    /// The stream, the flow log and the top dropped sources and ports.
    pub samples: samples::SampleMetrics,
    /// Rules that have not matched since they were installed.
    pub usage: usage::RuleUsage,
}

impl Metrics {
    pub fn new(backend: &str) -> Self {
        let m = Self {
            backend: backend.to_string(),
            dropped_packets: Family::default(),
            dropped_bytes: Family::default(),
            rule_packets: Family::default(),
            rule_bytes: Family::default(),
            apply_duration: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            apply_errors: Counter::default(),
            config_reload_errors: Counter::default(),
            drift_repairs: Counter::default(),
            generation: Gauge::default(),
            policy_info: Family::default(),
            mode: Family::default(),
            last_apply_success: Gauge::default(),
            drop_samples: Family::default(),
            audit: std::sync::atomic::AtomicBool::new(false),
            raw: Mutex::new(ResetTracker::default()),
            dropped_totals: Default::default(),
            discovery: Default::default(),
            samples: Default::default(),
            usage: Default::default(),
            registry: Registry::default(),
        };
        m.register_all(backend)
    }

    fn register_all(mut self, backend: &str) -> Self {
        let m = &self;
        let mut registry = Registry::with_prefix("nodewall");
        for (name, help, family) in [
            (
                "dropped_packets",
                "Packets dropped by the node firewall (in audit mode: would have been dropped)",
                &m.dropped_packets,
            ),
            (
                "dropped_bytes",
                "Bytes of the packets counted by nodewall_dropped_packets_total",
                &m.dropped_bytes,
            ),
        ] {
            registry.register(name, help, family.clone());
        }
        for (name, help, family) in [
            (
                "rule_packets",
                "Packets matched by each policy rule",
                &m.rule_packets,
            ),
            (
                "rule_bytes",
                "Bytes of the packets matched by each policy rule",
                &m.rule_bytes,
            ),
        ] {
            registry.register(name, help, family.clone());
        }
        registry.register_with_unit(
            "apply_duration",
            "Time taken to install a policy into the kernel",
            Unit::Seconds,
            m.apply_duration.clone(),
        );
        let plain_counters = [
            (
                "apply_errors",
                "Policy installations the kernel refused or that failed",
                &m.apply_errors,
            ),
            (
                "config_reload_errors",
                "Config reloads rejected because the new file was invalid",
                &m.config_reload_errors,
            ),
            (
                "drift_repairs",
                "Times the installed policy was found altered or missing and was restored",
                &m.drift_repairs,
            ),
        ];
        for (name, help, counter) in plain_counters {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "policy_generation",
            "Generation of the installed policy, as reported by the backend",
            m.generation.clone(),
        );
        registry.register(
            "policy_info",
            "Always 1; the digest label fingerprints the enforced rules, equal on nodes with the same config",
            m.policy_info.clone(),
        );
        registry.register(
            "mode",
            "1 for the mode the installed policy is in (enforce, or audit: would-be drops are counted and accepted), 0 for the other",
            m.mode.clone(),
        );
        registry.register(
            "last_apply_success_timestamp_seconds",
            "Unix time of the last successful policy installation",
            m.last_apply_success.clone(),
        );
        registry.register(
            "drop_samples",
            "Dropped-packet samples read from the kernel, by whether they were logged or suppressed by the rate limit",
            m.drop_samples.clone(),
        );
        let build_info: Family<BuildLabels, Gauge> = Family::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_string(),
                backend: backend.to_string(),
            })
            .set(1);
        registry.register(
            "build_info",
            "Always 1; labels carry the agent version and the backend in use",
            build_info,
        );
        m.discovery.register(&mut registry);
        m.samples.register(&mut registry);
        m.usage.register(&mut registry);
        self.registry = registry;
        self
    }

    /// Folds one reading of the kernel counters into the exported ones.
    pub fn observe_counters(&self, counters: &Counters) {
        let mut raw = self.raw.lock().unwrap_or_else(|e| e.into_inner());
        for r in &counters.rules {
            let labels = RuleCountLabels {
                rule: r.rule.clone(),
                direction: r.direction.as_str().to_string(),
                action: action_str(r.action).to_string(),
            };
            let (dp, db) = raw.advance(reset::Key::Rule(labels.clone()), r.packets, r.bytes);
            self.rule_packets.get_or_create(&labels).inc_by(dp);
            if dp > 0 {
                self.usage.matched(&labels.rule);
            }
            self.rule_bytes.get_or_create(&labels).inc_by(db);
        }
        for d in &counters.drops {
            let labels = DropLabels {
                backend: self.backend.clone(),
                direction: d.direction.as_str().to_string(),
                reason: d.reason.to_string(),
                rule: d.rule.clone(),
                family: d.family.to_string(),
                protocol: d.protocol.to_string(),
            };
            let (dp, db) = raw.advance(reset::Key::Drop(labels.clone()), d.packets, d.bytes);
            self.dropped_packets.get_or_create(&labels).inc_by(dp);
            self.dropped_bytes.get_or_create(&labels).inc_by(db);
            self.dropped_totals.0.fetch_add(dp, Ordering::Relaxed);
            self.dropped_totals.1.fetch_add(db, Ordering::Relaxed);
        }
    }

    /// Packets and bytes of `nodewall_dropped_*_total`, all series together.
    pub fn dropped_totals(&self) -> (u64, u64) {
        (
            self.dropped_totals.0.load(Ordering::Relaxed),
            self.dropped_totals.1.load(Ordering::Relaxed),
        )
    }

    /// Marks `digest` as the enforced policy (one series at a time).
    pub fn policy_enforced(&self, digest: &str) {
        self.policy_info.clear();
        self.policy_info
            .get_or_create(&PolicyLabels {
                digest: digest.to_string(),
            })
            .set(1);
    }

    /// Records the enforced policy's mode, for the drop samples' log lines.
    pub fn set_audit(&self, audit: bool) {
        self.audit
            .store(audit, std::sync::atomic::Ordering::Relaxed);
        for (mode, on) in [("enforce", !audit), ("audit", audit)] {
            self.mode
                .get_or_create(&ModeLabels { mode: mode.into() })
                .set(i64::from(on));
        }
    }

    pub fn audit(&self) -> bool {
        self.audit.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn apply_succeeded(&self, generation: u64, duration: Duration) {
        self.apply_duration.observe(duration.as_secs_f64());
        self.generation
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.last_apply_success.set(now.as_secs_f64());
    }

    pub fn apply_failed(&self, duration: Duration) {
        self.apply_duration.observe(duration.as_secs_f64());
        self.apply_errors.inc();
    }

    pub fn config_reload_failed(&self) {
        self.config_reload_errors.inc();
    }

    pub fn drift_repaired(&self) {
        self.drift_repairs.inc();
    }

    /// Counts dropped-packet samples, `logged` or `suppressed` by the log rate limit.
    pub fn drop_sampled(&self, logged: bool) {
        let outcome = if logged { "logged" } else { "suppressed" };
        self.drop_samples
            .get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            })
            .inc();
    }

    /// The whole registry as OpenMetrics text (ends with `# EOF`).
    pub fn encode(&self) -> String {
        let _top = self.samples.refresh_top();
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// The body and content type for a scrape with this `Accept` header: OpenMetrics when the
    /// client asks for it (the Prometheus server does), the classic text format otherwise.
    pub fn encode_for(&self, accept: Option<&str>) -> (&'static str, String) {
        let om = self.encode();
        if text::wants_openmetrics(accept) {
            (OPENMETRICS_CONTENT_TYPE, om)
        } else {
            (text::CONTENT_TYPE, text::from_openmetrics(&om))
        }
    }
}

fn action_str(action: crate::policy::Action) -> &'static str {
    match action {
        crate::policy::Action::Allow => "allow",
        crate::policy::Action::Deny => "deny",
    }
}

#[cfg(test)]
mod tests;
