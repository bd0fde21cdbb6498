//! One atomic nftables transaction, remembering which object each message carries so a kernel
//! error can name it.
//!
//! No message asks for an acknowledgement (NLM_F_ACK): the kernel reports every failed message
//! (and a failed commit) whether asked or not, so a batch with no error reply went in, and a
//! large batch saves the kernel building, and us reading, one reply per message.

use std::cell::Cell;
use std::ffi::{c_char, c_void};

use nftnl::nftnl_sys as sys;
use nftnl::{Batch, FinalizedBatch, MsgType, NlMsg};

use super::super::names;
use super::elems::{put_attr, start_nest, Encoded};
use super::wrap::{Chain, Obj, Rule, Set, Table, FAMILY_INET};

pub enum Body<'a> {
    Table(&'a Table),
    Chain(&'a Chain),
    Set(&'a Set),
    Obj(&'a Obj),
    Rule(&'a Rule),
}

struct Msg<'a> {
    ty: i32,
    flags: i32,
    body: Body<'a>,
    seq: Cell<u32>,
}

// SAFETY: every payload is one nftnl object, far below nft_nlmsg_maxsize().
unsafe impl NlMsg for Msg<'_> {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, _: MsgType) {
        self.seq.set(seq);
        // SAFETY: the caller (nftnl::Batch) provides a buffer of nft_nlmsg_maxsize() bytes.
        unsafe {
            let nlh = sys::nftnl_nlmsg_build_hdr(
                buf as *mut c_char,
                self.ty as u16,
                FAMILY_INET,
                self.flags as u16,
                seq,
            );
            match self.body {
                Body::Table(t) => sys::nftnl_table_nlmsg_build_payload(nlh, t.ptr()),
                Body::Chain(c) => sys::nftnl_chain_nlmsg_build_payload(nlh, c.ptr()),
                Body::Set(s) => sys::nftnl_set_nlmsg_build_payload(nlh, s.ptr()),
                Body::Obj(o) => sys::nftnl_obj_nlmsg_build_payload(nlh, o.ptr()),
                Body::Rule(r) => sys::nftnl_rule_nlmsg_build_payload(nlh, r.ptr()),
            }
        }
    }
}

/// Writes the next chunk of a set's elements: as many whole elements as fit in one message.
struct ElemsMsg<'a> {
    ty: i32,
    set: &'a str,
    set_id: u32,
    elems: &'a Encoded,
    /// Index of the first element not written yet.
    next: Cell<usize>,
    seq: Cell<u32>,
}

/// Element bytes per message: the elements' nested attribute has a 16-bit length, and the
/// batch gives each message nft_nlmsg_maxsize() bytes (64 KiB and a page).
const ELEMS_PER_MSG: usize = 60_000;

// SAFETY: a message is a header, three small attributes and at most ELEMS_PER_MSG bytes of
// elements (one element is far smaller), below nft_nlmsg_maxsize().
unsafe impl NlMsg for ElemsMsg<'_> {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, _: MsgType) {
        const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
        const NFTA_SET_ELEM_LIST_SET: u16 = 2;
        const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
        const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;
        self.seq.set(seq);
        let flags = if self.ty == libc::NFT_MSG_NEWSETELEM {
            libc::NLM_F_CREATE
        } else {
            0
        };
        let first = self.next.get();
        let base = if first == 0 {
            0
        } else {
            self.elems.ends[first - 1]
        };
        let last = first + self.elems.ends[first..].partition_point(|&e| e - base <= ELEMS_PER_MSG);
        let last = last.max(first + 1);
        let mut attrs = Vec::with_capacity(64 + self.set.len());
        put_attr(&mut attrs, NFTA_SET_ELEM_LIST_TABLE, names::TABLE_Z);
        let mut name = self.set.as_bytes().to_vec();
        name.push(0);
        put_attr(&mut attrs, NFTA_SET_ELEM_LIST_SET, &name);
        put_attr(
            &mut attrs,
            NFTA_SET_ELEM_LIST_SET_ID,
            &self.set_id.to_be_bytes(),
        );
        let nest = start_nest(&mut attrs, NFTA_SET_ELEM_LIST_ELEMENTS);
        let body = &self.elems.bytes[base..self.elems.ends[last - 1]];
        let nest_len = (4 + body.len()) as u16;
        attrs[nest..nest + 2].copy_from_slice(&nest_len.to_ne_bytes());
        // SAFETY: as for Msg; header + attrs + body stay below the buffer's size (see above).
        unsafe {
            let nlh = sys::nftnl_nlmsg_build_hdr(
                buf as *mut c_char,
                self.ty as u16,
                FAMILY_INET,
                flags as u16,
                seq,
            );
            let at = (*nlh).nlmsg_len as usize;
            let dst = (buf as *mut u8).add(at);
            std::ptr::copy_nonoverlapping(attrs.as_ptr(), dst, attrs.len());
            std::ptr::copy_nonoverlapping(body.as_ptr(), dst.add(attrs.len()), body.len());
            (*nlh).nlmsg_len = (at + attrs.len() + body.len()) as u32;
        }
        self.next.set(last);
    }
}

