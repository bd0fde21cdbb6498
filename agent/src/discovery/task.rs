//! The discovery task: keeps the watches the config's API entries need, and when what they
//! resolve to changes (debounced), hands the daemon the new sets with what changed and why.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio::sync::{mpsc, watch as channel};

use super::extract;
use super::sets::Discovered;
use super::watch::{self, Signal};
use super::Change;
use crate::config::ApiSource;
use crate::metrics::Metrics;

/// Quiet time after an event before the sets are computed (a node joining is several
/// events: created, addresses set, podCIDRs set) ...
const SETTLE: Duration = Duration::from_millis(100);
/// ... but never longer than this after the first one, so that a busy cluster still moves.
const MAX_DELAY: Duration = Duration::from_millis(500);
/// How many changed addresses a log line names before it only counts them.
const SHOWN: usize = 4;

pub const NODES: &str = "nodes";
pub const ENDPOINTSLICES: &str = "endpointslices";

/// A watch the task holds, stopped when dropped.
struct Held<K: kube::Resource<DynamicType = ()> + 'static> {
    store: Store<K>,
    listed: bool,
    synced: bool,
    /// Whether the current run of failures was logged.
    warned: bool,
    task: tokio::task::JoinHandle<()>,
}

impl<K: kube::Resource<DynamicType = ()> + 'static> Drop for Held<K> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(super) struct Task {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    pub sources: channel::Receiver<Vec<ApiSource>>,
    pub out: mpsc::UnboundedSender<Change>,
    /// The last sets handed out (at first: the persisted ones).
    pub published: Arc<Discovered>,
}

struct State {
    nodes: Option<Held<Node>>,
    slices: Option<Held<EndpointSlice>>,
    /// Node names when the sets were last handed out.
    node_names: Option<BTreeSet<String>>,
    /// First and last event not yet acted on.
    dirty: Option<(Instant, Instant)>,
    signals: mpsc::UnboundedSender<Signal>,
}

