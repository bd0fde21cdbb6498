//! The datapath's maps, typed, and the few operations the agent performs on them: read a
//! generation back, write the difference between two generations, flip the switch, read
//! counters.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use anyhow::{Context, Result};
use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap, Map, MapData, MapFd, PerCpuArray, PerCpuValues};
use aya::Ebpf;
use nodewall_common::ct::FlowState;
use nodewall_common::xdp::{
    flags, map_names as names, port_index, FlowKey, GenConfig, RuleBits, SlotName, Src4Key,
    Src6Key, SrcBucket, SrcTables, Stat, Switch, GEN_PREFIX_BITS, MAX_SLOTS, PORT_PROTO_TCP,
    PORT_PROTO_UDP, SRC_ROOT_ENTRIES_PER_GEN,
};

use super::buckets;
use super::flat::SourceTables;
use super::image::PortTable;
use super::mapped::{MappedBuckets, MappedSources};
use super::sys;

/// What one generation holds in the kernel, with rule names already turned into slots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelGen {
    pub config: GenConfig,
    /// Source lookup: flat tables or LPM entries, and the classes they point to
    /// (`config.src_nodes`/`src_classes` entries of the flat maps).
    pub sources: SourceTables,
    pub tcp: PortTable,
    pub udp: PortTable,
}

impl KernelGen {
    pub fn empty() -> Self {
        Self {
            config: GenConfig::EMPTY,
            sources: SourceTables::default(),
            tcp: PortTable::empty(),
            udp: PortTable::empty(),
        }
    }

    /// What a generation of freshly created maps holds: nothing, and source roots that are
    /// known to be all zero. Knowing that, the first write of a generation stores only the
    /// policy's non-zero root entries (a handful) instead of all 131,072.
    pub fn zeroed() -> Self {
        let mut g = Self::empty();
        // Zero bytes, not `GenConfig::EMPTY` (whose timeouts are conntrack's defaults): what
        // is recorded for the unwritten generation must equal what the next agent reads from
        // the kernel, or it distrusts the whole record and reads both generations back
        // (~80 ms of batched lookups on every one-shot apply until that generation is written).
        g.config = bytemuck::Zeroable::zeroed();
        g.sources.roots = vec![0; SRC_ROOT_ENTRIES_PER_GEN as usize];
        g
    }
}

impl KernelGen {
    /// `self` with the source tables' ids chosen to match `old` (see
    /// [`SourceTables::renumbered_like`]), so that writing it over `old` touches only what
    /// changed, and an unchanged policy compares equal to what the kernel holds.
    pub fn renumbered_like(mut self, old: &KernelGen) -> KernelGen {
        self.sources = self.sources.renumbered_like(&old.sources);
        self.config.src_nodes = self.sources.nodes.len() as u32;
        self.config.src_skips = self.sources.skips.len() as u32;
        self.config.src_classes = self.sources.classes.len() as u32;
        self
    }
}

/// Map entries written (inserted or changed) and removed by one generation update.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Writes {
    pub added: usize,
    pub removed: usize,
}

/// One entry of the flow tables.
pub type Flow = (FlowKey, FlowState);

pub struct Maps {
    pub switch: Array<MapData, Switch>,
    pub config: Array<MapData, GenConfig>,
    pub src4: LpmTrie<MapData, Src4Key, u32>,
    pub src6: LpmTrie<MapData, Src6Key, u32>,
    pub rule_stats: PerCpuArray<MapData, Stat>,
    pub drop_stats: PerCpuArray<MapData, Stat>,
    pub pass_stats: PerCpuArray<MapData, Stat>,
    pub slot_names: Array<MapData, SlotName>,
    /// The flow tables (connection tracking): assured flows, and those not assured yet.
    pub flows: HashMap<MapData, FlowKey, FlowState>,
    pub flows_new: HashMap<MapData, FlowKey, FlowState>,
    // The maps below are only ever read and written in batches, which aya lacks: their
    // descriptors are all the agent keeps.
    /// `NW_PORTS`.
    ports_fd: MapFd,
    /// A descriptor of `slot_names`, read whole in one batch when an agent starts.
    slot_names_fd: MapFd,
    /// Descriptors of the tries, for batched writes.
    src4_fd: MapFd,
    src6_fd: MapFd,
    /// `NW_SRC_BUCKETS`, the source hash, mapped like `sources_fd` (32 MiB), and only while
    /// a generation that uses it is read or written.
    buckets_fd: MapFd,
    /// `NW_SOURCES`: one value per generation, too large for aya's typed maps, read and
    /// written in place. Mapped only while read or written: after the layout check, so that
    /// maps of another layout are reported as such, and not between applies, when the
    /// daemon has no use for 4.8 MiB of mapped kernel memory (the maps are already counted,
    /// once, as the program's memory).
    sources_fd: MapFd,
    /// `NW_SAMPLE_RATE`; `None` only in pins left by an agent that predates it (until the next
    /// load of the object creates it).
    sample_rate: Option<Array<MapData, u32>>,
}

