//! Section 1: the XDP classifier's cost per packet, from `BPF_PROG_TEST_RUN` (the kernel runs
//! the program `repeat` times on one frame and reports the mean), against a bare `XDP_PASS`
//! program run on the same frame, interleaved, in the same namespace.

use std::os::fd::OwnedFd;

use super::bpf;
use super::netns::{Pair, NODE_IF, NODE_V4, NODE_V6};
use super::nodewall::{check_xdp_mode, ifindex, xdp_prog_id, Backend};
use super::report::{count, ratio, Section, Table};
use super::workload::{parse_mac, udp_frame, Family, Workload};
use super::Ctx;

/// One measured cell.
pub struct Cell {
    pub rules: usize,
    pub cidrs: usize,
    pub family: Family,
    pub allowed: bool,
    pub nodewall_ns: f64,
    pub parse_ns: f64,
    pub bare_ns: f64,
}

impl Cell {
    pub fn ratio(&self) -> f64 {
        self.nodewall_ns / self.bare_ns
    }
}

/// Best ns per packet of nodewall, the parse-only reference and the bare program, and
/// nodewall's verdict.
struct Measured {
    nodewall: f64,
    parse: f64,
    bare: f64,
    verdict: u32,
}

/// Runs the three programs `rounds` times each, alternating, and keeps each one's best (the
/// least disturbed by other work on a shared machine).
fn measure(
    prog: &OwnedFd,
    refs: &Refs,
    frame: &[u8],
    ifindex: u32,
    repeat: u32,
    rounds: usize,
) -> anyhow::Result<Measured> {
    let (mut best_p, mut best_q, mut best_b, mut verdict) = (u32::MAX, u32::MAX, u32::MAX, 0);
    for _ in 0..rounds {
        let (_, b) = bpf::test_run(&refs.bare, frame, ifindex, repeat)?;
        let (_, q) = bpf::test_run(&refs.parse, frame, ifindex, repeat)?;
        let (v, p) = bpf::test_run(prog, frame, ifindex, repeat)?;
        best_b = best_b.min(b);
        best_q = best_q.min(q);
        best_p = best_p.min(p);
        verdict = v;
    }
    Ok(Measured {
        nodewall: best_p as f64,
        parse: best_q as f64,
        bare: best_b as f64,
        verdict,
    })
}

/// The reference programs: a bare `XDP_PASS` (the headline's baseline) and nodewall's own
/// header parsing alone (what any classifier of these headers pays before classifying).
struct Refs {
    bare: OwnedFd,
    parse: OwnedFd,
}

pub fn run(ctx: &Ctx) -> anyhow::Result<(Section, Vec<Cell>)> {
    // On its own thread: it enters the node namespace, which must not leak into the caller.
    std::thread::scope(|s| {
        s.spawn(|| run_in_thread(ctx))
            .join()
            .expect("classifier thread")
    })
}

