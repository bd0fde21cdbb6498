//! What a backend left in a node's kernel, observed with the system's own tools rather than
//! through nodewall: `nft` for the nft backend; `ip -d link` (the attachment the kernel
//! reports), `bpftool` and the node's bpffs for XDP. Also the ways a test removes it behind
//! the agent's back.

use std::path::PathBuf;

use anyhow::{bail, Context};
use serde_json::Value;

use crate::netns::Netns;
use crate::topology::UPLINK;
use crate::Backend;

/// Where the XDP backend pins everything on `node` (`NODEWALL_BPFFS` + `nodewall`).
pub fn xdp_pins(node: &Netns) -> anyhow::Result<PathBuf> {
    Ok(node.bpffs()?.join("nodewall"))
}

/// Rewrites the value of the pinned `NW_SWITCH` (the XDP backend's `Switch`: layout, active
/// generation, ...) behind the agent's back, byte by byte with `bpftool`: `edit` gets its bytes
/// as bpftool prints them ("0x06").
pub fn edit_switch(node: &Netns, edit: impl FnOnce(&mut Vec<String>)) -> anyhow::Result<()> {
    let path = xdp_pins(node)?.join("NW_SWITCH");
    let path = path.to_str().context("pin path")?;
    let key = ["key", "0", "0", "0", "0"];
    let mut lookup = vec!["-j", "map", "lookup", "pinned", path];
    lookup.extend(key);
    let v: Value = serde_json::from_str(&node.exec("bpftool", &lookup)?)?;
    let mut bytes: Vec<String> = v["value"]
        .as_array()
        .context("switch value")?
        .iter()
        .map(|b| b.as_str().unwrap_or("0x00").to_string())
        .collect();
    if bytes.len() < 8 {
        bail!("switch value: {v}");
    }
    edit(&mut bytes);
    let mut update = vec!["map", "update", "pinned", path];
    update.extend(key);
    update.push("value");
    update.extend(bytes.iter().map(String::as_str));
    node.exec("bpftool", &update)?;
    Ok(())
}

/// How the generation the switch points at uses the XDP backend's source hash
/// (`NW_SRC_BUCKETS`, beside the flat tables), from its `GenConfig` in `NW_CONFIG`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XdpHash {
    /// The prefix lengths (IPv4, IPv6; 0: none) whose prefixes are in the hash
    /// (`hash_len`, bytes 24-31).
    pub lens: [u32; 2],
    /// The multipliers of the two bucket choices (`hash_seeds`, bytes 48-63).
    pub seeds: [u64; 2],
}

pub fn xdp_hash(node: &Netns) -> anyhow::Result<XdpHash> {
    let pins = xdp_pins(node)?;
    let value = |map: &str, key: u8| -> anyhow::Result<Vec<u8>> {
        let path = pins.join(map);
        let key = key.to_string();
        let path = path.to_str().context("pin path")?;
        let args = [
            "-j", "map", "lookup", "pinned", path, "key", &key, "0", "0", "0",
        ];
        let v: Value = serde_json::from_str(&node.exec("bpftool", &args)?)?;
        v["value"]
            .as_array()
            .with_context(|| format!("{map} value: {v}"))?
            .iter()
            .map(|b| {
                let b = b.as_str().unwrap_or_default().trim_start_matches("0x");
                u8::from_str_radix(b, 16).with_context(|| format!("{map} value: {v}"))
            })
            .collect()
    };
    let active = *value("NW_SWITCH", 0)?.get(4).context("switch value")?;
    let config = value("NW_CONFIG", active)?;
    let bytes = |at: usize, n: usize| config.get(at..at + n).context("config value");
    let word = |at| -> anyhow::Result<u32> { Ok(u32::from_le_bytes(bytes(at, 4)?.try_into()?)) };
    let long = |at| -> anyhow::Result<u64> { Ok(u64::from_le_bytes(bytes(at, 8)?.try_into()?)) };
    Ok(XdpHash {
        lens: [word(24)?, word(28)?],
        seeds: [long(48)?, long(56)?],
    })
}

