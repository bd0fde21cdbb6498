//! Differential test: random packets (random source from every network and outside, random
//! protocol and port) go through the kernel, and what the datapath did with each one must equal
//! `nodewall explain` for it.

use nodewall_common::xdp::bucket_of;
use nodewall_netns_tests::installed;
use nodewall_netns_tests::nodewall::{
    apply, explain, scattered_64s, spread_32s, Config, ConfigFile,
};
use nodewall_netns_tests::packet::L4;
use nodewall_netns_tests::probe::{mismatches, next_port, Probe, Prober};
use nodewall_netns_tests::rng::Rng;
use nodewall_netns_tests::topology::{Topology, CLUSTER, CONTAINER, CONTROL_PLANE};
use nodewall_netns_tests::{backend_tests, Backend};
use std::net::IpAddr;

/// Address ranges in no configured network.
const OUTSIDE: &[&str] = &[
    "198.19.0.0/16",
    "198.18.64.0/18",
    "fd00:99::/64",
    "fd00:abcd::/32",
];
/// Ports next to every range boundary the profiles and the user rules below use.
const INTERESTING: &[u16] = &[
    1, 21, 22, 23, 52, 53, 54, 442, 443, 444, 1024, 1025, 1026, 2379, 2380, 2381, 5000, 5100, 5101,
    8080, 10249, 10250, 10251, 17443, 29999, 30000, 30001, 32767, 32768, 32769, 50055, 60001,
    60002, 61678, 65534, 65535,
];
const PROBES_PER_PROFILE: usize = 240;

fn user_rules() -> Vec<String> {
    [
        "  - name: deny-scanners\n    action: deny\n    protocol: all\n    from: [\"198.19.128.0/17\", \"fd00:99::8000:0/113\"]",
        "  - name: partner-udp\n    action: allow\n    protocol: udp\n    ports: [\"5000-5100\"]\n    from: [\"198.19.0.0/17\", \"fd00:99::/64\"]",
        "  - name: deny-telnet\n    action: deny\n    protocol: tcp\n    ports: [\"23\", \"2380-2381\"]\n    from: [\"0.0.0.0/0\", \"::/0\"]",
    ]
    .map(String::from)
    .into_iter()
    .chain([checkerboard_rule()])
    .collect()
}

/// An allow rule over many networks of two prefix lengths in OUTSIDE: the nft backend keeps such
/// sources in hash sets, one per prefix length, which the probes' random sources cross at
/// every boundary.
fn checkerboard_rule() -> String {
    // Every other /24 of 198.19.0.0/17, every fourth followed by a /25 (a /24-/25 range).
    let v4 = (0..128u32).step_by(2).flat_map(|k| {
        let mut nets = vec![format!("\"198.19.{k}.0/24\"")];
        if k % 8 == 0 {
            nets.push(format!("\"198.19.{}.0/25\"", k + 1));
        }
        nets
    });
    // Every other /72 of the first quarter of fd00:99::/64.
    let v6 = (0..64u32)
        .step_by(2)
        .map(|k| format!("\"fd00:99::{:x}00:0:0:0/72\"", k));
    let from: Vec<String> = v4.chain(v6).collect();
    format!(
        "  - name: allow-checkerboard\n    action: allow\n    protocol: all\n    from: [{}]",
        from.join(", ")
    )
}

fn random_probe(rng: &mut Rng) -> Probe {
    let v6 = rng.chance(50);
    let groups = [CLUSTER, CONTAINER, CONTROL_PLANE, OUTSIDE];
    let cidrs: Vec<&str> = rng
        .pick(&groups)
        .iter()
        .copied()
        .filter(|c| c.contains(':') == v6)
        .collect();
    let cidr = *rng.pick(&cidrs);
    let src = rng.addr_in(cidr);
    let port = if rng.chance(60) {
        *rng.pick(INTERESTING)
    } else {
        1 + rng.below(65535) as u16
    };
    match rng.below(100) {
        0..=39 => Probe::tcp(src, port),
        40..=66 => Probe::udp(src, port),
        67..=69 => Probe {
            src,
            l4: L4::Udp {
                sport: 67,
                dport: 68,
            },
        },
        70..=91 => {
            let icmp_type = match (v6, rng.below(10)) {
                (false, 0) => 13, // timestamp request: also a new conntrack flow
                (true, 0) => 135, // neighbour solicitation: untracked, implicit allowance
                (false, _) => 8,
                (true, _) => 128,
            };
            Probe {
                src,
                l4: L4::Icmp {
                    icmp_type,
                    code: 0,
                    id: next_port(),
                },
            }
        }
        _ => Probe::other(src, 253),
    }
}

