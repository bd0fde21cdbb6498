//! Apply, re-apply and flush: other tables (kube-proxy's, the CNI's, firewalld's) survive
//! untouched, re-applying an unchanged policy changes nothing, and flush removes everything
//! nodewall installed.
//!
//! The foreign-tables case runs for XDP too: the XDP backend must not touch nftables at all,
//! and its flush must leave the other tools' tables as they were. "Nothing changed" is judged
//! on what each backend installs (see `installed::fingerprint`).

use anyhow::Context as _;
use nodewall_netns_tests::installed::{edit_switch, fingerprint, leftovers, xdp_pins};
use nodewall_netns_tests::netns::Netns;
use nodewall_netns_tests::nodewall::{apply, flush, run, status, Config, ConfigFile};
use nodewall_netns_tests::topology::lone_node;
use nodewall_netns_tests::{backend_tests, Backend};

/// Tables other tools own, with sets, maps, counters, base chains on the same hooks.
const FOREIGN: &str = "
table ip kube-proxy {
	set cluster-ips { type ipv4_addr; elements = { 198.18.100.1, 198.18.100.2 } }
	map service-ips { type ipv4_addr . inet_proto . inet_service : verdict; }
	counter kube-drops { }
	chain nat-prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr @cluster-ips jump services
	}
	chain services { }
}
table inet calico {
	chain cali-pre {
		type filter hook prerouting priority raw; policy accept;
		meta l4proto tcp tcp dport 179 notrack
	}
}
table inet firewalld {
	chain filter_INPUT {
		type filter hook input priority filter + 10; policy accept;
		ct state established,related accept
	}
}
";

/// Every table but nodewall's, with handles, as `nft` lists them.
fn foreign_tables(ns: &Netns) -> anyhow::Result<String> {
    let mut out = String::new();
    for (family, name) in [
        ("ip", "kube-proxy"),
        ("inet", "calico"),
        ("inet", "firewalld"),
    ] {
        out.push_str(&ns.exec("nft", &["-a", "list", "table", family, name])?);
    }
    Ok(out)
}

fn foreign_tables_survive_apply_and_flush(backend: Backend) -> anyhow::Result<()> {
    let node = lone_node("node")?;
    node.nft_load(FOREIGN.as_bytes())?;
    let before = foreign_tables(&node)?;
    let mut cfg = Config::new(backend, Some("tke-node"));
    let file = cfg.write()?;
    apply(&node, &file)?;
    anyhow::ensure!(
        foreign_tables(&node)? == before,
        "apply changed a foreign table"
    );
    cfg.profile = Some("eks-node".into());
    file.rewrite(&cfg.yaml())?;
    apply(&node, &file)?;
    anyhow::ensure!(
        foreign_tables(&node)? == before,
        "re-apply changed a foreign table"
    );
    flush(&node, backend)?;
    anyhow::ensure!(
        foreign_tables(&node)? == before,
        "flush changed a foreign table"
    );
    let st = status(&node, backend)?;
    anyhow::ensure!(
        st["installed"] == false,
        "flush removes what nodewall installed: {st}"
    );
    let left = leftovers(&node, backend)?;
    anyhow::ensure!(left.is_empty(), "flush left: {left:?}");
    let tables = node.exec("nft", &["list", "tables"])?;
    anyhow::ensure!(
        tables.lines().count() == 3,
        "the three foreign tables remain: {tables}"
    );
    // Flushing twice is harmless.
    flush(&node, backend)?;
    Ok(())
}

fn reapply_unchanged_changes_nothing(backend: Backend) -> anyhow::Result<()> {
    let node = lone_node("node")?;
    let mut cfg = Config::new(backend, Some("ack-node"));
    cfg.rules = vec!["  - name: deny-x\n    action: deny\n    protocol: tcp\n    ports: [\"1-1024\"]\n    from: [\"198.19.0.0/16\", \"fd00:99::/64\"]".into()];
    let file = cfg.write()?;
    let first = apply(&node, &file)?;
    anyhow::ensure!(
        first["changed"] == true && first["generation"] == 1,
        "{first}"
    );
    // The backend's record of what it installed is in the state directory `apply` was given
    // (which is not the default /run/nodewall), where the second apply finds it.
    let state = node.state_dir()?;
    let record = match backend {
        Backend::Nft => state.join("nft-sets.json"),
        Backend::XdpNative | Backend::XdpGeneric => std::fs::read_dir(state.join("xdp"))?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("gens-"))
            })
            .unwrap_or_else(|| state.join("xdp/gens-*")),
    };
    anyhow::ensure!(record.is_file(), "no record at {}", record.display());
    let before = fingerprint(&node, backend)?;
    let second = apply(&node, &file)?;
    anyhow::ensure!(
        second["changed"] == false
            && second["generation"] == 1
            && second["added"] == 0
            && second["removed"] == 0,
        "{second}"
    );
    let after = fingerprint(&node, backend)?;
    anyhow::ensure!(
        after == before,
        "what is installed changed:\n--- before\n{before}\n--- after\n{after}"
    );
    Ok(())
}

