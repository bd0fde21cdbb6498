//! `render` output is accepted by the real `nft` for every built-in profile, in enforce and audit
//! mode, with user deny rules and overlapping IPv4/IPv6 networks.
//!
//! `nft -c` only checks (the kernel validates the batch and aborts it), and runs in a private
//! network namespace (`unshare --net`) that disappears with the process.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use nodewall::backend::nft::render;
use nodewall::config::{
    Action, BackendKind, Config, Implicit, Mode, PortRange, Protocol, RuleConfig, Source,
};
use nodewall::policy::compile;
use nodewall::profiles;

fn nets(list: &[&str]) -> Vec<ipnet::IpNet> {
    list.iter().map(|n| n.parse().unwrap()).collect()
}

fn config(profile: &str, mode: Mode) -> Config {
    let mut networks = BTreeMap::new();
    // Overlapping and adjacent prefixes in both families: the sets must be merged to be valid.
    networks.insert(
        "cluster".to_string(),
        nets(&[
            "198.18.0.0/24",
            "198.18.0.128/25",
            "198.18.1.0/24",
            "198.19.0.7/32",
            "fd00:1::/64",
            "fd00:1::/48",
            "fd00:2::1/128",
        ]),
    );
    networks.insert(
        "container".to_string(),
        nets(&["198.18.64.0/18", "198.18.100.0/24", "fd00:64::/56"]),
    );
    networks.insert(
        "control-plane".to_string(),
        nets(&[
            "198.18.200.0/30",
            "198.18.200.2/31",
            "198.18.0.0/24",
            "fd00:c::/126",
        ]),
    );
    Config {
        backend: BackendKind::Nft,
        mode,
        interfaces: vec!["eth0".into(), "ens5".into()],
        profile: Some(profile.into()),
        networks,
        discovered: Default::default(),
        kubernetes: None,
        rules: vec![
            RuleConfig {
                name: "deny-scanner".into(),
                action: Action::Deny,
                protocol: Protocol::Tcp,
                ports: vec![PortRange::new(1, 1024), PortRange::single(8080)],
                from: vec![
                    Source::Cidr("198.18.99.0/24".parse().unwrap()),
                    Source::Cidr("fd00:99::/32".parse().unwrap()),
                ],
            },
            RuleConfig {
                name: "deny all from bad net".into(),
                action: Action::Deny,
                protocol: Protocol::All,
                ports: vec![],
                from: vec![Source::Network("container".into())],
            },
            RuleConfig {
                name: "allow-icmpv6-anywhere".into(),
                action: Action::Allow,
                protocol: Protocol::Icmpv6,
                ports: vec![],
                from: vec![Source::Cidr("::/0".parse().unwrap())],
            },
        ],
        failsafe: Config::default_failsafe(),
        implicit: Implicit::default(),
        drops: Default::default(),
        egress: Default::default(),
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs `nft -c -f -` in a private network namespace; Err carries nft's diagnostics.
fn nft_check(script: &str) -> Result<(), String> {
    let mut child = Command::new("unshare")
        .args(["--net", "nft", "-c", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawning unshare/nft: {e}"))?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn every_profile_renders_a_script_nft_accepts() {
    if !is_root() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("nft_render needs root (CAP_NET_ADMIN) to run `nft -c`; CI=true");
        }
        eprintln!("skipped: nft -c needs root (CAP_NET_ADMIN)");
        return;
    }
    let mut checked = 0;
    for profile in profiles::all() {
        for mode in [Mode::Enforce, Mode::Audit] {
            let cfg = config(profile.name, mode);
            let policy = compile(&cfg).expect("compiles");
            let script = render(&policy, &cfg.interfaces);
            assert!(script.contains("table inet nodewall {"));
            assert!(script.contains("deny-scanner"));
            if let Err(e) = nft_check(&script) {
                panic!(
                    "nft rejected the script for {} ({mode:?}):\n{e}\n---\n{script}",
                    profile.name
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, profiles::all().len() * 2);
}

#[test]
fn nft_check_rejects_a_broken_script() {
    // The check above can fail: a script with overlapping interval elements is refused.
    if !is_root() {
        return;
    }
    let bad = "table inet nodewall { set s { type ipv4_addr; flags interval; elements = { 10.0.0.0/8, 10.1.0.0/16 } } }";
    assert!(nft_check(bad).is_err());
}

#[test]
fn audit_mode_accepts_where_enforce_drops() {
    let enforce = compile(&config("tke-node", Mode::Enforce)).unwrap();
    let audit = compile(&config("tke-node", Mode::Audit)).unwrap();
    let ifs = vec!["eth0".to_string()];
    let e = render(&enforce, &ifs);
    let a = render(&audit, &ifs);
    let drop_chain = |s: &str| -> String {
        let start = s.find("chain drop.default-deny {").unwrap();
        s[start..].split('}').next().unwrap().to_string()
    };
    assert!(drop_chain(&e).contains("drop"));
    assert!(!drop_chain(&e).contains("accept"));
    assert!(drop_chain(&a).contains("accept"));
    assert!(!drop_chain(&a)["chain drop.default-deny".len()..].contains(" drop"));
}
