//! `nodewall apply --confirm SECS` and `nodewall confirm`: like `commit confirmed` on routers,
//! a new policy that is not confirmed in time is replaced by the previous one.
//!
//! `apply --confirm` installs the new policy, records `pending.json` (deadline, previous and
//! new config) and leaves a detached watchdog process holding the node lock. `confirm` claims
//! the record (an atomic rename) and makes the new config the one to roll back to next time;
//! at the deadline the watchdog claims it instead and re-installs the previous config (or
//! flushes, if nothing was installed before). Because both sides claim by renaming the same
//! file, exactly one of them acts, even at the last millisecond.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::source::Parser;
use super::state::{Pending, Snapshot, StateDir};
use crate::backend::{interfaces, Backend};

/// How often the watchdog looks for a confirmation.
const POLL: Duration = Duration::from_millis(100);

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// What `confirm` found.
#[derive(Debug, PartialEq, Eq)]
pub enum Confirmed {
    /// The pending policy is now the confirmed one.
    Kept(Snapshot),
    /// Nothing was pending; the last rollback, if any, is returned so the user learns why.
    NothingPending(Option<Pending>),
}

pub fn confirm(state: &StateDir) -> anyhow::Result<Confirmed> {
    match state.claim_pending("confirming.json")? {
        Some(p) => {
            state.save_applied(&p.new)?;
            Ok(Confirmed::Kept(p.new))
        }
        None => Ok(Confirmed::NothingPending(state.last_rollback()?)),
    }
}

/// Blocks until the pending apply is confirmed (`None`) or its deadline passes, in which case
/// the record is claimed and returned for [`rollback`].
pub fn wait(state: &StateDir) -> anyhow::Result<Option<Pending>> {
    loop {
        let Some(pending) = state.pending()? else {
            return Ok(None);
        };
        if now_unix() >= pending.deadline_unix {
            let claimed = state.claim_pending("rolling-back.json")?;
            if let Some(p) = &claimed {
                state.save_last_rollback(p)?;
            }
            return Ok(claimed);
        }
        std::thread::sleep(POLL);
    }
}

/// Opens a backend by name (`nft`, `xdp`).
pub type OpenByName<'a> = &'a dyn Fn(&str) -> anyhow::Result<Box<dyn Backend>>;

/// Re-installs `pending.previous` (with the backend that had installed it), then removes the
/// new policy if it was installed by another backend; flushes when nothing was installed
/// before. Returns a one-line description of what was done.
pub fn rollback(pending: &Pending, open: OpenByName, parser: &Parser) -> anyhow::Result<String> {
    let mut new_backend = open(&pending.new.backend)?;
    let Some(previous) = &pending.previous else {
        new_backend.flush()?;
        return Ok("nothing was installed before: policy flushed".into());
    };
    let desired = parser(&previous.config, Path::new(&previous.config_path))
        .map_err(|e| anyhow::anyhow!("the previous config no longer parses: {e}"))?;
    if let Some(missing) = desired.missing().first() {
        anyhow::bail!("the previous config cannot be compiled offline: {missing}");
    }
    let mut policy = desired.policy;
    let report = if previous.backend == pending.new.backend {
        policy.interfaces = interfaces::resolve(&policy.interfaces, new_backend.matches_by_name())?;
        new_backend.apply(&policy)?
    } else {
        // Previous first, then remove the new one: never a moment without a policy.
        let mut previous_backend = open(&previous.backend)?;
        policy.interfaces =
            interfaces::resolve(&policy.interfaces, previous_backend.matches_by_name())?;
        let report = previous_backend.apply(&policy)?;
        new_backend.flush()?;
        report
    };
    Ok(format!(
        "previous config {} re-installed with backend {} as generation {}",
        previous.config_path, previous.backend, report.generation
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::apply::fake::{self, FakeKernel};

    fn snapshot(text: &str) -> Snapshot {
        Snapshot {
            backend: "fake".into(),
            config_path: "/etc/nodewall/config.yaml".into(),
            config: text.into(),
        }
    }

    /// `pending.json` for `new`, replacing `ssh 22`, due in `secs` (0: now).
    fn pending(new: &str, secs: u64) -> Pending {
        Pending {
            deadline_unix: now_unix() + secs,
            previous: Some(snapshot("ssh 22\n")),
            new: snapshot(new),
        }
    }

    /// Records `pending(new, 0)` and lets the watchdog claim it, as at a missed deadline.
    fn missed(state: &StateDir, new: &str) -> Pending {
        let p = pending(new, 0);
        state.save_pending(&p).unwrap();
        let claimed = wait(state).unwrap().expect("deadline passed");
        assert_eq!(claimed, p);
        claimed
    }

    fn state(name: &str) -> StateDir {
        let dir =
            std::env::temp_dir().join(format!("nodewall-confirm-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        StateDir::new(dir)
    }

    #[test]
    fn confirmed_in_time_keeps_the_new_policy() {
        let state = state("kept");
        state.save_pending(&pending("web 80\n", 60)).unwrap();
        let waiter = {
            let s = state.clone();
            std::thread::spawn(move || wait(&s).unwrap())
        };
        std::thread::sleep(Duration::from_millis(150));
        assert_eq!(
            confirm(&state).unwrap(),
            Confirmed::Kept(snapshot("web 80\n"))
        );
        assert_eq!(
            waiter.join().unwrap(),
            None,
            "watchdog sees the confirmation"
        );
        assert_eq!(state.applied().unwrap(), Some(snapshot("web 80\n")));
        assert_eq!(confirm(&state).unwrap(), Confirmed::NothingPending(None));
        std::fs::remove_dir_all(state.root()).unwrap();
    }

    #[test]
    fn unconfirmed_rolls_back_to_the_previous_config() {
        let state = state("rollback");
        let claimed = missed(&state, "web 80\n");
        let kernel = FakeKernel::default();
        let parser: Parser = Arc::new(fake::parse);
        let said = rollback(&claimed, &|_| Ok(kernel.backend()), &parser).unwrap();
        assert!(said.contains("re-installed"), "{said}");
        assert_eq!(kernel.rule_names(), Some(vec!["ssh".to_string()]));
        // Too late to confirm: the user is told what happened.
        assert_eq!(
            confirm(&state).unwrap(),
            Confirmed::NothingPending(Some(claimed))
        );
        std::fs::remove_dir_all(state.root()).unwrap();
    }

    #[test]
    fn a_confirmed_apply_after_a_rollback_is_not_reported_as_rolled_back() {
        let state = state("after-rollback");
        missed(&state, "web 80\n");
        state.save_pending(&pending("web 8080\n", 30)).unwrap();
        assert_eq!(
            confirm(&state).unwrap(),
            Confirmed::Kept(snapshot("web 8080\n"))
        );
        // A second confirm: nothing pending, and no older rollback passed off as this one's.
        assert_eq!(confirm(&state).unwrap(), Confirmed::NothingPending(None));
        std::fs::remove_dir_all(state.root()).unwrap();
    }

    #[test]
    fn rollback_without_a_previous_policy_flushes() {
        let kernel = FakeKernel::default();
        let parser: Parser = Arc::new(fake::parse);
        kernel
            .backend()
            .apply(&fake::parse("web 80\n", Path::new("x")).unwrap().policy)
            .unwrap();
        let pending = Pending {
            deadline_unix: 0,
            previous: None,
            new: snapshot("web 80\n"),
        };
        rollback(&pending, &|_| Ok(kernel.backend()), &parser).unwrap();
        assert_eq!(kernel.rule_names(), None);
    }
}
