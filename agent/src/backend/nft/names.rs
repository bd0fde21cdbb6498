//! Names of the kernel objects nodewall owns, and the comments that let `status` map them back
//! to policy rules without knowing the policy.
//!
//! Object names are derived from rule names so that they stay the same when rules are added or
//! reordered: that is what keeps a rule's counter (a named counter object) across re-applies.

/// The one table nodewall owns. Nothing outside it is ever touched.
pub const TABLE: &str = "nodewall";
/// [`TABLE`] NUL-terminated, as netlink attributes carry it.
pub const TABLE_Z: &[u8] = b"nodewall\0";
/// The base chain: prerouting, after conntrack (-200) and before DNAT (-100), so kube-proxy's
/// NodePort DNAT has not rewritten the destination port yet.
pub const BASE_CHAIN: &str = "prerouting";
pub const PRIORITY: i32 = -150;
/// Where the policy lives; the base chain jumps here for packets from an uplink.
pub const INBOUND_CHAIN: &str = "inbound";
/// The inbound rules about packets conntrack already knows (invalid, established, related),
/// which [`INBOUND_CHAIN`] jumps to with one test of the state: a new packet, what the rules
/// decide and what floods are made of, skips them all.
pub const TRACKED_CHAIN: &str = "inbound.tracked";
pub const UPLINKS_SET: &str = "uplinks";
pub const TABLE_COMMENT: &str = "managed by nodewall: change it with nodewall apply/flush";
/// Prefix of the comment of a base chain rule that matches an interface name pattern (`eth*`).
pub const UPLINK_PATTERN_PREFIX: &str = "uplinks ";
/// Prefix of the base chain rule's comment, which carries the generation.
pub const GENERATION_PREFIX: &str = "nodewall generation ";

/// nft object names must be identifiers: a letter or `_`/`.` first, then letters, digits and
/// `/ - _ .`; the kernel allows up to 255 bytes but comments stop at 256 including the rule name.
pub const MAX_NAME: usize = 200;

/// A stable identifier for a rule name: the name itself when nft accepts it as an identifier,
/// else a sanitised form with a hash of the original so that two names never share objects.
pub fn ident(name: &str) -> String {
    let clean = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-_.".contains(&b));
    if clean {
        return name.to_string();
    }
    let mut s: String = name
        .chars()
        .take(48)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "/-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    s.push_str(&format!(".x{:08x}", fnv1a(name.as_bytes())));
    s
}

/// FNV-1a, 32 bits: stable across Rust versions, unlike `DefaultHasher`.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ b as u32).wrapping_mul(0x0100_0193)
    })
}

pub fn rule_counter(rule_ident: &str) -> String {
    format!("rule.{rule_ident}")
}

pub fn src_set(v6: bool, rule_ident: &str) -> String {
    format!("{}.{rule_ident}", if v6 { "src6" } else { "src4" })
}

/// The hash set of a rule's source networks of one prefix length (see `plan`).
pub fn src_prefix_set(v6: bool, len: u8, rule_ident: &str) -> String {
    format!("{}p{len}.{rule_ident}", if v6 { "src6" } else { "src4" })
}

pub fn ports_set(rule_ident: &str) -> String {
    format!("ports.{rule_ident}")
}

/// The chain that counts and drops for one reason (`invalid`, `default-deny`) or deny rule.
pub fn drop_chain(reason: &str, rule_ident: Option<&str>) -> String {
    match rule_ident {
        Some(r) => format!("drop.rule.{r}"),
        None => format!("drop.{reason}"),
    }
}

/// The chain that counts and drops new outbound flows for `reason` (`default-deny`).
pub fn egress_drop_chain(reason: &str) -> String {
    format!("drop.egress.{reason}")
}

/// The egress base chains (hooked at output and forward) and the chains they jump to.
pub const OUTPUT_CHAIN: &str = "output";
pub const FORWARD_CHAIN: &str = "forward";
pub const EGRESS_HOST_CHAIN: &str = "egress-host";
pub const EGRESS_POD_CHAIN: &str = "egress-pod";
/// Egress base chains: at filter priority, after the NAT of locally generated packets'
/// destination (-100) and before source NAT (100), so a pod's own address is still seen.
pub const EGRESS_PRIORITY: i32 = 0;

pub fn dst_set(v6: bool, rule_ident: &str) -> String {
    format!("{}.{rule_ident}", if v6 { "dst6" } else { "dst4" })
}

