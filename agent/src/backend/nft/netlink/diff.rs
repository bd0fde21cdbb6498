//! What must change to turn the current table into the planned one, as one batch.
//!
//! Objects are updated in place: set elements are added/removed interval by interval, rules are
//! deleted and inserted one by one where they differ, and named counters are created once and
//! never replaced, so their values run on for the life of the node. Only when the table holds
//! an object of the same name but an incompatible shape (e.g. left by another version) is the
//! table rebuilt, with every counter's value carried over.
//!
//! An empty diff is also the drift check: the kernel holds the plan exactly when an apply
//! would send nothing.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashSet};

use nftnl::nftnl_sys as sys;

use super::super::names;
use super::super::plan::{ChainDef, Elem, Ruleset, SetDef};
use super::super::script::rule_text;
use super::align;
use super::batch::{Body, Builder};
use super::cache::{print_text, rule_print};
use super::elems::{self, key_spec, set_flags, Unit};
use super::expr::build_rule;
use super::state::{Current, CurrentSet, RulePrints};
use super::udata::{udata_comment, udata_u32};
use super::wrap::{Chain, Obj, Rule, Set, Table};

pub struct Diff {
    pub batch: Builder,
    pub added: usize,
    pub removed: usize,
    /// How many of the messages only replace the base chain's rules, whose comment carries
    /// the generation: see [`unchanged_but_generation`].
    pub base_rule_messages: usize,
    /// Per planned chain, where each of its rules will be once the batch is in: what the
    /// record of the commit is made of (see [`super::cache::Layout`]).
    pub placed: Vec<Vec<Placed>>,
}

/// Where a planned rule is after the batch.
#[derive(Clone, Copy, Debug)]
pub enum Placed {
    /// Kept: the rule with this handle.
    Kept(u64),
    /// Inserted by the message with this sequence number (the kernel echoes its handle).
    Sent(u32),
}

/// The fingerprints of chain `ch`'s planned rules, in the form `have`'s rules carry, with the
/// built rules when building them was needed to print them.
fn want_prints(ch: &ChainDef, have: &Current) -> (Vec<String>, Option<Vec<Rule>>) {
    match have.rule_prints {
        RulePrints::Kernel => {
            let built: Vec<_> = ch.rules.iter().map(|r| build_rule(&ch.name, r)).collect();
            (built.iter().map(|r| r.fingerprint()).collect(), Some(built))
        }
        RulePrints::Plan => (
            ch.rules.iter().map(|r| print_text(rule_print(r))).collect(),
            None,
        ),
    }
}

/// Whether `d`, the diff to the plan of the next generation, changes nothing but the
/// generation, given `now`, the plan of the current one (built only when that question is
/// open): one diff then tells both whether anything has to be sent and what.
pub fn unchanged_but_generation(d: &Diff, now: impl FnOnce() -> Ruleset, cur: &Current) -> bool {
    d.batch.len() == d.base_rule_messages
        && now()
            .chains
            .iter()
            .filter(|c| c.name == names::BASE_CHAIN)
            .all(|c| rules_match(c, cur))
}

/// Whether chain `ch` holds exactly its planned rules.
fn rules_match(ch: &ChainDef, have: &Current) -> bool {
    let cur = have.chains.iter().find(|c| c.name == ch.name);
    cur.is_some_and(|c| {
        c.rules.len() == ch.rules.len()
            && want_prints(ch, have)
                .0
                .iter()
                .zip(&c.rules)
                .all(|(w, k)| *w == k.fingerprint)
    })
}

