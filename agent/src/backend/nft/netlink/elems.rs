//! Set elements as the kernel stores them. An interval `[a, b]` is two elements: `a`, and `b+1`
//! flagged interval-end; a range reaching the top of the key space has no end element and is
//! marked "open" in the element's userdata (how `nft` prints it as `a-MAX` or a prefix).
//! Diffs work on whole intervals ([`Unit`]s) so a changed CIDR replaces just its own elements.
//! An element of a verdict map also carries its verdict ([`Data`]): a unit whose verdict was
//! changed behind our back differs from the planned one, and is replaced.

use std::collections::BTreeSet;

use nftnl::nftnl_sys as sys;

use super::super::plan::{Elem, SetDef, SetKind, Verdict};
use super::udata::udata_u32;

const INTERVAL_END: u32 = libc::NFT_SET_ELEM_INTERVAL_END as u32;
const IFNAMSIZ: usize = 16;

/// One interval (start, exclusive end; `None` = open to the top) or one plain key, with its
/// verdict in a map.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Unit {
    pub start: Key,
    pub end: Option<Key>,
    pub data: Option<Data>,
}

/// A map element's verdict as the kernel holds it (NFTA_DATA_VERDICT): a verdict code
/// (NF_ACCEPT, NF_DROP, NFT_GOTO, ...) and the chain of a goto or jump.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Data {
    pub code: i32,
    pub chain: Option<String>,
}

impl Data {
    pub fn of(v: &Verdict) -> Self {
        let (code, chain) = match v {
            Verdict::Accept => (libc::NF_ACCEPT, None),
            Verdict::Drop => (libc::NF_DROP, None),
            Verdict::Goto(c) => (libc::NFT_GOTO, Some(c.clone())),
            Verdict::Jump(c) => (libc::NFT_JUMP, Some(c.clone())),
        };
        Self { code, chain }
    }

    /// NFTA_DATA_VERDICT's attributes, as libnftnl writes them.
    fn encode(&self, out: &mut Vec<u8>) {
        const NFTA_DATA_VERDICT: u16 = 2;
        const NFTA_VERDICT_CODE: u16 = 1;
        const NFTA_VERDICT_CHAIN: u16 = 2;
        let v = start_nest(out, NFTA_DATA_VERDICT);
        put_attr(out, NFTA_VERDICT_CODE, &self.code.to_be_bytes());
        if let Some(chain) = &self.chain {
            let mut name = chain.as_bytes().to_vec();
            name.push(0);
            put_attr(out, NFTA_VERDICT_CHAIN, &name);
        }
        end_nest(out, v);
    }

    /// Reads NFTA_SET_ELEM_DATA's attributes; `None` for data that is not a verdict.
    pub fn parse(data: &[u8]) -> Option<Self> {
        use super::socket::attrs;
        let (_, verdict) = attrs(data).find(|(t, _)| *t == 2)?;
        let mut out = Data {
            code: 0,
            chain: None,
        };
        for (t, v) in attrs(verdict) {
            match t {
                1 if v.len() >= 4 => out.code = i32::from_be_bytes(v[..4].try_into().ok()?),
                2 => {
                    let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
                    out.chain = Some(String::from_utf8_lossy(&v[..end]).into_owned());
                }
                _ => {}
            }
        }
        Some(out)
    }
}

/// An element as a dump reports it: key, flags (e.g. interval end), and a map element's
/// verdict.
pub type KernelElem = (Vec<u8>, u32, Option<Data>);

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
        SetKind::Port | SetKind::PortVerdict | SetKind::PortVerdictExact => (13, 2, BIG),
        SetKind::IcmpType => (14, 1, BIG),
        SetKind::Icmpv6Type => (29, 1, BIG),
        SetKind::IfName => (41, IFNAMSIZ as u32, HOST),
    }
}

/// The set flags of a set of `kind` (interval, map).
pub fn set_flags(kind: SetKind) -> u32 {
    let interval = if kind.interval() {
        libc::NFT_SET_INTERVAL as u32
    } else {
        0
    };
    let map = if kind.map() {
        libc::NFT_SET_MAP as u32
    } else {
        0
    };
    interval | map
}

pub fn units(set: &SetDef) -> BTreeSet<Unit> {
    units_of(set.kind, &set.elems)
}

/// The kernel elements of some elements of a set of `kind`.
pub fn units_of<'a>(kind: SetKind, elems: impl IntoIterator<Item = &'a Elem>) -> BTreeSet<Unit> {
    let interval = kind.interval();
    elems
        .into_iter()
        .map(|e| {
            let u = unit(e);
            if interval {
                u
            } else {
                Unit { end: None, ..u }
            }
        })
        .collect()
}

fn unit(e: &Elem) -> Unit {
    let key = |k: &[u8]| Key::new(k).expect("set keys are at most IFNAMSIZ bytes");
    let interval = |s: &[u8], end: Option<&[u8]>| Unit {
        start: key(s),
        end: end.map(key),
        data: None,
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
        Elem::PortVerdict(s, e, v) => Unit {
            data: Some(Data::of(v)),
            ..unit(&Elem::Port(*s, *e))
        },
    }
}

