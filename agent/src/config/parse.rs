//! YAML -> [`Config`], collecting every error with its field path and `line:column`.
//!
//! The work is split by responsibility: `yaml` builds a positioned tree, `walk` reads it with
//! typed accessors that record errors instead of stopping, `fields` validates single values,
//! `rules` and `document` the sections.

use std::path::Path;

use super::document::document;
use super::walk::{Ctx, DOCUMENT};
use super::{yaml, Config};

/// One problem in a config file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ConfigError {
    /// Field path, e.g. `rules[2].ports[0]`.
    pub path: String,
    /// 1-based position of the offending value (or of its parent when the value is missing).
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Every problem found in one file. Display prints one `FILE:LINE:COL: PATH: MESSAGE` per line.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ConfigErrors {
    pub file: String,
    pub errors: Vec<ConfigError>,
}

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(
                f,
                "{}:{}:{}: {}: {}",
                self.file, e.line, e.column, e.path, e.message
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Largest config file read: a config with 100k CIDRs is about 2 MB, and reading stops here
/// rather than exhaust memory on a wrong path (`-c /dev/zero`).
pub const MAX_CONFIG_BYTES: usize = 32 << 20;

/// Parses and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = read(path)?;
    parse(&text, &path.display().to_string())
}

/// Reads a config file as UTF-8 text, at most [`MAX_CONFIG_BYTES`]: the one reader of config
/// files, so that every command reports a missing, oversized or undecodable file the same
/// way, as `FILE:LINE:COL: (file): REASON`.
pub fn read(path: &Path) -> Result<String, ConfigErrors> {
    use std::io::Read;
    let fail = |line, column, message: String| ConfigErrors {
        file: path.display().to_string(),
        errors: vec![ConfigError {
            path: "(file)".into(),
            line,
            column,
            message,
        }],
    };
    let file = std::fs::File::open(path).map_err(|e| fail(1, 1, format!("cannot open: {e}")))?;
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(1, 1, format!("cannot read: {e}")))?;
    if bytes.len() > MAX_CONFIG_BYTES {
        return Err(fail(
            1,
            1,
            format!(
                "larger than {} MiB: not a nodewall config (is the path right?)",
                MAX_CONFIG_BYTES >> 20
            ),
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        let bytes = e.as_bytes();
        let at = e.utf8_error().valid_up_to();
        let (line, column) = line_column(bytes, at);
        fail(
            line,
            column,
            format!(
                "not UTF-8 text: byte 0x{:02x} at offset {at} cannot be decoded (save the file as UTF-8)",
                bytes[at]
            ),
        )
    })
}

/// 1-based line and column (in characters) of byte `at`, all of whose predecessors are UTF-8.
fn line_column(bytes: &[u8], at: usize) -> (usize, usize) {
    let before = &bytes[..at];
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    #[allow(clippy::naive_bytecount)] // once, on an error path
    let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
    let column = 1 + String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count();
    (line, column)
}

/// Where each item of the list at `section` (`rules`, `failsafe`, or a dotted path such as
/// `egress.rules`) starts, as 1-based (line, column): for messages about items of a config
/// that parsed.
pub fn item_positions(text: &str, section: &str) -> Vec<(usize, usize)> {
    let Ok(mut node) = yaml::load(text) else {
        return Vec::new();
    };
    for key in section.split('.') {
        let yaml::Kind::Map(entries) = node.kind else {
            return Vec::new();
        };
        match entries
            .into_iter()
            .find(|(k, _)| k.kind == yaml::Kind::Str(key.to_string()))
        {
            Some((_, v)) => node = v,
            None => return Vec::new(),
        }
    }
    match node.kind {
        yaml::Kind::Seq(items) => items.iter().map(|i| (i.pos.line, i.pos.column)).collect(),
        _ => Vec::new(),
    }
}

/// Parses and validates config text; `file` is only used in messages.
/// On failure every error is returned, in document order.
pub fn parse(text: &str, file: &str) -> Result<Config, ConfigErrors> {
    let mut ctx = Ctx::default();
    let config = match yaml::load(text) {
        Ok(root) => document(&mut ctx, &root),
        Err(e) => {
            ctx.error(DOCUMENT, e.pos, e.message);
            None
        }
    };
    // Sections are read in a fixed order (networks before the rules that use them); the
    // stable sort restores document order and keeps same-position errors in check order.
    ctx.errors.sort_by_key(|e| (e.line, e.column));
    match config {
        Some(config) if ctx.errors.is_empty() => Ok(config),
        _ => Err(ConfigErrors {
            file: file.to_string(),
            errors: ctx.errors,
        }),
    }
}
