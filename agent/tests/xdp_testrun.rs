//! The XDP program on crafted frames through BPF_PROG_TEST_RUN: every verdict path,
//! malformed and truncated headers, VLANs, IPv4 options, fragments, IPv6 extension headers,
//! return traffic recorded by the egress program, counters and their labels, audit mode and
//! generation switches. Nothing is attached anywhere.

mod xdp_support;

use nodewall::config::{Action, Mode, Protocol};
use xdp_support::*;

const ME4: [u8; 4] = [198, 18, 0, 1];
const PEER4: [u8; 4] = [198, 19, 1, 2];
const ADMIN4: [u8; 4] = [198, 19, 200, 7];

fn me6() -> [u8; 16] {
    v6("fd00::1")
}
fn peer6() -> [u8; 16] {
    v6("fd00:1::2")
}

/// ssh from anywhere; a deny of 198.19.200.0/24 before an allow of 198.19.0.0/16 on 8000-8100;
/// udp/53 from fd00:1::/32; icmp from anywhere.
fn base_policy() -> nodewall::policy::Policy {
    policy(vec![
        rule(
            "ssh",
            Action::Allow,
            Protocol::Tcp,
            &[(22, 22)],
            &["0.0.0.0/0", "::/0"],
        ),
        rule(
            "block-admin",
            Action::Deny,
            Protocol::All,
            &[],
            &["198.19.200.0/24"],
        ),
        rule(
            "web",
            Action::Allow,
            Protocol::Tcp,
            &[(8000, 8100)],
            &["198.19.0.0/16", "fd00:1::/32"],
        ),
        rule(
            "dns6",
            Action::Allow,
            Protocol::Udp,
            &[(53, 53)],
            &["fd00:1::/32"],
        ),
        rule("ping", Action::Allow, Protocol::Icmp, &[], &["0.0.0.0/0"]),
    ])
}

fn probe(p: &nodewall::policy::Policy) -> Option<Probe> {
    if !privileged() {
        return None;
    }
    let mut pr = Probe::new();
    pr.install(p);
    Some(pr)
}

/// An IPv4 packet to the node, in an untagged frame.
fn in4(src: [u8; 4], proto: u8, payload: &[u8]) -> Vec<u8> {
    eth(ETH_IP, &[], &ipv4(src, ME4, proto, payload))
}

/// An IPv6 packet to the node, in an untagged frame.
fn in6(src: [u8; 16], next: u8, payload: &[u8]) -> Vec<u8> {
    eth(ETH_IPV6, &[], &ipv6(src, me6(), next, payload))
}

fn tcp4(src: [u8; 4], dport: u16) -> Vec<u8> {
    in4(src, 6, &tcp(40000, dport))
}

fn rule_seen(name: &str) -> Seen {
    Seen::Rule(name.into())
}

#[test]
fn rules_first_match_wins() {
    let Some(mut p) = probe(&base_policy()) else {
        return;
    };
    assert_eq!(p.xdp(&tcp4(PEER4, 22)), (XDP_PASS, rule_seen("ssh")));
    assert_eq!(p.xdp(&tcp4(PEER4, 8050)), (XDP_PASS, rule_seen("web")));
    assert_eq!(
        p.xdp(&tcp4(PEER4, 8101)),
        (XDP_DROP, Seen::Drop("default-deny", "ipv4", "tcp"))
    );
    // The deny comes before "web": the admin range is refused on 8050, but ssh is earlier still.
    assert_eq!(
        p.xdp(&tcp4(ADMIN4, 8050)),
        (XDP_DROP, rule_seen("block-admin"))
    );
    assert_eq!(p.xdp(&tcp4(ADMIN4, 22)), (XDP_PASS, rule_seen("ssh")));
    assert_eq!(p.rule_drops("block-admin"), vec![("ipv4", "tcp", 1)]);
    let ping = in4(PEER4, 1, &icmp(8, 0, 7, b"hi"));
    assert_eq!(p.xdp(&ping), (XDP_PASS, rule_seen("ping")));
    let ping_admin = in4(ADMIN4, 1, &icmp(8, 0, 7, b"hi"));
    assert_eq!(p.xdp(&ping_admin), (XDP_DROP, rule_seen("block-admin")));
    assert!(p.rule_drops("block-admin").contains(&("ipv4", "icmp", 1)));
    let gre = in4(PEER4, 47, b"xxxx");
    assert_eq!(
        p.xdp(&gre),
        (XDP_DROP, Seen::Drop("default-deny", "ipv4", "other"))
    );
}

