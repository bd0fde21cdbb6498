//! The policies and packets every section measures with: N allow rules (UDP, one port each)
//! sharing a set of distinct, non-adjacent CIDRs, an allowed packet that matches only the LAST
//! rule and a dropped packet that matches none (default-deny), so both verdicts take the longest
//! path through a first-match rule list.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// First destination port; rule `i` allows `BASE_PORT + i`.
pub const BASE_PORT: u16 = 10000;
/// A source outside every generated CIDR (the generator stays below 198.19.213.0).
pub const DENIED_V4: Ipv4Addr = Ipv4Addr::new(198, 19, 250, 1);
pub const DENIED_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xffff, 0, 0, 0, 0, 0, 1);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn label(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// The first host: the network address + 1 when the prefix holds more than one address
    /// (the one address xdp-filter, which matches exact addresses only, gets for the CIDR).
    pub fn first_host(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(
                u32::from(a) + 1.min((1u32 << (32 - self.prefix)) - 1),
            )),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(
                u128::from(a) + 1.min(u128::MAX >> self.prefix),
            )),
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// `n` distinct IPv4 CIDRs inside 198.18.0.0 .. 198.19.212.255, spaced by twice their size so no
/// two are adjacent (the policy compiler would merge adjacent ones into one range).
pub fn v4_cidrs(n: usize) -> Vec<Cidr> {
    const SPAN: u32 = 120_000;
    let stride = prev_pow2((SPAN / n.max(1) as u32).max(2));
    let prefix = 32 - (stride / 2).trailing_zeros() as u8;
    let base = u32::from(Ipv4Addr::new(198, 18, 0, 0));
    (0..n as u32)
        .map(|i| Cidr {
            addr: IpAddr::V4(Ipv4Addr::from(base + i * stride)),
            prefix,
        })
        .collect()
}

/// `n` distinct /64s under fd00:0:0::/48, every other one so none is adjacent.
pub fn v6_cidrs(n: usize) -> Vec<Cidr> {
    (0..n as u128)
        .map(|i| Cidr {
            addr: IpAddr::V6(Ipv6Addr::from((0xfd00u128 << 112) | ((2 * i) << 64))),
            prefix: 64,
        })
        .collect()
}

/// `n` distinct IPv4 /32s evenly spread over 198.18.0.0/15 (the bench's whole IPv4 range, so
/// 100k of them fill 76% of it), leaving out the pair's own /24 (198.19.254.0/24) and
/// [`DENIED_V4`].
pub fn hosts_v4(n: usize) -> Vec<Cidr> {
    let base = u32::from(Ipv4Addr::new(198, 18, 0, 0));
    let pair = u32::from(Ipv4Addr::new(198, 19, 254, 0)) >> 8;
    let free: Vec<u32> = (base..base + (1 << 17))
        .filter(|&a| a >> 8 != pair && a != u32::from(DENIED_V4))
        .collect();
    let n = n.min(free.len());
    (0..n)
        .map(|i| Cidr {
            addr: IpAddr::V4(Ipv4Addr::from(free[i * free.len() / n])),
            prefix: 32,
        })
        .collect()
}

/// `n` distinct /64s scattered over fd00::/8: the 56 bits after `fd` are `i + 1` times an odd
/// constant (a bijection modulo 2^56), so consecutive prefixes share no byte beyond the first
/// and each needs its own path through a byte-stride trie.
pub fn scattered_v6(n: usize) -> Vec<Cidr> {
    const MASK: u128 = (1 << 56) - 1;
    (0..n as u128)
        .map(|i| {
            let bits = ((i + 1) * 0x9E37_79B9_7F4A_7C15) & MASK;
            Cidr {
                addr: IpAddr::V6(Ipv6Addr::from((0xfdu128 << 120) | (bits << 64))),
                prefix: 64,
            }
        })
        .collect()
}

fn prev_pow2(x: u32) -> u32 {
    1 << (31 - x.leading_zeros())
}

/// A benchmark policy: `rules` UDP allow rules over `cidrs` distinct CIDRs.
#[derive(Clone, Debug)]
pub struct Workload {
    pub rules: usize,
    /// Per rule, its source CIDRs. Rule `i` gets every group whose index is `i` modulo the rule
    /// count; when there are fewer groups than rules, rule `i` reuses group `i % groups`.
    pub per_rule: Vec<Vec<Cidr>>,
    pub distinct: usize,
}

