//! `nodewall drops`: the running agent's drop samples, read from its local socket
//! (`<state-dir>/agent.sock`, see `nodewall::drops::wire`), as `tcpdump`-style lines or JSON
//! lines (the flow log's records).
//!
//! Without `--follow` it prints the recent samples the agent holds and exits; with it, it
//! keeps printing new ones as the agent reads them. The agent never waits for this reader: a
//! reader that falls behind is told how many samples it missed (on stderr).

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;

use ipnet::IpNet;
use nodewall::apply::state;
use nodewall::backend::Direction;
use nodewall::drops::wire::{self, Get, Message, Request};
use nodewall::drops::{text, Filter};
use nodewall::vocab::PortRange;

use super::output;

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  nodewall drops --follow
  nodewall drops -f --reason rule --port 10250 --json
  nodewall drops -f --from 198.51.100.0/24 -c 10
  kubectl -n nodewall exec POD -- nodewall drops -f   (POD: the agent pod on that node)")]
pub struct Args {
    /// Keep printing samples as the agent reads them (until interrupted, or --count).
    #[arg(short, long)]
    follow: bool,
    /// Print each sample as one line of JSON (the flow log's record).
    #[arg(long)]
    json: bool,
    /// Stop after this many samples.
    #[arg(short = 'c', long, value_name = "N")]
    count: Option<u64>,
    /// Only samples dropped for this reason (repeatable).
    #[arg(long, value_enum, value_name = "REASON")]
    reason: Vec<Reason>,
    /// Only samples of this deny rule; a trailing `*` matches a prefix (repeatable).
    #[arg(long, value_name = "NAME")]
    rule: Vec<String>,
    /// Only samples from this address or prefix (repeatable).
    #[arg(long = "from", value_name = "CIDR", value_parser = parse_net)]
    from: Vec<IpNet>,
    /// Only samples to this destination port or range, e.g. 10250 or 30000-32767 (repeatable).
    #[arg(long, value_name = "PORT", value_parser = parse_ports)]
    port: Vec<PortRange>,
    /// Only samples of this protocol: tcp, udp, icmp, icmpv6 or a number (repeatable).
    #[arg(long, value_name = "PROTO")]
    protocol: Vec<String>,
    /// Only samples of packets going this way.
    #[arg(long, value_enum)]
    direction: Option<DirectionArg>,
    /// The agent's state directory (`nodewall run --state-dir`).
    #[arg(long, value_name = "DIR", default_value = state::DEFAULT_DIR)]
    state_dir: PathBuf,
}

#[derive(Copy, Clone, Debug, clap::ValueEnum)]
enum Reason {
    DefaultDeny,
    Rule,
    Invalid,
}

#[derive(Copy, Clone, Debug, clap::ValueEnum)]
enum DirectionArg {
    Ingress,
    Egress,
}

