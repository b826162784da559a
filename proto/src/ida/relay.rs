//! Sans-IO dissemination rules (RapidChain): the producer gives *different* chunks to different
//! neighbours; a node forwards each new valid chunk once to every neighbour except the sender and
//! those that said they already have the block (`Done`). Bounded per neighbour.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::Hash;

use crate::chain::H256;

/// Roots remembered per neighbour as done.
const DONE_PER_PEER: usize = 256;

#[derive(Default)]
struct DoneSet {
    set: HashSet<H256>,
    order: VecDeque<H256>,
}

pub struct Relay<P> {
    neighbours: BTreeSet<P>,
    done: HashMap<P, DoneSet>,
    /// Chunks of a root forwarded to a neighbour so far (recent roots only), for the push budget.
    pushed: HashMap<P, VecDeque<(H256, usize)>>,
}

impl<P: Ord + Clone + Hash> Default for Relay<P> {
    fn default() -> Self {
        Relay {
            neighbours: BTreeSet::new(),
            done: HashMap::new(),
            pushed: HashMap::new(),
        }
    }
}

impl<P: Ord + Clone + Hash> Relay<P> {
    pub fn neighbours(&self) -> impl Iterator<Item = &P> {
        self.neighbours.iter()
    }

    pub fn add(&mut self, p: P) {
        self.neighbours.insert(p);
    }

    pub fn remove(&mut self, p: &P) {
        self.neighbours.remove(p);
        self.done.remove(p);
        self.pushed.remove(p);
    }

    /// The neighbour has the block: send it no more chunks of it.
    pub fn on_done(&mut self, p: &P, root: H256) {
        if !self.neighbours.contains(p) {
            return;
        }
        let d = self.done.entry(p.clone()).or_default();
        if d.set.insert(root) {
            d.order.push_back(root);
            if d.order.len() > DONE_PER_PEER {
                let old = d.order.pop_front().expect("non-empty");
                d.set.remove(&old);
            }
        }
    }

    fn wants(&self, p: &P, root: &H256) -> bool {
        !self.done.get(p).is_some_and(|d| d.set.contains(root))
    }

    /// The producer's split: chunk `i` goes to neighbour `i mod d`, so every neighbour starts with
    /// a different share and the producer uploads each chunk once.
    pub fn assign(&self, chunks: usize) -> Vec<(P, Vec<usize>)> {
        let peers: Vec<&P> = self.neighbours.iter().collect();
        if peers.is_empty() {
            return vec![];
        }
        let mut out: Vec<(P, Vec<usize>)> = peers.iter().map(|p| ((*p).clone(), vec![])).collect();
        for i in 0..chunks {
            out[i % peers.len()].1.push(i);
        }
        out.retain(|(_, v)| !v.is_empty());
        out
    }

    fn pushed(&self, p: &P, root: &H256) -> usize {
        self.pushed
            .get(p)
            .and_then(|v| v.iter().find(|(r, _)| r == root))
            .map_or(0, |(_, n)| *n)
    }

    fn count_push(&mut self, p: &P, root: H256) {
        let v = self.pushed.entry(p.clone()).or_default();
        match v.iter_mut().find(|(r, _)| *r == root) {
            Some((_, n)) => *n += 1,
            None => {
                if v.len() >= DONE_PER_PEER {
                    v.pop_front();
                }
                v.push_back((root, 1));
            }
        }
    }

    /// Where a new valid chunk `index` of `root` received from `from` goes next: every eligible
    /// neighbour, or with `fanout > 0` that many of them, rotating with the index so different
    /// chunks take different neighbours. With `budget > 0`, a neighbour that was already pushed
    /// `budget` chunks of this block gets no more: a node needs only `k` chunks, and with every
    /// neighbour pushing at once most beyond that arrive as duplicates. Pull repair covers a
    /// neighbour the pushes leave short. `has(p)` says `p` is known to have this chunk already.
    pub fn forward_to(
        &mut self,
        root: &H256,
        from: Option<&P>,
        index: usize,
        (fanout, budget): (usize, usize),
        has: impl Fn(&P) -> bool,
    ) -> Vec<P> {
        let eligible: Vec<P> = self
            .neighbours
            .iter()
            .filter(|p| Some(*p) != from && self.wants(p, root) && !has(p))
            .filter(|p| budget == 0 || self.pushed(p, root) < budget)
            .cloned()
            .collect();
        let chosen: Vec<P> = if fanout == 0 || fanout >= eligible.len() {
            eligible
        } else {
            let start = index.wrapping_mul(fanout) % eligible.len();
            (0..fanout)
                .map(|i| eligible[(start + i) % eligible.len()].clone())
                .collect()
        };
        if budget > 0 {
            for p in &chosen {
                self.count_push(p, *root);
            }
        }
        chosen
    }