#[test]
fn ipv6_rules_and_icmp_families() {
    let Some(mut p) = probe(&base_policy()) else {
        return;
    };
    let dns = eth(
        ETH_IPV6,
        &[],
        &ipv6(peer6(), me6(), 17, &udp(5353, 53, b"q")),
    );
    assert_eq!(p.xdp(&dns), (XDP_PASS, rule_seen("dns6")));
    let dns_other = eth(
        ETH_IPV6,
        &[],
        &ipv6(v6("fd00:2::9"), me6(), 17, &udp(5353, 53, b"q")),
    );
    assert_eq!(
        p.xdp(&dns_other),
        (XDP_DROP, Seen::Drop("default-deny", "ipv6", "udp"))
    );
    // "ping" is icmp (IPv4 only): an ICMPv6 echo request is not matched by it.
    let ping6 = eth(
        ETH_IPV6,
        &[],
        &ipv6(peer6(), me6(), 58, &icmp(128, 0, 1, b"")),
    );
    assert_eq!(
        p.xdp(&ping6),
        (XDP_DROP, Seen::Drop("default-deny", "ipv6", "icmpv6"))
    );
    // Protocol 58 inside IPv4 is not ICMP: "other".
    let odd = in4(PEER4, 58, &icmp(128, 0, 1, b""));
    assert_eq!(
        p.xdp(&odd),
        (XDP_DROP, Seen::Drop("default-deny", "ipv4", "other"))
    );
}

#[test]
fn non_ip_and_vlans() {
    let Some(mut p) = probe(&base_policy()) else {
        return;
    };
    let arp = eth(ETH_ARP, &[], &[0u8; 28]);
    assert_eq!(p.xdp(&arp), (XDP_PASS, Seen::Pass("unfiltered")));
    let one = eth(ETH_IP, &[100], &ipv4(PEER4, ME4, 6, &tcp(1, 22)));
    assert_eq!(p.xdp(&one), (XDP_PASS, rule_seen("ssh")));
    let qinq = eth(ETH_IP, &[100, 200], &ipv4(PEER4, ME4, 6, &tcp(1, 23)));
    assert_eq!(
        p.xdp(&qinq),
        (XDP_DROP, Seen::Drop("default-deny", "ipv4", "tcp"))
    );
    let qinq6 = eth(
        ETH_IPV6,
        &[100, 200],
        &ipv6(peer6(), me6(), 6, &tcp(1, 8000)),
    );
    assert_eq!(p.xdp(&qinq6), (XDP_PASS, rule_seen("web")));
    let vlan_arp = eth(ETH_ARP, &[5], &[0u8; 28]);
    assert_eq!(p.xdp(&vlan_arp), (XDP_PASS, Seen::Pass("unfiltered")));
    // The kernel strips priority tags (VID 0) at any depth and hands what is under them to
    // IP: every depth the parser reads is classified, deeper stacks are invalid, never passed.
    for depth in 1..=8 {
        let tags = vec![0u16; depth];
        let denied = eth(ETH_IP, &tags, &ipv4(PEER4, ME4, 6, &tcp(1, 23)));
        assert_eq!(
            p.xdp(&denied),
            (XDP_DROP, Seen::Drop("default-deny", "ipv4", "tcp")),
            "{depth} tags"
        );
        let allowed = eth(ETH_IPV6, &tags, &ipv6(peer6(), me6(), 6, &tcp(1, 8000)));
        assert_eq!(
            p.xdp(&allowed),
            (XDP_PASS, rule_seen("web")),
            "{depth} tags"
        );
    }
    for depth in [9, 12] {
        let deep = eth(
            ETH_IP,
            &vec![0u16; depth],
            &ipv4(PEER4, ME4, 6, &tcp(1, 22)),
        );
        assert_eq!(
            p.xdp(&deep),
            (XDP_DROP, Seen::Drop("invalid", "ipv4", "other")),
            "{depth} tags"
        );
    }
}

