//! The XDP backend end to end in network namespaces it creates: attach (native and generic),
//! real pings across a veth pair, pinning that survives the backend (the agent's exit),
//! adoption by a new backend, status, counters, detaching on interface removal from the
//! policy, and flush. Never touches the root namespace: the backend runs on a thread that
//! entered the test namespace, and its bpffs is a private mount in a temporary directory.

mod xdp_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use nodewall::backend::xdp::{current_netns, XdpAttach, XdpBackend, XdpOptions};
use nodewall::backend::Backend;
use nodewall::config::{Action, Protocol};
use xdp_support::*;

const PREFIX: &str = "nwt-xdpa";

fn sh(args: &[&str]) -> std::process::Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// Two namespaces joined by a veth pair: `node` (198.18.0.1, fd00::1 on `dev`) runs the
/// backend, `peer` (198.18.0.2, fd00::2) sends traffic. Deleted on drop with the bpffs.
struct Lab {
    node: String,
    peer: String,
    dev: String,
    bpffs: PathBuf,
}

impl Lab {
    fn new(tag: &str) -> Option<Self> {
        if !privileged() {
            return None;
        }
        sweep();
        // Names carry the whole pid, so a later run can tell a dead run's leftovers from a
        // live parallel run's; interface names (15 bytes at most) only a short id.
        let pid = std::process::id();
        let id = format!("{}{tag}", pid % 100000);
        let lab = Lab {
            node: format!("{PREFIX}-{pid}-{tag}-n"),
            peer: format!("{PREFIX}-{pid}-{tag}-p"),
            dev: format!("nwx{id}"),
            bpffs: std::env::temp_dir().join(format!("{PREFIX}-{pid}-{tag}-bpffs")),
        };
        let peer_dev = format!("nwy{id}");
        let (node, peer, dev) = (&lab.node, &lab.peer, &lab.dev);
        let setup = || -> Result<(), String> {
            for cmd in [
                format!("ip netns add {node}"),
                format!("ip netns add {peer}"),
                format!(
                    "ip link add {dev} netns {node} type veth peer name {peer_dev} netns {peer}"
                ),
                format!("ip -n {node} addr add 198.18.0.1/24 dev {dev}"),
                format!("ip -n {peer} addr add 198.18.0.2/24 dev {peer_dev}"),
                format!("ip -n {node} addr add fd00::1/64 dev {dev} nodad"),
                format!("ip -n {peer} addr add fd00::2/64 dev {peer_dev} nodad"),
                format!("ip -n {node} link set {dev} up"),
                format!("ip -n {peer} link set {peer_dev} up"),
                format!("ip -n {node} link set lo up"),
                format!("ip -n {peer} link set lo up"),
            ] {
                let args: Vec<&str> = cmd.split_whitespace().collect();
                let o = sh(&args);
                if !o.status.success() {
                    return Err(format!("{cmd}: {}", String::from_utf8_lossy(&o.stderr)));
                }
            }
            Ok(())
        };
        if let Err(e) = setup() {
            // `lab` is dropped here, deleting what was made.
            panic!("cannot set up the test namespaces: {e}");
        }
        Some(lab)
    }

