//! A sample as one line of text, in the manner of `tcpdump`:
//!
//! ```text
//! 18:20:01.123456 eth0 ingress DROP IP 198.19.0.2.40000 > 198.18.16.2.10250: tcp default-deny
//! 18:20:01.200012 eth0 ingress WOULD-DROP IP6 fd00:99::2.5353 > fd00:16::2.5353: udp rule deny-udp
//! 18:20:02.000001 eth0 ingress DROP IP 198.19.0.2 > 198.18.16.2: icmp type 8 code 0 default-deny
//! ```
//!
//! Times are UTC (the record's `time`); `WOULD-DROP` is audit mode: the packet passed.

use std::fmt::Write;

use super::{Action, DropRecord};

pub fn line(r: &DropRecord) -> String {
    let mut out = String::with_capacity(128);
    // `2023-11-14T22:13:20.123456Z` -> `22:13:20.123456`.
    let clock = r
        .time
        .get(11..)
        .map(|t| t.trim_end_matches('Z'))
        .unwrap_or(&r.time);
    let action = match r.action {
        Action::Drop => "DROP",
        Action::WouldDrop => "WOULD-DROP",
    };
    let ip = if r.src.is_ipv4() { "IP" } else { "IP6" };
    let _ = write!(
        out,
        "{clock} {} {} {action} {ip} {} > {}: ",
        r.interface.as_deref().unwrap_or("?"),
        r.direction.as_str(),
        endpoint(r.src, r.sport),
        endpoint(r.dst, r.dport),
    );
    match (r.icmp_type, r.icmp_code) {
        (Some(t), Some(c)) => {
            let _ = write!(out, "{} type {t} code {c}", r.protocol);
        }
        _ if r.protocol.bytes().all(|b| b.is_ascii_digit()) => {
            let _ = write!(out, "proto {}", r.protocol);
        }
        _ => out.push_str(&r.protocol),
    }
    let _ = write!(out, " {}", r.reason);
    if !r.rule.is_empty() {
        let _ = write!(out, " {}", r.rule);
    }
    out
}

/// `addr.port` as tcpdump writes it (for IPv6 too).
fn endpoint(addr: std::net::IpAddr, port: Option<u16>) -> String {
    match port {
        Some(p) => format!("{addr}.{p}"),
        None => addr.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drops::{record::tests::event, Stamp};
    use std::time::{Duration, SystemTime};

    #[test]
    fn lines() {
        let stamp = Stamp {
            node: "n".into(),
            backend: "xdp".into(),
        };
        let at = SystemTime::UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        let mut e = event("tcp", false);
        e.reason = "default-deny".into();
        e.rule.clear();
        let r = DropRecord::new(&e, at, &stamp, Some("eth0".into()));
        assert_eq!(
            line(&r),
            "22:13:20.123456 eth0 ingress DROP IP 198.19.0.2.40000 > 198.18.16.2.10250: tcp default-deny"
        );
        let mut e = event("icmpv6", true);
        e.src = "fd00:99::2".parse().unwrap();
        e.dst = "fd00:16::2".parse().unwrap();
        (e.sport, e.dport) = (Some(128), Some(0));
        let r = DropRecord::new(&e, at, &stamp, None);
        assert_eq!(
            line(&r),
            "22:13:20.123456 ? ingress WOULD-DROP IP6 fd00:99::2 > fd00:16::2: icmpv6 type 128 code 0 rule deny-kubelet"
        );
        let mut e = event("47", false);
        (e.sport, e.dport) = (None, None);
        assert!(
            line(&DropRecord::new(&e, at, &stamp, None)).ends_with(": proto 47 rule deny-kubelet")
        );
    }
}