#[test]
fn ipv4_options_are_skipped() {
    let Some(mut p) = probe(&base_policy()) else {
        return;
    };
    for words in [1usize, 4, 10] {
        let opts = vec![1u8; words * 4]; // NOPs
        let f = eth(
            ETH_IP,
            &[],
            &ipv4_opts(PEER4, ME4, 6, 0, &opts, &tcp(1, 8000)),
        );
        assert_eq!(
            p.xdp(&f),
            (XDP_PASS, rule_seen("web")),
            "{words} option words"
        );
    }
}

#[test]
fn malformed_ipv4_is_invalid() {
    let Some(mut p) = probe(&base_policy()) else {
        return;
    };
    let good = ipv4(PEER4, ME4, 6, &tcp(1, 22));
    let invalid = |proto| Seen::Drop("invalid", "ipv4", proto);
    // Frame ends inside the IPv4 header.
    assert_eq!(
        p.xdp(&eth(ETH_IP, &[], &good[..12])),
        (XDP_DROP, invalid("other"))
    );
    let mut bad_ihl = good.clone();
    bad_ihl[0] = 0x44;
    assert_eq!(
        p.xdp(&eth(ETH_IP, &[], &bad_ihl)),
        (XDP_DROP, invalid("other"))
    );
    let mut bad_version = good.clone();
    bad_version[0] = 0x65;
    assert_eq!(
        p.xdp(&eth(ETH_IP, &[], &bad_version)),
        (XDP_DROP, invalid("other"))
    );
    let mut too_long = good.clone();
    too_long[2..4].copy_from_slice(&200u16.to_be_bytes());
    assert_eq!(
        p.xdp(&eth(ETH_IP, &[], &too_long)),
        (XDP_DROP, invalid("other"))
    );
    let mut shorter_than_header = good.clone();
    shorter_than_header[2..4].copy_from_slice(&16u16.to_be_bytes());
    assert_eq!(
        p.xdp(&eth(ETH_IP, &[], &shorter_than_header)),
        (XDP_DROP, invalid("other"))
    );
    // Ethernet padding after a short packet is not part of it: total length rules.
    let mut padded = ipv4(PEER4, ME4, 17, &udp(1, 53, b""));
    padded.extend_from_slice(&[0u8; 18]);
    assert_eq!(
        p.xdp(&eth(ETH_IP, &[], &padded)),
        (XDP_DROP, Seen::Drop("default-deny", "ipv4", "udp"))
    );
}

#[test]
fn truncated_transport_headers_are_invalid() {
    let Some(mut p) = probe(&base_policy()) else {
        return;
    };
    let t = tcp(1, 22);
    assert_eq!(
        p.xdp(&in4(PEER4, 6, &t[..19])),
        (XDP_DROP, Seen::Drop("invalid", "ipv4", "tcp"))
    );
    let mut bad_doff = t.clone();
    bad_doff[12] = 4 << 4;
    assert_eq!(
        p.xdp(&in4(PEER4, 6, &bad_doff)),
        (XDP_DROP, Seen::Drop("invalid", "ipv4", "tcp"))
    );
    let mut long_doff = t.clone();
    long_doff[12] = 8 << 4; // 32 bytes claimed, 20 present
    assert_eq!(
        p.xdp(&in4(PEER4, 6, &long_doff)),
        (XDP_DROP, Seen::Drop("invalid", "ipv4", "tcp"))
    );
    let u = udp(1, 53, b"");
    assert_eq!(
        p.xdp(&in6(peer6(), 17, &u[..7])),
        (XDP_DROP, Seen::Drop("invalid", "ipv6", "udp"))
    );
    let i = icmp(8, 0, 1, b"");
    assert_eq!(
        p.xdp(&in4(PEER4, 1, &i[..6])),
        (XDP_DROP, Seen::Drop("invalid", "ipv4", "icmp"))
    );
    assert_eq!(
        p.xdp(&in6(peer6(), 58, &i[..4])),
        (XDP_DROP, Seen::Drop("invalid", "ipv6", "icmpv6"))
    );
    // Truncated IPv6 header.
    let h = ipv6(peer6(), me6(), 6, &t);
    assert_eq!(
        p.xdp(&eth(ETH_IPV6, &[], &h[..30])),
        (XDP_DROP, Seen::Drop("invalid", "ipv6", "other"))
    );
}