    pub fn tracked(&self) -> usize {
        self.done.values().map(|d| d.set.len()).sum::<usize>()
            + self.pushed.values().map(VecDeque::len).sum::<usize>()
    }
}

/// Roots remembered per neighbour in [`PeerHas`].
pub const HAS_ROOTS: usize = 64;

/// What one neighbour is known to have, from its `Have` (one chunk) and `Done` (whole block)
/// messages: a chunk queued for it and not yet sent is skipped once it has it from elsewhere, so
/// a node's uplink carries each chunk to each neighbour about once. Bounded to `HAS_ROOTS` roots.
#[derive(Debug, Default)]
pub struct PeerHas {
    /// Oldest first; `None` = the whole block.
    roots: VecDeque<(H256, Option<Vec<u64>>)>,
}

impl PeerHas {
    fn entry(&mut self, root: H256) -> &mut Option<Vec<u64>> {
        let i = match self.roots.iter().position(|(r, _)| *r == root) {
            Some(i) => i,
            None => {
                if self.roots.len() >= HAS_ROOTS {
                    self.roots.pop_front();
                }
                self.roots.push_back((root, Some(vec![])));
                self.roots.len() - 1
            }
        };
        &mut self.roots[i].1
    }

    pub fn mark(&mut self, root: H256, index: u16) {
        if let Some(bits) = self.entry(root) {
            let (w, b) = (usize::from(index) / 64, usize::from(index) % 64);
            if bits.len() <= w {
                bits.resize(w + 1, 0);
            }
            bits[w] |= 1 << b;
        }
    }

    pub fn mark_all(&mut self, root: H256) {
        *self.entry(root) = None;
    }

    /// Whether the neighbour can rebuild the block already: it said `Done`, or it has `k` chunks.
    pub fn enough(&self, root: &H256, k: usize) -> bool {
        match self.roots.iter().find(|(r, _)| r == root) {
            Some((_, None)) => true,
            Some((_, Some(bits))) => {
                bits.iter().map(|w| w.count_ones() as usize).sum::<usize>() >= k
            }
            None => false,
        }
    }

    pub fn has(&self, root: &H256, index: u16) -> bool {
        match self.roots.iter().find(|(r, _)| r == root) {
            Some((_, None)) => true,
            Some((_, Some(bits))) => {
                let (w, b) = (usize::from(index) / 64, usize::from(index) % 64);
                bits.get(w).is_some_and(|x| x & (1 << b) != 0)
            }
            None => false,
        }
    }

