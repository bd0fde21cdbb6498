//! One writer per node: `nodewall run` and `nodewall apply` take an exclusive `flock` on
//! `<state-dir>/lock` before touching the kernel, so two agents never fight over the policy.
//!
//! `flock` locks belong to the open file, not to a path or a process: the kernel drops the lock
//! when the holder dies (even by `kill -9`), so a stale lock file never blocks a restart. The
//! holder's pid is written into the file only to name it in the error message.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Held for as long as this value lives.
#[derive(Debug)]
pub struct StateLock {
    file: File,
    path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{path}: another nodewall ({holder}) manages this node's firewall; stop it first (only one agent may run per node)")]
    Held { path: String, holder: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

impl StateLock {
    /// Takes the lock without waiting, creating the state directory if needed.
    pub fn acquire(state_dir: &Path) -> Result<Self, LockError> {
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
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = match holder.trim() {
                "" => "pid unknown".to_string(),
                pid => format!("pid {pid}"),
            };
            return Err(LockError::Held {
                path: path.display().to_string(),
                holder,
            });
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(Self { file, path })
    }

    /// Takes over a lock inherited from the parent process as file descriptor `fd` (see
    /// [`StateLock::inheritable_fd`]): the lock is never released in between.
    ///
    /// # Safety
    /// `fd` must be an open descriptor of the lock file that nothing else in this process owns.
    pub unsafe fn from_inherited_fd(fd: i32, state_dir: &Path) -> Result<Self, LockError> {
        use std::os::fd::FromRawFd;
        let mut file = File::from_raw_fd(fd);
        let path = state_dir.join("lock");
        let io = |source| LockError::Io {
            path: path.display().to_string(),
            source,
        };
        // Re-locking an already locked open file is a no-op that confirms we hold it.
        if libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) != 0 {
            return Err(io(std::io::Error::last_os_error()));
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(Self { file, path })
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

    #[test]
    fn second_holder_is_refused_with_the_first_ones_pid() {
        let dir = std::env::temp_dir().join(format!("nodewall-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = StateLock::acquire(&dir).unwrap();
        // A second open file description conflicts even within one process.
        let err = StateLock::acquire(&dir).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, LockError::Held { .. }), "{msg}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        drop(first);
        StateLock::acquire(&dir).expect("lock is free once the holder is gone");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
