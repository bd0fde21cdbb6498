//! The backend lives on its own OS thread and the async daemon sends it jobs.
//!
//! Backends hold netlink sockets or loaded eBPF objects and make blocking syscalls; the trait
//! asks for neither `Send` nor `Sync`. One thread owning the backend runs every job to
//! completion in order, which also serialises counter reads with applies (see
//! `Metrics::observe_counters`) without any lock around the kernel.

use std::sync::mpsc;

use tokio::sync::oneshot;

use crate::backend::Backend;

type Job = Box<dyn FnOnce(&mut dyn Backend) + Send>;

#[derive(Clone)]
pub struct Worker {
    tx: mpsc::Sender<Job>,
    name: &'static str,
}

impl Worker {
    /// Starts the thread and opens the backend on it (threads share the process's network
    /// namespace). The thread exits when the last `Worker` clone is dropped.
    pub async fn spawn<F>(open: F) -> anyhow::Result<Worker>
    where
        F: FnOnce() -> anyhow::Result<Box<dyn Backend>> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel::<Job>();
        let (opened_tx, opened_rx) = oneshot::channel();
        // The backend's own log lines carry the daemon's fields too.
        let span = tracing::Span::current();
        std::thread::Builder::new()
            .name("nodewall-backend".into())
            .spawn(move || {
                let _in_span = span.enter();
                let mut backend = match open() {
                    Ok(b) => {
                        let _ = opened_tx.send(Ok(b.name()));
                        b
                    }
                    Err(e) => {
                        let _ = opened_tx.send(Err(e));
                        return;
                    }
                };
                for job in rx {
                    // A panicking job loses its reply (the caller sees an error) but must
                    // not take the backend down with it.
                    let run = std::panic::AssertUnwindSafe(|| job(backend.as_mut()));
                    let _ = std::panic::catch_unwind(run);
                }
            })?;
        let name = opened_rx
            .await
            .map_err(|_| anyhow::anyhow!("backend thread died while opening the backend"))??;
        Ok(Worker { tx, name })
    }

    pub fn backend_name(&self) -> &'static str {
        self.name
    }

    /// Runs `f` on the backend thread and returns its result.
    pub async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Backend) -> R + Send + 'static,
    ) -> anyhow::Result<R> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Box::new(move |b| {
                let _ = tx.send(f(b));
            }))
            .map_err(|_| anyhow::anyhow!("backend thread is gone"))?;
        rx.await
            .map_err(|_| anyhow::anyhow!("backend thread panicked while running a job"))
    }
}
