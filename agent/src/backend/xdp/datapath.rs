//! The loaded XDP object (programs and maps, attached or not) and policy installation into
//! its maps: write the inactive generation, then flip the switch.
//!
//! Tests drive this directly through BPF_PROG_TEST_RUN; [`super::XdpBackend`] adds attaching
//! to interfaces and pinning.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{bail, Context, Result};
use aya::maps::MapInfo;
use aya::programs::{SchedClassifier, Xdp};
use aya::{Ebpf, EbpfLoader};
use aya_obj::programs::XdpAttachType;
use nodewall_common::xdp::{
    drop_index, flags, map_names, GenConfig, PassReason, RuleRef, Stat, Switch, ACTION_ALLOW,
    ACTION_DENY, BENCH_PASS_PROGRAM, DROP_CAUSE_RULE_BASE, LAYOUT_VERSION, RULE_EGRESS,
    RULE_INGRESS, TC_EGRESS_PROGRAM, XDP_PROGRAM,
};

use super::attach::PROGRAM_PINS;
use super::buckets;
use super::cache::GenCache;
use super::image::Image;
use super::maps::{KernelGen, Maps, Writes};
use super::slots::Slots;
use crate::backend::Counters;
use crate::policy::Action;
use crate::policy::Policy;

/// The eBPF object built by `build.rs` from the `ebpf/` crate.
pub(super) static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/nodewall-ebpf.o"));

/// Result of one [`Datapath::install`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Installed {
    pub changed: bool,
    pub generation: u64,
    pub writes: Writes,
}

/// Where the programs come from.
enum Programs {
    /// Loaded (and verified) by this process from the embedded object.
    Object(Ebpf),
    /// The pinned programs of an earlier agent built from the same object, reused as they are.
    Pinned {
        xdp: Box<Xdp>,
        egress: Box<SchedClassifier>,
    },
}

pub struct Datapath {
    programs: Programs,
    maps: Maps,
    /// What each generation holds, so an apply writes only differences.
    shadow: [KernelGen; 2],
    slots: Slots,
    switch: Switch,
    netns: (u64, u64),
    /// Where `shadow` is kept for the next agent process, if anywhere.
    cache: Option<GenCache>,
}

impl Datapath {
    /// Loads the programs. With `pin_dir`, maps pinned there are reused (adopting what a
    /// previous agent installed) and missing ones are created and pinned; without, the maps
    /// are private to this object.
    pub fn load(pin_dir: Option<&Path>) -> Result<Self> {
        Self::load_object(pin_dir, None)
    }

    /// The datapath pinned under `pin_dir`: the pinned programs and maps when they come from
    /// this binary's object and are whole (no program load, no verifier run), otherwise the
    /// object loaded anew over the pinned maps (whose programs the caller then pins). Returns
    /// whether the object was loaded. `cache` names where the generations' content is kept
    /// between processes.
    pub fn open(pin_dir: &Path, cache: Option<GenCache>) -> Result<(Self, bool)> {
        if let Some(progs) = pinned_programs(pin_dir)? {
            let maps = Maps::open_pinned(pin_dir)?;
            return Ok((
                Self::adopt(progs, maps, Some(pin_dir), cache, false)?,
                false,
            ));
        }
        Ok((Self::load_object(Some(pin_dir), cache)?, true))
    }

    fn load_object(pin_dir: Option<&Path>, cache: Option<GenCache>) -> Result<Self> {
        // Maps the loader creates (none pinned yet) are all zero; pinned ones may hold anything.
        let fresh = pin_dir.is_none_or(nothing_pinned);
        if let Some(dir) = pin_dir {
            refuse_other_layout(dir)?;
        }
        let mut ebpf = load_programs(pin_dir)?;
        let maps = Maps::take(&mut ebpf)?;
        Self::adopt(Programs::Object(ebpf), maps, pin_dir, cache, fresh)
    }

    /// The object loaded with maps of its own, pinned nowhere: the programs go through the
    /// verifier (about 330 ms here, the bulk of a first install) and nothing is left behind
    /// if the result is dropped. A first install does this while it builds the image.
    pub fn load_unpinned() -> Result<Unpinned> {
        load_programs(None).map(Unpinned)
    }

