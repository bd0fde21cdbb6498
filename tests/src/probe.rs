//! Batched probes: frames injected from the fabric into the node's uplink, and an observer in
//! the node that records the tag of every probe that got past the firewall.
//!
//! The observer is an nft table of its own (`inet nwtest`) in the node namespace, hooked at
//! prerouting priority -140: after nodewall's nft chain (-150), and long after an XDP program,
//! so it sees exactly what the datapath let through, before routing or DNAT.

use std::collections::HashSet;
use std::net::IpAddr;

use anyhow::Context;
use serde_json::{json, Value};

use crate::inject::Injector;
use crate::packet::{frame, L4, TCP_SYN};
use crate::topology::{node_addr, Topology, FABRIC_MAC, NODE_MAC};

/// Source ports (and ICMP identifiers) unique within the process, so that no probe ever
/// belongs to a connection conntrack has already seen answered (it would be `established`).
pub fn next_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    20000 + (NEXT.fetch_add(1, Ordering::Relaxed) % 40000) as u16
}

/// One inbound packet to the node's uplink address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    pub src: IpAddr,
    pub l4: L4,
}

impl Probe {
    /// A TCP SYN from a source port no other probe of this process uses.
    pub fn tcp(src: IpAddr, dport: u16) -> Self {
        Self {
            src,
            l4: L4::Tcp {
                sport: next_port(),
                dport,
                flags: TCP_SYN,
            },
        }
    }

    pub fn udp(src: IpAddr, dport: u16) -> Self {
        Self {
            src,
            l4: L4::Udp {
                sport: next_port(),
                dport,
            },
        }
    }

    /// An echo request (ICMP or ICMPv6 by the source's family) with a fresh identifier.
    pub fn ping(src: IpAddr) -> Self {
        Self {
            src,
            l4: L4::Icmp {
                icmp_type: if src.is_ipv6() { 128 } else { 8 },
                code: 0,
                id: next_port(),
            },
        }
    }

    pub fn other(src: IpAddr, proto: u8) -> Self {
        Self {
            src,
            l4: L4::Other { proto },
        }
    }

    /// The probe as a line of `nodewall explain --batch`: probes use distinct tuples, so none
    /// belongs to a flow, and `explain` says what such a packet is (new, or invalid for one
    /// no flow can start with).
    pub fn explain_json(&self) -> Value {
        let mut v = json!({ "from": self.src.to_string() });
        match self.l4 {
            L4::Tcp {
                sport,
                dport,
                flags,
            } => {
                v["protocol"] = json!("tcp");
                v["port"] = json!(dport);
                v["source_port"] = json!(sport);
                v["tcp_flags"] = json!(flags.to_string());
            }
            L4::TcpBadOffset { sport, dport } => {
                v["protocol"] = json!("tcp");
                v["port"] = json!(dport);
                v["source_port"] = json!(sport);
                v["state"] = json!("invalid");
            }
            L4::Udp { sport, dport } => {
                v["protocol"] = json!("udp");
                v["port"] = json!(dport);
                v["source_port"] = json!(sport);
            }
            L4::Icmp {
                icmp_type, code, ..
            } => {
                v["protocol"] = json!(if self.src.is_ipv6() { "icmpv6" } else { "icmp" });
                v["icmp_type"] = json!(icmp_type);
                v["icmp_code"] = json!(code);
            }
            L4::Other { proto } => {
                v["protocol"] = json!("other");
                v["proto_number"] = json!(proto);
            }
        }
        v
    }
}

/// Records (source, tag) of what got through. The source is part of the key because the node
/// also receives packets that are not probes while a batch runs (RSTs from peers answering the
/// node's replies, ICMP errors from the fabric for unreachable probe sources), each with an IP
/// ID or flow label of its own that could equal a probe's tag.
const OBSERVER: &str = "
table inet nwtest {
	set seen4 { typeof ip saddr . ip id; flags dynamic; size 65535; }
	set seen6 { typeof ip6 saddr . ip6 flowlabel; flags dynamic; size 65535; }
	chain observe {
		type filter hook prerouting priority -140; policy accept;
		iifname \"eth0\" meta nfproto ipv4 add @seen4 { ip saddr . ip id }
		iifname \"eth0\" meta nfproto ipv6 add @seen6 { ip6 saddr . ip6 flowlabel }
	}
}
";

