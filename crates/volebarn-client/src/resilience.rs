//! Retries, circuit breaker and health monitoring (the seed's "Error Handling and
//! Resilience"). All timing goes through `tokio::time`, so tests run the real schedule in
//! paused time and assert it exactly.

use crate::error::{ClientError, Result};
use rand::Rng;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Exponential backoff (the seed's numbers are the defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    pub initial_delay: Duration,
    pub max_delay: Duration,
    /// Retries after the first attempt (delays 1, 2, 4, 8, 16 s by default).
    pub max_retries: u32,
    pub multiplier: f64,
    /// Full jitter: each delay is uniform in `[0, delay]`, so clients do not retry in step.
    pub jitter: bool,
    /// Re-downloads after a hash mismatch.
    pub hash_mismatch_retries: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            max_retries: 5,
            multiplier: 2.0,
            jitter: true,
            hash_mismatch_retries: 3,
        }
    }
}

impl RetryConfig {
    /// No retries at all (tests of fail-fast behaviour, interactive tools).
    pub fn none() -> Self {
        RetryConfig {
            max_retries: 0,
            hash_mismatch_retries: 0,
            ..RetryConfig::default()
        }
    }

    /// The delay before retry number `retry` (1-based), before jitter.
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = self.multiplier.powi(retry.saturating_sub(1) as i32);
        let secs = self.initial_delay.as_secs_f64() * factor;
        Duration::from_secs_f64(secs.min(self.max_delay.as_secs_f64()))
    }
}

/// Circuit breaker settings.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// Consecutive transient failures that open the circuit.
    pub failure_threshold: u32,
    /// How long an open circuit fails fast before letting one probe through.
    pub recovery_timeout: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 5,
            recovery_timeout: Duration::from_secs(30),
        }
    }
}

/// The breaker's state as `client.health()` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug)]
enum Inner {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe is in flight; everything else fails fast until it reports.
    HalfOpen,
}

/// The breaker's state, and its failure generation: how many failures it has counted. A
/// request is handed the generation current when it goes out (its [`Ticket`]); when it
/// fails, its failure counts only if no other failure was counted since it went out.
///
/// This is how one dropped connection counts as one failure: the requests multiplexed on an
/// HTTP/2 connection (or in flight on several connections to a server that just died) all
/// went out before the first of them failed, so the first failure counts and the others,
/// holding the same generation, are the same event. A request sent after a failure was
/// counted (a retry, or the next call) holds the new generation, so consecutive failures
/// of requests sent one after another each count, as before. The rule needs no clock, so
/// it holds however fast the failures come and in paused test time.
#[derive(Debug)]
struct State {
    inner: Inner,
    generation: u64,
}

/// The failure generation a request went out in (see [`CircuitBreaker::allow`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u64);

#[derive(Debug)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    state: Mutex<State>,
}

