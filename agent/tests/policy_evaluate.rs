//! The evaluator's fixed parts: implicit allowances (each switchable), invalid packets, deny
//! rules, rule order, family separation and audit mode.

use std::collections::BTreeMap;

use nodewall::config::{
    Action, BackendKind, Config, Implicit, Mode, PortRange, Protocol, RuleConfig, Source,
};
use nodewall::policy::{self, CtState, Packet, Reason, Verdict, L4};

fn rule(
    name: &str,
    action: Action,
    protocol: Protocol,
    ports: &[(u16, u16)],
    from: &[&str],
) -> RuleConfig {
    RuleConfig {
        name: name.into(),
        action,
        protocol,
        ports: ports.iter().map(|&(a, b)| PortRange::new(a, b)).collect(),
        from: from
            .iter()
            .map(|s| match (s.parse(), s.parse::<std::net::IpAddr>()) {
                (Ok(net), _) => Source::Cidr(net),
                (_, Ok(ip)) => Source::Cidr(ip.into()),
                _ => Source::Network(s.to_string()),
            })
            .collect(),
    }
}

fn config(rules: Vec<RuleConfig>) -> Config {
    Config {
        backend: BackendKind::Nft,
        mode: Mode::Enforce,
        interfaces: vec![],
        profile: None,
        networks: BTreeMap::from([(
            "lab".to_string(),
            vec![
                "198.18.0.0/24".parse().unwrap(),
                "fd00:1::/64".parse().unwrap(),
            ],
        )]),
        discovered: Default::default(),
        kubernetes: None,
        rules,
        failsafe: vec![],
        implicit: Implicit::default(),
    }
}

fn eval(cfg: &Config, src: &str, l4: L4, ct: CtState) -> Verdict {
    let policy = policy::compile(cfg).unwrap();
    policy::evaluate(
        &policy,
        &Packet {
            src: src.parse().unwrap(),
            l4,
            ct,
        },
    )
}

const TCP80: L4 = L4::Tcp {
    sport: 40000,
    dport: 80,
};

#[test]
fn invalid_is_dropped_before_anything_even_with_an_allow_all_rule() {
    let cfg = config(vec![rule(
        "all",
        Action::Allow,
        Protocol::All,
        &[],
        &["0.0.0.0/0", "::/0"],
    )]);
    let v = eval(&cfg, "198.18.0.1", TCP80, CtState::Invalid);
    assert_eq!((v.action, v.reason), (Action::Deny, Reason::Invalid));
}

#[test]
fn established_and_related_pass_unless_switched_off() {
    let mut cfg = config(vec![]);
    assert_eq!(
        eval(&cfg, "203.0.113.1", TCP80, CtState::Established).reason,
        Reason::Established
    );
    assert_eq!(
        eval(&cfg, "203.0.113.1", TCP80, CtState::Related).reason,
        Reason::Established
    );
    cfg.implicit.established = false;
    assert_eq!(
        eval(&cfg, "203.0.113.1", TCP80, CtState::Established).reason,
        Reason::DefaultDeny
    );
}

#[test]
fn icmp_errors_of_tracked_flows_pass_but_not_other_related_icmp() {
    let mut cfg = config(vec![]);
    let frag_needed = L4::Icmp {
        icmp_type: 3,
        code: 4,
    };
    let too_big = L4::Icmp {
        icmp_type: 2,
        code: 0,
    };
    assert_eq!(
        eval(&cfg, "203.0.113.1", frag_needed, CtState::Related).reason,
        Reason::IcmpError
    );
    assert_eq!(
        eval(&cfg, "2001:db8::1", too_big, CtState::Related).reason,
        Reason::IcmpError
    );
    // An echo request is never an error, related or not; nor is an untracked error.
    assert_eq!(
        eval(
            &cfg,
            "203.0.113.1",
            L4::Icmp {
                icmp_type: 8,
                code: 0
            },
            CtState::Related
        )
        .reason,
        Reason::DefaultDeny
    );
    assert_eq!(
        eval(&cfg, "203.0.113.1", frag_needed, CtState::New).reason,
        Reason::DefaultDeny
    );
    cfg.implicit.icmp_errors = false;
    assert_eq!(
        eval(&cfg, "203.0.113.1", frag_needed, CtState::Related).reason,
        Reason::DefaultDeny
    );
}

#[test]
fn neighbour_discovery_is_icmpv6_133_to_137_only() {
    let mut cfg = config(vec![]);
    for t in 133..=137 {
        assert_eq!(
            eval(
                &cfg,
                "fe80::1",
                L4::Icmp {
                    icmp_type: t,
                    code: 0
                },
                CtState::New
            )
            .reason,
            Reason::NeighbourDiscovery
        );
    }
    for t in [132, 138] {
        assert_eq!(
            eval(
                &cfg,
                "fe80::1",
                L4::Icmp {
                    icmp_type: t,
                    code: 0
                },
                CtState::New
            )
            .reason,
            Reason::DefaultDeny
        );
    }
    // ICMPv4 type 134 is not neighbour discovery.
    assert_eq!(
        eval(
            &cfg,
            "198.18.9.9",
            L4::Icmp {
                icmp_type: 134,
                code: 0
            },
            CtState::New
        )
        .reason,
        Reason::DefaultDeny
    );
    cfg.implicit.neighbour_discovery = false;
    assert_eq!(
        eval(
            &cfg,
            "fe80::1",
            L4::Icmp {
                icmp_type: 135,
                code: 0
            },
            CtState::New
        )
        .reason,
        Reason::DefaultDeny
    );
}

