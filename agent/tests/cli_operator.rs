//! What an operator trying nodewall out runs into: output piped into `head`, hostile files,
//! bad arguments, scripts asserting verdicts (issue 13).

mod cli_support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cli_support::{
    example, explain_tcp, is_root, nodewall, nodewall_into_closed_pipe, stderr, stdout, temp_config,
};

/// A config whose rendered script is far larger than a pipe's buffer.
fn big_config() -> tempfile::NamedTempFile {
    let cidrs: Vec<String> = (0..5000)
        .map(|i| format!("\"198.18.{}.{}/32\"", i / 250, i % 250))
        .collect();
    temp_config(&format!(
        "interfaces: [eth0]\nrules:\n  - name: many\n    action: allow\n    protocol: tcp\n    ports: [\"22\"]\n    from: [{}]\n",
        cidrs.join(", ")
    ))
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let cfg = example("tke-node.yaml");
    let big = big_config();
    let big = big.path().to_str().unwrap();
    let probe = "{\"from\":\"203.0.113.7\",\"protocol\":\"tcp\",\"port\":22}\n".repeat(100);
    let mut runs: Vec<(Vec<&str>, Option<&[u8]>)> = vec![
        (vec!["profiles"], None),
        (vec!["profiles", "tke-node"], None),
        (vec!["profiles", "--json"], None),
        (vec!["schema"], None),
        (vec!["check", "-c", &cfg], None),
        (explain_tcp(&cfg, "22", &[]), None),
        (
            vec!["explain", "--batch", "-c", &cfg],
            Some(probe.as_bytes()),
        ),
        (vec!["render", "-c", big], None),
        (vec!["completions", "bash"], None),
        (vec!["man"], None),
    ];
    if is_root() {
        runs.push((vec!["status"], None));
        runs.push((vec!["status", "--json"], None));
    }
    for (args, input) in runs {
        let o = nodewall_into_closed_pipe(&args, input);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
        assert!(
            !stderr(&o).contains("panicked") && !stderr(&o).contains("Broken pipe"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
}

#[test]
fn an_endless_or_huge_file_is_refused_without_reading_it_all() {
    let start = Instant::now();
    let mut child = Command::new(cli_support::bin())
        .args(["check", "-c", "/dev/zero"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("check -c /dev/zero still reading after 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.starts_with("/dev/zero:1:1: (file): larger than 32 MiB"),
        "{err}"
    );
}

#[test]
fn a_huge_value_is_not_echoed_back_whole() {
    let scalar = "x".repeat(2 << 20);
    let cfg = temp_config(&format!(
        "rules:\n  - name: a\n    action: allow\n    protocol: tcp\n    ports: [\"22\"]\n    from: [\"{scalar}\"]\n    x: {scalar}\n"
    ));
    let o = nodewall(&["check", "-c", cfg.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.len() < 8 * 1024, "{} bytes of errors", err.len());
    assert!(err.contains("rules[0].from[0]"), "{err}");
}

#[test]
fn undecodable_missing_and_tagged_files_are_located() {
    let latin1 = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(latin1.path(), b"mode: enforce\nrules:\n  - name: caf\xe9\n").unwrap();
    let p = latin1.path().to_str().unwrap();
    let o = nodewall(&["check", "-c", p]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).starts_with(&format!("{p}:3:14: (file): not UTF-8 text: byte 0xe9")),
        "{}",
        stderr(&o)
    );
    let binary = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(binary.path(), [0x7f, b'E', b'L', b'F', 0xff, 0, 0]).unwrap();
    let p = binary.path().to_str().unwrap();
    let o = nodewall(&["check", "-c", p]);
    assert!(
        stderr(&o).starts_with(&format!("{p}:1:5: (file): not UTF-8")),
        "{}",
        stderr(&o)
    );
    // A missing file: the same format from every command that reads a config.
    for cmd in ["check", "render", "explain", "apply"] {
        let mut args = vec![cmd, "-c", "/nonexistent/nodewall.yaml"];
        if cmd == "explain" {
            args.extend(["--from", "198.18.0.1", "--protocol", "icmp"]);
        }
        if cmd == "apply" {
            args.extend(["--state-dir", "/nonexistent/state"]);
        }
        let o = nodewall(&args);
        assert_eq!(o.status.code(), Some(2), "{cmd}: {}", stderr(&o));
        assert!(
            stderr(&o)
                .starts_with("/nonexistent/nodewall.yaml:1:1: (file): cannot open: No such file"),
            "{cmd}: {}",
            stderr(&o)
        );
    }
    let tagged = temp_config("mode: !!python/object:os.system enforce\n");
    let o = nodewall(&["check", "-c", tagged.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o)
            .contains(":1:7: (document): YAML tag `!!python/object:os.system` is not supported"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn render_refuses_interface_names_nft_would_reject() {
    let cfg = example("tke-node.yaml");
    for bad in ["", "a-thirty-character-long-name-x", "eth 0", "*", "e*th"] {
        let o = nodewall(&["render", "-c", &cfg, "--interfaces", bad]);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {}", stdout(&o));
        assert!(stderr(&o).contains("--interfaces"), "{}", stderr(&o));
        assert!(o.stdout.is_empty());
    }
    let o = nodewall(&["render", "-c", &cfg, "--interfaces", "eth0,ens*"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let script = stdout(&o);
    assert!(script.contains("elements = { \"eth0\" }"), "{script}");
    assert!(script.contains("iifname \"ens*\" goto inbound"), "{script}");
}

#[test]
fn config_interface_patterns_must_end_in_the_wildcard() {
    let o = nodewall(&[
        "check",
        "-c",
        temp_config("interfaces: [\"eth0\", \"e*th\", \"*\"]\n")
            .path()
            .to_str()
            .unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains(":1:22: interfaces[1]: invalid interface pattern `e*th`"),
        "{err}"
    );
    assert!(
        err.contains("interfaces[2]: invalid interface pattern `*`"),
        "{err}"
    );
}

#[test]
fn explain_batch_goes_on_past_a_bad_line_and_names_the_json_field() {
    let cfg = example("tke-node.yaml");
    let input = [
        r#"{"from":"203.0.113.7","protocol":"udp","port":32768}"#,
        r#"{"from":"203.0.113.7","protocol":"tcp"}"#,
        r#"not json"#,
        r#"{"from":"203.0.113.7","protocol":"udp","port":32769}"#,
    ]
    .join("\n");
    let mut child = Command::new(cli_support::bin())
        .args(["explain", "--batch", "-c", &cfg])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(2), "invalid input");
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "one answer per probe, in order");
    assert_eq!(lines[0]["action"], "allow");
    assert_eq!(lines[1]["line"], 2);
    assert_eq!(lines[1]["error"], "port: is required for tcp and udp");
    assert_eq!(lines[2]["line"], 3);
    assert_eq!(lines[3]["action"], "deny");
    let err = stderr(&o);
    assert!(err.contains("stdin:2: port: is required"), "{err}");
    assert!(!err.contains("--port"), "{err}");
}

#[test]
fn explain_expect_lets_a_script_assert_the_decision() {
    let cfg = example("tke-node.yaml");
    let probe = |port: &str, expect: &str| {
        nodewall(&explain_tcp(&cfg, port, &["--expect", expect]))
            .status
            .code()
    };
    assert_eq!(probe("30080", "allow"), Some(0));
    assert_eq!(probe("30080", "deny"), Some(1));
    assert_eq!(probe("10250", "deny"), Some(0));
    assert_eq!(probe("10250", "allow"), Some(1));
    let help = stdout(&nodewall(&["explain", "--help"]));
    assert!(help.contains("Exit codes"), "{help}");
}

#[test]
fn v4_mapped_sources_are_refused() {
    let cfg = temp_config(
        "rules:\n  - name: a\n    action: allow\n    protocol: tcp\n    ports: [\"22\"]\n    from: [\"::ffff:1.2.3.4\", \"::ffff:10.0.0.0/104\"]\n",
    );
    let o = nodewall(&["check", "-c", cfg.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains(":6:12: rules[0].from[0]: `::ffff:1.2.3.4` is an IPv4-mapped IPv6 address")
            && err.contains("write `1.2.3.4`"),
        "{err}"
    );
    assert!(err.contains("write `10.0.0.0/8`"), "{err}");
}

#[test]
fn flush_refuses_while_an_agent_holds_the_node_lock() {
    let dir = tempfile::tempdir().unwrap();
    let lock = std::fs::File::create(dir.path().join("lock")).unwrap();
    // SAFETY: flock on a descriptor this test owns.
    assert_eq!(
        unsafe {
            libc::flock(
                std::os::fd::AsRawFd::as_raw_fd(&lock),
                libc::LOCK_EX | libc::LOCK_NB,
            )
        },
        0
    );
    std::fs::write(dir.path().join("lock"), "4242 run\n").unwrap();
    let o = nodewall(&[
        "flush",
        "--state-dir",
        dir.path().to_str().unwrap(),
        "--backend",
        "nft",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("pid 4242, `nodewall run`"),
        "{}",
        stderr(&o)
    );
    assert!(!stdout(&o).contains("flushed"));
}

#[test]
fn completions_and_man_page() {
    for shell in ["bash", "zsh", "fish"] {
        let o = nodewall(&["completions", shell]);
        assert!(o.status.success(), "{shell}: {}", stderr(&o));
        let text = stdout(&o);
        for cmd in ["explain", "confirm", "flush"] {
            assert!(text.contains(cmd), "{shell} completion lacks {cmd}");
        }
    }
    let o = nodewall(&["man"]);
    assert!(o.status.success());
    let page = stdout(&o);
    assert!(
        page.starts_with(".ie") || page.contains(".TH nodewall"),
        "{page}"
    );
    assert!(
        page.contains("confirm") && page.contains("EXIT STATUS"),
        "{page}"
    );
}

#[test]
fn check_warns_about_egress_rules_that_cannot_match() {
    let cfg = temp_config(
        "egress:\n  default: deny\n  rules:\n    - name: no-web\n      action: deny\n      protocol: tcp\n      ports: [\"443\"]\n      to: [\"0.0.0.0/0\", \"::/0\"]\n    - name: api\n      action: allow\n      protocol: tcp\n      ports: [\"443\"]\n      to: [\"198.18.48.0/24\"]\n      source: host\n    - name: host-dns\n      action: allow\n      protocol: udp\n      ports: [\"53\"]\n      to: [\"198.18.0.0/15\"]\n      source: host\n    - name: pod-dns\n      action: allow\n      protocol: udp\n      ports: [\"53\"]\n      to: [\"198.18.1.0/24\"]\n      source: pod\n",
    );
    let p = cfg.path().to_str().unwrap();
    let o = nodewall(&["check", "-c", p]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("{p}:9:7: egress.rules[1]: warning: egress rule `api` can never match: the earlier egress rule `no-web` (deny)")),
        "{err}"
    );
    // A host-only rule does not shadow a pod rule.
    assert!(!err.contains("pod-dns"), "{err}");
    let o = nodewall(&["check", "--strict", "-c", p]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn check_warns_about_rules_that_cannot_do_what_they_seem_to() {
    let cfg = temp_config(
        "failsafe: []\nrules:\n  - name: web\n    action: allow\n    protocol: tcp\n    ports: [\"80\", \"443\"]\n    from: [\"198.18.0.0/15\"]\n  - name: web-lab\n    action: deny\n    protocol: tcp\n    ports: [\"443\"]\n    from: [\"198.18.5.0/24\"]\n  - name: deny-all\n    action: deny\n    protocol: all\n    from: [\"0.0.0.0/0\", \"::/0\"]\n",
    );
    let p = cfg.path().to_str().unwrap();
    let o = nodewall(&["check", "-c", p]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("{p}:8:5: rules[1]: warning: rule `web-lab` can never match: the earlier rule `web` (allow)")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{p}:13:5: rules[2]: warning: the failsafe is disabled"
        )),
        "{err}"
    );
    assert!(stdout(&o).contains("2 warning(s)"), "{}", stdout(&o));
    let o = nodewall(&["check", "--json", "-c", p]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["warnings"].as_array().unwrap().len(), 2, "{v}");
}

#[test]
fn check_strict_makes_shadowed_rules_errors() {
    // `kubelet-lab` is shadowed by `kubelet` (same port, a wider source), `dns-v6` by
    // `dns` (every address of both families); `ssh` is not (other port).
    let cfg = temp_config(
        "rules:\n  - name: kubelet\n    action: allow\n    protocol: tcp\n    ports: [\"10250\"]\n    from: [\"198.18.0.0/15\"]\n  - name: kubelet-lab\n    action: deny\n    protocol: tcp\n    ports: [\"10250\"]\n    from: [\"198.18.7.0/24\"]\n  - name: dns\n    action: allow\n    protocol: udp\n    ports: [\"53\"]\n    from: [\"0.0.0.0/0\", \"::/0\"]\n  - name: dns-v6\n    action: deny\n    protocol: udp\n    ports: [\"53\"]\n    from: [\"fd00::/8\"]\n  - name: ssh\n    action: deny\n    protocol: tcp\n    ports: [\"2222\"]\n    from: [\"198.18.7.0/24\"]\n",
    );
    let p = cfg.path().to_str().unwrap();
    let o = nodewall(&["check", "-c", p]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("rules[1]: warning: rule `kubelet-lab` can never match: the earlier rule `kubelet` (allow)"), "{err}");
    assert!(
        err.contains(
            "rules[3]: warning: rule `dns-v6` can never match: the earlier rule `dns` (allow)"
        ),
        "{err}"
    );
    assert!(!err.contains("`ssh`"), "{err}");
    let o = nodewall(&["check", "--strict", "-c", p]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("{p}:7:5: rules[1]: error: rule `kubelet-lab`")),
        "{err}"
    );
    assert!(err.contains("errors under --strict"), "{err}");
    assert!(stdout(&o).is_empty(), "{}", stdout(&o));
    let o = nodewall(&["check", "--strict", "--json", "-c", p]);
    assert_eq!(o.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["valid"], false, "{v}");
    // Without warnings, --strict passes.
    let clean = temp_config("rules:\n  - name: ssh\n    action: deny\n    protocol: tcp\n    ports: [\"2222\"]\n    from: [\"198.18.7.0/24\"]\n");
    let o = nodewall(&["check", "--strict", "-c", clean.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn drops_without_an_agent_says_where_it_looked() {
    let dir = tempfile::tempdir().unwrap();
    let o = nodewall(&["drops", "--state-dir", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("agent.sock") && err.contains("nodewall run"),
        "{err}"
    );
}

#[test]
fn verbose_logs_are_nodewall_s_not_every_library_s() {
    if !is_root() {
        eprintln!("skipped: reading the kernel's nft state needs root");
        return;
    }
    let o = nodewall(&["-v", "status", "--backend", "nft"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("mnl::"), "{}", stderr(&o));
    let o = nodewall(&["-vvv", "status", "--backend", "nft"]);
    assert!(
        stderr(&o).contains("mnl::socket"),
        "-vvv shows them: {}",
        stderr(&o)
    );
}
