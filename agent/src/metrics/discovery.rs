//! Metrics of the networks discovered from the Kubernetes API and of the node's status object:
//! labels are the watched resource (`nodes`, `endpointslices`), or a network name and the kind
//! of its entries, so they stay few.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabels {
    resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NetworkLabels {
    network: String,
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

const HELP: [&str; 5] = [
    "1 while the agent is in sync with the Kubernetes API for this resource (a list completed and its watch has had no error since), else 0",
    "Unix time the discovered sets of this resource were last known current (now, while in sync)",
    "Failed lists and watches of this resource (each is retried after a backoff)",
    "Addresses (CIDRs) in each network of the applied policy, by where they come from: cidrs (written out), nodes, pod-cidrs, api-server",
    "Writes of the node's NodewallNodeStatus object, by result (ok, failed)",
];

#[derive(Default)]
pub struct DiscoveryMetrics {
    synced: Family<ResourceLabels, Gauge>,
    last_sync: Family<ResourceLabels, Gauge<f64, AtomicU64>>,
    errors: Family<ResourceLabels, Counter>,
    addresses: Family<NetworkLabels, Gauge>,
    status_writes: Family<ResultLabels, Counter>,
}

impl DiscoveryMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register("discovery_synced", HELP[0], self.synced.clone());
        r.register(
            "discovery_last_sync_timestamp_seconds",
            HELP[1],
            self.last_sync.clone(),
        );
        r.register("discovery_errors", HELP[2], self.errors.clone());
        r.register("network_addresses", HELP[3], self.addresses.clone());
        r.register("status_writes", HELP[4], self.status_writes.clone());
    }

    pub fn synced(&self, resource: &str, synced: bool) {
        self.synced
            .get_or_create(&resource_labels(resource))
            .set(synced as i64);
    }

    pub fn confirmed(&self, resource: &str, unix: f64) {
        self.last_sync
            .get_or_create(&resource_labels(resource))
            .set(unix);
    }

    pub fn failed(&self, resource: &str) {
        self.errors.get_or_create(&resource_labels(resource)).inc();
    }

    /// The sizes of the applied networks (replacing the previous ones).
    pub fn addresses(&self, counts: &BTreeMap<(String, &'static str), usize>) {
        self.addresses.clear();
        for ((network, source), n) in counts {
            let labels = NetworkLabels {
                network: network.clone(),
                source: source.to_string(),
            };
            self.addresses.get_or_create(&labels).set(*n as i64);
        }
    }

    pub fn status_written(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.status_writes
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
    }
}

fn resource_labels(resource: &str) -> ResourceLabels {
    ResourceLabels {
        resource: resource.to_string(),
    }
}
