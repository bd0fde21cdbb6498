//! The attacker's suite: crafted frames from the wire toward ports the policy denies, in every
//! shape a parser can get wrong (VLAN stacks, IPv4 options and fragments, IPv6 extension
//! headers and fragments, odd TCP flags, stray ICMP, tunnels), on every backend. The ground
//! truth is what the node's kernel delivers (raw sockets, `delivery.rs`), not what the
//! firewall reports.
//!
//! Each case is first sent with no firewall: the kernel must deliver it (or, for the few it
//! discards by itself, say so), so a case that proves nothing fails. Then the policy goes on
//! and nothing of it may reach the stack.

use std::collections::HashSet;
use std::net::IpAddr;

use nodewall_netns_tests::craft::*;
use nodewall_netns_tests::delivery::Delivery;
use nodewall_netns_tests::inject::Injector;
use nodewall_netns_tests::installed::describe;
use nodewall_netns_tests::nodewall::{apply, Config};
use nodewall_netns_tests::topology::{node_addr, Topology};
use nodewall_netns_tests::{backend_tests, Backend};

/// Denied on every backend: the kubelet port, from the attacker.
const DENIED: u16 = 10250;
/// Open to anyone (a NodePort).
const OPEN: u16 = 30080;
const ATTACKER4: &str = "198.19.66.7";
const ATTACKER6: &str = "fd00:66::7";
/// The node's address on its VXLAN device (a tunnel endpoint an attacker aims at).
const VXLAN_ADDR: &str = "198.18.99.1";
const VXLAN_VNI: u32 = 42;

fn attacker(v6: bool) -> IpAddr {
    if v6 { ATTACKER6 } else { ATTACKER4 }.parse().unwrap()
}

/// The policy: tcp/30080 and ICMP echo from anywhere, nothing else from the attacker.
fn config(backend: Backend) -> Config {
    let mut c = Config::new(backend, None);
    c.rules = vec![
        format!("  - name: nodeport\n    action: allow\n    protocol: tcp\n    ports: [\"{OPEN}\"]\n    from: [\"0.0.0.0/0\", \"::/0\"]"),
        "  - name: ping\n    action: allow\n    protocol: icmp\n    from: [\"0.0.0.0/0\"]".into(),
        "  - name: ping6\n    action: allow\n    protocol: icmpv6\n    from: [\"::/0\"]".into(),
    ];
    c
}

struct Case {
    name: String,
    frames: Vec<Vec<u8>>,
    id: u32,
    /// Only a delivery of the marker to this TCP/UDP port counts (a case whose frames may
    /// legitimately deliver the same marker to an open port).
    port: Option<u16>,
    /// The kernel discards it even with no firewall (so only the second half applies).
    kernel_drops: bool,
}

struct Cases {
    list: Vec<Case>,
    next: u32,
}

impl Cases {
    fn add(&mut self, name: impl Into<String>, frames: Vec<Vec<u8>>) -> &mut Case {
        self.list.push(Case {
            name: name.into(),
            frames,
            id: 0,
            port: None,
            kernel_drops: false,
        });
        self.list.last_mut().unwrap()
    }

    /// A fresh marker id.
    fn id(&mut self) -> u32 {
        self.next += 1;
        self.next
    }
}

/// A TCP segment from the attacker to the node, carrying marker `id`.
fn seg(v6: bool, dport: u16, flags: u8, id: u32) -> Vec<u8> {
    let (src, dst) = (attacker(v6), node_addr(v6));
    tcp(
        src,
        dst,
        40000 + (id as u16 % 20000),
        dport,
        flags,
        0x1000_0000 + id,
        0,
        &marker(id),
    )
}

fn ip(v6: bool, proto: u8, l4: &[u8], id: u32) -> Vec<u8> {
    let (src, dst) = (attacker(v6), node_addr(v6));
    if v6 {
        ipv6(src, dst, proto, l4)
    } else {
        ipv4(src, dst, proto, id as u16, 0, &[], l4)
    }
}