#[test]
fn ipv4_fragments() {
    let Some(mut p) = probe(&base_policy()) else {
        return;
    };
    const MF: u16 = 0x2000;
    // A first fragment is classified by its ports.
    let first = eth(
        ETH_IP,
        &[],
        &ipv4_opts(PEER4, ME4, 6, MF, &[], &[tcp(1, 8000), vec![0; 8]].concat()),
    );
    assert_eq!(p.xdp(&first), (XDP_PASS, rule_seen("web")));
    let first_denied = eth(
        ETH_IP,
        &[],
        &ipv4_opts(PEER4, ME4, 6, MF, &[], &[tcp(1, 9000), vec![0; 8]].concat()),
    );
    assert_eq!(
        p.xdp(&first_denied),
        (XDP_DROP, Seen::Drop("default-deny", "ipv4", "tcp"))
    );
    // A first fragment too short for the TCP header is dropped.
    let short = eth(
        ETH_IP,
        &[],
        &ipv4_opts(PEER4, ME4, 6, MF, &[], &tcp(1, 22)[..8]),
    );
    assert_eq!(
        p.xdp(&short),
        (XDP_DROP, Seen::Drop("invalid", "ipv4", "tcp"))
    );
    // Later fragments carry no ports; without the first they cannot be reassembled.
    let later = eth(
        ETH_IP,
        &[],
        &ipv4_opts(PEER4, ME4, 6, MF | 3, &[], &[0u8; 24]),
    );
    assert_eq!(p.xdp(&later), (XDP_PASS, Seen::Pass("unfiltered")));
    let last = eth(
        ETH_IP,
        &[],
        &ipv4_opts(ADMIN4, ME4, 17, 185, &[], &[0u8; 3]),
    );
    assert_eq!(p.xdp(&last), (XDP_PASS, Seen::Pass("unfiltered")));
}

