//! The classic Prometheus text format (0.0.4), derived from the OpenMetrics encoding.
//!
//! The Prometheus server asks for OpenMetrics and gets it. Other clients (curl, `promtool check
//! metrics`, older scrapers) get the classic format, whose only differences for the metrics we
//! export are: a counter's `# HELP`/`# TYPE` lines name the sample (`x_total`), not the family
//! (`x`), and there are no `# UNIT` or `# EOF` lines.

use std::collections::HashSet;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether an HTTP `Accept` header asks for OpenMetrics.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

pub fn from_openmetrics(om: &str) -> String {
    let counters: HashSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(om.len());
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        match comment_family(line) {
            Some((kind, name, rest)) if counters.contains(name) => {
                out.push_str(&format!("# {kind} {name}_total{rest}"));
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Splits `# HELP name rest` / `# TYPE name rest` into (`HELP`|`TYPE`, name, " rest").
fn comment_family(line: &str) -> Option<(&str, &str, &str)> {
    let rest = line.strip_prefix("# ")?;
    let (kind, rest) = rest.split_once(' ')?;
    if kind != "HELP" && kind != "TYPE" {
        return None;
    }
    let end = rest.find(' ').unwrap_or(rest.len());
    Some((kind, &rest[..end], &rest[end..]))
}
