//! Counters, under every profile: the drops a test causes show up in `nodewall status`, by
//! reason (`default-deny`, `rule` with the rule's name, `invalid`), family and protocol; allowed
//! packets in their rule's counter; audit mode counts would-be drops and lets them through; re-applying a changed
//! policy never resets a counter.

use std::net::IpAddr;

use anyhow::Context;
use nodewall_netns_tests::nodewall::{
    apply, drop_packets, explain, rule_packets, status, Config, ConfigFile,
};
use nodewall_netns_tests::packet::{L4, TCP_FIN, TCP_SYN};
use nodewall_netns_tests::probe::{next_port, Probe, Prober};
use nodewall_netns_tests::topology::Topology;
use nodewall_netns_tests::{backend_tests, Backend};

const DENY_RULE: &str = "  - name: deny-partner-udp\n    action: deny\n    protocol: udp\n    from: [\"198.19.0.0/24\", \"fd00:99::/64\"]";

fn inet(topo: &Topology, v6: bool) -> IpAddr {
    topo.internet.addr(v6)
}

fn times(n: usize, f: impl Fn() -> Probe) -> Vec<Probe> {
    (0..n).map(|_| f()).collect()
}

/// SYN+FIN: conntrack refuses the flag combination, the packet is `ct state invalid`.
fn invalid_tcp(src: IpAddr) -> Probe {
    Probe {
        src,
        l4: L4::Tcp {
            sport: next_port(),
            dport: 30080,
            flags: TCP_SYN | TCP_FIN,
        },
    }
}

/// A probe some profile rule allows (the first that `explain` accepts by a rule), with that
/// rule's name.
fn allowed_probe(topo: &Topology, file: &ConfigFile) -> anyhow::Result<(Probe, String)> {
    let mut candidates = Vec::new();
    for (peer, _) in topo.remote_peers() {
        for v6 in [false, true] {
            let src = peer.addr(v6);
            candidates.extend([
                Probe::tcp(src, 30080),
                Probe::tcp(src, 443),
                Probe::tcp(src, 10250),
                Probe::ping(src),
            ]);
        }
    }
    let verdicts = explain(file, &candidates)?;
    candidates
        .into_iter()
        .zip(verdicts)
        .find(|(_, v)| v["verdict"] == "accept" && v["reason"] == "rule")
        .map(|(p, v)| (p, v["rule"].as_str().unwrap_or_default().to_string()))
        .context("no probe allowed by a rule")
}

fn drops_are_counted_by_reason_and_rule(backend: Backend) -> anyhow::Result<()> {
    let topo = Topology::new()?;
    let mut prober = Prober::new(&topo)?;
    for profile in nodewall::profiles::all() {
        let mut cfg = Config::new(backend, Some(profile.name));
        cfg.rules = vec![DENY_RULE.into()];
        let file = cfg.write()?;
        apply(&topo.node, &file)?;
        counted(&topo, &mut prober, backend, &file)
            .with_context(|| format!("profile {}", profile.name))?;
    }
    Ok(())
}