impl Workload {
    /// `cidrs` CIDRs in total, half IPv4 and half IPv6, grouped in (v4, v6) pairs so every rule,
    /// including the last, holds both families.
    pub fn mixed(rules: usize, cidrs: usize) -> Self {
        let pairs = (cidrs / 2).max(1);
        let (v4, v6) = (v4_cidrs(pairs), v6_cidrs(pairs));
        let groups: Vec<Vec<Cidr>> = v4.into_iter().zip(v6).map(|(a, b)| vec![a, b]).collect();
        Self::spread(rules, groups, pairs * 2)
    }

    /// `n` scattered IPv6 /64s ([`scattered_v6`]) spread over the rules, plus one IPv4 CIDR per
    /// rule so that every rule, the last included, holds both families.
    pub fn scattered_v6(rules: usize, n: usize) -> Self {
        let groups = v4_cidrs(rules)
            .into_iter()
            .chain(scattered_v6(n))
            .map(|c| vec![c])
            .collect();
        Self::spread(rules, groups, rules + n)
    }

    /// `n` IPv4 /32s ([`hosts_v4`]) dealt to the rules in turn, so that consecutive addresses
    /// are in different rules and none merge into a shorter prefix, plus one IPv6 CIDR per rule
    /// so that every rule, the last included, holds both families.
    pub fn hosts_v4(rules: usize, n: usize) -> Self {
        let groups = v6_cidrs(rules)
            .into_iter()
            .chain(hosts_v4(n))
            .map(|c| vec![c])
            .collect();
        Self::spread(rules, groups, rules + n)
    }

    /// `cidrs` IPv4 CIDRs (the throughput runs send IPv4 only, so every CIDR is on their path).
    pub fn v4_only(rules: usize, cidrs: usize) -> Self {
        let groups = v4_cidrs(cidrs.max(1))
            .into_iter()
            .map(|c| vec![c])
            .collect();
        Self::spread(rules, groups, cidrs.max(1))
    }

    fn spread(rules: usize, groups: Vec<Vec<Cidr>>, distinct: usize) -> Self {
        let n = groups.len();
        let mut per_rule = vec![Vec::new(); rules];
        if n >= rules {
            for (i, g) in groups.into_iter().enumerate() {
                per_rule[i % rules].extend(g);
            }
        } else {
            for (i, r) in per_rule.iter_mut().enumerate() {
                r.extend(groups[i % n].iter().copied());
            }
        }
        Self {
            rules,
            per_rule,
            distinct,
        }
    }

    /// The same policy with one CIDR of the first rule replaced by a new one (an incremental change).
    pub fn with_one_changed(&self) -> Self {
        let mut w = self.clone();
        if let Some(c) = w.per_rule[0].first_mut() {
            if c.addr.is_ipv6() {
                *c = Cidr {
                    addr: IpAddr::V6(Ipv6Addr::new(0xfd00, 0xeeee, 0, 0, 0, 0, 0, 0)),
                    prefix: 64,
                };
            } else {
                *c = Cidr {
                    addr: IpAddr::V4(Ipv4Addr::new(198, 19, 240, 0)),
                    prefix: 28,
                };
            }
        }
        w
    }

    pub fn last_port(&self) -> u16 {
        BASE_PORT + self.rules as u16 - 1
    }

    /// A source that only the last rule's CIDRs contain (its last CIDR of `family`).
    pub fn allowed_src(&self, family: Family) -> IpAddr {
        let c = self.per_rule[self.rules - 1]
            .iter()
            .rev()
            .find(|c| c.addr.is_ipv4() == (family == Family::V4))
            .expect("the last rule holds both families");
        c.first_host()
    }

    pub fn denied_src(family: Family) -> IpAddr {
        match family {
            Family::V4 => IpAddr::V4(DENIED_V4),
            Family::V6 => IpAddr::V6(DENIED_V6),
        }
    }

