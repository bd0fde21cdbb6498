//! One kind of object (Nodes or EndpointSlices) kept in a kube-rs reflector store.
//!
//! The store only changes when the API says so: a list replaces it whole once complete (kube's
//! writer buffers a relist until its end), watch events change single objects, and errors
//! change nothing. On any error the watch is dropped, and after a backoff a new one lists
//! again; "in sync" means a list completed and its watch has had no error since. A list that
//! has not completed within [`LIST_TIMEOUT`] counts as an error (a server that accepts the
//! connection and never answers must not keep the agent waiting without a word).

use std::fmt::Debug;
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::reflector::store::Writer;
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, DefaultBackoff, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

/// How long a list may take before it is abandoned and retried.
pub const LIST_TIMEOUT: Duration = Duration::from_secs(30);
/// Server-side watch timeout; a silent connection is given up a little after it.
const WATCH_TIMEOUT_SECS: u32 = 60;

/// What a watch tells the discovery task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// A list completed: the store holds what the API holds.
    Synced(&'static str),
    /// An object was added, changed or deleted.
    Changed(&'static str),
    /// The watch failed; the store keeps what it had.
    Failed(&'static str, String),
}

/// Lists and watches `api` into `writer` until the receiver of `signals` is gone. `resource`
/// names it in signals (`nodes`, `endpointslices`); `strip` drops what the agent never reads
/// from each object before it is stored.
pub async fn run<K>(
    api: Api<K>,
    config: watcher::Config,
    mut writer: Writer<K>,
    resource: &'static str,
    strip: fn(&mut K),
    signals: mpsc::UnboundedSender<Signal>,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default,
{
    let config = config.timeout(WATCH_TIMEOUT_SECS).any_semantic();
    let mut backoff = DefaultBackoff::default();
    loop {
        let mut stream = watcher::watcher(api.clone(), config.clone())
            .modify(strip)
            .boxed();
        let mut listed = false;
        let error = loop {
            let next = if listed {
                stream.next().await
            } else {
                match tokio::time::timeout(LIST_TIMEOUT, stream.next()).await {
                    Ok(next) => next,
                    Err(_) => break format!("list not complete after {LIST_TIMEOUT:?}"),
                }
            };
            let signal = match next {
                Some(Ok(event)) => {
                    writer.apply_watcher_event(&event);
                    match event {
                        Event::InitDone => {
                            listed = true;
                            backoff.reset();
                            Some(Signal::Synced(resource))
                        }
                        Event::Apply(_) | Event::Delete(_) => Some(Signal::Changed(resource)),
                        Event::Init | Event::InitApply(_) => None,
                    }
                }
                Some(Err(e)) => break e.to_string(),
                None => break "watch ended".to_string(),
            };
            if let Some(s) = signal {
                if signals.send(s).is_err() {
                    return;
                }
            }
        };
        if signals.send(Signal::Failed(resource, error)).is_err() {
            return;
        }
        let wait = backoff.next().unwrap_or(Duration::from_secs(30));
        tokio::time::sleep(wait).await;
    }
}
