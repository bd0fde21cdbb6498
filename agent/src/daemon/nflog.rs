//! Reading drop samples from an NFLOG group (nfnetlink_log), for the nft backend.
//!
//! The protocol is small enough to speak directly: one `NFULNL_MSG_CONFIG` request binds the
//! group and asks for the first bytes of each packet (headers are all we need), then every
//! `NFULNL_MSG_PACKET` carries the payload and the rule's log prefix. NFLOG groups belong to
//! the network namespace, like the nft table.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::metrics::drops::{parse_nflog_prefix, DropEvent, RateLimit, NFLOG_GROUP};
use crate::metrics::Metrics;

/// Drop sample log lines per second (and burst), on top of the kernel's per-rule limit.
const LOG_RATE: u32 = 10;
const LOG_BURST: u32 = 20;
/// How often to say how many samples the rate limit swallowed.
const SUPPRESSED_REPORT: std::time::Duration = std::time::Duration::from_secs(10);

/// Starts logging drop samples from [`NFLOG_GROUP`], rate-limited; logs and returns if the
/// group cannot be bound (sampling is an aid, never a reason to stop enforcing).
pub fn spawn_sampler(metrics: std::sync::Arc<Metrics>) {
    let sock = match NflogSocket::bind(NFLOG_GROUP) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(group = NFLOG_GROUP, error = %e, "drop sampling disabled: cannot bind the NFLOG group");
            return;
        }
    };
    super::spawn(async move {
        let mut log = SampleLog::new(metrics);
        loop {
            match sock.recv().await {
                Ok(events) => log.record(events),
                Err(e) => {
                    tracing::warn!(error = %e, "drop sampling stopped: NFLOG read failed");
                    return;
                }
            }
        }
    });
}

/// Drop samples -> log lines, rate-limited, each counted as logged or suppressed. Shared by
/// every source of samples (NFLOG here, a backend's own in `daemon::samples`).
pub(super) struct SampleLog {
    limit: RateLimit,
    metrics: std::sync::Arc<Metrics>,
}

impl SampleLog {
    pub(super) fn new(metrics: std::sync::Arc<Metrics>) -> Self {
        Self {
            limit: RateLimit::new(LOG_RATE, LOG_BURST, std::time::Instant::now()),
            metrics,
        }
    }

    pub(super) fn record(&mut self, events: Vec<DropEvent>) {
        let now = std::time::Instant::now();
        for event in events {
            let logged = self.limit.allow(now);
            self.metrics.drop_sampled(logged);
            if logged {
                event.log(self.metrics.audit());
            }
        }
        if let Some(n) = self.limit.take_suppressed(now, SUPPRESSED_REPORT) {
            tracing::info!(suppressed = n, "drop samples not logged (rate limit)");
        }
    }
}

const NFNL_SUBSYS_ULOG: u16 = 4;
const NFULNL_MSG_PACKET: u16 = 0;
const NFULNL_MSG_CONFIG: u16 = 1;
const NFULA_CFG_CMD: u16 = 1;
const NFULA_CFG_MODE: u16 = 2;
const NFULNL_CFG_CMD_BIND: u8 = 1;
const NFULNL_COPY_PACKET: u8 = 2;
const NFULA_IFINDEX_INDEV: u16 = 4;
const NFULA_PAYLOAD: u16 = 9;
const NFULA_PREFIX: u16 = 10;
const NLA_TYPE_MASK: u16 = 0x3fff;
/// Bytes of each packet to copy: IPv6 header (40) + TCP header without options (20), rounded.
const COPY_RANGE: u32 = 96;

pub struct NflogSocket {
    fd: AsyncFd<OwnedFd>,
}

impl NflogSocket {
    /// Binds `group` in the current network namespace. Fails (EBUSY) if another process
    /// already listens to it.
    pub fn bind(group: u16) -> std::io::Result<Self> {
        // SAFETY: plain syscalls on a descriptor we own from here on.
        let fd = unsafe {
            let raw = libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_NETFILTER,
            );
            if raw < 0 {
                return Err(std::io::Error::last_os_error());
            }
            OwnedFd::from_raw_fd(raw)
        };
        // SAFETY: a zeroed sockaddr_nl is valid; nl_pid 0 lets the kernel pick the port id.
        let rc = unsafe {
            let mut addr: libc::sockaddr_nl = std::mem::zeroed();
            addr.nl_family = libc::AF_NETLINK as u16;
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut cmd = Vec::new();
        push_attr(&mut cmd, NFULA_CFG_CMD, &[NFULNL_CFG_CMD_BIND]);
        let mut mode = COPY_RANGE.to_be_bytes().to_vec();
        mode.extend_from_slice(&[NFULNL_COPY_PACKET, 0]);
        push_attr(&mut cmd, NFULA_CFG_MODE, &mode);
        // Blocking while configuring: wait for each acknowledgement.
        request(&fd, group, &cmd)?;
        set_nonblocking(&fd)?;
        // SAFETY: the OwnedFd moves into the AsyncFd and stays open until it is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Self { fd })
    }

