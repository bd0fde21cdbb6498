//! Built-in baselines transcribed from the cloud providers' security-group documents in
//! `shared/seeds/`. Each rule keeps its provenance (seed file, table, row) so that `explain` and
//! `profiles NAME` can say which published row allowed a packet.
//!
//! Common to every seed: outbound is allowed and security groups are stateful. nodewall filters
//! inbound only and always lets return traffic of the node's own connections through (the
//! `established` implicit allowance), so outbound tables are not transcribed as rules.
//! A seed's `0.0.0.0/0` is transcribed as "any address", IPv6 (`::/0`) included, and its ICMP rows
//! allow ICMPv6 as well: no seed restricts them to IPv4.

mod ack;
mod eks;
mod tke;

use serde::Serialize;

use crate::vocab::{PortRange, Protocol};

/// The named networks profiles refer to; users define them under `networks:`.
pub const NET_CLUSTER: &str = "cluster";
pub const NET_CONTAINER: &str = "container";
pub const NET_CONTROL_PLANE: &str = "control-plane";

/// Where a profile rule was transcribed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Provenance {
    /// File name under `shared/seeds/`.
    pub seed: &'static str,
    /// The table's heading in that seed.
    pub table: &'static str,
    /// 1-based data row of that table.
    pub row: u16,
}

/// A profile rule's source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum From {
    /// `0.0.0.0/0` in the seed: every IPv4 and IPv6 address.
    Anywhere,
    /// One of the named networks (`cluster`, `container`, `control-plane`).
    Network(&'static str),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ProfileRule {
    /// Unique within the profile; the policy names the rule `PROFILE/NAME`.
    pub name: &'static str,
    pub protocol: Protocol,
    /// Empty means every port.
    pub ports: &'static [PortRange],
    pub from: &'static [From],
    /// The seed's remark for the row, in English.
    pub description: &'static str,
    pub provenance: Provenance,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Profile {
    pub name: &'static str,
    pub summary: &'static str,
    pub rules: &'static [ProfileRule],
    /// Transcription choices and disagreements between language versions of the seed.
    pub notes: &'static [&'static str],
}

impl Profile {
    /// The named networks this profile's rules refer to, in first-use order.
    pub fn networks(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        for rule in self.rules {
            for from in rule.from {
                if let From::Network(n) = from {
                    if !out.contains(n) {
                        out.push(*n);
                    }
                }
            }
        }
        out
    }
}

/// Every built-in profile, in the order `nodewall profiles` lists them.
pub fn all() -> &'static [Profile] {
    &ALL
}

pub fn find(name: &str) -> Option<&'static Profile> {
    ALL.iter().find(|p| p.name == name)
}

static ALL: [Profile; 9] = [
    tke::NODE,
    tke::MASTER,
    eks::CLUSTER,
    eks::CLUSTER_RESTRICTED,
    eks::NODE,
    eks::NODE_RECOMMENDED,
    eks::CONTROL_PLANE,
    ack::NODE,
    ack::NODE_RECOMMENDED,
];

pub(crate) const NODEPORTS: &[PortRange] = &[PortRange::new(30000, 32768)];
