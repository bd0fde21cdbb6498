//! One atomic nftables transaction, remembering which object each message carries so a kernel
//! error can name it.

use std::cell::Cell;
use std::ffi::{c_char, c_void};

use nftnl::nftnl_sys as sys;
use nftnl::{Batch, FinalizedBatch, MsgType, NlMsg};

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
                (self.flags | libc::NLM_F_ACK) as u16,
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

/// Writes the next chunk of a set's elements; libnftnl fills each message up to its size limit.
struct ElemsMsg {
    ty: i32,
    iter: *mut sys::nftnl_set_elems_iter,
    more: Cell<bool>,
    seq: Cell<u32>,
}

// SAFETY: libnftnl stops each chunk below the maximum message size.
unsafe impl NlMsg for ElemsMsg {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, _: MsgType) {
        self.seq.set(seq);
        let flags = if self.ty == libc::NFT_MSG_NEWSETELEM {
            libc::NLM_F_CREATE | libc::NLM_F_ACK
        } else {
            libc::NLM_F_ACK
        };
        // SAFETY: as for Msg; the iterator is live for the ElemsMsg's lifetime.
        unsafe {
            let nlh = sys::nftnl_nlmsg_build_hdr(
                buf as *mut c_char,
                self.ty as u16,
                FAMILY_INET,
                flags as u16,
                seq,
            );
            let ret = sys::nftnl_set_elems_nlmsg_build_payload_iter(nlh, self.iter);
            self.more.set(ret > 0);
        }
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

    /// Adds (NEWSETELEM) or removes (DELSETELEM) every element held by `carrier`, in as many
    /// messages as needed.
    pub fn push_elems(&mut self, ty: i32, carrier: &Set, what: String) {
        // SAFETY: the iterator borrows `carrier`, which outlives this function.
        let iter = unsafe { sys::nftnl_set_elems_iter_create(carrier.ptr()) };
        assert!(!iter.is_null(), "libnftnl: out of memory");
        let msg = ElemsMsg {
            ty,
            iter,
            more: Cell::new(true),
            seq: Cell::new(0),
        };
        // SAFETY: checks whether the set has any element at all.
        let mut more = unsafe { !sys::nftnl_set_elems_iter_cur(iter).is_null() };
        while more {
            self.batch.add(&msg, MsgType::Add);
            self.described.push((msg.seq.get(), what.clone()));
            self.messages += 1;
            more = msg.more.get();
        }
        // SAFETY: created above, destroyed once.
        unsafe { sys::nftnl_set_elems_iter_destroy(iter) };
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
