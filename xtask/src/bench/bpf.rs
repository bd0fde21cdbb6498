//! The few bpf(2) commands the classifier benchmark needs, called directly: loading the bare
//! `XDP_PASS` baseline (two instructions), opening nodewall's attached program by id, and
//! `BPF_PROG_TEST_RUN`. No loader library, so the baseline costs exactly what the kernel charges
//! for running any XDP program.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::bail;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_ENABLE_STATS: libc::c_long = 32;
/// `BPF_STATS_RUN_TIME`: the kernel times every program run while an fd from
/// `BPF_ENABLE_STATS` is open.
const BPF_STATS_RUN_TIME: u32 = 0;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
/// Large enough for every `union bpf_attr` layout used here.
const ATTR_SIZE: usize = 128;

struct Attr([u8; ATTR_SIZE]);

impl Attr {
    fn new() -> Self {
        Self([0; ATTR_SIZE])
    }
    fn u32(&mut self, offset: usize, v: u32) -> &mut Self {
        self.0[offset..offset + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64(&mut self, offset: usize, v: u64) -> &mut Self {
        self.0[offset..offset + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn get_u32(&self, offset: usize) -> u32 {
        u32::from_ne_bytes(self.0[offset..offset + 4].try_into().expect("4 bytes"))
    }
    fn call(&mut self, cmd: libc::c_long) -> std::io::Result<i64> {
        // SAFETY: the attr buffer is valid for ATTR_SIZE bytes and every pointer stored in it
        // outlives the call (the callers keep their buffers alive across it).
        let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, self.0.as_mut_ptr(), ATTR_SIZE as u32) };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(r)
    }
    /// [`Self::call`] for a command that returns a new fd; `what` names it in the error.
    fn call_fd(
        &mut self,
        cmd: libc::c_long,
        what: impl std::fmt::Display,
    ) -> anyhow::Result<OwnedFd> {
        let fd = self.call(cmd).map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
        // SAFETY: the kernel returned a new fd that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }
}

/// Loads `r0 = XDP_PASS; exit`: the cheapest XDP program the kernel can run.
pub fn load_xdp_pass() -> anyhow::Result<OwnedFd> {
    load_xdp_const(XDP_PASS, b"nwb_pass")
}

/// Loads `r0 = XDP_DROP; exit`: the cheapest possible XDP filter, the floor a drop can cost.
pub fn load_xdp_drop() -> anyhow::Result<OwnedFd> {
    load_xdp_const(XDP_DROP, b"nwb_drop")
}

fn load_xdp_const(verdict: u32, prog_name: &[u8; 8]) -> anyhow::Result<OwnedFd> {
    // mov64 r0, verdict (BPF_ALU64 | BPF_MOV | BPF_K), then exit (BPF_JMP | BPF_EXIT).
    let v = verdict as u8;
    let insns: [u64; 2] = [
        u64::from_le_bytes([0xb7, 0, 0, 0, v, 0, 0, 0]),
        u64::from_le_bytes([0x95, 0, 0, 0, 0, 0, 0, 0]),
    ];
    let license = b"GPL\0";
    let mut name = [0u8; 16];
    name[..8].copy_from_slice(prog_name);
    let mut attr = Attr::new();
    attr.u32(0, BPF_PROG_TYPE_XDP)
        .u32(4, insns.len() as u32)
        .u64(8, insns.as_ptr() as u64)
        .u64(16, license.as_ptr() as u64)
        .u32(68, BPF_XDP);
    attr.0[48..64].copy_from_slice(&name);
    attr.call_fd(BPF_PROG_LOAD, "loading a bare XDP program")
}

/// Attaches `prog` to `ifindex` (resolved in the calling thread's namespace) in native mode
/// through a BPF link, which detaches when the returned fd closes.
pub fn attach_xdp_native(prog: &OwnedFd, ifindex: u32) -> anyhow::Result<OwnedFd> {
    const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
    let mut attr = Attr::new();
    attr.u32(0, prog.as_raw_fd() as u32)
        .u32(4, ifindex)
        .u32(8, BPF_XDP)
        .u32(12, XDP_FLAGS_DRV_MODE);
    attr.call_fd(
        BPF_LINK_CREATE,
        format_args!("attaching XDP to ifindex {ifindex}"),
    )
}

/// An fd for a loaded program, by the id `ip link` / bpftool show.
pub fn prog_fd_by_id(id: u32) -> anyhow::Result<OwnedFd> {
    let mut attr = Attr::new();
    attr.u32(0, id);
    attr.call_fd(
        BPF_PROG_GET_FD_BY_ID,
        format_args!("opening BPF program {id}"),
    )
}

/// Loads the parse-only reference program (`nodewall_bench_parse`) of the XDP object at
/// `object`: it parses the headers as nodewall's classifier does, then passes.
pub fn load_bench_parse(object: &std::path::Path) -> anyhow::Result<OwnedFd> {
    use anyhow::Context;
    const NAME: &str = "nodewall_bench_parse";
    load_bench(object, NAME)?.with_context(|| format!("{} has no program {NAME}", object.display()))
}

/// Loads the XDP program `name` of the object at `object`, if the object has one.
pub fn load_bench(object: &std::path::Path, name: &str) -> anyhow::Result<Option<OwnedFd>> {
    use anyhow::Context;
    use std::os::fd::AsFd;
    let mut ebpf = aya::Ebpf::load_file(object)
        .with_context(|| format!("loading the XDP object {}", object.display()))?;
    let Some(prog) = ebpf.program_mut(name) else {
        return Ok(None);
    };
    let prog: &mut aya::programs::Xdp = prog.try_into()?;
    prog.load().with_context(|| format!("loading {name}"))?;
    // The clone keeps the program loaded once `ebpf` (and its maps) are dropped.
    Ok(Some(prog.fd()?.as_fd().try_clone_to_owned()?))
}

/// `struct xdp_md` as test-run input: the frame spans the whole buffer and arrived on `ifindex`
/// (which the kernel resolves in the calling thread's network namespace).
fn xdp_md(len: usize, ifindex: u32) -> [u32; 6] {
    [0, len as u32, 0, ifindex, 0, 0]
}

/// One `BPF_PROG_TEST_RUN`: the program's verdict and the kernel's mean ns per run.
pub fn test_run(
    prog: &OwnedFd,
    frame: &[u8],
    ifindex: u32,
    repeat: u32,
) -> anyhow::Result<(u32, u32)> {
    let ctx = xdp_md(frame.len(), ifindex);
    let mut out = vec![0u8; frame.len() + 256];
    let mut attr = Attr::new();
    attr.u32(0, prog.as_raw_fd() as u32)
        .u32(8, frame.len() as u32)
        .u32(12, out.len() as u32)
        .u64(16, frame.as_ptr() as u64)
        .u64(24, out.as_mut_ptr() as u64)
        .u32(32, repeat)
        .u32(40, std::mem::size_of_val(&ctx) as u32)
        .u64(48, ctx.as_ptr() as u64);
    if let Err(e) = attr.call(BPF_PROG_TEST_RUN) {
        bail!("BPF_PROG_TEST_RUN: {e}");
    }
    Ok((attr.get_u32(4), attr.get_u32(36)))
}

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;

/// Turns on the kernel's per-program run-time statistics (`run_time_ns`, `run_cnt` in
/// `bpftool prog show`) until the returned fd closes. Unlike the `kernel.bpf_stats_enabled`
/// sysctl it leaves nothing behind if the bench dies.
pub fn enable_run_time_stats() -> anyhow::Result<OwnedFd> {
    let mut attr = Attr::new();
    attr.u32(0, BPF_STATS_RUN_TIME);
    attr.call_fd(BPF_ENABLE_STATS, "BPF_ENABLE_STATS")
}
