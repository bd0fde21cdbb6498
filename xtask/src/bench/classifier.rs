//! Section 1: the XDP classifier's cost per packet, from `BPF_PROG_TEST_RUN` (the kernel runs
//! the program `repeat` times on one frame and reports the mean), against a bare `XDP_PASS`
//! program and xdp-filter (xdp-tools) run on the same frame, interleaved, in the same namespace.

use std::os::fd::OwnedFd;

use super::bpf;
use super::netns::Netns;
use super::netns::{Pair, NODE_IF, NODE_V4, NODE_V6};
use super::nodewall::{check_xdp_mode, ifindex, xdp_prog_id, Backend};
use super::peers;
use super::report::{count, opt_ratio, ratio, Section, Table, INFO};
use super::workload::{parse_mac, udp_frame, Family, Workload};
use super::Ctx;

/// How a policy's CIDRs are laid out.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Shape {
    /// [`Workload::mixed`]: half IPv4, half IPv6, packed in ascending order.
    Mixed,
    /// [`Workload::scattered_v6`]: IPv6 /64s scattered over fd00::/8 (and one IPv4 CIDR per rule).
    ScatteredV6,
    /// [`Workload::hosts_v4`]: IPv4 /32s spread over 198.18.0.0/15 (and one IPv6 CIDR per rule).
    HostsV4,
}

/// Scattered IPv6 /64s in the scattered policy (the figure).
const SCATTERED: usize = 5_000;
/// The scale target: a million source prefixes (full runs only), scattered IPv6 /64s
/// (IPv4 test space holds far fewer distinct prefixes).
const MILLION: usize = 1_000_000;
/// `BPF_PROG_TEST_RUN` iterations per run.
const REPEAT: u32 = 300_000;
/// IPv4 /32s in the hosts policy (the figure; full runs only).
const HOSTS: usize = 100_000;

/// One measured cell.
pub struct Cell {
    pub rules: usize,
    pub cidrs: usize,
    pub shape: Shape,
    pub family: Family,
    pub allowed: bool,
    pub nodewall_ns: f64,
    pub parse_ns: f64,
    pub bare_ns: f64,
    /// xdp-filter on the same frame, when its maps hold the policy.
    pub xdp_filter_ns: Option<f64>,
    /// The array-lookup floor on the same frame, when the eBPF object has it.
    pub floor_ns: Option<f64>,
    /// The stateful floor (the array-lookup floor plus one flow-table hash lookup), when the
    /// eBPF object has it.
    pub floor_ct_ns: Option<f64>,
    /// nodewall under the smallest policy of as many rules, on that policy's frame of the same
    /// family and verdict, measured in the same rounds (see [`Reference`]).
    pub reference_ns: Option<f64>,
    /// The median over the rounds of nodewall's time divided by the reference's in the same
    /// round (the two run back to back).
    pub vs_reference: Option<f64>,
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
    /// xdp-filter's best ns and its verdict.
    peer: Option<(f64, u32)>,
    floor: Option<f64>,
    floor_ct: Option<f64>,
    reference: Option<f64>,
    /// Median of nodewall / reference per round.
    vs_reference: Option<f64>,
}

/// nodewall under the smallest policy, attached in a namespace pair of its own and kept there
/// for the whole section: each larger policy's cells run it in the same rounds, so "its own
/// 10-CIDR cost" is measured beside the cell instead of a minute earlier, when the host may
/// have been faster or slower (cells of one run drift by ±15% on this VM; programs measured in
/// the same rounds move together).
struct Reference {
    prog: OwnedFd,
    workload: Workload,
    _pair: Pair,
}

/// How each program is run: on which ingress interface, how many times per run, how many runs.
#[derive(Clone, Copy)]
struct Runs {
    ifindex: u32,
    repeat: u32,
    rounds: usize,
}

