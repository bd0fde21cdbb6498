//! Section 2: packets per second through the node's receive path on a veth pair, for passed and
//! dropped IPv4 UDP frames, with no filter, nodewall's backends, and linear iptables rules.

use std::time::Duration;

use super::netns::{Pair, NODE_V4};
use super::nodewall::{check_xdp_mode, Backend, Nodewall};
use super::peers;
use super::report::{count, mpps, ratio, Section, Table, INFO};
use super::traffic::{blast, Rate};
use super::workload::{parse_mac, udp_frame, Family, Workload};
use super::Ctx;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Filter {
    None,
    Nodewall(Backend),
    IptablesLinear,
}

impl Filter {
    pub fn label(self) -> &'static str {
        match self {
            Filter::None => "no filter",
            Filter::Nodewall(b) => b.label(),
            Filter::IptablesLinear => "iptables linear",
        }
    }
}

pub struct Row {
    pub filter: Filter,
    pub cidrs: usize,
    pub pass: Rate,
    pub drop: Option<Rate>,
}

/// Rules in every throughput policy; the CIDRs are spread over them (IPv4 only: the traffic is).
const RULES: usize = 8;

fn measure(ctx: &Ctx, filter: Filter, cidrs: usize, window: Duration, rounds: usize) -> anyhow::Result<Row> {
    let pair = Pair::new("tp")?;
    pair.route_sources_via_client()?;
    let w = Workload::v4_only(RULES, cidrs);
    match filter {
        Filter::None => {}
        Filter::Nodewall(b) => {
            let cfg = ctx.dir.join("throughput.yaml");
            std::fs::write(&cfg, ctx.nw.config(&w, b, ""))?;
            Nodewall::prepare(&pair, b)?;
            ctx.nw.apply(&pair.node, &cfg, b)?;
            if let Backend::Xdp { generic } = b {
                check_xdp_mode(&pair.node, generic)?;
            }
        }
        Filter::IptablesLinear => {
            peers::load_linear(&pair.node, &w)?;
        }
    }
    let (node_mac, client_mac) = (parse_mac(&pair.node_mac)?, parse_mac(&pair.client_mac)?);
    let dst = NODE_V4.parse()?;
    let tg = ctx.dir.join("trafgen.cfg");
    let pass_frame = udp_frame(node_mac, client_mac, w.allowed_src(Family::V4), dst, 40000, w.last_port());
    let pass = blast(&pair, &pass_frame, window, rounds, &tg)?;
    let drop = if filter == Filter::None {
        None
    } else {
        let frame = udp_frame(node_mac, client_mac, Workload::denied_src(Family::V4), dst, 40000, w.last_port());
        Some(blast(&pair, &frame, window, rounds, &tg)?)
    };
    Ok(Row { filter, cidrs: w.distinct, pass, drop })
}

