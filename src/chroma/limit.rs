//! The client's share of the service's limits: every call through one [`ChromaClient`]
//! (and its clones) goes through one [`Limiter`]:
//!
//! - a token bucket (`calls_per_second`, `burst`; none: unlimited until a 429 teaches otherwise),
//! - at most `in_flight` calls sent at once (a semaphore),
//! - a shared pause: a 429 pauses every caller until its `Retry-After` has passed
//!   ([`DEFAULT_PAUSE`] without one), and the rate adapts (AIMD): down by [`DECREASE`] on a 429
//!   (once per episode: answers to calls sent before the last decrease do not count again), and
//!   back up by [`RECOVERY_PER_SECOND`] of the rate before the decrease per second of successes,
//!   never above the configured rate. With no rate configured, the first 429 sets it from the rate of successful
//!   calls just seen, so an unconfigured operator converges too.
//!
//! The decisions ([`Bucket`], [`Aimd`], [`State`], [`retry_again`]) are plain values over an
//! injected [`Instant`]; [`Limiter`] does the waiting.
//!
//! [`ChromaClient`]: super::ChromaClient

use crate::metrics::LimiterMetrics;
use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

/// How one client (one connection) paces its calls.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// The steady rate; `None`: unlimited until the service answers 429.
    pub calls_per_second: Option<f64>,
    /// Calls that may go at once above the rate (at least 1). Keep it below the service's own
    /// burst: the difference absorbs network jitter, which would otherwise push calls sent at
    /// exactly the service's rate over it.
    pub burst: u32,
    /// Calls sent and not yet answered, at most.
    pub in_flight: usize,
}

/// The default `burst`.
pub const DEFAULT_BURST: u32 = 1;
/// The default `in_flight`.
pub const DEFAULT_IN_FLIGHT: usize = 16;

impl Default for Limits {
    fn default() -> Self {
        Self {
            calls_per_second: None,
            burst: DEFAULT_BURST,
            in_flight: DEFAULT_IN_FLIGHT,
        }
    }
}

/// The pause after a 429 without `Retry-After`.
pub const DEFAULT_PAUSE: Duration = Duration::from_secs(1);
/// The rate after a 429, as a share of the rate before.
pub const DECREASE: f64 = 0.7;
/// Additive recovery: per second of successes at the rate, the rate grows by this share of the
/// rate it had before the last decrease (so it is back there 15 s after a decrease), and by at
/// least [`MIN_RECOVERY`].
pub const RECOVERY_PER_SECOND: f64 = 0.02;
/// The least recovery (calls per second, per second of successes): a rate learnt from a few
/// calls (an unconfigured client's first 429 at low traffic) must not take hours to grow.
pub const MIN_RECOVERY: f64 = 0.5;
/// The lowest adapted rate (calls per second).
pub const MIN_RATE: f64 = 0.1;
/// How far back successful calls are counted for the observed rate.
pub const OBSERVED_WINDOW: Duration = Duration::from_secs(5);
/// Attempts of one call that the service answers 429 (the first included).
pub const MAX_ATTEMPTS: u32 = 5;

/// A token bucket whose `tokens` are counted at `at` (which may lie in the future: the end of a
/// pause, or of reservations already handed out). Tokens below zero are calls already promised
/// a later time.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// Full at `now`.
    pub fn new(burst: u32, now: Instant) -> Self {
        Self {
            tokens: f64::from(burst.max(1)),
            at: now,
        }
    }

    fn refill(&mut self, rate: f64, burst: u32, now: Instant) {
        if now > self.at {
            let grown = self.tokens + rate * (now - self.at).as_secs_f64();
            self.tokens = grown.min(f64::from(burst.max(1)));
            self.at = now;
        }
    }

    /// Takes one token at `rate`: how long the caller waits until its call may go.
    pub fn reserve(&mut self, rate: f64, burst: u32, now: Instant) -> Duration {
        self.refill(rate, burst, now);
        self.tokens -= 1.0;
        let due = self.at + Duration::from_secs_f64(self.tokens.min(0.0).abs() / rate);
        due.saturating_duration_since(now)
    }

    /// Nothing goes before `until`, and then one call at once and the rest at the rate (a
    /// bucket refilled over the pause would release a burst the moment it ends).
    pub fn pause(&mut self, rate: f64, burst: u32, now: Instant, until: Instant) {
        self.refill(rate, burst, now);
        self.tokens = self.tokens.min(1.0);
        self.at = self.at.max(until);
    }
}