fn cases() -> Cases {
    let mut c = Cases {
        list: Vec::new(),
        next: 0,
    };
    // VLAN stacks: priority tags (VID 0), which the kernel strips at any depth.
    for v6 in [false, true] {
        for depth in 1..=8 {
            let id = c.id();
            let tags: Vec<(u16, u16)> = (0..depth).map(|_| (ETH_P_8021Q, 0)).collect();
            let et = if v6 { ETH_P_IPV6 } else { ETH_P_IP };
            let f = eth(&tags, et, &ip(v6, 6, &seg(v6, DENIED, SYN, id), id));
            c.add(format!("{depth} VLAN tags (v6={v6})"), vec![f]).id = id;
        }
        let id = c.id();
        let et = if v6 { ETH_P_IPV6 } else { ETH_P_IP };
        let f = eth(
            &[(ETH_P_8021AD, 0), (ETH_P_8021Q, 0)],
            et,
            &ip(v6, 6, &seg(v6, DENIED, SYN, id), id),
        );
        c.add(format!("QinQ (v6={v6})"), vec![f]).id = id;
    }
    // IPv4 options.
    let options: [(&str, Vec<u8>); 4] = [
        ("NOPs", vec![1, 1, 1, 0]),
        ("record route", vec![7, 7, 4, 0, 0, 0, 0, 0]),
        ("timestamp", vec![68, 8, 5, 0, 0, 0, 0, 0]),
        ("router alert", vec![148, 4, 0, 0]),
    ];
    for (what, opt) in options {
        let id = c.id();
        let (src, dst) = (attacker(false), node_addr(false));
        let f = frame(&ipv4(
            src,
            dst,
            6,
            id as u16,
            0,
            &opt,
            &seg(false, DENIED, SYN, id),
        ));
        c.add(format!("IPv4 options: {what}"), vec![f]).id = id;
    }
    // Fragments.
    for v6 in [false, true] {
        let (src, dst) = (attacker(v6), node_addr(v6));
        let frag = |payload: &[u8], cuts: &[usize], id: u32| -> Vec<Vec<u8>> {
            let pieces = if v6 {
                ipv6_fragments(src, dst, 6, id, payload, cuts)
            } else {
                ipv4_fragments(src, dst, 6, id as u16, payload, cuts)
            };
            pieces.iter().map(|p| frame(p)).collect()
        };
        // IPv6 wants the whole TCP header in the first fragment (RFC 8200 4.5).
        let cuts: &[usize] = if v6 { &[0, 24] } else { &[0, 8, 16, 24] };
        let id = c.id();
        let s = seg(v6, DENIED, SYN, id);
        c.add(format!("fragments in order (v6={v6})"), frag(&s, cuts, id))
            .id = id;
        let id = c.id();
        let s = seg(v6, DENIED, SYN, id);
        let mut f = frag(&s, cuts, id);
        f.reverse();
        c.add(format!("fragments out of order (v6={v6})"), f).id = id;
        let id = c.id();
        let s = seg(v6, DENIED, SYN, id);
        let case = c.add(
            format!("tiny first fragment (v6={v6})"),
            frag(&s, &[0, 8], id),
        );
        case.id = id;
        // RFC 8200: the first fragment must hold the whole upper-layer header.
        case.kernel_drops = v6;
        // The first fragment aimed at the open port, then one at offset 0 again that makes
        // it the denied port, then the rest: overlapping fragments.
        let id = c.id();
        let open = seg(v6, OPEN, SYN, id);
        let denied = seg(v6, DENIED, SYN, id);
        let mut f = frag(&open, &[0, 24], id);
        let second = frag(&denied, &[0, 24], id).remove(0);
        f.insert(1, second);
        let case = c.add(format!("overlapping fragments (v6={v6})"), f);
        case.id = id;
        case.port = Some(DENIED);
        // Linux discards a datagram with overlapping fragments.
        case.kernel_drops = true;
        if v6 {
            // An atomic fragment: one fragment, offset 0, no more.
            let id = c.id();
            let s = seg(true, DENIED, SYN, id);
            let mut rest = ext_fragment(6, 0, false, id);
            rest.extend(&s);
            c.add(
                "IPv6 atomic fragment",
                vec![frame(&ipv6(src, dst, 44, &rest))],
            )
            .id = id;
        }
    }
    // IPv6 extension headers: a usual chain, and one longer than the XDP parser walks.
    let (src6, dst6) = (attacker(true), node_addr(true));
    let id = c.id();
    let mut rest = ext_options(60);
    rest.extend(ext_options(43));
    rest.extend(ext_routing(6));
    rest.extend(seg(true, DENIED, SYN, id));
    c.add(
        "hop-by-hop, destination options, routing",
        vec![frame(&ipv6(src6, dst6, 0, &rest))],
    )
    .id = id;
    let id = c.id();
    let mut rest = Vec::new();
    for i in 0..10 {
        rest.extend(ext_options(if i < 9 { 60 } else { 6 }));
    }
    rest.extend(seg(true, DENIED, SYN, id));
    c.add(
        "10 destination-options headers",
        vec![frame(&ipv6(src6, dst6, 60, &rest))],
    )
    .id = id;
    // TCP flag sets: every one to the denied port; those no connection can start with also to
    // the open port (connection tracking refuses them whatever the rules say).
    let odd = [
        ("no flags", 0),
        ("FIN", FIN),
        ("XMAS", FIN | PSH | URG),
        ("SYN+FIN", SYN | FIN),
        ("SYN+RST", SYN | RST),
        ("SYN+ACK", SYN | ACK),
        ("RST", RST),
        ("RST+ACK", RST | ACK),
        ("FIN+ACK", FIN | ACK),
        ("all", 0xff),
    ];
    for v6 in [false, true] {
        for (what, flags) in odd.iter().chain(&[
            ("SYN+ECE+CWR", SYN | ECE | CWR),
            ("ACK", ACK),
            ("PSH+ACK", PSH | ACK),
        ]) {
            let id = c.id();
            c.add(
                format!("{what} to the denied port (v6={v6})"),
                vec![frame(&ip(v6, 6, &seg(v6, DENIED, *flags, id), id))],
            )
            .id = id;
        }
        for (what, flags) in odd {
            let id = c.id();
            c.add(
                format!("{what} to the open port (v6={v6})"),
                vec![frame(&ip(v6, 6, &seg(v6, OPEN, flags, id), id))],
            )
            .id = id;
        }
    }
    // ICMP that belongs to nothing: answers nobody asked for, errors about flows that never
    // were (ICMP itself is allowed: only connection tracking can refuse these).
    for v6 in [false, true] {
        let (src, dst) = (attacker(v6), node_addr(v6));
        let (echo_reply, unreach, too_big, proto) = if v6 { (129, 1, 2, 58) } else { (0, 3, 4, 1) };
        let id = c.id();
        let m = icmp(src, dst, echo_reply, 0, [0, 7, 0, 1], &marker(id));
        c.add(
            format!("echo reply to nothing (v6={v6})"),
            vec![frame(&ip(v6, proto, &m, id))],
        )
        .id = id;
        for (what, t, code) in [
            ("unreachable", unreach, if v6 { 4 } else { 3 }),
            ("too big / quench", too_big, 0),
        ] {
            let id = c.id();
            // The quoted packet: one the node never sent.
            let quoted_l4 = udp(dst, src, 5555, 53, &marker(id));
            let quoted = if v6 {
                ipv6(dst, src, 17, &quoted_l4)
            } else {
                ipv4(dst, src, 17, 1, 0, &[], &quoted_l4)
            };
            let m = icmp(src, dst, t, code, [0; 4], &quoted);
            c.add(
                format!("{what} about a made-up flow (v6={v6})"),
                vec![frame(&ip(v6, proto, &m, id))],
            )
            .id = id;
        }
    }
    let id = c.id();
    let m = icmp(
        attacker(false),
        node_addr(false),
        14,
        0,
        [0, 9, 0, 1],
        &marker(id),
    );
    c.add(
        "timestamp reply to nothing",
        vec![frame(&ip(false, 1, &m, id))],
    )
    .id = id;
    let id = c.id();
    let m = icmp(attacker(false), node_addr(false), 9, 0, [0; 4], &marker(id));
    c.add(
        "router advertisement (IPv4)",
        vec![frame(&ip(false, 1, &m, id))],
    )
    .id = id;
    // Tunnels aimed at the denied port inside. This kernel has no IPIP, GRE or SIT (so it
    // cannot decapsulate them): what counts is the outer packet reaching the stack, where a
    // kernel with those modules would unwrap it. VXLAN it has: the node has a device.
    let inner4 = |id: u32| ip(false, 6, &seg(false, DENIED, SYN, id), id);
    let id = c.id();
    c.add("IPIP", vec![frame(&ip(false, 4, &inner4(id), id))])
        .id = id;
    let id = c.id();
    let mut gre = vec![0, 0, 0x08, 0x00];
    gre.extend(inner4(id));
    c.add("GRE", vec![frame(&ip(false, 47, &gre, id))]).id = id;
    let id = c.id();
    let inner6 = ip(true, 6, &seg(true, DENIED, SYN, id), id);
    c.add("6in4", vec![frame(&ip(false, 41, &inner6, id))]).id = id;
    c
}

