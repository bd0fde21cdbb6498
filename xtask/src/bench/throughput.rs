//! Section 2: the node's receive path on a veth pair, for passed and dropped IPv4 UDP frames,
//! with nodewall's backends and the peers (hand-written nft with a concatenated set, ipset with
//! iptables, xdp-filter, linear iptables): receive-CPU time per frame (the receive
//! path runs in a NAPI kthread on a CPU of its own) and frames per second, each against a
//! no-filter run on the same pair of namespaces just before the filter is installed (so the
//! ratio cancels the drift of a shared machine between rows).

use std::time::Duration;

use super::bpf;
use super::netns::{Pair, NODE_IF, NODE_V4};
use super::nft_duel;
use super::nodewall::{check_xdp_mode, ifindex, Backend, Nodewall};
use super::peers::{self, Xtables};
use super::report::{count, mpps, ratio, Section, Table, INFO};
use super::size_sweep::{self, Sweep};
use super::traffic::{blast, Rate, Receiver};
use super::workload::{parse_mac, udp_frame, Family, Workload};
use super::Ctx;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Filter {
    Nodewall(Backend),
    /// Hand-written nft: one concatenated `saddr . dport` interval set per family.
    NftConcat,
    /// iptables with one ipset hash:net per rule and family (Calico's classic form).
    Ipset(Xtables),
    /// xdp-filter from xdp-tools, one allowed source address per CIDR.
    XdpTools,
    IptablesLinear,
    /// A two-instruction XDP program that drops everything: the cheapest drop there is on veth,
    /// the floor of every receive-CPU cost here.
    BareXdpDrop,
}

impl Filter {
    pub fn label(self) -> &'static str {
        match self {
            Filter::Nodewall(b) => b.label(),
            Filter::NftConcat => "nft concatenated set (hand-written)",
            Filter::Ipset(Xtables::Legacy) => "iptables-legacy + ipset",
            Filter::Ipset(Xtables::Nft) => "iptables-nft + ipset",
            Filter::XdpTools => "xdp-filter",
            Filter::IptablesLinear => "iptables-nft linear",
            Filter::BareXdpDrop => "bare XDP_DROP (reference)",
        }
    }
}

pub struct Row {
    pub filter: Filter,
    pub cidrs: usize,
    /// The passed frame with no filter installed, same pair, just before.
    pub base: Rate,
    /// None for the drop-everything reference.
    pub pass: Option<Rate>,
    pub drop: Rate,
}

impl Row {
    pub fn drop_ratio(&self) -> f64 {
        self.drop.pps / self.base.pps
    }
    /// Receive-CPU time per dropped frame relative to a passed frame with no filter (the
    /// unfiltered stack's cost on the same pair).
    pub fn drop_cost_ratio(&self) -> f64 {
        self.drop.rx_ns / self.base.rx_ns
    }
}

/// The iptables the linear peer is loaded with (Debian's default `iptables`).
const LINEAR: Xtables = Xtables::Nft;

/// Rules in every throughput policy; the CIDRs are spread over them (IPv4 only: the traffic is).
const RULES: usize = 8;

/// One row's rig: its own pair of namespaces and receive kthread, its frames, and what keeps
/// its filter installed (the bare program's fds; the others live in the namespace).
struct Rig {
    filter: Filter,
    cidrs: usize,
    stage: Stage,
    _attached: Option<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)>,
    /// How xdp-filter got attached, when it is this rig's filter (unloaded on drop).
    xdp_filter: Option<peers::XdpFilterLoaded>,
}

impl Drop for Rig {
    fn drop(&mut self) {
        if self.xdp_filter.is_some() {
            peers::unload_xdp_filter(&self.stage.pair.node);
        }
    }
}

/// IPv4 CIDRs the throughput policies can hold: 198.18.0.0/15 has no room for more that are
/// not adjacent, so larger policies are half IPv6 (the IPv4 frames still walk the IPv4 half).
const V4_ONLY_MAX: usize = 50_000;

