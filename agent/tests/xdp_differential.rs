//! Differential test: at least 1,000,000 random packets under random policies, through the
//! real XDP program (BPF_PROG_TEST_RUN), against the reference evaluator `policy::evaluate`
//! with the reference tracker (`policy::track`) saying what conntrack makes of each packet
//! (random TCP flags included) given the flows the earlier ones opened. For every packet the
//! action must agree and the one counter that the evaluator's verdict names (rule slot, drop
//! reason with family and protocol, or implicit allowance) must move by exactly one; at the
//! end of each policy no other counter may have moved.

mod xdp_random;
mod xdp_support;

use aya::maps::{MapData, PerCpuArray};
use nodewall::backend::xdp::{Datapath, Maps};
use nodewall_common::xdp::{Stat, DROP_STATS_ENTRIES, MAX_SLOTS, PASS_STATS_ENTRIES};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use xdp_random::*;
use xdp_support::*;

fn total(map: &PerCpuArray<MapData, Stat>, n: u32) -> u64 {
    (0..n).map(|i| Maps::stat(map, i).unwrap().packets).sum()
}

fn totals(dp: &Datapath) -> u64 {
    let m = dp.maps();
    total(&m.rule_stats, MAX_SLOTS)
        + total(&m.drop_stats, DROP_STATS_ENTRIES)
        + total(&m.pass_stats, PASS_STATS_ENTRIES)
}

#[test]
fn one_million_random_packets_agree_with_evaluate() {
    if !privileged() {
        return;
    }
    let packets: usize = std::env::var("NODEWALL_DIFF_PACKETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let seed: u64 = std::env::var("NODEWALL_DIFF_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x6e6f_6465);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut dp = Datapath::load(None).unwrap();
    let mut tracker;
    let rounds = 25;
    let mut mismatches = Vec::new();
    let mut checked = 0usize;
    // How often each kind of verdict came up, to show the packets reach every path.
    let mut kinds: std::collections::BTreeMap<String, usize> = Default::default();
    for round in 0..rounds {
        let mut pool = pool(&mut rng, 40);
        let nrules = match round {
            0 => 256,
            1 => 0,
            _ => rand::Rng::gen_range(&mut rng, 1..=64),
        };
        let pol = random_policy(&mut rng, &mut pool, nrules);
        let n = packets / rounds + usize::from(round < packets % rounds);
        install_with(&mut dp, &pol, NEVER);
        // The tracker does not model the tables' LRU eviction: a round (40,000 packets by
        // default) stays below the 65,536 entries of a table, from empty tables.
        dp.maps_mut().clear_flows().unwrap();
        tracker = xdp_support::tracker(NEVER);
        assert!(
            n <= 60_000,
            "{n} packets per round could fill the flow tables"
        );
        let slots = dp.rule_slots();
        let before = totals(&dp);
        let mut expected_moves = 0u64;
        for _ in 0..n {
            let pkt = random_packet(&mut rng, &pool);
            let flags = random_tcp_flags(&mut rng);
            let parsed = pkt_of(&pkt, flags);
            let want = tracker.judge(&pol, &parsed, None, now_ns());
            *kinds
                .entry(format!(
                    "{:?}/{:?}/{}",
                    want.reason,
                    want.action,
                    if want.enforced { "enforce" } else { "audit" }
                ))
                .or_default() += 1;
            match check_verdict(&mut dp, &slots, &want, &parsed, &frame_of_pkt(&parsed)) {
                Ok(moves) => expected_moves += moves,
                Err(e) => mismatches.push(format!("{pkt:?} flags {flags:#x}: {e}")),
            }
            checked += 1;
        }
        let moved = totals(&dp) - before;
        assert_eq!(
            moved,
            expected_moves,
            "round {round}: counters moved {moved} times for {expected_moves} expected moves; mismatches so far:\n{}",
            mismatches.join("\n")
        );
    }
    println!(
        "differential: {checked} packets, {} mismatches (seed {seed:#x})",
        mismatches.len()
    );
    for (kind, n) in &kinds {
        println!("  {kind:<40} {n:>8}");
    }
    assert!(checked >= packets);
    assert!(
        mismatches.is_empty(),
        "{} mismatches, first ones:\n{}",
        mismatches.len(),
        mismatches[..mismatches.len().min(20)].join("\n")
    );
}

/// Mostly a SYN (a new connection, what the rules judge), sometimes anything at all.
fn random_tcp_flags(rng: &mut rand::rngs::StdRng) -> u8 {
    use rand::Rng;
    match rng.gen_range(0..10) {
        0..=5 => SYN,
        6 => ACK,
        7 => *[
            SYN | ACK,
            FIN | ACK,
            RST,
            RST | ACK,
            SYN | ECE | CWR,
            ACK | PSH,
        ]
        .choose(rng)
        .unwrap(),
        _ => rng.gen(),
    }
}
