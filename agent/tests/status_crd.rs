//! The NodewallNodeStatus object the agent writes fits the CRD shipped in deploy/: valid against
//! its schema, and without fields the schema lacks (the API server would drop them silently).

use std::path::Path;

use nodewall::discovery::status::{self, NetworkSize, NodeStatus};
use saphyr::{LoadableYamlNode, Yaml};
use serde_json::Value;

mod yaml_json;

fn crd() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/base/crd.yaml");
    let docs = Yaml::load_from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    yaml_json::to_json(&docs[0])
}

fn example() -> NodeStatus {
    NodeStatus {
        backend: "xdp".into(),
        mode: "audit".into(),
        generation: 7,
        digest: "0123456789abcdef".into(),
        last_apply_time: status::rfc3339(1_800_000_000),
        result: "Applied".into(),
        message: String::new(),
        networks: vec![NetworkSize {
            name: "cluster".into(),
            addresses: 5000,
        }],
        sets_synced_time: status::rfc3339(1_800_000_000),
        dropped_packets: 12,
        dropped_bytes: 720,
    }
}

/// Paths of `value` that `schema` does not declare.
fn unknown(value: &Value, schema: &Value, path: &str) -> Vec<String> {
    match value {
        Value::Object(map) => map
            .iter()
            .flat_map(|(k, v)| match schema["properties"].get(k) {
                Some(s) => unknown(v, s, &format!("{path}.{k}")),
                None if schema["type"] == "object" && schema.get("properties").is_none() => {
                    Vec::new()
                }
                None => vec![format!("{path}.{k}")],
            })
            .collect(),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .flat_map(|(i, v)| unknown(v, &schema["items"], &format!("{path}[{i}]")))
            .collect(),
        _ => Vec::new(),
    }
}

#[test]
fn the_status_object_fits_the_crd() {
    let crd = crd();
    let version = &crd["spec"]["versions"][0];
    assert_eq!(crd["spec"]["group"], status::GROUP);
    assert_eq!(version["name"], status::VERSION);
    assert_eq!(crd["spec"]["names"]["kind"], status::KIND);
    assert_eq!(crd["spec"]["names"]["plural"], status::PLURAL);
    let schema = &version["schema"]["openAPIV3Schema"];
    let validator = jsonschema::draft202012::new(schema).unwrap();
    let obj = status::object("node-1", "uid-1", &example());
    let errors: Vec<String> = validator.iter_errors(&obj).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(unknown(&obj, schema, ""), Vec::<String>::new());
    // Not vacuous: a misnamed field and a wrong value are both caught.
    let mut bad = obj.clone();
    bad["status"]["backendd"] = "nft".into();
    assert_eq!(
        unknown(&bad, schema, ""),
        vec![".status.backendd".to_string()]
    );
    bad["status"]["result"] = "Done".into();
    assert!(!validator.is_valid(&bad));
}
