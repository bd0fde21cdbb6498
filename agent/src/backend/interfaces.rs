//! Which interfaces to filter when the config does not say: the ones that carry a default route
//! (IPv4 or IPv6) in the current network namespace. Read from procfs, which reflects the
//! namespace of the reading process.

use std::collections::BTreeSet;

pub fn default_route_interfaces() -> std::io::Result<Vec<String>> {
    let mut out = BTreeSet::new();
    // /proc/net/route: Iface Destination Gateway Flags ... Mask ...; default = dest 0 and mask 0.
    for line in std::fs::read_to_string("/proc/net/route")?.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() > 7 && f[1] == "00000000" && f[7] == "00000000" {
            out.insert(f[0].to_string());
        }
    }
    // /proc/net/ipv6_route: dest prefixlen src srcprefixlen nexthop metric refcnt use flags iface.
    if let Ok(text) = std::fs::read_to_string("/proc/net/ipv6_route") {
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() >= 10 && f[0].bytes().all(|b| b == b'0') && f[1] == "00" && f[9] != "lo" {
                out.insert(f[9].to_string());
            }
        }
    }
    Ok(out.into_iter().collect())
}

/// The config's interfaces, or the default-route ones when it names none.
pub fn resolve(configured: &[String]) -> anyhow::Result<Vec<String>> {
    if !configured.is_empty() {
        return Ok(configured.to_vec());
    }
    let found = default_route_interfaces()?;
    if found.is_empty() {
        anyhow::bail!("interfaces: the config names none and no interface carries a default route; list the uplinks under `interfaces:`");
    }
    Ok(found)
}
