//! XDP backend: the policy compiled into BPF maps read by an XDP program on each uplink, plus
//! a TC egress program that tracks the node's outbound packets so return traffic of live
//! flows passes (connection tracking of its own: `ebpf/src/flow.rs`) and judges the new flows
//! they open by the egress rules (`ebpf/src/egress.rs`).
//!
//! - `image`: policy -> map content (pure); `maps`: typed maps, generation diff writes;
//! - `conntrack`: the flow timeouts, from the namespace's conntrack sysctls;
//! - `datapath`: the loaded object and the two-generation install; `slots`: counter slots;
//! - `attach`: bpffs, pinned links (live or dead), native/generic XDP; `counters`: labelled
//!   counters; `options`: pin location and attach mode (environment); `samples`: drop samples
//!   from the ring buffer; `sys`: the raw BPF syscalls aya lacks (link info, batched access).
//!
//! Everything is pinned under `<bpffs>/<name>/` (default `/sys/fs/bpf/nodewall/`, see
//! [`XdpOptions::from_env`]): the maps, the two programs, and under `links/` one XDP and one
//! TC link per interface. The next agent adopts them: maps reused, and programs too when they
//! come from the same object (`objhash`: no program load), else the new programs are swapped
//! inside the links atomically; `flush` removes the lot. What the two map generations hold is
//! kept in a file between agent processes (`cache`), so an apply writes its differences
//! without reading the maps back. An apply is idempotent on attachments: a link
//! found detached or unpinned is re-created, which is how `verify`'s drift is repaired.
//!
//! The object is built by `agent/build.rs` from `ebpf/` (nightly of `ebpf/rust-toolchain.toml`
//! and bpf-linker, both installed by `cargo xtask setup`) and embedded in the binary, so
//! `cargo build -p nodewall` is the only step; NODEWALL_EBPF_OBJECT points the build at a
//! prebuilt object instead (`cargo xtask build-ebpf` prints where it builds one).

mod attach;
mod buckets;
mod cache;
mod conntrack;
mod counters;
mod datapath;
mod flat;
mod image;
mod mapped;
mod maps;
mod objhash;
mod options;
mod runs;
mod samples;
mod slots;
mod sys;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use nodewall_common::xdp::map_names;

pub use attach::{ensure_bpffs, if_index, if_name, Attached, LinkState, XdpAttach};
pub use conntrack::timeouts as conntrack_timeouts;
pub use datapath::{current_netns, Datapath, Installed};
pub use image::{Image, PortTable};
pub use maps::{KernelGen, Maps, Writes};
/// Drop samples each CPU hands the agent per second, at most.
pub use nodewall_common::xdp::SAMPLES_PER_SECOND;
pub use options::{XdpOptions, BPFFS_ENV, MODE_ENV};

use crate::backend::{ApplyReport, Backend, Counters, DropSamples, Status};
use crate::policy::Policy;

pub struct XdpBackend {
    opts: XdpOptions,
    /// Loaded on the first apply; status/counters/flush work from the pins without it.
    loaded: Option<Loaded>,
}

/// The object this process loaded, with the kernel's ids of its two programs (what a live
/// link must run).
struct Loaded {
    dp: Datapath,
    xdp_id: u32,
    tc_id: u32,
}

impl XdpBackend {
    /// The backend with its defaults (pins under `/sys/fs/bpf/nodewall`, native XDP with a
    /// generic fallback) as overridden by the environment (see [`XdpOptions::from_env`]).
    /// Nothing is touched until the first call.
    pub fn new() -> Result<Self> {
        Ok(Self::with_options(XdpOptions::from_env()?))
    }

    pub fn with_options(opts: XdpOptions) -> Self {
        Self { opts, loaded: None }
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
        crate::backend::interfaces::resolve(&policy.interfaces, false)?
            .into_iter()
            .map(|n| {
                let i = if_index(&n)?;
                attach::ensure_ethernet(&n)?;
                Ok((n, i))
            })
            .collect()
    }

    /// The file keeping what the generations of this pin directory (in this network
    /// namespace) hold, between agent processes.
    fn cache(&self) -> Result<Option<cache::GenCache>> {
        let Some(dir) = &self.opts.cache else {
            return Ok(None);
        };
        Ok(Some(cache::GenCache::new(
            dir,
            &self.pin_dir(),
            current_netns()?,
        )))
    }

