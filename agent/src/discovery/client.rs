//! Reaching the Kubernetes API, and knowing which Node this agent runs on.

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::config::Kubernetes;

/// The environment variable the DaemonSet sets from the Downward API (`spec.nodeName`).
pub const NODE_NAME_ENV: &str = "NODE_NAME";

/// A client from `kubernetes.kubeconfig` when set, else the in-cluster service account, else
/// `$KUBECONFIG` or `~/.kube/config`. The error says every place that was tried.
pub async fn connect(settings: Option<&Kubernetes>) -> Result<Client, String> {
    let config = match settings.and_then(|k| k.kubeconfig.as_deref()) {
        Some(path) => {
            let file = Kubeconfig::read_from(path)
                .map_err(|e| format!("kubernetes.kubeconfig: {path}: {e}"))?;
            Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(|e| format!("kubernetes.kubeconfig: {path}: {e}"))?
        }
        None => match Config::incluster() {
            Ok(c) => c,
            Err(in_cluster) => Config::from_kubeconfig(&KubeConfigOptions::default())
                .await
                .map_err(|kubeconfig| {
                    format!("no way to reach the Kubernetes API: not in a pod ({in_cluster}), and no kubeconfig ({kubeconfig}); set kubernetes.kubeconfig")
                })?,
        },
    };
    Client::try_from(config).map_err(|e| format!("Kubernetes API client: {e}"))
}

/// `kubernetes.node-name`, else `$NODE_NAME`, else the host name.
pub fn node_name(settings: Option<&Kubernetes>) -> String {
    if let Some(name) = settings.and_then(|k| k.node_name.clone()) {
        return name;
    }
    match std::env::var(NODE_NAME_ENV) {
        Ok(name) if !name.is_empty() => name,
        _ => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_lowercase())
            .unwrap_or_default(),
    }
}
