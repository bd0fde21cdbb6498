//! `drops`: how many dropped packets the datapath samples, and the optional flow log those
//! samples are written to (JSON lines, rotated by size and count).

use std::path::PathBuf;

use serde::Serialize;

use super::walk::Ctx;
use super::yaml::{Kind, Node};

/// Samples per second when the config says nothing: per CPU on the XDP backend, per drop
/// reason and rule on the nft backend (`limit rate` of its log rules).
pub const DEFAULT_SAMPLES_PER_SECOND: u32 = nodewall_common::xdp::SAMPLES_PER_SECOND;
/// Above this, sampling stops being sampling: the agent would read, format and write
/// thousands of records a second per CPU, for a view a few hundred a second already gives.
pub const MAX_SAMPLES_PER_SECOND: u32 = 1000;
pub const DEFAULT_MAX_SIZE: u64 = 100 << 20;
pub const DEFAULT_MAX_FILES: u32 = 5;
/// A flow-log file smaller than this would rotate every few records.
pub const MIN_MAX_SIZE: u64 = 1 << 10;
pub const MAX_MAX_SIZE: u64 = 1 << 40;
pub const MAX_MAX_FILES: u32 = 1000;

pub const DROPS_KEYS: &[&str] = &["samples-per-second", "flow-log"];
pub const FLOW_LOG_KEYS: &[&str] = &["path", "max-size", "max-files"];

/// The `drops` section.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Drops {
    /// Dropped packets the datapath samples each second (see [`DEFAULT_SAMPLES_PER_SECOND`]);
    /// 0 takes none: no `nodewall drops`, flow log or sample log lines (counters still count).
    pub samples_per_second: u32,
    pub flow_log: Option<FlowLog>,
}

impl Default for Drops {
    fn default() -> Self {
        Self {
            samples_per_second: DEFAULT_SAMPLES_PER_SECOND,
            flow_log: None,
        }
    }
}

/// `drops.flow-log`: every sample as one JSON line in `path`, which is renamed to `path.1`
/// (`path.1` to `path.2`, ...) when the next line would take it past `max_size` bytes, keeping
/// `max_files` rotated files.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct FlowLog {
    pub path: PathBuf,
    pub max_size: u64,
    pub max_files: u32,
}

pub fn drops(ctx: &mut Ctx, node: &Node, path: &str) -> Option<Drops> {
    let f = ctx.map(node, path, Some(DROPS_KEYS))?;
    let rate = f.optional("samples-per-second", DEFAULT_SAMPLES_PER_SECOND, |n, p| {
        let max = u64::from(MAX_SAMPLES_PER_SECOND);
        integer(ctx, n, p, 0, max, "samples per second").map(|v| v as u32)
    });
    let flow_log = f.optional("flow-log", None, |n, p| flow_log(ctx, n, p).map(Some));
    Some(Drops {
        samples_per_second: rate?,
        flow_log: flow_log?,
    })
}

fn flow_log(ctx: &mut Ctx, node: &Node, path: &str) -> Option<FlowLog> {
    let f = ctx.map(node, path, Some(FLOW_LOG_KEYS))?;
    let file = match f.get("path") {
        Some(n) => file_path(ctx, n, &f.path_of("path")),
        None => {
            ctx.error(
                f.path_of("path"),
                f.pos,
                "missing: the file to write the samples to, e.g. /var/log/nodewall/drops.jsonl",
            );
            None
        }
    };
    let max_size = f.optional("max-size", DEFAULT_MAX_SIZE, |n, p| size(ctx, n, p));
    let max_files = f.optional("max-files", DEFAULT_MAX_FILES, |n, p| {
        integer(ctx, n, p, 1, u64::from(MAX_MAX_FILES), "rotated files").map(|v| v as u32)
    });
    Some(FlowLog {
        path: file?,
        max_size: max_size?,
        max_files: max_files?,
    })
}