/// The interface index of `dev` in `node`.
pub fn ifindex(node: &Netns, dev: &str) -> anyhow::Result<u32> {
    let v = link_json(node, dev)?;
    v["ifindex"]
        .as_u64()
        .map(|i| i as u32)
        .with_context(|| format!("no ifindex for {dev}: {v}"))
}

fn link_json(node: &Netns, dev: &str) -> anyhow::Result<Value> {
    let text = node.exec("ip", &["-j", "-d", "link", "show", "dev", dev])?;
    let v: Value = serde_json::from_str(&text).context("parsing ip -j link")?;
    Ok(v[0].clone())
}

/// The XDP program the kernel runs on `dev`: (`native`/`generic`, program id), if any.
pub fn xdp_attached(node: &Netns, dev: &str) -> anyhow::Result<Option<(&'static str, u64)>> {
    let v = link_json(node, dev)?;
    let xdp = &v["xdp"];
    if xdp.is_null() {
        return Ok(None);
    }
    // IFLA_XDP_ATTACHED: 1 driver, 2 skb (generic), 3 hardware.
    let mode = match xdp["mode"].as_u64() {
        Some(1) => "native",
        Some(2) => "generic",
        Some(3) => "offload",
        other => bail!("unexpected XDP mode {other:?} on {dev}"),
    };
    Ok(Some((mode, xdp["prog"]["id"].as_u64().unwrap_or(0))))
}

/// Names of the TCX egress programs on `dev` (bpftool 7.1 does not list TCX yet).
pub fn tcx_egress(node: &Netns, dev: &str) -> anyhow::Result<Vec<String>> {
    use aya::programs::{tc::SchedClassifier, TcAttachType};
    let (_, progs) = node.enter(|| SchedClassifier::query_tcx(dev, TcAttachType::Egress))??;
    Ok(progs
        .iter()
        .map(|p| p.name_as_str().unwrap_or("?").to_string())
        .collect())
}

/// What `backend` still has in `node`'s kernel: empty once it has flushed.
pub fn leftovers(node: &Netns, backend: Backend) -> anyhow::Result<Vec<String>> {
    let mut left = Vec::new();
    if backend == Backend::Nft {
        if node
            .exec("nft", &["list", "table", "inet", "nodewall"])
            .is_ok()
        {
            left.push("table inet nodewall".into());
        }
        return Ok(left);
    }
    if let Some((mode, id)) = xdp_attached(node, UPLINK)? {
        left.push(format!("XDP program {id} ({mode}) on {UPLINK}"));
    }
    for name in tcx_egress(node, UPLINK)? {
        left.push(format!("TCX egress program {name} on {UPLINK}"));
    }
    let pins = xdp_pins(node)?;
    if pins.exists() {
        left.push(format!("pins under {}", pins.display()));
    }
    Ok(left)
}

/// The attach mode `backend` must use.
pub fn xdp_mode(backend: Backend) -> Option<&'static str> {
    match backend {
        Backend::Nft => None,
        Backend::XdpNative => Some("native"),
        Backend::XdpGeneric => Some("generic"),
    }
}

/// Whether what `backend` installs is present on `node`: the nft table; for XDP, a program
/// attached to the uplink in the backend's mode and the pinned maps.
pub fn present(node: &Netns, backend: Backend) -> bool {
    match backend {
        Backend::Nft => node
            .exec("nft", &["list", "table", "inet", "nodewall"])
            .is_ok(),
        _ => {
            let attached = xdp_attached(node, UPLINK).ok().flatten();
            let maps = xdp_pins(node).is_ok_and(|p| p.join("NW_SWITCH").exists());
            maps && attached.is_some_and(|(mode, _)| Some(mode) == xdp_mode(backend))
        }
    }
}

/// The pinned link of `kind` (`xdp` or `tc`) on the uplink.
pub fn xdp_link_pin(node: &Netns, kind: &str) -> anyhow::Result<PathBuf> {
    let index = ifindex(node, UPLINK)?;
    Ok(xdp_pins(node)?
        .join("links")
        .join(format!("{kind}-{index}")))
}