/// A VXLAN packet for the node's VXLAN device (MAC `dev_mac`) carrying a SYN to the denied
/// port of its address.
fn vxlan_case(c: &mut Cases, dev_mac: [u8; 6]) {
    let id = c.id();
    let inner_src: IpAddr = "198.18.99.66".parse().unwrap();
    let inner_dst: IpAddr = VXLAN_ADDR.parse().unwrap();
    let syn = tcp(inner_src, inner_dst, 40001, DENIED, SYN, id, 0, &marker(id));
    let inner_ip = ipv4(inner_src, inner_dst, 6, id as u16, 0, &[], &syn);
    let mut vx = vec![0x08, 0, 0, 0];
    vx.extend(&(VXLAN_VNI << 8).to_be_bytes());
    vx.extend(dev_mac);
    vx.extend([0x02, 0x66, 0, 0, 0, 0x66]);
    vx.extend(ETH_P_IP.to_be_bytes());
    vx.extend(inner_ip);
    let outer = udp(attacker(false), node_addr(false), 40002, 4789, &vx);
    let case = c.add("VXLAN", vec![frame(&ip(false, 17, &outer, id))]);
    case.id = id;
    case.port = Some(DENIED);
}

/// The node side of the tunnel cases, and routes that swallow the node's answers to the
/// attacker (so its RSTs and ICMP errors go nowhere).
fn prepare(topo: &Topology) -> anyhow::Result<[u8; 6]> {
    topo.fabric
        .ip(&["route", "add", "blackhole", "198.19.66.0/24"])?;
    topo.fabric
        .ip(&["-6", "route", "add", "blackhole", "fd00:66::/64"])?;
    topo.node.ip(&[
        "link",
        "add",
        "nwvx0",
        "type",
        "vxlan",
        "id",
        &VXLAN_VNI.to_string(),
        "dstport",
        "4789",
        "local",
        "198.18.16.2",
        "dev",
        "eth0",
    ])?;
    topo.node
        .ip(&["addr", "add", &format!("{VXLAN_ADDR}/24"), "dev", "nwvx0"])?;
    topo.node.ip(&["link", "set", "nwvx0", "up"])?;
    let mac = topo.node.exec("cat", &["/sys/class/net/nwvx0/address"])?;
    let b: Vec<u8> = mac
        .trim()
        .split(':')
        .map(|x| u8::from_str_radix(x, 16))
        .collect::<Result<_, _>>()?;
    b.try_into().map_err(|_| anyhow::anyhow!("bad MAC {mac}"))
}

