//! nftables specifics: the installed table is exactly what `nodewall render` prints, a changed
//! CIDR touches only its own set, and a batch the kernel rejects leaves everything in place
//! and names the offending object.
//!
//! nft only, by nature: `render` prints an nft script and there is no table to list under XDP.
//! The XDP counterparts are elsewhere: what an XDP apply writes is checked entry by entry in
//! the agent's own tests (`agent/tests/xdp_testrun.rs`, through BPF_PROG_TEST_RUN), the
//! diff-only re-apply in `apply_time.rs`, and a refused apply leaving the previous policy in
//! place in `xdp_testrun.rs` (`too_many_rules_is_refused_and_nothing_changes`).

use nodewall_netns_tests::netns::Netns;
use nodewall_netns_tests::nodewall::{self, allow_rule, apply, host_cidrs, Config};
use nodewall_netns_tests::{can_run, Backend};

/// `nft list table inet nodewall` without handles' noise: counter values and the generation
/// number are blanked.
fn listing(ns: &Netns, handles: bool) -> anyhow::Result<String> {
    let args: &[&str] = if handles {
        &["-a", "list", "table", "inet", "nodewall"]
    } else {
        &["list", "table", "inet", "nodewall"]
    };
    Ok(ns
        .exec("nft", args)?
        .lines()
        .filter(|l| !l.trim_start().starts_with("packets "))
        .map(|l| match l.find("nodewall generation ") {
            Some(i) => format!(
                "{}nodewall generation N\"{}",
                &l[..i],
                l[i..].split_once('"').map(|x| x.1).unwrap_or("")
            ),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n"))
}

/// A rule over many networks of two prefix lengths per family, which the plan keeps in hash sets
/// by prefix length (masked lookups) rather than in one interval set.
fn many_nets_rule() -> String {
    let v4 = (0..40u32).map(|k| format!("198.18.{}.0/{}", 100 + 2 * k, 24 + k % 2 * 8));
    let v6 = (0..40u32).map(|k| format!("fd00:77:0:{:x}::/{}", 4 * k, 64 + k % 2 * 64));
    let from: Vec<String> = v4.chain(v6).collect();
    allow_rule("many-nets", "tcp", 8443, &from)
}

const EGRESS: &str = "egress:
  default: deny
  metadata: {deny-pods: true, except: [\"198.18.34.9/32\", \"fd00:34::9/128\"]}
  rules:
    - {name: no-smtp, action: deny, protocol: tcp, ports: [25, 465, \"587\"], to: [\"0.0.0.0/0\", \"::/0\"]}
    - {name: api, action: allow, protocol: tcp, ports: [\"443\"], to: [control-plane], source: host}
    - {name: pods-out, action: allow, protocol: all, to: [\"198.19.0.0/16\"], source: pod}
    - {name: ping-out, action: allow, protocol: icmpv6, to: [\"fd00:99::/64\"]}";

#[test]
fn installed_table_equals_render() {
    if !can_run("installed_table_equals_render") {
        return;
    }
    let bin = nodewall::binary().unwrap();
    let mut failures = Vec::new();
    for profile in nodewall::profiles_list() {
        for mode in ["enforce", "audit"] {
            let mut cfg = Config::new(Backend::Nft, Some(profile));
            cfg.mode = mode;
            cfg.rules = vec![
                "  - name: deny-scanners\n    action: deny\n    protocol: all\n    from: [\"198.19.0.0/16\", \"fd00:99::/64\"]".into(),
                many_nets_rule(),
            ];
            cfg.failsafe = vec![
                "  - protocol: tcp\n    ports: [\"22\"]\n    from: [\"0.0.0.0/0\", \"::/0\"]"
                    .into(),
            ];
            // Egress too: the output and forward hooks, destination and pod-source sets,
            // port sets, the egress drop chains.
            cfg.networks.push((
                "node-resolvers".into(),
                vec!["198.18.0.53".into(), "fd00::53".into()],
            ));
            cfg.egress = Some(EGRESS.into());
            let file = cfg.write().unwrap();
            let (by_netlink, by_script) =
                (Netns::new("nl").unwrap(), Netns::new("script").unwrap());
            apply(&by_netlink, &file).unwrap();
            let script = std::process::Command::new(&bin)
                .args(["render", "-c", file.path.to_str().unwrap()])
                .output()
                .unwrap();
            assert!(script.status.success());
            by_script.nft_load(&script.stdout).unwrap();
            let (a, b) = (
                listing(&by_netlink, false).unwrap(),
                listing(&by_script, false).unwrap(),
            );
            if a != b {
                failures.push(format!(
                    "{profile} {mode}:\n--- netlink\n{a}\n--- nft -f render\n{b}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn one_cidr_change_touches_only_its_set() {
    if !can_run("one_cidr_change_touches_only_its_set") {
        return;
    }
    let node = Netns::new("node").unwrap();
    let mut cfg = Config::new(Backend::Nft, Some("tke-node"));
    let file = cfg.write().unwrap();
    apply(&node, &file).unwrap();
    let before = listing(&node, true).unwrap();
    // container: fd00:34::/64 -> fd00:35::/64 (one interval of one set changes; the rule's two
    // IPv6 networks are a set, where its one IPv4 network is a compare).
    let v6 = cfg.networks[1].1.iter().position(|n| n == "fd00:34::/64");
    cfg.networks[1].1[v6.expect("the container's second IPv6 network")] = "fd00:35::/64".into();
    file.rewrite(&cfg.yaml()).unwrap();
    let report = apply(&node, &file).unwrap();
    assert_eq!(report["changed"], true);
    assert_eq!(
        (report["added"].as_u64(), report["removed"].as_u64()),
        (Some(1), Some(1)),
        "{report}"
    );
    let after = listing(&node, true).unwrap();
    let changed: Vec<(&str, &str)> = before
        .lines()
        .zip(after.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(before.lines().count(), after.lines().count());
    assert_eq!(
        changed.len(),
        2,
        "one element line and the generation rule's handle: {changed:#?}"
    );
    assert!(changed[0].1.contains("fd00:35::/64"), "{changed:#?}");
    assert!(changed[1].1.contains("nodewall generation"), "{changed:#?}");
    // Every rule of the inbound chain kept its handle: nothing was replaced there.
    let inbound = |s: &str| {
        s.split("chain inbound")
            .nth(1)
            .unwrap()
            .split('}')
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(inbound(&before), inbound(&after));
}

/// The objects of a listing (set, map, counter, chain with its rules), sorted: an object
/// created by a later apply is listed after older ones, which means nothing.
fn objects(listing: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    for l in listing.lines().filter(|l| !l.trim().is_empty()) {
        match out.last_mut() {
            Some(o) if l.starts_with("\t\t") || l == "\t}" => {
                o.push('\n');
                o.push_str(l);
            }
            _ => out.push(l.to_string()),
        }
    }
    out.sort();
    out.join("\n")
}

/// A rule of the dispatch tests.
fn port_rule(name: &str, action: &str, protocol: &str, ports: &str) -> String {
    let ports = if ports.is_empty() {
        String::new()
    } else {
        format!("\n    ports: [{ports}]")
    };
    format!(
        "  - name: {name}\n    action: {action}\n    protocol: {protocol}{ports}\n    from: [\"198.18.0.0/16\", \"fd00:18::/64\"]"
    )
}

/// Policies whose port dispatch appears, changes (classes split, merge and move, rules reorder)
/// and goes away, re-applied one after the other in one namespace: each apply goes in (a chain
/// that a map element still named, or a map element naming a chain not yet there, would fail
/// the batch), and leaves the table a fresh install of the same policy lists.
#[test]
fn dispatch_changes_apply_in_place() {
    if !can_run("dispatch_changes_apply_in_place") {
        return;
    }
    let a = port_rule("a", "allow", "tcp", "\"22\"");
    let b = port_rule("b", "allow", "tcp", "\"80\"");
    let b2 = port_rule("b", "allow", "tcp", "\"8080\", \"9000-9100\"");
    let c = port_rule("c", "deny", "tcp", "\"443\"");
    let c2 = port_rule("c", "deny", "tcp", "\"20-30\"");
    let d = port_rule("d", "deny", "all", "");
    let e = port_rule("e", "allow", "udp", "\"53\"");
    let steps: Vec<Vec<String>> = vec![
        vec![a.clone(), b.clone()],
        vec![a.clone(), b.clone(), c.clone()],
        vec![d.clone(), a.clone(), b2.clone(), c.clone(), e.clone()],
        vec![c2.clone(), d.clone(), a.clone(), b2.clone(), e.clone()],
        vec![a.clone(), e.clone()],
        vec![c2.clone(), a.clone(), b.clone(), d.clone()],
        vec![],
    ];
    let node = Netns::new("node").unwrap();
    let mut cfg = Config::new(Backend::Nft, None);
    let file = cfg.write().unwrap();
    let mut failures = Vec::new();
    for (i, rules) in steps.into_iter().enumerate() {
        cfg.rules = rules;
        file.rewrite(&cfg.yaml()).unwrap();
        let report = apply(&node, &file).unwrap_or_else(|e| panic!("step {i}: {e:#}"));
        assert_eq!(report["changed"], true, "step {i}: {report}");
        let again = apply(&node, &file).unwrap();
        assert_eq!(again["changed"], false, "step {i}: applied twice: {again}");
        let fresh = Netns::new("fresh").unwrap();
        apply(&fresh, &file).unwrap();
        let (have, want) = (
            objects(&listing(&node, false).unwrap()),
            objects(&listing(&fresh, false).unwrap()),
        );
        if have != want {
            failures.push(format!(
                "step {i}:\n--- re-applied\n{have}\n--- fresh\n{want}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn failed_batch_leaves_the_previous_ruleset() {
    if !can_run("failed_batch_leaves_the_previous_ruleset") {
        return;
    }
    let node = Netns::new("node").unwrap();
    let mut cfg = Config::new(Backend::Nft, Some("tke-node"));
    let file = cfg.write().unwrap();
    apply(&node, &file).unwrap();
    let before = node.exec("nft", &["-a", "list", "ruleset"]).unwrap();
    cfg.profile = Some("eks-node".into());
    file.rewrite(&cfg.yaml()).unwrap();
    let state = node.state_dir().unwrap();
    let snapshot = state.join("applied.snapshot");
    let applied = std::fs::read_to_string(&snapshot).unwrap();
    assert!(applied.contains("tke-node"), "{applied}");
    let out = nodewall::run(
        &node,
        &[
            "apply",
            "-c",
            file.path.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
        ],
        &[(nodewall::FAULT_ENV, "1")],
    )
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the apply must fail (a binary built without the `fault-injection` feature says so \
         here; build it with `cargo build -p nodewall --features fault-injection --bin \
         nodewall`): {stderr}"
    );
    assert!(
        stderr
            .contains("rejected add rule to chain inbound: iifname @nodewall-injected-missing-set"),
        "the error names the offending object: {stderr}"
    );
    assert!(
        stderr.contains("No such file or directory"),
        "and the kernel's error: {stderr}"
    );
    assert_eq!(
        node.exec("nft", &["-a", "list", "ruleset"]).unwrap(),
        before,
        "nothing changed"
    );
    // The snapshot a rollback would restore is still the policy in force; the new one, written
    // while the kernel took the batch, is gone with it.
    assert_eq!(std::fs::read_to_string(&snapshot).unwrap(), applied);
    assert!(!state.join("applied.snapshot.tmp").exists());
    // Without the fault the same apply goes through.
    let report = apply(&node, &file).unwrap();
    assert_eq!(report["generation"], 2);
}

/// The listing of `nft -f` of what `render` prints for `file`, in a namespace of its own.
fn render_listing(file: &nodewall::ConfigFile) -> String {
    let script = std::process::Command::new(nodewall::binary().unwrap())
        .args(["render", "-c", file.path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(script.status.success());
    let ns = Netns::new("script").unwrap();
    ns.nft_load(&script.stdout).unwrap();
    listing(&ns, false).unwrap()
}

/// A rule over `n` non-adjacent /32s (kept in a hash set of /32s).
fn hosts_rule(n: u32) -> String {
    allow_rule("hosts", "tcp", 8443, &host_cidrs(n))
}

/// Sets of networks are declared with a size (so the kernel allocates their hash once), which
/// is also the most they hold: a policy that outgrows it gets the table rebuilt with the new
/// size in the same apply, and a policy that still fits it changes nothing, whether the agent
/// remembers the table or reads it back.
#[test]
fn a_set_outgrowing_its_size_is_rebuilt() {
    if !can_run("a_set_outgrowing_its_size_is_rebuilt") {
        return;
    }
    let node = Netns::new("node").unwrap();
    let mut cfg = Config::new(Backend::Nft, None);
    let hosts_set = |listing: &str| -> (String, usize) {
        let set = listing
            .split("set src4p32.")
            .nth(1)
            .expect("a set of /32s")
            .split('}')
            .next()
            .unwrap()
            .to_string();
        let size = set
            .lines()
            .find_map(|l| l.trim().strip_prefix("size "))
            .unwrap_or("none")
            .to_string();
        (size, set.matches("198.18.").count())
    };
    cfg.rules = vec![hosts_rule(40)];
    let file = cfg.write().unwrap();
    apply(&node, &file).unwrap();
    assert_eq!(
        hosts_set(&listing(&node, false).unwrap()),
        ("64".into(), 40)
    );
    cfg.rules = vec![hosts_rule(200)];
    file.rewrite(&cfg.yaml()).unwrap();
    let report = apply(&node, &file).unwrap();
    assert_eq!(report["changed"], true, "{report}");
    let grown = listing(&node, false).unwrap();
    assert_eq!(hosts_set(&grown), ("512".into(), 200));
    // The rebuilt table is exactly what `render` prints.
    assert!(
        objects(&grown) == objects(&render_listing(&file)),
        "the rebuilt table differs from render:\n{grown}"
    );
    // Within its size, a policy applies in place and an unchanged one changes nothing, with
    // the apply record and, once it is gone, from a dump of the kernel's table.
    cfg.rules = vec![hosts_rule(190)];
    file.rewrite(&cfg.yaml()).unwrap();
    let report = apply(&node, &file).unwrap();
    assert_eq!(
        (report["added"].as_u64(), report["removed"].as_u64()),
        (Some(0), Some(10)),
        "{report}"
    );
    assert_eq!(
        hosts_set(&listing(&node, false).unwrap()),
        ("512".into(), 190)
    );
    assert_eq!(apply(&node, &file).unwrap()["changed"], false);
    std::fs::remove_file(node.state_dir().unwrap().join("nft-sets.json")).unwrap();
    assert_eq!(apply(&node, &file).unwrap()["changed"], false);
}
