//! Throwaway network namespaces for every measurement, so nothing the bench installs ever
//! reaches the machine's own namespace. Names are `nwb-<pid>-<tag>`: a later run removes the
//! leftovers of a run that died (its pid is gone) without touching a concurrent one.
//!
//! Each network namespace comes with its own persistent mount namespace holding a private
//! bpffs on /sys/fs/bpf, so the XDP backend's pins of one namespace never meet another's (or
//! the machine's), whatever pin path the agent uses.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context};

const PREFIX: &str = "nwb-";
/// Where the mount namespaces are held (bind-mounted nsfs files), as /run/netns holds netns.
const MNT_DIR: &str = "/run/nwb-mnt";

/// Interface names inside the pair: the "client" side and the node's uplink.
pub const CLIENT_IF: &str = "nwa";
pub const NODE_IF: &str = "nwb";
/// Host addresses (RFC 2544 benchmarking range and ULA only).
pub const CLIENT_V4: &str = "198.19.254.1";
pub const NODE_V4: &str = "198.19.254.2";
pub const CLIENT_V6: &str = "fd00:b::1";
pub const NODE_V6: &str = "fd00:b::2";

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A network namespace that is deleted, with every process still in it, on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn new(tag: &str) -> anyhow::Result<Self> {
        let name = format!(
            "{PREFIX}{}-{}{}",
            std::process::id(),
            tag,
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name])?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        mount_namespace(&ns.name)?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `program` run inside the namespace and its mount namespace (nsenter, not `ip netns exec`,
    /// which would remount /sys and hide the bpffs).
    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.name))
            .arg(format!("--mount={MNT_DIR}/{}", self.name))
            .arg(program);
        c
    }

    /// Runs `program args` in the namespace; its stdout, or an error with its stderr.
    pub fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<String> {
        output(self.cmd(program).args(args))
    }

    /// Runs `program args` with `input` on stdin.
    pub fn run_stdin(&self, program: &str, args: &[&str], input: &[u8]) -> anyhow::Result<String> {
        use std::io::Write;
        let mut cmd = self.cmd(program);
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().with_context(|| format!("starting {program}"))?;
        let mut stdin = child.stdin.take().expect("piped");
        let input = input.to_vec();
        // Written from a thread: a big input must not deadlock against a full stdout pipe.
        let writer = std::thread::spawn(move || stdin.write_all(&input));
        let out = child.wait_with_output()?;
        writer
            .join()
            .expect("stdin writer")
            .with_context(|| format!("writing to {program}"))?;
        check(program, args, out)
    }

    pub fn ip(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// Moves the calling thread into the namespace (setns affects only this thread).
    pub fn enter_thread(&self) -> anyhow::Result<()> {
        let f = File::open(format!("/run/netns/{}", self.name))?;
        // SAFETY: setns on a valid namespace fd; it changes only the calling thread's netns.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!(
                "setns into {}: {}",
                self.name,
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }

    /// Runs `f` on a new thread inside the namespace.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    ) -> std::thread::JoinHandle<anyhow::Result<T>> {
        let path = format!("/run/netns/{}", self.name);
        let name = self.name.clone();
        std::thread::spawn(move || {
            let file = File::open(&path)?;
            // SAFETY: as in `enter_thread`.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                bail!("setns into {name}: {}", std::io::Error::last_os_error());
            }
            f()
        })
    }

    /// A procfs file as seen from inside the namespace (e.g. `net/snmp`).
    pub fn proc_net(&self, file: &str) -> anyhow::Result<String> {
        self.run("cat", &[&format!("/proc/net/{file}")])
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        remove(&self.name);
    }
}

fn remove(name: &str) {
    kill_members(name);
    let _ = ip(&["netns", "del", name]);
    let held = format!("{MNT_DIR}/{name}");
    let _ = output(Command::new("umount").args(["-l", &held]));
    let _ = std::fs::remove_file(held);
}

/// A persistent mount namespace for `name` with a fresh bpffs on /sys/fs/bpf, private so the
/// mount never propagates back to the machine's namespace.
fn mount_namespace(name: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(MNT_DIR)?;
    // Holding a mount namespace by bind-mounting its nsfs file needs a private parent mount.
    if !crate::shell::succeeds(Command::new("mountpoint").args(["-q", MNT_DIR])) {
        output(Command::new("mount").args(["--bind", MNT_DIR, MNT_DIR]))?;
        output(Command::new("mount").args(["--make-private", MNT_DIR]))?;
    }
    let held = format!("{MNT_DIR}/{name}");
    std::fs::write(&held, b"")?;
    output(
        Command::new("unshare")
            .arg(format!("--mount={held}"))
            .args([
                "--propagation",
                "private",
                "mount",
                "-t",
                "bpf",
                "bpf",
                "/sys/fs/bpf",
            ]),
    )?;
    Ok(())
}