pub fn diff(rs: &Ruleset, cur: &Current) -> Diff {
    let mut d = Diff {
        batch: Builder::new(),
        added: 0,
        removed: 0,
        base_rule_messages: 0,
        placed: Vec::new(),
    };
    let rebuild = cur.table && !compatible(rs, cur);
    let empty = Current::default();
    let have = if rebuild {
        d.batch.push(
            libc::NFT_MSG_DELTABLE,
            0,
            Body::Table(&Table::ours()),
            "delete table inet nodewall (incompatible objects, rebuilt with counters carried over)"
                .into(),
        );
        &empty
    } else {
        cur
    };
    if have.table && have.table_flags != 0 {
        // `dormant` turns the whole table off; nodewall never sets any flag.
        let t = Table::ours();
        t.set_flags(0);
        d.batch.push(
            libc::NFT_MSG_NEWTABLE,
            0,
            Body::Table(&t),
            format!("clear flags {:#x} of table inet nodewall", have.table_flags),
        );
    }
    if !have.table {
        let t = Table::ours();
        t.set_userdata(&udata_comment(names::TABLE_COMMENT));
        d.batch.push(
            libc::NFT_MSG_NEWTABLE,
            libc::NLM_F_CREATE,
            Body::Table(&t),
            "add table inet nodewall".into(),
        );
    }
    // A map's elements name chains: they are written once the chains exist (below).
    for (id, set) in rs.sets.iter().enumerate() {
        d.new_set(id as u32 + 1, set, have);
        if !set.kind.map() {
            d.set_elements(id as u32 + 1, set, have);
        }
    }
    for c in &rs.counters {
        if have.counters.contains_key(&c.name) {
            continue;
        }
        let o = Obj::counter(&c.name);
        o.set_userdata(&udata_comment(&c.comment));
        if let Some(old) = cur.counters.get(&c.name) {
            o.set_counter_values(old.packets, old.bytes);
        }
        d.batch.push(
            libc::NFT_MSG_NEWOBJ,
            libc::NLM_F_CREATE,
            Body::Obj(&o),
            format!("add counter {}", c.name),
        );
    }
    for ch in &rs.chains {
        match have.chains.iter().find(|c| c.name == ch.name) {
            None => {
                d.batch.push(
                    libc::NFT_MSG_NEWCHAIN,
                    libc::NLM_F_CREATE,
                    Body::Chain(&chain_obj(ch)),
                    format!("add chain {}", ch.name),
                );
            }
            // The base chain's policy is the one property of a chain that can be changed in
            // place (hook and priority are checked by `compatible`).
            Some(c) if ch.hook.is_some() && c.policy != Some(libc::NF_ACCEPT as u32) => {
                d.batch.push(
                    libc::NFT_MSG_NEWCHAIN,
                    0,
                    Body::Chain(&chain_obj(ch)),
                    format!("set policy accept on chain {}", ch.name),
                );
            }
            Some(_) => {}
        }
    }
    for (id, set) in rs.sets.iter().enumerate() {
        if set.kind.map() {
            d.set_elements(id as u32 + 1, set, have);
        }
    }
    for ch in &rs.chains {
        d.rules(ch, have);
    }
    d.remove_leftovers(rs, have);
    d
}

impl Diff {
    /// Creates the set when the table has none of its name (its elements come with
    /// [`Self::set_elements`]).
    fn new_set(&mut self, id: u32, set: &SetDef, have: &Current) {
        if have.sets.contains_key(&set.name) {
            return;
        }
        let (key_type, key_len, byteorder) = key_spec(set.kind);
        let s = Set::ours(&set.name);
        s.set_u32(sys::NFTNL_SET_FLAGS, set_flags(set.kind));
        s.set_u32(sys::NFTNL_SET_KEY_TYPE, key_type);
        s.set_u32(sys::NFTNL_SET_KEY_LEN, key_len);
        if let Some(size) = set.size() {
            s.set_u32(sys::NFTNL_SET_DESC_SIZE, size);
        }
        s.set_u32(sys::NFTNL_SET_ID, id);
        let mut udata = udata_u32(sys::NFTNL_UDATA_SET_KEYBYTEORDER as u8, byteorder);
        if set.kind.map() {
            // As nft declares `: verdict`: the kernel sizes verdict data itself.
            s.set_u32(sys::NFTNL_SET_DATA_TYPE, libc::NFT_DATA_VERDICT);
            s.set_u32(sys::NFTNL_SET_DATA_LEN, 0);
            udata.extend(udata_u32(sys::NFTNL_UDATA_SET_DATABYTEORDER as u8, 0));
            udata.extend(udata_u32(sys::NFTNL_UDATA_SET_DATA_INTERVAL as u8, 0));
        }
        s.set_userdata(&udata);
        let what = if set.kind.map() { "map" } else { "set" };
        self.batch.push(
            libc::NFT_MSG_NEWSET,
            libc::NLM_F_CREATE,
            Body::Set(&s),
            format!("add {what} {}", set.name),
        );
    }

