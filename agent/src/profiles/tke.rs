//! Tencent Cloud TKE default security groups (seeds 000 zh 2023-10-24, 001 ko, 002 en 2024-12-11).
//! Rules follow 002, the newest; all three agree on protocols, ports and sources.

use super::{
    From, OpenRow, Outbound, OutboundRule, Profile, ProfileRule, Provenance, NET_CLUSTER,
    NET_CONTAINER, NODEPORTS,
};
use crate::vocab::{PortRange, Protocol::*};

const SEED: &str = "002_45cfe4d06b09d118.txt";
const NODE_TABLE: &str = "Default security group rules for node / Inbound rules";
const MASTER_TABLE: &str =
    "Default security group rules for master node in self-deployed cluster / Inbound rules";

const NODE_OUT_TABLE: &str = "Default security group rules for node / Outbound rules";
const NODE_OUT_NOTE: &str = "Default security group rules for node / Outbound rules / Note";
const MASTER_OUT_TABLE: &str =
    "Default security group rules for master node in self-deployed cluster / Outbound rules";

const fn at(table: &'static str, row: u16) -> Provenance {
    Provenance {
        seed: SEED,
        table,
        row,
    }
}

const fn node(row: u16) -> Provenance {
    at(NODE_TABLE, row)
}
const fn master(row: u16) -> Provenance {
    at(MASTER_TABLE, row)
}

const ANY: &[From] = &[From::Anywhere];
const CLUSTER: &[From] = &[From::Network(NET_CLUSTER)];
const CONTAINER: &[From] = &[From::Network(NET_CONTAINER)];
const NODEPORT_TEXT: &str = "Open NodePort to the Internet (Services in LoadBalancer type need to be forwarded through NodePort)";
const API_PORTS: &[PortRange] = &[
    PortRange::single(60001),
    PortRange::single(60002),
    PortRange::single(10250),
    PortRange::single(2380),
    PortRange::single(2379),
    PortRange::single(53),
    PortRange::single(17443),
];
const API_PORTS_CLUSTER: &[PortRange] = &[
    PortRange::single(60001),
    PortRange::single(60002),
    PortRange::single(10250),
    PortRange::single(2380),
    PortRange::single(2379),
    PortRange::single(53),
    PortRange::single(17443),
    PortRange::single(50055),
    PortRange::single(443),
    PortRange::single(61678),
];
const DNS: &[PortRange] = &[PortRange::single(53)];
const OPEN_TEXT: &str = "All traffic to 0.0.0.0/0 (all protocols, all ports)";

/// The note under the node outbound table: "To customize outbound rules, you need to open the
/// node IP range and container IP range" (000: 自定义出站规则时需放通节点网段和容器网段).
const CUSTOMISED: &[OutboundRule] = &[
    OutboundRule {
        name: "out-cluster-network",
        protocol: All,
        ports: &[],
        to: CLUSTER,
        description: "Customised outbound rules: open the node IP range",
        provenance: at(NODE_OUT_NOTE, 1),
    },
    OutboundRule {
        name: "out-container-network",
        protocol: All,
        ports: &[],
        to: CONTAINER,
        description: "Customised outbound rules: open the container IP range",
        provenance: at(NODE_OUT_NOTE, 1),
    },
];
const OUTBOUND_NOTE: &str = "Outbound: the seed allows all traffic to 0.0.0.0/0 (what `egress.default: allow` enforces); with `egress.default: deny` the rows are the note under the node outbound table (open the node and container IP ranges), and everything else the node needs (registries, cloud APIs, DNS) must be added.";

