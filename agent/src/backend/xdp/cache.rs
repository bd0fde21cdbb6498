//! What both map generations hold, kept in a file between agent runs, so that a new agent
//! process (every `nodewall apply` is one) knows the inactive generation without reading it
//! back: reading it back costs two syscalls per source prefix and the four 65,536-entry port
//! tables, far more than the one-CIDR change it usually precedes. The flat source tables are
//! not in it: the agent reads them from the map itself, mapped into its memory, which costs
//! less than recording them would (see `Maps::read_tables`).
//!
//! The file is only trusted when it provably describes these very maps: same boot, same
//! kernel map ids (a flush and reinstall creates new maps), same network namespace and pin
//! directory, and the same switch and per-generation headers as the kernel holds now. The
//! agent removes it before writing a generation and writes it again after publishing, so a
//! failed or interrupted apply leaves no file and the next one reads the maps back. One file
//! per pin directory and network namespace: namespaces never share one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use aya::maps::MapInfo;
use nodewall_common::ct::Timeouts;
use nodewall_common::xdp::{
    map_names, GenConfig, RuleBits, RuleRef, Switch, MAX_RULES, RULE_WORDS,
};

use super::flat::SourceTables;
use super::image::PortTable;
use super::maps::KernelGen;
use crate::staged::StagedFile;

/// Bumped whenever the encoding or [`KernelGen`] changes meaning.
const FORMAT: u32 = 8;
const MAGIC: &[u8; 4] = b"NWXG";
/// The maps a generation lives in: their kernel ids identify the install.
const GEN_MAPS: [&str; 7] = [
    map_names::SWITCH,
    map_names::CONFIG,
    map_names::SRC4,
    map_names::SRC6,
    map_names::SRC_BUCKETS,
    map_names::SOURCES,
    map_names::PORTS,
];

/// The cache file of one pin directory in one network namespace.
pub struct GenCache {
    file: PathBuf,
    pin_dir: PathBuf,
}

/// What makes a cache file describe the maps at hand.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Identity {
    object: u64,
    boot_id: String,
    map_ids: [u32; GEN_MAPS.len()],
    netns: (u64, u64),
    pin_dir: String,
}

impl GenCache {
    /// The cache under `dir` for the maps pinned in `pin_dir` of network namespace `netns`.
    pub fn new(dir: &Path, pin_dir: &Path, netns: (u64, u64)) -> Self {
        let mut h = crate::fnv::Fnv::new();
        h.write(pin_dir.as_os_str().as_encoded_bytes());
        h.write(&netns.0.to_le_bytes());
        h.write(&netns.1.to_le_bytes());
        Self {
            file: dir.join(format!("gens-{:016x}", h.finish())),
            pin_dir: pin_dir.to_path_buf(),
        }
    }

    fn identity(&self, netns: (u64, u64)) -> Result<Identity> {
        let mut map_ids = [0u32; GEN_MAPS.len()];
        for (id, name) in map_ids.iter_mut().zip(GEN_MAPS) {
            let path = self.pin_dir.join(name);
            *id = MapInfo::from_pin(&path)
                .with_context(|| format!("reading {}", path.display()))?
                .id();
        }
        let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .context("reading /proc/sys/kernel/random/boot_id")?;
        Ok(Identity {
            object: super::objhash::object_hash(),
            boot_id: boot_id.trim().to_string(),
            map_ids,
            netns,
            pin_dir: self.pin_dir.display().to_string(),
        })
    }

    /// Both generations as the file describes them, if it describes the maps as they are
    /// (`switch` and `configs` just read from the kernel), without their flat source tables
    /// (roots, nodes, classes), which the caller reads from the map. Any doubt reads as `None`.
    pub fn load(
        &self,
        netns: (u64, u64),
        switch: &Switch,
        configs: &[GenConfig; 2],
    ) -> Option<[KernelGen; 2]> {
        let bytes = std::fs::read(&self.file).ok()?;
        let ident = self.identity(netns).ok()?;
        let (cached, sw, gens) = decode(&bytes).ok()?;
        (cached == ident
            && sw == *switch
            && gens[0].config == configs[0]
            && gens[1].config == configs[1])
            .then_some(gens)
    }

