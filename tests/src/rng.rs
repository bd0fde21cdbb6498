//! A small deterministic generator (xorshift64*), so a failing random test can be replayed
//! with the seed it prints (`NWT_SEED=...`).

pub struct Rng(u64);

impl Rng {
    /// Seeded from `NWT_SEED` when set, else from `default`.
    pub fn from_env(default: u64) -> Self {
        let seed = std::env::var("NWT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default);
        eprintln!("random probes: NWT_SEED={seed}");
        Self(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// A random address inside `cidr` (e.g. "198.18.16.0/20", "fd00:16::/64").
    pub fn addr_in(&mut self, cidr: &str) -> std::net::IpAddr {
        let (addr, len) = cidr.split_once('/').expect("CIDR");
        let len: u32 = len.parse().expect("prefix length");
        match addr.parse::<std::net::IpAddr>().expect("address") {
            std::net::IpAddr::V4(a) => {
                let host_bits = 32 - len;
                let mask = if host_bits == 32 {
                    u32::MAX
                } else {
                    (1u32 << host_bits) - 1
                };
                let base = u32::from(a) & !mask;
                // Skip the network and broadcast addresses, where a prefix has other ones.
                let r = self.next_u64() as u32 & mask;
                let host = if mask < 3 { r } else { r.clamp(1, mask - 1) };
                std::net::IpAddr::V4((base | host).into())
            }
            std::net::IpAddr::V6(a) => {
                let host_bits = 128 - len;
                let mask = if host_bits == 128 {
                    u128::MAX
                } else {
                    (1u128 << host_bits) - 1
                };
                let base = u128::from(a) & !mask;
                let r = ((self.next_u64() as u128) << 64) | self.next_u64() as u128;
                // Past the topology's own low addresses, where a prefix has other ones.
                let host = if mask < 3 {
                    r & mask
                } else {
                    (r & mask).max(3)
                };
                std::net::IpAddr::V6((base | host).into())
            }
        }
    }
}