    /// Brings the set's elements to the plan (all of them into a set created by this batch).
    fn set_elements(&mut self, id: u32, set: &SetDef, have: &Current) {
        let cur = have.sets.get(&set.name);
        if cur.is_some_and(|c| c.as_planned) {
            return;
        }
        let interval = set.kind.interval();
        let (gone, new) = match cur.map(|c| (c, &c.recorded)) {
            None => (BTreeSet::new(), elems::units(set)),
            // One element is one kernel element of a given kind: the elements' difference is
            // the kernel's, at a fraction of the cost of encoding both sides.
            Some((_, Some(old))) if old.kind == set.kind => {
                let (gone, new) = difference(&old.elems, &set.elems);
                (
                    elems::units_of(set.kind, gone),
                    elems::units_of(set.kind, new),
                )
            }
            Some((cur, recorded)) => {
                let want = elems::units(set);
                let current = match recorded {
                    Some(old) => Some(elems::units(old)),
                    None => elems::units_from_kernel(interval, &cur.elems),
                };
                let Some(current) = current else {
                    // Elements we did not write: flush the set (DELSETELEM without a list) and
                    // refill it.
                    self.removed += cur.count();
                    self.batch.push(
                        libc::NFT_MSG_DELSETELEM,
                        0,
                        Body::Set(&Set::ours(&set.name)),
                        format!("flush set {}", set.name),
                    );
                    self.elements(libc::NFT_MSG_NEWSETELEM, set, id, interval, &want);
                    return;
                };
                (
                    current.difference(&want).cloned().collect(),
                    want.difference(&current).cloned().collect(),
                )
            }
        };
        // Removals first: a new interval may reuse a key of one that goes.
        self.elements(libc::NFT_MSG_DELSETELEM, set, id, interval, &gone);
        self.elements(libc::NFT_MSG_NEWSETELEM, set, id, interval, &new);
    }

    fn elements(&mut self, ty: i32, set: &SetDef, id: u32, interval: bool, units: &BTreeSet<Unit>) {
        if units.is_empty() {
            return;
        }
        let encoded = elems::encode(interval, units, ty == libc::NFT_MSG_NEWSETELEM);
        let (verb, n) = if ty == libc::NFT_MSG_NEWSETELEM {
            self.added += units.len();
            ("add", units.len())
        } else {
            self.removed += units.len();
            ("remove", units.len())
        };
        self.batch.push_elems(
            ty,
            &set.name,
            id,
            &encoded,
            format!("{verb} {n} element(s) of set {}", set.name),
        );
    }

    /// Brings a chain's rules to the plan: rules the plan does not have are deleted by handle
    /// and missing ones inserted where they belong (see [`align`]), so a rule deleted behind
    /// our back comes back alone and the others keep their handles. The base chain's single
    /// rule changes with every generation and is not counted.
    fn rules(&mut self, ch: &ChainDef, have: &Current) {
        let counted = ch.name != names::BASE_CHAIN;
        let before = self.batch.len();
        self.rules_in(ch, have, counted);
        if !counted {
            self.base_rule_messages += self.batch.len() - before;
        }
    }

