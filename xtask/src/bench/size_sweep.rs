//! Section 2's size sweep: a nodewall backend's dropped frame at every policy size on **one**
//! pair of namespaces, the policy re-applied between windows, in rounds. The rows above put each
//! size on a pair of its own, and a cheap drop leaves the receive kthread idle a third of the
//! time: its cost per frame then moves by ±30% from window to window and by more between pairs
//! (the bench's XDP rows read 0.73× to 0.89× at 10k vs 10 CIDRs across runs, while
//! `BPF_PROG_TEST_RUN` put the program at 1.02×). Here the sizes share one receive path and
//! every round measures them all, so "flat as the policy grows" compares like with like. For
//! XDP the kernel also times the program itself on that traffic (`BPF_ENABLE_STATS`), which
//! the receive path's own variance does not touch.

use std::time::Duration;

use super::bpf;
use super::nodewall::{check_xdp_mode, prog_info, xdp_prog_id, Backend, Nodewall};
use super::report::{count, ratio, Section, Table};
use super::throughput::{workload, Stage};
use super::traffic::Rate;
use super::Ctx;

/// One backend's best window per size.
pub struct Sweep {
    pub backend: Backend,
    pub drop: Vec<(usize, Rate)>,
    /// XDP: the program's own ns per run over each size's windows, median of the rounds.
    pub prog_ns: Vec<(usize, f64)>,
}

impl Sweep {
    /// Dropped frames per receive-CPU second at `big` CIDRs over at `small`: ≥ 1 is "no slower
    /// with more CIDRs".
    pub fn flatness(&self, small: usize, big: usize) -> Option<f64> {
        let ns = |c| at(&self.drop, c).map(|r| r.rx_ns);
        Some(ns(small)? / ns(big)?)
    }

    /// The XDP program's own ns per frame at `big` CIDRs over at `small`.
    pub fn prog_ratio(&self, small: usize, big: usize) -> Option<f64> {
        Some(at(&self.prog_ns, big)? / at(&self.prog_ns, small)?)
    }
}

/// The value measured at `cidrs`, if any.
fn at<T: Copy>(per_size: &[(usize, T)], cidrs: usize) -> Option<T> {
    per_size.iter().find(|(k, _)| *k == cidrs).map(|&(_, v)| v)
}

/// The program's cumulative (run_time_ns, run_cnt), as `bpftool prog show` reports them.
fn run_stats(id: u32) -> anyhow::Result<(u64, u64)> {
    let v = prog_info(id)?;
    let get = |k: &str| v[k].as_u64().unwrap_or(0);
    Ok((get("run_time_ns"), get("run_cnt")))
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

pub const INTRO: &str = "**Size sweep.** The flatness headlines (dropped frames per receive-CPU \
    second at the largest size vs the smallest) come from one pair per nodewall backend: its policy \
    is re-applied at each size in turn (a different size first each round), the dropped frame is \
    sent after each apply, and each size keeps its least-disturbed window. The rows above, one pair \
    per size, differ by more than the sizes do. A cheap XDP drop leaves the receive kthread idle \
    part of the time, and its cost per frame then moves with the generator's batching; so for XDP the \
    kernel also times the program itself on the same traffic (`BPF_ENABLE_STATS`: two clock reads \
    per run, included), median of the rounds.";

/// Measures backend `b`'s dropped frame at every size on one pair.
pub fn measure(
    ctx: &Ctx,
    b: Backend,
    sizes: &[usize],
    window: Duration,
    rounds: usize,
) -> anyhow::Result<Sweep> {
    let st = Stage::new("sweep", sizes[0])?;
    Nodewall::prepare(&st.pair, b)?;
    let mut cfgs = Vec::with_capacity(sizes.len());
    for &n in sizes {
        let path = ctx.dir.join(format!("sweep-{}-{n}.yaml", b.arg()));
        std::fs::write(&path, ctx.nw.config(&workload(n), b, ""))?;
        cfgs.push(path);
    }
    let _stats = if matches!(b, Backend::Xdp { .. }) {
        Some(bpf::enable_run_time_stats()?)
    } else {
        None
    };
    let mut best: Vec<Option<Rate>> = vec![None; sizes.len()];
    let mut prog: Vec<Vec<f64>> = vec![Vec::new(); sizes.len()];
    for round in 0..rounds {
        for k in 0..sizes.len() {
            let i = (round + k) % sizes.len();
            ctx.nw.apply(&st.pair.node, &cfgs[i], b)?;
            let id = if let Backend::Xdp { generic } = b {
                check_xdp_mode(&st.pair.node, generic)?;
                Some(xdp_prog_id(&st.pair.node)?)
            } else {
                None
            };
            let before = id.map(run_stats).transpose()?;
            let r = st.blast(false, window)?;
            if let (Some(id), Some((t0, n0))) = (id, before) {
                let (t1, n1) = run_stats(id)?;
                if n1 > n0 {
                    prog[i].push((t1 - t0) as f64 / (n1 - n0) as f64);
                }
            }
            if best[i].as_ref().is_none_or(|old| r.rx_ns < old.rx_ns) {
                best[i] = Some(r);
            }
        }
    }
    ctx.nw.flush(&st.pair.node, b)?;
    Ok(Sweep {
        backend: b,
        drop: sizes
            .iter()
            .zip(best)
            .filter_map(|(&n, r)| Some((n, r?)))
            .collect(),
        prog_ns: sizes
            .iter()
            .zip(prog)
            .filter_map(|(&n, v)| Some((n, median(v)?)))
            .collect(),
    })
}

/// The sweep's table: each size's dropped frame against the smallest size's, same pair.
pub fn report(sec: &mut Section, sweeps: &[Sweep]) {
    let mut table = Table::new(
        "Size sweep: one pair per backend, sizes in the same rounds. Ratio = dropped frames per \
         receive-CPU second at this size / at the smallest.",
        &[
            "vs smallest",
            "backend",
            "CIDRs",
            "receive-CPU ns/frame",
            "receive CPU busy",
            "frames per wakeup",
            "delivered",
            "XDP program ns/frame",
        ],
    );
    for s in sweeps {
        let Some((small, _)) = s.drop.first() else {
            continue;
        };
        for (n, r) in &s.drop {
            table.row(vec![
                s.flatness(*small, *n)
                    .map(ratio)
                    .unwrap_or_else(|| "–".into()),
                s.backend.label().into(),
                count(*n),
                format!("{:.0}", r.rx_ns),
                format!("{:.0}%", r.rx_busy * 100.0),
                format!("{:.0}", r.per_wakeup),
                format!("{:.0}%", r.delivered * 100.0),
                at(&s.prog_ns, *n)
                    .map(|ns| format!("{ns:.0}"))
                    .unwrap_or_else(|| "–".into()),
            ]);
        }
    }
    sec.tables.push(table);
}
