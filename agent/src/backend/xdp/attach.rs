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
use super::sys;

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

/// Refuses an interface whose frames do not start with an Ethernet header (loopback, IP
/// tunnels, WireGuard, ...): the program parses Ethernet, and on such a device it would read
/// the IP header as MAC addresses and pass what it cannot make out. Asked of the kernel with
/// `SIOCGIFHWADDR` in the calling thread's namespace (`/sys/class/net` may be another's).
pub fn ensure_ethernet(name: &str) -> Result<()> {
    // SAFETY: plain socket(2), closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        bail!(
            "interfaces: {name}: socket: {}",
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: zeroed ifreq is valid; the name (checked shorter than IFNAMSIZ) is copied in.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= libc::IFNAMSIZ {
        bail!("interfaces: {name:?} is longer than an interface name can be");
    }
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: a valid ifreq for SIOCGIFHWADDR on a valid socket.
    let rc = unsafe { libc::ioctl(fd, libc::SIOCGIFHWADDR, &mut req) };
    let err = std::io::Error::last_os_error();
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    if rc != 0 {
        bail!("interfaces: {name}: {err}");
    }
    // SAFETY: the kernel filled the hardware-address member.
    let kind = unsafe { req.ifr_ifru.ifru_hwaddr.sa_family };
    if kind != libc::ARPHRD_ETHER {
        bail!(
            "interfaces: {name} is not an Ethernet interface (ARPHRD {kind}); the xdp backend parses Ethernet frames: use `backend: nft` for it"
        );
    }
    Ok(())
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

/// Pins this agent's programs, replacing the pins of an earlier agent's, and records which
/// object they come from.
pub fn pin_programs(dp: &mut Datapath, pin_dir: &Path) -> Result<()> {
    // The record of which object the pins hold goes first and comes back last, so an agent
    // interrupted in between leaves pins that the next one does not reuse.
    super::objhash::clear(pin_dir)?;
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
    super::objhash::record(pin_dir)
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

/// What a pinned link is, as far as enforcement goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// Nothing pinned.
    Missing,
    /// Pinned, but detached (`bpftool link detach`, the device went away) or not a link of
    /// the expected kind on the expected interface: it enforces nothing.
    Dead,
    /// Attached to the interface, running this program.
    Live { prog_id: u32 },
}

/// How [`Links::attach`] made a program run on an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attached {
    /// The pinned link already ran this program.
    Already,
    /// The program was swapped into a live pinned link (an earlier agent's): no gap.
    Swapped,
    /// A new link, in this XDP mode (a dead pinned link is replaced this way).
    New(XdpMode),
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

    /// Interface indexes with a pinned XDP link (live or not).
    pub fn pinned(&self) -> Result<Vec<u32>> {
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

    /// Interface indexes whose pinned XDP link is attached: where XDP enforces.
    pub fn live(&self) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        for index in self.pinned()? {
            if matches!(self.xdp_state(index)?, LinkState::Live { .. }) {
                out.push(index);
            }
        }
        Ok(out)
    }

    pub fn xdp_state(&self, ifindex: u32) -> Result<LinkState> {
        link_state(&self.xdp_pin(ifindex), sys::BPF_LINK_TYPE_XDP, ifindex)
    }

    pub fn tc_state(&self, ifindex: u32) -> Result<LinkState> {
        link_state(&self.tc_pin(ifindex), sys::BPF_LINK_TYPE_TCX, ifindex)
    }

    /// Makes both programs of `dp` run on `ifindex`: a live pinned link gets the program
    /// swapped in atomically, a dead one is replaced, otherwise a new link is created and
    /// pinned. Returns how the XDP program got there.
    pub fn attach(
        &self,
        dp: &mut Datapath,
        ifname: &str,
        ifindex: u32,
        mode: XdpAttach,
    ) -> Result<Attached> {
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
    ) -> Result<Attached> {
        let pin = self.xdp_pin(ifindex);
        let prog = dp.xdp()?;
        let ours = prog.info()?.id();
        let state = self.xdp_state(ifindex)?;
        let reused = reuse_pinned(&pin, state, ours, "XDP", ifname, |link| {
            let id = prog
                .attach_to_link(XdpLink::try_from(link)?)
                .with_context(|| format!("{ifname}: replacing the XDP program"))?;
            Ok(FdLink::try_from(prog.take_link(id)?)?)
        })?;
        if let Some(done) = reused {
            return Ok(done);
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
        Ok(Attached::New(used))
    }

    fn attach_tc(&self, dp: &mut Datapath, ifname: &str, ifindex: u32) -> Result<()> {
        let pin = self.tc_pin(ifindex);
        let prog = dp.egress()?;
        let ours = prog.info()?.id();
        let state = self.tc_state(ifindex)?;
        let reused = reuse_pinned(&pin, state, ours, "TC egress", ifname, |link| {
            let id = prog
                .attach_to_link(SchedClassifierLink::try_from(link)?)
                .with_context(|| format!("{ifname}: replacing the TC egress program"))?;
            Ok(FdLink::try_from(prog.take_link(id)?)?)
        })?;
        if reused.is_some() {
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

/// The state of the link pinned at `pin`, expected to be of `link_type` on `ifindex`.
fn link_state(pin: &Path, link_type: u32, ifindex: u32) -> Result<LinkState> {
    let Some(fd) = sys::obj_get(pin)? else {
        return Ok(LinkState::Missing);
    };
    let info = sys::link_info(&fd)?;
    Ok(if info.link_type == link_type && info.ifindex == ifindex {
        LinkState::Live {
            prog_id: info.prog_id,
        }
    } else {
        LinkState::Dead
    })
}

/// Settles the link of `what` pinned at `pin` (in `state`) for this process's program `ours`:
/// `Some` when the pinned link now runs it (it already did, or `swap` put it in a live link of
/// an earlier agent), `None` when a new link is needed (nothing pinned, or a dead link, which
/// is unpinned here).
fn reuse_pinned(
    pin: &Path,
    state: LinkState,
    ours: u32,
    what: &str,
    ifname: &str,
    swap: impl FnOnce(FdLink) -> Result<FdLink>,
) -> Result<Option<Attached>> {
    match state {
        LinkState::Live { prog_id } if prog_id == ours => Ok(Some(Attached::Already)),
        LinkState::Live { .. } => {
            swap_pinned(pin, swap)?;
            Ok(Some(Attached::Swapped))
        }
        LinkState::Dead => {
            warn!(
                interface = ifname,
                link = what,
                "the pinned link was detached; attaching anew"
            );
            remove_pin(pin)?;
            Ok(None)
        }
        LinkState::Missing => Ok(None),
    }
}

/// Hands the live link pinned at `pin` to `swap` (which puts this process's program in it
/// with `bpf_link_update`: no moment without a program) and pins the result again.
fn swap_pinned(pin: &Path, swap: impl FnOnce(FdLink) -> Result<FdLink>) -> Result<()> {
    let link = PinnedLink::from_pin(pin)?
        .unpin()
        .with_context(|| format!("unpinning {}", pin.display()))?;
    pin_link(swap(link)?, pin)
}

fn pin_link(link: FdLink, pin: &Path) -> Result<()> {
    link.pin(pin)
        .with_context(|| format!("pinning {}", pin.display()))?;
    Ok(())
}
