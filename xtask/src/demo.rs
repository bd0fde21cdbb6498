//! `cargo xtask demo`: nodewall guarding a TKE node, in a sandbox of network namespaces.
//!
//! ```text
//!   internet (198.18.1.2, fd00:1::2) ── eth0 ┐
//!   control plane (198.18.2.2)       ── eth1 ├─ node: nodewall run, listeners on 22 8080 10250 10255 30080 udp/30053
//!   pod network (198.18.3.2)         ── eth2 ┘
//! ```
//!
//! It starts `nodewall run` in the node namespace with the `tke-node` profile, sends probes from
//! each neighbour, and prints what the policy says (`nodewall explain`) next to what the kernel
//! did; then deletes the table behind the agent's back (drift repair), edits the config (live
//! reload), and prints the metrics. Only namespaces created here are touched (all named
//! `nwt-demo-*`; leftovers of an interrupted run are swept first), and they are removed at the
//! end: nothing changes in the machine's own network namespace.

use std::fs;
use std::io::Write;
use std::net::{Ipv6Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use socket2::{Domain, Protocol, Socket, Type};

use crate::shell::{cargo, root, run as sh};

const PREFIX: &str = "nwt-demo-";
const METRICS: &str = "127.0.0.1:9469";

const CONFIG: &str = r#"# A TKE worker node: the tke-node baseline (TKE's default node security group).
backend: nft
mode: enforce
interfaces: [eth0, eth1, eth2]
profile: tke-node
networks:
  cluster: [198.18.2.0/24]     # the VPC / node network (here: the control-plane link)
  container: [198.18.3.0/24, "fd00:3::/64"]   # the pod network
rules:
  - name: deny-kubelet-readonly
    action: deny
    protocol: tcp
    ports: ["10255"]
    from: ["0.0.0.0/0", "::/0"]
failsafe:
  - name: ssh-from-cluster
    protocol: tcp
    ports: ["22"]
    from: [cluster]
"#;

/// The egress section the demo adds last: one egress rule and the metadata switch.
const EGRESS: &str = r#"egress:
  metadata:
    deny-pods: true            # pods never reach the cloud metadata service; the node does
  rules:
    - name: no-smtp-out
      action: deny
      protocol: tcp
      ports: ["25"]
      to: ["0.0.0.0/0", "::/0"]
"#;

/// The AWS instance metadata service's IPv6 address, served here by the internet neighbour.
const IMDS6: &str = "fd00:ec2::254";

/// The rule the demo adds while the agent runs.
const RELOAD_RULE: &str = r#"  - name: web-from-internet
    action: allow
    protocol: tcp
    ports: ["8080"]
    from: ["198.18.1.0/24"]
"#;

pub fn demo() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { geteuid() } != 0 {
        bail!("the demo creates network namespaces: run it as root");
    }
    sh(cargo().args(["build", "--quiet", "--bin", "nodewall"]))?;
    let bin = root().join("target/debug/nodewall");
    sweep_leftovers();
    let mut sb = Sandbox::create()?;
    let result = run_demo(&mut sb, &bin);
    drop(sb);
    result
}

