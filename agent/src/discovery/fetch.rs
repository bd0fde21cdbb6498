//! One reading of the API entries, for `explain` and `render --kubeconfig`: list, resolve, done.

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::ListParams;
use kube::Api;
use std::sync::Arc;

use super::{client, extract, Discovered};
use crate::config::{ApiSource, Kubernetes};

/// The sets of `sources` as the API holds them now.
pub async fn once(
    settings: Option<&Kubernetes>,
    sources: &[ApiSource],
) -> Result<Discovered, String> {
    let client = client::connect(settings).await?;
    let mut nodes = Vec::new();
    if sources.iter().any(ApiSource::from_nodes) {
        let api: Api<Node> = Api::all(client.clone());
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("listing Nodes: {e}"))?;
        nodes = list.items.into_iter().map(Arc::new).collect();
    }
    let mut slices = Vec::new();
    if sources.iter().any(|s| !s.from_nodes()) {
        let api: Api<EndpointSlice> = Api::namespaced(client, "default");
        let params =
            ListParams::default().labels(&format!("{}=kubernetes", extract::SERVICE_NAME_LABEL));
        let list = api
            .list(&params)
            .await
            .map_err(|e| format!("listing EndpointSlices: {e}"))?;
        slices = list.items.into_iter().map(Arc::new).collect();
    }
    let sets = sources
        .iter()
        .map(|s| (s.key(), extract::addresses(s, &nodes, &slices).0))
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    Ok(Discovered {
        synced_at: Some(now),
        sets,
    })
}
