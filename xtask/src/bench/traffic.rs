//! Saturating the node's uplink with one frame, repeated, from the client namespace (raw
//! AF_PACKET socket, qdisc bypass, `sendmmsg` batches, one thread pinned to one CPU), and
//! reading the interface and UDP counters on both sides to see what was sent, what reached the
//! node's stack, and how fast. veth delivers to the peer in the sender's context, so the sending
//! rate is bounded by the receive path's cost, filter included.
//!
//! (netsniff-ng's trafgen was the first generator; on this kernel veth pushes back with EAGAIN
//! when an XDP peer's ring is full, which trafgen 0.6.8 treats as fatal mid-run.)

use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::netns::{Netns, Pair, CLIENT_IF};

/// Counters at one instant.
#[derive(Clone, Copy, Default, Debug)]
pub struct Snapshot {
    pub at: Option<Instant>,
    /// Frames the client's veth handed to the node's.
    pub tx: u64,
    /// UDP datagrams that reached the node's stack (delivered, no port, or errors).
    pub delivered: u64,
}

/// Column `field` of `dev`'s line in /proc/net/dev (0 = rx bytes, 1 = rx packets, 3 = rx drop,
/// 8 = tx bytes, 9 = tx packets, 11 = tx drop).
pub fn dev_field(text: &str, dev: &str, field: usize) -> Option<u64> {
    text.lines()
        .find_map(|l| l.trim_start().strip_prefix(&format!("{dev}:")))
        .and_then(|rest| rest.split_whitespace().nth(field))
        .and_then(|v| v.parse().ok())
}

/// The sum of some fields of one `Name:` line pair in `/proc/net/snmp`.
pub fn snmp_sum(text: &str, proto: &str, fields: &[&str]) -> u64 {
    let prefix = format!("{proto}:");
    let mut lines = text.lines().filter(|l| l.starts_with(&prefix));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .filter(|(n, _)| fields.contains(n))
        .filter_map(|(_, v)| v.parse::<u64>().ok())
        .sum()
}

/// Reads a namespace's procfs file from a thread inside it (no process spawn on the hot path).
fn read_in(ns: &Netns, files: &'static [&'static str]) -> anyhow::Result<Vec<String>> {
    ns.spawn(move || {
        files
            .iter()
            .map(|f| {
                std::fs::read_to_string(format!("/proc/thread-self/net/{f}")).map_err(Into::into)
            })
            .collect()
    })
    .join()
    .expect("procfs reader")
}

pub fn snapshot(pair: &Pair) -> anyhow::Result<Snapshot> {
    let client = read_in(&pair.client, &["dev"])?;
    let node = read_in(&pair.node, &["snmp"])?;
    let at = Some(Instant::now());
    // /proc/net/dev: rx bytes packets errs drop fifo frame compressed multicast | tx bytes packets ...
    let tx = dev_field(&client[0], CLIENT_IF, 9).context("client tx counter")?;
    let delivered = snmp_sum(&node[0], "Udp", &["InDatagrams", "NoPorts", "InErrors"]);
    Ok(Snapshot { at, tx, delivered })
}

/// One measurement window.
pub struct Rate {
    /// Frames per second through the node's receive path.
    pub pps: f64,
    /// Share of the sent frames that reached the node's UDP layer.
    pub delivered: f64,
}

/// Frames sent per `sendmmsg` call.
const BATCH: usize = 64;

/// A sender thread in the client namespace: a raw AF_PACKET socket with qdisc bypass, sending
/// one frame in batches with `sendmmsg`, pinned to one CPU, until stopped. EAGAIN and ENOBUFS
/// (veth pushing back while the peer's XDP ring is full) are retried, not fatal: that
/// backpressure is the receive path's rate, which is what is measured.
struct Generator {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<u64>>>,
}

impl Generator {
    fn start(pair: &Pair, frame: &[u8]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, frame) = (Arc::clone(&stop), frame.to_vec());
        let thread = pair.client.spawn(move || send_until(&flag, &frame));
        Self {
            stop,
            thread: Some(thread),
        }
    }

    fn running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops the sender; its error if it failed.
    fn finish(mut self) -> anyhow::Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .expect("joined once")
            .join()
            .expect("sender thread")
    }
}

impl Drop for Generator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn os_err(what: &str) -> anyhow::Error {
    anyhow::anyhow!("{what}: {}", std::io::Error::last_os_error())
}

