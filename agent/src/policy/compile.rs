//! Config (+ built-in profile) -> normalised [`Policy`].

use ipnet::IpNet;

use super::model::{AddrSet, Origin, Policy, PortSet, Rule};
use crate::config::{Config, Protocol, RuleConfig, Source};
use crate::profiles::{self, From, Profile};

/// Compilation only fails on inputs that validation should already have rejected; the message
/// still names the field so a library user who skipped validation gets a useful error.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CompileError {
    #[error("profile: unknown profile {0:?}")]
    UnknownProfile(String),
    #[error("{field}: unknown network {name:?}")]
    UnknownNetwork { field: String, name: String },
    /// The config still has network entries that come from the Kubernetes API: they must be
    /// resolved to addresses first (`discovery::resolve`), never compiled as nothing.
    #[error("{field}: `{entry}` is read from the Kubernetes API and was not resolved")]
    Unresolved { field: String, entry: String },
}

pub fn compile(config: &Config) -> Result<Policy, CompileError> {
    if let Some(item) = config.discovered.values().flatten().next() {
        return Err(CompileError::Unresolved {
            field: item.path.clone(),
            entry: item.source.key(),
        });
    }
    let mut rules = Vec::new();
    for (i, r) in config.failsafe.iter().enumerate() {
        rules.push(user_rule(
            config,
            r,
            &format!("failsafe[{i}]"),
            Origin::Failsafe,
        )?);
    }
    if let Some(name) = &config.profile {
        let profile =
            profiles::find(name).ok_or_else(|| CompileError::UnknownProfile(name.clone()))?;
        for r in profile.rules {
            rules.push(profile_rule(config, profile, r)?);
        }
    }
    for (i, r) in config.rules.iter().enumerate() {
        rules.push(user_rule(config, r, &format!("rules[{i}]"), Origin::User)?);
    }
    Ok(Policy {
        mode: config.mode,
        implicit: config.implicit,
        rules,
        interfaces: config.interfaces.clone(),
        profile: config.profile.clone(),
        samples_per_second: config.drops.samples_per_second,
        egress: super::egress_compile::egress(config)?,
    })
}

pub(super) fn network<'c>(
    config: &'c Config,
    field: &str,
    name: &str,
) -> Result<&'c [IpNet], CompileError> {
    config
        .networks
        .get(name)
        .map(Vec::as_slice)
        .ok_or_else(|| CompileError::UnknownNetwork {
            field: field.into(),
            name: name.into(),
        })
}

fn user_rule(
    config: &Config,
    r: &RuleConfig,
    field: &str,
    origin: Origin,
) -> Result<Rule, CompileError> {
    let mut nets: Vec<IpNet> = Vec::new();
    for src in &r.from {
        match src {
            Source::Cidr(net) => nets.push(*net),
            Source::Network(name) => {
                nets.extend_from_slice(network(config, &format!("{field}.from"), name)?)
            }
        }
    }
    Ok(Rule {
        name: r.name.clone(),
        action: r.action,
        protocol: r.protocol,
        ports: ports_of(r.protocol, r.ports.clone()),
        sources: AddrSet::from_nets(&nets),
        origin,
    })
}

fn profile_rule(
    config: &Config,
    profile: &Profile,
    r: &profiles::ProfileRule,
) -> Result<Rule, CompileError> {
    let mut sources = AddrSet::default();
    for from in r.from {
        let set = match from {
            From::Anywhere => AddrSet::any(),
            From::Network(name) => AddrSet::from_nets(network(config, "profile", name)?),
        };
        sources = sources.union(&set);
    }
    Ok(Rule {
        name: format!("{}/{}", profile.name, r.name),
        action: crate::config::Action::Allow,
        protocol: r.protocol,
        ports: ports_of(r.protocol, r.ports.to_vec()),
        sources,
        origin: Origin::Profile {
            profile: profile.name.into(),
            provenance: r.provenance,
        },
    })
}

pub(super) fn ports_of(protocol: Protocol, ports: Vec<crate::config::PortRange>) -> PortSet {
    if protocol.has_ports() {
        PortSet::new(ports)
    } else {
        PortSet::any()
    }
}
