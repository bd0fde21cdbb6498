//! nftables backend: the policy becomes table `inet nodewall` (named interval sets, named
//! counters, a prerouting base chain before DNAT), installed through netlink as one atomic batch.
//!
//! `plan` describes the table once; `script` prints it for `nft -f` (what `render` shows) and
//! `netlink` installs the same objects, updating them in place so counters survive re-applies.

mod names;
mod plan;
mod script;

use crate::backend::{ApplyReport, Backend, Counters, Status};
use crate::config::Mode;
use crate::policy::Policy;

/// The `nft -f` script that the backend installs (with generation 0 in the base rule's comment;
/// `apply` numbers generations from 1).
pub fn render(policy: &Policy, interfaces: &[String]) -> String {
    let rs = plan::build(policy, interfaces, 0);
    let mode = match policy.mode {
        Mode::Enforce => "enforce",
        Mode::Audit => "audit: would-be drops are counted and accepted",
    };
    let header = format!(
        "nodewall policy: profile {}, mode {mode}, {} rules, interfaces {}",
        policy.profile.as_deref().unwrap_or("(none)"),
        policy.rules.len(),
        interfaces.join(","),
    );
    script::script(&rs, &header)
}

pub struct NftBackend;

impl NftBackend {
    pub fn new() -> anyhow::Result<Self> {
        anyhow::bail!("nft backend is being written")
    }
}

impl Backend for NftBackend {
    fn name(&self) -> &'static str {
        "nft"
    }
    fn apply(&mut self, _policy: &Policy) -> anyhow::Result<ApplyReport> {
        unimplemented!()
    }
    fn status(&self) -> anyhow::Result<Status> {
        unimplemented!()
    }
    fn flush(&mut self) -> anyhow::Result<()> {
        unimplemented!()
    }
    fn counters(&self) -> anyhow::Result<Counters> {
        unimplemented!()
    }
}
