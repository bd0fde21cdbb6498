//! Noticing config file changes with inotify.
//!
//! The file's *directory* is watched, not the file: editors replace files by renaming, and a
//! Kubernetes ConfigMap volume updates by swapping its `..data` symlink (rename in the
//! directory), which never touches the path the agent was given. The directory of the
//! symlink's current target is watched too, for a `-c` symlink that points elsewhere. Events
//! only wake the daemon up: it then re-reads the file and compares contents, so spurious or
//! coalesced events are harmless.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

pub struct ConfigWatcher {
    fd: AsyncFd<OwnedFd>,
    file: PathBuf,
    /// When the last not yet reported event arrived.
    last_event: Option<Instant>,
}

const MASK: u32 = libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_CLOSE_WRITE
    | libc::IN_MODIFY
    | libc::IN_ATTRIB
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF;

/// Quiet period after an event before reporting a change: a ConfigMap swap or an editor's
/// save is several events in a row.
const SETTLE: Duration = Duration::from_millis(150);

impl ConfigWatcher {
    pub fn new(file: &Path) -> std::io::Result<Self> {
        // SAFETY: plain syscall; the returned descriptor is owned below.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: the OwnedFd moves into the AsyncFd and stays open until it is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let w = Self {
            fd,
            file: file.to_path_buf(),
            last_event: None,
        };
        w.add_watches()?;
        Ok(w)
    }

    /// Watches the file's directory (must exist) and, best effort, its target's directory.
    fn add_watches(&self) -> std::io::Result<()> {
        let dir = parent(&self.file);
        self.add_watch(&dir)?;
        if let Ok(target) = std::fs::canonicalize(&self.file) {
            let target_dir = parent(&target);
            if target_dir != dir {
                let _ = self.add_watch(&target_dir);
            }
        }
        Ok(())
    }

    fn add_watch(&self, dir: &Path) -> std::io::Result<()> {
        let c = CString::new(dir.as_os_str().as_bytes())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        // SAFETY: valid descriptor and NUL-terminated path.
        let wd = unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), c.as_ptr(), MASK) };
        if wd < 0 {
            let e = std::io::Error::last_os_error();
            return Err(std::io::Error::new(
                e.kind(),
                format!("watching {}: {e}", dir.display()),
            ));
        }
        Ok(())
    }

    /// Waits until something changed in a watched directory and then stayed quiet for a
    /// moment. Cancel-safe (it is raced against timers in a `select!`): an event already
    /// drained is remembered, and the quiet period counts from the last one.
    pub async fn changed(&mut self) -> std::io::Result<()> {
        loop {
            let event = match self.last_event {
                None => Some(self.wait_and_drain().await),
                Some(t) => tokio::select! {
                    r = self.wait_and_drain() => Some(r),
                    _ = tokio::time::sleep_until((t + SETTLE).into()) => None,
                },
            };
            match event {
                Some(r) => {
                    r?;
                    self.last_event = Some(Instant::now());
                }
                None => {
                    self.last_event = None;
                    // The symlink may point into a new directory now (ConfigMap `..2024_..`).
                    let _ = self.add_watches();
                    return Ok(());
                }
            }
        }
    }

    async fn wait_and_drain(&self) -> std::io::Result<()> {
        loop {
            let mut guard = self.fd.readable().await?;
            let mut buf = [0u8; 4096];
            let read = guard.try_io(|fd| {
                // SAFETY: reading into a local buffer of the given length.
                let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(n)
                }
            });
            match read {
                Ok(Ok(n)) if n > 0 => {
                    // Drain whatever else is queued without waiting (non-blocking fd).
                    // SAFETY: as above.
                    while unsafe {
                        libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len())
                    } > 0
                    {}
                    return Ok(());
                }
                Ok(Ok(_)) => continue,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
