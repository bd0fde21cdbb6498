//! The two BPF syscalls the drift check needs and aya does not expose in that form: opening a
//! pinned object by path, and reading a link's info including the interface it is attached
//! to (aya's `LinkInfo` hides the per-type part, which is where that interface is).
//!
//! A link detached behind the agent's back (`bpftool link detach`, the device going away)
//! stays a valid object with its pin, but the kernel reports interface 0 for it: that is how
//! a dead link is told from a live one.

use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
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
    use std::os::fd::AsRawFd;
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