#[test]
fn ipv6_extension_headers_and_fragments() {
    let Some(mut p) = probe(&base_policy()) else {
        return;
    };
    let t = tcp(1, 8000);
    let chain = [ext(43, 1), ext(60, 2), ext(6, 1), t.clone()].concat();
    let f = in6(peer6(), 0, &chain);
    assert_eq!(p.xdp(&f), (XDP_PASS, rule_seen("web")));
    // Authentication header: length in 4-byte units minus 2.
    let mut ah = vec![0u8; 16];
    ah[0] = 6;
    ah[1] = 2;
    let f = eth(
        ETH_IPV6,
        &[],
        &ipv6(peer6(), me6(), 51, &[ah, t.clone()].concat()),
    );
    assert_eq!(p.xdp(&f), (XDP_PASS, rule_seen("web")));
    let first = eth(
        ETH_IPV6,
        &[],
        &ipv6(peer6(), me6(), 44, &[frag6(6, 0, true), t.clone()].concat()),
    );
    assert_eq!(p.xdp(&first), (XDP_PASS, rule_seen("web")));
    let short = eth(
        ETH_IPV6,
        &[],
        &ipv6(
            peer6(),
            me6(),
            44,
            &[frag6(6, 0, true), t[..12].to_vec()].concat(),
        ),
    );
    assert_eq!(
        p.xdp(&short),
        (XDP_DROP, Seen::Drop("invalid", "ipv6", "tcp"))
    );
    let later = eth(
        ETH_IPV6,
        &[],
        &ipv6(
            peer6(),
            me6(),
            44,
            &[frag6(6, 7, false), vec![0; 16]].concat(),
        ),
    );
    assert_eq!(p.xdp(&later), (XDP_PASS, Seen::Pass("unfiltered")));
    // Eight extension headers are walked; a ninth is too many.
    let mut eight = Vec::new();
    for _ in 0..7 {
        eight.extend(ext(60, 1));
    }
    eight.extend(ext(6, 1));
    let f = eth(
        ETH_IPV6,
        &[],
        &ipv6(peer6(), me6(), 60, &[eight.clone(), t.clone()].concat()),
    );
    assert_eq!(p.xdp(&f), (XDP_PASS, rule_seen("web")));
    let f = eth(
        ETH_IPV6,
        &[],
        &ipv6(peer6(), me6(), 60, &[ext(60, 1), eight, t.clone()].concat()),
    );
    assert_eq!(
        p.xdp(&f),
        (XDP_DROP, Seen::Drop("invalid", "ipv6", "other"))
    );
    // An extension header running past the payload.
    let f = in6(peer6(), 60, &ext(6, 1)[..4]);
    assert_eq!(
        p.xdp(&f),
        (XDP_DROP, Seen::Drop("invalid", "ipv6", "other"))
    );
    let f = eth(
        ETH_IPV6,
        &[],
        &ipv6(peer6(), me6(), 60, &[ext(6, 3)[..16].to_vec()].concat()),
    );
    assert_eq!(
        p.xdp(&f),
        (XDP_DROP, Seen::Drop("invalid", "ipv6", "other"))
    );
    // No next header: "other".
    let f = in6(peer6(), 59, &[]);
    assert_eq!(
        p.xdp(&f),
        (XDP_DROP, Seen::Drop("default-deny", "ipv6", "other"))
    );
}

#[test]
fn implicit_allowances_and_their_switches() {
    let mut pol = base_policy();
    let Some(mut p) = probe(&pol) else { return };
    for t in 133..=137 {
        let nd = eth(
            ETH_IPV6,
            &[],
            &ipv6(v6("fe80::1"), me6(), 58, &icmp(t, 0, 0, &[0; 16])),
        );
        assert_eq!(p.xdp(&nd), (XDP_PASS, Seen::Pass("neighbour-discovery")));
    }
    let dhcp = eth(
        ETH_IP,
        &[],
        &ipv4([198, 18, 0, 254], ME4, 17, &udp(67, 68, &[0; 32])),
    );
    assert_eq!(p.xdp(&dhcp), (XDP_PASS, Seen::Pass("dhcp-client")));
    let not_dhcp = eth(
        ETH_IP,
        &[],
        &ipv4([198, 18, 0, 254], ME4, 17, &udp(68, 67, &[0; 32])),
    );
    assert_eq!(
        p.xdp(&not_dhcp),
        (XDP_DROP, Seen::Drop("default-deny", "ipv4", "udp"))
    );
    pol.implicit.neighbour_discovery = false;
    pol.implicit.dhcp_client = false;
    p.install(&pol);
    let nd = eth(
        ETH_IPV6,
        &[],
        &ipv6(v6("fe80::1"), me6(), 58, &icmp(135, 0, 0, &[0; 16])),
    );
    assert_eq!(
        p.xdp(&nd),
        (XDP_DROP, Seen::Drop("default-deny", "ipv6", "icmpv6"))
    );
    assert_eq!(
        p.xdp(&dhcp),
        (XDP_DROP, Seen::Drop("default-deny", "ipv4", "udp"))
    );
}