/// Runs the three programs `rounds` times each, alternating, and keeps each one's best (the
/// least disturbed by other work on a shared machine). The reference runs right before
/// nodewall in every round, and their ratio is taken per round: a ratio of two bests pairs
/// runs from different moments, and one quiet run of the reference against none of nodewall
/// read 1.21× for a policy that reads 1.00-1.04× in every other run of the section.
fn measure(
    prog: &OwnedFd,
    refs: &Refs,
    peer: Option<&OwnedFd>,
    frame: &[u8],
    reference: Option<(&OwnedFd, &[u8])>,
    runs: Runs,
) -> anyhow::Result<Measured> {
    let Runs {
        ifindex,
        repeat,
        rounds,
    } = runs;
    let (mut best_p, mut best_q, mut best_b, mut verdict) = (u32::MAX, u32::MAX, u32::MAX, 0);
    let mut best_peer: Option<(u32, u32)> = None;
    let mut best_floor: Option<u32> = None;
    let mut best_floor_ct: Option<u32> = None;
    let mut best_ref: Option<u32> = None;
    let mut paired = Vec::new();
    for _ in 0..rounds {
        if let Some(floor) = &refs.floor {
            let (_, t) = bpf::test_run(floor, frame, ifindex, repeat)?;
            best_floor = Some(best_floor.map_or(t, |b| b.min(t)));
        }
        if let Some(floor_ct) = &refs.floor_ct {
            let (_, t) = bpf::test_run(floor_ct, frame, ifindex, repeat)?;
            best_floor_ct = Some(best_floor_ct.map_or(t, |b| b.min(t)));
        }
        if let Some(peer) = peer {
            let (v, t) = bpf::test_run(peer, frame, ifindex, repeat)?;
            best_peer = Some((best_peer.map_or(t, |b| b.0.min(t)), v));
        }
        let (_, b) = bpf::test_run(&refs.bare, frame, ifindex, repeat)?;
        let (_, q) = bpf::test_run(&refs.parse, frame, ifindex, repeat)?;
        let reference_t = match reference {
            Some((prog, frame)) => Some(bpf::test_run(prog, frame, ifindex, repeat)?.1),
            None => None,
        };
        let (v, p) = bpf::test_run(prog, frame, ifindex, repeat)?;
        if let Some(t) = reference_t {
            best_ref = Some(best_ref.map_or(t, |b| b.min(t)));
            paired.push(f64::from(p) / f64::from(t.max(1)));
        }
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
        peer: best_peer.map(|(t, v)| (t as f64, v)),
        floor: best_floor.map(f64::from),
        floor_ct: best_floor_ct.map(f64::from),
        reference: best_ref.map(f64::from),
        vs_reference: median(paired),
    })
}

/// The middle value (the mean of the two middle ones for an even count).
fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// Applies the smallest policy of `rules` rules in a namespace pair of its own and opens its
/// XDP program (see [`Reference`]).
fn start_reference(
    ctx: &Ctx,
    backend: Backend,
    rules: usize,
    cidrs: usize,
) -> anyhow::Result<Reference> {
    let pair = Pair::new("clsref")?;
    let workload = Workload::mixed(rules, cidrs);
    let cfg = ctx.dir.join("classifier-reference.yaml");
    std::fs::write(&cfg, ctx.nw.config(&workload, backend, ""))?;
    ctx.nw.apply(&pair.node, &cfg, backend)?;
    check_xdp_mode(&pair.node, false)?;
    let prog = bpf::prog_fd_by_id(xdp_prog_id(&pair.node)?)?;
    Ok(Reference {
        prog,
        workload,
        _pair: pair,
    })
}

/// xdp-filter loaded with `w`'s first hosts, its program opened, then unloaded: the fd keeps
/// the program and its maps alive for test runs while nodewall attaches to the same interface.
fn load_xdp_filter(ns: &Netns, w: &Workload) -> anyhow::Result<(OwnedFd, String)> {
    let xf = peers::XdpFilter::load(ns, w)?;
    let how = format!(
        "xdp-filter attached in {} mode, the link ran `{}`; the test runs run its own program by id",
        xf.loaded.mode, xf.loaded.attached
    );
    Ok((bpf::prog_fd_by_id(xf.prog_id()?)?, how))
}