fn run_in_thread(ctx: &Ctx) -> anyhow::Result<(Section, Vec<Cell>)> {
    let mut sec = Section::new(
        "XDP classifier cost",
        "ns per packet of nodewall's XDP program under `BPF_PROG_TEST_RUN` against a bare `XDP_PASS` \
         program (two instructions) on the same 60/80-byte UDP frame, same namespace and ingress \
         interface. Each figure is the best of several alternating runs of `repeat` iterations each \
         (the kernel's own mean per run). The parse-only column is a third program from nodewall's own \
         eBPF object that parses the Ethernet, IP and UDP headers exactly as the classifier does and passes: \
         nodewall minus parse-only is the cost of classifying. Policies: N UDP allow rules over the given number of distinct \
         CIDRs (half IPv4, half IPv6); the allowed packet matches only the last rule, the dropped one \
         matches none (default-deny), so both take the longest path.",
    );
    let repeat: u32 = 1_000_000;
    let rounds = if ctx.quick { 2 } else { 5 };
    let (rules_list, cidr_list): (&[usize], &[usize]) = if ctx.quick {
        (&[1, 64], &[10, 10_000])
    } else {
        (&[1, 8, 64], &[10, 1_000, 10_000, 100_000])
    };
    let backend = Backend::Xdp { generic: false };
    let pair = Pair::new("cls")?;
    let ifx = ifindex(&pair.node, NODE_IF)?;
    let (node_mac, client_mac) = (parse_mac(&pair.node_mac)?, parse_mac(&pair.client_mac)?);
    // The kernel resolves the test context's ingress ifindex in the caller's namespace.
    pair.node.enter_thread()?;
    let object = crate::ebpf::build(&crate::shell::root()).map_err(anyhow::Error::msg)?;
    let refs = Refs {
        bare: bpf::load_xdp_pass()?,
        parse: bpf::load_bench_parse(&object)?,
    };
    let mut table = Table::new(
        &format!(
            "`BPF_PROG_TEST_RUN`, repeat {} per run, best of {rounds} runs.",
            count(repeat as usize).replace("000k", "M")
        ),
        &[
            "ratio vs bare XDP_PASS",
            "rules",
            "CIDRs",
            "family",
            "packet",
            "nodewall ns/pkt",
            "parse-only ns/pkt",
            "bare ns/pkt",
        ],
    );
    let mut cells = Vec::new();
    if !ctx.nw.has(backend) {
        // Still measure the baseline so the page shows what the target is relative to.
        let frame = udp_frame(
            node_mac,
            client_mac,
            Workload::denied_src(Family::V4),
            NODE_V4.parse()?,
            40000,
            10000,
        );
        let (_, b) = bpf::test_run(&refs.bare, &frame, ifx, repeat)?;
        sec.notes
            .push(format!("bare XDP_PASS alone: {b} ns/packet (IPv4)."));
        sec.missing(format!(
            "nodewall-xdp: not available yet ({})",
            ctx.nw.why(backend.label())
        ));
    }
    let dir = &ctx.dir;
    'sizes: for &rules in rules_list {
        for &cidrs in cidr_list {
            if !ctx.nw.has(backend) {
                break 'sizes;
            }
            if ctx.over() {
                sec.missing(format!(
                    "{rules} rules × {} CIDRs and larger: section time box reached",
                    count(cidrs)
                ));
                break 'sizes;
            }
            let w = Workload::mixed(rules, cidrs);
            let cfg = dir.join("classifier.yaml");
            std::fs::write(&cfg, ctx.nw.config(&w, backend, ""))?;
            let installed = ctx
                .nw
                .apply(&pair.node, &cfg, backend)
                .and_then(|_| check_xdp_mode(&pair.node, false));
            if let Err(e) = installed {
                sec.missing(format!("{rules} rules × {} CIDRs: {e:#}", count(cidrs)));
                continue;
            }
            let prog = bpf::prog_fd_by_id(xdp_prog_id(&pair.node)?)?;
            for family in [Family::V4, Family::V6] {
                let dst = match family {
                    Family::V4 => NODE_V4.parse()?,
                    Family::V6 => NODE_V6.parse()?,
                };
                for allowed in [true, false] {
                    let src = if allowed {
                        w.allowed_src(family)
                    } else {
                        Workload::denied_src(family)
                    };
                    let frame = udp_frame(node_mac, client_mac, src, dst, 40000, w.last_port());
                    let m = measure(&prog, &refs, &frame, ifx, repeat, rounds)?;
                    let verdict = m.verdict;
                    let expected = if allowed {
                        bpf::XDP_PASS
                    } else {
                        bpf::XDP_DROP
                    };
                    if verdict != expected {
                        sec.notes.push(format!(
                            "**verdict mismatch** at {rules} rules × {cidrs} CIDRs, {}, {}: XDP returned {verdict}, expected {expected}",
                            family.label(),
                            if allowed { "allowed" } else { "dropped" }
                        ));
                    }
                    let cell = Cell {
                        rules,
                        cidrs: w.distinct,
                        family,
                        allowed,
                        nodewall_ns: m.nodewall,
                        parse_ns: m.parse,
                        bare_ns: m.bare,
                    };
                    table.row(vec![
                        ratio(cell.ratio()),
                        rules.to_string(),
                        count(cell.cidrs),
                        family.label().into(),
                        if allowed { "allowed" } else { "dropped" }.into(),
                        format!("{:.0}", m.nodewall),
                        format!("{:.0}", m.parse),
                        format!("{:.0}", m.bare),
                    ]);
                    cells.push(cell);
                }
            }
            drop(prog);
            ctx.nw.flush(&pair.node, backend)?;
        }
    }
    if !table.rows.is_empty() {
        sec.tables.push(table);
    }
    let worst = |rules: usize, cidrs: usize| {
        cells
            .iter()
            .filter(|c| c.rules == rules && c.cidrs == cidrs)
            .map(Cell::ratio)
            .reduce(f64::max)
    };
    let (big_rules, big_cidrs) = (*rules_list.last().expect("sizes"), 10_000);
    let big: Vec<&Cell> = cells
        .iter()
        .filter(|c| c.rules == big_rules && c.cidrs == big_cidrs)
        .collect();
    let worst_of = |f: fn(&Cell) -> f64| big.iter().map(|c| f(c)).reduce(f64::max);
    if let (Some(parse), Some(classify)) = (
        worst_of(|c| c.parse_ns / c.bare_ns),
        worst_of(|c| c.nodewall_ns / c.parse_ns),
    ) {
        sec.notes.push(format!(
            "At {big_rules} rules × 10k CIDRs (worst cells): parsing alone costs {} the bare program; \
             nodewall costs {} the parse-only program.",
            ratio(parse),
            ratio(classify)
        ));
    }
    sec.headline(
        &format!("XDP classifier vs bare XDP_PASS, {big_rules} rules × 10k CIDRs (worst of v4/v6, allowed/dropped)"),
        worst(big_rules, big_cidrs),
        "≤ 1.5×",
        |r| r <= 1.5,
    );
    // The largest size that was measured (a size the agent refused is listed as missing).
    let large = cells
        .iter()
        .filter(|c| c.rules == big_rules)
        .map(|c| c.cidrs)
        .max()
        .unwrap_or(*cidr_list.last().expect("sizes"));
    let small = cidr_list[0];
    let flat = worst(big_rules, large)
        .zip(worst(big_rules, small))
        .map(|(a, b)| a / b);
    sec.headline(
        &format!(
            "XDP classifier cost at {} CIDRs vs at {} ({big_rules} rules)",
            count(large),
            count(small)
        ),
        flat,
        "flat (≤ 1.2×)",
        |r| r <= 1.2,
    );
    Ok((sec, cells))
}
