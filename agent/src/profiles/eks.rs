//! Amazon EKS security groups (seed 003, Chinese: "Amazon EKS 安全组注意事项").
//!
//! The "cluster security group" is shared by every node and the control-plane ENIs: "itself"
//! (自身) is read as the `cluster` (node) network plus the `control-plane` network.

use super::{
    From, OpenRow, Outbound, OutboundRule, Profile, ProfileRule, Provenance, NET_CLUSTER,
    NET_CONTROL_PLANE,
};
use crate::vocab::{PortRange, Protocol::*};

const SEED: &str = "003_09e96d8841d40d21.txt";

const fn at(table: &'static str, row: u16) -> Provenance {
    Provenance {
        seed: SEED,
        table,
        row,
    }
}

const CLUSTER_SG: &[From] = &[From::Network(NET_CLUSTER), From::Network(NET_CONTROL_PLANE)];
const NODES: &[From] = &[From::Network(NET_CLUSTER)];
const FROM_CONTROL_PLANE: &[From] = &[From::Network(NET_CONTROL_PLANE)];
const HTTPS: &[PortRange] = &[PortRange::single(443)];
const KUBELET: &[PortRange] = &[PortRange::single(10250)];
const HTTPS_AND_HIGH: &[PortRange] = &[PortRange::single(443), PortRange::new(1025, 65535)];
const HIGH: &[PortRange] = &[PortRange::new(1025, 65535)];
const OPEN_TEXT: &str = "All traffic to 0.0.0.0/0 (all protocols, all ports)";
const REGISTRIES_NOTE: &str = "With `egress.default: deny`, the seed's footnote applies: nodes also need the EKS API (cluster introspection and registration at boot), Amazon S3, the ECR API and any other registry they pull from (DockerHub...): add them as `egress.rules` (AWS publishes its ranges in ip-ranges.json).";

const T_CLUSTER_OUT: &str =
    "集群安全组 / 推荐出站流量 (cluster security group, recommended outbound)";
const T_RESTRICTED_OUT: &str =
    "限制集群流量 / 最小出站流量 (restricted cluster traffic, minimum outbound)";
const T_NODE_MIN_OUT: &str = "节点安全组 / 最小出站流量 (node security group, minimum outbound)";
const T_NODE_REC_OUT: &str =
    "节点安全组 / 推荐出站流量 (node security group, recommended outbound)";
const T_CP_MIN_OUT: &str =
    "控制层面安全组 / 最小出站流量 (control-plane security group, minimum outbound)";
const T_CP_REC_OUT: &str =
    "控制层面安全组 / 推荐出站流量 (control-plane security group, recommended outbound)";

/// The restricted cluster security group's minimum outbound rows.
const CLUSTER_RESTRICTED_OUT: &[OutboundRule] = &[
    OutboundRule { name: "out-https", protocol: Tcp, ports: HTTPS, to: CLUSTER_SG, description: "TCP 443 to the cluster security group", provenance: at(T_RESTRICTED_OUT, 1) },
    OutboundRule { name: "out-kubelet", protocol: Tcp, ports: KUBELET, to: CLUSTER_SG, description: "TCP 10250 to the cluster security group (and, per the asterisk, whatever protocols and ports nodes use between themselves)", provenance: at(T_RESTRICTED_OUT, 2) },
];
/// The node security group's minimum outbound row.
const NODE_MIN_OUT: &[OutboundRule] = &[OutboundRule {
    name: "out-apiserver",
    protocol: Tcp,
    ports: HTTPS,
    to: FROM_CONTROL_PLANE,
    description: "TCP 443 to the control-plane security group",
    provenance: at(T_NODE_MIN_OUT, 1),
}];
const CLUSTER_OPEN: Option<OpenRow> = Some(OpenRow {
    description: OPEN_TEXT,
    provenance: at(T_CLUSTER_OUT, 1),
});
const NODE_OPEN: Option<OpenRow> = Some(OpenRow {
    description: OPEN_TEXT,
    provenance: at(T_NODE_REC_OUT, 1),
});

const T_CLUSTER: &str = "集群安全组 / 推荐入站流量 (cluster security group, recommended inbound)";
pub const CLUSTER: Profile = Profile {
    name: "eks-cluster",
    summary: "EKS cluster security group, recommended: all traffic between its members",
    rules: &[ProfileRule {
        name: "self",
        protocol: All,
        ports: &[],
        from: CLUSTER_SG,
        description: "All traffic from the cluster security group itself (nodes and control plane)",
        provenance: at(T_CLUSTER, 1),
    }],
    outbound: Outbound { open: CLUSTER_OPEN, restricted: CLUSTER_RESTRICTED_OUT },
    notes: &[
        "'自身' (the group itself) is read as the cluster (node) network plus the control plane.",
        "Outbound: the recommended table allows all traffic to 0.0.0.0/0 (`egress.default: allow`); with `egress.default: deny` the rows are the restricted cluster group's minimum outbound (TCP 443 and 10250 to the cluster security group).",
        REGISTRIES_NOTE,
    ],
};

const T_RESTRICTED: &str =
    "限制集群流量 / 最小入站流量 (restricted cluster traffic, minimum inbound)";