/// Sends probes into the node and reports which ones the datapath let through.
pub struct Prober<'t> {
    topo: &'t Topology,
    wire: Injector,
    next_tag: u32,
}

impl<'t> Prober<'t> {
    pub fn new(topo: &'t Topology) -> anyhow::Result<Self> {
        topo.node
            .nft_load(OBSERVER.as_bytes())
            .context("installing the observer table")?;
        Ok(Self {
            topo,
            wire: Injector::new(topo)?,
            next_tag: 1,
        })
    }

    fn send_frame(&self, frame: &[u8]) -> anyhow::Result<()> {
        self.wire.send(frame)
    }

    /// Sends every probe once; `result[i]` tells whether probe `i` got through.
    pub fn send(&mut self, probes: &[Probe]) -> anyhow::Result<Vec<bool>> {
        self.clear()?;
        if self.next_tag as usize + probes.len() > 0xffff {
            self.next_tag = 1;
        }
        let mut tags = Vec::with_capacity(probes.len());
        for (i, p) in probes.iter().enumerate() {
            let tag = self.next_tag;
            self.next_tag += 1;
            tags.push(tag);
            let dst = node_addr(p.src.is_ipv6());
            self.send_frame(&frame(FABRIC_MAC, NODE_MAC, p.src, dst, p.l4, tag))?;
            if i % 128 == 127 {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        let (seen4, seen6) = (self.seen("seen4")?, self.seen("seen6")?);
        Ok(probes
            .iter()
            .zip(tags)
            .map(|(p, t)| {
                let seen = if p.src.is_ipv6() { &seen6 } else { &seen4 };
                seen.contains(&(p.src, t))
            })
            .collect())
    }

    fn clear(&self) -> anyhow::Result<()> {
        for set in ["seen4", "seen6"] {
            self.topo
                .node
                .exec("nft", &["flush", "set", "inet", "nwtest", set])?;
        }
        Ok(())
    }

    fn seen(&self, set: &str) -> anyhow::Result<HashSet<(IpAddr, u32)>> {
        let text = self
            .topo
            .node
            .exec("nft", &["-j", "list", "set", "inet", "nwtest", set])?;
        let v: Value = serde_json::from_str(&text).context("parsing nft -j output")?;
        let mut out = HashSet::new();
        for item in v["nftables"].as_array().into_iter().flatten() {
            for e in item["set"]["elem"].as_array().into_iter().flatten() {
                let pair = &e["concat"];
                let addr = pair[0].as_str().and_then(|a| a.parse::<IpAddr>().ok());
                if let (Some(addr), Some(tag)) = (addr, pair[1].as_u64()) {
                    out.insert((addr, tag as u32));
                }
            }
        }
        Ok(out)
    }
}

/// Runs probes and compares with expected pass/drop; probes expected to pass but unseen are
/// sent again (twice at most, with new tags) so that a frame lost by the test network is not
/// mistaken for a drop. Returns the indices whose observed verdict differs.
pub fn mismatches(
    prober: &mut Prober,
    probes: &[Probe],
    expect_pass: &[bool],
) -> anyhow::Result<Vec<usize>> {
    let seen = prober.send(probes)?;
    let mut bad: Vec<usize> = (0..probes.len())
        .filter(|&i| seen[i] != expect_pass[i])
        .collect();
    for _ in 0..2 {
        let retry: Vec<usize> = bad.iter().copied().filter(|&i| expect_pass[i]).collect();
        if retry.is_empty() {
            break;
        }
        let again = prober.send(&retry.iter().map(|&i| probes[i]).collect::<Vec<_>>())?;
        let recovered: HashSet<usize> = retry
            .iter()
            .zip(again)
            .filter(|(_, s)| *s)
            .map(|(&i, _)| i)
            .collect();
        bad.retain(|i| !recovered.contains(i));
    }
    Ok(bad)
}
