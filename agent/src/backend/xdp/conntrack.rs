//! The connection-tracking timeouts the XDP datapath applies: those of the network namespace's
//! conntrack (`net.netfilter.nf_conntrack_*`), so that on one node the nft backend (which
//! uses conntrack itself) and the XDP backend forget a flow at the same moment, and an
//! operator who tunes conntrack tunes both. Read at every apply; conntrack's defaults where a
//! sysctl is missing (conntrack not built or not loaded).

use std::path::Path;

use nodewall_common::ct::Timeouts;

const SYSCTLS: &str = "/proc/sys/net/netfilter";

/// The timeouts of the calling thread's network namespace.
pub fn timeouts() -> Timeouts {
    from_dir(Path::new(SYSCTLS))
}

/// The timeouts from a directory laid out like `/proc/sys/net/netfilter`.
pub fn from_dir(dir: &Path) -> Timeouts {
    let d = Timeouts::DEFAULT;
    let read = |name: &str, default: u32| -> u32 {
        std::fs::read_to_string(dir.join(format!("nf_conntrack_{name}")))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(default)
    };
    Timeouts {
        tcp_syn_sent: read("tcp_timeout_syn_sent", d.tcp_syn_sent),
        tcp_syn_recv: read("tcp_timeout_syn_recv", d.tcp_syn_recv),
        tcp_established: read("tcp_timeout_established", d.tcp_established),
        tcp_fin_wait: read("tcp_timeout_fin_wait", d.tcp_fin_wait),
        tcp_last_ack: read("tcp_timeout_last_ack", d.tcp_last_ack),
        tcp_time_wait: read("tcp_timeout_time_wait", d.tcp_time_wait),
        tcp_close: read("tcp_timeout_close", d.tcp_close),
        tcp_unacknowledged: read("tcp_timeout_unacknowledged", d.tcp_unacknowledged),
        udp: read("udp_timeout", d.udp),
        udp_stream: read("udp_timeout_stream", d.udp_stream),
        icmp: read("icmp_timeout", d.icmp),
        icmpv6: read("icmpv6_timeout", d.icmpv6),
        gre: read("gre_timeout", d.gre),
        gre_stream: read("gre_timeout_stream", d.gre_stream),
        generic: read("generic_timeout", d.generic),
        tcp_loose: read("tcp_loose", d.tcp_loose),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctls_override_defaults_and_garbage_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("nf_conntrack_udp_timeout"), "7\n").unwrap();
        std::fs::write(dir.path().join("nf_conntrack_tcp_timeout_time_wait"), "x").unwrap();
        let t = from_dir(dir.path());
        assert_eq!(t.udp, 7);
        assert_eq!(t.tcp_time_wait, Timeouts::DEFAULT.tcp_time_wait);
        assert_eq!(t.tcp_established, Timeouts::DEFAULT.tcp_established);
    }
}
