//! The state directory (`--state-dir`, default `/run/nodewall`): per-node files that outlive
//! one process. `/run` is a tmpfs, which is right: after a reboot the kernel holds no policy and
//! none of this is meaningful any more.
//!
//! - `lock`: see [`super::lock`];
//! - `applied.json`: the config last installed and confirmed, which a confirmed apply rolls back
//!   to;
//! - `pending.json`: an `apply --confirm` waiting for `nodewall confirm` (see [`super::confirm`]);
//! - `last-rollback.json`: the last unconfirmed apply that was rolled back;
//! - `nft-sets.json`: what the nft backend's last commit left in its table (set fingerprints,
//!   chains, rule handles), so that the next `apply` dumps only the elements of the sets that
//!   changed and no structure (see `backend/nft/netlink/cache.rs`).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::lock::{LockError, Role, StateLock};

pub const DEFAULT_DIR: &str = "/run/nodewall";
/// How long `apply` waits for the lock: enough for another `apply` to finish, short enough to
/// fail clearly when an agent holds it.
const ONE_SHOT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

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

    /// The lock for `nodewall run`: refused at once if anything holds it.
    pub fn lock_for_run(&self) -> Result<StateLock, LockError> {
        StateLock::acquire(&self.root, Role::Run)
    }

    /// The lock for `nodewall apply`: waits a little if another `apply` holds it.
    pub fn lock_for_apply(&self) -> Result<StateLock, LockError> {
        StateLock::acquire_waiting(&self.root, Role::Apply, ONE_SHOT_PATIENCE)
    }

    pub fn applied(&self) -> anyhow::Result<Option<Snapshot>> {
        read_json(&self.file(APPLIED))
    }

    pub fn save_applied(&self, snapshot: &Snapshot) -> anyhow::Result<()> {
        write_json(&self.file(APPLIED), snapshot)
    }

    pub fn save_pending(&self, pending: &Pending) -> anyhow::Result<()> {
        write_json(&self.file(PENDING), pending)
    }

    pub fn pending(&self) -> anyhow::Result<Option<Pending>> {
        read_json(&self.file(PENDING))
    }

    /// Atomically takes the pending record away (renaming it to `to`), so that of `confirm`
    /// and the rollback watchdog exactly one wins. `None` if there was none.
    pub fn claim_pending(&self, to: &str) -> anyhow::Result<Option<Pending>> {
        let claimed = self.file(to);
        match std::fs::rename(self.file(PENDING), &claimed) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => anyhow::bail!("{}: {e}", self.file(PENDING).display()),
        }
        let pending = read_json(&claimed)?;
        let _ = std::fs::remove_file(&claimed);
        Ok(pending)
    }

    pub fn save_last_rollback(&self, pending: &Pending) -> anyhow::Result<()> {
        write_json(&self.file(LAST_ROLLBACK), pending)
    }

    pub fn last_rollback(&self) -> anyhow::Result<Option<Pending>> {
        read_json(&self.file(LAST_ROLLBACK))
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
}

const APPLIED: &str = "applied.json";
const PENDING: &str = "pending.json";
const LAST_ROLLBACK: &str = "last-rollback.json";

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::anyhow!("{}: {e}", path.display())),
    }
}

/// Writes a temporary file and renames it over `path`, so readers (and a process that dies
/// halfway) never see half a file. Not synced to disk: these files describe what the running
/// kernel holds and mean nothing after a reboot, so surviving a power loss buys nothing, while
/// an fsync costs a journal commit (milliseconds, more than the rest of a small apply) when
/// the state directory is not on a tmpfs.
fn write_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let ctx = |e: std::io::Error| anyhow::anyhow!("{}: {e}", path.display());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(ctx)?;
    }
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp).map_err(ctx)?;
    f.write_all(&serde_json::to_vec_pretty(value)?)
        .map_err(ctx)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(ctx)
}
