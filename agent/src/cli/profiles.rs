use std::io::Write;
use std::process::ExitCode;

use nodewall::config::PortRange;
use nodewall::profiles::{self, From, Profile};

use super::EXIT_INVALID;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Profile to show; without it, list all.
    name: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Some(name) = args.name else {
        if args.json {
            super::output::print_json(&profiles::all())?;
        } else {
            let mut out = super::output::stdout();
            for p in profiles::all() {
                writeln!(
                    out,
                    "{:<24} {:<30} {}",
                    p.name,
                    p.networks().join(","),
                    p.summary
                )?;
            }
            out.flush()?;
        }
        return Ok(ExitCode::SUCCESS);
    };
    let Some(profile) = profiles::find(&name) else {
        let names: Vec<_> = profiles::all().iter().map(|p| p.name).collect();
        eprintln!(
            "nodewall: unknown profile {name:?}; built-in profiles: {}",
            names.join(", ")
        );
        return Ok(ExitCode::from(EXIT_INVALID));
    };
    if args.json {
        super::output::print_json(profile)?;
    } else {
        let mut out = super::output::stdout();
        print_profile(&mut out, profile)?;
        out.flush()?;
    }
    Ok(ExitCode::SUCCESS)
}

fn peers(list: &[From]) -> String {
    list.iter()
        .map(|f| match f {
            From::Anywhere => "anywhere".to_string(),
            From::Network(n) => (*n).to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn print_profile(out: &mut impl Write, p: &Profile) -> std::io::Result<()> {
    writeln!(out, "{} — {}", p.name, p.summary)?;
    writeln!(out, "needs networks: {}", p.networks().join(", "))?;
    writeln!(out)?;
    writeln!(out, "INBOUND (first match wins, then default deny)")?;
    writeln!(
        out,
        "{:<28} {:<7} {:<34} {:<24} SOURCE (seed, table, row)",
        "RULE", "PROTO", "PORTS", "FROM"
    )?;
    for r in p.rules {
        writeln!(
            out,
            "{:<28} {:<7} {:<34} {:<24} {}, {}, row {}",
            format!("{}/{}", p.name, r.name),
            format!("{:?}", r.protocol).to_lowercase(),
            format_ports(r.ports),
            peers(r.from),
            r.provenance.seed,
            r.provenance.table,
            r.provenance.row
        )?;
        writeln!(out, "{:<28} {}", "", r.description)?;
    }
    writeln!(out)?;
    writeln!(out, "OUTBOUND")?;
    match &p.outbound.open {
        Some(open) => writeln!(
            out,
            "egress.default: allow (nodewall's default) — {}: {}, {}, row {}",
            open.description, open.provenance.seed, open.provenance.table, open.provenance.row
        )?,
        None => writeln!(
            out,
            "egress.default: allow (nodewall's default) — the seed gives no all-traffic row for this group; outbound stays open until a config opts in"
        )?,
    }
    writeln!(
        out,
        "egress.default: deny (opt-in) — only these rows, after the egress failsafe; the rest is dropped"
    )?;
    if !p.outbound.restricted.is_empty() {
        writeln!(
            out,
            "{:<28} {:<7} {:<34} {:<24} SOURCE (seed, table, row)",
            "RULE", "PROTO", "PORTS", "TO"
        )?;
    }
    for r in p.outbound.restricted {
        writeln!(
            out,
            "{:<28} {:<7} {:<34} {:<24} {}, {}, row {}",
            format!("{}/{}", p.name, r.name),
            format!("{:?}", r.protocol).to_lowercase(),
            format_ports(r.ports),
            peers(r.to),
            r.provenance.seed,
            r.provenance.table,
            r.provenance.row
        )?;
        writeln!(out, "{:<28} {}", "", r.description)?;
    }
    let extra: Vec<_> = p
        .outbound_networks()
        .into_iter()
        .filter(|n| !p.networks().contains(n))
        .collect();
    if !extra.is_empty() {
        writeln!(
            out,
            "with egress.default: deny, also needs networks: {}",
            extra.join(", ")
        )?;
    }
    writeln!(out)?;
    for n in p.notes {
        writeln!(out, "note: {n}")?;
    }
    Ok(())
}

pub fn format_ports(ports: &[PortRange]) -> String {
    if ports.is_empty() {
        return "all".into();
    }
    ports
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}
