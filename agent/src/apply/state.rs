//! The state directory (`--state-dir`, default `/run/nodewall`): per-node files that outlive
//! one process. `/run` is a tmpfs, which is right: after a reboot the kernel holds no policy and
//! none of this is meaningful any more.
//!
//! - `lock`: see [`super::lock`];
//! - `applied.snapshot`: the config last installed and confirmed, which a confirmed apply rolls
//!   back to (one JSON line naming its backend and path, then the config text verbatim; an
//!   `applied.json` left by an older version is still read);
//! - `pending.json`: an `apply --confirm` waiting for `nodewall confirm` (see [`super::confirm`]);
//! - `last-rollback.json`: the last unconfirmed apply that was rolled back;
//! - `nft-sets.json`: what the nft backend's last commit left in its table (set fingerprints,
//!   chains, rule handles), so that the next `apply` dumps only the elements of the sets that
//!   changed and no structure (see `backend/nft/netlink/cache.rs`);
//! - `nft-elems/`: one file per nft set with the elements that commit wrote, so that the sets
//!   that changed are diffed without a dump either (see `backend/nft/netlink/recorded.rs`);
//! - `discovered.json`: the networks discovered from the Kubernetes API that the agent applied
//!   last, which a restarted agent applies until the API answers (and `explain`, `render` and
//!   `apply` read offline).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::lock::{LockError, Role, StateLock};
use crate::discovery::Discovered;
use crate::staged::StagedFile;

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

    /// The lock for `nodewall flush`: as for `apply`, so that a flush never races an agent
    /// that would re-install the policy a moment later.
    pub fn lock_for_flush(&self) -> Result<StateLock, LockError> {
        StateLock::acquire_waiting(&self.root, Role::Flush, ONE_SHOT_PATIENCE)
    }

    pub fn applied(&self) -> anyhow::Result<Option<Snapshot>> {
        let path = self.file(APPLIED);
        match std::fs::read(&path) {
            Ok(bytes) => from_snapshot_file(&bytes)
                .map(Some)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                read_json(&self.file(LEGACY_APPLIED))
            }
            Err(e) => Err(anyhow::anyhow!("{}: {e}", path.display())),
        }
    }

    /// Saves the snapshot with its config text verbatim: escaping it into JSON cost more than
    /// the rest of the file handling of an apply of a config with 10k CIDRs.
    pub fn save_applied(&self, snapshot: &Snapshot) -> anyhow::Result<()> {
        self.stage_applied(snapshot)?.commit()
    }

    /// Writes the snapshot beside the applied one without replacing it: [`Staged::commit`]
    /// puts it in force once the policy it describes is, and dropping it uncommitted removes
    /// it. `apply` writes it while the kernel takes the policy: for a config of 1M CIDRs the
    /// 28 MB file took 80-140 ms here, a tenth of the kernel's own time for that policy.
    pub fn stage_applied(&self, snapshot: &Snapshot) -> anyhow::Result<Staged<'_>> {
        let path = self.file(APPLIED);
        let file = StagedFile::write(&path, &to_snapshot_file(snapshot)?)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(Staged { state: self, file })
    }

    fn applied_in_force(&self) -> anyhow::Result<()> {
        self.forget_last_rollback()?;
        // An older version's snapshot must not be read in place of this one.
        match std::fs::remove_file(self.file(LEGACY_APPLIED)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(anyhow::anyhow!(
                "{}: {e}",
                self.file(LEGACY_APPLIED).display()
            )),
            _ => Ok(()),
        }
    }

    /// The file [`Self::applied`] reads.
    pub fn applied_file(&self) -> PathBuf {
        self.file(APPLIED)
    }

    /// Records an unconfirmed apply. An older rollback is forgotten: it no longer tells what
    /// happened to the policy in force.
    pub fn save_pending(&self, pending: &Pending) -> anyhow::Result<()> {
        write_json(&self.file(PENDING), pending)?;
        self.forget_last_rollback()
    }

    fn forget_last_rollback(&self) -> anyhow::Result<()> {
        match std::fs::remove_file(self.file(LAST_ROLLBACK)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(anyhow::anyhow!(
                "{}: {e}",
                self.file(LAST_ROLLBACK).display()
            )),
            _ => Ok(()),
        }
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

    pub fn discovered(&self) -> anyhow::Result<Option<Discovered>> {
        read_json(&self.file(DISCOVERED))
    }

    pub fn save_discovered(&self, sets: &Discovered) -> anyhow::Result<()> {
        write_json(&self.file(DISCOVERED), sets)
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
}

const APPLIED: &str = "applied.snapshot";
const LEGACY_APPLIED: &str = "applied.json";
const PENDING: &str = "pending.json";
const LAST_ROLLBACK: &str = "last-rollback.json";
pub const DISCOVERED: &str = "discovered.json";

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::anyhow!("{}: {e}", path.display())),
    }
}