    /// Pins the maps of `u` under `pin_dir`, where nothing is pinned yet, and takes them over.
    pub fn pin_unpinned(u: Unpinned, pin_dir: &Path, cache: Option<GenCache>) -> Result<Self> {
        let mut ebpf = u.0;
        for name in map_names::ALL {
            let path = pin_dir.join(name);
            ebpf.map(name)
                .with_context(|| format!("the XDP object has no map {name}"))?
                .pin(&path)
                .with_context(|| format!("pinning map {}", path.display()))?;
        }
        let maps = Maps::take(&mut ebpf)?;
        Self::adopt(Programs::Object(ebpf), maps, Some(pin_dir), cache, true)
    }

    /// Takes over the maps: checks they are ours to write and learns what they hold (from
    /// the cache when it provably describes them, else by reading them back). `fresh`: the
    /// maps were just created, so they hold zeros.
    fn adopt(
        programs: Programs,
        maps: Maps,
        pin_dir: Option<&Path>,
        cache: Option<GenCache>,
        fresh: bool,
    ) -> Result<Self> {
        let switch = maps.read_switch()?;
        let netns = current_netns()?;
        let (shadow, slots) = if switch.layout == 0 && fresh {
            ([KernelGen::zeroed(), KernelGen::zeroed()], Slots::empty())
        } else if switch.layout == 0 {
            ([KernelGen::empty(), KernelGen::empty()], Slots::empty())
        } else if switch.layout != LAYOUT_VERSION {
            return Err(other_layout(pin_dir, &switch.layout.to_string()));
        } else if (switch.netns_dev, switch.netns_ino) != netns {
            bail!(
                "the maps pinned under {} belong to another network namespace",
                pin_dir.map_or("(none)".into(), |d| d.display().to_string())
            );
        } else {
            let configs = [maps.read_config(0)?, maps.read_config(1)?];
            let cached = cache
                .as_ref()
                .and_then(|c| c.load(netns, &switch, &configs));
            let shadow = match cached {
                Some(mut gens) => {
                    for (gen, g) in (0..).zip(&mut gens) {
                        maps.read_tables(gen, g)?;
                    }
                    gens
                }
                None => [maps.read_gen(0)?, maps.read_gen(1)?],
            };
            (shadow, Slots::read(&maps)?)
        };
        Ok(Self {
            programs,
            maps,
            shadow,
            slots,
            switch,
            netns,
            cache,
        })
    }

    /// Whether a policy has been installed into these maps (by this or an earlier agent).
    pub fn is_installed(&self) -> bool {
        self.switch.layout != 0
    }

    pub fn generation(&self) -> u64 {
        self.switch.generation
    }

    /// Whether the maps still hold what this process last published: the switch and the
    /// active generation's header (two lookups, cheap enough for a check every second). Source
    /// and port entries are not re-read here: that is up to 2 x 65,536 lookups, and only a
    /// deliberate `bpftool map update` could change them.
    pub fn kernel_matches(&self) -> Result<bool> {
        if self.maps.read_switch()? != self.switch {
            return Ok(false);
        }
        let active = self.switch.active & 1;
        Ok(self.maps.read_config(active)? == self.shadow[active as usize].config)
    }

    /// After someone else wrote the maps: learn what they hold, so that the next install
    /// computes its differences from the truth and publishes again.
    fn resync(&mut self) -> Result<()> {
        let sw = self.maps.read_switch()?;
        self.shadow = [self.maps.read_gen(0)?, self.maps.read_gen(1)?];
        self.switch = Switch {
            // An unknown layout is treated as nothing installed: both generations get rewritten.
            layout: if sw.layout == LAYOUT_VERSION {
                sw.layout
            } else {
                0
            },
            active: sw.active & 1,
            generation: self.switch.generation.max(sw.generation),
            netns_dev: self.netns.0,
            netns_ino: self.netns.1,
        };
        Ok(())
    }

    /// Installs `policy` into the inactive generation and publishes it with one write.
    pub fn install(&mut self, policy: &Policy) -> Result<Installed> {
        self.install_image(Image::build(policy)?)
    }