/// The verdict map that dispatches inbound packets of transport protocol `proto` (`tcp`,
/// `udp`) by destination port (see `plan::dispatch`).
pub fn dispatch_map(proto: &str) -> String {
    format!("{INBOUND_CHAIN}.{proto}")
}

/// The chain of one port class of [`dispatch_map`]: named by the first port it is reached for,
/// so a class keeps its name while rules on other ports change.
pub fn dispatch_chain(proto: &str, first_port: u16) -> String {
    format!("{INBOUND_CHAIN}.{proto}.{first_port}")
}

/// Whether `chain` is a [`dispatch_chain`].
pub fn is_dispatch_chain(chain: &str) -> bool {
    ["tcp", "udp"].iter().any(|p| {
        chain
            .strip_prefix(INBOUND_CHAIN)
            .and_then(|c| c.strip_prefix('.'))
            .and_then(|c| c.strip_prefix(p))
            .and_then(|c| c.strip_prefix('.'))
            .is_some_and(|port| port.parse::<u16>().is_ok())
    })
}

pub fn drop_counter(chain: &str, family: &str, protocol: &str) -> String {
    format!("{chain}.{family}.{protocol}")
}

/// Comments on counter objects, parsed back by `status`.
pub mod comment {
    use crate::policy::Action;

    /// `allow NAME` / `deny NAME` on a rule counter (`allow-egress NAME`, `deny-egress NAME`
    /// for an egress rule's).
    pub fn rule(action: Action, egress: bool, name: &str) -> String {
        let tag = if egress { "-egress" } else { "" };
        format!("{}{tag} {}", action_str(action), name)
    }

    /// `drop REASON FAMILY PROTOCOL [RULE]` on a drop counter (`drop-egress ...` for
    /// outbound drops).
    pub fn drop(
        egress: bool,
        reason: &str,
        family: &str,
        protocol: &str,
        rule: Option<&str>,
    ) -> String {
        let head = if egress { "drop-egress" } else { "drop" };
        match rule {
            Some(r) => format!("{head} {reason} {family} {protocol} {r}"),
            None => format!("{head} {reason} {family} {protocol}"),
        }
    }

    fn action_str(a: Action) -> &'static str {
        match a {
            Action::Allow => "allow",
            Action::Deny => "deny",
        }
    }

    /// What a counter comment says.
    #[derive(Debug, PartialEq, Eq)]
    pub enum Parsed<'a> {
        Rule {
            action: Action,
            egress: bool,
            name: &'a str,
        },
        Drop {
            egress: bool,
            reason: &'a str,
            family: &'a str,
            protocol: &'a str,
            rule: &'a str,
        },
    }

    pub fn parse(c: &str) -> Option<Parsed<'_>> {
        let (head, rest) = c.split_once(' ')?;
        match head {
            "allow" | "allow-egress" | "deny" | "deny-egress" => Some(Parsed::Rule {
                action: if head.starts_with("allow") {
                    Action::Allow
                } else {
                    Action::Deny
                },
                egress: head.ends_with("-egress"),
                name: rest,
            }),
            "drop" | "drop-egress" => {
                let mut it = rest.splitn(4, ' ');
                Some(Parsed::Drop {
                    egress: head == "drop-egress",
                    reason: it.next()?,
                    family: it.next()?,
                    protocol: it.next()?,
                    rule: it.next().unwrap_or(""),
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Action;

    #[test]
    fn clean_names_are_kept_and_others_are_hashed_apart() {
        assert_eq!(ident("tke-node/nodeport-tcp"), "tke-node/nodeport-tcp");
        let a = ident("allow web");
        let b = ident("allow:web");
        assert!(a.starts_with("allow_web.x"));
        assert_ne!(a, b);
        assert_eq!(a, ident("allow web"));
    }

    #[test]
    fn comments_round_trip() {
        for egress in [false, true] {
            let c = comment::rule(Action::Deny, egress, "block bad guys");
            assert_eq!(
                comment::parse(&c),
                Some(comment::Parsed::Rule {
                    action: Action::Deny,
                    egress,
                    name: "block bad guys"
                })
            );
        }
        let c = comment::drop(true, "rule", "ipv6", "udp", Some("x y"));
        assert_eq!(
            comment::parse(&c),
            Some(comment::Parsed::Drop {
                egress: true,
                reason: "rule",
                family: "ipv6",
                protocol: "udp",
                rule: "x y"
            })
        );
    }
}
