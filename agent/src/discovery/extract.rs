//! What one API entry resolves to, given the Nodes and EndpointSlices the agent holds.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::core::{Selector, SelectorExt};

use crate::config::ApiSource;

/// The label every EndpointSlice of the `default/kubernetes` Service carries.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The addresses of `source`, sorted, without duplicates. Values the API holds that are not
/// addresses (a malformed podCIDR, say) are skipped and returned as the second value.
pub fn addresses(
    source: &ApiSource,
    nodes: &[Arc<Node>],
    slices: &[Arc<EndpointSlice>],
) -> (Vec<IpNet>, Vec<String>) {
    let (mut out, mut bad) = (Vec::new(), Vec::new());
    match source {
        ApiSource::Nodes {
            selector,
            addresses,
        } => {
            for node in selected(nodes, selector) {
                let Some(status) = &node.status else { continue };
                for a in status.addresses.iter().flatten() {
                    if addresses.iter().any(|t| t.as_str() == a.type_) {
                        host(&a.address, &mut out, &mut bad);
                    }
                }
            }
        }
        ApiSource::PodCidrs { selector } => {
            for node in selected(nodes, selector) {
                let Some(spec) = &node.spec else { continue };
                let cidrs = match &spec.pod_cidrs {
                    Some(list) if !list.is_empty() => list.clone(),
                    _ => spec.pod_cidr.iter().cloned().collect(),
                };
                for c in cidrs {
                    match c.parse::<IpNet>() {
                        Ok(net) => out.push(net.trunc()),
                        Err(_) => bad.push(c),
                    }
                }
            }
        }
        ApiSource::ApiServer => {
            for slice in slices.iter().filter(|s| is_api_server(s)) {
                if slice.address_type == "FQDN" {
                    continue;
                }
                for e in &slice.endpoints {
                    if e.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                        continue;
                    }
                    for a in &e.addresses {
                        host(a, &mut out, &mut bad);
                    }
                }
            }
        }
    }
    out.sort();
    out.dedup();
    (out, bad)
}

/// Whether `slice` belongs to the `default/kubernetes` Service (checked here too: a test API
/// server may ignore label selectors).
pub fn is_api_server(slice: &EndpointSlice) -> bool {
    slice.metadata.namespace.as_deref() == Some("default")
        && slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .is_some_and(|v| v == "kubernetes")
}

fn selected<'n>(
    nodes: &'n [Arc<Node>],
    selector: &[kube::core::Expression],
) -> impl Iterator<Item = &'n Arc<Node>> {
    let selector: Selector = selector.iter().cloned().collect();
    let none = BTreeMap::new();
    nodes
        .iter()
        .filter(move |n| selector.matches(n.metadata.labels.as_ref().unwrap_or(&none)))
}

fn host(address: &str, out: &mut Vec<IpNet>, bad: &mut Vec<String>) {
    match address.parse::<IpAddr>() {
        Ok(ip) => out.push(IpNet::from(ip)),
        Err(_) => bad.push(address.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AddressType;

    fn node(json: serde_json::Value) -> Arc<Node> {
        Arc::new(serde_json::from_value(json).unwrap())
    }

    fn nets(v: &[&str]) -> Vec<IpNet> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn nodes_by_label_and_address_type() {
        let nodes = [
            node(serde_json::json!({
                "metadata": {"name": "cp", "labels": {"node-role.kubernetes.io/control-plane": ""}},
                "spec": {"podCIDRs": ["198.18.40.0/24", "fd00:40::/64"]},
                "status": {"addresses": [
                    {"type": "InternalIP", "address": "198.18.16.10"},
                    {"type": "ExternalIP", "address": "198.19.0.10"},
                    {"type": "Hostname", "address": "cp"}]}
            })),
            node(serde_json::json!({
                "metadata": {"name": "w1"},
                "spec": {"podCIDR": "198.18.41.0/24"},
                "status": {"addresses": [{"type": "InternalIP", "address": "fd00:16::11"}]}
            })),
            node(serde_json::json!({"metadata": {"name": "new"}})),
        ];
        let internal = ApiSource::Nodes {
            selector: vec![],
            addresses: vec![AddressType::InternalIp],
        };
        let (got, bad) = addresses(&internal, &nodes, &[]);
        assert_eq!(got, nets(&["198.18.16.10/32", "fd00:16::11/128"]));
        assert!(bad.is_empty());
        let cp = ApiSource::Nodes {
            selector: crate::config::parse_selector("node-role.kubernetes.io/control-plane")
                .unwrap(),
            addresses: vec![AddressType::InternalIp, AddressType::ExternalIp],
        };
        assert_eq!(
            addresses(&cp, &nodes, &[]).0,
            nets(&["198.18.16.10/32", "198.19.0.10/32"])
        );
        let pods = ApiSource::PodCidrs { selector: vec![] };
        assert_eq!(
            addresses(&pods, &nodes, &[]).0,
            nets(&["198.18.40.0/24", "198.18.41.0/24", "fd00:40::/64"])
        );
    }

    #[test]
    fn api_server_endpoints_that_are_ready() {
        let slice = |ns: &str, service: &str, ready: bool, addr: &str| -> Arc<EndpointSlice> {
            Arc::new(
                serde_json::from_value(serde_json::json!({
                    "metadata": {"name": "x", "namespace": ns,
                                 "labels": {SERVICE_NAME_LABEL: service}},
                    "addressType": if addr.contains(':') { "IPv6" } else { "IPv4" },
                    "endpoints": [{"addresses": [addr], "conditions": {"ready": ready}}]
                }))
                .unwrap(),
            )
        };
        let slices = [
            slice("default", "kubernetes", true, "198.18.48.2"),
            slice("default", "kubernetes", false, "198.18.48.3"),
            slice("default", "other", true, "198.18.48.4"),
            slice("kube-system", "kubernetes", true, "198.18.48.5"),
            slice("default", "kubernetes", true, "bogus"),
        ];
        let (got, bad) = addresses(&ApiSource::ApiServer, &[], &slices);
        assert_eq!(got, nets(&["198.18.48.2/32"]));
        assert_eq!(bad, vec!["bogus".to_string()]);
    }
}
