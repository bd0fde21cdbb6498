//! Set elements as the kernel stores them. An interval `[a, b]` is two elements: `a`, and `b+1`
//! flagged interval-end; a range reaching the top of the key space has no end element and is
//! marked "open" in the element's userdata (how `nft` prints it as `a-MAX` or a prefix).
//! Diffs work on whole intervals ([`Unit`]s) so a changed CIDR replaces just its own elements.

use std::collections::BTreeSet;

use nftnl::nftnl_sys as sys;

use super::super::plan::{Elem, SetDef, SetKind};
use super::udata::udata_u32;

const INTERVAL_END: u32 = libc::NFT_SET_ELEM_INTERVAL_END as u32;
const IFNAMSIZ: usize = 16;

/// One interval (start, exclusive end; `None` = open to the top) or one plain key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Unit {
    pub start: Key,
    pub end: Option<Key>,
}

/// A set key of at most [`IFNAMSIZ`] bytes, held inline: a large set has tens of thousands,
/// and a heap allocation each was a good part of an apply's userspace time. Keys of one set
/// all have the same length, so comparing the padded bytes orders them as the kernel does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    bytes: [u8; IFNAMSIZ],
    len: u8,
}

impl Key {
    /// `None` for a key longer than any set of ours has.
    pub fn new(key: &[u8]) -> Option<Self> {
        let mut bytes = [0u8; IFNAMSIZ];
        bytes.get_mut(..key.len())?.copy_from_slice(key);
        Some(Self {
            bytes,
            len: key.len() as u8,
        })
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

/// Kernel key type ids, lengths and byte orders, as `nft` declares them (nftables datatype.h).
pub fn key_spec(kind: SetKind) -> (u32, u32, u32) {
    const HOST: u32 = 1;
    const BIG: u32 = 2;
    match kind {
        SetKind::Addr4 | SetKind::Net4 => (7, 4, BIG),
        SetKind::Addr6 | SetKind::Net6 => (8, 16, BIG),
        SetKind::Port => (13, 2, BIG),
        SetKind::IcmpType => (14, 1, BIG),
        SetKind::Icmpv6Type => (29, 1, BIG),
        SetKind::IfName => (41, IFNAMSIZ as u32, HOST),
    }
}

pub fn units(set: &SetDef) -> BTreeSet<Unit> {
    set.elems.iter().map(unit).collect()
}

fn unit(e: &Elem) -> Unit {
    let key = |k: &[u8]| Key::new(k).expect("set keys are at most IFNAMSIZ bytes");
    let interval = |s: &[u8], end: Option<&[u8]>| Unit {
        start: key(s),
        end: end.map(key),
    };
    match e {
        Elem::V4(s, e) => interval(
            &s.to_be_bytes(),
            e.checked_add(1)
                .map(|x| x.to_be_bytes())
                .as_ref()
                .map(|x| &x[..]),
        ),
        Elem::V6(s, e) => interval(
            &s.to_be_bytes(),
            e.checked_add(1)
                .map(|x| x.to_be_bytes())
                .as_ref()
                .map(|x| &x[..]),
        ),
        Elem::Port(s, e) => interval(
            &s.to_be_bytes(),
            e.checked_add(1)
                .map(|x| x.to_be_bytes())
                .as_ref()
                .map(|x| &x[..]),
        ),
        Elem::IfName(n) => {
            let mut k = [0u8; IFNAMSIZ];
            let n = &n.as_bytes()[..n.len().min(IFNAMSIZ)];
            k[..n.len()].copy_from_slice(n);
            interval(&k, None)
        }
        Elem::Icmp(t) => interval(&[*t], None),
        Elem::Net4(a) => interval(&a.to_be_bytes(), None),
        Elem::Net6(a) => interval(&a.to_be_bytes(), None),
    }
}

/// Rebuilds units from a dump; `None` when the elements do not pair up as we write them (e.g.
/// the table was loaded with `nft -f`, which adds a leading end element): the caller then
/// rewrites the whole set.
pub fn units_from_kernel(interval: bool, elems: &[(Vec<u8>, u32)]) -> Option<BTreeSet<Unit>> {
    if !interval {
        return elems
            .iter()
            .map(|(k, _)| {
                Some(Unit {
                    start: Key::new(k)?,
                    end: None,
                })
            })
            .collect();
    }
    let mut sorted: Vec<&(Vec<u8>, u32)> = elems.iter().collect();
    // At equal keys an end element closes the previous interval before a start opens one.
    sorted.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then((b.1 & INTERVAL_END).cmp(&(a.1 & INTERVAL_END)))
    });
    let mut out = BTreeSet::new();
    let mut i = 0;
    while i < sorted.len() {
        let (key, flags) = sorted[i];
        if flags & INTERVAL_END != 0 {
            return None;
        }
        let end = match sorted.get(i + 1) {
            Some((k, f)) if f & INTERVAL_END != 0 => {
                i += 1;
                Some(Key::new(k)?)
            }
            _ => None,
        };
        out.insert(Unit {
            start: Key::new(key)?,
            end,
        });
        i += 1;
    }
    Some(out)
}