    /// Runs `f` on a thread inside the node namespace (what the agent would be in).
    fn in_node<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.node);
        std::thread::scope(|s| {
            s.spawn(|| {
                use std::os::unix::fs::MetadataExt;
                let file = std::fs::File::open(&path).unwrap();
                let target = file.metadata().unwrap();
                // SAFETY: setns on this thread only, with a namespace fd we opened.
                let rc = unsafe {
                    libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET)
                };
                assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                // The backend must run in the test namespace, never in the one the tests started in.
                assert_eq!(
                    current_netns().unwrap(),
                    (target.dev(), target.ino()),
                    "setns did not take effect"
                );
                let start = std::fs::metadata("/proc/self/ns/net").unwrap();
                assert_ne!((start.dev(), start.ino()), (target.dev(), target.ino()));
                f()
            })
            .join()
            .unwrap()
        })
    }

    fn backend(&self, attach: XdpAttach) -> XdpBackend {
        XdpBackend::with_options(XdpOptions {
            bpffs: self.bpffs.clone(),
            name: "nodewall".into(),
            attach,
            cache: Some(self.bpffs.with_extension("cache")),
        })
    }

    /// One ping from the peer to the node; true if answered.
    fn ping_node(&self, v6: bool) -> bool {
        let dst = if v6 { "fd00::1" } else { "198.18.0.1" };
        sh(&[
            "ip", "netns", "exec", &self.peer, "ping", "-c", "1", "-W", "1", dst,
        ])
        .status
        .success()
    }

    /// One ping from the node to the peer: the reply is return traffic.
    fn ping_peer(&self) -> bool {
        sh(&[
            "ip",
            "netns",
            "exec",
            &self.node,
            "ping",
            "-c",
            "1",
            "-W",
            "1",
            "198.18.0.2",
        ])
        .status
        .success()
    }

    fn xdp_mode(&self) -> String {
        let o = sh(&["ip", "-n", &self.node, "-d", "link", "show", &self.dev]);
        let text = String::from_utf8_lossy(&o.stdout).to_string();
        if !text.contains("prog/xdp") {
            "none".into()
        } else if text.contains(" xdpgeneric ") {
            "generic".into()
        } else {
            "native".into()
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = sh(&["ip", "netns", "del", &self.node]);
        let _ = sh(&["ip", "netns", "del", &self.peer]);
        unmount(&self.bpffs);
        let _ = std::fs::remove_dir_all(self.bpffs.with_extension("cache"));
    }
}

fn unmount(p: &Path) {
    if p.exists() {
        let _ = sh(&["umount", &p.to_string_lossy()]);
        let _ = std::fs::remove_dir_all(p);
    }
}

