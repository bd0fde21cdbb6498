//! Amazon EKS security groups (seed 003, Chinese: "Amazon EKS 安全组注意事项").
//!
//! The "cluster security group" is shared by every node and the control-plane ENIs: "itself"
//! (自身) is read as the `cluster` (node) network plus the `control-plane` network.

use super::{From, Profile, ProfileRule, Provenance, NET_CLUSTER, NET_CONTROL_PLANE};
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
const OUTBOUND_NOTE: &str = "Outbound tables (all allowed, or TCP 443/10250 to the cluster security group when restricted) are not rules: nodewall filters inbound only.";

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
    notes: &[
        "'自身' (the group itself) is read as the cluster (node) network plus the control plane.",
        OUTBOUND_NOTE,
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
    notes: &[
        "The seed's asterisk: add any protocol and port the nodes use to talk to each other (CNI overlay, NodePorts) as user rules.",
        OUTBOUND_NOTE,
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
    notes: &[
        "Row 1 leaves the protocols and ports to the operator ('any protocol you expect nodes to use'); nodewall allows all of them from the node network, as the recommended table does, so that CNI overlays keep working.",
        OUTBOUND_NOTE,
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
    notes: &["The seed writes rows 1-2 as one cell pair ('All / TCP', 'All / 443,1025-65535'); they are split here by source.", OUTBOUND_NOTE],
};

const T_CP: &str = "控制层面安全组 / 最小入站流量 (control-plane security group, minimum inbound)";
pub const CONTROL_PLANE: Profile = Profile {
    name: "eks-control-plane",
    summary: "EKS control-plane security group inbound (minimum and recommended are the same)",
    rules: &[ProfileRule { name: "apiserver-from-nodes", protocol: Tcp, ports: HTTPS, from: NODES, description: "TCP 443 from all node security groups", provenance: at(T_CP, 1) }],
    notes: &[
        "Minimum and recommended inbound are identical in the seed (TCP 443 from all node security groups).",
        "With private endpoint access, the seed also allows 443 from any group that runs API clients (e.g. a bastion): add those as user rules.",
        OUTBOUND_NOTE,
    ],
};
