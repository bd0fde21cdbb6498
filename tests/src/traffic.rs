//! Real traffic: TCP and UDP servers in a namespace, and clients that connect from another one.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
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
            use std::os::fd::AsRawFd;
            let one: libc::c_int = 1;
            // SAFETY: a valid option value of the right size on an open socket.
            unsafe {
                libc::setsockopt(
                    c.as_raw_fd(),
                    libc::IPPROTO_TCP,
                    libc::TCP_CORK,
                    &one as *const _ as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as u32,
                )
            };
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
        use std::os::fd::{AsRawFd, IntoRawFd};
        let Some(mut s) = connect_from(addr, port, sport)? else {
            return Ok(false);
        };
        let mut buf = [0u8; 3];
        let ok = s.read_exact(&mut buf).is_ok() && &buf == b"ok\n";
        if close == Close::Rst {
            let linger = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            let fd = s.as_raw_fd();
            // SAFETY: a valid option value of the right size; the fd is closed once, here.
            unsafe {
                libc::setsockopt(
                    s.into_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    &linger as *const _ as *const libc::c_void,
                    std::mem::size_of::<libc::linger>() as u32,
                );
                libc::close(fd);
            }
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
    use std::os::fd::FromRawFd;
    let family = if addr.is_ipv6() {
        libc::AF_INET6
    } else {
        libc::AF_INET
    };
    // SAFETY: plain socket(2); the fd is owned by the TcpStream built from it below.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is fresh; the stream owns it from here.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    // SAFETY: a valid option value of the right size.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            &one as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as u32,
        )
    };
    let any: IpAddr = if addr.is_ipv6() {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv4Addr::UNSPECIFIED.into()
    };
    let local = socket2_addr(SocketAddr::new(any, sport));
    // SAFETY: a valid sockaddr of the stated length.
    if unsafe { libc::bind(fd, local.0.as_ptr().cast(), local.1) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let remote = socket2_addr(SocketAddr::new(addr, port));
    stream.set_nonblocking(true)?;
    // SAFETY: as above.
    let rc = unsafe { libc::connect(fd, remote.0.as_ptr().cast(), remote.1) };
    if rc != 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINPROGRESS) {
        return Ok(None);
    }
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let ready = unsafe { libc::poll(&mut pfd, 1, DROP_TIMEOUT.as_millis() as i32) };
    if ready != 1 || stream.take_error()?.is_some() {
        return Ok(None);
    }
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(DROP_TIMEOUT))?;
    Ok(Some(stream))
}

/// A sockaddr for libc calls: bytes and length.
fn socket2_addr(a: SocketAddr) -> (Vec<u8>, libc::socklen_t) {
    match a {
        SocketAddr::V4(v4) => {
            // SAFETY: zeroed sockaddr_in is valid.
            let mut s: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            s.sin_family = libc::AF_INET as u16;
            s.sin_port = v4.port().to_be();
            s.sin_addr.s_addr = u32::from_ne_bytes(v4.ip().octets());
            let len = std::mem::size_of::<libc::sockaddr_in>();
            // SAFETY: reading the plain struct's bytes.
            let b = unsafe { std::slice::from_raw_parts(&s as *const _ as *const u8, len) };
            (b.to_vec(), len as u32)
        }
        SocketAddr::V6(v6) => {
            // SAFETY: zeroed sockaddr_in6 is valid.
            let mut s: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            s.sin6_family = libc::AF_INET6 as u16;
            s.sin6_port = v6.port().to_be();
            s.sin6_addr.s6_addr = v6.ip().octets();
            let len = std::mem::size_of::<libc::sockaddr_in6>();
            // SAFETY: reading the plain struct's bytes.
            let b = unsafe { std::slice::from_raw_parts(&s as *const _ as *const u8, len) };
            (b.to_vec(), len as u32)
        }
    }
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
