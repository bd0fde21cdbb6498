//! Path compression of the flat source tables (see `nodewall_common::xdp::SrcSkip`): an
//! expanded trie, one 256-entry node per byte step, rewritten so that every run of nodes
//! leading on through one byte only becomes one run, and every node whose entries are all one
//! class becomes that class.

use nodewall_common::xdp::{
    SrcNode, SrcSkip, SRC_CHILD, SRC_NODES_PER_GEN, SRC_SKIP, SRC_SKIPS_PER_GEN,
};

/// Rewrites expanded nodes (whose child entries name expanded nodes) into a generation's
/// nodes and runs, depth first: every run of single-path nodes becomes one `SrcSkip`, and
/// every node whose entries are one class becomes that class.
pub struct Compressor<'a> {
    pub expanded: &'a [SrcNode],
    pub nodes: &'a mut Vec<SrcNode>,
    pub skips: &'a mut Vec<SrcSkip>,
}

impl<'a> Compressor<'a> {
    /// The entry that replaces expanded entry `e`, met at address byte `depth`; `None` when
    /// the generation has no room left.
    pub fn entry(&mut self, e: u16, depth: usize) -> Option<u16> {
        if e & SRC_CHILD == 0 {
            return Some(e);
        }
        let node = &self.expanded[(e & !SRC_CHILD) as usize];
        if let Some(class) = uniform(node) {
            return Some(class);
        }
        if single_path(node).is_some() {
            return self.run(node, depth);
        }
        let n = self.nodes.len();
        if n >= SRC_NODES_PER_GEN as usize {
            return None;
        }
        self.nodes.push(SrcNode([0; 256]));
        let mut out = SrcNode([0; 256]);
        for (o, &x) in out.0.iter_mut().zip(&node.0) {
            *o = self.entry(x, depth + 1)?;
        }
        self.nodes[n] = out;
        Some(SRC_CHILD | n as u16)
    }

    /// One run for `node` (a single-path node met at `depth`) and the single-path nodes
    /// below it.
    fn run(&mut self, mut node: &'a SrcNode, depth: usize) -> Option<u16> {
        let s = self.skips.len();
        if s >= SRC_SKIPS_PER_GEN as usize {
            return None;
        }
        let me = SRC_CHILD | SRC_SKIP | s as u16;
        self.skips.push(SrcSkip::EMPTY);
        let mut run = SrcSkip::EMPTY;
        for i in depth..16 {
            let (byte, other) = single_path(node).expect("runs hold single-path nodes only");
            run.bytes[i] = byte;
            run.other[i] = other;
            let next = node.0[byte as usize];
            let expanded = self.expanded;
            let below = (next & SRC_CHILD != 0).then(|| &expanded[(next & !SRC_CHILD) as usize]);
            match below {
                Some(n) if uniform(n).is_none() && single_path(n).is_some() => {
                    run.matched[i] = me;
                    node = n;
                }
                _ => {
                    run.matched[i] = self.entry(next, i + 1)?;
                    break;
                }
            }
        }
        self.skips[s] = run;
        Some(me)
    }
}

/// The class every entry of `node` holds, if they all hold the same one.
fn uniform(node: &SrcNode) -> Option<u16> {
    let c = node.0[0];
    (c & SRC_CHILD == 0 && node.0.iter().all(|&x| x == c)).then_some(c)
}

/// The one byte at which `node` differs from a class all its other entries hold, and that
/// class: a node a run can stand for.
fn single_path(node: &SrcNode) -> Option<(u8, u16)> {
    let e = &node.0;
    // The common value is entry 0's unless entry 0 is the odd one out.
    let common = if e[0] != e[1] && e[1] == e[2] {
        e[1]
    } else {
        e[0]
    };
    let mut odd = e.iter().enumerate().filter(|&(_, &x)| x != common);
    let (byte, _) = odd.next()?;
    (odd.next().is_none() && common & SRC_CHILD == 0).then_some((byte as u8, common))
}
