//! A small safe layer over `nftnl_sys` for what the `nftnl` crate does not cover: interval set
//! elements, counter objects (and reading their values back), userdata comments, and parsing
//! the kernel's dump replies. Every libnftnl object is owned by a Rust value that frees it.

use std::ffi::{c_char, c_void, CStr, CString};
use std::ptr::NonNull;

use nftnl::nftnl_sys as sys;

use super::super::names::TABLE;
use super::udata::comment_at;

pub const FAMILY_INET: u16 = libc::NFPROTO_INET as u16;
pub const NFT_OBJECT_COUNTER: u32 = 1;

/// A C string for libnftnl. Names come from our own plan, which never contains NUL; an
/// interior NUL (impossible by construction) is cut rather than panicking.
pub fn cstr(s: &str) -> CString {
    CString::new(s.split('\0').next().unwrap_or("")).expect("no interior NUL")
}

/// Reads a C string attribute, or "" when libnftnl returns NULL.
///
/// # Safety
/// `p` must be NULL or a valid NUL-terminated string that outlives the call.
unsafe fn string(p: *const c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

macro_rules! owned {
    ($(#[$m:meta])* $name:ident, $raw:ty, $alloc:path, $free:path) => {
        $(#[$m])*
        pub struct $name(NonNull<$raw>);
        impl $name {
            pub fn alloc() -> Self {
                // SAFETY: the allocator has no preconditions; NULL means out of memory.
                Self(NonNull::new(unsafe { $alloc() }).expect("libnftnl: out of memory"))
            }
            pub fn ptr(&self) -> *mut $raw {
                self.0.as_ptr()
            }
        }
        impl Drop for $name {
            fn drop(&mut self) {
                // SAFETY: we own the object and free it once.
                unsafe { $free(self.0.as_ptr()) }
            }
        }
    };
}

owned!(
    /// `nftnl_table`.
    Table, sys::nftnl_table, sys::nftnl_table_alloc, sys::nftnl_table_free
);
owned!(
    /// `nftnl_chain`.
    Chain, sys::nftnl_chain, sys::nftnl_chain_alloc, sys::nftnl_chain_free
);
owned!(
    /// `nftnl_set`, also the carrier of element lists.
    Set, sys::nftnl_set, sys::nftnl_set_alloc, sys::nftnl_set_free
);
owned!(
    /// `nftnl_obj` (counter objects here).
    Obj, sys::nftnl_obj, sys::nftnl_obj_alloc, sys::nftnl_obj_free
);
owned!(
    /// `nftnl_rule`.
    Rule, sys::nftnl_rule, sys::nftnl_rule_alloc, sys::nftnl_rule_free
);

impl Table {
    pub fn ours() -> Self {
        let t = Self::alloc();
        let name = cstr(TABLE);
        // SAFETY: valid object and NUL-terminated strings (libnftnl copies them).
        unsafe {
            sys::nftnl_table_set_u32(t.ptr(), sys::NFTNL_TABLE_FAMILY as u16, FAMILY_INET as u32);
            sys::nftnl_table_set_str(t.ptr(), sys::NFTNL_TABLE_NAME as u16, name.as_ptr());
        }
        t
    }

    pub fn set_userdata(&self, data: &[u8]) {
        // SAFETY: libnftnl copies `data`.
        unsafe {
            sys::nftnl_table_set_data(
                self.ptr(),
                sys::NFTNL_TABLE_USERDATA as u16,
                data.as_ptr() as *const c_void,
                data.len() as u32,
            );
        }
    }

    pub fn set_flags(&self, flags: u32) {
        // SAFETY: valid object.
        unsafe { sys::nftnl_table_set_u32(self.ptr(), sys::NFTNL_TABLE_FLAGS as u16, flags) }
    }

    /// Table flags (e.g. dormant), 0 when unset.
    pub fn flags(&self) -> u32 {
        // SAFETY: valid object; an unset attribute reads as 0.
        unsafe { sys::nftnl_table_get_u32(self.ptr(), sys::NFTNL_TABLE_FLAGS as u16) }
    }

    pub fn name(&self) -> String {
        // SAFETY: the string is owned by the object, copied before it is freed.
        unsafe {
            string(sys::nftnl_table_get_str(
                self.ptr(),
                sys::NFTNL_TABLE_NAME as u16,
            ))
        }
    }
}

impl Chain {
    /// A chain of our table; an empty name leaves the name unset (a dump filter).
    pub fn ours(name: &str) -> Self {
        let c = Self::alloc();
        let (t, n) = (cstr(TABLE), cstr(name));
        // SAFETY: as for Table::ours.
        unsafe {
            sys::nftnl_chain_set_u32(c.ptr(), sys::NFTNL_CHAIN_FAMILY as u16, FAMILY_INET as u32);
            sys::nftnl_chain_set_str(c.ptr(), sys::NFTNL_CHAIN_TABLE as u16, t.as_ptr());
            if !name.is_empty() {
                sys::nftnl_chain_set_str(c.ptr(), sys::NFTNL_CHAIN_NAME as u16, n.as_ptr());
            }
        }
        c
    }

    /// Makes this a `filter` base chain on hook `hooknum` with policy accept.
    pub fn set_hook(&self, hooknum: u32, priority: i32) {
        let ty = cstr("filter");
        // SAFETY: valid object; libnftnl copies the string.
        unsafe {
            sys::nftnl_chain_set_u32(self.ptr(), sys::NFTNL_CHAIN_HOOKNUM as u16, hooknum);
            sys::nftnl_chain_set_s32(self.ptr(), sys::NFTNL_CHAIN_PRIO as u16, priority);
            sys::nftnl_chain_set_str(self.ptr(), sys::NFTNL_CHAIN_TYPE as u16, ty.as_ptr());
            sys::nftnl_chain_set_u32(
                self.ptr(),
                sys::NFTNL_CHAIN_POLICY as u16,
                libc::NF_ACCEPT as u32,
            );
        }
    }

    pub fn name(&self) -> String {
        // SAFETY: see Table::name.
        unsafe {
            string(sys::nftnl_chain_get_str(
                self.ptr(),
                sys::NFTNL_CHAIN_NAME as u16,
            ))
        }
    }

    pub fn table(&self) -> String {
        // SAFETY: see Table::name.
        unsafe {
            string(sys::nftnl_chain_get_str(
                self.ptr(),
                sys::NFTNL_CHAIN_TABLE as u16,
            ))
        }
    }

    /// The verdict of a base chain for packets no rule decided (NF_ACCEPT, NF_DROP).
    pub fn policy(&self) -> Option<u32> {
        // SAFETY: valid object; the getter is guarded by is_set.
        unsafe {
            sys::nftnl_chain_is_set(self.ptr(), sys::NFTNL_CHAIN_POLICY as u16)
                .then(|| sys::nftnl_chain_get_u32(self.ptr(), sys::NFTNL_CHAIN_POLICY as u16))
        }
    }

    /// (hook number, priority) for a base chain.
    pub fn hook(&self) -> Option<(u32, i32)> {
        // SAFETY: valid object; getters of unset attributes are guarded by is_set.
        unsafe {
            if !sys::nftnl_chain_is_set(self.ptr(), sys::NFTNL_CHAIN_HOOKNUM as u16) {
                return None;
            }
            Some((
                sys::nftnl_chain_get_u32(self.ptr(), sys::NFTNL_CHAIN_HOOKNUM as u16),
                sys::nftnl_chain_get_s32(self.ptr(), sys::NFTNL_CHAIN_PRIO as u16),
            ))
        }
    }
}

impl Set {
    /// A set of our table; an empty name leaves the name unset (a dump filter).
    pub fn ours(name: &str) -> Self {
        let s = Self::alloc();
        let (t, n) = (cstr(TABLE), cstr(name));
        // SAFETY: as for Table::ours.
        unsafe {
            sys::nftnl_set_set_u32(s.ptr(), sys::NFTNL_SET_FAMILY as u16, FAMILY_INET as u32);
            sys::nftnl_set_set_str(s.ptr(), sys::NFTNL_SET_TABLE as u16, t.as_ptr());
            if !name.is_empty() {
                sys::nftnl_set_set_str(s.ptr(), sys::NFTNL_SET_NAME as u16, n.as_ptr());
            }
        }
        s
    }

    pub fn set_u32(&self, attr: u32, value: u32) {
        // SAFETY: valid object; the attribute ids are libnftnl's.
        unsafe { sys::nftnl_set_set_u32(self.ptr(), attr as u16, value) }
    }

    pub fn set_userdata(&self, data: &[u8]) {
        // SAFETY: libnftnl copies `data`.
        unsafe {
            sys::nftnl_set_set_data(
                self.ptr(),
                sys::NFTNL_SET_USERDATA as u16,
                data.as_ptr() as *const c_void,
                data.len() as u32,
            );
        }
    }

    pub fn name(&self) -> String {
        // SAFETY: see Table::name.
        unsafe {
            string(sys::nftnl_set_get_str(
                self.ptr(),
                sys::NFTNL_SET_NAME as u16,
            ))
        }
    }

    pub fn get_u32(&self, attr: u32) -> u32 {
        // SAFETY: valid object; unset attributes read as 0.
        unsafe {
            if sys::nftnl_set_is_set(self.ptr(), attr as u16) {
                sys::nftnl_set_get_u32(self.ptr(), attr as u16)
            } else {
                0
            }
        }
    }

    /// Appends an element: `key`, element flags (e.g. interval end) and userdata (the tests
    /// compare libnftnl's encoding of elements with [`super::elems::encode`]'s).
    #[cfg(test)]
    pub fn add_elem(
        &self,
        key: &[u8],
        flags: u32,
        verdict: Option<&super::elems::Data>,
        userdata: &[u8],
    ) {
        // SAFETY: the element is handed over to the set, which frees it; data is copied.
        unsafe {
            let e = sys::nftnl_set_elem_alloc();
            assert!(!e.is_null(), "libnftnl: out of memory");
            sys::nftnl_set_elem_set(
                e,
                sys::NFTNL_SET_ELEM_KEY as u16,
                key.as_ptr() as *const c_void,
                key.len() as u32,
            );
            if flags != 0 {
                sys::nftnl_set_elem_set_u32(e, sys::NFTNL_SET_ELEM_FLAGS as u16, flags);
            }
            if let Some(v) = verdict {
                sys::nftnl_set_elem_set_u32(e, sys::NFTNL_SET_ELEM_VERDICT as u16, v.code as u32);
                if let Some(chain) = &v.chain {
                    let c = cstr(chain);
                    sys::nftnl_set_elem_set_str(e, sys::NFTNL_SET_ELEM_CHAIN as u16, c.as_ptr());
                }
            }
            if !userdata.is_empty() {
                sys::nftnl_set_elem_set(
                    e,
                    sys::NFTNL_SET_ELEM_USERDATA as u16,
                    userdata.as_ptr() as *const c_void,
                    userdata.len() as u32,
                );
            }
            sys::nftnl_set_elem_add(self.ptr(), e);
        }
    }

    /// The elements held (after libnftnl parsed a GETSETELEM reply): key bytes, flags and
    /// verdict (the tests compare it with [`super::state`]'s own parser).
    #[cfg(test)]
    pub fn elems(&self) -> Vec<super::elems::KernelElem> {
        unsafe extern "C" fn collect(e: *mut sys::nftnl_set_elem, data: *mut c_void) -> i32 {
            // SAFETY: called by nftnl_set_elem_foreach with a live element and our Vec.
            unsafe {
                let out = &mut *(data as *mut Vec<super::elems::KernelElem>);
                let mut len = 0u32;
                let key = sys::nftnl_set_elem_get(e, sys::NFTNL_SET_ELEM_KEY as u16, &mut len);
                let key = if key.is_null() {
                    Vec::new()
                } else {
                    std::slice::from_raw_parts(key as *const u8, len as usize).to_vec()
                };
                let flags = if sys::nftnl_set_elem_is_set(e, sys::NFTNL_SET_ELEM_FLAGS as u16) {
                    sys::nftnl_set_elem_get_u32(e, sys::NFTNL_SET_ELEM_FLAGS as u16)
                } else {
                    0
                };
                let verdict = sys::nftnl_set_elem_is_set(e, sys::NFTNL_SET_ELEM_VERDICT as u16)
                    .then(|| super::elems::Data {
                        code: sys::nftnl_set_elem_get_u32(e, sys::NFTNL_SET_ELEM_VERDICT as u16)
                            as i32,
                        chain: sys::nftnl_set_elem_is_set(e, sys::NFTNL_SET_ELEM_CHAIN as u16)
                            .then(|| {
                                string(sys::nftnl_set_elem_get_str(
                                    e,
                                    sys::NFTNL_SET_ELEM_CHAIN as u16,
                                ))
                            }),
                    });
                out.push((key, flags, verdict));
            }
            0
        }
        let mut out: Vec<super::elems::KernelElem> = Vec::new();
        // SAFETY: the callback only touches the element and `out`, both live during the call.
        unsafe {
            sys::nftnl_set_elem_foreach(
                self.ptr(),
                Some(collect),
                &mut out as *mut _ as *mut c_void,
            );
        }
        out
    }
}

impl Obj {
    pub fn counter(name: &str) -> Self {
        let o = Self::alloc();
        let (t, n) = (cstr(TABLE), cstr(name));
        // SAFETY: as for Table::ours.
        unsafe {
            sys::nftnl_obj_set_u32(o.ptr(), sys::NFTNL_OBJ_FAMILY as u16, FAMILY_INET as u32);
            sys::nftnl_obj_set_str(o.ptr(), sys::NFTNL_OBJ_TABLE as u16, t.as_ptr());
            if !name.is_empty() {
                sys::nftnl_obj_set_str(o.ptr(), sys::NFTNL_OBJ_NAME as u16, n.as_ptr());
            }
            sys::nftnl_obj_set_u32(o.ptr(), sys::NFTNL_OBJ_TYPE as u16, NFT_OBJECT_COUNTER);
        }
        o
    }

    pub fn set_userdata(&self, data: &[u8]) {
        // SAFETY: libnftnl copies `data`.
        unsafe {
            sys::nftnl_obj_set_data(
                self.ptr(),
                sys::NFTNL_OBJ_USERDATA as u16,
                data.as_ptr() as *const c_void,
                data.len() as u32,
            );
        }
    }

    /// Initial values, to carry a counter over when the table has to be rebuilt.
    pub fn set_counter_values(&self, packets: u64, bytes: u64) {
        // SAFETY: valid object.
        unsafe {
            sys::nftnl_obj_set_u64(self.ptr(), sys::NFTNL_OBJ_CTR_PKTS as u16, packets);
            sys::nftnl_obj_set_u64(self.ptr(), sys::NFTNL_OBJ_CTR_BYTES as u16, bytes);
        }
    }

    pub fn name(&self) -> String {
        // SAFETY: see Table::name.
        unsafe {
            string(sys::nftnl_obj_get_str(
                self.ptr(),
                sys::NFTNL_OBJ_NAME as u16,
            ))
        }
    }

    pub fn obj_type(&self) -> u32 {
        // SAFETY: valid object.
        unsafe { sys::nftnl_obj_get_u32(self.ptr(), sys::NFTNL_OBJ_TYPE as u16) }
    }

    /// (packets, bytes) of a counter object read from the kernel.
    pub fn counter_values(&self) -> (u64, u64) {
        // SAFETY: valid object; unset attributes read as 0.
        unsafe {
            (
                sys::nftnl_obj_get_u64(self.ptr(), sys::NFTNL_OBJ_CTR_PKTS as u16),
                sys::nftnl_obj_get_u64(self.ptr(), sys::NFTNL_OBJ_CTR_BYTES as u16),
            )
        }
    }

    pub fn comment(&self) -> Option<String> {
        let mut len = 0u32;
        // SAFETY: the data is owned by the object and copied out before it is freed.
        unsafe {
            let p = sys::nftnl_obj_get_data(self.ptr(), sys::NFTNL_OBJ_USERDATA as u16, &mut len);
            comment_at(p, len)
        }
    }
}

impl Rule {
    /// A rule of our table; an empty chain leaves the chain unset (a dump filter).
    pub fn ours(chain: &str) -> Self {
        let r = Self::alloc();
        let (t, c) = (cstr(TABLE), cstr(chain));
        // SAFETY: as for Table::ours.
        unsafe {
            sys::nftnl_rule_set_u32(r.ptr(), sys::NFTNL_RULE_FAMILY as u16, FAMILY_INET as u32);
            sys::nftnl_rule_set_str(r.ptr(), sys::NFTNL_RULE_TABLE as u16, t.as_ptr());
            if !chain.is_empty() {
                sys::nftnl_rule_set_str(r.ptr(), sys::NFTNL_RULE_CHAIN as u16, c.as_ptr());
            }
        }
        r
    }

    /// Appends an expression; the rule takes ownership of it.
    pub fn push(&self, expr: Expr) {
        // SAFETY: ownership of the expression moves to the rule, which frees it.
        unsafe { sys::nftnl_rule_add_expr(self.ptr(), expr.into_raw()) }
    }

    pub fn set_userdata(&self, data: &[u8]) {
        // SAFETY: libnftnl copies `data`.
        unsafe {
            sys::nftnl_rule_set_data(
                self.ptr(),
                sys::NFTNL_RULE_USERDATA as u16,
                data.as_ptr() as *const c_void,
                data.len() as u32,
            );
        }
    }

    /// The kernel's handle of a dumped rule; for a rule to delete, which one.
    pub fn handle(&self) -> u64 {
        // SAFETY: valid object; an unset handle reads as 0.
        unsafe { sys::nftnl_rule_get_u64(self.ptr(), sys::NFTNL_RULE_HANDLE as u16) }
    }

    pub fn set_handle(&self, handle: u64) {
        // SAFETY: valid object.
        unsafe { sys::nftnl_rule_set_u64(self.ptr(), sys::NFTNL_RULE_HANDLE as u16, handle) }
    }

    /// Inserts a new rule next to the rule with this handle (before it, or after it with
    /// NLM_F_APPEND) instead of at the end of the chain.
    pub fn set_position(&self, handle: u64) {
        // SAFETY: valid object.
        unsafe { sys::nftnl_rule_set_u64(self.ptr(), sys::NFTNL_RULE_POSITION as u16, handle) }
    }

    pub fn chain(&self) -> String {
        // SAFETY: see Table::name.
        unsafe {
            string(sys::nftnl_rule_get_str(
                self.ptr(),
                sys::NFTNL_RULE_CHAIN as u16,
            ))
        }
    }

    pub fn comment(&self) -> Option<String> {
        let mut len = 0u32;
        // SAFETY: see Obj::comment.
        unsafe {
            let p = sys::nftnl_rule_get_data(self.ptr(), sys::NFTNL_RULE_USERDATA as u16, &mut len);
            comment_at(p, len)
        }
    }

    /// libnftnl's text of every expression, e.g. `[ meta load l4proto => reg 1 ]`, plus the
    /// comment: equal for a rule we would send and the same rule dumped back by the kernel,
    /// which is how `apply` tells an unchanged chain from a changed one.
    pub fn fingerprint(&self) -> String {
        let mut out = String::new();
        let mut buf = vec![0u8; 4096];
        // SAFETY: the iterator borrows the rule; snprintf writes at most buf.len() bytes.
        unsafe {
            let it = sys::nftnl_expr_iter_create(self.ptr());
            if !it.is_null() {
                let mut e = sys::nftnl_expr_iter_next(it);
                while !e.is_null() {
                    let name = string(sys::nftnl_expr_get_str(e, sys::NFTNL_EXPR_NAME as u16));
                    sys::nftnl_expr_snprintf(
                        buf.as_mut_ptr() as *mut c_char,
                        buf.len(),
                        e,
                        sys::NFTNL_OUTPUT_DEFAULT,
                        0,
                    );
                    let text = CStr::from_ptr(buf.as_ptr() as *const c_char).to_string_lossy();
                    out.push_str(&format!("[ {name} {} ]", text.trim()));
                    e = sys::nftnl_expr_iter_next(it);
                }
                sys::nftnl_expr_iter_destroy(it);
            }
        }
        if let Some(c) = self.comment() {
            out.push_str(&format!(" comment {c:?}"));
        }
        out
    }
}

/// An expression not yet added to a rule.
pub struct Expr(NonNull<sys::nftnl_expr>);

impl Expr {
    pub fn new(name: &str) -> Self {
        let n = cstr(name);
        // SAFETY: NULL means unknown expression name or OOM; our names are libnftnl's.
        let p = unsafe { sys::nftnl_expr_alloc(n.as_ptr()) };
        Self(NonNull::new(p).expect("libnftnl: expression allocation failed"))
    }

    pub fn u32(self, attr: u32, v: u32) -> Self {
        // SAFETY: valid expression; attribute ids are libnftnl's for this expression type.
        unsafe { sys::nftnl_expr_set_u32(self.0.as_ptr(), attr as u16, v) };
        self
    }

    pub fn u16(self, attr: u32, v: u16) -> Self {
        // SAFETY: as for `u32`.
        unsafe { sys::nftnl_expr_set_u16(self.0.as_ptr(), attr as u16, v) };
        self
    }

    pub fn u64(self, attr: u32, v: u64) -> Self {
        // SAFETY: as for `u32`.
        unsafe { sys::nftnl_expr_set_u64(self.0.as_ptr(), attr as u16, v) };
        self
    }

    pub fn str(self, attr: u32, v: &str) -> Self {
        let s = cstr(v);
        // SAFETY: libnftnl copies the string.
        unsafe { sys::nftnl_expr_set_str(self.0.as_ptr(), attr as u16, s.as_ptr()) };
        self
    }

    pub fn data(self, attr: u32, v: &[u8]) -> Self {
        // SAFETY: libnftnl copies the data.
        unsafe {
            sys::nftnl_expr_set(
                self.0.as_ptr(),
                attr as u16,
                v.as_ptr() as *const c_void,
                v.len() as u32,
            )
        };
        self
    }

    fn into_raw(self) -> *mut sys::nftnl_expr {
        let p = self.0.as_ptr();
        std::mem::forget(self);
        p
    }
}

impl Drop for Expr {
    fn drop(&mut self) {
        // SAFETY: only reached when the expression was never handed to a rule.
        unsafe { sys::nftnl_expr_free(self.0.as_ptr()) }
    }
}