pub const CLUSTER_RESTRICTED: Profile = Profile {
    name: "eks-cluster-restricted",
    summary: "EKS cluster security group, restricted to the minimum ports",
    rules: &[
        ProfileRule { name: "https", protocol: Tcp, ports: HTTPS, from: CLUSTER_SG, description: "TCP 443 from the cluster security group", provenance: at(T_RESTRICTED, 1) },
        ProfileRule { name: "kubelet", protocol: Tcp, ports: KUBELET, from: CLUSTER_SG, description: "TCP 10250 from the cluster security group", provenance: at(T_RESTRICTED, 2) },
    ],
    outbound: Outbound { open: CLUSTER_OPEN, restricted: CLUSTER_RESTRICTED_OUT },
    notes: &[
        "The seed's asterisk: add any protocol and port the nodes use to talk to each other (CNI overlay, NodePorts) as user rules.",
        "Outbound: nodewall leaves it open (`egress.default: allow`, the cluster group's recommended all-traffic row) until a config says `egress.default: deny`; then the rows are the minimum outbound (TCP 443 and 10250 to the cluster security group).",
        REGISTRIES_NOTE,
    ],
};

const T_NODE_MIN: &str = "节点安全组 / 最小入站流量 (node security group, minimum inbound)";
pub const NODE: Profile = Profile {
    name: "eks-node",
    summary: "EKS node security group, minimum inbound",
    rules: &[
        ProfileRule { name: "inter-node", protocol: All, ports: &[], from: NODES, description: "Any protocol and port the nodes use between themselves, from all node security groups", provenance: at(T_NODE_MIN, 1) },
        ProfileRule { name: "kubelet-from-control-plane", protocol: Tcp, ports: KUBELET, from: FROM_CONTROL_PLANE, description: "TCP 10250 from the control-plane security group", provenance: at(T_NODE_MIN, 2) },
    ],
    outbound: Outbound { open: NODE_OPEN, restricted: NODE_MIN_OUT },
    notes: &[
        "Row 1 leaves the protocols and ports to the operator ('any protocol you expect nodes to use'); nodewall allows all of them from the node network, as the recommended table does, so that CNI overlays keep working.",
        "Outbound: nodewall leaves it open (`egress.default: allow`, the node group's recommended all-traffic row) until a config says `egress.default: deny`; then the row is the minimum outbound (TCP 443 to the control-plane security group).",
        REGISTRIES_NOTE,
    ],
};

const T_NODE_REC: &str = "节点安全组 / 推荐入站流量 (node security group, recommended inbound)";
pub const NODE_RECOMMENDED: Profile = Profile {
    name: "eks-node-recommended",
    summary: "EKS node security group, recommended inbound",
    rules: &[
        ProfileRule { name: "inter-node", protocol: All, ports: &[], from: NODES, description: "All traffic from all node security groups", provenance: at(T_NODE_REC, 1) },
        ProfileRule { name: "from-control-plane", protocol: Tcp, ports: HTTPS_AND_HIGH, from: FROM_CONTROL_PLANE, description: "TCP 443 and 1025-65535 from the control-plane security group", provenance: at(T_NODE_REC, 2) },
    ],
    outbound: Outbound { open: NODE_OPEN, restricted: NODE_MIN_OUT },
    notes: &[
        "The seed writes rows 1-2 as one cell pair ('All / TCP', 'All / 443,1025-65535'); they are split here by source.",
        "Outbound: the recommended table allows all traffic to 0.0.0.0/0 (`egress.default: allow`); with `egress.default: deny` the row is the node group's minimum outbound (TCP 443 to the control-plane security group).",
        REGISTRIES_NOTE,
    ],
};

const T_CP: &str = "控制层面安全组 / 最小入站流量 (control-plane security group, minimum inbound)";
pub const CONTROL_PLANE: Profile = Profile {
    name: "eks-control-plane",
    summary: "EKS control-plane security group inbound (minimum and recommended are the same)",
    rules: &[ProfileRule { name: "apiserver-from-nodes", protocol: Tcp, ports: HTTPS, from: NODES, description: "TCP 443 from all node security groups", provenance: at(T_CP, 1) }],
    outbound: Outbound {
        open: None,
        restricted: &[
            OutboundRule { name: "out-kubelet", protocol: Tcp, ports: KUBELET, to: NODES, description: "TCP 10250 to all node security groups (minimum)", provenance: at(T_CP_MIN_OUT, 1) },
            OutboundRule { name: "out-high-ports", protocol: Tcp, ports: HIGH, to: NODES, description: "TCP 1025-65535 to all node security groups (recommended)", provenance: at(T_CP_REC_OUT, 1) },
        ],
    },
    notes: &[
        "Minimum and recommended inbound are identical in the seed (TCP 443 from all node security groups).",
        "With private endpoint access, the seed also allows 443 from any group that runs API clients (e.g. a bastion): add those as user rules.",
        "Outbound: neither of the seed's control-plane tables allows everything; nodewall leaves outbound open all the same (`egress.default: allow`) until a config says `egress.default: deny`. Then the rows are both tables' (TCP 10250 minimum, TCP 1025-65535 recommended, to all node security groups): the recommended row contains the minimum one, which keeps its own counter and provenance.",
        "The seed's note on privileged ports: to proxy to them or run the CNCF conformance tests, the control plane needs outbound 0-65535 to the nodes; add it as an egress rule.",
    ],
};
