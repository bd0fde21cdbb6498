//! Drop samples from the XDP program's ring buffer (`NW_DROP_SAMPLES`), as the daemon's
//! backend-neutral [`DropEvent`]s. Opened from the pins, so the reader owns its own handles
//! and runs on the daemon's event loop, not on the backend thread.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use aya::maps::{Array, Map, MapData, MapInfo, RingBuf};
use nodewall_common::xdp::{
    map_names, DropSample, SlotName, DROP_CAUSE_DEFAULT, DROP_CAUSE_EGRESS_DEFAULT,
    DROP_CAUSE_EGRESS_INVALID, DROP_CAUSE_INVALID, DROP_CAUSE_RULE_BASE, FAMILY_IPV4, MAX_NAME_LEN,
    SAMPLE_AUDIT, SAMPLE_EGRESS,
};
use nodewall_common::DropReason;

use crate::backend::DropSamples;
use crate::backend::{Direction, DropEvent};

pub struct RingSamples {
    ring: RingBuf<MapData>,
    /// The ring buffer's pin and kernel id when opened: a different map pinned there later
    /// is the one the program writes to.
    ring_pin: PathBuf,
    ring_id: u32,
    /// Rule names by counter slot, read when a sample names a slot (rules change over time).
    names: Array<MapData, SlotName>,
}

impl RingSamples {
    pub fn open(pin_dir: &Path) -> Result<Self> {
        let open = |name: &str| {
            let path = pin_dir.join(name);
            MapData::from_pin(&path)
                .with_context(|| format!("opening pinned map {}", path.display()))
        };
        let ring = open(map_names::DROP_SAMPLES)?;
        let ring_id = ring.info().context("reading the ring buffer's id")?.id();
        let ring = RingBuf::try_from(Map::RingBuf(ring))?;
        let names = Array::try_from(Map::Array(open(map_names::SLOT_NAMES)?))?;
        Ok(Self {
            ring,
            ring_pin: pin_dir.join(map_names::DROP_SAMPLES),
            ring_id,
            names,
        })
    }

    fn rule_name(&self, slot: u32) -> String {
        match self.names.get(&slot, 0) {
            Ok(s) if s.used != 0 => {
                String::from_utf8_lossy(&s.name[..(s.len as usize).min(MAX_NAME_LEN)]).into_owned()
            }
            _ => "?".into(),
        }
    }
}

impl DropSamples for RingSamples {
    fn fd(&self) -> BorrowedFd<'_> {
        self.ring.as_fd()
    }

    fn drain(&mut self) -> Vec<DropEvent> {
        let mut raw = Vec::new();
        while let Some(item) = self.ring.next() {
            if item.len() >= std::mem::size_of::<DropSample>() {
                // SAFETY: the item holds at least one DropSample written by the program; the
                // read is unaligned-safe and DropSample is plain old data.
                raw.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<DropSample>()) });
            }
        }
        raw.iter()
            .map(|s| {
                let rule = if s.cause >= DROP_CAUSE_RULE_BASE {
                    self.rule_name(s.cause - DROP_CAUSE_RULE_BASE)
                } else {
                    String::new()
                };
                event(s, rule)
            })
            .collect()
    }

    /// A missing pin is not a replacement yet: the datapath is being repaired, and the new
    /// ring buffer appears with it.
    fn replaced(&self) -> bool {
        MapInfo::from_pin(&self.ring_pin).is_ok_and(|i| i.id() != self.ring_id)
    }
}

/// A sample as the log line the nft backend's NFLOG samples also become.
pub fn event(s: &DropSample, rule: String) -> DropEvent {
    let v4 = s.family as u32 == FAMILY_IPV4;
    let addr = |b: &[u8; 16]| -> IpAddr {
        if v4 {
            Ipv4Addr::new(b[0], b[1], b[2], b[3]).into()
        } else {
            Ipv6Addr::from(*b).into()
        }
    };
    let (protocol, ports) = match (s.proto, v4) {
        (6, _) => ("tcp".to_string(), true),
        (17, _) => ("udp".to_string(), true),
        (1, true) => ("icmp".to_string(), true),
        (58, false) => ("icmpv6".to_string(), true),
        (n, _) => (n.to_string(), false),
    };
    let reason = match s.cause {
        DROP_CAUSE_DEFAULT | DROP_CAUSE_EGRESS_DEFAULT => DropReason::DefaultDeny,
        DROP_CAUSE_INVALID | DROP_CAUSE_EGRESS_INVALID => DropReason::Invalid,
        _ => DropReason::Rule,
    };
    DropEvent {
        src: addr(&s.src),
        dst: addr(&s.dst),
        protocol,
        sport: ports.then_some(s.sport),
        dport: ports.then_some(s.dport),
        reason: reason.as_str().to_string(),
        rule,
        ifindex: (s.ifindex != 0).then_some(s.ifindex),
        direction: if s.flags & SAMPLE_EGRESS != 0 {
            Direction::Egress
        } else {
            Direction::Ingress
        },
        audit: s.flags & SAMPLE_AUDIT != 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodewall_common::xdp::FAMILY_IPV6;

    #[test]
    fn samples_become_events() {
        let mut s = DropSample {
            cause: DROP_CAUSE_DEFAULT,
            ifindex: 2,
            sport: 40000,
            dport: 10250,
            family: FAMILY_IPV4 as u8,
            proto: 6,
            ..DropSample::default()
        };
        s.src[..4].copy_from_slice(&[198, 19, 0, 2]);
        s.dst[..4].copy_from_slice(&[198, 18, 16, 2]);
        let e = event(&s, String::new());
        assert_eq!(e.src, "198.19.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(e.dst, "198.18.16.2".parse::<IpAddr>().unwrap());
        assert_eq!(
            (e.protocol.as_str(), e.sport, e.dport),
            ("tcp", Some(40000), Some(10250))
        );
        assert_eq!((e.reason.as_str(), e.ifindex), ("default-deny", Some(2)));
        assert!(!e.audit && e.direction == Direction::Ingress);

        let mut s6 = DropSample {
            cause: DROP_CAUSE_RULE_BASE + 3,
            family: FAMILY_IPV6 as u8,
            proto: 58,
            sport: 128,
            ..DropSample::default()
        };
        s6.src = "fd00:99::2".parse::<Ipv6Addr>().unwrap().octets();
        let e = event(&s6, "deny-x".into());
        assert_eq!(e.src, "fd00:99::2".parse::<IpAddr>().unwrap());
        assert_eq!(
            (e.protocol.as_str(), e.sport, e.dport),
            ("icmpv6", Some(128), Some(0))
        );
        assert_eq!((e.reason.as_str(), e.rule.as_str()), ("rule", "deny-x"));

        let other = DropSample {
            cause: DROP_CAUSE_INVALID,
            proto: 253,
            flags: SAMPLE_AUDIT,
            ..DropSample::default()
        };
        let e = event(&other, String::new());
        assert_eq!((e.protocol.as_str(), e.sport), ("253", None));
        assert_eq!(e.reason, "invalid");
        assert!(e.audit, "the program's audit flag is carried");
    }
}
