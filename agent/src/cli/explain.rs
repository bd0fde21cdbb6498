//! `nodewall explain`: the reference verdict for a packet, as the backends must enforce it.

use std::io::{BufRead, Write};
use std::net::IpAddr;
use std::process::ExitCode;

use clap::ValueEnum;
use nodewall::policy::{
    self, track, Action, CtState, EgressPacket, Origin, Packet, Policy, Sender, Verdict, L4,
};
use serde::{Deserialize, Serialize};

use super::{discovered, output, ConfigArg, EXIT_INVALID};

#[derive(Copy, Clone, Debug, ValueEnum, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ProbeProto {
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
    /// Any other IP protocol, with --proto-number.
    Other,
}

#[derive(Copy, Clone, Debug, ValueEnum, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum State {
    #[default]
    New,
    Established,
    Related,
    Invalid,
}

/// One packet to explain; also the JSON-lines input format of `--batch`.
#[derive(clap::Args, Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    /// Source address of the inbound packet; with --to, the pod that sends the outbound
    /// packet (its own address, before SNAT).
    #[arg(long, required_unless_present_any = ["batch", "to"])]
    pub from: Option<IpAddr>,
    /// Explain an outbound packet to this address, judged by the egress rules: sent by the
    /// node itself, or by the pod --from names.
    #[arg(long)]
    #[serde(default)]
    pub to: Option<IpAddr>,
    #[arg(long, value_enum, required_unless_present = "batch")]
    pub protocol: Option<ProbeProto>,
    /// Destination port (tcp/udp).
    #[arg(long)]
    pub port: Option<u16>,
    /// Source port (tcp/udp); default 40000.
    #[arg(long)]
    pub source_port: Option<u16>,
    /// ICMP/ICMPv6 type; default echo request (8 / 128).
    #[arg(long)]
    pub icmp_type: Option<u8>,
    #[arg(long)]
    pub icmp_code: Option<u8>,
    /// IP protocol number for --protocol other.
    #[arg(long)]
    pub proto_number: Option<u8>,
    /// TCP flags (tcp only), as names (`syn,ack`) or a number (`0x12`); default a SYN.
    #[arg(long, value_name = "FLAGS")]
    #[serde(default)]
    pub tcp_flags: Option<String>,
    /// Connection-tracking state of the packet: by default what a packet gets when it
    /// belongs to no flow yet (`new` for a SYN or a lone ACK, `invalid` for a stray
    /// SYN+ACK, FIN or RST, an echo reply or an ICMP error about nothing). A packet no flow
    /// could have (e.g. SYN+FIN) is invalid whatever this says.
    #[arg(long, value_enum)]
    #[serde(default)]
    pub state: Option<State>,
}

#[derive(clap::Args, Debug)]
#[command(after_help = "Exit codes:
  0  evaluated (and, with --expect, the decision is the expected one)
  1  --expect: the decision differs (for any probe, with --batch)
  2  invalid input: config errors, a bad probe (with --batch: any bad line; the others are
     still answered, and a bad line gets {\"line\": N, \"error\": ...} in its place)")]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
    #[command(flatten)]
    discovered: discovered::DiscoveredArgs,
    #[command(flatten)]
    probe: Probe,
    /// Read probes as JSON lines on stdin ({"from":..,"protocol":..,"port":..}, or with "to"
    /// for outbound); print one JSON verdict per line.
    #[arg(long, conflicts_with_all = ["from", "to", "protocol"])]
    batch: bool,
    /// Print the verdict as JSON.
    #[arg(long)]
    json: bool,
    /// Exit 1 unless the policy decides this (for every probe, with --batch).
    #[arg(long, value_enum, value_name = "ACTION")]
    expect: Option<Expect>,
}

/// The decision `--expect` asserts.
#[derive(Copy, Clone, Debug, ValueEnum, PartialEq, Eq)]
pub enum Expect {
    Allow,
    Deny,
}

impl Expect {
    fn holds(self, action: Action) -> bool {
        matches!(
            (self, action),
            (Expect::Allow, Action::Allow) | (Expect::Deny, Action::Deny)
        )
    }
}

/// Exit code when the decision is not the one `--expect` names.
pub const EXIT_UNEXPECTED: u8 = 1;

