//! PNG plots of cost against CIDR count, drawn with plotters' bitmap backend and a font read from
//! Debian's fonts-dejavu-core (no fontconfig lookup, so the output is the same everywhere).

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;
use plotters::style::FontStyle;

use super::apply::{self, Method};
use super::classifier::{Cell, Shape};
use super::report::Section;
use super::throughput::{self, Filter};
use super::workload::Family;

pub const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// The measurements the plots are drawn from.
#[derive(Default)]
pub struct Series {
    pub classifier: Vec<Cell>,
    pub throughput: Vec<throughput::Row>,
    pub apply: Vec<apply::Row>,
}

/// One line: a label and (CIDRs, value) points.
type Line = (String, Vec<(f64, f64)>);

/// Ten distinct colours (matplotlib's tab10): section 2 draws eight filters and two references.
const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn register_font() -> anyhow::Result<()> {
    let bytes = std::fs::read(FONT).with_context(|| {
        format!("reading the plot font {FONT} (Debian package fonts-dejavu-core)")
    })?;
    plotters::style::register_font(
        "sans-serif",
        FontStyle::Normal,
        Box::leak(bytes.into_boxed_slice()),
    )
    .map_err(|_| anyhow::anyhow!("{FONT} is not a usable font"))
}

/// Draws `lines` into a chart built on `$y` (a linear or a log range); a macro because
/// plotters' linear and log coordinates are different types.
macro_rules! draw {
    ($root:expr, $title:expr, $y_label:expr, $lines:expr, $x:expr, $y:expr) => {{
        let mut c = ChartBuilder::on(&$root)
            .caption($title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(72)
            .build_cartesian_2d($x, $y)?;
        c.configure_mesh()
            .x_desc("CIDRs in the policy")
            .y_desc($y_label)
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 17))
            .x_label_formatter(&|x| super::report::count(x.round() as usize))
            .y_labels(8)
            .y_label_formatter(&|y| human(*y))
            .draw()?;
        for (i, (label, points)) in $lines.iter().map(|l| (&l.0, &l.1)).enumerate() {
            let color = COLORS[i % COLORS.len()];
            c.draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(3),
            ))?
            .label(label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3))
            });
            c.draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
        }
        c.configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 15))
            .draw()?;
    }};
}

