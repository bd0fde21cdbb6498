//! Refusing a policy that would cut the SSH session it is applied from.
//!
//! `SSH_CONNECTION` (set by sshd: `CLIENT_IP CLIENT_PORT SERVER_IP SERVER_PORT`) names the
//! session. The policy is evaluated for that flow twice: as the running session (conntrack
//! `established`) and as a new connection from the same client (the reconnect after a drop).
//! Either being dropped is a lockout. The ingress interface is not considered: a session that
//! arrives on an unfiltered interface is refused too, and `--force` is the way out.

use std::net::IpAddr;

use crate::policy::{evaluate, evaluate_egress, CtState, EgressPacket, Packet, Policy, Sender, L4};

/// The session a policy would cut, and why.
#[derive(Debug, PartialEq, Eq)]
pub struct Lockout {
    pub client: IpAddr,
    pub server_port: u16,
    pub reason: &'static str,
}

impl std::fmt::Display for Lockout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "this policy {} (SSH_CONNECTION: from {} to port tcp/{}); add a rule or a failsafe entry that allows it, or pass --force",
            self.reason, self.client, self.server_port
        )
    }
}

/// Checks `policy` against the session described by an `SSH_CONNECTION` value. A value that
/// cannot be parsed is not a session: nothing to protect.
pub fn check_ssh(policy: &Policy, ssh_connection: &str) -> Result<(), Lockout> {
    let Some((client, client_port, server_port)) = parse(ssh_connection) else {
        return Ok(());
    };
    let packet = |ct| Packet {
        src: client,
        l4: L4::Tcp {
            sport: client_port,
            dport: server_port,
        },
        ct,
    };
    let lockout = |reason| Lockout {
        client,
        server_port,
        reason,
    };
    if !evaluate(policy, &packet(CtState::Established)).passes() {
        return Err(lockout("would drop the SSH session it is applied from"));
    }
    if !evaluate(policy, &packet(CtState::New)).passes() {
        return Err(lockout(
            "would block new SSH connections from the client it is applied from, so a dropped session could not reconnect",
        ));
    }
    // The session's replies leave through egress: as a live flow they always pass there, and
    // this says so should that ever change.
    let reply = EgressPacket {
        from: Sender::Host,
        dst: client,
        l4: L4::Tcp {
            sport: server_port,
            dport: client_port,
        },
        ct: CtState::Established,
    };
    if !evaluate_egress(policy, &reply).passes() {
        return Err(lockout(
            "would drop the replies of the SSH session it is applied from",
        ));
    }
    Ok(())
}

/// The API server the agent talks to would be cut off by egress: a new TCP connection from
/// the node to `KUBERNETES_SERVICE_HOST:KUBERNETES_SERVICE_PORT`.
#[derive(Debug, PartialEq, Eq)]
pub struct ApiLockout {
    pub host: IpAddr,
    pub port: u16,
}

impl std::fmt::Display for ApiLockout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "this policy would block the agent's own access to the Kubernetes API server (KUBERNETES_SERVICE_HOST {} port tcp/{}) through egress; allow it in `egress.rules` or `egress.failsafe` (the default failsafe allows tcp 443/6443 to the `control-plane` network), or pass --force",
            self.host, self.port
        )
    }
}

/// Checks the egress half of `policy` against the API server named by the in-cluster
/// environment (`KUBERNETES_SERVICE_HOST`, `KUBERNETES_SERVICE_PORT`); values that do not
/// parse name no API server. The service address is what the agent dials; kube-proxy may
/// rewrite it to an endpoint before nodewall's output chain sees the packet, so an egress
/// rule for the endpoints is what really keeps the access, and the check is on the address
/// the agent knows.
pub fn check_api_server(policy: &Policy, host: &str, port: &str) -> Result<(), ApiLockout> {
    let (Ok(host), Ok(port)) = (host.trim().parse::<IpAddr>(), port.trim().parse::<u16>()) else {
        return Ok(());
    };
    let pkt = EgressPacket {
        from: Sender::Host,
        dst: host.to_canonical(),
        l4: L4::Tcp {
            sport: 40000,
            dport: port,
        },
        ct: CtState::New,
    };
    if evaluate_egress(policy, &pkt).passes() {
        Ok(())
    } else {
        Err(ApiLockout { host, port })
    }
}

