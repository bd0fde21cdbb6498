//! Kernel counters -> the backend-neutral [`Counters`], labelled like the nft backend's.

use anyhow::Result;
use nodewall_common::xdp::{
    drop_index, PassReason, Stat, ACTION_DENY, DROP_CAUSE_DEFAULT, DROP_CAUSE_EGRESS_DEFAULT,
    DROP_CAUSE_EGRESS_INVALID, DROP_CAUSE_INVALID, DROP_CAUSE_RULE_BASE, FAMILIES, PROTOCOLS,
    RULE_EGRESS,
};
use nodewall_common::DropReason;

use super::maps::Maps;
use super::slots::Slots;
use crate::backend::{Counters, Direction, DropCounter, RuleCounter};
use crate::policy::Action;

/// Counters of the active generation's rules (every rule, even at zero) and every non-zero
/// drop counter.
pub fn read(maps: &Maps) -> Result<Counters> {
    let sw = maps.read_switch()?;
    let cfg = maps.read_config(sw.active & 1)?;
    let slots = Slots::read(maps)?;
    let mut out = Counters::default();
    let (inbound, outbound) = (Direction::Ingress, Direction::Egress);
    let mut causes = vec![
        (
            DROP_CAUSE_DEFAULT,
            inbound,
            DropReason::DefaultDeny,
            String::new(),
        ),
        (
            DROP_CAUSE_INVALID,
            inbound,
            DropReason::Invalid,
            String::new(),
        ),
        (
            DROP_CAUSE_EGRESS_DEFAULT,
            outbound,
            DropReason::DefaultDeny,
            String::new(),
        ),
        (
            DROP_CAUSE_EGRESS_INVALID,
            outbound,
            DropReason::Invalid,
            String::new(),
        ),
    ];
    for r in &cfg.rules[..cfg.nrules as usize] {
        let name = slots.name(r.slot).unwrap_or("?").to_string();
        let action = if r.action == ACTION_DENY {
            Action::Deny
        } else {
            Action::Allow
        };
        let direction = if r.direction == RULE_EGRESS {
            outbound
        } else {
            inbound
        };
        let s = Maps::stat(&maps.rule_stats, r.slot as u32)?;
        out.rules.push(RuleCounter {
            rule: name.clone(),
            direction,
            action,
            packets: s.packets,
            bytes: s.bytes,
        });
        if action == Action::Deny {
            let cause = DROP_CAUSE_RULE_BASE + r.slot as u32;
            causes.push((cause, direction, DropReason::Rule, name));
        }
    }
    for (cause, direction, reason, rule) in causes {
        for (family, family_label) in FAMILIES.iter().enumerate() {
            for (proto, proto_label) in PROTOCOLS.iter().enumerate() {
                let s = Maps::stat(
                    &maps.drop_stats,
                    drop_index(cause, family as u32, proto as u32),
                )?;
                if s.packets > 0 {
                    out.drops.push(DropCounter {
                        direction,
                        reason: reason.as_str(),
                        rule: rule.clone(),
                        family: family_label,
                        protocol: proto_label,
                        packets: s.packets,
                        bytes: s.bytes,
                    });
                }
            }
        }
    }
    Ok(out)
}

/// Packets accepted without the rules, by reason (not part of [`Counters`]; for tests and
/// debugging).
pub fn passes(maps: &Maps, reason: PassReason) -> Result<Stat> {
    Maps::stat(&maps.pass_stats, reason as u32)
}
