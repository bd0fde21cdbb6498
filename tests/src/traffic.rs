//! Real traffic: TCP and UDP servers in a namespace, and clients that connect from another one.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::netns::Netns;

/// How long a client waits before calling a connection dropped.
pub const DROP_TIMEOUT: Duration = Duration::from_millis(800);

/// A dual-stack server on one port (TCP: answers "ok" and closes; UDP: echoes), stopped on drop.
pub struct Server {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Server {
    pub fn tcp(ns: &Netns, port: u16) -> anyhow::Result<Self> {
        Self::tcp_answering(ns, port, |c| {
            let _ = c.write_all(b"ok\n");
        })
    }

    /// A TCP server that answers `len` bytes in one corked write and closes: its FIN rides on
    /// its last data segment, a packet far longer than the headers a datapath pulls in.
    pub fn tcp_corked(ns: &Netns, port: u16, len: usize) -> anyhow::Result<Self> {
        let body = vec![b'x'; len];
        Self::tcp_answering(ns, port, move |c| {
            let _ = socket2::SockRef::from(&c).set_tcp_cork(true);
            let _ = c.write_all(&body);
        })
    }

    /// A dual-stack TCP server that runs `answer` on each connection, then closes it.
    fn tcp_answering(
        ns: &Netns,
        port: u16,
        answer: impl Fn(&mut TcpStream) + Send + 'static,
    ) -> anyhow::Result<Self> {
        let l = ns.enter(|| TcpListener::bind(("::", port)))??;
        l.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let t = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut c, _)) => {
                        let _ = c.set_nonblocking(false);
                        answer(&mut c);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(Self {
            stop,
            threads: vec![t],
        })
    }

    pub fn udp(ns: &Netns, port: u16) -> anyhow::Result<Self> {
        let sock = ns.enter(|| UdpSocket::bind(("::", port)))??;
        sock.set_read_timeout(Some(Duration::from_millis(20)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let t = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !s.load(Ordering::Relaxed) {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    let _ = sock.send_to(&buf[..n], from);
                }
            }
        });
        Ok(Self {
            stop,
            threads: vec![t],
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Connects from `ns` to `addr:port` and reads the server's answer: true if it came.
pub fn tcp_ok(ns: &Netns, addr: IpAddr, port: u16) -> bool {
    ns.enter(|| {
        let Ok(mut s) = TcpStream::connect_timeout(&SocketAddr::new(addr, port), DROP_TIMEOUT)
        else {
            return false;
        };
        let _ = s.set_read_timeout(Some(DROP_TIMEOUT));
        let mut buf = [0u8; 3];
        s.read_exact(&mut buf).is_ok() && &buf == b"ok\n"
    })
    .unwrap_or(false)
}

/// How a [`tcp_ok_from`] client ends the connection once it has the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Close {
    /// An orderly close (FIN), after the server's.
    Fin,
    /// An abortive close (RST: `SO_LINGER` 0).
    Rst,
}

/// [`tcp_ok`] from source port `sport` (bound with `SO_REUSEADDR`, so a port whose last
/// connection just ended can be taken again), closing as `close` says.
pub fn tcp_ok_from(ns: &Netns, addr: IpAddr, port: u16, sport: u16, close: Close) -> bool {
    ns.enter(|| -> std::io::Result<bool> {
        let Some(mut s) = connect_from(addr, port, sport)? else {
            return Ok(false);
        };
        let mut buf = [0u8; 3];
        let ok = s.read_exact(&mut buf).is_ok() && &buf == b"ok\n";
        if close == Close::Rst {
            socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO))?;
            drop(s);
        } else {
            // Wait for the server's FIN so ours comes second: the server end closes first.
            let _ = s.read(&mut buf);
        }
        Ok(ok)
    })
    .ok()
    .and_then(Result::ok)
    .unwrap_or(false)
}

/// Connects from `ns`, source port `sport`, reads until the server closes, then closes
/// (FIN): the bytes read, or `None` if the connection failed or stalled.
pub fn tcp_drain_from(ns: &Netns, addr: IpAddr, port: u16, sport: u16) -> Option<usize> {
    ns.enter(|| -> std::io::Result<Option<usize>> {
        let Some(mut s) = connect_from(addr, port, sport)? else {
            return Ok(None);
        };
        let mut got = Vec::new();
        Ok(s.read_to_end(&mut got).ok().map(|_| got.len()))
    })
    .ok()
    .and_then(|r| r.ok().flatten())
}

