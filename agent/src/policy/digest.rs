//! A short fingerprint of what a policy enforces, equal on every node fed the same config.
//!
//! Generations are per-node counters (they move on restarts and drift repairs), so comparing
//! them across nodes says nothing; comparing digests says whether nodes enforce the same rules.
//! Interfaces are left out: uplink names differ between nodes without changing the policy.

use super::model::Policy;
use crate::fnv::Fnv;

impl Policy {
    /// 16 hex digits of FNV-1a over the canonical JSON of mode, implicit allowances and rules,
    /// and the egress rules unless egress is open (so that a config without egress keeps the
    /// digest it had before egress existed).
    pub fn digest(&self) -> String {
        let canonical = if self.egress.is_open() {
            serde_json::to_vec(&(&self.mode, &self.implicit, &self.rules))
        } else {
            serde_json::to_vec(&(&self.mode, &self.implicit, &self.rules, &self.egress))
        }
        .expect("policy serialises");
        let mut hash = Fnv::new();
        hash.write(&canonical);
        format!("{:016x}", hash.finish())
    }
}
