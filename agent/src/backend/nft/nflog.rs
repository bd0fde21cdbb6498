//! The contract between the nft datapath and the daemon's NFLOG reader: the drop chains send a
//! (kernel rate-limited) sample of every drop to NFLOG group [`NFLOG_GROUP`] with the prefix
//! [`nflog_prefix`]`(mode, egress, reason, rule)`; the daemon reads the group and parses the
//! prefix back with [`parse_nflog_prefix`].
//!
//! The prefix is `nodewall:[TAG:]...REASON:RULE`. Tags say how the packet was treated when it
//! is not simply dropped on the way in: `audit` (the policy was in audit mode: the packet was
//! accepted), `egress` (the packet was on its way out). A tag is never a reason, so readers skip
//! tags they do not know.

use nodewall_common::DropReason;

use crate::policy::Mode;

/// NFLOG group the nft backend logs drops to ("nw" in ASCII).
pub const NFLOG_GROUP: u16 = 0x6e77;
/// Kernel-side limit on samples (per drop rule) when the config sets none, in packets per
/// second (`drops.samples-per-second`).
pub const KERNEL_SAMPLE_RATE: u32 = crate::config::DEFAULT_SAMPLES_PER_SECOND;

const PREFIX_TAG: &str = "nodewall:";
const AUDIT_TAG: &str = "audit";
const EGRESS_TAG: &str = "egress";

/// The NFLOG prefix for drops of `reason` (`default-deny`, `rule`, `invalid`) by `rule` (empty
/// unless the reason is `rule`), inbound or `egress`. nft limits prefixes to 127 bytes; long
/// rule names are cut.
pub fn nflog_prefix(mode: Mode, egress: bool, reason: &str, rule: &str) -> String {
    let audit = match mode {
        Mode::Enforce => "",
        Mode::Audit => "audit:",
    };
    let out = if egress { "egress:" } else { "" };
    let mut p = format!("{PREFIX_TAG}{audit}{out}{reason}:{rule}");
    if p.len() > 127 {
        let mut end = 127;
        while !p.is_char_boundary(end) {
            end -= 1;
        }
        p.truncate(end);
    }
    p
}

/// What a prefix made by [`nflog_prefix`] says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefix<'a> {
    pub reason: &'a str,
    pub rule: &'a str,
    /// Tagged `audit`: the packet was accepted.
    pub audit: bool,
    /// Tagged `egress`: the packet was leaving the node (or a pod).
    pub egress: bool,
}

/// The prefix's parts; `None` for anyone else's prefix.
pub fn parse_nflog_prefix(prefix: &str) -> Option<Prefix<'_>> {
    let mut rest = prefix
        .trim_end_matches(['\0', ' '])
        .strip_prefix(PREFIX_TAG)?;
    let (mut audit, mut egress) = (false, false);
    loop {
        let (word, after) = rest.split_once(':')?;
        if DropReason::ALL.iter().any(|r| r.as_str() == word) {
            return Some(Prefix {
                reason: word,
                rule: after,
                audit,
                egress,
            });
        }
        audit |= word == AUDIT_TAG;
        egress |= word == EGRESS_TAG;
        rest = after;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_round_trip() {
        let p = nflog_prefix(Mode::Enforce, false, "rule", "tke-node/kubelet");
        assert_eq!(p, "nodewall:rule:tke-node/kubelet");
        assert_eq!(
            parse_nflog_prefix(&p),
            Some(Prefix {
                reason: "rule",
                rule: "tke-node/kubelet",
                audit: false,
                egress: false,
            })
        );
        let a = nflog_prefix(Mode::Audit, false, "default-deny", "");
        assert_eq!(a, "nodewall:audit:default-deny:");
        assert_eq!(
            parse_nflog_prefix(&format!("{a}\0")),
            Some(Prefix {
                reason: "default-deny",
                rule: "",
                audit: true,
                egress: false,
            })
        );
        let e = nflog_prefix(Mode::Audit, true, "rule", "out");
        assert_eq!(e, "nodewall:audit:egress:rule:out");
        assert_eq!(
            parse_nflog_prefix(&e).map(|p| (p.audit, p.egress, p.rule)),
            Some((true, true, "out"))
        );
        // A rule name may contain ':'-free words that look like tags: only the first reason
        // word ends the tags.
        assert_eq!(
            parse_nflog_prefix("nodewall:out:audit:rule:audit").map(|p| (p.rule, p.audit)),
            Some(("audit", true)),
            "unknown tags are skipped"
        );
        assert_eq!(parse_nflog_prefix("IN=eth0 "), None);
        assert_eq!(parse_nflog_prefix("nodewall:nothing"), None);
        assert_eq!(
            nflog_prefix(Mode::Enforce, false, "rule", &"x".repeat(300)).len(),
            127
        );
    }
}
