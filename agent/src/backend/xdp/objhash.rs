//! Which eBPF object the pinned programs came from: a hash of the object embedded in this
//! binary, recorded next to the pins as an empty bpffs directory `object-<hash>` (a bpffs
//! holds no regular files). An agent finding its own hash there, with the programs and maps
//! still pinned and the programs still using those maps, reuses them instead of loading and
//! verifying the same object again (the verifier alone costs about 0.1-0.2 s per apply).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use sha2::{Digest, Sha256};

use super::attach::remove_pin;

const MARKER_PREFIX: &str = "object-";

/// The first 64 bits of the SHA-256 of the object this binary embeds (computed once): a
/// cryptographic hash, so that two objects never share an identity by construction, as they
/// could under a word-folding FNV. It costs about 1 ms per agent start for a few hundred KiB.
pub fn object_hash() -> u64 {
    static HASH: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *HASH.get_or_init(|| {
        let digest = Sha256::digest(super::datapath::OBJECT);
        u64::from_be_bytes(digest[..8].try_into().expect("32-byte digest"))
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
