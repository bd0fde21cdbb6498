//! Frames an interface sends or receives, as an AF_PACKET socket bound to it sees them: what
//! the node forwards to its local pod (`cni0`) is what got past the firewall, and what reaches
//! the fabric (`n0`) is what the node sent out. Packets are recognised by their marker
//! ([`crate::craft::marker`]).

use std::collections::HashSet;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::netns::Netns;

pub struct Capture {
    sock: OwnedFd,
    seen: HashSet<u32>,
}

impl Capture {
    /// Captures on `dev` of `ns`, both directions.
    pub fn new(ns: &Netns, dev: &str) -> anyhow::Result<Self> {
        let dev = dev.to_string();
        let sock = ns.enter(move || -> anyhow::Result<OwnedFd> {
            let proto = (libc::ETH_P_ALL as u16).to_be() as i32;
            // SAFETY: plain socket(2); the fd is owned right away.
            let fd = unsafe {
                libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_NONBLOCK, proto)
            };
            if fd < 0 {
                bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
            }
            // SAFETY: fd is fresh and valid.
            let sock = unsafe { OwnedFd::from_raw_fd(fd) };
            let name = std::ffi::CString::new(dev.clone())?;
            // SAFETY: NUL-terminated name.
            let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) } as i32;
            if ifindex == 0 {
                bail!("no interface {dev}");
            }
            // SAFETY: zeroed sockaddr_ll is valid; family, protocol and index set below.
            let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_protocol = proto as u16;
            addr.sll_ifindex = ifindex;
            // SAFETY: a valid sockaddr_ll of the stated size.
            let rc = unsafe {
                libc::bind(
                    sock.as_raw_fd(),
                    &addr as *const _ as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if rc != 0 {
                bail!("binding to {dev}: {}", std::io::Error::last_os_error());
            }
            Ok(sock)
        })??;
        Ok(Self {
            sock,
            seen: HashSet::new(),
        })
    }

    fn drain(&mut self) {
        let mut buf = vec![0u8; 65536];
        loop {
            // SAFETY: the buffer outlives the call; the socket is non-blocking.
            let n = unsafe {
                libc::recv(
                    self.sock.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    0,
                )
            };
            if n <= 0 {
                return;
            }
            let f = &buf[..n as usize];
            for i in 0..f.len().saturating_sub(7) {
                if &f[i..i + 5] == b"nwadv" {
                    self.seen
                        .insert(u32::from_be_bytes([0, f[i + 5], f[i + 6], f[i + 7]]));
                }
            }
        }
    }

    /// Which of `ids` have gone by so far.
    pub fn seen_of(&mut self, ids: &[u32]) -> Vec<u32> {
        self.drain();
        ids.iter()
            .copied()
            .filter(|id| self.seen.contains(id))
            .collect()
    }

    /// Whether marker `id` has gone by, waiting up to `wait` for it.
    pub fn saw(&mut self, id: u32, wait: Duration) -> bool {
        let until = Instant::now() + wait;
        loop {
            self.drain();
            if self.seen.contains(&id) {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}
