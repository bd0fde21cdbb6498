//! What users would run instead of nodewall, for the same policy: linear iptables rules (one
//! rule per CIDR), iptables + ipset (one hash:net set per rule and family; Calico's classic
//! form), with iptables-legacy or iptables-nft, hand-written nft with one concatenated
//! `saddr . dport` interval set per family, `nft -f` of the script nodewall renders, and
//! xdp-filter from xdp-tools. All loaded with the tools' own batch loaders (`*-restore`, `-f`,
//! `bpftool batch`).

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::netns::{Netns, NODE_IF};
use super::workload::{Cidr, Workload, BASE_PORT};

/// Which iptables a peer is loaded with: the x_tables one, or the nft-based one (Debian's
/// default `iptables`, which translates every rule to nft expressions and counts every rule).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Xtables {
    Legacy,
    Nft,
}

impl Xtables {
    pub fn name(self) -> &'static str {
        match self {
            Xtables::Legacy => "iptables-legacy",
            Xtables::Nft => "iptables-nft",
        }
    }

    /// The restore command of one family (`iptables-nft-restore`, `ip6tables-legacy-restore`...).
    fn restore(self, v6: bool) -> String {
        format!(
            "{}-restore",
            self.name().replacen("ip", if v6 { "ip6" } else { "ip" }, 1)
        )
    }
}

/// The conntrack allowance every variant starts with, as nodewall's `implicit.established`.
const ESTABLISHED: &str = "-m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT";

/// iptables-restore input for one family: one ACCEPT rule per (rule, CIDR), then DROP.
pub fn iptables_linear(w: &Workload, v6: bool) -> String {
    iptables_linear_with(w, v6, &[])
}

/// As [`iptables_linear`], with `extra` rule specs (`-A INPUT ...` lines) right after the
/// conntrack allowance.
pub fn iptables_linear_with(w: &Workload, v6: bool, extra: &[String]) -> String {
    let mut s = format!("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -i {NODE_IF} {ESTABLISHED}\n");
    for e in extra {
        s.push_str(e);
        s.push('\n');
    }
    for (i, cidrs) in w.per_rule.iter().enumerate() {
        for c in cidrs.iter().filter(|c| c.addr.is_ipv6() == v6) {
            let _ = writeln!(
                s,
                "-A INPUT -i {NODE_IF} -s {c} -p udp --dport {} -j ACCEPT",
                BASE_PORT + i as u16
            );
        }
    }
    let _ = write!(s, "-A INPUT -i {NODE_IF} -j DROP\nCOMMIT\n");
    s
}

fn set_name(rule: usize, v6: bool) -> String {
    format!("nwb-r{rule}-{}", family_digit(v6))
}

/// `ipset restore` input: one hash:net set per rule and family.
pub fn ipset_sets(w: &Workload) -> String {
    let mut s = String::new();
    for (i, cidrs) in w.per_rule.iter().enumerate() {
        for v6 in [false, true] {
            let name = set_name(i, v6);
            let members: Vec<_> = cidrs.iter().filter(|c| c.addr.is_ipv6() == v6).collect();
            let family = if v6 { "inet6" } else { "inet" };
            let _ = writeln!(
                s,
                "create {name} hash:net family {family} maxelem {}",
                (members.len() * 2).max(1024)
            );
            for c in members {
                let _ = writeln!(s, "add {name} {c}");
            }
        }
    }
    s
}

/// iptables-restore input matching the ipset sets: one rule per nodewall rule.
pub fn iptables_ipset(w: &Workload, v6: bool) -> String {
    let mut s = format!("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -i {NODE_IF} {ESTABLISHED}\n");
    for i in 0..w.rules {
        let _ = writeln!(
            s,
            "-A INPUT -i {NODE_IF} -p udp --dport {} -m set --match-set {} src -j ACCEPT",
            BASE_PORT + i as u16,
            set_name(i, v6)
        );
    }
    let _ = write!(s, "-A INPUT -i {NODE_IF} -j DROP\nCOMMIT\n");
    s
}

