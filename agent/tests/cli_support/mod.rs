//! Running the `nodewall` binary as a user would, for the CLI tests.

#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// The binary under test: this package's, or `NODEWALL_BIN` (to check that a test fails
/// against an older build).
pub fn bin() -> PathBuf {
    std::env::var_os("NODEWALL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_nodewall")))
}

pub fn nodewall(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .output()
        .expect("run nodewall")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn example(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/examples")
        .join(name)
        .display()
        .to_string()
}

pub fn temp_config(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

/// `explain` of a TCP packet from 203.0.113.7 to `port` under `cfg`, then `extra`.
pub fn explain_tcp<'a>(cfg: &'a str, port: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "explain",
        "-c",
        cfg,
        "--from",
        "203.0.113.7",
        "--protocol",
        "tcp",
        "--port",
        port,
    ];
    args.extend_from_slice(extra);
    args
}

/// Runs nodewall with its standard output on a pipe whose reader is already gone, as
/// `nodewall ... | head -1` is once `head` has its line: every write fails with EPIPE.
pub fn nodewall_into_closed_pipe(args: &[&str], stdin: Option<&[u8]>) -> Output {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fresh descriptors, each owned exactly once below.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: as above.
    drop(unsafe { std::fs::File::from_raw_fd(fds[0]) });
    // SAFETY: as above.
    let writer = unsafe { std::fs::File::from_raw_fd(fds[1]) };
    let mut child = Command::new(bin())
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .expect("run nodewall");
    if let Some(input) = stdin {
        // The child may be gone before it reads everything: that is fine.
        let _ = child.stdin.take().unwrap().write_all(input);
    }
    child.wait_with_output().expect("wait for nodewall")
}

/// Whether this process may read the kernel's firewall state (root).
pub fn is_root() -> bool {
    // SAFETY: plain syscall.
    unsafe { libc::geteuid() == 0 }
}