    /// nodewall's YAML config for this policy (`failsafe: []`, so only these rules exist).
    /// `extra_rules` are appended verbatim (e.g. the reload section's stream allowances).
    pub fn config_yaml(&self, backend: &str, iface: &str, extra_rules: &str) -> String {
        let mut s = format!(
            "backend: {backend}\nmode: enforce\ninterfaces: [{iface}]\nfailsafe: []\nrules:\n"
        );
        s.push_str(extra_rules);
        for (i, cidrs) in self.per_rule.iter().enumerate() {
            let _ = write!(s, "  - name: r{i}\n    action: allow\n    protocol: udp\n    ports: [\"{}\"]\n    from: [", BASE_PORT + i as u16);
            for (j, c) in cidrs.iter().enumerate() {
                if j > 0 {
                    s.push_str(", ");
                }
                let _ = write!(s, "\"{c}\"");
            }
            s.push_str("]\n");
        }
        s
    }
}

/// An Ethernet + IP + UDP frame of the minimum Ethernet size for IPv4 (60 bytes before FCS),
/// checksums filled in.
pub fn udp_frame(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
) -> Vec<u8> {
    let payload = [0u8; 18];
    let udp_len = 8 + payload.len();
    let mut f = Vec::with_capacity(96);
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    let mut udp = Vec::with_capacity(udp_len);
    udp.extend_from_slice(&sport.to_be_bytes());
    udp.extend_from_slice(&dport.to_be_bytes());
    udp.extend_from_slice(&(udp_len as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(&payload);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f.extend_from_slice(&[0x08, 0x00]);
            let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0];
            ip[2..4].copy_from_slice(&((20 + udp_len) as u16).to_be_bytes());
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            let c = checksum(&[&ip]);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            let pseudo = [
                &s.octets()[..],
                &d.octets()[..],
                &[0, 17],
                &(udp_len as u16).to_be_bytes(),
            ]
            .concat();
            let c = checksum(&[&pseudo, &udp]);
            udp[6..8].copy_from_slice(&c.to_be_bytes());
            f.extend_from_slice(&ip);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f.extend_from_slice(&[0x86, 0xdd]);
            let mut ip = vec![0x60, 0, 0, 0];
            ip.extend_from_slice(&(udp_len as u16).to_be_bytes());
            ip.extend_from_slice(&[17, 64]);
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            let pseudo = [
                &s.octets()[..],
                &d.octets()[..],
                &(udp_len as u32).to_be_bytes(),
                &[0, 0, 0, 17],
            ]
            .concat();
            let c = checksum(&[&pseudo, &udp]);
            udp[6..8].copy_from_slice(&c.to_be_bytes());
            f.extend_from_slice(&ip);
        }
        _ => panic!("source and destination must be of one family"),
    }
    f.extend_from_slice(&udp);
    f
}

/// The Internet checksum over concatenated parts (each of even length except the last).
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum = 0u32;
    let bytes = parts
        .iter()
        .flat_map(|p| p.iter().copied())
        .collect::<Vec<u8>>();
    for pair in bytes.chunks(2) {
        let word = (pair[0] as u32) << 8 | *pair.get(1).unwrap_or(&0) as u32;
        sum += word;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let c = !(sum as u16);
    if c == 0 {
        0xffff
    } else {
        c
    }
}