/// Loads the linear ruleset (both families) with `xt`; returns the wall time of the two
/// restores.
pub fn load_linear(ns: &Netns, w: &Workload, xt: Xtables) -> anyhow::Result<Duration> {
    let (v4, v6) = (iptables_linear(w, false), iptables_linear(w, true));
    let start = Instant::now();
    ns.run_stdin(&xt.restore(false), &[], v4.as_bytes())?;
    ns.run_stdin(&xt.restore(true), &[], v6.as_bytes())?;
    Ok(start.elapsed())
}

/// Loads the ipset variant with `xt`; returns the wall time of `ipset restore` plus both
/// iptables restores.
pub fn load_ipset(ns: &Netns, w: &Workload, xt: Xtables) -> anyhow::Result<Duration> {
    let (sets, v4, v6) = (
        ipset_sets(w),
        iptables_ipset(w, false),
        iptables_ipset(w, true),
    );
    let start = Instant::now();
    ns.run_stdin("ipset", &["restore"], sets.as_bytes())?;
    ns.run_stdin(&xt.restore(false), &[], v4.as_bytes())?;
    ns.run_stdin(&xt.restore(true), &[], v6.as_bytes())?;
    Ok(start.elapsed())
}

/// The hand-written nft table of the concatenated-set peer.
pub const CONCAT_TABLE: &str = "nwbpeer";
/// nodewall's nft hook: prerouting at priority -150 (after conntrack, before routing).
pub const NODEWALL_HOOK: &str = "type filter hook prerouting priority -150; policy accept;";

/// What one would write by hand in nft for the policy: one interval set per family of
/// `saddr . dport` elements (every rule's CIDRs with its port) and one lookup rule per family,
/// after the conntrack allowance, then drop; at nodewall's own hook.
pub fn nft_concat(w: &Workload) -> String {
    let t = CONCAT_TABLE;
    let mut s = format!("table inet {t}\ndelete table inet {t}\ntable inet {t} {{\n");
    for (v6, ty) in [(false, "ipv4_addr"), (true, "ipv6_addr")] {
        let _ = write!(
            s,
            "\tset allowed{} {{\n\t\ttype {ty} . inet_service\n\t\tflags interval\n",
            family_digit(v6)
        );
        let elems: Vec<String> = w
            .per_rule
            .iter()
            .enumerate()
            .flat_map(|(i, cidrs)| {
                cidrs
                    .iter()
                    .filter(move |c| c.addr.is_ipv6() == v6)
                    .map(move |c| format!("{c} . {}", BASE_PORT + i as u16))
            })
            .collect();
        if !elems.is_empty() {
            let _ = writeln!(s, "\t\telements = {{ {} }}", elems.join(",\n\t\t\t"));
        }
        s.push_str("\t}\n");
    }
    let _ = write!(
        s,
        "\tchain prerouting {{\n\t\t{NODEWALL_HOOK}\n\t\tiifname \"{NODE_IF}\" jump inbound\n\t}}\n\
         \tchain inbound {{\n\t\tct state established,related accept\n\
         \t\tip saddr . udp dport @allowed4 accept\n\t\tip6 saddr . udp dport @allowed6 accept\n\
         \t\tdrop\n\t}}\n}}\n"
    );
    s
}

fn family_digit(v6: bool) -> u8 {
    if v6 {
        6
    } else {
        4
    }
}

/// `nft -f -` of a script; returns its wall time.
pub fn load_nft(ns: &Netns, script: &str) -> anyhow::Result<Duration> {
    let start = Instant::now();
    ns.run_stdin("nft", &["-f", "-"], script.as_bytes())?;
    Ok(start.elapsed())
}

/// xdp-filter's address maps hold this many entries per family (`max_entries` of
/// `filter_ipv4` and `filter_ipv6` in xdp-tools' xdpfilt_prog.h).
pub const XDP_FILTER_MAX: usize = 10_000;
/// Where xdp-filter pins its maps and program (in the namespace's private bpffs).
const XDP_FILTER_PINS: &str = "/sys/fs/bpf/xdp-filter";
/// `MAP_FLAG_SRC` (xdp-tools' common_kern_user.h): the entry matches the source address.
const XDP_FILTER_SRC: u8 = 1;