/// The policy of every throughput rig at `cidrs` CIDRs.
pub fn workload(cidrs: usize) -> Workload {
    if cidrs <= V4_ONLY_MAX {
        Workload::v4_only(RULES, cidrs)
    } else {
        Workload::mixed(RULES, cidrs)
    }
}

/// A pair of namespaces with its receive kthread on a CPU of its own, the policy at a size and
/// its passed and dropped frames: what every throughput measurement sends through.
pub struct Stage {
    pub pair: Pair,
    pub rx: Receiver,
    pub w: Workload,
    pass_frame: Vec<u8>,
    drop_frame: Vec<u8>,
}

impl Stage {
    pub fn new(tag: &str, cidrs: usize) -> anyhow::Result<Self> {
        let pair = Pair::new(tag)?;
        pair.route_sources_via_client()?;
        let rx = Receiver::on_own_cpu(&pair)?;
        let w = workload(cidrs);
        let (node_mac, client_mac) = (parse_mac(&pair.node_mac)?, parse_mac(&pair.client_mac)?);
        let dst = NODE_V4.parse()?;
        let frame = |src| udp_frame(node_mac, client_mac, src, dst, 40000, w.last_port());
        Ok(Self {
            pass_frame: frame(w.allowed_src(Family::V4)),
            drop_frame: frame(Workload::denied_src(Family::V4)),
            pair,
            rx,
            w,
        })
    }

    /// Sends the passed or the dropped frame for `window`.
    pub fn blast(&self, passed: bool, window: Duration) -> anyhow::Result<Rate> {
        let frame = if passed {
            &self.pass_frame
        } else {
            &self.drop_frame
        };
        blast(&self.pair, &self.rx, frame, window)
    }
}

impl Rig {
    fn new(filter: Filter, cidrs: usize) -> anyhow::Result<Self> {
        let stage = Stage::new("tp", cidrs)?;
        Ok(Self {
            filter,
            cidrs: stage.w.distinct,
            stage,
            _attached: None,
            xdp_filter: None,
        })
    }

    fn install(&mut self, ctx: &Ctx) -> anyhow::Result<()> {
        let (pair, w) = (&self.stage.pair, &self.stage.w);
        match self.filter {
            Filter::Nodewall(b) => {
                let cfg = ctx.dir.join("throughput.yaml");
                std::fs::write(&cfg, ctx.nw.config(w, b, ""))?;
                Nodewall::prepare(pair, b)?;
                ctx.nw.apply(&pair.node, &cfg, b)?;
                if let Backend::Xdp { generic } = b {
                    check_xdp_mode(&pair.node, generic)?;
                }
            }
            Filter::NftConcat => {
                peers::load_nft(&pair.node, &peers::nft_concat(w))?;
            }
            Filter::Ipset(xt) => {
                peers::load_ipset(&pair.node, w, xt)?;
            }
            Filter::XdpTools => {
                self.xdp_filter = Some(peers::load_xdp_filter(&pair.node, w)?);
            }
            Filter::IptablesLinear => {
                peers::load_linear(&pair.node, w, LINEAR)?;
            }
            Filter::BareXdpDrop => {
                let ifindex = ifindex(&pair.node, NODE_IF)?;
                // The link detaches when its fd closes, when the rig is dropped.
                let attached = pair
                    .node
                    .spawn(move || {
                        let prog = bpf::load_xdp_drop()?;
                        let link = bpf::attach_xdp_native(&prog, ifindex)?;
                        Ok((prog, link))
                    })
                    .join()
                    .expect("attach thread")?;
                self._attached = Some(attached);
            }
        }
        Ok(())
    }
}

/// Keeps the better of two windows of one measurement: the faster one, the least disturbed
/// by other work on a shared machine.
fn keep_best(best: &mut Option<Rate>, r: Rate) {
    if best.as_ref().is_none_or(|b| r.pps > b.pps) {
        *best = Some(r);
    }
}

