//! Throttled logs: at most `BURST` INFO/WARN events per call site per `WINDOW`; the rest are
//! dropped and counted (`syncnet_log_events_suppressed_total`). One burst of dropped streams once
//! wrote 216 identical yamux warnings; a hostile peer could fill a disk that way. ERROR is never
//! throttled, and DEBUG/TRACE are left alone (whoever enables them asked for volume).
//!
//! A `tracing_subscriber` per-layer filter rather than a crate: the maintained rate-limiting
//! layers throttle the whole subscriber, not per call site. The table is bounded by the number of
//! call sites in the binary (they are static).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracing::callsite::Identifier;
use tracing::{Level, Metadata};

pub const WINDOW: Duration = Duration::from_secs(10);
pub const BURST: u32 = 10;

/// Events dropped by the throttle since start.
pub static SUPPRESSED: AtomicU64 = AtomicU64::new(0);

#[derive(Default)]
pub struct Throttle {
    sites: Mutex<HashMap<Identifier, (Instant, u32)>>,
}

impl Throttle {
    /// Whether an event at `meta`'s call site may be written now.
    pub fn allow(&self, meta: &Metadata<'_>, now: Instant) -> bool {
        let level = *meta.level();
        if !(level == Level::WARN || level == Level::INFO) || !meta.is_event() {
            return true;
        }
        let mut sites = self.sites.lock().expect("not poisoned");
        let (start, n) = sites.entry(meta.callsite()).or_insert((now, 0));
        if now.saturating_duration_since(*start) >= WINDOW {
            (*start, *n) = (now, 0);
        }
        *n += 1;
        if *n > BURST {
            SUPPRESSED.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// The filter for a `tracing_subscriber` layer.
    pub fn filter() -> tracing_subscriber::filter::FilterFn<impl Fn(&Metadata<'_>) -> bool> {
        let t = Throttle::default();
        tracing_subscriber::filter::filter_fn(move |meta| t.allow(meta, Instant::now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(site: &'static Site, level: Level) -> Metadata<'static> {
        Metadata::new(
            "event",
            "test",
            level,
            None,
            None,
            None,
            tracing::field::FieldSet::new(&[], tracing::callsite::Identifier(site)),
            tracing::metadata::Kind::EVENT,
        )
    }

    #[test]
    fn a_burst_per_call_site_then_silence_until_the_window_ends() {
        let t = Throttle::default();
        let t0 = Instant::now();
        // Two call sites: each has its own budget.
        let (mut a, mut b) = (0, 0);
        for i in 0..100u64 {
            let now = t0 + Duration::from_millis(i);
            a += usize::from(t.allow(&meta(&SITE_A, Level::WARN), now));
            b += usize::from(t.allow(&meta(&SITE_B, Level::WARN), now));
        }
        assert_eq!((a, b), (BURST as usize, BURST as usize));
        let later = t0 + WINDOW + Duration::from_millis(100);
        assert!(t.allow(&meta(&SITE_A, Level::WARN), later));
        // ERROR and DEBUG are never throttled.
        for level in [Level::ERROR, Level::DEBUG] {
            assert!((0..100).all(|_| t.allow(&meta(&SITE_B, level), later)));
        }
    }

    /// Not zero-sized: call sites are told apart by address.
    struct Site(#[allow(dead_code)] u8);
    impl tracing::Callsite for Site {
        fn set_interest(&self, _: tracing::subscriber::Interest) {}
        fn metadata(&self) -> &tracing::Metadata<'_> {
            unimplemented!("not registered")
        }
    }
    static SITE_A: Site = Site(1);
    static SITE_B: Site = Site(2);
}
