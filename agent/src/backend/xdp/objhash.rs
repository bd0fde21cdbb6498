//! Which eBPF object the pinned programs came from: a hash of the object embedded in this
//! binary, recorded next to the pins as an empty bpffs directory `object-<hash>` (a bpffs
//! holds no regular files). An agent finding its own hash there, with the programs and maps
//! still pinned and the programs still using those maps, reuses them instead of loading and
//! verifying the same object again (the verifier alone costs about 0.1-0.2 s per apply).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::attach::remove_pin;

const MARKER_PREFIX: &str = "object-";

/// FNV-1a, 64 bits: stable across builds and Rust versions (unlike `DefaultHasher`), and the
/// inputs are not adversarial.
pub struct Fnv(u64);

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

/// Hash of the object this binary embeds (computed once).
pub fn object_hash() -> u64 {
    static HASH: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *HASH.get_or_init(|| {
        let mut h = Fnv::new();
        h.write_words(super::datapath::OBJECT);
        h.finish()
    })
}

fn marker(pin_dir: &Path) -> PathBuf {
    pin_dir.join(format!("{MARKER_PREFIX}{:016x}", object_hash()))
}

/// Whether the pinned programs were recorded as coming from this binary's object.
pub fn is_ours(pin_dir: &Path) -> bool {
    marker(pin_dir).is_dir()
}

/// Removes every object marker (before the program pins are replaced, and on flush).
pub fn clear(pin_dir: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(pin_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", pin_dir.display())),
    };
    for entry in entries {
        let entry = entry?;
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(MARKER_PREFIX)
        {
            remove_pin(&entry.path())?;
        }
    }
    Ok(())
}

/// Records that the programs now pinned come from this binary's object.
pub fn record(pin_dir: &Path) -> Result<()> {
    let path = marker(pin_dir);
    std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))
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
