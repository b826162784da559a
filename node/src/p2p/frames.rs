//! Reply frame buffers, reused. A blocks reply is up to `max_bytes_per_response` (8 MiB): an
//! allocation that size comes straight from mmap, so each fresh one paid page faults and kernel
//! page zeroing for memory freed again a moment later. Written frames come back here and the next
//! reply is read into one. The pool holds at most `cap_bytes` of capacity (idle memory the node
//! keeps on purpose, shown by `syncnet_p2p_frame_pool_bytes`); buffers too small to matter or
//! larger than the largest frame are not kept.
//!
//! Hand-rolled: the buffer-pool crates on crates.io (object pools, `bytes`-based slabs) cap items,
//! not bytes, and none returns a `Vec<u8>` that tokio can write from without another copy.

use std::sync::Mutex;

use prometheus_client::metrics::gauge::Gauge;

use crate::metrics::FrameSource as Source;

/// Buffers below this are cheap to allocate (malloc's arenas, not mmap): not worth keeping.
pub const MIN_KEPT: usize = 256 * 1024;

pub struct FramePool {
    idle: Mutex<Idle>,
    cap_bytes: usize,
    max_buffer: usize,
    /// Idle bytes, kept current under the lock.
    gauge: Gauge,
}

#[derive(Default)]
struct Idle {
    bufs: Vec<Vec<u8>>,
    bytes: usize,
}

impl FramePool {
    /// `cap_bytes`: idle capacity kept in all; `max_buffer`: the largest buffer kept (a frame
    /// of the largest allowed size, with its head).
    pub fn new(cap_bytes: usize, max_buffer: usize, gauge: Gauge) -> FramePool {
        FramePool {
            idle: Mutex::new(Idle::default()),
            cap_bytes,
            max_buffer,
            gauge,
        }
    }

    /// An empty buffer with room for `len` bytes: the smallest idle one that fits, else the
    /// largest idle one (grown), else a new one.
    pub fn take(&self, len: usize) -> (Vec<u8>, Source) {
        let mut idle = self.idle.lock().expect("not poisoned");
        let fit = (idle.bufs.iter().enumerate())
            .filter(|(_, b)| b.capacity() >= len)
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        let pick = fit.or_else(|| {
            (idle.bufs.iter().enumerate())
                .max_by_key(|(_, b)| b.capacity())
                .map(|(i, _)| i)
        });
        let Some(i) = pick else {
            return (Vec::with_capacity(len), Source::Fresh);
        };
        let mut buf = idle.bufs.swap_remove(i);
        idle.bytes -= buf.capacity();
        self.gauge.set(idle.bytes as i64);
        drop(idle);
        buf.reserve(len);
        (buf, Source::Reused)
    }

    /// Returns a written frame. Kept if its size is worth keeping and the pool has room.
    pub fn give(&self, mut buf: Vec<u8>) {
        let cap = buf.capacity();
        if !(MIN_KEPT..=self.max_buffer).contains(&cap) {
            return;
        }
        buf.clear();
        let mut idle = self.idle.lock().expect("not poisoned");
        if idle.bytes + cap <= self.cap_bytes {
            idle.bytes += cap;
            idle.bufs.push(buf);
            self.gauge.set(idle.bytes as i64);
        }
    }

    /// Idle capacity held now, in bytes.
    #[cfg(test)]
    fn idle_bytes(&self) -> usize {
        self.idle.lock().expect("not poisoned").bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    #[test]
    fn a_given_buffer_is_taken_again_empty_with_its_capacity() {
        let pool = FramePool::new(16 * MIB, 9 * MIB, Gauge::default());
        let (mut b, src) = pool.take(4 * MIB);
        assert_eq!(src, Source::Fresh);
        b.extend_from_slice(&[7; 1000]);
        let cap = b.capacity();
        pool.give(b);
        assert_eq!(pool.idle_bytes(), cap);
        assert_eq!(pool.gauge.get(), cap as i64);
        let (b, src) = pool.take(MIB);
        assert_eq!(src, Source::Reused);
        assert!(b.is_empty());
        assert_eq!(b.capacity(), cap);
        assert_eq!(pool.idle_bytes(), 0);
        assert_eq!(pool.gauge.get(), 0);
    }

    #[test]
    fn idle_capacity_never_passes_the_cap() {
        let pool = FramePool::new(10 * MIB, 9 * MIB, Gauge::default());
        for _ in 0..5 {
            pool.give(Vec::with_capacity(4 * MIB));
        }
        // Two of 4 MiB fit under 10 MiB; the third would not.
        assert_eq!(pool.idle_bytes(), 8 * MIB);
    }

    #[test]
    fn tiny_and_oversize_buffers_are_not_kept() {
        let pool = FramePool::new(64 * MIB, 9 * MIB, Gauge::default());
        pool.give(Vec::with_capacity(MIN_KEPT - 1));
        pool.give(Vec::with_capacity(9 * MIB + 1));
        assert_eq!(pool.idle_bytes(), 0);
        pool.give(Vec::with_capacity(MIN_KEPT));
        assert_eq!(pool.idle_bytes(), MIN_KEPT);
    }

    #[test]
    fn take_prefers_the_smallest_buffer_that_fits() {
        let pool = FramePool::new(64 * MIB, 9 * MIB, Gauge::default());
        pool.give(Vec::with_capacity(8 * MIB));
        pool.give(Vec::with_capacity(MIB));
        pool.give(Vec::with_capacity(2 * MIB));
        let (b, _) = pool.take(MIB + 1);
        assert_eq!(b.capacity(), 2 * MIB);
        // Nothing fits 9 MiB: the largest is grown rather than a third allocation made.
        let (b, src) = pool.take(9 * MIB);
        assert_eq!(src, Source::Reused);
        assert!(b.capacity() >= 9 * MIB);
        assert_eq!(pool.idle_bytes(), MIB);
    }
}
