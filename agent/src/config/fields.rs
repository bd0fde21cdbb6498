//! Validators for single values (CIDRs, ports, names). Each returns the reason a user should
//! read when the value is wrong; the caller adds the field path and position.

use std::net::IpAddr;

use ipnet::IpNet;

use super::model::PortRange;
use super::yaml::{Kind, Node};

/// A prefix (`10.0.0.0/16`, `fd00::/8`) or a bare address (meaning /32 or /128).
/// Host bits must be clear: `10.0.0.1/16` is almost always a typo for a host or a network,
/// so we refuse it and propose the network form.
pub fn cidr(s: &str) -> Result<IpNet, String> {
    let net = match super::quick_cidr::quick(s) {
        Some(net) => net,
        None => parse_cidr(s)?,
    };
    not_v4_mapped(s, net)
}

/// Refuses an IPv4-mapped IPv6 prefix (`::ffff:1.2.3.4`): IPv4 packets carry the IPv4 address
/// and no IPv6 packet has such a source, so a rule with it would silently never match.
fn not_v4_mapped(s: &str, net: IpNet) -> Result<IpNet, String> {
    let IpNet::V6(v6) = net else {
        return Ok(net);
    };
    match v6.addr().to_ipv4_mapped() {
        Some(v4) if v6.prefix_len() >= 96 => {
            let hint = ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
                .map(|n| {
                    if n.prefix_len() == 32 {
                        v4.to_string()
                    } else {
                        n.to_string()
                    }
                })
                .unwrap_or_else(|_| v4.to_string());
            Err(format!("`{s}` is an IPv4-mapped IPv6 address, which no packet carries as its source (IPv4 packets carry the IPv4 address), so it would never match; write `{hint}`"))
        }
        _ => Ok(net),
    }
}

fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let Some((addr, len)) = s.split_once('/') else {
        return match s.parse::<IpAddr>() {
            Ok(ip) => Ok(IpNet::from(ip)),
            Err(_) => Err(format!(
                "`{}` is not an IP address or CIDR prefix",
                shown(s)
            )),
        };
    };
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("`{}` in `{}` is not an IP address", shown(addr), shown(s)))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len: u8 = match len.parse::<u8>() {
        Ok(n) if n <= max && !len.starts_with('+') => n,
        _ => {
            return Err(format!(
                "prefix length `{len}` in `{s}` is not a number from 0 to {max}"
            ))
        }
    };
    let net = IpNet::new(ip, len).expect("prefix length checked above");
    if net.trunc() != net {
        return Err(format!("`{s}` has host bits set; did you mean `{}`? (a single address needs /{max} or no prefix)", net.trunc()));
    }
    Ok(net)
}

/// True for strings that are meant as an address rather than a network name, so that a
/// mistyped address is reported as such and not as an unknown network.
pub fn looks_like_address(s: &str) -> bool {
    s.contains('/')
        || s.contains(':')
        || (!s.is_empty() && s.chars().all(|c| c.is_ascii_digit() || c == '.'))
}

/// A port item: an integer, a string `"N"`, or a string range `"A-B"`.
pub fn port_range(node: &Node) -> Result<PortRange, String> {
    match &node.kind {
        Kind::Int(n) => Ok(PortRange::single(port_number(*n)?)),
        Kind::Str(s) => {
            let malformed = || {
                format!("`{s}` is not a port; expected \"N\" or \"A-B\" with N, A, B in 1..65535")
            };
            let (a, b) = s.split_once('-').unwrap_or((s, s));
            let num = |t: &str| -> Result<u16, String> {
                if t.is_empty() || !t.bytes().all(|c| c.is_ascii_digit()) {
                    return Err(malformed());
                }
                // Overlong digit strings are out of range rather than malformed.
                port_number(t.parse::<i64>().unwrap_or(i64::MAX))
            };
            let (start, end) = (num(a)?, num(b)?);
            if start > end {
                return Err(format!(
                    "range `{s}` starts after it ends; did you mean `{end}-{start}`?"
                ));
            }
            Ok(PortRange::new(start, end))
        }
        _ => Err(format!(
            "expected a port (22) or range (\"8000-8080\"), found {}",
            node.describe()
        )),
    }
}

fn port_number(n: i64) -> Result<u16, String> {
    match n {
        0 => Err("port 0 is not a valid destination port; ports are 1..65535".into()),
        1..=65535 => Ok(n as u16),
        n if n < 0 => Err(format!("port {n} is negative; ports are 1..65535")),
        _ => Err(format!("port {n} is greater than 65535")),
    }
}

/// Lowercase DNS-label-like name: `^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$`.
/// Used for rule names (the `rule` label of metrics) and network names.
fn label(s: &str, what: &str) -> Result<(), String> {
    let rule = "lowercase letters, digits, '.', '_' and '-', starting and ending with a letter or digit, at most 63 characters";
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let ok = !s.is_empty()
        && s.len() <= 63
        && edge(s.chars().next())
        && edge(s.chars().last())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!("invalid {what} `{s}`: use {rule}"))
    }
}

