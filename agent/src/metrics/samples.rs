//! Metrics of what becomes of drop samples once read: the live stream's readers and what they
//! missed, the flow log, and the sources and ports dropped most (top-N, so that a spray of
//! addresses cannot blow up the number of series).

use std::net::IpAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::top::Top;
use crate::drops::DropRecord;

/// Series of the top-N gauges.
pub const TOP_N: usize = 10;
/// Keys tracked to find them (see [`Top`]).
const TOP_CAPACITY: usize = 512;
/// A key whose recent rate fell below this (about one sample in 20 minutes) leaves the top.
const TOP_FLOOR: f64 = 1.0 / 1200.0;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PortLabels {
    protocol: String,
    port: String,
}

const HELP: [&str; 6] = [
    "Readers of the live drop stream (nodewall drops) connected now",
    "Drop samples that a reader of the live stream missed because it read too slowly (the agent never waits for a reader)",
    "Drop samples for the flow log, by outcome: written, or lost (the writer fell behind, or the file could not be written)",
    "Times the flow log file reached its max-size and was rotated",
    "Drop samples per second (decayed over about a minute) from each of the sources dropped most; only the top 10 have a series",
    "Drop samples per second (decayed over about a minute) to each of the TCP and UDP ports dropped most; only the top 10 have a series",
];

struct Tops {
    sources: Top<IpAddr>,
    ports: Top<(String, u16)>,
}

/// Keeps the top-N gauges as [`SampleMetrics::refresh_top`] set them.
pub struct Frozen<'a>(#[allow(dead_code)] MutexGuard<'a, Tops>);

pub struct SampleMetrics {
    readers: Gauge,
    reader_lost: Counter,
    flow_log: Family<OutcomeLabels, Counter>,
    rotations: Counter,
    top_sources: Family<SourceLabels, Gauge<f64, AtomicU64>>,
    top_ports: Family<PortLabels, Gauge<f64, AtomicU64>>,
    tops: Mutex<Tops>,
}

impl Default for SampleMetrics {
    fn default() -> Self {
        let now = Instant::now();
        Self {
            readers: Gauge::default(),
            reader_lost: Counter::default(),
            flow_log: Family::default(),
            rotations: Counter::default(),
            top_sources: Family::default(),
            top_ports: Family::default(),
            tops: Mutex::new(Tops {
                sources: Top::new(TOP_CAPACITY, now),
                ports: Top::new(TOP_CAPACITY, now),
            }),
        }
    }
}

impl SampleMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register("drop_stream_readers", HELP[0], self.readers.clone());
        r.register(
            "drop_stream_lost_samples",
            HELP[1],
            self.reader_lost.clone(),
        );
        r.register("flow_log_records", HELP[2], self.flow_log.clone());
        r.register("flow_log_rotations", HELP[3], self.rotations.clone());
        r.register("top_dropped_sources", HELP[4], self.top_sources.clone());
        r.register("top_dropped_ports", HELP[5], self.top_ports.clone());
        for outcome in ["written", "lost"] {
            let _ = self.flow_log.get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            });
        }
    }

    fn tops(&self) -> MutexGuard<'_, Tops> {
        self.tops.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a sample towards the top sources and ports.
    pub fn sampled(&self, r: &DropRecord) {
        let now = Instant::now();
        let mut tops = self.tops();
        tops.sources.add(r.src, now);
        if let (Some(port), "tcp" | "udp") = (r.dport, r.protocol.as_str()) {
            tops.ports.add((r.protocol.clone(), port), now);
        }
    }

    /// Sets the top-N gauges to the current ranking; the returned guard keeps another
    /// refresh from changing them until it is dropped (held while a scrape is encoded).
    pub fn refresh_top(&self) -> Frozen<'_> {
        let tops = self.tops();
        let now = Instant::now();
        self.top_sources.clear();
        for (src, rate) in tops.sources.top(TOP_N, now, TOP_FLOOR) {
            self.top_sources
                .get_or_create(&SourceLabels {
                    source: src.to_string(),
                })
                .set(rate);
        }
        self.top_ports.clear();
        for ((protocol, port), rate) in tops.ports.top(TOP_N, now, TOP_FLOOR) {
            self.top_ports
                .get_or_create(&PortLabels {
                    protocol,
                    port: port.to_string(),
                })
                .set(rate);
        }
        Frozen(tops)
    }

    pub fn reader_connected(&self) {
        self.readers.inc();
    }

    pub fn reader_left(&self) {
        self.readers.dec();
    }

    pub fn reader_lost(&self, n: u64) {
        self.reader_lost.inc_by(n);
    }

    pub fn flow_log_written(&self, n: u64) {
        self.flow_log_outcome("written", n);
    }

    pub fn flow_log_lost(&self, n: u64) {
        self.flow_log_outcome("lost", n);
    }

    fn flow_log_outcome(&self, outcome: &str, n: u64) {
        self.flow_log
            .get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            })
            .inc_by(n);
    }

    pub fn flow_log_rotated(&self) {
        self.rotations.inc();
    }
}
