//! Valid configs: the shipped examples, defaults, and the typed values they produce.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use nodewall::config::{
    self, Action, BackendKind, Config, Implicit, Mode, PortRange, Protocol, RuleConfig, Source,
};
use nodewall::policy::{self, CtState, Origin, Packet, Reason, L4};

fn examples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

fn parse(text: &str) -> Config {
    config::parse(text, "test.yaml").unwrap_or_else(|e| panic!("{e}"))
}

fn tcp(src: &str, dport: u16) -> Packet {
    Packet {
        src: src.parse().unwrap(),
        l4: L4::Tcp {
            sport: 40000,
            dport,
        },
        ct: CtState::New,
    }
}

#[test]
fn every_example_parses_and_compiles() {
    let files = examples();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for expected in [
        "tke-node.yaml",
        "tke-master.yaml",
        "eks-cluster.yaml",
        "eks-node.yaml",
        "eks-control-plane.yaml",
        "ack-node.yaml",
        "standalone.yaml",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "missing example {expected} in {names:?}"
        );
    }
    for file in &files {
        let config = config::load(file).unwrap_or_else(|e| panic!("{e}"));
        let policy = policy::compile(&config).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        // The file name says which profile it demonstrates (`-egress`: with outbound rules).
        let stem = file.file_stem().unwrap().to_str().unwrap();
        let stem = stem.strip_suffix("-egress").unwrap_or(stem);
        let profile_rules = match &config.profile {
            Some(name) => {
                assert_eq!(name, stem, "{}", file.display());
                nodewall::profiles::find(name).unwrap().rules.len()
            }
            None => {
                assert_eq!(stem, "standalone");
                0
            }
        };
        assert_eq!(
            policy.rules.len(),
            config.failsafe.len() + profile_rules + config.rules.len(),
            "{}",
            file.display()
        );
        assert!(policy
            .rules
            .iter()
            .take(config.failsafe.len())
            .all(|r| r.origin == Origin::Failsafe));
    }
}

#[test]
fn standalone_example_enforces_its_rules() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/standalone.yaml");
    let policy = policy::compile(&config::load(&path).unwrap()).unwrap();
    let verdict = |pkt: &Packet| {
        let v = policy::evaluate(&policy, pkt);
        (
            v.action,
            v.rule.map(|i| policy.rules[i].name.as_str()),
            v.reason,
        )
    };
    assert_eq!(
        verdict(&tcp("198.18.0.1", 443)),
        (Action::Allow, Some("web"), Reason::Rule)
    );
    assert_eq!(
        verdict(&tcp("fd00::1", 80)),
        (Action::Allow, Some("web"), Reason::Rule)
    );
    assert_eq!(
        verdict(&tcp("172.16.66.9", 443)),
        (Action::Deny, Some("deny-blocked"), Reason::Rule)
    );
    assert_eq!(
        verdict(&tcp("198.18.0.1", 22)),
        (Action::Deny, None, Reason::DefaultDeny)
    );
    assert_eq!(
        verdict(&tcp("10.0.0.7", 22)),
        (Action::Allow, Some("failsafe-tcp-22"), Reason::Rule)
    );
}

#[test]
fn defaults_apply_when_keys_are_absent() {
    let c = parse(
        "profile: tke-node\nnetworks:\n  cluster: [10.0.0.0/16]\n  container: [172.16.0.0/16]\n",
    );
    assert_eq!(c.backend, BackendKind::Nft);
    assert_eq!(c.mode, Mode::Enforce);
    assert!(c.interfaces.is_empty());
    assert!(c.rules.is_empty());
    assert_eq!(c.failsafe, Config::default_failsafe());
    assert_eq!(c.implicit, Implicit::default());
    assert_eq!(
        c.implicit,
        Implicit {
            established: true,
            icmp_errors: true,
            neighbour_discovery: true,
            dhcp_client: true
        }
    );
}

#[test]
fn empty_failsafe_disables_it() {
    let c = parse("profile: eks-control-plane\nnetworks: {cluster: [10.0.0.0/16]}\nfailsafe: []\n");
    assert!(c.failsafe.is_empty());
    let policy = policy::compile(&c).unwrap();
    assert!(policy.rules.iter().all(|r| r.origin != Origin::Failsafe));
}

#[test]
fn failsafe_entries_get_defaults() {
    let c = parse(
        "rules:\n  - {name: web, action: allow, protocol: tcp, ports: [80], from: [0.0.0.0/0]}\n\
         failsafe:\n  - protocol: tcp\n    ports: [\"22\", \"2222-2223\"]\n  - protocol: icmp\n    action: allow\n    from: [10.9.0.0/16]\n  - name: my-ssh\n    protocol: udp\n",
    );
    assert_eq!(
        c.failsafe,
        vec![
            RuleConfig {
                name: "failsafe-tcp-22_2222-2223".into(),
                action: Action::Allow,
                protocol: Protocol::Tcp,
                ports: vec![PortRange::single(22), PortRange::new(2222, 2223)],
                from: vec![
                    Source::Cidr("0.0.0.0/0".parse().unwrap()),
                    Source::Cidr("::/0".parse().unwrap())
                ],
            },
            RuleConfig {
                name: "failsafe-icmp".into(),
                action: Action::Allow,
                protocol: Protocol::Icmp,
                ports: vec![],
                from: vec![Source::Cidr("10.9.0.0/16".parse().unwrap())],
            },
            RuleConfig {
                name: "my-ssh".into(),
                action: Action::Allow,
                protocol: Protocol::Udp,
                ports: vec![],
                from: vec![
                    Source::Cidr("0.0.0.0/0".parse().unwrap()),
                    Source::Cidr("::/0".parse().unwrap())
                ],
            },
        ]
    );
}

