//! The nft backend's drift check, through its library API in a node namespace: whatever part of
//! table `inet nodewall` is removed or altered behind its back (a set element, a rule, a chain's
//! rules, a whole chain, an extra rule, a dormant table, the base chain's policy, the table),
//! `verify` says so, the next apply puts back exactly what is missing (every surviving object
//! keeps its handle, the table lists as before) and the named counters that survived keep their
//! values.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{ensure, Context};
use nodewall::backend::nft::NftBackend;
use nodewall::backend::{Backend as _, Counters};
use nodewall::policy::Policy;
use nodewall_netns_tests::netns::Netns;
use nodewall_netns_tests::nodewall::Config;
use nodewall_netns_tests::topology::{node_addr, Topology};
use nodewall_netns_tests::traffic::{tcp_ok, Server};
use nodewall_netns_tests::{can_run, Backend};

/// Two IPv4 networks, so that they are a set (one network is a compare) whose element the
/// sabotage can delete.
const DENY_RULE: &str = "  - name: deny-inet\n    action: deny\n    protocol: tcp\n    ports: [\"10250\"]\n    from: [\"198.19.0.0/16\", \"198.18.200.0/24\", \"fd00:99::/64\"]";

/// `tke-node` plus a deny rule for the kubelet port from the internet peer.
fn policy() -> anyhow::Result<Policy> {
    tke_node_with(vec![DENY_RULE.into()])
}

/// `tke-node` plus `rules`.
fn tke_node_with(rules: Vec<String>) -> anyhow::Result<Policy> {
    let mut cfg = Config::new(Backend::Nft, Some("tke-node"));
    cfg.rules = rules;
    let desired = nodewall::apply::source::parse_config(&cfg.yaml(), Path::new("drift.yaml"))
        .map_err(anyhow::Error::msg)?;
    Ok(desired.policy)
}

/// How one sabotage is done, and what the repair must add and remove (set elements and rules).
struct Sabotage {
    what: &'static str,
    run: fn(&Netns) -> anyhow::Result<()>,
    added: usize,
    removed: usize,
}

fn nft(node: &Netns, cmd: &str) -> anyhow::Result<String> {
    let args: Vec<&str> = cmd.split(' ').collect();
    node.exec("nft", &args)
        .with_context(|| format!("nft {cmd}"))
}

/// Handles of the rules of `chain` whose comment is `comment`.
fn handles_by_comment(node: &Netns, chain: &str, comment: &str) -> anyhow::Result<Vec<String>> {
    let listing = nft(node, &format!("-a list chain inet nodewall {chain}"))?;
    Ok(listing
        .lines()
        .filter(|l| l.contains(&format!("comment \"{comment}\"")))
        .filter_map(|l| l.rsplit("# handle ").next())
        .map(|h| h.trim().to_string())
        .collect())
}

fn sabotages() -> Vec<Sabotage> {
    vec![
        Sabotage {
            what: "a source set element",
            run: |n| {
                nft(
                    n,
                    "delete element inet nodewall src4.deny-inet { 198.19.0.0/16 }",
                )
                .map(drop)
            },
            added: 1,
            removed: 0,
        },
        Sabotage {
            what: "the uplink set element",
            run: |n| nft(n, "delete element inet nodewall uplinks { \"eth0\" }").map(drop),
            added: 1,
            removed: 0,
        },
        Sabotage {
            what: "one rule",
            run: |n| {
                let h = handles_by_comment(n, "inbound", "deny-inet")?;
                nft(
                    n,
                    &format!("delete rule inet nodewall inbound handle {}", h[0]),
                )
                .map(drop)
            },
            added: 1,
            removed: 0,
        },
        Sabotage {
            what: "a flushed chain",
            // 8 counting rules (2 families x 4 protocols) and the drop sample.
            run: |n| nft(n, "flush chain inet nodewall drop.default-deny").map(drop),
            added: 9,
            removed: 0,
        },
        Sabotage {
            what: "a deleted chain",
            run: |n| {
                // The chain can go once no rule jumps to it: the rule's two nft rules (v4, v6).
                for h in handles_by_comment(n, "inbound", "deny-inet")? {
                    nft(n, &format!("delete rule inet nodewall inbound handle {h}"))?;
                }
                nft(n, "delete chain inet nodewall drop.rule.deny-inet").map(drop)
            },
            added: 2 + 9,
            removed: 0,
        },
        Sabotage {
            what: "a dormant table",
            run: |n| nft(n, "add table inet nodewall { flags dormant ; }").map(drop),
            added: 0,
            removed: 0,
        },
        Sabotage {
            what: "a base chain policy",
            run: |n| nft(n, "chain inet nodewall prerouting { policy drop ; }").map(drop),
            added: 0,
            removed: 0,
        },
        Sabotage {
            what: "an inserted accept-all rule",
            run: |n| nft(n, "insert rule inet nodewall inbound accept").map(drop),
            added: 0,
            removed: 1,
        },
    ]
}