    /// Waits for the next batch of samples. Packets logged by others (prefix not ours) are
    /// skipped; kernel buffer overruns (ENOBUFS) only lose samples.
    pub async fn recv(&self) -> std::io::Result<Vec<DropEvent>> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let mut guard = self.fd.readable().await?;
            let read = guard.try_io(|fd| {
                // SAFETY: reading into a buffer of the given length.
                let n =
                    unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match read {
                Ok(Ok(n)) => return Ok(parse_messages(&buf[..n])),
                Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    tracing::debug!("drop samples lost: NFLOG socket buffer overrun");
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

fn set_nonblocking(fd: &OwnedFd) -> std::io::Result<()> {
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Sends one NFULNL_MSG_CONFIG for `group` and waits for its acknowledgement.
fn request(fd: &OwnedFd, group: u16, attrs: &[u8]) -> std::io::Result<()> {
    let mut msg = Vec::with_capacity(20 + attrs.len());
    let len = (16 + 4 + attrs.len()) as u32;
    msg.extend_from_slice(&len.to_ne_bytes());
    msg.extend_from_slice(&((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG).to_ne_bytes());
    msg.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16).to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // seq
    msg.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
                                                // nfgenmsg: family AF_UNSPEC, version 0, resource id = group (big-endian).
    msg.extend_from_slice(&[libc::AF_UNSPEC as u8, 0]);
    msg.extend_from_slice(&group.to_be_bytes());
    msg.extend_from_slice(attrs);
    // SAFETY: sending a buffer of the given length.
    if unsafe { libc::send(fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut buf = [0u8; 4096];
    // SAFETY: reading into a buffer of the given length.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let n = n as usize;
    // NLMSG_ERROR (type 2) with error 0 is the acknowledgement.
    if n >= 20 && u16::from_ne_bytes([buf[4], buf[5]]) == libc::NLMSG_ERROR as u16 {
        let errno = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
        if errno != 0 {
            return Err(std::io::Error::from_raw_os_error(-errno));
        }
        return Ok(());
    }
    Err(std::io::Error::other(
        "NFLOG: unexpected reply to config request",
    ))
}

fn push_attr(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
    out.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(data);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// Every drop sample with our prefix in one datagram of netlink messages.
pub fn parse_messages(mut buf: &[u8]) -> Vec<DropEvent> {
    let mut out = Vec::new();
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < 16 || len > buf.len() {
            break;
        }
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        if kind == (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET && len >= 20 {
            if let Some(ev) = parse_packet(&buf[20..len]) {
                out.push(ev);
            }
        }
        buf = &buf[align4(len).min(buf.len())..];
    }
    out
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// The attributes of one NFULNL_MSG_PACKET (after its nfgenmsg).
fn parse_packet(mut attrs: &[u8]) -> Option<DropEvent> {
    let (mut prefix, mut payload, mut ifindex) = (None, None, None);
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        if len < 4 || len > attrs.len() {
            break;
        }
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]) & NLA_TYPE_MASK;
        let data = &attrs[4..len];
        match kind {
            NFULA_PREFIX => prefix = Some(String::from_utf8_lossy(data).into_owned()),
            NFULA_PAYLOAD => payload = Some(data),
            NFULA_IFINDEX_INDEV if data.len() == 4 => {
                ifindex = Some(u32::from_be_bytes([data[0], data[1], data[2], data[3]]))
            }
            _ => {}
        }
        attrs = &attrs[align4(len).min(attrs.len())..];
    }
    let prefix = prefix?;
    let (reason, rule) = parse_nflog_prefix(&prefix)?;
    let headers = parse_headers(payload?)?;
    Some(DropEvent {
        src: headers.src,
        dst: headers.dst,
        protocol: headers.protocol,
        sport: headers.sport,
        dport: headers.dport,
        reason: reason.to_string(),
        rule: rule.to_string(),
        ifindex,
    })
}

struct Headers {
    src: IpAddr,
    dst: IpAddr,
    protocol: String,
    sport: Option<u16>,
    dport: Option<u16>,
}

/// IPv4/IPv6 addresses and the L4 ports (or ICMP type/code) of a packet's first bytes.
fn parse_headers(p: &[u8]) -> Option<Headers> {
    let (src, dst, proto, l4): (IpAddr, IpAddr, u8, &[u8]) = match p.first()? >> 4 {
        4 if p.len() >= 20 => {
            let ihl = ((p[0] & 0x0f) as usize) * 4;
            let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
            let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
            (src.into(), dst.into(), p[9], p.get(ihl..).unwrap_or(&[]))
        }
        6 if p.len() >= 40 => {
            let src: [u8; 16] = p[8..24].try_into().ok()?;
            let dst: [u8; 16] = p[24..40].try_into().ok()?;
            (
                Ipv6Addr::from(src).into(),
                Ipv6Addr::from(dst).into(),
                p[6],
                &p[40..],
            )
        }
        _ => return None,
    };
    let pair = |b: &[u8]| -> (Option<u16>, Option<u16>) {
        if b.len() >= 4 {
            (
                Some(u16::from_be_bytes([b[0], b[1]])),
                Some(u16::from_be_bytes([b[2], b[3]])),
            )
        } else {
            (None, None)
        }
    };
    let (protocol, (sport, dport)) = match proto {
        6 => ("tcp".to_string(), pair(l4)),
        17 => ("udp".to_string(), pair(l4)),
        // ICMP type and code in the port fields: what `explain` takes too.
        1 | 58 => {
            let name = if proto == 1 { "icmp" } else { "icmpv6" };
            let tc = (l4.first().map(|&t| t as u16), l4.get(1).map(|&c| c as u16));
            (name.to_string(), tc)
        }
        n => (n.to_string(), (None, None)),
    };
    Some(Headers {
        src,
        dst,
        protocol,
        sport,
        dport,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One NFULNL_MSG_PACKET as the kernel sends it, for a TCP SYN 198.18.0.9:40000 ->
    /// 198.18.0.2:10250.
    fn sample_message(prefix: &str) -> Vec<u8> {
        let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0];
        ip.extend_from_slice(&[198, 18, 0, 9, 198, 18, 0, 2]);
        ip.extend_from_slice(&40000u16.to_be_bytes());
        ip.extend_from_slice(&10250u16.to_be_bytes());
        ip.extend_from_slice(&[0; 16]);
        let mut attrs = Vec::new();
        push_attr(&mut attrs, 1, &[0x08, 0x00, 1, 0]); // NFULA_PACKET_HDR
        push_attr(&mut attrs, NFULA_IFINDEX_INDEV, &7u32.to_be_bytes());
        push_attr(&mut attrs, NFULA_PAYLOAD, &ip);
        let mut p = prefix.as_bytes().to_vec();
        p.push(0);
        push_attr(&mut attrs, NFULA_PREFIX, &p);
        let mut msg = Vec::new();
        msg.extend_from_slice(&((20 + attrs.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&(NFNL_SUBSYS_ULOG << 8).to_ne_bytes());
        msg.extend_from_slice(&[0; 10]);
        msg.extend_from_slice(&[libc::AF_INET as u8, 0, 0x6e, 0x77]);
        msg.extend_from_slice(&attrs);
        msg
    }

    #[test]
    fn parses_a_kernel_sample() {
        let mut two = sample_message("nodewall:rule:deny-kubelet");
        two.extend(sample_message("someone-else "));
        let events = parse_messages(&two);
        assert_eq!(events.len(), 1, "foreign prefixes are skipped");
        let e = &events[0];
        assert_eq!(e.src.to_string(), "198.18.0.9");
        assert_eq!(e.dst.to_string(), "198.18.0.2");
        assert_eq!(
            (e.protocol.as_str(), e.sport, e.dport),
            ("tcp", Some(40000), Some(10250))
        );
        assert_eq!(
            (e.reason.as_str(), e.rule.as_str()),
            ("rule", "deny-kubelet")
        );
        assert_eq!(e.ifindex, Some(7));
    }

    #[test]
    fn truncated_input_is_ignored() {
        let msg = sample_message("nodewall:default-deny:");
        for cut in [0, 10, 19, 30, msg.len() - 1] {
            let _ = parse_messages(&msg[..cut]);
        }
        assert!(parse_headers(&[0x45, 0]).is_none());
    }
}
