//! Reading drop samples from an NFLOG group (`nfnetlink_log`), for the nft backend.
//!
//! Through `netlink-packet-netfilter`: one `NFULNL_MSG_CONFIG` request binds the group and
//! asks for the first bytes of each packet (headers are all we need), then every
//! `NFULNL_MSG_PACKET` carries the payload and the rule's log prefix. Only the packet's own
//! IP and L4 headers are read here. NFLOG groups belong to the network namespace, like the
//! nft table.

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_netfilter::nflog::{
    config_request, ConfigCmd, ConfigMode, ConfigNla, PacketNla, Timeout, ULogMessage,
};
use netlink_packet_netfilter::{NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily};
use netlink_sys::constants::NETLINK_NETFILTER;
use netlink_sys::{AsyncSocket, AsyncSocketExt, TokioSocket};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::hub::Hub;
use crate::backend::nft::nflog::{parse_nflog_prefix, NFLOG_GROUP};
use crate::backend::{Direction, DropEvent};
use crate::metrics::drops::{self, RateLimit};
use crate::metrics::Metrics;

/// Drop sample log lines per second (and burst), on top of the kernel's per-rule limit.
const LOG_RATE: u32 = 10;
const LOG_BURST: u32 = 20;
/// How often to say how many samples the rate limit swallowed.
const SUPPRESSED_REPORT: std::time::Duration = std::time::Duration::from_secs(10);

