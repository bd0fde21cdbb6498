//! What the sections produce (tables with the ratio column first, headline targets, gaps) and
//! how it becomes `docs/benchmarks.md`.

use std::fmt::Write as _;

pub struct Table {
    pub caption: String,
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(caption: &str, headers: &[&str]) -> Self {
        Self {
            caption: caption.into(),
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(
            cells.len(),
            self.headers.len(),
            "row width of {}",
            self.caption
        );
        self.rows.push(cells);
    }

    fn markdown(&self, out: &mut String) {
        let _ = writeln!(out, "{}\n", self.caption);
        let _ = writeln!(out, "| {} |", self.headers.join(" | "));
        // Numbers right-aligned, words left-aligned.
        let numeric = |col: usize| {
            self.rows.iter().all(|r| {
                r[col].starts_with(|c: char| c.is_ascii_digit() || c == '–' || c == '-')
                    || r[col] == "n/a"
            })
        };
        let align: String = (0..self.headers.len())
            .map(|c| if numeric(c) { " ---: |" } else { " --- |" })
            .collect();
        let _ = writeln!(out, "|{align}");
        for r in &self.rows {
            let _ = writeln!(out, "| {} |", r.join(" | "));
        }
        out.push('\n');
    }
}

/// The target of a headline that is there for contrast only.
pub const INFO: &str = "– (contrast)";

/// A target from the issue checked against this run's figure.
pub struct Headline {
    pub what: String,
    pub ratio: Option<f64>,
    /// Shown instead of the ratio when the figure is not a multiple (a count, a share).
    pub shown: Option<String>,
    pub target: String,
    pub met: Option<bool>,
}

#[derive(Default)]
pub struct Section {
    /// The section's number in the issue (1..=5), kept when only some sections run.
    pub number: u8,
    pub title: String,
    pub intro: String,
    pub tables: Vec<Table>,
    pub headlines: Vec<Headline>,
    /// Rows that could not be measured and why ("not available yet", time box...).
    pub missing: Vec<String>,
    pub notes: Vec<String>,
    pub images: Vec<(String, String)>,
}

impl Section {
    pub fn new(title: &str, intro: &str) -> Self {
        Self {
            title: title.into(),
            intro: intro.into(),
            ..Default::default()
        }
    }

    pub fn headline(
        &mut self,
        what: &str,
        ratio: Option<f64>,
        target: &str,
        met: impl Fn(f64) -> bool,
    ) {
        let met_v = ratio.map(&met);
        self.headlines.push(Headline {
            what: what.into(),
            ratio,
            shown: None,
            target: target.into(),
            met: met_v,
        });
    }

    /// A headline whose figure is shown as `shown` (e.g. "0 of 120k") rather than as a ratio.
    pub fn headline_shown(
        &mut self,
        what: &str,
        value: Option<f64>,
        shown: String,
        target: &str,
        met: impl Fn(f64) -> bool,
    ) {
        self.headline(what, value, target, met);
        self.headlines.last_mut().expect("just pushed").shown = Some(shown);
    }

    /// A target this run does not measure: the page says "not measured" and why.
    pub fn not_measured(&mut self, what: &str, target: &str, why: &str) {
        self.headline_shown(
            &format!("{what} ({why})"),
            None,
            "not measured".into(),
            target,
            |_| false,
        );
    }

    pub fn missing(&mut self, what: impl Into<String>) {
        // Paths relative to the repository, as a reader of the page would type them.
        let root = format!("{}/", crate::shell::root().display());
        let what = what
            .into()
            .replace(&root, "")
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" / ");
        eprintln!("bench:   missing: {what}");
        self.missing.push(what);
    }
}

pub fn ratio(x: f64) -> String {
    if !x.is_finite() {
        return "n/a".into();
    }
    if x >= 100.0 {
        format!("{x:.0}×")
    } else if x >= 10.0 {
        format!("{x:.1}×")
    } else if x >= 0.1 || x == 0.0 {
        format!("{x:.2}×")
    } else {
        // Two significant digits for small ratios (0.0042×, not 0.00×).
        let digits = (-x.log10()).ceil() as usize + 1;
        format!("{x:.digits$}×")
    }
}

