//! The words that the built-in profiles, the config and the policy share: IP protocols and
//! port ranges. A leaf module, so that `config` (which checks profile names) and `profiles`
//! (whose rules use these words) need not import each other.

use serde::Serialize;

/// Protocol as written in a rule. `Icmp` is ICMP for IPv4, `Icmpv6` is ICMPv6; `All` is any.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
    All,
}

impl Protocol {
    pub fn has_ports(self) -> bool {
        matches!(self, Protocol::Tcp | Protocol::Udp)
    }
}

/// An inclusive destination port range; `start <= end`, both in 1..=65535.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

/// `22` or `8000-8080`, as written in a config.
impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

impl PortRange {
    pub const fn new(start: u16, end: u16) -> Self {
        Self { start, end }
    }
    pub const fn single(port: u16) -> Self {
        Self {
            start: port,
            end: port,
        }
    }
}
