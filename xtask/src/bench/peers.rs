//! What users would run instead of nodewall, for the same policy: linear iptables rules (one
//! rule per CIDR), iptables + ipset (one hash:net set per rule and family), and `nft -f` of the
//! script nodewall renders. All loaded with the tools' own batch loaders (`*-restore`, `-f`).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::netns::{Netns, NODE_IF};
use super::workload::{Workload, BASE_PORT};

/// The conntrack allowance every variant starts with, as nodewall's `implicit.established`.
const ESTABLISHED: &str = "-m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT";

/// iptables-restore input for one family: one ACCEPT rule per (rule, CIDR), then DROP.
pub fn iptables_linear(w: &Workload, v6: bool) -> String {
    iptables_linear_with(w, v6, &[])
}

/// As [`iptables_linear`], with `extra` rule specs (`-A INPUT ...` lines) right after the
/// conntrack allowance.
pub fn iptables_linear_with(w: &Workload, v6: bool, extra: &[String]) -> String {
    let mut s = format!("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -i {NODE_IF} {ESTABLISHED}\n");
    for e in extra {
        s.push_str(e);
        s.push('\n');
    }
    for (i, cidrs) in w.per_rule.iter().enumerate() {
        for c in cidrs.iter().filter(|c| c.addr.is_ipv6() == v6) {
            let _ = writeln!(
                s,
                "-A INPUT -i {NODE_IF} -s {c} -p udp --dport {} -j ACCEPT",
                BASE_PORT + i as u16
            );
        }
    }
    let _ = write!(s, "-A INPUT -i {NODE_IF} -j DROP\nCOMMIT\n");
    s
}

fn set_name(rule: usize, v6: bool) -> String {
    format!("nwb-r{rule}-{}", if v6 { 6 } else { 4 })
}

/// `ipset restore` input: one hash:net set per rule and family.
pub fn ipset_sets(w: &Workload) -> String {
    let mut s = String::new();
    for (i, cidrs) in w.per_rule.iter().enumerate() {
        for v6 in [false, true] {
            let name = set_name(i, v6);
            let members: Vec<_> = cidrs.iter().filter(|c| c.addr.is_ipv6() == v6).collect();
            let family = if v6 { "inet6" } else { "inet" };
            let _ = writeln!(
                s,
                "create {name} hash:net family {family} maxelem {}",
                (members.len() * 2).max(1024)
            );
            for c in members {
                let _ = writeln!(s, "add {name} {c}");
            }
        }
    }
    s
}

/// iptables-restore input matching the ipset sets: one rule per nodewall rule.
pub fn iptables_ipset(w: &Workload, v6: bool) -> String {
    let mut s = format!("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -i {NODE_IF} {ESTABLISHED}\n");
    for i in 0..w.rules {
        let _ = writeln!(
            s,
            "-A INPUT -i {NODE_IF} -p udp --dport {} -m set --match-set {} src -j ACCEPT",
            BASE_PORT + i as u16,
            set_name(i, v6)
        );
    }
    let _ = write!(s, "-A INPUT -i {NODE_IF} -j DROP\nCOMMIT\n");
    s
}

/// Loads the linear ruleset (both families); returns the wall time of the two restores.
pub fn load_linear(ns: &Netns, w: &Workload) -> anyhow::Result<Duration> {
    let (v4, v6) = (iptables_linear(w, false), iptables_linear(w, true));
    let start = Instant::now();
    ns.run_stdin("iptables-restore", &[], v4.as_bytes())?;
    ns.run_stdin("ip6tables-restore", &[], v6.as_bytes())?;
    Ok(start.elapsed())
}

/// Loads the ipset variant; returns the wall time of `ipset restore` plus both iptables restores.
pub fn load_ipset(ns: &Netns, w: &Workload) -> anyhow::Result<Duration> {
    let (sets, v4, v6) = (
        ipset_sets(w),
        iptables_ipset(w, false),
        iptables_ipset(w, true),
    );
    let start = Instant::now();
    ns.run_stdin("ipset", &["restore"], sets.as_bytes())?;
    ns.run_stdin("iptables-restore", &[], v4.as_bytes())?;
    ns.run_stdin("ip6tables-restore", &[], v6.as_bytes())?;
    Ok(start.elapsed())
}

/// `nft -f -` of a script; returns its wall time.
pub fn load_nft(ns: &Netns, script: &str) -> anyhow::Result<Duration> {
    let start = Instant::now();
    ns.run_stdin("nft", &["-f", "-"], script.as_bytes())?;
    Ok(start.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_has_one_rule_per_cidr_of_the_family_plus_two() {
        let w = Workload::mixed(8, 1000);
        let v4 = iptables_linear(&w, false);
        assert_eq!(
            v4.lines().filter(|l| l.starts_with("-A INPUT")).count(),
            500 + 2
        );
        assert!(v4.lines().rev().nth(1).unwrap().ends_with("-j DROP"));
    }

    #[test]
    fn ipset_holds_every_cidr_once_per_rule() {
        let w = Workload::mixed(8, 1000);
        assert_eq!(
            ipset_sets(&w)
                .lines()
                .filter(|l| l.starts_with("add "))
                .count(),
            1000
        );
        assert_eq!(
            iptables_ipset(&w, true)
                .lines()
                .filter(|l| l.contains("--match-set"))
                .count(),
            8
        );
    }
}