fn send_all(wire: &Injector, cases: &Cases) -> anyhow::Result<()> {
    for case in &cases.list {
        for f in &case.frames {
            wire.send(f)?;
        }
    }
    Ok(())
}

/// The cases whose marker arrived (to their port, when they name one).
fn delivered<'c>(cases: &'c Cases, seen: &HashSet<(u32, i32, u16)>) -> Vec<&'c Case> {
    cases
        .list
        .iter()
        .filter(|c| {
            seen.iter()
                .any(|&(id, _, port)| id == c.id && c.port.is_none_or(|p| p == port))
        })
        .collect()
}

fn crafted_attacks_never_reach_the_stack(backend: Backend) -> anyhow::Result<()> {
    let topo = Topology::new()?;
    let vx_mac = prepare(&topo)?;
    let mut cases = cases();
    vxlan_case(&mut cases, vx_mac);
    let wire = Injector::new(&topo)?;
    let seen = Delivery::new(&topo.node)?;
    seen.clear();
    // No firewall: every case is something the kernel delivers (else it proves nothing).
    send_all(&wire, &cases)?;
    let open = delivered(&cases, &seen.settle());
    let missing: Vec<&str> = cases
        .list
        .iter()
        .filter(|c| !c.kernel_drops && !open.iter().any(|o| o.id == c.id))
        .map(|c| c.name.as_str())
        .collect();
    let unexpected: Vec<&str> = open
        .iter()
        .filter(|c| c.kernel_drops)
        .map(|c| c.name.as_str())
        .collect();
    anyhow::ensure!(
        missing.is_empty() && unexpected.is_empty(),
        "without a firewall the kernel should deliver every case but those it discards itself;\nnot delivered: {missing:?}\ndelivered though the kernel should discard them: {unexpected:?}"
    );
    let file = config(backend).write()?;
    apply(&topo.node, &file)?;
    seen.clear();
    send_all(&wire, &cases)?;
    let through = delivered(&cases, &seen.settle());
    if !through.is_empty() {
        let names: Vec<&str> = through.iter().map(|c| c.name.as_str()).collect();
        anyhow::bail!(
            "{} of {} attacks reached the stack: {names:#?}\n{}",
            through.len(),
            cases.list.len(),
            describe(&topo.node, backend)
        );
    }
    // The policy is not a wall: the open port still works for the same attacker.
    let mut ok = Cases {
        list: Vec::new(),
        next: 1_000_000,
    };
    for v6 in [false, true] {
        let id = ok.id();
        ok.add(
            format!("SYN to the open port (v6={v6})"),
            vec![frame(&ip(v6, 6, &seg(v6, OPEN, SYN, id), id))],
        )
        .id = id;
        let id = ok.id();
        let (src, dst) = (attacker(v6), node_addr(v6));
        let echo = icmp(
            src,
            dst,
            if v6 { 128 } else { 8 },
            0,
            [0, 3, 0, 1],
            &marker(id),
        );
        ok.add(
            format!("echo request (v6={v6})"),
            vec![frame(&ip(v6, if v6 { 58 } else { 1 }, &echo, id))],
        )
        .id = id;
    }
    send_all(&wire, &ok)?;
    let got = delivered(&ok, &seen.settle());
    anyhow::ensure!(
        got.len() == ok.list.len(),
        "allowed probes went missing: {} of {}",
        got.len(),
        ok.list.len()
    );
    eprintln!(
        "{} crafted attacks blocked, {} allowed probes delivered",
        cases.list.len(),
        got.len()
    );
    Ok(())
}

backend_tests!(crafted_attacks_never_reach_the_stack);