/// The table as `nft list` shows it, without counter values and the generation number, one
/// object (set, counter, chain) per entry, sorted: a recreated chain is listed last, which means
/// nothing.
fn listing(node: &Netns) -> anyhow::Result<Vec<String>> {
    let mut objects: Vec<String> = Vec::new();
    for l in nft(node, "list table inet nodewall")?.lines() {
        if l.trim_start().starts_with("packets ") || l.trim().is_empty() {
            continue;
        }
        let l = match l.find("nodewall generation ") {
            Some(i) => &l[..i],
            None => l,
        };
        if !l.starts_with('\t') {
            continue; // `table inet nodewall {` and its `}`
        }
        // The table's own lines (one tab) start an object, but for the object's `}`.
        let top = !l.starts_with("\t\t") && l != "\t}";
        match objects.last_mut() {
            Some(o) if !top => {
                o.push('\n');
                o.push_str(l);
            }
            _ => objects.push(l.to_string()),
        }
    }
    objects.sort();
    Ok(objects)
}

/// Every object's and rule's handle, named by what it is, except the base chain's rule (it
/// carries the generation and is replaced by every apply that changes something).
fn handles(node: &Netns) -> anyhow::Result<BTreeSet<String>> {
    let text = nft(node, "-a list table inet nodewall")?;
    // nft lists sets and counters before chains; rules only appear inside chains.
    let mut chain: Option<&str> = None;
    let mut out = BTreeSet::new();
    for l in text.lines() {
        let t = l.trim_start();
        let Some((what, h)) = t.rsplit_once("# handle ") else {
            continue;
        };
        let h = h.trim();
        if let Some(rest) = t.strip_prefix("chain ") {
            let name = rest.split(' ').next().unwrap_or("");
            chain = Some(name);
            out.insert(format!("chain {name} {h}"));
        } else if let Some(c) = chain {
            if c != "prerouting" {
                out.insert(format!("rule {c} {h}"));
            }
        } else {
            let head: Vec<&str> = what.split_whitespace().take(2).collect();
            out.insert(format!("{} {h}", head.join(" ")));
        }
    }
    Ok(out)
}

/// Every counter (rule and drop) by its labels.
fn by_name(c: &Counters) -> BTreeMap<String, u64> {
    let rules = c
        .rules
        .iter()
        .map(|r| (format!("rule {}", r.rule), r.packets));
    let drops = c.drops.iter().map(|d| {
        (
            format!("drop {} {} {} {}", d.reason, d.rule, d.family, d.protocol),
            d.packets,
        )
    });
    rules.chain(drops).collect()
}

fn drift_is_found_and_repaired_in_place(topo: &Topology) -> anyhow::Result<()> {
    let policy = policy()?;
    let node = &topo.node;
    let mut nft_backend = NftBackend::new()?;
    let first = nft_backend.apply(&policy)?;
    ensure!(first.changed && first.generation == 1, "{first:?}");
    ensure!(
        nft_backend.verify(&policy)?,
        "verified right after the apply"
    );
    let mut generation = first.generation;
    // The daemon verifies every second: it must stay cheap.
    let t = std::time::Instant::now();
    for _ in 0..20 {
        ensure!(nft_backend.verify(&policy)?);
    }
    eprintln!("verify: {:?} per call", t.elapsed() / 20);

    // Counts on both families' deny counters, to see them survive.
    for v6 in [false, true] {
        ensure!(
            !tcp_ok(&topo.internet.ns, node_addr(v6), 10250),
            "kubelet closed to the internet"
        );
    }
    let blocked = "drop rule deny-inet ipv4 tcp";
    let counted = by_name(&nft_backend.counters()?);
    ensure!(counted[blocked] > 0, "{counted:#?}");
    ensure!(counted["drop rule deny-inet ipv6 tcp"] > 0, "{counted:#?}");

    let intact = listing(node)?;
    for s in sabotages() {
        let before = by_name(&nft_backend.counters()?);
        (s.run)(node).with_context(|| format!("sabotage: {}", s.what))?;
        ensure!(listing(node)? != intact, "{}: the table changed", s.what);
        let survivors = handles(node)?;
        ensure!(!nft_backend.verify(&policy)?, "{}: drift found", s.what);

        let report = nft_backend.apply(&policy)?;
        ensure!(
            report.changed
                && report.generation == generation + 1
                && (report.added, report.removed) == (s.added, s.removed),
            "{}: repaired with exactly the missing objects: {report:?}",
            s.what
        );
        generation = report.generation;
        eprintln!("{}: repaired in {:?}", s.what, report.duration);
        ensure!(nft_backend.verify(&policy)?, "{}: verified after", s.what);
        ensure!(
            listing(node)? == intact,
            "{}: the table lists as before:\n{}",
            s.what,
            listing(node)?.join("\n")
        );
        // Only what the sabotage added may go: everything that survived it stays in place.
        let gone: Vec<_> = survivors.difference(&handles(node)?).cloned().collect();
        ensure!(
            gone.len() == s.removed,
            "{}: objects replaced by the repair: {gone:?}",
            s.what
        );
        let after = by_name(&nft_backend.counters()?);
        for (name, value) in &before {
            let now = after.get(name).copied().unwrap_or(0);
            ensure!(
                now >= *value,
                "{}: counter {name} went from {value} to {now}",
                s.what
            );
        }
    }

    // Enforcing again, and still counting where it was.
    let before = by_name(&nft_backend.counters()?)[blocked];
    ensure!(!tcp_ok(&topo.internet.ns, node_addr(false), 10250));
    let after = by_name(&nft_backend.counters()?)[blocked];
    ensure!(after > before, "{blocked}: {before} -> {after}");

    // A deleted table comes back with the next generation, not generation 1.
    nft(node, "delete table inet nodewall")?;
    ensure!(!nft_backend.verify(&policy)?, "a deleted table is drift");
    let report = nft_backend.apply(&policy)?;
    ensure!(
        report.changed && report.generation == generation + 1,
        "the generation goes on after the table was deleted: {report:?}"
    );
    ensure!(nft_backend.verify(&policy)?);
    ensure!(listing(node)? == intact, "the table lists as before");
    let unchanged = nft_backend.apply(&policy)?;
    ensure!(
        !unchanged.changed && unchanged.generation == report.generation,
        "{unchanged:?}"
    );
    Ok(())
}