pub fn run(ctx: &Ctx) -> anyhow::Result<(Section, Vec<Row>)> {
    let mut sec = Section::new(
        "Datapath throughput on veth",
        "Frames per second through the node's receive path: `trafgen` (one process, one CPU, TX ring, \
         qdisc bypass) sends one 60-byte IPv4 UDP frame over and over from a client namespace into the \
         node namespace over a veth pair; veth delivers in the sender's context, so the rate is bounded \
         by the receive path, filter included. Policies: 8 UDP allow rules over the given IPv4 CIDRs; \
         the passed frame matches only the last rule, the dropped one no rule. `iptables linear` is one \
         ACCEPT rule per CIDR (plus the conntrack ESTABLISHED rule first and a final DROP), what one \
         would write by hand. nodewall-xdp (generic) is the agent's own fallback when the driver refuses \
         native XDP, provoked by a 9000-byte MTU on the client's veth (veth refuses native XDP while its \
         peer's MTU exceeds a page); the attach mode is checked. Best of several windows per row; `delivered` is the share of sent frames \
         that reached the node's UDP layer (≈100% passed, 0% dropped, else the row is suspect).",
    );
    let (sizes, window, rounds): (&[usize], _, _) = if ctx.quick {
        (&[10, 1_000], Duration::from_millis(500), 1)
    } else {
        (&[10, 1_000, 10_000], Duration::from_millis(1200), 2)
    };
    let mut filters = vec![Filter::None];
    for b in [Backend::Xdp { generic: false }, Backend::Xdp { generic: true }, Backend::Nft] {
        if ctx.nw.has(b) {
            filters.push(Filter::Nodewall(b));
        } else {
            sec.missing(format!("{}: not available yet ({})", b.label(), ctx.nw.why(b.label())));
        }
    }
    filters.push(Filter::IptablesLinear);
    let mut rows: Vec<Row> = Vec::new();
    'all: for &filter in &filters {
        let sizes_here: &[usize] = if filter == Filter::None { &sizes[..1] } else { sizes };
        for &cidrs in sizes_here {
            if ctx.over() {
                sec.missing(format!("{} at {} CIDRs and after: section time box reached", filter.label(), count(cidrs)));
                break 'all;
            }
            eprintln!("bench:   {} at {} CIDRs", filter.label(), count(cidrs));
            match measure(ctx, filter, cidrs, window, rounds) {
                Ok(r) => rows.push(r),
                Err(e) => sec.missing(format!("{} at {} CIDRs: {e:#}", filter.label(), count(cidrs))),
            }
        }
    }
    let base = rows.iter().find(|r| r.filter == Filter::None).map(|r| r.pass.pps);
    let mut table = Table::new(
        "Mpps = million frames per second; ratios are against the no-filter passed rate of this run.",
        &["ratio vs no filter", "filter", "CIDRs", "frame", "Mpps", "delivered"],
    );
    for r in &rows {
        let kinds = [("passed", Some(&r.pass)), ("dropped", r.drop.as_ref())];
        for (kind, rate) in kinds {
            let Some(rate) = rate else { continue };
            let cidrs = if r.filter == Filter::None { "–".to_string() } else { count(r.cidrs) };
            table.row(vec![
                base.map(|b| ratio(rate.pps / b)).unwrap_or_else(|| "n/a".into()),
                r.filter.label().into(),
                cidrs,
                kind.into(),
                mpps(rate.pps),
                format!("{:.0}%", rate.delivered * 100.0),
            ]);
        }
    }
    sec.tables.push(table);
    headlines(&mut sec, &rows, *sizes.last().expect("sizes"), sizes[0]);
    Ok((sec, rows))
}

fn headlines(sec: &mut Section, rows: &[Row], big: usize, small: usize) {
    let drop_at = |f: Filter, c: usize| rows.iter().find(|r| r.filter == f && r.cidrs == c).and_then(|r| r.drop.as_ref()).map(|d| d.pps);
    let (xdp, nft) = (Filter::Nodewall(Backend::Xdp { generic: false }), Filter::Nodewall(Backend::Nft));
    sec.headline(
        &format!("XDP (native) drop rate vs nft drop rate, {} CIDRs", count(big)),
        drop_at(xdp, big).zip(drop_at(nft, big)).map(|(a, b)| a / b),
        "≥ 3×",
        |r| r >= 3.0,
    );
    for f in [xdp, nft] {
        sec.headline(
            &format!("{} drop rate at {} CIDRs vs at {}", f.label(), count(big), count(small)),
            drop_at(f, big).zip(drop_at(f, small)).map(|(a, b)| a / b),
            "≥ 0.95×",
            |r| r >= 0.95,
        );
    }
    sec.headline(
        &format!("iptables linear drop rate at {} CIDRs vs at {} (contrast)", count(big), count(small)),
        drop_at(Filter::IptablesLinear, big).zip(drop_at(Filter::IptablesLinear, small)).map(|(a, b)| a / b),
        INFO,
        |_| true,
    );
}
