//! The one test kit of the workspace (`publish = false`, a dev-dependency only): what every
//! test that starts a server shares, written once.
//!
//! It owns
//! - [`TestServer`]: the real server (`volebarn_server::start`) on `127.0.0.1:0` with TLS on
//!   (the self-signed certificate it generates), in a temp directory it owns; real clients
//!   that trust that certificate, a raw HTTP client for requests the typed client refuses to
//!   build, and (feature `sync`) sync engines over folders;
//! - trees: deterministic pseudo-random bytes, writing files and reading folders back the way
//!   a user sees them, and [`wait_for`], the one way a test waits (a condition polled against
//!   a deadline, never a bare sleep);
//! - [`FaultProxy`]: a TCP forwarder in front of the server that counts the bytes and breaks
//!   connections on purpose (refuse, cut after so many bytes, lose an answer, flip a byte);
//! - [`Garage`]: a real S3 server (single-node Garage) shared by a test binary, handing each
//!   test a bucket of its own ([`S3Bucket`]) for the S3 chunk store;
//! - [`pg_cluster`]: a throwaway PostgreSQL cluster per test binary, a fresh database per test.
//!
//! It must not know the server's internals: tests see what a user sees (bytes, hashes, status
//! and error codes, files on disk), and the kit only starts, stops and points at things.

mod garage;
mod postgres;
mod proxy;
mod server;
mod tree;

pub use garage::{Garage, S3Bucket, GARAGE_REGION};
pub use postgres::{pg_cluster, PgCluster};
pub use proxy::{Direction, Fault, FaultProxy};
pub use server::{fail_fast, TestServer};
pub use tree::{
    age, file_hash, files_under, pseudo_random, server_tree, tree, tree_and_dirs, wait_for, wait_until,
    write, write_pseudo_random, write_tree, PseudoRandom,
};

/// A real `curl` (`proto`: `--http2` or `--http1.1`) POSTing the file `body` with
/// `--data-binary` and extra `headers`: the status and the `OperationError` it printed. Runs on a
/// blocking thread, as the server runs on the test's runtime.
pub async fn curl_post(
    t: &TestServer,
    proto: &str,
    token: &str,
    path: &str,
    body: &std::path::Path,
    headers: &[&str],
) -> (u16, volebarn_core::OperationError) {
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sS", "--max-time", "120", proto, "--cacert"])
        .arg(t.ca_cert())
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(headers.iter().flat_map(|h| ["-H", h]))
        .arg("--data-binary")
        .arg(format!("@{}", body.display()))
        .args(["-w", "\n%{http_code}", &t.url(path)]);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("curl thread")
        .expect("curl is installed (make test installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "curl {proto} failed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (json, status) = stdout.rsplit_once('\n').expect("status line");
    let op = serde_json::from_str(json).unwrap_or_else(|e| panic!("not an OperationError ({e}): {json}"));
    (status.parse().expect("status"), op)
}

/// The status and `OperationError` body of an error response; panics, showing the body, when
/// the body is not an `OperationError`.
pub async fn operation_error(resp: reqwest::Response) -> (u16, volebarn_core::OperationError) {
    let status = resp.status().as_u16();
    let body = resp.text().await.expect("body");
    let op = serde_json::from_str(&body).unwrap_or_else(|e| panic!("not an OperationError ({e}): {body}"));
    (status, op)
}

/// Installs rustls's `ring` provider for this process (the one the server and client use);
/// a second call is harmless.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A report's list of paths (held as shared keys) as plain strings, to compare with what a
/// test expects.
pub fn names<K: std::ops::Deref<Target = str>>(paths: &[K]) -> Vec<&str> {
    paths.iter().map(|p| &**p).collect()
}