/// A probe field that is missing or does not fit the others.
#[derive(Debug)]
pub struct ProbeError {
    /// The field, as the JSON input of `--batch` names it (`--port` is `port`).
    pub field: &'static str,
    pub reason: String,
}

impl ProbeError {
    fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }

    /// As the command line names the field.
    fn flag(&self) -> String {
        format!("--{}: {}", self.field.replace('_', "-"), self.reason)
    }
}

/// The JSON form of a verdict.
#[derive(Serialize)]
pub struct Explained<'a> {
    /// `inbound` or `egress`.
    pub direction: &'static str,
    /// What the policy decides: allow or deny.
    pub action: Action,
    /// What the kernel does with the packet: audit mode accepts would-be drops.
    pub verdict: &'static str,
    pub reason: &'static str,
    pub rule: Option<&'a str>,
    pub origin: Option<&'a Origin>,
    pub mode: nodewall::policy::Mode,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (_, policy) = match discovered::load_policy(&args.config, &args.discovered) {
        Ok(v) => v,
        Err(code) => return Ok(code),
    };
    if args.batch {
        return batch(&policy, args.expect);
    }
    let pkt = match to_packet(&args.probe) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("nodewall: {}", e.flag());
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    let explained = judge(&policy, &pkt);
    if args.json {
        output::print_json(&explained)?;
    } else {
        let mut out = output::stdout();
        print_text(&mut out, &explained)?;
        out.flush()?;
    }
    match args.expect {
        Some(want) if !want.holds(explained.action) => Ok(ExitCode::from(EXIT_UNEXPECTED)),
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// One verdict per input line, in order; a line that is not a valid probe gets
/// `{"line": N, "error": ...}` in its place (and a message on stderr), and the batch goes on.
/// Exit 2 if any line was invalid, else 1 if any decision differs from `--expect`.
fn batch(policy: &Policy, expect: Option<Expect>) -> anyhow::Result<ExitCode> {
    let stdin = std::io::stdin();
    // Line-buffered: a script may write a probe and wait for its verdict.
    let mut out = std::io::LineWriter::new(std::io::stdout().lock());
    let (mut invalid, mut unexpected) = (0usize, 0usize);
    for (n, line) in stdin.lock().lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let probe = serde_json::from_str::<Probe>(&line)
            .map_err(|e| e.to_string())
            .and_then(|p| to_packet(&p).map_err(|e| format!("{}: {}", e.field, e.reason)));
        match probe {
            Ok(pkt) => {
                let explained = judge(policy, &pkt);
                if expect.is_some_and(|want| !want.holds(explained.action)) {
                    unexpected += 1;
                }
                writeln!(out, "{}", serde_json::to_string(&explained)?)?;
            }
            Err(error) => {
                invalid += 1;
                eprintln!("nodewall: stdin:{}: {error}", n + 1);
                let line = n + 1;
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({ "line": line, "error": error })
                )?;
            }
        }
    }
    out.flush()?;
    Ok(if invalid > 0 {
        eprintln!("nodewall: {invalid} invalid probe line(s)");
        ExitCode::from(EXIT_INVALID)
    } else if unexpected > 0 {
        ExitCode::from(EXIT_UNEXPECTED)
    } else {
        ExitCode::SUCCESS
    })
}

/// A probe in one direction.
pub enum Probed {
    Inbound(Packet),
    Egress(EgressPacket),
}

fn judge<'a>(policy: &'a Policy, pkt: &Probed) -> Explained<'a> {
    match pkt {
        Probed::Inbound(p) => explain(policy, &policy::evaluate(policy, p)),
        Probed::Egress(p) => explain_egress(policy, &policy::evaluate_egress(policy, p)),
    }
}

/// The explanation of an egress verdict ([`Verdict::rule`] indexes `policy.egress.rules`).
pub fn explain_egress<'a>(policy: &'a Policy, v: &Verdict) -> Explained<'a> {
    let rule = v.rule.map(|i| &policy.egress.rules[i]);
    Explained {
        direction: "egress",
        action: v.action,
        verdict: if v.passes() { "accept" } else { "drop" },
        reason: v.reason.as_str(),
        rule: rule.map(|r| r.name.as_str()),
        origin: rule.map(|r| &r.origin),
        mode: policy.mode,
    }
}