pub fn parse_mac(s: &str) -> anyhow::Result<[u8; 6]> {
    let bytes: Vec<u8> = s
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("bad MAC address {s}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_are_distinct_and_never_adjacent() {
        for n in [1, 5, 500, 5000, 50_000] {
            let v = v4_cidrs(n);
            assert_eq!(v.len(), n);
            for w in v.windows(2) {
                let (IpAddr::V4(a), IpAddr::V4(b)) = (w[0].addr, w[1].addr) else {
                    unreachable!()
                };
                let size = 1u32 << (32 - w[0].prefix);
                assert!(
                    u32::from(b) > u32::from(a) + size,
                    "{} and {} touch",
                    w[0],
                    w[1]
                );
            }
            let last = v.last().unwrap();
            let IpAddr::V4(a) = last.addr else {
                unreachable!()
            };
            assert!(
                u32::from(a) + (1 << (32 - last.prefix))
                    < u32::from(Ipv4Addr::new(198, 19, 213, 0))
            );
        }
    }

    #[test]
    fn allowed_source_is_only_in_the_last_rule_when_cidrs_outnumber_rules() {
        let w = Workload::mixed(8, 1000);
        assert_eq!(w.per_rule.iter().map(Vec::len).sum::<usize>(), 1000);
        for family in [Family::V4, Family::V6] {
            let src = w.allowed_src(family);
            let holders: Vec<usize> = (0..8)
                .filter(|&i| w.per_rule[i].iter().any(|c| contains(c, src)))
                .collect();
            assert_eq!(holders, vec![7]);
        }
    }

    #[test]
    fn fewer_cidrs_than_rules_still_give_every_rule_both_families() {
        let w = Workload::mixed(64, 10);
        assert_eq!(w.distinct, 10);
        assert!(w
            .per_rule
            .iter()
            .all(|r| r.iter().any(|c| c.addr.is_ipv4()) && r.iter().any(|c| c.addr.is_ipv6())));
    }

    #[test]
    fn scattered_prefixes_are_distinct_and_miss_the_fixed_addresses() {
        let v = scattered_v6(5000);
        distinct_and_missing(
            &v,
            5000,
            [IpAddr::V6(DENIED_V6), "fd00:b::2".parse().unwrap()],
        );
        let w = Workload::scattered_v6(64, 5000);
        assert_eq!(w.distinct, 5064);
        only_the_last_rule_holds(&w, Family::V6);
    }

    fn distinct_and_missing(v: &[Cidr], n: usize, fixed: [IpAddr; 2]) {
        let distinct: std::collections::BTreeSet<_> = v.iter().map(|c| c.addr).collect();
        assert_eq!(distinct.len(), n);
        for a in fixed {
            assert!(!v.iter().any(|c| contains(c, a)), "{a}");
        }
    }

    fn only_the_last_rule_holds(w: &Workload, family: Family) {
        let src = w.allowed_src(family);
        let holders: Vec<usize> = (0..w.rules)
            .filter(|&i| w.per_rule[i].iter().any(|c| contains(c, src)))
            .collect();
        assert_eq!(holders, vec![w.rules - 1]);
    }

    #[test]
    fn hosts_are_distinct_unmergeable_and_miss_the_fixed_addresses() {
        let v = hosts_v4(100_000);
        distinct_and_missing(
            &v,
            100_000,
            [IpAddr::V4(DENIED_V4), "198.19.254.2".parse().unwrap()],
        );
        let w = Workload::hosts_v4(64, 100_000);
        assert_eq!(w.distinct, 100_064);
        // No rule holds two adjacent addresses (they would merge into a /31).
        for r in &w.per_rule {
            let mut a: Vec<u32> = r
                .iter()
                .filter_map(|c| match c.addr {
                    IpAddr::V4(a) => Some(u32::from(a)),
                    IpAddr::V6(_) => None,
                })
                .collect();
            a.sort_unstable();
            assert!(a.windows(2).all(|p| p[1] - p[0] > 1));
        }
        only_the_last_rule_holds(&w, Family::V4);
    }

    #[test]
    fn udp_checksums_verify() {
        for (s, d) in [
            (IpAddr::V4(DENIED_V4), "198.19.254.2".parse().unwrap()),
            (IpAddr::V6(DENIED_V6), "fd00:b::2".parse().unwrap()),
        ] {
            let f = udp_frame([2; 6], [4; 6], s, d, 1, 2);
            let (ip_len, pseudo) = match (s, d) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    assert_eq!(checksum(&[&f[14..34]]), 0xffff, "IPv4 header checksum");
                    (
                        20,
                        [
                            &s.octets()[..],
                            &d.octets()[..],
                            &[0, 17],
                            &26u16.to_be_bytes(),
                        ]
                        .concat(),
                    )
                }
                (IpAddr::V6(s), IpAddr::V6(d)) => (
                    40,
                    [
                        &s.octets()[..],
                        &d.octets()[..],
                        &26u32.to_be_bytes(),
                        &[0, 0, 0, 17],
                    ]
                    .concat(),
                ),
                _ => unreachable!(),
            };
            assert_eq!(f.len(), 14 + ip_len + 26);
            // Summing a correct checksum over its own data yields 0 after complement.
            assert_eq!(checksum(&[&pseudo, &f[14 + ip_len..]]), 0xffff);
        }
    }

    fn contains(c: &Cidr, a: IpAddr) -> bool {
        match (c.addr, a) {
            (IpAddr::V4(n), IpAddr::V4(a)) => (u32::from(n) ^ u32::from(a)) >> (32 - c.prefix) == 0,
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                (u128::from(n) ^ u128::from(a)) >> (128 - c.prefix) == 0
            }
            _ => false,
        }
    }
}
