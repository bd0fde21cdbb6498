//! The nft backend's record of its own last commit: a re-apply dumps only the sets whose
//! planned content changed, as long as nothing at all was committed to nftables since (the
//! ruleset generation id says so). Any other commit, to our table or any other, and the record
//! is ignored: everything is dumped and the result is exact either way. A fresh backend whose
//! verify dumps the whole table is the judge of "exact".
//!
//! The record also knows the chains and rules (with the handles the kernel echoed at commit):
//! a trusted re-apply dumps no structure at all, and rules it deletes or inserts before go by
//! those handles, which the kernel would refuse if they were wrong.

use std::path::Path;

use anyhow::{ensure, Context};
use nodewall::backend::nft::NftBackend;
use nodewall::backend::Backend as _;
use nodewall::policy::Policy;
use nodewall_netns_tests::netns::Netns;
use nodewall_netns_tests::nodewall::Config;
use nodewall_netns_tests::{can_run, Backend};

/// `tke-node` plus two deny rules over 50 /32s each (one hash set of /32s per rule, see
/// `plan::by_prefix_length`); `moved` replaces the first address of rule `deny-a` by another
/// /32, so only that set's content changes; `extra` adds a third rule between them.
fn policy_of(moved: bool, extra: bool) -> anyhow::Result<Policy> {
    let cidrs = |base: u32, first: Option<&str>| {
        (0..50u32)
            .map(|i| {
                let a = std::net::Ipv4Addr::from(base + 2 * i);
                match (i, first) {
                    (0, Some(f)) => format!("\"{f}\""),
                    _ => format!("\"{a}/32\""),
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let base = u32::from(std::net::Ipv4Addr::new(198, 18, 0, 0));
    let mut cfg = Config::new(Backend::Nft, Some("tke-node"));
    cfg.rules = vec![format!(
        "  - name: deny-a\n    action: deny\n    protocol: tcp\n    ports: [\"10250\"]\n    from: [{}]",
        cidrs(base, moved.then_some("198.19.200.0/32"))
    )];
    if extra {
        cfg.rules.push(
            "  - name: deny-c\n    action: deny\n    protocol: tcp\n    ports: [\"10251\"]\n    from: [\"198.19.100.0/24\"]".into(),
        );
    }
    cfg.rules.extend([format!(
            "  - name: deny-b\n    action: deny\n    protocol: udp\n    ports: [\"10250\"]\n    from: [{}]",
        cidrs(base + 4096, None)
    )]);
    let desired = nodewall::apply::source::parse_config(&cfg.yaml(), Path::new("cache.yaml"))
        .map_err(anyhow::Error::msg)?;
    Ok(desired.policy)
}

fn policy(moved: bool) -> anyhow::Result<Policy> {
    policy_of(moved, false)
}

fn nft(node: &Netns, cmd: &str) -> anyhow::Result<()> {
    let args: Vec<&str> = cmd.split(' ').collect();
    node.exec("nft", &args)
        .map(drop)
        .with_context(|| format!("nft {cmd}"))
}

/// A backend as one `nodewall apply --state-dir DIR` process has it.
fn process(dir: &Path) -> anyhow::Result<NftBackend> {
    let mut b = NftBackend::new()?;
    b.remember_in(dir);
    Ok(b)
}

/// The kernel holds exactly `policy`, as seen by a backend that dumps everything.
fn exact(policy: &Policy) -> anyhow::Result<()> {
    ensure!(
        NftBackend::new()?.verify(policy)?,
        "the table is not exactly the policy"
    );
    Ok(())
}

fn trusted_then_ignored(node: &Netns) -> anyhow::Result<()> {
    let dir = node.state_dir()?;
    let (p, moved) = (policy(false)?, policy(true)?);
    process(&dir)?.apply(&p)?;
    exact(&p)?;
    // How many sets the table has: what an apply without any record dumps.
    let mut blind = NftBackend::new()?;
    ensure!(!blind.apply(&p)?.changed);
    let all = blind.sets_dumped_by_last_apply();
    ensure!(all > 2, "the policy has several sets, {all}");

    ensure!(blind.table_dumped_by_last_apply());

    // Nothing committed since: the next process dumps nothing at all. The set that changed
    // is diffed against the elements our commit left in it, kept beside the record.
    let mut b = process(&dir)?;
    let r = b.apply(&moved)?;
    ensure!(r.changed && r.added == 1 && r.removed == 1, "{r:?}");
    ensure!(
        b.sets_dumped_by_last_apply() == 0,
        "{}",
        b.sets_dumped_by_last_apply()
    );
    ensure!(
        !b.table_dumped_by_last_apply(),
        "the record was not trusted"
    );
    exact(&moved)?;
    // The same process again (the daemon's case, from memory): nothing dumped, nothing sent.
    ensure!(!b.apply(&moved)?.changed);
    ensure!(
        b.sets_dumped_by_last_apply() == 0,
        "{}",
        b.sets_dumped_by_last_apply()
    );
    ensure!(!b.table_dumped_by_last_apply());
    let r = b.apply(&p)?;
    ensure!(r.changed && r.added == 1 && r.removed == 1, "{r:?}");
    ensure!(
        b.sets_dumped_by_last_apply() == 0,
        "{}",
        b.sets_dumped_by_last_apply()
    );
    ensure!(!b.table_dumped_by_last_apply());
    exact(&p)?;

    // The changed set's file gone, or rewritten with other elements (still well formed):
    // neither hashes to what the record vouches for, so that one set is dumped, and the
    // apply is exact all the same.
    let file = dir.join("nft-elems").join("src4p32.deny-a");
    ensure!(file.exists(), "no file for the set that changed");
    std::fs::remove_file(&file)?;
    let mut b = process(&dir)?;
    let r = b.apply(&moved)?;
    ensure!(r.changed && r.added == 1 && r.removed == 1, "{r:?}");
    ensure!(
        b.sets_dumped_by_last_apply() == 1 && !b.table_dumped_by_last_apply(),
        "{}",
        b.sets_dumped_by_last_apply()
    );
    exact(&moved)?;
    let mut b = process(&dir)?;
    ensure!(!b.apply(&moved)?.changed);
    let good = std::fs::read(&file)?;
    let mut forged = good.clone();
    // The last element's last byte: another /32, where the kernel has none.
    *forged.last_mut().context("empty file")? ^= 1;
    std::fs::write(&file, &forged)?;
    let mut b = process(&dir)?;
    let r = b.apply(&p)?;
    ensure!(r.changed && r.added == 1 && r.removed == 1, "{r:?}");
    ensure!(
        b.sets_dumped_by_last_apply() == 1 && !b.table_dumped_by_last_apply(),
        "{}",
        b.sets_dumped_by_last_apply()
    );
    exact(&p)?;

    // Rules inserted and deleted from the record alone: each next apply finds the rules by the
    // handles the kernel echoed (a wrong one and the kernel refuses the batch).
    let extra = policy_of(false, true)?;
    for (want, name) in [(&extra, "extra"), (&p, "p"), (&extra, "extra again")] {
        let mut b = process(&dir)?;
        let r = b.apply(want)?;
        ensure!(r.changed && r.added + r.removed >= 1, "{name}: {r:?}");
        ensure!(
            !b.table_dumped_by_last_apply(),
            "{name}: record not trusted"
        );
        exact(want).with_context(|| name.to_string())?;
    }
    let mut b = process(&dir)?;
    let r = b.apply(&p)?;
    ensure!(
        r.changed && r.removed >= 1 && !b.table_dumped_by_last_apply(),
        "{r:?}"
    );
    exact(&p)?;

    // A commit to another table: the record is not trusted, the apply still exact.
    nft(node, "add table inet foreign")?;
    let mut b = process(&dir)?;
    let r = b.apply(&moved)?;
    ensure!(r.changed && r.added == 1 && r.removed == 1, "{r:?}");
    ensure!(
        b.sets_dumped_by_last_apply() == all && b.table_dumped_by_last_apply(),
        "{}",
        b.sets_dumped_by_last_apply()
    );
    exact(&moved)?;

    // A rule added to our table: ignored record, the rule goes.
    nft(node, "add rule inet nodewall inbound counter")?;
    let mut b = process(&dir)?;
    let r = b.apply(&moved)?;
    ensure!(r.changed && r.removed == 1, "{r:?}");
    ensure!(
        b.sets_dumped_by_last_apply() == all && b.table_dumped_by_last_apply(),
        "{}",
        b.sets_dumped_by_last_apply()
    );
    exact(&moved)?;

    // An element deleted from a set the next plan leaves unchanged: it comes back, although
    // the record (now stale) vouched for that set.
    nft(
        node,
        "delete element inet nodewall src4p32.deny-b { 198.18.16.0 }",
    )?;
    let mut b = process(&dir)?;
    let r = b.apply(&p)?;
    ensure!(r.changed && r.added == 2 && r.removed == 1, "{r:?}");
    ensure!(
        b.sets_dumped_by_last_apply() == all && b.table_dumped_by_last_apply(),
        "{}",
        b.sets_dumped_by_last_apply()
    );
    exact(&p)?;

    // Our rules flushed behind our back after a trusted apply: the record (rules and
    // handles) is ignored and every rule comes back.
    let mut b = process(&dir)?;
    ensure!(b.apply(&moved)?.changed && !b.table_dumped_by_last_apply());
    nft(node, "flush chain inet nodewall inbound")?;
    let mut b = process(&dir)?;
    let r = b.apply(&moved)?;
    ensure!(
        r.changed && r.added > 2 && b.table_dumped_by_last_apply(),
        "{r:?}"
    );
    exact(&moved)?;

    // A flush forgets, the elements kept beside the record included.
    let mut b = process(&dir)?;
    b.flush()?;
    ensure!(
        !dir.join("nft-elems").exists(),
        "the set files outlive the flush"
    );
    let mut b = process(&dir)?;
    ensure!(b.apply(&p)?.changed);
    exact(&p)?;
    Ok(())
}

#[test]
fn record_is_trusted_only_while_nothing_commits() {
    if !can_run("record_is_trusted_only_while_nothing_commits") {
        return;
    }
    let node = Netns::new("node").unwrap();
    node.enter(|| trusted_then_ignored(&node))
        .unwrap()
        .unwrap_or_else(|e| panic!("{e:#}"));
}

/// Two namespaces whose generation ids are equal (each saw the same number of commits), one
/// state directory: the record of one must not vouch for the other's sets.
#[test]
fn record_is_per_namespace() {
    if !can_run("record_is_per_namespace") {
        return;
    }
    let (a, b) = (Netns::new("nsa").unwrap(), Netns::new("nsb").unwrap());
    let shared = a.state_dir().unwrap();
    let other = b.state_dir().unwrap();
    let (p, moved) = (policy(false).unwrap(), policy(true).unwrap());
    let run = || -> anyhow::Result<()> {
        a.enter(|| process(&shared)?.apply(&p).map(drop))??;
        b.enter(|| process(&other)?.apply(&moved).map(drop))??;
        b.enter(|| -> anyhow::Result<()> {
            let mut nw = process(&shared)?;
            let r = nw.apply(&p)?;
            ensure!(r.changed && r.added == 1 && r.removed == 1, "{r:?}");
            exact(&p)
        })??;
        Ok(())
    };
    run().unwrap_or_else(|e| panic!("{e:#}"));
}

/// A policy whose sets hold more elements than an apply writes on its own thread
/// (`ELEMS_BESIDE_COMMIT`): one deny rule over `n` /32s, none adjacent, the first replaced by
/// another when `moved`.
fn large(n: u32, moved: bool) -> anyhow::Result<Policy> {
    let base = u32::from(std::net::Ipv4Addr::new(198, 18, 0, 0));
    let from = (0..n)
        .map(|i| match (i, moved) {
            (0, true) => "\"198.19.255.255/32\"".to_string(),
            _ => format!("\"{}/32\"", std::net::Ipv4Addr::from(base + 2 * i)),
        })
        .collect::<Vec<_>>()
        .join(", ");
    let mut cfg = Config::new(Backend::Nft, Some("tke-node"));
    cfg.rules = vec![format!(
        "  - name: deny-a\n    action: deny\n    protocol: tcp\n    ports: [\"10250\"]\n    from: [{from}]"
    )];
    let desired = nodewall::apply::source::parse_config(&cfg.yaml(), Path::new("large.yaml"))
        .map_err(anyhow::Error::msg)?;
    Ok(desired.policy)
}

/// The set files of a large apply are written while the kernel takes the batch: the next
/// process diffs the changed set against its file, dumping nothing, and the result is exact.
#[test]
fn large_sets_are_recorded_beside_the_commit() {
    if !can_run("large_sets_are_recorded_beside_the_commit") {
        return;
    }
    let node = Netns::new("node").unwrap();
    let dir = node.state_dir().unwrap();
    let run = || -> anyhow::Result<()> {
        let (p, moved) = (large(40_000, false)?, large(40_000, true)?);
        process(&dir)?.apply(&p)?;
        let file = dir.join("nft-elems").join("src4p32.deny-a");
        ensure!(file.exists(), "no file for the large set");
        for want in [&moved, &p] {
            let mut b = process(&dir)?;
            let r = b.apply(want)?;
            ensure!(r.changed && r.added == 1 && r.removed == 1, "{r:?}");
            ensure!(
                b.sets_dumped_by_last_apply() == 0 && !b.table_dumped_by_last_apply(),
                "the record or the large set's file was not trusted: {} sets dumped",
                b.sets_dumped_by_last_apply()
            );
            exact(want)?;
        }
        Ok(())
    };
    node.enter(run).unwrap().unwrap_or_else(|e| panic!("{e:#}"));
}