impl Maps {
    /// Takes the maps out of a loaded object.
    pub fn take(ebpf: &mut Ebpf) -> Result<Self> {
        Self::from_source(|name| {
            ebpf.take_map(name)
                .with_context(|| format!("the XDP object has no map {name}"))
        })
    }

    /// Opens maps pinned by an agent (possibly another process) under `dir`.
    pub fn open_pinned(dir: &Path) -> Result<Self> {
        Self::from_source(|name| {
            let path = dir.join(name);
            let data = MapData::from_pin(&path)
                .with_context(|| format!("opening pinned map {}", path.display()))?;
            Ok(Map::from_map_data(data)?)
        })
    }

    fn from_source(mut get: impl FnMut(&str) -> Result<Map>) -> Result<Self> {
        macro_rules! typed {
            ($name:expr) => {
                get($name)?
                    .try_into()
                    .with_context(|| format!("map {} has an unexpected type", $name))?
            };
        }
        // A descriptor for batched access, once the map's value size is the one this agent
        // reads and writes (what aya's typed maps check for the others).
        let fd_of = |map: &Map, name: &str, value: usize| match map {
            Map::Array(data) | Map::LpmTrie(data) => {
                let info = data.info()?;
                anyhow::ensure!(
                    info.value_size() as usize == value,
                    "map {name} holds {}-byte values, not {value}",
                    info.value_size()
                );
                Ok(info.fd()?)
            }
            _ => anyhow::bail!("map {name} has an unexpected type"),
        };
        use std::mem::size_of;
        let bits = size_of::<RuleBits>();
        let sources_fd = fd_of(
            &get(names::SOURCES)?,
            names::SOURCES,
            size_of::<SrcTables>(),
        )?;
        let src4 = get(names::SRC4)?;
        let src4_fd = fd_of(&src4, names::SRC4, size_of::<u32>())?;
        let src6 = get(names::SRC6)?;
        let src6_fd = fd_of(&src6, names::SRC6, size_of::<u32>())?;
        let buckets_fd = fd_of(
            &get(names::SRC_BUCKETS)?,
            names::SRC_BUCKETS,
            size_of::<SrcBucket>(),
        )?;
        let ports_fd = fd_of(&get(names::PORTS)?, names::PORTS, bits)?;
        let slot_names = get(names::SLOT_NAMES)?;
        let slot_names_fd = fd_of(&slot_names, names::SLOT_NAMES, size_of::<SlotName>())?;
        let sample_rate =
            match get(names::SAMPLE_RATE) {
                Ok(map) => Some(map.try_into().with_context(|| {
                    format!("map {} has an unexpected type", names::SAMPLE_RATE)
                })?),
                Err(_) => None,
            };
        Ok(Self {
            sample_rate,
            ports_fd,
            slot_names_fd,
            slot_names: slot_names
                .try_into()
                .with_context(|| format!("map {} has an unexpected type", names::SLOT_NAMES))?,
            sources_fd,
            switch: typed!(names::SWITCH),
            config: typed!(names::CONFIG),
            src4: src4
                .try_into()
                .with_context(|| format!("map {} has an unexpected type", names::SRC4))?,
            src6: src6
                .try_into()
                .with_context(|| format!("map {} has an unexpected type", names::SRC6))?,
            src4_fd,
            src6_fd,
            buckets_fd,
            rule_stats: typed!(names::RULE_STATS),
            drop_stats: typed!(names::DROP_STATS),
            pass_stats: typed!(names::PASS_STATS),
            flows: typed!(names::FLOWS),
            flows_new: typed!(names::FLOWS_NEW),
        })
    }

    /// Flows in both tables (live or not yet evicted), assured first.
    pub fn flows(&self) -> Result<(Vec<Flow>, Vec<Flow>)> {
        let read = |m: &HashMap<MapData, FlowKey, FlowState>| -> Result<Vec<_>> {
            Ok(m.iter().collect::<Result<_, _>>()?)
        };
        Ok((read(&self.flows)?, read(&self.flows_new)?))
    }

