//! Egress: the TC program's verdict on a packet leaving through an uplink, in the order of
//! `nodewall::policy::egress` (the nft backend's `egress-host` / `egress-pod` chains):
//! packets of live flows and errors about them pass; ICMPv6 neighbour discovery; then the
//! egress rules judging the sender; then the default. What the parser cannot read is dropped
//! (`invalid`): a pod must not reach a destination the rules forbid by hiding its ports.
//!
//! The sender: a packet the node forwards arrived on some interface (`ingress_ifindex` set),
//! one the node sends itself did not. That is nft's split between the `forward` and `output`
//! hooks. The pod's own source address is not visible here (a masquerading CNI has rewritten
//! it by now), so rules limited to some pods' addresses are refused by the agent.

use aya_ebpf::programs::TcContext;
use nodewall_common::ct::{self, icmp, Class, Ct, Dir, Write};
use nodewall_common::xdp::{
    flags, GenConfig, ACTION_ALLOW, DROP_CAUSE_EGRESS_DEFAULT, DROP_CAUSE_EGRESS_INVALID, DROP_CAUSE_RULE_BASE,
};

use crate::flow;
use crate::parse::{pkt, Frame, Pkt};
use crate::rules::{self, NO_RULE};
use crate::stats::{bump, NW_RULE_STATS};

/// [`judge`]'s answer for a packet that passes; anything else is a drop cause.
pub const PASS: u32 = u32::MAX;

/// Whether `p` (of frame `f`) may leave under `cfg`, tracking it as it goes: [`PASS`] or the
/// drop cause. A flow the packet opens is only stored if it leaves (or `audit` lets it).
#[inline(always)]
pub fn judge(ctx: &TcContext, f: &Frame, p: &Pkt, cfg: &GenConfig, gen: u32, audit: bool) -> u32 {
    match p.kind {
        // As inbound: frames IP never sees, and fragments that cannot be reassembled without
        // their judged first one.
        pkt::NOT_IP | pkt::LATER_FRAGMENT => return PASS,
        pkt::INVALID => return DROP_CAUSE_EGRESS_INVALID,
        _ => {}
    }
    if p.kind == pkt::ICMP && cfg.flags & flags::NEIGHBOUR_DISCOVERY != 0 && icmp::is_nd(p.is_v6(), p.flags) {
        return PASS;
    }
    // SAFETY: the context's skb pointer is valid for the whole program run.
    let forwarded = unsafe { (*ctx.skb.skb).ingress_ifindex } != 0;
    match ct::classify(p, Dir::Out) {
        Class::Flow(key, kind) => {
            let found = flow::lookup(&key);
            let t = ct::track(found.state(), kind, Dir::Out, flow::now(), &cfg.ct);
            if t.write != Write::Create {
                // Whatever the verdict, as conntrack's state moves before the filter sees it.
                flow::apply(&key, found, t.write, &t.next);
            } else {
                // What the new flow replaces goes at once (see `flow::conntrack`).
                flow::remove(&key, found);
            }
            if t.ct == Ct::Established {
                return PASS;
            }
            let cause = rules(p, cfg, gen, forwarded);
            if t.write == Write::Create && (cause == PASS || audit) {
                flow::create(&key, &t.next);
            }
            cause
        }
        Class::Error => {
            let related = match flow::quoted_key(f, p, Dir::In) {
                Some(k) => ct::error_is_related(flow::lookup(&k).state(), flow::now()),
                None => false,
            };
            if related {
                PASS
            } else {
                rules(p, cfg, gen, forwarded)
            }
        }
        // Not a verdict outbound: a stray reply or a message nothing tracks is judged like a
        // new flow, so nothing leaves to a destination the rules forbid by posing as a reply.
        Class::Untracked | Class::Invalid => rules(p, cfg, gen, forwarded),
    }
}

/// The egress rules, then the default: [`PASS`] or the drop cause; the deciding rule counted.
#[inline(always)]
fn rules(p: &Pkt, cfg: &GenConfig, gen: u32, forwarded: bool) -> u32 {
    let r = rules::first_egress_match(p, cfg, gen, forwarded);
    if r == NO_RULE {
        return if cfg.flags & flags::EGRESS_DENY != 0 {
            DROP_CAUSE_EGRESS_DEFAULT
        } else {
            PASS
        };
    }
    let slot = r & 0xffff;
    bump(&NW_RULE_STATS, slot, p.len);
    if (r >> 16) as u8 == ACTION_ALLOW {
        PASS
    } else {
        DROP_CAUSE_RULE_BASE + slot
    }
}
