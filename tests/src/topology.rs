//! The test network: a "node" namespace running nodewall, and peers standing for the internet,
//! another node (cluster network), a pod on another node (container network) and the control
//! plane, all reaching the node through one uplink (`eth0`) via a router ("fabric"). A local pod
//! hangs off the node on `cni0`, which is not an uplink.
//!
//! ```text
//!  inet 198.19.0.2 ──┐
//!  clus 198.18.17.2 ─┤                       eth0           cni0
//!  pods 198.18.33.2 ─┼── fabric (router) ── n0 ─── node ─────────── lpod 198.18.34.2
//!  cp   198.18.48.2 ─┘                     198.18.16.2 / fd00:16::2
//! ```
//! Addresses are from 198.18.0.0/15 and fd00::/8 only.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::netns::Netns;

pub const UPLINK: &str = "eth0";
pub const NODE_MAC: [u8; 6] = [0x02, 0x4e, 0x57, 0, 0, 0x02];
pub const FABRIC_MAC: [u8; 6] = [0x02, 0x4e, 0x57, 0, 0, 0x01];
/// The fabric's interface towards the node, where injected probes leave.
pub const FABRIC_TO_NODE: &str = "n0";

/// The named networks, as written into test configs.
pub const CLUSTER: &[&str] = &["198.18.16.0/20", "fd00:16::/64", "fd00:17::/64"];
pub const CONTAINER: &[&str] = &["198.18.32.0/20", "fd00:33::/64", "fd00:34::/64"];
pub const CONTROL_PLANE: &[&str] = &["198.18.48.0/24", "fd00:48::/64"];

/// A peer namespace with its addresses.
pub struct Peer {
    pub ns: Netns,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
}

impl Peer {
    pub fn addr(&self, v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(self.v6)
        } else {
            IpAddr::V4(self.v4)
        }
    }
}

pub struct Topology {
    pub node: Netns,
    pub fabric: Netns,
    pub internet: Peer,
    pub cluster: Peer,
    pub pods: Peer,
    pub control_plane: Peer,
    pub local_pod: Peer,
}

pub const NODE_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 16, 2);
pub const NODE_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x16, 0, 0, 0, 0, 0, 2);

pub fn node_addr(v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(NODE_V6)
    } else {
        IpAddr::V4(NODE_V4)
    }
}

impl Topology {
    pub fn new() -> anyhow::Result<Self> {
        let node = Netns::new("node")?;
        let fabric = Netns::new("fab")?;
        for ns in [&node, &fabric] {
            ns.sysctl("net.ipv4.ip_forward", "1")?;
            ns.sysctl("net.ipv6.conf.all.forwarding", "1")?;
            ns.sysctl("net.ipv4.conf.all.rp_filter", "0")?;
            ns.sysctl("net.ipv4.conf.default.rp_filter", "0")?;
        }
        link(
            (&node, UPLINK, Some(NODE_MAC)),
            (&fabric, FABRIC_TO_NODE, Some(FABRIC_MAC)),
        )?;
        addr(&node, UPLINK, "198.18.16.2/24", "fd00:16::2/64")?;
        addr(&fabric, FABRIC_TO_NODE, "198.18.16.1/24", "fd00:16::1/64")?;
        node.ip(&["route", "add", "default", "via", "198.18.16.1"])?;
        node.ip(&["-6", "route", "add", "default", "via", "fd00:16::1"])?;

        let peer = |role: &str, fab_if: &str, net4: &str, net6: &str| -> anyhow::Result<Peer> {
            let ns = Netns::new(role)?;
            link((&fabric, fab_if, None), (&ns, "eth0", None))?;
            addr(
                &fabric,
                fab_if,
                &format!("{net4}.1/24"),
                &format!("{net6}::1/64"),
            )?;
            addr(
                &ns,
                "eth0",
                &format!("{net4}.2/24"),
                &format!("{net6}::2/64"),
            )?;
            ns.ip(&["route", "add", "default", "via", &format!("{net4}.1")])?;
            ns.ip(&[
                "-6",
                "route",
                "add",
                "default",
                "via",
                &format!("{net6}::1"),
            ])?;
            Ok(Peer {
                ns,
                v4: format!("{net4}.2").parse()?,
                v6: format!("{net6}::2").parse()?,
            })
        };
        let internet = peer("inet", "i0", "198.19.0", "fd00:99")?;
        let cluster = peer("clus", "c0", "198.18.17", "fd00:17")?;
        let pods = peer("pods", "p0", "198.18.33", "fd00:33")?;
        let control_plane = peer("cp", "k0", "198.18.48", "fd00:48")?;

        let lpod = Netns::new("lpod")?;
        link((&node, "cni0", None), (&lpod, "eth0", None))?;
        addr(&node, "cni0", "198.18.34.1/24", "fd00:34::1/64")?;
        addr(&lpod, "eth0", "198.18.34.2/24", "fd00:34::2/64")?;
        lpod.ip(&["route", "add", "default", "via", "198.18.34.1"])?;
        lpod.ip(&["-6", "route", "add", "default", "via", "fd00:34::1"])?;
        fabric.ip(&["route", "add", "198.18.34.0/24", "via", "198.18.16.2"])?;
        fabric.ip(&["-6", "route", "add", "fd00:34::/64", "via", "fd00:16::2"])?;
        let local_pod = Peer {
            ns: lpod,
            v4: "198.18.34.2".parse()?,
            v6: "fd00:34::2".parse()?,
        };
        let topo = Self {
            node,
            fabric,
            internet,
            cluster,
            pods,
            control_plane,
            local_pod,
        };
        topo.wait_ready()?;
        Ok(topo)
    }