#[test]
fn return_traffic_of_our_flows() {
    let Some(mut p) = probe(&policy(vec![])) else {
        return;
    };
    // A lone ACK of no flow is picked up as new (conntrack's loose pickup): the rules decide.
    let ack = in4(PEER4, 6, &tcpf(443, 40000, ACK));
    assert_eq!(
        p.xdp(&ack),
        (XDP_DROP, Seen::Drop("default-deny", "ipv4", "tcp"))
    );
    p.egress(&eth(ETH_IP, &[], &ipv4(ME4, PEER4, 6, &tcp(40000, 443))));
    let synack = in4(PEER4, 6, &tcpf(443, 40000, SYN | ACK));
    assert_eq!(p.xdp(&synack), (XDP_PASS, Seen::Pass("established")));
    assert_eq!(p.xdp(&ack), (XDP_PASS, Seen::Pass("established")));
    // Another port of the same peer is not part of the flow.
    let other = in4(PEER4, 6, &tcpf(443, 40001, ACK));
    assert_eq!(
        p.xdp(&other),
        (XDP_DROP, Seen::Drop("default-deny", "ipv4", "tcp"))
    );
    // UDP over IPv6 through a VLAN.
    p.egress(&eth(
        ETH_IPV6,
        &[7],
        &ipv6(me6(), peer6(), 17, &udp(5000, 53, b"q")),
    ));
    let answer = eth(
        ETH_IPV6,
        &[],
        &ipv6(peer6(), me6(), 17, &udp(53, 5000, b"a")),
    );
    assert_eq!(p.xdp(&answer), (XDP_PASS, Seen::Pass("established")));
    // Echo replies of our echo requests, per identifier; an echo reply to nothing is invalid
    // (conntrack cannot make a flow of it).
    p.egress(&eth(
        ETH_IP,
        &[],
        &ipv4(ME4, PEER4, 1, &icmp(8, 0, 77, b"")),
    ));
    let pong = in4(PEER4, 1, &icmp(0, 0, 77, b""));
    assert_eq!(p.xdp(&pong), (XDP_PASS, Seen::Pass("established")));
    let stray = in4(PEER4, 1, &icmp(0, 0, 78, b""));
    assert_eq!(
        p.xdp(&stray),
        (XDP_DROP, Seen::Drop("invalid", "ipv4", "icmp"))
    );
    p.egress(&eth(
        ETH_IPV6,
        &[],
        &ipv6(me6(), peer6(), 58, &icmp(128, 0, 9, b"")),
    ));
    let pong6 = eth(
        ETH_IPV6,
        &[],
        &ipv6(peer6(), me6(), 58, &icmp(129, 0, 9, b"")),
    );
    assert_eq!(p.xdp(&pong6), (XDP_PASS, Seen::Pass("established")));
    // ICMP errors quoting a packet we sent are related; quoting anything else is invalid.
    let quoted = ipv4(ME4, PEER4, 6, &tcp(40000, 443));
    let unreach = eth(
        ETH_IP,
        &[],
        &ipv4([198, 18, 9, 9], ME4, 1, &icmp(3, 4, 0, &quoted[..28])),
    );
    assert_eq!(p.xdp(&unreach), (XDP_PASS, Seen::Pass("icmp-error")));
    let foreign = ipv4(ME4, PEER4, 6, &tcp(40000, 444));
    let unreach2 = eth(
        ETH_IP,
        &[],
        &ipv4([198, 18, 9, 9], ME4, 1, &icmp(3, 4, 0, &foreign[..28])),
    );
    assert_eq!(
        p.xdp(&unreach2),
        (XDP_DROP, Seen::Drop("invalid", "ipv4", "icmp"))
    );
    let quoted6 = ipv6(me6(), peer6(), 17, &udp(5000, 53, b"q"));
    let too_big = eth(
        ETH_IPV6,
        &[],
        &ipv6(v6("fd00:9::1"), me6(), 58, &icmp(2, 0, 0, &quoted6[..48])),
    );
    assert_eq!(p.xdp(&too_big), (XDP_PASS, Seen::Pass("icmp-error")));
    let quoted_ping = ipv4(ME4, PEER4, 1, &icmp(8, 0, 77, b""));
    let ttl = eth(
        ETH_IP,
        &[],
        &ipv4([198, 18, 9, 9], ME4, 1, &icmp(11, 0, 0, &quoted_ping)),
    );
    assert_eq!(p.xdp(&ttl), (XDP_PASS, Seen::Pass("icmp-error")));
    // Switched off, both fall through to the rules (none here: default deny).
    let mut off = policy(vec![]);
    off.implicit.established = false;
    off.implicit.icmp_errors = false;
    p.install(&off);
    assert_eq!(
        p.xdp(&ack),
        (XDP_DROP, Seen::Drop("default-deny", "ipv4", "tcp"))
    );
    assert_eq!(
        p.xdp(&unreach),
        (XDP_DROP, Seen::Drop("default-deny", "ipv4", "icmp"))
    );
    // With only icmp-errors off, a related error is not "established" either.
    let mut no_errors = policy(vec![]);
    no_errors.implicit.icmp_errors = false;
    p.install(&no_errors);
    assert_eq!(
        p.xdp(&unreach),
        (XDP_DROP, Seen::Drop("default-deny", "ipv4", "icmp"))
    );
    assert_eq!(p.xdp(&ack), (XDP_PASS, Seen::Pass("established")));
}