fn parse(value: &str) -> Option<(IpAddr, u16, u16)> {
    let f: Vec<&str> = value.split_whitespace().collect();
    if f.len() != 4 {
        return None;
    }
    // Link-local clients carry a zone (`fe80::1%eth0`); v4 clients of a dual-stack sshd may be
    // v4-mapped (`::ffff:198.18.0.1`), which the kernel sees as IPv4.
    let ip: IpAddr = f[0].split('%').next()?.parse().ok()?;
    Some((ip.to_canonical(), f[1].parse().ok()?, f[3].parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Action, Implicit, Mode, PortRange, Protocol};
    use crate::policy::{AddrSet, Origin, PortSet, Rule};

    fn policy(ssh_from: &str, established: bool, mode: Mode) -> Policy {
        Policy {
            mode,
            implicit: Implicit {
                established,
                ..Implicit::default()
            },
            rules: vec![Rule {
                name: "ssh".into(),
                action: Action::Allow,
                protocol: Protocol::Tcp,
                ports: PortSet::new(vec![PortRange::single(22)]),
                sources: AddrSet::from_nets(&[ssh_from.parse().unwrap()]),
                origin: Origin::Failsafe,
            }],
            interfaces: vec![],
            profile: None,
            samples_per_second: crate::config::DEFAULT_SAMPLES_PER_SECOND,
            egress: Default::default(),
        }
    }

    const SESSION: &str = "198.18.5.9 50022 198.18.0.2 22";

    #[test]
    fn allowed_session_passes() {
        assert_eq!(
            check_ssh(&policy("198.18.0.0/16", true, Mode::Enforce), SESSION),
            Ok(())
        );
    }

    #[test]
    fn blocked_reconnect_is_refused() {
        let err = check_ssh(&policy("198.19.0.0/16", true, Mode::Enforce), SESSION).unwrap_err();
        assert!(err.reason.contains("new SSH connections"));
        assert!(err.to_string().contains("198.18.5.9"));
        assert!(err.to_string().contains("--force"));
    }

    #[test]
    fn dropped_session_is_refused() {
        let err = check_ssh(&policy("198.19.0.0/16", false, Mode::Enforce), SESSION).unwrap_err();
        assert!(err.reason.contains("would drop the SSH session"));
    }

    #[test]
    fn audit_mode_drops_nothing() {
        assert_eq!(
            check_ssh(&policy("198.19.0.0/16", false, Mode::Audit), SESSION),
            Ok(())
        );
    }

    #[test]
    fn mapped_and_zoned_clients_are_understood() {
        let p = policy("198.18.0.0/16", true, Mode::Enforce);
        assert_eq!(
            check_ssh(&p, "::ffff:198.18.5.9 50022 ::ffff:198.18.0.2 22"),
            Ok(())
        );
        let v6 = policy("fd00::/8", true, Mode::Enforce);
        assert_eq!(check_ssh(&v6, "fd00::9 50022 fd00::2 22"), Ok(()));
        assert!(check_ssh(&v6, "fe80::9%eth0 50022 fe80::2 22").is_err());
        assert_eq!(check_ssh(&p, "garbage"), Ok(()));
    }

    #[test]
    fn egress_deny_keeps_session_replies_but_may_cut_the_api_server() {
        use crate::policy::{Egress, EgressRule, Traffic};
        let mut p = policy("198.18.0.0/16", true, Mode::Enforce);
        p.egress = Egress {
            default: Action::Deny,
            rules: Vec::new(),
        };
        assert_eq!(check_ssh(&p, SESSION), Ok(()));
        let err = check_api_server(&p, "198.18.48.1", "443").unwrap_err();
        assert!(err
            .to_string()
            .contains("KUBERNETES_SERVICE_HOST 198.18.48.1 port tcp/443"));
        p.egress.rules.push(EgressRule {
            name: "api".into(),
            action: Action::Allow,
            protocol: Protocol::Tcp,
            ports: PortSet::new(vec![PortRange::single(443)]),
            destinations: AddrSet::from_nets(&["198.18.48.0/24".parse().unwrap()]),
            traffic: Traffic::Host,
            pod_sources: None,
            origin: Origin::User,
        });
        assert_eq!(check_api_server(&p, "198.18.48.1", "443"), Ok(()));
        assert_eq!(check_api_server(&p, "not-an-ip", "443"), Ok(()));
        p.mode = Mode::Audit;
        p.egress.rules.clear();
        assert_eq!(check_api_server(&p, "198.18.48.1", "443"), Ok(()));
    }
}
