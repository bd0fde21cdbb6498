//! The JSON Schema accepts every shipped example and rejects malformed documents.

use std::path::Path;

use saphyr::{LoadableYamlNode, Yaml};
use serde_json::{json, Value};

mod yaml_json;
use yaml_json::to_json;

fn yaml(text: &str) -> Value {
    let docs = Yaml::load_from_str(text).unwrap();
    to_json(&docs[0])
}

fn validator() -> jsonschema::Validator {
    let schema = nodewall::config::json_schema();
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    jsonschema::draft202012::new(&schema).expect("the schema itself is valid")
}

#[test]
fn every_example_validates() {
    let v = validator();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let doc = yaml(&std::fs::read_to_string(&path).unwrap());
        let errors: Vec<String> = v
            .iter_errors(&doc)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
        n += 1;
    }
    assert!(n >= 7, "only {n} examples");
}

/// Documents a config schema must accept.
const VALID: &[&str] = &[
        "profile: tke-node\nnetworks: {cluster: [10.0.0.0/16], container: [172.16.0.0/16]}\n",
        "rules:\n  - {name: a, action: deny, protocol: all, from: [10.0.0.1, \"fd00::/8\"]}\nfailsafe: []\n",
        "rules: [{name: a, action: allow, protocol: tcp, ports: [22, \"80-90\"], from: [x]}]\nimplicit: {neighbor-discovery: false}\n",
        "rules: []\nfailsafe:\n  - protocol: tcp\n    ports: [\"22\"]\n",
        "egress:\n  default: deny\n  failsafe: [{protocol: udp, ports: [53]}]\n  metadata: {deny-pods: true, except: [10.0.0.5]}\n  rules: [{name: b, action: deny, protocol: tcp, ports: [25], to: [\"0.0.0.0/0\"], source: pod}]\n",
];

#[test]
fn defaults_and_aliases_validate() {
    let v = validator();
    for ok in VALID {
        let doc = yaml(ok);
        assert!(
            v.is_valid(&doc),
            "{ok}: {:?}",
            v.iter_errors(&doc)
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
        );
    }
}

/// Documents a config schema must reject.
fn invalid() -> Vec<String> {
    let rule = "{name: a, action: allow, protocol: tcp, from: [0.0.0.0/0]}";
    vec![
        "backend: ebpf\n".to_string(),
        "mode: strict\n".to_string(),
        "backedn: nft\n".to_string(),
        "profile: gke-node\n".to_string(),
        "interfaces: [eth0, eth0]\n".to_string(),
        "interfaces: [\"a/b\"]\n".to_string(),
        "networks: {Pods: [10.0.0.0/8]}\n".to_string(),
        "networks: {pods: []}\n".to_string(),
        "networks: {pods: [not-an-address]}\n".to_string(),
        "rules: [{name: a, action: allow, protocol: tcp}]\n".to_string(),
        "rules: [{name: a, action: permit, protocol: tcp, from: [x]}]\n".to_string(),
        "rules: [{name: a, action: allow, protocol: sctp, from: [x]}]\n".to_string(),
        "rules: [{name: a, action: allow, protocol: icmp, ports: [22], from: [x]}]\n".to_string(),
        "rules: [{name: a, action: allow, protocol: tcp, ports: [0], from: [x]}]\n".to_string(),
        "rules: [{name: a, action: allow, protocol: tcp, ports: [\"ssh\"], from: [x]}]\n"
            .to_string(),
        "rules: [{name: a, action: allow, protocol: tcp, ports: [], from: [x]}]\n".to_string(),
        "rules: [{name: a, action: allow, protocol: tcp, from: []}]\n".to_string(),
        "rules: [{name: Bad/Name, action: allow, protocol: tcp, from: [x]}]\n".to_string(),
        format!("rules: [{rule}]\nfailsafe: [{{protocol: tcp, action: deny}}]\n"),
        format!("rules: [{rule}]\nfailsafe: [{{ports: [22]}}]\n"),
        format!("rules: [{rule}]\nimplicit: {{established: \"yes\"}}\n"),
        format!("rules: [{rule}]\nimplicit: {{stateful: true}}\n"),
        "- a\n".to_string(),
        "interfaces: [\"*\"]\n".to_string(),
        "interfaces: [\"e*th\"]\n".to_string(),
        "rules: [{name: a, action: allow, protocol: tcp, ports: [70000], from: [x]}]\n".to_string(),
        "failsafe: [{protocol: tcp, name: Bad}]\n".to_string(),
        "networks: {pods: [\"10.0.0.0/8\", 5]}\n".to_string(),
        "egress: {default: block}\n".to_string(),
        "egress: {rules: [{name: a, action: allow, protocol: tcp, from: [x]}]}\n".to_string(),
        "egress: {rules: [{name: a, action: allow, protocol: tcp, to: [x], source: pods}]}\n"
            .to_string(),
        "egress: {failsafe: [{protocol: udp, action: deny}]}\n".to_string(),
        "egress: {metadata: {deny-pods: \"yes\"}}\n".to_string(),
        "egress: {metadata: {pods: deny}}\n".to_string(),
    ]
}