pub fn explain<'a>(policy: &'a Policy, v: &Verdict) -> Explained<'a> {
    let rule = v.rule.map(|i| &policy.rules[i]);
    Explained {
        direction: "inbound",
        action: v.action,
        verdict: if v.passes() { "accept" } else { "drop" },
        reason: v.reason.as_str(),
        rule: rule.map(|r| r.name.as_str()),
        origin: rule.map(|r| &r.origin),
        mode: policy.mode,
    }
}

fn print_text(out: &mut impl Write, e: &Explained) -> std::io::Result<()> {
    let action = match e.action {
        Action::Allow => "ALLOW",
        Action::Deny => "DENY",
    };
    let audit = if e.verdict == "accept" && e.action == Action::Deny {
        " (audit mode: counted, accepted)"
    } else {
        ""
    };
    match e.rule {
        Some(rule) => writeln!(out, "{action}{audit} by rule {rule}")?,
        None => writeln!(out, "{action}{audit}: {}", e.reason)?,
    }
    match e.origin {
        Some(Origin::Profile {
            profile,
            provenance,
        }) => writeln!(
            out,
            "  from profile {profile}: seed {}, table \"{}\", row {}",
            provenance.seed, provenance.table, provenance.row
        )?,
        Some(Origin::Failsafe) if e.direction == "egress" => writeln!(
            out,
            "  egress failsafe entry (keeps the node alive under `egress.default: deny`)"
        )?,
        Some(Origin::Failsafe) => writeln!(
            out,
            "  failsafe entry (accepted before the profile, anti-lockout)"
        )?,
        Some(Origin::User) if e.direction == "egress" => {
            writeln!(out, "  user rule from the config's `egress.rules`")?
        }
        Some(Origin::User) => writeln!(out, "  user rule from the config's `rules`")?,
        Some(Origin::Metadata) => writeln!(
            out,
            "  the metadata switch (`egress.metadata.deny-pods`): pods kept away from the cloud instance metadata service"
        )?,
        None => {}
    }
    writeln!(out, "  reason: {}", e.reason)
}

pub fn to_packet(p: &Probe) -> Result<Probed, ProbeError> {
    // Outbound: the address that decides the family (and the tracker's view) is the
    // destination; the pod's own address, if any, must be of the same family.
    let (src, sender) = match (p.to, p.from) {
        (None, from) => (
            from.ok_or_else(|| ProbeError::new("from", "is required (or --to for outbound)"))?,
            None,
        ),
        (Some(to), None) => (to, Some(Sender::Host)),
        (Some(to), Some(pod)) if pod.is_ipv6() == to.is_ipv6() => (to, Some(Sender::Pod(pod))),
        (Some(_), Some(_)) => {
            return Err(ProbeError::new(
                "from",
                "the pod's address and --to must be of the same IP family",
            ))
        }
    };
    let proto = p
        .protocol
        .ok_or_else(|| ProbeError::new("protocol", "is required"))?;
    let v6 = src.is_ipv6();
    let l4 = match proto {
        ProbeProto::Tcp | ProbeProto::Udp => {
            let dport = p
                .port
                .ok_or_else(|| ProbeError::new("port", "is required for tcp and udp"))?;
            if dport == 0 {
                return Err(ProbeError::new("port", "must be 1-65535"));
            }
            let sport = p.source_port.unwrap_or(40000);
            if proto == ProbeProto::Tcp {
                L4::Tcp { sport, dport }
            } else {
                L4::Udp { sport, dport }
            }
        }
        ProbeProto::Icmp | ProbeProto::Icmpv6 => {
            if (proto == ProbeProto::Icmpv6) != v6 {
                return Err(ProbeError::new(
                    "protocol",
                    format!(
                        "{} does not fit a source of the other IP family (icmp is IPv4, icmpv6 is IPv6)",
                        if v6 { "icmp" } else { "icmpv6" }
                    ),
                ));
            }
            if p.port.is_some() {
                return Err(ProbeError::new("port", "applies to tcp and udp only"));
            }
            L4::Icmp {
                icmp_type: p.icmp_type.unwrap_or(if v6 { 128 } else { 8 }),
                code: p.icmp_code.unwrap_or(0),
            }
        }
        ProbeProto::Other => L4::Other {
            number: p
                .proto_number
                .ok_or_else(|| ProbeError::new("proto_number", "is required for protocol other"))?,
        },
    };
    let flags = match (&p.tcp_flags, l4) {
        (Some(f), L4::Tcp { .. }) => tcp_flags(f)?,
        (Some(_), _) => return Err(ProbeError::new("tcp_flags", "applies to tcp only")),
        (None, _) => TCP_SYN,
    };
    // What the packet is to connection tracking when it belongs to no flow.
    let first = track::first_state(&pkt_of(src, l4, flags));
    let ct = match p.state {
        _ if first == CtState::Invalid && !invalid_only_without_flow(v6, l4, flags) => first,
        None => first,
        Some(State::New) => CtState::New,
        // A SYN is never return traffic: every backend judges it by the rules.
        Some(State::Established) if matches!(l4, L4::Tcp { .. }) && is_bare_syn(flags) => {
            CtState::New
        }
        Some(State::Established) => CtState::Established,
        Some(State::Related) => CtState::Related,
        Some(State::Invalid) => CtState::Invalid,
    };
    Ok(match sender {
        None => Probed::Inbound(Packet { src, l4, ct }),
        Some(from) => Probed::Egress(EgressPacket {
            from,
            dst: src,
            l4,
            ct,
        }),
    })
}

