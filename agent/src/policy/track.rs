//! The reference connection tracker: the state conntrack gives each packet of a sequence, so
//! that [`evaluate`](super::evaluate) can be asked about stateful traffic (the node's own
//! connections, replies, closes, timeouts), and the backends tested against it sequence by
//! sequence. It runs the state machine of [`nodewall_common::ct`], the one the XDP program
//! runs; the nft backend gets its states from the kernel's conntrack, so the netns tests that
//! compare both backends with this tracker also hold that state machine to conntrack's.

use std::collections::HashMap;
use std::net::IpAddr;

use nodewall_common::ct::{self, icmp, pkt, Class, Ct, Dir, FlowState, Pkt, Timeouts, Write};
use nodewall_common::xdp::{FlowKey, FAMILY_IPV4, FAMILY_IPV6};

use super::evaluate::evaluate;
use super::model::{CtState, Packet, Policy, Verdict, L4};

/// Flows as the datapath keeps them, and their timeouts.
#[derive(Clone, Debug, Default)]
pub struct Tracker {
    flows: HashMap<FlowKey, FlowState>,
    timeouts: Timeouts,
}

impl Tracker {
    pub fn new(timeouts: Timeouts) -> Self {
        Self {
            flows: HashMap::new(),
            timeouts,
        }
    }

    /// The state an inbound packet gets at `now` (monotonic ns), with any ICMP error's quoted
    /// packet (one the node sent), and the flow table updated as the datapath updates it. The
    /// flow a new packet opens is only kept if `passes` says the packet got through.
    pub fn inbound(
        &mut self,
        p: &Pkt,
        quoted: Option<&Pkt>,
        now: u64,
        passes: impl FnOnce(CtState) -> bool,
    ) -> CtState {
        match ct::classify(p, Dir::In) {
            Class::Invalid => CtState::Invalid,
            Class::Untracked => CtState::New,
            Class::Error => {
                let flow = quoted
                    .filter(|q| q.src == p.dst)
                    .and_then(|q| ct::quoted_key(q, Dir::Out))
                    .and_then(|k| self.flows.get(&k));
                if ct::error_is_related(flow, now) {
                    CtState::Related
                } else {
                    CtState::Invalid
                }
            }
            Class::Flow(key, kind) => {
                let t = ct::track(self.flows.get(&key), kind, Dir::In, now, &self.timeouts);
                let state = match t.ct {
                    Ct::New => CtState::New,
                    Ct::Established => CtState::Established,
                    Ct::Invalid => CtState::Invalid,
                };
                if t.write == Write::Create {
                    // What the new flow replaces goes whether or not it is stored: conntrack
                    // kills a closing connection that a SYN reopens before judging the SYN.
                    self.flows.remove(&key);
                    if passes(state) {
                        self.flows.insert(key, t.next);
                    }
                } else {
                    self.write(key, t.write, t.next);
                }
                state
            }
        }
    }

    /// An outbound packet (the node's own, or one it forwards): always sent, it only updates
    /// the flows.
    pub fn outbound(&mut self, p: &Pkt, now: u64) {
        if let Class::Flow(key, kind) = ct::classify(p, Dir::Out) {
            let t = ct::track(self.flows.get(&key), kind, Dir::Out, now, &self.timeouts);
            let w = if t.write == Write::Create {
                Write::Update
            } else {
                t.write
            };
            self.write(key, w, t.next);
        }
    }

    /// [`Self::inbound`] and the policy's verdict on the packet, in one step: what the
    /// datapath does with it.
    pub fn judge(&mut self, policy: &Policy, p: &Pkt, quoted: Option<&Pkt>, now: u64) -> Verdict {
        let mut verdict = None;
        let nd = p.kind == pkt::ICMP
            && policy.implicit.neighbour_discovery
            && icmp::is_nd(p.is_v6(), p.flags);
        if nd {
            // Decided before tracking, as by every backend.
            return evaluate(policy, &packet(p, CtState::New));
        }
        let ct = self.inbound(p, quoted, now, |ct| {
            let v = evaluate(policy, &packet(p, ct));
            let passes = v.passes();
            verdict = Some(v);
            passes
        });
        // Without a flow to open, the verdict was not needed yet.
        verdict.unwrap_or_else(|| evaluate(policy, &packet(p, ct)))
    }

