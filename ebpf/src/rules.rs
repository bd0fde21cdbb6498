//! The policy's rules: which rule, if any, matches a packet by its address (the source of an
//! inbound packet, the destination of an outbound one) and its protocol and destination port. Two lookups whose cost does not grow with the policy: a walk of the flat
//! source tables, one step per address byte until a class (source -> rules containing it; the
//! LPM tries instead when the policy did not fit them), and one array lookup (protocol/port ->
//! rules matching it); the lowest set bit of their intersection is the first matching rule.
//! A policy too large for the flat tables keeps its most numerous prefixes (one length per
//! family, with no longer prefix inside them) in a hash beside them, looked up first.

use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    macros::map,
    maps::{lpm_trie::Key, Array, LpmTrie},
};
use nodewall_common::xdp::*;

use crate::parse::{pkt, Pkt};

#[map]
static NW_SRC4: LpmTrie<Src4Key, u32> = LpmTrie::with_max_entries(SRC_TRIE_ENTRIES, 0);
#[map]
static NW_SRC6: LpmTrie<Src6Key, u32> = LpmTrie::with_max_entries(SRC_TRIE_ENTRIES, 0);
#[map]
static NW_SRC_BUCKETS: Array<SrcBucket> =
    Array::with_max_entries(GENERATIONS * SRC_BUCKETS_PER_GEN, BPF_F_MMAPABLE);
#[map]
pub static NW_SOURCES: Array<SrcTables> = Array::with_max_entries(GENERATIONS, BPF_F_MMAPABLE);
#[map]
pub static NW_PORTS: Array<RuleBits> = Array::with_max_entries(PORT_TABLE_ENTRIES, 0);

/// [`first_match`]'s answer when no rule matches.
pub const NO_RULE: u32 = u32::MAX;

/// The counter slot and action of the first inbound rule of generation `gen` (configured as
/// `cfg`) that matches `p` by its source, as `action << 16 | slot`, or [`NO_RULE`].
#[inline(always)]
pub fn first_match(p: &Pkt, cfg: &GenConfig, gen: u32) -> u32 {
    match candidates(p, &p.src, cfg, gen) {
        // Egress rules sit above `ningress` (see `RuleRef`): an inbound packet whose first
        // common bit is one of theirs matched no inbound rule.
        Some((by_addr, by_l4)) => rule_at(by_addr.first_common(by_l4), cfg.ningress, cfg),
        None => NO_RULE,
    }
}

/// The first egress rule that matches the outbound packet `p` by its destination, among the
/// rules judging its sender (`forwarded`: a pod's, else the node's own), as [`first_match`].
#[inline(always)]
pub fn first_egress_match(p: &Pkt, cfg: &GenConfig, gen: u32, forwarded: bool) -> u32 {
    let Some((by_addr, by_l4)) = candidates(p, &p.dst, cfg, gen) else {
        return NO_RULE;
    };
    let sender = if forwarded { &cfg.egress_pod } else { &cfg.egress_host };
    let mut both = RuleBits::EMPTY;
    for i in 0..RULE_WORDS {
        both.0[i] = by_l4.0[i] & sender.0[i];
    }
    rule_at(by_addr.first_common(&both), cfg.nrules, cfg)
}

/// The rules whose addresses contain `addr` (the packet's source or destination) and those
/// matching its protocol and destination port.
#[inline(always)]
fn candidates<'a>(p: &Pkt, addr: &[u8; 16], cfg: &'a GenConfig, gen: u32) -> Option<(&'a RuleBits, &'a RuleBits)> {
    let gen = gen & 1;
    let by_l4 = match p.kind {
        pkt::TCP => NW_PORTS.get(port_index(gen, PORT_PROTO_TCP, p.dport)),
        pkt::UDP => NW_PORTS.get(port_index(gen, PORT_PROTO_UDP, p.dport)),
        pkt::ICMP if p.family == FAMILY_IPV4 => Some(&cfg.icmp4),
        pkt::ICMP => Some(&cfg.icmp6),
        _ => Some(&cfg.other),
    }?;
    let tables = NW_SOURCES.get(gen)?;
    let class = if cfg.flags & flags::FLAT_SOURCES != 0 {
        match hashed_class(p.family, addr, cfg, gen) {
            Some(class) => Some(class),
            None => flat_class(p.family, addr, tables),
        }
    } else {
        trie_class(p.family, addr, gen)
    }?;
    Some((&tables.classes[(class & (SRC_CLASSES_PER_GEN - 1)) as usize], by_l4))
}

/// The rule at position `pos`, if it is below `limit`, as [`first_match`] answers.
#[inline(always)]
fn rule_at(pos: Option<u32>, limit: u32, cfg: &GenConfig) -> u32 {
    match pos {
        Some(pos) if pos < limit && (pos as usize) < MAX_RULES => {
            let r = cfg.rules[pos as usize];
            (r.action as u32) << 16 | r.slot as u32
        }
        _ => NO_RULE,
    }
}

