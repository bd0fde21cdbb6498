//! An in-memory "kernel" and a backend over it, to test the daemon's decisions without root.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::backend::{ApplyReport, Backend, Counters, DropCounter, RuleCounter, Status};
use crate::config::{Action, BackendKind, PortRange, Protocol};
use crate::policy::{AddrSet, Implicit, Mode, Origin, Policy, PortSet, Rule};

use crate::apply::source::Desired;

#[derive(Default)]
pub struct Kernel {
    pub installed: Option<Policy>,
    pub generation: u64,
    pub applies: u32,
    pub fail_applies: u32,
    /// Packets seen per installed rule; replacing the policy resets them, like a new table.
    pub rule_packets: u64,
    pub drop_packets: u64,
}

#[derive(Clone, Default)]
pub struct FakeKernel(pub Arc<Mutex<Kernel>>);

impl FakeKernel {
    pub fn with<R>(&self, f: impl FnOnce(&mut Kernel) -> R) -> R {
        f(&mut self.0.lock().unwrap())
    }

    pub fn rule_names(&self) -> Option<Vec<String>> {
        self.with(|k| {
            k.installed
                .as_ref()
                .map(|p| p.rules.iter().map(|r| r.name.clone()).collect())
        })
    }

    pub fn backend(&self) -> Box<dyn Backend> {
        Box::new(FakeBackend(self.clone()))
    }
}

pub struct FakeBackend(FakeKernel);

impl Backend for FakeBackend {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn apply(&mut self, policy: &Policy) -> anyhow::Result<ApplyReport> {
        self.0.with(|k| {
            k.applies += 1;
            if k.fail_applies > 0 {
                k.fail_applies -= 1;
                anyhow::bail!("netlink: Operation not permitted (injected)");
            }
            let changed = k.installed.as_ref() != Some(policy);
            if changed {
                k.generation += 1;
                k.installed = Some(policy.clone());
                k.rule_packets = 0;
                k.drop_packets = 0;
            }
            Ok(ApplyReport {
                generation: k.generation,
                changed,
                added: if changed { policy.rules.len() } else { 0 },
                removed: 0,
                duration: Duration::from_micros(300),
            })
        })
    }

    fn status(&self) -> anyhow::Result<Status> {
        self.0.with(|k| {
            Ok(Status {
                backend: "fake",
                installed: k.installed.is_some(),
                generation: k.generation,
                mode: k.installed.as_ref().map(|p| p.mode),
                interfaces: k
                    .installed
                    .as_ref()
                    .map(|p| p.interfaces.clone())
                    .unwrap_or_default(),
                rules: k
                    .installed
                    .as_ref()
                    .map(|p| p.rules.iter().map(|r| r.name.clone()).collect())
                    .unwrap_or_default(),
                counters: Counters::default(),
            })
        })
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.0.with(|k| k.installed = None);
        Ok(())
    }

    fn counters(&self) -> anyhow::Result<Counters> {
        self.0.with(|k| {
            let Some(p) = &k.installed else {
                anyhow::bail!("nothing installed");
            };
            Ok(Counters {
                rules: p
                    .rules
                    .iter()
                    .map(|r| RuleCounter {
                        rule: r.name.clone(),
                        direction: crate::backend::Direction::Ingress,
                        action: r.action,
                        packets: k.rule_packets,
                        bytes: k.rule_packets * 100,
                    })
                    .collect(),
                drops: vec![DropCounter {
                    direction: crate::backend::Direction::Ingress,
                    reason: "default-deny",
                    rule: String::new(),
                    family: "ipv4",
                    protocol: "tcp",
                    packets: k.drop_packets,
                    bytes: k.drop_packets * 60,
                }],
            })
        })
    }

    fn verify(&self, policy: &Policy) -> anyhow::Result<bool> {
        Ok(self.0.with(|k| k.installed.as_ref() == Some(policy)))
    }
}

/// A stand-in config format (one allowed tcp port per line, `NAME PORT`; `backend xdp` picks
/// the backend kind), so these tests do not depend on the YAML parser.
pub fn parse(text: &str, path: &std::path::Path) -> Result<Desired, String> {
    let mut rules = Vec::new();
    let mut backend = BackendKind::Nft;
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let err = |m: &str| format!("{}:{}:1: rules[{i}]: {m}", path.display(), i + 1);
        let mut words = line.split_whitespace();
        let name = words.next().unwrap();
        let value = words.next().ok_or_else(|| err("missing port"))?;
        if name == "backend" {
            backend = if value == "xdp" {
                BackendKind::Xdp
            } else {
                BackendKind::Nft
            };
            continue;
        }
        let port: u16 = value.parse().map_err(|_| err("port must be 1-65535"))?;
        rules.push(Rule {
            name: name.to_string(),
            action: Action::Allow,
            protocol: Protocol::Tcp,
            ports: PortSet::new(vec![PortRange::single(port)]),
            sources: AddrSet::any(),
            origin: Origin::User,
        });
    }
    Ok(Desired {
        backend,
        policy: Policy {
            mode: Mode::Enforce,
            implicit: Implicit::default(),
            rules,
            interfaces: vec!["eth0".into()],
            profile: None,
            samples_per_second: crate::config::DEFAULT_SAMPLES_PER_SECOND,
            egress: Default::default(),
        },
        text: text.to_string(),
        api: None,
        flow_log: None,
    })
}
