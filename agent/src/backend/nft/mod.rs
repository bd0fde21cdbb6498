//! nftables backend: the policy becomes table `inet nodewall` (named interval sets, named
//! counters, a prerouting base chain before DNAT), installed through netlink as one atomic batch.
//!
//! `plan` describes the table once; `script` prints it for `nft -f` (what `render` shows) and
//! `netlink` installs the same objects, updating them in place so counters survive re-applies.
//! The same diff is the drift check: `verify` is "an apply would send nothing", so whatever was
//! removed or altered is exactly what the next apply puts back.
//!
//! Every drop chain first sends a rate-limited sample of its packets to the NFLOG group the
//! daemon reads (see [`nflog`]).

mod names;
mod netlink;
pub mod nflog;
mod plan;
mod script;
mod status;

use std::cell::{Cell, RefCell};
use std::time::Instant;

use anyhow::bail;

use crate::backend::{ApplyReport, Backend, Counters, Status};
use crate::policy::Mode;
use crate::policy::Policy;

pub use netlink::FAULT_ENV;

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

/// The nftables datapath of the current network namespace.
pub struct NftBackend {
    nft: RefCell<netlink::Nft>,
    /// The ruleset generation id at which the table was last seen to be exactly this policy
    /// (by an apply, or by a full verify, with the id read before its dump). While the kernel
    /// reports the same id nothing was committed since, so `verify` needs no dump: the daemon
    /// verifies every second, and dumping 10k set elements each time is what this saves.
    intact: RefCell<Option<(u32, Policy)>>,
    full_verifies: Cell<u64>,
    sets_dumped: usize,
    table_dumped: bool,
}

impl NftBackend {
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self {
            nft: RefCell::new(netlink::Nft::open()?),
            intact: RefCell::new(None),
            full_verifies: Cell::new(0),
            sets_dumped: 0,
            table_dumped: false,
        })
    }

    /// Keeps a record of what the sets hold in the state directory `dir`, so that the next
    /// `nodewall apply` process re-applying a policy with a few changed CIDRs dumps only the
    /// sets that changed instead of every element of the table (see `netlink/cache.rs`). The
    /// daemon needs none: its backend keeps the record in memory between applies.
    pub fn remember_in(&mut self, dir: &std::path::Path) {
        self.nft.get_mut().remember_in(dir);
    }

    /// How many sets the last apply had to dump (see [`Self::remember_in`]).
    pub fn sets_dumped_by_last_apply(&self) -> usize {
        self.sets_dumped
    }

    /// Whether the last apply dumped the table's chains, rules, counters and sets (else the
    /// record of the previous commit told them, see [`Self::remember_in`]).
    pub fn table_dumped_by_last_apply(&self) -> bool {
        self.table_dumped
    }

    /// How many `verify` calls had to dump the table (the others found the ruleset
    /// generation id unchanged since the table was last known intact).
    pub fn full_verifies(&self) -> u64 {
        self.full_verifies.get()
    }
}

/// Refuses what the kernel would truncate or reject, naming the field, before anything is sent.
fn validate(policy: &Policy) -> anyhow::Result<()> {
    if policy.interfaces.is_empty() {
        bail!("interfaces: no interface to filter on");
    }
    for (i, name) in policy.interfaces.iter().enumerate() {
        if let Err(e) = crate::policy::interface_name(name) {
            bail!("interfaces[{i}]: {e}");
        }
    }
    for r in &policy.rules {
        if r.name.len() > names::MAX_NAME {
            bail!(
                "rule {:?}: name is {} bytes, nft comments allow at most {}",
                r.name,
                r.name.len(),
                names::MAX_NAME
            );
        }
    }
    Ok(())
}

impl Backend for NftBackend {
    fn name(&self) -> &'static str {
        "nft"
    }

    fn matches_by_name(&self) -> bool {
        true
    }

    fn apply(&mut self, policy: &Policy) -> anyhow::Result<ApplyReport> {
        validate(policy)?;
        let start = Instant::now();
        self.intact.get_mut().take();
        let applied = self
            .nft
            .get_mut()
            .apply(|generation| plan::build(policy, &policy.interfaces, generation))?;
        *self.intact.get_mut() = applied.genid.map(|id| (id, policy.clone()));
        self.sets_dumped = applied.sets_dumped;
        self.table_dumped = applied.table_dumped;
        Ok(ApplyReport {
            generation: applied.generation,
            changed: applied.changed,
            added: applied.added,
            removed: applied.removed,
            duration: start.elapsed(),
        })
    }

    fn status(&self) -> anyhow::Result<Status> {
        let cur = self
            .nft
            .borrow_mut()
            .read(&|set| set == names::UPLINKS_SET)?;
        Ok(status::status(&cur))
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.intact.get_mut().take();
        self.nft.get_mut().flush()?;
        Ok(())
    }

    fn counters(&self) -> anyhow::Result<Counters> {
        Ok(self.status()?.counters)
    }

    fn verify(&self, policy: &Policy) -> anyhow::Result<bool> {
        validate(policy)?;
        let mut nft = self.nft.borrow_mut();
        // Read before the dump: a commit racing the dump then moves the id past this one, and
        // the next verify dumps again instead of trusting a dump that may have missed it.
        let id = nft.genid()?;
        let mut intact = self.intact.borrow_mut();
        if matches!(&*intact, Some((known, p)) if *known == id && p == policy) {
            return Ok(true);
        }
        self.full_verifies.set(self.full_verifies.get() + 1);
        let ok = nft.verify(|generation| plan::build(policy, &policy.interfaces, generation))?;
        *intact = ok.then(|| (id, policy.clone()));
        Ok(ok)
    }
}