    fn write(&mut self, key: FlowKey, w: Write, next: FlowState) {
        match w {
            Write::Keep | Write::Create => {}
            Write::Update => {
                self.flows.insert(key, next);
            }
            Write::Delete => {
                self.flows.remove(&key);
            }
        }
    }

    /// Flows live at `now`.
    pub fn live(&self, now: u64) -> usize {
        self.flows.values().filter(|e| ct::live(e, now)).count()
    }
}

/// The state a packet gets when it belongs to no flow: `new` when it may open one,
/// `invalid` when conntrack refuses it, `related`/`established` never.
pub fn first_state(p: &Pkt) -> CtState {
    Tracker::default().inbound(p, None, 0, |_| false)
}

/// The evaluator's view of a parsed packet.
pub fn packet(p: &Pkt, ct: CtState) -> Packet {
    let l4 = match p.kind {
        pkt::TCP => L4::Tcp {
            sport: p.sport,
            dport: p.dport,
        },
        pkt::UDP => L4::Udp {
            sport: p.sport,
            dport: p.dport,
        },
        pkt::ICMP => L4::Icmp {
            icmp_type: p.flags,
            code: 0,
        },
        _ => L4::Other { number: p.proto },
    };
    Packet {
        src: addr(p.family, &p.src),
        l4,
        ct,
    }
}

fn addr(family: u32, b: &[u8; 16]) -> IpAddr {
    if family == FAMILY_IPV4 {
        IpAddr::from([b[0], b[1], b[2], b[3]])
    } else {
        IpAddr::from(*b)
    }
}

/// Builders of [`Pkt`]s as the XDP parser would produce them.
pub mod build {
    use super::*;

