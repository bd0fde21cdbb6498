//! nftables backend: renders the policy as an `inet nodewall` table and installs it through
//! netlink as one atomic batch. (Being written on the `nft` branch.)

use crate::backend::{ApplyReport, Backend, Counters, Status};
use crate::policy::Policy;

/// The `nft -f` script that the backend installs.
pub fn render(_policy: &Policy, _interfaces: &[String]) -> String {
    todo!("nft render is being written")
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