/// Measures one filter at every size. The sizes' rigs are all set up first and then measured
/// in rounds, one window per rig in turn, each keeping its best: a disturbance of the shared
/// machine then hits every size alike instead of one row, and the 10k-vs-10 ratios compare
/// like with like. Each rig's no-filter baseline is taken the same way before any filter is
/// installed.
fn measure_sizes(
    ctx: &Ctx,
    filter: Filter,
    sizes: &[usize],
    window: Duration,
    rounds: usize,
    notes: &mut Vec<String>,
) -> anyhow::Result<Vec<Row>> {
    let mut rigs = Vec::new();
    for &cidrs in sizes {
        rigs.push(Rig::new(filter, cidrs)?);
    }
    let mut base = vec![None; rigs.len()];
    for _ in 0..rounds {
        for (i, rig) in rigs.iter().enumerate() {
            keep_best(&mut base[i], rig.stage.blast(true, window)?);
        }
    }
    for rig in &mut rigs {
        rig.install(ctx)?;
        if let Some(x) = &rig.xdp_filter {
            let note = format!(
                "xdp-filter: attached in {} mode, the link runs `{}`{}.",
                x.mode,
                x.attached,
                if x.attached.starts_with("xdpfilt") {
                    " (libxdp attached the program directly, without its dispatcher)"
                } else {
                    ""
                }
            );
            if !notes.contains(&note) {
                notes.push(note);
            }
        }
    }
    let (mut pass, mut drop) = (vec![None; rigs.len()], vec![None; rigs.len()]);
    for _ in 0..rounds {
        for (i, rig) in rigs.iter().enumerate() {
            if filter != Filter::BareXdpDrop {
                keep_best(&mut pass[i], rig.stage.blast(true, window)?);
            }
            keep_best(&mut drop[i], rig.stage.blast(false, window)?);
        }
    }
    Ok(rigs
        .iter()
        .zip(base.into_iter().zip(pass.into_iter().zip(drop)))
        .map(|(rig, (base, (pass, drop)))| Row {
            filter,
            cidrs: rig.cidrs,
            base: base.unwrap_or_default(),
            pass,
            drop: drop.unwrap_or_default(),
        })
        .collect())
}

