//! Random policies and packets for the differential tests (XDP vs `policy::evaluate`).
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use nodewall::config::{Action, Implicit, Mode, PortRange, Protocol};
use nodewall::policy::{AddrSet, CtState, Origin, Packet, Policy, PortSet, Rule, L4};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;

/// Prefixes that rules draw their sources from: nested and overlapping on purpose.
pub struct Pool {
    pub nets: Vec<IpNet>,
    /// Ports at rule range edges (and one past them), where off-by-one errors live.
    pub ports: Vec<u16>,
}

const V4_BASE: u32 = 0xc612_0000; // 198.18.0.0/15
const V6_BASE: u128 = 0xfd00 << 112;

fn v4_net(rng: &mut StdRng) -> IpNet {
    let len = *[0u8, 1, 8, 15, 16, 17, 20, 24, 24, 27, 30, 31, 32]
        .choose(rng)
        .unwrap();
    let addr = if len >= 15 {
        V4_BASE | (rng.gen::<u32>() & 0x1_ffff)
    } else {
        rng.gen()
    };
    IpNet::V4(Ipv4Net::new(Ipv4Addr::from(addr), len).unwrap().trunc())
}

fn v6_net(rng: &mut StdRng) -> IpNet {
    let len = *[0u8, 8, 16, 32, 48, 56, 64, 64, 96, 120, 127, 128]
        .choose(rng)
        .unwrap();
    // Few distinct bits below the /8 so that prefixes nest often.
    let low: u128 = ((rng.gen::<u128>() & 0x3) << 110)
        | ((rng.gen::<u128>() & 0x3) << 64)
        | (rng.gen::<u128>() & 0xff);
    let addr = if len >= 8 { V6_BASE | low } else { rng.gen() };
    IpNet::V6(Ipv6Net::new(Ipv6Addr::from(addr), len).unwrap().trunc())
}

pub fn pool(rng: &mut StdRng, size: usize) -> Pool {
    let mut nets = Vec::with_capacity(size);
    for _ in 0..size {
        nets.push(if rng.gen_bool(0.5) {
            v4_net(rng)
        } else {
            v6_net(rng)
        });
    }
    Pool {
        nets,
        ports: Vec::new(),
    }
}

fn port_ranges(rng: &mut StdRng) -> Vec<PortRange> {
    let n = rng.gen_range(1..=3);
    (0..n)
        .map(|_| {
            let start: u16 = if rng.gen_bool(0.5) {
                *[1u16, 22, 53, 67, 68, 80, 443, 1024, 8080, 30000, 65535]
                    .choose(rng)
                    .unwrap()
            } else {
                rng.gen_range(1..=65535)
            };
            let span: u32 = *[0u32, 0, 1, 10, 1000, 40000].choose(rng).unwrap();
            PortRange::new(start, (start as u32 + span).min(65535) as u16)
        })
        .collect()
}

pub fn random_policy(rng: &mut StdRng, pool: &mut Pool, rules: usize) -> Policy {
    let mut out = Vec::with_capacity(rules);
    pool.ports.clear();
    for i in 0..rules {
        let protocol = *[
            Protocol::Tcp,
            Protocol::Tcp,
            Protocol::Udp,
            Protocol::Udp,
            Protocol::Icmp,
            Protocol::Icmpv6,
            Protocol::All,
        ]
        .choose(rng)
        .unwrap();
        let ports = if protocol.has_ports() && rng.gen_bool(0.8) {
            PortSet::new(port_ranges(rng))
        } else {
            PortSet::any()
        };
        for r in ports.ranges() {
            pool.ports.extend([
                r.start.saturating_sub(1),
                r.start,
                r.end,
                r.end.saturating_add(1),
            ]);
        }
        let sources = if rng.gen_bool(0.1) {
            AddrSet::any()
        } else {
            let n = rng.gen_range(1..=5);
            let nets: Vec<IpNet> = (0..n).map(|_| *pool.nets.choose(rng).unwrap()).collect();
            AddrSet::from_nets(&nets)
        };
        out.push(Rule {
            name: format!("r{i}-{}", rng.gen::<u16>()),
            action: if rng.gen_bool(0.25) {
                Action::Deny
            } else {
                Action::Allow
            },
            protocol,
            ports,
            sources,
            origin: Origin::User,
        });
    }
    Policy {
        mode: if rng.gen_bool(0.2) {
            Mode::Audit
        } else {
            Mode::Enforce
        },
        implicit: Implicit {
            established: rng.gen_bool(0.7),
            icmp_errors: rng.gen_bool(0.7),
            neighbour_discovery: rng.gen_bool(0.7),
            dhcp_client: rng.gen_bool(0.7),
        },
        rules: out,
        interfaces: Vec::new(),
        profile: None,
        samples_per_second: nodewall::config::DEFAULT_SAMPLES_PER_SECOND,
        egress: Default::default(),
    }
}

