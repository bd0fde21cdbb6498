//! `/metrics`, `/healthz` and `/readyz` over plain HTTP/1.1.
//!
//! Three GET endpoints with small bodies do not justify an HTTP stack: this reads one request
//! head (bounded in size and time), answers, and closes the connection, which every scraper
//! and kubelet probe accepts.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::health::Health;
use super::worker::Worker;
use crate::metrics::Metrics;

const MAX_HEAD: usize = 16 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A scrape waits this long for fresh kernel counters, then serves the last ones.
const COUNTERS_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone)]
pub struct Endpoints {
    pub worker: Worker,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
}

pub async fn serve(listener: TcpListener, endpoints: Endpoints) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let e = endpoints.clone();
                super::spawn(async move {
                    if let Err(err) = handle(stream, e).await {
                        tracing::debug!(error = %err, "metrics connection");
                    }
                });
            }
            Err(err) => {
                tracing::warn!(error = %err, "metrics listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

struct Request {
    method: String,
    path: String,
    accept: Option<String>,
}

async fn handle(mut stream: TcpStream, e: Endpoints) -> std::io::Result<()> {
    let req = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Ok(Ok(Some(req))) => req,
        Ok(Ok(None)) => return respond(&mut stream, 400, "text/plain", "bad request\n").await,
        Ok(Err(err)) => return Err(err),
        Err(_) => return Ok(()),
    };
    if req.method != "GET" && req.method != "HEAD" {
        return respond(&mut stream, 405, "text/plain", "method not allowed\n").await;
    }
    let (code, ctype, body) = route(&req, &e).await;
    let head = head(code, ctype, body.len());
    stream.write_all(head.as_bytes()).await?;
    if req.method == "GET" {
        stream.write_all(body.as_bytes()).await?;
    }
    stream.shutdown().await
}

async fn route(req: &Request, e: &Endpoints) -> (u16, &'static str, String) {
    let plain = "text/plain; charset=utf-8";
    match req.path.split('?').next().unwrap_or("") {
        "/metrics" => {
            refresh_counters(e).await;
            let (ctype, body) = e.metrics.encode_for(req.accept.as_deref());
            (200, ctype, body)
        }
        "/healthz" if e.health.live() => (200, plain, "ok\n".into()),
        "/healthz" => (503, plain, "control loop stalled\n".into()),
        "/readyz" if e.health.ready() => (200, plain, "ok\n".into()),
        "/readyz" => (503, plain, "policy not applied yet\n".into()),
        _ => (404, plain, "not found\n".into()),
    }
}

/// Reads the kernel counters now, so a scrape sees current values.
async fn refresh_counters(e: &Endpoints) {
    let metrics = e.metrics.clone();
    let read = e.worker.call(move |b| super::observe_counters(b, &metrics));
    if tokio::time::timeout(COUNTERS_TIMEOUT, read).await.is_err() {
        tracing::warn!("scrape: backend busy, serving the last counters read");
    }
}

async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Request>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() > MAX_HEAD {
            return Ok(None);
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(parse_head(&String::from_utf8_lossy(&buf)))
}

fn parse_head(head: &str) -> Option<Request> {
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    first.next().filter(|v| v.starts_with("HTTP/1."))?;
    let accept = lines.find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("accept")
            .then(|| value.trim().to_string())
    });
    Some(Request {
        method,
        path,
        accept,
    })
}

async fn respond(
    stream: &mut TcpStream,
    code: u16,
    ctype: &str,
    body: &str,
) -> std::io::Result<()> {
    stream
        .write_all(head(code, ctype, body.len()).as_bytes())
        .await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

fn head(code: u16, ctype: &str, len: usize) -> String {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    format!("HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n")
}

#[cfg(test)]
mod tests {
    use super::parse_head;

    #[test]
    fn parses_a_prometheus_scrape_head() {
        let r = parse_head("GET /metrics HTTP/1.1\r\nHost: x\r\nACCEPT: application/openmetrics-text;version=1.0.0\r\n\r\n").unwrap();
        assert_eq!((r.method.as_str(), r.path.as_str()), ("GET", "/metrics"));
        assert_eq!(
            r.accept.as_deref(),
            Some("application/openmetrics-text;version=1.0.0")
        );
        assert!(parse_head("garbage\r\n\r\n").is_none());
    }
}
