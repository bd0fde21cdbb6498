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
