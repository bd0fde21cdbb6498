//! What the node's kernel delivers: raw sockets in the node namespace, one per family and
//! protocol, which receive a copy of every packet of their protocol handed to local delivery
//! (after reassembly, after decapsulation, after every netfilter hook), whether or not a
//! socket listens on its port. A packet a test sends carries a marker ([`crate::craft::marker`]);
//! the observer reports which markers arrived. This is the ground truth the adversarial suite
//! asserts on: not what the firewall says it did, what reached the stack.

use std::collections::HashSet;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use anyhow::bail;

use crate::netns::Netns;

pub struct Delivery {
    socks: Vec<OwnedFd>,
    /// (IPv6, protocol) of each socket.
    kinds: Vec<(bool, i32)>,
}

/// IPv4 protocols watched: ICMP, IPIP, TCP, UDP, IPv6-in-IPv4, GRE, and one unassigned.
const V4: [i32; 7] = [1, 4, 6, 17, 41, 47, 253];
/// IPv6: TCP, UDP, ICMPv6, one unassigned.
const V6: [i32; 4] = [6, 17, 58, 253];

impl Delivery {
    pub fn new(node: &Netns) -> anyhow::Result<Self> {
        let socks = node.enter(|| -> anyhow::Result<Vec<OwnedFd>> {
            let mut out = Vec::new();
            for (family, protos) in [(libc::AF_INET, &V4[..]), (libc::AF_INET6, &V6[..])] {
                for &proto in protos {
                    // SAFETY: plain socket(2); the fd is owned right away.
                    let fd = unsafe {
                        libc::socket(family, libc::SOCK_RAW | libc::SOCK_NONBLOCK, proto)
                    };
                    if fd < 0 {
                        bail!(
                            "raw socket (family {family}, protocol {proto}): {}",
                            std::io::Error::last_os_error()
                        );
                    }
                    // SAFETY: fd is a fresh, valid descriptor.
                    out.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
            Ok(out)
        })??;
        let kinds = V4
            .iter()
            .map(|&p| (false, p))
            .chain(V6.iter().map(|&p| (true, p)))
            .collect();
        Ok(Self { socks, kinds })
    }

    /// Forgets what arrived so far.
    pub fn clear(&self) {
        let _ = self.take();
    }

    /// Every packet delivered since the last call that carries a marker (of `marker(id)`):
    /// `(id, protocol, destination port)`, the port 0 unless TCP or UDP.
    pub fn take(&self) -> HashSet<(u32, i32, u16)> {
        let mut seen = HashSet::new();
        let mut buf = vec![0u8; 65536];
        for (s, &(v6, proto)) in self.socks.iter().zip(&self.kinds) {
            loop {
                // SAFETY: the buffer outlives the call; the socket is non-blocking.
                let n = unsafe {
                    libc::recv(
                        s.as_raw_fd(),
                        buf.as_mut_ptr() as *mut libc::c_void,
                        buf.len(),
                        0,
                    )
                };
                if n <= 0 {
                    break;
                }
                let pkt = &buf[..n as usize];
                // IPv4 raw sockets get the IP header, IPv6 ones start at the upper layer.
                let l4 = if v6 {
                    0
                } else {
                    ((pkt[0] & 0x0f) as usize) * 4
                };
                let dport = match proto {
                    6 | 17 if pkt.len() >= l4 + 4 => u16::from_be_bytes([pkt[l4 + 2], pkt[l4 + 3]]),
                    _ => 0,
                };
                for i in 0..pkt.len().saturating_sub(7) {
                    if &pkt[i..i + 5] == b"nwadv" {
                        let id = u32::from_be_bytes([0, pkt[i + 5], pkt[i + 6], pkt[i + 7]]);
                        seen.insert((id, proto, dport));
                    }
                }
            }
        }
        seen
    }

    /// Waits long enough for what was sent to have been delivered, then [`Self::take`]s.
    pub fn settle(&self) -> HashSet<(u32, i32, u16)> {
        std::thread::sleep(Duration::from_millis(250));
        self.take()
    }
}