    pub fn roots(&self) -> usize {
        self.roots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_producer_gives_each_neighbour_a_different_share_covering_all_chunks() {
        let mut r = Relay::default();
        for p in [3u32, 1, 2] {
            r.add(p);
        }
        let a = r.assign(8);
        assert_eq!(
            a,
            vec![(1, vec![0, 3, 6]), (2, vec![1, 4, 7]), (3, vec![2, 5])]
        );
        // More neighbours than chunks: each chunk once, nobody gets two.
        let mut r = Relay::default();
        for p in 0..10u32 {
            r.add(p);
        }
        let a = r.assign(4);
        assert_eq!(a.len(), 4);
        assert!(a.iter().all(|(_, v)| v.len() == 1));
        assert!(Relay::<u32>::default().assign(4).is_empty());
    }

    #[test]
    fn forwarding_skips_the_sender_and_neighbours_that_are_done() {
        let mut r = Relay::default();
        for p in 1..=4u32 {
            r.add(p);
        }
        let root = H256([1; 32]);
        assert_eq!(
            r.forward_to(&root, Some(&2), 0, (0, 0), |_| false),
            vec![1, 3, 4]
        );
        r.on_done(&3, root);
        assert_eq!(
            r.forward_to(&root, Some(&2), 0, (0, 0), |_| false),
            vec![1, 4]
        );
        assert_eq!(
            r.forward_to(&H256([2; 32]), None, 0, (0, 0), |_| false),
            vec![1, 2, 3, 4]
        );
        r.remove(&1);
        assert_eq!(r.forward_to(&root, None, 0, (0, 0), |_| false), vec![2, 4]);
        // Neighbours known to have the chunk are skipped.
        assert_eq!(r.forward_to(&root, None, 0, (0, 0), |p| *p == 2), vec![4]);
        // Done from a non-neighbour is not tracked; the per-peer memory is bounded.
        r.on_done(&9, root);
        for i in 0..1000u32 {
            let mut h = [0u8; 32];
            h[..4].copy_from_slice(&i.to_le_bytes());
            r.on_done(&2, H256(h));
        }
        assert!(r.tracked() <= 2 * DONE_PER_PEER);
    }

    #[test]
    fn the_push_budget_caps_chunks_per_block_and_neighbour() {
        let mut r = Relay::default();
        for p in 1..=3u32 {
            r.add(p);
        }
        let (a, b) = (H256([1; 32]), H256([2; 32]));
        assert_eq!(r.forward_to(&a, Some(&1), 0, (0, 2), |_| false), vec![2, 3]);
        assert_eq!(r.forward_to(&a, Some(&2), 1, (0, 2), |_| false), vec![1, 3]);
        // 3 has had its two chunks of `a`; 1 and 2 one each.
        assert_eq!(r.forward_to(&a, None, 2, (0, 2), |_| false), vec![1, 2]);
        assert!(r.forward_to(&a, None, 3, (0, 2), |_| false).is_empty());
        // Another block has its own budget; no budget means no limit.
        assert_eq!(r.forward_to(&b, None, 0, (0, 2), |_| false), vec![1, 2, 3]);
        assert_eq!(r.forward_to(&a, None, 4, (0, 0), |_| false), vec![1, 2, 3]);
        // A neighbour that has the chunk is not charged for it.
        assert_eq!(r.forward_to(&b, None, 1, (0, 2), |p| *p == 1), vec![2, 3]);
        assert_eq!(r.forward_to(&b, None, 2, (0, 2), |_| false), vec![1]);
    }

    #[test]
    fn peer_has_tracks_chunks_and_whole_blocks_within_its_bound() {
        let mut h = PeerHas::default();
        let (a, b) = (H256([1; 32]), H256([2; 32]));
        h.mark(a, 3);
        h.mark(a, 200);
        assert!(h.has(&a, 3) && h.has(&a, 200));
        assert!(!h.has(&a, 4) && !h.has(&a, 199) && !h.has(&b, 3));
        assert!(h.enough(&a, 2) && !h.enough(&a, 3) && !h.enough(&b, 1));
        h.mark_all(b);
        assert!(h.has(&b, 0) && h.has(&b, 1023) && h.enough(&b, 1000));
        // A chunk after Done changes nothing.
        h.mark(b, 5);
        assert!(h.has(&b, 6));
        for i in 0..1000u32 {
            let mut r = [0u8; 32];
            r[..4].copy_from_slice(&i.to_le_bytes());
            h.mark(H256(r), 1);
        }
        assert_eq!(h.roots(), HAS_ROOTS);
        assert!(!h.has(&a, 3), "the oldest roots are forgotten first");
    }

    #[test]
    fn a_fanout_spreads_consecutive_chunks_over_all_neighbours() {
        let mut r = Relay::default();
        for p in 1..=6u32 {
            r.add(p);
        }
        let root = H256([1; 32]);
        let mut seen = std::collections::BTreeMap::new();
        for i in 0..10 {
            let t = r.forward_to(&root, Some(&6), i, (2, 0), |_| false);
            assert_eq!(t.len(), 2);
            assert!(!t.contains(&6) && t[0] != t[1], "{t:?}");
            for p in t {
                *seen.entry(p).or_insert(0) += 1;
            }
        }
        // 20 sends over the 5 eligible neighbours: 4 each.
        assert_eq!(seen.into_values().collect::<Vec<_>>(), vec![4; 5]);
        // A fanout at or above the eligible count is everyone.
        assert_eq!(r.forward_to(&root, Some(&6), 3, (5, 0), |_| false).len(), 5);
    }
}
