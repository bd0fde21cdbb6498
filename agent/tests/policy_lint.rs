//! `nodewall check`'s warnings: user rules that can never match, and a deny of every source on
//! SSH's port with the failsafe disabled.

mod policy_support;

use nodewall::config::{Action, Protocol};
use nodewall::policy::{self, Finding};
use policy_support::{config, rule};

/// A failsafe entry for tcp/22 from `from`.
fn ssh_from(from: &[&str]) -> nodewall::config::RuleConfig {
    rule("ssh", Action::Allow, Protocol::Tcp, &[(22, 22)], from)
}

fn lint(cfg: &nodewall::config::Config) -> Vec<Finding> {
    policy::lint(&policy::compile(cfg).unwrap())
}

#[test]
fn a_rule_covered_by_an_earlier_one_is_reported() {
    let mut cfg = config(vec![
        rule(
            "wide",
            Action::Allow,
            Protocol::Tcp,
            &[(1, 1024)],
            &["10.0.0.0/8", "fd00::/8"],
        ),
        rule(
            "narrow",
            Action::Deny,
            Protocol::Tcp,
            &[(80, 80)],
            &["10.1.0.0/16"],
        ),
        rule(
            "other-port",
            Action::Deny,
            Protocol::Tcp,
            &[(8080, 8080)],
            &["10.1.0.0/16"],
        ),
        rule(
            "v6-too",
            Action::Deny,
            Protocol::Tcp,
            &[(80, 80)],
            &["10.1.0.0/16", "2001:db8::/32"],
        ),
        rule("v6-icmp", Action::Allow, Protocol::Icmp, &[], &["fd00::/8"]),
        rule(
            "all",
            Action::Deny,
            Protocol::All,
            &[],
            &["0.0.0.0/0", "::/0"],
        ),
        rule(
            "after-all",
            Action::Allow,
            Protocol::Udp,
            &[(53, 53)],
            &["10.0.0.0/8"],
        ),
    ]);
    cfg.failsafe = vec![ssh_from(&["198.18.0.0/15"])];
    let policy = policy::compile(&cfg).unwrap();
    let found = policy::lint(&policy);
    let names: Vec<&str> = found
        .iter()
        .map(|f| policy.rules[f.rule].name.as_str())
        .collect();
    assert_eq!(names, ["narrow", "v6-icmp", "after-all"], "{found:#?}");
    assert!(
        found[0].message.contains("earlier rule `wide` (allow)"),
        "{found:?}"
    );
    assert!(found[1].message.contains("IPv4 only"), "{found:?}");
    assert!(
        found[2].message.contains("earlier rule `all` (deny)"),
        "{found:?}"
    );
}

#[test]
fn a_rule_covered_by_several_earlier_ones_together_is_reported() {
    let mut cfg = config(vec![
        rule(
            "low",
            Action::Allow,
            Protocol::Tcp,
            &[(1, 1024)],
            &["10.0.0.0/9"],
        ),
        rule(
            "high",
            Action::Deny,
            Protocol::Tcp,
            &[(443, 443)],
            &["10.128.0.0/9"],
        ),
        rule("v6", Action::Allow, Protocol::All, &[], &["fd00::/8"]),
        rule("ping", Action::Allow, Protocol::Icmp, &[], &["0.0.0.0/0"]),
        // 10.0.0.0/8 on 443 from `low` and `high`, fd00::/8 from `v6`.
        rule(
            "split",
            Action::Deny,
            Protocol::Tcp,
            &[(443, 443)],
            &["10.0.0.0/8", "fd00:1::/32"],
        ),
        // Port 80 is only `low`'s: 10.128.0.0/9 is left.
        rule(
            "port-80",
            Action::Deny,
            Protocol::Tcp,
            &[(80, 80)],
            &["10.0.0.0/8"],
        ),
        // ICMP from `ping` (every IPv4 source) and `v6`; but ICMPv6 from 2001:db8::/32 is not.
        rule(
            "icmp-both",
            Action::Deny,
            Protocol::Icmp,
            &[],
            &["10.0.0.0/8"],
        ),
        rule(
            "icmpv6-rest",
            Action::Deny,
            Protocol::Icmpv6,
            &[],
            &["fd00::/8", "2001:db8::/32"],
        ),
    ]);
    cfg.failsafe = vec![];
    let policy = policy::compile(&cfg).unwrap();
    let found = policy::lint(&policy);
    let names: Vec<&str> = found
        .iter()
        .map(|f| policy.rules[f.rule].name.as_str())
        .collect();
    assert_eq!(names, ["split", "icmp-both"], "{found:#?}");
    assert!(
        found[0]
            .message
            .contains("the earlier rules `low` (allow), `high` (deny), `v6` (allow) together"),
        "{found:?}"
    );
    assert!(
        found[1].message.contains("the earlier rule `ping` (allow)"),
        "{found:?}"
    );
}

#[test]
fn a_deny_of_everyone_on_ssh_without_failsafe_is_reported() {
    let deny_all = rule(
        "deny-all",
        Action::Deny,
        Protocol::All,
        &[],
        &["0.0.0.0/0", "::/0"],
    );
    let mut cfg = config(vec![deny_all]);
    let found = lint(&cfg);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].message.contains("failsafe is disabled"));
    cfg.failsafe = vec![ssh_from(&["0.0.0.0/0", "::/0"])];
    assert!(lint(&cfg).is_empty());
}
