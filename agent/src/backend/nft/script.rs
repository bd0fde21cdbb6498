//! The [`Ruleset`] as an `nft -f` script: what `nodewall render` prints.

use std::fmt::Write;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::names;
use super::plan::*;

pub fn script(rs: &Ruleset, header: &str) -> String {
    let mut out = String::new();
    out.push_str("#!/usr/sbin/nft -f\n");
    for line in header.lines() {
        let _ = writeln!(out, "# {line}");
    }
    out.push_str(
        "# `nodewall apply` installs these objects through netlink and updates them in place,\n\
         # keeping counters; loading this file with `nft -f` replaces the table (counters restart).\n",
    );
    let t = names::TABLE;
    let _ = writeln!(
        out,
        "table inet {t}\ndelete table inet {t}\ntable inet {t} {{"
    );
    let _ = writeln!(out, "\tcomment \"{}\"", quote(names::TABLE_COMMENT));
    for set in &rs.sets {
        write_set(&mut out, set);
    }
    for c in &rs.counters {
        let _ = writeln!(
            out,
            "\n\tcounter {} {{\n\t\tcomment \"{}\"\n\t}}",
            c.name,
            quote(&c.comment)
        );
    }
    for chain in &rs.chains {
        let _ = writeln!(out, "\n\tchain {} {{", chain.name);
        if let Some(hook) = chain.hook {
            let _ = writeln!(
                out,
                "\t\ttype filter hook {} priority {}; policy accept;",
                hook.point.name(),
                hook.priority
            );
        }
        for rule in &chain.rules {
            let _ = writeln!(out, "\t\t{}", rule_text(rule));
        }
        out.push_str("\t}\n");
    }
    out.push_str("}\n");
    out
}

fn write_set(out: &mut String, set: &SetDef) {
    let ty = match set.kind {
        SetKind::Addr4 | SetKind::Net4 => "ipv4_addr",
        SetKind::Addr6 | SetKind::Net6 => "ipv6_addr",
        SetKind::Port => "inet_service",
        SetKind::IfName => "ifname",
        SetKind::IcmpType => "icmp_type",
        SetKind::Icmpv6Type => "icmpv6_type",
        SetKind::PortVerdict | SetKind::PortVerdictExact => "inet_service : verdict",
    };
    let what = if set.kind.map() { "map" } else { "set" };
    let _ = writeln!(out, "\n\t{what} {} {{\n\t\ttype {ty}", set.name);
    if set.kind.interval() {
        out.push_str("\t\tflags interval\n");
    }
    if let Some(size) = set.size() {
        let _ = writeln!(out, "\t\tsize {size}");
    }
    if !set.elems.is_empty() {
        out.push_str("\t\telements = {");
        for (i, e) in set.elems.iter().enumerate() {
            out.push_str(if i == 0 { " " } else { ", " });
            if i > 0 && i % 8 == 0 {
                out.push_str("\n\t\t\t     ");
            }
            out.push_str(&elem_text(e));
        }
        out.push_str(" }\n");
    }
    out.push_str("\t}\n");
}

fn elem_text(e: &Elem) -> String {
    match *e {
        Elem::V4(s, e) => match prefix_len(s as u128, e as u128, 32) {
            Some(len) => format!("{}/{len}", Ipv4Addr::from(s)),
            None => format!("{}-{}", Ipv4Addr::from(s), Ipv4Addr::from(e)),
        },
        Elem::V6(s, e) => match prefix_len(s, e, 128) {
            Some(len) => format!("{}/{len}", Ipv6Addr::from(s)),
            None => format!("{}-{}", Ipv6Addr::from(s), Ipv6Addr::from(e)),
        },
        Elem::Port(s, e) if s == e => s.to_string(),
        Elem::Port(s, e) => format!("{s}-{e}"),
        Elem::IfName(ref n) => format!("\"{}\"", quote(n)),
        Elem::Icmp(t) => t.to_string(),
        Elem::Net4(a) => Ipv4Addr::from(a).to_string(),
        Elem::Net6(a) => Ipv6Addr::from(a).to_string(),
        Elem::PortVerdict(s, e, ref v) => {
            format!("{} : {}", elem_text(&Elem::Port(s, e)), verdict_text(v))
        }
    }
}

fn verdict_text(v: &Verdict) -> String {
    match v {
        Verdict::Accept => "accept".into(),
        Verdict::Drop => "drop".into(),
        Verdict::Goto(c) => format!("goto {c}"),
        Verdict::Jump(c) => format!("jump {c}"),
    }
}

/// The prefix length when `[s, e]` is exactly one aligned prefix of a `bits`-wide space.
fn prefix_len(s: u128, e: u128, bits: u32) -> Option<u32> {
    let span = e - s;
    if span == u128::MAX {
        return Some(0);
    }
    let size = span + 1;
    if !size.is_power_of_two() || s & span != 0 {
        return None;
    }
    Some(bits - size.trailing_zeros())
}

/// One rule as nft syntax.
pub fn rule_text(r: &RuleDef) -> String {
    let mut parts: Vec<String> = r.matches.iter().map(match_text).collect();
    if let Some(l) = &r.log {
        parts.push(format!(
            "log prefix \"{}\" group {}",
            quote(&l.prefix),
            l.group
        ));
    }
    if let Some(c) = &r.counter {
        parts.push(format!("counter name \"{c}\""));
    }
    parts.extend(r.verdict.as_ref().map(verdict_text));
    if let Some(c) = &r.comment {
        parts.push(format!("comment \"{}\"", quote(c)));
    }
    parts.join(" ")
}