/// The adapted rate: multiplicative decrease on a 429, additive recovery on successes.
#[derive(Debug, Clone, PartialEq)]
pub struct Aimd {
    configured: Option<f64>,
    rate: Option<f64>,
    /// Calls per second added per second of successes (set at each decrease).
    step: f64,
    last_decrease: Option<Instant>,
    /// When recent calls succeeded (within [`OBSERVED_WINDOW`]).
    successes: VecDeque<Instant>,
}

/// The most success times kept (a bound on memory at very high rates; the observed rate is then
/// counted over a shorter span).
const MAX_SUCCESSES: usize = 4096;

impl Aimd {
    pub fn new(configured: Option<f64>) -> Self {
        let configured = configured.filter(|r| r.is_finite() && *r > 0.0);
        Self {
            configured,
            rate: configured,
            step: 0.0,
            last_decrease: None,
            successes: VecDeque::new(),
        }
    }

    /// The rate now; `None`: unlimited.
    pub fn rate(&self) -> Option<f64> {
        self.rate
    }

    /// Successful calls per second over the last [`OBSERVED_WINDOW`] (over at least a second).
    pub fn observed(&self, now: Instant) -> Option<f64> {
        let first = self
            .successes
            .iter()
            .find(|t| now.saturating_duration_since(**t) <= OBSERVED_WINDOW)?;
        let count = self.successes.iter().filter(|t| *t >= first).count();
        let span = now
            .saturating_duration_since(*first)
            .max(Duration::from_secs(1));
        Some(count as f64 / span.as_secs_f64())
    }

    /// A call answered (anything but a 429) at `now`.
    pub fn succeeded(&mut self, now: Instant) {
        while self
            .successes
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > OBSERVED_WINDOW)
            || self.successes.len() >= MAX_SUCCESSES
        {
            self.successes.pop_front();
        }
        self.successes.push_back(now);
        if let Some(rate) = self.rate {
            // One second's worth of successes at `rate` adds `step`.
            let grown = rate + self.step / rate;
            self.rate = Some(match self.configured {
                Some(ceiling) => grown.min(ceiling),
                None => grown,
            });
        }
    }

    /// A call sent at `sent` was answered 429 at `now`; whether the rate went down (the first
    /// 429 of an episode: calls sent before the last decrease were sent at the old rate, and
    /// their 429s say nothing new).
    pub fn limited(&mut self, sent: Instant, now: Instant) -> bool {
        if self.last_decrease.is_some_and(|at| sent < at) {
            return false;
        }
        let before = match self.rate {
            Some(rate) => rate,
            // Unconfigured: what went through is what the service allows, about.
            None => self.observed(now).unwrap_or(1.0),
        };
        self.rate = Some((before * DECREASE).max(MIN_RATE));
        self.step = (before * RECOVERY_PER_SECOND).max(MIN_RECOVERY);
        self.last_decrease = Some(now);
        true
    }
}

/// Everything one client's callers share.
#[derive(Debug, Clone)]
pub struct State {
    burst: u32,
    bucket: Bucket,
    aimd: Aimd,
    paused_until: Option<Instant>,
}

impl State {
    pub fn new(limits: &Limits, now: Instant) -> Self {
        Self {
            burst: limits.burst.max(1),
            bucket: Bucket::new(limits.burst, now),
            aimd: Aimd::new(limits.calls_per_second),
            paused_until: None,
        }
    }

    pub fn rate(&self) -> Option<f64> {
        self.aimd.rate()
    }

    /// How long the pause still lasts.
    pub fn paused_for(&self, now: Instant) -> Duration {
        self.paused_until
            .map_or(Duration::ZERO, |until| until.saturating_duration_since(now))
    }

