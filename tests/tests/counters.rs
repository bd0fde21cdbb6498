//! Counters, under every profile: the drops a test causes show up in `nodewall status`, by
//! reason (`default-deny`, `rule` with the rule's name, `invalid`), family and protocol; allowed
//! packets in their rule's counter; audit mode counts would-be drops and lets them through;
//! re-applying a changed policy never resets a counter.
//!
//! `invalid` covers malformed packets (a TCP header shorter than TCP allows) and what
//! connection tracking refuses, such as SYN+FIN: conntrack for nft, the XDP program's own
//! tracking for XDP, counted alike.

use std::collections::BTreeMap;
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

/// A TCP header with a data offset below 20 bytes: malformed, `invalid` for every backend.
fn malformed_tcp(src: IpAddr) -> Probe {
    Probe {
        src,
        l4: L4::TcpBadOffset {
            sport: next_port(),
            dport: 30080,
        },
    }
}

/// SYN+FIN to a NodePort: connection tracking refuses the flag combination (`invalid`) on
/// every backend, though the rules would let a SYN to that port in.
fn syn_fin(src: IpAddr) -> Probe {
    Probe {
        src,
        l4: L4::Tcp {
            sport: next_port(),
            dport: 30080,
            flags: TCP_SYN | TCP_FIN,
        },
    }
}

/// Expected drop counter increases by (reason, rule, family, protocol).
type Drops = BTreeMap<(String, String, &'static str, &'static str), u64>;

fn add(
    drops: &mut Drops,
    reason: &str,
    rule: &str,
    family: &'static str,
    proto: &'static str,
    n: u64,
) {
    *drops
        .entry((reason.to_string(), rule.to_string(), family, proto))
        .or_default() += n;
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
    probes.extend(times(2, || malformed_tcp(inet(topo, false)))); // invalid ipv4 tcp
    probes.extend(times(1, || malformed_tcp(inet(topo, true)))); // invalid ipv6 tcp
                                                                 // The same allowed packet six times, each a new flow.
    probes.extend(times(6, || match allowed.l4 {
        L4::Tcp { dport, .. } => Probe::tcp(allowed.src, dport),
        _ => Probe::ping(allowed.src),
    }));
    // 23..: SYN+FIN from the internet, twice per family.
    let syn_fins: Vec<Probe> = [false, true, false, true]
        .iter()
        .map(|&v6| syn_fin(inet(topo, v6)))
        .collect();
    probes.extend(&syn_fins);
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
    // Expected increases: drops by (reason, rule, family, protocol), and rule counters.
    let mut drops = Drops::new();
    let mut rules: BTreeMap<String, u64> = BTreeMap::new();
    add(&mut drops, "default-deny", "", "ipv4", "tcp", 3);
    add(&mut drops, "default-deny", "", "ipv6", "tcp", 2);
    add(&mut drops, "invalid", "", "ipv4", "tcp", 2);
    add(&mut drops, "invalid", "", "ipv6", "tcp", 1);
    add(&mut drops, "rule", "deny-partner-udp", "ipv4", "udp", 4);
    add(&mut drops, "rule", "deny-partner-udp", "ipv6", "udp", 5);
    rules.insert("deny-partner-udp".into(), 9);
    *rules.entry(allowed_rule.clone()).or_default() += 6;
    // SYN+FIN: invalid, on every backend and for explain.
    let mut syn_fin_passes = Vec::new();
    for (p, v) in syn_fins.iter().zip(explain(file, &syn_fins)?) {
        let family = if p.src.is_ipv6() { "ipv6" } else { "ipv4" };
        anyhow::ensure!(v["reason"] == "invalid", "explain: SYN+FIN: {v}");
        syn_fin_passes.push(false);
        add(&mut drops, "invalid", "", family, "tcp", 1);
    }
    let seen = prober.send(&probes)?;
    anyhow::ensure!(
        seen[..17].iter().all(|s| !*s)
            && seen[17..23].iter().all(|s| *s)
            && seen[23..] == syn_fin_passes[..],
        "only the 6 allowed probes pass, and SYN+FIN gets {syn_fin_passes:?}: {seen:?}"
    );

    let after = status(&topo.node, backend)?;
    let mut wrong = Vec::new();
    for ((reason, rule, family, proto), want) in &drops {
        let got = drop_packets(&after, reason, rule, family, proto)
            - drop_packets(&before, reason, rule, family, proto);
        if got != *want {
            wrong.push(format!(
                "{reason} {rule} {family} {proto}: +{got}, want +{want}"
            ));
        }
    }
    for (rule, want) in &rules {
        let got = rule_packets(&after, rule) - rule_packets(&before, rule);
        if got != *want {
            wrong.push(format!("rule counter {rule}: +{got}, want +{want}"));
        }
    }
    anyhow::ensure!(wrong.is_empty(), "{}", wrong.join("\n"));

    // The text output names them too.
    let text = nodewall_netns_tests::nodewall::run(
        &topo.node,
        &["status", "--backend", backend.cli_name()],
        backend.env(),
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
