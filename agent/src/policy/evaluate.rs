//! The reference evaluator: what the policy says about one packet. Both backends are tested
//! against it packet by packet, so it must stay the plain reading of the rules in `model.rs`.

use super::model::*;

pub fn evaluate(policy: &Policy, pkt: &Packet) -> Verdict {
    let enforced = policy.mode == Mode::Enforce;
    let allow = |reason, rule| Verdict {
        action: Action::Allow,
        reason,
        rule,
        enforced,
    };
    let drop = |reason, rule| Verdict {
        action: Action::Deny,
        reason,
        rule,
        enforced,
    };
    let imp = &policy.implicit;

    // Neighbour discovery first: conntrack does not track ND as flows and marks redirects (137)
    // invalid, but IPv6 stops working without any of 133-137.
    if let L4::Icmp { icmp_type, .. } = pkt.l4 {
        if imp.neighbour_discovery && pkt.src.is_ipv6() && ICMPV6_ND_TYPES.contains(&icmp_type) {
            return allow(Reason::NeighbourDiscovery, None);
        }
    }
    match pkt.ct {
        CtState::Invalid => return drop(Reason::Invalid, None),
        CtState::Established if imp.established => return allow(Reason::Established, None),
        CtState::Related => {
            if let L4::Icmp { icmp_type, .. } = pkt.l4 {
                if imp.icmp_errors && is_icmp_error(pkt.src.is_ipv6(), icmp_type) {
                    return allow(Reason::IcmpError, None);
                }
            } else if imp.established {
                return allow(Reason::Established, None);
            }
        }
        _ => {}
    }
    if let L4::Udp {
        sport: DHCP_SERVER_PORT,
        dport: DHCP_CLIENT_PORT,
    } = pkt.l4
    {
        if imp.dhcp_client {
            return allow(Reason::DhcpClient, None);
        }
    }
    for (i, rule) in policy.rules.iter().enumerate() {
        if rule.matches(pkt) {
            return match rule.action {
                Action::Allow => allow(Reason::Rule, Some(i)),
                Action::Deny => drop(Reason::Rule, Some(i)),
            };
        }
    }
    drop(Reason::DefaultDeny, None)
}

pub fn is_icmp_error(v6: bool, icmp_type: u8) -> bool {
    if v6 {
        ICMPV6_ERROR_TYPES.contains(&icmp_type)
    } else {
        ICMPV4_ERROR_TYPES.contains(&icmp_type)
    }
}