const TCP_SYN: u8 = nodewall_common::ct::tcp_flags::SYN;

/// `syn,ack` (names as nft spells them), `0x12` or `18`.
fn tcp_flags(s: &str) -> Result<u8, ProbeError> {
    use nodewall_common::ct::tcp_flags::*;
    let s = s.trim();
    if let Some(hex) = s.strip_prefix("0x") {
        return u8::from_str_radix(hex, 16)
            .map_err(|_| ProbeError::new("tcp_flags", format!("{s} is not a byte in hex")));
    }
    if let Ok(n) = s.parse::<u8>() {
        return Ok(n);
    }
    s.split([',', '|', ' '])
        .filter(|w| !w.is_empty())
        .try_fold(0u8, |acc, w| {
            let bit = match w.to_ascii_lowercase().as_str() {
                "fin" => FIN,
                "syn" => SYN,
                "rst" => RST,
                "psh" => PSH,
                "ack" => ACK,
                "urg" => URG,
                "ece" => ECE,
                "cwr" => CWR,
                other => {
                    return Err(ProbeError::new(
                        "tcp_flags",
                        format!("unknown flag `{other}` (fin, syn, rst, psh, ack, urg, ece, cwr, or a number)"),
                    ))
                }
            };
            Ok(acc | bit)
        })
}

/// Invalid only for want of a flow (a SYN+ACK, FIN or RST, an ICMP answer or error): with
/// `--state` the caller says which flow it belongs to. Anything else invalid (a flag
/// combination or ICMP type conntrack refuses) is invalid whatever `--state` says.
fn invalid_only_without_flow(v6: bool, l4: L4, flags: u8) -> bool {
    use nodewall_common::ct::{icmp_kind, tcp_segment, IcmpKind, Seg};
    match l4 {
        L4::Tcp { .. } => tcp_segment(flags) != Seg::Invalid,
        L4::Icmp { icmp_type, .. } => icmp_kind(v6, icmp_type) != IcmpKind::Invalid,
        _ => true,
    }
}

fn is_bare_syn(flags: u8) -> bool {
    nodewall_common::ct::tcp_segment(flags) == nodewall_common::ct::Seg::Syn
}

/// The parsed form of a probe to the node, for the tracker.
fn pkt_of(src: IpAddr, l4: L4, flags: u8) -> nodewall_common::ct::Pkt {
    let dst: IpAddr = if src.is_ipv6() {
        std::net::Ipv6Addr::LOCALHOST.into()
    } else {
        std::net::Ipv4Addr::LOCALHOST.into()
    };
    match l4 {
        L4::Tcp { sport, dport } => track::build::tcp(src, dst, sport, dport, flags),
        L4::Udp { sport, dport } => track::build::udp(src, dst, sport, dport),
        L4::Icmp { icmp_type, .. } => track::build::icmp(src, dst, icmp_type, 0),
        L4::Other { number } => track::build::other(src, dst, number, 0, 0),
    }
}