#[test]
fn colliding_automatic_failsafe_names_are_made_unique() {
    let c = parse(
        "rules:\n  - {name: failsafe-tcp-22, action: deny, protocol: all, from: [10.1.0.0/16]}\n\
         failsafe:\n  - {protocol: tcp, ports: [22], from: [10.0.0.0/8]}\n  - {protocol: tcp, ports: [22], from: [fd00::/8]}\n",
    );
    let names: Vec<&str> = c.failsafe.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["failsafe-0", "failsafe-1"]);
    policy::compile(&c).unwrap();
}

#[test]
fn full_config_is_typed_exactly() {
    let c = parse(
        r#"
backend: xdp
mode: audit
interfaces: [eth0, ens5]
networks:
  admins: [10.0.0.1, "fd00::1", 10.8.0.0/16]
rules:
  - name: ssh.admin_1
    action: allow
    protocol: tcp
    ports: ["22", 8000-8080, 443]
    from: [admins, 198.18.0.0/15]
  - name: drop-all
    action: deny
    protocol: all
    from: ["::/0"]
implicit:
  established: false
  icmp-errors: false
  neighbor-discovery: false
  dhcp-client: false
"#,
    );
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert_eq!(c.backend, BackendKind::Xdp);
    assert_eq!(c.mode, Mode::Audit);
    assert_eq!(c.interfaces, ["eth0", "ens5"]);
    assert_eq!(c.profile, None);
    let admins = &c.networks["admins"];
    assert_eq!(admins.len(), 3);
    assert_eq!(
        (admins[0].addr(), admins[0].prefix_len()),
        (ip("10.0.0.1"), 32)
    );
    assert_eq!(
        (admins[1].addr(), admins[1].prefix_len()),
        (ip("fd00::1"), 128)
    );
    assert_eq!(
        c.rules[0].ports,
        [
            PortRange::single(22),
            PortRange::new(8000, 8080),
            PortRange::single(443)
        ]
    );
    assert_eq!(
        c.rules[0].from,
        [
            Source::Network("admins".into()),
            Source::Cidr("198.18.0.0/15".parse().unwrap())
        ]
    );
    assert_eq!(
        (c.rules[1].action, c.rules[1].protocol),
        (Action::Deny, Protocol::All)
    );
    assert_eq!(
        c.implicit,
        Implicit {
            established: false,
            icmp_errors: false,
            neighbour_discovery: false,
            dhcp_client: false
        }
    );
    assert_eq!(c.failsafe, Config::default_failsafe());

    let policy = policy::compile(&c).unwrap();
    let v = policy::evaluate(&policy, &tcp("10.8.1.1", 8080));
    assert_eq!(policy.rules[v.rule.unwrap()].name, "ssh.admin_1");
}

#[test]
fn anchors_and_aliases_are_expanded() {
    let c = parse("networks:\n  a: &nets [10.0.0.0/8]\n  b: *nets\nrules:\n  - {name: x, action: allow, protocol: all, from: [a, b]}\n");
    assert_eq!(c.networks["a"], c.networks["b"]);
}

/// No profile and no rules is a lockdown, not a mistake to reject: only the failsafe, return
/// traffic and the other implicit allowances pass.
#[test]
fn a_config_without_profile_or_rules_is_a_lockdown() {
    let cfg = nodewall::config::parse("mode: audit\n", "lockdown.yaml").unwrap();
    let policy = nodewall::policy::compile(&cfg).unwrap();
    assert_eq!(policy.rules.len(), 1, "only the default failsafe");
}

#[test]
fn drops_section() {
    let c = nodewall::config::parse(
        "rules: []\ndrops:\n  samples-per-second: 0\n  flow-log:\n    path: /var/log/nodewall/drops.jsonl\n    max-size: 512KiB\n",
        "ok.yaml",
    )
    .unwrap();
    assert_eq!(c.drops.samples_per_second, 0);
    let log = c.drops.flow_log.unwrap();
    assert_eq!(
        log.path,
        std::path::PathBuf::from("/var/log/nodewall/drops.jsonl")
    );
    assert_eq!((log.max_size, log.max_files), (512 << 10, 5));
    let c = nodewall::config::parse("rules: []\n", "ok.yaml").unwrap();
    assert_eq!(c.drops.samples_per_second, 20);
    assert!(c.drops.flow_log.is_none());
}