pub fn run(ctx: &Ctx) -> anyhow::Result<(Section, Vec<Row>)> {
    let mut sec = Section::new(
        "Datapath throughput on veth",
        "The cost of a frame on the node's receive path, and frames per second: a generator thread \
         pinned to one CPU (raw AF_PACKET socket, qdisc bypass, `sendmmsg` in batches of 64) sends one \
         60-byte IPv4 UDP frame over and over from a client namespace into the node namespace over a \
         veth pair. veth would deliver in the sender's context (generator and receive path on one CPU, \
         every cheap drop saturating at the generator's own cost), so the node's veth receives through \
         NAPI for every filter alike (GRO on; TSO off on the client's side, or veth bypasses NAPI for \
         non-GRO frames) with threaded NAPI: the whole receive path (veth ring, XDP, GRO, IP, \
         netfilter, UDP) runs in the kthread `napi/nwb-<id>`, pinned to the other CPU. Its scheduler \
         runtime over the window, divided by the frames received, is the **receive-CPU ns per frame**: \
         the datapath's cost, whoever the bottleneck is. `receive CPU busy` is that runtime's share of \
         the window: well below 100%, the generator (which pays the skb allocation and the veth \
         transmit) is the bottleneck and the Mpps of cheap filters are alike; other jobs on a shared \
         machine also take CPU time from the kthread. The generator is slower than any cheap receive \
         path, so without batching a cheap filter's kthread would sleep after every few frames and \
         its wake-ups, not the filter, would dominate its time (a saturated receive path never \
         sleeps): the node veth uses the kernel's software interrupt coalescing \
         (`gro_flush_timeout` 200 µs, `napi_defer_hard_irqs` 1), as a loaded NIC would; `frames per \
         wakeup` is frames / times the scheduler switched the kthread in (`/proc/PID/schedstat`). Each row is measured on its own pair \
         of namespaces: first the passed frame with no filter (the row's baseline), then the filter \
         is installed and the passed and dropped frames are sent; the sizes of one filter are set up \
         together and measured in rounds, one window per size in turn, so that a disturbance of the \
         shared machine hits every size alike; `cost vs no filter` is the frame's \
         receive-CPU ns / the baseline's. Policies: 8 UDP allow rules over the given IPv4 CIDRs; the \
         passed frame matches only the last rule, the dropped one no rule. `iptables linear` is one \
         ACCEPT rule per CIDR (after the conntrack ESTABLISHED rule, before a final DROP), what one \
         would write by hand. nodewall-xdp (generic) is the agent's own fallback when the driver \
         refuses native XDP, provoked by a 9000-byte MTU on the client's veth (veth refuses native XDP \
         while its peer's MTU exceeds a page); the attach mode is checked. `bare XDP_DROP` (a \
         two-instruction program dropping everything, attached natively) is the cheapest drop there \
         is on veth. It is not free: veth hands XDP an skb the sender already allocated, and copies \
         it into a page when its headroom is short (raw frames' is), costs a NIC driver's XDP never \
         pays, so this rig understates XDP's advantage over the stack. Best of several windows per \
         measurement; `delivered` is the share of sent frames that reached the node's UDP layer \
         (≈100% passed, 0% dropped, else suspect). \
         The peers, each given the same policy: `nft concatenated set (hand-written)` is a table of its \
         own at nodewall's hook (`inet`, prerouting, priority -150) holding one interval set per family \
         of type `ipv4_addr . inet_service` (`ipv6_addr . inet_service`) with one element `cidr . port` \
         per rule and CIDR, and a chain `iifname \"nwb\" jump inbound` → `ct state established,related \
         accept; ip saddr . udp dport @allowed4 accept; ip6 saddr . udp dport @allowed6 accept; drop` \
         (no counters, no logging: what one writes by hand). `iptables-legacy + ipset` and \
         `iptables-nft + ipset` (Calico's classic form) hold one ipset hash:net per rule and family and \
         one INPUT rule per rule (`-i nwb -p udp --dport P -m set --match-set S src -j ACCEPT`) after \
         the conntrack ESTABLISHED rule, then DROP; iptables-nft counts every rule, as it always does. \
         `iptables-nft linear` is the linear ruleset above loaded with iptables-nft. ",
    );
    sec.intro.push_str(peers::XDP_FILTER_POLICY);
    sec.intro.push_str(&format!(
        " xdp-filter is measured up to {} CIDRs (its maps' size). At {} CIDRs and more the policy is half \
         IPv4 and half IPv6 (198.18.0.0/15 has no room for that many non-adjacent IPv4 CIDRs); the IPv4 \
         frames walk the IPv4 half.",
        count(peers::XDP_FILTER_MAX),
        count(V4_ONLY_MAX * 2)
    ));
    let (sizes, window, rounds): (&[usize], _, _) = if ctx.quick {
        (&[10, 1_000], Duration::from_millis(500), 1)
    } else {
        (&[10, 1_000, 10_000], Duration::from_millis(700), 3)
    };
    // The nft targets are stated at 100k CIDRs too: the head-to-head measures them
    // there (a full run only). It runs first, so that the time box cuts contrasts, not targets.
    let duel_sizes: Vec<usize> = if ctx.quick {
        sizes.to_vec()
    } else {
        [sizes, &[100_000]].concat()
    };
    sec.intro.push_str("\n\n");
    sec.intro.push_str(nft_duel::INTRO);
    let duels = if ctx.nw.has(Backend::Nft) {
        // More rounds than the other rows: the figures compared here differ by less.
        nft_duel::measure(ctx, &mut sec, &duel_sizes, window, rounds + 2)
    } else {
        Vec::new()
    };
    sec.intro.push_str("\n\n");
    sec.intro.push_str(size_sweep::INTRO);
    let mut sweeps = Vec::new();
    for b in [Backend::Xdp { generic: false }, Backend::Nft] {
        if !ctx.nw.has(b) {
            continue;
        }
        eprintln!("bench:   {} size sweep on one pair", b.label());
        match size_sweep::measure(ctx, b, sizes, window, rounds + 3) {
            Ok(s) => sweeps.push(s),
            Err(e) => sec.missing(format!("{} size sweep: {e:#}", b.label())),
        }
    }
    // The reference first: cheap, and it is what the other drop rates are read against. Then
    // what the headlines compare, then the contrasts.
    let mut filters = vec![Filter::BareXdpDrop];
    let mut add = |sec: &mut Section, b: Backend| {
        if ctx.nw.has(b) {
            filters.push(Filter::Nodewall(b));
        } else {
            sec.missing(format!(
                "{}: not available yet ({})",
                b.label(),
                ctx.nw.why(b.label())
            ));
        }
    };
    add(&mut sec, Backend::Xdp { generic: false });
    add(&mut sec, Backend::Nft);
    add(&mut sec, Backend::Xdp { generic: true });
    filters.extend([
        Filter::NftConcat,
        Filter::XdpTools,
        Filter::Ipset(Xtables::Legacy),
        Filter::Ipset(Xtables::Nft),
        Filter::IptablesLinear,
    ]);
    let mut rows: Vec<Row> = Vec::new();
    let mut notes = Vec::new();
    for &filter in &filters {
        let sizes_here: Vec<usize> = match filter {
            // The drop-everything reference does not depend on the policy.
            Filter::BareXdpDrop => sizes[..1].to_vec(),
            Filter::XdpTools => sizes
                .iter()
                .copied()
                .filter(|&c| c <= peers::XDP_FILTER_MAX)
                .collect(),
            _ => sizes.to_vec(),
        };
        if ctx.over() {
            sec.missing(format!(
                "{} and after: section time box reached",
                filter.label()
            ));
            break;
        }
        eprintln!(
            "bench:   {} at {} CIDRs (interleaved)",
            filter.label(),
            sizes_here
                .iter()
                .map(|&c| count(c))
                .collect::<Vec<_>>()
                .join(", ")
        );
        match measure_sizes(ctx, filter, &sizes_here, window, rounds, &mut notes) {
            Ok(r) => rows.extend(r),
            Err(e) => sec.missing(format!("{}: {e:#}", filter.label())),
        }
    }
    sec.notes.extend(notes);
    let mut table = Table::new(
        "Cost = receive-CPU ns per frame / the no-filter passed frame's, same pair. Mpps = million \
         frames per second; its ratio is the filter's rate / the no-filter rate of the same pair.",
        &[
            "cost vs no filter",
            "filter",
            "CIDRs",
            "frame",
            "receive-CPU ns/frame",
            "receive CPU busy",
            "frames per wakeup",
            "Mpps",
            "Mpps vs no filter",
            "no-filter Mpps",
            "delivered",
        ],
    );
    for r in &rows {
        let measured = [
            r.pass.as_ref().map(|rate| ("passed", rate)),
            Some(("dropped", &r.drop)),
        ];
        for (kind, rate) in measured.into_iter().flatten() {
            table.row(vec![
                ratio(rate.rx_ns / r.base.rx_ns),
                r.filter.label().into(),
                if r.filter == Filter::BareXdpDrop {
                    "–".into()
                } else {
                    count(r.cidrs)
                },
                kind.into(),
                format!("{:.0}", rate.rx_ns),
                format!("{:.0}%", rate.rx_busy * 100.0),
                format!("{:.0}", rate.per_wakeup),
                mpps(rate.pps),
                ratio(rate.pps / r.base.pps),
                mpps(r.base.pps),
                format!("{:.0}%", rate.delivered * 100.0),
            ]);
        }
    }
    sec.tables.push(table);
    headlines(
        &mut sec,
        &rows,
        &sweeps,
        *sizes.last().expect("sizes"),
        sizes[0],
    );
    nft_duel::report(&mut sec, &duels);
    size_sweep::report(&mut sec, &sweeps);
    peer_headlines(&mut sec, &rows, *sizes.last().expect("sizes"));
    Ok((sec, rows))
}

