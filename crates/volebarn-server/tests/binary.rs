//! The real `volebarn-server` binary: start-up line, generated token printed once, memory
//! bounded while streaming a 1 GiB upload, graceful shutdown on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use volebarn_client::{Client, ClientConfig, Xxh3};
use volebarn_core::hash::Xxh3Hasher;
use volebarn_testkit::pseudo_random;

struct Proc {
    child: Child,
    url: String,
    printed: Vec<String>,
}

fn spawn(data: &std::path::Path) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_volebarn-server"))
        .args(["--port", "0", "--data-dir"])
        .arg(data)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn server");
    let stdout = child.stdout.take().expect("stdout");
    let mut printed = Vec::new();
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("server printed its listening line")
            .expect("utf-8");
        printed.push(line.clone());
        if let Some(url) = line.strip_prefix("volebarn-server listening on ") {
            break url.to_string();
        }
    };
    Proc { child, url, printed }
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("field present")
}

fn sigterm_and_wait(mut p: Proc) {
    let ok = Command::new("kill")
        .args(["-TERM", &p.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(ok.success());
    let status = p.child.wait().expect("wait");
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_prints_url_and_token_streams_1gib_in_bounded_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let p = spawn(&data);
    assert!(p.url.starts_with("https://127.0.0.1:"), "{}", p.url);
    let token = std::fs::read_to_string(data.join("token")).expect("token file");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(data.join("token")).expect("meta").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "token is private");
    assert!(
        p.printed.iter().any(|l| l.trim() == token.trim()),
        "generated token printed: {:?}",
        p.printed
    );

    let mut cfg = ClientConfig::new(p.url.clone(), token.trim());
    cfg.ca_cert = Some(data.join("tls/cert.pem"));
    let client = Client::new(cfg).expect("client");
    client.ping().await.expect("ping");

    // 1 GiB generated on the fly: neither side holds it in memory.
    const PIECE: usize = 1024 * 1024;
    const PIECES: usize = 1024;
    let piece = pseudo_random(PIECE, 11);
    let mut hasher = Xxh3Hasher::new();
    for i in 0..PIECES {
        let mut p2 = piece.clone();
        p2[..8].copy_from_slice(&(i as u64).to_le_bytes());
        hasher.update(&p2);
    }
    let expected = hasher.finish();
    let rss_before = status_kib(p.child.id(), "VmRSS:");
    let stream = futures_util::stream::iter((0..PIECES).map(move |i| {
        let mut p2 = piece.clone();
        p2[..8].copy_from_slice(&(i as u64).to_le_bytes());
        Ok::<_, std::io::Error>(p2)
    }));
    let token = token.trim().to_string();
    let http = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(data.join("tls/cert.pem")).expect("pem"))
                .expect("cert"),
        )
        .build()
        .expect("http");
    let resp = http
        .post(format!("{}/files/huge.bin", p.url))
        .bearer_auth(&token)
        .header("x-file-hash", expected.to_string())
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .expect("upload");
    assert_eq!(resp.status(), 413, "1 GiB is over the default 100MB limit");
    sigterm_and_wait(p);

    // Second start: the token is not printed again; a larger limit by flag.
    let mut child = Command::new(env!("CARGO_BIN_EXE_volebarn-server"))
        .args(["--port", "0", "--max-file-size", "2GiB", "--data-dir"])
        .arg(&data)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut printed = Vec::new();
    let url = loop {
        let line = lines.next().expect("line").expect("utf-8");
        printed.push(line.clone());
        if let Some(url) = line.strip_prefix("volebarn-server listening on ") {
            break url.to_string();
        }
    };
    assert!(
        !printed.iter().any(|l| l.contains(&token)),
        "token printed only once: {printed:?}"
    );
    let p = Proc { child, url, printed };
    let rss_start = status_kib(p.child.id(), "VmRSS:");
    let piece = pseudo_random(PIECE, 11);
    let stream = futures_util::stream::iter((0..PIECES).map(move |i| {
        let mut p2 = piece.clone();
        p2[..8].copy_from_slice(&(i as u64).to_le_bytes());
        Ok::<_, std::io::Error>(p2)
    }));
    let resp = http
        .post(format!("{}/files/huge.bin", p.url))
        .bearer_auth(&token)
        .header("x-file-hash", expected.to_string())
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .expect("upload");
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap_or_default());
    let peak = status_kib(p.child.id(), "VmHWM:");
    let growth_mib = peak.saturating_sub(rss_start.max(rss_before)) / 1024;
    eprintln!(
        "server RSS at start {} MiB, peak during 1 GiB upload {} MiB",
        rss_start / 1024,
        peak / 1024
    );
    assert!(
        growth_mib <= 64,
        "server RSS grew by {growth_mib} MiB while streaming 1 GiB"
    );

    let mut cfg = ClientConfig::new(p.url.clone(), token.clone());
    cfg.ca_cert = Some(data.join("tls/cert.pem"));
    let client = Client::new(cfg).expect("client");
    let meta = client.get_file_metadata("huge.bin").await.expect("head");
    assert_eq!((meta.size, meta.xxhash3), ((PIECE * PIECES) as u64, expected));
    let out = dir.path().join("huge.out");
    let h: Xxh3 = client.download_to("huge.bin", &out).await.expect("download");
    assert_eq!(h, expected);
    assert_eq!(
        std::fs::metadata(&out).expect("meta").len(),
        (PIECE * PIECES) as u64
    );
    std::fs::remove_file(&out).expect("rm");
    sigterm_and_wait(p);
}
