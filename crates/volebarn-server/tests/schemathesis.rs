//! The OpenAPI document is the API: schemathesis (PyPI, the version `make tools` pins into
//! `~/.cache/volebarn-venv`) generates requests from `/openapi.json` against a real server
//! (TLS, a token, some files and versions to find) and checks every answer: no server error,
//! every status code documented, content types and bodies as documented, and requests that
//! violate the schema refused. Any finding fails the test, with schemathesis's report.
//!
//! `VOLEBARN_SCHEMATHESIS` names the `st` binary to use. When none is installed the test says
//! so and passes, except under `CI=true`, where it fails.

use bytes::Bytes;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use volebarn_client::FileUpload;
use volebarn_testkit::TestServer;

/// Generated cases per operation (and phase): ~1 to 2 minutes on 2 busy cores.
const EXAMPLES: u32 = 60;
/// Fixed, so a finding is reproducible.
const SEED: u64 = 20261130;
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_schema_conformance,negative_data_rejection";

/// The schemathesis CLI: `VOLEBARN_SCHEMATHESIS`, the venv `make tools` fills, or `st` on PATH.
fn schemathesis() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("VOLEBARN_SCHEMATHESIS") {
        return Some(PathBuf::from(p));
    }
    let venv = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cache/volebarn-venv/bin/st"))
        .filter(|p| p.is_file());
    venv.or_else(|| {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .map(|d| d.join("st"))
            .find(|p| p.is_file())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_as_its_openapi_document_says() {
    let Some(st) = schemathesis() else {
        let msg = "schemathesis is not installed (run `make tools`, or set VOLEBARN_SCHEMATHESIS)";
        assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "{msg}");
        eprintln!("skipped: {msg}");
        return;
    };
    let t = TestServer::start().await;
    // Something to find: files in a directory, and a file with an older version.
    let files = |v: &str| {
        vec![
            FileUpload {
                path: "docs/a.txt".into(),
                content: Bytes::from(format!("a {v}")),
            },
            FileUpload {
                path: "b.bin".into(),
                content: Bytes::from(format!("b {v}")),
            },
        ]
    };
    for v in ["one", "two"] {
        let done = t.client.bulk_upload(files(v)).await.expect("seed files");
        assert!(done.failed.is_empty(), "{:?}", done.failed);
    }
    let work = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let out = tokio::process::Command::new(&st)
        .current_dir(work.path())
        .arg("run")
        .arg(t.url("/openapi.json"))
        .args(["--url", &t.url("")])
        .args(["--tls-verify", &t.ca_cert().display().to_string()])
        .args(["--header", &format!("Authorization: Bearer {}", t.token())])
        .args(["--checks", CHECKS])
        .args(["--seed", &SEED.to_string()])
        .args(["--max-examples", &EXAMPLES.to_string()])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--workers", "2"])
        .args(["--request-timeout", "30"])
        .arg("--no-shrink")
        // Generated tokens are wrong ones: they would trip the brute-force guard, and every
        // later case would be answered 429 (tests/web_ui.rs signs in, right and wrong).
        .args(["--exclude-path", "/auth/login"])
        .env("NO_COLOR", "1")
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(600), out)
        .await
        .expect("schemathesis finishes within 10 minutes")
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", st.display()));
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{report}");
    println!("schemathesis took {:?}", started.elapsed());
    assert!(
        out.status.success(),
        "schemathesis found problems ({}); its report is above",
        out.status
    );
    assert!(
        report.contains("generated") && !report.contains("0 generated"),
        "schemathesis ran no case"
    );
}