    /// A call wants to go at `now`: how long it waits first (its token is taken).
    pub fn reserve(&mut self, now: Instant) -> Duration {
        match self.aimd.rate() {
            Some(rate) => self.bucket.reserve(rate, self.burst, now),
            None => self.paused_for(now),
        }
    }

    pub fn succeeded(&mut self, now: Instant) {
        self.aimd.succeeded(now);
    }

    /// A call sent at `sent` was answered 429 at `now`, with `retry_after`: every caller pauses
    /// until then; the pause.
    pub fn limited(
        &mut self,
        sent: Instant,
        now: Instant,
        retry_after: Option<Duration>,
    ) -> Duration {
        let pause = retry_after.unwrap_or(DEFAULT_PAUSE);
        let until = now + pause;
        self.paused_until = Some(self.paused_until.map_or(until, |u| u.max(until)));
        self.aimd.limited(sent, now);
        if let Some(rate) = self.aimd.rate() {
            self.bucket.pause(rate, self.burst, now, until);
        }
        pause
    }
}

/// Whether a call answered 429 goes again after `pause`: at most [`MAX_ATTEMPTS`] attempts
/// (`attempt` is the one just answered, from 1), and the pauses waited within one call stay
/// within `deadline` (the client's timeout: a longer `Retry-After` goes back to the caller, whose
/// own backoff honours it).
pub fn retry_again(attempt: u32, paused: Duration, pause: Duration, deadline: Duration) -> bool {
    attempt < MAX_ATTEMPTS && paused + pause <= deadline
}

/// The waiting side of [`State`], shared by all clones of a client.
#[derive(Debug)]
pub struct Limiter {
    state: Mutex<State>,
    in_flight: Semaphore,
    metrics: LimiterMetrics,
}

/// A call's right to go: held while it is in flight.
pub struct Admitted<'a> {
    _permit: SemaphorePermit<'a>,
    metrics: &'a LimiterMetrics,
    /// When the call went.
    pub sent: Instant,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.metrics.in_flight.dec();
    }
}

impl Limiter {
    pub fn new(limits: &Limits, metrics: LimiterMetrics) -> Self {
        let state = State::new(limits, Instant::now());
        metrics.set_rate(state.rate());
        Self {
            state: Mutex::new(state),
            in_flight: Semaphore::new(limits.in_flight.max(1)),
            metrics,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for a free slot, then for the bucket and any pause.
    pub async fn admit(&self) -> Admitted<'_> {
        let started = Instant::now();
        let permit = self
            .in_flight
            .acquire()
            .await
            .expect("the limiter's semaphore is never closed");
        loop {
            let wait = self.state().reserve(Instant::now());
            if wait.is_zero() {
                break;
            }
            tokio::time::sleep(wait).await;
            // A 429 may have paused everyone while this call waited: then it queues again.
            if self.state().paused_for(Instant::now()).is_zero() {
                break;
            }
        }
        let sent = Instant::now();
        self.metrics.waited.observe((sent - started).as_secs_f64());
        self.metrics.in_flight.inc();
        Admitted {
            _permit: permit,
            metrics: &self.metrics,
            sent,
        }
    }

    pub fn succeeded(&self) {
        let rate = {
            let mut state = self.state();
            state.succeeded(Instant::now());
            state.rate()
        };
        self.metrics.set_rate(rate);
    }

    /// A call sent at `sent` was answered 429: the pause every caller now waits.
    pub fn limited(&self, sent: Instant, retry_after: Option<Duration>) -> Duration {
        let (pause, rate) = {
            let mut state = self.state();
            let pause = state.limited(sent, Instant::now(), retry_after);
            (pause, state.rate())
        };
        self.metrics.limited.inc();
        self.metrics.set_rate(rate);
        pause
    }

    /// The rate now (`None`: unlimited).
    pub fn rate(&self) -> Option<f64> {
        self.state().rate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn limits(rate: Option<f64>, burst: u32) -> Limits {
        Limits {
            calls_per_second: rate,
            burst,
            in_flight: 16,
        }
    }

    #[test]
    fn the_bucket_lets_a_burst_go_then_spaces_calls_at_the_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(2, t0);
        assert_eq!(b.reserve(10.0, 2, t0), Duration::ZERO);
        assert_eq!(b.reserve(10.0, 2, t0), Duration::ZERO);
        // Reservations queue behind each other, 100 ms apart.
        assert_eq!(b.reserve(10.0, 2, t0), ms(100));
        assert_eq!(b.reserve(10.0, 2, t0), ms(200));
        // Later callers see the queue shortened by the time passed.
        assert_eq!(b.reserve(10.0, 2, t0 + ms(150)), ms(150));
    }

    #[test]
    fn an_idle_bucket_holds_no_more_than_the_burst() {
        let t0 = Instant::now();
        let mut b = Bucket::new(3, t0);
        for _ in 0..3 {
            b.reserve(10.0, 3, t0);
        }
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(b.reserve(10.0, 3, later), Duration::ZERO);
        }
        assert_eq!(b.reserve(10.0, 3, later), ms(100));
    }