/// The first line of `applied.snapshot`: the snapshot but its config, which follows it.
#[derive(Serialize, Deserialize)]
struct SnapshotHeader<'a> {
    backend: std::borrow::Cow<'a, str>,
    config_path: std::borrow::Cow<'a, str>,
}

fn to_snapshot_file(s: &Snapshot) -> anyhow::Result<Vec<u8>> {
    let header = SnapshotHeader {
        backend: s.backend.as_str().into(),
        config_path: s.config_path.as_str().into(),
    };
    // Compact JSON escapes every line break: the header is exactly one line.
    let mut bytes = serde_json::to_vec(&header)?;
    bytes.push(b'\n');
    bytes.extend_from_slice(s.config.as_bytes());
    Ok(bytes)
}

fn from_snapshot_file(bytes: &[u8]) -> anyhow::Result<Snapshot> {
    let Some(end) = bytes.iter().position(|&b| b == b'\n') else {
        anyhow::bail!("no header line");
    };
    let header: SnapshotHeader = serde_json::from_slice(&bytes[..end])?;
    Ok(Snapshot {
        backend: header.backend.into_owned(),
        config_path: header.config_path.into_owned(),
        config: String::from_utf8(bytes[end + 1..].to_vec())?,
    })
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    write_atomic(path, &serde_json::to_vec_pretty(value)?)
}

/// Writes `path` atomically (see [`StagedFile`]).
fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    StagedFile::write(path, bytes)
        .and_then(StagedFile::commit)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// A snapshot written but not yet in force (see [`StateDir::stage_applied`]).
pub struct Staged<'a> {
    state: &'a StateDir,
    file: StagedFile,
}

impl Staged<'_> {
    /// Renames the snapshot over the applied one: the config it holds is now in force.
    pub fn commit(self) -> anyhow::Result<()> {
        let path = self.state.file(APPLIED);
        self.file
            .commit()
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        self.state.applied_in_force()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(config: &str) -> Snapshot {
        Snapshot {
            backend: "nft".into(),
            config_path: "/etc/node\"wall\"/config\n.yaml".into(),
            config: config.into(),
        }
    }

    #[test]
    fn applied_keeps_the_config_verbatim() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        assert_eq!(state.applied().unwrap(), None);
        let text = "rules:\n  - from: [\"10.0.0.0/8\"] # \\ \"é\"\n\n";
        state.save_applied(&snapshot(text)).unwrap();
        assert_eq!(state.applied().unwrap(), Some(snapshot(text)));
        let file = std::fs::read_to_string(state.applied_file()).unwrap();
        assert!(file.ends_with(&format!("\n{text}")), "{file}");
        assert_eq!(file.lines().count(), 1 + text.lines().count());
        // A later save replaces it whole.
        state.save_applied(&snapshot("a: 1")).unwrap();
        assert_eq!(state.applied().unwrap(), Some(snapshot("a: 1")));
    }

    #[test]
    fn an_older_versions_applied_json_is_read_until_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        write_json(&state.file(LEGACY_APPLIED), &snapshot("old: 1\n")).unwrap();
        assert_eq!(state.applied().unwrap(), Some(snapshot("old: 1\n")));
        state.save_applied(&snapshot("new: 2\n")).unwrap();
        assert!(!state.file(LEGACY_APPLIED).exists());
        assert_eq!(state.applied().unwrap(), Some(snapshot("new: 2\n")));
    }

    #[test]
    fn a_damaged_snapshot_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        std::fs::write(state.applied_file(), "no header").unwrap();
        let e = format!("{:#}", state.applied().unwrap_err());
        assert!(
            e.contains("applied.snapshot") && e.contains("no header line"),
            "{e}"
        );
    }
}
