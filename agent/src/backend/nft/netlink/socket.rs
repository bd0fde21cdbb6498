//! The netfilter netlink socket: sending one batch in one `sendmsg` (the kernel applies a batch
//! only if it arrives whole) and reading dump replies.

use std::ffi::c_void;
use std::io;
use std::os::fd::RawFd;

use anyhow::{anyhow, bail, Context};
use nftnl::nftnl_sys as sys;
use nftnl::FinalizedBatch;

use super::wrap::FAMILY_INET;

const SOL_NETLINK: i32 = 270;
const NETLINK_CAP_ACK: i32 = 10;
const NETLINK_EXT_ACK: i32 = 11;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLM_F_DUMP_INTR: u16 = 0x10;
const NLMSGERR_ATTR_MSG: u16 = 1;
const RECV_BUF: usize = 1 << 20;

pub struct Socket {
    sock: mnl::Socket,
    seq: u32,
    /// Replies are read into this one buffer: allocating (and zeroing) a megabyte for every
    /// request would cost more than a small request itself.
    buf: AlignedBuf,
}

/// A dump reply was interrupted by a concurrent ruleset change: read again.
#[derive(Debug, thiserror::Error)]
#[error("netlink dump interrupted by a concurrent change")]
pub struct Interrupted;

impl Socket {
    pub fn open() -> anyhow::Result<Self> {
        let sock = mnl::Socket::new(mnl::Bus::Netfilter)
            .context("opening a netfilter netlink socket (needs CAP_NET_ADMIN)")?;
        let s = Self {
            sock,
            seq: std::process::id().wrapping_mul(7919),
            buf: AlignedBuf::new(RECV_BUF),
        };
        // Short acks (header only) and kernel error strings; a large receive buffer so that
        // the acks of a big batch are not dropped.
        s.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1);
        s.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1);
        s.setsockopt(libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 8 << 20);
        Ok(s)
    }

    fn fd(&self) -> RawFd {
        // SAFETY: the socket pointer is valid for our lifetime.
        unsafe { mnl::mnl_sys::mnl_socket_get_fd(self.sock.as_raw_socket()) }
    }

    /// Best effort: a failure only means smaller buffers or fewer details in errors.
    fn setsockopt(&self, level: i32, name: i32, value: i32) {
        // SAFETY: plain setsockopt with an int value.
        unsafe {
            libc::setsockopt(
                self.fd(),
                level,
                name,
                &value as *const i32 as *const c_void,
                std::mem::size_of::<i32>() as u32,
            );
        }
    }

    /// The network namespace's cookie (SO_NETNS_COOKIE, Linux 5.14+): unique for the boot,
    /// never reused by a later namespace.
    pub fn netns_cookie(&self) -> Option<u64> {
        const SO_NETNS_COOKIE: i32 = 71;
        let mut cookie = 0u64;
        let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `cookie`.
        let r = unsafe {
            libc::getsockopt(
                self.fd(),
                libc::SOL_SOCKET,
                SO_NETNS_COOKIE,
                &mut cookie as *mut u64 as *mut c_void,
                &mut len,
            )
        };
        (r == 0 && len as usize == std::mem::size_of::<u64>()).then_some(cookie)
    }

    pub fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends a finalized batch and collects the kernel's verdict. `describe(seq)` names the
    /// object a message with that sequence number carried, for error messages; `echoed` gets
    /// every other message the kernel sends back (the objects echoed for NLM_F_ECHO
    /// requests), with the sequence number of the request.
    pub fn send_batch(
        &mut self,
        batch: &FinalizedBatch,
        describe: impl Fn(u32) -> Option<String>,
        mut echoed: impl FnMut(u32, *const libc::nlmsghdr),
    ) -> anyhow::Result<()> {
        let pages: Vec<&[u8]> = batch.iter().collect();
        let total: usize = pages.iter().map(|p| p.len()).sum();
        self.setsockopt(
            libc::SOL_SOCKET,
            libc::SO_SNDBUFFORCE,
            (total + (1 << 16)).min(i32::MAX as usize) as i32,
        );
        let mut iov: Vec<libc::iovec> = pages
            .iter()
            .map(|p| libc::iovec {
                iov_base: p.as_ptr() as *mut c_void,
                iov_len: p.len(),
            })
            .collect();
        // SAFETY: zeroed sockaddr_nl is valid; we set the family (pid 0 = the kernel).
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: msghdr points at live buffers for the duration of the call.
        let sent = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_name = &mut addr as *mut _ as *mut c_void;
            msg.msg_namelen = std::mem::size_of::<libc::sockaddr_nl>() as u32;
            msg.msg_iov = iov.as_mut_ptr();
            msg.msg_iovlen = iov.len();
            libc::sendmsg(self.fd(), &msg, 0)
        };
        if sent < 0 {
            return Err(io::Error::last_os_error())
                .with_context(|| format!("sending the nftables batch ({total} bytes)"));
        }
        // The kernel processes the whole batch inside sendmsg: every ack and error is queued on
        // the socket by now, so drain it without blocking.
        let mut errors: Vec<(u32, i32, Option<String>)> = Vec::new();
        let buf = &mut self.buf;
        loop {
            // SAFETY: buffer is valid for RECV_BUF bytes.
            let n = unsafe {
                libc::recv(
                    mnl::mnl_sys::mnl_socket_get_fd(self.sock.as_raw_socket()),
                    buf.as_mut_ptr() as *mut c_void,
                    RECV_BUF,
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => break,
                    Some(libc::EINTR) => continue,
                    Some(libc::ENOBUFS) => {
                        bail!("the kernel's replies to the nftables batch overflowed the socket buffer; the outcome is unknown, run `nodewall status`")
                    }
                    _ => return Err(e).context("reading the kernel's replies to the batch"),
                }
            }
            for msg in messages(&buf.bytes()[..n as usize]) {
                match msg {
                    Reply::Error { seq, errno, text } if errno != 0 => {
                        errors.push((seq, errno, text))
                    }
                    Reply::Data { seq, nlh, .. } => echoed(seq, nlh),
                    _ => {}
                }
            }
        }
        if errors.is_empty() {
            return Ok(());
        }
        errors.sort_by_key(|e| e.0);
        let (seq, errno, text) = &errors[0];
        let what = describe(*seq).unwrap_or_else(|| format!("message {seq}"));
        let detail = text
            .as_deref()
            .map(|t| format!(" ({t})"))
            .unwrap_or_default();
        let more = if errors.len() > 1 {
            format!("; {} more message(s) failed after it", errors.len() - 1)
        } else {
            String::new()
        };
        Err(anyhow!(
            "the kernel rejected {what}: {}{detail}{more}; the batch was aborted and the previous ruleset is unchanged",
            io::Error::from_raw_os_error(*errno)
        ))
    }

    /// Sends a GET request with NLM_F_DUMP for `msg_type`, letting `fill` add the filter
    /// attributes, and calls `each` on every reply message.
    pub fn dump(
        &mut self,
        msg_type: i32,
        fill: impl FnOnce(*mut libc::nlmsghdr),
        each: impl FnMut(*const libc::nlmsghdr),
    ) -> anyhow::Result<()> {
        self.exchange(msg_type, libc::NLM_F_DUMP as u16, fill, each)
    }

    /// The ruleset generation id of this network namespace (NFT_MSG_GETGEN): the kernel bumps
    /// it on every committed nftables transaction, by anyone, so an unchanged id means an
    /// unchanged ruleset. One small request, whatever the size of the ruleset.
    pub fn genid(&mut self) -> anyhow::Result<u32> {
        let mut id = None;
        // Not a dump: the kernel answers with one NEWGEN message, then the ack we ask for.
        self.exchange(
            libc::NFT_MSG_GETGEN,
            libc::NLM_F_ACK as u16,
            |_| {},
            |nlh| id = id.or(gen_id(nlh)),
        )
        .context("reading the nftables generation id")?;
        id.ok_or_else(|| anyhow!("the kernel's NEWGEN reply carries no NFTA_GEN_ID"))
    }

    /// Sends one request and feeds `each` the replies with its sequence number, until the
    /// end of the dump or the ack.
    fn exchange(
        &mut self,
        msg_type: i32,
        flags: u16,
        fill: impl FnOnce(*mut libc::nlmsghdr),
        mut each: impl FnMut(*const libc::nlmsghdr),
    ) -> anyhow::Result<()> {
        let seq = self.next_seq();
        let mut req = AlignedBuf::new(8192);
        // SAFETY: the buffer is large enough for a header and a few name attributes.
        let nlh = unsafe {
            sys::nftnl_nlmsg_build_hdr(
                req.as_mut_ptr() as *mut std::ffi::c_char,
                msg_type as u16,
                FAMILY_INET,
                flags,
                seq,
            )
        };
        fill(nlh);
        // SAFETY: nlh points into req; its length field covers what was built.
        let len = unsafe { (*nlh).nlmsg_len } as usize;
        self.sock
            .send(&req.bytes()[..len])
            .context("sending a netlink dump request")?;
        let buf = &mut self.buf;
        let mut interrupted = false;
        loop {
            let n = match self.sock.recv_raw(buf.as_mut_bytes()) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("reading a netlink dump"),
            };
            for msg in messages(&buf.bytes()[..n]) {
                match msg {
                    Reply::Done { seq: s } if s == seq => {
                        if interrupted {
                            return Err(Interrupted.into());
                        }
                        return Ok(());
                    }
                    Reply::Error { seq: s, errno, .. } if s == seq => {
                        if errno == 0 {
                            return Ok(());
                        }
                        return Err(io::Error::from_raw_os_error(errno))
                            .context("netlink request refused");
                    }
                    Reply::Data { seq: s, flags, nlh } if s == seq => {
                        interrupted |= flags & NLM_F_DUMP_INTR != 0;
                        each(nlh);
                    }
                    _ => {}
                }
            }
        }
    }
}