/// A line chart against CIDRs (log x); the y axis is logarithmic when the values span more
/// than a factor of 20, linear from 0 otherwise. Lines without points are skipped.
fn chart(path: &Path, title: &str, y_label: &str, lines: &[Line]) -> anyhow::Result<bool> {
    let lines: Vec<&Line> = lines.iter().filter(|l| !l.1.is_empty()).collect();
    if lines.is_empty() {
        return Ok(false);
    }
    let pts = lines.iter().flat_map(|l| l.1.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    let x = (x0 / 1.5..x1 * 1.5).log_scale();
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    if y1 / y0 > 20.0 {
        draw!(
            root,
            title,
            y_label,
            lines,
            x,
            (y0 / 1.6..y1 * 1.6).log_scale()
        );
    } else {
        // Headroom above for the legend.
        draw!(root, title, y_label, lines, x, 0.0..y1 * 1.6);
    }
    root.present()?;
    Ok(true)
}

/// 1.5k, 20k, 3M: short tick labels for log axes.
fn human(v: f64) -> String {
    let (v, unit) = match v {
        v if v >= 1e6 => (v / 1e6, "M"),
        v if v >= 1e3 => (v / 1e3, "k"),
        v => (v, ""),
    };
    let digits = if v >= 10.0 || v.fract().abs() < 1e-9 {
        0
    } else if v >= 1.0 {
        1
    } else {
        2
    };
    format!("{v:.digits$}{unit}")
}

/// Per filter, the receive-CPU cost of a dropped frame relative to the unfiltered stack of the
/// same pair (ns per dropped frame / ns per passed frame with no filter), and the no-filter
/// reference at 1.
fn throughput_lines(rows: &[throughput::Row]) -> Vec<Line> {
    let mut filters: Vec<Filter> = Vec::new();
    for r in rows {
        if r.filter != Filter::BareXdpDrop && !filters.contains(&r.filter) {
            filters.push(r.filter);
        }
    }
    let mut lines: Vec<Line> = filters
        .into_iter()
        .map(|f| {
            let pts = rows
                .iter()
                .filter(|r| r.filter == f)
                .map(|r| (r.cidrs as f64, r.drop_cost_ratio()))
                .collect();
            (format!("{} (dropped)", f.label()), pts)
        })
        .collect();
    let xs: Vec<f64> = rows
        .iter()
        .filter(|r| r.filter != Filter::BareXdpDrop)
        .map(|r| r.cidrs as f64)
        .collect();
    if let (Some(lo), Some(hi)) = (
        xs.iter().copied().reduce(f64::min),
        xs.iter().copied().reduce(f64::max),
    ) {
        lines.push(("no filter (passed)".into(), vec![(lo, 1.0), (hi, 1.0)]));
        if let Some(bare) = rows.iter().find(|r| r.filter == Filter::BareXdpDrop) {
            let y = bare.drop_cost_ratio();
            lines.push(("bare XDP_DROP (reference)".into(), vec![(lo, y), (hi, y)]));
        }
    }
    lines
}

fn apply_lines(rows: &[apply::Row]) -> Vec<Line> {
    let mut methods: Vec<Method> = Vec::new();
    for r in rows {
        if !methods.contains(&r.method) {
            methods.push(r.method);
        }
    }
    methods
        .into_iter()
        .map(|m| {
            let pts = rows
                .iter()
                .filter(|r| r.method == m)
                .map(|r| (r.cidrs as f64, r.wall.as_secs_f64() * 1e3))
                .collect();
            (m.label().replace('`', ""), pts)
        })
        .collect()
}

fn classifier_lines(cells: &[Cell]) -> Vec<Line> {
    let Some(rules) = cells.iter().map(|c| c.rules).max() else {
        return Vec::new();
    };
    let mut lines = Vec::new();
    for family in [Family::V4, Family::V6] {
        for allowed in [true, false] {
            let pts = cells
                .iter()
                .filter(|c| {
                    c.shape == Shape::Mixed
                        && c.rules == rules
                        && c.family == family
                        && c.allowed == allowed
                })
                .map(|c| (c.cidrs as f64, c.nodewall_ns))
                .collect();
            let kind = if allowed { "allowed" } else { "dropped" };
            lines.push((
                format!("nodewall-xdp, {rules} rules, {} {kind}", family.label()),
                pts,
            ));
        }
    }
    // The peer's worst cell per size: xdp-filter's path is longest for a dropped packet.
    let mut peer: Vec<(f64, f64)> = Vec::new();
    for c in cells
        .iter()
        .filter(|c| c.shape == Shape::Mixed && c.rules == rules)
    {
        let Some(ns) = c.xdp_filter_ns else { continue };
        match peer.iter_mut().find(|p| p.0 == c.cidrs as f64) {
            Some(p) => p.1 = p.1.max(ns),
            None => peer.push((c.cidrs as f64, ns)),
        }
    }
    lines.push((
        format!("xdp-filter, {rules} rules, worst of v4/v6 allowed/dropped"),
        peer,
    ));
    let bare = cells
        .iter()
        .filter(|c| {
            c.shape == Shape::Mixed && c.rules == rules && c.family == Family::V4 && c.allowed
        })
        .map(|c| (c.cidrs as f64, c.bare_ns))
        .collect();
    lines.push(("bare XDP_PASS".into(), bare));
    lines
}

/// Draws every plot that has data into `<out_dir>/img/` and links it from its section.
pub fn attach(s: &Series, out_dir: &Path, sections: &mut [Section]) -> anyhow::Result<()> {
    register_font()?;
    let img = out_dir.join("img");
    std::fs::create_dir_all(&img)?;
    let plots: [(&str, &str, &str, &str, Vec<Line>); 3] = [
        (
            "XDP classifier cost",
            "classifier-vs-cidrs.png",
            "XDP classifier cost vs CIDRs (BPF_PROG_TEST_RUN)",
            "ns per packet",
            classifier_lines(&s.classifier),
        ),
        (
            "Datapath throughput on veth",
            "datapath-cost-vs-cidrs.png",
            "Receive-CPU cost of a dropped frame vs CIDRs, relative to no filter (veth)",
            "× the unfiltered receive path's ns/frame",
            throughput_lines(&s.throughput),
        ),
        (
            "Apply latency",
            "apply-vs-cidrs.png",
            "Apply latency vs CIDRs",
            "ms (wall)",
            apply_lines(&s.apply),
        ),
    ];
    for (section, file, title, y, lines) in plots {
        if chart(&img.join(file), title, y, &lines)? {
            if let Some(sec) = sections.iter_mut().find(|x| x.title == section) {
                sec.images.push((title.to_string(), format!("img/{file}")));
            }
        }
    }
    Ok(())
}
