//! What table `inet nodewall` holds right now, read back through netlink dumps.

use std::collections::BTreeMap;

use anyhow::Context;
use nftnl::nftnl_sys as sys;

use super::super::plan::SetDef;
use super::elems::{Data, KernelElem};
use super::socket::{attrs, Interrupted, Socket};
use super::wrap::{Chain, Obj, Rule, Set, Table};
use crate::backend::nft::names::TABLE;

#[derive(Debug, Default)]
pub struct Current {
    pub table: bool,
    /// Table flags: `dormant` switches every chain of the table off.
    pub table_flags: u32,
    pub sets: BTreeMap<String, CurrentSet>,
    pub counters: BTreeMap<String, CurrentCounter>,
    /// In the kernel's order.
    pub chains: Vec<CurrentChain>,
    /// What the rules' fingerprints are.
    pub rule_prints: RulePrints,
}

/// Where the table's rule fingerprints come from, hence what the plan's rules are compared
/// with.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum RulePrints {
    /// Dumped: the kernel's expressions as libnftnl prints them.
    #[default]
    Kernel,
    /// From the record of our own last commit: [`super::cache::rule_print`]s of the planned
    /// rules that are installed.
    Plan,
}

#[derive(Debug)]
pub struct CurrentSet {
    pub key_type: u32,
    pub key_len: u32,
    pub flags: u32,
    /// The declared size (the most it holds), 0 for none.
    pub size: u32,
    /// (key, element flags, a map element's verdict) in the kernel's order.
    pub elems: Vec<KernelElem>,
    /// The elements were not dumped because the apply cache vouches that the set holds
    /// exactly what the plan being applied wants (see [`super::cache`]).
    pub as_planned: bool,
    /// The elements, from the file beside the record instead of a dump (see
    /// [`super::recorded`]); `elems` is then empty.
    pub recorded: Option<SetDef>,
}

impl CurrentSet {
    /// How many elements the set holds, dumped or recorded.
    pub fn count(&self) -> usize {
        self.recorded
            .as_ref()
            .map_or(self.elems.len(), |s| s.elems.len())
    }
}

#[derive(Debug)]
pub struct CurrentCounter {
    pub comment: Option<String>,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug)]
pub struct CurrentChain {
    pub name: String,
    pub hook: Option<(u32, i32)>,
    pub policy: Option<u32>,
    pub rules: Vec<CurrentRule>,
}

#[derive(Debug)]
pub struct CurrentRule {
    pub handle: u64,
    pub fingerprint: String,
    pub comment: Option<String>,
}