pub struct Builder {
    batch: Batch,
    described: Vec<(u32, String)>,
    messages: usize,
}

impl Builder {
    pub fn new() -> Self {
        Self {
            batch: Batch::new(),
            described: Vec::new(),
            messages: 0,
        }
    }

    /// Adds one object message: `ty` is an NFT_MSG_* type, `flags` extra NLM_F_* flags.
    /// Returns the message's sequence number.
    pub fn push(&mut self, ty: i32, flags: i32, body: Body, what: String) -> u32 {
        let msg = Msg {
            ty,
            flags,
            body,
            seq: Cell::new(0),
        };
        self.batch.add(&msg, MsgType::Add);
        self.described.push((msg.seq.get(), what));
        self.messages += 1;
        msg.seq.get()
    }

    /// Adds (NEWSETELEM) or removes (DELSETELEM) the elements `elems` of set `set` (whose
    /// NFTA_SET_ID in this batch is `set_id`), in as few messages as they fit in.
    pub fn push_elems(&mut self, ty: i32, set: &str, set_id: u32, elems: &Encoded, what: String) {
        let msg = ElemsMsg {
            ty,
            set,
            set_id,
            elems,
            next: Cell::new(0),
            seq: Cell::new(0),
        };
        while msg.next.get() < elems.ends.len() {
            self.batch.add(&msg, MsgType::Add);
            self.described.push((msg.seq.get(), what.clone()));
            self.messages += 1;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.messages == 0
    }

    pub fn len(&self) -> usize {
        self.messages
    }

    pub fn finish(self) -> (FinalizedBatch, Vec<(u32, String)>) {
        (self.batch.finalize(), self.described)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::elems::{encode, units};
    use super::super::socket::attrs;
    use super::*;
    use crate::backend::nft::plan::{Elem, SetDef, SetKind};

    /// The top-level attributes of each message of a finalized batch but the batch markers.
    fn messages(batch: FinalizedBatch) -> Vec<BTreeMap<u16, Vec<u8>>> {
        const HDR: usize = std::mem::size_of::<libc::nlmsghdr>();
        let bytes: Vec<u8> = batch.iter().flatten().copied().collect();
        let mut out = Vec::new();
        let mut off = 0;
        while off + HDR <= bytes.len() {
            let len = u32::from_ne_bytes(bytes[off..off + 4].try_into().unwrap()) as usize;
            let ty = u16::from_ne_bytes(bytes[off + 4..off + 6].try_into().unwrap());
            if ty >> 8 == libc::NFNL_SUBSYS_NFTABLES as u16 {
                let body = &bytes[off + HDR + 4..off + len];
                out.push(attrs(body).map(|(t, v)| (t, v.to_vec())).collect());
            }
            off += (len + 3) & !3;
        }
        out
    }

    /// What libnftnl writes for the same elements, through element objects.
    fn by_libnftnl(set: &SetDef, id: u32) -> Vec<BTreeMap<u16, Vec<u8>>> {
        let carrier = Set::ours(&set.name);
        carrier.set_u32(sys::NFTNL_SET_ID, id);
        let interval = set.kind.interval();
        let open = super::super::udata::udata_u32(
            sys::NFTNL_UDATA_SET_ELEM_FLAGS as u8,
            sys::NFTNL_SET_ELEM_F_INTERVAL_OPEN,
        );
        for u in units(set) {
            let data = u.data.as_ref();
            match (&u.end, interval) {
                (Some(end), _) => {
                    carrier.add_elem(u.start.as_slice(), 0, data, &[]);
                    let end_flag = libc::NFT_SET_ELEM_INTERVAL_END as u32;
                    carrier.add_elem(end.as_slice(), end_flag, None, &[]);
                }
                (None, true) => carrier.add_elem(u.start.as_slice(), 0, data, &open),
                (None, false) => carrier.add_elem(u.start.as_slice(), 0, data, &[]),
            }
        }
        let mut b = Batch::new();
        struct Old<'a>(&'a Set);
        // SAFETY: a handful of elements, far below the buffer size.
        unsafe impl NlMsg for Old<'_> {
            unsafe fn write(&self, buf: *mut c_void, seq: u32, _: MsgType) {
                // SAFETY: as for Msg.
                unsafe {
                    let nlh = sys::nftnl_nlmsg_build_hdr(
                        buf as *mut c_char,
                        libc::NFT_MSG_NEWSETELEM as u16,
                        FAMILY_INET,
                        libc::NLM_F_CREATE as u16,
                        seq,
                    );
                    sys::nftnl_set_elems_nlmsg_build_payload(nlh, self.0.ptr());
                }
            }
        }
        b.add(&Old(&carrier), MsgType::Add);
        let mut msgs = messages(b.finalize());
        for m in &mut msgs {
            normalise(m.get_mut(&3).unwrap(), Some(1u16 | 1 << 15));
        }
        msgs
    }