    #[test]
    fn n_calls_take_n_over_the_rate_less_the_burst() {
        let t0 = Instant::now();
        let mut b = Bucket::new(1, t0);
        let last = (0..101).map(|_| b.reserve(20.0, 1, t0)).last().unwrap();
        assert_eq!(last, Duration::from_secs(5));
    }

    #[test]
    fn a_pause_holds_every_call_and_releases_no_burst_after_it() {
        let t0 = Instant::now();
        let mut b = Bucket::new(10, t0);
        b.pause(10.0, 10, t0, t0 + Duration::from_secs(2));
        // Even long after a full refill would be due, the pause's end is the start.
        assert_eq!(b.reserve(10.0, 10, t0 + ms(500)), ms(1500));
        assert_eq!(b.reserve(10.0, 10, t0 + ms(500)), ms(1600));
        assert_eq!(b.reserve(10.0, 10, t0 + ms(500)), ms(1700));
    }

    #[test]
    fn a_decrease_is_multiplicative_and_once_per_episode() {
        let t0 = Instant::now();
        let mut a = Aimd::new(Some(20.0));
        assert!(a.limited(t0, t0 + ms(100)));
        assert_eq!(a.rate(), Some(20.0 * DECREASE));
        // Calls sent before the decrease answer 429 too: no second decrease.
        assert!(!a.limited(t0 + ms(50), t0 + ms(150)));
        assert_eq!(a.rate(), Some(20.0 * DECREASE));
        // A call sent after it, at the lower rate, still limited: down again.
        assert!(a.limited(t0 + ms(200), t0 + ms(300)));
        assert_eq!(a.rate(), Some(20.0 * DECREASE * DECREASE));
    }

    #[test]
    fn the_rate_recovers_additively_up_to_the_configured_rate() {
        let t0 = Instant::now();
        let mut a = Aimd::new(Some(100.0));
        a.limited(t0, t0);
        let low = a.rate().unwrap();
        // About one second of successes at the rate adds RECOVERY_PER_SECOND of the old rate.
        let mut now = t0;
        for _ in 0..(low.round() as usize) {
            now += ms(14);
            a.succeeded(now);
        }
        let after = a.rate().unwrap();
        let step = 100.0 * RECOVERY_PER_SECOND;
        assert!(
            (after - low - step).abs() < step * 0.1,
            "{low} -> {after}, step {step}"
        );
        for _ in 0..10_000 {
            now += ms(10);
            a.succeeded(now);
        }
        assert_eq!(a.rate(), Some(100.0), "never above the configured rate");
        // A low rate recovers by at least MIN_RECOVERY a second.
        let mut a = Aimd::new(Some(2.0));
        a.limited(t0, t0);
        for _ in 0..14 {
            a.succeeded(t0);
        }
        assert!(
            a.rate().unwrap() > 1.4 + MIN_RECOVERY * 0.9,
            "{:?}",
            a.rate()
        );
    }

