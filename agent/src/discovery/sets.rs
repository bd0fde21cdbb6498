//! The addresses discovered from the API, and how they fill a config's networks in.

use std::collections::BTreeMap;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::config::{ApiItem, Config};

/// What the API entries of a config resolve to, by [`crate::config::ApiSource::key`]: the
/// input of a policy besides the config. This is what the agent persists (`discovered.json` in
/// its state directory), what `explain` and `render` read offline, and what a restarted agent
/// applies until the API answers again.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discovered {
    /// Unix time these sets were read from an API the agent was in sync with.
    pub synced_at: Option<u64>,
    pub sets: BTreeMap<String, Vec<IpNet>>,
}

/// A config with its API entries replaced by addresses.
#[derive(Debug)]
pub struct Resolved {
    /// `networks` hold every address, `discovered` is empty: ready to compile.
    pub config: Config,
    /// Entries that `sets` has nothing for (never synced and never persisted): a policy
    /// compiled without them must not be applied.
    pub missing: Vec<ApiItem>,
    /// Entries that resolved to no address (say, `pod-cidrs` where no Node has podCIDRs):
    /// their network then holds only its other entries, which the agent reports.
    pub empty: Vec<(String, ApiItem)>,
    /// Addresses by network and source kind (`cidrs` for the written-out ones).
    pub counts: BTreeMap<(String, &'static str), usize>,
}

pub fn resolve(config: &Config, sets: &Discovered) -> Resolved {
    let mut config = config.clone();
    let discovered = std::mem::take(&mut config.discovered);
    let mut counts = BTreeMap::new();
    for (name, nets) in &config.networks {
        if !nets.is_empty() {
            counts.insert((name.clone(), "cidrs"), nets.len());
        }
    }
    let (mut missing, mut empty) = (Vec::new(), Vec::new());
    for (name, items) in discovered {
        let nets = config.networks.entry(name.clone()).or_default();
        for item in items {
            match sets.sets.get(&item.source.key()) {
                None => missing.push(item),
                Some(found) => {
                    *counts
                        .entry((name.clone(), item.source.kind()))
                        .or_default() += found.len();
                    if found.is_empty() {
                        empty.push((name.clone(), item));
                    } else {
                        nets.extend_from_slice(found);
                    }
                }
            }
        }
    }
    Resolved {
        config,
        missing,
        empty,
        counts,
    }
}

/// `FILE:LINE:COL: PATH: MESSAGE` for an entry, like config errors.
pub fn located(file: &str, item: &ApiItem, message: &str) -> String {
    format!(
        "{file}:{}:{}: {}: {message}",
        item.line, item.column, item.path
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_add_to_the_written_out_cidrs_and_missing_ones_are_named() {
        let text = "networks:\n  cluster: [198.18.0.0/24, {nodes: {}}]\n  container: [{pod-cidrs: {}}]\n  control-plane: [{api-server: {}}]\n";
        let config = crate::config::parse(text, "c.yaml").unwrap();
        let node = "198.18.17.2/32".parse().unwrap();
        let sets = Discovered {
            synced_at: Some(1),
            sets: BTreeMap::from([
                ("nodes addresses=InternalIP".into(), vec![node]),
                ("pod-cidrs".into(), vec![]),
            ]),
        };
        let r = resolve(&config, &sets);
        assert!(r.config.discovered.is_empty());
        assert_eq!(
            r.config.networks["cluster"],
            vec!["198.18.0.0/24".parse().unwrap(), node]
        );
        assert_eq!(r.config.networks["container"], vec![]);
        assert_eq!(r.empty.len(), 1);
        assert_eq!(r.empty[0].1.path, "networks.container[0]");
        assert_eq!(r.missing.len(), 1);
        assert_eq!(
            located("c.yaml", &r.missing[0], "not discovered"),
            "c.yaml:4:19: networks.control-plane[0]: not discovered"
        );
        assert_eq!(r.counts[&("cluster".into(), "nodes")], 1);
        assert_eq!(r.counts[&("cluster".into(), "cidrs")], 1);
        assert_eq!(r.counts[&("container".into(), "pod-cidrs")], 0);
        // Unresolved configs do not compile; resolved ones do.
        assert!(crate::policy::compile(&config).is_err());
        assert!(crate::policy::compile(&r.config).is_ok());
    }
}
