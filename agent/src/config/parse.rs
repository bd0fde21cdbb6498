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

/// Parses and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
        file: file.clone(),
        errors: vec![ConfigError {
            path: "(file)".into(),
            line: 0,
            column: 0,
            message: e.to_string(),
        }],
    })?;
    parse(&text, &file)
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
