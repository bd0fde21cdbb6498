//! One plain HTTP/1.x request from inside a namespace (the agent's endpoints, a Prometheus
//! server, the API emulator): connect, send, read until the server closes.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::Context;

/// Sends `head` (request line and headers but `Host` and `Content-Length`, without the blank
/// line) and `body` to `addr` from inside namespace `ns` (by name); returns status and body.
/// The request must make the server close the connection (`Connection: close`, or HTTP/1.0).
pub fn request(ns: &str, addr: &str, head: &str, body: &str) -> anyhow::Result<(u16, String)> {
    let sa = addr.parse()?;
    let connect = || TcpStream::connect_timeout(&sa, Duration::from_secs(2));
    let mut stream = crate::netns::enter(ns, connect)??;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "{head}\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = String::new();
    stream.read_to_string(&mut out)?;
    let code = out
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("bad HTTP answer: {out:?}"))?;
    let body = out.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    Ok((code, body.to_string()))
}
