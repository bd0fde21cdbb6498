//! One writer per node: `nodewall run` and `nodewall apply` take an exclusive `flock` on
//! `<state-dir>/lock` before touching the kernel, so two agents never fight over the policy.
//!
//! `flock` locks belong to the open file, not to a path or a process: the kernel drops the lock
//! when the holder dies (even by `kill -9`), so a stale lock file never blocks a restart. The
//! holder's pid and role are written into the file only to name it in the error message.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Held for as long as this value lives.
#[derive(Debug)]
pub struct StateLock {
    file: File,
    path: PathBuf,
}

/// What kind of command holds the lock: written into the lock file so that the refused side
/// can say who is in the way, and so that `apply` waits only for another `apply`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Run,
    Apply,
    Flush,
    RollbackWatchdog,
}

impl Role {
    fn tag(self) -> &'static str {
        match self {
            Role::Run => "run",
            Role::Apply => "apply",
            Role::Flush => "flush",
            Role::RollbackWatchdog => "rollback-watchdog",
        }
    }

    fn from_tag(tag: &str) -> Option<Role> {
        [Role::Run, Role::Apply, Role::Flush, Role::RollbackWatchdog]
            .into_iter()
            .find(|r| r.tag() == tag)
    }

    fn describe(self) -> &'static str {
        match self {
            Role::Run => "`nodewall run`",
            Role::Apply => "`nodewall apply`",
            Role::Flush => "`nodewall flush`",
            Role::RollbackWatchdog => "the rollback watchdog of an unconfirmed `apply --confirm`",
        }
    }
}

/// The holder as recorded in the lock file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub pid: Option<u32>,
    pub role: Option<Role>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.pid {
            Some(pid) => write!(f, "pid {pid}")?,
            None => write!(f, "pid unknown")?,
        }
        if let Some(role) = self.role {
            write!(f, ", {}", role.describe())?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{path}: another nodewall ({holder}) manages this node's firewall; stop it first (only one agent may run per node)")]
    Held { path: String, holder: Holder },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

impl StateLock {
    /// Takes the lock without waiting, creating the state directory if needed.
    pub fn acquire(state_dir: &Path, role: Role) -> Result<Self, LockError> {
        let path = state_dir.join("lock");
        let io = |source| LockError::Io {
            path: path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(state_dir).map_err(io)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(io(err));
            }
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            let mut words = text.split_whitespace();
            let holder = Holder {
                pid: words.next().and_then(|p| p.parse().ok()),
                role: words.next().and_then(Role::from_tag),
            };
            return Err(LockError::Held {
                path: path.display().to_string(),
                holder,
            });
        }
        let lock = Self {
            file,
            path: path.clone(),
        };
        lock.record(role).map_err(io)?;
        Ok(lock)
    }

    /// Like [`StateLock::acquire`], but while another one-shot command (`apply`, `flush`) holds
    /// the lock, waits up to `patience` for it to finish (they may run back to back).
    pub fn acquire_waiting(
        state_dir: &Path,
        role: Role,
        patience: Duration,
    ) -> Result<Self, LockError> {
        let deadline = Instant::now() + patience;
        loop {
            match Self::acquire(state_dir, role) {
                // No role yet: the holder took the lock a moment ago and is still writing
                // its record (`record` truncates, then writes); look again.
                Err(LockError::Held { holder, .. })
                    if matches!(holder.role, Some(Role::Apply | Role::Flush) | None)
                        && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(50))
                }
                other => return other,
            }
        }
    }

    /// Writes `PID ROLE` into the lock file.
    fn record(&self, role: Role) -> std::io::Result<()> {
        let mut file = &self.file;
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{} {}", std::process::id(), role.tag())
    }

    /// Takes over a lock inherited from the parent process as file descriptor `fd` (see
    /// [`StateLock::inheritable_fd`]): the lock is never released in between.
    ///
    /// # Safety
    /// `fd` must be an open descriptor of the lock file that nothing else in this process owns.
    pub unsafe fn from_inherited_fd(
        fd: i32,
        state_dir: &Path,
        role: Role,
    ) -> Result<Self, LockError> {
        use std::os::fd::FromRawFd;
        let path = state_dir.join("lock");
        let io = |source| LockError::Io {
            path: path.display().to_string(),
            source,
        };
        // Re-locking an already locked open file is a no-op that confirms we hold it.
        if libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) != 0 {
            return Err(io(std::io::Error::last_os_error()));
        }
        let lock = Self {
            file: File::from_raw_fd(fd),
            path: path.clone(),
        };
        lock.record(role).map_err(io)?;
        Ok(lock)
    }

    /// Clears close-on-exec so that a child process inherits the lock, and returns the fd.
    pub fn inheritable_fd(&self) -> std::io::Result<i32> {
        let fd = self.file.as_raw_fd();
        // SAFETY: fcntl on a descriptor we own.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(fd)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("nodewall-lock-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn second_holder_is_refused_with_the_first_ones_pid_and_role() {
        let dir = dir("refused");
        let first = StateLock::acquire(&dir, Role::Run).unwrap();
        // A second open file description conflicts even within one process.
        let err = StateLock::acquire(&dir, Role::Run).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, LockError::Held { .. }), "{msg}");
        let holder = format!("pid {}, `nodewall run`", std::process::id());
        assert!(msg.contains(&holder), "{msg}");
        // `apply` does not wait for an agent.
        let t = Instant::now();
        let err = StateLock::acquire_waiting(&dir, Role::Apply, Duration::from_secs(5));
        assert!(matches!(err, Err(LockError::Held { .. })));
        assert!(t.elapsed() < Duration::from_secs(1), "no wait for `run`");
        drop(first);
        StateLock::acquire(&dir, Role::Run).expect("free once the holder is gone");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn apply_waits_for_another_apply() {
        let dir = dir("wait");
        let first = StateLock::acquire(&dir, Role::Apply).unwrap();
        let t = Instant::now();
        let err = StateLock::acquire_waiting(&dir, Role::Apply, Duration::from_millis(200));
        assert!(matches!(err, Err(LockError::Held { .. })));
        assert!(
            t.elapsed() >= Duration::from_millis(200),
            "waited for the holder"
        );
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drop(first);
        });
        StateLock::acquire_waiting(&dir, Role::Apply, Duration::from_secs(5))
            .expect("lock taken once the holder is gone");
        releaser.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