fn headlines(sec: &mut Section, rows: &[Row], sweeps: &[Sweep], big: usize, small: usize) {
    let row = |f: Filter, c: usize| rows.iter().find(|r| r.filter == f && r.cidrs == c);
    let cost_at = |f: Filter, c: usize| row(f, c).map(Row::drop_cost_ratio);
    let rate_at = |f: Filter, c: usize| row(f, c).map(Row::drop_ratio);
    let (xdp, nft) = (
        Filter::Nodewall(Backend::Xdp { generic: false }),
        Filter::Nodewall(Backend::Nft),
    );
    sec.headline(
        &format!(
            "receive-CPU ns per dropped frame, nft / XDP (native), {} CIDRs (each vs its no-filter baseline)",
            count(big)
        ),
        cost_at(nft, big).zip(cost_at(xdp, big)).map(|(a, b)| a / b),
        "≥ 3×",
        |r| r >= 3.0,
    );
    sec.headline(
        &format!(
            "XDP (native) drop rate vs nft drop rate, {} CIDRs (Mpps, each vs its no-filter baseline)",
            count(big)
        ),
        rate_at(xdp, big).zip(rate_at(nft, big)).map(|(a, b)| a / b),
        INFO,
        |_| true,
    );
    // Frames per receive-CPU second, so that ≥ 1 still means "no slower with more CIDRs".
    let per_cpu = |f: Filter| cost_at(f, small).zip(cost_at(f, big)).map(|(s, b)| s / b);
    for b in [Backend::Xdp { generic: false }, Backend::Nft] {
        let f = Filter::Nodewall(b);
        sec.headline(
            &format!(
                "{} dropped frames per receive-CPU second at {} CIDRs vs at {}, one pair, sizes \
                 in the same rounds (size sweep)",
                f.label(),
                count(big),
                count(small)
            ),
            sweeps
                .iter()
                .find(|s| s.backend == b)
                .and_then(|s| s.flatness(small, big)),
            "≥ 0.95×",
            |r| r >= 0.95,
        );
    }
    sec.headline(
        &format!(
            "{} program ns per dropped frame on veth at {} CIDRs vs at {} (kernel run-time \
             stats, size sweep, median of rounds)",
            xdp.label(),
            count(big),
            count(small)
        ),
        sweeps
            .iter()
            .find(|s| matches!(s.backend, Backend::Xdp { .. }))
            .and_then(|s| s.prog_ratio(small, big)),
        INFO,
        |_| true,
    );
    let reference = rows
        .iter()
        .find(|r| r.filter == Filter::BareXdpDrop)
        .map(Row::drop_cost_ratio);
    sec.headline(
        &format!(
            "receive-CPU ns per dropped frame, nft at {} CIDRs / bare XDP_DROP (what this rig can show at most, ± noise)",
            count(big)
        ),
        cost_at(nft, big).zip(reference).map(|(a, b)| a / b),
        INFO,
        |_| true,
    );
    sec.headline(
        &format!(
            "iptables-nft linear dropped frames per receive-CPU second at {} CIDRs vs at {} (contrast)",
            count(big),
            count(small)
        ),
        per_cpu(Filter::IptablesLinear),
        INFO,
        |_| true,
    );
}

