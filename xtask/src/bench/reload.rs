//! Section 5: re-applying the policy under load must not cost established flows a packet. A TCP
//! download the node opened (inbound data is return traffic) and a rule-allowed UDP stream with
//! sequence numbers run through the node's uplink while the policy is re-applied, alternating
//! between two versions that differ by one CIDR; then the same streams run as long again with
//! no re-apply, as the baseline.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::netns::{Netns, Pair, CLIENT_IF, CLIENT_V4, NODE_IF, NODE_V4};
use super::nodewall::Backend;
use super::peers;
use super::report::{Section, Table, INFO};
use super::traffic::{dev_field, snmp_sum};
use super::workload::Workload;
use super::Ctx;

const TCP_PORT: u16 = 5001;
const UDP_PORT: u16 = 5002;
/// The TCP sender is paced so the streams do not starve the re-applies on two shared cores.
const TCP_BYTES_PER_SEC: f64 = 20e6;
const UDP_PPS: u64 = 10_000;

/// The stream allowance that both policy versions carry in front of the workload's rules.
fn stream_rules() -> String {
    format!(
        "  - name: udp-stream\n    action: allow\n    protocol: udp\n    ports: [\"{UDP_PORT}\"]\n    from: [\"{CLIENT_V4}/32\"]\n"
    )
}

#[derive(Default, Debug)]
struct Phase {
    secs: f64,
    applies: usize,
    apply_ms_mean: f64,
    tcp_bytes: u64,
    /// Segments the client's TCP sent (retransmissions included) and the node's TCP received.
    tcp_sent: u64,
    tcp_arrived: u64,
    /// Retransmissions, shown for context: tail-loss probes and spurious timeouts on a busy
    /// machine retransmit without any loss, so they are not the loss figure.
    tcp_retrans: u64,
    udp_sent: u64,
    /// Datagrams that reached the node's UDP layer (delivered, or dropped at a full socket
    /// buffer, which is the receiver's doing, not the datapath's).
    udp_arrived: u64,
    udp_rcvbuf_errors: u64,
    /// Frames the veth pair itself dropped (the client side's tx drops, e.g. a full XDP ring
    /// on the node side, plus the node side's rx drops): part of `lost`, shown to tell where.
    veth_drops: u64,
}

impl Phase {
    /// Packets the datapath lost between the two namespaces: sent by one side's transport
    /// layer and never seen by the other's.
    fn lost(&self) -> u64 {
        self.tcp_sent.saturating_sub(self.tcp_arrived)
            + self.udp_sent.saturating_sub(self.udp_arrived)
    }
    fn packets(&self) -> u64 {
        self.tcp_sent + self.udp_sent
    }
}

/// The two streams, running until `stop`.
struct Streams {
    stop: Arc<AtomicBool>,
    tcp_received: Arc<AtomicU64>,
    udp_sent: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<anyhow::Result<()>>>,
}