fn addr_in(rng: &mut StdRng, net: &IpNet) -> IpAddr {
    match net {
        IpNet::V4(n) => {
            let (a, b) = (u32::from(n.network()), u32::from(n.broadcast()));
            let x = match rng.gen_range(0..4) {
                0 => a.wrapping_sub(1),
                1 => b.wrapping_add(1),
                2 => *[a, b].choose(rng).unwrap(),
                _ => a + (rng.gen::<u32>() % (b - a).saturating_add(1).max(1)),
            };
            IpAddr::V4(x.into())
        }
        IpNet::V6(n) => {
            let (a, b) = (u128::from(n.network()), u128::from(n.broadcast()));
            let x = match rng.gen_range(0..4) {
                0 => a.wrapping_sub(1),
                1 => b.wrapping_add(1),
                2 => *[a, b].choose(rng).unwrap(),
                _ => a + (rng.gen::<u128>() % (b - a).saturating_add(1).max(1)),
            };
            IpAddr::V6(x.into())
        }
    }
}

/// IP protocol numbers that the XDP parser treats as something else than "other" in the
/// given family (the transport protocols it reads, and IPv6 extension headers).
fn parsed_specially(v6: bool, n: u8) -> bool {
    matches!(n, 6 | 17)
        || if v6 {
            matches!(n, 58 | 0 | 43 | 44 | 51 | 60)
        } else {
            n == 1
        }
}

pub fn random_packet(rng: &mut StdRng, pool: &Pool) -> Packet {
    let src = match rng.gen_range(0..10) {
        0..=5 => {
            let net = *pool.nets.choose(rng).unwrap();
            addr_in(rng, &net)
        }
        6 => IpAddr::V4(Ipv4Addr::from(V4_BASE | (rng.gen::<u32>() & 0x1_ffff))),
        7 => IpAddr::V6(Ipv6Addr::from(V6_BASE | (rng.gen::<u128>() & 0xffff))),
        8 => IpAddr::V4(rng.gen::<u32>().into()),
        _ => IpAddr::V6(rng.gen::<u128>().into()),
    };
    let port = |rng: &mut StdRng| -> u16 {
        match rng.gen_range(0..10) {
            0..=4 if !pool.ports.is_empty() => *pool.ports.choose(rng).unwrap(),
            5 => *[67u16, 68, 0, 65535].choose(rng).unwrap(),
            _ => rng.gen(),
        }
    };
    let l4 = match rng.gen_range(0..20) {
        0..=6 => L4::Tcp {
            sport: port(rng),
            dport: port(rng),
        },
        7..=12 => {
            if rng.gen_bool(0.1) {
                L4::Udp {
                    sport: 67,
                    dport: 68,
                }
            } else {
                L4::Udp {
                    sport: port(rng),
                    dport: port(rng),
                }
            }
        }
        13..=16 => {
            let icmp_type = if rng.gen_bool(0.6) {
                *[
                    0u8, 1, 2, 3, 4, 8, 11, 12, 128, 129, 133, 134, 135, 136, 137, 138,
                ]
                .choose(rng)
                .unwrap()
            } else {
                rng.gen()
            };
            L4::Icmp {
                icmp_type,
                code: rng.gen_range(0..4),
            }
        }
        _ => loop {
            let n: u8 = rng.gen();
            if !parsed_specially(src.is_ipv6(), n) {
                break L4::Other { number: n };
            }
        },
    };
    Packet {
        src,
        l4,
        ct: CtState::New,
    }
}
