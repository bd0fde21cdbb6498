//! Section 2's size sweep: a nodewall backend's dropped frame at every policy size on **one**
//! pair of namespaces, the policy re-applied between windows, in rounds. The rows above put each
//! size on a pair of its own, and a cheap drop leaves the receive kthread idle a third of the
//! time: its cost per frame then moves by ±30% from window to window and by more between pairs
//! (the bench's XDP rows read 0.73× to 0.89× at 10k vs 10 CIDRs across runs, while
//! `BPF_PROG_TEST_RUN` put the program at 1.02×). Here the sizes share one receive path and
//! every round measures them all, so "flat as the policy grows" compares like with like.

use std::time::Duration;

use super::nodewall::{check_xdp_mode, Backend, Nodewall};
use super::report::{count, ratio, Section, Table};
use super::throughput::{workload, Stage};
use super::traffic::Rate;
use super::Ctx;

/// One backend's best window per size.
pub struct Sweep {
    pub backend: Backend,
    pub drop: Vec<(usize, Rate)>,
}

impl Sweep {
    /// Dropped frames per receive-CPU second at `big` CIDRs over at `small`: ≥ 1 is "no slower
    /// with more CIDRs".
    pub fn flatness(&self, small: usize, big: usize) -> Option<f64> {
        let at = |c: usize| {
            self.drop
                .iter()
                .find(|(k, _)| *k == c)
                .map(|(_, r)| r.rx_ns)
        };
        Some(at(small)? / at(big)?)
    }
}

pub const INTRO: &str = "**Size sweep.** The flatness headlines (dropped frames per receive-CPU \
    second at the largest size vs the smallest) come from one pair per nodewall backend: its policy \
    is re-applied at each size in turn (a different size first each round), the dropped frame is \
    sent after each apply, and each size keeps its least-disturbed window. The rows above, one pair \
    per size, differ by more than the sizes do.";

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
    let mut best: Vec<Option<Rate>> = vec![None; sizes.len()];
    for round in 0..rounds {
        for k in 0..sizes.len() {
            let i = (round + k) % sizes.len();
            ctx.nw.apply(&st.pair.node, &cfgs[i], b)?;
            if let Backend::Xdp { generic } = b {
                check_xdp_mode(&st.pair.node, generic)?;
            }
            let r = st.blast(false, window)?;
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
            ]);
        }
    }
    sec.tables.push(table);
}