    fn base(src: IpAddr, dst: IpAddr, kind: u8, proto: u8) -> Pkt {
        let (family, s, d) = match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let mut a = [0; 16];
                let mut b = [0; 16];
                a[..4].copy_from_slice(&s.octets());
                b[..4].copy_from_slice(&d.octets());
                (FAMILY_IPV4, a, b)
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => (FAMILY_IPV6, s.octets(), d.octets()),
            _ => panic!("mixed address families"),
        };
        Pkt {
            src: s,
            dst: d,
            family,
            kind,
            proto,
            ..Pkt::EMPTY
        }
    }

    pub fn tcp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, flags: u8) -> Pkt {
        Pkt {
            sport,
            dport,
            flags,
            ..base(src, dst, pkt::TCP, ct::IPPROTO_TCP)
        }
    }

    pub fn udp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> Pkt {
        Pkt {
            sport,
            dport,
            ..base(src, dst, pkt::UDP, ct::IPPROTO_UDP)
        }
    }

    /// ICMP (ICMPv6 between IPv6 addresses) with the given type and identifier.
    pub fn icmp(src: IpAddr, dst: IpAddr, icmp_type: u8, id: u16) -> Pkt {
        let proto = if src.is_ipv6() {
            ct::IPPROTO_ICMPV6
        } else {
            ct::IPPROTO_ICMP
        };
        Pkt {
            flags: icmp_type,
            sport: id,
            ..base(src, dst, pkt::ICMP, proto)
        }
    }

    /// Any other protocol, with the ports SCTP, DCCP and UDP-Lite carry (0 for the rest).
    pub fn other(src: IpAddr, dst: IpAddr, proto: u8, sport: u16, dport: u16) -> Pkt {
        Pkt {
            sport,
            dport,
            ..base(src, dst, pkt::OTHER, proto)
        }
    }

    /// The same packet going the other way.
    pub fn reversed(p: &Pkt) -> Pkt {
        Pkt {
            src: p.dst,
            dst: p.src,
            sport: if p.kind == pkt::ICMP {
                p.sport
            } else {
                p.dport
            },
            dport: if p.kind == pkt::ICMP {
                p.dport
            } else {
                p.sport
            },
            ..*p
        }
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;
    use crate::config::{Action, Implicit, Mode, Protocol};
    use crate::policy::{AddrSet, Origin, PortSet, Reason, Rule};

    const S: u64 = 1_000_000_000;

    fn me() -> IpAddr {
        "198.18.0.1".parse().unwrap()
    }
    fn peer() -> IpAddr {
        "198.18.5.5".parse().unwrap()
    }

    fn policy(allow_peer: bool) -> Policy {
        let rules = if allow_peer {
            vec![Rule {
                name: "peer".into(),
                action: Action::Allow,
                protocol: Protocol::All,
                ports: PortSet::any(),
                sources: AddrSet::from_nets(&["198.18.5.5/32".parse().unwrap()]),
                origin: Origin::User,
            }]
        } else {
            Vec::new()
        };
        Policy {
            mode: Mode::Enforce,
            implicit: Implicit::default(),
            rules,
            interfaces: Vec::new(),
            profile: None,
            samples_per_second: crate::config::DEFAULT_SAMPLES_PER_SECOND,
            egress: Default::default(),
        }
    }

    #[test]
    fn a_connection_outlives_the_rule_that_let_it_in_but_not_its_close() {
        let mut t = Tracker::new(Timeouts::DEFAULT);
        let (open, closed) = (policy(true), policy(false));
        let syn = tcp(peer(), me(), 40000, 22, 0x02);
        let ack = tcp(peer(), me(), 40000, 22, 0x10);
        assert!(t.judge(&open, &syn, None, 0).passes());
        t.outbound(&reversed(&tcp(peer(), me(), 40000, 22, 0x12)), 0);
        assert!(t.judge(&open, &ack, None, S).passes());
        // The rule goes; the live connection stays.
        let v = t.judge(&closed, &ack, None, 2 * S);
        assert_eq!((v.passes(), v.reason), (true, Reason::Established));
        // A new SYN from the same port is a new connection: the rules say no.
        assert!(!t.judge(&closed, &syn, None, 3 * S).passes());
        // Closed by a RST: established for the close timeout (10 s), then the tuple is nothing:
        // a stale RST is invalid, a stale ACK judged as new.
        t.outbound(&reversed(&tcp(peer(), me(), 40000, 22, 0x04)), 4 * S);
        assert_eq!(
            t.judge(&closed, &ack, None, 13 * S).reason,
            Reason::Established
        );
        let rst = tcp(peer(), me(), 40000, 22, 0x04);
        assert_eq!(t.judge(&closed, &rst, None, 15 * S).reason, Reason::Invalid);
        assert_eq!(
            t.judge(&closed, &ack, None, 15 * S).reason,
            Reason::DefaultDeny
        );
    }

    #[test]
    fn a_dropped_packet_opens_nothing() {
        let mut t = Tracker::new(Timeouts::DEFAULT);
        let q = udp(peer(), me(), 5000, 53);
        assert!(!t.judge(&policy(false), &q, None, 0).passes());
        assert_eq!(t.live(0), 0);
        assert!(t.judge(&policy(true), &q, None, 0).passes());
        assert_eq!(t.live(0), 1);
    }

    #[test]
    fn errors_are_related_only_to_live_flows_of_ours() {
        let mut t = Tracker::new(Timeouts::DEFAULT);
        let out = udp(me(), peer(), 5000, 53);
        t.outbound(&out, 0);
        let err = icmp("198.18.9.9".parse().unwrap(), me(), 3, 0);
        let closed = policy(false);
        let v = t.judge(&closed, &err, Some(&out), S);
        assert_eq!((v.passes(), v.reason), (true, Reason::IcmpError));
        let made_up = udp(me(), peer(), 5001, 53);
        assert_eq!(
            t.judge(&closed, &err, Some(&made_up), S).reason,
            Reason::Invalid
        );
        assert_eq!(
            t.judge(&closed, &err, Some(&out), 31 * S).reason,
            Reason::Invalid,
            "the UDP flow expired"
        );
    }
}
