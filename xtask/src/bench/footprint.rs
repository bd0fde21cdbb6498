//! Section 4: what the daemon costs the node while idle (RSS, CPU over a quiet window, BPF map
//! memory) and how fast it answers `/metrics` under 100 concurrent scrapers, against a static
//! server returning the same body from the same namespace.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::netns::{Netns, Pair};
use super::nodewall::{prog_info, xdp_prog_id, Backend};
use super::report::{count, ms, ratio, Section, Table};
use super::workload::Workload;
use super::Ctx;

const METRICS_ADDR: &str = "127.0.0.1:9469";
const STATIC_ADDR: &str = "127.0.0.1:9470";
const TARGET_RSS_MB: f64 = 25.0;

/// A `nodewall run` daemon in its own pair of namespaces, stopped (SIGTERM, then SIGKILL) on drop.
struct Daemon {
    backend: Backend,
    cidrs: usize,
    child: Child,
    pair: Pair,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill(2) of our own child by pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(ctx: &Ctx, backend: Backend, cidrs: usize) -> anyhow::Result<Daemon> {
    let pair = Pair::new("fp")?;
    let w = Workload::mixed(8, cidrs);
    let tag = format!("{}-{cidrs}", backend.arg());
    let cfg = ctx.dir.join(format!("footprint-{tag}.yaml"));
    std::fs::write(&cfg, ctx.nw.config(&w, backend, ""))?;
    let log = std::fs::File::create(ctx.dir.join(format!("daemon-{tag}.log")))?;
    let child = pair
        .node
        .cmd(ctx.nw.bin.to_str().context("bin path")?)
        .args(["run", "-c"])
        .arg(&cfg)
        .args(["--metrics-addr", METRICS_ADDR])
        .args(ctx.nw.state_args(&pair.node, "run")?)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting nodewall run")?;
    let mut d = Daemon {
        backend,
        cidrs: w.distinct,
        child,
        pair,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = d.child.try_wait()? {
            bail!("nodewall run exited ({status}); see target/bench/daemon-{tag}.log");
        }
        if scrape_in(&d.pair.node, METRICS_ADDR).is_ok() {
            return Ok(d);
        }
        if Instant::now() > deadline {
            bail!("nodewall run did not serve {METRICS_ADDR}/metrics within 20 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn scrape_in(ns: &Netns, addr: &'static str) -> anyhow::Result<Vec<u8>> {
    ns.spawn(move || get(addr)).join().expect("scraper")
}

/// One `GET /metrics` (new connection, as Prometheus does per scrape); the body.
fn get(addr: &str) -> anyhow::Result<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&addr.parse()?, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    if !buf.starts_with(b"HTTP/1.1 200") && !buf.starts_with(b"HTTP/1.0 200") {
        bail!(
            "{addr}: not a 200 response: {:?}",
            String::from_utf8_lossy(&buf[..buf.len().min(80)])
        );
    }
    let body_at = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .unwrap_or(buf.len());
    Ok(buf.split_off(body_at))
}

fn proc_stat(pid: u32) -> anyhow::Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("VmRSS")?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let after = &stat[stat.rfind(')').context("stat")? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu = (f[11].parse::<f64>()? + f[12].parse::<f64>()?) / hz;
    Ok((rss_kb / 1024.0, cpu))
}

/// Memory the kernel accounts to the maps of the attached XDP program, in bytes.
fn bpf_map_bytes(ns: &Netns) -> anyhow::Result<u64> {
    let id = xdp_prog_id(ns)?;
    let prog = prog_info(id)?;
    let mut total = 0;
    for m in prog["map_ids"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m.as_u64())
    {
        let map: serde_json::Value = serde_json::from_str(&super::netns::output(
            std::process::Command::new("bpftool").args(["-j", "map", "show", "id", &m.to_string()]),
        )?)?;
        total += map["bytes_memlock"].as_u64().unwrap_or(0);
    }
    Ok(total)
}

/// Serves `body` to every connection until `stop`: the cheapest possible `/metrics`.
fn static_server(listener: TcpListener, body: Vec<u8>, stop: Arc<AtomicBool>) {
    let head = format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    let response: Arc<Vec<u8>> = Arc::new([head.as_bytes(), &body].concat());
    listener
        .set_nonblocking(true)
        .expect("nonblocking listener");
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((mut s, _)) => {
                let response = Arc::clone(&response);
                std::thread::spawn(move || {
                    let _ = s.set_nonblocking(false);
                    let mut req = [0u8; 1024];
                    let _ = s.read(&mut req);
                    let _ = s.write_all(&response);
                });
            }
            Err(_) => std::thread::sleep(Duration::from_micros(200)),
        }
    }
}

/// Latencies (seconds, sorted) of `scrapers` concurrent clients doing `each` scrapes of `addr`.
fn scrape_load(
    ns: &Netns,
    addr: &'static str,
    scrapers: usize,
    each: usize,
) -> anyhow::Result<Vec<f64>> {
    let handles: Vec<_> = (0..scrapers)
        .map(|_| {
            ns.spawn(move || {
                let mut lat = Vec::with_capacity(each);
                for _ in 0..each {
                    let t = Instant::now();
                    get(addr)?;
                    lat.push(t.elapsed().as_secs_f64());
                }
                Ok(lat)
            })
        })
        .collect();
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.join().expect("scraper")?);
    }
    all.sort_by(f64::total_cmp);
    Ok(all)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