/// The kernel's id of the link pinned at `pin`.
pub fn link_id(node: &Netns, pin: &std::path::Path) -> anyhow::Result<u64> {
    let text = node.exec(
        "bpftool",
        &["-j", "link", "show", "pinned", pin.to_str().unwrap()],
    )?;
    let v: Value = serde_json::from_str(&text).context("parsing bpftool link show")?;
    v["id"].as_u64().with_context(|| format!("no link id: {v}"))
}

/// Detaches the XDP link of the uplink the way an operator would (`bpftool link detach`): the
/// pin stays, the link goes dead and XDP stops running.
pub fn detach_xdp_link(node: &Netns) -> anyhow::Result<()> {
    let pin = xdp_link_pin(node, "xdp")?;
    let id = link_id(node, &pin)?.to_string();
    node.exec("bpftool", &["link", "detach", "id", &id])?;
    Ok(())
}

/// Removes the XDP link's pin: the last reference, so the kernel detaches it.
pub fn unpin_xdp_link(node: &Netns) -> anyhow::Result<()> {
    let pin = xdp_link_pin(node, "xdp")?;
    std::fs::remove_file(&pin).with_context(|| format!("removing {}", pin.display()))
}

/// What `backend` installed, as text that must not change when nothing is re-installed: the
/// whole ruleset with handles, without counter values (nft); for XDP the link ids (a link re-created gets a new one),
/// the attach mode, the switch and the generation headers, and the source tries. The XDP
/// program's id is left out on purpose: every `nodewall apply` is a new process that loads its
/// own copy of the same program and swaps it into the live links atomically (that swap is
/// what lets a restarted agent take over without a gap).
pub fn fingerprint(node: &Netns, backend: Backend) -> anyhow::Result<String> {
    if backend == Backend::Nft {
        // Stateless: counters move with whatever the node receives (IPv6 autoconfiguration
        // chatter on its veth), which is not a change of what is installed.
        return node.exec("nft", &["-s", "-a", "list", "ruleset"]);
    }
    let mut out = format!("{:?}\n", xdp_attached(node, UPLINK)?.map(|(mode, _)| mode));
    for kind in ["xdp", "tc"] {
        out.push_str(&format!(
            "{kind} link {}\n",
            link_id(node, &xdp_link_pin(node, kind)?)?
        ));
    }
    let pins = xdp_pins(node)?;
    for map in ["NW_SWITCH", "NW_CONFIG", "NW_SRC4", "NW_SRC6"] {
        let path = pins.join(map);
        out.push_str(&node.exec(
            "bpftool",
            &["-j", "map", "dump", "pinned", path.to_str().unwrap()],
        )?);
        out.push('\n');
    }
    Ok(out)
}

/// What `backend` holds on `node`, for a failing test's message: the ruleset (nft); the
/// status and the flow table (XDP), which decide what counts as return traffic.
pub fn describe(node: &Netns, backend: Backend) -> String {
    let run = |program: &str, args: &[&str]| {
        node.exec(program, args)
            .unwrap_or_else(|e| format!("({program} failed: {e:#})"))
    };
    if backend == Backend::Nft {
        return format!("ruleset:\n{}", run("nft", &["list", "ruleset"]));
    }
    let Ok(pins) = xdp_pins(node) else {
        return "no bpffs".into();
    };
    let flows = pins.join("NW_FLOWS");
    let switch = pins.join("NW_SWITCH");
    format!(
        "XDP on {UPLINK}: {:?}\nswitch: {}\nflows:\n{}",
        xdp_attached(node, UPLINK).ok().flatten(),
        run(
            "bpftool",
            &["map", "dump", "pinned", switch.to_str().unwrap()]
        ),
        run(
            "bpftool",
            &["map", "dump", "pinned", flows.to_str().unwrap()]
        ),
    )
}