/// The policy xdp-filter gets, as the page states it.
pub const XDP_FILTER_POLICY: &str = "xdp-filter (xdp-tools) `load --policy deny` (default \
    features, which loads its full program `xdpfilt_dny_all`) with one `ip --mode src` entry per \
    CIDR: the CIDR's first host address (xdp-filter matches exact addresses only, no prefixes, \
    at most 10,000 per family), written into its pinned maps in one `bpftool batch`. No port \
    entries: xdp-filter passes a frame that matches any entry, so a port entry would pass that \
    port from every source. The allowed frame comes from such a first host and the dropped one \
    from no listed address, so both get the same verdict as under nodewall; a packet from \
    another address of an allowed CIDR would be dropped by xdp-filter.";

/// `bpftool batch` input adding every CIDR's first host as an allowed source to xdp-filter's
/// pinned maps (each address once, whatever rules share it).
pub fn xdp_filter_batch(w: &Workload) -> anyhow::Result<String> {
    let hosts: std::collections::BTreeSet<IpAddr> =
        w.per_rule.iter().flatten().map(Cidr::first_host).collect();
    let v6 = hosts.iter().filter(|a| a.is_ipv6()).count();
    if v6 > XDP_FILTER_MAX || hosts.len() - v6 > XDP_FILTER_MAX {
        bail!(
            "xdp-filter holds at most {XDP_FILTER_MAX} addresses per family; the policy has {} IPv4 and {v6} IPv6",
            hosts.len() - v6
        );
    }
    let mut s = String::new();
    for a in hosts {
        let (map, octets) = match a {
            IpAddr::V4(a) => ("filter_ipv4", a.octets().to_vec()),
            IpAddr::V6(a) => ("filter_ipv6", a.octets().to_vec()),
        };
        let key: Vec<String> = octets.iter().map(|b| format!("{b:02x}")).collect();
        let _ = writeln!(
            s,
            "map update pinned {XDP_FILTER_PINS}/{map} key hex {} value {XDP_FILTER_SRC} 0 0 0 0 0 0 0",
            key.join(" ")
        );
    }
    Ok(s)
}

/// How xdp-filter got attached.
pub struct XdpFilterLoaded {
    /// The attach mode that worked (`native`, else `skb`).
    pub mode: &'static str,
    /// The program the link runs: xdp-filter's own, or libxdp's dispatcher.
    pub attached: String,
    /// Wall time of `xdp-filter load` plus the `bpftool batch` of the addresses.
    pub took: Duration,
}

/// Loads xdp-filter on the node's uplink with `w`'s first hosts as allowed sources. libxdp
/// attaches through its dispatcher when it can and falls back to attaching the program directly
/// (the dispatcher fails with EPERM on some kernels); its lock and pins live in the namespace's
/// private bpffs, so no other namespace or run ever contends for them. The caller unloads it
/// ([`unload_xdp_filter`], or through an [`XdpFilter`] guard).
pub fn load_xdp_filter(ns: &Netns, w: &Workload) -> anyhow::Result<XdpFilterLoaded> {
    let batch = xdp_filter_batch(w)?;
    let start = Instant::now();
    let mut errors = Vec::new();
    let mut mode = None;
    for m in ["native", "skb"] {
        match ns.run(
            "xdp-filter",
            &["load", "--policy", "deny", "--mode", m, NODE_IF],
        ) {
            Ok(_) => {
                mode = Some(m);
                break;
            }
            Err(e) => errors.push(format!("{m}: {e:#}")),
        }
    }
    let Some(mode) = mode else {
        bail!("xdp-filter load failed: {}", errors.join("; "));
    };
    let written = ns
        .run_stdin("bpftool", &["batch", "file", "-"], batch.as_bytes())
        .context("writing xdp-filter's address maps");
    let took = start.elapsed();
    if let Err(e) = written {
        unload_xdp_filter(ns);
        return Err(e);
    }
    let link = ns.ip(&["-j", "link", "show", "dev", NODE_IF])?;
    let v: serde_json::Value = serde_json::from_str(&link)?;
    let attached = v[0]["xdp"]["prog"]["name"]
        .as_str()
        .unwrap_or("?")
        .to_string();
    Ok(XdpFilterLoaded {
        mode,
        attached,
        took,
    })
}