    /// Forgets the file, before the maps are written. Fails only if a file is there and stays
    /// (an unwritable directory holding none, e.g. a read-only `/run`, is fine).
    pub fn invalidate(&self) -> Result<()> {
        match std::fs::remove_file(&self.file) {
            Err(e) if self.file.exists() => {
                Err(e).with_context(|| format!("removing {}", self.file.display()))
            }
            _ => Ok(()),
        }
    }

    /// Records what both generations hold after `switch` was published (atomically: a reader
    /// sees the old file, the new one, or none).
    pub fn save(&self, netns: (u64, u64), switch: &Switch, gens: [&KernelGen; 2]) -> Result<()> {
        self.stage(netns, switch, gens)?.commit()
    }

    /// Writes the record of `gens` and `switch` beside the cache without replacing it:
    /// [`StagedGens::commit`] does, once `switch` is published. For a policy of 1M prefixes the
    /// 21 MB file took 80-170 ms here, written while the maps are.
    pub fn stage(
        &self,
        netns: (u64, u64),
        switch: &Switch,
        gens: [&KernelGen; 2],
    ) -> Result<StagedGens<'_>> {
        let ident = self.identity(netns)?;
        let file = StagedFile::write(&self.file, &encode(&ident, switch, gens))
            .with_context(|| format!("writing {}", self.file.display()))?;
        Ok(StagedGens {
            cache: self,
            file,
            boot_id: ident.boot_id,
        })
    }

    /// Removes the files of other pin directories or namespaces whose maps are gone.
    fn prune(&self, dir: &Path, boot_id: &str) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let ours = entry.file_name().to_string_lossy().starts_with("gens-");
            if ours && path != self.file && !maybe_live(&path, boot_id) {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

/// A record written by [`GenCache::stage`], removed unless committed.
pub struct StagedGens<'a> {
    cache: &'a GenCache,
    file: StagedFile,
    boot_id: String,
}

impl StagedGens<'_> {
    pub fn commit(self) -> Result<()> {
        let path = &self.cache.file;
        self.file
            .commit()
            .with_context(|| format!("renaming the record into {}", path.display()))?;
        self.cache.prune(
            path.parent().expect("a file under a directory"),
            &self.boot_id,
        );
        Ok(())
    }
}

fn encode(ident: &Identity, sw: &Switch, gens: [&KernelGen; 2]) -> Vec<u8> {
    let mut w = Enc(Vec::with_capacity(4096));
    w.0.extend_from_slice(MAGIC);
    w.u32(FORMAT);
    w.u64(ident.object);
    w.bytes(ident.boot_id.as_bytes());
    for id in ident.map_ids {
        w.u32(id);
    }
    w.u64(ident.netns.0);
    w.u64(ident.netns.1);
    w.bytes(ident.pin_dir.as_bytes());
    w.u32(sw.layout);
    w.u32(sw.active);
    w.u64(sw.generation);
    w.u64(sw.netns_dev);
    w.u64(sw.netns_ino);
    for g in gens {
        // Every field, named: a field added to `KernelGen` must be added here (and FORMAT
        // bumped), or the cache would describe generations without it.
        let KernelGen {
            config,
            sources,
            tcp,
            udp,
        } = g;
        w.config(config);
        // The flat tables are read from the mapped map instead (see the module docs).
        let SourceTables {
            roots: _,
            nodes: _,
            skips: _,
            classes: _,
            src4,
            src6,
            buckets: _,
            seeds: _,
        } = sources;
        w.u32(src4.len() as u32);
        for (&(addr, len), &class) in src4 {
            w.u32(addr);
            w.0.push(len);
            w.u32(class);
        }
        w.u32(src6.len() as u32);
        for (&(addr, len), &class) in src6 {
            w.0.extend_from_slice(&addr.to_le_bytes());
            w.0.push(len);
            w.u32(class);
        }
        for t in [tcp, udp] {
            w.u32(t.0.len() as u32);
            for &(port, bits) in &t.0 {
                w.0.extend_from_slice(&port.to_le_bytes());
                w.bits(&bits);
            }
        }
    }
    w.0
}

