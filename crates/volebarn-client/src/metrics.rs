//! The seed's `SyncMetrics`, client side: requests and how fast the server answered them,
//! network errors, hash mismatches, and file bytes sent and received. Shared by every clone
//! of a client; read with [`Client::metrics`](crate::Client::metrics). Sync programs add their
//! own figures (files synced, sync errors, pass times) on top.

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds, in milliseconds, of the response-time histogram's buckets; one more bucket
/// counts the slower answers.
pub const RESPONSE_BUCKETS_MS: [u64; 8] = [5, 10, 25, 50, 100, 250, 1000, 5000];

#[derive(Default)]
pub(crate) struct Metrics {
    requests: AtomicU64,
    network_errors: AtomicU64,
    hash_mismatches: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    response: [AtomicU64; RESPONSE_BUCKETS_MS.len() + 1],
}

impl Metrics {
    /// One attempt of a request: how it ended and how long it took (`None`: not timed). The
    /// time goes into the histogram only when the server answered (no network error).
    pub(crate) fn attempt(&self, answered_in: Option<Duration>, error: Option<&crate::ClientError>) {
        self.requests.fetch_add(1, Relaxed);
        match error {
            Some(crate::ClientError::Network(_) | crate::ClientError::Timeout { .. }) => {
                self.network_errors.fetch_add(1, Relaxed);
                return;
            }
            Some(crate::ClientError::HashMismatch { .. }) => {
                self.hash_mismatches.fetch_add(1, Relaxed);
            }
            _ => {}
        }
        if let Some(d) = answered_in {
            let ms = d.as_millis() as u64;
            let bucket = RESPONSE_BUCKETS_MS
                .iter()
                .position(|&bound| ms <= bound)
                .unwrap_or(RESPONSE_BUCKETS_MS.len());
            self.response[bucket].fetch_add(1, Relaxed);
        }
    }

    /// A part of a bulk download failed its hash check (the request itself went through).
    pub(crate) fn hash_mismatch(&self) {
        self.hash_mismatches.fetch_add(1, Relaxed);
    }

    pub(crate) fn sent(&self, n: u64) {
        self.bytes_sent.fetch_add(n, Relaxed);
    }

    pub(crate) fn received(&self, n: u64) {
        self.bytes_received.fetch_add(n, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> TransferMetrics {
        TransferMetrics {
            requests: self.requests.load(Relaxed),
            network_errors: self.network_errors.load(Relaxed),
            hash_mismatches: self.hash_mismatches.load(Relaxed),
            bytes_sent: self.bytes_sent.load(Relaxed),
            bytes_received: self.bytes_received.load(Relaxed),
            response_ms: self.response.iter().map(|c| c.load(Relaxed)).collect(),
        }
    }
}

/// A client's transfer figures since it was made (or a difference of two snapshots).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferMetrics {
    /// Request attempts, retries included (long-polls too).
    pub requests: u64,
    /// Attempts that never got an answer: refused or dropped connections, timeouts.
    pub network_errors: u64,
    /// Downloads whose bytes did not match the server's xxh3 (each one fetched again).
    pub hash_mismatches: u64,
    /// File content sent (uploads and chunks) and received (downloads), retries included.
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Answered requests by response time: `response_ms[i]` counts those within
    /// `RESPONSE_BUCKETS_MS[i]` ms (and over the bound before); the last entry counts the rest.
    /// Long-polls, which wait on purpose, are left out.
    pub response_ms: Vec<u64>,
}

impl TransferMetrics {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &TransferMetrics) -> TransferMetrics {
        let mut d = self.clone();
        d.requests -= earlier.requests.min(d.requests);
        d.network_errors -= earlier.network_errors.min(d.network_errors);
        d.hash_mismatches -= earlier.hash_mismatches.min(d.hash_mismatches);
        d.bytes_sent -= earlier.bytes_sent.min(d.bytes_sent);
        d.bytes_received -= earlier.bytes_received.min(d.bytes_received);
        for (n, e) in d.response_ms.iter_mut().zip(&earlier.response_ms) {
            *n -= (*e).min(*n);
        }
        d
    }

    /// Adds `other` to these figures (running totals across passes or runs).
    pub fn add(&mut self, other: &TransferMetrics) {
        self.requests += other.requests;
        self.network_errors += other.network_errors;
        self.hash_mismatches += other.hash_mismatches;
        self.bytes_sent += other.bytes_sent;
        self.bytes_received += other.bytes_received;
        if self.response_ms.len() < other.response_ms.len() {
            self.response_ms.resize(other.response_ms.len(), 0);
        }
        for (n, o) in self.response_ms.iter_mut().zip(&other.response_ms) {
            *n += o;
        }
    }

    /// The bound (ms) within which fraction `q` (0–1) of the answered requests came back;
    /// `None` without any answered request, or when it lies past the last bound.
    pub fn response_within_ms(&self, q: f64) -> Option<u64> {
        let total: u64 = self.response_ms.iter().sum();
        if total == 0 {
            return None;
        }
        let wanted = ((total as f64) * q.clamp(0.0, 1.0)).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.response_ms.iter().enumerate() {
            seen += n;
            if seen >= wanted {
                return RESPONSE_BUCKETS_MS.get(i).copied();
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_differences_and_percentiles() {
        let m = Metrics::default();
        for ms in [1, 4, 5, 6, 30, 30, 30, 7000] {
            m.attempt(Some(Duration::from_millis(ms)), None);
        }
        m.attempt(
            None,
            Some(&crate::ClientError::Timeout {
                duration: 5,
                operation: "x".into(),
            }),
        );
        let before = m.snapshot();
        assert_eq!(before.requests, 9);
        assert_eq!(before.network_errors, 1);
        assert_eq!(before.response_ms, [3, 1, 0, 3, 0, 0, 0, 0, 1]);
        assert_eq!(before.response_within_ms(0.5), Some(10), "the 4th of 8 took 6 ms");
        assert_eq!(before.response_within_ms(0.75), Some(50), "the 6th took 30 ms");
        assert_eq!(before.response_within_ms(0.25), Some(5));
        assert_eq!(before.response_within_ms(1.0), None, "the slowest is past 5 s");

        m.sent(100);
        m.attempt(Some(Duration::from_millis(200)), None);
        let delta = m.snapshot().since(&before);
        assert_eq!(
            (delta.requests, delta.bytes_sent, delta.network_errors),
            (1, 100, 0)
        );
        assert_eq!(delta.response_ms, [0, 0, 0, 0, 0, 1, 0, 0, 0]);
        let mut total = TransferMetrics::default();
        total.add(&before);
        total.add(&delta);
        assert_eq!(total, m.snapshot());
        assert_eq!(TransferMetrics::default().response_within_ms(0.5), None);
    }
}
