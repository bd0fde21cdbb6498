//! The command line as a user drives it: exit codes, text and JSON output, `--help`.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn nodewall(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nodewall"))
        .args(args)
        .output()
        .expect("run nodewall")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn example(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/examples")
        .join(name)
        .display()
        .to_string()
}

fn temp_config(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

#[test]
fn help_is_available_for_every_command() {
    for cmd in [
        "profiles", "check", "schema", "render", "explain", "apply", "status", "flush",
    ] {
        let o = nodewall(&[cmd, "--help"]);
        assert!(o.status.success(), "{cmd} --help: {}", stderr(&o));
        assert!(stdout(&o).contains("Usage:"), "{cmd}");
    }
}

#[test]
fn profiles_lists_every_builtin_and_shows_provenance() {
    let o = nodewall(&["profiles"]);
    assert!(o.status.success());
    let text = stdout(&o);
    for name in [
        "tke-node",
        "tke-master",
        "eks-cluster",
        "eks-cluster-restricted",
        "eks-node",
        "eks-node-recommended",
        "eks-control-plane",
        "ack-node",
        "ack-node-recommended",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "{name} missing from:\n{text}"
        );
    }
    let o = nodewall(&["profiles", "tke-master"]);
    let text = stdout(&o);
    assert!(
        text.contains("002_45cfe4d06b09d118.txt")
            && text.contains("row 4")
            && text.contains("61678"),
        "{text}"
    );
    let o = nodewall(&["profiles", "tke-master", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["rules"].as_array().unwrap().len(), 10);
    let o = nodewall(&["profiles", "no-such"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("tke-node"), "lists valid names");
}

#[test]
fn check_exits_0_on_examples_and_2_with_located_errors() {
    for ex in [
        "tke-node.yaml",
        "tke-master.yaml",
        "eks-node.yaml",
        "ack-node.yaml",
        "standalone.yaml",
    ] {
        let o = nodewall(&["check", "-c", &example(ex)]);
        assert!(o.status.success(), "{ex}: {}", stderr(&o));
    }
    let bad = temp_config("backend: nft\nrules:\n  - name: web\n    action: allow\n    protocol: tcp\n    ports: [\"0\"]\n    from: [10.0.0.1/33]\n");
    let o = nodewall(&["check", "-c", bad.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.contains(":6:") || l.contains(":7:"))
        .collect();
    assert!(
        err.contains("rules[0].ports[0]") && err.contains("rules[0].from[0]"),
        "{err}"
    );
    assert!(lines.len() >= 2, "both errors located:\n{err}");
    let o = nodewall(&["check", "--json", "-c", bad.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["errors"].as_array().unwrap().len() >= 2);
}

#[test]
fn explain_names_the_rule_and_seed_row() {
    let cfg = example("tke-node.yaml");
    let o = nodewall(&[
        "explain",
        "-c",
        &cfg,
        "--from",
        "203.0.113.7",
        "--protocol",
        "tcp",
        "--port",
        "30080",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["verdict"], "accept");
    assert_eq!(v["rule"], "tke-node/nodeport-tcp");
    assert_eq!(v["origin"]["provenance"]["row"], 3);

    let o = nodewall(&[
        "explain",
        "-c",
        &cfg,
        "--from",
        "203.0.113.7",
        "--protocol",
        "tcp",
        "--port",
        "10250",
    ]);
    assert!(o.status.success());
    assert!(
        stdout(&o).contains("DENY") && stdout(&o).contains("default-deny"),
        "{}",
        stdout(&o)
    );

    // A probe that does not fit (icmpv6 from an IPv4 source) is invalid input.
    let o = nodewall(&[
        "explain",
        "-c",
        &cfg,
        "--from",
        "203.0.113.7",
        "--protocol",
        "icmpv6",
    ]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn explain_batch_answers_one_json_line_per_probe() {
    let cfg = example("tke-node.yaml");
    let mut child = Command::new(env!("CARGO_BIN_EXE_nodewall"))
        .args(["explain", "--batch", "-c", &cfg])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let probes = [
        r#"{"from":"203.0.113.7","protocol":"udp","port":32768}"#,
        r#"{"from":"203.0.113.7","protocol":"udp","port":32769}"#,
        r#"{"from":"2001:db8::1","protocol":"icmpv6","icmp_type":128}"#,
        r#"{"from":"203.0.113.7","protocol":"tcp","port":443,"tcp_flags":"ack","state":"established"}"#,
    ];
    child
        .stdin
        .take()
        .unwrap()
        .write_all(probes.join("\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let verdicts: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let actions: Vec<&str> = verdicts
        .iter()
        .map(|v| v["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["allow", "deny", "allow", "allow"]);
    // The example starts in audit mode: the would-be drop is counted but accepted.
    assert_eq!(verdicts[1]["mode"], "audit");
    assert_eq!(verdicts[1]["verdict"], "accept");
    assert_eq!(verdicts[1]["reason"], "default-deny");
    assert_eq!(verdicts[3]["reason"], "established");
}

#[test]
fn schema_is_json_with_the_top_level_keys() {
    let o = nodewall(&["schema"]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for key in [
        "backend",
        "mode",
        "interfaces",
        "profile",
        "networks",
        "rules",
        "failsafe",
        "implicit",
    ] {
        assert!(v["properties"].get(key).is_some(), "schema lacks {key}");
    }
}