    fn rules_in(&mut self, ch: &ChainDef, have: &Current, counted: bool) {
        let (want, built) = want_prints(ch, have);
        let cur = have
            .chains
            .iter()
            .find(|c| c.name == ch.name)
            .map(|c| c.rules.as_slice())
            .unwrap_or_default();
        let cur_prints: Vec<&str> = cur.iter().map(|r| r.fingerprint.as_str()).collect();
        if cur_prints == want {
            self.placed
                .push(cur.iter().map(|r| Placed::Kept(r.handle)).collect());
            return;
        }
        let mut placed = Vec::with_capacity(ch.rules.len());
        let kept = align::keep(&cur_prints, &want);
        let mut kept_cur = kept.iter().map(|&(i, _)| i).peekable();
        for (i, r) in cur.iter().enumerate() {
            if kept_cur.next_if_eq(&i).is_some() {
                continue;
            }
            self.removed += counted as usize;
            let del = super::wrap::Rule::ours(&ch.name);
            del.set_handle(r.handle);
            self.batch.push(
                libc::NFT_MSG_DELRULE,
                0,
                Body::Rule(&del),
                format!("delete rule handle {} of chain {}", r.handle, ch.name),
            );
        }
        // Each missing rule goes right before the next kept one (in order, so a run of them
        // keeps its order), or at the end after the last kept one.
        let mut next_kept = kept.iter().peekable();
        for (j, def) in ch.rules.iter().enumerate() {
            while next_kept.next_if(|&&(_, w)| w < j).is_some() {}
            if let Some(&(i, _)) = next_kept.next_if(|&&(_, w)| w == j) {
                placed.push(Placed::Kept(cur[i].handle));
                continue;
            }
            let fresh;
            let rule = match &built {
                Some(b) => &b[j],
                None => {
                    fresh = build_rule(&ch.name, def);
                    &fresh
                }
            };
            self.added += counted as usize;
            let (flags, place) = match next_kept.peek() {
                Some(&&(i, _)) => {
                    rule.set_position(cur[i].handle);
                    (
                        libc::NLM_F_CREATE,
                        format!("insert rule before handle {} of", cur[i].handle),
                    )
                }
                None => (
                    libc::NLM_F_CREATE | libc::NLM_F_APPEND,
                    "add rule to".to_string(),
                ),
            };
            let seq = self.batch.push(
                libc::NFT_MSG_NEWRULE,
                flags | libc::NLM_F_ECHO,
                Body::Rule(rule),
                format!("{place} chain {}: {}", ch.name, rule_text(def)),
            );
            placed.push(Placed::Sent(seq));
        }
        self.placed.push(placed);
    }

    fn flush_chain(&mut self, chain: &str, rules: usize) {
        if rules == 0 {
            return;
        }
        self.removed += rules;
        self.batch.push(
            libc::NFT_MSG_DELRULE,
            0,
            Body::Rule(&super::wrap::Rule::ours(chain)),
            format!("flush chain {chain}"),
        );
    }

    fn delete_set(&mut self, name: &str, elems: usize, map: bool) {
        self.removed += elems;
        let what = if map { "map" } else { "set" };
        self.batch.push(
            libc::NFT_MSG_DELSET,
            0,
            Body::Set(&Set::ours(name)),
            format!("delete {what} {name}"),
        );
    }

    /// Objects of ours the plan no longer has, once nothing refers to them any more: maps
    /// before the chains their elements name (the kernel refuses to delete a chain still
    /// referred to), sets once no rule looks them up.
    fn remove_leftovers(&mut self, rs: &Ruleset, have: &Current) {
        let sets: HashSet<&str> = rs.sets.iter().map(|s| s.name.as_str()).collect();
        let gone_sets: Vec<_> = have
            .sets
            .iter()
            .filter(|(name, _)| !sets.contains(name.as_str()))
            .collect();
        let is_map = |s: &CurrentSet| s.flags & libc::NFT_SET_MAP as u32 != 0;
        for (name, s) in gone_sets.iter().filter(|(_, s)| is_map(s)) {
            self.delete_set(name, s.count(), true);
        }
        let chains: HashSet<&str> = rs.chains.iter().map(|c| c.name.as_str()).collect();
        let gone: Vec<_> = have
            .chains
            .iter()
            .filter(|c| !chains.contains(c.name.as_str()))
            .collect();
        for c in &gone {
            self.flush_chain(&c.name, c.rules.len());
        }
        for c in &gone {
            self.batch.push(
                libc::NFT_MSG_DELCHAIN,
                0,
                Body::Chain(&Chain::ours(&c.name)),
                format!("delete chain {}", c.name),
            );
        }
        let counters: HashSet<&str> = rs.counters.iter().map(|c| c.name.as_str()).collect();
        for name in have.counters.keys() {
            if !counters.contains(name.as_str()) {
                self.batch.push(
                    libc::NFT_MSG_DELOBJ,
                    0,
                    Body::Obj(&Obj::counter(name)),
                    format!("delete counter {name}"),
                );
            }
        }
        for (name, s) in gone_sets.iter().filter(|(_, s)| !is_map(s)) {
            self.delete_set(name, s.count(), false);
        }
    }
}