pub fn rule_name(s: &str) -> Result<(), String> {
    if s.contains('/') {
        return Err(format!(
            "invalid rule name `{s}`: '/' is reserved for profile rules (PROFILE/RULE)"
        ));
    }
    label(s, "rule name")
}

pub fn network_name(s: &str) -> Result<(), String> {
    if looks_like_address(s) {
        return Err(format!("invalid network name `{s}`: it looks like an address; names must not be confused with CIDRs in `from`"));
    }
    label(s, "network name")
}

/// Linux interface names (`dev_valid_name`): 1..15 bytes, not `.`/`..`, no '/', ':' or
/// whitespace; or a pattern `PREFIX*` (nft's `iifname "eth*"`) with a non-empty PREFIX.
pub fn interface_name(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 15 {
        return Err(format!(
            "interface name `{}` must be 1 to 15 characters long",
            shown(s)
        ));
    }
    if s == "." || s == ".." || s.chars().any(|c| c == '/' || c == ':' || c.is_whitespace()) {
        return Err(format!("invalid interface name `{s}`: it must not be `.` or `..` nor contain '/', ':' or whitespace"));
    }
    if s.contains('\0') {
        return Err(format!(
            "invalid interface name {s:?}: it contains a NUL byte"
        ));
    }
    match s.find('*') {
        Some(0) => Err(format!("invalid interface pattern `{s}`: give a prefix before '*' (`eth*`); a bare `*` would filter every interface, loopback included")),
        Some(i) if i != s.len() - 1 => Err(format!("invalid interface pattern `{s}`: '*' may only end a name, as in `eth*` (interfaces whose name starts with `eth`)")),
        _ => Ok(()),
    }
}

/// At most [`SHOWN_CHARS`] characters of a value quoted back in a message, with how long it
/// was: a 50 MB scalar must not come back whole in an error.
pub fn shown(s: &str) -> std::borrow::Cow<'_, str> {
    match s.char_indices().nth(SHOWN_CHARS) {
        None => s.into(),
        Some((cut, _)) => format!("{}... ({} bytes)", &s[..cut], s.len()).into(),
    }
}

pub const SHOWN_CHARS: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::yaml::Pos;

    fn node(kind: Kind) -> Node {
        Node {
            kind,
            pos: Pos { line: 1, column: 1 },
        }
    }

    #[test]
    fn cidrs() {
        assert_eq!(cidr("10.0.0.1").unwrap().to_string(), "10.0.0.1/32");
        assert_eq!(cidr("fd00::1").unwrap().to_string(), "fd00::1/128");
        assert_eq!(cidr("10.0.0.0/16").unwrap().to_string(), "10.0.0.0/16");
        assert!(cidr("10.0.0.1/16")
            .unwrap_err()
            .contains("did you mean `10.0.0.0/16`"));
        assert!(cidr("10.0.0.0/33").unwrap_err().contains("0 to 32"));
        assert!(cidr("10.0.0/8").unwrap_err().contains("not an IP address"));
        assert!(cidr("fd00::/129").is_err());
    }

    #[test]
    fn ports() {
        assert_eq!(port_range(&node(Kind::Int(22))), Ok(PortRange::single(22)));
        assert_eq!(
            port_range(&node(Kind::Str("8000-8080".into()))),
            Ok(PortRange::new(8000, 8080))
        );
        assert!(port_range(&node(Kind::Int(0)))
            .unwrap_err()
            .contains("port 0"));
        assert!(port_range(&node(Kind::Str("70000".into())))
            .unwrap_err()
            .contains("greater than 65535"));
        assert!(port_range(&node(Kind::Str("99999999999999999999".into())))
            .unwrap_err()
            .contains("greater"));
        assert!(port_range(&node(Kind::Str("90-80".into())))
            .unwrap_err()
            .contains("starts after"));
        for bad in ["", "ssh", "1-", "-1", "1-2-3", " 22", "+22"] {
            assert!(
                port_range(&node(Kind::Str(bad.into())))
                    .unwrap_err()
                    .contains("is not a port"),
                "{bad}"
            );
        }
    }

    #[test]
    fn names() {
        assert!(rule_name("ssh-from-bastion").is_ok());
        assert!(rule_name("a").is_ok());
        assert!(rule_name("tke/x").unwrap_err().contains("reserved"));
        assert!(rule_name("SSH").is_err());
        assert!(rule_name("-a").is_err());
        assert!(rule_name(&"a".repeat(64)).is_err());
        assert!(network_name("control-plane").is_ok());
        assert!(network_name("10.0.0.1").is_err());
        assert!(interface_name("eth0").is_ok());
        assert!(interface_name("a-very-long-interface").is_err());
        assert!(interface_name("eth0:1").is_err());
        assert!(interface_name("eth*").is_ok());
        assert!(interface_name("*").is_err());
        assert!(interface_name("e*th").is_err());
        assert!(interface_name("").is_err());
    }
}