/// Sends known drops and allowed packets; the counters move by exactly that much.
fn counted(
    topo: &Topology,
    prober: &mut Prober,
    backend: Backend,
    file: &ConfigFile,
) -> anyhow::Result<()> {
    let before = status(&topo.node, backend)?;
    anyhow::ensure!(before["installed"] == true && before["backend"] == backend.cli_name());
    anyhow::ensure!(
        before["interfaces"] == serde_json::json!(["eth0"]),
        "interfaces: {}",
        before["interfaces"]
    );
    let rules: Vec<&str> = before["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r.as_str())
        .collect();
    anyhow::ensure!(
        rules.last() == Some(&"deny-partner-udp"),
        "rules in evaluation order: {rules:?}"
    );
    let (allowed, allowed_rule) = allowed_probe(topo, file)?;

    let mut probes = Vec::new();
    probes.extend(times(3, || Probe::tcp(inet(topo, false), 10250))); // default-deny ipv4 tcp
    probes.extend(times(2, || Probe::tcp(inet(topo, true), 10250))); // default-deny ipv6 tcp
    probes.extend(times(4, || Probe::udp(inet(topo, false), 5353))); // rule ipv4 udp
    probes.extend(times(5, || Probe::udp(inet(topo, true), 5353))); // rule ipv6 udp
    probes.extend(times(2, || invalid_tcp(inet(topo, false)))); // invalid ipv4 tcp
    probes.extend(times(1, || invalid_tcp(inet(topo, true)))); // invalid ipv6 tcp
                                                               // The same allowed packet six times, each a new flow.
    probes.extend(times(6, || match allowed.l4 {
        L4::Tcp { dport, .. } => Probe::tcp(allowed.src, dport),
        _ => Probe::ping(allowed.src),
    }));
    // The reference agrees on what each of these is.
    let verdicts = explain(file, &probes[..14])?;
    for (v, (reason, rule)) in verdicts.iter().zip(
        std::iter::repeat_n(("default-deny", None), 5)
            .chain(std::iter::repeat_n(("rule", Some("deny-partner-udp")), 9)),
    ) {
        anyhow::ensure!(
            v["reason"] == reason && v["rule"].as_str() == rule,
            "explain: {v}"
        );
    }
    let seen = prober.send(&probes)?;
    let passed = seen.iter().filter(|s| **s).count();
    anyhow::ensure!(
        passed == 6 && seen[17..].iter().all(|s| *s),
        "only the 6 allowed probes pass: {seen:?}"
    );

    let after = status(&topo.node, backend)?;
    let delta = |reason: &str, rule: &str, family: &str, proto: &str| {
        drop_packets(&after, reason, rule, family, proto)
            - drop_packets(&before, reason, rule, family, proto)
    };
    let rule_delta = |rule: &str| rule_packets(&after, rule) - rule_packets(&before, rule);
    let checks = [
        (
            delta("default-deny", "", "ipv4", "tcp"),
            3,
            "default-deny ipv4 tcp".to_string(),
        ),
        (
            delta("default-deny", "", "ipv6", "tcp"),
            2,
            "default-deny ipv6 tcp".into(),
        ),
        (
            delta("rule", "deny-partner-udp", "ipv4", "udp"),
            4,
            "rule deny-partner-udp ipv4 udp".into(),
        ),
        (
            delta("rule", "deny-partner-udp", "ipv6", "udp"),
            5,
            "rule deny-partner-udp ipv6 udp".into(),
        ),
        (
            delta("invalid", "", "ipv4", "tcp"),
            2,
            "invalid ipv4 tcp".into(),
        ),
        (
            delta("invalid", "", "ipv6", "tcp"),
            1,
            "invalid ipv6 tcp".into(),
        ),
        (
            rule_delta("deny-partner-udp"),
            9,
            "rule counter deny-partner-udp".into(),
        ),
        (
            rule_delta(&allowed_rule),
            6,
            format!("rule counter {allowed_rule}"),
        ),
    ];
    let wrong: Vec<String> = checks
        .iter()
        .filter(|(got, want, _)| got != want)
        .map(|(got, want, what)| format!("{what}: +{got}, want +{want}"))
        .collect();
    anyhow::ensure!(wrong.is_empty(), "{}", wrong.join("\n"));

    // The text output names them too.
    let text = nodewall_netns_tests::nodewall::run(
        &topo.node,
        &["status", "--backend", backend.cli_name()],
        &[],
    )?;
    let text = String::from_utf8_lossy(&text.stdout);
    anyhow::ensure!(
        text.contains("deny-partner-udp")
            && text.contains("default-deny")
            && text.contains(&allowed_rule),
        "{text}"
    );
    Ok(())
}

fn audit_mode_counts_and_accepts(backend: Backend) -> anyhow::Result<()> {
    let topo = Topology::new()?;
    let mut prober = Prober::new(&topo)?;
    let mut cfg = Config::new(backend, Some("eks-node"));
    cfg.mode = "audit";
    apply(&topo.node, &cfg.write()?)?;
    let before = status(&topo.node, backend)?;
    let probes: Vec<Probe> = times(7, || Probe::tcp(inet(&topo, false), 10250))
        .into_iter()
        .chain(times(3, || Probe::udp(inet(&topo, true), 30053)))
        .collect();
    let seen = prober.send(&probes)?;
    anyhow::ensure!(
        seen.iter().all(|s| *s),
        "audit mode lets would-be drops through: {seen:?}"
    );
    let after = status(&topo.node, backend)?;
    let v4 = drop_packets(&after, "default-deny", "", "ipv4", "tcp")
        - drop_packets(&before, "default-deny", "", "ipv4", "tcp");
    let v6 = drop_packets(&after, "default-deny", "", "ipv6", "udp")
        - drop_packets(&before, "default-deny", "", "ipv6", "udp");
    anyhow::ensure!(
        v4 == 7 && v6 == 3,
        "would-be drops counted: ipv4 tcp +{v4} (want 7), ipv6 udp +{v6} (want 3)"
    );

    // Switching to enforce keeps the counts and starts dropping.
    cfg.mode = "enforce";
    apply(&topo.node, &cfg.write()?)?;
    let seen = prober.send(&times(2, || Probe::tcp(inet(&topo, false), 10250)))?;
    anyhow::ensure!(seen.iter().all(|s| !*s), "enforce drops: {seen:?}");
    let last = status(&topo.node, backend)?;
    let total = drop_packets(&last, "default-deny", "", "ipv4", "tcp")
        - drop_packets(&before, "default-deny", "", "ipv4", "tcp");
    anyhow::ensure!(
        total == 9,
        "counter kept across the mode change: +{total}, want +9"
    );
    Ok(())
}

fn counters_survive_reapply(backend: Backend) -> anyhow::Result<()> {
    let topo = Topology::new()?;
    let mut prober = Prober::new(&topo)?;
    let mut cfg = Config::new(backend, Some("tke-node"));
    cfg.rules = vec![DENY_RULE.into()];
    let file = cfg.write()?;
    apply(&topo.node, &file)?;
    prober.send(&times(4, || Probe::tcp(inet(&topo, false), 10250)))?;
    prober.send(&times(3, || Probe::udp(inet(&topo, false), 9999)))?;
    prober.send(&times(5, || Probe::tcp(topo.cluster.addr(false), 10250)))?;
    let first = status(&topo.node, backend)?;
    // Change a network, add a rule, re-apply.
    cfg.networks[0].1.push("198.18.240.0/24".into());
    cfg.rules.insert(0, "  - name: extra\n    action: allow\n    protocol: tcp\n    ports: [\"7000\"]\n    from: [cluster]".into());
    file.rewrite(&cfg.yaml())?;
    let report = apply(&topo.node, &file)?;
    anyhow::ensure!(report["changed"] == true, "{report}");
    let second = status(&topo.node, backend)?;
    for (what, a, b) in [
        (
            "default-deny ipv4 tcp",
            drop_packets(&first, "default-deny", "", "ipv4", "tcp"),
            drop_packets(&second, "default-deny", "", "ipv4", "tcp"),
        ),
        (
            "rule ipv4 udp",
            drop_packets(&first, "rule", "deny-partner-udp", "ipv4", "udp"),
            drop_packets(&second, "rule", "deny-partner-udp", "ipv4", "udp"),
        ),
        (
            "cluster-network",
            rule_packets(&first, "tke-node/cluster-network"),
            rule_packets(&second, "tke-node/cluster-network"),
        ),
    ] {
        anyhow::ensure!(
            a > 0 && b >= a,
            "{what}: {a} before the re-apply, {b} after"
        );
    }
    anyhow::ensure!(
        second["generation"].as_u64() == first["generation"].as_u64().map(|g| g + 1),
        "generation goes up by one: {} -> {}",
        first["generation"],
        second["generation"]
    );
    Ok(())
}

backend_tests!(
    drops_are_counted_by_reason_and_rule,
    audit_mode_counts_and_accepts,
    counters_survive_reapply,
);
