//! This node's `NodewallNodeStatus` object (cluster-scoped, named after the Node and owned by
//! it, so that deleting the Node deletes it): what the agent enforces and how it went, for
//! `kubectl get nodewallnodestatuses`.
//!
//! One small object per node, written only by that node's agent and only when it changed, at
//! most every [`URGENT`] for a change of backend, mode or apply result and every [`ROUTINE`]
//! for the rest (generation, digest, set sizes, drop totals): see docs/deploy.md for what this
//! costs a 5,000-node cluster. Written with a JSON merge patch, or created when missing; the
//! CRD (deploy/kubernetes/base/crd.yaml) has no status subresource, so one request does it.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde::Serialize;
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::metrics::Metrics;

pub const GROUP: &str = "nodewall.io";
pub const VERSION: &str = "v1alpha1";
pub const KIND: &str = "NodewallNodeStatus";
pub const PLURAL: &str = "nodewallnodestatuses";
/// Least time between two writes when the backend, the mode or the apply result changed.
pub const URGENT: Duration = Duration::from_secs(5);
/// Least time between two writes otherwise.
pub const ROUTINE: Duration = Duration::from_secs(60);

/// What the object's `status` says.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub backend: String,
    /// `enforce` or `audit`.
    pub mode: String,
    /// The backend's policy generation on this node.
    pub generation: u64,
    /// `nodewall_policy_info{digest}`: equal on nodes that enforce the same rules and sets.
    pub digest: String,
    /// RFC 3339 time of the last apply attempt.
    pub last_apply_time: String,
    /// `Applied`, `Failed` (the previous policy stays), or `Waiting` (for the first sync of
    /// networks discovered from the API).
    pub result: String,
    pub message: String,
    /// Addresses (CIDRs) in each network the policy was compiled with.
    pub networks: Vec<NetworkSize>,
    /// RFC 3339 time the discovered sets were last read from the API ("" without any).
    pub sets_synced_time: String,
    /// Packets and bytes dropped (in audit mode: that would have been) since the agent started.
    pub dropped_packets: u64,
    pub dropped_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NetworkSize {
    pub name: String,
    pub addresses: u64,
}

impl NodeStatus {
    fn urgent_part(&self) -> (&str, &str, &str) {
        (&self.backend, &self.mode, &self.result)
    }
}

/// RFC 3339 (UTC, seconds) of a Unix time.
pub fn rfc3339(unix: u64) -> String {
    k8s_openapi::jiff::Timestamp::from_second(unix as i64)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

pub fn resource() -> ApiResource {
    ApiResource {
        group: GROUP.into(),
        version: VERSION.into(),
        api_version: format!("{GROUP}/{VERSION}"),
        kind: KIND.into(),
        plural: PLURAL.into(),
    }
}

/// The whole object for `node` (whose uid makes the owner reference).
pub fn object(node: &str, uid: &str, status: &NodeStatus) -> serde_json::Value {
    json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": KIND,
        "metadata": {
            "name": node,
            "labels": { "app.kubernetes.io/name": "nodewall" },
            "ownerReferences": [{
                "apiVersion": "v1",
                "kind": "Node",
                "name": node,
                "uid": uid,
            }],
        },
        "status": status,
    })
}

/// Writes the reports of `reports` for `node` until the sender is gone.
pub async fn run(
    client: Client,
    node: String,
    mut reports: watch::Receiver<Option<NodeStatus>>,
    metrics: Arc<Metrics>,
) {
    let nodes: Api<Node> = Api::all(client.clone());
    let api: Api<DynamicObject> = Api::all_with(client, &resource());
    let mut uid: Option<String> = None;
    let mut written: Option<NodeStatus> = None;
    let mut last_write: Option<Instant> = None;
    let mut failing = false;
    loop {
        let wanted = reports.borrow_and_update().clone().map(|mut s| {
            (s.dropped_packets, s.dropped_bytes) = metrics.dropped_totals();
            s
        });
        let next = match wanted {
            Some(s) if Some(&s) != written.as_ref() => {
                let urgent = written.as_ref().map(NodeStatus::urgent_part) != Some(s.urgent_part());
                let gap = if urgent { URGENT } else { ROUTINE };
                match last_write.map(|t| t + gap).filter(|t| *t > Instant::now()) {
                    Some(later) => later,
                    None => {
                        let result = write(&nodes, &api, &node, &mut uid, &s).await;
                        last_write = Some(Instant::now());
                        match result {
                            Ok(()) => {
                                metrics.discovery.status_written(true);
                                if failing {
                                    tracing::info!(node, "status object written again");
                                }
                                failing = false;
                                written = Some(s);
                                Instant::now() + ROUTINE
                            }
                            Err(e) => {
                                metrics.discovery.status_written(false);
                                if !failing {
                                    tracing::warn!(node, error = %e, "could not write the node's status object; retrying");
                                }
                                failing = true;
                                Instant::now() + URGENT
                            }
                        }
                    }
                }
            }
            // Drop totals move without a new report: look again a routine interval later.
            _ => Instant::now() + ROUTINE,
        };
        tokio::select! {
            changed = reports.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep_until(next) => {}
        }
    }
}

async fn write(
    nodes: &Api<Node>,
    api: &Api<DynamicObject>,
    node: &str,
    uid: &mut Option<String>,
    status: &NodeStatus,
) -> Result<(), String> {
    if uid.is_none() {
        let found = nodes
            .get(node)
            .await
            .map_err(|e| format!("reading Node {node} (the owner of its status object): {e}"))?;
        *uid = Some(found.metadata.uid.unwrap_or_default());
    }
    let body = object(node, uid.as_deref().unwrap_or_default(), status);
    match api
        .patch(node, &PatchParams::default(), &Patch::Merge(&body))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => {
            let obj: DynamicObject = serde_json::from_value(body).map_err(|e| e.to_string())?;
            api.create(&PostParams::default(), &obj)
                .await
                .map(|_| ())
                .map_err(|e| format!("creating {KIND} {node}: {e}"))
        }
        Err(e) => Err(format!("updating {KIND} {node}: {e}")),
    }
}
