//! Counter slots: each rule name keeps its slot (and so its counters) for as long as it stays
//! in the policy, whatever its position. The names live in a pinned map so a restarted agent
//! and `status` in another process can label counters.

use std::collections::HashSet;

use anyhow::{bail, Result};
use nodewall_common::xdp::{SlotName, ACTION_ALLOW, ACTION_DENY, MAX_NAME_LEN, MAX_SLOTS};

use super::maps::Maps;
use crate::policy::Action;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slots {
    names: Vec<Option<String>>,
}

impl Slots {
    pub fn empty() -> Self {
        Self {
            names: vec![None; MAX_SLOTS as usize],
        }
    }

    pub fn read(maps: &Maps) -> Result<Self> {
        let names = maps
            .read_slot_names()?
            .into_iter()
            .map(|s| {
                (s.used != 0).then(|| {
                    String::from_utf8_lossy(&s.name[..(s.len as usize).min(MAX_NAME_LEN)])
                        .into_owned()
                })
            })
            .collect();
        Ok(Self { names })
    }

    pub fn name(&self, slot: u16) -> Option<&str> {
        self.names.get(slot as usize)?.as_deref()
    }

    pub fn find(&self, name: &str) -> Option<u16> {
        self.names
            .iter()
            .position(|n| n.as_deref() == Some(name))
            .map(|i| i as u16)
    }

    /// A slot for each rule: its own if it has one, else a free slot that `busy` (the slots
    /// the active generation counts into) does not hold. Returns the slots and the newly
    /// taken ones, whose counters must start from zero.
    pub fn assign(
        &mut self,
        rules: &[(String, Action)],
        busy: &HashSet<u16>,
    ) -> Result<(Vec<u16>, Vec<u16>)> {
        let keep: HashSet<&str> = rules.iter().map(|(n, _)| n.as_str()).collect();
        let mut out = Vec::with_capacity(rules.len());
        let mut fresh = Vec::new();
        for (name, _) in rules {
            if let Some(slot) = self.find(name) {
                out.push(slot);
                continue;
            }
            let free = (0..MAX_SLOTS as u16).find(|s| {
                !busy.contains(s)
                    && self.names[*s as usize]
                        .as_deref()
                        .is_none_or(|n| !keep.contains(n))
            });
            let Some(slot) = free else {
                bail!("rules: no free counter slot for {name:?} (at most {MAX_SLOTS} names across two generations)");
            };
            self.names[slot as usize] = Some(name.clone());
            out.push(slot);
            fresh.push(slot);
        }
        Ok((out, fresh))
    }

    /// Forgets every name but those in `keep`; returns the slots released.
    pub fn release_except(&mut self, keep: &[u16]) -> Vec<u16> {
        let mut released = Vec::new();
        for (slot, name) in self.names.iter_mut().enumerate() {
            if name.is_some() && !keep.contains(&(slot as u16)) {
                *name = None;
                released.push(slot as u16);
            }
        }
        released
    }

    pub fn write(&self, maps: &mut Maps, slot: u16, action: Option<Action>) -> Result<()> {
        let mut entry = SlotName::EMPTY;
        if let Some(name) = &self.names[slot as usize] {
            entry.len = name.len() as u16;
            entry.used = 1;
            entry.action = if action == Some(Action::Deny) {
                ACTION_DENY
            } else {
                ACTION_ALLOW
            };
            entry.name[..name.len()].copy_from_slice(name.as_bytes());
        }
        Ok(maps.slot_names.set(slot as u32, entry, 0)?)
    }
}
