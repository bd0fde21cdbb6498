//! Config `egress` (+ the profile's outbound rows) -> [`Egress`], in evaluation order: the
//! metadata switch, the failsafe, the profile's restricted rows (only with `default: deny`),
//! the user's rules.

use std::net::IpAddr;

use ipnet::IpNet;

use super::compile::{network, ports_of, CompileError};
use super::egress::{metadata_nets, Egress, EgressRule, METADATA_DENY_RULE, METADATA_EXCEPT_RULE};
use super::model::{AddrSet, Origin};
use crate::config::{
    Action, Config, EgressConfig, EgressRuleConfig, EgressSource, Protocol, Source,
    NET_CONTROL_PLANE, NET_INSTANCE_METADATA, NET_NODE_RESOLVERS,
};
use crate::profiles::{self, From};

pub fn egress(config: &Config) -> Result<Egress, CompileError> {
    let e = &config.egress;
    if e.is_open() {
        return Ok(Egress::default());
    }
    let mut rules = Vec::new();
    if e.metadata.deny_pods {
        let metadata = AddrSet::from_nets(&metadata_nets());
        if !e.metadata.except.is_empty() {
            rules.push(EgressRule {
                name: METADATA_EXCEPT_RULE.into(),
                action: Action::Allow,
                protocol: Protocol::All,
                ports: ports_of(Protocol::All, Vec::new()),
                destinations: metadata.clone(),
                traffic: EgressSource::Pod,
                pod_sources: Some(addrs(config, "egress.metadata.except", &e.metadata.except)?),
                origin: Origin::Metadata,
            });
        }
        rules.push(EgressRule {
            name: METADATA_DENY_RULE.into(),
            action: Action::Deny,
            protocol: Protocol::All,
            ports: ports_of(Protocol::All, Vec::new()),
            destinations: metadata,
            traffic: EgressSource::Pod,
            pod_sources: None,
            origin: Origin::Metadata,
        });
    }
    let defaults = EgressConfig::default_failsafe();
    for (i, r) in e.failsafe.iter().enumerate() {
        let field = format!("egress.failsafe[{i}]");
        // The default entries name networks a config may not define: the control plane is
        // skipped when unknown, the metadata service is the switch's addresses, the resolvers
        // come from the node's resolver configuration.
        if defaults.contains(r) {
            if r.to == [Source::Network(NET_CONTROL_PLANE.into())]
                && !config.networks.contains_key(NET_CONTROL_PLANE)
            {
                continue;
            }
            if r.to == [Source::Network(NET_INSTANCE_METADATA.into())]
                && !config.networks.contains_key(NET_INSTANCE_METADATA)
            {
                let nets = AddrSet::from_nets(&metadata_nets());
                rules.push(rule(r, nets, Origin::Failsafe));
                continue;
            }
            if r.to == [Source::Network(NET_NODE_RESOLVERS.into())]
                && !config.networks.contains_key(NET_NODE_RESOLVERS)
            {
                let nets = node_resolvers();
                if nets.is_empty() {
                    continue;
                }
                rules.push(rule(r, AddrSet::from_nets(&nets), Origin::Failsafe));
                continue;
            }
        }
        rules.push(rule(r, addrs(config, &field, &r.to)?, Origin::Failsafe));
    }
    if let (Action::Deny, Some(name)) = (e.default, &config.profile) {
        let profile =
            profiles::find(name).ok_or_else(|| CompileError::UnknownProfile(name.clone()))?;
        for r in profile.outbound.restricted {
            let mut destinations = AddrSet::default();
            for to in r.to {
                let set = match to {
                    From::Anywhere => AddrSet::any(),
                    From::Network(n) => AddrSet::from_nets(network(config, "profile", n)?),
                };
                destinations = destinations.union(&set);
            }
            rules.push(EgressRule {
                name: format!("{}/{}", profile.name, r.name),
                action: Action::Allow,
                protocol: r.protocol,
                ports: ports_of(r.protocol, r.ports.to_vec()),
                destinations,
                traffic: EgressSource::Any,
                pod_sources: None,
                origin: Origin::Profile {
                    profile: profile.name.into(),
                    provenance: r.provenance,
                },
            });
        }
    }
    for (i, r) in e.rules.iter().enumerate() {
        let field = format!("egress.rules[{i}]");
        rules.push(rule(r, addrs(config, &field, &r.to)?, Origin::User));
    }
    Ok(Egress {
        default: e.default,
        rules,
    })
}

fn rule(r: &EgressRuleConfig, destinations: AddrSet, origin: Origin) -> EgressRule {
    EgressRule {
        name: r.name.clone(),
        action: r.action,
        protocol: r.protocol,
        ports: ports_of(r.protocol, r.ports.clone()),
        destinations,
        traffic: r.source,
        pod_sources: None,
        origin,
    }
}

fn addrs(config: &Config, field: &str, list: &[Source]) -> Result<AddrSet, CompileError> {
    let mut nets: Vec<IpNet> = Vec::new();
    for s in list {
        match s {
            Source::Cidr(net) => nets.push(*net),
            Source::Network(name) => nets.extend_from_slice(network(config, field, name)?),
        }
    }
    Ok(AddrSet::from_nets(&nets))
}

/// Resolver configurations, most specific first: systemd-resolved's upstream list (its
/// `/etc/resolv.conf` names the local stub, whose queries leave from these), then the
/// classic file.
const RESOLV_CONF: &[&str] = &["/run/systemd/resolve/resolv.conf", "/etc/resolv.conf"];

/// The node's DNS servers, as host prefixes: the first resolver file that names any
/// non-loopback `nameserver` (loopback resolvers never send through an uplink).
pub fn node_resolvers() -> Vec<IpNet> {
    RESOLV_CONF
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|text| nameservers(&text))
        .find(|n| !n.is_empty())
        .unwrap_or_default()
}

fn nameservers(text: &str) -> Vec<IpNet> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver")).then(|| w.next()).flatten()
        })
        // A link-local IPv6 server may carry a zone (`fe80::1%eth0`).
        .filter_map(|a| a.split('%').next()?.parse::<IpAddr>().ok())
        .filter(|a| !a.is_loopback())
        .map(IpNet::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_skip_loopback_and_comments() {
        let text =
            "# x\nnameserver 127.0.0.53\nnameserver 198.18.0.53\nsearch a\nnameserver fd00::53\n";
        let got = nameservers(text);
        assert_eq!(
            got,
            vec![
                "198.18.0.53/32".parse::<IpNet>().unwrap(),
                "fd00::53/128".parse().unwrap()
            ]
        );
    }
}