pub const NODE: Profile = Profile {
    name: "tke-node",
    summary: "TKE worker node default security group (inbound)",
    rules: &[
        ProfileRule { name: "container-network", protocol: All, ports: &[], from: CONTAINER, description: "Enable the communication between pods in the container network", provenance: node(1) },
        ProfileRule { name: "cluster-network", protocol: All, ports: &[], from: CLUSTER, description: "Enable the communication between nodes in the cluster network", provenance: node(2) },
        ProfileRule { name: "nodeport-tcp", protocol: Tcp, ports: NODEPORTS, from: ANY, description: NODEPORT_TEXT, provenance: node(3) },
        ProfileRule { name: "nodeport-udp", protocol: Udp, ports: NODEPORTS, from: ANY, description: NODEPORT_TEXT, provenance: node(4) },
        ProfileRule { name: "icmp", protocol: Icmp, ports: &[], from: ANY, description: "Enable the support for ICMP and ping operations", provenance: node(5) },
        ProfileRule { name: "icmpv6", protocol: Icmpv6, ports: &[], from: ANY, description: "Enable the support for ICMP and ping operations (0.0.0.0/0 read as IPv6 too)", provenance: node(5) },
    ],
    outbound: Outbound {
        open: Some(OpenRow { description: OPEN_TEXT, provenance: at(NODE_OUT_TABLE, 1) }),
        restricted: CUSTOMISED,
    },
    notes: &[
        "Transcribed from 002 (English, updated 2024-12-11, the newest); 000 (Chinese, 2023-10-24) has the same five rows.",
        "001 (Korean) lost most cells of this table in extraction; its remarks call rows 3-4 'communication between Master and Worker nodes' instead of NodePort access. Ports and sources follow 002.",
        "The seed's prose also says to open port 22 if SSH login is needed: nodewall's default failsafe (tcp/22 from anywhere) covers it.",
        OUTBOUND_NOTE,
    ],
};

pub const MASTER: Profile = Profile {
    name: "tke-master",
    summary: "TKE self-deployed cluster master default security group (inbound)",
    rules: &[
        ProfileRule { name: "icmp", protocol: Icmp, ports: &[], from: ANY, description: "Ping operations are supported", provenance: master(1) },
        ProfileRule { name: "icmpv6", protocol: Icmpv6, ports: &[], from: ANY, description: "Ping operations are supported (0.0.0.0/0 read as IPv6 too)", provenance: master(1) },
        ProfileRule { name: "nodeport-tcp-cluster", protocol: Tcp, ports: NODEPORTS, from: CLUSTER, description: NODEPORT_TEXT, provenance: master(2) },
        ProfileRule { name: "nodeport-udp-cluster", protocol: Udp, ports: NODEPORTS, from: CLUSTER, description: NODEPORT_TEXT, provenance: master(3) },
        ProfileRule { name: "apiserver-cluster", protocol: Tcp, ports: API_PORTS_CLUSTER, from: CLUSTER, description: "API Server communication", provenance: master(4) },
        ProfileRule { name: "apiserver-container", protocol: Tcp, ports: API_PORTS, from: CONTAINER, description: "API Server communication", provenance: master(5) },
        ProfileRule { name: "nodeport-tcp-container", protocol: Tcp, ports: NODEPORTS, from: CONTAINER, description: NODEPORT_TEXT, provenance: master(6) },
        ProfileRule { name: "nodeport-udp-container", protocol: Udp, ports: NODEPORTS, from: CONTAINER, description: NODEPORT_TEXT, provenance: master(7) },
        ProfileRule { name: "coredns-container", protocol: Udp, ports: DNS, from: CONTAINER, description: "CoreDNS communication", provenance: master(8) },
        ProfileRule { name: "coredns-cluster", protocol: Udp, ports: DNS, from: CLUSTER, description: "CoreDNS communication", provenance: master(9) },
    ],
    outbound: Outbound {
        open: Some(OpenRow { description: OPEN_TEXT, provenance: at(MASTER_OUT_TABLE, 1) }),
        restricted: CUSTOMISED,
    },
    notes: &[
        "Transcribed from 002 (English, 2024-12-11, the newest); 000 (Chinese) and 001 (Korean) list the same nine rows with the same ports and sources.",
        "001 (Korean) remarks differ: rows 2-3 say 'communication between Master and Worker nodes' and rows 6-7 'Service communication' where 000/002 say NodePort access. Remarks follow 002.",
        "Row 4 (from the cluster network) has three more ports than row 5 (from the container network): 50055, 443 and 61678. All versions agree.",
        OUTBOUND_NOTE,
        "The seed gives the note about customised outbound rules under the node table only; with `egress.default: deny` nodewall applies it to the master too, which talks to the same node and container networks.",
    ],
};