fn decode(b: &[u8]) -> Result<(Identity, Switch, [KernelGen; 2])> {
    let mut r = Dec(b);
    let ident = decode_identity(&mut r)?;
    let sw = Switch {
        layout: r.u32()?,
        active: r.u32()?,
        generation: r.u64()?,
        netns_dev: r.u64()?,
        netns_ino: r.u64()?,
    };
    let mut gens = [KernelGen::empty(), KernelGen::empty()];
    for g in &mut gens {
        g.config = r.config()?;
        // Written in key order: collected whole, the maps are built in bulk, not key by key.
        let n = r.u32()? as usize;
        let mut src4 = Vec::with_capacity(n.min(b.len()));
        for _ in 0..n {
            let addr = r.u32()?;
            let len = r.take(1)?[0];
            src4.push(((addr, len), r.u32()?));
        }
        let n = r.u32()? as usize;
        let mut src6 = Vec::with_capacity(n.min(b.len()));
        for _ in 0..n {
            let addr = u128::from_le_bytes(r.take(16)?.try_into()?);
            let len = r.take(1)?[0];
            src6.push(((addr, len), r.u32()?));
        }
        g.sources.src4 = BTreeMap::from_iter(src4);
        g.sources.src6 = BTreeMap::from_iter(src6);
        for t in [&mut g.tcp, &mut g.udp] {
            let n = r.u32()? as usize;
            let mut segs = Vec::with_capacity(n.min(65536));
            for _ in 0..n {
                let port = u16::from_le_bytes(r.take(2)?.try_into()?);
                segs.push((port, r.bits()?));
            }
            if segs.first().map(|s| s.0) != Some(0) {
                bail!("a port table must start at port 0");
            }
            *t = PortTable(segs);
        }
    }
    if !r.0.is_empty() {
        bail!("trailing bytes");
    }
    Ok((ident, sw, gens))
}

fn decode_identity(r: &mut Dec) -> Result<Identity> {
    if r.take(4)? != MAGIC || r.u32()? != FORMAT {
        bail!("not a generation cache of this format");
    }
    let object = r.u64()?;
    let boot_id = String::from_utf8(r.bytes()?.to_vec())?;
    let mut map_ids = [0u32; GEN_MAPS.len()];
    for id in &mut map_ids {
        *id = r.u32()?;
    }
    let netns = (r.u64()?, r.u64()?);
    let pin_dir = String::from_utf8(r.bytes()?.to_vec())?;
    Ok(Identity {
        object,
        boot_id,
        map_ids,
        netns,
        pin_dir,
    })
}

/// Whether the cache file at `path` may still describe live maps: its maps exist (same boot).
/// Files of namespaces that are gone (their maps with them) are pruned on this test, so that
/// short-lived namespaces (tests, benchmarks) do not accumulate files.
fn maybe_live(path: &Path, boot_id: &str) -> bool {
    use std::io::Read;
    let mut head = Vec::new();
    let read = std::fs::File::open(path).and_then(|f| f.take(8192).read_to_end(&mut head));
    if read.is_err() {
        return true;
    }
    match decode_identity(&mut Dec(&head)) {
        Ok(ident) => ident.boot_id == boot_id && MapInfo::from_id(ident.map_ids[0]).is_ok(),
        // Another format (a newer or older agent): its own agent prunes it.
        Err(_) => head.starts_with(MAGIC) && head.len() >= 8 && head[4..8] != FORMAT.to_le_bytes(),
    }
}

struct Enc(Vec<u8>);