impl Task {
    pub async fn run(mut self) {
        let (tx, mut signals) = mpsc::unbounded_channel();
        let mut st = State {
            nodes: None,
            slices: None,
            node_names: None,
            dirty: None,
            signals: tx,
        };
        self.follow_sources(&mut st);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            let deadline = st
                .dirty
                .map(|(first, last)| (last + SETTLE).min(first + MAX_DELAY));
            tokio::select! {
                Some(signal) = signals.recv() => self.on_signal(&mut st, signal),
                changed = self.sources.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    self.follow_sources(&mut st);
                }
                _ = sleep_until(deadline) => {
                    st.dirty = None;
                    if !self.publish(&mut st) {
                        return;
                    }
                }
                _ = tick.tick() => self.confirm_sync(&st),
            }
        }
    }

    fn on_signal(&self, st: &mut State, signal: Signal) {
        let m = &self.metrics.discovery;
        let (resource, synced, error) = match signal {
            Signal::Changed(_) => return mark(st),
            Signal::Synced(resource) => (resource, true, None),
            Signal::Failed(resource, error) => (resource, false, Some(error)),
        };
        let held = match resource {
            NODES => st
                .nodes
                .as_mut()
                .map(|h| (&mut h.listed, &mut h.synced, &mut h.warned)),
            _ => st
                .slices
                .as_mut()
                .map(|h| (&mut h.listed, &mut h.synced, &mut h.warned)),
        };
        let Some((listed, was, warned)) = held else {
            return;
        };
        m.synced(resource, synced);
        match error {
            None => {
                if *warned {
                    tracing::info!(resource, "in sync with the Kubernetes API again");
                }
                (*listed, *was, *warned) = (true, true, false);
                m.confirmed(resource, now_unix_f64());
                mark(st);
            }
            Some(error) => {
                m.failed(resource);
                if !*warned {
                    tracing::warn!(resource, error = %error, "cannot read the Kubernetes API; keeping the last sets discovered (retrying)");
                } else {
                    tracing::debug!(resource, error = %error, "Kubernetes API still failing");
                }
                (*was, *warned) = (false, true);
            }
        }
    }

    /// Starts the watches the current entries need and stops the others.
    fn follow_sources(&mut self, st: &mut State) {
        let sources = self.sources.borrow_and_update().clone();
        let (nodes, slices) = (
            sources.iter().any(ApiSource::from_nodes),
            sources.iter().any(|s| !s.from_nodes()),
        );
        if nodes != st.nodes.is_some() {
            st.nodes = nodes.then(|| {
                let api: Api<Node> = Api::all(self.client.clone());
                hold(
                    api,
                    watcher::Config::default(),
                    NODES,
                    strip_node,
                    &st.signals,
                )
            });
        }
        if slices != st.slices.is_some() {
            st.slices = slices.then(|| {
                let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), "default");
                let config = watcher::Config::default()
                    .labels(&format!("{}=kubernetes", extract::SERVICE_NAME_LABEL));
                hold(api, config, ENDPOINTSLICES, strip_slice, &st.signals)
            });
        }
        mark(st);
    }

    /// While in sync, the sets are known current as of now.
    fn confirm_sync(&self, st: &State) {
        let now = now_unix_f64();
        if st.nodes.as_ref().is_some_and(|h| h.synced) {
            self.metrics.discovery.confirmed(NODES, now);
        }
        if st.slices.as_ref().is_some_and(|h| h.synced) {
            self.metrics.discovery.confirmed(ENDPOINTSLICES, now);
        }
    }

    /// Computes the sets; hands them out if they changed. False once nobody listens.
    fn publish(&mut self, st: &mut State) -> bool {
        let sources = self.sources.borrow().clone();
        let nodes = st
            .nodes
            .as_ref()
            .filter(|h| h.listed)
            .map(|h| h.store.state());
        let slices = st
            .slices
            .as_ref()
            .filter(|h| h.listed)
            .map(|h| h.store.state());
        let mut sets = BTreeMap::new();
        let mut all_live = true;
        for source in &sources {
            let key = source.key();
            let live = if source.from_nodes() {
                nodes.is_some()
            } else {
                slices.is_some()
            };
            if !live {
                all_live = false;
                if let Some(kept) = self.published.sets.get(&key) {
                    sets.insert(key, kept.clone());
                }
                continue;
            }
            let (found, bad) = extract::addresses(
                source,
                nodes.as_deref().unwrap_or_default(),
                slices.as_deref().unwrap_or_default(),
            );
            if !bad.is_empty() {
                tracing::warn!(source = %key, values = ?bad, "skipped values the API gave that are not addresses");
            }
            sets.insert(key, found);
        }
        let names = nodes.as_ref().map(|n| {
            n.iter()
                .filter_map(|n| n.metadata.name.clone())
                .collect::<BTreeSet<_>>()
        });
        if sets == self.published.sets {
            if names.is_some() {
                st.node_names = names;
            }
            return true;
        }
        let in_sync = st.nodes.as_ref().is_none_or(|h| h.synced)
            && st.slices.as_ref().is_none_or(|h| h.synced);
        let change = Change {
            what: what_changed(&self.published.sets, &sets),
            why: why(
                st.node_names.as_ref(),
                names.as_ref(),
                &self.published.sets,
                &sets,
            ),
            sets: Arc::new(Discovered {
                synced_at: if all_live && in_sync {
                    Some(now_unix_f64() as u64)
                } else {
                    self.published.synced_at
                },
                sets,
            }),
        };
        if names.is_some() {
            st.node_names = names;
        }
        self.published = change.sets.clone();
        self.out.send(change).is_ok()
    }
}

fn hold<K>(
    api: Api<K>,
    config: watcher::Config,
    resource: &'static str,
    strip: fn(&mut K),
    signals: &mpsc::UnboundedSender<Signal>,
) -> Held<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let task = tokio::spawn(watch::run(
        api,
        config,
        writer,
        resource,
        strip,
        signals.clone(),
    ));
    Held {
        store,
        listed: false,
        synced: false,
        warned: false,
        task,
    }
}

