//! The node lock for the one-shot commands that change the kernel (`apply`, `flush`).

use std::process::ExitCode;

use nodewall::apply::confirm;
use nodewall::apply::lock::{LockError, StateLock};
use nodewall::apply::state::StateDir;

/// Takes the lock through `take`; when another nodewall holds it, says who and what to do,
/// and returns exit code 1.
pub fn take(
    state: &StateDir,
    take: impl FnOnce(&StateDir) -> Result<StateLock, LockError>,
) -> Result<StateLock, ExitCode> {
    take(state).map_err(|e| {
        eprintln!("nodewall: error: {e}");
        if let Ok(Some(p)) = state.pending() {
            eprintln!(
                "nodewall: an apply --confirm of {} is pending ({} s left): `nodewall confirm` first",
                p.new.config_path,
                p.deadline_unix.saturating_sub(confirm::now_unix())
            );
        }
        ExitCode::from(1)
    })
}