impl CircuitBreaker {
    pub fn new(config: BreakerConfig) -> Self {
        CircuitBreaker {
            config,
            state: Mutex::new(State {
                inner: Inner::Closed { failures: 0 },
                generation: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn state(&self) -> BreakerState {
        match self.lock().inner {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { until } if Instant::now() >= until => BreakerState::HalfOpen,
            Inner::Open { .. } => BreakerState::Open,
            Inner::HalfOpen => BreakerState::HalfOpen,
        }
    }

    /// May a request go out now? An open circuit past its timeout lets exactly one probe.
    /// The ticket says which failure generation the request belongs to
    /// ([`CircuitBreaker::record_failure_of`]).
    pub fn allow(&self) -> Result<Ticket> {
        let mut s = self.lock();
        let ticket = Ticket(s.generation);
        match s.inner {
            Inner::Closed { .. } => Ok(ticket),
            Inner::Open { until } if Instant::now() >= until => {
                s.inner = Inner::HalfOpen;
                Ok(ticket)
            }
            Inner::Open { until } => Err(ClientError::CircuitOpen {
                retry_in: until.saturating_duration_since(Instant::now()),
            }),
            Inner::HalfOpen => Err(ClientError::CircuitOpen {
                retry_in: Duration::ZERO,
            }),
        }
    }

    /// The server answered (any status that is not a server failure).
    pub fn record_success(&self) {
        self.lock().inner = Inner::Closed { failures: 0 };
    }

    /// A transient failure (connect error, timeout, 5xx…) that always counts.
    pub fn record_failure(&self) {
        let mut s = self.lock();
        self.count_failure(&mut s);
    }

    /// A transient failure of the request holding `ticket`. Counts only if no failure was
    /// counted since that request went out; returns whether it counted.
    pub fn record_failure_of(&self, ticket: Ticket) -> bool {
        let mut s = self.lock();
        if ticket.0 < s.generation {
            return false;
        }
        self.count_failure(&mut s);
        true
    }

    fn count_failure(&self, s: &mut State) {
        s.generation += 1;
        let open = Inner::Open {
            until: Instant::now() + self.config.recovery_timeout,
        };
        s.inner = match s.inner {
            Inner::Closed { failures } if failures + 1 >= self.config.failure_threshold => open,
            Inner::Closed { failures } => Inner::Closed {
                failures: failures + 1,
            },
            Inner::HalfOpen | Inner::Open { .. } => open,
        };
    }
}

/// Tells the breaker what the failure `err` of a request sent with `ticket` says about the
/// server. A transient failure counts against it, except a 429: that is an answer (the server
/// is up and asks us to slow down), and counting it would open the circuit on a busy but
/// healthy server. A permanent failure (4xx) is an answer too; an open circuit's own refusal
/// says nothing new.
fn tell_breaker(breaker: &CircuitBreaker, ticket: Ticket, err: &ClientError) {
    if err.is_transient() && !err.is_rate_limited() {
        breaker.record_failure_of(ticket);
    } else if !matches!(err, ClientError::CircuitOpen { .. }) {
        breaker.record_success();
    }
}

/// The wait before retry number `attempt` (1-based) after `err`: the server's `Retry-After`
/// (at most `max_delay`), or the backoff, jittered when configured.
fn retry_delay(retry: &RetryConfig, err: &ClientError, attempt: u32) -> Duration {
    if let Some(d) = err.retry_after() {
        return d.min(retry.max_delay);
    }
    let d = retry.backoff(attempt);
    if retry.jitter {
        d.mul_f64(rand::rng().random_range(0.0..=1.0))
    } else {
        d
    }
}

/// Runs `op` with retries and the circuit breaker: transient failures are retried with
/// backoff (honouring `Retry-After`), permanent ones (4xx) fail at once with the server's
/// `error_code`, and an open circuit fails fast.
pub async fn run<T, F, Fut>(
    retry: &RetryConfig,
    breaker: &CircuitBreaker,
    operation: &str,
    mut op: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut retries = 0u32;
    let mut hash_retries = 0u32;
    loop {
        let ticket = breaker.allow()?;
        let err = match op().await {
            Ok(v) => {
                breaker.record_success();
                return Ok(v);
            }
            Err(e) => e,
        };
        let delay = match &err {
            ClientError::HashMismatch { .. } if hash_retries < retry.hash_mismatch_retries => {
                // The server answered; the bytes were damaged on the way. Fetch again now.
                breaker.record_success();
                hash_retries += 1;
                tracing::warn!(operation, attempt = hash_retries, error = %err, "hash mismatch, downloading again");
                continue;
            }
            e if e.is_transient() => {
                tell_breaker(breaker, ticket, e);
                if retries >= retry.max_retries {
                    return Err(err);
                }
                retries += 1;
                retry_delay(retry, e, retries)
            }
            _ => {
                tell_breaker(breaker, ticket, &err);
                return Err(err);
            }
        };
        tracing::warn!(operation, attempt = retries, delay_ms = delay.as_millis() as u64, error = %err, "retrying");
        tokio::time::sleep(delay).await;
    }
}

/// How far a multi-request operation (a chunked upload) has got: how many of its requests
/// landed, and when the last one did. Its requests are retried for as long as this moves.
#[derive(Debug)]
pub struct Progress {
    landed: AtomicU64,
    last: Mutex<Instant>,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            landed: AtomicU64::new(0),
            last: Mutex::new(Instant::now()),
        }
    }
}

impl Progress {
    /// One request of the operation landed.
    pub fn landed(&self) {
        self.landed.fetch_add(1, Ordering::SeqCst);
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    /// Requests landed so far.
    pub fn count(&self) -> u64 {
        self.landed.load(Ordering::SeqCst)
    }

    /// Time since the last request landed (or since the operation started).
    pub fn stalled_for(&self) -> Duration {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).elapsed()
    }
}

/// When a request retried while its operation makes progress gives up.
#[derive(Debug, Clone, PartialEq)]
pub struct StallLimit {
    /// Attempts of one request with no request of the operation landing in between.
    pub attempts: u32,
    /// Time with no request of the operation landing.
    pub timeout: Duration,
}

/// Runs one request of a multi-request operation (one chunk of an upload) until it lands,
/// retrying transient failures for as long as the operation makes progress: the count of
/// attempts starts again whenever the operation's `progress` moves (the caller marks what
/// counts, e.g. a chunk stored; asking which chunks are missing does not), so
/// a flaky link that drops a connection every few chunks never exhausts it. It gives up
/// after `stall.attempts` attempts in a row with nothing landing in between, or when nothing
/// landed for `stall.timeout`. An open circuit fails it at once, as in [`run`]: since a
/// dropped connection counts once ([`Ticket`]), the circuit opens only after
/// `failure_threshold` failures in a row of requests sent one after another, with no
/// answer in between, which is an outage rather than a flaky link. Backoff and
/// `Retry-After` are as in [`run`].
pub async fn run_while_progressing<T, F, Fut>(
    retry: &RetryConfig,
    breaker: &CircuitBreaker,
    stall: &StallLimit,
    progress: &Progress,
    operation: &str,
    mut op: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut seen = progress.count();
    let mut stalled = 0u32;
    loop {
        let ticket = breaker.allow()?;
        let err = match op().await {
            Ok(v) => {
                // The caller says whether this landing is progress (`Progress::landed`).
                breaker.record_success();
                return Ok(v);
            }
            Err(e) => e,
        };
        tell_breaker(breaker, ticket, &err);
        if !err.is_transient() {
            return Err(err);
        }
        let now = progress.count();
        if now != seen {
            // Something landed since our last attempt: the link works, start counting again.
            seen = now;
            stalled = 0;
        }
        stalled += 1;
        if stalled >= stall.attempts.max(1) || progress.stalled_for() >= stall.timeout {
            tracing::warn!(operation, attempts = stalled, error = %err, "no progress, giving up");
            return Err(err);
        }
        let delay = retry_delay(retry, &err, stalled);
        tracing::warn!(operation, attempt = stalled, delay_ms = delay.as_millis() as u64, error = %err, "retrying");
        tokio::time::sleep(delay).await;
    }
}

/// What the health monitor knows about the server.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ServerHealth {
    /// Seconds since the Unix epoch of the last successful request.
    pub last_success_unix: Option<u64>,
    pub consecutive_failures: u32,
    /// Exponential moving average of `/health` round trips, in milliseconds.
    pub average_response_ms: f64,
    pub is_healthy: bool,
    pub breaker: BreakerState,
}

#[derive(Debug, Default)]
pub(crate) struct HealthState {
    last_success_unix: Option<u64>,
    consecutive_failures: u32,
    average_response_ms: Option<f64>,
}

impl HealthState {
    pub(crate) fn record(&mut self, outcome: std::result::Result<Duration, ()>) {
        match outcome {
            Ok(rtt) => {
                let ms = rtt.as_secs_f64() * 1000.0;
                self.average_response_ms = Some(match self.average_response_ms {
                    None => ms,
                    Some(avg) => avg * 0.8 + ms * 0.2,
                });
                self.consecutive_failures = 0;
                self.last_success_unix = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .ok()
                    .map(|d| d.as_secs());
            }
            Err(()) => self.consecutive_failures += 1,
        }
    }