enum Reply {
    Done {
        seq: u32,
    },
    Error {
        seq: u32,
        errno: i32,
        text: Option<String>,
    },
    Data {
        seq: u32,
        flags: u16,
        nlh: *const libc::nlmsghdr,
    },
}

/// Splits a receive buffer into netlink messages.
fn messages(buf: &[u8]) -> Vec<Reply> {
    const HDR: usize = std::mem::size_of::<libc::nlmsghdr>();
    let mut out = Vec::new();
    let mut off = 0;
    while off + HDR <= buf.len() {
        // SAFETY: at least HDR bytes remain; the buffer is 8-byte aligned and offsets are
        // multiples of 4 (NLMSG_ALIGN), enough for nlmsghdr.
        let nlh = unsafe { &*(buf.as_ptr().add(off) as *const libc::nlmsghdr) };
        let len = nlh.nlmsg_len as usize;
        if len < HDR || off + len > buf.len() {
            break;
        }
        let body = &buf[off + HDR..off + len];
        match nlh.nlmsg_type as i32 {
            libc::NLMSG_DONE => out.push(Reply::Done { seq: nlh.nlmsg_seq }),
            libc::NLMSG_ERROR if body.len() >= 4 + HDR => {
                let errno = -i32::from_ne_bytes(body[..4].try_into().unwrap());
                // The original header tells which message failed.
                let orig = &body[4..4 + HDR];
                let seq = u32::from_ne_bytes(orig[8..12].try_into().unwrap());
                let text = if nlh.nlmsg_flags & NLM_F_ACK_TLVS != 0 {
                    ext_ack_text(body)
                } else {
                    None
                };
                out.push(Reply::Error { seq, errno, text });
            }
            _ => out.push(Reply::Data {
                seq: nlh.nlmsg_seq,
                flags: nlh.nlmsg_flags,
                nlh,
            }),
        }
        off += (len + 3) & !3;
    }
    out
}