    /// Walks the attributes of `buf` (and those nested one level in them) to make the
    /// reference comparable: libnftnl numbers the elements' attributes 1, 2, ...; the kernel
    /// ignores that type and itself writes NFTA_LIST_ELEM (1), as we do (`list_type`). And the
    /// reference built through libnftnl/libmnl on this system leaves the two bytes after an
    /// element's 6-byte user data as the batch buffer held them (a fresh-clone run once saw
    /// 0x42 there and failed); the kernel reads only `nla_len` bytes and this encoder writes
    /// zeros, so padding is zeroed rather than compared (in nested attributes too).
    fn normalise(buf: &mut [u8], list_type: Option<u16>) {
        let mut off = 0;
        while off + 4 <= buf.len() {
            let len = u16::from_ne_bytes([buf[off], buf[off + 1]]) as usize;
            let end = (off + len).min(buf.len());
            let aligned = ((off + len + 3) & !3).min(buf.len());
            let nested = u16::from_ne_bytes([buf[off + 2], buf[off + 3]]) & (1 << 15) != 0;
            if let Some(ty) = list_type {
                buf[off + 2..off + 4].copy_from_slice(&ty.to_ne_bytes());
            }
            // An element, and the nests in it (a map element's verdict).
            if (list_type.is_some() || nested) && len > 4 {
                normalise(&mut buf[off + 4..end], None);
            }
            buf[end..aligned].fill(0);
            if len < 4 {
                break;
            }
            off = aligned;
        }
    }

    fn ours(set: &SetDef, id: u32) -> Vec<BTreeMap<u16, Vec<u8>>> {
        let mut b = Builder::new();
        let enc = encode(set.kind.interval(), &units(set), true);
        b.push_elems(libc::NFT_MSG_NEWSETELEM, &set.name, id, &enc, String::new());
        messages(b.batch.finalize())
    }

    #[test]
    fn elements_are_encoded_as_libnftnl_encodes_them() {
        let sets = super::super::elems::sample_sets();
        for (i, set) in sets.iter().enumerate() {
            assert_eq!(
                ours(set, i as u32 + 1),
                by_libnftnl(set, i as u32 + 1),
                "{}",
                set.name
            );
        }
    }

    #[test]
    fn many_elements_are_split_between_whole_elements() {
        let set = SetDef {
            name: "big".into(),
            kind: SetKind::Net4,
            elems: (0..20_000u32).map(|i| Elem::Net4(i << 8)).collect(),
        };
        let msgs = ours(&set, 1);
        assert!(msgs.len() > 1, "{} message(s)", msgs.len());
        let total: usize = msgs.iter().map(|m| attrs(&m[&3]).count()).sum();
        assert_eq!(total, 20_000);
    }
}
