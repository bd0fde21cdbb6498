//! `kill -9` of the agent, then a new agent: the policy never stops enforcing (a stream of
//! datagrams to a closed port gets nothing through at any moment) and established traffic is
//! never cut (a continuous TCP echo stream through the uplink keeps flowing, every byte in
//! order). Also: SIGTERM leaves the policy installed; `--flush-on-exit` removes it.

mod daemon_support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use daemon_support::{Agent, TempDir};
use nodewall_netns_tests::installed::present;
use nodewall_netns_tests::nodewall::Config;
use nodewall_netns_tests::topology::{node_addr, Topology};
use nodewall_netns_tests::traffic::UdpCounter;
use nodewall_netns_tests::{backend_tests, Backend};

/// A NodePort: allowed from the internet by tke-node.
const STREAM_PORT: u16 = 30080;
/// Closed to the internet by tke-node.
const CLOSED_PORT: u16 = 9999;

/// Sends `n` datagrams from the internet to the closed port, `gap` apart.
fn blast(topo: &Topology, n: u32, gap: Duration) -> anyhow::Result<()> {
    let sock = topo.internet.ns.enter(|| UdpSocket::bind("0.0.0.0:0"))??;
    let to = SocketAddr::new(node_addr(false), CLOSED_PORT);
    for _ in 0..n {
        sock.send_to(b"gap?", to)?;
        std::thread::sleep(gap);
    }
    Ok(())
}

/// An echo server on the node and a client on the internet exchanging one byte every 5 ms.
struct Stream {
    stop: Arc<AtomicBool>,
    client: Option<std::thread::JoinHandle<anyhow::Result<(u64, Duration)>>>,
}

impl Stream {
    fn start(topo: &Topology) -> anyhow::Result<Self> {
        let listener = topo
            .node
            .enter(|| TcpListener::bind(("::", STREAM_PORT)))??;
        std::thread::spawn(move || {
            if let Ok((mut c, _)) = listener.accept() {
                let mut buf = [0u8; 256];
                while let Ok(n) = c.read(&mut buf) {
                    if n == 0 || c.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        });
        let to = SocketAddr::new(node_addr(false), STREAM_PORT);
        let conn = topo
            .internet
            .ns
            .enter(|| TcpStream::connect_timeout(&to, Duration::from_secs(2)))??;
        conn.set_read_timeout(Some(Duration::from_secs(3)))?;
        conn.set_nodelay(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        // Returns the bytes echoed and the longest wait for an echo.
        let client = std::thread::spawn(move || -> anyhow::Result<(u64, Duration)> {
            let mut conn = conn;
            let (mut n, mut worst) = (0u64, Duration::ZERO);
            while !s.load(Ordering::Relaxed) {
                let byte = (n % 251) as u8;
                let t = Instant::now();
                conn.write_all(&[byte]).context("stream write")?;
                let mut back = [0u8; 1];
                conn.read_exact(&mut back).context("stream read")?;
                anyhow::ensure!(back[0] == byte, "byte {n} came back as {}", back[0]);
                worst = worst.max(t.elapsed());
                n += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok((n, worst))
        });
        Ok(Self {
            stop,
            client: Some(client),
        })
    }

    fn finish(mut self) -> anyhow::Result<(u64, Duration)> {
        self.stop.store(true, Ordering::Relaxed);
        self.client
            .take()
            .unwrap()
            .join()
            .map_err(|_| anyhow::anyhow!("stream client panicked"))?
    }
}

fn kill9_then_restart_has_no_gap(backend: Backend) -> anyhow::Result<()> {
    let topo = Topology::new()?;
    let counter = UdpCounter::start(&topo.node, CLOSED_PORT)?;
    // Without a policy the closed port is reachable: the counter does see a gap when there is one.
    blast(&topo, 20, Duration::from_millis(2))?;
    std::thread::sleep(Duration::from_millis(100));
    ensure!(
        counter.get() > 0,
        "datagrams reach the node when no policy is installed"
    );

    let (dir, config) =
        TempDir::with_config("restart", &Config::new(backend, Some("tke-node")).yaml())?;
    let mut first = Agent::start(&topo.node, backend, &config, &dir, &[])?;
    let baseline = counter.get();
    blast(&topo, 20, Duration::from_millis(2))?;
    std::thread::sleep(Duration::from_millis(100));
    ensure!(
        counter.get() == baseline,
        "the policy drops the closed port"
    );

    let stream = Stream::start(&topo)?;
    let sending = Arc::new(AtomicBool::new(true));
    let blaster = {
        let s = sending.clone();
        let sock = topo.internet.ns.enter(|| UdpSocket::bind("0.0.0.0:0"))??;
        let to = SocketAddr::new(node_addr(false), CLOSED_PORT);
        std::thread::spawn(move || {
            let mut sent = 0u64;
            while s.load(Ordering::Relaxed) {
                if sock.send_to(b"gap?", to).is_ok() {
                    sent += 1;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            sent
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    first.stop_with(libc::SIGKILL)?;
    ensure!(
        present(&topo.node, backend),
        "kill -9 leaves the policy installed"
    );
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let second = Agent::start(&topo.node, backend, &config, &dir, &[])?;
    eprintln!("restart to ready: {} ms", t.elapsed().as_millis());
    std::thread::sleep(Duration::from_millis(500));
    sending.store(false, Ordering::Relaxed);
    let sent = blaster
        .join()
        .map_err(|_| anyhow::anyhow!("blaster panicked"))?;
    let (echoed, worst) = stream.finish()?;
    std::thread::sleep(Duration::from_millis(100));

    eprintln!("blasted {sent} datagrams, {echoed} bytes echoed, slowest echo {worst:?}");
    ensure!(
        sent > 300,
        "the closed port was probed throughout ({sent} datagrams)"
    );
    ensure!(
        counter.get() == baseline,
        "{} datagrams got through to the closed port during the restart",
        counter.get() - baseline
    );
    ensure!(echoed > 100, "the stream kept flowing ({echoed} bytes)");
    ensure!(
        worst < Duration::from_millis(200),
        "no echo was delayed ({worst:?}): nothing was dropped"
    );
    ensure!(
        second
            .log()
            .contains("adopting the policy a previous run left installed"),
        "the new agent adopted the installed policy"
    );
    Ok(())
}

fn sigterm_keeps_the_policy_and_flush_on_exit_removes_it(backend: Backend) -> anyhow::Result<()> {
    let topo = Topology::new()?;
    let (dir, config) =
        TempDir::with_config("exit", &Config::new(backend, Some("tke-node")).yaml())?;
    let mut agent = Agent::start(&topo.node, backend, &config, &dir, &[])?;
    let status = agent.stop_with(libc::SIGTERM)?;
    ensure!(status.success(), "SIGTERM: clean exit ({status})");
    ensure!(
        present(&topo.node, backend),
        "SIGTERM leaves the policy installed"
    );
    ensure!(
        agent.log().contains("the policy stays installed"),
        "and says so"
    );

    let mut agent = Agent::start(&topo.node, backend, &config, &dir, &["--flush-on-exit"])?;
    let status = agent.stop_with(libc::SIGTERM)?;
    ensure!(status.success(), "--flush-on-exit: clean exit ({status})");
    ensure!(
        !present(&topo.node, backend),
        "--flush-on-exit removes the policy"
    );
    Ok(())
}

backend_tests!(
    kill9_then_restart_has_no_gap,
    sigterm_keeps_the_policy_and_flush_on_exit_removes_it,
);
