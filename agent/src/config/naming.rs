//! Rule names across `rules`, `failsafe` and their `egress` counterparts: uniqueness, and
//! names for unnamed failsafe entries.

use super::fields;
use super::model::RuleConfig;
use super::rules::{Parsed, PROTOCOLS};
use super::walk::Ctx;
use super::yaml::Pos;

/// Rule names are the `rule` label of metrics and must be unique across `rules`, `failsafe`,
/// `egress.rules` and `egress.failsafe`. The later one (in document order) is reported.
/// Unnamed failsafe entries are then named `[egress-]failsafe-PROTO[-PORTS]`, with a suffix
/// if that name is taken.
pub fn name_rules(ctx: &mut Ctx, rules: &mut [&mut [Parsed]], failsafe: &mut [&mut [Parsed]]) {
    let mut named: Vec<(&str, Pos, &str)> = rules
        .iter()
        .chain(failsafe.iter())
        .flat_map(|s| s.iter())
        .filter_map(|r| {
            r.name
                .as_ref()
                .map(|(n, pos)| (n.as_str(), *pos, r.path.as_str()))
        })
        .collect();
    named.sort_by_key(|(_, pos, _)| *pos);
    for (i, (name, pos, path)) in named.iter().enumerate() {
        if let Some((_, first, _)) = named[..i].iter().find(|(n, _, _)| n == name) {
            ctx.error(
                format!("{path}.name"),
                *pos,
                format!(
                    "duplicate rule name `{name}` (first used at line {})",
                    first.line
                ),
            );
        }
    }
    let mut taken: Vec<String> = named.iter().map(|(n, _, _)| n.to_string()).collect();
    for section in failsafe.iter_mut() {
        for (i, entry) in section.iter_mut().enumerate() {
            let Some(rule) = entry.rule.as_mut().filter(|_| entry.name.is_none()) else {
                continue;
            };
            let prefix = if entry.path.starts_with("egress") {
                "egress-failsafe"
            } else {
                "failsafe"
            };
            let mut name = auto_name(prefix, rule);
            let mut n = i;
            while taken.contains(&name) || fields::rule_name(&name).is_err() {
                name = format!("{prefix}-{n}");
                n += 1;
            }
            taken.push(name.clone());
            rule.name = name;
        }
    }
}

/// The rules of a section, `None` if the section or any entry was invalid.
pub fn valid(section: Option<Vec<Parsed>>) -> Option<Vec<RuleConfig>> {
    section?.into_iter().map(|p| p.rule).collect()
}

fn auto_name(prefix: &str, rule: &RuleConfig) -> String {
    let proto = PROTOCOLS
        .iter()
        .find(|(_, p)| *p == rule.protocol)
        .map_or("all", |(n, _)| n);
    let ports: Vec<String> = rule.ports.iter().map(ToString::to_string).collect();
    if ports.is_empty() {
        format!("{prefix}-{proto}")
    } else {
        format!("{prefix}-{proto}-{}", ports.join("_"))
    }
}
