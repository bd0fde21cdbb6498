//! Apply time with 10 / 1,000 / 10,000 CIDRs in one network (half IPv4, half IPv6): the first
//! apply, a re-apply of the same policy, and a re-apply after one CIDR changed. The figures are
//! printed (run with `--nocapture`); the test asserts what each apply changed.
//!
//! XDP double-buffers the policy: an apply rewrites the inactive generation against what that
//! generation held two applies ago. The first change after the initial apply therefore fills
//! the still-empty second generation (every non-zero entry); only from the second change on does an
//! apply write just the difference. The XDP run makes two changes and asserts the second.
//! (One CIDR is one element out and one in for nft; for XDP's flat source tables it is the
//! few entries on the two prefixes' paths.)

use std::time::Instant;

use nodewall_netns_tests::nodewall::{apply, Config};
use nodewall_netns_tests::topology::lone_node;
use nodewall_netns_tests::{backend_tests, Backend};

fn cidrs(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let k = (i / 2) as u32;
            if i % 2 == 0 {
                // Every other address of 198.18.0.0/16: none adjacent, nothing merges.
                let a = u32::from(std::net::Ipv4Addr::new(198, 18, 0, 0)) + 2 * k;
                format!("{}/32", std::net::Ipv4Addr::from(a))
            } else {
                format!("fd00:1000:0:{:x}::/64", 2 * k)
            }
        })
        .collect()
}

fn apply_time_for_10_1k_10k_cidrs(backend: Backend) -> anyhow::Result<()> {
    let mut lines = vec![format!(
        "{:>6} {:>12} {:>12} {:>16} {:>10}",
        "CIDRs", "first apply", "unchanged", "one CIDR changed", "added"
    )];
    for n in [10usize, 1000, 10000] {
        let node = lone_node("time")?;
        let mut cfg = Config::new(backend, Some("tke-node"));
        cfg.networks[0].1 = cidrs(n);
        let file = cfg.write()?;
        let timed = |what: &str| -> anyhow::Result<(f64, serde_json::Value)> {
            let t = Instant::now();
            let r = apply(&node, &file)?;
            let wall = t.elapsed().as_secs_f64() * 1e3;
            eprintln!(
                "{n} CIDRs, {what}: {wall:.1} ms wall, {:.1} ms in apply: {r}",
                r["duration"].as_f64().unwrap_or(0.0) * 1e3
            );
            Ok((r["duration"].as_f64().unwrap_or(0.0) * 1e3, r))
        };
        let (first, r1) = timed("first apply")?;
        anyhow::ensure!(r1["changed"] == true);
        let (same, r2) = timed("unchanged")?;
        anyhow::ensure!(r2["changed"] == false, "{r2}");
        cfg.networks[0].1[0] = "198.19.200.1/32".into();
        file.rewrite(&cfg.yaml())?;
        if backend.is_xdp() {
            let (_, r) = timed("one CIDR changed, fills the second generation")?;
            anyhow::ensure!(r["changed"] == true, "{r}");
            cfg.networks[0].1[0] = "198.19.200.3/32".into();
            file.rewrite(&cfg.yaml())?;
        }
        let (one, r3) = timed("one CIDR changed")?;
        if backend.is_xdp() {
            // XDP's flat source tables rewrite the entries on the old and the new prefix's
            // paths (a root entry and a few 256-entry nodes), never the whole table, and
            // remove nothing.
            let added = r3["added"].as_u64().unwrap_or(0);
            anyhow::ensure!(
                r3["changed"] == true && (1..=8).contains(&added) && r3["removed"] == 0,
                "one prefix's path rewritten: {r3}"
            );
        } else {
            anyhow::ensure!(
                r3["added"] == 1 && r3["removed"] == 1,
                "one interval out, one in: {r3}"
            );
        }
        lines.push(format!(
            "{n:>6} {first:>9.1} ms {same:>9.1} ms {one:>13.1} ms {:>10}",
            r1["added"]
        ));
    }
    eprintln!("apply time ({backend:?}):\n{}", lines.join("\n"));
    Ok(())
}

backend_tests!(apply_time_for_10_1k_10k_cidrs);
