//! Per-packet cost of the classifier, measured by the kernel (BPF_PROG_TEST_RUN with
//! `repeat`), against a bare `XDP_PASS` program, at 64 rules x 10k CIDRs and at 1 rule x 1
//! CIDR. The cost must not grow with the policy: that is the point of the LPM + port-table
//! design. Prints a table; `cargo test -p nodewall --test xdp_bench -- --nocapture`.

mod xdp_support;

use std::net::{Ipv4Addr, Ipv6Addr};

use aya::programs::{TestRun, TestRunOptions, Xdp};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use nodewall::config::{Action, Protocol};
use nodewall::policy::{AddrSet, Origin, PortSet, Rule};
use rand::{Rng, SeedableRng};
use xdp_support::*;

const REPEAT: u32 = 200_000;
const SAMPLES: usize = 5;

/// Median over `SAMPLES` runs of the kernel's average ns per run.
fn ns_per_packet(prog: &Xdp, frame: &[u8]) -> f64 {
    let mut v: Vec<f64> = (0..SAMPLES)
        .map(|_| {
            let r = prog
                .test_run(TestRunOptions {
                    data_in: Some(frame),
                    repeat: REPEAT,
                    ..Default::default()
                })
                .unwrap();
            r.duration.as_nanos() as f64
        })
        .collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[SAMPLES / 2]
}

/// 64 rules, 10,000 distinct CIDRs (half IPv4, half IPv6) split among them, and the frames
/// to measure: (label, frame).
fn big_policy() -> (nodewall::policy::Policy, Vec<(&'static str, Vec<u8>)>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(64);
    let mut nets: Vec<IpNet> = Vec::new();
    while nets.len() < 10_000 {
        let net = if nets.len().is_multiple_of(2) {
            IpNet::V4(
                Ipv4Net::new(Ipv4Addr::from(rng.gen::<u32>()), rng.gen_range(12..=32))
                    .unwrap()
                    .trunc(),
            )
        } else {
            IpNet::V6(
                Ipv6Net::new(Ipv6Addr::from(rng.gen::<u128>()), rng.gen_range(32..=128))
                    .unwrap()
                    .trunc(),
            )
        };
        nets.push(net);
    }
    let chunk = nets.len().div_ceil(64);
    let rules: Vec<Rule> = nets
        .chunks(chunk)
        .enumerate()
        .map(|(i, c)| Rule {
            name: format!("rule-{i}"),
            action: if i % 5 == 4 {
                Action::Deny
            } else {
                Action::Allow
            },
            protocol: if i % 2 == 0 {
                Protocol::Tcp
            } else {
                Protocol::Udp
            },
            ports: PortSet::new(vec![nodewall::config::PortRange::new(
                1000 + i as u16 * 10,
                1005 + i as u16 * 10,
            )]),
            sources: AddrSet::from_nets(c),
            origin: Origin::User,
        })
        .collect();
    assert_eq!(rules.len(), 64);
    let last_v4 = match nets[nets.len() - 2] {
        IpNet::V4(n) => n.network().octets(),
        _ => unreachable!(),
    };
    let last_v6 = match nets[nets.len() - 1] {
        IpNet::V6(n) => n.network().octets(),
        _ => unreachable!(),
    };
    let frames = vec![
        (
            "v4 udp, last rule",
            eth(
                ETH_IP,
                &[],
                &ipv4(last_v4, [198, 18, 0, 1], 17, &udp(5, 1630, b"x")),
            ),
        ),
        (
            "v4 tcp, default-deny",
            eth(
                ETH_IP,
                &[],
                &ipv4([198, 19, 7, 7], [198, 18, 0, 1], 6, &tcp(40000, 22)),
            ),
        ),
        (
            "v6 udp, last rule",
            eth(
                ETH_IPV6,
                &[],
                &ipv6(last_v6, v6("fd00::1"), 17, &udp(5, 1635, b"x")),
            ),
        ),
        (
            "v6 tcp +2 ext hdrs",
            eth(
                ETH_IPV6,
                &[],
                &ipv6(
                    v6("fd00:5::1"),
                    v6("fd00::1"),
                    0,
                    &[ext(60, 1), ext(6, 1), tcp(1, 1000)].concat(),
                ),
            ),
        ),
    ];
    (policy(rules), frames)
}

#[test]
fn classifier_cost_does_not_grow_with_the_policy() {
    if !privileged() {
        return;
    }
    let (big, frames) = big_policy();
    let small = policy(vec![rule(
        "one",
        Action::Allow,
        Protocol::Tcp,
        &[(22, 22)],
        &["198.19.0.0/16"],
    )]);
    let mut p = Probe::new();
    let mut rows = Vec::new();
    for (label, frame) in &frames {
        let base = ns_per_packet(p.dp.baseline().unwrap(), frame);
        p.install(&small);
        let one = ns_per_packet(p.dp.xdp().unwrap(), frame);
        p.install(&big);
        let many = ns_per_packet(p.dp.xdp().unwrap(), frame);
        rows.push((label, base, one, many));
    }
    println!(
        "{:<22} {:>12} {:>14} {:>18}",
        "frame", "XDP_PASS ns", "1 rule x 1 ns", "64 x 10k CIDRs ns"
    );
    for (label, base, one, many) in &rows {
        println!("{label:<22} {base:>12.1} {one:>14.1} {many:>18.1}");
    }
    let avg =
        |f: fn(&(&&str, f64, f64, f64)) -> f64| rows.iter().map(f).sum::<f64>() / rows.len() as f64;
    let (base, one, many) = (avg(|r| r.1), avg(|r| r.2), avg(|r| r.3));
    println!("{:<22} {base:>12.1} {one:>14.1} {many:>18.1}", "mean");
    // Sanity of the measurement itself, then the property: a large policy costs about what a
    // one-rule policy does (an LPM walk a few levels deeper), not 64x or 10,000x more.
    assert!(base > 0.0 && one > 0.0, "the kernel reported no duration");
    assert!(
        many < one * 3.0 + 100.0,
        "64 rules x 10k CIDRs cost {many:.0} ns/packet vs {one:.0} for one rule"
    );
}
