//! The command line as a user drives it: exit codes, text and JSON output, `--help`.

mod cli_support;

use std::io::Write;
use std::process::{Command, Stdio};

use cli_support::{example, explain_tcp, nodewall, stderr, stdout, temp_config};

#[test]
fn help_is_available_for_every_command() {
    let o = nodewall(&["--help"]);
    assert!(o.status.success());
    let help = stdout(&o);
    // Every command that `--help` lists, not a hand-kept copy of the list.
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        // A wrapped description continues further in.
        .filter(|l| !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    for expected in [
        "profiles",
        "check",
        "schema",
        "render",
        "explain",
        "apply",
        "confirm",
        "run",
        "status",
        "flush",
        "completions",
        "man",
    ] {
        assert!(commands.contains(&expected), "{expected} missing: {help}");
    }
    assert!(help.contains("Exit codes:"), "{help}");
    for cmd in commands {
        let o = nodewall(&[cmd, "--help"]);
        assert!(o.status.success(), "{cmd} --help: {}", stderr(&o));
        assert!(stdout(&o).contains("Usage: nodewall"), "{cmd}");
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
    let o = nodewall(&explain_tcp(&cfg, "30080", &["--json"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["verdict"], "accept");
    assert_eq!(v["rule"], "tke-node/nodeport-tcp");
    assert_eq!(v["origin"]["provenance"]["row"], 3);

    let o = nodewall(&explain_tcp(&cfg, "10250", &[]));
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
    let mut child = Command::new(cli_support::bin())
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