fn start_streams(pair: &Pair) -> anyhow::Result<Streams> {
    let stop = Arc::new(AtomicBool::new(false));
    let (tcp_received, udp_sent) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut threads = Vec::new();
    // Client side: TCP server that streams to whoever connects (the node), paced.
    let listener = pair
        .client
        .spawn(|| Ok(TcpListener::bind((CLIENT_V4, TCP_PORT))?))
        .join()
        .expect("bind")?;
    {
        let stop = Arc::clone(&stop);
        threads.push(pair.client.spawn(move || {
            let mut s = accept_within(&listener, Duration::from_secs(5))?;
            // A filter that stalls the flow makes the run fail instead of hang.
            s.set_write_timeout(Some(Duration::from_secs(5)))?;
            let chunk = vec![0x5au8; 64 * 1024];
            let (start, mut sent) = (Instant::now(), 0u64);
            while !stop.load(Ordering::Relaxed) {
                if sent as f64 > start.elapsed().as_secs_f64() * TCP_BYTES_PER_SEC {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                }
                s.write_all(&chunk)?;
                sent += chunk.len() as u64;
            }
            Ok(())
        }));
    }
    // Node side: the download (established inbound traffic), and the UDP sink.
    {
        let received = Arc::clone(&tcp_received);
        threads.push(pair.node.spawn(move || {
            let mut s = TcpStream::connect_timeout(
                &format!("{CLIENT_V4}:{TCP_PORT}").parse()?,
                Duration::from_secs(5),
            )?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = s.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                received.fetch_add(n as u64, Ordering::Relaxed);
            }
        }));
    }
    let sink = pair
        .node
        .spawn(|| Ok(UdpSocket::bind((NODE_V4, UDP_PORT))?))
        .join()
        .expect("bind")?;
    sink.set_read_timeout(Some(Duration::from_millis(200)))?;
    grow_receive_buffer(&sink)?;
    {
        let stop = Arc::clone(&stop);
        threads.push(pair.node.spawn(move || {
            let mut buf = [0u8; 64];
            // Keep receiving a little after the stop so datagrams in flight are counted.
            let mut quiet_since: Option<Instant> = None;
            loop {
                // The kernel counts arrivals; the sink only keeps the buffer drained.
                match sink.recv(&mut buf) {
                    Ok(_) => {}
                    Err(_) if stop.load(Ordering::Relaxed) => {
                        if quiet_since.get_or_insert_with(Instant::now).elapsed()
                            > Duration::from_millis(300)
                        {
                            return Ok(());
                        }
                    }
                    Err(_) => {}
                }
            }
        }));
    }
    {
        let (stop, sent) = (Arc::clone(&stop), Arc::clone(&udp_sent));
        threads.push(pair.client.spawn(move || {
            let s = UdpSocket::bind((CLIENT_V4, 0))?;
            s.connect((NODE_V4, UDP_PORT))?;
            let start = Instant::now();
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let due = (start.elapsed().as_secs_f64() * UDP_PPS as f64) as u64;
                while seq < due {
                    s.send(&seq.to_be_bytes())?;
                    seq += 1;
                }
                sent.store(seq, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(())
        }));
    }
    Ok(Streams {
        stop,
        tcp_received,
        udp_sent,
        threads,
    })
}

/// 16 MiB of receive buffer (SO_RCVBUFFORCE: past rmem_max, as root), so the sink thread losing
/// the CPU to a re-apply on two shared cores does not show up as lost datagrams.
fn grow_receive_buffer(s: &UdpSocket) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd;
    let size: libc::c_int = 16 << 20;
    // SAFETY: setsockopt on a valid socket with a correctly sized int option.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            &size as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        anyhow::bail!("SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

fn accept_within(listener: &TcpListener, limit: Duration) -> anyhow::Result<TcpStream> {
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + limit;
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false)?;
                return Ok(s);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => anyhow::bail!("the node's TCP connection never arrived: {e}"),
        }
    }
}

/// /proc/net/snmp and /proc/net/dev of a namespace.
fn counters(ns: &Netns) -> anyhow::Result<(String, String)> {
    Ok((ns.proc_net("snmp")?, ns.proc_net("dev")?))
}

/// Runs the streams while `during` runs; fills in the traffic part of a phase.
fn phase(
    pair: &Pair,
    during: impl FnOnce() -> anyhow::Result<(usize, f64)>,
) -> anyhow::Result<Phase> {
    let (c0, n0) = (counters(&pair.client)?, counters(&pair.node)?);
    let streams = start_streams(pair)?;
    // Let the TCP stream leave slow start before the measured work begins.
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    let work = during();
    let secs = start.elapsed().as_secs_f64();
    streams.stop.store(true, Ordering::Relaxed);
    for t in streams.threads {
        t.join().expect("stream thread")?;
    }
    let (applies, apply_ms_mean) = work?;
    // The last FIN/ACK exchange is in flight for a moment after the sockets close.
    std::thread::sleep(Duration::from_millis(200));
    let (c1, n1) = (counters(&pair.client)?, counters(&pair.node)?);
    let delta = |a: &(String, String), b: &(String, String), p: &str, f: &[&str]| {
        snmp_sum(&b.0, p, f).saturating_sub(snmp_sum(&a.0, p, f))
    };
    let dev = |a: &(String, String), b: &(String, String), name: &str, field: usize| {
        dev_field(&b.1, name, field)
            .unwrap_or(0)
            .saturating_sub(dev_field(&a.1, name, field).unwrap_or(0))
    };
    let udp_sent = streams.udp_sent.load(Ordering::Relaxed);
    Ok(Phase {
        secs,
        applies,
        apply_ms_mean,
        tcp_bytes: streams.tcp_received.load(Ordering::Relaxed),
        tcp_sent: delta(&c0, &c1, "Tcp", &["OutSegs"]),
        tcp_arrived: delta(&n0, &n1, "Tcp", &["InSegs"]),
        tcp_retrans: delta(&c0, &c1, "Tcp", &["RetransSegs"]),
        udp_sent,
        udp_arrived: delta(&n0, &n1, "Udp", &["InDatagrams", "RcvbufErrors"]),
        udp_rcvbuf_errors: delta(&n0, &n1, "Udp", &["RcvbufErrors"]),
        veth_drops: dev(&c0, &c1, CLIENT_IF, 11) + dev(&n0, &n1, NODE_IF, 3),
    })
}

