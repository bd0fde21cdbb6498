//! Frames put on the node's uplink from the other end of its wire (the fabric's `n0`), with
//! an AF_PACKET socket: a test sends what an attacker on the link could, any source address
//! and any header stack, and the node receives it as from the network.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::bail;

use crate::topology::{Topology, FABRIC_TO_NODE, NODE_MAC};

pub struct Injector {
    sock: OwnedFd,
    ifindex: i32,
}

impl Injector {
    pub fn new(topo: &Topology) -> anyhow::Result<Self> {
        let (sock, ifindex) = topo.fabric.enter(|| -> anyhow::Result<(OwnedFd, i32)> {
            // SAFETY: plain socket(2); the fd is owned right away.
            let fd = unsafe {
                libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_RAW,
                    (libc::ETH_P_ALL as u16).to_be() as i32,
                )
            };
            if fd < 0 {
                bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
            }
            // SAFETY: fd is a fresh, valid descriptor.
            let sock = unsafe { OwnedFd::from_raw_fd(fd) };
            let name = std::ffi::CString::new(FABRIC_TO_NODE).unwrap();
            // SAFETY: NUL-terminated name.
            let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) } as i32;
            if ifindex == 0 {
                bail!("no interface {FABRIC_TO_NODE} in the fabric");
            }
            Ok((sock, ifindex))
        })??;
        Ok(Self { sock, ifindex })
    }

    /// Sends one whole Ethernet frame (addressed to the node's MAC by the caller).
    pub fn send(&self, frame: &[u8]) -> anyhow::Result<()> {
        // SAFETY: zeroed sockaddr_ll is valid; the fields we need are set below.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = self.ifindex;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&NODE_MAC);
        // SAFETY: the frame and address outlive the call.
        let n = unsafe {
            libc::sendto(
                self.sock.as_raw_fd(),
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
                &addr as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            bail!("sending a frame: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Whole IP packets sent from inside a namespace through its IP stack (`IPPROTO_RAW`, the
/// header as given): routed, and seen by every hook and program on the way out, as the
/// namespace's own traffic would be.
pub struct RawIp {
    v4: OwnedFd,
    v6: OwnedFd,
}

impl RawIp {
    pub fn new(ns: &crate::netns::Netns) -> anyhow::Result<Self> {
        let (v4, v6) = ns.enter(|| -> anyhow::Result<(OwnedFd, OwnedFd)> {
            let open = |family: i32| -> anyhow::Result<OwnedFd> {
                // SAFETY: plain socket(2); the fd is owned right away.
                let fd = unsafe { libc::socket(family, libc::SOCK_RAW, libc::IPPROTO_RAW) };
                if fd < 0 {
                    bail!("raw IP socket: {}", std::io::Error::last_os_error());
                }
                // SAFETY: fd is fresh and valid.
                Ok(unsafe { OwnedFd::from_raw_fd(fd) })
            };
            Ok((open(libc::AF_INET)?, open(libc::AF_INET6)?))
        })??;
        Ok(Self { v4, v6 })
    }

    /// Sends one IP packet (IPv4 or IPv6 by its first byte) to its destination address.
    pub fn send(&self, ip: &[u8]) -> anyhow::Result<()> {
        if !self.offer(ip)? {
            bail!(
                "sending a raw IP packet: {}",
                std::io::Error::from_raw_os_error(libc::EPERM)
            );
        }
        Ok(())
    }

    /// [`Self::send`], but a packet the namespace's own netfilter drops on its way out (the
    /// send fails with EPERM) is `false`, not an error.
    pub fn offer(&self, ip: &[u8]) -> anyhow::Result<bool> {
        let n = if ip[0] >> 4 == 6 {
            // SAFETY: zeroed sockaddr_in6 is valid; family and address set below.
            let mut a: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            a.sin6_family = libc::AF_INET6 as u16;
            a.sin6_addr.s6_addr.copy_from_slice(&ip[24..40]);
            // SAFETY: the packet and address outlive the call.
            unsafe {
                libc::sendto(
                    self.v6.as_raw_fd(),
                    ip.as_ptr().cast(),
                    ip.len(),
                    0,
                    &a as *const _ as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_in6>() as u32,
                )
            }
        } else {
            // SAFETY: zeroed sockaddr_in is valid; family and address set below.
            let mut a: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            a.sin_family = libc::AF_INET as u16;
            a.sin_addr.s_addr = u32::from_ne_bytes([ip[16], ip[17], ip[18], ip[19]]);
            // SAFETY: as above.
            unsafe {
                libc::sendto(
                    self.v4.as_raw_fd(),
                    ip.as_ptr().cast(),
                    ip.len(),
                    0,
                    &a as *const _ as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_in>() as u32,
                )
            }
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EPERM) {
                return Ok(false);
            }
            bail!("sending a raw IP packet: {e}");
        }
        Ok(true)
    }
}
