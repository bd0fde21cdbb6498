//! XDP backend: the policy compiled into BPF maps read by an XDP program on each uplink, plus
//! a TC egress program that records the node's flows so their return traffic passes.
//!
//! - `image`: policy -> map content (pure); `maps`: typed maps, generation diff writes;
//! - `datapath`: the loaded object and the two-generation install; `slots`: counter slots;
//! - `attach`: bpffs, pinned links, native/generic XDP; `counters`: labelled counters.
//!
//! Everything is pinned under `<bpffs>/<name>/` (default `/sys/fs/bpf/nodewall/`): the maps,
//! the two programs, and under `links/` one XDP and one TC link per interface. The next agent adopts them
//! (maps reused, programs swapped inside the links atomically); `flush` removes the lot.
//!
//! The object is built by `agent/build.rs` from `ebpf/` (nightly of `ebpf/rust-toolchain.toml`
//! and bpf-linker, both installed by `cargo xtask setup`) and embedded in the binary, so
//! `cargo build -p nodewall` is the only step; NODEWALL_EBPF_OBJECT points the build at a
//! prebuilt object instead (`cargo xtask build-ebpf` prints where it builds one).

mod attach;
mod counters;
mod datapath;
mod image;
mod maps;
mod slots;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use nodewall_common::xdp::map_names;

pub use attach::{ensure_bpffs, if_index, if_name, XdpAttach};
pub use datapath::{current_netns, Datapath, Installed};
pub use image::{Image, PortTable};
pub use maps::{KernelGen, Maps, Writes};

use crate::backend::{ApplyReport, Backend, Counters, Status};
use crate::policy::Policy;

#[derive(Clone, Debug)]
pub struct XdpOptions {
    /// Where a bpffs is (or gets mounted).
    pub bpffs: PathBuf,
    /// Directory under `bpffs` holding this agent's pins.
    pub name: String,
    pub attach: XdpAttach,
}

impl Default for XdpOptions {
    fn default() -> Self {
        Self {
            bpffs: PathBuf::from("/sys/fs/bpf"),
            name: "nodewall".into(),
            attach: XdpAttach::Auto,
        }
    }
}

pub struct XdpBackend {
    opts: XdpOptions,
    /// Loaded on the first apply; status/counters/flush work from the pins without it.
    loaded: Option<Datapath>,
    /// Interfaces whose links already run this process's programs.
    adopted: BTreeSet<u32>,
}

impl XdpBackend {
    /// The backend with its defaults: pins under `/sys/fs/bpf/nodewall`, native XDP with a
    /// generic fallback. Nothing is touched until the first call.
    pub fn new() -> Result<Self> {
        Ok(Self::with_options(XdpOptions::default()))
    }

    pub fn with_options(opts: XdpOptions) -> Self {
        Self {
            opts,
            loaded: None,
            adopted: BTreeSet::new(),
        }
    }

    pub fn pin_dir(&self) -> PathBuf {
        self.opts.bpffs.join(&self.opts.name)
    }

    fn links(&self) -> attach::Links {
        attach::Links::new(&self.pin_dir())
    }

    /// The interfaces to enforce on (the policy's, or those holding a default route), with
    /// their indexes.
    fn interfaces(policy: &Policy) -> Result<Vec<(String, u32)>> {
        crate::backend::interfaces::resolve(&policy.interfaces)?
            .into_iter()
            .map(|n| if_index(&n).map(|i| (n, i)))
            .collect()
    }

    /// Maps of an installed policy, from this process or from the pins.
    fn with_maps<T>(&self, f: impl FnOnce(&Maps) -> Result<T>) -> Result<Option<T>> {
        if let Some(dp) = &self.loaded {
            return f(dp.maps()).map(Some);
        }
        if !self.pin_dir().join(map_names::SWITCH).exists() {
            return Ok(None);
        }
        let maps = Maps::open_pinned(&self.pin_dir())?;
        if maps.read_switch()?.layout == 0 {
            return Ok(None);
        }
        f(&maps).map(Some)
    }
}

impl Backend for XdpBackend {
    fn name(&self) -> &'static str {
        "xdp"
    }

    fn apply(&mut self, policy: &Policy) -> Result<ApplyReport> {
        let started = Instant::now();
        // Everything that can be refused is checked before the kernel is touched.
        Image::build(policy)?;
        let wanted = Self::interfaces(policy)?;
        ensure_bpffs(&self.opts.bpffs)?;
        let dir = self.pin_dir();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        if self.loaded.is_none() {
            let mut dp = Datapath::load(Some(&dir))?;
            attach::pin_programs(&mut dp, &dir)?;
            self.loaded = Some(dp);
            self.adopted.clear();
        }
        let links = self.links();
        let dp = self.loaded.as_mut().expect("loaded above");
        let installed = dp.install(policy)?;
        let mut changed = installed.changed;
        let mut added = installed.writes.added;
        let mut removed = installed.writes.removed;
        let before = links.attached()?;
        for (name, index) in &wanted {
            if self.adopted.contains(index) && before.contains(index) {
                continue;
            }
            let fresh = links.attach(dp, name, *index, self.opts.attach)?;
            if let Some(mode) = fresh {
                tracing::info!(interface = %name, ?mode, "attached XDP");
                changed = true;
                added += 1;
            }
            self.adopted.insert(*index);
        }
        for index in before
            .iter()
            .filter(|i| !wanted.iter().any(|(_, w)| w == *i))
        {
            links.detach(*index)?;
            self.adopted.remove(index);
            changed = true;
            removed += 1;
        }
        Ok(ApplyReport {
            generation: dp.generation(),
            changed,
            added,
            removed,
            duration: started.elapsed(),
        })
    }

    fn status(&self) -> Result<Status> {
        let links = self.links();
        let interfaces = links
            .attached()?
            .into_iter()
            .map(|i| if_name(i).unwrap_or_else(|| format!("ifindex {i}")))
            .collect();
        let found = self.with_maps(|maps| {
            let sw = maps.read_switch()?;
            let cfg = maps.read_config(sw.active & 1)?;
            let slots = slots::Slots::read(maps)?;
            let rules = cfg.rules[..cfg.nrules as usize]
                .iter()
                .map(|r| slots.name(r.slot).unwrap_or("?").to_string())
                .collect();
            Ok((sw.generation, rules, counters::read(maps)?))
        })?;
        Ok(match found {
            Some((generation, rules, counters)) => Status {
                backend: "xdp",
                installed: true,
                generation,
                interfaces,
                rules,
                counters,
            },
            None => Status {
                backend: "xdp",
                installed: false,
                generation: 0,
                interfaces,
                rules: Vec::new(),
                counters: Counters::default(),
            },
        })
    }

    fn flush(&mut self) -> Result<()> {
        let links = self.links();
        for index in links.attached()? {
            links.detach(index)?;
        }
        links.remove_dir()?;
        self.loaded = None;
        self.adopted.clear();
        let dir = self.pin_dir();
        for name in map_names::ALL.iter().chain(&attach::PROGRAM_PINS) {
            attach::remove_pin(&dir.join(name))?;
        }
        attach::remove_pin(&dir)
    }

    fn counters(&self) -> Result<Counters> {
        Ok(self.with_maps(counters::read)?.unwrap_or_default())
    }
}
