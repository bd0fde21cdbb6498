//! The contract between the nft datapath and the daemon's NFLOG reader: the drop chains send a
//! (kernel rate-limited) sample of every drop to NFLOG group [`NFLOG_GROUP`] with the prefix
//! [`nflog_prefix`]`(reason, rule)`; the daemon reads the group and parses the prefix back
//! with [`parse_nflog_prefix`].

/// NFLOG group the nft backend logs drops to ("nw" in ASCII).
pub const NFLOG_GROUP: u16 = 0x6e77;
/// Kernel-side limit the backend should put on samples (per drop rule), in packets per second.
pub const KERNEL_SAMPLE_RATE: u32 = 20;

const PREFIX_TAG: &str = "nodewall:";
/// The tag of egress drops' samples.
const EGRESS_TAG: &str = "nodewall-egress:";

/// The NFLOG prefix for drops of `reason` (`default-deny`, `rule`, `invalid`) by `rule` (empty
/// unless the reason is `rule`), inbound or `egress`. nft limits prefixes to 127 bytes; long
/// rule names are cut.
pub fn nflog_prefix(egress: bool, reason: &str, rule: &str) -> String {
    let tag = if egress { EGRESS_TAG } else { PREFIX_TAG };
    let mut p = format!("{tag}{reason}:{rule}");
    if p.len() > 127 {
        let mut end = 127;
        while !p.is_char_boundary(end) {
            end -= 1;
        }
        p.truncate(end);
    }
    p
}

/// `(egress, reason, rule)` from a prefix made by [`nflog_prefix`]; `None` for anyone else's.
pub fn parse_nflog_prefix(prefix: &str) -> Option<(bool, &str, &str)> {
    let p = prefix.trim_end_matches(['\0', ' ']);
    let (egress, rest) = match p.strip_prefix(EGRESS_TAG) {
        Some(rest) => (true, rest),
        None => (false, p.strip_prefix(PREFIX_TAG)?),
    };
    let (reason, rule) = rest.split_once(':')?;
    Some((egress, reason, rule))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_round_trip() {
        let p = nflog_prefix(false, "rule", "tke-node/kubelet");
        assert_eq!(p, "nodewall:rule:tke-node/kubelet");
        assert_eq!(
            parse_nflog_prefix(&p),
            Some((false, "rule", "tke-node/kubelet"))
        );
        assert_eq!(
            parse_nflog_prefix("nodewall:default-deny:\0"),
            Some((false, "default-deny", ""))
        );
        let p = nflog_prefix(true, "default-deny", "");
        assert_eq!(parse_nflog_prefix(&p), Some((true, "default-deny", "")));
        assert_eq!(parse_nflog_prefix("IN=eth0 "), None);
        assert_eq!(nflog_prefix(false, "rule", &"x".repeat(300)).len(), 127);
    }
}
