//! Per-address limits in front of the API, both answered with 429 `rate_limited` and a
//! `Retry-After` header (which the client library honours):
//!
//! - a **brute-force guard**, on by default: an address that failed authentication
//!   `auth_failures` times within `auth_window` is refused — even with the right token, so a
//!   guess cannot be confirmed — until that window has passed;
//! - an optional **request rate** per address (`--rate-limit N`: N per second, bursts of 2N),
//!   a GCRA limiter from the `governor` crate.
//!
//! Addresses are the TCP peer's: behind a reverse proxy every client shares the proxy's
//! address, so put the limits in the proxy there (README, "Limits").

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What the limits are; `ServerConfig` carries one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Requests per second per address (bursts of twice as many); `None`: no limit.
    pub requests_per_second: Option<NonZeroU32>,
    /// Failed authentications per address within `auth_window` before it is refused.
    pub auth_failures: u32,
    pub auth_window: Duration,
    /// Largest request body as a whole (`--max-request-size`): a `/bulk/upload` with all
    /// its parts, or a JSON body. Over it: 413 `payload_too_large`.
    pub max_request_size: u64,
}

/// `--max-request-size` when not set: 4 GiB.
pub const DEFAULT_MAX_REQUEST_SIZE: u64 = 4 << 30;

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            requests_per_second: None,
            auth_failures: 10,
            auth_window: Duration::from_secs(60),
            max_request_size: DEFAULT_MAX_REQUEST_SIZE,
        }
    }
}

/// Addresses tracked by the guard before windows that have passed are swept out.
const SWEEP_FROM: usize = 4096;

/// Failed authentications of one address in its current window.
#[derive(Debug, Clone, Copy)]
struct Failures {
    since: Instant,
    count: u32,
}

pub struct Limits {
    config: LimitsConfig,
    failures: Mutex<HashMap<IpAddr, Failures>>,
    rate: Option<RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, DefaultClock>>,
}

/// Whole seconds to wait, at least one (what `Retry-After` carries).
fn whole_seconds(d: Duration) -> u64 {
    (d.as_millis().div_ceil(1000) as u64).max(1)
}

impl Limits {
    pub fn new(config: LimitsConfig) -> Self {
        let rate = config.requests_per_second.map(|n| {
            let burst = n.saturating_mul(NonZeroU32::new(2).unwrap_or(NonZeroU32::MIN));
            RateLimiter::dashmap(Quota::per_second(n).allow_burst(burst))
        });
        Limits {
            config,
            failures: Mutex::new(HashMap::new()),
            rate,
        }
    }

    /// Largest request body as a whole, in bytes.
    pub fn max_request_size(&self) -> u64 {
        self.config.max_request_size
    }

    /// Seconds `ip` must wait when it is over its request rate (one request counted).
    pub fn over_rate(&self, ip: IpAddr) -> Option<u64> {
        let rate = self.rate.as_ref()?;
        match rate.check_key(&ip) {
            Ok(()) => None,
            Err(not_until) => Some(whole_seconds(
                not_until.wait_time_from(DefaultClock::default().now()),
            )),
        }
    }

    /// Seconds `ip` must wait when it failed authentication too often in its window at `now`.
    pub fn auth_blocked(&self, ip: IpAddr, now: Instant) -> Option<u64> {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let f = failures.get(&ip)?;
        let ends = f.since + self.config.auth_window;
        (f.count >= self.config.auth_failures && now < ends).then(|| whole_seconds(ends - now))
    }

    /// Records a failed authentication of `ip` at `now`.
    pub fn auth_failed(&self, ip: IpAddr, now: Instant) {
        let window = self.config.auth_window;
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() >= SWEEP_FROM {
            failures.retain(|_, f| now < f.since + window);
        }
        let f = failures.entry(ip).or_insert(Failures { since: now, count: 0 });
        if now >= f.since + window {
            *f = Failures { since: now, count: 0 };
        }
        f.count = f.count.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(failures: u32, window: u64) -> Limits {
        Limits::new(LimitsConfig {
            requests_per_second: None,
            auth_failures: failures,
            auth_window: Duration::from_secs(window),
            ..LimitsConfig::default()
        })
    }

    #[test]
    fn an_address_is_refused_after_its_failures_until_the_window_passes() {
        let limits = guard(3, 60);
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        for i in 0..3 {
            assert_eq!(limits.auth_blocked(a, t0), None, "after {i} failures");
            limits.auth_failed(a, t0 + Duration::from_secs(i));
        }
        assert_eq!(limits.auth_blocked(a, t0 + Duration::from_secs(2)), Some(58));
        assert_eq!(
            limits.auth_blocked(a, t0 + Duration::from_millis(59_500)),
            Some(1),
            "part of a second rounds up"
        );
        assert_eq!(
            limits.auth_blocked(b, t0),
            None,
            "other addresses are not affected"
        );
        assert_eq!(limits.auth_blocked(a, t0 + Duration::from_secs(60)), None);
        // A new window starts with the next failure.
        limits.auth_failed(a, t0 + Duration::from_secs(61));
        assert_eq!(limits.auth_blocked(a, t0 + Duration::from_secs(61)), None);
    }

    #[test]
    fn failures_spread_over_windows_are_not_added_up() {
        let limits = guard(3, 60);
        let t0 = Instant::now();
        let a: IpAddr = "2001:db8::1".parse().expect("ip");
        for i in 0..10u64 {
            // Two failures a minute, forever: never three in one window.
            limits.auth_failed(a, t0 + Duration::from_secs(i * 40));
            assert_eq!(limits.auth_blocked(a, t0 + Duration::from_secs(i * 40)), None);
        }
    }

    #[test]
    fn the_rate_allows_a_burst_of_twice_the_rate_then_refuses() {
        let limits = Limits::new(LimitsConfig {
            requests_per_second: NonZeroU32::new(1),
            ..LimitsConfig::default()
        });
        let a: IpAddr = "192.0.2.9".parse().expect("ip");
        let start = Instant::now();
        let mut allowed = 0;
        let refused = loop {
            match limits.over_rate(a) {
                None => allowed += 1,
                Some(wait) => break wait,
            }
            assert!(allowed < 100, "the limit never refused");
        };
        // A burst of 2, plus one more for every second the loop took.
        assert!(allowed >= 2);
        assert!(allowed <= 2 + start.elapsed().as_secs() + 1, "allowed {allowed}");
        assert_eq!(refused, 1, "one request a second: wait one second");
        let other: IpAddr = "192.0.2.10".parse().expect("ip");
        assert_eq!(limits.over_rate(other), None);
    }
}