    #[test]
    fn unconfigured_it_is_unlimited_until_a_429_then_starts_from_the_observed_rate() {
        let t0 = Instant::now();
        let mut a = Aimd::new(None);
        // 30 calls a second succeed for 3 s.
        let mut now = t0;
        for i in 1..=90 {
            now = t0 + Duration::from_secs_f64(f64::from(i) / 30.0);
            a.succeeded(now);
        }
        assert_eq!(a.rate(), None, "no rate until the service says so");
        let observed = a.observed(now).unwrap();
        assert!((observed - 30.0).abs() < 1.5, "{observed}");
        assert!(a.limited(now, now));
        let rate = a.rate().unwrap();
        assert!((rate - observed * DECREASE).abs() < 1e-9, "{rate}");
        // It keeps probing upwards, with no ceiling, until the next 429.
        for i in 1..=1000 {
            a.succeeded(now + ms(i * 50));
        }
        assert!(a.rate().unwrap() > 30.0, "{:?}", a.rate());
        // Successes long ago are not "recent".
        let quiet = Aimd::new(None);
        assert_eq!(quiet.observed(t0), None);
        let mut old = Aimd::new(None);
        old.succeeded(t0);
        assert_eq!(old.observed(t0 + Duration::from_secs(60)), None);
    }

    #[test]
    fn a_429_pauses_every_caller_for_retry_after_or_a_second() {
        let t0 = Instant::now();
        let mut s = State::new(&limits(None, 1), t0);
        assert_eq!(s.reserve(t0), Duration::ZERO, "unlimited");
        assert_eq!(
            s.limited(t0, t0, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(s.paused_for(t0 + ms(500)), ms(2500));
        // Every caller, not only the one that was answered 429, waits until the pause ends, and
        // then they go at the rate learnt (here from no successes at all: 1/s, decreased).
        let rate = s.rate().unwrap();
        assert!((rate - DECREASE).abs() < 1e-9, "{rate}");
        assert_eq!(s.reserve(t0 + ms(500)), ms(2500));
        let second = s.reserve(t0 + ms(500));
        assert!(second > ms(2500 + 1000), "{second:?}");
        // A shorter Retry-After does not shorten a pause already set.
        s.limited(t0, t0 + ms(600), None);
        assert_eq!(s.paused_for(t0 + ms(600)), ms(2400));
        // No Retry-After: the default pause.
        let mut s = State::new(&limits(Some(5.0), 1), t0);
        assert_eq!(s.limited(t0, t0, None), DEFAULT_PAUSE);
        assert_eq!(s.reserve(t0), DEFAULT_PAUSE);
    }

    #[test]
    fn a_429_is_retried_a_bounded_number_of_times_within_the_deadline() {
        let deadline = Duration::from_secs(30);
        let one = Duration::from_secs(1);
        assert!(retry_again(1, Duration::ZERO, one, deadline));
        assert!(retry_again(MAX_ATTEMPTS - 1, one * 3, one, deadline));
        assert!(!retry_again(MAX_ATTEMPTS, one * 4, one, deadline));
        // A Retry-After past the deadline goes back to the caller at once.
        assert!(!retry_again(1, Duration::ZERO, one * 31, deadline));
        assert!(!retry_again(2, one * 29, one * 2, deadline));
    }

    #[tokio::test]
    async fn the_limiter_spaces_calls_and_holds_at_most_in_flight() {
        let metrics = crate::metrics::Metrics::new();
        let limiter = std::sync::Arc::new(Limiter::new(
            &Limits {
                calls_per_second: Some(10.0),
                burst: 1,
                in_flight: 2,
            },
            metrics.limiter("test"),
        ));
        let a = limiter.admit().await;
        let b = limiter.admit().await;
        assert!(b.sent - a.sent >= ms(95), "{:?}", b.sent - a.sent);
        // Two in flight: the third waits for one of them to end, however long.
        let third = tokio::spawn({
            let limiter = limiter.clone();
            async move { limiter.admit().await.sent }
        });
        tokio::time::sleep(ms(500)).await;
        assert!(!third.is_finished(), "a third call went with two in flight");
        let released = Instant::now();
        drop(a);
        assert!(third.await.unwrap() >= released);
        drop(b);
        let text = metrics.render();
        assert!(
            text.contains(r#"chroma_sync_operator_chroma_calls_in_flight{connection="test"} 0"#),
            "{text}"
        );
    }
}
