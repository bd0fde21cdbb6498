//! `cargo xtask bench`: measures nodewall against peers and baselines in the same run and writes
//! `docs/benchmarks.md` with PNG plots under `docs/img/`.
//!
//! Sections (each in its own time box, all inside throwaway network namespaces):
//! 1. XDP classifier cost (`BPF_PROG_TEST_RUN`) vs a bare `XDP_PASS` program and xdp-filter;
//! 2. datapath throughput on veth (AF_PACKET generator) vs no filter, hand-written nft with a
//!    concatenated set, iptables-legacy/-nft + ipset, xdp-filter, linear iptables;
//! 3. apply latency vs `nft -f` (rendered and hand-written) and iptables-restore + ipset,
//!    incremental vs full;
//! 4. footprint of the daemon (RSS, idle CPU, BPF map memory, `/metrics` latency);
//! 5. reload under load: established-flow packets lost while re-applying.
//!
//! A section whose backend this checkout lacks prints "not available yet" rows instead of failing.

mod apply;
mod bpf;
mod classifier;
mod footprint;
mod machine;
mod netns;
mod nft_duel;
mod nodewall;
mod peers;
mod plot;
mod reload;
mod report;
mod size_sweep;
mod throughput;
mod traffic;
mod workload;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::shell::{root, run as sh, succeeds};
use nodewall::Nodewall;
use report::{Page, Section};

/// Debian packages the bench drives (on top of `setup`'s): the peers, the traffic generator, and
/// the font the plots are drawn with. `(binary or file to look for, package)`.
pub const BENCH_PACKAGES: &[(&str, &str)] = &[
    ("/usr/sbin/iptables", "iptables"),
    ("/usr/sbin/ipset", "ipset"),
    // xdp-filter, a peer of the XDP backend (xdp-tools 1.3.1 on Debian bookworm).
    ("/usr/sbin/xdp-filter", "xdp-tools"),
    ("/usr/sbin/ethtool", "ethtool"),
    (plot::FONT, "fonts-dejavu-core"),
];

