//! Egress rules that can never match: an earlier egress rule, or several together, decides
//! every packet a later one would, for every sender the later one judges. The inbound checks
//! of `lint` applied to destinations, with the sender (`source: host | pod`) taken into
//! account.

use super::egress::{EgressRule, Traffic};
use super::lint::{action_name, covered_together, covers, has_sources, proto_name, Finding};
use super::model::{Origin, Policy, Protocol, Rule};

pub fn lint_egress(policy: &Policy) -> Vec<Finding> {
    let rules = &policy.egress.rules;
    let mut out = Vec::new();
    for (j, later) in rules.iter().enumerate() {
        if later.origin != Origin::User {
            continue;
        }
        let l = as_rule(later);
        let finding = |message: String| Finding {
            rule: j,
            egress: true,
            message,
        };
        if !has_sources(&l) {
            out.push(finding(format!(
                "egress rule `{}` can never match: protocol {} is {} only, and none of its destinations is",
                later.name,
                proto_name(later.protocol),
                if later.protocol == Protocol::Icmp { "IPv4" } else { "IPv6" }
            )));
            continue;
        }
        // Only earlier rules that judge every sender the later one does, for any pod.
        let earlier: Vec<Rule> = rules[..j]
            .iter()
            .filter(|e| e.pod_sources.is_none() && judges_all(e.traffic, later.traffic))
            .map(as_rule)
            .collect();
        if let Some(e) = earlier.iter().find(|e| covers(e, &l)) {
            out.push(finding(format!(
                "egress rule `{}` can never match: the earlier egress rule `{}` ({}) matches every packet it would",
                later.name,
                e.name,
                action_name(e.action)
            )));
        } else if let Some(together) = covered_together(&earlier, &l) {
            let names: Vec<String> = together
                .iter()
                .map(|e| format!("`{}` ({})", e.name, action_name(e.action)))
                .collect();
            out.push(finding(format!(
                "egress rule `{}` can never match: the earlier egress rules {} together match every packet it would",
                later.name,
                names.join(", ")
            )));
        }
    }
    out
}

/// Whether a rule limited to `earlier` senders judges every sender of one limited to `later`.
fn judges_all(earlier: Traffic, later: Traffic) -> bool {
    earlier == Traffic::Any || earlier == later
}

/// The rule's match on packets as an inbound rule's, destinations in place of sources.
fn as_rule(r: &EgressRule) -> Rule {
    Rule {
        name: r.name.clone(),
        action: r.action,
        protocol: r.protocol,
        ports: r.ports.clone(),
        sources: r.destinations.clone(),
        origin: r.origin.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PortRange;
    use crate::policy::{Action, AddrSet, Egress, PortSet};

    fn rule(name: &str, action: Action, traffic: Traffic, to: &[&str], port: u16) -> EgressRule {
        let nets: Vec<ipnet::IpNet> = to.iter().map(|n| n.parse().unwrap()).collect();
        EgressRule {
            name: name.into(),
            action,
            protocol: Protocol::Tcp,
            ports: PortSet::new(vec![PortRange::single(port)]),
            destinations: AddrSet::from_nets(&nets),
            traffic,
            pod_sources: None,
            origin: Origin::User,
        }
    }

    fn lint_of(rules: Vec<EgressRule>) -> Vec<String> {
        let policy = Policy {
            mode: crate::policy::Mode::Enforce,
            implicit: crate::config::Implicit::default(),
            rules: Vec::new(),
            interfaces: Vec::new(),
            profile: None,
            samples_per_second: crate::config::DEFAULT_SAMPLES_PER_SECOND,
            egress: Egress {
                default: Action::Deny,
                rules,
            },
        };
        lint_egress(&policy)
            .into_iter()
            .map(|f| f.message)
            .collect()
    }

    #[test]
    fn shadowed_egress_rules_are_found_per_sender() {
        let any = Traffic::Any;
        let found = lint_of(vec![
            rule("all-web", Action::Deny, any, &["0.0.0.0/0", "::/0"], 443),
            rule(
                "api",
                Action::Allow,
                Traffic::Host,
                &["198.18.48.0/24"],
                443,
            ),
        ]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].contains("`api` can never match: the earlier egress rule `all-web` (deny)")
        );
        // A host-only rule does not shadow a pod rule, nor a rule for every sender.
        let found = lint_of(vec![
            rule(
                "host-web",
                Action::Deny,
                Traffic::Host,
                &["0.0.0.0/0", "::/0"],
                443,
            ),
            rule(
                "pod-web",
                Action::Allow,
                Traffic::Pod,
                &["198.18.48.0/24"],
                443,
            ),
            rule("any-web", Action::Allow, any, &["198.18.48.0/24"], 443),
        ]);
        assert!(found.is_empty(), "{found:?}");
        // Two halves together.
        let found = lint_of(vec![
            rule("low", Action::Allow, any, &["198.18.0.0/16"], 443),
            rule("high", Action::Allow, any, &["198.19.0.0/16"], 443),
            rule(
                "both",
                Action::Deny,
                Traffic::Pod,
                &["198.18.5.0/24", "198.19.5.0/24"],
                443,
            ),
        ]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].contains("the earlier egress rules `low` (allow), `high` (allow) together")
        );
    }
}
