//! The config file as the daemon sees it: read, parsed and compiled into the desired policy.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::config::{self, BackendKind, Config};
use crate::discovery::{self, Discovered};
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
    /// Set when the config talks to the Kubernetes API: see [`FromApi`].
    pub api: Option<FromApi>,
    /// `drops.flow-log`: where the agent writes its drop samples, if anywhere.
    pub flow_log: Option<config::FlowLog>,
}

/// A config that talks to the Kubernetes API, and how its API entries were last resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct FromApi {
    /// The config as parsed, API entries unresolved: compiled again when the sets change.
    pub config: Arc<Config>,
    pub file: String,
    /// The entries the sets had nothing for (`FILE:LINE:COL: PATH: MESSAGE`). The policy must
    /// not be applied while there is any: it would hold nothing where they are.
    pub missing: Vec<String>,
    /// Entries that resolved to no address, said the same way.
    pub empty: Vec<String>,
    /// Addresses by network and kind of entry.
    pub counts: BTreeMap<(String, &'static str), usize>,
    /// When the sets were read from the API.
    pub synced_at: Option<u64>,
}

impl Desired {
    /// The API entries the policy lacks (none for configs that do not use the API).
    pub fn missing(&self) -> &[String] {
        self.api.as_ref().map_or(&[], |a| a.missing.as_slice())
    }

    /// Compiles the policy again with the API entries resolved from `sets`.
    pub fn resolve(&mut self, sets: &Discovered) -> Result<(), String> {
        let Some(api) = self.api.as_mut() else {
            return Ok(());
        };
        let r = discovery::resolve(&api.config, sets);
        let file = &api.file;
        self.policy = policy::compile(&r.config).map_err(|e| format!("{file}: {e}"))?;
        api.missing = r
            .missing
            .iter()
            .map(|i| {
                discovery::sets::located(
                    file,
                    i,
                    &format!(
                        "`{}` has not been read from the Kubernetes API yet",
                        i.source.key()
                    ),
                )
            })
            .collect();
        api.empty = r
            .empty
            .iter()
            .map(|(net, i)| {
                discovery::sets::located(
                    file,
                    i,
                    &format!(
                        "`{}` found no address; network `{net}` holds only its other entries",
                        i.source.key()
                    ),
                )
            })
            .collect();
        api.counts = r.counts;
        api.synced_at = sets.synced_at;
        Ok(())
    }
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
    // The XDP backend cannot tell pods apart by their own addresses outbound (it refuses
    // per-pod exceptions): `auto` picks nft for them, rather than fail where XDP is usable.
    let backend = match config.backend {
        config::BackendKind::Auto if config.egress.has_pod_exceptions() => config::BackendKind::Nft,
        b => b,
    };
    if !config.uses_api() {
        let policy = policy::compile(&config).map_err(|e| format!("{file}: {e}"))?;
        return Ok(Desired {
            backend,
            policy,
            text,
            api: None,
            flow_log: config.drops.flow_log,
        });
    }
    // Resolved against nothing: every API entry is missing until the caller resolves it.
    let policy = policy::compile(&discovery::resolve(&config, &Discovered::default()).config)
        .map_err(|e| format!("{file}: {e}"))?;
    let mut desired = Desired {
        backend,
        policy,
        text,
        flow_log: config.drops.flow_log.clone(),
        api: Some(FromApi {
            config: Arc::new(config),
            file,
            missing: Vec::new(),
            empty: Vec::new(),
            counts: BTreeMap::new(),
            synced_at: None,
        }),
    };
    desired.resolve(&Discovered::default())?;
    Ok(desired)
}

/// Like [`config_parser`], resolving API entries from the sets an agent persisted in `state`
/// (for `apply` and its rollback, which run without the API).
pub fn config_parser_from(state: super::state::StateDir) -> Parser {
    Arc::new(move |text, path| {
        let mut desired = parse_config(text, path)?;
        if desired.api.is_some() {
            let sets = state.discovered().map_err(|e| format!("{e:#}"))?;
            desired.resolve(&sets.unwrap_or_default())?;
        }
        Ok(desired)
    })
}

/// Reads the file (see [`config::read`]); the error is `FILE:LINE:COL: (file): REASON`.
pub fn read(path: &Path) -> Result<String, String> {
    config::read(path).map_err(|e| e.to_string())
}
