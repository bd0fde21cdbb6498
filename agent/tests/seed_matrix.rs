//! The seed tables, cell by cell, against the evaluator behind `nodewall explain`.
//!
//! The expected verdicts come from an independent, hand-written reading of the seed tables in
//! `shared/seeds/` (below), not from the profile code, so a transcription slip in either shows up.
//! For every profile: sources from each named network and from outside (IPv4 and IPv6), every
//! listed port and both neighbours, each protocol.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use nodewall::config::{BackendKind, Config, Implicit, Mode};
use nodewall::policy::{self, Action, CtState, Origin, Packet, Reason, L4};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Src {
    Cluster,
    Container,
    ControlPlane,
    Outside,
}
use Src::*;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum P {
    Tcp,
    Udp,
    /// ICMP for IPv4 sources and ICMPv6 for IPv6 ones (seeds write "ICMP from 0.0.0.0/0").
    Icmp,
    All,
}

/// One allowed cell of a seed table: sources, protocol, ports (empty = all).
struct Cell(&'static [Src], P, &'static [(u16, u16)]);

const NODEPORTS: &[(u16, u16)] = &[(30000, 32768)];
const ANY_SRC: &[Src] = &[Cluster, Container, ControlPlane, Outside];

fn seed_tables() -> Vec<(&'static str, Vec<Cell>)> {
    let api7: &[(u16, u16)] = &[
        (60001, 60001),
        (60002, 60002),
        (10250, 10250),
        (2380, 2380),
        (2379, 2379),
        (53, 53),
        (17443, 17443),
    ];
    let api10: &[(u16, u16)] = &[
        (60001, 60001),
        (60002, 60002),
        (10250, 10250),
        (2380, 2380),
        (2379, 2379),
        (53, 53),
        (17443, 17443),
        (50055, 50055),
        (443, 443),
        (61678, 61678),
    ];
    vec![
        // 002 "Default security group rules for node": container all, cluster all, tcp/udp
        // 30000-32768 from 0.0.0.0/0, ICMP from 0.0.0.0/0.
        (
            "tke-node",
            vec![
                Cell(&[Container], P::All, &[]),
                Cell(&[Cluster], P::All, &[]),
                Cell(ANY_SRC, P::Tcp, NODEPORTS),
                Cell(ANY_SRC, P::Udp, NODEPORTS),
                Cell(ANY_SRC, P::Icmp, &[]),
            ],
        ),
        // 002 "master node in self-deployed cluster".
        (
            "tke-master",
            vec![
                Cell(ANY_SRC, P::Icmp, &[]),
                Cell(&[Cluster], P::Tcp, NODEPORTS),
                Cell(&[Cluster], P::Udp, NODEPORTS),
                Cell(&[Cluster], P::Tcp, api10),
                Cell(&[Container], P::Tcp, api7),
                Cell(&[Container], P::Tcp, NODEPORTS),
                Cell(&[Container], P::Udp, NODEPORTS),
                Cell(&[Container], P::Udp, &[(53, 53)]),
                Cell(&[Cluster], P::Udp, &[(53, 53)]),
            ],
        ),
        // 003 cluster security group, recommended inbound: all from itself.
        (
            "eks-cluster",
            vec![Cell(&[Cluster, ControlPlane], P::All, &[])],
        ),
        // 003 restricted: TCP 443 and TCP 10250 from the cluster security group.
        (
            "eks-cluster-restricted",
            vec![Cell(
                &[Cluster, ControlPlane],
                P::Tcp,
                &[(443, 443), (10250, 10250)],
            )],
        ),
        // 003 node SG minimum: node-to-node (operator's protocols, read as all), TCP 10250 from CP.
        (
            "eks-node",
            vec![
                Cell(&[Cluster], P::All, &[]),
                Cell(&[ControlPlane], P::Tcp, &[(10250, 10250)]),
            ],
        ),
        // 003 node SG recommended: all from nodes, TCP 443 + 1025-65535 from CP.
        (
            "eks-node-recommended",
            vec![
                Cell(&[Cluster], P::All, &[]),
                Cell(&[ControlPlane], P::Tcp, &[(443, 443), (1025, 65535)]),
            ],
        ),
        // 003 control-plane SG: TCP 443 from all node SGs.
        (
            "eks-control-plane",
            vec![Cell(&[Cluster], P::Tcp, &[(443, 443)])],
        ),
        // 004 minimal: TCP 443,10250 from the cluster SG (+ node-to-node protocols).
        (
            "ack-node",
            vec![
                Cell(
                    &[Cluster, ControlPlane],
                    P::Tcp,
                    &[(443, 443), (10250, 10250)],
                ),
                Cell(&[Cluster], P::All, &[]),
            ],
        ),
        // 004 recommended: ALL and TCP 443,1025-65535 from the cluster SG.
        (
            "ack-node-recommended",
            vec![
                Cell(&[Cluster, ControlPlane], P::All, &[]),
                Cell(
                    &[Cluster, ControlPlane],
                    P::Tcp,
                    &[(443, 443), (1025, 65535)],
                ),
            ],
        ),
    ]
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn networks() -> BTreeMap<String, Vec<IpNet>> {
    BTreeMap::from([
        (
            "cluster".to_string(),
            vec![net("10.0.0.0/16"), net("fd00:aa::/64")],
        ),
        (
            "container".to_string(),
            vec![net("172.16.0.0/16"), net("fd00:bb::/64")],
        ),
        (
            "control-plane".to_string(),
            vec![net("10.1.0.10/32"), net("fd00:cc::10/128")],
        ),
    ])
}

fn sources(src: Src) -> [IpAddr; 2] {
    let s = match src {
        Cluster => ["10.0.3.4", "fd00:aa::34"],
        Container => ["172.16.9.9", "fd00:bb::99"],
        ControlPlane => ["10.1.0.10", "fd00:cc::10"],
        Outside => ["203.0.113.7", "2001:db8::7"],
    };
    [s[0].parse().unwrap(), s[1].parse().unwrap()]
}

fn config(profile: &str) -> Config {
    Config {
        backend: BackendKind::Nft,
        mode: Mode::Enforce,
        interfaces: vec![],
        profile: Some(profile.into()),
        networks: networks(),
        discovered: Default::default(),
        kubernetes: None,
        rules: vec![],
        // No failsafe: only the seed table decides (tcp/22 is tested separately).
        failsafe: vec![],
        implicit: Implicit::default(),
        drops: Default::default(),
        egress: Default::default(),
    }
}

fn expected(cells: &[Cell], src: Src, proto: P, port: Option<u16>) -> bool {
    cells.iter().any(|Cell(srcs, p, ports)| {
        srcs.contains(&src)
            && (*p == P::All || *p == proto)
            && (ports.is_empty()
                || port.is_some_and(|x| ports.iter().any(|&(a, b)| a <= x && x <= b)))
    })
}

#[test]
fn every_profile_gives_its_seed_tables_verdicts() {
    let mut checked = 0;
    for (profile, cells) in seed_tables() {
        let policy = policy::compile(&config(profile)).unwrap();
        let mut ports: Vec<u16> = vec![1, 22, 80, 1024, 8080, 65535];
        for Cell(_, _, rs) in &cells {
            for &(a, b) in *rs {
                ports.extend([a.saturating_sub(1).max(1), a, b, b.saturating_add(1)]);
            }
        }
        ports.sort();
        ports.dedup();
        for src in [Cluster, Container, ControlPlane, Outside] {
            for addr in sources(src) {
                let mut probes: Vec<(P, L4, Option<u16>)> = Vec::new();
                for &port in &ports {
                    probes.push((
                        P::Tcp,
                        L4::Tcp {
                            sport: 40000,
                            dport: port,
                        },
                        Some(port),
                    ));
                    probes.push((
                        P::Udp,
                        L4::Udp {
                            sport: 40000,
                            dport: port,
                        },
                        Some(port),
                    ));
                }
                let echo = if addr.is_ipv6() { 128 } else { 8 };
                probes.push((
                    P::Icmp,
                    L4::Icmp {
                        icmp_type: echo,
                        code: 0,
                    },
                    None,
                ));
                // Another IP protocol (GRE) is allowed only by "all" cells.
                probes.push((P::All, L4::Other { number: 47 }, None));
                for (p, l4, port) in probes {
                    let pkt = Packet {
                        src: addr,
                        l4,
                        ct: CtState::New,
                    };
                    let v = policy::evaluate(&policy, &pkt);
                    let want = if p == P::All {
                        cells.iter().any(|c| c.0.contains(&src) && c.1 == P::All)
                    } else {
                        expected(&cells, src, p, port)
                    };
                    assert_eq!(
                        v.action == Action::Allow,
                        want,
                        "{profile}: {src:?} {addr} {l4:?} -> {v:?}"
                    );
                    if want {
                        let rule = &policy.rules[v.rule.expect("allowed by a rule")];
                        assert!(
                            matches!(&rule.origin, Origin::Profile { profile: p, .. } if p == profile),
                            "{rule:?}"
                        );
                    } else {
                        assert_eq!(v.reason, Reason::DefaultDeny, "{profile}: {addr} {l4:?}");
                    }
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 1500, "only {checked} probes");
}

#[test]
fn verdicts_name_the_seed_row() {
    let policy = policy::compile(&config("tke-master")).unwrap();
    let pkt = Packet {
        src: "10.0.3.4".parse().unwrap(),
        l4: L4::Tcp {
            sport: 1,
            dport: 61678,
        },
        ct: CtState::New,
    };
    let v = policy::evaluate(&policy, &pkt);
    let rule = &policy.rules[v.rule.unwrap()];
    assert_eq!(rule.name, "tke-master/apiserver-cluster");
    let Origin::Profile { provenance, .. } = &rule.origin else {
        panic!("{rule:?}")
    };
    assert_eq!(
        (provenance.seed, provenance.row),
        ("002_45cfe4d06b09d118.txt", 4)
    );
    // The same port from the container network is not in row 5.
    let pkt = Packet {
        src: "172.16.0.1".parse().unwrap(),
        ..pkt
    };
    assert_eq!(policy::evaluate(&policy, &pkt).reason, Reason::DefaultDeny);
}

#[test]
fn default_failsafe_allows_ssh_first_and_empty_list_disables_it() {
    let mut cfg = config("eks-control-plane");
    cfg.failsafe = Config::default_failsafe();
    let policy = policy::compile(&cfg).unwrap();
    assert!(matches!(policy.rules[0].origin, Origin::Failsafe));
    for src in ["198.51.100.1", "2001:db8::1"] {
        let pkt = Packet {
            src: src.parse().unwrap(),
            l4: L4::Tcp {
                sport: 5,
                dport: 22,
            },
            ct: CtState::New,
        };
        let v = policy::evaluate(&policy, &pkt);
        assert_eq!((v.action, v.rule), (Action::Allow, Some(0)), "{src}");
    }
    let policy = policy::compile(&config("eks-control-plane")).unwrap();
    let pkt = Packet {
        src: "198.51.100.1".parse().unwrap(),
        l4: L4::Tcp {
            sport: 5,
            dport: 22,
        },
        ct: CtState::New,
    };
    assert_eq!(policy::evaluate(&policy, &pkt).reason, Reason::DefaultDeny);
}

/// The seeds' restricted outbound tables, read independently of the profile code: the cells
/// `egress.default: deny` allows (to destination networks), per profile.
fn outbound_tables() -> Vec<(&'static str, Vec<Cell>)> {
    // 003 (EKS) restricted cluster group, minimum outbound: TCP 443 and TCP 10250 to the
    // cluster security group (nodes and control plane).
    let eks_cluster = || {
        vec![
            Cell(&[Cluster, ControlPlane], P::Tcp, &[(443, 443)]),
            Cell(&[Cluster, ControlPlane], P::Tcp, &[(10250, 10250)]),
        ]
    };
    // 003 node group, minimum outbound: TCP 443 to the control-plane group.
    let eks_node = || vec![Cell(&[ControlPlane], P::Tcp, &[(443, 443)])];
    // 003 control-plane group: TCP 10250 (minimum) and TCP 1025-65535 (recommended) to the
    // node groups.
    let eks_cp = vec![
        Cell(&[Cluster], P::Tcp, &[(10250, 10250)]),
        Cell(&[Cluster], P::Tcp, &[(1025, 65535)]),
    ];
    // 004 (ACK), minimal outbound: TCP 443 to the cluster security group.
    let ack = || vec![Cell(&[Cluster, ControlPlane], P::Tcp, &[(443, 443)])];
    // 000-002 (TKE), customised outbound: allow the node network and the container network.
    let tke = || vec![Cell(&[Cluster, Container], P::All, &[])];
    vec![
        ("tke-node", tke()),
        ("tke-master", tke()),
        ("eks-cluster", eks_cluster()),
        ("eks-cluster-restricted", eks_cluster()),
        ("eks-node", eks_node()),
        ("eks-node-recommended", eks_node()),
        ("eks-control-plane", eks_cp),
        ("ack-node", ack()),
        ("ack-node-recommended", ack()),
    ]
}

/// Under `egress.default: deny` (no egress failsafe), every profile allows exactly its seed's
/// restricted outbound cells, from the node and from a pod alike, each by a rule carrying the
/// profile's provenance; without `egress` nothing outbound is judged.
#[test]
fn every_profile_gives_its_outbound_seed_verdicts() {
    use nodewall::policy::{evaluate_egress, EgressPacket, Sender};
    let tables = outbound_tables();
    assert_eq!(tables.len(), nodewall::profiles::all().len());
    let mut checked = 0;
    for (profile, cells) in tables {
        let open = policy::compile(&config(profile)).unwrap();
        assert!(
            open.egress.is_open(),
            "{profile}: egress judged without `egress`"
        );
        let mut cfg = config(profile);
        cfg.egress.default = Action::Deny;
        cfg.egress.failsafe = vec![];
        let policy = policy::compile(&cfg).unwrap();
        let mut ports: Vec<u16> = vec![1, 22, 53, 80, 8080, 65535];
        for Cell(_, _, rs) in &cells {
            for &(a, b) in *rs {
                ports.extend([a.saturating_sub(1).max(1), a, b, b.saturating_add(1)]);
            }
        }
        ports.sort();
        ports.dedup();
        for dst_net in [Cluster, Container, ControlPlane, Outside] {
            for dst in sources(dst_net) {
                let pod: IpAddr = if dst.is_ipv6() {
                    "fd00:bb::5"
                } else {
                    "172.16.0.5"
                }
                .parse()
                .unwrap();
                let mut probes: Vec<(P, L4, Option<u16>)> = Vec::new();
                for &port in &ports {
                    probes.push((
                        P::Tcp,
                        L4::Tcp {
                            sport: 40000,
                            dport: port,
                        },
                        Some(port),
                    ));
                    probes.push((
                        P::Udp,
                        L4::Udp {
                            sport: 40000,
                            dport: port,
                        },
                        Some(port),
                    ));
                }
                let echo = if dst.is_ipv6() { 128 } else { 8 };
                probes.push((
                    P::Icmp,
                    L4::Icmp {
                        icmp_type: echo,
                        code: 0,
                    },
                    None,
                ));
                probes.push((P::All, L4::Other { number: 47 }, None));
                for (p, l4, port) in probes {
                    for from in [Sender::Host, Sender::Pod(pod)] {
                        let pkt = EgressPacket {
                            from,
                            dst,
                            l4,
                            ct: CtState::New,
                        };
                        let v = evaluate_egress(&policy, &pkt);
                        let want = if p == P::All {
                            cells
                                .iter()
                                .any(|c| c.0.contains(&dst_net) && c.1 == P::All)
                        } else {
                            expected(&cells, dst_net, p, port)
                        };
                        assert_eq!(
                            v.action == Action::Allow,
                            want,
                            "{profile}: {from:?} -> {dst} {l4:?}: {v:?}"
                        );
                        if want {
                            let rule = &policy.egress.rules[v.rule.expect("allowed by a rule")];
                            assert!(
                                matches!(&rule.origin, Origin::Profile { profile: p, .. } if p == profile),
                                "{rule:?}"
                            );
                        } else {
                            assert_eq!(v.reason, Reason::DefaultDeny, "{profile}: {dst} {l4:?}");
                        }
                        checked += 1;
                    }
                }
            }
        }
    }
    assert!(checked > 1500, "only {checked} probes");
}