/// Rebuilds units from a dump; `None` when the elements do not pair up as we write them (e.g.
/// the table was loaded with `nft -f`, which adds a leading end element): the caller then
/// rewrites the whole set.
pub fn units_from_kernel(interval: bool, elems: &[KernelElem]) -> Option<BTreeSet<Unit>> {
    if !interval {
        return elems
            .iter()
            .map(|(k, _, data)| {
                Some(Unit {
                    start: Key::new(k)?,
                    end: None,
                    data: data.clone(),
                })
            })
            .collect();
    }
    let mut sorted: Vec<&KernelElem> = elems.iter().collect();
    // At equal keys an end element closes the previous interval before a start opens one.
    sorted.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then((b.1 & INTERVAL_END).cmp(&(a.1 & INTERVAL_END)))
    });
    let mut out = BTreeSet::new();
    let mut i = 0;
    while i < sorted.len() {
        let (key, flags, data) = sorted[i];
        if flags & INTERVAL_END != 0 {
            return None;
        }
        let end = match sorted.get(i + 1) {
            Some((k, f, _)) if f & INTERVAL_END != 0 => {
                i += 1;
                Some(Key::new(k)?)
            }
            _ => None,
        };
        out.insert(Unit {
            start: Key::new(key)?,
            end,
            data: data.clone(),
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
const NFTA_SET_ELEM_DATA: u16 = 2;
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
    fn push(&mut self, key: &[u8], flags: u32, data: Option<&Data>, userdata: &[u8]) {
        let b = &mut self.bytes;
        let elem = start_nest(b, NFTA_LIST_ELEM);
        if flags != 0 {
            put_attr(b, NFTA_SET_ELEM_FLAGS, &flags.to_be_bytes());
        }
        let k = start_nest(b, NFTA_SET_ELEM_KEY);
        put_attr(b, NFTA_DATA_VALUE, key);
        end_nest(b, k);
        if let Some(data) = data {
            let d = start_nest(b, NFTA_SET_ELEM_DATA);
            data.encode(b);
            end_nest(b, d);
        }
        if !userdata.is_empty() {
            put_attr(b, NFTA_SET_ELEM_USERDATA, userdata);
        }
        end_nest(b, elem);
        self.ends.push(b.len());
    }
}

/// The kernel elements of `units`, in order; a map's verdicts only `with_data` (elements are
/// deleted by key alone).
pub fn encode(interval: bool, units: &BTreeSet<Unit>, with_data: bool) -> Encoded {
    let open = udata_u32(
        sys::NFTNL_UDATA_SET_ELEM_FLAGS as u8,
        sys::NFTNL_SET_ELEM_F_INTERVAL_OPEN,
    );
    let mut out = Encoded {
        bytes: Vec::with_capacity(units.len() * 48),
        ends: Vec::with_capacity(units.len() * 2),
    };
    for u in units {
        let data = u.data.as_ref().filter(|_| with_data);
        match (&u.end, interval) {
            (Some(end), _) => {
                out.push(u.start.as_slice(), 0, data, &[]);
                out.push(end.as_slice(), INTERVAL_END, None, &[]);
            }
            (None, true) => out.push(u.start.as_slice(), 0, data, &open),
            (None, false) => out.push(u.start.as_slice(), 0, data, &[]),
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
        SetDef {
            name: "inbound.udp".into(),
            kind: SetKind::PortVerdict,
            elems: vec![
                Elem::PortVerdict(0, 79, Verdict::Goto("drop.default-deny".into())),
                Elem::PortVerdict(80, 80, Verdict::Goto("inbound.udp.80".into())),
                Elem::PortVerdict(81, 81, Verdict::Accept),
                Elem::PortVerdict(82, u16::MAX, Verdict::Goto("drop.default-deny".into())),
            ],
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
            (30u32.to_be_bytes().to_vec(), 0, None),
            (21u32.to_be_bytes().to_vec(), INTERVAL_END, None),
            (10u32.to_be_bytes().to_vec(), 0, None),
            (31u32.to_be_bytes().to_vec(), INTERVAL_END, None),
            (40u32.to_be_bytes().to_vec(), 0, None),
        ];
        assert_eq!(units_from_kernel(true, &kernel), Some(units));
        // nft's leading zero end element does not parse: the set gets rewritten.
        let nft_style = vec![(0u32.to_be_bytes().to_vec(), INTERVAL_END, None)];
        assert_eq!(units_from_kernel(true, &nft_style), None);
    }

    #[test]
    fn map_verdicts_round_trip_and_a_changed_one_differs() {
        let goto = |c: &str| Some(Data::of(&Verdict::Goto(c.into())));
        let port = |p: u16| p.to_be_bytes().to_vec();
        // Adjacent intervals: an end and a start element share a key.
        let kernel = vec![
            (port(0), 0, goto("a")),
            (port(80), INTERVAL_END, None),
            (port(80), 0, goto("b")),
            (port(81), INTERVAL_END, None),
            (port(81), 0, goto("a")),
        ];
        let set = SetDef {
            name: "m".into(),
            kind: SetKind::PortVerdict,
            elems: vec![
                Elem::PortVerdict(0, 79, Verdict::Goto("a".into())),
                Elem::PortVerdict(80, 80, Verdict::Goto("b".into())),
                Elem::PortVerdict(81, u16::MAX, Verdict::Goto("a".into())),
            ],
        };
        assert_eq!(units_from_kernel(true, &kernel), Some(units(&set)));
        let mut tampered = kernel.clone();
        tampered[2].2 = Some(Data::of(&Verdict::Accept));
        let tampered = units_from_kernel(true, &tampered).unwrap();
        let want = units(&set);
        let gone: Vec<_> = tampered.difference(&want).collect();
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].start.as_slice(), port(80));
        assert_eq!(gone[0].data, Some(Data::of(&Verdict::Accept)));
        // Encoded and parsed back, the verdict is the same.
        let enc = encode(true, &want, true);
        assert_eq!(enc.ends.len(), 5);
        let mut data = Vec::new();
        Data::of(&Verdict::Goto("inbound.udp.80".into())).encode(&mut data);
        assert_eq!(
            Data::parse(&data),
            Some(Data::of(&Verdict::Goto("inbound.udp.80".into())))
        );
    }
}
