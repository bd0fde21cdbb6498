//! Saturating the node's uplink with one frame, repeated, from the client namespace (raw
//! AF_PACKET socket, qdisc bypass, `sendmmsg` batches, one thread pinned to the last CPU), and
//! reading the interface and UDP counters on both sides to see what was sent, what reached the
//! node's stack, and how fast. The node's receive path (XDP, stack, netfilter) runs on a CPU of
//! its own, in the node veth's threaded NAPI kthread (see [`Receiver`]), whose CPU time per
//! frame is the datapath's cost.
//!
//! (netsniff-ng's trafgen was the first generator; on this kernel veth pushes back with EAGAIN
//! when an XDP peer's ring is full, which trafgen 0.6.8 treats as fatal mid-run.)

use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::netns::{Netns, Pair, CLIENT_IF, NODE_IF};

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
#[derive(Clone, Copy, Default, Debug)]
pub struct Rate {
    /// Frames per second through the node's receive path.
    pub pps: f64,
    /// Share of the sent frames that reached the node's UDP layer.
    pub delivered: f64,
    /// Share of the window the receive CPU spent in the node veth's NAPI kthread (near 1: the
    /// receive path is the bottleneck; well below: the generator is).
    pub rx_busy: f64,
    /// Receive-CPU time per frame, in ns: the datapath's cost, whoever is the bottleneck.
    pub rx_ns: f64,
    /// Frames per time the kthread got the CPU: few means much of its time is waking up.
    pub per_wakeup: f64,
}

/// The CPU the node's receive path runs on: not the generator's (the last one).
const RECEIVE_CPU: usize = 0;

/// How long the node veth's NAPI waits, once its ring is drained, before polling again: the
/// kernel's software interrupt coalescing (`gro_flush_timeout` with `napi_defer_hard_irqs`), as
/// a loaded NIC would batch. Without it the kthread of a cheap filter outruns the generator,
/// sleeps after every few frames and its wake-ups, not the filter, dominate its CPU time. The
/// veth ring (256 frames) holds more than this at the generator's rate, so nothing is lost.
const COALESCE_NS: u32 = 200_000;

/// The node veth's receive path moved off the generator's CPU. veth otherwise delivers in the
/// sender's context (netif_rx backlog, or NAPI scheduled on the sender's CPU once XDP is
/// attached), so the generator and the receive path would share one CPU and every cheap drop
/// would saturate at the generator's own cost. With GRO on, veth receives through NAPI for every
/// filter alike, also without XDP (since 5.13); threaded NAPI runs that poll (veth ring, XDP,
/// GRO, IP, netfilter, UDP) in a kthread `napi/<dev>-<id>`, pinned here to [`RECEIVE_CPU`].
/// TSO is turned off on the client's side because veth only hands TSO-capable senders' frames
/// to NAPI when they are GRO candidates, which raw frames are not.
pub struct Receiver {
    pid: i32,
    comm: String,
}

impl Receiver {
    pub fn on_own_cpu(pair: &Pair) -> anyhow::Result<Self> {
        if std::thread::available_parallelism().map_or(1, |n| n.get()) <= RECEIVE_CPU + 1 {
            anyhow::bail!("needs two CPUs: one for the generator, one for the receive path");
        }
        pair.client
            .run("ethtool", &["-K", CLIENT_IF, "tso", "off"])?;
        pair.node.run("ethtool", &["-K", NODE_IF, "gro", "on"])?;
        let before = napi_threads()?;
        // `ip netns exec` mounts the namespace's own sysfs, where its devices are.
        super::netns::output(std::process::Command::new("ip").args([
            "netns",
            "exec",
            pair.node.name(),
            "sh",
            "-c",
            &format!(
                "cd /sys/class/net/{NODE_IF} && echo {COALESCE_NS} > gro_flush_timeout && \
                 echo 1 > napi_defer_hard_irqs && echo 1 > threaded"
            ),
        ]))?;
        let mut new: Vec<_> = napi_threads()?
            .into_iter()
            .filter(|t| !before.contains(t))
            .collect();
        let (pid, comm) = match new.len() {
            1 => new.remove(0),
            n => anyhow::bail!("expected one new NAPI kthread for {NODE_IF}, found {n}"),
        };
        // SAFETY: a zeroed cpu_set_t with one bit set, applied to a kthread this pair created.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(RECEIVE_CPU, &mut set);
            if libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(os_err("pinning the NAPI kthread"));
            }
        }
        Ok(Self { pid, comm })
    }

    /// CPU time the kthread has run, in ns (scheduler runtime, not tick-sampled), and the
    /// number of times it got the CPU.
    fn runtime_ns(&self) -> anyhow::Result<(u64, u64)> {
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", self.pid)).unwrap_or_default();
        if comm.trim() != self.comm {
            anyhow::bail!(
                "the NAPI kthread {} is gone (XDP attach re-created it?)",
                self.comm
            );
        }
        let stat = std::fs::read_to_string(format!("/proc/{}/schedstat", self.pid))?;
        let field = |i| stat.split_whitespace().nth(i).and_then(|v| v.parse().ok());
        field(0).zip(field(2)).context("/proc/PID/schedstat")
    }
}

/// The machine's NAPI kthreads of devices named like the node's uplink: (pid, comm).
fn napi_threads() -> anyhow::Result<Vec<(i32, String)>> {
    let prefix = format!("napi/{NODE_IF}-");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let Some(pid) = entry?
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) {
            if comm.starts_with(&prefix) {
                found.push((pid, comm.trim().to_string()));
            }
        }
    }
    Ok(found)
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

/// Pins the calling thread to the machine's last CPU, away from the receive path's
/// ([`RECEIVE_CPU`]), and on the same CPU from window to window.
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

/// Sends `frame` as fast as one CPU can for `window`: its rate and receive-CPU cost (the
/// caller keeps the best of several windows).
pub fn blast(pair: &Pair, rx: &Receiver, frame: &[u8], window: Duration) -> anyhow::Result<Rate> {
    let gen = Generator::start(pair, frame);
    // Let the rate settle before the window opens.
    let start = wait_for_traffic(pair, &gen)?;
    let rx_start = rx.runtime_ns()?;
    std::thread::sleep(window);
    let end = snapshot(pair)?;
    let rx_end = rx.runtime_ns()?;
    gen.finish()?;
    let secs = end
        .at
        .zip(start.at)
        .map(|(e, s)| (e - s).as_secs_f64())
        .unwrap_or(1.0);
    let sent = end.tx.saturating_sub(start.tx);
    let busy = rx_end.0.saturating_sub(rx_start.0) as f64;
    let slices = rx_end.1.saturating_sub(rx_start.1);
    let rate = Rate {
        pps: sent as f64 / secs,
        delivered: end.delivered.saturating_sub(start.delivered) as f64 / sent.max(1) as f64,
        rx_busy: busy / 1e9 / secs,
        rx_ns: busy / sent.max(1) as f64,
        per_wakeup: sent as f64 / slices.max(1) as f64,
    };
    // Sanity: if the kthread did not carry the frames, the receive path is still on the
    // generator's CPU and the figures would mean nothing.
    if sent > 10_000 && rate.rx_busy < 0.05 {
        anyhow::bail!(
            "the NAPI kthread ran {:.0}% of the window for {sent} frames: the receive path is not on it",
            rate.rx_busy * 100.0
        );
    }
    Ok(rate)
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