pub fn opt_ratio(x: Option<f64>) -> String {
    x.map(ratio).unwrap_or_else(|| "n/a".into())
}

pub fn ms(secs: f64) -> String {
    let v = secs * 1e3;
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

pub fn count(n: usize) -> String {
    match n {
        n if n >= 1000 && n % 1000 == 0 => format!("{}k", n / 1000),
        n => n.to_string(),
    }
}

pub fn mpps(pps: f64) -> String {
    format!("{:.3}", pps / 1e6)
}

pub struct Page {
    pub machine: Vec<(String, String)>,
    pub command: String,
    pub quick: bool,
    pub elapsed_s: f64,
    pub sections: Vec<Section>,
}

impl Page {
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        s.push_str("# nodewall benchmarks\n\n");
        s.push_str(
            "Generated by `cargo xtask bench`; do not edit by hand. Every figure is a **ratio** against a \
             peer or a baseline measured in the same run (the first column of each table): absolute numbers \
             drift on a shared machine, ratios much less. Absolute values are given for context only. All \
             traffic and every firewall lives in throwaway network namespaces (addresses 198.18.0.0/15 and \
             fd00::/8); nothing is installed in the machine's own namespace.\n\n",
        );
        if self.quick {
            s.push_str("> **Quick run** (`--quick`): fewer sizes, shorter windows, fewer repetitions; smoke-test numbers only.\n\n");
        }
        s.push_str(
            "## Headlines\n\n| figure | what | target | met |\n| ---: | --- | --- | --- |\n",
        );
        for sec in &self.sections {
            for h in &sec.headlines {
                let met = match h.met {
                    _ if h.target == INFO => "–",
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None => "not measured",
                };
                let figure = h.shown.clone().unwrap_or_else(|| opt_ratio(h.ratio));
                let _ = writeln!(s, "| {figure} | {} | {} | {met} |", h.what, h.target);
            }
        }
        s.push_str("\n## Machine and versions\n\n| | |\n| --- | --- |\n");
        for (k, v) in &self.machine {
            let _ = writeln!(s, "| {k} | {} |", v.replace('|', "\\|"));
        }
        let _ = writeln!(s, "| bench wall time | {:.0} s |", self.elapsed_s);
        for sec in &self.sections {
            let _ = write!(s, "\n## {}. {}\n\n{}\n\n", sec.number, sec.title, sec.intro);
            for t in &sec.tables {
                t.markdown(&mut s);
            }
            for (alt, path) in &sec.images {
                let _ = writeln!(s, "![{alt}]({path})\n");
            }
            for n in &sec.notes {
                let _ = writeln!(s, "- {n}");
            }
            if !sec.missing.is_empty() {
                s.push_str("\nNot measured in this run:\n\n");
                for m in &sec.missing {
                    let _ = writeln!(s, "- {m}");
                }
            }
        }
        let _ = write!(
            s,
            "\n## How to reproduce\n\nAs root on a Debian/Ubuntu machine with Rust, from the repository root:\n\n\
             ```sh\n{}\n```\n\n`--quick` is a < 3 minute smoke run (fewer sizes and repetitions); \
             `--only 1,3` runs some sections; `--out FILE` writes the page elsewhere. The run installs the \
             Debian packages it needs (iptables, ipset, xdp-tools, ethtool, fonts-dejavu-core) if missing, \
             builds nodewall with `--release`, and keeps every section inside its own time box.\n",
            self.command
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_keep_two_significant_digits_when_small() {
        assert_eq!(ratio(0.0042), "0.0042×");
        assert_eq!(ratio(0.05), "0.050×");
        assert_eq!(ratio(0.77), "0.77×");
        assert_eq!(ratio(12.34), "12.3×");
        assert_eq!(ratio(f64::NAN), "n/a");
    }

    #[test]
    fn tables_align_numbers_right_and_words_left() {
        let mut t = Table::new("c", &["ratio", "what"]);
        t.row(vec!["1.00×".into(), "nft".into()]);
        let mut out = String::new();
        t.markdown(&mut out);
        assert!(out.contains("| ---: | --- |"), "{out}");
    }
}
