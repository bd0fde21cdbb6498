//! Throwaway network namespaces: `nwt-<pid>-<n>-<role>`, deleted on drop; leftovers of dead
//! test processes are swept when the first namespace of a process is created.
//!
//! Each namespace also has a scratch directory `<tmp>/nwt-<pid>-<n>-<role>/` for what the
//! agent running "on that node" keeps outside the network namespace: its state directory
//! (lock, snapshots) and, for XDP, a bpffs of its own. `ip netns exec` gives the processes it
//! starts a fresh `/sys`, where `/sys/fs/bpf` is not the host's bpffs, and pins there would
//! die with the process; a bpffs mounted in the scratch directory lives in the test's mount
//! namespace, so pins survive from one `nodewall` process to the next, and tests running in
//! parallel never see each other's pins. It is unmounted on drop, which frees every pinned
//! map, program and link.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, Once};

use anyhow::{bail, Context};

/// Prefix of every namespace the harness creates, and nothing else's.
pub const PREFIX: &str = "nwt-";

static NEXT: AtomicU32 = AtomicU32::new(0);
static SWEEP: Once = Once::new();

pub struct Netns {
    name: String,
    scratch: PathBuf,
    /// Whether the bpffs under `scratch` is mounted.
    bpffs: Mutex<bool>,
}

impl Netns {
    /// Creates a fresh namespace with loopback up. `role` only makes the name readable.
    pub fn new(role: &str) -> anyhow::Result<Self> {
        SWEEP.call_once(sweep_leftovers);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}{}-{n}-{role}", std::process::id());
        run(Command::new("ip").args(["netns", "add", &name]))
            .with_context(|| format!("creating network namespace {name}"))?;
        let ns = Self {
            scratch: std::env::temp_dir().join(&name),
            name,
            bpffs: Mutex::new(false),
        };
        // IPv6 duplicate address detection would keep new addresses unusable for a while.
        ns.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
        ns.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The state directory for `nodewall apply/run --state-dir` on this node.
    pub fn state_dir(&self) -> anyhow::Result<PathBuf> {
        let dir = self.scratch.join("state");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(dir)
    }

    /// This node's bpffs (mounted on first use), for `NODEWALL_BPFFS`.
    pub fn bpffs(&self) -> anyhow::Result<PathBuf> {
        let dir = self.scratch.join("bpffs");
        let mut mounted = self.bpffs.lock().unwrap();
        if !*mounted {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            mount_bpffs(&dir)?;
            *mounted = true;
        }
        Ok(dir)
    }

    /// `ip -n NAME ARGS...`, failing on a non-zero exit.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<()> {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args)).map(|_| ())
    }

    /// A command to run inside the namespace (`ip netns exec NAME PROGRAM`).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs `program args...` inside the namespace; Err with its stderr on failure.
    pub fn exec(&self, program: &str, args: &[&str]) -> anyhow::Result<String> {
        let out = run(self.command(program).args(args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `f` on a thread that joined this namespace: sockets it creates belong here and keep
    /// working from any thread afterwards.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
        enter(&self.name, f)
    }

    /// Loads an nft script (`nft -f -`) into this namespace.
    pub fn nft_load(&self, script: &[u8]) -> anyhow::Result<()> {
        let mut child = self
            .command("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), script)?;
        drop(child.stdin.take());
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "nft -f in {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Writes a sysctl under /proc/sys/net of this namespace.
    pub fn sysctl(&self, key: &str, value: &str) -> anyhow::Result<()> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        self.enter(|| std::fs::write(&path, value))?
            .with_context(|| format!("sysctl {key}={value} in {}", self.name))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        if *self.bpffs.get_mut().unwrap() {
            unmount(&self.scratch.join("bpffs"));
        }
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// [`Netns::enter`] for a namespace known by name.
pub fn enter<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
    let path = format!("/run/netns/{name}");
    std::thread::scope(|s| {
        s.spawn(|| -> anyhow::Result<T> {
            let file = File::open(&path).with_context(|| format!("opening {path}"))?;
            // SAFETY: setns on a namespace file descriptor; affects this thread only,
            // which ends when `f` returns.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                bail!("setns({path}): {}", std::io::Error::last_os_error());
            }
            Ok(f())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("thread in namespace {name} panicked"))?
    })
}

fn mount_bpffs(dir: &Path) -> anyhow::Result<()> {
    let c = cpath(dir)?;
    // SAFETY: valid NUL-terminated strings; a bpffs mount has no other preconditions.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            c.as_ptr(),
            c"bpf".as_ptr(),
            0,
            c"mode=0700".as_ptr().cast(),
        )
    };
    if rc != 0 {
        bail!(
            "mounting a bpffs at {}: {}",
            dir.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Lazily unmounts `dir` (nothing in it is in use by then: its agents have exited).
fn unmount(dir: &Path) {
    if let Ok(c) = cpath(dir) {
        // SAFETY: valid NUL-terminated path.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

fn cpath(p: &Path) -> anyhow::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    Ok(std::ffi::CString::new(p.as_os_str().as_bytes())?)
}

/// Runs a command; Err (with stderr) unless it exits 0.
pub fn run(cmd: &mut Command) -> anyhow::Result<Output> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// The pid in a name `nwt-<pid>-...`, if the name is one of ours and that process is gone.
fn dead_owner(name: &str) -> bool {
    let Some(pid) = name
        .strip_prefix(PREFIX)
        .and_then(|rest| rest.split('-').next())
        .and_then(|p| p.parse::<u32>().ok())
    else {
        return false;
    };
    !Path::new(&format!("/proc/{pid}")).exists()
}

/// Deletes `nwt-<pid>-...` namespaces whose process is gone (a killed earlier run), with
/// their bpffs mounts and scratch directories; those of live processes (parallel test
/// binaries) are left alone.
fn sweep_leftovers() {
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if dead_owner(&name) {
                let _ = Command::new("ip").args(["netns", "del", &name]).output();
            }
        }
    }
    let tmp = std::env::temp_dir();
    // Mount points are the 5th field of mountinfo (octal escapes only for odd characters,
    // which our paths do not have).
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for point in mounts.lines().filter_map(|l| l.split(' ').nth(4)) {
        let point = Path::new(point);
        let owner = point
            .strip_prefix(&tmp)
            .ok()
            .and_then(|rel| rel.components().next())
            .and_then(|c| c.as_os_str().to_str());
        if owner.is_some_and(dead_owner) {
            unmount(point);
        }
    }
    if let Ok(entries) = std::fs::read_dir(&tmp) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if dead_owner(&name) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}
