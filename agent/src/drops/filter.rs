//! Which samples a reader wants (`nodewall drops --reason/--rule/--from/--port/--protocol/
//! --direction`). Every given criterion must hold; a criterion given several times holds when
//! any of its values does.

use ipnet::IpNet;

use super::DropRecord;
use crate::backend::Direction;
use crate::vocab::PortRange;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// `default-deny`, `rule`, `invalid`.
    pub reasons: Vec<String>,
    /// Rule names; a trailing `*` matches every name that starts with what precedes it
    /// (`tke-node/*`).
    pub rules: Vec<String>,
    /// Source prefixes.
    pub sources: Vec<IpNet>,
    /// Destination ports (TCP and UDP).
    pub ports: Vec<PortRange>,
    /// `tcp`, `udp`, `icmp`, `icmpv6` or a protocol number.
    pub protocols: Vec<String>,
    pub direction: Option<Direction>,
}

impl Filter {
    pub fn matches(&self, r: &DropRecord) -> bool {
        fn any<T>(list: &[T], f: impl Fn(&T) -> bool) -> bool {
            list.is_empty() || list.iter().any(f)
        }
        any(&self.reasons, |x| *x == r.reason)
            && any(&self.rules, |x| match x.strip_suffix('*') {
                Some(prefix) => r.rule.starts_with(prefix) && !r.rule.is_empty(),
                None => *x == r.rule,
            })
            && any(&self.sources, |net| net.contains(&r.src))
            && any(&self.ports, |p| {
                r.dport.is_some_and(|d| p.start <= d && d <= p.end)
            })
            && any(&self.protocols, |x| *x == r.protocol)
            && self.direction.is_none_or(|d| d == r.direction)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drops::{record::tests::event, Stamp};

    fn record(protocol: &str) -> DropRecord {
        let stamp = Stamp {
            node: "n".into(),
            backend: "xdp".into(),
        };
        DropRecord::new(
            &event(protocol, false),
            std::time::SystemTime::now(),
            &stamp,
            None,
        )
    }

    #[test]
    fn criteria_are_anded_values_ored() {
        let r = record("tcp");
        assert!(Filter::default().matches(&r));
        let f = |edit: fn(&mut Filter)| {
            let mut f = Filter::default();
            edit(&mut f);
            f.matches(&r)
        };
        assert!(f(|f| f.reasons = vec!["invalid".into(), "rule".into()]));
        assert!(!f(|f| f.reasons = vec!["default-deny".into()]));
        assert!(f(|f| f.rules = vec!["deny-*".into()]));
        assert!(!f(|f| f.rules = vec!["deny".into()]));
        assert!(f(|f| f.sources = vec!["198.19.0.0/16".parse().unwrap()]));
        assert!(!f(|f| f.sources = vec!["fd00::/8".parse().unwrap()]));
        assert!(f(|f| f.ports = vec![PortRange::new(10000, 11000)]));
        assert!(
            !f(|f| f.ports = vec![PortRange::single(40000)]),
            "source ports do not count"
        );
        assert!(f(|f| f.protocols = vec!["udp".into(), "tcp".into()]));
        assert!(f(|f| f.direction = Some(Direction::Ingress)));
        assert!(!f(|f| f.direction = Some(Direction::Egress)));
        assert!(!f(|f| {
            f.protocols = vec!["tcp".into()];
            f.reasons = vec!["invalid".into()];
        }));
        // An ICMP sample has no destination port.
        let ping = record("icmp");
        let ports = Filter {
            ports: vec![PortRange::new(0, 65535)],
            ..Filter::default()
        };
        assert!(!ports.matches(&ping));
    }
}