/// An absolute path naming a file (not a directory): the agent's working directory is no
/// place to guess from, and a trailing `/` cannot be a file.
fn file_path(ctx: &mut Ctx, node: &Node, path: &str) -> Option<PathBuf> {
    let s = ctx.str(node, path)?;
    let problem = if !s.starts_with('/') {
        Some(format!(
            "`{}` is not an absolute path; write it from `/`, e.g. /var/log/nodewall/drops.jsonl",
            super::fields::shown(s)
        ))
    } else if s.ends_with('/') || s.ends_with("/.") || s.ends_with("/..") {
        Some(format!(
            "`{}` names a directory; give a file in it, e.g. {}drops.jsonl",
            super::fields::shown(s),
            s.trim_end_matches(['.', '/']).to_string() + "/"
        ))
    } else if s.contains('\0') {
        Some("the path contains a NUL byte".to_string())
    } else {
        None
    };
    match problem {
        Some(p) => {
            ctx.error(path, node.pos, p);
            None
        }
        None => Some(PathBuf::from(s)),
    }
}

/// An integer in `min..=max`.
fn integer(ctx: &mut Ctx, node: &Node, path: &str, min: u64, max: u64, what: &str) -> Option<u64> {
    match node.kind {
        Kind::Int(n) if n >= 0 && (min..=max).contains(&(n as u64)) => Some(n as u64),
        Kind::Int(n) => {
            ctx.error(
                path,
                node.pos,
                format!("{n} {what} is out of range; expected {min} to {max}"),
            );
            None
        }
        _ => {
            ctx.error(
                path,
                node.pos,
                format!(
                    "expected an integer from {min} to {max}, found {}",
                    node.describe()
                ),
            );
            None
        }
    }
}

/// A size: bytes as an integer, or a string with a binary unit (`512KiB`, `100MiB`, `1GiB`).
fn size(ctx: &mut Ctx, node: &Node, path: &str) -> Option<u64> {
    let bytes = match &node.kind {
        Kind::Int(n) => u64::try_from(*n).ok(),
        Kind::Str(s) => parse_size(s),
        _ => None,
    };
    let range = format!(
        "from {} to {}",
        show_size(MIN_MAX_SIZE),
        show_size(MAX_MAX_SIZE)
    );
    match bytes {
        Some(b) if (MIN_MAX_SIZE..=MAX_MAX_SIZE).contains(&b) => Some(b),
        Some(b) => {
            ctx.error(
                path,
                node.pos,
                format!("{b} bytes is out of range; expected {range}"),
            );
            None
        }
        None => {
            ctx.error(
                path,
                node.pos,
                format!(
                    "expected a size in bytes (1048576) or with a unit (\"512KiB\", \"100MiB\", \"1GiB\"), {range}; found {}",
                    node.describe()
                ),
            );
            None
        }
    }
}

/// `N`, `NKiB`, `NMiB`, `NGiB` (also `K`, `M`, `G`: binary too, as in `ls -h`).
pub fn parse_size(s: &str) -> Option<u64> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let n: u64 = s[..digits].parse().ok()?;
    let shift = match s[digits..].trim_start() {
        "" | "B" => 0,
        "K" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        _ => return None,
    };
    n.checked_mul(1 << shift)
}

fn show_size(b: u64) -> String {
    match b.trailing_zeros() {
        40.. => format!("{}TiB", b >> 40),
        30.. => format!("{}GiB", b >> 30),
        20.. => format!("{}MiB", b >> 20),
        10.. => format!("{}KiB", b >> 10),
        _ => format!("{b}B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024"), Some(1024));
        assert_eq!(parse_size("4KiB"), Some(4096));
        assert_eq!(parse_size("100 MiB"), Some(100 << 20));
        assert_eq!(parse_size("2G"), Some(2 << 30));
        for bad in ["", "MiB", "1.5MiB", "-1", "10MB", "1 2"] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
        assert_eq!(parse_size("99999999999999999999"), None);
        assert_eq!(show_size(MIN_MAX_SIZE), "1KiB");
        assert_eq!(show_size(MAX_MAX_SIZE), "1TiB");
    }
}
