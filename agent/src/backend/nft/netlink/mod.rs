//! Installing the planned table through nf_tables netlink, as one atomic batch per apply.

mod align;
mod batch;
mod cache;
mod diff;
mod elems;
mod expr;
mod recorded;
mod socket;
pub mod state;
mod udata;
mod wrap;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use super::names;
use super::plan::{self, Ruleset, SetDef};
use state::Current;

/// Set to `1` to append a message the kernel must reject (a rule using a set that does not
/// exist) to the next batch: how the integration tests prove that a failed batch leaves the
/// previous ruleset untouched and that the error names the offending object. Only builds with
/// the `fault-injection` feature (the test suite's) inject; a release only warns.
pub const FAULT_ENV: &str = "NODEWALL_NFT_INJECT_FAULT";

/// From this many elements in the sets an apply rewrites on, their files are written on a
/// second thread while the kernel takes the batch. A thread costs tens of microseconds; the
/// files of a 10k-CIDR table took 0.13 ms here, those of 1M CIDRs about 100 ms, beside a
/// commit of about a second.
const ELEMS_BESIDE_COMMIT: usize = 1 << 15;

/// Whether the record `old` holds set `s` with the fingerprint `prints` plans for it: then the
/// file written with that record holds its elements already.
fn vouched(s: &SetDef, prints: &BTreeMap<String, u64>, old: Option<&cache::Installed>) -> bool {
    old.and_then(|o| o.sets.get(&s.name))
        .is_some_and(|print| prints.get(&s.name) == Some(print))
}

#[cfg(feature = "fault-injection")]
fn fault_injected() -> bool {
    std::env::var(FAULT_ENV).as_deref() == Ok("1")
}

/// A build without the hook says so when asked for a fault: a test that expects the apply to
/// fail then reads why it did not (a binary built without the feature), not a product bug.
#[cfg(not(feature = "fault-injection"))]
fn fault_injected() -> bool {
    if std::env::var_os(FAULT_ENV).is_some() {
        tracing::warn!(
            "{FAULT_ENV} is set, but this nodewall was built without the `fault-injection` \
             feature: nothing is injected"
        );
    }
    false
}

pub struct Nft {
    sock: socket::Socket,
    /// The last generation this process installed or found installed: when the table is
    /// deleted behind our back, the repair continues from here instead of restarting at 1.
    last_generation: u64,
    /// What our last commit left in the sets (see [`cache`]); `None` when unknown.
    installed: Option<cache::Installed>,
    /// Where `installed` outlives this process, if anywhere.
    store: Option<cache::Store>,
    /// Where the elements of `installed` are kept, beside `store`.
    elems: Option<recorded::ElemDir>,
}

/// What one apply did.
pub struct Applied {
    pub generation: u64,
    pub changed: bool,
    pub added: usize,
    pub removed: usize,
    /// The ruleset generation id at which the table was exactly the plan, when that is
    /// certain: read before the dump when nothing had to be sent, or after the batch when the
    /// id moved by exactly our own commit. `None` when someone else committed meanwhile.
    pub genid: Option<u32>,
    /// How many sets had their elements dumped (the others were vouched for by the record of
    /// our last commit).
    pub sets_dumped: usize,
    /// Whether the table's objects and rules were dumped (else the record told them).
    pub table_dumped: bool,
}

impl Nft {
    pub fn open() -> anyhow::Result<Self> {
        Ok(Self {
            sock: socket::Socket::open()?,
            last_generation: 0,
            installed: None,
            store: None,
            elems: None,
        })
    }

    /// Keeps the record of what the sets hold in `dir` too, so that the next `nodewall apply`
    /// process can skip dumping the sets this one installed (see [`cache`]).
    pub fn remember_in(&mut self, dir: &Path) {
        self.store = cache::Store::new(dir, self.sock.netns_cookie());
        self.elems = self.store.as_ref().map(|_| recorded::ElemDir::new(dir));
    }

    /// Records (or forgets) what the sets hold, in memory and in the store, and the
    /// elements of `sets` (those `old` did not vouch for, unless `written` says their files
    /// already are) beside it.
    fn set_installed(
        &mut self,
        installed: Option<cache::Installed>,
        sets: &[SetDef],
        old: Option<&cache::Installed>,
        written: bool,
    ) {
        match (&self.elems, &installed) {
            (Some(files), Some(new)) => {
                let gone = old.map(|o| {
                    let names: HashSet<&str> = sets.iter().map(|s| s.name.as_str()).collect();
                    let gone = o.sets.keys().map(String::as_str);
                    gone.filter(|n| !names.contains(n)).collect()
                });
                let unwritten = sets
                    .iter()
                    .filter(|s| !written && !vouched(s, &new.sets, old));
                files.save(sets, unwritten, gone);
            }
            (Some(files), None) => files.clear(),
            (None, _) => {}
        }
        if let Some(store) = &self.store {
            store.save(installed.as_ref());
        }
        self.installed = installed;
    }