    /// Forgets every flow: their packets are judged by the rules again.
    pub fn clear_flows(&mut self) -> Result<()> {
        for m in [&mut self.flows, &mut self.flows_new] {
            let keys: Vec<FlowKey> = m.keys().collect::<Result<_, _>>()?;
            for k in keys {
                // Gone already (evicted, or removed by the datapath) is as good.
                let _ = m.remove(&k);
            }
        }
        Ok(())
    }

    fn map_sources(&self) -> Result<MappedSources> {
        MappedSources::map(self.sources_fd.as_fd())
            .with_context(|| format!("map {}", names::SOURCES))
    }

    fn map_buckets(&self) -> Result<MappedBuckets> {
        MappedBuckets::map(self.buckets_fd.as_fd())
            .with_context(|| format!("map {}", names::SRC_BUCKETS))
    }

    /// Sets the drop samples each CPU may take per second (0: none).
    pub fn write_sample_rate(&mut self, per_second: u32) -> Result<()> {
        let map = self.sample_rate.as_mut().with_context(|| {
            format!(
                "map {} is missing from the pinned datapath",
                names::SAMPLE_RATE
            )
        })?;
        Ok(map.set(0, per_second, 0)?)
    }

    pub fn read_switch(&self) -> Result<Switch> {
        Ok(self.switch.get(&0, 0)?)
    }

    pub fn write_switch(&mut self, sw: Switch) -> Result<()> {
        MappedSources::publish();
        Ok(self.switch.set(0, sw, 0)?)
    }

    /// Every slot's name entry, in one batched read.
    pub fn read_slot_names(&self) -> Result<Vec<SlotName>> {
        let mut all = vec![SlotName::EMPTY; MAX_SLOTS as usize];
        sys::array_lookup_batch(self.slot_names_fd.as_fd(), 0, &mut all)
            .with_context(|| format!("reading map {}", names::SLOT_NAMES))?;
        Ok(all)
    }

    pub fn read_config(&self, gen: u32) -> Result<GenConfig> {
        Ok(self.config.get(&gen, 0)?)
    }

    /// Reads a whole generation back (used once, when adopting pinned maps).
    pub fn read_gen(&self, gen: u32) -> Result<KernelGen> {
        let mut out = KernelGen {
            config: self.read_config(gen)?,
            ..KernelGen::empty()
        };
        if out.config.flags & flags::FLAT_SOURCES == 0 {
            out.sources.src4 = read_trie(&self.src4, gen, |d| {
                u32::from_be_bytes(d[1..].try_into().expect("4 bytes"))
            })?;
            out.sources.src6 = read_trie(&self.src6, gen, |d| {
                u128::from_be_bytes(d[1..].try_into().expect("16 bytes"))
            })?;
        }
        self.read_tables(gen, &mut out)?;
        // Without a record, the hash's entries come from its buckets.
        for (family, key, class) in buckets::entries(&out.sources.buckets) {
            let (len, class) = (out.config.hash_len[family] as u8, u32::from(class));
            if family == 0 {
                out.sources.src4.insert((buckets::addr4(key), len), class);
            } else {
                out.sources.src6.insert((buckets::addr6(key), len), class);
            }
        }
        out.tcp = self.read_ports(gen, PORT_PROTO_TCP)?;
        out.udp = self.read_ports(gen, PORT_PROTO_UDP)?;
        Ok(out)
    }

    /// Fills in `g`'s flat source tables (roots, nodes, classes) from generation `gen` of the
    /// mapped map, as far as `g.config` says they are in use.
    pub fn read_tables(&self, gen: u32, g: &mut KernelGen) -> Result<()> {
        let mapped = self.map_sources()?;
        let tables = mapped.get(gen);
        let (nodes, classes) = (g.config.src_nodes as usize, g.config.src_classes as usize);
        let skips = g.config.src_skips as usize;
        g.sources.roots = if g.config.flags & flags::FLAT_SOURCES != 0 {
            tables.roots.concat()
        } else {
            Vec::new()
        };
        g.sources.nodes = tables.nodes[..nodes.min(tables.nodes.len())].to_vec();
        g.sources.skips = tables.skips[..skips.min(tables.skips.len())].to_vec();
        g.sources.classes = tables.classes[..classes.min(tables.classes.len())].to_vec();
        self.read_buckets(gen, g)
    }

