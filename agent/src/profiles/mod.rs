//! Built-in baselines transcribed from the cloud providers' security-group documents in
//! `shared/seeds/`. Each rule keeps its provenance (seed file, table, row) so that `explain` and
//! `profiles NAME` can say which published row allowed a packet.
//!
//! Outbound tables are transcribed too ([`Outbound`]), in two parts, because every seed
//! recommends leaving outbound open and warns that a restricted table needs the registries and
//! cloud APIs added: the seed's "all traffic to 0.0.0.0/0" row is what `egress.default: allow`
//! (the default) enforces, and the restricted (minimum) rows are enforced only when a config
//! opts in with `egress.default: deny`. Security groups are stateful: replies in either
//! direction are never judged by the other direction's rows.
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

/// An outbound row: traffic the group lets leave for `to` (a [`From`] names a destination
/// here).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct OutboundRule {
    /// Unique within the profile, inbound rules included; the policy names it `PROFILE/NAME`.
    pub name: &'static str,
    pub protocol: Protocol,
    /// Empty means every port.
    pub ports: &'static [PortRange],
    pub to: &'static [From],
    pub description: &'static str,
    pub provenance: Provenance,
}

/// The seed's row that lets all outbound traffic leave (`All / All / 0.0.0.0/0`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct OpenRow {
    pub description: &'static str,
    pub provenance: Provenance,
}

/// A profile's outbound table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Outbound {
    /// The row `egress.default: allow` stands for, when the seed gives one for this group;
    /// `None` when the seed's only outbound table for it is restricted (nodewall's default
    /// then leaves outbound open all the same: a config must opt into restricting it).
    pub open: Option<OpenRow>,
    /// The rows allowed under `egress.default: deny`, in order; the rest is denied.
    pub restricted: &'static [OutboundRule],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Profile {
    pub name: &'static str,
    pub summary: &'static str,
    pub rules: &'static [ProfileRule],
    pub outbound: Outbound,
    /// Transcription choices and disagreements between language versions of the seed.
    pub notes: &'static [&'static str],
}

impl Profile {
    /// The named networks this profile's (inbound) rules refer to, in first-use order.
    pub fn networks(&self) -> Vec<&'static str> {
        named(self.rules.iter().flat_map(|r| r.from))
    }

    /// The named networks its restricted outbound rows refer to (needed with
    /// `egress.default: deny`), in first-use order.
    pub fn outbound_networks(&self) -> Vec<&'static str> {
        named(self.outbound.restricted.iter().flat_map(|r| r.to))
    }
}

fn named<'a>(peers: impl Iterator<Item = &'a From>) -> Vec<&'static str> {
    let mut out = Vec::new();
    for p in peers {
        if let From::Network(n) = p {
            if !out.contains(n) {
                out.push(*n);
            }
        }
    }
    out
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