#[test]
fn audit_mode_counts_but_passes() {
    let mut pol = base_policy();
    pol.mode = Mode::Audit;
    let Some(mut p) = probe(&pol) else { return };
    assert_eq!(
        p.xdp(&tcp4(ADMIN4, 8050)),
        (XDP_PASS, rule_seen("block-admin"))
    );
    assert_eq!(
        p.xdp(&tcp4(PEER4, 9999)),
        (XDP_PASS, Seen::Drop("default-deny", "ipv4", "tcp"))
    );
    let bad = ipv4(PEER4, ME4, 6, &tcp(1, 22)[..10]);
    assert_eq!(
        p.xdp(&eth(ETH_IP, &[], &bad)),
        (XDP_PASS, Seen::Drop("invalid", "ipv4", "tcp"))
    );
    assert_eq!(p.rule_drops("block-admin"), vec![("ipv4", "tcp", 1)]);
}

#[test]
fn counters_follow_rule_names_across_generations() {
    let Some(mut p) = probe(&base_policy()) else {
        return;
    };
    for _ in 0..3 {
        p.xdp(&tcp4(PEER4, 8000));
    }
    let bytes =
        p.dp.counters()
            .unwrap()
            .rules
            .iter()
            .find(|r| r.rule == "web")
            .unwrap()
            .bytes;
    assert_eq!(
        bytes,
        3 * 40,
        "bytes are the IP packet length, as nft counts them"
    );
    // Insert a rule before "web": its position moves, its counter does not.
    let mut pol = base_policy();
    pol.rules.insert(
        0,
        rule(
            "new-first",
            Action::Allow,
            Protocol::Udp,
            &[(1, 1)],
            &["0.0.0.0/0"],
        ),
    );
    let g1 = p.dp.generation();
    p.install(&pol);
    assert_eq!(p.dp.generation(), g1 + 1);
    assert_eq!(p.dp.rule_names()[0], "new-first");
    let web = |p: &Probe| {
        p.dp.counters()
            .unwrap()
            .rules
            .iter()
            .find(|r| r.rule == "web")
            .unwrap()
            .packets
    };
    assert_eq!(web(&p), 3);
    assert_eq!(p.xdp(&tcp4(PEER4, 8000)), (XDP_PASS, rule_seen("web")));
    assert_eq!(web(&p), 4);
    // The same policy again changes nothing.
    let again = p.dp.install(&pol).unwrap();
    assert!(!again.changed);
    assert_eq!(p.dp.generation(), g1 + 1);
    // One more CIDR in one rule writes one trie entry (plus nothing else).
    let mut wider = pol.clone();
    let dns = wider.rules.iter_mut().find(|r| r.name == "dns6").unwrap();
    *dns = rule(
        "dns6",
        Action::Allow,
        Protocol::Udp,
        &[(53, 53)],
        &["fd00:1::/32", "fd00:77::/48"],
    );
    let done = p.dp.install(&wider).unwrap();
    // The inactive generation still held the policy before `pol`, so it catches up on that
    // difference too; the next change of one CIDR shows the steady state.
    assert!(done.changed);
    let dns = wider.rules.iter_mut().find(|r| r.name == "dns6").unwrap();
    *dns = rule(
        "dns6",
        Action::Allow,
        Protocol::Udp,
        &[(53, 53)],
        &["fd00:1::/32", "fd00:77::/48", "fd00:78::/48"],
    );
    p.dp.install(&wider).unwrap();
    let dns = wider.rules.iter_mut().find(|r| r.name == "dns6").unwrap();
    *dns = rule(
        "dns6",
        Action::Allow,
        Protocol::Udp,
        &[(53, 53)],
        &[
            "fd00:1::/32",
            "fd00:77::/48",
            "fd00:78::/48",
            "fd00:79::/48",
        ],
    );
    let one = p.dp.install(&wider).unwrap();
    // In the flat source tables a new /48 beside its siblings is one new run (the path
    // through address bytes 4 and 5, path-compressed) and the changed entry of their parent:
    // 2 writes each.
    assert_eq!(
        (one.writes.added, one.writes.removed),
        (4, 0),
        "fd00:78::/48 (catch-up) and fd00:79::/48, 2 writes each"
    );
    let f = eth(
        ETH_IPV6,
        &[],
        &ipv6(v6("fd00:79::5"), me6(), 17, &udp(1, 53, b"")),
    );
    assert_eq!(p.xdp(&f), (XDP_PASS, rule_seen("dns6")));
    // A removed rule's counter disappears from the report.
    pol.rules.retain(|r| r.name != "web");
    p.install(&pol);
    assert!(p
        .dp
        .counters()
        .unwrap()
        .rules
        .iter()
        .all(|r| r.rule != "web"));
}