#[test]
fn invalid_documents_are_rejected() {
    let v = validator();
    for bad in invalid() {
        assert!(!v.is_valid(&yaml(&bad)), "schema accepted {bad}");
    }
}

/// The schema derived with schemars decides every document as the hand-written one it
/// replaced did (`fixtures/config.schema.before.json`), except where it was meant to change:
/// `eth*` is accepted by both (and means a pattern now), while a `*` anywhere else, which the
/// old schema let through as part of a name that no interface has, is refused. Structurally
/// the derived schema inlines the old `common` definition into `rule` and `failsafe`, and says
/// `anyOf` where the old said `oneOf` for a port (an integer or a string: never both).
#[test]
fn the_derived_schema_decides_as_the_hand_written_one() {
    let before: Value =
        serde_json::from_str(include_str!("fixtures/config.schema.before.json")).unwrap();
    let before = jsonschema::draft202012::new(&before).unwrap();
    let now = validator();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
    let mut docs: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    docs.extend(VALID.iter().map(|s| s.to_string()));
    docs.extend(invalid());
    let star_elsewhere = ["interfaces: [\"*\"]\n", "interfaces: [\"e*th\"]\n"];
    for doc in &docs {
        let d = yaml(doc);
        // `egress` is new: the old schema refused the key.
        if d.get("egress").is_some() && now.is_valid(&d) {
            assert!(!before.is_valid(&d), "{doc}");
        } else if star_elsewhere.contains(&doc.as_str()) {
            assert!(!now.is_valid(&d) && before.is_valid(&d), "{doc}");
        } else {
            assert_eq!(now.is_valid(&d), before.is_valid(&d), "{doc}");
        }
    }
    let pattern = yaml("interfaces: [\"eth*\", \"ens3\"]\n");
    assert!(now.is_valid(&pattern) && before.is_valid(&pattern));
}

#[test]
fn enums_match_the_parser() {
    let schema = nodewall::config::json_schema();
    let profiles: Vec<&str> = nodewall::profiles::all().iter().map(|p| p.name).collect();
    assert_eq!(schema["properties"]["profile"]["enum"], json!(profiles));
    assert_eq!(
        schema["properties"]["backend"]["enum"],
        json!(["nft", "xdp", "auto"])
    );
    assert_eq!(
        schema["$defs"]["rule"]["properties"]["protocol"]["enum"],
        json!(["tcp", "udp", "icmp", "icmpv6", "all"])
    );
}

/// `drops`: the schema and the parser accept and refuse the same documents.
#[test]
fn drops_section_in_the_schema() {
    let v = validator();
    let ok = [
        "rules: []\ndrops: {samples-per-second: 0}\n",
        "rules: []\ndrops: {samples-per-second: 1000, flow-log: {path: /var/log/nodewall/drops.jsonl}}\n",
        "rules: []\ndrops:\n  flow-log: {path: /x/drops.jsonl, max-size: 512KiB, max-files: 1}\n",
        "rules: []\ndrops:\n  flow-log: {path: /x/drops.jsonl, max-size: 1048576}\n",
    ];
    let bad = [
        "rules: []\ndrops: {samples-per-second: 1001}\n",
        "rules: []\ndrops: {samples-per-second: -1}\n",
        "rules: []\ndrops: {rate: 5}\n",
        "rules: []\ndrops: {flow-log: {max-size: 1MiB}}\n",
        "rules: []\ndrops: {flow-log: {path: relative.jsonl}}\n",
        "rules: []\ndrops: {flow-log: {path: /var/log/}}\n",
        "rules: []\ndrops: {flow-log: {path: /x/d.jsonl, max-size: 10MB}}\n",
        "rules: []\ndrops: {flow-log: {path: /x/d.jsonl, max-size: 512}}\n",
        "rules: []\ndrops: {flow-log: {path: /x/d.jsonl, max-files: 0}}\n",
        "rules: []\ndrops: {flow-log: {path: /x/d.jsonl, keep: 3}}\n",
    ];
    for doc in ok {
        assert!(v.is_valid(&yaml(doc)), "schema refused {doc}");
        nodewall::config::parse(doc, "ok.yaml").unwrap_or_else(|e| panic!("{doc}: {e}"));
    }
    for doc in bad {
        assert!(!v.is_valid(&yaml(doc)), "schema accepted {doc}");
        assert!(
            nodewall::config::parse(doc, "bad.yaml").is_err(),
            "parser accepted {doc}"
        );
    }
}
