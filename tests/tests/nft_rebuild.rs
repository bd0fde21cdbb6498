//! A set that outgrows or shrinks past its declared size cannot be resized in place, so the
//! apply rebuilds table `inet nodewall` (see `a_set_outgrowing_its_size_is_rebuilt` in
//! `nft_table.rs`). The rebuild is one transaction with the rest of the apply: no packet meets
//! the node without the table or with half of it. Checked with traffic: new UDP flows from a
//! host of the rebuilt set pass, and new flows to a closed port are dropped, at every moment of
//! re-applies that each rebuild the table.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nodewall_netns_tests::nodewall::{allow_rule, apply, host_cidrs, Config};
use nodewall_netns_tests::topology::{node_addr, Topology};
use nodewall_netns_tests::traffic::UdpCounter;
use nodewall_netns_tests::{can_run, Backend};

const OPEN_PORT: u16 = 5300;
const CLOSED_PORT: u16 = 9999;
/// Re-applies, alternating between 40 and 200 hosts: sets of size 64 and 512.
const APPLIES: usize = 16;
/// Datagrams per port at most: each from a socket of its own, so each is a new flow.
const FLOWS: usize = 1500;

/// UDP `OPEN_PORT` from `n` host /32s and from `client`.
fn rule(n: u32, client: &str) -> String {
    let mut from = host_cidrs(n);
    from.push(format!("{client}/32"));
    allow_rule("hosts", "udp", OPEN_PORT, &from)
}

#[test]
fn a_rebuild_under_traffic_keeps_the_policy() {
    if !can_run("a_rebuild_under_traffic_keeps_the_policy") {
        return;
    }
    let topo = Topology::new().unwrap();
    let client = topo.internet.v4.to_string();
    let mut cfg = Config::new(Backend::Nft, None);
    cfg.rules = vec![rule(40, &client)];
    let file = cfg.write().unwrap();
    apply(&topo.node, &file).unwrap();

    // One socket per flow, opened in the internet's namespace before the clock starts.
    let socks: Vec<UdpSocket> = topo
        .internet
        .ns
        .enter(|| {
            (0..FLOWS)
                .map(|_| UdpSocket::bind("0.0.0.0:0"))
                .collect::<std::io::Result<Vec<_>>>()
        })
        .unwrap()
        .unwrap();
    let open_got = UdpCounter::start(&topo.node, OPEN_PORT).unwrap();
    let closed_got = UdpCounter::start(&topo.node, CLOSED_PORT).unwrap();
    let stop_tx = Arc::new(AtomicBool::new(false));
    let s = stop_tx.clone();
    let node = node_addr(false);
    let sender = std::thread::spawn(move || {
        let mut sent = 0u64;
        for sock in &socks {
            if s.load(Ordering::Relaxed) {
                break;
            }
            sock.send_to(b"open", SocketAddr::new(node, OPEN_PORT))
                .unwrap();
            sock.send_to(b"closed", SocketAddr::new(node, CLOSED_PORT))
                .unwrap();
            sent += 1;
            std::thread::sleep(Duration::from_micros(500));
        }
        sent
    });

    let started = Instant::now();
    for i in 0..APPLIES {
        let hosts = if i % 2 == 0 { 200 } else { 40 };
        cfg.rules = vec![rule(hosts, &client)];
        file.rewrite(&cfg.yaml()).unwrap();
        let report = apply(&topo.node, &file).unwrap();
        assert_eq!(report["changed"], true, "apply {i}: {report}");
    }
    let took = started.elapsed();
    stop_tx.store(true, Ordering::Relaxed);
    let sent = sender.join().unwrap();
    // Delivery on a veth pair takes microseconds; this is only the receivers' read timeout.
    std::thread::sleep(Duration::from_millis(200));

    let size = topo
        .node
        .exec("nft", &["list", "table", "inet", "nodewall"])
        .unwrap()
        .lines()
        .skip_while(|l| !l.contains("set src4p32."))
        .find_map(|l| l.trim().strip_prefix("size ").map(str::to_string));
    assert_eq!(
        size.as_deref(),
        Some("64"),
        "the last apply rebuilt the set at 40 hosts"
    );
    assert!(
        sent >= 50,
        "only {sent} flows were sent during {APPLIES} re-applies ({took:?}): too few to tell"
    );
    let (open, closed) = (open_got.get(), closed_got.get());
    assert_eq!(
        (open, closed),
        (sent, 0),
        "{sent} new flows to each port during {APPLIES} rebuilding re-applies ({took:?}): \
         {open} reached the open port, {closed} the closed one"
    );
}