/// Every field of [`Timeouts`], in the order [`Dec::timeouts`] reads them back.
fn timeout_fields(t: &Timeouts) -> [u32; 16] {
    let Timeouts {
        tcp_syn_sent,
        tcp_syn_recv,
        tcp_established,
        tcp_fin_wait,
        tcp_last_ack,
        tcp_time_wait,
        tcp_close,
        tcp_unacknowledged,
        udp,
        udp_stream,
        icmp,
        icmpv6,
        gre,
        gre_stream,
        generic,
        tcp_loose,
    } = *t;
    [
        tcp_syn_sent,
        tcp_syn_recv,
        tcp_established,
        tcp_fin_wait,
        tcp_last_ack,
        tcp_time_wait,
        tcp_close,
        tcp_unacknowledged,
        udp,
        udp_stream,
        icmp,
        icmpv6,
        gre,
        gre_stream,
        generic,
        tcp_loose,
    ]
}

impl Enc {
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, v: &[u8]) {
        self.u32(v.len() as u32);
        self.0.extend_from_slice(v);
    }
    /// Rule sets are mostly a few low bits: a mask of the non-zero words, then those words.
    fn bits(&mut self, b: &RuleBits) {
        let mask = (0..RULE_WORDS).fold(0u8, |m, i| m | (((b.0[i] != 0) as u8) << i));
        self.0.push(mask);
        for w in b.0.iter().filter(|&&w| w != 0) {
            self.u64(*w);
        }
    }
    fn timeouts(&mut self, t: &Timeouts) {
        for v in timeout_fields(t) {
            self.u32(v);
        }
    }
    fn config(&mut self, c: &GenConfig) {
        self.u32(c.flags);
        self.u32(c.nrules);
        self.u32(c.src_nodes);
        self.u32(c.src_classes);
        self.u32(c.ningress);
        self.u32(c.src_skips);
        for f in 0..2 {
            self.u32(c.hash_len[f]);
            self.u64(c.hash_mask[f]);
            self.u64(c.hash_seeds[f]);
        }
        self.bits(&c.icmp4);
        self.bits(&c.icmp6);
        self.bits(&c.other);
        self.bits(&c.egress_host);
        self.bits(&c.egress_pod);
        self.timeouts(&c.ct);
        for r in &c.rules {
            self.0.extend_from_slice(&r.slot.to_le_bytes());
            self.0.push(r.action);
            self.0.push(r.direction);
        }
    }
}

struct Dec<'a>(&'a [u8]);