    /// Fills in `g`'s source hash (buckets and multipliers) from generation `gen` of its map
    /// when `g.config` says it is in use.
    fn read_buckets(&self, gen: u32, g: &mut KernelGen) -> Result<()> {
        let c = &g.config;
        if c.flags & flags::FLAT_SOURCES == 0 || c.hash_len == [0; 2] {
            return Ok(());
        }
        g.sources.buckets = self.map_buckets()?.generation(gen).to_vec();
        g.sources.seeds = c.hash_seeds;
        Ok(())
    }

    fn read_ports(&self, gen: u32, proto: u32) -> Result<PortTable> {
        let mut all = vec![RuleBits::EMPTY; 65536];
        sys::array_lookup_batch(self.ports_fd.as_fd(), port_index(gen, proto, 0), &mut all)
            .with_context(|| format!("reading map {}", names::PORTS))?;
        let mut segments: Vec<(u16, RuleBits)> = Vec::new();
        for (port, bits) in all.into_iter().enumerate() {
            if segments.last().is_none_or(|&(_, last)| last != bits) {
                segments.push((port as u16, bits));
            }
        }
        Ok(PortTable(segments))
    }

    /// Brings generation `gen` from `old` (what it holds) to `new`, touching only entries
    /// that differ. The generation must not be the active one.
    pub fn write_gen(&mut self, gen: u32, old: &KernelGen, new: &KernelGen) -> Result<Writes> {
        let mut w = Writes::default();
        let key4 = |&(addr, len): &(u32, u8)| {
            let mut d = [0u8; 5];
            d[0] = gen as u8;
            d[1..].copy_from_slice(&addr.to_be_bytes());
            Key::new(GEN_PREFIX_BITS + len as u32, d)
        };
        let key6 = |&(addr, len): &(u128, u8)| {
            let mut d = [0u8; 17];
            d[0] = gen as u8;
            d[1..].copy_from_slice(&addr.to_be_bytes());
            Key::new(GEN_PREFIX_BITS + len as u32, d)
        };
        let (old_s, new_s) = (&old.sources, &new.sources);
        // Beside flat tables the entries are the source hash's (written with the tables).
        let (none4, none6) = (BTreeMap::new(), BTreeMap::new());
        let none = (&none4, &none6);
        let ((trie4_old, trie6_old), (trie4_new, trie6_new)) =
            (tries(old_s, none), tries(new_s, none));
        sync_entries(self.src4_fd.as_fd(), trie4_old, trie4_new, key4, &mut w)
            .with_context(|| format!("writing map {}", names::SRC4))?;
        sync_entries(self.src6_fd.as_fd(), trie6_old, trie6_new, key6, &mut w)
            .with_context(|| format!("writing map {}", names::SRC6))?;
        self.write_tables(gen, old_s, new_s, &mut w)
            .with_context(|| format!("writing map {}", names::SOURCES))?;
        let (mut keys, mut values) = (Vec::new(), Vec::new());
        for (proto, old_t, new_t) in [
            (PORT_PROTO_TCP, &old.tcp, &new.tcp),
            (PORT_PROTO_UDP, &old.udp, &new.udp),
        ] {
            for (first, last) in old_t.diff(new_t) {
                for port in first..=last {
                    keys.push(port_index(gen, proto, port));
                    values.push(new_t.get(port));
                }
            }
        }
        sys::update_batch(self.ports_fd.as_fd(), &keys, &values)
            .with_context(|| format!("writing map {}", names::PORTS))?;
        w.added += keys.len();
        if old.config != new.config {
            self.config.set(gen, new.config, 0)?;
            w.added += 1;
        }
        Ok(w)
    }

    /// Writes the entries of generation `gen`'s flat tables (one map value, see `SrcTables`)
    /// that differ from `old`, in place; counts them.
    fn write_tables(
        &mut self,
        gen: u32,
        old: &SourceTables,
        new: &SourceTables,
        w: &mut Writes,
    ) -> Result<()> {
        let mut mapped = self.map_sources()?;
        let t = mapped.get_mut(gen);
        let roots = t.roots.as_flattened_mut();
        anyhow::ensure!(
            new.roots.len() <= roots.len()
                && new.nodes.len() <= t.nodes.len()
                && new.skips.len() <= t.skips.len()
                && new.classes.len() <= t.classes.len(),
            "{} roots, {} nodes, {} runs, {} classes",
            new.roots.len(),
            new.nodes.len(),
            new.skips.len(),
            new.classes.len()
        );
        w.added += write_changed(roots, &old.roots, &new.roots)
            + write_changed(&mut t.nodes, &old.nodes, &new.nodes)
            + write_changed(&mut t.skips, &old.skips, &new.skips)
            + write_changed(&mut t.classes, &old.classes, &new.classes);
        if !new.buckets.is_empty() {
            let mut mapped = self.map_buckets()?;
            w.added += write_changed(mapped.generation_mut(gen), &old.buckets, &new.buckets);
        }
        Ok(())
    }