/// Who re-applies the policy.
#[derive(Clone, Copy)]
enum Reloader {
    Nodewall(Backend),
    /// The peer: `iptables-restore` of the linear ruleset (it replaces the table atomically).
    IptablesRestore,
}

impl Reloader {
    fn label(self) -> &'static str {
        match self {
            Reloader::Nodewall(b) => b.label(),
            Reloader::IptablesRestore => "iptables-restore (linear)",
        }
    }
}

/// Installs version `a` (or b) of the policy; its wall time in seconds.
fn install(ctx: &Ctx, pair: &Pair, r: Reloader, w: &Workload, a: bool) -> anyhow::Result<f64> {
    match r {
        Reloader::Nodewall(b) => {
            let cfg = ctx
                .dir
                .join(if a { "reload-a.yaml" } else { "reload-b.yaml" });
            if !cfg.exists() {
                std::fs::write(&cfg, ctx.nw.config(w, b, &stream_rules()))?;
            }
            Ok(ctx.nw.apply(&pair.node, &cfg, b)?.wall.as_secs_f64())
        }
        Reloader::IptablesRestore => {
            let extra = [format!(
                "-A INPUT -i {NODE_IF} -s {CLIENT_V4}/32 -p udp --dport {UDP_PORT} -j ACCEPT"
            )];
            let script = peers::iptables_linear_with(w, false, &extra);
            let start = Instant::now();
            pair.node
                .run_stdin("iptables-restore", &[], script.as_bytes())?;
            Ok(start.elapsed().as_secs_f64())
        }
    }
}

fn measure(ctx: &Ctx, r: Reloader, applies: usize) -> anyhow::Result<(Phase, Phase)> {
    let pair = Pair::new("rl")?;
    // One skb per segment on the wire, so the sender's OutSegs (counted per MSS) and the
    // receiver's InSegs (counted per skb) count the same thing.
    pair.client
        .run("ethtool", &["-K", CLIENT_IF, "tso", "off", "gso", "off"])?;
    pair.node.run("ethtool", &["-K", NODE_IF, "gro", "off"])?;
    let (wa, wb) = (
        Workload::mixed(8, 1_000),
        Workload::mixed(8, 1_000).with_one_changed(),
    );
    for f in ["reload-a.yaml", "reload-b.yaml"] {
        let _ = std::fs::remove_file(ctx.dir.join(f));
    }
    install(ctx, &pair, r, &wa, true)?;
    let reloading = phase(&pair, || {
        let mut total = 0.0;
        let mut done = 0;
        for i in 0..applies {
            if ctx.over() {
                break;
            }
            let a = i % 2 == 1;
            total += install(ctx, &pair, r, if a { &wa } else { &wb }, a)?;
            done += 1;
        }
        Ok((done, total * 1e3 / done.max(1) as f64))
    })?;
    let quiet_for = Duration::from_secs_f64(
        reloading
            .secs
            .clamp(1.0, if ctx.quick { 3.0 } else { 10.0 }),
    );
    let quiet = phase(&pair, || {
        std::thread::sleep(quiet_for);
        Ok((0, 0.0))
    })?;
    Ok((reloading, quiet))
}