impl<'a> Dec<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.0.len() < n {
            bail!("truncated");
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into()?))
    }
    fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn bits(&mut self) -> Result<RuleBits> {
        let mask = self.take(1)?[0];
        let mut b = RuleBits::EMPTY;
        for (i, w) in b.0.iter_mut().enumerate() {
            if mask & (1 << i) != 0 {
                *w = self.u64()?;
            }
        }
        Ok(b)
    }
    fn timeouts(&mut self) -> Result<Timeouts> {
        let mut v = [0u32; 16];
        for x in &mut v {
            *x = self.u32()?;
        }
        Ok(Timeouts {
            tcp_syn_sent: v[0],
            tcp_syn_recv: v[1],
            tcp_established: v[2],
            tcp_fin_wait: v[3],
            tcp_last_ack: v[4],
            tcp_time_wait: v[5],
            tcp_close: v[6],
            tcp_unacknowledged: v[7],
            udp: v[8],
            udp_stream: v[9],
            icmp: v[10],
            icmpv6: v[11],
            gre: v[12],
            gre_stream: v[13],
            generic: v[14],
            tcp_loose: v[15],
        })
    }
    fn config(&mut self) -> Result<GenConfig> {
        let mut head = [0u32; 6];
        for h in &mut head {
            *h = self.u32()?;
        }
        let (mut hash_len, mut hash_mask, mut hash_seeds) = ([0u32; 2], [0u64; 2], [0u64; 2]);
        for f in 0..2 {
            hash_len[f] = self.u32()?;
            hash_mask[f] = self.u64()?;
            hash_seeds[f] = self.u64()?;
        }
        let [flags, nrules, src_nodes, src_classes, ningress, src_skips] = head;
        let mut c = GenConfig {
            flags,
            nrules,
            src_nodes,
            src_classes,
            ningress,
            src_skips,
            hash_len,
            hash_mask,
            hash_seeds,
            icmp4: self.bits()?,
            icmp6: self.bits()?,
            other: self.bits()?,
            egress_host: self.bits()?,
            egress_pod: self.bits()?,
            ct: self.timeouts()?,
            ..GenConfig::EMPTY
        };
        for r in c.rules.iter_mut().take(MAX_RULES) {
            let b = self.take(4)?;
            *r = RuleRef {
                slot: u16::from_le_bytes([b[0], b[1]]),
                action: b[2],
                direction: b[3],
            };
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodewall_common::xdp::SrcNode;

    #[test]
    fn round_trips_and_refuses_damage() {
        let mut g = KernelGen::empty();
        let mut bits = RuleBits::EMPTY;
        bits.set(3);
        bits.set(200);
        g.sources.src4.insert((0xc612_0000, 15), 1);
        g.sources.src6.insert((0xfd00 << 112, 8), 2);
        g.config.src_nodes = 2;
        g.config.src_classes = 3;
        g.udp = PortTable(vec![
            (0, RuleBits::EMPTY),
            (53, bits),
            (54, RuleBits::EMPTY),
        ]);
        g.config.nrules = 2;
        g.config.rules[1].slot = 7;
        g.config.icmp6 = bits;
        g.config.hash_len[1] = 64;
        g.config.hash_mask[1] = u64::MAX;
        g.config.hash_seeds = [3, 5];
        let ident = Identity {
            object: 1,
            boot_id: "b".into(),
            map_ids: [1, 2, 3, 4, 5, 6, 7],
            netns: (6, 7),
            pin_dir: "/sys/fs/bpf/nodewall".into(),
        };
        let sw = Switch {
            layout: 1,
            active: 1,
            generation: 9,
            netns_dev: 6,
            netns_ino: 7,
        };
        let gens = [KernelGen::empty(), g];
        let bytes = encode(&ident, &sw, gens.each_ref());
        assert_eq!(decode(&bytes).unwrap(), (ident, sw, gens));
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer).is_err());
    }

    #[test]
    fn flat_tables_are_left_to_the_map() {
        let ident = Identity {
            object: 1,
            boot_id: "b".into(),
            map_ids: [1; GEN_MAPS.len()],
            netns: (6, 7),
            pin_dir: "/p".into(),
        };
        let mut g = KernelGen::zeroed();
        g.sources.roots[70_000] = 3;
        g.sources.nodes = vec![SrcNode([0; 256]); 100];
        g.sources.classes = vec![RuleBits::EMPTY; 3];
        let gens = [KernelGen::zeroed(), g];
        let decoded = decode(&encode(&ident, &Switch::default(), gens.each_ref()))
            .unwrap()
            .2;
        // Everything but the flat tables: the (zero) headers and the port tables.
        let bare = || KernelGen {
            config: KernelGen::zeroed().config,
            ..KernelGen::empty()
        };
        assert_eq!(decoded, [bare(), bare()]);
    }

    #[test]
    fn files_of_maps_that_are_gone_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let gone = Identity {
            object: 1,
            boot_id: "b".into(),
            map_ids: [u32::MAX; GEN_MAPS.len()],
            netns: (1, 2),
            pin_dir: "/x".into(),
        };
        let sw = Switch::default();
        let gens = [KernelGen::empty(), KernelGen::empty()];
        let stale = dir.path().join("gens-1");
        std::fs::write(&stale, encode(&gone, &sw, gens.each_ref())).unwrap();
        assert!(!maybe_live(&stale, "b"), "no map has id u32::MAX");
        let mut newer = encode(&gone, &sw, gens.each_ref());
        newer[4..8].copy_from_slice(&(FORMAT + 1).to_le_bytes());
        let other = dir.path().join("gens-2");
        std::fs::write(&other, newer).unwrap();
        assert!(
            maybe_live(&other, "b"),
            "another format is left to its agent"
        );
        let cache = GenCache::new(dir.path(), Path::new("/y"), (3, 4));
        cache.prune(dir.path(), "b");
        assert!(!stale.exists() && other.exists());
    }
}
