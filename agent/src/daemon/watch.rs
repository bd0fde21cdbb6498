//! Noticing config file changes with inotify (the `inotify` crate).
//!
//! The file's *directory* is watched, not the file: editors replace files by renaming, and a
//! Kubernetes ConfigMap volume updates by swapping its `..data` symlink (rename in the
//! directory), which never touches the path the agent was given. The directory of the
//! symlink's current target is watched too, for a `-c` symlink that points elsewhere. Events
//! only wake the daemon up: it then re-reads the file and compares contents, so spurious or
//! coalesced events are harmless.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::{FutureExt, StreamExt};
use inotify::{EventStream, Inotify, WatchMask, Watches};

pub struct ConfigWatcher {
    watches: Watches,
    events: EventStream<[u8; 4096]>,
    file: PathBuf,
    /// When the last not yet reported event arrived.
    last_event: Option<Instant>,
}

const MASK: WatchMask = WatchMask::CREATE
    .union(WatchMask::DELETE)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::CLOSE_WRITE)
    .union(WatchMask::MODIFY)
    .union(WatchMask::ATTRIB)
    .union(WatchMask::DELETE_SELF)
    .union(WatchMask::MOVE_SELF);

/// Quiet period after an event before reporting a change: a ConfigMap swap or an editor's
/// save is several events in a row.
const SETTLE: Duration = Duration::from_millis(150);

impl ConfigWatcher {
    pub fn new(file: &Path) -> std::io::Result<Self> {
        let inotify = Inotify::init()?;
        let watches = inotify.watches();
        let mut w = Self {
            watches,
            events: inotify.into_event_stream([0u8; 4096])?,
            file: file.to_path_buf(),
            last_event: None,
        };
        w.add_watches()?;
        Ok(w)
    }

    /// Watches the file's directory (must exist) and, best effort, its target's directory.
    fn add_watches(&mut self) -> std::io::Result<()> {
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

    fn add_watch(&mut self, dir: &Path) -> std::io::Result<()> {
        self.watches
            .add(dir, MASK)
            .map(|_| ())
            .map_err(|e| std::io::Error::new(e.kind(), format!("watching {}: {e}", dir.display())))
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

    /// The next event, then whatever else is queued already (events only wake us up).
    async fn wait_and_drain(&mut self) -> std::io::Result<()> {
        match self.events.next().await {
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e),
            None => return Err(std::io::Error::other("inotify stream ended")),
        }
        while let Some(Some(Ok(_))) = self.events.next().now_or_never() {}
        Ok(())
    }
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