    /// [`Self::install`] of an image already built from the policy (building one for 10k
    /// CIDRs takes milliseconds: the backend builds it once, before touching the kernel).
    pub fn install_image(&mut self, image: Image) -> Result<Installed> {
        if self.is_installed() && !self.kernel_matches()? {
            tracing::warn!("the XDP maps were changed behind the agent's back; rewriting them");
            self.resync()?;
        }
        let active = self.switch.active & 1;
        // The new generation, numbered like the active one (see `renumbered_like`): built
        // once, it both tells whether anything changed and is what gets written. Numbering
        // like the active generation rather than the one about to be overwritten keeps one
        // numbering across generations, and the writes into the inactive one are plain stores
        // into the mapped tables (plus trie and port-table entries, whose values do not
        // depend on node numbering).
        let mut lowered = None;
        if self.is_installed() {
            let current: Option<Vec<u16>> = image
                .rules
                .iter()
                .map(|(n, _)| self.slots.find(n))
                .collect();
            if let Some(slots) = current {
                let active_gen = &self.shadow[active as usize];
                let new = lower(&image, &slots).renumbered_like(active_gen);
                if new == *active_gen {
                    return Ok(Installed {
                        changed: false,
                        generation: self.switch.generation,
                        writes: Writes::default(),
                    });
                }
                lowered = Some((slots, new));
            }
        }
        let busy: HashSet<u16> = if self.is_installed() {
            let cfg = &self.shadow[active as usize].config;
            cfg.rules[..cfg.nrules as usize]
                .iter()
                .map(|r| r.slot)
                .collect()
        } else {
            HashSet::new()
        };
        let (slots, fresh) = self.slots.assign(&image.rules, &busy)?;
        for &slot in &fresh {
            self.reset_slot(slot)?;
        }
        for (i, &slot) in slots.iter().enumerate() {
            self.slots
                .write(&mut self.maps, slot, Some(image.rules[i].1))?;
        }
        let target = if self.is_installed() { active ^ 1 } else { 1 };
        let new = match lowered {
            Some((same, new)) if same == slots => new,
            _ => {
                let like = if self.is_installed() { active } else { target };
                lower(&image, &slots).renumbered_like(&self.shadow[like as usize])
            }
        };
        if let Some(cache) = &self.cache {
            // From here until the new content is recorded, the next agent reads the maps back.
            cache.invalidate()?;
        }
        let switch = Switch {
            layout: LAYOUT_VERSION,
            active: target,
            generation: self.switch.generation + 1,
            netns_dev: self.netns.0,
            netns_ino: self.netns.1,
        };
        // A large generation's record is written on the other core while the maps are; it is
        // put in place once the switch is published, and removed if the writes fail.
        let entries = new.sources.src4.len() + new.sources.src6.len();
        let (written, staged) = std::thread::scope(|scope| {
            let (cache, shadow, netns, new) = (&self.cache, &self.shadow, self.netns, &new);
            let after = if target == 0 {
                [new, &shadow[1]]
            } else {
                [&shadow[0], new]
            };
            let staged = cache
                .as_ref()
                .filter(|_| entries >= ENTRIES_BESIDE_WRITES)
                .map(|c| scope.spawn(move || c.stage(netns, &switch, after)));
            let written = self.maps.write_gen(target, &shadow[target as usize], new);
            let staged = staged.map(|s| s.join().expect("recording does not panic"));
            (written, staged)
        });
        let writes = match written {
            Ok(w) => w,
            Err(e) => {
                // The generation is half-written but inactive, so nothing reads it; learn
                // what it holds so the next apply's diff starts from the truth.
                if let Ok(actual) = self.maps.read_gen(target) {
                    self.shadow[target as usize] = actual;
                }
                return Err(
                    e.context("writing the inactive generation (the active policy is unchanged)")
                );
            }
        };
        self.shadow[target as usize] = new;
        self.maps.write_switch(switch)?;
        self.switch = switch;
        for slot in self.slots.release_except(&slots) {
            self.slots.write(&mut self.maps, slot, None)?;
        }
        if let Some(cache) = &self.cache {
            let recorded = match staged {
                Some(staged) => staged.and_then(|s| s.commit()),
                None => cache.save(self.netns, &switch, self.shadow.each_ref()),
            };
            if let Err(e) = recorded {
                // Published all the same; the next agent process reads the maps back.
                tracing::warn!(error = %format!("{e:#}"), "could not record the XDP generations");
            }
        }
        Ok(Installed {
            changed: true,
            generation: switch.generation,
            writes,
        })
    }

    fn reset_slot(&mut self, slot: u16) -> Result<()> {
        Maps::zero_stat(&mut self.maps.rule_stats, slot as u32)?;
        for family in 0..2 {
            for proto in 0..5 {
                Maps::zero_stat(
                    &mut self.maps.drop_stats,
                    drop_index(DROP_CAUSE_RULE_BASE + slot as u32, family, proto),
                )?;
            }
        }
        Ok(())
    }

    pub fn xdp(&mut self) -> Result<&mut Xdp> {
        match &mut self.programs {
            Programs::Object(ebpf) => Ok(program(ebpf, XDP_PROGRAM)?.try_into()?),
            Programs::Pinned { xdp, .. } => Ok(xdp),
        }
    }

