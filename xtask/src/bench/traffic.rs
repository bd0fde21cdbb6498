//! Saturating the node's uplink with one frame, repeated, from the client namespace with
//! `trafgen` (netsniff-ng: PACKET_TX_RING, qdisc bypass), and reading the interface and UDP
//! counters on both sides to see what was sent, what reached the node's stack, and how fast.
//!
//! trafgen runs as one process pinned to one CPU; veth delivers to the peer in the sender's
//! context, so the sending rate is bounded by the receive path's cost, filter included.

use std::fmt::Write as _;
use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};
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

fn dev_field(text: &str, dev: &str, field: usize) -> Option<u64> {
    text.lines()
        .find_map(|l| l.trim_start().strip_prefix(&format!("{dev}:")))
        .and_then(|rest| rest.split_whitespace().nth(field))
        .and_then(|v| v.parse().ok())
}

/// The sum of some fields of one `Name:` line pair in `/proc/net/snmp`.
pub fn snmp_sum(text: &str, proto: &str, fields: &[&str]) -> u64 {
    let prefix = format!("{proto}:");
    let mut lines = text.lines().filter(|l| l.starts_with(&prefix));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else { return 0 };
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
        files.iter().map(|f| std::fs::read_to_string(format!("/proc/thread-self/net/{f}")).map_err(Into::into)).collect()
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

fn trafgen_config(frame: &[u8]) -> String {
    let mut s = String::from("{ ");
    for (i, b) in frame.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "0x{b:02x}");
    }
    s.push_str(" }\n");
    s
}

struct Generator(Child);

impl Drop for Generator {
    fn drop(&mut self) {
        // SIGINT to trafgen's process group: the parent ignores it and waits for its forked
        // sender, which stops cleanly on it (as on ^C); SIGKILL to the group if it lingers.
        let group = -(self.0.id() as i32);
        // SAFETY: kill(2) of the process group our own child leads.
        unsafe { libc::kill(group, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: as above.
        unsafe { libc::kill(group, libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

/// Sends `frame` as fast as one CPU can for `window`, `rounds` times; the best round.
pub fn blast(pair: &Pair, frame: &[u8], window: Duration, rounds: usize, cfg: &std::path::Path) -> anyhow::Result<Rate> {
    std::fs::write(cfg, trafgen_config(frame))?;
    let mut best = Rate { pps: 0.0, delivered: 0.0 };
    for _ in 0..rounds {
        // Leave the machine's socket-memory sysctls and IRQ affinities alone (`--no-sock-mem`, -Q;
        // 0.6.8 rejects the short -A), no CPU stats (-C), no packet limit (-n 0).
        let child = pair
            .client
            .cmd("trafgen")
            .args(["-o", CLIENT_IF, "-i"])
            .arg(cfg)
            .args(["-P", "1", "--no-sock-mem", "-Q", "-C", "-n", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .context("starting trafgen")?;
        let mut gen = Generator(child);
        // Let the ring fill and the rate settle before the window opens.
        let start = wait_for_traffic(pair, &mut gen)?;
        std::thread::sleep(window);
        let end = snapshot(pair)?;
        drop(gen);
        let secs = end.at.zip(start.at).map(|(e, s)| (e - s).as_secs_f64()).unwrap_or(1.0);
        let sent = end.tx.saturating_sub(start.tx);
        let rate = Rate { pps: sent as f64 / secs, delivered: end.delivered.saturating_sub(start.delivered) as f64 / sent.max(1) as f64 };
        if rate.pps > best.pps {
            best = rate;
        }
    }
    Ok(best)
}

fn wait_for_traffic(pair: &Pair, gen: &mut Generator) -> anyhow::Result<Snapshot> {
    let first = snapshot(pair)?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        if let Some(status) = gen.0.try_wait()? {
            let mut err = String::new();
            if let Some(mut e) = gen.0.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            anyhow::bail!("trafgen exited early ({status}): {}", err.trim());
        }
        let now = snapshot(pair)?;
        if now.tx > first.tx + 1000 {
            return Ok(now);
        }
        if Instant::now() > deadline {
            anyhow::bail!("trafgen sent nothing on {CLIENT_IF} within 5 s");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snmp_fields_are_summed_by_name() {
        let text = "Udp: InDatagrams NoPorts InErrors OutDatagrams\nUdp: 5 7 1 100\nUdpLite: InDatagrams\nUdpLite: 9\n";
        assert_eq!(snmp_sum(text, "Udp", &["InDatagrams", "NoPorts", "InErrors"]), 13);
        assert_eq!(snmp_sum(text, "UdpLite", &["InDatagrams"]), 9);
    }

    #[test]
    fn dev_counters_are_read_by_column() {
        let text = "Inter-|   Receive\n face |bytes\n   nwa: 100 2 0 0 0 0 0 0 6400 77 0 0 0 0 0 0\n";
        assert_eq!(dev_field(text, "nwa", 9), Some(77));
        assert_eq!(dev_field(text, "nwa", 1), Some(2));
    }
}
