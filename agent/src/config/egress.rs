//! The `egress` section: default action, rules, failsafe entries and the metadata switch.
//!
//! Its rules are read by `rules.rs` (the same entry shape as inbound, `to` for `from`); the
//! names are checked with the inbound ones by the caller, so this returns the parsed entries
//! and builds the typed section once they are named.

use super::model::{Action, EgressConfig, EgressRuleConfig, MetadataConfig};
use super::naming::valid;
use super::rules::{self, NetworkNames, Parsed, Section, ACTIONS};
use super::walk::Ctx;
use super::yaml::{Kind, Node};
use crate::profiles;

/// The `profile` value of the document, if it is a string.
pub fn profile_name(node: Option<&Node>) -> Option<&str> {
    match node.map(|n| &n.kind) {
        Some(Kind::Str(s)) => Some(s.as_str()),
        _ => None,
    }
}

pub const EGRESS_KEYS: &[&str] = &["default", "rules", "failsafe", "metadata"];
pub const METADATA_KEYS: &[&str] = &["deny-pods", "except"];

/// `egress` as read, before its entries are named.
pub struct EgressSection {
    pub default: Option<Action>,
    pub rules: Option<Vec<Parsed>>,
    /// `None`: absent (the default failsafe); `Some(None)`: present and invalid.
    pub failsafe: Option<Option<Vec<Parsed>>>,
    pub metadata: Option<MetadataConfig>,
}

impl EgressSection {
    /// No `egress` entries (for naming when the section is absent or malformed).
    pub fn empty() -> Self {
        Self {
            default: None,
            rules: None,
            failsafe: None,
            metadata: None,
        }
    }
}

/// `profile` is the `profile` value as written (checked elsewhere): with `default: deny` its
/// restricted outbound rows are enforced, and the networks they name must be defined.
pub fn read(
    ctx: &mut Ctx,
    node: &Node,
    path: &str,
    networks: NetworkNames,
    profile: Option<&str>,
) -> Option<EgressSection> {
    let f = ctx.map(node, path, Some(EGRESS_KEYS))?;
    let mut default = f.optional("default", Action::Allow, |n, p| {
        ctx.choice(n, p, "action", ACTIONS)
    });
    if let (Some(Action::Deny), Some(p), Some(defined), Some(n)) = (
        default,
        profile.and_then(profiles::find),
        networks,
        f.get("default"),
    ) {
        for needed in p.outbound_networks() {
            if !defined.contains(&needed) {
                let message = format!(
                    "profile `{}` restricts outbound to network `{needed}` under `deny`: define it under `networks:`",
                    p.name
                );
                ctx.error(f.path_of("default"), n.pos, message);
                default = None;
            }
        }
    }
    let rules = f.optional("rules", Vec::new(), |n, p| {
        rules::list(ctx, n, p, Section::EgressRules, networks)
    });
    let failsafe = f.get("failsafe").map(|n| {
        rules::list(
            ctx,
            n,
            &f.path_of("failsafe"),
            Section::EgressFailsafe,
            networks,
        )
    });
    let metadata = f.optional("metadata", MetadataConfig::default(), |n, p| {
        metadata(ctx, n, p, networks)
    });
    Some(EgressSection {
        default,
        rules,
        failsafe,
        metadata,
    })
}

fn metadata(
    ctx: &mut Ctx,
    node: &Node,
    path: &str,
    networks: NetworkNames,
) -> Option<MetadataConfig> {
    let f = ctx.map(node, path, Some(METADATA_KEYS))?;
    let deny_pods = f.optional("deny-pods", false, |n, p| ctx.bool(n, p));
    let except = f.optional("except", Vec::new(), |n, p| {
        rules::sources(ctx, n, p, networks)
    });
    Some(MetadataConfig {
        deny_pods: deny_pods?,
        except: except?,
    })
}

/// The typed section, once every entry is named; `None` when anything was invalid.
pub fn build(section: EgressSection) -> Option<EgressConfig> {
    let typed = |list: Vec<Parsed>| -> Option<Vec<EgressRuleConfig>> {
        let sources: Vec<_> = list.iter().map(|p| p.source).collect();
        let rules = valid(Some(list))?;
        Some(
            rules
                .into_iter()
                .zip(sources)
                .map(|(r, source)| EgressRuleConfig {
                    name: r.name,
                    action: r.action,
                    protocol: r.protocol,
                    ports: r.ports,
                    to: r.from,
                    source,
                })
                .collect(),
        )
    };
    Some(EgressConfig {
        default: section.default?,
        rules: typed(section.rules?)?,
        failsafe: match section.failsafe {
            None => EgressConfig::default_failsafe(),
            Some(list) => typed(list?)?,
        },
        metadata: section.metadata?,
    })
}
