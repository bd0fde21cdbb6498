//! Configs built in code, for the policy tests.

#![allow(dead_code)]

use std::collections::BTreeMap;

use nodewall::config::{
    Action, BackendKind, Config, Implicit, Mode, PortRange, Protocol, RuleConfig, Source,
};

pub fn rule(
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

pub fn config(rules: Vec<RuleConfig>) -> Config {
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
        drops: Default::default(),
        egress: Default::default(),
    }
}