pub fn run(ctx: &Ctx) -> anyhow::Result<Section> {
    let applies = if ctx.quick { 10 } else { 100 };
    let mut sec = Section::new(
        "Reload under load",
        &format!(
            "A TCP download opened by the node (paced at {:.0} MB/s; its inbound data is established \
             return traffic) and a rule-allowed UDP stream ({UDP_PPS} datagrams/s) cross the node's \
             filtered uplink while the policy (8 rules, 1k CIDRs) is re-applied {applies} times, \
             alternating between two versions that differ by one CIDR. Lost = segments and datagrams \
             the client's transport layer sent that the node's never received (kernel SNMP counters on \
             both sides; datagrams dropped at a full socket buffer did reach the node and are shown \
             apart). TCP retransmissions are shown for context only: tail-loss probes and spurious \
             timeouts on a busy machine retransmit without loss. The same streams then run as long again \
             (at most 10 s) with no re-apply (baseline). The peer re-applies the same policy as linear iptables rules \
             with `iptables-restore`, which swaps the table atomically.",
            TCP_BYTES_PER_SEC / 1e6
        ),
    );
    let mut table = Table::new(
        "Lost share = lost / (TCP segments + UDP datagrams sent).",
        &[
            "lost share",
            "backend",
            "phase",
            "s",
            "re-applies (mean ms)",
            "TCP MB",
            "TCP lost / sent",
            "TCP retransmits",
            "UDP lost / sent",
            "socket-buffer drops",
            "of lost: veth drops",
        ],
    );
    let mut reloaders = Vec::new();
    for b in [Backend::Nft, Backend::Xdp { generic: false }] {
        if ctx.nw.has(b) {
            reloaders.push(Reloader::Nodewall(b));
        } else {
            sec.missing(format!(
                "{}: not available yet ({})",
                b.label(),
                ctx.nw.why(b.label())
            ));
        }
    }
    reloaders.push(Reloader::IptablesRestore);
    for r in reloaders {
        if ctx.over() {
            sec.missing(format!("{}: section time box reached", r.label()));
            continue;
        }
        eprintln!(
            "bench:   {} with {applies} re-applies under load",
            r.label()
        );
        let (reloading, quiet) = match measure(ctx, r, applies) {
            Ok(v) => v,
            Err(e) => {
                sec.missing(format!("{}: {e:#}", r.label()));
                continue;
            }
        };
        for (name, p) in [("re-applying", &reloading), ("quiet", &quiet)] {
            table.row(vec![
                format!("{:.5}", p.lost() as f64 / p.packets().max(1) as f64),
                r.label().into(),
                name.into(),
                format!("{:.1}", p.secs),
                if p.applies > 0 {
                    format!("{} ({:.1})", p.applies, p.apply_ms_mean)
                } else {
                    "–".into()
                },
                format!("{:.0}", p.tcp_bytes as f64 / 1e6),
                format!(
                    "{} / {}",
                    p.tcp_sent.saturating_sub(p.tcp_arrived),
                    p.tcp_sent
                ),
                p.tcp_retrans.to_string(),
                format!(
                    "{} / {}",
                    p.udp_sent.saturating_sub(p.udp_arrived),
                    p.udp_sent
                ),
                p.udp_rcvbuf_errors.to_string(),
                p.veth_drops.to_string(),
            ]);
        }
        if reloading.applies < applies {
            sec.notes.push(format!(
                "{}: only {} of {applies} re-applies fitted in the time box.",
                r.label(),
                reloading.applies
            ));
        }
        let lost = Some(reloading.lost() as f64);
        let shown = format!("{} of {}", reloading.lost(), reloading.packets());
        let what = format!(
            "{}: established-flow packets lost during {} re-applies",
            r.label(),
            reloading.applies
        );
        match r {
            Reloader::Nodewall(_) => sec.headline_shown(&what, lost, shown, "0 lost", |x| x == 0.0),
            Reloader::IptablesRestore => sec.headline_shown(&what, lost, shown, INFO, |_| true),
        }
    }
    sec.tables.push(table);
    Ok(sec)
}