pub fn run(ctx: &Ctx) -> anyhow::Result<Section> {
    let mut sec = Section::new(
        "Footprint",
        "`nodewall run` (the daemon) with a policy of 8 rules over 10 and 10k CIDRs, each in its own \
         namespace, all started together and then left idle. RSS and CPU time come from /proc after the \
         idle window; BPF map memory is the kernel's `bytes_memlock` of the attached program's maps. \
         `/metrics` latency: 100 concurrent scrapers, each opening a new connection per scrape (as \
         Prometheus does), against the daemon and against a static HTTP server in the same namespace \
         returning the same body (the floor for a TCP round trip of that size on this machine).",
    );
    if !ctx.nw.daemon {
        sec.missing(format!(
            "daemon: not available yet ({})",
            ctx.nw.why("daemon")
        ));
        return Ok(sec);
    }
    let idle = if ctx.quick {
        Duration::from_secs(5)
    } else {
        Duration::from_secs(60)
    };
    let (scrapers, each) = if ctx.quick { (100, 2) } else { (100, 10) };
    let mut daemons = Vec::new();
    for b in [Backend::Nft, Backend::Xdp { generic: false }] {
        if !ctx.nw.has(b) {
            sec.missing(format!(
                "daemon with {}: not available yet ({})",
                b.label(),
                ctx.nw.why(b.label())
            ));
            continue;
        }
        for cidrs in [10, 10_000] {
            match start(ctx, b, cidrs) {
                Ok(d) => daemons.push(d),
                Err(e) => sec.missing(format!(
                    "daemon with {} at {} CIDRs: {e:#}",
                    b.label(),
                    count(cidrs)
                )),
            }
        }
    }
    if daemons.is_empty() {
        return Ok(sec);
    }
    let before: Vec<f64> = daemons
        .iter()
        .map(|d| proc_stat(d.child.id()).map(|s| s.1).unwrap_or(0.0))
        .collect();
    eprintln!(
        "bench:   {} daemon(s) idle for {} s",
        daemons.len(),
        idle.as_secs()
    );
    let idle = idle.min(ctx.left()).max(Duration::from_secs(1));
    let slept = Instant::now();
    std::thread::sleep(idle);
    let window = slept.elapsed().as_secs_f64();
    let mut table = Table::new(
        &format!("Idle window {:.0} s. RSS ratio is against the {TARGET_RSS_MB:.0} MB target; CPU as a share of one core.", window),
        &["RSS vs target", "daemon", "CIDRs", "RSS MB", "CPU idle", "BPF map memory"],
    );
    let mut worst_rss: Option<f64> = None;
    let mut worst_cpu: Option<f64> = None;
    let mut map_bytes = Vec::new();
    for (d, cpu0) in daemons.iter().zip(&before) {
        let (rss, cpu1) = proc_stat(d.child.id())?;
        let share = (cpu1 - cpu0) / window;
        let maps = match d.backend {
            Backend::Xdp { .. } => bpf_map_bytes(&d.pair.node).ok(),
            Backend::Nft => None,
        };
        if let Some(m) = maps {
            map_bytes.push((d.cidrs, m));
        }
        if d.cidrs >= 10_000 {
            worst_rss = Some(worst_rss.map_or(rss, |w: f64| w.max(rss)));
        }
        worst_cpu = Some(worst_cpu.map_or(share, |w: f64| w.max(share)));
        table.row(vec![
            ratio(rss / TARGET_RSS_MB),
            d.backend.label().into(),
            count(d.cidrs),
            format!("{rss:.1}"),
            format!("{:.2}%", share * 100.0),
            maps.map(|m| format!("{:.2} MiB", m as f64 / 1048576.0))
                .unwrap_or_else(|| "–".into()),
        ]);
    }
    sec.tables.push(table);
    sec.headline(
        "daemon RSS at 10k CIDRs vs 25 MB target (worst backend)",
        worst_rss.map(|r| r / TARGET_RSS_MB),
        "≤ 1×",
        |r| r <= 1.0,
    );
    sec.headline_shown(
        &format!("daemon CPU while idle for {window:.0} s, share of one core (worst)"),
        worst_cpu,
        worst_cpu
            .map(|c| format!("{:.2}%", c * 100.0))
            .unwrap_or_else(|| "n/a".into()),
        "≤ 0.5% (no busy loop)",
        |r| r <= 0.005,
    );
    if let (Some(small), Some(big)) = (
        map_bytes.iter().find(|m| m.0 < 10_000),
        map_bytes.iter().find(|m| m.0 >= 10_000),
    ) {
        sec.notes.push(format!(
            "BPF maps: {:.2} MiB at {} CIDRs vs {:.2} MiB at {} ({} per added CIDR).",
            big.1 as f64 / 1048576.0,
            count(big.0),
            small.1 as f64 / 1048576.0,
            count(small.0),
            format_args!(
                "{:.0} B",
                (big.1 as f64 - small.1 as f64) / (big.0 - small.0) as f64
            )
        ));
    }
    // Scrape latency against the largest daemon, then the static floor with the same body.
    let d = daemons.iter().max_by_key(|d| d.cidrs).expect("a daemon");
    if ctx.left() < Duration::from_secs(5) {
        sec.missing("`/metrics` scrape latency: section time box reached");
        return Ok(sec);
    }
    let body = scrape_in(&d.pair.node, METRICS_ADDR)?;
    let nodewall = scrape_load(&d.pair.node, METRICS_ADDR, scrapers, each)?;
    let stop = Arc::new(AtomicBool::new(false));
    let listener = {
        let stop = Arc::clone(&stop);
        let body = body.clone();
        d.pair.node.spawn(move || {
            let l = TcpListener::bind(STATIC_ADDR)?;
            std::thread::spawn(move || static_server(l, body, stop));
            Ok(())
        })
    };
    listener.join().expect("static server")?;
    let floor = scrape_load(&d.pair.node, STATIC_ADDR, scrapers, each);
    stop.store(true, Ordering::Relaxed);
    let floor = floor?;
    let mut t = Table::new(
        &format!(
            "{scrapers} concurrent scrapers × {each} scrapes, {} ({} CIDRs), body {} bytes.",
            d.backend.label(),
            count(d.cidrs),
            body.len()
        ),
        &[
            "ratio vs static server",
            "percentile",
            "nodewall ms",
            "static server ms",
        ],
    );
    for (name, p) in [("p50", 0.5), ("p99", 0.99)] {
        let (a, b) = (pct(&nodewall, p), pct(&floor, p));
        t.row(vec![ratio(a / b), name.into(), ms(a), ms(b)]);
        sec.headline(
            &format!("`/metrics` {name} latency, 100 concurrent scrapers, vs static server"),
            Some(a / b),
            super::report::INFO,
            |_| true,
        );
    }
    sec.tables.push(t);
    Ok(sec)
}
