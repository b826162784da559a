//! Request manager: which stream carries each sync request. Sans-IO: the driver submits requests and
//! reports outcomes with the current time; the manager emits [`ReqAction`]s.
//!
//! - several requests in flight per stream (bounded), chosen by load × latency EWMA × failure score;
//! - per-request timeout; a failed attempt is retried on a stream not tried yet;
//! - failure scores decay exponentially (half-life), and a stream whose score crosses a threshold is
//!   reported for penalty;
//! - `RateLimited { retry_after }` pauses the stream, the request goes back to the queue head;
//! - client-side pacing with the server's advertised limits (token bucket). Hand-rolled rather than
//!   governor because it must run on the injected clock to keep this core deterministic;
//! - the queue is bounded, and a request that waits too long fails instead of waiting forever.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

use crate::error::{FieldError, check};
use serde::{Deserialize, Serialize};

pub use crate::wire::ReqId;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RequestConfig {
    pub max_in_flight_per_stream: usize,
    #[serde(with = "crate::util::millis")]
    pub timeout: Duration,
    pub max_attempts: u32,
    pub max_queued: usize,
    /// A request still queued after this fails with `QueueTimeout`.
    #[serde(with = "crate::util::millis")]
    pub max_queue_wait: Duration,
    #[serde(with = "crate::util::millis")]
    pub failure_half_life: Duration,
    /// Failure score at which a stream is reported for penalty.
    pub penalty_threshold: f64,
}

impl Default for RequestConfig {
    fn default() -> Self {
        RequestConfig {
            max_in_flight_per_stream: 4,
            timeout: Duration::from_secs(10),
            max_attempts: 4,
            max_queued: 1024,
            max_queue_wait: Duration::from_secs(60),
            failure_half_life: Duration::from_secs(60),
            penalty_threshold: 5.0,
        }
    }
}