/// A filter's receive-CPU cost of a frame relative to its own no-filter baseline, passed or
/// dropped.
fn cost(rows: &[Row], f: Filter, cidrs: usize, passed: bool) -> Option<f64> {
    let r = rows.iter().find(|r| r.filter == f && r.cidrs == cidrs)?;
    let rate = if passed { r.pass.as_ref()? } else { &r.drop };
    Some(rate.rx_ns / r.base.rx_ns)
}

/// Contrasts with the peers on pairs of their own (the nft targets are read from the
/// head-to-head).
fn peer_headlines(sec: &mut Section, rows: &[Row], big: usize) {
    let nft = Filter::Nodewall(Backend::Nft);
    let xdp = Filter::Nodewall(Backend::Xdp { generic: false });
    for (ours, peer) in [
        (xdp, Filter::XdpTools),
        (nft, Filter::Ipset(Xtables::Legacy)),
        (nft, Filter::Ipset(Xtables::Nft)),
    ] {
        sec.headline(
            &format!(
                "receive-CPU ns per dropped frame, {} / {}, {} CIDRs (each vs its no-filter baseline)",
                ours.label(),
                peer.label(),
                count(big)
            ),
            cost(rows, ours, big, false)
                .zip(cost(rows, peer, big, false))
                .map(|(a, b)| a / b),
            INFO,
            |_| true,
        );
    }
}
