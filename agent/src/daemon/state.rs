//! The state directory (`--state-dir`, default `/run/nodewall`): per-node files that outlive
//! one process. `/run` is a tmpfs, which is right: after a reboot the kernel holds no policy and
//! none of this is meaningful any more.
//!
//! - `lock`: see [`super::lock`];
//! - `applied.json`: the config last installed and confirmed, which a confirmed apply rolls back
//!   to;
//! - `pending.json`: an `apply --confirm` waiting for `nodewall confirm`.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::lock::{LockError, StateLock};

pub const DEFAULT_DIR: &str = "/run/nodewall";

/// A config as it was installed: enough to install it again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The backend that installed it (`nft` or `xdp`).
    pub backend: String,
    pub config_path: String,
    /// The config text, verbatim.
    pub config: String,
}

/// An installed policy that rolls back unless confirmed by `deadline_unix`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub deadline_unix: u64,
    /// The process that rolls back at the deadline.
    pub watchdog_pid: u32,
    /// What was installed before; `None` when nothing was, and rollback means flush.
    pub previous: Option<Snapshot>,
    pub new: Snapshot,
}

#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn lock(&self) -> Result<StateLock, LockError> {
        StateLock::acquire(&self.root)
    }

    pub fn applied(&self) -> anyhow::Result<Option<Snapshot>> {
        read_json(&self.root.join("applied.json"))
    }

    pub fn save_applied(&self, snapshot: &Snapshot) -> anyhow::Result<()> {
        write_json(&self.root.join("applied.json"), snapshot)
    }

    pub fn pending(&self) -> anyhow::Result<Option<Pending>> {
        read_json(&self.pending_path())
    }

    pub fn save_pending(&self, pending: &Pending) -> anyhow::Result<()> {
        write_json(&self.pending_path(), pending)
    }

    /// Removes the pending record; returns whether there was one.
    pub fn clear_pending(&self) -> anyhow::Result<bool> {
        match std::fs::remove_file(self.pending_path()) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(anyhow::anyhow!("{}: {e}", self.pending_path().display())),
        }
    }

    pub fn pending_path(&self) -> PathBuf {
        self.root.join("pending.json")
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::anyhow!("{}: {e}", path.display())),
    }
}

/// Writes a temporary file and renames it over `path`, so readers never see half a file.
fn write_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let ctx = |e: std::io::Error| anyhow::anyhow!("{}: {e}", path.display());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(ctx)?;
    }
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp).map_err(ctx)?;
    f.write_all(&serde_json::to_vec_pretty(value)?)
        .map_err(ctx)?;
    f.sync_all().map_err(ctx)?;
    std::fs::rename(&tmp, path).map_err(ctx)
}