#[test]
fn dhcp_client_replies_need_both_ports() {
    let mut cfg = config(vec![]);
    assert_eq!(
        eval(
            &cfg,
            "198.18.0.1",
            L4::Udp {
                sport: 67,
                dport: 68
            },
            CtState::New
        )
        .reason,
        Reason::DhcpClient
    );
    assert_eq!(
        eval(
            &cfg,
            "198.18.0.1",
            L4::Udp {
                sport: 1067,
                dport: 68
            },
            CtState::New
        )
        .reason,
        Reason::DefaultDeny
    );
    assert_eq!(
        eval(
            &cfg,
            "198.18.0.1",
            L4::Tcp {
                sport: 67,
                dport: 68
            },
            CtState::New
        )
        .reason,
        Reason::DefaultDeny
    );
    cfg.implicit.dhcp_client = false;
    assert_eq!(
        eval(
            &cfg,
            "198.18.0.1",
            L4::Udp {
                sport: 67,
                dport: 68
            },
            CtState::New
        )
        .reason,
        Reason::DefaultDeny
    );
}

#[test]
fn first_match_wins_and_deny_rules_count_as_rule() {
    let cfg = config(vec![
        rule(
            "block-one",
            Action::Deny,
            Protocol::Tcp,
            &[(80, 80)],
            &["198.18.0.66"],
        ),
        rule(
            "web",
            Action::Allow,
            Protocol::Tcp,
            &[(80, 80), (443, 443)],
            &["lab"],
        ),
        rule("block-lab", Action::Deny, Protocol::All, &[], &["lab"]),
    ]);
    let v = eval(&cfg, "198.18.0.66", TCP80, CtState::New);
    assert_eq!(
        (v.action, v.reason, v.rule),
        (Action::Deny, Reason::Rule, Some(0))
    );
    let v = eval(&cfg, "198.18.0.67", TCP80, CtState::New);
    assert_eq!((v.action, v.rule), (Action::Allow, Some(1)));
    let v = eval(
        &cfg,
        "fd00:1::5",
        L4::Udp {
            sport: 1,
            dport: 53,
        },
        CtState::New,
    );
    assert_eq!(
        (v.action, v.reason, v.rule),
        (Action::Deny, Reason::Rule, Some(2))
    );
    let v = eval(&cfg, "198.18.1.1", TCP80, CtState::New);
    assert_eq!(
        (v.action, v.reason, v.rule),
        (Action::Deny, Reason::DefaultDeny, None)
    );
}

#[test]
fn icmp_rules_match_their_own_family_only() {
    let cfg = config(vec![rule(
        "ping4",
        Action::Allow,
        Protocol::Icmp,
        &[],
        &["0.0.0.0/0", "::/0"],
    )]);
    assert_eq!(
        eval(
            &cfg,
            "198.18.0.1",
            L4::Icmp {
                icmp_type: 8,
                code: 0
            },
            CtState::New
        )
        .action,
        Action::Allow
    );
    assert_eq!(
        eval(
            &cfg,
            "fd00::1",
            L4::Icmp {
                icmp_type: 128,
                code: 0
            },
            CtState::New
        )
        .action,
        Action::Deny
    );
    let cfg = config(vec![rule(
        "ping6",
        Action::Allow,
        Protocol::Icmpv6,
        &[],
        &["::/0"],
    )]);
    assert_eq!(
        eval(
            &cfg,
            "fd00::1",
            L4::Icmp {
                icmp_type: 128,
                code: 0
            },
            CtState::New
        )
        .action,
        Action::Allow
    );
}

#[test]
fn audit_mode_reports_the_drop_but_passes_the_packet() {
    let mut cfg = config(vec![]);
    cfg.mode = Mode::Audit;
    let v = eval(&cfg, "203.0.113.1", TCP80, CtState::New);
    assert_eq!(
        (v.action, v.reason, v.enforced),
        (Action::Deny, Reason::DefaultDeny, false)
    );
    assert!(v.passes());
    cfg.mode = Mode::Enforce;
    assert!(!eval(&cfg, "203.0.113.1", TCP80, CtState::New).passes());
}

#[test]
fn neighbour_discovery_is_decided_before_the_invalid_check() {
    // conntrack marks ICMPv6 redirects invalid; IPv6 still needs them.
    let cfg = config(vec![]);
    let redirect = L4::Icmp {
        icmp_type: 137,
        code: 0,
    };
    assert_eq!(
        eval(&cfg, "fe80::1", redirect, CtState::Invalid).reason,
        Reason::NeighbourDiscovery
    );
    // Everything else that is invalid stays dropped, DHCP included.
    assert_eq!(
        eval(
            &cfg,
            "198.18.0.1",
            L4::Udp {
                sport: 67,
                dport: 68
            },
            CtState::Invalid
        )
        .reason,
        Reason::Invalid
    );
}

#[test]
fn digest_depends_on_rules_and_mode_not_on_interfaces() {
    let cfg = config(vec![rule(
        "web",
        Action::Allow,
        Protocol::Tcp,
        &[(80, 80)],
        &["lab"],
    )]);
    let a = policy::compile(&cfg).unwrap();
    let mut b = a.clone();
    b.interfaces = vec!["ens5".into()];
    assert_eq!(a.digest(), b.digest(), "uplink names differ between nodes");
    assert_eq!(a.digest().len(), 16);
    b.mode = Mode::Audit;
    assert_ne!(a.digest(), b.digest());
    let mut c = cfg.clone();
    c.networks
        .get_mut("lab")
        .unwrap()
        .push("198.18.5.0/24".parse().unwrap());
    assert_ne!(
        a.digest(),
        policy::compile(&c).unwrap().digest(),
        "one more CIDR"
    );
}