/// Reads the table, retrying when a concurrent change interrupts a dump. Elements are read only
/// for the sets `elements_of` selects (they can be many).
pub fn read(sock: &mut Socket, elements_of: &dyn Fn(&str) -> bool) -> anyhow::Result<Current> {
    let mut last = None;
    for _ in 0..5 {
        match read_once(sock, elements_of) {
            Ok(c) => return Ok(c),
            Err(e) if e.is::<Interrupted>() => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap()).context("reading table inet nodewall")
}

fn read_once(sock: &mut Socket, elements_of: &dyn Fn(&str) -> bool) -> anyhow::Result<Current> {
    let mut cur = Current::default();
    sock.dump(
        libc::NFT_MSG_GETTABLE,
        |_| {},
        |nlh| {
            let t = Table::alloc();
            // SAFETY: nlh is a complete message from the kernel.
            if unsafe { sys::nftnl_table_nlmsg_parse(nlh, t.ptr()) } >= 0 && t.name() == TABLE {
                cur.table = true;
                cur.table_flags = t.flags();
            }
        },
    )
    .context("listing nftables tables")?;
    if !cur.table {
        return Ok(cur);
    }

    let mut sets = Vec::new();
    sock.dump(
        libc::NFT_MSG_GETSET,
        // SAFETY: a set with only its table set builds the table filter.
        |nlh| unsafe { sys::nftnl_set_nlmsg_build_payload(nlh, Set::ours("").ptr()) },
        |nlh| {
            let s = Set::alloc();
            // SAFETY: as above.
            if unsafe { sys::nftnl_set_nlmsg_parse(nlh, s.ptr()) } >= 0 {
                sets.push(s);
            }
        },
    )
    .context("listing the sets of table inet nodewall")?;
    for s in sets {
        let name = s.name();
        let elems = if elements_of(&name) {
            read_elems(sock, &name)?
        } else {
            Vec::new()
        };
        cur.sets.insert(
            name,
            CurrentSet {
                key_type: s.get_u32(sys::NFTNL_SET_KEY_TYPE),
                key_len: s.get_u32(sys::NFTNL_SET_KEY_LEN),
                flags: s.get_u32(sys::NFTNL_SET_FLAGS),
                size: s.get_u32(sys::NFTNL_SET_DESC_SIZE),
                elems,
                as_planned: false,
                recorded: None,
            },
        );
    }

    let filter = Obj::counter("");
    sock.dump(
        libc::NFT_MSG_GETOBJ,
        // SAFETY: builds the table/type filter into the request.
        |nlh| unsafe { sys::nftnl_obj_nlmsg_build_payload(nlh, filter.ptr()) },
        |nlh| {
            let o = Obj::alloc();
            // SAFETY: as above.
            if unsafe { sys::nftnl_obj_nlmsg_parse(nlh, o.ptr()) } >= 0
                && o.obj_type() == super::wrap::NFT_OBJECT_COUNTER
            {
                let (packets, bytes) = o.counter_values();
                cur.counters.insert(
                    o.name(),
                    CurrentCounter {
                        comment: o.comment(),
                        packets,
                        bytes,
                    },
                );
            }
        },
    )
    .context("listing the counters of table inet nodewall")?;

    sock.dump(
        libc::NFT_MSG_GETCHAIN,
        // SAFETY: a chain with only its table set builds the table filter.
        |nlh| unsafe { sys::nftnl_chain_nlmsg_build_payload(nlh, Chain::ours("").ptr()) },
        |nlh| {
            let c = Chain::alloc();
            // SAFETY: as above.
            if unsafe { sys::nftnl_chain_nlmsg_parse(nlh, c.ptr()) } >= 0 && c.table() == TABLE {
                cur.chains.push(CurrentChain {
                    name: c.name(),
                    hook: c.hook(),
                    policy: c.policy(),
                    rules: Vec::new(),
                });
            }
        },
    )
    .context("listing the chains of table inet nodewall")?;

    let mut rules: Vec<(String, CurrentRule)> = Vec::new();
    sock.dump(
        libc::NFT_MSG_GETRULE,
        // SAFETY: a rule with only its table set builds the table filter.
        |nlh| unsafe { sys::nftnl_rule_nlmsg_build_payload(nlh, Rule::ours("").ptr()) },
        |nlh| {
            let r = Rule::alloc();
            // SAFETY: as above.
            if unsafe { sys::nftnl_rule_nlmsg_parse(nlh, r.ptr()) } >= 0 {
                rules.push((
                    r.chain(),
                    CurrentRule {
                        handle: r.handle(),
                        fingerprint: r.fingerprint(),
                        comment: r.comment(),
                    },
                ));
            }
        },
    )
    .context("listing the rules of table inet nodewall")?;
    for (chain, rule) in rules {
        if let Some(c) = cur.chains.iter_mut().find(|c| c.name == chain) {
            c.rules.push(rule);
        }
    }
    Ok(cur)
}

pub fn read_elems(sock: &mut Socket, set: &str) -> anyhow::Result<Vec<KernelElem>> {
    let filter = Set::ours(set);
    let mut out = Vec::new();
    sock.dump(
        libc::NFT_MSG_GETSETELEM,
        // SAFETY: an element-less set builds the table and set name filter.
        |nlh| unsafe { sys::nftnl_set_elems_nlmsg_build_payload(nlh, filter.ptr()) },
        |nlh| elems_of(nlh, &mut out),
    )
    .with_context(|| format!("listing the elements of set {set}"))?;
    Ok(out)
}

/// Appends the (key, flags, verdict) of the elements in a NEWSETELEM dump reply to `out`: the
/// verdict too, or a map element changed to `accept` behind our back would look intact.
///
/// Read straight from the attributes rather than through libnftnl, which allocates an object
/// per element: a set can hold tens of thousands, and the daemon's drift check reads them all.
fn elems_of(nlh: *const libc::nlmsghdr, out: &mut Vec<KernelElem>) {
    const HDR: usize = std::mem::size_of::<libc::nlmsghdr>();
    const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
    const NFTA_SET_ELEM_KEY: u16 = 1;
    const NFTA_SET_ELEM_DATA: u16 = 2;
    const NFTA_SET_ELEM_FLAGS: u16 = 3;
    const NFTA_DATA_VALUE: u16 = 1;
    // SAFETY: the socket hands out headers whose nlmsg_len bytes lie in its buffer.
    let msg = unsafe { std::slice::from_raw_parts(nlh as *const u8, (*nlh).nlmsg_len as usize) };
    let Some(body) = msg.get(HDR + 4..) else {
        return;
    };
    for (_, list) in attrs(body).filter(|(t, _)| *t == NFTA_SET_ELEM_LIST_ELEMENTS) {
        for (_, elem) in attrs(list) {
            let (mut key, mut flags, mut data) = (None, 0, None);
            for (t, v) in attrs(elem) {
                match t {
                    NFTA_SET_ELEM_KEY => {
                        key = attrs(v)
                            .find(|(t, _)| *t == NFTA_DATA_VALUE)
                            .map(|(_, k)| k.to_vec())
                    }
                    NFTA_SET_ELEM_FLAGS if v.len() >= 4 => {
                        flags = u32::from_be_bytes(v[..4].try_into().unwrap())
                    }
                    NFTA_SET_ELEM_DATA => data = Data::parse(v),
                    _ => {}
                }
            }
            out.push((key.unwrap_or_default(), flags, data));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::elems::{encode, end_nest, put_attr, start_nest, units};
    use super::*;
    use crate::backend::nft::plan::SetDef;

    /// A NEWSETELEM message (what a dump replies) holding `set`'s kernel elements.
    fn reply(set: &SetDef) -> Vec<u64> {
        let mut m = vec![0u8; std::mem::size_of::<libc::nlmsghdr>() + 4];
        put_attr(&mut m, 1, b"nodewall\0");
        put_attr(&mut m, 2, format!("{}\0", set.name).as_bytes());
        let nest = start_nest(&mut m, 3);
        m.extend(encode(set.kind.interval(), &units(set), true).bytes);
        end_nest(&mut m, nest);
        let len = m.len() as u32;
        m[..4].copy_from_slice(&len.to_ne_bytes());
        let ty = ((libc::NFNL_SUBSYS_NFTABLES << 8) | libc::NFT_MSG_NEWSETELEM) as u16;
        m[4..6].copy_from_slice(&ty.to_ne_bytes());
        m[16] = libc::NFPROTO_INET as u8;
        // Aligned for nlmsghdr, as the socket's receive buffer is.
        let mut out = vec![0u64; m.len().div_ceil(8)];
        // SAFETY: `out` has room for every byte of `m`.
        unsafe { std::ptr::copy_nonoverlapping(m.as_ptr(), out.as_mut_ptr() as *mut u8, m.len()) };
        out
    }

    #[test]
    fn elements_are_read_as_libnftnl_reads_them() {
        // The interval set, the hash set and the verdict map of the shared samples: one of
        // each element layout.
        let samples = super::super::elems::sample_sets();
        let map = samples.iter().find(|s| s.kind.map()).cloned();
        for set in samples.into_iter().take(2).chain(map) {
            let msg = reply(&set);
            let nlh = msg.as_ptr() as *const libc::nlmsghdr;
            let mut ours = Vec::new();
            elems_of(nlh, &mut ours);
            let holder = Set::alloc();
            // SAFETY: a complete NEWSETELEM message.
            let r = unsafe { sys::nftnl_set_elems_nlmsg_parse(nlh, holder.ptr()) };
            assert!(r >= 0, "libnftnl refused the message");
            assert_eq!(ours, holder.elems(), "{}", set.name);
            assert!(!ours.is_empty());
        }
    }
}
