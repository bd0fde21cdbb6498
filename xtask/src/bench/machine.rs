//! The machine, kernel and tool versions a run was measured on, recorded in the page.

use std::process::Command;

fn first_line(cmd: &mut Command) -> String {
    cmd.output()
        .ok()
        .map(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "not found".into())
}

fn cpuinfo_field(field: &str) -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    text.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split(':').nth(1))
        .map(|v| v.trim().to_string())
}

fn meminfo_gib() -> String {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kib: f64 = text
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    format!("{:.1} GiB", kib / 1024.0 / 1024.0)
}

fn os_name() -> String {
    std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "unknown".into())
}

pub fn describe(nodewall_version: &str) -> Vec<(String, String)> {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let root = crate::shell::root();
    let rows = [
        (
            "date (UTC)",
            first_line(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M"])),
        ),
        (
            "CPU",
            format!(
                "{} × {}",
                cpus,
                cpuinfo_field("model name").unwrap_or_else(|| "unknown".into())
            ),
        ),
        ("memory", meminfo_gib()),
        (
            "load average at start",
            load.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
        ),
        ("OS", os_name()),
        ("kernel", first_line(Command::new("uname").args(["-srm"]))),
        ("nodewall", nodewall_version.to_string()),
        (
            "git commit",
            first_line(
                Command::new("git")
                    .args(["rev-parse", "--short", "HEAD"])
                    .current_dir(&root),
            ),
        ),
        ("rustc", first_line(Command::new("rustc").arg("-V"))),
        ("nft", first_line(Command::new("nft").arg("--version"))),
        ("iptables", first_line(Command::new("iptables").arg("-V"))),
        ("ipset", first_line(Command::new("ipset").arg("-v"))),
        (
            "bpftool",
            first_line(Command::new("bpftool").arg("version")),
        ),
    ];
    rows.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}
