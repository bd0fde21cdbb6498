//! A fast reader for the spellings that fill long address lists (`198.18.0.0/29`,
//! `fd00:0:0:10::/64`, `10.0.0.1`). Validating 10k CIDRs through the standard address parser
//! (IPv6 text is first tried as IPv4, then re-read) and `ipnet` took about as long as reading
//! the YAML they are written in. This reader accepts a strict subset of what
//! [`super::fields::cidr`] accepts, and gives the same network for it; everything else (every
//! mistake in particular) is left to `fields::cidr`, which explains what is wrong.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// The network `s` spells, if it is a valid prefix with clear host bits (or a bare address)
/// in the plain forms; `None` for anything else.
pub fn quick(s: &str) -> Option<IpNet> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a.as_bytes(), Some(l.as_bytes())),
        None => (s.as_bytes(), None),
    };
    let ip = if addr.contains(&b':') {
        IpAddr::V6(v6(addr)?)
    } else {
        IpAddr::V4(v4(addr)?)
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(l) => decimal(l, 3)?,
    };
    if len > max {
        return None;
    }
    let net = IpNet::new(ip, len as u8).ok()?;
    (net.trunc() == net).then_some(net)
}

/// Four decimal octets, without leading zeros (as the standard parser requires).
fn v4(b: &[u8]) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = b.split(|&c| c == b'.');
    for o in &mut octets {
        let part = parts.next()?;
        if part.len() > 1 && part[0] == b'0' {
            return None;
        }
        *o = u8::try_from(decimal(part, 3)?).ok()?;
    }
    parts.next().is_none().then(|| Ipv4Addr::from(octets))
}

/// Eight groups of 1-4 hex digits, or fewer around one `::` that stands for at least one
/// zero group. No embedded IPv4 form.
fn v6(b: &[u8]) -> Option<Ipv6Addr> {
    let mut groups = [0u16; 8];
    let gap = b.windows(2).position(|w| w == b"::");
    let (head, tail) = match gap {
        Some(p) => (&b[..p], Some(&b[p + 2..])),
        None => (b, None),
    };
    let n = hex_groups(head, &mut groups)?;
    match tail {
        None if n == 8 => {}
        None => return None,
        Some(tail) => {
            let mut rest = [0u16; 8];
            let m = hex_groups(tail, &mut rest)?;
            if n + m > 7 {
                return None;
            }
            groups[8 - m..].copy_from_slice(&rest[..m]);
        }
    }
    Some(Ipv6Addr::from(groups))
}

/// Reads `:`-separated groups into `out`; how many. An empty text is no group.
fn hex_groups(b: &[u8], out: &mut [u16; 8]) -> Option<usize> {
    if b.is_empty() {
        return Some(0);
    }
    let mut n = 0;
    for part in b.split(|&c| c == b':') {
        if part.is_empty() || part.len() > 4 || n == 8 {
            return None;
        }
        let mut v = 0u16;
        for &c in part {
            v = v << 4 | (c as char).to_digit(16)? as u16;
        }
        out[n] = v;
        n += 1;
    }
    Some(n)
}

/// 1 to `max_digits` decimal digits.
fn decimal(b: &[u8], max_digits: usize) -> Option<u32> {
    if b.is_empty() || b.len() > max_digits {
        return None;
    }
    b.iter().try_fold(0u32, |v, &c| {
        c.is_ascii_digit().then(|| v * 10 + u32::from(c - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::fields;
    use rand::{Rng, SeedableRng};

    /// Whatever the quick reader accepts, the full one accepts as the same network.
    fn agrees(s: &str) -> bool {
        match quick(s) {
            Some(net) => {
                assert_eq!(fields::cidr(s), Ok(net), "{s:?}");
                true
            }
            None => false,
        }
    }

    #[test]
    fn common_spellings_are_read_quickly() {
        for s in [
            "198.18.0.0/29",
            "10.0.0.1",
            "0.0.0.0/0",
            "255.255.255.255/32",
            "10.0.0.0/008",
            "fd00::/64",
            "fd00:0:0:10::/64",
            "::/0",
            "::",
            "::1",
            "1:2:3:4:5:6:7::",
            "::2:3:4:5:6:7:8",
            "1:2:3:4:5:6:7:8",
            "FD00:ABCD::/32",
            "0fd0::/16",
        ] {
            assert!(agrees(s), "{s}");
        }
        for s in [
            "",
            "10.0.0.1/16",
            "10.0.0.0/33",
            "10.0.0/8",
            "10.0.0.0.0",
            "010.0.0.0",
            "256.0.0.0",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/0008",
            "fd00::/129",
            "1:2:3:4:5:6:7:8::",
            "1::2:3:4:5:6:7:8",
            ":::",
            "1:::2",
            ":1::",
            "12345::",
            "::ffff:10.0.0.1",
            "fd00::1/64",
            "cluster",
        ] {
            assert!(!agrees(s), "{s}");
        }
    }

    #[test]
    fn never_accepts_what_the_full_reader_refuses_or_reads_otherwise() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let alphabet = b"0123456789abcdefABCDEFxg:./+ ";
        for _ in 0..100_000 {
            let len = rng.gen_range(0..24);
            let s: String = (0..len)
                .map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char)
                .collect();
            agrees(&s);
        }
        // Valid addresses and prefixes, many with host bits set: the interesting boundary.
        let mut accepted = 0;
        for _ in 0..50_000 {
            let (ip, max): (IpAddr, u8) = if rng.gen_bool(0.5) {
                (
                    IpAddr::V4(Ipv4Addr::from(rng.gen::<u32>() >> rng.gen_range(0..32))),
                    32,
                )
            } else {
                let v = rng.gen::<u128>() >> rng.gen_range(0..128);
                (IpAddr::V6(Ipv6Addr::from(v)), 128)
            };
            let len = rng.gen_range(0..=max + 1);
            accepted += usize::from(agrees(&format!("{ip}/{len}")));
            accepted += usize::from(agrees(&ip.to_string()));
        }
        assert!(accepted > 50_000, "{accepted}");
    }
}