#[test]
fn too_many_rules_is_refused_and_nothing_changes() {
    let Some(mut p) = probe(&base_policy()) else {
        return;
    };
    let g = p.dp.generation();
    let many: Vec<_> = (0..257)
        .map(|i| {
            rule(
                &format!("r{i}"),
                Action::Allow,
                Protocol::Tcp,
                &[(i as u16 + 1, i as u16 + 1)],
                &["0.0.0.0/0"],
            )
        })
        .collect();
    let err = p.dp.install(&policy(many)).unwrap_err().to_string();
    assert!(
        err.contains("257 rules") && err.contains("at most 256"),
        "{err}"
    );
    assert_eq!(p.dp.generation(), g);
    assert_eq!(p.xdp(&tcp4(PEER4, 22)), (XDP_PASS, rule_seen("ssh")));
    let long = "x".repeat(300);
    let err =
        p.dp.install(&policy(vec![rule(
            &long,
            Action::Allow,
            Protocol::All,
            &[],
            &["::/0"],
        )]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("rules[0].name"), "{err}");
    // 256 rules fit, and the last one decides for its port.
    let max: Vec<_> = (0..256)
        .map(|i| {
            rule(
                &format!("r{i}"),
                Action::Allow,
                Protocol::Tcp,
                &[(i as u16 + 1, i as u16 + 1)],
                &["0.0.0.0/0"],
            )
        })
        .collect();
    p.install(&policy(max));
    assert_eq!(p.xdp(&tcp4(PEER4, 256)), (XDP_PASS, rule_seen("r255")));
    assert_eq!(
        p.xdp(&tcp4(PEER4, 257)),
        (XDP_DROP, Seen::Drop("default-deny", "ipv4", "tcp"))
    );
}