/// Two namespaces joined by a veth pair: `client` (traffic source) and `node` (the filtered host,
/// uplink `nwb`), with static neighbour entries so no ARP/ND exchange perturbs a measurement.
pub struct Pair {
    pub client: Netns,
    pub node: Netns,
    pub node_mac: String,
    pub client_mac: String,
}

impl Pair {
    pub fn new(tag: &str) -> anyhow::Result<Self> {
        let client = Netns::new(&format!("{tag}c"))?;
        let node = Netns::new(&format!("{tag}n"))?;
        client.ip(&[
            "link",
            "add",
            CLIENT_IF,
            "type",
            "veth",
            "peer",
            "name",
            NODE_IF,
            "netns",
            node.name(),
        ])?;
        for (ns, dev, v4, v6) in [
            (&client, CLIENT_IF, CLIENT_V4, CLIENT_V6),
            (&node, NODE_IF, NODE_V4, NODE_V6),
        ] {
            ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", dev])?;
            ns.ip(&["addr", "add", &format!("{v6}/64"), "dev", dev, "nodad"])?;
            ns.ip(&["link", "set", dev, "up"])?;
        }
        let client_mac = mac(&client, CLIENT_IF)?;
        let node_mac = mac(&node, NODE_IF)?;
        for (ns, dev, v4, v6, lladdr) in [
            (&client, CLIENT_IF, NODE_V4, NODE_V6, &node_mac),
            (&node, NODE_IF, CLIENT_V4, CLIENT_V6, &client_mac),
        ] {
            for addr in [v4, v6] {
                ns.ip(&[
                    "neigh",
                    "replace",
                    addr,
                    "lladdr",
                    lladdr,
                    "dev",
                    dev,
                    "nud",
                    "permanent",
                ])?;
            }
        }
        Ok(Self {
            client,
            node,
            node_mac,
            client_mac,
        })
    }

    /// Routes a whole source range back to the client, so replies to spoofed sources (the
    /// generated packets come from policy CIDRs) leave through the veth instead of failing.
    pub fn route_sources_via_client(&self) -> anyhow::Result<()> {
        self.node
            .ip(&["route", "replace", "198.18.0.0/15", "via", CLIENT_V4])?;
        self.node
            .ip(&["-6", "route", "replace", "fd00::/8", "via", CLIENT_V6])?;
        Ok(())
    }
}

fn mac(ns: &Netns, dev: &str) -> anyhow::Result<String> {
    let text = ns.ip(&["-j", "link", "show", "dev", dev])?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    v[0]["address"]
        .as_str()
        .map(str::to_string)
        .context("no MAC address in `ip link` output")
}

/// Removes namespaces left by bench runs whose process is gone.
pub fn sweep() {
    let Ok(list) = ip(&["netns", "list"]) else {
        return;
    };
    for line in list.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or("");
        if pid.parse::<u32>().is_ok() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("bench: removing leftover namespace {name}");
            remove(name);
        }
    }
}

/// Kills, by pid, the processes still inside one of the bench's own namespaces.
fn kill_members(name: &str) {
    if let Ok(pids) = ip(&["netns", "pids", name]) {
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            // SAFETY: plain kill(2) of a process inside a namespace this bench created.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

fn ip(args: &[&str]) -> anyhow::Result<String> {
    output(Command::new("ip").args(args))
}

/// stdout of a command, or an error carrying its stderr.
pub fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let args: Vec<String> = cmd
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting {program}"))?;
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    check(&program, &refs, out)
}

fn check(program: &str, args: &[&str], out: std::process::Output) -> anyhow::Result<String> {
    if !out.status.success() {
        // nsenter's own arguments say nothing; name the program it ran.
        let skip = if program == "nsenter" {
            args.iter().take_while(|a| a.starts_with("--")).count()
        } else {
            0
        };
        let (name, rest): (&str, &[&str]) = match args.get(skip) {
            Some(p) if skip > 0 => (p, &args[skip + 1..]),
            _ => (program, args),
        };
        let name = name.rsplit('/').next().unwrap_or(name);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stderr = stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .take(3)
            .collect::<Vec<_>>()
            .join(" / ");
        bail!(
            "`{program_args}` failed ({}): {stderr}",
            out.status,
            program_args = [name]
                .iter()
                .chain(rest.iter().take(3))
                .copied()
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
