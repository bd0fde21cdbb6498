//! The config file as the daemon sees it: read, parsed and compiled into the desired policy.

use std::path::Path;
use std::sync::Arc;

use crate::config::{self, BackendKind};
use crate::policy::{self, Policy};

/// What one version of the config file asks for.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    pub backend: BackendKind,
    /// Interfaces as configured (empty: default-route ones, resolved at each apply).
    pub policy: Policy,
    /// The exact text that was parsed: compared to notice changes, and kept as the snapshot a
    /// confirmed apply rolls back to.
    pub text: String,
}

/// Parses config text (the path is only for messages). On error, the message lists every
/// problem, one `FILE:LINE:COL: FIELD: REASON` per line.
pub type Parser = Arc<dyn Fn(&str, &Path) -> Result<Desired, String> + Send + Sync>;

/// The real parser: YAML config, validated, then compiled with its profile.
pub fn config_parser() -> Parser {
    Arc::new(parse_config)
}

pub fn parse_config(text: &str, path: &Path) -> Result<Desired, String> {
    desired(text.to_string(), path)
}

/// Reads and parses the file, keeping the text read as [`Desired::text`] rather than a copy
/// (a one-shot `apply` of a large config has no other use for it).
pub fn read_config(path: &Path) -> Result<Desired, String> {
    desired(read(path)?, path)
}

fn desired(text: String, path: &Path) -> Result<Desired, String> {
    let file = path.display().to_string();
    let config = config::parse(&text, &file).map_err(|e| e.to_string())?;
    let policy = policy::compile(&config).map_err(|e| format!("{file}: {e}"))?;
    // The XDP backend does not enforce egress (it refuses such a policy): `auto` picks nft
    // for a config that restricts outbound, rather than fail on a node where XDP is usable.
    let backend = match config.backend {
        config::BackendKind::Auto if !config.egress.is_open() => config::BackendKind::Nft,
        b => b,
    };
    Ok(Desired {
        backend,
        policy,
        text,
    })
}

/// Reads the file (see [`config::read`]); the error is `FILE:LINE:COL: (file): REASON`.
pub fn read(path: &Path) -> Result<String, String> {
    config::read(path).map_err(|e| e.to_string())
}
