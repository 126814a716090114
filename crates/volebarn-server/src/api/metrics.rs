//! `GET /metrics`: Prometheus text exposition (requests by route and status, bytes in/out,
//! and storage gauges read at scrape time).

use super::AppState;
use crate::error::{ServiceError, ServiceResult};
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: &'static str,
}

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    bytes: Family<DirectionLabels, Counter>,
    files: Gauge,
    logical_bytes: Gauge,
    chunks: Gauge,
    stored_bytes: Gauge,
    dedup_ratio: Gauge<f64, AtomicU64>,
    journal_head: Gauge,
    long_polls: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("volebarn");
        let requests = Family::<RequestLabels, Counter>::default();
        let bytes = Family::<DirectionLabels, Counter>::default();
        let (files, logical_bytes, chunks, stored_bytes, journal_head) = (
            Gauge::default(),
            Gauge::default(),
            Gauge::default(),
            Gauge::default(),
            Gauge::default(),
        );
        let dedup_ratio = Gauge::<f64, AtomicU64>::default();
        let long_polls = Gauge::default();
        registry.register(
            "http_requests",
            "HTTP requests by method, route and status",
            requests.clone(),
        );
        registry.register(
            "http_bytes",
            "HTTP body bytes by direction (in, out; by Content-Length)",
            bytes.clone(),
        );
        registry.register("files", "Current files", files.clone());
        registry.register(
            "logical_bytes",
            "Sum of current file sizes",
            logical_bytes.clone(),
        );
        registry.register("chunks", "Stored chunks", chunks.clone());
        registry.register(
            "stored_bytes",
            "Bytes held by stored chunks (after dedup)",
            stored_bytes.clone(),
        );
        registry.register(
            "dedup_ratio",
            "Logical bytes of current files per stored chunk byte",
            dedup_ratio.clone(),
        );
        registry.register("journal_head", "Highest revision committed", journal_head.clone());
        registry.register(
            "long_polls",
            "Long-polls of /changes parked waiting for a commit",
            long_polls.clone(),
        );
        Metrics {
            registry,
            requests,
            bytes,
            files,
            logical_bytes,
            chunks,
            stored_bytes,
            dedup_ratio,
            journal_head,
            long_polls,
        }
    }
}

fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Metrics {
    pub fn record(&self, method: &str, route: &str, status: u16, bytes_in: u64, bytes_out: u64) {
        let labels = RequestLabels {
            method: method.to_string(),
            route: route.to_string(),
            status,
        };
        self.requests.get_or_create(&labels).inc();
        self.bytes
            .get_or_create(&DirectionLabels { direction: "in" })
            .inc_by(bytes_in);
        self.bytes
            .get_or_create(&DirectionLabels { direction: "out" })
            .inc_by(bytes_out);
    }
}

pub async fn metrics(State(st): State<AppState>) -> ServiceResult<Response> {
    let stats = st.service.stats().await?;
    let m = &st.metrics;
    m.files.set(gauge_value(stats.files));
    m.logical_bytes.set(gauge_value(stats.file_bytes));
    m.chunks.set(gauge_value(stats.chunks));
    m.stored_bytes.set(gauge_value(stats.chunk_bytes));
    let ratio = if stats.chunk_bytes == 0 {
        1.0
    } else {
        stats.file_bytes as f64 / stats.chunk_bytes as f64
    };
    m.dedup_ratio.set(ratio);
    m.journal_head.set(gauge_value(stats.head_rev));
    m.long_polls.set(gauge_value(st.service.parked_long_polls()));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &m.registry)
        .map_err(|e| ServiceError::Internal(format!("encoding metrics: {e}")))?;
    let mut resp = text.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    Ok(resp)
}