    /// Waits until every peer reaches the node in both families (links up, neighbours
    /// resolved), so that no test mistakes a network still coming up for a drop.
    fn wait_ready(&self) -> anyhow::Result<()> {
        let peers = [
            &self.internet,
            &self.cluster,
            &self.pods,
            &self.control_plane,
            &self.local_pod,
        ];
        for peer in peers {
            for v6 in [false, true] {
                let target = node_addr(v6);
                let ok = (0..30).any(|_| crate::traffic::ping_ok(&peer.ns, target));
                if !ok {
                    anyhow::bail!("{} cannot reach the node at {target}", peer.ns.name());
                }
            }
        }
        Ok(())
    }

    /// The peers that reach the node through the uplink, with the network they belong to
    /// (`None` = the internet, in no configured network).
    pub fn remote_peers(&self) -> [(&Peer, Option<&'static str>); 4] {
        [
            (&self.internet, None),
            (&self.cluster, Some("cluster")),
            (&self.pods, Some("container")),
            (&self.control_plane, Some("control-plane")),
        ]
    }
}

/// A namespace of its own with an uplink `eth0` (a veth whose peer `eth0p` stays in the same
/// namespace), for tests that need a node to install on but no traffic: XDP attaches to
/// interfaces, so it needs one to exist, and native XDP needs a driver that supports it.
pub fn lone_node(role: &str) -> anyhow::Result<Netns> {
    let ns = Netns::new(role)?;
    ns.ip(&[
        "link", "add", UPLINK, "type", "veth", "peer", "name", "eth0p",
    ])?;
    ns.ip(&["link", "set", UPLINK, "up"])?;
    ns.ip(&["link", "set", "eth0p", "up"])?;
    Ok(ns)
}

/// A veth pair created directly inside the two namespaces (never in the root namespace).
fn link(
    a: (&Netns, &str, Option<[u8; 6]>),
    b: (&Netns, &str, Option<[u8; 6]>),
) -> anyhow::Result<()> {
    let mac = |m: Option<[u8; 6]>| {
        m.map(|m| {
            vec![
                "address".to_string(),
                m.iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":"),
            ]
        })
        .unwrap_or_default()
    };
    let mut args: Vec<String> = vec!["link", "add", a.1, "netns", a.0.name()]
        .into_iter()
        .map(String::from)
        .collect();
    args.extend(mac(a.2));
    args.extend(["type", "veth", "peer", "name", b.1, "netns", b.0.name()].map(String::from));
    args.extend(mac(b.2));
    crate::netns::run(std::process::Command::new("ip").args(&args))?;
    a.0.ip(&["link", "set", a.1, "up"])?;
    b.0.ip(&["link", "set", b.1, "up"])?;
    Ok(())
}

fn addr(ns: &Netns, dev: &str, v4: &str, v6: &str) -> anyhow::Result<()> {
    ns.ip(&["addr", "add", v4, "dev", dev])?;
    ns.ip(&["-6", "addr", "add", v6, "dev", dev, "nodad"])
}
