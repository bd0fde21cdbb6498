//! FNV-1a, 64 bits: the crate's one stable, non-cryptographic hash (policy digests, the
//! embedded eBPF object's identity, cache file names). Stable across builds and Rust versions,
//! unlike `DefaultHasher`; the inputs are not adversarial.

#[derive(Clone, Copy, Debug)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self::new()
    }
}

impl Fnv {
    pub fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// Folds in eight bytes at a time: a large input (the object is hundreds of KiB, hashed on
    /// every agent start) in an eighth of the time. Not byte-wise FNV, but as stable.
    pub fn write_words(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
            self.0 = (self.0 ^ w).wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.write(chunks.remainder());
        self.write(&(bytes.len() as u64).to_le_bytes());
    }

    pub fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_reference_values() {
        let mut h = Fnv::new();
        assert_eq!(h.finish(), 0xcbf29ce484222325);
        h.write(b"a");
        assert_eq!(h.finish(), 0xaf63dc4c8601ec8c);
        let words = |b: &[u8]| {
            let mut h = Fnv::new();
            h.write_words(b);
            h.finish()
        };
        assert_ne!(words(b"0123456789"), words(b"0123456789\0"));
        assert_ne!(words(b"01234567"), words(b"01234568"));
    }
}