/// The sender's loop (runs on a thread already inside the client namespace); frames handed to
/// the kernel.
fn send_until(stop: &AtomicBool, frame: &[u8]) -> anyhow::Result<u64> {
    let ifname = std::ffi::CString::new(CLIENT_IF).expect("no NUL");
    // SAFETY: plain libc calls on values owned here; every pointer passed stays alive for the
    // call (the frame, the address and the message array live until the function returns).
    unsafe {
        pin_to_last_cpu();
        let ifindex = libc::if_nametoindex(ifname.as_ptr());
        if ifindex == 0 {
            return Err(os_err("if_nametoindex"));
        }
        // Protocol 0: the socket receives nothing, it only sends.
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
        if fd < 0 {
            return Err(os_err("socket(AF_PACKET)"));
        }
        let fd = std::os::fd::OwnedFd::from_raw_fd(fd);
        let one: libc::c_int = 1;
        let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        if libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_QDISC_BYPASS,
            &one as *const _ as *const libc::c_void,
            len,
        ) != 0
        {
            return Err(os_err("PACKET_QDISC_BYPASS"));
        }
        let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = ethertype.to_be();
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&frame[..6]);
        let mut iov = libc::iovec {
            iov_base: frame.as_ptr() as *mut libc::c_void,
            iov_len: frame.len(),
        };
        let mut msgs: Vec<libc::mmsghdr> = (0..BATCH)
            .map(|_| {
                let mut m: libc::mmsghdr = std::mem::zeroed();
                m.msg_hdr.msg_name = &mut addr as *mut _ as *mut libc::c_void;
                m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
                m.msg_hdr.msg_iov = &mut iov;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        let mut sent = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let n = libc::sendmmsg(fd.as_raw_fd(), msgs.as_mut_ptr(), BATCH as u32, 0);
            if n >= 0 {
                sent += n as u64;
                continue;
            }
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::ENOBUFS) => std::thread::yield_now(),
                _ => return Err(os_err("sendmmsg")),
            }
        }
        Ok(sent)
    }
}

/// Pins the calling thread to the machine's last CPU, so the sender and the receive work veth
/// does in its context stay on one CPU from window to window.
fn pin_to_last_cpu() {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    // SAFETY: a zeroed cpu_set_t with one bit set, applied to the calling thread (pid 0).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpus - 1, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Sends `frame` as fast as one CPU can for `window`, `rounds` times; the best round.
pub fn blast(pair: &Pair, frame: &[u8], window: Duration, rounds: usize) -> anyhow::Result<Rate> {
    let mut best = Rate {
        pps: 0.0,
        delivered: 0.0,
    };
    for _ in 0..rounds {
        let gen = Generator::start(pair, frame);
        // Let the rate settle before the window opens.
        let start = wait_for_traffic(pair, &gen)?;
        std::thread::sleep(window);
        let end = snapshot(pair)?;
        gen.finish()?;
        let secs = end
            .at
            .zip(start.at)
            .map(|(e, s)| (e - s).as_secs_f64())
            .unwrap_or(1.0);
        let sent = end.tx.saturating_sub(start.tx);
        let rate = Rate {
            pps: sent as f64 / secs,
            delivered: end.delivered.saturating_sub(start.delivered) as f64 / sent.max(1) as f64,
        };
        if rate.pps > best.pps {
            best = rate;
        }
    }
    Ok(best)
}

fn wait_for_traffic(pair: &Pair, gen: &Generator) -> anyhow::Result<Snapshot> {
    let first = snapshot(pair)?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        if !gen.running() {
            anyhow::bail!("the frame generator stopped before the window opened");
        }
        let now = snapshot(pair)?;
        if now.tx > first.tx + 1000 {
            return Ok(now);
        }
        if Instant::now() > deadline {
            anyhow::bail!("nothing left {CLIENT_IF} within 5 s");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snmp_fields_are_summed_by_name() {
        let text = "Udp: InDatagrams NoPorts InErrors OutDatagrams\nUdp: 5 7 1 100\nUdpLite: InDatagrams\nUdpLite: 9\n";
        assert_eq!(
            snmp_sum(text, "Udp", &["InDatagrams", "NoPorts", "InErrors"]),
            13
        );
        assert_eq!(snmp_sum(text, "UdpLite", &["InDatagrams"]), 9);
    }

    #[test]
    fn dev_counters_are_read_by_column() {
        let text =
            "Inter-|   Receive\n face |bytes\n   nwa: 100 2 0 0 0 0 0 0 6400 77 0 0 0 0 0 0\n";
        assert_eq!(dev_field(text, "nwa", 9), Some(77));
        assert_eq!(dev_field(text, "nwa", 1), Some(2));
    }
}
