//! Attaching the programs to interfaces through BPF links pinned on a bpffs, so they outlive
//! the agent; a later agent replaces the program inside a pinned link atomically (no moment
//! without a filter), and `flush` unpins the links, which detaches them.

use std::ffi::{CStr, CString};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::tc::SchedClassifierLink;
use aya::programs::xdp::XdpLink;
use aya::programs::{TcAttachType, XdpMode};
use tracing::{info, warn};

use super::datapath::Datapath;

/// Where XDP runs on an interface.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum XdpAttach {
    /// Native (driver) mode, falling back to generic with a warning.
    #[default]
    Auto,
    Native,
    Generic,
}

const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// Mounts a bpffs at `root` unless one is there already.
pub fn ensure_bpffs(root: &Path) -> Result<()> {
    fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    let c = cstring(root)?;
    // SAFETY: statfs fills the struct it is given; the path is a valid C string.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0 && st.f_type as i64 == BPF_FS_MAGIC {
        return Ok(());
    }
    let ty = c"bpf";
    let opts = c"mode=0700";
    // SAFETY: all arguments are valid C strings.
    let rc = unsafe {
        libc::mount(
            ty.as_ptr(),
            c.as_ptr(),
            ty.as_ptr(),
            0,
            opts.as_ptr().cast(),
        )
    };
    if rc != 0 {
        bail!(
            "mounting a bpffs at {}: {}",
            root.display(),
            std::io::Error::last_os_error()
        );
    }
    info!(path = %root.display(), "mounted bpffs");
    Ok(())
}

fn cstring(p: &Path) -> Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes()).with_context(|| format!("{}: NUL in path", p.display()))
}

pub fn if_index(name: &str) -> Result<u32> {
    let c = CString::new(name)
        .with_context(|| format!("interfaces: {name:?} is not a valid interface name"))?;
    // SAFETY: valid C string.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => bail!("interfaces: no interface named {name:?} in this network namespace"),
        i => Ok(i),
    }
}

