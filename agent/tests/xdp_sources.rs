//! The two representations of the source lookup through the real program: the flat tables
//! (used when a policy's prefixes fit them) and the LPM tries (the fallback), each against the
//! reference evaluator on random packets and on every prefix's edges (first and last address,
//! and one past each), including generation switches from one representation to the other.

mod xdp_random;
mod xdp_support;

use std::net::{IpAddr, Ipv6Addr};

use ipnet::IpNet;
use nodewall::backend::xdp::Datapath;
use nodewall::config::{Action, Protocol};
use nodewall::policy::track::Tracker;
use nodewall::policy::{Packet, Policy};
use nodewall_common::xdp::flags;
use rand::{Rng, SeedableRng};
use xdp_random::*;
use xdp_support::*;

fn uses_flat_tables(dp: &Datapath) -> bool {
    let sw = dp.maps().read_switch().unwrap();
    dp.maps().read_config(sw.active & 1).unwrap().flags & flags::FLAT_SOURCES != 0
}

/// Addresses at the edges of `net`.
fn edges(net: &IpNet) -> Vec<IpAddr> {
    match net {
        IpNet::V4(n) => {
            let (a, b) = (u32::from(n.network()), u32::from(n.broadcast()));
            [a, b, a.wrapping_sub(1), b.wrapping_add(1)]
                .map(|x| IpAddr::V4(x.into()))
                .to_vec()
        }
        IpNet::V6(n) => {
            let (a, b) = (u128::from(n.network()), u128::from(n.broadcast()));
            [a, b, a.wrapping_sub(1), b.wrapping_add(1)]
                .map(|x| IpAddr::V6(x.into()))
                .to_vec()
        }
    }
}

/// Runs `pkt` (a SYN if TCP) through the program and returns a description of any
/// disagreement with the evaluator, told by the tracker what conntrack makes of it.
fn check(dp: &mut Datapath, t: &mut Tracker, pol: &Policy, pkt: &Packet) -> Option<String> {
    let parsed = pkt_of(pkt, SYN);
    let want = if t.judge(pol, &parsed, None, now_ns()).passes() {
        XDP_PASS
    } else {
        XDP_DROP
    };
    let got = run(dp.xdp().unwrap(), &frame_of_pkt(&parsed));
    (got != want).then(|| format!("{pkt:?}: xdp {got}, evaluate {want}"))
}

fn agree(dp: &mut Datapath, pol: &Policy, pool: &Pool, rng: &mut rand::rngs::StdRng) -> usize {
    let mut bad = Vec::new();
    let mut n = 0;
    // Fresh flow tables: the tracker does not model their LRU eviction.
    dp.maps_mut().clear_flows().unwrap();
    let mut t = tracker(NEVER);
    for _ in 0..20_000 {
        let pkt = random_packet(rng, pool);
        bad.extend(check(dp, &mut t, pol, &pkt));
        n += 1;
    }
    for net in &pool.nets {
        for src in edges(net) {
            let mut pkt = random_packet(rng, pool);
            pkt.src = src;
            bad.extend(check(dp, &mut t, pol, &pkt));
            n += 1;
        }
    }
    assert!(
        bad.is_empty(),
        "{} mismatches:\n{}",
        bad.len(),
        bad[..bad.len().min(10)].join("\n")
    );
    n
}

#[test]
fn flat_tables_and_lpm_fallback_agree_with_evaluate() {
    if !privileged() {
        return;
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let mut dp = Datapath::load(None).unwrap();
    let mut checked = 0;
    for round in 0..6 {
        let mut pool = pool(&mut rng, 60);
        let nrules = rng.gen_range(4..=32);
        let mut pol = random_policy(&mut rng, &mut pool, nrules);
        // Every other round, one more rule with scattered /128s: more paths than a generation
        // of the flat tables holds (each a path-compressed run of its own, 16,384 at most), so
        // that generation falls back to the LPM tries.
        let fallback = round % 2 == 1;
        if fallback {
            let many: Vec<String> = (0..20_000)
                .map(|_| {
                    format!(
                        "{}/128",
                        Ipv6Addr::from((0xfdu128 << 120) | (rng.gen::<u128>() >> 8))
                    )
                })
                .collect();
            let many: Vec<&str> = many.iter().map(String::as_str).collect();
            pol.rules.push(rule(
                "scattered",
                Action::Allow,
                Protocol::Tcp,
                &[(1, 65535)],
                &many,
            ));
        }
        install_with(&mut dp, &pol, NEVER);
        assert_eq!(uses_flat_tables(&dp), !fallback, "round {round}");
        checked += agree(&mut dp, &pol, &pool, &mut rng);
    }
    println!("{checked} packets agree, flat tables and LPM fallback alike");
}