    /// The record of our last commit, if the kernel's generation id is still `genid`, the one
    /// at which it was made: else somebody committed since and it is worth nothing.
    fn record_at(&mut self, genid: u32) -> Option<cache::Installed> {
        let record = match self.installed.take() {
            Some(i) => Some(i),
            None => self.store.as_ref().and_then(cache::Store::load),
        };
        record.filter(|r| r.genid == genid)
    }

    /// The table as `record` says it is, if it knows the whole table and the kernel still
    /// reports `genid`: no dump but the elements of the sets whose planned content changed.
    /// Else the table with the elements of the sets of `planned` that `record` vouches for
    /// left out (and marked `as_planned`), or dumped whole.
    fn read_recorded(
        &mut self,
        genid: u32,
        record: &cache::Installed,
        planned: &cache::Planned,
    ) -> anyhow::Result<Current> {
        let vouched = record.vouched(genid, planned);
        let layout = record.layout.as_ref().filter(|_| record.genid == genid);
        let mut cur = match layout {
            Some(l) => {
                let mut cur = l.current();
                for (name, set) in cur.sets.iter_mut() {
                    if vouched.contains(&name.as_str()) {
                        set.as_planned = true;
                        continue;
                    }
                    set.recorded = self
                        .elems
                        .as_ref()
                        .zip(record.sets.get(name))
                        .and_then(|(files, &print)| files.set(name, print));
                    if set.recorded.is_none() {
                        set.elems = state::read_elems(&mut self.sock, name)?;
                    }
                }
                cur
            }
            None if vouched.is_empty() => return self.read(&|_| true),
            None => self.read(&|set| !vouched.contains(&set))?,
        };
        // What was read is consistent with the record only if nothing was committed meanwhile.
        if self.genid()? != genid {
            return self.read(&|_| true);
        }
        for name in vouched {
            if let Some(s) = cur.sets.get_mut(name) {
                s.as_planned = true;
            }
        }
        Ok(cur)
    }

    /// The namespace's ruleset generation id (see [`socket::Socket::genid`]).
    pub fn genid(&mut self) -> anyhow::Result<u32> {
        self.sock.genid()
    }

    /// The table as it is now, with the elements of the sets `elements_of` selects.
    pub fn read(&mut self, elements_of: &dyn Fn(&str) -> bool) -> anyhow::Result<Current> {
        state::read(&mut self.sock, elements_of)
    }

    /// The generation the table is at: what its base rule says, or more if this process
    /// already went further (the table was deleted or replaced since).
    fn generation(&self, cur: &Current) -> u64 {
        generation(cur).max(self.last_generation)
    }

    /// Whether the table is exactly `plan(generation)`, i.e. whether `apply` would send
    /// nothing: every set with exactly its elements, every counter, every chain with exactly
    /// its rules, and nothing else of ours. One dump per object type (and one per set for its
    /// elements).
    pub fn verify(&mut self, plan: impl Fn(u64) -> Ruleset) -> anyhow::Result<bool> {
        let cur = self.read(&|_| true)?;
        Ok(diff::diff(&plan(self.generation(&cur)), &cur)
            .batch
            .is_empty())
    }