/// Leftovers of earlier runs that died (killed mid-test, so `Lab::drop` never ran):
/// namespaces, bpffs mounts (which hold pinned programs and maps) and cache directories
/// named after a process that no longer exists.
fn sweep() {
    let out = sh(&["ip", "netns", "list"]);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if dead_owner(name) {
            let _ = sh(&["ip", "netns", "del", name]);
        }
    }
    let tmp = std::env::temp_dir();
    // Mount points are the 5th field of mountinfo (octal escapes only for odd characters,
    // which our paths do not have).
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for point in mounts.lines().filter_map(|l| l.split(' ').nth(4)) {
        let point = Path::new(point);
        if point.parent() == Some(tmp.as_path())
            && point
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(dead_owner)
        {
            unmount(point);
        }
    }
    if let Ok(entries) = std::fs::read_dir(&tmp) {
        for e in entries.flatten() {
            if e.file_name().to_str().is_some_and(dead_owner) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// `nwt-xdpa-<pid>-...` of a process that is gone.
fn dead_owner(name: &str) -> bool {
    name.strip_prefix(PREFIX)
        .and_then(|rest| rest.strip_prefix('-'))
        .and_then(|rest| rest.split('-').next())
        .and_then(|pid| pid.parse::<u32>().ok())
        .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
}

fn allow_icmp_from_peer() -> nodewall::policy::Policy {
    policy(vec![
        rule(
            "deny-peer-v6",
            Action::Deny,
            Protocol::Icmpv6,
            &[],
            &["fd00::2/128"],
        ),
        rule(
            "icmp-peer",
            Action::Allow,
            Protocol::Icmp,
            &[],
            &["198.18.0.2/32"],
        ),
    ])
}

/// `pol` with its IPv6 deny rule replaced by an allow: the peer's pings pass on both families.
fn opened(pol: &nodewall::policy::Policy) -> nodewall::policy::Policy {
    let mut open = pol.clone();
    open.rules.remove(0);
    open.rules.push(rule(
        "icmp6-peer",
        Action::Allow,
        Protocol::Icmpv6,
        &[],
        &["fd00::/64"],
    ));
    open
}

fn lifecycle(tag: &str, attach: XdpAttach, expect_mode: &str) {
    let Some(lab) = Lab::new(tag) else { return };
    let mut pol = allow_icmp_from_peer();
    pol.interfaces = vec![lab.dev.clone()];
    assert!(
        lab.ping_node(false) && lab.ping_node(true),
        "the lab works without a filter"
    );

    let report = lab.in_node(|| lab.backend(attach).apply(&pol).unwrap());
    assert!(report.changed);
    assert_eq!(lab.xdp_mode(), expect_mode);
    let pins = lab.bpffs.join("nodewall");
    for name in [
        "NW_SWITCH",
        "NW_PORTS",
        "NW_FLOWS",
        "prog-xdp",
        "prog-egress",
        "links",
    ] {
        assert!(pins.join(name).exists(), "{name} is pinned");
    }
    // The backend is gone (like an agent that exited): its pins keep enforcing.
    assert!(lab.ping_node(false), "allowed by icmp-peer");
    assert!(!lab.ping_node(true), "denied by deny-peer-v6");
    assert!(
        lab.ping_peer(),
        "echo replies to the node's own ping are return traffic"
    );

    let status = lab.in_node(|| lab.backend(attach).status().unwrap());
    assert!(status.installed);
    assert_eq!(status.interfaces, vec![lab.dev.clone()]);
    assert_eq!(status.rules, vec!["deny-peer-v6", "icmp-peer"]);
    let allowed = status
        .counters
        .rules
        .iter()
        .find(|r| r.rule == "icmp-peer")
        .unwrap();
    assert!(allowed.packets >= 1, "{status:?}");
    let denied: u64 = status
        .counters
        .drops
        .iter()
        .filter(|d| d.rule == "deny-peer-v6")
        .map(|d| d.packets)
        .sum();
    assert!(denied >= 1, "{status:?}");
    assert!(status
        .counters
        .drops
        .iter()
        .all(|d| d.reason != "rule" || (d.family, d.protocol) == ("ipv6", "icmpv6")));

    // A new backend adopts: same policy, nothing to change, generation kept; then a change.
    let (same, changed) = lab.in_node(|| {
        let mut b = lab.backend(attach);
        let same = b.apply(&pol).unwrap();
        (same, b.apply(&opened(&pol)).unwrap())
    });
    assert!(!same.changed);
    assert_eq!(same.generation, report.generation);
    assert!(changed.changed);
    assert_eq!(changed.generation, report.generation + 1);
    assert!(lab.ping_node(true), "now allowed by icmp6-peer");
    assert_eq!(lab.xdp_mode(), expect_mode, "adoption keeps the attachment");

    // The counter of a rule that stayed keeps counting across backends.
    let kept = lab.in_node(|| lab.backend(attach).counters().unwrap());
    let icmp_peer = kept
        .rules
        .iter()
        .find(|r| r.rule == "icmp-peer")
        .unwrap()
        .packets;
    assert!(icmp_peer >= allowed.packets);

    lab.in_node(|| lab.backend(attach).flush().unwrap());
    assert_eq!(lab.xdp_mode(), "none");
    let status = lab.in_node(|| lab.backend(attach).status().unwrap());
    assert!(!status.installed && status.interfaces.is_empty());
    // A fresh bpffs holds the kernel's own `maps.debug` and `progs.debug`; ours is `nodewall/`.
    let left: Vec<_> = std::fs::read_dir(&lab.bpffs)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| !n.to_string_lossy().ends_with(".debug"))
        .collect();
    assert!(left.is_empty(), "flush leaves nothing pinned: {left:?}");
    assert!(lab.ping_node(true) && lab.ping_node(false));
}

#[test]
fn lifecycle_native() {
    lifecycle("n", XdpAttach::Native, "native");
}

#[test]
fn lifecycle_generic() {
    lifecycle("g", XdpAttach::Generic, "generic");
}

#[test]
fn removing_an_interface_from_the_policy_detaches_it() {
    let Some(lab) = Lab::new("d") else { return };
    let mut pol = policy(vec![]);
    pol.interfaces = vec![lab.dev.clone()];
    lab.in_node(|| lab.backend(XdpAttach::Auto).apply(&pol).unwrap());
    assert!(!lab.ping_node(false), "default deny");
    assert_ne!(lab.xdp_mode(), "none");
    // Another Ethernet interface of the node (a veth pair inside it) takes the policy.
    sh(&[
        "ip", "-n", &lab.node, "link", "add", "nwother0", "type", "veth", "peer", "name",
        "nwother1",
    ]);
    sh(&["ip", "-n", &lab.node, "link", "set", "nwother0", "up"]);
    let mut lo_only = pol.clone();
    lo_only.interfaces = vec!["nwother0".into()];
    let r = lab.in_node(|| lab.backend(XdpAttach::Auto).apply(&lo_only).unwrap());
    assert!(r.changed && r.removed >= 1);
    assert_eq!(lab.xdp_mode(), "none");
    assert!(lab.ping_node(false));
    let err = lab.in_node(|| {
        let mut bad = pol.clone();
        bad.interfaces = vec!["nope0".into()];
        lab.backend(XdpAttach::Auto)
            .apply(&bad)
            .unwrap_err()
            .to_string()
    });
    assert!(err.contains("interfaces") && err.contains("nope0"), "{err}");
    lab.in_node(|| lab.backend(XdpAttach::Auto).flush().unwrap());
}

/// Id of the XDP program pinned by the backend, and of the one its link on `dev` runs.
fn xdp_ids(lab: &Lab) -> (u32, u32) {
    let pins = lab.bpffs.join("nodewall");
    let pinned = aya::programs::ProgramInfo::from_pin(pins.join("prog-xdp"))
        .unwrap()
        .id();
    let out = sh(&["ip", "-n", &lab.node, "-d", "link", "show", &lab.dev]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let running = text
        .find("prog/xdp id ")
        .and_then(|i| text[i + 12..].split_whitespace().next())
        .unwrap_or_else(|| panic!("no XDP program on {}: {text}", lab.dev))
        .parse()
        .unwrap();
    (pinned, running)
}

/// A new agent built from the same object reuses the pinned programs (no program load: the
/// program id stays); one from another object, or finding a program pin gone, loads its own
/// and swaps it into the links. Every apply enforces the policy it was given.
#[test]
fn a_new_agent_reuses_pinned_programs_of_the_same_object() {
    let Some(lab) = Lab::new("r") else { return };
    let mut pol = allow_icmp_from_peer();
    pol.interfaces = vec![lab.dev.clone()];
    let open = opened(&pol);
    let apply = |p: &nodewall::policy::Policy| {
        lab.in_node(|| lab.backend(XdpAttach::Auto).apply(p).unwrap())
    };
    apply(&pol);
    let (first, running) = xdp_ids(&lab);
    assert_eq!(first, running, "the link runs the pinned program");
    let pins = lab.bpffs.join("nodewall");
    let markers = || -> Vec<String> {
        std::fs::read_dir(&pins)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("object-"))
            .collect()
    };
    assert_eq!(markers().len(), 1, "the object is recorded");
    let cache = std::fs::read_dir(lab.bpffs.with_extension("cache"))
        .unwrap()
        .count();
    assert_eq!(cache, 1, "the generations are recorded for the next agent");

    // Same object: the policy changes, the program does not.
    let r = apply(&open);
    assert!(r.changed);
    assert_eq!(xdp_ids(&lab), (first, first), "no program was loaded");
    assert!(lab.ping_node(true), "allowed by icmp6-peer");
    let r = apply(&pol);
    assert!(r.changed);
    assert_eq!(xdp_ids(&lab), (first, first));
    assert!(
        !lab.ping_node(true) && lab.ping_node(false),
        "back to the first policy"
    );

    // Another object's record: load ours, swap it in, record ours instead.
    let ours = markers().pop().unwrap();
    std::fs::rename(pins.join(&ours), pins.join("object-0000000000000000")).unwrap();
    apply(&open);
    let (second, running) = xdp_ids(&lab);
    assert_ne!(second, first, "another object's programs are replaced");
    assert_eq!(running, second, "and the link runs the new one");
    assert_eq!(markers(), vec![ours]);
    assert!(lab.ping_node(true));

    // A program pin removed: load again.
    std::fs::remove_file(pins.join("prog-xdp")).unwrap();
    apply(&pol);
    let (third, running) = xdp_ids(&lab);
    assert!(third != second && running == third);
    assert!(!lab.ping_node(true) && lab.ping_node(false));

    // A lost or damaged record of the generations is read back from the maps instead.
    for file in std::fs::read_dir(lab.bpffs.with_extension("cache")).unwrap() {
        std::fs::write(file.unwrap().path(), b"NWXG garbage").unwrap();
    }
    apply(&open);
    assert_eq!(xdp_ids(&lab).0, third);
    assert!(lab.ping_node(true));
    apply(&pol);
    assert!(!lab.ping_node(true) && lab.ping_node(false));

    lab.in_node(|| lab.backend(XdpAttach::Auto).flush().unwrap());
    assert!(!pins.exists(), "flush removes the record with the pins");
    assert_eq!(
        std::fs::read_dir(lab.bpffs.with_extension("cache"))
            .unwrap()
            .count(),
        0,
        "flush forgets the generations"
    );
}