fn random_packets_match_explain(backend: Backend) -> anyhow::Result<()> {
    let topo = Topology::new()?;
    let mut prober = Prober::new(&topo)?;
    let mut rng = Rng::from_env(0x6e6f_6465_7761_6c6c);
    let mut total = 0;
    let mut failures = Vec::new();
    for (i, profile) in nodewall::profiles::all().iter().enumerate() {
        let mut cfg = Config::new(backend, Some(profile.name));
        cfg.rules = user_rules();
        if i % 3 == 1 {
            cfg.failsafe = vec![
                "  - protocol: tcp\n    ports: [\"22\"]\n    from: [\"0.0.0.0/0\", \"::/0\"]"
                    .into(),
            ];
        }
        if i == 7 {
            cfg.mode = "audit";
        }
        let file = cfg.write()?;
        apply(&topo.node, &file)?;
        let probes: Vec<Probe> = (0..PROBES_PER_PROFILE)
            .map(|_| random_probe(&mut rng))
            .collect();
        let verdicts = explain(&file, &probes)?;
        let expect: Vec<bool> = verdicts.iter().map(|v| v["verdict"] == "accept").collect();
        for i in mismatches(&mut prober, &probes, &expect)? {
            failures.push(format!(
                "{}: {:?} explain={} ({}, rule {})",
                profile.name,
                probes[i],
                verdicts[i]["verdict"],
                verdicts[i]["reason"],
                verdicts[i]["rule"]
            ));
        }
        total += probes.len();
    }
    assert!(total >= 2000, "only {total} probes");
    if !failures.is_empty() {
        anyhow::bail!(
            "{} of {total} probes disagree with explain:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
    eprintln!("{total} random probes: datapath == explain");
    Ok(())
}

/// `n` random /64s of fd00:abcd::/32 whose source-hash keys (the address's first 8 bytes as
/// a native word) have the same first bucket choice under multiplier `seed`.
fn crowded_64s(rng: &mut Rng, seed: u64, n: usize) -> Vec<String> {
    let net = |r: u64| 0xfd00_abcd_u128 << 96 | u128::from(r as u32) << 64;
    let key = |net: u128| u64::from_ne_bytes(net.to_be_bytes()[..8].try_into().expect("8"));
    let first = net(rng.next_u64());
    let target = bucket_of(key(first), seed);
    let mut out = vec![first];
    while out.len() < n {
        let candidate = net(rng.next_u64());
        if bucket_of(key(candidate), seed) == target && !out.contains(&candidate) {
            out.push(candidate);
        }
    }
    out.iter()
        .map(|&a| format!("{}/64", std::net::Ipv6Addr::from(a)))
        .collect()
}

/// A TCP (70%) or UDP probe from `src`, to telnet (the port the deny rules of the scattered
/// policies name) half of the time, else to a random port.
fn telnet_or_random(rng: &mut Rng, src: IpAddr) -> Probe {
    let port = if rng.chance(50) {
        23
    } else {
        1 + rng.below(65535) as u16
    };
    if rng.chance(70) {
        Probe::tcp(src, port)
    } else {
        Probe::udp(src, port)
    }
}

/// Sends `probes` through the kernel and fails unless each met the verdict `nodewall explain`
/// gives it under `file`, and unless they met both verdicts in fair shares.
fn agrees_with_explain(
    prober: &mut Prober,
    file: &ConfigFile,
    probes: &[Probe],
    what: &str,
) -> anyhow::Result<()> {
    let verdicts = explain(file, probes)?;
    let expect: Vec<bool> = verdicts.iter().map(|v| v["verdict"] == "accept").collect();
    let accepted = expect.iter().filter(|&&a| a).count();
    anyhow::ensure!(
        accepted > probes.len() / 4 && accepted < probes.len() * 3 / 4,
        "the probes should meet every verdict: {accepted} of {} accepted",
        probes.len()
    );
    let failures: Vec<String> = mismatches(prober, probes, &expect)?
        .into_iter()
        .map(|i| {
            format!(
                "{:?} explain={} (rule {})",
                probes[i], verdicts[i]["verdict"], verdicts[i]["rule"]
            )
        })
        .collect();
    anyhow::ensure!(
        failures.is_empty(),
        "{} of {} probes disagree with explain:\n{}",
        failures.len(),
        probes.len(),
        failures.join("\n")
    );
    eprintln!("{} probes from {what}: datapath == explain", probes.len());
    Ok(())
}

/// Prefixes scattered over a space where no configured network lies, so that each is a path
/// of its own below the last byte they share: the XDP backend keeps them as path-compressed
/// runs (IPv6 over bytes 5-15, IPv4 over byte 3), each byte of a run with its own way out.
/// Length and their /48s or /24s, which deny one port, vary what the way out leads to.
fn scattered(rng: &mut Rng) -> (Vec<String>, Vec<String>) {
    let (mut allow, mut deny) = (Vec::new(), Vec::new());
    for _ in 0..SCATTERED {
        let len = *rng.pick(&[64u32, 64, 64, 72, 100, 127, 128]);
        let addr = 0xfd00_abcd_u128 << 96 | u128::from(rng.next_u64()) << 32 >> 32;
        let net = addr & (u128::MAX << (128 - len));
        allow.push(format!("{}/{len}", std::net::Ipv6Addr::from(net)));
        if rng.chance(20) {
            deny.push(format!("{}/48", std::net::Ipv6Addr::from(net >> 80 << 80)));
        }
    }
    for _ in 0..SCATTERED / 4 {
        let len = *rng.pick(&[32u32, 32, 30, 28]);
        let addr = 0xc613_0000 | (rng.next_u64() as u32 & 0xffff);
        let net = addr & (u32::MAX << (32 - len));
        allow.push(format!("{}/{len}", std::net::Ipv4Addr::from(net)));
        if rng.chance(20) {
            deny.push(format!("{}/24", std::net::Ipv4Addr::from(net >> 8 << 8)));
        }
    }
    (allow, deny)
}

const SCATTERED: usize = 160;

/// Random packets from inside each scattered prefix and from addresses that leave it at one
/// byte (any byte of its run), against `explain`.
fn scattered_sources_match_explain(backend: Backend) -> anyhow::Result<()> {
    let topo = Topology::new()?;
    let mut prober = Prober::new(&topo)?;
    let mut rng = Rng::from_env(0x0073_6361_7474_6572);
    // Applied over a policy that shares half its prefixes, so that the second apply rewrites
    // the tables in place (runs kept, renumbered, added and removed), as a re-apply does.
    let (old_allow, old_deny) = scattered(&mut rng);
    let (mut allow, deny) = scattered(&mut rng);
    allow.extend(old_allow.iter().step_by(2).cloned());
    let quoted = |nets: &[String]| {
        nets.iter()
            .map(|n| format!("\"{n}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let policy = |allow: &[String], deny: &[String]| {
        let mut cfg = Config::new(backend, None);
        cfg.rules = vec![
            format!("  - name: deny-telnet-around\n    action: deny\n    protocol: tcp\n    ports: [\"23\"]\n    from: [{}]", quoted(deny)),
            format!("  - name: allow-partners\n    action: allow\n    protocol: all\n    from: [{}]", quoted(allow)),
        ];
        cfg.write()
    };
    apply(&topo.node, &policy(&old_allow, &old_deny)?)?;
    let file = policy(&allow, &deny)?;
    apply(&topo.node, &file)?;
    let mut probes = Vec::new();
    // The prefixes the second apply removed.
    for net in old_allow.iter().skip(1).step_by(2) {
        let src = rng.addr_in(net);
        probes.push(Probe::udp(src, 1 + rng.below(65535) as u16));
    }
    for net in &allow {
        let inside = rng.addr_in(net);
        let len: u32 = net.split_once('/').expect("CIDR").1.parse()?;
        let outside = match inside {
            IpAddr::V4(a) => {
                let byte = 2 + rng.below(u64::from(len.div_ceil(8) - 2)) as u32;
                IpAddr::V4((u32::from(a) ^ 1 << (8 * (3 - byte) + rng.below(8) as u32)).into())
            }
            IpAddr::V6(a) => {
                let byte = 4 + rng.below(u64::from(len.div_ceil(8) - 4)) as u32;
                IpAddr::V6((u128::from(a) ^ 1 << (8 * (15 - byte) + rng.below(8) as u32)).into())
            }
        };
        for src in [inside, outside] {
            probes.push(telnet_or_random(&mut rng, src));
        }
    }
    agrees_with_explain(&mut prober, &file, &probes, "scattered sources")
}

/// More scattered prefixes than the XDP backend's flat tables hold (20,000 runs of each family
/// where a generation has 16,384): each family's commonest prefixes that contain no other
/// (IPv6 /64s, IPv4 /32s) go into its source hash, everything else stays flat. The IPv4 /32s
/// lie one per /16 across the unicast space, as configuration only; the probes come from those
/// inside 198.19.0.0/16. Around some prefixes a /48 or /24 denies telnet (flat: it contains
/// hashed ones), and inside some /64s a /100 denies everything (those /64s contain it, so
/// they stay flat; hashed, their answer would shadow the /100's). Applied three times, each
/// policy sharing half of the one before, so that both generations' hash entries are
/// rewritten in place; the probes include the prefixes the last apply removed.
fn overflowing_sources_match_explain(backend: Backend) -> anyhow::Result<()> {
    const N: usize = 20_000;
    let topo = Topology::new()?;
    let mut prober = Prober::new(&topo)?;
    let mut rng = Rng::from_env(0x006f_7665_7266_6c6f);
    let policy_nets = |rng: &mut Rng| {
        let mut v6 = scattered_64s(rng, N);
        let mut v4 = spread_32s(rng, N);
        let probed: Vec<String> = (0..200)
            .map(|_| format!("198.19.{}.{}/32", rng.below(256), rng.below(256)))
            .collect();
        v6.sort();
        v6.dedup();
        v4.extend(probed.iter().cloned());
        v4.sort();
        v4.dedup();
        (v6, v4, probed)
    };
    let (a6, a4, a_probed) = policy_nets(&mut rng);
    let (b6, b4, b_probed) = policy_nets(&mut rng);
    let (c6, c4, c_probed) = policy_nets(&mut rng);
    let half = |x: &[String], y: &[String]| -> Vec<String> {
        let mut out: Vec<String> = x.iter().step_by(2).chain(y).cloned().collect();
        out.sort();
        out.dedup();
        out
    };
    let quoted = |nets: &[String]| {
        nets.iter()
            .map(|n| format!("\"{n}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    // Around every 40th prefix a deny; inside every 50th /64, a /100.
    let around = |v6: &[String], v4: &[String]| -> Vec<String> {
        let six = v6.iter().step_by(40).map(|n| {
            let a: std::net::Ipv6Addr = n.split_once('/').unwrap().0.parse().unwrap();
            format!("{}/48", std::net::Ipv6Addr::from(u128::from(a) >> 80 << 80))
        });
        let four = v4
            .iter()
            .filter(|n| n.starts_with("198.19."))
            .step_by(4)
            .map(|n| {
                let a: std::net::Ipv4Addr = n.split_once('/').unwrap().0.parse().unwrap();
                format!("{}/24", std::net::Ipv4Addr::from(u32::from(a) >> 8 << 8))
            });
        six.chain(four).collect()
    };
    let inner = |v6: &[String]| -> Vec<String> {
        v6.iter()
            .skip(7)
            .step_by(50)
            .map(|n| {
                let a: std::net::Ipv6Addr = n.split_once('/').unwrap().0.parse().unwrap();
                format!(
                    "{}/100",
                    std::net::Ipv6Addr::from(u128::from(a) | 0xabc << 28)
                )
            })
            .collect()
    };
    let policy = |v6: &[String], v4: &[String]| {
        let mut cfg = Config::new(backend, None);
        let allow: Vec<String> = v6.iter().chain(v4).cloned().collect();
        cfg.rules = vec![
            format!("  - name: deny-inner\n    action: deny\n    protocol: all\n    from: [{}]", quoted(&inner(v6))),
            format!("  - name: deny-telnet-around\n    action: deny\n    protocol: tcp\n    ports: [\"23\"]\n    from: [{}]", quoted(&around(v6, v4))),
            format!("  - name: allow-partners\n    action: allow\n    protocol: all\n    from: [{}]", quoted(&allow)),
        ];
        cfg.write()
    };
    let (b6, b4) = (half(&a6, &b6), half(&a4, &b4));
    let (mut c6, c4) = (half(&b6, &c6), half(&b4, &c4));
    apply(&topo.node, &policy(&a6, &a4)?)?;
    apply(&topo.node, &policy(&b6, &b4)?)?;
    // Twelve /64s whose first bucket choice is the same (under the multipliers the XDP
    // backend picks, the same for every policy that fits them): at most six fit there, the
    // rest live in their second choice, which only a lookup that misses the first one reads.
    let hash = (backend != Backend::Nft)
        .then(|| installed::xdp_hash(&topo.node))
        .transpose()?;
    let seed = hash.map_or(3, |h| h.seeds[0]);
    let crowded = crowded_64s(&mut rng, seed, 12);
    c6.extend(crowded.iter().cloned());
    c6.sort();
    c6.dedup();
    let file = policy(&c6, &c4)?;
    apply(&topo.node, &file)?;
    if let Some(before) = hash {
        let now = installed::xdp_hash(&topo.node)?;
        anyhow::ensure!(
            now.lens == [32, 64],
            "hashed prefix lengths {:?}, not /32 and /64",
            now.lens
        );
        anyhow::ensure!(
            now.seeds == before.seeds,
            "other multipliers: {now:?}, were {before:?}"
        );
    }
    let mut probes = Vec::new();
    let probe = |rng: &mut Rng, src: IpAddr, probes: &mut Vec<Probe>| {
        probes.push(telnet_or_random(rng, src));
    };
    let removed6: Vec<&String> = a6
        .iter()
        .chain(&b6)
        .filter(|n| c6.binary_search(n).is_err())
        .collect();
    let removed4: Vec<&String> = a_probed
        .iter()
        .chain(&b_probed)
        .filter(|n| c4.binary_search(n).is_err())
        .collect();
    for _ in 0..60 {
        let net = *rng.pick(&removed6);
        let src = rng.addr_in(net);
        probe(&mut rng, src, &mut probes);
    }
    for net in removed4.iter().take(60) {
        let src = rng.addr_in(net);
        probe(&mut rng, src, &mut probes);
    }
    for _ in 0..150 {
        let net = rng.pick(&c6).clone();
        let inside = rng.addr_in(&net);
        let IpAddr::V6(a) = inside else {
            unreachable!()
        };
        let byte = 4 + rng.below(4) as u32;
        let outside =
            IpAddr::V6((u128::from(a) ^ 1 << (8 * (15 - byte) + rng.below(8) as u32)).into());
        probe(&mut rng, inside, &mut probes);
        probe(&mut rng, outside, &mut probes);
    }
    for net in &crowded {
        let inside = rng.addr_in(net);
        probe(&mut rng, inside, &mut probes);
        let IpAddr::V6(a) = inside else {
            unreachable!()
        };
        probe(
            &mut rng,
            IpAddr::V6((u128::from(a) ^ 1 << 64).into()),
            &mut probes,
        );
    }
    for net in inner(&c6).iter().take(40) {
        let src = rng.addr_in(net);
        probe(&mut rng, src, &mut probes);
    }
    for net in c_probed.iter().take(100) {
        let src = rng.addr_in(net);
        let IpAddr::V4(a) = src else { unreachable!() };
        probe(&mut rng, src, &mut probes);
        let near = IpAddr::V4((u32::from(a) ^ 1 << rng.below(16)).into());
        probe(&mut rng, near, &mut probes);
    }
    agrees_with_explain(&mut prober, &file, &probes, "overflowing sources")
}

backend_tests!(
    random_packets_match_explain,
    scattered_sources_match_explain,
    overflowing_sources_match_explain
);
