//! Datapaths that enforce a [`crate::policy::Policy`]. Each backend is one folder and knows
//! nothing of the other; both compile from the same policy and report the same counters, so
//! the CLI, the daemon and the metrics speak only to the [`Backend`] trait.

pub mod interfaces;
pub mod nft;
mod sample;
pub mod xdp;

use std::os::fd::BorrowedFd;
use std::time::Duration;

use serde::Serialize;

use crate::policy::Policy;
use crate::policy::{Action, Mode};
pub use sample::{Direction, DropEvent};

/// Packets and bytes seen by one rule (allow or deny), monotonic for the life of the node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleCounter {
    pub rule: String,
    /// The direction the rule judges: `ingress` (inbound rules) or `egress`.
    pub direction: Direction,
    pub action: Action,
    pub packets: u64,
    pub bytes: u64,
}

/// Drops (or, in audit mode, would-be drops) for one label set. `rule` is empty unless
/// `reason` is `rule`. `family` is `ipv4`/`ipv6`; `protocol` is `tcp`, `udp`, `icmp`, `icmpv6`
/// or `other`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DropCounter {
    pub direction: Direction,
    pub reason: &'static str,
    pub rule: String,
    pub family: &'static str,
    pub protocol: &'static str,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    pub rules: Vec<RuleCounter>,
    pub drops: Vec<DropCounter>,
}

/// What is installed in the kernel right now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Status {
    pub backend: &'static str,
    pub installed: bool,
    /// Increases by one on every apply that changed something.
    pub generation: u64,
    /// Enforce or audit, as the kernel holds it; `None` when nothing is installed.
    pub mode: Option<Mode>,
    pub interfaces: Vec<String>,
    /// Rule names in evaluation order.
    pub rules: Vec<String>,
    pub counters: Counters,
}

/// The outcome of one apply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ApplyReport {
    pub generation: u64,
    /// False when the kernel already held this policy and nothing was sent.
    pub changed: bool,
    /// Set elements / map entries / rules added and removed by this apply.
    pub added: usize,
    pub removed: usize,
    #[serde(with = "secs")]
    pub duration: Duration,
}

/// A datapath. Every call works on the current network namespace.
pub trait Backend {
    fn name(&self) -> &'static str;
    /// Installs `policy` atomically: on error the previous policy stays fully in place.
    fn apply(&mut self, policy: &Policy) -> anyhow::Result<ApplyReport>;
    fn status(&self) -> anyhow::Result<Status>;
    /// Removes everything this backend installed, and nothing else.
    fn flush(&mut self) -> anyhow::Result<()>;
    fn counters(&self) -> anyhow::Result<Counters>;
    /// Whether the kernel still holds `policy` as this backend installed it (`false` when the
    /// table, a chain, a rule, a set element or the XDP attachment is missing or altered). The
    /// daemon calls this every second and re-applies on `false`, so it must be cheap.
    /// Backends should override this default, which only compares rule names and interfaces.
    fn verify(&self, policy: &Policy) -> anyhow::Result<bool> {
        let status = self.status()?;
        let mut want = policy.interfaces.clone();
        let mut have = status.interfaces;
        want.sort();
        have.sort();
        Ok(status.installed
            && have == want
            && status.rules.iter().eq(policy.rules.iter().map(|r| &r.name)))
    }

    /// Whether the kernel matches the policy's interfaces by name, so that names and `eth*`
    /// patterns are given as they are and cover interfaces created later (nft's `iifname`);
    /// otherwise the backend is given the existing interfaces they select (see
    /// [`interfaces::resolve`]).
    fn matches_by_name(&self) -> bool {
        false
    }

    /// Dropped-packet samples that the datapath hands to this process, to be read off the
    /// backend thread; asked for once the policy is installed. `None` (the default) when the
    /// backend has none of its own: the nft backend's samples go to NFLOG, which the daemon
    /// reads directly.
    fn drop_samples(&mut self) -> anyhow::Result<Option<Box<dyn DropSamples>>> {
        Ok(None)
    }
}

/// A stream of dropped-packet samples (see [`Backend::drop_samples`]).
pub trait DropSamples: Send {
    /// Readable when samples are waiting.
    fn fd(&self) -> BorrowedFd<'_>;
    /// Every sample waiting now.
    fn drain(&mut self) -> Vec<DropEvent>;
    /// Whether the datapath now writes its samples somewhere else (it was rebuilt, e.g. after
    /// its pins were removed), so that this reader would wait forever: the daemon then asks
    /// the backend for a new one.
    fn replaced(&self) -> bool {
        false
    }
}

mod secs {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}