impl RequestConfig {
    pub fn validate(&self) -> Result<(), FieldError> {
        check(
            self.max_in_flight_per_stream < 2,
            "max_in_flight_per_stream",
            "must be >= 2",
        )?;
        for (name, d) in [
            ("timeout", self.timeout),
            ("max_queue_wait", self.max_queue_wait),
            ("failure_half_life", self.failure_half_life),
        ] {
            check(d.is_zero(), name, "must be > 0")?;
        }
        check(self.max_attempts == 0, "max_attempts", "must be > 0")?;
        check(self.max_queued == 0, "max_queued", "must be > 0")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailKind {
    Timeout,
    /// Stream error, reset, undecodable reply.
    Transport,
    /// The peer answered with something that does not verify.
    Invalid,
    /// Explicit error reply (NotFound, TooLarge, Shutdown, ...).
    Refused,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GiveUp {
    /// Every attempt failed.
    Exhausted,
    /// Waited in the queue longer than `max_queue_wait` (no usable stream).
    QueueTimeout,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ReqAction<P, R> {
    Send {
        id: ReqId,
        peer: P,
        req: R,
    },
    /// An attempt was abandoned (timeout): the driver drops any late reply to it.
    Abandon {
        id: ReqId,
        peer: P,
        req: R,
    },
    Failed {
        id: ReqId,
        req: R,
        why: GiveUp,
    },
    /// The stream's failure score crossed the threshold.
    Penalise(P),
}

#[derive(Debug)]
struct Stream {
    in_flight: usize,
    latency_ewma: f64,
    failure: f64,
    failure_at: Instant,
    paused_until: Option<Instant>,
    bucket: Option<Bucket>,
}

/// Token bucket on the injected clock.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.at = now;
    }

    /// When `cost` (capped at the burst) will be available.
    fn ready_at(&self, cost: f64) -> Instant {
        let need = cost.min(self.burst) - self.tokens;
        if need <= 0.0 {
            self.at
        } else {
            self.at + Duration::from_secs_f64(need / self.rate)
        }
    }
}

#[derive(Debug)]
struct Queued<P, R> {
    id: ReqId,
    req: R,
    cost: u32,
    attempts: u32,
    tried: Vec<P>,
    only: Option<Vec<P>>,
    since: Instant,
}

#[derive(Debug)]
struct InFlight<P, R> {
    q: Queued<P, R>,
    peer: P,
    sent: Instant,
    deadline: Instant,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("request queue is full ({0} queued)")]
pub struct QueueFull(pub usize);

pub struct RequestManager<P, R> {
    cfg: RequestConfig,
    streams: HashMap<P, Stream>,
    queue: VecDeque<Queued<P, R>>,
    in_flight: HashMap<ReqId, InFlight<P, R>>,
    next_id: ReqId,
    actions: VecDeque<ReqAction<P, R>>,
    /// The time of the last [`RequestManager::tick`]: everything due by then has been acted on.
    ticked_at: Option<Instant>,
}

/// Latency assumed for a stream before its first reply.
const INITIAL_LATENCY_S: f64 = 0.05;
const EWMA_ALPHA: f64 = 0.2;

impl<P: Clone + Eq + Hash + std::fmt::Debug, R: Clone> RequestManager<P, R> {
    pub fn new(cfg: RequestConfig) -> Self {
        RequestManager {
            cfg,
            streams: HashMap::new(),
            queue: VecDeque::new(),
            in_flight: HashMap::new(),
            next_id: ReqId::FIRST_MANAGED,
            actions: VecDeque::new(),
            ticked_at: None,
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// Latency estimate of a stream, if known.
    pub fn latency(&self, p: &P) -> Option<Duration> {
        self.streams
            .get(p)
            .map(|s| Duration::from_secs_f64(s.latency_ewma))
    }

    pub fn failure_score(&self, p: &P, now: Instant) -> Option<f64> {
        let half = self.cfg.failure_half_life;
        self.streams.get(p).map(|s| decayed(s, now, half))
    }

    pub fn poll_action(&mut self) -> Option<ReqAction<P, R>> {
        self.actions.pop_front()
    }

    /// Adds a stream; `pace` = (cost per second, burst) advertised by the server, if any.
    pub fn add_stream(&mut self, p: P, pace: Option<(u32, u32)>, now: Instant) {
        let bucket = pace.filter(|(r, b)| *r > 0 && *b > 0).map(|(r, b)| Bucket {
            rate: r as f64,
            burst: b as f64,
            tokens: b as f64,
            at: now,
        });
        self.streams.entry(p).or_insert(Stream {
            in_flight: 0,
            latency_ewma: INITIAL_LATENCY_S,
            failure: 0.0,
            failure_at: now,
            paused_until: None,
            bucket,
        });
        self.dispatch(now);
    }

    /// Removes a stream; its in-flight requests are retried elsewhere.
    pub fn remove_stream(&mut self, p: &P, now: Instant) {
        if self.streams.remove(p).is_none() {
            return;
        }
        let ids: Vec<ReqId> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.peer == *p)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let f = self.in_flight.remove(&id).expect("listed");
            self.retry(f.q, now);
        }
        self.dispatch(now);
    }

    /// Queues a request of the given cost, optionally restricted to some streams.
    pub fn submit(
        &mut self,
        req: R,
        cost: u32,
        only: Option<Vec<P>>,
        now: Instant,
    ) -> Result<ReqId, QueueFull> {
        if self.queue.len() >= self.cfg.max_queued {
            return Err(QueueFull(self.queue.len()));
        }
        let id = self.next_id;
        self.next_id = id.next();
        self.queue.push_back(Queued {
            id,
            req,
            cost,
            attempts: 0,
            tried: vec![],
            only,
            since: now,
        });
        self.dispatch(now);
        Ok(id)
    }

    /// A reply arrived. Returns the stream it came from and the attempt's latency, or None for an
    /// unknown (cancelled, abandoned) id, whose reply the driver must drop.
    pub fn on_success(&mut self, id: ReqId, from: &P, now: Instant) -> Option<(P, Duration)> {
        let f = self.take(id, from)?;
        let latency = now.saturating_duration_since(f.sent);
        if let Some(s) = self.streams.get_mut(&f.peer) {
            s.in_flight -= 1;
            s.latency_ewma =
                (1.0 - EWMA_ALPHA) * s.latency_ewma + EWMA_ALPHA * latency.as_secs_f64();
        }
        self.dispatch(now);
        Some((f.peer, latency))
    }

    /// The attempt failed; retried on another stream or given up.
    pub fn on_failure(&mut self, id: ReqId, from: &P, kind: FailKind, now: Instant) {
        let Some(f) = self.take(id, from) else {
            return;
        };
        self.penalise(&f.peer, kind, now);
        if let Some(s) = self.streams.get_mut(&f.peer) {
            s.in_flight -= 1;
        }
        self.retry(f.q, now);
        self.dispatch(now);
    }

    /// The server said "not now": pause that stream and put the request back at the head.
    pub fn on_rate_limited(&mut self, id: ReqId, from: &P, retry_after: Duration, now: Instant) {
        let Some(f) = self.take(id, from) else {
            return;
        };
        if let Some(s) = self.streams.get_mut(&f.peer) {
            s.in_flight -= 1;
            let until = now + retry_after;
            s.paused_until = Some(s.paused_until.map_or(until, |u| u.max(until)));
        }
        self.queue.push_front(f.q);
        self.dispatch(now);
    }

    /// The request of the in-flight attempt `id`, if it is on `from`: what a reply from `from`
    /// answers.
    pub fn request(&self, id: ReqId, from: &P) -> Option<&R> {
        self.in_flight
            .get(&id)
            .filter(|f| f.peer == *from)
            .map(|f| &f.q.req)
    }

    /// The in-flight attempt `id` if it is on `from` (a reply from an abandoned attempt is not).
    fn take(&mut self, id: ReqId, from: &P) -> Option<InFlight<P, R>> {
        if self.in_flight.get(&id)?.peer != *from {
            return None;
        }
        self.in_flight.remove(&id)
    }

    /// Forget a request (queued or in flight). Its reply, if any, will be unknown.
    pub fn cancel(&mut self, id: ReqId, now: Instant) {
        if let Some(f) = self.in_flight.remove(&id) {
            if let Some(s) = self.streams.get_mut(&f.peer) {
                s.in_flight -= 1;
            }
        } else {
            self.queue.retain(|q| q.id != id);
        }
        self.dispatch(now);
    }

    pub fn tick(&mut self, now: Instant) {
        self.ticked_at = Some(self.ticked_at.map_or(now, |t| t.max(now)));
        let expired: Vec<ReqId> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            let f = &self.in_flight[&id];
            let (peer, req) = (f.peer.clone(), f.q.req.clone());
            self.actions.push_back(ReqAction::Abandon {
                id,
                peer: peer.clone(),
                req,
            });
            self.on_failure(id, &peer, FailKind::Timeout, now);
        }
        let wait = self.cfg.max_queue_wait;
        while let Some(pos) = self
            .queue
            .iter()
            .position(|q| now.saturating_duration_since(q.since) >= wait)
        {
            let q = self.queue.remove(pos).expect("found");
            self.actions.push_back(ReqAction::Failed {
                id: q.id,
                req: q.req,
                why: GiveUp::QueueTimeout,
            });
        }
        self.dispatch(now);
    }

    /// The next instant at which [`RequestManager::tick`] may change something. Only deadlines
    /// after the last tick count: a paced stream's bucket is "ready" at its last refill and a
    /// pause may have ended while the stream is at its in-flight limit; offering such a past
    /// instant woke the driver at once, again and again, until a reply came.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let after = self.ticked_at;
        let mut consider = |x: Instant| {
            if after.is_none_or(|a| x > a) {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        for f in self.in_flight.values() {
            consider(f.deadline);
        }
        if let Some(q) = self.queue.front() {
            consider(q.since + self.cfg.max_queue_wait);
            for s in self.streams.values() {
                if let Some(u) = s.paused_until {
                    consider(u);
                }
                if let Some(b) = &s.bucket {
                    consider(b.ready_at(q.cost as f64));
                }
            }
        }
        t
    }

    fn penalise(&mut self, p: &P, kind: FailKind, now: Instant) {
        let weight = match kind {
            FailKind::Invalid => 3.0,
            FailKind::Timeout | FailKind::Transport => 1.0,
            FailKind::Refused => 0.5,
        };
        let half = self.cfg.failure_half_life;
        let threshold = self.cfg.penalty_threshold;
        if let Some(s) = self.streams.get_mut(p) {
            let before = decayed(s, now, half);
            s.failure = before + weight;
            s.failure_at = now;
            if before < threshold && s.failure >= threshold {
                self.actions.push_back(ReqAction::Penalise(p.clone()));
            }
        }
    }

    fn retry(&mut self, q: Queued<P, R>, _now: Instant) {
        if q.attempts >= self.cfg.max_attempts {
            self.actions.push_back(ReqAction::Failed {
                id: q.id,
                req: q.req,
                why: GiveUp::Exhausted,
            });
        } else {
            self.queue.push_front(q);
        }
    }

    /// Picks a stream for `q`: allowed, not paused, below the in-flight limit, paced; prefers
    /// streams not tried yet for this request; lowest (load+1) × latency × (1+failures) wins.
    fn choose(&self, q: &Queued<P, R>, now: Instant) -> Option<P> {
        let half = self.cfg.failure_half_life;
        let usable = |p: &P, s: &Stream| {
            q.only.as_ref().is_none_or(|o| o.contains(p))
                && s.in_flight < self.cfg.max_in_flight_per_stream
                && s.paused_until.is_none_or(|u| u <= now)
                && s.bucket.is_none_or(|b| {
                    let mut b = b;
                    b.refill(now);
                    b.ready_at(q.cost as f64) <= now
                })
        };
        let score = |s: &Stream| {
            (s.in_flight as f64 + 1.0) * s.latency_ewma.max(1e-4) * (1.0 + decayed(s, now, half))
        };
        let pick = |fresh_only: bool| {
            self.streams
                .iter()
                .filter(|(p, s)| usable(p, s) && (!fresh_only || !q.tried.contains(p)))
                .min_by(|a, b| score(a.1).total_cmp(&score(b.1)))
                .map(|(p, _)| p.clone())
        };
        pick(true).or_else(|| pick(false))
    }

    fn dispatch(&mut self, now: Instant) {
        // Requests that cannot go anywhere now stay queued in order; later ones may still go.
        let mut waiting = VecDeque::new();
        while let Some(mut q) = self.queue.pop_front() {
            let Some(p) = self.choose(&q, now) else {
                waiting.push_back(q);
                continue;
            };
            let s = self.streams.get_mut(&p).expect("chosen from streams");
            s.in_flight += 1;
            s.paused_until = None;
            if let Some(b) = &mut s.bucket {
                b.refill(now);
                b.tokens -= (q.cost as f64).min(b.burst);
            }
            q.attempts += 1;
            q.tried.push(p.clone());
            self.actions.push_back(ReqAction::Send {
                id: q.id,
                peer: p.clone(),
                req: q.req.clone(),
            });
            self.in_flight.insert(
                q.id,
                InFlight {
                    q,
                    peer: p,
                    sent: now,
                    deadline: now + self.cfg.timeout,
                },
            );
        }
        self.queue = waiting;
    }
}

fn decayed(s: &Stream, now: Instant, half_life: Duration) -> f64 {
    let dt = now.saturating_duration_since(s.failure_at).as_secs_f64();
    s.failure * 0.5f64.powf(dt / half_life.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    type RM = RequestManager<u32, &'static str>;

    fn cfg() -> RequestConfig {
        RequestConfig {
            max_in_flight_per_stream: 2,
            timeout: Duration::from_secs(5),
            max_attempts: 3,
            max_queued: 8,
            max_queue_wait: Duration::from_secs(30),
            failure_half_life: Duration::from_secs(10),
            penalty_threshold: 3.0,
        }
    }

    fn sends(m: &mut RM) -> Vec<(ReqId, u32)> {
        let mut out = vec![];
        while let Some(a) = m.poll_action() {
            if let ReqAction::Send { id, peer, .. } = a {
                out.push((id, peer));
            }
        }
        out
    }

    /// A queued request that waits for a stream at its in-flight limit must not make the
    /// driver spin: a paced stream's bucket is "ready" at its last refill, a time in the past, and
    /// `poll_timeout` used to offer it, so the driver woke at once until a reply came.
    #[test]
    fn a_queue_waiting_for_a_full_stream_does_not_wake_the_driver_in_a_loop() {
        let t = Instant::now();
        let mut m = RM::new(cfg());
        m.add_stream(1, Some((100, 10)), t);
        for _ in 0..3 {
            m.submit("r", 1, None, t).unwrap();
        }
        assert_eq!(sends(&mut m).len(), 2);
        assert_eq!(m.queued(), 1);
        m.tick(t);
        // Like the driver: sleep until the deadline (a past one wakes at once), then tick.
        let (mut now, mut wakeups) = (t, 0);
        while let Some(d) = m.poll_timeout() {
            if d >= t + Duration::from_secs(4) || wakeups == 10_000 {
                break;
            }
            now = now.max(d);
            m.tick(now);
            wakeups += 1;
        }
        assert!(
            wakeups <= 2,
            "{wakeups} wakeups before the first deadline that matters"
        );
        // What is due still wakes it: the in-flight timeout (5 s).
        assert_eq!(m.poll_timeout(), Some(t + Duration::from_secs(5)));
    }

    #[test]
    fn several_in_flight_per_stream_then_queue() {
        let t = Instant::now();
        let mut m = RM::new(cfg());
        m.add_stream(1, None, t);
        for _ in 0..3 {
            m.submit("r", 1, None, t).unwrap();
        }
        let s = sends(&mut m);
        assert_eq!(s.len(), 2, "two in flight on one stream");
        assert_eq!(m.queued(), 1);
        m.on_success(s[0].0, &1, t + Duration::from_millis(10));
        assert_eq!(sends(&mut m).len(), 1);
    }

    #[test]
    fn load_and_latency_pick_the_stream() {
        let t = Instant::now();
        let mut m = RM::new(cfg());
        m.add_stream(1, None, t);
        m.add_stream(2, None, t);
        // Teach the manager that 2 is slow.
        for _ in 0..10 {
            let id = m.submit("r", 1, Some(vec![2]), t).unwrap();
            sends(&mut m);
            m.on_success(id, &2, t + Duration::from_millis(500));
            let id = m.submit("r", 1, Some(vec![1]), t).unwrap();
            sends(&mut m);
            m.on_success(id, &1, t + Duration::from_millis(5));
        }
        m.submit("a", 1, None, t).unwrap();
        m.submit("b", 1, None, t).unwrap();
        m.submit("c", 1, None, t).unwrap();
        let peers: Vec<u32> = sends(&mut m).into_iter().map(|(_, p)| p).collect();
        // Fast stream first, twice (its limit); the third goes to the slow one rather than wait.
        assert_eq!(peers, vec![1, 1, 2]);
    }

    #[test]
    fn timeout_retries_on_another_stream_and_abandons_the_first() {
        let t = Instant::now();
        let mut m = RM::new(cfg());
        m.add_stream(1, None, t);
        let id = m.submit("r", 1, None, t).unwrap();
        assert_eq!(sends(&mut m), vec![(id, 1)]);
        m.add_stream(2, None, t);
        assert_eq!(m.poll_timeout(), Some(t + Duration::from_secs(5)));
        m.tick(t + Duration::from_secs(5));
        let acts: Vec<_> = std::iter::from_fn(|| m.poll_action()).collect();
        assert!(acts.contains(&ReqAction::Abandon {
            id,
            peer: 1,
            req: "r"
        }));
        assert!(
            acts.contains(&ReqAction::Send {
                id,
                peer: 2,
                req: "r"
            }),
            "{acts:?}"
        );
        // A late reply from the abandoned attempt is not taken for the retry's.
        assert!(m.on_success(id, &1, t + Duration::from_secs(6)).is_none());
        assert!(m.on_success(id, &2, t + Duration::from_secs(6)).is_some());
    }

    #[test]
    fn attempts_are_bounded() {
        let t = Instant::now();
        let mut m = RM::new(cfg());
        m.add_stream(1, None, t);
        let id = m.submit("r", 1, None, t).unwrap();
        for _ in 0..3 {
            sends(&mut m);
            m.on_failure(id, &1, FailKind::Transport, t);
        }
        let acts: Vec<_> = std::iter::from_fn(|| m.poll_action()).collect();
        assert!(
            acts.contains(&ReqAction::Failed {
                id,
                req: "r",
                why: GiveUp::Exhausted
            }),
            "{acts:?}"
        );
        assert_eq!(m.in_flight() + m.queued(), 0);
    }

    #[test]
    fn failure_score_decays_and_penalises_once() {
        let t = Instant::now();
        let mut m = RM::new(cfg());
        m.add_stream(1, None, t);
        let id = m.submit("r", 1, None, t).unwrap();
        sends(&mut m);
        m.on_failure(id, &1, FailKind::Invalid, t); // +3 → crosses 3.0
        let acts: Vec<_> = std::iter::from_fn(|| m.poll_action()).collect();
        assert_eq!(
            acts.iter()
                .filter(|a| **a == ReqAction::Penalise(1))
                .count(),
            1
        );
        let s0 = m.failure_score(&1, t).unwrap();
        let s1 = m.failure_score(&1, t + Duration::from_secs(10)).unwrap();
        assert!(
            (s0 - 3.0).abs() < 1e-9 && (s1 - 1.5).abs() < 1e-9,
            "{s0} {s1}"
        );
    }

    #[test]
    fn rate_limited_pauses_the_stream_and_requeues() {
        let t = Instant::now();
        let mut m = RM::new(cfg());
        m.add_stream(1, None, t);
        let id = m.submit("r", 1, None, t).unwrap();
        sends(&mut m);
        m.on_rate_limited(id, &1, Duration::from_millis(300), t);
        assert!(sends(&mut m).is_empty());
        assert_eq!(m.poll_timeout(), Some(t + Duration::from_millis(300)));
        m.tick(t + Duration::from_millis(299));
        assert!(sends(&mut m).is_empty());
        m.tick(t + Duration::from_millis(300));
        assert_eq!(sends(&mut m), vec![(id, 1)]);
        assert_eq!(
            m.failure_score(&1, t),
            Some(0.0),
            "rate limiting is not a failure"
        );
    }

    #[test]
    fn client_paces_to_the_servers_advertised_rate() {
        let t = Instant::now();
        let mut c = cfg();
        c.max_in_flight_per_stream = 100;
        c.max_queued = 100;
        let mut m = RM::new(c);
        m.add_stream(1, Some((100, 20)), t); // 100 units/s, burst 20
        for _ in 0..10 {
            m.submit("r", 10, None, t).unwrap();
        }
        assert_eq!(sends(&mut m).len(), 2, "burst allows two");
        let mut sent = 2;
        let mut now = t;
        while let Some(next) = m.poll_timeout() {
            if sent == 10 {
                break;
            }
            now = next;
            m.tick(now);
            sent += sends(&mut m).len();
        }
        // 8 more × 10 units at 100/s = 0.8 s.
        let took = now - t;
        assert!(
            took >= Duration::from_millis(790) && took <= Duration::from_millis(810),
            "{took:?}"
        );
    }

    #[test]
    fn queue_is_bounded_and_stale_requests_fail() {
        let t = Instant::now();
        let mut m = RM::new(cfg());
        for _ in 0..8 {
            m.submit("r", 1, None, t).unwrap();
        }
        assert_eq!(m.submit("r", 1, None, t), Err(QueueFull(8)));
        m.tick(t + Duration::from_secs(30));
        let failed = std::iter::from_fn(|| m.poll_action())
            .filter(|a| {
                matches!(
                    a,
                    ReqAction::Failed {
                        why: GiveUp::QueueTimeout,
                        ..
                    }
                )
            })
            .count();
        assert_eq!(failed, 8);
    }

    #[test]
    fn removed_stream_requests_move_elsewhere_and_cancel_works() {
        let t = Instant::now();
        let mut m = RM::new(cfg());
        m.add_stream(1, None, t);
        let a = m.submit("a", 1, None, t).unwrap();
        let b = m.submit("b", 1, None, t).unwrap();
        sends(&mut m);
        m.add_stream(2, None, t);
        m.remove_stream(&1, t);
        let s = sends(&mut m);
        assert_eq!(s.len(), 2);
        assert!(s.iter().all(|(_, p)| *p == 2));
        m.cancel(a, t);
        assert!(m.on_success(a, &2, t).is_none());
        assert!(m.on_success(b, &2, t).is_some());
    }
}
