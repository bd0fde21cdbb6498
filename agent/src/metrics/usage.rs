//! Rules that have not matched a packet since they were installed as they are now: the candidates
//! for removal (or the sign of a typo), listed by `nodewall status` and exported as
//! `nodewall_rule_unmatched`.
//!
//! A rule's clock starts when an apply adds it or changes it (same name, other protocol, ports,
//! sources or action); re-applying it unchanged (a reload, a drift repair) keeps its clock. It
//! stops when a reading of the kernel counters shows the rule's counter moved: the daemon
//! reads them every second (with the drift check), at every scrape and around every apply.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::RuleLabels;
use crate::drops::wire::RuleUsage as Usage;
use crate::policy::Policy;

struct Entry {
    action: String,
    since: SystemTime,
    matched: bool,
}

#[derive(Default)]
pub struct RuleUsage {
    rules: Mutex<BTreeMap<String, Entry>>,
    unmatched: Family<RuleLabels, Gauge>,
}

impl RuleUsage {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "rule_unmatched",
            "1 for a rule that no packet has matched since it was installed as it is now, 0 once one has",
            self.unmatched.clone(),
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.rules.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `policy` was just applied: its rules named in `renewed` (added or changed by this
    /// apply) and those not tracked yet start their clock now; rules it no longer has are
    /// forgotten.
    pub fn installed(&self, policy: &Policy, renewed: &BTreeSet<String>) {
        let now = SystemTime::now();
        let mut rules = self.lock();
        let gone: Vec<String> = rules
            .keys()
            .filter(|n| !policy.rules.iter().any(|r| &r.name == *n))
            .cloned()
            .collect();
        for name in gone {
            if let Some(e) = rules.remove(&name) {
                self.unmatched.remove(&labels(&name, &e.action));
            }
        }
        for r in &policy.rules {
            let action = super::action_str(r.action).to_string();
            if rules.contains_key(&r.name) && !renewed.contains(&r.name) {
                continue;
            }
            if let Some(old) = rules.get(&r.name) {
                self.unmatched.remove(&labels(&r.name, &old.action));
            }
            self.unmatched
                .get_or_create(&labels(&r.name, &action))
                .set(1);
            rules.insert(
                r.name.clone(),
                Entry {
                    action,
                    since: now,
                    matched: false,
                },
            );
        }
    }

    /// The kernel counter of `rule` moved.
    pub fn matched(&self, rule: &str) {
        let mut rules = self.lock();
        if let Some(e) = rules.get_mut(rule) {
            if !e.matched {
                e.matched = true;
                self.unmatched
                    .get_or_create(&labels(rule, &e.action))
                    .set(0);
            }
        }
    }

    /// Every rule of the applied policy, by name.
    pub fn snapshot(&self) -> Vec<Usage> {
        self.lock()
            .iter()
            .map(|(name, e)| Usage {
                rule: name.clone(),
                action: e.action.clone(),
                since: humantime::format_rfc3339_seconds(e.since).to_string(),
                matched: e.matched,
            })
            .collect()
    }
}

fn labels(rule: &str, action: &str) -> RuleLabels {
    RuleLabels {
        rule: rule.to_string(),
        action: action.to_string(),
    }
}