    pub fn egress(&mut self) -> Result<&mut SchedClassifier> {
        match &mut self.programs {
            Programs::Object(ebpf) => Ok(program(ebpf, TC_EGRESS_PROGRAM)?.try_into()?),
            Programs::Pinned { egress, .. } => Ok(egress),
        }
    }

    /// A bare `XDP_PASS` program from the same object (loaded on first use): the baseline
    /// of the per-packet cost measurements.
    pub fn baseline(&mut self) -> Result<&mut Xdp> {
        self.bench_program(BENCH_PASS_PROGRAM)
    }

    /// Another program of the object, loaded on first use: e.g. [`BENCH_PARSE_PROGRAM`],
    /// the parse-only baseline.
    ///
    /// [`BENCH_PARSE_PROGRAM`]: nodewall_common::xdp::BENCH_PARSE_PROGRAM
    pub fn bench_program(&mut self, name: &str) -> Result<&mut Xdp> {
        let Programs::Object(ebpf) = &mut self.programs else {
            bail!("the benchmark programs need a datapath loaded from the object");
        };
        let prog: &mut Xdp = program(ebpf, name)?.try_into()?;
        if prog.fd().is_err() {
            prog.load()?;
        }
        Ok(prog)
    }

    pub fn maps_mut(&mut self) -> &mut Maps {
        &mut self.maps
    }

    pub fn maps(&self) -> &Maps {
        &self.maps
    }

    pub fn counters(&self) -> Result<Counters> {
        super::counters::read(&self.maps)
    }

    pub fn passes(&self, reason: PassReason) -> Result<Stat> {
        super::counters::passes(&self.maps, reason)
    }

    /// Counter slots of the active generation's rules, in evaluation order.
    pub fn rule_slots(&self) -> Vec<u16> {
        let cfg = &self.shadow[(self.switch.active & 1) as usize].config;
        cfg.rules[..cfg.nrules as usize]
            .iter()
            .map(|r| r.slot)
            .collect()
    }

    /// Rule names of the active generation, in evaluation order.
    pub fn rule_names(&self) -> Vec<String> {
        let cfg = &self.shadow[(self.switch.active & 1) as usize].config;
        cfg.rules[..cfg.nrules as usize]
            .iter()
            .map(|r| self.slots.name(r.slot).unwrap_or("?").to_string())
            .collect()
    }
}

/// Refuses maps pinned under `dir` by an agent of another map layout before the object is
/// loaded over them: aya reuses a pinned map whatever its definition, so the programs would be
/// verified against the old maps and fail with a verifier error that does not say why (or,
/// where the sizes still fit, pass and read the old maps with the new meaning).
fn refuse_other_layout(dir: &Path) -> Result<()> {
    let path = dir.join(map_names::SWITCH);
    if !path.exists() {
        return Ok(());
    }
    let data = aya::maps::MapData::from_pin(&path)
        .with_context(|| format!("opening pinned {}", path.display()))?;
    let layout = match aya::maps::Array::<_, Switch>::try_from(aya::maps::Map::Array(data)) {
        Ok(switch) => switch.get(&0, 0)?.layout,
        // A switch of another size is another layout, whichever.
        Err(_) => return Err(other_layout(Some(dir), "another")),
    };
    if layout != 0 && layout != LAYOUT_VERSION {
        return Err(other_layout(Some(dir), &layout.to_string()));
    }
    Ok(())
}

fn other_layout(pin_dir: Option<&Path>, layout: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "the maps pinned under {} have layout {layout}, this agent writes layout {LAYOUT_VERSION}: \
         the installed datapath keeps its policy; run `nodewall flush` first (the node is \
         unfiltered until the next apply)",
        pin_dir.map_or("(none)".into(), |d| d.display().to_string()),
    )
}

/// The XDP object loaded and both programs verified; with `pin_dir`, maps pinned there are
/// reused and missing ones created and pinned.
fn load_programs(pin_dir: Option<&Path>) -> Result<Ebpf> {
    let mut loader = EbpfLoader::new();
    if let Some(dir) = pin_dir {
        for name in map_names::ALL {
            loader.map_pin_path(name, dir.join(name));
        }
    }
    let mut ebpf = loader.load(OBJECT).context("loading the XDP object")?;
    let xdp: &mut Xdp = program(&mut ebpf, XDP_PROGRAM)?.try_into()?;
    xdp.load().context("loading the XDP program (verifier)")?;
    let tc: &mut SchedClassifier = program(&mut ebpf, TC_EGRESS_PROGRAM)?.try_into()?;
    tc.load()
        .context("loading the TC egress program (verifier)")?;
    Ok(ebpf)
}

