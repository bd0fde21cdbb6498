//! Where the XDP backend pins its objects and how it attaches: defaults, and the environment
//! variables that override them (the config file describes the policy, not the host).

use std::path::PathBuf;

use anyhow::{bail, Result};

use super::XdpAttach;

#[derive(Clone, Debug)]
pub struct XdpOptions {
    /// Where a bpffs is (or gets mounted).
    pub bpffs: PathBuf,
    /// Directory under `bpffs` holding this agent's pins.
    pub name: String,
    pub attach: XdpAttach,
    /// Directory of the files recording what the map generations hold between agent
    /// processes (see `cache`); `None` reads the maps back on every start.
    pub cache: Option<PathBuf>,
}

impl Default for XdpOptions {
    fn default() -> Self {
        Self {
            bpffs: PathBuf::from("/sys/fs/bpf"),
            name: "nodewall".into(),
            attach: XdpAttach::Auto,
            cache: Some(PathBuf::from(DEFAULT_CACHE_DIR)),
        }
    }
}

/// Environment variable: where the bpffs holding the pins is (default `/sys/fs/bpf`). For
/// hosts whose bpffs is mounted elsewhere, and for tests: `ip netns exec` remounts `/sys`, so
/// a process it starts does not see the host's `/sys/fs/bpf`.
pub const BPFFS_ENV: &str = "NODEWALL_BPFFS";
/// Default of [`XdpOptions::cache`]: beside the agent's lock and rollback state (`apply` and
/// `run` use `<--state-dir>/xdp`, this same place by default); a tmpfs, like the maps it
/// describes it does not outlive a reboot.
pub const DEFAULT_CACHE_DIR: &str = "/run/nodewall/xdp";
/// Environment variable: `auto` (default: native, else generic), `native` or `generic`.
pub const MODE_ENV: &str = "NODEWALL_XDP_MODE";

impl XdpOptions {
    /// The defaults, overridden by [`BPFFS_ENV`] and [`MODE_ENV`]; a bad value is an error
    /// naming the variable, so a typo never silently selects another mode.
    pub fn from_env() -> Result<Self> {
        Self::from_vars(
            std::env::var_os(BPFFS_ENV).map(PathBuf::from),
            std::env::var(MODE_ENV).ok(),
        )
    }

    fn from_vars(bpffs: Option<PathBuf>, mode: Option<String>) -> Result<Self> {
        let mut opts = Self::default();
        if let Some(path) = bpffs {
            if !path.is_absolute() {
                bail!("{BPFFS_ENV}: {:?} is not an absolute path", path);
            }
            opts.bpffs = path;
        }
        if let Some(mode) = mode {
            opts.attach = match mode.as_str() {
                "auto" | "" => XdpAttach::Auto,
                "native" => XdpAttach::Native,
                "generic" => XdpAttach::Generic,
                other => bail!("{MODE_ENV}: {other:?} is not one of auto, native, generic"),
            };
        }
        Ok(opts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_overrides_bpffs_and_mode() {
        let o = XdpOptions::from_vars(None, None).unwrap();
        assert_eq!(
            (o.bpffs, o.attach),
            (PathBuf::from("/sys/fs/bpf"), XdpAttach::Auto)
        );
        let o = XdpOptions::from_vars(Some("/run/nw-bpf".into()), Some("generic".into())).unwrap();
        assert_eq!(
            (o.bpffs, o.attach),
            (PathBuf::from("/run/nw-bpf"), XdpAttach::Generic)
        );
        let o = XdpOptions::from_vars(None, Some("native".into())).unwrap();
        assert_eq!(o.attach, XdpAttach::Native);
    }

    #[test]
    fn bad_environment_names_the_variable() {
        let e = XdpOptions::from_vars(None, Some("driver".into()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(MODE_ENV) && e.contains("driver") && e.contains("native"),
            "{e}"
        );
        let e = XdpOptions::from_vars(Some("bpf".into()), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains(BPFFS_ENV) && e.contains("absolute"), "{e}");
    }
}