/// The elements only in `old` and those only in `new`, in order, by one merge of the two
/// sorted. A plan lists a set's elements in order already (as does a record of one), which
/// makes the sorts a linear check and spares the two `BTreeSet`s this took before.
fn difference<'a>(old: &'a [Elem], new: &'a [Elem]) -> (Vec<&'a Elem>, Vec<&'a Elem>) {
    let sorted = |elems: &'a [Elem]| {
        let mut v: Vec<&Elem> = elems.iter().collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let (old, new) = (sorted(old), sorted(new));
    let (mut gone, mut added) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < old.len() && j < new.len() {
        match old[i].cmp(new[j]) {
            Ordering::Less => {
                gone.push(old[i]);
                i += 1;
            }
            Ordering::Greater => {
                added.push(new[j]);
                j += 1;
            }
            Ordering::Equal => {
                i += 1;
                j += 1;
            }
        }
    }
    gone.extend_from_slice(&old[i..]);
    added.extend_from_slice(&new[j..]);
    (gone, added)
}

fn chain_obj(ch: &ChainDef) -> Chain {
    let c = Chain::ours(&ch.name);
    if let Some(hook) = ch.hook {
        let (num, prio) = hook.kernel();
        c.set_hook(num, prio);
    }
    c
}

/// False when an object we want exists with another shape (key type, interval flag, declared
/// size, hook): those cannot be changed in place.
pub fn compatible(rs: &Ruleset, cur: &Current) -> bool {
    let sets_ok = rs.sets.iter().all(|s| match cur.sets.get(&s.name) {
        None => true,
        Some(c) => {
            let (key_type, key_len, _) = key_spec(s.kind);
            let shape = libc::NFT_SET_INTERVAL as u32 | libc::NFT_SET_MAP as u32;
            c.key_type == key_type
                && c.key_len == key_len
                && c.flags & shape == set_flags(s.kind)
                && c.size == s.size().unwrap_or(0)
        }
    });
    let chains_ok =
        rs.chains
            .iter()
            .all(|ch| match cur.chains.iter().find(|c| c.name == ch.name) {
                None => true,
                Some(c) => c.hook == ch.hook.map(|h| h.kernel()),
            });
    sets_ok && chains_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The merge gives the sets' differences for lists in any order and with repeats, not
    /// only for the sorted lists a plan makes.
    #[test]
    fn difference_is_the_sets_difference() {
        let mut seed = 7u64;
        let mut list = |n: usize| -> Vec<Elem> {
            (0..n)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let v = (seed >> 40) as u32 % 64;
                    match seed % 3 {
                        0 => Elem::Net4(v),
                        1 => Elem::V4(v, v + 3),
                        _ => Elem::Net6(v as u128),
                    }
                })
                .collect()
        };
        for n in [0, 1, 5, 40, 200] {
            for m in [0, 1, 7, 60, 300] {
                let (old, new) = (list(n), list(m));
                let (a, b): (BTreeSet<&Elem>, BTreeSet<&Elem>) =
                    (old.iter().collect(), new.iter().collect());
                let (gone, added) = difference(&old, &new);
                assert_eq!(
                    gone,
                    a.difference(&b).copied().collect::<Vec<_>>(),
                    "{n} {m}"
                );
                assert_eq!(
                    added,
                    b.difference(&a).copied().collect::<Vec<_>>(),
                    "{n} {m}"
                );
            }
        }
    }
}
