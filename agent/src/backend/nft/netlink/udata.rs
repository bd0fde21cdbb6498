//! Userdata in nft's format: TLVs (type u8, length u8, value) attached to tables, sets,
//! elements, rules and objects. `nft` reads comments (type 0) and a few flags from them, so
//! writing the same TLVs makes `nft list` show what nodewall installed the way it shows its own.

use std::ffi::c_void;

/// Userdata in nft's TLV format (type u8, length u8, value): what `nft` uses for comments.
pub fn udata_comment(comment: &str) -> Vec<u8> {
    let mut v = comment.as_bytes().to_vec();
    v.truncate(250);
    v.push(0);
    let mut out = vec![0u8, v.len() as u8];
    out.extend(v);
    out
}

/// One TLV of type `t` carrying a u32 in host order (nft's encoding of set byte order and
/// element flags).
pub fn udata_u32(t: u8, value: u32) -> Vec<u8> {
    let mut out = vec![t, 4];
    out.extend(value.to_ne_bytes());
    out
}

/// The comment in userdata that libnftnl returned as (pointer, length).
///
/// # Safety
/// `p` must be NULL or point at `len` readable bytes.
pub unsafe fn comment_at(p: *const c_void, len: u32) -> Option<String> {
    if p.is_null() {
        return None;
    }
    // SAFETY: guaranteed by the caller.
    parse_udata_comment(unsafe { std::slice::from_raw_parts(p as *const u8, len as usize) })
}

/// The comment (TLV type 0) in nft userdata, if any.
pub fn parse_udata_comment(data: &[u8]) -> Option<String> {
    let mut rest = data;
    while rest.len() >= 2 {
        let (t, len) = (rest[0], rest[1] as usize);
        let value = rest.get(2..2 + len)?;
        if t == 0 {
            let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
            return Some(String::from_utf8_lossy(&value[..end]).into_owned());
        }
        rest = &rest[2 + len..];
    }
    None
}
