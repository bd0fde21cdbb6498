//! The flow log: every drop sample as one JSON line in a file, for log shippers
//! (`drops.flow-log`). A thread of its own writes it, fed through a bounded queue: a slow or
//! full disk loses records (counted in `nodewall_flow_log_records_total{outcome="lost"}`),
//! never delays the agent.
//!
//! Rotation is by size and count, as logrotate's `copytruncate`-free scheme does it: when the
//! next line would take the file past `max-size`, `FILE.N-1` becomes `FILE.N` (the oldest,
//! `FILE.max-files`, is overwritten), ..., `FILE` becomes `FILE.1`, and a new `FILE` is
//! started. Each rename is atomic, and shippers that follow by name (Fluent Bit, Vector,
//! Promtail) pick up the new file. Lines are whole: a line is never split across files, and
//! the writer flushes as soon as it has nothing more to write.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::config;
use crate::drops::DropRecord;
use crate::metrics::Metrics;

/// Records waiting for the writer; more are lost. A second of samples at the highest rate
/// on a large machine.
const QUEUE: usize = 8192;
/// How often a writer that keeps failing says so.
const ERROR_REPORT: Duration = Duration::from_secs(10);

struct Running {
    config: config::FlowLog,
    tx: SyncSender<Arc<DropRecord>>,
    thread: std::thread::JoinHandle<()>,
}

pub struct FlowLog {
    running: Mutex<Option<Running>>,
    metrics: Arc<Metrics>,
}

impl FlowLog {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            running: Mutex::new(None),
            metrics,
        }
    }

    /// Starts, restarts (other settings) or stops (`None`) the writer. A stopped writer
    /// writes out what it was given first.
    pub fn configure(&self, want: Option<&config::FlowLog>) {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if running.as_ref().map(|r| &r.config) == want {
            return;
        }
        if let Some(old) = running.take() {
            drop(old.tx);
            let _ = old.thread.join();
        }
        let Some(config) = want.cloned() else {
            return;
        };
        let (tx, rx) = sync_channel(QUEUE);
        let writer = Writer::new(config.clone(), self.metrics.clone());
        match std::thread::Builder::new()
            .name("nodewall-flowlog".into())
            .spawn(move || writer.run(rx))
        {
            Ok(thread) => {
                tracing::info!(path = %config.path.display(), max_size = config.max_size, max_files = config.max_files, "flow log on");
                *running = Some(Running { config, tx, thread });
            }
            Err(e) => tracing::error!(error = %e, "flow log: cannot start its writer"),
        }
    }

    pub fn offer(&self, record: &Arc<DropRecord>) {
        let running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(r) = running.as_ref() {
            match r.tx.try_send(record.clone()) {
                Ok(()) => {}
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                    self.metrics.samples.flow_log_lost(1)
                }
            }
        }
    }
}

/// The writer thread's state.
struct Writer {
    config: config::FlowLog,
    metrics: Arc<Metrics>,
    /// The open file and its size, `None` after an error (reopened at the next record).
    file: Option<(BufWriter<File>, u64)>,
    last_error: Option<Instant>,
}

impl Writer {
    fn new(config: config::FlowLog, metrics: Arc<Metrics>) -> Self {
        Self {
            config,
            metrics,
            file: None,
            last_error: None,
        }
    }

    fn run(mut self, rx: Receiver<Arc<DropRecord>>) {
        while let Ok(first) = rx.recv() {
            self.write(&first);
            while let Ok(next) = rx.try_recv() {
                self.write(&next);
            }
            if let Some((f, _)) = self.file.as_mut() {
                if let Err(e) = f.flush() {
                    self.failed("writing", &e);
                }
            }
        }
        if let Some((mut f, _)) = self.file.take() {
            let _ = f.flush();
        }
    }

    fn write(&mut self, record: &DropRecord) {
        let mut line = record.to_json();
        line.push('\n');
        match self.try_write(line.as_bytes()) {
            Ok(()) => self.metrics.samples.flow_log_written(1),
            Err(e) => {
                self.metrics.samples.flow_log_lost(1);
                self.failed("writing", &e);
            }
        }
    }

    fn try_write(&mut self, line: &[u8]) -> std::io::Result<()> {
        if self.file.is_none() {
            self.file = Some(open(&self.config.path)?);
        }
        let size = self.file.as_ref().map_or(0, |(_, s)| *s);
        if size > 0 && size + line.len() as u64 > self.config.max_size {
            self.rotate()?;
        }
        let (f, size) = self.file.as_mut().expect("opened above");
        if let Err(e) = f.write_all(line) {
            // What reached the file is unknown: start over from its real size.
            self.file = None;
            return Err(e);
        }
        *size += line.len() as u64;
        Ok(())
    }