/// The class (index into [`SrcTables::classes`]) of the rules whose addresses contain `addr`:
/// the longest prefix holds them all, because the agent pushes every rule's bit down into the
/// prefixes its addresses contain. This is the LPM tries' path, for policies whose prefixes
/// do not fit the flat tables.
#[inline(always)]
fn trie_class(family: u32, addr: &[u8; 16], gen: u32) -> Option<u32> {
    // Keys filled byte by byte (see `put_bytes`), not from an array expression, which is a
    // `memset` call of a byte loop in BPF.
    if family == FAMILY_IPV4 {
        let mut k = Key::new(GEN_PREFIX_BITS + 32, [0u8; 5]);
        // SAFETY: `k.data[0]` is a valid, exclusive place.
        unsafe { core::ptr::write_volatile(&mut k.data[0], gen as u8) };
        put_bytes(&mut k.data[1..], &addr[..4]);
        NW_SRC4.get(&k).copied()
    } else {
        let mut k = Key::new(GEN_PREFIX_BITS + 128, [0u8; 17]);
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(&mut k.data[0], gen as u8) };
        put_bytes(&mut k.data[1..], addr);
        NW_SRC6.get(&k).copied()
    }
}

/// The class of `addr`'s prefix in the source hash, if the generation keeps prefixes of its
/// family there and one contains it: those contain no longer prefix, so it is the answer.
#[inline(always)]
fn hashed_class(family: u32, addr: &[u8; 16], cfg: &GenConfig, gen: u32) -> Option<u32> {
    let f = (family & 1) as usize;
    if cfg.hash_len[f] == 0 {
        return None;
    }
    // SAFETY: the addresses start a `Pkt`, which is 8-aligned, at offsets 0 and 16.
    let key = unsafe { *(addr.as_ptr() as *const u64) } & cfg.hash_mask[f];
    let tag = BUCKET_USED | if f == 1 { BUCKET_V6 } else { 0 };
    let base = (gen & 1) * SRC_BUCKETS_PER_GEN;
    let first = NW_SRC_BUCKETS.get(base + bucket_of(key, cfg.hash_seeds[0]))?;
    let class = in_bucket(first, key, tag);
    if class != NO_CLASS || first.spilled == 0 {
        return (class != NO_CLASS).then_some(class);
    }
    let second = NW_SRC_BUCKETS.get(base + bucket_of(key, cfg.hash_seeds[1]))?;
    let class = in_bucket(second, key, tag);
    (class != NO_CLASS).then_some(class)
}

const NO_CLASS: u32 = u32::MAX;

/// The class of the slot of `b` holding `key` with `tag`'s flags, or [`NO_CLASS`]: one exit,
/// so that the verifier checks what follows once, not once per slot.
#[inline(always)]
fn in_bucket(b: &SrcBucket, key: u64, tag: u16) -> u32 {
    let mut class = NO_CLASS;
    for i in 0..SRC_BUCKET_SLOTS {
        if b.keys[i] == key && b.tags[i] & (BUCKET_USED | BUCKET_V6) == tag {
            class = (b.tags[i] & BUCKET_CLASS) as u32;
        }
    }
    class
}

/// Copies byte by byte, each store volatile so LLVM cannot merge them: behind the generation
/// byte the address sits at an odd offset on the stack, and the verifier rejects misaligned
/// stack access (unlike packet access, which the build allows, see ebpf/.cargo/config.toml).
#[inline(always)]
fn put_bytes(dst: &mut [u8], src: &[u8]) {
    for (d, s) in dst.iter_mut().zip(src) {
        // SAFETY: `d` is a valid, exclusive reference.
        unsafe { core::ptr::write_volatile(d, *s) };
    }
}

/// [`trie_class`] from the flat tables: the root by the first two address bytes, then one
/// step per further byte until a class, through a node (one load) or a path-compressed run
/// (a compare and a load, in the run's own cache lines).
#[inline(always)]
fn flat_class(family: u32, addr: &[u8; 16], tables: &SrcTables) -> Option<u32> {
    let bytes = if family == FAMILY_IPV4 { 4 } else { 16 };
    let top = ((addr[0] as usize) << 8) | addr[1] as usize;
    let mut e = tables.roots[(family & 1) as usize][top];
    // Every way out of the walk leads to the one test below: with a return per step, the
    // verifier would check the rest of the program once per step, and loading would take
    // twice as long.
    for i in 2..16 {
        if e & SRC_CHILD == 0 || i >= bytes {
            break;
        }
        // Masked, the indexes are provably inside the value: no bounds check, for LLVM or
        // the verifier.
        e = if e & SRC_SKIP != 0 {
            let run = &tables.skips[(e & (SRC_SKIPS_PER_GEN as u16 - 1)) as usize];
            // Read back through the stack: strength-reduced into an induction variable, the
            // offset of `matched[i]` starts negative and the verifier rejects the sum as
            // unbounded.
            // SAFETY: a read of a local.
            let i = unsafe { core::ptr::read_volatile(&i) } & 15;
            if addr[i] == run.bytes[i] {
                run.matched[i]
            } else {
                run.other[i]
            }
        } else {
            tables.nodes[(e & (SRC_NODES_PER_GEN as u16 - 1)) as usize].0[addr[i] as usize]
        };
    }
    if e & SRC_CHILD == 0 {
        Some(e as u32)
    } else {
        None
    }
}