/// Starts logging drop samples from [`NFLOG_GROUP`], rate-limited; logs and returns if the
/// group cannot be bound (sampling is an aid, never a reason to stop enforcing).
pub fn spawn_sampler(metrics: std::sync::Arc<Metrics>, hub: std::sync::Arc<Hub>) {
    let mut sock = match NflogSocket::bind(NFLOG_GROUP) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(group = NFLOG_GROUP, error = %e, "drop sampling disabled: cannot bind the NFLOG group");
            return;
        }
    };
    super::spawn(async move {
        let mut log = SampleLog::new(metrics, hub);
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

/// Drop samples -> the [`Hub`] (live stream, flow log, top-N) and log lines, rate-limited,
/// each counted as logged or suppressed. Shared by every source of samples (NFLOG here, a
/// backend's own in `daemon::samples`).
pub(super) struct SampleLog {
    limit: RateLimit,
    metrics: std::sync::Arc<Metrics>,
    hub: std::sync::Arc<Hub>,
}

impl SampleLog {
    pub(super) fn new(metrics: std::sync::Arc<Metrics>, hub: std::sync::Arc<Hub>) -> Self {
        Self {
            limit: RateLimit::new(LOG_RATE, LOG_BURST, std::time::Instant::now()),
            metrics,
            hub,
        }
    }

    pub(super) fn record(&mut self, events: Vec<DropEvent>) {
        let now = std::time::Instant::now();
        for event in events {
            self.hub.publish(&event);
            let logged = self.limit.allow(now);
            self.metrics.drop_sampled(logged);
            if logged {
                drops::log(&event, event.audit);
            }
        }
        if let Some(n) = self.limit.take_suppressed(now, SUPPRESSED_REPORT) {
            tracing::info!(suppressed = n, "drop samples not logged (rate limit)");
        }
    }
}

/// Bytes of each packet to copy: IPv6 header (40) + TCP header without options (20), rounded.
const COPY_RANGE: u32 = 96;
/// The kernel holds samples until it has [`FLUSH_BATCH`] of them or [`FLUSH_HUNDREDTHS`]
/// hundredths of a second have passed since the first. Its defaults (100 samples, 1 s) made a
/// sample up to a second late, and `nodewall drops` is read live; 50 ms still batches a burst.
const FLUSH_HUNDREDTHS: u32 = 5;
const FLUSH_BATCH: u32 = 32;

pub struct NflogSocket {
    sock: TokioSocket,
}

impl NflogSocket {
    /// Binds `group` in the current network namespace. Fails (EBUSY) if another process
    /// already listens to it.
    pub fn bind(group: u16) -> std::io::Result<Self> {
        let mut sock = TokioSocket::new(NETLINK_NETFILTER)?;
        sock.socket_mut().bind_auto()?;
        // Blocking while configuring: wait for the acknowledgement.
        sock.socket_mut().set_non_blocking(false)?;
        let request = config_request(
            NetfilterProtoFamily::Unspec,
            group,
            vec![
                ConfigCmd::Bind.into(),
                ConfigMode::new_packet(COPY_RANGE).into(),
                ConfigNla::Timeout(Timeout::new(FLUSH_HUNDREDTHS)),
                ConfigNla::QThresh(FLUSH_BATCH),
            ],
        );
        let mut buf = vec![0; request.header.length as usize];
        request.serialize(&mut buf);
        sock.socket_ref().send(&buf, 0)?;
        let mut reply = vec![0u8; 4096];
        let n = sock.socket_ref().recv(&mut &mut reply[..], 0)?;
        match NetlinkMessage::<NetfilterMessage>::deserialize(&reply[..n]).map(|m| m.payload) {
            Ok(NetlinkPayload::Error(e)) => match e.code {
                None => {}
                Some(code) => return Err(std::io::Error::from_raw_os_error(-code.get())),
            },
            _ => {
                return Err(std::io::Error::other(
                    "NFLOG: unexpected reply to config request",
                ))
            }
        }
        sock.socket_mut().set_non_blocking(true)?;
        Ok(Self { sock })
    }

    /// Waits for the next batch of samples. Packets logged by others (prefix not ours) are
    /// skipped; kernel buffer overruns (ENOBUFS) only lose samples.
    pub async fn recv(&mut self) -> std::io::Result<Vec<DropEvent>> {
        let mut buf = Vec::with_capacity(64 * 1024);
        loop {
            buf.clear();
            match self.sock.recv(&mut buf).await {
                Ok(()) => return Ok(parse_messages(&buf)),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    tracing::debug!("drop samples lost: NFLOG socket buffer overrun");
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Every drop sample with our prefix in one datagram of netlink messages.
pub fn parse_messages(mut buf: &[u8]) -> Vec<DropEvent> {
    let mut out = Vec::new();
    while let Ok(msg) = NetlinkMessage::<NetfilterMessage>::deserialize(buf) {
        let len = msg.header.length as usize;
        if let NetlinkPayload::InnerMessage(NetfilterMessage {
            inner: NetfilterMessageInner::ULog(ULogMessage::Packet(nlas)),
            ..
        }) = msg.payload
        {
            out.extend(parse_packet(nlas));
        }
        if len == 0 || len > buf.len() {
            break;
        }
        buf = &buf[((len + 3) & !3).min(buf.len())..];
    }
    out
}

/// One `NFULNL_MSG_PACKET`'s attributes as a drop event, if it carries our prefix.
fn parse_packet(nlas: Vec<PacketNla>) -> Option<DropEvent> {
    let (mut prefix, mut payload, mut ifindex) = (None, None, None);
    for nla in nlas {
        match nla {
            PacketNla::Prefix(p) => prefix = Some(p.to_string_lossy().into_owned()),
            PacketNla::Payload(p) => payload = Some(p),
            PacketNla::IfIndexInDev(i) => ifindex = Some(i),
            _ => {}
        }
    }
    let prefix = prefix?;
    let tagged = parse_nflog_prefix(&prefix)?;
    let headers = parse_headers(&payload?)?;
    Some(DropEvent {
        src: headers.src,
        dst: headers.dst,
        protocol: headers.protocol,
        sport: headers.sport,
        dport: headers.dport,
        reason: tagged.reason.to_string(),
        rule: tagged.rule.to_string(),
        ifindex,
        direction: if tagged.egress {
            Direction::Egress
        } else {
            Direction::Ingress
        },
        audit: tagged.audit,
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

    const NFNL_SUBSYS_ULOG: u16 = 4;
    const NFULA_IFINDEX_INDEV: u16 = 4;
    const NFULA_PAYLOAD: u16 = 9;
    const NFULA_PREFIX: u16 = 10;

    fn push_attr(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
        out.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(data);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
    }

    /// One `NFULNL_MSG_PACKET` as the kernel sends it, for a TCP SYN 198.18.0.9:40000 ->
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
        assert!(!e.audit);
        let audit = parse_messages(&sample_message("nodewall:audit:default-deny:"));
        assert!(audit[0].audit, "{audit:?}");
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