fn parse_net(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{s}` is not an address or prefix (198.51.100.0/24, fd00::/8)"))
}

fn parse_ports(s: &str) -> Result<PortRange, String> {
    let port = |p: &str| {
        p.trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("`{s}` is not a port (1-65535) or a range (30000-32767)"))
    };
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => (port(s)?, port(s)?),
    };
    if a > b {
        return Err(format!("`{s}`: the range ends before it starts"));
    }
    Ok(PortRange::new(a, b))
}

impl Args {
    fn filter(&self) -> Filter {
        Filter {
            reasons: self
                .reason
                .iter()
                .map(|r| {
                    match r {
                        Reason::DefaultDeny => "default-deny",
                        Reason::Rule => "rule",
                        Reason::Invalid => "invalid",
                    }
                    .to_string()
                })
                .collect(),
            rules: self.rule.clone(),
            sources: self.from.clone(),
            ports: self.port.clone(),
            protocols: self.protocol.iter().map(|p| p.to_lowercase()).collect(),
            direction: self.direction.map(|d| match d {
                DirectionArg::Ingress => Direction::Ingress,
                DirectionArg::Egress => Direction::Egress,
            }),
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let path = wire::socket_path(&args.state_dir);
    let stream = match UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "nodewall: cannot reach the agent at {}: {e}; is `nodewall run` running with --state-dir {}?",
                path.display(),
                args.state_dir.display()
            );
            return Ok(ExitCode::from(1));
        }
    };
    let mut request = serde_json::to_string(&Request { get: Get::Drops })?;
    request.push('\n');
    (&stream).write_all(request.as_bytes())?;
    let filter = args.filter();
    // While waiting for samples, look every second whether whoever reads our output left
    // (`| head`): nothing else would tell until the next sample is written.
    stream.set_read_timeout(Some(std::time::Duration::from_secs(1)))?;
    let mut lines = BufReader::with_capacity(64 * 1024, &stream);
    let mut out = output::stdout();
    let mut printed = 0u64;
    let mut line = String::new();
    loop {
        if args.count.is_some_and(|c| printed >= c) {
            break;
        }
        line.clear();
        let read = loop {
            // A timed-out read keeps what it read of the line in `line`: read on.
            match lines.read_line(&mut line) {
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if stdout_closed() {
                        return Ok(ExitCode::SUCCESS);
                    }
                }
                other => break other?,
            }
        };
        if read == 0 {
            out.flush()?;
            eprintln!("nodewall: the agent closed the stream (stopping or restarting?)");
            return Ok(ExitCode::from(1));
        }
        let message: Message = match serde_json::from_str(line.trim_end()) {
            Ok(m) => m,
            // A newer agent's message this client does not know: nothing it can print.
            Err(_) => continue,
        };
        match message {
            Message::Hello {
                node,
                backend,
                mode,
                samples_per_second,
                ..
            } => {
                if !args.json {
                    eprintln!(
                        "nodewall: drop samples of node {node} (backend {backend}, mode {mode}{}, at most {samples_per_second} samples/s{})",
                        if mode == "audit" { ": nothing is dropped, WOULD-DROP is what enforce would drop" } else { "" },
                        if backend == "xdp" { " per CPU" } else { " per rule" },
                    );
                }
            }
            Message::Sample(record) => {
                if filter.matches(&record) {
                    printed += 1;
                    if args.json {
                        out.write_all(record.to_json().as_bytes())?;
                    } else {
                        out.write_all(text::line(&record).as_bytes())?;
                    }
                    out.write_all(b"\n")?;
                }
            }
            Message::Live => {
                if !args.follow {
                    break;
                }
            }
            Message::Lost { count } => {
                out.flush()?;
                eprintln!("nodewall: {count} samples lost: this reader fell behind the agent");
            }
            Message::Error { message } => {
                out.flush()?;
                eprintln!("nodewall: the agent refused: {message}");
                return Ok(ExitCode::from(1));
            }
            Message::RuleUsage { .. } => {}
        }
        // Whole lines as they come: a `--follow` reader (or `| grep`) sees each sample at once.
        if lines.buffer().is_empty() {
            out.flush()?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Whether standard output is a pipe (or socket) whose reader has gone.
fn stdout_closed() -> bool {
    let mut fd = libc::pollfd {
        fd: libc::STDOUT_FILENO,
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait.
    let n = unsafe { libc::poll(&mut fd, 1, 0) };
    n == 1 && fd.revents & (libc::POLLERR | libc::POLLHUP) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments() {
        assert_eq!(parse_ports("10250"), Ok(PortRange::single(10250)));
        assert_eq!(parse_ports("30000-32767"), Ok(PortRange::new(30000, 32767)));
        assert!(parse_ports("0").is_err());
        assert!(parse_ports("9-1").is_err());
        assert!(parse_ports("http").is_err());
        assert_eq!(parse_net("198.51.100.7").unwrap().prefix_len(), 32);
        assert_eq!(parse_net("fd00::/8").unwrap().prefix_len(), 8);
        assert!(parse_net("10.0.0.0/33").is_err());
    }
}