fn mark(st: &mut State) {
    let now = Instant::now();
    st.dirty = Some(st.dirty.map_or((now, now), |(first, _)| (first, now)));
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// Drops what nodewall never reads (images, conditions, managed fields: most of a Node).
fn strip_node(node: &mut Node) {
    node.metadata.managed_fields = None;
    node.metadata.annotations = None;
    if let Some(status) = node.status.as_mut() {
        let addresses = status.addresses.take();
        *status = Default::default();
        status.addresses = addresses;
    }
}

fn strip_slice(slice: &mut EndpointSlice) {
    slice.metadata.managed_fields = None;
    slice.metadata.annotations = None;
}

/// `nodes addresses=InternalIP +198.18.17.9/32; pod-cidrs -198.18.40.0/24`, per entry.
fn what_changed(old: &BTreeMap<String, Vec<IpNet>>, new: &BTreeMap<String, Vec<IpNet>>) -> String {
    let mut parts = Vec::new();
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for key in keys {
        let (o, n) = (old.get(key), new.get(key));
        let o: BTreeSet<&IpNet> = o.into_iter().flatten().collect();
        let n: BTreeSet<&IpNet> = n.into_iter().flatten().collect();
        let added: Vec<&IpNet> = n.difference(&o).copied().collect();
        let removed: Vec<&IpNet> = o.difference(&n).copied().collect();
        if added.is_empty() && removed.is_empty() {
            continue;
        }
        let mut part = key.clone();
        for (sign, list) in [("+", &added), ("-", &removed)] {
            if list.is_empty() {
                continue;
            }
            let shown: Vec<String> = list
                .iter()
                .take(SHOWN)
                .map(|n| format!("{sign}{n}"))
                .collect();
            part.push(' ');
            part.push_str(&shown.join(" "));
            if list.len() > SHOWN {
                part.push_str(&format!(" ({sign}{} in all)", list.len()));
            }
        }
        parts.push(part);
    }
    parts.join("; ")
}

/// Why the sets changed: nodes that joined or left, or the first sync.
fn why(
    before: Option<&BTreeSet<String>>,
    now: Option<&BTreeSet<String>>,
    old: &BTreeMap<String, Vec<IpNet>>,
    new: &BTreeMap<String, Vec<IpNet>>,
) -> String {
    if new.keys().any(|k| !old.contains_key(k)) {
        return "first sync with the Kubernetes API".into();
    }
    let mut reasons = Vec::new();
    if let (Some(before), Some(now)) = (before, now) {
        let list = |v: Vec<&String>| {
            let shown: Vec<&str> = v.iter().take(SHOWN).map(|s| s.as_str()).collect();
            let more = v.len().saturating_sub(SHOWN);
            let tail = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            format!("{}{tail}", shown.join(","))
        };
        let joined: Vec<&String> = now.difference(before).collect();
        let left: Vec<&String> = before.difference(now).collect();
        if !joined.is_empty() {
            reasons.push(format!("node joined: {}", list(joined)));
        }
        if !left.is_empty() {
            reasons.push(format!("node left: {}", list(left)));
        }
    } else if before.is_none() && now.is_some() {
        reasons.push("synced with the Kubernetes API (was: persisted sets)".into());
    }
    if reasons.is_empty() {
        reasons.push("objects changed in the Kubernetes API".into());
    }
    reasons.join("; ")
}

fn now_unix_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sets(v: &[(&str, &[&str])]) -> BTreeMap<String, Vec<IpNet>> {
        v.iter()
            .map(|(k, n)| {
                (
                    k.to_string(),
                    n.iter().map(|s| s.parse().unwrap()).collect(),
                )
            })
            .collect()
    }

    fn names(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_change_says_what_and_why() {
        let old = sets(&[
            ("nodes", &["198.18.17.2/32"]),
            ("pod-cidrs", &["198.18.40.0/24"]),
        ]);
        let new = sets(&[
            ("nodes", &["198.18.17.2/32", "198.18.17.3/32"]),
            ("pod-cidrs", &[]),
        ]);
        assert_eq!(
            what_changed(&old, &new),
            "nodes +198.18.17.3/32; pod-cidrs -198.18.40.0/24"
        );
        let (a, b) = (names(&["n1", "n2"]), names(&["n1", "n3"]));
        assert_eq!(
            why(Some(&a), Some(&b), &old, &new),
            "node joined: n3; node left: n2"
        );
        assert_eq!(
            why(None, Some(&b), &old, &new),
            "synced with the Kubernetes API (was: persisted sets)"
        );
        assert_eq!(
            why(None, None, &BTreeMap::new(), &new),
            "first sync with the Kubernetes API"
        );
        let many: Vec<String> = (0..10).map(|i| format!("198.18.1.{i}/32")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let text = what_changed(&BTreeMap::new(), &sets(&[("nodes", &many)]));
        assert!(text.ends_with("+198.18.1.3/32 (+10 in all)"), "{text}");
    }
}