    /// Sums a per-CPU counter.
    pub fn stat(map: &PerCpuArray<MapData, Stat>, index: u32) -> Result<Stat> {
        let values = map.get(&index, 0)?;
        Ok(values.iter().fold(Stat::default(), |acc, s| Stat {
            packets: acc.packets + s.packets,
            bytes: acc.bytes + s.bytes,
        }))
    }

    pub fn zero_stat(map: &mut PerCpuArray<MapData, Stat>, index: u32) -> Result<()> {
        let cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?;
        let zeros = PerCpuValues::try_from(vec![Stat::default(); cpus])?;
        Ok(map.set(index, zeros, 0)?)
    }
}

/// Writes into `table` the entries of `new` that `old` (what `table` holds) does not hold at
/// the same index; returns how many.
fn write_changed<T: PartialEq + Copy>(table: &mut [T], old: &[T], new: &[T]) -> usize {
    let mut n = 0;
    for (i, v) in new.iter().enumerate() {
        if old.get(i) != Some(v) {
            table[i] = *v;
            n += 1;
        }
    }
    n
}

/// The entries of one generation of a source trie, as (address, prefix length).
fn read_trie<K: aya::Pod + AsRef<[u8]>, A: Ord>(
    trie: &LpmTrie<MapData, K, u32>,
    gen: u32,
    addr: impl Fn(&[u8]) -> A,
) -> Result<BTreeMap<(A, u8), u32>> {
    let mut out = BTreeMap::new();
    for item in trie.iter() {
        let (key, bits) = item?;
        let data = key.data();
        let data = data.as_ref();
        if data[0] as u32 == gen {
            out.insert(
                (addr(data), (key.prefix_len() - GEN_PREFIX_BITS) as u8),
                bits,
            );
        }
    }
    Ok(out)
}

/// A generation's IPv4 and IPv6 prefix entries of the tries.
type Entries<'a> = (&'a BTreeMap<(u32, u8), u32>, &'a BTreeMap<(u128, u8), u32>);

/// The entries of `s` that are the tries' (`none` beside flat tables, whose entries are the
/// source hash's).
fn tries<'a>(s: &'a SourceTables, none: Entries<'a>) -> Entries<'a> {
    if s.is_flat() {
        none
    } else {
        (&s.src4, &s.src6)
    }
}

/// Brings a generation's entries of a trie from `old` to `new` in batched
/// syscalls (10k prefixes: a few calls, not 10k).
fn sync_entries<K: Copy, A: Ord + Copy>(
    map: BorrowedFd<'_>,
    old: &BTreeMap<A, u32>,
    new: &BTreeMap<A, u32>,
    key: impl Fn(&A) -> K,
    w: &mut Writes,
) -> Result<()> {
    // Removals first: the generation is inactive, so the order does not matter to packets,
    // and a map sized for two generations of a million prefixes each then never has to
    // hold a third one's worth while one is replaced by another.
    let gone: Vec<K> = old
        .keys()
        .filter(|p| !new.contains_key(p))
        .map(&key)
        .collect();
    sys::delete_batch(map, &gone)?;
    w.removed += gone.len();
    let (mut keys, mut values) = (Vec::new(), Vec::new());
    for (prefix, bits) in new {
        if old.get(prefix) != Some(bits) {
            keys.push(key(prefix));
            values.push(*bits);
        }
    }
    sys::update_batch(map, &keys, &values)?;
    w.added += keys.len();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A freshly created map holds zero bytes; `zeroed` must say exactly that.
    #[test]
    fn a_fresh_generation_is_described_as_the_kernel_holds_it() {
        let g = KernelGen::zeroed();
        assert!(bytemuck::bytes_of(&g.config).iter().all(|&b| b == 0));
        assert!(g.sources.roots.iter().all(|&r| r == 0));
    }
}
