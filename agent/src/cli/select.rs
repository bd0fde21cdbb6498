//! Picking the backend a command talks to.

use std::path::Path;

use clap::ValueEnum;
use nodewall::backend::nft::NftBackend;
use nodewall::backend::xdp::{XdpBackend, XdpOptions};
use nodewall::backend::Backend;
use nodewall::config::BackendKind;

#[derive(Copy, Clone, Debug, ValueEnum, PartialEq, Eq)]
pub enum BackendArg {
    Nft,
    Xdp,
    /// For apply: the config's choice. For status/flush: whatever nodewall installed.
    Auto,
}

/// The backend for `apply` and `run`: the command-line choice, else the config's. Each keeps
/// its record of what it installed in `state_dir`: the nft backend its sets (see
/// [`NftBackend::remember_in`]), the XDP backend what its map generations hold (under `xdp/`).
pub fn for_apply(
    arg: BackendArg,
    configured: BackendKind,
    state_dir: Option<&Path>,
) -> anyhow::Result<Box<dyn Backend>> {
    let kind = match arg {
        BackendArg::Nft => BackendKind::Nft,
        BackendArg::Xdp => BackendKind::Xdp,
        BackendArg::Auto => configured,
    };
    open(kind, state_dir)
}

/// The backend for `status`/`flush`: with `auto`, the one that has a policy installed (XDP
/// state is found through its pins; otherwise nft, whose `status` says if nothing is there).
pub fn for_inspect(arg: BackendArg) -> anyhow::Result<Box<dyn Backend>> {
    match arg {
        BackendArg::Xdp => open(BackendKind::Xdp, None),
        BackendArg::Nft => open(BackendKind::Nft, None),
        BackendArg::Auto => {
            let xdp = XdpBackend::new()?;
            if xdp.status().is_ok_and(|s| s.installed) {
                Ok(Box::new(xdp))
            } else {
                open(BackendKind::Nft, None)
            }
        }
    }
}

/// The backend of `kind` (`auto` resolved here), keeping its record in `state_dir` if given.
fn open(kind: BackendKind, state_dir: Option<&Path>) -> anyhow::Result<Box<dyn Backend>> {
    let xdp = match kind {
        BackendKind::Auto => xdp_capable(),
        BackendKind::Xdp => true,
        BackendKind::Nft => false,
    };
    if xdp {
        let mut opts = XdpOptions::from_env()?;
        if let Some(dir) = state_dir {
            opts.cache = Some(dir.join("xdp"));
        }
        return Ok(Box::new(XdpBackend::with_options(opts)));
    }
    let mut nft = NftBackend::new()?;
    if let Some(dir) = state_dir {
        nft.remember_in(dir);
    }
    Ok(Box::new(nft))
}

/// `backend: auto` picks XDP on kernels that expose BTF (5.x+, the ones whose verifier and
/// helpers the program was built for) and nft elsewhere; XDP itself falls back from native to
/// generic mode per interface, so driver support is not a reason to choose nft.
fn xdp_capable() -> bool {
    std::path::Path::new("/sys/kernel/btf/vmlinux").exists()
}