    /// Maps of an installed policy, from this process or from the pins.
    fn with_maps<T>(&self, f: impl FnOnce(&Maps) -> Result<T>) -> Result<Option<T>> {
        if let Some(l) = &self.loaded {
            return f(l.dp.maps()).map(Some);
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
        let dir = self.pin_dir();
        if self.loaded.is_some() && !dir.join(map_names::SWITCH).exists() {
            // Someone removed the pins: links are gone with them, and the next agent could not
            // adopt maps that are no longer pinned. Start over with fresh, pinned maps.
            tracing::warn!(pins = %dir.display(), "the XDP pins were removed; reinstalling");
            self.loaded = None;
        }
        // Everything that can be refused is, by `Image::build`, before the kernel is touched.
        // A first install verifies the programs meanwhile, on the other core, into an object
        // pinned nowhere (dropped, if the policy is refused).
        let first = self.loaded.is_none() && datapath::nothing_pinned(&dir);
        let (image, unpinned) = std::thread::scope(|scope| {
            let load = first.then(|| scope.spawn(Datapath::load_unpinned));
            let image = Image::build(policy);
            let load = load.map(|l| l.join().expect("loading the object does not panic"));
            (image, load)
        });
        let mut image = image?;
        image.ct = conntrack::timeouts();
        let wanted = Self::interfaces(policy)?;
        ensure_bpffs(&self.opts.bpffs)?;
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        if self.loaded.is_none() {
            let (mut dp, loaded) = match unpinned {
                Some(u) => (Datapath::pin_unpinned(u?, &dir, self.cache()?)?, true),
                None => Datapath::open(&dir, self.cache()?)?,
            };
            if loaded {
                attach::pin_programs(&mut dp, &dir)?;
            }
            let xdp_id = dp.xdp()?.info()?.id();
            let tc_id = dp.egress()?.info()?.id();
            self.loaded = Some(Loaded { dp, xdp_id, tc_id });
        }
        let links = self.links();
        let dp = &mut self.loaded.as_mut().expect("loaded above").dp;
        // Not part of a generation: a sample rate takes effect at once and decides no verdict.
        dp.maps_mut().write_sample_rate(policy.samples_per_second)?;
        let installed = dp.install_image(image)?;
        let mut changed = installed.changed;
        let mut added = installed.writes.added;
        let mut removed = installed.writes.removed;
        for (name, index) in &wanted {
            // Idempotent: a link already running our programs is left alone, an earlier
            // agent's gets our programs swapped in, a dead or missing one is (re)created.
            if let Attached::New(mode) = links.attach(dp, name, *index, self.opts.attach)? {
                tracing::info!(interface = %name, ?mode, "attached XDP");
                changed = true;
                added += 1;
            }
        }
        for index in links
            .pinned()?
            .into_iter()
            .filter(|i| !wanted.iter().any(|(_, w)| w == i))
        {
            links.detach(index)?;
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
            .live()?
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
            let mode = if cfg.flags & nodewall_common::xdp::flags::AUDIT != 0 {
                crate::policy::Mode::Audit
            } else {
                crate::policy::Mode::Enforce
            };
            Ok((sw.generation, mode, rules, counters::read(maps)?))
        })?;
        Ok(match found {
            Some((generation, mode, rules, counters)) => Status {
                backend: "xdp",
                installed: true,
                generation,
                mode: Some(mode),
                interfaces,
                rules,
                counters,
            },
            None => Status {
                backend: "xdp",
                installed: false,
                generation: 0,
                mode: None,
                interfaces,
                rules: Vec::new(),
                counters: Counters::default(),
            },
        })
    }

    fn flush(&mut self) -> Result<()> {
        let links = self.links();
        for index in links.pinned()? {
            links.detach(index)?;
        }
        links.remove_dir()?;
        self.loaded = None;
        if let Some(cache) = self.cache()? {
            // Its maps are about to go, which is enough to make it untrusted.
            if let Err(e) = cache.invalidate() {
                tracing::warn!(error = %format!("{e:#}"), "could not remove the XDP generation record");
            }
        }
        let dir = self.pin_dir();
        objhash::clear(&dir)?;
        for name in map_names::ALL.iter().chain(&attach::PROGRAM_PINS) {
            attach::remove_pin(&dir.join(name))?;
        }
        attach::remove_pin(&dir)
    }

    fn counters(&self) -> Result<Counters> {
        Ok(self.with_maps(counters::read)?.unwrap_or_default())
    }

    /// The maps still hold what this process published, and on exactly the policy's
    /// interfaces both pinned links are attached and run this process's programs. A link
    /// detached (`bpftool link detach`), an unpinned one (which detaches it), or a program
    /// swapped in by someone else all read as drift.
    fn verify(&self, policy: &Policy) -> Result<bool> {
        let Some(l) = &self.loaded else {
            return Ok(false);
        };
        if !self.pin_dir().join(map_names::SWITCH).exists() || !l.dp.kernel_matches()? {
            return Ok(false);
        }
        let names = policy
            .rules
            .iter()
            .map(|r| &r.name)
            .chain(policy.egress.rules.iter().map(|r| &r.name));
        if !l.dp.rule_names().iter().eq(names) {
            return Ok(false);
        }
        let links = self.links();
        let mut wanted = Vec::new();
        for name in &policy.interfaces {
            let index = if_index(name)?;
            let xdp = links.xdp_state(index)? == LinkState::Live { prog_id: l.xdp_id };
            let tc = links.tc_state(index)? == LinkState::Live { prog_id: l.tc_id };
            if !(xdp && tc) {
                return Ok(false);
            }
            wanted.push(index);
        }
        wanted.sort_unstable();
        wanted.dedup();
        Ok(links.pinned()? == wanted)
    }

    /// The program's drop samples, from the pinned ring buffer (so the reader holds handles of
    /// its own). Needs a policy installed by this process.
    fn drop_samples(&mut self) -> Result<Option<Box<dyn DropSamples>>> {
        if self.loaded.is_none() {
            return Ok(None);
        }
        Ok(Some(Box::new(samples::RingSamples::open(&self.pin_dir())?)))
    }
}
