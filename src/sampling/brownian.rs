//! Port of torchsde's `BrownianTree` (BrownianInterval with `halfway_tree=True`,
//! `tol=1e-6`, `pool_size=24`, no Lévy area) as ComfyUI's SDE samplers use it on
//! CPU (numerics.md §2.4). Values are bit-exact with torchsde 0.2.6.

use super::seed_sequence::SeedSequence;
use crate::torch_rng::TorchGenerator;

const POOL_SIZE: usize = 24;

/// Python's `round(x, 6)`: the double nearest the correctly rounded 6-digit decimal.
pub fn py_round6(x: f64) -> f64 {
    let s = format!("{:.6}", x);
    s.parse().expect("formatted float parses")
}

#[derive(Debug)]
struct Node {
    start: f64,
    end: f64,
    parent: Option<usize>,
    is_left: bool,
    key: u128,
    depth: u128,
    split: Option<Split>,
    w: Option<Vec<f32>>,
}

#[derive(Debug, Clone, Copy)]
struct Split {
    mid: f64,
    left: usize,
    right: usize,
    w_seed: u32,
}

/// A Brownian tree over `[t0, t1]` for one tensor shape and one entropy.
#[derive(Debug)]
pub struct BrownianTree {
    nodes: Vec<Node>,
    entropy: u128,
    numel: usize,
}

impl BrownianTree {
    /// `torchsde.BrownianTree(t0, zeros(shape), t1, entropy)`; `t0 < t1` given as
    /// the f64 values of ComfyUI's float32 sigmas.
    pub fn new(t0: f64, t1: f64, numel: usize, entropy: u128) -> Self {
        let state = SeedSequence::new(entropy, &[], POOL_SIZE).generate_state(3);
        let scale = (t1 - t0).sqrt() as f32;
        let w: Vec<f32> = TorchGenerator::new(state[0] as u64)
            .randn_n(numel)
            .into_iter()
            .map(|v| v * scale)
            .collect();
        let root = Node {
            start: py_round6(t0),
            end: py_round6(t1),
            parent: None,
            is_left: false,
            key: 0,
            depth: 0,
            split: None,
            w: Some(w),
        };
        BrownianTree {
            nodes: vec![root],
            entropy,
            numel,
        }
    }

    fn split(&mut self, n: usize) -> Split {
        if let Some(s) = self.nodes[n].split {
            return s;
        }
        let (start, end) = (self.nodes[n].start, self.nodes[n].end);
        let mid = py_round6(0.5 * (end + start));
        if let Some(p) = self.nodes[n].parent {
            let (pk, pd) = (self.nodes[p].key, self.nodes[p].depth);
            self.nodes[n].key = 2 * pk + if self.nodes[n].is_left { 0 } else { 1 };
            self.nodes[n].depth = pd + 1;
        }
        let (key, depth) = (self.nodes[n].key, self.nodes[n].depth);
        let w_seed = SeedSequence::new(self.entropy, &[key, depth], POOL_SIZE).generate_state(4)[0];
        let mk = |s: f64, e: f64, is_left: bool| Node {
            start: s,
            end: e,
            parent: Some(n),
            is_left,
            key: 0,
            depth: 0,
            split: None,
            w: None,
        };
        let left = self.nodes.len();
        self.nodes.push(mk(start, mid, true));
        let right = self.nodes.len();
        self.nodes.push(mk(mid, end, false));
        let s = Split {
            mid,
            left,
            right,
            w_seed,
        };
        self.nodes[n].split = Some(s);
        s
    }

    fn w(&mut self, n: usize) -> Vec<f32> {
        if let Some(w) = &self.nodes[n].w {
            return w.clone();
        }
        let p = self.nodes[n].parent.expect("non-root node has a parent");
        let wp = self.w(p);
        let s = self.nodes[p].split.expect("parent was split");
        let (ps, pe) = (self.nodes[p].start, self.nodes[p].end);
        let h = 1.0 / (pe - ps);
        let ld = s.mid - ps;
        let rd = pe - s.mid;
        let (ld32, h32) = (ld as f32, h as f32);
        let sd = (ld * rd * h).sqrt() as f32;
        let noise = TorchGenerator::new(s.w_seed as u64).randn_n(self.numel);
        let left: Vec<f32> = wp
            .iter()
            .zip(&noise)
            .map(|(&w, &z)| ld32 * w * h32 + sd * z)
            .collect();
        let out = if self.nodes[n].is_left {
            left
        } else {
            wp.iter().zip(&left).map(|(&w, &l)| w - l).collect()
        };
        self.nodes[n].w = Some(out.clone());
        out
    }

    fn locate(&mut self, n: usize, ta: f64, tb: f64, out: &mut Vec<usize>) {
        if ta == self.nodes[n].start && tb == self.nodes[n].end {
            out.push(n);
            return;
        }
        let s = self.split(n);
        if tb <= s.mid {
            self.locate(s.left, ta, tb, out)
        } else if ta >= s.mid {
            self.locate(s.right, ta, tb, out)
        } else {
            self.locate(s.left, ta, s.mid, out);
            self.locate(s.right, s.mid, tb, out);
        }
    }

    /// The increment W(tb) - W(ta) for `ta <= tb` (clamped into the tree's interval).
    pub fn increment(&mut self, ta: f64, tb: f64) -> Vec<f32> {
        let ta = py_round6(ta.max(self.nodes[0].start));
        let tb = py_round6(tb.min(self.nodes[0].end));
        let mut parts = Vec::new();
        self.locate(0, ta, tb, &mut parts);
        let mut acc = self.w(parts[0]);
        for &p in &parts[1..] {
            let w = self.w(p);
            for (a, b) in acc.iter_mut().zip(&w) {
                *a += *b;
            }
        }
        acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_round6() {
        assert_eq!(py_round6(0.0078125), 0.007812);
        assert_eq!(py_round6(14.614643096923828), 14.614643);
        assert_eq!(py_round6(0.0291671771556139), 0.029167);
    }
}
