//! `/openapi.json` documents every route of the router; `/metrics` counts what happened.

use bytes::Bytes;
use std::collections::BTreeSet;
use volebarn_testkit::{pseudo_random, TestServer};

#[tokio::test]
async fn openapi_lists_exactly_the_routes_of_the_router() {
    let t = TestServer::start().await;
    let resp = t
        .raw()
        .get(t.url("/openapi.json"))
        .bearer_auth(t.token())
        .send()
        .await
        .expect("get spec");
    assert_eq!(resp.status(), 200);
    let spec: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(spec["openapi"].as_str().map(|v| v.starts_with("3.")), Some(true));
    let mut documented = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for method in ["get", "put", "post", "delete", "head", "patch"] {
            if let Some(op) = item.get(method) {
                documented.insert((method.to_string(), path.clone()));
                // What the auth layer and the limits answer before any handler runs, and a
                // server failure. HEAD answers have no body.
                let expected: &[&str] = if path == "/health" {
                    &[]
                } else if path == "/auth/logout" {
                    // Signing out needs no credential.
                    &["429", "500"]
                } else {
                    &["401", "429", "500"]
                };
                for status in expected {
                    let response = &op["responses"][status];
                    assert!(response.is_object(), "{method} {path} does not document {status}");
                    let schema = &response["content"]["application/json"]["schema"]["$ref"];
                    if method == "head" {
                        assert!(response.get("content").is_none(), "{method} {path} {status}");
                    } else {
                        assert_eq!(
                            schema, "#/components/schemas/OperationError",
                            "{method} {path} documents no OperationError for {status}"
                        );
                    }
                }
            }
        }
    }
    let routed: BTreeSet<(String, String)> = volebarn_server::api::routes()
        .into_iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from the spec: {undocumented:?}"
    );
    assert!(unrouted.is_empty(), "spec paths with no route: {unrouted:?}");
    assert!(routed.len() >= 25, "{} routes", routed.len());
    // Every schema a documented body refers to exists.
    let schemas = spec["components"]["schemas"].as_object().expect("schemas");
    for name in [
        "FileMetadata",
        "OperationError",
        "SyncRequest",
        "SyncPlan",
        "ChangesResponse",
        "ErrorCode",
    ] {
        assert!(schemas.contains_key(name), "schema {name} missing");
    }
    // Served as RFC 3339 text, so documented as such.
    let archived = &schemas["VersionInfo"]["properties"]["archived"];
    assert!(
        archived.to_string().contains("\"string\"") && !archived.to_string().contains("integer"),
        "VersionInfo.archived: {archived}"
    );
    let text = serde_json::to_string(&spec).expect("text");
    for cap in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = cap.split('"').next().expect("name");
        assert!(schemas.contains_key(name), "dangling $ref to {name}");
    }
}

fn metric(text: &str, line_prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric line starting with {line_prefix:?} in:\n{text}"))
}

#[tokio::test]
async fn metrics_count_requests_and_storage() {
    let t = TestServer::start().await;
    let data = Bytes::from(pseudo_random(500_000, 12));
    t.client.upload_file("one", data.clone()).await.expect("upload");
    t.client.upload_file("two", data).await.expect("upload");
    let _ = t.client.download_file("absent").await;
    let resp = t
        .raw()
        .get(t.url("/metrics"))
        .bearer_auth(t.token())
        .send()
        .await
        .expect("metrics");
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.expect("text");
    assert_eq!(
        metric(
            &text,
            "volebarn_http_requests_total{method=\"POST\",route=\"/files/{*path}\",status=\"201\"}"
        ),
        2.0
    );
    assert_eq!(
        metric(
            &text,
            "volebarn_http_requests_total{method=\"GET\",route=\"/files/{*path}\",status=\"404\"}"
        ),
        1.0
    );
    assert_eq!(metric(&text, "volebarn_files "), 2.0);
    assert_eq!(metric(&text, "volebarn_logical_bytes "), 1_000_000.0);
    assert_eq!(metric(&text, "volebarn_stored_bytes "), 500_000.0);
    assert_eq!(metric(&text, "volebarn_dedup_ratio "), 2.0);
    assert!(metric(&text, "volebarn_journal_head ") >= 2.0);
    assert!(metric(&text, "volebarn_http_bytes_total{direction=\"in\"}") >= 1_000_000.0);
    let anonymous = t.raw().get(t.url("/metrics")).send().await.expect("metrics");
    assert_eq!(anonymous.status(), 401);
}
