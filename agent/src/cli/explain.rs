//! `nodewall explain`: the reference verdict for a packet, as the backends must enforce it.

use std::io::BufRead;
use std::net::IpAddr;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::ValueEnum;
use nodewall::policy::{self, CtState, Origin, Packet, Policy, Verdict, L4};
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
    /// Source address of the inbound packet.
    #[arg(long, required_unless_present = "batch")]
    pub from: Option<IpAddr>,
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
    /// Connection-tracking state of the packet.
    #[arg(long, value_enum)]
    #[serde(default)]
    pub state: Option<State>,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
    #[command(flatten)]
    discovered: discovered::DiscoveredArgs,
    #[command(flatten)]
    probe: Probe,
    /// Read probes as JSON lines on stdin ({"from":..,"protocol":..,"port":..}); print one JSON
    /// verdict per line.
    #[arg(long, conflicts_with_all = ["from", "protocol"])]
    batch: bool,
    /// Print the verdict as JSON.
    #[arg(long)]
    json: bool,
}

/// The JSON form of a verdict.
#[derive(Serialize)]
pub struct Explained<'a> {
    /// What the policy decides: allow or deny.
    pub action: nodewall::config::Action,
    /// What the kernel does with the packet: audit mode accepts would-be drops.
    pub verdict: &'static str,
    pub reason: &'static str,
    pub rule: Option<&'a str>,
    pub origin: Option<&'a Origin>,
    pub mode: nodewall::config::Mode,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (_, policy) = match discovered::load_policy(&args.config, &args.discovered) {
        Ok(v) => v,
        Err(code) => return Ok(code),
    };
    if args.batch {
        return batch(&policy);
    }
    let pkt = match to_packet(&args.probe) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("nodewall: {e:#}");
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    let verdict = policy::evaluate(&policy, &pkt);
    let explained = explain(&policy, &verdict);
    if args.json {
        output::print_json(&explained)?;
    } else {
        print_text(&explained);
    }
    Ok(ExitCode::SUCCESS)
}

fn batch(policy: &Policy) -> anyhow::Result<ExitCode> {
    let stdin = std::io::stdin();
    for (n, line) in stdin.lock().lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let probe: Probe =
            serde_json::from_str(&line).with_context(|| format!("stdin line {}", n + 1))?;
        let pkt = to_packet(&probe).with_context(|| format!("stdin line {}", n + 1))?;
        let verdict = policy::evaluate(policy, &pkt);
        println!("{}", serde_json::to_string(&explain(policy, &verdict))?);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn explain<'a>(policy: &'a Policy, v: &Verdict) -> Explained<'a> {
    let rule = v.rule.map(|i| &policy.rules[i]);
    Explained {
        action: v.action,
        verdict: if v.passes() { "accept" } else { "drop" },
        reason: v.reason.as_str(),
        rule: rule.map(|r| r.name.as_str()),
        origin: rule.map(|r| &r.origin),
        mode: policy.mode,
    }
}

fn print_text(e: &Explained) {
    let action = match e.action {
        nodewall::config::Action::Allow => "ALLOW",
        nodewall::config::Action::Deny => "DENY",
    };
    let audit = if e.verdict == "accept" && matches!(e.action, nodewall::config::Action::Deny) {
        " (audit mode: counted, accepted)"
    } else {
        ""
    };
    match e.rule {
        Some(rule) => println!("{action}{audit} by rule {rule}"),
        None => println!("{action}{audit}: {}", e.reason),
    }
    match e.origin {
        Some(Origin::Profile {
            profile,
            provenance,
        }) => println!(
            "  from profile {profile}: seed {}, table \"{}\", row {}",
            provenance.seed, provenance.table, provenance.row
        ),
        Some(Origin::Failsafe) => {
            println!("  failsafe entry (accepted before the profile, anti-lockout)")
        }
        Some(Origin::User) => println!("  user rule from the config's `rules`"),
        None => {}
    }
    println!("  reason: {}", e.reason);
}

pub fn to_packet(p: &Probe) -> anyhow::Result<Packet> {
    let src = p.from.context("--from is required")?;
    let proto = p.protocol.context("--protocol is required")?;
    let v6 = src.is_ipv6();
    let l4 = match proto {
        ProbeProto::Tcp | ProbeProto::Udp => {
            let dport = p.port.context("--port is required for tcp and udp")?;
            if dport == 0 {
                bail!("--port must be 1-65535");
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
                bail!("--protocol {} does not fit a source of the other IP family (icmp is IPv4, icmpv6 is IPv6)",
                    if v6 { "icmp" } else { "icmpv6" });
            }
            if p.port.is_some() {
                bail!("--port applies to tcp and udp only");
            }
            L4::Icmp {
                icmp_type: p.icmp_type.unwrap_or(if v6 { 128 } else { 8 }),
                code: p.icmp_code.unwrap_or(0),
            }
        }
        ProbeProto::Other => L4::Other {
            number: p
                .proto_number
                .context("--proto-number is required for --protocol other")?,
        },
    };
    let ct = match p.state.unwrap_or_default() {
        State::New => CtState::New,
        State::Established => CtState::Established,
        State::Related => CtState::Related,
        State::Invalid => CtState::Invalid,
    };
    Ok(Packet { src, l4, ct })
}