/// `xdp-filter unload` of the node's uplink (best effort: the namespace goes away anyway).
pub fn unload_xdp_filter(ns: &Netns) {
    if let Err(e) = ns.run("xdp-filter", &["unload", NODE_IF]) {
        eprintln!("bench: xdp-filter unload in {}: {e:#}", ns.name());
    }
}

/// The id of xdp-filter's own program (not the dispatcher's), from its pin.
pub fn xdp_filter_prog_id(ns: &Netns) -> anyhow::Result<u32> {
    let dir = format!("{XDP_FILTER_PINS}/programs/{NODE_IF}");
    let listing = ns.run("ls", &[&dir])?;
    let name = listing
        .split_whitespace()
        .next()
        .context("no pinned xdp-filter program")?;
    let text = ns.run(
        "bpftool",
        &["-j", "prog", "show", "pinned", &format!("{dir}/{name}")],
    )?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    v["id"]
        .as_u64()
        .map(|id| id as u32)
        .context("no id in `bpftool prog show`")
}

/// xdp-filter loaded on a namespace's uplink, unloaded when dropped.
pub struct XdpFilter<'a> {
    ns: &'a Netns,
    pub loaded: XdpFilterLoaded,
}

impl<'a> XdpFilter<'a> {
    pub fn load(ns: &'a Netns, w: &Workload) -> anyhow::Result<Self> {
        Ok(Self {
            ns,
            loaded: load_xdp_filter(ns, w)?,
        })
    }

    pub fn prog_id(&self) -> anyhow::Result<u32> {
        xdp_filter_prog_id(self.ns)
    }
}

impl Drop for XdpFilter<'_> {
    fn drop(&mut self) {
        unload_xdp_filter(self.ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_has_one_rule_per_cidr_of_the_family_plus_two() {
        let w = Workload::mixed(8, 1000);
        let v4 = iptables_linear(&w, false);
        assert_eq!(
            v4.lines().filter(|l| l.starts_with("-A INPUT")).count(),
            500 + 2
        );
        assert!(v4.lines().rev().nth(1).unwrap().ends_with("-j DROP"));
    }

    #[test]
    fn concat_set_holds_every_cidr_and_port_once() {
        let w = Workload::mixed(8, 1000);
        let s = nft_concat(&w);
        assert_eq!(s.matches(" . 100").count(), 1000);
        assert!(s.contains("ip saddr . udp dport @allowed4 accept"));
        assert!(s.trim_end().ends_with("drop\n\t}\n}") || s.contains("\t\tdrop\n"));
    }

    #[test]
    fn xdp_filter_gets_each_first_host_once() {
        let w = Workload::mixed(64, 10);
        let b = xdp_filter_batch(&w).unwrap();
        assert_eq!(b.lines().count(), 10);
        assert!(b.contains("filter_ipv6 key hex fd 00"));
        for family in [
            super::super::workload::Family::V4,
            super::super::workload::Family::V6,
        ] {
            let src = w.allowed_src(family);
            assert!(w.per_rule.iter().flatten().any(|c| c.first_host() == src));
        }
        assert!(xdp_filter_batch(&Workload::mixed(8, 40_000)).is_err());
    }

    #[test]
    fn restore_commands_name_the_family() {
        assert_eq!(Xtables::Legacy.restore(true), "ip6tables-legacy-restore");
        assert_eq!(Xtables::Nft.restore(false), "iptables-nft-restore");
    }

    #[test]
    fn ipset_holds_every_cidr_once_per_rule() {
        let w = Workload::mixed(8, 1000);
        assert_eq!(
            ipset_sets(&w)
                .lines()
                .filter(|l| l.starts_with("add "))
                .count(),
            1000
        );
        assert_eq!(
            iptables_ipset(&w, true)
                .lines()
                .filter(|l| l.contains("--match-set"))
                .count(),
            8
        );
    }
}
