//! Which interfaces a backend filters: the config's names and `PREFIX*` patterns, or, when it
//! names none, the interfaces that carry a default route (IPv4 or IPv6). Both are read from
//! the current network namespace through rtnetlink.
//!
//! A backend that matches interfaces by name in the kernel (nft's `iifname`) is given the
//! names and patterns as they are: an interface created later under a matching name is
//! filtered as it appears. One that attaches to interfaces (XDP) is given the interfaces that
//! exist now and match; `nodewall run` re-resolves them every check interval and re-applies
//! when they change, so it attaches to interfaces as they appear.

use std::collections::BTreeSet;
use std::ffi::CStr;

use anyhow::bail;
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::route::{RouteAttribute, RouteHeader, RouteMessage, RouteType};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// The interfaces that carry a default route (IPv4 or IPv6, main table), from a netlink
/// route dump of this network namespace.
pub fn default_route_interfaces() -> std::io::Result<Vec<String>> {
    let mut out = BTreeSet::new();
    for route in route_dump()? {
        let h = &route.header;
        let main = h.table == RouteHeader::RT_TABLE_MAIN
            || route
                .attributes
                .iter()
                .any(|a| *a == RouteAttribute::Table(u32::from(RouteHeader::RT_TABLE_MAIN)));
        if h.destination_prefix_length != 0 || h.kind != RouteType::Unicast || !main {
            continue;
        }
        for a in &route.attributes {
            match a {
                RouteAttribute::Oif(i) => out.extend(index_name(*i)),
                RouteAttribute::MultiPath(hops) => {
                    out.extend(hops.iter().filter_map(|h| index_name(h.interface_index)));
                }
                _ => {}
            }
        }
    }
    Ok(out.into_iter().collect())
}

/// Every route of every family (`RTM_GETROUTE` dump).
fn route_dump() -> std::io::Result<Vec<RouteMessage>> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut request = NetlinkMessage::new(
        header,
        NetlinkPayload::from(RouteNetlinkMessage::GetRoute(RouteMessage::default())),
    );
    request.finalize();
    let mut buf = vec![0; request.buffer_len()];
    request.serialize(&mut buf);
    socket.send(&buf, 0)?;
    let mut routes = Vec::new();
    let mut rx = vec![0u8; 64 * 1024];
    loop {
        let size = socket.recv(&mut &mut rx[..], 0)?;
        let mut offset = 0;
        while offset < size {
            let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rx[offset..size])
                .map_err(std::io::Error::other)?;
            match msg.payload {
                NetlinkPayload::Done(_) => return Ok(routes),
                NetlinkPayload::Error(e) => {
                    if let Some(code) = e.code {
                        return Err(std::io::Error::from_raw_os_error(-code.get()));
                    }
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(r)) => routes.push(r),
                _ => {}
            }
            let len = msg.header.length as usize;
            if len == 0 {
                break;
            }
            offset += len;
        }
    }
}

/// The name of interface `index` in this network namespace, if it exists.
pub fn index_name(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has the IF_NAMESIZE bytes if_indextoname writes at most.
    let name = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    // SAFETY: on success if_indextoname NUL-terminated `buf`.
    (!name.is_null()).then(|| {
        unsafe { CStr::from_ptr(name) }
            .to_string_lossy()
            .into_owned()
    })
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

    #[test]
    fn default_routes_agree_with_procfs() {
        // The kernel's own text view of the same table, as the agent read it before.
        let mut procfs = std::collections::BTreeSet::new();
        for line in std::fs::read_to_string("/proc/net/route")
            .unwrap()
            .lines()
            .skip(1)
        {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 7 && f[1] == "00000000" && f[7] == "00000000" {
                procfs.insert(f[0].to_string());
            }
        }
        let found = default_route_interfaces().unwrap();
        for name in &procfs {
            assert!(
                found.contains(name),
                "{name} of {procfs:?} missing from {found:?}"
            );
        }
    }
}