/// An interface whose frames are not Ethernet (loopback here; IP tunnels, WireGuard): the
/// XDP program parses Ethernet and would pass what it cannot make out, so the XDP backend
/// refuses it by name and installs nothing; nft filters it like any other.
fn interfaces_without_ethernet(backend: Backend) -> anyhow::Result<()> {
    let node = lone_node("node")?;
    let cfg = Config::new(backend, Some("tke-node"));
    let file = ConfigFile::new(
        &cfg.yaml()
            .replace("interfaces: [eth0]", "interfaces: [eth0, lo]"),
    )?;
    let state = node.state_dir()?;
    let out = run(
        &node,
        &[
            "apply",
            "-c",
            file.path.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
        ],
        backend.env(),
    )?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if backend == Backend::Nft {
        anyhow::ensure!(out.status.success(), "nft filters lo: {stderr}");
        return Ok(());
    }
    anyhow::ensure!(
        !out.status.success() && stderr.contains("interfaces: lo is not an Ethernet interface"),
        "{}: {stderr}",
        out.status
    );
    anyhow::ensure!(
        status(&node, backend)?["installed"] == false,
        "nothing may be installed"
    );
    // A first install verifies its programs while it checks the policy: refused, the object
    // it loaded is dropped without a pin.
    let pins = node.bpffs()?.join("nodewall");
    let left: Vec<_> = std::fs::read_dir(&pins)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    anyhow::ensure!(left.is_empty(), "pinned in {}: {left:?}", pins.display());
    Ok(())
}

backend_tests!(
    foreign_tables_survive_apply_and_flush,
    reapply_unchanged_changes_nothing,
    interfaces_without_ethernet
);

/// Maps pinned by an agent of another map layout (what an upgrade across a layout change
/// finds): the new agent refuses them by name and layout before loading its programs over
/// them, leaves the installed datapath as it is, and `flush` then clears the way. Simulated
/// by an older layout number in the switch and a `NW_SOURCES` of another size in its place.
fn maps_of_another_layout_are_refused(backend: Backend) -> anyhow::Result<()> {
    let node = lone_node("node")?;
    let mut cfg = Config::new(backend, Some("ack-node"));
    let file = cfg.write()?;
    apply(&node, &file)?;
    let pins = xdp_pins(&node)?;
    let sources = pins.join("NW_SOURCES");
    std::fs::remove_file(&sources)?;
    node.exec(
        "bpftool",
        &[
            "map",
            "create",
            sources.to_str().unwrap(),
            "type",
            "array",
            "key",
            "4",
            "value",
            "8",
            "entries",
            "2",
            "name",
            "NW_SOURCES",
        ],
    )?;
    edit_switch(&node, |bytes| {
        bytes[..4].clone_from_slice(&["0x06", "0x00", "0x00", "0x00"].map(String::from));
    })?;
    // Programs from another object too, as after an upgrade.
    for e in std::fs::read_dir(&pins)?.flatten() {
        if e.file_name().to_string_lossy().starts_with("object-") {
            std::fs::remove_dir_all(e.path())?;
        }
    }
    let before = fingerprint(&node, backend)?;
    cfg.rules = vec!["  - name: new\n    action: allow\n    protocol: tcp\n    ports: [\"8443\"]\n    from: [\"198.19.0.0/16\"]".into()];
    file.rewrite(&cfg.yaml())?;
    let state = node.state_dir()?;
    let path = file.path.to_str().unwrap();
    let out = run(
        &node,
        &["apply", "-c", path, "--state-dir", state.to_str().unwrap()],
        backend.env(),
    )?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(
        !out.status.success()
            && stderr.contains("have layout 6, this agent writes layout")
            && stderr
                .contains("the installed datapath keeps its policy; run `nodewall flush` first"),
        "{}: {stderr}",
        out.status
    );
    let after = fingerprint(&node, backend)?;
    anyhow::ensure!(
        after == before,
        "the refused apply changed what is installed:\n--- before\n{before}\n--- after\n{after}"
    );
    flush(&node, backend)?;
    let report = apply(&node, &file)?;
    anyhow::ensure!(report["changed"] == true, "{report}");
    Ok(())
}

backend_tests!(xdp: maps_of_another_layout_are_refused);

/// A policy too scattered for the flat tables (40,000 IPv6 /64s that share no byte after
/// `fd`, more than a generation's path-compressed runs) is held in the tries; a generation
/// that large has its record written while the maps are, and put in place after the switch.
fn large_generation_is_recorded(backend: Backend) -> anyhow::Result<()> {
    const N: u128 = 40_000;
    let node = lone_node("node")?;
    let from = (0..N)
        .map(|i| {
            let bits = ((i + 1) * 0x9E37_79B9_7F4A_7C15) & ((1 << 56) - 1);
            let net = std::net::Ipv6Addr::from((0xfdu128 << 120) | (bits << 64));
            format!("\"{net}/64\"")
        })
        .collect::<Vec<_>>()
        .join(", ");
    let mut cfg = Config::new(backend, Some("tke-node"));
    cfg.rules = vec![format!(
        "  - name: deny-x\n    action: deny\n    protocol: tcp\n    ports: [\"10250\"]\n    from: [{from}]"
    )];
    let file = cfg.write()?;
    let first = apply(&node, &file)?;
    anyhow::ensure!(first["changed"] == true, "{first}");
    let dir = node.state_dir()?.join("xdp");
    let files: Vec<_> = std::fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.path())
        .collect();
    let record = files
        .iter()
        .find(|p| p.extension().is_none_or(|e| e != "tmp"))
        .with_context(|| format!("no record in {}: {files:?}", dir.display()))?;
    anyhow::ensure!(
        files.len() == 1,
        "one record and no temporary file: {files:?}"
    );
    // Each /64 is 21 bytes of the record (address, length, class).
    let size = std::fs::metadata(record)?.len();
    anyhow::ensure!(
        size > 21 * N as u64,
        "{} holds {size} bytes",
        record.display()
    );
    let second = apply(&node, &file)?;
    anyhow::ensure!(second["changed"] == false, "{second}");
    // Without the record, the generations are read back from the maps (the /64s from the
    // source hash, where they overflow the flat tables): the same policy is still unchanged.
    std::fs::remove_file(record)?;
    let third = apply(&node, &file)?;
    anyhow::ensure!(third["changed"] == false, "{third}");
    Ok(())
}

backend_tests!(xdp: large_generation_is_recorded);