/// Kernel elements encoded as netlink attributes, ready to be copied into set element
/// messages (see [`super::batch::Builder::push_elems`]).
///
/// Written here directly rather than through libnftnl element objects: a large policy has
/// tens of thousands of elements, and allocating, filling and then serialising one object per
/// element cost more than the rest of the apply's userspace work together.
#[derive(Default)]
pub struct Encoded {
    /// NFTA_LIST_ELEM attributes, back to back.
    pub bytes: Vec<u8>,
    /// Where each element's attribute ends in `bytes`.
    pub ends: Vec<usize>,
}

const NLA_F_NESTED: u16 = 1 << 15;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFTA_SET_ELEM_USERDATA: u16 = 6;
const NFTA_DATA_VALUE: u16 = 1;

/// Appends attribute `ty` holding `value`, padded to 4 bytes.
pub fn put_attr(out: &mut Vec<u8>, ty: u16, value: &[u8]) {
    out.extend_from_slice(&(4 + value.len() as u16).to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(out.len().next_multiple_of(4), 0);
}

/// Starts nested attribute `ty`; [`end_nest`] writes its length.
pub fn start_nest(out: &mut Vec<u8>, ty: u16) -> usize {
    let at = out.len();
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
    at
}

pub fn end_nest(out: &mut [u8], at: usize) {
    let len = (out.len() - at) as u16;
    out[at..at + 2].copy_from_slice(&len.to_ne_bytes());
}

impl Encoded {
    fn push(&mut self, key: &[u8], flags: u32, userdata: &[u8]) {
        let b = &mut self.bytes;
        let elem = start_nest(b, NFTA_LIST_ELEM);
        if flags != 0 {
            put_attr(b, NFTA_SET_ELEM_FLAGS, &flags.to_be_bytes());
        }
        let k = start_nest(b, NFTA_SET_ELEM_KEY);
        put_attr(b, NFTA_DATA_VALUE, key);
        end_nest(b, k);
        if !userdata.is_empty() {
            put_attr(b, NFTA_SET_ELEM_USERDATA, userdata);
        }
        end_nest(b, elem);
        self.ends.push(b.len());
    }
}

/// The kernel elements of `units`, in order.
pub fn encode(interval: bool, units: &BTreeSet<Unit>) -> Encoded {
    let open = udata_u32(
        sys::NFTNL_UDATA_SET_ELEM_FLAGS as u8,
        sys::NFTNL_SET_ELEM_F_INTERVAL_OPEN,
    );
    let mut out = Encoded {
        bytes: Vec::with_capacity(units.len() * 48),
        ends: Vec::with_capacity(units.len() * 2),
    };
    for u in units {
        match (&u.end, interval) {
            (Some(end), _) => {
                out.push(u.start.as_slice(), 0, &[]);
                out.push(end.as_slice(), INTERVAL_END, &[]);
            }
            (None, true) => out.push(u.start.as_slice(), 0, &open),
            (None, false) => out.push(u.start.as_slice(), 0, &[]),
        }
    }
    out
}

/// Sets of every element layout (interval, hash of prefixes, names, port ranges), for the
/// tests that compare our encoding and parsing with libnftnl's.
#[cfg(test)]
pub(super) fn sample_sets() -> Vec<crate::backend::nft::plan::SetDef> {
    use crate::backend::nft::plan::{Elem, SetDef, SetKind};
    vec![
        SetDef {
            name: "src4.r".into(),
            kind: SetKind::Addr4,
            elems: vec![Elem::V4(10, 20), Elem::V4(30, 30), Elem::V4(40, u32::MAX)],
        },
        SetDef {
            name: "src6p64.r".into(),
            kind: SetKind::Net6,
            elems: vec![Elem::Net6(1 << 64), Elem::Net6(3 << 64)],
        },
        SetDef {
            name: "uplinks".into(),
            kind: SetKind::IfName,
            elems: vec![Elem::IfName("eth0".into()), Elem::IfName("ens5".into())],
        },
        SetDef {
            name: "ports".into(),
            kind: SetKind::Port,
            elems: vec![Elem::Port(22, 22), Elem::Port(30000, 32767)],
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_round_trip_through_kernel_elements() {
        let set = SetDef {
            name: "s".into(),
            kind: SetKind::Addr4,
            elems: vec![Elem::V4(10, 20), Elem::V4(30, 30), Elem::V4(40, u32::MAX)],
        };
        let units = units(&set);
        let kernel = vec![
            (30u32.to_be_bytes().to_vec(), 0),
            (21u32.to_be_bytes().to_vec(), INTERVAL_END),
            (10u32.to_be_bytes().to_vec(), 0),
            (31u32.to_be_bytes().to_vec(), INTERVAL_END),
            (40u32.to_be_bytes().to_vec(), 0),
        ];
        assert_eq!(units_from_kernel(true, &kernel), Some(units));
        // nft's leading zero end element does not parse: the set gets rewritten.
        let nft_style = vec![(0u32.to_be_bytes().to_vec(), INTERVAL_END)];
        assert_eq!(units_from_kernel(true, &nft_style), None);
    }
}