fn run_demo(sb: &mut Sandbox, bin: &Path) -> anyhow::Result<()> {
    let config = sb.dir.join("config.yaml");
    fs::write(&config, CONFIG)?;
    for port in [22, 8080, 10250, 10255, 30080] {
        let listen = format!("TCP6-LISTEN:{port},fork,reuseaddr,ipv6only=0");
        sb.spawn("node", "socat", &[&listen, "SYSTEM:echo ok"], None)?;
    }
    // What the node and the pod connect to in the egress section.
    for port in [25, 80, 8080] {
        let listen = format!("TCP6-LISTEN:{port},fork,reuseaddr,ipv6only=0");
        sb.spawn("inet", "socat", &[&listen, "SYSTEM:echo ok"], None)?;
    }
    // UDP is answered in-process (socat's UDP6-RECVFROM,fork forked a process and a shell per
    // datagram, with a 0.5 s budget for the reply: on a loaded machine it missed it).
    let xtask = std::env::current_exe()?.display().to_string();
    sb.spawn("node", &xtask, &["udp-echo", "--port", "30053"], None)?;
    let log = sb.dir.join("nodewall.log");
    let state = sb.dir.join("state");
    let (cfg, st) = (config.display().to_string(), state.display().to_string());
    let bin_s = bin.display().to_string();
    let args = [
        "run",
        "-c",
        &cfg,
        "--state-dir",
        &st,
        "--metrics-addr",
        METRICS,
    ];
    sb.spawn("node", &bin_s, &args, Some(&log))?;
    let started = Instant::now();
    wait_for(Duration::from_secs(10), || {
        sb.http_get("/readyz")
            // The agent answers an HTTP/1.0 request as HTTP/1.0.
            .is_some_and(|r| r.split_whitespace().nth(1) == Some("200"))
    })
    .with_context(|| {
        // The log goes with the sandbox: show its end here.
        let text = fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "nodewall did not become ready; its log ends:\n{}",
            tail.join("\n")
        )
    })?;
    println!(
        "\nnodewall run is enforcing tke-node in namespace {} (ready in {} ms)\n",
        sb.ns("node"),
        started.elapsed().as_millis()
    );
    print_log_lines(&log, "policy applied", 1);

    let probes = probes();
    println!("\n== Probes: the policy's verdict (nodewall explain) and what the kernel did\n");
    let expected = explain(bin, &config, &probes)?;
    let mut mismatches = 0;
    println!(
        "{:<14} {:<22} {:<8} {:<40} {:<8}",
        "FROM", "TO NODE", "POLICY", "RULE / REASON", "KERNEL"
    );
    for (p, (allow, why)) in probes.iter().zip(&expected) {
        let (got, mismatch) = sb.check(p, *allow);
        mismatches += usize::from(!mismatch.is_empty());
        println!(
            "{:<14} {:<22} {:<8} {:<40} {:<8}{}",
            p.from_name,
            format!("{} {}", p.proto, p.target()),
            if *allow { "allow" } else { "deny" },
            why,
            if got { "passed" } else { "dropped" },
            mismatch
        );
    }

    println!("\n== Drift repair: `nft delete table inet nodewall` behind the agent's back\n");
    sb.netns("node")
        .args(["nft", "delete", "table", "inet", "nodewall"])
        .status()?;
    let t = Instant::now();
    let restored = wait_for(Duration::from_secs(5), || {
        sb.netns("node")
            .args(["nft", "list", "table", "inet", "nodewall"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    match restored {
        Ok(()) => println!("table restored after {} ms", t.elapsed().as_millis()),
        Err(_) => println!("table NOT restored within 5 s"),
    }
    print_log_lines(&log, "drift", 2);

    println!("\n== Live reload: allow tcp/8080 from the internet by editing the config file\n");
    let web = &probes[probes.len() - 1];
    let before = sb.probe(web);
    let generation = sb.generation().unwrap_or(0);
    let edited = CONFIG.replace("failsafe:", &format!("{RELOAD_RULE}failsafe:"));
    let tmp = sb.dir.join("config.yaml.new");
    fs::write(&tmp, &edited)?;
    fs::rename(&tmp, &config)?;
    let t = Instant::now();
    let applied = wait_for(Duration::from_secs(5), || {
        sb.generation().is_some_and(|g| g > generation)
    });
    let took = t.elapsed().as_millis();
    let after = sb.probe(web);
    println!(
        "internet -> tcp/8080: {} before; new policy {} {took} ms after the file changed; {} now",
        if before { "passed" } else { "dropped" },
        if applied.is_ok() {
            "applied"
        } else {
            "NOT applied"
        },
        if after { "passes" } else { "STILL DROPPED" },
    );
    print_log_lines(&log, "policy applied", 1);

    mismatches += egress(sb, bin, &config, &edited)?;

    println!("\n== Metrics (GET http://{METRICS}/metrics inside the node namespace)\n");
    let metrics = sb.http_get("/metrics").unwrap_or_default();
    for line in metrics.lines().filter(|l| interesting(l)) {
        println!("{line}");
    }
    println!("\n== Dropped-packet samples from the agent's log\n");
    print_log_lines(&log, "packet dropped", 5);
    println!(
        "\nfull agent log: {} (removed with the sandbox)",
        log.display()
    );

    if mismatches > 0 {
        bail!("{mismatches} probe(s) disagreed with the policy");
    }
    Ok(())
}

/// The egress section: the config gains one egress rule and the metadata switch; new
/// connections from the node and from the pod (routed through the node) are judged.
fn egress(sb: &Sandbox, bin: &Path, config: &Path, current: &str) -> anyhow::Result<usize> {
    println!("\n== Egress: one egress rule and the metadata switch, added to the config\n");
    for line in EGRESS.lines() {
        println!("  {line}");
    }
    let tmp = sb.dir.join("config.yaml.new");
    fs::write(&tmp, format!("{current}{EGRESS}"))?;
    fs::rename(&tmp, config)?;
    // Applied once the kernel has the egress chains (the output hook's base chain).
    let applied = wait_for(Duration::from_secs(5), || {
        sb.netns("node")
            .args(["nft", "list", "chain", "inet", "nodewall", "output"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if applied.is_err() {
        println!("the egress policy was NOT applied within 5 s");
    }
    // (from namespace, label, pod address for explain, destination, port)
    let probes = [
        ("node", "node", None, "198.18.1.2", 25, "smtp"),
        ("node", "node", None, "198.18.1.2", 8080, "web"),
        ("pod", "pod", Some("198.18.3.2"), "198.18.1.2", 8080, "web"),
        ("node", "node", None, IMDS6, 80, "metadata"),
        ("pod", "pod", Some("fd00:3::2"), IMDS6, 80, "metadata"),
    ];
    let mut input = String::new();
    for (_, _, pod, dst, port, _) in &probes {
        let from = pod
            .map(|p| format!(",\"from\":\"{p}\""))
            .unwrap_or_default();
        input.push_str(&format!(
            "{{\"to\":\"{dst}\",\"protocol\":\"tcp\",\"port\":{port}{from}}}\n"
        ));
    }
    let expected = explain_lines(bin, config, &input, probes.len())?;
    println!(
        "\n{:<6} {:<28} {:<8} {:<24} {:<8}",
        "FROM", "TO", "POLICY", "RULE / REASON", "KERNEL"
    );
    let mut mismatches = 0;
    for ((ns, label, _, dst, port, what), (allow, why)) in probes.iter().zip(&expected) {
        let p = Probe {
            from_ns: ns,
            from_name: label,
            src: "",
            dst,
            proto: "tcp",
            port: *port,
            what,
        };
        let (got, mismatch) = sb.check(&p, *allow);
        mismatches += usize::from(!mismatch.is_empty());
        println!(
            "{:<6} {:<28} {:<8} {:<24} {:<8}{}",
            label,
            format!("tcp {dst} {port} ({what})"),
            if *allow { "allow" } else { "deny" },
            why,
            if got { "passed" } else { "dropped" },
            mismatch
        );
    }
    Ok(mismatches)
}

/// One probe: a connection attempt from a neighbour to the node.
struct Probe {
    from_ns: &'static str,
    from_name: &'static str,
    src: &'static str,
    dst: &'static str,
    proto: &'static str,
    port: u16,
    what: &'static str,
}

impl Probe {
    fn target(&self) -> String {
        match self.proto {
            "icmp" | "icmpv6" => self.what.to_string(),
            _ => format!("{} ({})", self.port, self.what),
        }
    }
}

fn probes() -> Vec<Probe> {
    let p = |from_ns, from_name, src, dst, proto, port, what| Probe {
        from_ns,
        from_name,
        src,
        dst,
        proto,
        port,
        what,
    };
    let inet = ("inet", "internet", "198.18.1.2", "198.18.1.1");
    let inet6 = ("inet", "internet v6", "fd00:1::2", "fd00:1::1");
    let cp = ("cp", "control plane", "198.18.2.2", "198.18.2.1");
    let pod = ("pod", "pod network", "198.18.3.2", "198.18.3.1");
    vec![
        p(inet.0, inet.1, inet.2, inet.3, "tcp", 30080, "NodePort"),
        p(inet.0, inet.1, inet.2, inet.3, "udp", 30053, "NodePort"),
        p(inet.0, inet.1, inet.2, inet.3, "icmp", 0, "ping"),
        p(inet.0, inet.1, inet.2, inet.3, "tcp", 10250, "kubelet"),
        p(inet.0, inet.1, inet.2, inet.3, "tcp", 10255, "kubelet ro"),
        p(inet.0, inet.1, inet.2, inet.3, "tcp", 22, "ssh"),
        p(inet6.0, inet6.1, inet6.2, inet6.3, "tcp", 30080, "NodePort"),
        p(inet6.0, inet6.1, inet6.2, inet6.3, "icmpv6", 0, "ping"),
        p(inet6.0, inet6.1, inet6.2, inet6.3, "tcp", 10250, "kubelet"),
        p(cp.0, cp.1, cp.2, cp.3, "tcp", 10250, "kubelet"),
        p(cp.0, cp.1, cp.2, cp.3, "tcp", 22, "ssh"),
        p(pod.0, pod.1, pod.2, pod.3, "tcp", 8080, "app"),
        p(pod.0, pod.1, pod.2, pod.3, "udp", 30053, "NodePort"),
        // Last: the probe the live reload opens.
        p(inet.0, inet.1, inet.2, inet.3, "tcp", 8080, "app"),
    ]
}

/// `(allowed, rule or reason)` for each probe, from `nodewall explain --batch`.
fn explain(bin: &Path, config: &Path, probes: &[Probe]) -> anyhow::Result<Vec<(bool, String)>> {
    let mut input = String::new();
    for p in probes {
        match p.proto {
            "icmp" | "icmpv6" => input.push_str(&format!(
                "{{\"from\":\"{}\",\"protocol\":\"{}\"}}\n",
                p.src, p.proto
            )),
            _ => input.push_str(&format!(
                "{{\"from\":\"{}\",\"protocol\":\"{}\",\"port\":{}}}\n",
                p.src, p.proto, p.port
            )),
        }
    }
    explain_lines(bin, config, &input, probes.len())
}

/// `(allowed, rule or reason)` for each JSON-lines probe of `input` (`n` of them).
fn explain_lines(
    bin: &Path,
    config: &Path,
    input: &str,
    n: usize,
) -> anyhow::Result<Vec<(bool, String)>> {
    let mut child = Command::new(bin)
        .args(["explain", "--batch", "-c"])
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    child.stdin.take().unwrap().write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("nodewall explain failed ({})", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let verdicts: Vec<(bool, String)> = text
        .lines()
        .map(|l| {
            let allow = json_field(l, "verdict").as_deref() == Some("accept");
            let why = json_field(l, "rule")
                .or_else(|| json_field(l, "reason"))
                .unwrap_or_default();
            (allow, why)
        })
        .collect();
    if verdicts.len() != n {
        bail!("nodewall explain answered {} of {n} probes", verdicts.len());
    }
    Ok(verdicts)
}

/// The string value of `"key":"value"` in one line of our own compact JSON (`None` for null).
fn json_field(line: &str, key: &str) -> Option<String> {
    let at = line.find(&format!("\"{key}\":\""))? + key.len() + 4;
    Some(line[at..].split('"').next()?.to_string())
}

fn interesting(line: &str) -> bool {
    let zero = line.ends_with(" 0");
    ((line.starts_with("nodewall_dropped_packets_total")
        || line.starts_with("nodewall_rule_packets_total"))
        && !zero)
        || line.starts_with("nodewall_drift_repairs_total")
        || line.starts_with("nodewall_policy_generation")
        || line.starts_with("nodewall_apply_duration_seconds_count")
        || line.starts_with("nodewall_drop_samples_total")
        || line.starts_with("nodewall_build_info")
}

fn print_log_lines(log: &Path, needle: &str, max: usize) {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains(needle)).collect();
    if lines.is_empty() {
        println!("  (no log line contains {needle:?})");
    }
    for l in lines.iter().rev().take(max).rev() {
        // `TIMESTAMP LEVEL TARGET: MESSAGE FIELDS`: keep the level and what follows the target.
        let level = l.split_whitespace().nth(1).unwrap_or("");
        let rest = l.split_once(": ").map_or(*l, |(_, r)| r);
        println!("  log {level:<5} {rest}");
    }
}

/// `cargo xtask udp-echo --port N` (hidden): answers every datagram to port N, IPv4 or IPv6,
/// with "pong", from this one process, until it is killed.
pub fn udp_echo(args: &[String]) -> anyhow::Result<()> {
    let port: u16 = match args {
        [flag, port] if flag == "--port" => port.parse().context("udp-echo --port")?,
        _ => bail!("usage: cargo xtask udp-echo --port N"),
    };
    let socket = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_only_v6(false)?;
    socket.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)).into())?;
    let socket = UdpSocket::from(socket);
    let mut buf = [0u8; 2048];
    loop {
        let (_, peer) = socket.recv_from(&mut buf)?;
        // A reply that cannot be sent is the prober's loss, not a reason to stop serving.
        let _ = socket.send_to(b"pong\n", peer);
    }
}

fn wait_for(within: Duration, mut cond: impl FnMut() -> bool) -> anyhow::Result<()> {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if cond() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("timed out after {within:?}")
}

/// The demo's namespaces, veths and processes; removed on drop.
struct Sandbox {
    id: String,
    dir: PathBuf,
    children: Vec<Child>,
    created: Vec<String>,
}

impl Sandbox {
    fn create() -> anyhow::Result<Sandbox> {
        let id = std::process::id().to_string();
        let dir = std::env::temp_dir().join(format!("{PREFIX}{id}"));
        fs::create_dir_all(&dir)?;
        let mut sb = Sandbox {
            id,
            dir,
            children: Vec::new(),
            created: Vec::new(),
        };
        for ns in ["node", "inet", "cp", "pod"] {
            let name = sb.ns(ns);
            sh(Command::new("ip").args(["netns", "add", &name]))?;
            sb.created.push(name);
            sb.ip(ns, &["link", "set", "lo", "up"])?;
        }
        // Each link is created inside the namespaces, never in the machine's own.
        for (ifname, peer, v4, v6) in [
            ("eth0", "inet", "198.18.1", Some("fd00:1::")),
            ("eth1", "cp", "198.18.2", None),
            ("eth2", "pod", "198.18.3", Some("fd00:3::")),
        ] {
            let peer_ns = sb.ns(peer);
            sb.ip(
                "node",
                &[
                    "link", "add", ifname, "type", "veth", "peer", "name", "eth0", "netns",
                    &peer_ns,
                ],
            )?;
            sb.ip(
                "node",
                &["addr", "add", &format!("{v4}.1/24"), "dev", ifname],
            )?;
            sb.ip(peer, &["addr", "add", &format!("{v4}.2/24"), "dev", "eth0"])?;
            if let Some(v6) = v6 {
                sb.ip(
                    "node",
                    &["addr", "add", &format!("{v6}1/64"), "dev", ifname, "nodad"],
                )?;
                sb.ip(
                    peer,
                    &["addr", "add", &format!("{v6}2/64"), "dev", "eth0", "nodad"],
                )?;
            }
            let v6_route = v6.map(|v6| format!("{v6}1"));
            sb.ip("node", &["link", "set", ifname, "up"])?;
            sb.ip(peer, &["link", "set", "eth0", "up"])?;
            sb.ip(
                peer,
                &["route", "add", "default", "via", &format!("{v4}.1")],
            )?;
            if let Some(gw) = v6_route.filter(|_| peer == "pod") {
                sb.ip(peer, &["-6", "route", "add", "default", "via", &gw])?;
            }
        }
        sb.ip("node", &["route", "add", "default", "via", "198.18.1.2"])?;
        // The node routes the pod network; the internet neighbour also answers as the
        // metadata service (its IPv6 address, in the sandbox's fd00::/8) and routes back to
        // the pods through the node.
        sb.ip(
            "node",
            &["-6", "route", "add", "default", "via", "fd00:1::2"],
        )?;
        sb.ip(
            "inet",
            &["-6", "addr", "add", &format!("{IMDS6}/128"), "dev", "lo"],
        )?;
        sb.ip(
            "inet",
            &["-6", "route", "add", "fd00:3::/64", "via", "fd00:1::1"],
        )?;
        sb.ip(
            "inet",
            &["route", "add", "198.18.3.0/24", "via", "198.18.1.1"],
        )?;
        for ns in ["node", "inet", "cp", "pod"] {
            let name = sb.ns(ns);
            let _ = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &name,
                    "sysctl",
                    "-qw",
                    "net.ipv6.conf.all.forwarding=1",
                    "net.ipv4.ip_forward=1",
                ])
                .status();
        }
        Ok(sb)
    }

    fn ns(&self, short: &str) -> String {
        format!("{PREFIX}{}-{short}", self.id)
    }

    fn netns(&self, short: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(short)]);
        c
    }

    fn ip(&self, short: &str, args: &[&str]) -> anyhow::Result<()> {
        let status = Command::new("ip")
            .args(["-n", &self.ns(short)])
            .args(args)
            .status()?;
        if !status.success() {
            bail!("ip -n {} {} failed", self.ns(short), args.join(" "));
        }
        Ok(())
    }

    fn spawn(
        &mut self,
        short: &str,
        prog: &str,
        args: &[&str],
        log: Option<&Path>,
    ) -> anyhow::Result<()> {
        let mut cmd = self.netns(short);
        cmd.arg(prog)
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        match log {
            Some(path) => cmd.stderr(fs::File::create(path)?),
            None => cmd.stderr(Stdio::null()),
        };
        self.children
            .push(cmd.spawn().with_context(|| format!("starting {prog}"))?);
        Ok(())
    }

    /// Whether the probe got through (a TCP handshake, a UDP reply, an echo reply).
    fn probe(&self, p: &Probe) -> bool {
        let v6 = p.dst.contains(':');
        let mut cmd = self.netns(p.from_ns);
        match p.proto {
            "tcp" => {
                let addr = if v6 {
                    format!("TCP6:[{}]:{},connect-timeout=1", p.dst, p.port)
                } else {
                    format!("TCP4:{}:{},connect-timeout=1", p.dst, p.port)
                };
                cmd.args(["socat", "-u", "OPEN:/dev/null", &addr]);
            }
            "udp" => {
                let addr = if v6 {
                    format!("UDP6:[{}]:{}", p.dst, p.port)
                } else {
                    format!("UDP4:{}:{}", p.dst, p.port)
                };
                // -t1: socat waits for the reply only 0.5 s (its default) once its input ends,
                // which is at once; the reply gets the whole second.
                let script = format!("echo ping | socat -t1 -T1 - {addr} | grep -q pong");
                cmd.args(["sh", "-c", &script]);
            }
            _ => {
                cmd.args(["ping", "-c1", "-W1", "-q", p.dst]);
            }
        }
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Runs a probe the policy answers with `allow`: whether it got through, and what to print
    /// after it: nothing, or for a mismatch how many drops nodewall counted while it ran (none:
    /// the packet was lost outside nodewall, or the probe itself failed).
    fn check(&self, p: &Probe, allow: bool) -> (bool, String) {
        let before = self.drops();
        let got = self.probe(p);
        if got == allow {
            return (got, String::new());
        }
        let counted = match (before, self.drops()) {
            (Some(b), Some(a)) => format!(" (nodewall counted {} drop(s))", a.saturating_sub(b)),
            _ => String::new(),
        };
        (got, format!("   <-- MISMATCH{counted}"))
    }

    /// `nodewall_policy_generation`, from the agent's metrics.
    fn generation(&self) -> Option<u64> {
        self.metric_sum("nodewall_policy_generation ")
    }

    /// Every packet nodewall has counted as dropped, from the agent's metrics.
    fn drops(&self) -> Option<u64> {
        self.metric_sum("nodewall_dropped_packets_total{")
    }

    /// The sum of the agent's metric samples whose lines start with `prefix` (`None` if the
    /// agent did not answer).
    fn metric_sum(&self, prefix: &str) -> Option<u64> {
        let metrics = self.http_get("/metrics")?;
        if metrics.split_whitespace().nth(1) != Some("200") {
            return None;
        }
        metrics
            .lines()
            .filter(|l| l.starts_with(prefix))
            .map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// A plain HTTP/1.0 GET to the agent, from inside the node namespace. socat waits up to
    /// 3 s for the answer after sending the request (its default half-close wait, 0.5 s, cut
    /// off the metrics page on a busy machine).
    fn http_get(&self, path: &str) -> Option<String> {
        let mut child = self
            .netns("node")
            .args(["socat", "-t3", "-T3", "-", &format!("TCP4:{METRICS}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let req = format!("GET {path} HTTP/1.0\r\nAccept: text/plain\r\n\r\n");
        child.stdin.take()?.write_all(req.as_bytes()).ok()?;
        let out = child.wait_with_output().ok()?;
        Some(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // The agent first (SIGTERM: it leaves the policy, which goes with its namespace).
        for child in self.children.iter_mut().rev() {
            // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
            unsafe { kill(child.id() as i32, 15) };
            let deadline = Instant::now() + Duration::from_secs(3);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in self.created.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = fs::remove_dir_all(&self.dir);
        println!("\nsandbox removed ({} namespaces)", self.created.len());
    }
}

/// Namespaces (and their processes) left by a demo that was interrupted.
fn sweep_leftovers() {
    let list = Command::new("ip").args(["netns", "list"]).output();
    let Ok(list) = list else { return };
    for line in String::from_utf8_lossy(&list.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if !name.starts_with(PREFIX) {
            continue;
        }
        let pids = Command::new("ip").args(["netns", "pids", name]).output();
        let pids = pids
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for pid in pids.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
            // SAFETY: kill(2) on a process left inside a demo namespace.
            unsafe { kill(pid, 9) };
        }
        let _ = Command::new("ip").args(["netns", "del", name]).status();
        eprintln!("xtask demo: removed leftover namespace {name}");
    }
    if let Ok(entries) = fs::read_dir(std::env::temp_dir()) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(PREFIX) {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
}

extern "C" {
    fn geteuid() -> u32;
    fn kill(pid: i32, sig: i32) -> i32;
}