/// NFTA_GEN_ID of a NEWGEN message (big-endian u32 after the nfgenmsg header).
fn gen_id(nlh: *const libc::nlmsghdr) -> Option<u32> {
    const NFTA_GEN_ID: u16 = 1;
    const HDR: usize = std::mem::size_of::<libc::nlmsghdr>();
    // SAFETY: `messages` only hands out headers whose nlmsg_len bytes lie in the buffer.
    let msg = unsafe {
        if (*nlh).nlmsg_type as i32 != (libc::NFNL_SUBSYS_NFTABLES << 8) | libc::NFT_MSG_NEWGEN {
            return None;
        }
        std::slice::from_raw_parts(nlh as *const u8, (*nlh).nlmsg_len as usize)
    };
    // The 4-byte nfgenmsg, then attributes.
    let (_, v) = attrs(msg.get(HDR + 4..)?).find(|(ty, _)| *ty == NFTA_GEN_ID)?;
    Some(u32::from_be_bytes(v.get(..4)?.try_into().unwrap()))
}

/// NFTA_RULE_HANDLE of a NEWRULE message for a rule of our table (the kernel's echo of a rule
/// we sent with NLM_F_ECHO).
pub fn rule_handle(nlh: *const libc::nlmsghdr) -> Option<u64> {
    const NFTA_RULE_TABLE: u16 = 1;
    const NFTA_RULE_HANDLE: u16 = 3;
    const HDR: usize = std::mem::size_of::<libc::nlmsghdr>();
    // SAFETY: as in `gen_id`.
    let msg = unsafe {
        if (*nlh).nlmsg_type as i32 != (libc::NFNL_SUBSYS_NFTABLES << 8) | libc::NFT_MSG_NEWRULE {
            return None;
        }
        std::slice::from_raw_parts(nlh as *const u8, (*nlh).nlmsg_len as usize)
    };
    let (mut table, mut handle) = (None, None);
    for (ty, v) in attrs(msg.get(HDR + 4..)?) {
        match ty {
            NFTA_RULE_TABLE => table = Some(v),
            NFTA_RULE_HANDLE => handle = Some(u64::from_be_bytes(v.get(..8)?.try_into().ok()?)),
            _ => {}
        }
    }
    let name = table?.split(|&b| b == 0).next()?;
    (name == crate::backend::nft::names::TABLE.as_bytes()).then_some(handle?)
}