/// Runs `case` in the node namespace of a fresh topology whose node serves the kubelet port.
fn with_kubelet(test: &str, case: fn(&Topology) -> anyhow::Result<()>) {
    if !can_run(test) {
        return;
    }
    let topo = Topology::new().unwrap();
    let _kubelet = Server::tcp(&topo.node, 10250).unwrap();
    topo.node
        .enter(|| case(&topo))
        .unwrap()
        .unwrap_or_else(|e| panic!("{e:#}"));
}

#[test]
fn drift_is_found_and_repaired() {
    with_kubelet(
        "drift_is_found_and_repaired",
        drift_is_found_and_repaired_in_place,
    );
}

/// A policy that differs from the installed one is drift too, and the check does not change
/// anything by itself.
#[test]
fn another_policy_is_drift() {
    if !can_run("another_policy_is_drift") {
        return;
    }
    let node = Netns::new("node").unwrap();
    node.enter(|| -> anyhow::Result<()> {
        let policy = policy()?;
        let mut other = policy.clone();
        other.rules.retain(|r| r.name != "deny-inet");
        let mut b = NftBackend::new()?;
        ensure!(!b.verify(&policy)?, "nothing installed yet");
        b.apply(&policy)?;
        let before = listing(&node)?;
        ensure!(!b.verify(&other)?, "a rule less");
        let mut moved = policy.clone();
        moved.interfaces = vec!["eth1".into()];
        ensure!(!b.verify(&moved)?, "another interface");
        ensure!(b.verify(&policy)?);
        ensure!(listing(&node)? == before, "verify changed nothing");
        Ok(())
    })
    .unwrap()
    .unwrap_or_else(|e| panic!("{e:#}"));
}

/// A verdict changed in the port-dispatch map (`goto` a class chain -> `accept`) lets every
/// packet to that port through without a rule seeing it: `verify` must see it (the elements'
/// verdicts are compared, not only their keys) and the next apply put the element back.
fn tampered_dispatch_map_element(topo: &Topology) -> anyhow::Result<()> {
    let policy = tke_node_with(vec![
        DENY_RULE.into(),
        "  - name: lan-8080\n    action: allow\n    protocol: tcp\n    ports: [\"8080\"]\n    from: [\"10.0.0.0/8\"]".into(),
        "  - name: lan-9000\n    action: allow\n    protocol: tcp\n    ports: [\"9000\"]\n    from: [\"10.0.0.0/8\"]".into(),
    ])?;
    let node = &topo.node;
    let mut b = NftBackend::new()?;
    b.apply(&policy)?;
    let map = nft(node, "list map inet nodewall inbound.tcp")?;
    ensure!(
        map.contains("10250 : goto inbound.tcp.10250"),
        "the kubelet port has a class of its own:\n{map}"
    );
    let intact = listing(node)?;
    ensure!(!tcp_ok(&topo.internet.ns, node_addr(false), 10250));

    nft(
        node,
        "delete element inet nodewall inbound.tcp { 10250 } ; add element inet nodewall inbound.tcp { 10250 : accept }",
    )?;
    ensure!(
        tcp_ok(&topo.internet.ns, node_addr(false), 10250),
        "the tampered element lets the kubelet port through"
    );
    ensure!(!b.verify(&policy)?, "a changed verdict is drift");
    let report = b.apply(&policy)?;
    ensure!(
        report.changed && (report.added, report.removed) == (1, 1),
        "the one element replaced: {report:?}"
    );
    ensure!(b.verify(&policy)?, "verified after the repair");
    ensure!(listing(node)? == intact, "the table lists as before");
    ensure!(
        !tcp_ok(&topo.internet.ns, node_addr(false), 10250),
        "the kubelet port is closed again"
    );
    Ok(())
}

#[test]
fn a_tampered_dispatch_map_element_is_found_and_repaired() {
    with_kubelet(
        "a_tampered_dispatch_map_element_is_found_and_repaired",
        tampered_dispatch_map_element,
    );
}
