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
}

impl<P: Ord + Clone + Hash> Default for Relay<P> {
    fn default() -> Self {
        Relay {
            neighbours: BTreeSet::new(),
            done: HashMap::new(),
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

    /// Where a new valid chunk of `root` received from `from` goes next.
    pub fn forward_to(&self, root: &H256, from: Option<&P>) -> Vec<P> {
        self.neighbours
            .iter()
            .filter(|p| Some(*p) != from && self.wants(p, root))
            .cloned()
            .collect()
    }

    pub fn tracked(&self) -> usize {
        self.done.values().map(|d| d.set.len()).sum()
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
        assert_eq!(r.forward_to(&root, Some(&2)), vec![1, 3, 4]);
        r.on_done(&3, root);
        assert_eq!(r.forward_to(&root, Some(&2)), vec![1, 4]);
        assert_eq!(r.forward_to(&H256([2; 32]), None), vec![1, 2, 3, 4]);
        r.remove(&1);
        assert_eq!(r.forward_to(&root, None), vec![2, 4]);
        // Done from a non-neighbour is not tracked; the per-peer memory is bounded.
        r.on_done(&9, root);
        for i in 0..1000u32 {
            let mut h = [0u8; 32];
            h[..4].copy_from_slice(&i.to_le_bytes());
            r.on_done(&2, H256(h));
        }
        assert!(r.tracked() <= 2 * DONE_PER_PEER);
    }
}
