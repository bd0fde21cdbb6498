//! Set elements as the kernel stores them. An interval `[a, b]` is two elements: `a`, and `b+1`
//! flagged interval-end; a range reaching the top of the key space has no end element and is
//! marked "open" in the element's userdata (how `nft` prints it as `a-MAX` or a prefix).
//! Diffs work on whole intervals ([`Unit`]s) so a changed CIDR replaces just its own elements.

use std::collections::BTreeSet;

use nftnl::nftnl_sys as sys;

use super::super::plan::{Elem, SetDef, SetKind};
use super::udata::udata_u32;
use super::wrap::Set;

const INTERVAL_END: u32 = libc::NFT_SET_ELEM_INTERVAL_END as u32;
const IFNAMSIZ: usize = 16;

/// One interval (start, exclusive end; `None` = open to the top) or one plain key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Unit {
    pub start: Vec<u8>,
    pub end: Option<Vec<u8>>,
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
    let interval = |s: Vec<u8>, end: Option<Vec<u8>>| Unit { start: s, end };
    match e {
        Elem::V4(s, e) => interval(
            s.to_be_bytes().to_vec(),
            e.checked_add(1).map(|x| x.to_be_bytes().to_vec()),
        ),
        Elem::V6(s, e) => interval(
            s.to_be_bytes().to_vec(),
            e.checked_add(1).map(|x| x.to_be_bytes().to_vec()),
        ),
        Elem::Port(s, e) => interval(
            s.to_be_bytes().to_vec(),
            e.checked_add(1).map(|x| x.to_be_bytes().to_vec()),
        ),
        Elem::IfName(n) => {
            let mut k = n.as_bytes().to_vec();
            k.resize(IFNAMSIZ, 0);
            interval(k, None)
        }
        Elem::Icmp(t) => interval(vec![*t], None),
        Elem::Net4(a) => interval(a.to_be_bytes().to_vec(), None),
        Elem::Net6(a) => interval(a.to_be_bytes().to_vec(), None),
    }
}

/// Rebuilds units from a dump; `None` when the elements do not pair up as we write them (e.g.
/// the table was loaded with `nft -f`, which adds a leading end element): the caller then
/// rewrites the whole set.
pub fn units_from_kernel(interval: bool, elems: &[(Vec<u8>, u32)]) -> Option<BTreeSet<Unit>> {
    if !interval {
        return Some(
            elems
                .iter()
                .map(|(k, _)| Unit {
                    start: k.clone(),
                    end: None,
                })
                .collect(),
        );
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
                Some(k.clone())
            }
            _ => None,
        };
        out.insert(Unit {
            start: key.clone(),
            end,
        });
        i += 1;
    }
    Some(out)
}

/// Puts the kernel elements of `units` into `carrier` (a set used only to build messages).
pub fn fill(carrier: &Set, interval: bool, units: &BTreeSet<Unit>) {
    let open = udata_u32(
        sys::NFTNL_UDATA_SET_ELEM_FLAGS as u8,
        sys::NFTNL_SET_ELEM_F_INTERVAL_OPEN,
    );
    for u in units {
        match (&u.end, interval) {
            (Some(end), _) => {
                carrier.add_elem(&u.start, 0, &[]);
                carrier.add_elem(end, INTERVAL_END, &[]);
            }
            (None, true) => carrier.add_elem(&u.start, 0, &open),
            (None, false) => carrier.add_elem(&u.start, 0, &[]),
        }
    }
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