/// The netlink attributes in `rest`, as (type, value), up to the first malformed one.
pub(super) fn attrs(mut rest: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if rest.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
        let ty = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        if len < 4 || len > rest.len() {
            return None;
        }
        let value = &rest[4..len];
        rest = &rest[((len + 3) & !3).min(rest.len())..];
        Some((ty, value))
    })
}

/// The kernel's extended-ack message string, when it sent one.
fn ext_ack_text(body: &[u8]) -> Option<String> {
    const HDR: usize = std::mem::size_of::<libc::nlmsghdr>();
    // With NETLINK_CAP_ACK only the original header follows the error code.
    let (_, v) = attrs(body.get(4 + HDR..)?).find(|(ty, _)| *ty == NLMSGERR_ATTR_MSG)?;
    let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
    Some(String::from_utf8_lossy(&v[..end]).into_owned())
}

/// A byte buffer aligned for `nlmsghdr`.
struct AlignedBuf(Vec<u64>);

impl AlignedBuf {
    fn new(bytes: usize) -> Self {
        Self(vec![0u64; bytes.div_ceil(8)])
    }
    fn as_mut_ptr(&mut self) -> *mut u8 {
        self.0.as_mut_ptr() as *mut u8
    }
    fn bytes(&self) -> &[u8] {
        // SAFETY: reinterpreting initialised u64s as bytes.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr() as *const u8, self.0.len() * 8) }
    }
    fn as_mut_bytes(&mut self) -> &mut [u8] {
        // SAFETY: as above, exclusive borrow.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr() as *mut u8, self.0.len() * 8) }
    }
}