const USAGE: &str = "usage: cargo xtask bench [--quick] [--release] [--only 1,2,..] [--out FILE] [--no-build] [--nodewall BIN]

  --quick          smoke run (< 4 min): fewer sizes, shorter windows, the debug build of nodewall
                   (the test suite's), page written to target/bench/quick/benchmarks.md
  --release        with --quick: build and measure the release binary all the same
  --only 1,3       run only these sections (1 classifier, 2 throughput, 3 apply, 4 footprint, 5 reload)
  --out FILE       write the page there (default docs/benchmarks.md; plots go to img/ beside it)
  --no-build       use the existing nodewall binary as it is
  --nodewall BIN   measure this nodewall binary instead of building one";

/// What every section gets: the options, nodewall's build and features, a scratch directory and
/// the section's deadline.
pub struct Ctx {
    pub quick: bool,
    pub nw: Nodewall,
    pub dir: PathBuf,
    deadline: Mutex<Instant>,
}

impl Ctx {
    /// Whether the current section has used up its time box.
    pub fn over(&self) -> bool {
        Instant::now() >= *self.deadline.lock().expect("deadline")
    }

    pub fn left(&self) -> Duration {
        self.deadline
            .lock()
            .expect("deadline")
            .saturating_duration_since(Instant::now())
    }
}

struct Opts {
    quick: bool,
    release: bool,
    only: Vec<u8>,
    out: PathBuf,
    no_build: bool,
    nodewall: Option<PathBuf>,
}

fn parse(args: &[String]) -> anyhow::Result<Opts> {
    let mut o = Opts {
        quick: false,
        release: false,
        only: vec![1, 2, 3, 4, 5],
        out: PathBuf::new(),
        no_build: false,
        nodewall: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => o.quick = true,
            "--no-build" => o.no_build = true,
            "--release" => o.release = true,
            "--only" => {
                let v = it.next().context("--only needs a list such as 1,3")?;
                o.only = v
                    .split(',')
                    .map(|s| {
                        s.trim()
                            .parse::<u8>()
                            .with_context(|| format!("--only: bad section {s:?}"))
                    })
                    .collect::<Result<_, _>>()?;
                if o.only.iter().any(|s| !(1..=5).contains(s)) {
                    bail!("--only: sections are 1 to 5");
                }
            }
            "--out" => o.out = PathBuf::from(it.next().context("--out needs a file")?),
            "--nodewall" => {
                o.nodewall = Some(std::fs::canonicalize(
                    it.next().context("--nodewall needs a path")?,
                )?)
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if o.out.as_os_str().is_empty() {
        // A smoke run never overwrites the published page.
        o.out = root().join(if o.quick {
            "target/bench/quick/benchmarks.md"
        } else {
            "docs/benchmarks.md"
        });
    }
    Ok(o)
}

fn ensure_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = BENCH_PACKAGES
        .iter()
        .filter(|(f, _)| !std::path::Path::new(f).exists())
        .map(|(_, p)| *p)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("bench: installing {}", missing.join(" "));
    sh(Command::new("apt-get").args(["update", "-qq"]))?;
    sh(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// Each section's time box (full run, quick run), chosen so the whole run stays under 16 and
/// 4 minutes on a 2-core machine (section 2 measures nine filters and the nft head to head).
fn time_box(section: u8, quick: bool) -> Duration {
    let (full, q) = match section {
        1 => (150, 25),
        2 => (540, 120),
        3 => (130, 30),
        4 => (95, 20),
        _ => (100, 20),
    };
    Duration::from_secs(if quick { q } else { full })
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let opts = parse(args)?;
    if !succeeds(Command::new("sh").args(["-c", "[ \"$(id -u)\" = 0 ]"])) {
        bail!("the bench creates network namespaces and loads BPF programs: run it as root");
    }
    let started = Instant::now();
    // What building nodewall (eBPF included) needs, then the bench's own tools.
    crate::setup::run_setup()?;
    ensure_packages()?;
    netns::sweep();
    let bin = match &opts.nodewall {
        Some(bin) => bin.clone(),
        None => Nodewall::build(opts.no_build, opts.quick && !opts.release)?,
    };
    let nw = Nodewall::probe(bin)?;
    for (what, why) in &nw.why {
        eprintln!("bench: {what}: not available ({why})");
    }
    let machine = machine::describe(&nw.version);
    let ctx = Ctx {
        quick: opts.quick,
        nw,
        dir: nodewall::scratch_dir()?,
        deadline: Mutex::new(Instant::now()),
    };
    let mut sections: Vec<Section> = Vec::new();
    let mut results = plot::Series::default();
    for s in [1u8, 2, 3, 4, 5] {
        if !opts.only.contains(&s) {
            continue;
        }
        *ctx.deadline.lock().expect("deadline") = Instant::now() + time_box(s, opts.quick);
        let t = Instant::now();
        eprintln!(
            "bench: section {s} (time box {} s)",
            time_box(s, opts.quick).as_secs()
        );
        let sec = match s {
            1 => classifier::run(&ctx).map(|(sec, cells)| {
                results.classifier = cells;
                sec
            }),
            2 => throughput::run(&ctx).map(|(sec, rows)| {
                results.throughput = rows;
                sec
            }),
            3 => apply::run(&ctx).map(|(sec, rows)| {
                results.apply = rows;
                sec
            }),
            4 => footprint::run(&ctx),
            _ => reload::run(&ctx),
        };
        let mut sec = sec.unwrap_or_else(|e| {
            let mut failed = Section::new(&format!("section {s}"), "");
            failed.missing(format!("section {s} failed: {e:#}"));
            failed
        });
        sec.number = s;
        eprintln!(
            "bench: section {s} done in {:.0} s",
            t.elapsed().as_secs_f64()
        );
        sections.push(sec);
        netns::sweep();
    }
    let out_dir = opts
        .out
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    plot::attach(&results, &out_dir, &mut sections)?;
    let mut command = "cargo xtask bench".to_string();
    if opts.quick {
        command.push_str(" --quick");
    }
    let page = Page {
        machine,
        command,
        quick: opts.quick,
        elapsed_s: started.elapsed().as_secs_f64(),
        sections,
    };
    std::fs::create_dir_all(&out_dir)?;
    std::fs::write(&opts.out, page.markdown())?;
    eprintln!(
        "bench: wrote {} in {:.0} s",
        opts.out.display(),
        started.elapsed().as_secs_f64()
    );
    for sec in &page.sections {
        for h in &sec.headlines {
            let figure = h
                .shown
                .clone()
                .unwrap_or_else(|| report::opt_ratio(h.ratio));
            eprintln!("bench: {figure:>12}  {}  (target {})", h.what, h.target);
        }
    }
    Ok(())
}
