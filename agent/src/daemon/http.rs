//! `/metrics`, `/healthz` and `/readyz` over HTTP/1.1, served by hyper.
//!
//! Every limit a scraper or probe never reaches but a misbehaving client would: at most
//! [`MAX_CONNECTIONS`] at once (a new one beyond that closes the oldest connection that has
//! sent no complete request head for [`IDLE_GRACE`], so that a pile of idle connections never
//! locks out the next scrape, or else waits in the listen backlog for one to finish), a request head of at most [`MAX_HEAD`] read within [`HEAD_TIMEOUT`], a whole
//! exchange within [`CONNECTION_DEADLINE`], one request per connection, and request bodies
//! never read (only GET and HEAD are served). A client that shuts its side down after its
//! request is still answered.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Notify};

use super::health::Health;
use super::worker::Worker;
use crate::metrics::Metrics;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Request heads larger than this are refused (hyper's smallest buffer).
const MAX_HEAD: usize = 16 * 1024;
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection is closed this long after it was accepted, whatever it is doing.
const CONNECTION_DEADLINE: Duration = Duration::from_secs(15);
/// How long a new connection may take to send its request head before a newer one may close
/// it to make room: a scraper sends its head at once, a connection left idle is not a scrape.
const IDLE_GRACE: Duration = Duration::from_millis(500);
/// A scrape waits this long for fresh kernel counters, then serves the last ones.
const COUNTERS_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone)]
pub struct Endpoints {
    pub worker: Worker,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
}

pub async fn serve(listener: TcpListener, endpoints: Endpoints) {
    let open = Arc::new(Open::default());
    let mut next_id = 0u64;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                tracing::warn!(error = %err, "metrics listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        next_id += 1;
        let id = next_id;
        let (answering, evicted) = open.admit(id).await;
        let (e, open) = (endpoints.clone(), open.clone());
        super::spawn(async move {
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .max_buf_size(MAX_HEAD)
                .keep_alive(false)
                // A client may shut its side once the request is sent (socat, `nc -N`):
                // hyper's default treats that as an aborted request and answers nothing.
                .half_close(true);
            let conn = http.serve_connection(
                TokioIo::new(stream),
                hyper::service::service_fn(move |req| {
                    // A complete head: from now on the connection is being answered.
                    answering.store(true, Ordering::Relaxed);
                    let e = e.clone();
                    async move { Ok::<_, Infallible>(respond(&req, &e).await) }
                }),
            );
            tokio::select! {
                r = tokio::time::timeout(CONNECTION_DEADLINE, conn) => match r {
                    Ok(Err(err)) => tracing::debug!(error = %err, "metrics connection"),
                    Err(_) => tracing::debug!("metrics connection: deadline passed, closed"),
                    Ok(Ok(())) => {}
                },
                _ = evicted => tracing::debug!("metrics connection: idle, closed for a newer one"),
            }
            open.leave(id);
        });
    }
}

/// One connection being served.
struct Conn {
    id: u64,
    /// Whether its request head arrived (it is being answered, never evicted).
    answering: Arc<AtomicBool>,
    accepted: Instant,
    evict: oneshot::Sender<()>,
}

/// The connections being served, oldest first.
#[derive(Default)]
struct Open {
    conns: Mutex<VecDeque<Conn>>,
    left: Notify,
}

impl Open {
    /// Registers connection `id` once there is room: at [`MAX_CONNECTIONS`] the oldest one
    /// that has waited [`IDLE_GRACE`] for its request head is closed; when there is none,
    /// this waits for a connection to finish (or for one to have idled that long). Returns the connection's "answering" flag and what fires
    /// when it is evicted in turn.
    async fn admit(&self, id: u64) -> (Arc<AtomicBool>, oneshot::Receiver<()>) {
        loop {
            let left = self.left.notified();
            {
                let mut conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
                let idle = conns.iter().position(|c| {
                    !c.answering.load(Ordering::Relaxed) && c.accepted.elapsed() >= IDLE_GRACE
                });
                if conns.len() >= MAX_CONNECTIONS {
                    if let Some(i) = idle {
                        let victim = conns.remove(i).expect("index found above");
                        let _ = victim.evict.send(());
                    }
                }
                if conns.len() < MAX_CONNECTIONS {
                    let (evict, evicted) = oneshot::channel();
                    let answering = Arc::new(AtomicBool::new(false));
                    conns.push_back(Conn {
                        id,
                        answering: answering.clone(),
                        accepted: Instant::now(),
                        evict,
                    });
                    return (answering, evicted);
                }
            }
            tokio::select! {
                () = left => {}
                () = tokio::time::sleep(IDLE_GRACE) => {}
            }
        }
    }

    fn leave(&self, id: u64) {
        let mut conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
        conns.retain(|c| c.id != id);
        self.left.notify_waiters();
    }
}

async fn respond(req: &Request<Incoming>, e: &Endpoints) -> Response<Full<Bytes>> {
    let plain = "text/plain; charset=utf-8";
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            plain,
            "method not allowed\n",
        );
    }
    match req.uri().path() {
        "/metrics" => {
            refresh_counters(e).await;
            let accept = req.headers().get(ACCEPT).and_then(|v| v.to_str().ok());
            let (ctype, body) = e.metrics.encode_for(accept);
            reply(StatusCode::OK, ctype, body)
        }
        "/healthz" if e.health.live() => reply(StatusCode::OK, plain, "ok\n"),
        "/healthz" => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            plain,
            "control loop stalled\n",
        ),
        "/readyz" if e.health.ready() => reply(StatusCode::OK, plain, "ok\n"),
        "/readyz" => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            plain,
            "policy not applied yet\n",
        ),
        _ => reply(StatusCode::NOT_FOUND, plain, "not found\n"),
    }
}

/// A response; hyper leaves the body out for HEAD and sets Content-Length.
fn reply(code: StatusCode, ctype: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = code;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    r
}

/// Reads the kernel counters now, so a scrape sees current values.
async fn refresh_counters(e: &Endpoints) {
    let metrics = e.metrics.clone();
    let read = e.worker.call(move |b| super::observe_counters(b, &metrics));
    if tokio::time::timeout(COUNTERS_TIMEOUT, read).await.is_err() {
        tracing::warn!("scrape: backend busy, serving the last counters read");
    }
}
