//! Which interfaces a backend filters: the config's names and `PREFIX*` patterns, or, when it
//! names none, the interfaces that carry a default route (IPv4 or IPv6). Both are read from
//! the current network namespace.
//!
//! A backend that matches interfaces by name in the kernel (nft's `iifname`) is given the
//! names and patterns as they are: an interface created later under a matching name is
//! filtered as it appears. One that attaches to interfaces (XDP) is given the interfaces that
//! exist now and match; `nodewall run` re-resolves them every check interval and re-applies
//! when they change, so it attaches to interfaces as they appear.

use std::collections::BTreeSet;
use std::ffi::CStr;

use anyhow::bail;

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

/// The names of the interfaces of this network namespace (`if_nameindex`, a netlink dump).
pub fn links() -> std::io::Result<Vec<String>> {
    // SAFETY: if_nameindex returns an array terminated by a zeroed entry, or NULL on error;
    // it is read, then freed once, below.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return Err(std::io::Error::last_os_error());
        }
        let mut names = Vec::new();
        let mut entry = list;
        while (*entry).if_index != 0 && !(*entry).if_name.is_null() {
            names.push(
                CStr::from_ptr((*entry).if_name)
                    .to_string_lossy()
                    .into_owned(),
            );
            entry = entry.add(1);
        }
        libc::if_freenameindex(list);
        names.sort();
        Ok(names)
    }
}

/// Whether interface `name` is one that the configured `entry` (a name or `PREFIX*`) selects.
pub fn selects(entry: &str, name: &str) -> bool {
    match entry.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => entry == name,
    }
}

/// The configured entries that select none of `links`.
pub fn unmatched<'a>(configured: &'a [String], links: &[String]) -> Vec<&'a str> {
    configured
        .iter()
        .filter(|c| !links.iter().any(|l| selects(c, l)))
        .map(String::as_str)
        .collect()
}

/// What a backend is given to filter (see the module doc): `by_name` for a backend that
/// matches names in the kernel, else the existing interfaces that the entries select.
pub fn resolve(configured: &[String], by_name: bool) -> anyhow::Result<Vec<String>> {
    if configured.is_empty() {
        let found = default_route_interfaces()?;
        if found.is_empty() {
            bail!("interfaces: the config names none and no interface carries a default route; list the uplinks under `interfaces:`");
        }
        return Ok(found);
    }
    if by_name {
        return Ok(configured.to_vec());
    }
    let links = links()?;
    let found: Vec<String> = links
        .into_iter()
        .filter(|l| configured.iter().any(|c| selects(c, l)))
        .collect();
    if found.is_empty() {
        bail!(
            "interfaces: no interface matches {} yet; this backend attaches to interfaces that exist (`nodewall run` attaches as they appear)",
            configured.join(", ")
        );
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_patterns_select_interfaces() {
        assert!(selects("eth0", "eth0"));
        assert!(!selects("eth0", "eth01"));
        assert!(selects("eth*", "eth0"));
        assert!(selects("eth*", "eth"));
        assert!(!selects("eth*", "ens3"));
        let here = vec!["eth0".to_string(), "lo".to_string()];
        let conf = vec!["eth*".to_string(), "nosuch0".to_string(), "lo".to_string()];
        assert_eq!(unmatched(&conf, &here), vec!["nosuch0"]);
        assert!(links().unwrap().contains(&"lo".to_string()));
    }
}