    /// Brings the table to `plan(generation)`. Nothing is sent when it already matches;
    /// otherwise the generation goes up by one and every change goes in one batch.
    pub fn apply(&mut self, plan: impl Fn(u64) -> Ruleset) -> anyhow::Result<Applied> {
        let before = self.genid()?;
        let record = self.record_at(before);
        // Only the base rule's comment depends on the generation, which the table tells: the
        // plan is built (and its sets hashed) once, and restamped once the generation is known.
        let mut next = plan(0);
        let planned = cache::Planned::of(&next.sets);
        let mut cur = match &record {
            Some(r) => self.read_recorded(before, r, &planned)?,
            None => self.read(&|_| true)?,
        };
        let mut table_dumped = cur.rule_prints == state::RulePrints::Kernel;
        if !table_dumped && !diff::compatible(&next, &cur) {
            // A set changes shape: the table is rebuilt with its counters' values, which only
            // a dump tells.
            cur = self.read(&|_| true)?;
            table_dumped = true;
        }
        let generation = self.generation(&cur);
        plan::restamp(&mut next, generation + 1);
        let sets_dumped = cur
            .sets
            .values()
            .filter(|s| !s.as_planned && s.recorded.is_none())
            .count();
        let fault = fault_injected();
        let d = diff::diff(&next, &cur);
        let now = || {
            let mut p = next.clone();
            plan::restamp(&mut p, generation);
            p
        };
        if !fault && diff::unchanged_but_generation(&d, now, &cur) {
            self.last_generation = generation;
            let layout = self.layout_of(now(), generation, &cur);
            let installed = planned.at(before, layout);
            self.set_installed(Some(installed), &next.sets, record.as_ref(), false);
            return Ok(Applied {
                generation,
                changed: false,
                added: 0,
                removed: 0,
                genid: Some(before),
                sets_dumped,
                table_dumped,
            });
        }
        #[cfg(feature = "fault-injection")]
        let d = {
            let mut d = d;
            if fault {
                inject_fault(&mut d.batch);
            }
            d
        };
        let (batch, described) = d.batch.finish();
        let describe = |seq: u32| {
            described
                .iter()
                .find(|(s, _)| *s == seq)
                .map(|(_, w)| w.clone())
        };
        let mut handles = HashMap::new();
        let echoed = |seq: u32, nlh: *const libc::nlmsghdr| {
            if let Some(h) = socket::rule_handle(nlh) {
                handles.insert(seq, h);
            }
        };
        // The files of the sets the old record does not vouch for, written on a second thread
        // while the kernel takes a large batch.
        let elems = self.elems.as_ref();
        let sock = &mut self.sock;
        let (sent, written) = std::thread::scope(|scope| {
            let unwritten: Vec<&SetDef> = next
                .sets
                .iter()
                .filter(|s| !vouched(s, planned.prints(), record.as_ref()))
                .collect();
            let count: usize = unwritten.iter().map(|s| s.elems.len()).sum();
            let writer = elems
                .filter(|_| count >= ELEMS_BESIDE_COMMIT)
                .map(|files| scope.spawn(move || files.write(unwritten.into_iter())));
            let sent = sock.send_batch(&batch, describe, echoed);
            let written = writer.map(|w| w.join().expect("writing set files does not panic"));
            (sent, written.is_some())
        });
        if let Err(e) = sent {
            self.set_installed(None, &[], None, false);
            return Err(e.context("applying table inet nodewall"));
        }
        self.last_generation = generation + 1;
        // The batch is in: failing to read the id only costs the next apply or verify a dump.
        let genid = self.genid().ok().filter(|&a| a == before.wrapping_add(1));
        let placed = d
            .placed
            .iter()
            .map(|chain| {
                chain
                    .iter()
                    .map(|p| match *p {
                        diff::Placed::Kept(h) => Some(h),
                        diff::Placed::Sent(seq) => handles.get(&seq).copied(),
                    })
                    .collect::<Option<Vec<u64>>>()
            })
            .collect::<Option<Vec<_>>>();
        let layout = placed.and_then(|h| cache::Layout::of(&next, generation + 1, h));
        self.set_installed(
            genid.map(|g| planned.at(g, layout)),
            &next.sets,
            record.as_ref(),
            written,
        );
        Ok(Applied {
            generation: generation + 1,
            changed: true,
            added: d.added,
            removed: d.removed,
            genid,
            sets_dumped,
            table_dumped,
        })
    }

    /// The layout of `plan` (of `generation`), which `cur` holds exactly.
    fn layout_of(&self, plan: Ruleset, generation: u64, cur: &Current) -> Option<cache::Layout> {
        let handles = plan
            .chains
            .iter()
            .map(|ch| {
                cur.chains
                    .iter()
                    .find(|c| c.name == ch.name)
                    .map(|c| c.rules.iter().map(|r| r.handle).collect())
            })
            .collect::<Option<Vec<_>>>()?;
        cache::Layout::of(&plan, generation, handles)
    }

    /// Deletes table `inet nodewall` (and with it everything nodewall installed). Returns
    /// whether there was one.
    pub fn flush(&mut self) -> anyhow::Result<bool> {
        self.set_installed(None, &[], None, false);
        if !self.read(&|_| false)?.table {
            return Ok(false);
        }
        let mut b = batch::Builder::new();
        b.push(
            libc::NFT_MSG_DELTABLE,
            0,
            batch::Body::Table(&wrap::Table::ours()),
            "delete table inet nodewall".into(),
        );
        let (batch, _) = b.finish();
        self.sock.send_batch(
            &batch,
            |_| Some("delete table inet nodewall".into()),
            |_, _| {},
        )?;
        Ok(true)
    }
}

/// The generation carried by the base chain rule's comment; 0 when nothing is installed.
pub fn generation(cur: &Current) -> u64 {
    cur.chains
        .iter()
        .find(|c| c.name == names::BASE_CHAIN)
        .and_then(|c| c.rules.first())
        .and_then(|r| r.comment.as_deref())
        .and_then(|c| c.strip_prefix(names::GENERATION_PREFIX))
        .and_then(|g| g.parse().ok())
        .unwrap_or(0)
}

#[cfg(feature = "fault-injection")]
fn inject_fault(b: &mut batch::Builder) {
    use super::plan::{Match, RuleDef, Verdict};
    let def = RuleDef {
        matches: vec![Match::IifnameIn("nodewall-injected-missing-set".into())],
        log: None,
        counter: None,
        verdict: Some(Verdict::Drop),
        comment: Some(format!("fault injected by {FAULT_ENV}")),
    };
    let rule = expr::build_rule(names::INBOUND_CHAIN, &def);
    b.push(
        libc::NFT_MSG_NEWRULE,
        libc::NLM_F_CREATE | libc::NLM_F_APPEND,
        batch::Body::Rule(&rule),
        format!(
            "add rule to chain {}: {}",
            names::INBOUND_CHAIN,
            super::script::rule_text(&def)
        ),
    );
}