/// From this many trie entries in a generation (a record of about 700 kB), its record is
/// written on a thread of its own while the maps are; a smaller one is written after them.
const ENTRIES_BESIDE_WRITES: usize = 1 << 15;

/// Whether none of the maps is pinned under `dir`.
pub fn nothing_pinned(dir: &Path) -> bool {
    map_names::ALL.iter().all(|name| !dir.join(name).exists())
}

/// An object loaded by [`Datapath::load_unpinned`].
pub struct Unpinned(Ebpf);

/// The pinned programs, if they can be reused: recorded as built from this binary's object,
/// every map and both programs still pinned, and the programs using no `NW_` map but those
/// pinned beside them (a map pinned anew since, by hand or a half-done flush, means the
/// programs read other maps).
fn pinned_programs(pin_dir: &Path) -> Result<Option<Programs>> {
    if !super::objhash::is_ours(pin_dir) {
        return Ok(None);
    }
    let mut pinned_maps = Vec::with_capacity(map_names::ALL.len());
    for name in map_names::ALL {
        match MapInfo::from_pin(pin_dir.join(name)) {
            Ok(info) => pinned_maps.push(info.id()),
            Err(_) => return Ok(None),
        }
    }
    let (Ok(xdp), Ok(egress)) = (
        Xdp::from_pin(pin_dir.join(PROGRAM_PINS[0]), XdpAttachType::Interface),
        SchedClassifier::from_pin(pin_dir.join(PROGRAM_PINS[1])),
    ) else {
        return Ok(None);
    };
    let mut used = HashSet::new();
    for info in [xdp.info()?, egress.info()?] {
        used.extend(info.map_ids()?.unwrap_or_default());
    }
    for id in used.iter().filter(|id| !pinned_maps.contains(id)) {
        // Maps of the object's own globals are not pinned; an `NW_` map that is not the one
        // pinned under its name means the programs read stale maps.
        let ours = MapInfo::from_id(*id)
            .ok()
            .is_none_or(|m| m.name_as_str().is_some_and(|n| n.starts_with("NW_")));
        if ours {
            return Ok(None);
        }
    }
    Ok(Some(Programs::Pinned {
        xdp: Box::new(xdp),
        egress: Box::new(egress),
    }))
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut aya::programs::Program> {
    ebpf.program_mut(name)
        .with_context(|| format!("the XDP object has no program {name}"))
}

/// An image with its rules' counter slots: exactly what the kernel generation will hold.
fn lower(image: &Image, slots: &[u16]) -> KernelGen {
    let sources = image.sources.clone();
    let flags = if sources.is_flat() {
        image.flags | flags::FLAT_SOURCES
    } else {
        image.flags
    };
    let mut config = GenConfig {
        flags,
        nrules: image.rules.len() as u32,
        src_nodes: sources.nodes.len() as u32,
        src_skips: sources.skips.len() as u32,
        src_classes: sources.classes.len() as u32,
        ningress: image.ningress as u32,
        icmp4: image.icmp4,
        icmp6: image.icmp6,
        other: image.other,
        egress_host: image.egress_host,
        egress_pod: image.egress_pod,
        ct: image.ct,
        ..GenConfig::EMPTY
    };
    for family in [0, 1] {
        if let Some(len) = sources.hashed_len(family) {
            config.hash_len[family] = len.into();
            config.hash_mask[family] = buckets::mask(family, len);
            config.hash_seeds = sources.seeds;
        }
    }
    for (i, ((_, action), &slot)) in image.rules.iter().zip(slots).enumerate() {
        let action = if *action == Action::Deny {
            ACTION_DENY
        } else {
            ACTION_ALLOW
        };
        config.rules[i] = RuleRef {
            slot,
            action,
            direction: if i < image.ningress {
                RULE_INGRESS
            } else {
                RULE_EGRESS
            },
        };
    }
    KernelGen {
        config,
        sources,
        tcp: image.tcp.clone(),
        udp: image.udp.clone(),
    }
}

/// (device, inode) of the calling thread's network namespace.
pub fn current_netns() -> Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata("/proc/thread-self/ns/net")
        .context("reading /proc/thread-self/ns/net")?;
    Ok((m.dev(), m.ino()))
}