    /// `FILE.N-1` -> `FILE.N` ... `FILE` -> `FILE.1`, then a new `FILE`.
    fn rotate(&mut self) -> std::io::Result<()> {
        if let Some((mut f, _)) = self.file.take() {
            f.flush()?;
        }
        let path = &self.config.path;
        for n in (1..self.config.max_files).rev() {
            match std::fs::rename(numbered(path, n), numbered(path, n + 1)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        std::fs::rename(path, numbered(path, 1))?;
        self.metrics.samples.flow_log_rotated();
        self.file = Some(open(path)?);
        Ok(())
    }

    fn failed(&mut self, what: &str, e: &std::io::Error) {
        if self.last_error.is_none_or(|t| t.elapsed() >= ERROR_REPORT) {
            self.last_error = Some(Instant::now());
            tracing::warn!(path = %self.config.path.display(), error = %e, "flow log: {what} failed; records are lost until it works again");
        }
    }
}

/// Opens `path` for appending (created 0640: shippers often run as a group of their own),
/// with its current size.
fn open(path: &Path) -> std::io::Result<(BufWriter<File>, u64)> {
    let f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)?;
    let size = f.metadata()?.len();
    Ok((BufWriter::with_capacity(64 * 1024, f), size))
}

/// `FILE.n`.
pub fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drops::{record::tests::event, Stamp};

    fn record() -> Arc<DropRecord> {
        let stamp = Stamp {
            node: "n".into(),
            backend: "nft".into(),
        };
        Arc::new(DropRecord::new(
            &event("tcp", false),
            std::time::SystemTime::now(),
            &stamp,
            Some("eth0".into()),
        ))
    }

    #[test]
    fn rotates_at_its_size_and_keeps_its_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("drops.jsonl");
        let metrics = Arc::new(Metrics::new("nft"));
        let log = FlowLog::new(metrics.clone());
        let line = record().to_json().len() as u64 + 1;
        let config = config::FlowLog {
            path: path.clone(),
            max_size: line * 3,
            max_files: 2,
        };
        log.configure(Some(&config));
        // 3 lines a file: of 10 lines, FILE.2, FILE.1 and FILE hold 4..6, 7..9 and 10 (1..3
        // were rotated out).
        for _ in 0..10 {
            log.offer(&record());
        }
        log.configure(None);
        let lines = |p: &Path| std::fs::read_to_string(p).unwrap().lines().count();
        assert_eq!(lines(&path), 1);
        assert_eq!(lines(&numbered(&path, 1)), 3);
        assert_eq!(lines(&numbered(&path, 2)), 3);
        assert!(!numbered(&path, 3).exists(), "only max-files rotated files");
        for p in [path.clone(), numbered(&path, 1), numbered(&path, 2)] {
            let size = std::fs::metadata(&p).unwrap().len();
            assert!(size <= config.max_size, "{} is {size} bytes", p.display());
            for l in std::fs::read_to_string(&p).unwrap().lines() {
                serde_json::from_str::<DropRecord>(l).expect("whole JSON lines");
            }
        }
        let text = metrics.encode();
        assert!(
            text.contains("nodewall_flow_log_rotations_total 3"),
            "{text}"
        );
        assert!(text.contains("nodewall_flow_log_records_total{outcome=\"written\"} 10"));
    }

    #[test]
    fn an_unwritable_file_loses_records_and_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::new("nft"));
        let log = FlowLog::new(metrics.clone());
        let config = config::FlowLog {
            path: dir.path().join("missing-dir/drops.jsonl"),
            max_size: 1 << 20,
            max_files: 1,
        };
        log.configure(Some(&config));
        log.offer(&record());
        std::thread::sleep(Duration::from_millis(50));
        std::fs::create_dir(dir.path().join("missing-dir")).unwrap();
        log.offer(&record());
        log.configure(None);
        let text = metrics.encode();
        assert!(
            text.contains("nodewall_flow_log_records_total{outcome=\"lost\"} 1"),
            "{text}"
        );
        assert!(text.contains("nodewall_flow_log_records_total{outcome=\"written\"} 1"));
        assert_eq!(
            std::fs::read_to_string(&config.path)
                .unwrap()
                .lines()
                .count(),
            1
        );
    }
}
