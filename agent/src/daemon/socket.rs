//! The agent's local socket (`<state-dir>/agent.sock`, protocol in [`crate::drops::wire`]):
//! the live drop stream for `nodewall drops` and rule usage for `nodewall status`.
//!
//! Access: the socket is created 0600 under a temporary name and renamed into place, so it is
//! never reachable with looser permissions, and each connection's peer must be root or the
//! agent's own user (`SO_PEERCRED`). Drop samples show who is knocking at the node: they are
//! for the node's administrators.
//!
//! Limits: [`MAX_READERS`] live readers at once (another is told so and closed), a request
//! line of at most [`wire::MAX_REQUEST`] bytes within [`REQUEST_TIMEOUT`]. A reader that stops
//! reading holds its connection (its socket buffer fills, then its queue in the hub: further
//! samples are not queued for it, and are counted as lost at once)
//! and, once it reads again, learns how many samples it lost.

use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

use super::hub::{Hub, Subscription};
use crate::drops::wire::{self, Get, Message, Request};
use crate::drops::DropRecord;
use crate::metrics::Metrics;

pub const MAX_READERS: usize = 16;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes of samples gathered into one write to a reader.
const BATCH_BYTES: usize = 64 * 1024;

/// The bound socket; removes its file when dropped.
pub struct Socket {
    listener: Option<UnixListener>,
    path: PathBuf,
}

impl Socket {
    /// Binds `<state_dir>/agent.sock`, replacing the file a previous agent left (the node lock,
    /// held by the caller, says no other agent uses it).
    pub fn bind(state_dir: &Path) -> std::io::Result<Socket> {
        let path = wire::socket_path(state_dir);
        let tmp = state_dir.join(format!(".{}.{}", wire::SOCKET, std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let listener = UnixListener::bind(&tmp)?;
        let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = placed {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(Socket {
            listener: Some(listener),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves connections until the returned future is dropped.
    pub fn serve(
        &mut self,
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
    ) -> impl std::future::Future<Output = ()> {
        let listener = self.listener.take().expect("served once");
        serve(listener, hub, metrics)
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn serve(listener: UnixListener, hub: Arc<Hub>, metrics: Arc<Metrics>) {
    let readers = Arc::new(Semaphore::new(MAX_READERS));
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "agent socket: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match stream.peer_cred() {
            Ok(c) if c.uid() == 0 || c.uid() == me => {}
            Ok(c) => {
                tracing::warn!(
                    uid = c.uid(),
                    "agent socket: refused a connection from another user"
                );
                continue;
            }
            Err(e) => {
                tracing::debug!(error = %e, "agent socket: no peer credentials");
                continue;
            }
        }
        let (hub, metrics, readers) = (hub.clone(), metrics.clone(), readers.clone());
        super::spawn(async move {
            if let Err(e) = connection(stream, &hub, &metrics, &readers).await {
                tracing::debug!(error = %e, "agent socket: connection ended");
            }
        });
    }
}

async fn connection(
    stream: UnixStream,
    hub: &Hub,
    metrics: &Metrics,
    readers: &Semaphore,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read.take(wire::MAX_REQUEST as u64));
    let mut line = String::new();
    let request = match tokio::time::timeout(REQUEST_TIMEOUT, read.read_line(&mut line)).await {
        Ok(Ok(_)) => serde_json::from_str::<Request>(line.trim_end())
            .map_err(|e| format!("bad request {:?}: {e}", line.trim_end())),
        Ok(Err(e)) => return Err(e),
        Err(_) => Err("no request within 5 s".to_string()),
    };
    let request = match request {
        Ok(r) => r,
        Err(message) => {
            write
                .write_all(Message::Error { message }.to_line().as_bytes())
                .await?;
            return Ok(());
        }
    };
    match request.get {
        Get::Rules => {
            let rules = metrics.usage.snapshot();
            write
                .write_all(Message::RuleUsage { rules }.to_line().as_bytes())
                .await
        }
        Get::Drops => {
            let Ok(_permit) = readers.try_acquire() else {
                let message = format!(
                    "{MAX_READERS} readers are connected, the most the agent serves; try again when one has left"
                );
                return write
                    .write_all(Message::Error { message }.to_line().as_bytes())
                    .await;
            };
            metrics.samples.reader_connected();
            let result = stream_drops(read.into_inner().into_inner(), &mut write, hub).await;
            metrics.samples.reader_left();
            result
        }
    }
}

/// Recent samples, then live ones, until the reader hangs up.
async fn stream_drops(
    mut read: tokio::net::unix::OwnedReadHalf,
    write: &mut tokio::net::unix::OwnedWriteHalf,
    hub: &Hub,
) -> std::io::Result<()> {
    let (recent, mut live) = hub.subscribe();
    let in_force = hub.in_force();
    let mut out = Message::Hello {
        node: hub.stamp().node.clone(),
        backend: hub.stamp().backend.clone(),
        mode: match in_force.mode {
            crate::policy::Mode::Enforce => "enforce",
            crate::policy::Mode::Audit => "audit",
        }
        .to_string(),
        samples_per_second: in_force.samples_per_second,
        recent: recent.len(),
    }
    .to_line();
    for r in recent {
        out.push_str(&Message::Sample((*r).clone()).to_line());
    }
    out.push_str(&Message::Live.to_line());
    write.write_all(out.as_bytes()).await?;
    let mut scratch = [0u8; 64];
    loop {
        out.clear();
        tokio::select! {
            got = live.rx.recv() => match got {
                Some(r) => push(&mut out, &r, &live),
                None => return Err(std::io::Error::new(ErrorKind::BrokenPipe, "the agent is stopping")),
            },
            // The reader sends nothing more: a read returning means it hung up.
            n = read.read(&mut scratch) => match n {
                Ok(0) | Err(_) => return Ok(()),
                Ok(_) => continue,
            },
        }
        while out.len() < BATCH_BYTES {
            match live.rx.try_recv() {
                Ok(r) => push(&mut out, &r, &live),
                Err(_) => break,
            }
        }
        write.write_all(out.as_bytes()).await?;
    }
}

/// `record`, after the count of those lost before it (the hub counted them in the metric).
fn push(out: &mut String, record: &DropRecord, live: &Subscription) {
    let count = live.take_lost();
    if count > 0 {
        out.push_str(&Message::Lost { count }.to_line());
    }
    out.push_str(&Message::Sample(record.clone()).to_line());
}
