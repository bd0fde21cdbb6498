//! BPF syscalls aya does not expose in the form nodewall needs: opening a pinned object by
//! path and reading a link's info including the interface it is attached to (aya's
//! `LinkInfo` hides the per-type part, which is where that interface is), for the drift
//! check; and batched map reads and writes, for the 262,144-entry port table and the source
//! tries.
//!
//! A link detached behind the agent's back (`bpftool link detach`, the device going away)
//! stays a valid object with its pin, but the kernel reports interface 0 for it: that is how
//! a dead link is told from a live one.

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use anyhow::{Context, Result};

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// `union bpf_attr` for BPF_OBJ_GET.
#[repr(C)]
#[derive(Default)]
struct ObjGetAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    path_fd: i32,
    _pad: u32,
}

/// `union bpf_attr` for BPF_OBJ_GET_INFO_BY_FD.
#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a properly laid out, zero-padded `union bpf_attr` prefix that lives
    // for the duration of the call; the size passed is its size.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Opens the BPF object pinned at `path`; `None` when nothing is pinned there.
pub fn obj_get(path: &Path) -> Result<Option<OwnedFd>> {
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(path.as_os_str().as_bytes())
        .with_context(|| format!("{}: NUL in path", path.display()))?;
    let mut attr = ObjGetAttr {
        pathname: c.as_ptr() as u64,
        ..Default::default()
    };
    match bpf(BPF_OBJ_GET, &mut attr) {
        // SAFETY: BPF_OBJ_GET returns a new descriptor that nothing else owns.
        Ok(fd) => Ok(Some(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("opening pinned {}", path.display())),
    }
}

/// What the kernel says about one XDP or TCX link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    pub link_type: u32,
    pub prog_id: u32,
    /// 0 once the link was detached.
    pub ifindex: u32,
}

pub const BPF_LINK_TYPE_XDP: u32 = 6;
pub const BPF_LINK_TYPE_TCX: u32 = 11;

/// `struct bpf_link_info` up to the per-type union, whose XDP and TCX members both start with
/// the interface index. Larger than that prefix so that the kernel never needs more room.
#[repr(C)]
#[derive(Default)]
struct RawLinkInfo {
    link_type: u32,
    id: u32,
    prog_id: u32,
    _pad: u32,
    ifindex: u32,
    _rest: [u32; 11],
}

pub fn link_info(fd: &OwnedFd) -> Result<LinkInfo> {
    let mut info = RawLinkInfo::default();
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of::<RawLinkInfo>() as u32,
        info: &mut info as *mut RawLinkInfo as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).context("BPF_OBJ_GET_INFO_BY_FD on a pinned link")?;
    Ok(LinkInfo {
        link_type: info.link_type,
        prog_id: info.prog_id,
        ifindex: info.ifindex,
    })
}

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

/// `union bpf_attr` for the BPF_MAP_*_BATCH commands.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Elements per batch syscall: large enough that a whole port table takes a handful of calls,
/// small enough that the kernel's loop stays short.
const BATCH: usize = 16384;

/// Reads `out.len()` consecutive elements of an array map starting at index `first`, a few
/// syscalls in all (a lookup per element costs one syscall each: 262,144 for the port table).
/// `T` must be the map's value type.
pub fn array_lookup_batch<T: Copy>(fd: BorrowedFd<'_>, first: u32, out: &mut [T]) -> Result<()> {
    let mut keys = vec![0u32; BATCH];
    let mut done = 0usize;
    while done < out.len() {
        let want = (out.len() - done).min(BATCH);
        // The batch starts after `in_batch` (an array's next key is index + 1); none = index 0.
        let prev: u32 = (first + done as u32).wrapping_sub(1);
        let mut next: u32 = 0;
        let mut attr = BatchAttr {
            in_batch: if first as usize + done == 0 {
                0
            } else {
                &prev as *const u32 as u64
            },
            out_batch: &mut next as *mut u32 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: out[done..].as_mut_ptr() as u64,
            count: want as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..Default::default()
        };
        match bpf(BPF_MAP_LOOKUP_BATCH, &mut attr) {
            Ok(_) => {}
            // ENOENT: the end of the map was reached; `count` says how far it got.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e).context("BPF_MAP_LOOKUP_BATCH"),
        }
        let got = attr.count as usize;
        if got == 0 || keys[0] != first + done as u32 {
            anyhow::bail!(
                "BPF_MAP_LOOKUP_BATCH: read {got} elements at index {}, starting at key {}",
                first as usize + done,
                keys[0]
            );
        }
        done += got;
    }
    Ok(())
}

/// Writes `values[i]` at key `keys[i]` of a map (an array, or an LPM trie: the kernel's
/// generic batch loop serves both), in a few syscalls instead of one per element. `K` and `V`
/// must be the map's key and value types, with the kernel's layout.
pub fn update_batch<K: Copy, V: Copy>(fd: BorrowedFd<'_>, keys: &[K], values: &[V]) -> Result<()> {
    assert_eq!(keys.len(), values.len());
    for (k, v) in keys.chunks(BATCH).zip(values.chunks(BATCH)) {
        let mut attr = BatchAttr {
            keys: k.as_ptr() as u64,
            values: v.as_ptr() as u64,
            count: k.len() as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..Default::default()
        };
        bpf(BPF_MAP_UPDATE_BATCH, &mut attr).context("BPF_MAP_UPDATE_BATCH")?;
        if attr.count as usize != k.len() {
            anyhow::bail!(
                "BPF_MAP_UPDATE_BATCH wrote {} of {} elements",
                attr.count,
                k.len()
            );
        }
    }
    Ok(())
}

/// Deletes `keys` from a hash-like map (an LPM trie) in a few syscalls.
pub fn delete_batch<K: Copy>(fd: BorrowedFd<'_>, keys: &[K]) -> Result<()> {
    for k in keys.chunks(BATCH) {
        let mut attr = BatchAttr {
            keys: k.as_ptr() as u64,
            count: k.len() as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..Default::default()
        };
        bpf(BPF_MAP_DELETE_BATCH, &mut attr).context("BPF_MAP_DELETE_BATCH")?;
        if attr.count as usize != k.len() {
            anyhow::bail!(
                "BPF_MAP_DELETE_BATCH removed {} of {} elements",
                attr.count,
                k.len()
            );
        }
    }
    Ok(())
}
