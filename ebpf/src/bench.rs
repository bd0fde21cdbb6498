//! The benchmark's reference programs (`cargo xtask bench` section 1 and the agent's
//! `xdp_bench` test), built into the same object as the classifier so that they share its
//! parse, maps and compiler: a bare `XDP_PASS`, the parse alone, the array-lookup floor and
//! the stateful floor. Only benchmarks load them, by name: `nodewall_common::xdp` names the
//! two the agent's test loads, xtask's `bench/classifier.rs` the floors.

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    macros::xdp,
    programs::XdpContext,
};
use nodewall_common::ct::{self, Class, Dir};
use nodewall_common::xdp::{port_index, PORT_PROTO_UDP, SRC_CLASSES_PER_GEN};

use crate::parse::{parse_ip, parse_pkt, Frame, Parsed, Pkt};
use crate::stats::{bump, NW_PASS_STATS};
use crate::{flow, rules, NW_SWITCH};

/// The baseline of the benchmark in the agent's tests: the cost of an XDP program that does
/// nothing, against which the classifier's cost per packet is measured.
#[xdp]
pub fn nodewall_bench_pass(_ctx: XdpContext) -> u32 {
    XDP_PASS
}

/// The second baseline of the benchmark: parses the Ethernet, IP and L4 headers exactly as
/// `nodewall_xdp` does and passes, so that the classifier's cost splits into parsing and
/// classifying.
#[xdp]
pub fn nodewall_bench_parse(ctx: XdpContext) -> u32 {
    let f = Frame::whole(ctx.data(), ctx.data_end());
    match parse_ip(&f) {
        Parsed::Ip(ip) if ip.l4(&f).is_some() => XDP_PASS,
        Parsed::NotIp | Parsed::LaterFragment => XDP_PASS,
        _ => XDP_DROP,
    }
}

/// The floor of the classifier benchmark (issue 17): what any classifier of this design pays
/// for a packet with no state to consult: the same parse, one direct array load by the source
/// (its root entry in the flat tables) and one by the destination port, and a counter.
#[xdp]
pub fn nodewall_bench_floor(ctx: XdpContext) -> u32 {
    let p = parse_pkt(&Frame::whole(ctx.data(), ctx.data_end()));
    floor(&p, false)
}

/// The stateful floor: [`nodewall_bench_floor`] plus one lookup of the packet's flow key
/// (built by `ct::classify(p, Dir::In)`, as `flow::conntrack` builds it) in `NW_FLOWS`, the
/// classifier's LRU hash of assured flows; a hit passes. What the cheapest stateful
/// classifier of this design pays: it cannot know whether a packet belongs to a flow without
/// hashing its key once.
///
/// What the lookup finds: the benchmark loads this program from the object on its own, so
/// its `NW_FLOWS` is a table of its own, empty, and every lookup misses. That is the state
/// the classifier's `NW_FLOWS` is in on the same frames: the benchmark's UDP flows are opened
/// by the client alone, are never assured and so stay in `NW_FLOWS_NEW`. The classifier, too,
/// hashes one table: its port marks say no assured flow has the port, so it looks only in
/// `NW_FLOWS_NEW` (a hit for the allowed packet once the first run has opened its flow, a
/// miss for the dropped one). A miss on an empty bucket is the cheapest outcome of a hash
/// lookup (no key to compare), so this stays a floor.
#[xdp]
pub fn nodewall_bench_floor_ct(ctx: XdpContext) -> u32 {
    let p = parse_pkt(&Frame::whole(ctx.data(), ctx.data_end()));
    let tracked = match ct::classify(&p, Dir::In) {
        Class::Flow(key, _) => flow::NW_FLOWS.get_ptr(&key).is_some(),
        _ => false,
    };
    floor(&p, tracked)
}

/// The floor's classification of `p`: the two array loads and the counter; passes when
/// `tracked` (the stateful floor's lookup found the flow) or the two loads share a rule.
#[inline(always)]
fn floor(p: &Pkt, tracked: bool) -> u32 {
    let Some(sw) = NW_SWITCH.get(0) else {
        return XDP_PASS;
    };
    let gen = sw.active & 1;
    let (Some(tables), Some(by_port)) = (
        rules::NW_SOURCES.get(gen),
        rules::NW_PORTS.get(port_index(gen, PORT_PROTO_UDP, p.dport)),
    ) else {
        return XDP_PASS;
    };
    let top = ((p.src[0] as usize) << 8) | p.src[1] as usize;
    let class = tables.roots[(p.family & 1) as usize][top];
    let by_src = &tables.classes[(class as u32 & (SRC_CLASSES_PER_GEN - 1)) as usize];
    bump(&NW_PASS_STATS, 0, p.len);
    if tracked {
        return XDP_PASS;
    }
    match by_src.first_common(by_port) {
        Some(_) => XDP_PASS,
        None => XDP_DROP,
    }
}
