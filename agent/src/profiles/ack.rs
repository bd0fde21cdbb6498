//! Alibaba Cloud ACK security groups (seed 004, Chinese: network security best practice).
//!
//! The "cluster security group" (集群安全组) holds the nodes and the control plane: it is read
//! as the `cluster` network plus the `control-plane` network.

use super::{
    From, OpenRow, Outbound, OutboundRule, Profile, ProfileRule, Provenance, NET_CLUSTER,
    NET_CONTROL_PLANE,
};
use crate::vocab::{PortRange, Protocol::*};

const SEED: &str = "004_0e57c02a51b57d6c.txt";
const TABLE: &str = "安全组 / 最小化与推荐出入方向 (security group, minimal and recommended)";

const fn row(row: u16) -> Provenance {
    Provenance {
        seed: SEED,
        table: TABLE,
        row,
    }
}

const CLUSTER_SG: &[From] = &[From::Network(NET_CLUSTER), From::Network(NET_CONTROL_PLANE)];
const NOTES: &[&str] = &[
    "The seed's NetworkPolicy examples (default deny, DNS to kube-system) are pod-level policies and are not node firewall rules: not transcribed.",
    "Outbound: the recommended row (row 4) allows all traffic to 0.0.0.0/0, what `egress.default: allow` enforces; with `egress.default: deny` the row is the minimal outbound (row 3: TCP 443 to the cluster security group), and the node's registries, OSS and cloud APIs must be added as egress rules.",
];

const OUTBOUND: Outbound = Outbound {
    open: Some(OpenRow {
        description: "All traffic to 0.0.0.0/0 (recommended outbound)",
        provenance: row(4),
    }),
    restricted: &[OutboundRule {
        name: "out-https",
        protocol: Tcp,
        ports: &[PortRange::single(443)],
        to: CLUSTER_SG,
        description: "TCP 443 to the cluster security group (minimal outbound)",
        provenance: row(3),
    }],
};

pub const NODE: Profile = Profile {
    name: "ack-node",
    summary: "ACK node security group, minimal inbound (from the control plane and other nodes)",
    rules: &[
        ProfileRule { name: "apiserver-kubelet", protocol: Tcp, ports: &[PortRange::single(443), PortRange::single(10250)], from: CLUSTER_SG, description: "TCP 443 and 10250 from the cluster security group", provenance: row(1) },
        ProfileRule { name: "inter-node", protocol: All, ports: &[], from: &[From::Network(NET_CLUSTER)], description: "The protocols and ports you want for inter-node communication", provenance: row(1) },
    ],
    outbound: OUTBOUND,
    notes: &[
        "Row 1 also leaves 'the protocols and ports you want for node-to-node traffic' to the operator; nodewall allows all of them from the node network, as the recommended row does.",
        NOTES[0],
        NOTES[1],
    ],
};

pub const NODE_RECOMMENDED: Profile = Profile {
    name: "ack-node-recommended",
    summary: "ACK node security group, recommended inbound",
    rules: &[
        ProfileRule { name: "all", protocol: All, ports: &[], from: CLUSTER_SG, description: "All traffic from the cluster security group", provenance: row(2) },
        ProfileRule { name: "https-and-high", protocol: Tcp, ports: &[PortRange::single(443), PortRange::new(1025, 65535)], from: CLUSTER_SG, description: "TCP 443 and 1025-65535 from the cluster security group", provenance: row(2) },
    ],
    outbound: OUTBOUND,
    notes: &["Row 2 is 'ALL/TCP, ALL/443,1025-65535': the TCP half is covered by the ALL half and kept for provenance.", NOTES[0], NOTES[1]],
};