    pub(crate) fn snapshot(&self, breaker: BreakerState) -> ServerHealth {
        ServerHealth {
            last_success_unix: self.last_success_unix,
            consecutive_failures: self.consecutive_failures,
            average_response_ms: self.average_response_ms.unwrap_or(0.0),
            is_healthy: self.consecutive_failures == 0 && self.last_success_unix.is_some(),
            breaker,
        }
    }
}

/// Time until the next health check: every 30 s while healthy; 30 s, 1 min, 2 min, then
/// 5 min at most while failing (the seed's schedule).
pub fn next_health_check(consecutive_failures: u32) -> Duration {
    match consecutive_failures {
        0 | 1 => Duration::from_secs(30),
        2 => Duration::from_secs(60),
        3 => Duration::from_secs(120),
        _ => Duration::from_secs(300),
    }
}

/// The health monitor's loop: probe, then wait as [`next_health_check`] says for the
/// failure count the probe reports. Generic over the probe so its schedule is tested
/// without a network.
pub(crate) async fn monitor_loop<F, Fut>(mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = (bool, u32)>,
{
    loop {
        let (_, failures) = probe().await;
        tokio::time::sleep(next_health_check(failures)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;
    use volebarn_core::ErrorCode;

    fn unavailable() -> ClientError {
        ClientError::Server {
            status: 503,
            code: ErrorCode::ServerError,
            message: "down".into(),
            path: String::new(),
        }
    }

    fn exact() -> RetryConfig {
        RetryConfig {
            jitter: false,
            ..RetryConfig::default()
        }
    }

    /// Calls `op` through `run` and returns the instants of every attempt.
    async fn attempts(
        cfg: &RetryConfig,
        breaker: &CircuitBreaker,
        fail: impl Fn(u32) -> Option<ClientError>,
    ) -> (Vec<Duration>, Result<u32>) {
        let start = Instant::now();
        let times = Mutex::new(Vec::new());
        let n = AtomicU32::new(0);
        let out = run(cfg, breaker, "test", || {
            let i = n.fetch_add(1, Ordering::SeqCst);
            times.lock().expect("lock").push(start.elapsed());
            let r = fail(i).map_or(Ok(i), Err);
            async move { r }
        })
        .await;
        (times.into_inner().expect("lock"), out)
    }

    fn gaps(times: &[Duration]) -> Vec<u64> {
        times
            .windows(2)
            .map(|w| (w[1] - w[0]).as_millis() as u64)
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_schedule_is_1_2_4_8_16_seconds() {
        let breaker = CircuitBreaker::new(BreakerConfig {
            failure_threshold: 100,
            ..BreakerConfig::default()
        });
        let (times, out) = attempts(&exact(), &breaker, |_| Some(unavailable())).await;
        assert_eq!(gaps(&times), [1000, 2000, 4000, 8000, 16000]);
        assert_eq!(out.unwrap_err().status(), Some(503), "the last error is returned");
    }

    #[tokio::test(start_paused = true)]
    async fn delays_are_capped_and_jitter_stays_below_the_schedule() {
        let breaker = CircuitBreaker::new(BreakerConfig {
            failure_threshold: 100,
            ..BreakerConfig::default()
        });
        let cfg = RetryConfig {
            max_retries: 8,
            ..exact()
        };
        let (times, _) = attempts(&cfg, &breaker, |_| Some(unavailable())).await;
        assert_eq!(gaps(&times), [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
        let jittered = RetryConfig {
            max_retries: 8,
            ..RetryConfig::default()
        };
        let (times, _) = attempts(&jittered, &breaker, |_| Some(unavailable())).await;
        for (gap, limit) in gaps(&times)
            .into_iter()
            .zip([1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000])
        {
            assert!(gap <= limit, "jittered delay {gap} ms over {limit} ms");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured_and_success_stops_retrying() {
        let breaker = CircuitBreaker::new(BreakerConfig::default());
        let (times, out) = attempts(&exact(), &breaker, |i| match i {
            0 => Some(ClientError::RateLimited { retry_after: 7 }),
            1 => Some(unavailable()),
            _ => None,
        })
        .await;
        assert_eq!(gaps(&times), [7000, 2000]);
        assert_eq!(out.expect("third attempt succeeds"), 2);
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limits_are_waited_out_without_opening_the_circuit() {
        let breaker = CircuitBreaker::new(BreakerConfig::default());
        let cfg = RetryConfig {
            max_retries: 10,
            ..exact()
        };
        let (times, out) = attempts(&cfg, &breaker, |i| {
            (i < 8).then_some(ClientError::RateLimited { retry_after: 1 })
        })
        .await;
        assert_eq!(gaps(&times), [1000; 8]);
        assert_eq!(out.expect("the ninth attempt succeeds"), 8);
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_fail_fast_with_their_code() {
        let breaker = CircuitBreaker::new(BreakerConfig::default());
        for (status, code) in [
            (400, ErrorCode::InvalidPath),
            (404, ErrorCode::FileNotFound),
            (409, ErrorCode::AlreadyExists),
            (412, ErrorCode::PreconditionFailed),
            (413, ErrorCode::PayloadTooLarge),
            (401, ErrorCode::Unauthorized),
        ] {
            let (times, out) = attempts(&exact(), &breaker, |_| {
                Some(ClientError::Server {
                    status,
                    code,
                    message: String::new(),
                    path: "p".into(),
                })
            })
            .await;
            assert_eq!(times.len(), 1, "{status} is not retried");
            assert_eq!(out.unwrap_err().error_code(), Some(code));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn hash_mismatch_is_fetched_again_up_to_3_times() {
        let breaker = CircuitBreaker::new(BreakerConfig::default());
        let mismatch = || ClientError::HashMismatch {
            path: "f".into(),
            expected: "a".into(),
            actual: "b".into(),
        };
        let (times, out) = attempts(&exact(), &breaker, |_| Some(mismatch())).await;
        assert_eq!(times.len(), 4, "first try + 3 re-downloads");
        assert!(matches!(out, Err(ClientError::HashMismatch { .. })));
        let (times, out) = attempts(&exact(), &breaker, |i| (i < 2).then(mismatch)).await;
        assert_eq!((times.len(), out.expect("third download verifies")), (3, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn breaker_opens_after_5_failures_fails_fast_then_probes_once() {
        let breaker = CircuitBreaker::new(BreakerConfig::default());
        let no_retry = RetryConfig {
            max_retries: 0,
            ..exact()
        };
        for _ in 0..4 {
            let _ = attempts(&no_retry, &breaker, |_| Some(unavailable())).await;
            assert_eq!(breaker.state(), BreakerState::Closed);
        }
        let _ = attempts(&no_retry, &breaker, |_| Some(unavailable())).await;
        assert_eq!(breaker.state(), BreakerState::Open);
        // Open: nothing goes out for 30 s.
        let (times, out) = attempts(&no_retry, &breaker, |_| None).await;
        assert!(times.is_empty(), "no request while open");
        assert!(
            matches!(out, Err(ClientError::CircuitOpen { retry_in }) if retry_in == Duration::from_secs(30))
        );
        tokio::time::advance(Duration::from_secs(29)).await;
        assert_eq!(breaker.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        // Half-open: one probe; while it is out, others fail fast.
        breaker.allow().expect("the probe");
        assert!(matches!(breaker.allow(), Err(ClientError::CircuitOpen { .. })));
        breaker.record_failure();
        assert_eq!(breaker.state(), BreakerState::Open, "a failed probe reopens");
        tokio::time::advance(Duration::from_secs(30)).await;
        let (times, out) = attempts(&no_retry, &breaker, |_| None).await;
        assert_eq!((times.len(), out.expect("probe succeeds")), (1, 0));
        assert_eq!(breaker.state(), BreakerState::Closed, "a successful probe closes");
    }

    #[test]
    fn requests_in_flight_together_fail_as_one() {
        let breaker = CircuitBreaker::new(BreakerConfig {
            failure_threshold: 2,
            ..BreakerConfig::default()
        });
        // Three streams on one connection; the connection drops and all three fail.
        let streams: Vec<Ticket> = (0..3).map(|_| breaker.allow().expect("closed")).collect();
        let counted: Vec<bool> = streams.iter().map(|t| breaker.record_failure_of(*t)).collect();
        assert_eq!(counted, [true, false, false], "one drop, one failure");
        assert_eq!(breaker.state(), BreakerState::Closed);
        // A retry goes out after the failure was counted: its failure is a new event.
        let retry = breaker.allow().expect("closed");
        assert!(breaker.record_failure_of(retry));
        assert_eq!(breaker.state(), BreakerState::Open);
    }

    /// Runs one request through [`run_while_progressing`] whose attempts fail while `fail`
    /// says so; `others_land(i)` says whether another request lands after failed attempt `i`.
    async fn progressing(
        stall: StallLimit,
        fail: impl Fn(u32) -> bool,
        others_land: impl Fn(u32) -> bool,
    ) -> (u32, Result<u32>) {
        // Only the stall limit ends it here (the chunks landing elsewhere would close the
        // breaker each time; this test has no such requests).
        let breaker = CircuitBreaker::new(BreakerConfig {
            failure_threshold: 1000,
            ..BreakerConfig::default()
        });
        let progress = Progress::default();
        let n = AtomicU32::new(0);
        let out = run_while_progressing(&exact(), &breaker, &stall, &progress, "test", || {
            let i = n.fetch_add(1, Ordering::SeqCst);
            let failed = fail(i);
            if failed && others_land(i) {
                progress.landed();
            }
            let r = if failed { Err(unavailable()) } else { Ok(i) };
            async move { r }
        })
        .await;
        (n.load(Ordering::SeqCst), out)
    }

    #[tokio::test(start_paused = true)]
    async fn retries_go_on_while_other_requests_land_and_stop_when_nothing_does() {
        let stall = StallLimit {
            attempts: 3,
            timeout: Duration::from_secs(3600),
        };
        // Fails 20 times, but something else lands after every failure: never gives up.
        let (n, out) = progressing(stall.clone(), |i| i < 20, |_| true).await;
        assert_eq!((n, out.expect("lands on attempt 21")), (21, 20));
        // Nothing else lands: three attempts in a row without progress, then the error.
        let (n, out) = progressing(stall.clone(), |_| true, |_| false).await;
        assert_eq!(n, 3);
        assert_eq!(out.unwrap_err().status(), Some(503));
        // Something lands during the 2nd attempt: the count starts again there, 1 + 3 attempts.
        let (n, _) = progressing(stall, |_| true, |i| i == 1).await;
        assert_eq!(n, 4);
        // A time budget: with backoff 1, 2, 4, 8… s and 10 s without progress allowed, the
        // attempts at 0, 1, 3, 7 s fail and the one failing at 15 s is the last.
        let timed = StallLimit {
            attempts: 100,
            timeout: Duration::from_secs(10),
        };
        let (n, out) = progressing(timed, |_| true, |_| false).await;
        assert_eq!(n, 5);
        assert!(out.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn monitor_probes_every_30s_when_healthy_and_backs_off_when_not() {
        let start = Instant::now();
        let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        // Healthy for 3 probes, then down for 5, then back.
        let state = std::sync::Arc::new(Mutex::new(HealthState::default()));
        let monitor = tokio::spawn(monitor_loop(move || {
            let (log, state) = (log.clone(), state.clone());
            async move {
                let mut times = log.lock().expect("lock");
                let n = times.len();
                times.push(start.elapsed().as_secs());
                let up = !(3..8).contains(&n);
                let mut s = state.lock().expect("lock");
                s.record(if up { Ok(Duration::from_millis(5)) } else { Err(()) });
                (up, s.snapshot(BreakerState::Closed).consecutive_failures)
            }
        }));
        while seen.lock().expect("lock").len() < 10 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        monitor.abort();
        let times = seen.lock().expect("lock").clone();
        // 0, 30, 60 healthy; failing from 90: waits 30, 60, 120, 300, 300; healthy again: 30.
        assert_eq!(times, [0, 30, 60, 90, 120, 180, 300, 600, 900, 930]);
    }

    #[test]
    fn health_schedule_and_state() {
        let schedule: Vec<u64> = (0..7).map(|f| next_health_check(f).as_secs()).collect();
        assert_eq!(schedule, [30, 30, 60, 120, 300, 300, 300]);
        let mut h = HealthState::default();
        assert!(
            !h.snapshot(BreakerState::Closed).is_healthy,
            "unknown until the first success"
        );
        h.record(Ok(Duration::from_millis(10)));
        h.record(Ok(Duration::from_millis(20)));
        let s = h.snapshot(BreakerState::Closed);
        assert!(s.is_healthy && s.last_success_unix.is_some());
        assert!(
            (s.average_response_ms - 12.0).abs() < 1e-9,
            "{}",
            s.average_response_ms
        );
        h.record(Err(()));
        h.record(Err(()));
        let s = h.snapshot(BreakerState::Open);
        assert_eq!(
            (s.is_healthy, s.consecutive_failures, s.breaker),
            (false, 2, BreakerState::Open)
        );
    }
}
