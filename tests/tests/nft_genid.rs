//! The nft backend's cheap drift check: while the namespace's nftables generation id is the
//! one at which the table was last known intact, `verify` answers without dumping the table;
//! any committed change (even to another table) makes it dump again, so drift is still found.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use nodewall::backend::nft::NftBackend;
use nodewall::backend::Backend as _;
use nodewall::policy::Policy;
use nodewall_netns_tests::netns::Netns;
use nodewall_netns_tests::nodewall::Config;
use nodewall_netns_tests::{can_run, Backend};

/// `tke-node` plus a deny rule from `cidrs` distinct, non-adjacent /32s of 198.18.0.0/15.
fn policy(cidrs: u32) -> anyhow::Result<Policy> {
    let from: Vec<String> = (0..cidrs)
        .map(|i| {
            let a = u32::from(std::net::Ipv4Addr::new(198, 18, 0, 0)) + 2 * i;
            format!("\"{}/32\"", std::net::Ipv4Addr::from(a))
        })
        .collect();
    let mut cfg = Config::new(Backend::Nft, Some("tke-node"));
    cfg.rules = vec![format!(
        "  - name: deny-many\n    action: deny\n    protocol: tcp\n    ports: [\"10250\"]\n    from: [{}]",
        from.join(", ")
    )];
    let desired = nodewall::apply::source::parse_config(&cfg.yaml(), Path::new("genid.yaml"))
        .map_err(anyhow::Error::msg)?;
    Ok(desired.policy)
}

fn nft(node: &Netns, cmd: &str) -> anyhow::Result<()> {
    let args: Vec<&str> = cmd.split(' ').collect();
    node.exec("nft", &args)
        .map(drop)
        .with_context(|| format!("nft {cmd}"))
}

fn skips_dump_while_nothing_commits(node: &Netns) -> anyhow::Result<()> {
    let policy = policy(4)?;
    let mut b = NftBackend::new()?;
    b.apply(&policy)?;
    ensure!(
        b.verify(&policy)? && b.verify(&policy)?,
        "intact after apply"
    );
    ensure!(
        b.full_verifies() == 0,
        "the apply's own commit is known: no dump needed, {} done",
        b.full_verifies()
    );

    // Another process (a restarted daemon) knows nothing yet: one dump, then none.
    let fresh = NftBackend::new()?;
    ensure!(fresh.verify(&policy)? && fresh.verify(&policy)?);
    ensure!(fresh.full_verifies() == 1, "{}", fresh.full_verifies());

    // A commit that does not touch our table still moves the id: one full verify, intact.
    nft(node, "add table inet foreign")?;
    ensure!(b.verify(&policy)?, "a foreign table is not drift");
    ensure!(b.full_verifies() == 1, "{}", b.full_verifies());
    ensure!(b.verify(&policy)?);
    ensure!(b.full_verifies() == 1, "{}", b.full_verifies());

    // Another policy is never answered from the cache.
    let mut other = policy.clone();
    other.rules.retain(|r| r.name != "deny-many");
    ensure!(!b.verify(&other)?, "a rule less is drift");
    ensure!(b.full_verifies() == 2, "{}", b.full_verifies());

    // Drift is found, and stays found until repaired.
    nft(
        node,
        "delete element inet nodewall src4.deny-many { 198.18.0.2/32 }",
    )?;
    ensure!(!b.verify(&policy)?, "a deleted element is drift");
    ensure!(!fresh.verify(&policy)?, "also for the other process");
    ensure!(!b.verify(&policy)?, "still drift");
    ensure!(b.full_verifies() == 4, "{}", b.full_verifies());
    let report = b.apply(&policy)?;
    ensure!(report.changed && report.added == 1, "{report:?}");
    ensure!(b.verify(&policy)?, "repaired");
    ensure!(b.full_verifies() == 4, "{}", b.full_verifies());
    ensure!(
        fresh.verify(&policy)?,
        "repaired, seen by the other process"
    );

    // A flush forgets: the next verify dumps and finds nothing.
    b.flush()?;
    ensure!(!b.verify(&policy)?, "flushed");
    ensure!(b.full_verifies() == 5, "{}", b.full_verifies());
    Ok(())
}

#[test]
fn verify_skips_the_dump_while_nothing_commits() {
    if !can_run("verify_skips_the_dump_while_nothing_commits") {
        return;
    }
    let node = Netns::new("node").unwrap();
    node.enter(|| skips_dump_while_nothing_commits(&node))
        .unwrap()
        .unwrap_or_else(|e| panic!("{e:#}"));
}

/// Mean duration of `f` over `n` calls.
fn mean(n: u32, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<Duration> {
    let t = Instant::now();
    for _ in 0..n {
        f()?;
    }
    Ok(t.elapsed() / n)
}

fn cheap_at_10k_cidrs() -> anyhow::Result<()> {
    let policy = policy(10_000)?;
    let mut b = NftBackend::new()?;
    b.apply(&policy)?;
    const N: u32 = 10;
    // A new backend knows no generation id: its first verify is a full one.
    let fresh: Vec<NftBackend> = (0..N)
        .map(|_| NftBackend::new())
        .collect::<Result<_, _>>()?;
    let mut it = fresh.iter();
    let full = mean(N, || {
        let f = it.next().expect("one per call");
        ensure!(f.verify(&policy)? && f.full_verifies() == 1);
        Ok(())
    })?;
    let cached = mean(N, || {
        ensure!(b.verify(&policy)?);
        Ok(())
    })?;
    ensure!(b.full_verifies() == 0, "{}", b.full_verifies());
    eprintln!(
        "verify at 10k CIDRs: {full:?} with a dump, {cached:?} with the generation id unchanged"
    );
    ensure!(
        cached < full,
        "the unchanged-id verify ({cached:?}) is cheaper than a dump ({full:?})"
    );
    Ok(())
}

#[test]
fn verify_is_cheap_at_10k_cidrs() {
    if !can_run("verify_is_cheap_at_10k_cidrs") {
        return;
    }
    let node = Netns::new("node").unwrap();
    node.enter(cheap_at_10k_cidrs)
        .unwrap()
        .unwrap_or_else(|e| panic!("{e:#}"));
}