/// A TCP connection from source port `sport` (bound with `SO_REUSEADDR`) in the calling
/// thread's namespace, with [`DROP_TIMEOUT`] to connect and on reads; `None` if it failed.
fn connect_from(addr: IpAddr, port: u16, sport: u16) -> std::io::Result<Option<TcpStream>> {
    let remote = SocketAddr::new(addr, port);
    let any: IpAddr = if addr.is_ipv6() {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv4Addr::UNSPECIFIED.into()
    };
    let s = socket2::Socket::new(
        socket2::Domain::for_address(remote),
        socket2::Type::STREAM,
        None,
    )?;
    s.set_reuse_address(true)?;
    s.bind(&SocketAddr::new(any, sport).into())?;
    if s.connect_timeout(&remote.into(), DROP_TIMEOUT).is_err() {
        return Ok(None);
    }
    let stream = TcpStream::from(s);
    stream.set_read_timeout(Some(DROP_TIMEOUT))?;
    Ok(Some(stream))
}

/// Sends a datagram from `ns`, source port `sport`, to `addr:port` and waits for the echo.
pub fn udp_ok_from(ns: &Netns, addr: IpAddr, port: u16, sport: u16) -> bool {
    ns.enter(|| {
        let any: IpAddr = if addr.is_ipv6() {
            std::net::Ipv6Addr::UNSPECIFIED.into()
        } else {
            std::net::Ipv4Addr::UNSPECIFIED.into()
        };
        let Ok(s) = UdpSocket::bind(SocketAddr::new(any, sport)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(DROP_TIMEOUT));
        if s.send_to(b"nodewall", (addr, port)).is_err() {
            return false;
        }
        let mut buf = [0u8; 16];
        matches!(s.recv_from(&mut buf), Ok((8, _)))
    })
    .unwrap_or(false)
}

/// Sends a datagram from `ns` to `addr:port` and waits for the echo.
pub fn udp_ok(ns: &Netns, addr: IpAddr, port: u16) -> bool {
    ns.enter(|| {
        // A source port no earlier datagram of this process used: an ephemeral port may repeat
        // one whose flow conntrack still remembers as answered (under an earlier policy), and
        // the datagram would pass as `established` whatever the current policy says.
        let any: IpAddr = if addr.is_ipv6() {
            std::net::Ipv6Addr::UNSPECIFIED.into()
        } else {
            std::net::Ipv4Addr::UNSPECIFIED.into()
        };
        let Ok(s) = UdpSocket::bind(SocketAddr::new(any, crate::probe::next_port()))
            .or_else(|_| UdpSocket::bind(SocketAddr::new(any, 0)))
        else {
            return false;
        };
        let _ = s.set_read_timeout(Some(DROP_TIMEOUT));
        if s.send_to(b"nodewall", (addr, port)).is_err() {
            return false;
        }
        let mut buf = [0u8; 16];
        matches!(s.recv_from(&mut buf), Ok((8, _)))
    })
    .unwrap_or(false)
}

/// One echo request from `ns` (the `ping` tool), answered within the drop timeout.
pub fn ping_ok(ns: &Netns, addr: IpAddr) -> bool {
    let family = if addr.is_ipv6() { "-6" } else { "-4" };
    ns.command("ping")
        .args([family, "-c", "1", "-W", "0.8", &addr.to_string()])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// A check's description, what it runs, and the outcome it must give.
type Check<'a> = (String, Box<dyn FnOnce() -> bool + Send + 'a>, bool);

/// Expected outcomes of real-traffic checks, run concurrently (a drop costs a timeout each).
#[derive(Default)]
pub struct Checks<'a> {
    items: Vec<Check<'a>>,
}

impl<'a> Checks<'a> {
    /// Adds a check: `run` must return `want`.
    pub fn expect(
        &mut self,
        what: impl Into<String>,
        want: bool,
        run: impl FnOnce() -> bool + Send + 'a,
    ) {
        self.items.push((what.into(), Box::new(run), want));
    }

    /// Runs every check at once; Err lists those that did not give the expected outcome.
    pub fn run(self) -> anyhow::Result<()> {
        let total = self.items.len();
        let failures: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = self
                .items
                .into_iter()
                .map(|(what, run, want)| s.spawn(move || (what, run() == want, want)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("check thread"))
                .filter(|(_, ok, _)| !ok)
                .map(|(what, _, want)| {
                    format!(
                        "{what}: expected {}",
                        if want { "to pass" } else { "to be dropped" }
                    )
                })
                .collect()
        });
        if failures.is_empty() {
            Ok(())
        } else {
            anyhow::bail!(
                "{} of {total} checks failed:\n{}",
                failures.len(),
                failures.join("\n")
            )
        }
    }
}

/// Counts the datagrams that reach a UDP port (both families) of a namespace, until dropped.
pub struct UdpCounter {
    received: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl UdpCounter {
    pub fn start(ns: &Netns, port: u16) -> anyhow::Result<Self> {
        let sock = ns.enter(|| UdpSocket::bind(("::", port)))??;
        sock.set_read_timeout(Some(Duration::from_millis(20)))?;
        let received = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (received.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while !s.load(Ordering::Relaxed) {
                if sock.recv_from(&mut buf).is_ok() {
                    r.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Ok(Self {
            received,
            stop,
            thread: Some(thread),
        })
    }

    pub fn get(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

impl Drop for UdpCounter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
