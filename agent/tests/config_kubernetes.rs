//! Network entries read from the Kubernetes API and the `kubernetes` section: what they parse
//! to, and that the JSON Schema agrees (their mistakes: `config_invalid.rs`).

use nodewall::config::{self, AddressType, ApiSource, Kubernetes};

#[test]
fn entries_mix_with_cidrs_and_default_sensibly() {
    let c = config::parse(
        "networks:\n  cluster: [10.0.0.0/16, {nodes: {}}]\n  container: [{pod-cidrs: {selector: \"zone in (a,b)\"}}]\n  control-plane:\n    - nodes: {selector: node-role.kubernetes.io/control-plane, addresses: [ExternalIP, InternalIP]}\n    - api-server:\n",
        "k.yaml",
    )
    .unwrap();
    assert_eq!(c.networks["cluster"], vec!["10.0.0.0/16".parse().unwrap()]);
    assert!(c.networks["container"].is_empty());
    let sources =
        |n: &str| -> Vec<ApiSource> { c.discovered[n].iter().map(|i| i.source.clone()).collect() };
    assert_eq!(
        sources("cluster"),
        vec![ApiSource::Nodes {
            selector: vec![],
            addresses: vec![AddressType::InternalIp]
        }]
    );
    let cp = sources("control-plane");
    assert_eq!(
        cp[0].key(),
        "nodes selector=\"node-role.kubernetes.io/control-plane\" addresses=InternalIP,ExternalIP"
    );
    assert_eq!(cp[1], ApiSource::ApiServer);
    assert_eq!(
        sources("container")[0].key(),
        "pod-cidrs selector=\"zone in (a,b)\""
    );
    let item = &c.discovered["control-plane"][1];
    assert_eq!(
        (item.path.as_str(), item.line, item.column),
        ("networks.control-plane[1]", 6, 7)
    );
    // The API is used, and the status object written, without a `kubernetes` section.
    assert!(c.uses_api() && c.writes_status() && c.kubernetes.is_none());
}

#[test]
fn the_kubernetes_section() {
    let c = config::parse(
        "kubernetes: {kubeconfig: /etc/kube.conf, node-name: node-1.example, status: false}\n",
        "k.yaml",
    )
    .unwrap();
    assert_eq!(
        c.kubernetes,
        Some(Kubernetes {
            kubeconfig: Some("/etc/kube.conf".into()),
            node_name: Some("node-1.example".into()),
            status: false,
        })
    );
    assert!(c.uses_api() && !c.writes_status());
    let plain = config::parse("networks: {a: [10.0.0.0/8]}\n", "k.yaml").unwrap();
    assert!(!plain.uses_api() && !plain.writes_status());
}

#[test]
fn unresolved_entries_do_not_compile() {
    let c = config::parse("networks:\n  a: [10.0.0.0/8, {nodes: {}}]\nrules:\n  - {name: r, action: allow, protocol: all, from: [a]}\n", "k.yaml").unwrap();
    let e = nodewall::policy::compile(&c).unwrap_err().to_string();
    assert!(
        e.contains("networks.a[1]") && e.contains("not resolved"),
        "{e}"
    );
}

#[test]
fn the_schema_agrees() {
    let schema = config::json_schema();
    let v = jsonschema::draft202012::new(&schema).unwrap();
    let ok = serde_json::json!({
        "networks": {
            "cluster": ["10.0.0.0/16", {"nodes": {}}, {"nodes": null}],
            "cp": [{"nodes": {"selector": "a", "addresses": ["InternalIP", "ExternalIP"]}}, {"api-server": {}}],
            "pods": [{"pod-cidrs": {"selector": "x=y"}}]
        },
        "kubernetes": {"kubeconfig": "/k", "node-name": "n-1", "status": true}
    });
    assert!(
        v.is_valid(&ok),
        "{:?}",
        v.iter_errors(&ok)
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
    );
    for bad in [
        serde_json::json!({"networks": {"a": [{"nodez": {}}]}}),
        serde_json::json!({"networks": {"a": [{"nodes": {}, "api-server": {}}]}}),
        serde_json::json!({"networks": {"a": [{"nodes": {"addresses": ["Hostname"]}}]}}),
        serde_json::json!({"networks": {"a": [{"api-server": {"x": 1}}]}}),
        serde_json::json!({"kubernetes": {"status": "yes"}}),
        serde_json::json!({"kubernetes": {"node-name": "Bad_Name"}}),
    ] {
        assert!(!v.is_valid(&bad), "accepted {bad}");
    }
}