/// The reference programs: a bare `XDP_PASS` (the headline's baseline) and nodewall's own
/// header parsing alone (what any classifier of these headers pays before classifying).
struct Refs {
    bare: OwnedFd,
    parse: OwnedFd,
    /// [`FLOOR`], when the eBPF object has it.
    floor: Option<OwnedFd>,
    /// [`FLOOR_CT`], when the eBPF object has it.
    floor_ct: Option<OwnedFd>,
}

/// The floor for the classifier, when the eBPF object provides it: the same parse, two
/// direct array lookups and a counter, nothing else.
const FLOOR: &str = "nodewall_bench_floor";
/// The stateful floor, when the eBPF object provides it: [`FLOOR`] plus one lookup of the
/// packet's flow key in an LRU hash of the flow table's type, what any classifier that tracks
/// flows pays at least. Loaded on its own, so its flow table is its own and empty: every
/// lookup misses, as the classifier's first one (assured flows) does on these frames, whose
/// flows are never assured (see `ebpf/src/bench.rs`).
const FLOOR_CT: &str = "nodewall_bench_floor_ct";

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
        &format!("ns per packet of nodewall's XDP program under `BPF_PROG_TEST_RUN` against a bare `XDP_PASS` \
         program (two instructions) on the same 60/80-byte UDP frame, same namespace and ingress \
         interface. Each figure is the best of several alternating runs of `repeat` iterations each \
         (the kernel's own mean per run). The parse-only column is a third program from nodewall's own \
         eBPF object that parses the Ethernet, IP and UDP headers exactly as the classifier does and passes: \
         nodewall minus parse-only is the cost of classifying. Policies: N UDP allow rules over the given number of distinct \
         CIDRs (half IPv4, half IPv6); the allowed packet matches only the last rule, the dropped one \
         matches none (default-deny), so both take the longest path. The scattered policy holds 5,000 IPv6 \
         /64s spread over fd00::/8 (no two share a byte after `fd`, so each needs its own path through a \
         byte-stride trie) and one IPv4 CIDR per rule; its IPv6 cells are compared with the same packets \
         at the smallest policy. The hosts policy (full runs) holds 100,000 IPv4 /32s evenly spread over \
         198.18.0.0/15, dealt to the rules in turn so that no rule holds two adjacent addresses (none merge \
         into a shorter prefix), and one IPv6 CIDR per rule; its IPv4 cells are compared the same way. \
         Each cell of a larger policy at the most rules also runs nodewall under the smallest policy \
         (attached in a namespace of its own for the whole section) on that policy's frame of the same \
         family and verdict, right before nodewall in every round: the \"vs its own 10-CIDR cost\" figures \
         are the median over the rounds of nodewall's time divided by the reference's in the same round \
         (the \"paired\" column), so that the host's drift between cells (±15% on this VM) and a \
         disturbed run of either program cancel. \
         The xdp-filter column is xdp-filter's \
         program (xdp-tools), loaded by `xdp-filter load` on the same interface, its address maps filled, \
         opened by id and unloaded again, run on the same frames in the same rounds. \
         The array-lookup floor (`{FLOOR}`) parses as the classifier does, makes one direct array load by \
         the source and one by the destination port, and bumps a counter: a classifier with no state. \
         The stateful floor (`{FLOOR_CT}`) is the same plus one lookup of the packet's flow key \
         (as connection tracking builds it) in an LRU hash of the flow table's type, key and value: \
         the least any classifier that tracks flows pays, since it cannot tell return traffic from new \
         flows without hashing the key. It runs with a flow table of its own, empty, so its lookup \
         misses on every frame. nodewall makes one lookup too: the bench's port has only unassured \
         flows, so only its table of new flows is hashed, where the allowed packet's flow is once the \
         first run has opened it and the dropped packet's is not. Runs are short enough for every \
         cell to fit the section's time box on a CPU whose calls and returns are mitigated (each \
         figure is the kernel's mean per packet, whatever the run's length). "),
    );
    sec.intro.push_str(peers::XDP_FILTER_POLICY);
    let repeat: u32 = REPEAT;
    let rounds = if ctx.quick { 2 } else { 7 };
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
        floor: bpf::load_bench(&object, FLOOR)?,
        floor_ct: bpf::load_bench(&object, FLOOR_CT)?,
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
            "array-lookup floor ns/pkt",
            "stateful floor ns/pkt",
            "smallest policy, same rounds ns/pkt",
            "nodewall / smallest policy, paired (median of rounds)",
            "xdp-filter ns/pkt",
            "nodewall / xdp-filter",
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
    let mut peer_too_big = false;
    let mut peer_how = None;
    // Every size of mixed policies, then the scattered one at the most rules.
    let big_rules = *rules_list.last().expect("sizes");
    let reference = if ctx.nw.has(backend) {
        match start_reference(ctx, backend, big_rules, cidr_list[0]) {
            Ok(r) => Some(r),
            Err(e) => {
                sec.missing(format!(
                    "the interleaved {}-CIDR reference: {e:#}",
                    cidr_list[0]
                ));
                None
            }
        }
    } else {
        None
    };
    let plan = rules_list
        .iter()
        .flat_map(|&r| cidr_list.iter().map(move |&c| (r, c, Shape::Mixed)))
        .chain([(big_rules, SCATTERED, Shape::ScatteredV6)])
        .chain((!ctx.quick).then_some((big_rules, HOSTS, Shape::HostsV4)))
        .chain((!ctx.quick).then_some((big_rules, MILLION, Shape::ScatteredV6)));
    for (rules, cidrs, shape) in plan {
        if !ctx.nw.has(backend) {
            break;
        }
        let size = match shape {
            Shape::Mixed => format!("{} CIDRs", count(cidrs)),
            Shape::ScatteredV6 => format!("{} scattered IPv6 /64s", count(cidrs)),
            Shape::HostsV4 => format!("{} IPv4 /32s", count(cidrs)),
        };
        if ctx.over() {
            sec.missing(format!(
                "{rules} rules × {size} and larger: section time box reached"
            ));
            break;
        }
        let w = match shape {
            Shape::Mixed => Workload::mixed(rules, cidrs),
            Shape::ScatteredV6 => Workload::scattered_v6(rules, cidrs),
            Shape::HostsV4 => Workload::hosts_v4(rules, cidrs),
        };
        // xdp-filter first, so that nodewall can attach after it is unloaded.
        let peer = if w.distinct / 2 > peers::XDP_FILTER_MAX {
            peer_too_big = true;
            None
        } else {
            match load_xdp_filter(&pair.node, &w) {
                Ok((fd, how)) => {
                    peer_how = Some(how);
                    Some(fd)
                }
                Err(e) => {
                    sec.missing(format!("xdp-filter at {rules} rules × {size}: {e:#}"));
                    None
                }
            }
        };
        let cfg = dir.join("classifier.yaml");
        std::fs::write(&cfg, ctx.nw.config(&w, backend, ""))?;
        let installed = ctx
            .nw
            .apply(&pair.node, &cfg, backend)
            .and_then(|_| check_xdp_mode(&pair.node, false));
        if let Err(e) = installed {
            sec.missing(format!("{rules} rules × {size}: {e:#}"));
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
                // The larger policies of the reference's rule count run it beside them.
                let ref_frame = reference
                    .as_ref()
                    .filter(|r| rules == r.workload.rules && cidrs != cidr_list[0])
                    .map(|r| {
                        let src = if allowed {
                            r.workload.allowed_src(family)
                        } else {
                            Workload::denied_src(family)
                        };
                        let port = r.workload.last_port();
                        (
                            &r.prog,
                            udp_frame(node_mac, client_mac, src, dst, 40000, port),
                        )
                    });
                let with = ref_frame.as_ref().map(|(p, f)| (*p, f.as_slice()));
                let runs = Runs {
                    ifindex: ifx,
                    repeat,
                    rounds,
                };
                let m = measure(&prog, &refs, peer.as_ref(), &frame, with, runs)?;
                let expected = if allowed {
                    bpf::XDP_PASS
                } else {
                    bpf::XDP_DROP
                };
                let verdicts = [
                    ("nodewall", Some(m.verdict)),
                    ("xdp-filter", m.peer.map(|p| p.1)),
                ];
                for (who, verdict) in verdicts {
                    if verdict.is_some_and(|v| v != expected) {
                        sec.notes.push(format!(
                                "**verdict mismatch** at {rules} rules × {size}, {}, {}: {who} returned {verdict:?}, expected {expected}",
                                family.label(),
                                if allowed { "allowed" } else { "dropped" }
                            ));
                    }
                }
                let cell = Cell {
                    rules,
                    cidrs: w.distinct,
                    shape,
                    family,
                    allowed,
                    nodewall_ns: m.nodewall,
                    parse_ns: m.parse,
                    bare_ns: m.bare,
                    xdp_filter_ns: m.peer.map(|p| p.0),
                    floor_ns: m.floor,
                    floor_ct_ns: m.floor_ct,
                    reference_ns: m.reference,
                    vs_reference: m.vs_reference,
                };
                table.row(vec![
                    ratio(cell.ratio()),
                    rules.to_string(),
                    match shape {
                        Shape::Mixed => count(cell.cidrs),
                        Shape::ScatteredV6 => {
                            format!("{} (scattered IPv6 /64s + {rules} IPv4)", count(cell.cidrs))
                        }
                        Shape::HostsV4 => {
                            format!("{} (IPv4 /32s + {rules} IPv6)", count(cell.cidrs))
                        }
                    },
                    family.label().into(),
                    if allowed { "allowed" } else { "dropped" }.into(),
                    format!("{:.0}", m.nodewall),
                    format!("{:.0}", m.parse),
                    format!("{:.0}", m.bare),
                    m.floor
                        .map(|f| format!("{f:.0}"))
                        .unwrap_or_else(|| "–".into()),
                    m.floor_ct
                        .map(|f| format!("{f:.0}"))
                        .unwrap_or_else(|| "–".into()),
                    m.reference
                        .map(|f| format!("{f:.0}"))
                        .unwrap_or_else(|| "–".into()),
                    opt_ratio(m.vs_reference),
                    m.peer
                        .map(|p| format!("{:.0}", p.0))
                        .unwrap_or_else(|| "–".into()),
                    opt_ratio(m.peer.map(|p| m.nodewall / p.0)),
                ]);
                cells.push(cell);
            }
        }
        drop(prog);
        drop(peer);
        ctx.nw.flush(&pair.node, backend)?;
    }
    if !table.rows.is_empty() {
        sec.tables.push(table);
    }
    sec.notes.extend(peer_how.map(|h| format!("{h}.")));
    if peer_too_big {
        sec.missing(format!(
            "xdp-filter above {} CIDRs: its address maps hold {} per family",
            count(2 * peers::XDP_FILTER_MAX),
            count(peers::XDP_FILTER_MAX)
        ));
    }
    let worst = |rules: usize, cidrs: usize| {
        cells
            .iter()
            .filter(|c| c.shape == Shape::Mixed && c.rules == rules && c.cidrs == cidrs)
            .map(Cell::ratio)
            .reduce(f64::max)
    };
    let big_cidrs = 10_000;
    let big: Vec<&Cell> = cells
        .iter()
        .filter(|c| c.shape == Shape::Mixed && c.rules == big_rules && c.cidrs == big_cidrs)
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
        .filter(|c| c.shape == Shape::Mixed && c.rules == big_rules)
        .map(|c| c.cidrs)
        .max()
        .unwrap_or(*cidr_list.last().expect("sizes"));
    let small = cidr_list[0];
    // A larger policy's cells against the smallest policy at as many rules, on the same kind
    // of packet: measured in the same rounds where the reference ran, else its own cell.
    let vs_small = |shape: Shape, families: &[Family], size: usize| {
        cells
            .iter()
            .filter(|c| c.shape == shape && c.rules == big_rules && c.cidrs == size)
            .filter(|c| families.contains(&c.family))
            .filter_map(|c| {
                if let Some(r) = c.vs_reference {
                    return Some(r);
                }
                let own = c.reference_ns.or_else(|| {
                    cells
                        .iter()
                        .find(|o| {
                            o.shape == Shape::Mixed
                                && o.rules == c.rules
                                && o.cidrs == small
                                && o.family == c.family
                                && o.allowed == c.allowed
                        })
                        .map(|o| o.nodewall_ns)
                });
                own.map(|o| c.nodewall_ns / o)
            })
            .reduce(f64::max)
    };
    let flat = vs_small(Shape::Mixed, &[Family::V4, Family::V6], large);
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
    // nodewall's worst ratio to another program on the same frames, at the big size.
    let worst_vs = |other: fn(&Cell) -> Option<f64>| {
        big.iter()
            .filter_map(|c| other(c).map(|o| c.nodewall_ns / o))
            .reduce(f64::max)
    };
    let worst_vs_peer = worst_vs(|c| c.xdp_filter_ns);
    sec.headline(
        &format!(
            "XDP classifier, nodewall-xdp / xdp-filter, {big_rules} rules × 10k CIDRs (worst of v4/v6, allowed/dropped)"
        ),
        worst_vs_peer,
        INFO,
        |_| true,
    );
    let mut sizes: Vec<usize> = cells
        .iter()
        .filter(|c| c.shape == Shape::ScatteredV6)
        .map(|c| c.cidrs)
        .collect();
    sizes.dedup();
    for size in sizes {
        sec.headline(
            &format!(
                "XDP classifier at {} scattered IPv6 /64s vs its own {small}-CIDR cost ({big_rules} rules, worst of IPv6 allowed/dropped)",
                count(size)
            ),
            vs_small(Shape::ScatteredV6, &[Family::V6], size),
            "≤ 1.1×",
            |r| r <= 1.1,
        );
    }
    let hosts = cells
        .iter()
        .find(|c| c.shape == Shape::HostsV4)
        .map(|c| c.cidrs);
    let what = format!(
        "XDP classifier at {} IPv4 /32s vs its own {small}-CIDR cost ({big_rules} rules, worst of IPv4 allowed/dropped; \
         the /32s fill 76% of 198.18.0.0/15, the bench's only IPv4 range, consecutive ones in different rules so that none merge)",
        count(HOSTS)
    );
    match hosts {
        Some(size) => sec.headline(
            &what,
            vs_small(Shape::HostsV4, &[Family::V4], size),
            "≤ 1.1×",
            |r| r <= 1.1,
        ),
        None => sec.not_measured(&what, "≤ 1.1×", "measured in full runs only"),
    }
    let floor = worst_vs(|c| c.floor_ns);
    let what = format!(
        "XDP classifier vs the array-lookup floor (parse + two direct array lookups + a counter, \
         `{FLOOR}`), {big_rules} rules × 10k CIDRs, worst of v4/v6 allowed/dropped"
    );
    match floor {
        Some(_) => sec.headline(&what, floor, "≤ 1.15×", |r| r <= 1.15),
        None => sec.not_measured(
            &what,
            "≤ 1.15×",
            if refs.floor.is_some() {
                "no cell at this size"
            } else {
                "the eBPF object has no such program yet; the parse-only column is the nearest"
            },
        ),
    }
    // Contrast: a stateful classifier hashes the flow key of every packet that may belong to
    // a flow, which the array-lookup floor never does.
    let floor_ct = worst_vs(|c| c.floor_ct_ns);
    let what = format!(
        "XDP classifier vs the stateful floor (floor + one flow-table hash lookup), \
         {big_rules} rules × 10k CIDRs, worst of v4/v6 allowed/dropped"
    );
    match floor_ct {
        Some(_) => sec.headline(&what, floor_ct, INFO, |_| true),
        None => sec.not_measured(
            &what,
            INFO,
            if refs.floor_ct.is_some() {
                "no cell at this size"
            } else {
                "the eBPF object has no such program yet"
            },
        ),
    }
    Ok((sec, cells))
}