fn match_text(m: &Match) -> String {
    match m {
        Match::IifnameIn(set) => format!("iifname @{set}"),
        Match::Iifname(name) => format!("iifname \"{}\"", quote(name)),
        Match::IifnamePrefix(prefix) => format!("iifname \"{}*\"", quote(prefix)),
        Match::OifnameIn(set) => format!("oifname @{set}"),
        Match::OifnamePrefix(prefix) => format!("oifname \"{}*\"", quote(prefix)),
        Match::DaddrIn(Family::V4, set) => format!("ip daddr @{set}"),
        Match::DaddrIn(Family::V6, set) => format!("ip6 daddr @{set}"),
        Match::CtState(bit) => format!("ct state {}", ct_state_name(*bit)),
        Match::NfProto(f) => format!("meta nfproto {}", family_name(*f)),
        Match::L4Proto(p) => format!("meta l4proto {}", proto_name(*p)),
        Match::L4ProtoNot(p) => format!("meta l4proto != {}", proto_name(*p)),
        Match::SaddrIn(Family::V4, set) => format!("ip saddr @{set}"),
        Match::SaddrIn(Family::V6, set) => format!("ip6 saddr @{set}"),
        Match::SaddrPrefixIn(f, len, set) => {
            let host_bits = f.bits() - *len as u32;
            let (proto, mask) = match f {
                Family::V4 => (
                    "ip",
                    Ipv4Addr::from(u32::MAX.checked_shl(host_bits).unwrap_or(0)).to_string(),
                ),
                Family::V6 => (
                    "ip6",
                    Ipv6Addr::from(u128::MAX.checked_shl(host_bits).unwrap_or(0)).to_string(),
                ),
            };
            if host_bits == 0 {
                format!("{proto} saddr @{set}")
            } else {
                format!("{proto} saddr & {mask} @{set}")
            }
        }
        Match::SaddrNet(Family::V4, len, net) => {
            format!("ip saddr {}/{len}", Ipv4Addr::from(*net as u32))
        }
        Match::SaddrNet(Family::V6, len, net) => {
            format!("ip6 saddr {}/{len}", Ipv6Addr::from(*net))
        }
        Match::DportIn(p, set) => format!("{} dport @{set}", proto_name(*p)),
        Match::DportVmap(p, map) => format!("{} dport vmap @{map}", proto_name(*p)),
        Match::Dport(p, a, b) if a == b => format!("{} dport {a}", proto_name(*p)),
        Match::Dport(p, a, b) => format!("{} dport {a}-{b}", proto_name(*p)),
        Match::IcmpTypeIn(Family::V4, set) => format!("icmp type @{set}"),
        Match::IcmpTypeIn(Family::V6, set) => format!("icmpv6 type @{set}"),
        Match::UdpPorts(s, d) => format!("udp sport {s} udp dport {d}"),
        Match::TcpNotBareSyn => "tcp flags & (syn | ack) != syn".into(),
        Match::Limit { per_second, burst } => {
            format!("limit rate {per_second}/second burst {burst} packets")
        }
    }
}

/// `invalid`, `established`, `related`, or several of them (a mask) as nft lists them.
fn ct_state_name(mask: u32) -> String {
    let names: Vec<&str> = [
        (CT_INVALID, "invalid"),
        (CT_ESTABLISHED, "established"),
        (CT_RELATED, "related"),
    ]
    .into_iter()
    .filter(|(bit, _)| mask & bit != 0)
    .map(|(_, name)| name)
    .collect();
    assert!(
        !names.is_empty() && mask & !(CT_INVALID | CT_ESTABLISHED | CT_RELATED) == 0,
        "plan only uses invalid, established and related"
    );
    names.join(",")
}

fn family_name(f: Family) -> &'static str {
    match f {
        Family::V4 => "ipv4",
        Family::V6 => "ipv6",
    }
}

fn proto_name(p: u8) -> String {
    match p {
        IPPROTO_TCP => "tcp".into(),
        IPPROTO_UDP => "udp".into(),
        IPPROTO_ICMP => "icmp".into(),
        IPPROTO_ICMPV6 => "ipv6-icmp".into(),
        n => n.to_string(),
    }
}

/// nft strings cannot escape a double quote.
fn quote(s: &str) -> String {
    s.replace('"', "'")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_print_as_prefixes_when_aligned() {
        assert_eq!(elem_text(&Elem::V4(0x0a00_0000, 0x0aff_ffff)), "10.0.0.0/8");
        assert_eq!(elem_text(&Elem::V4(0, u32::MAX)), "0.0.0.0/0");
        assert_eq!(elem_text(&Elem::V4(1, 2)), "0.0.0.1-0.0.0.2");
        assert_eq!(elem_text(&Elem::V6(0, u128::MAX)), "::/0");
        assert_eq!(elem_text(&Elem::V4(5, 5)), "0.0.0.5/32");
        assert_eq!(elem_text(&Elem::Port(22, 22)), "22");
    }

    #[test]
    fn a_rule_without_verdict_only_logs() {
        let r = RuleDef {
            matches: vec![Match::Limit {
                per_second: 20,
                burst: 20,
            }],
            log: Some(Log {
                prefix: "nodewall:default-deny:".into(),
                group: 28279,
            }),
            counter: None,
            verdict: None,
            comment: None,
        };
        assert_eq!(
            rule_text(&r),
            "limit rate 20/second burst 20 packets log prefix \"nodewall:default-deny:\" group 28279"
        );
    }
}