pub fn if_name(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: the buffer holds IF_NAMESIZE bytes as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

/// Pin names of the programs (also held by the links; pinned so they can be inspected with
/// `bpftool prog show pinned ...` and are removed only by `flush`).
pub const PROGRAM_PINS: [&str; 2] = ["prog-xdp", "prog-egress"];

/// Pins this agent's programs, replacing the pins of an earlier agent's.
pub fn pin_programs(dp: &mut Datapath, pin_dir: &Path) -> Result<()> {
    for name in PROGRAM_PINS {
        let path = pin_dir.join(name);
        remove_pin(&path)?;
        let pinned = if name == PROGRAM_PINS[0] {
            dp.xdp()?.pin(&path)
        } else {
            dp.egress()?.pin(&path)
        };
        pinned.with_context(|| format!("pinning {}", path.display()))?;
    }
    Ok(())
}

/// Removes a pin, or an empty pin directory, if it exists.
pub fn remove_pin(path: &Path) -> Result<()> {
    let removed = if path.is_dir() {
        fs::remove_dir(path)
    } else {
        fs::remove_file(path)
    };
    match removed {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// The pinned links of one pin directory: `links/xdp-<ifindex>` and `links/tc-<ifindex>`.
pub struct Links {
    dir: PathBuf,
}

impl Links {
    pub fn new(pin_dir: &Path) -> Self {
        Self {
            dir: pin_dir.join("links"),
        }
    }

    fn xdp_pin(&self, ifindex: u32) -> PathBuf {
        self.dir.join(format!("xdp-{ifindex}"))
    }

    fn tc_pin(&self, ifindex: u32) -> PathBuf {
        self.dir.join(format!("tc-{ifindex}"))
    }

    /// Interface indexes with a pinned XDP link.
    pub fn attached(&self) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e).with_context(|| format!("reading {}", self.dir.display())),
        };
        for entry in entries {
            let name = entry?.file_name();
            if let Some(i) = name
                .to_str()
                .and_then(|n| n.strip_prefix("xdp-"))
                .and_then(|n| n.parse().ok())
            {
                out.push(i);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Makes both programs of `dp` run on `ifindex`: a pinned link gets the program swapped
    /// in atomically, otherwise a new link is created and pinned. Returns the XDP mode used
    /// for a new link (`None` when an existing link was reused).
    pub fn attach(
        &self,
        dp: &mut Datapath,
        ifname: &str,
        ifindex: u32,
        mode: XdpAttach,
    ) -> Result<Option<XdpMode>> {
        fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let used = self.attach_xdp(dp, ifname, ifindex, mode)?;
        self.attach_tc(dp, ifname, ifindex)?;
        Ok(used)
    }

    fn attach_xdp(
        &self,
        dp: &mut Datapath,
        ifname: &str,
        ifindex: u32,
        mode: XdpAttach,
    ) -> Result<Option<XdpMode>> {
        let pin = self.xdp_pin(ifindex);
        let prog = dp.xdp()?;
        let swapped = swap_pinned(&pin, |link| {
            let id = prog
                .attach_to_link(XdpLink::try_from(link)?)
                .with_context(|| format!("{ifname}: replacing the XDP program"))?;
            Ok(FdLink::try_from(prog.take_link(id)?)?)
        })?;
        if swapped {
            return Ok(None);
        }
        let (id, used) = match mode {
            XdpAttach::Native => (
                prog.attach_to_if_index(ifindex, XdpMode::Driver)?,
                XdpMode::Driver,
            ),
            XdpAttach::Generic => (
                prog.attach_to_if_index(ifindex, XdpMode::Skb)?,
                XdpMode::Skb,
            ),
            XdpAttach::Auto => match prog.attach_to_if_index(ifindex, XdpMode::Driver) {
                Ok(id) => (id, XdpMode::Driver),
                Err(e) => {
                    warn!(interface = ifname, error = %e, "native XDP unavailable, attaching in generic mode");
                    (
                        prog.attach_to_if_index(ifindex, XdpMode::Skb)?,
                        XdpMode::Skb,
                    )
                }
            },
        };
        let link = FdLink::try_from(prog.take_link(id)?).with_context(|| {
            format!("{ifname}: the kernel attached XDP without a BPF link (Linux >= 5.9 needed)")
        })?;
        pin_link(link, &pin)?;
        Ok(Some(used))
    }

    fn attach_tc(&self, dp: &mut Datapath, ifname: &str, ifindex: u32) -> Result<()> {
        let pin = self.tc_pin(ifindex);
        let prog = dp.egress()?;
        let swapped = swap_pinned(&pin, |link| {
            let id = prog
                .attach_to_link(SchedClassifierLink::try_from(link)?)
                .with_context(|| format!("{ifname}: replacing the TC egress program"))?;
            Ok(FdLink::try_from(prog.take_link(id)?)?)
        })?;
        if swapped {
            return Ok(());
        }
        let id = prog
            .attach(ifname, TcAttachType::Egress)
            .with_context(|| format!("{ifname}: attaching the TC egress program"))?;
        let link = FdLink::try_from(prog.take_link(id)?).with_context(|| {
            format!("{ifname}: TC egress attached without a TCX link (Linux >= 6.6 needed)")
        })?;
        pin_link(link, &pin)
    }

    /// Detaches both programs from `ifindex` (unpinning drops the last reference).
    pub fn detach(&self, ifindex: u32) -> Result<()> {
        for pin in [self.xdp_pin(ifindex), self.tc_pin(ifindex)] {
            if pin.exists() {
                let link = PinnedLink::from_pin(&pin)?
                    .unpin()
                    .with_context(|| format!("unpinning {}", pin.display()))?;
                drop(link);
            }
        }
        Ok(())
    }

    pub fn remove_dir(&self) -> Result<()> {
        remove_pin(&self.dir)
    }
}

/// If `pin` holds a link, hands it to `swap` (which puts this process's program in it with
/// `bpf_link_update`: no moment without a program) and pins the result again.
fn swap_pinned(pin: &Path, swap: impl FnOnce(FdLink) -> Result<FdLink>) -> Result<bool> {
    if !pin.exists() {
        return Ok(false);
    }
    let link = PinnedLink::from_pin(pin)?
        .unpin()
        .with_context(|| format!("unpinning {}", pin.display()))?;
    pin_link(swap(link)?, pin)?;
    Ok(true)
}

fn pin_link(link: FdLink, pin: &Path) -> Result<()> {
    link.pin(pin)
        .with_context(|| format!("pinning {}", pin.display()))?;
    Ok(())
}
