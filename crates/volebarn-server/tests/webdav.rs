//! WebDAV at `/dav/` against the real TLS server: raw requests checked against what the REST
//! API sees, then the outside suites and clients (litmus, rclone) run against it.

use bytes::Bytes;
use reqwest::{Method, StatusCode};
use std::path::Path;
use std::process::Command;
use volebarn_client::Xxh3;
use volebarn_testkit::{pseudo_random, TestServer};

fn method(name: &str) -> Method {
    Method::from_bytes(name.as_bytes()).expect("method")
}

/// A request to `/dav/{path}` with the API token as the Basic password.
fn dav(t: &TestServer, m: &str, path: &str) -> reqwest::RequestBuilder {
    t.raw()
        .request(method(m), t.url(&format!("/dav/{path}")))
        .basic_auth("anyone", Some(t.token()))
}

/// The status of a request, after reading the whole answer: dav-server applies a PROPPATCH
/// while it streams the multistatus body, as every client that reads the answer sees.
async fn status(rb: reqwest::RequestBuilder) -> StatusCode {
    let resp = rb.send().await.expect("request");
    let status = resp.status();
    resp.bytes().await.expect("body");
    status
}

#[tokio::test]
async fn no_anonymous_access_and_the_token_is_the_password() {
    let t = TestServer::start().await;
    let anon = t.raw().get(t.url("/dav/")).send().await.expect("request");
    assert_eq!(anon.status(), StatusCode::UNAUTHORIZED);
    let challenge = anon
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(challenge.starts_with("Basic realm=\"volebarn\""), "{challenge}");
    let wrong = t
        .raw()
        .request(method("PROPFIND"), t.url("/dav/"))
        .basic_auth("anyone", Some("not-the-token"))
        .send()
        .await
        .expect("request");
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        status(dav(&t, "PROPFIND", "").header("depth", "0")).await,
        StatusCode::MULTI_STATUS
    );
    // The REST API still wants its bearer token: Basic credentials are WebDAV's only.
    let rest = t
        .raw()
        .get(t.url("/directories"))
        .basic_auth("anyone", Some(t.token()))
        .send()
        .await
        .expect("request");
    assert_eq!(rest.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_put_is_a_volebarn_change_with_the_same_bytes_hash_and_etag() {
    let t = TestServer::start().await;
    let c = &t.client;
    let head = c.changes(0, 0).await.expect("changes").next;
    let body = Bytes::from(pseudo_random(3_000_000, 9));

    // No parent: WebDAV creates none (409), and nothing is written.
    assert_eq!(
        status(dav(&t, "PUT", "docs/big.bin").body(body.clone())).await,
        StatusCode::CONFLICT
    );
    assert_eq!(status(dav(&t, "MKCOL", "docs")).await, StatusCode::CREATED);
    assert_eq!(
        status(dav(&t, "MKCOL", "docs")).await,
        StatusCode::METHOD_NOT_ALLOWED
    );
    let put = dav(&t, "PUT", "docs/big.bin")
        .header("x-oc-mtime", "1600000000")
        .body(body.clone())
        .send()
        .await
        .expect("put");
    assert_eq!(put.status(), StatusCode::CREATED);
    assert_eq!(
        put.headers().get("x-oc-mtime").and_then(|v| v.to_str().ok()),
        Some("accepted")
    );

    // The REST API sees the same file: bytes, hash, the client's mtime; /changes has it.
    let meta = c.get_file_metadata("docs/big.bin").await.expect("metadata");
    assert_eq!(meta.xxhash3, Xxh3::of(&body));
    assert_eq!(meta.size, body.len() as u64);
    assert_eq!(meta.modified, 1_600_000_000_000_000_000);
    assert_eq!(c.download_file("docs/big.bin").await.expect("download"), body);
    let changes = c.changes(head, 0).await.expect("changes");
    assert!(changes.changes.iter().any(|ch| ch.path == "docs/big.bin"));

    // GET streams it back with the hash and the REST ETag.
    let get = dav(&t, "GET", "docs/big.bin").send().await.expect("get");
    assert_eq!(get.status(), StatusCode::OK);
    let header = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    assert_eq!(header(&get, "x-file-hash"), Some(meta.xxhash3.to_string()));
    assert_eq!(header(&get, "etag"), Some(format!("\"{}\"", meta.rev)));
    assert_eq!(get.bytes().await.expect("body"), body);
    let range = dav(&t, "GET", "docs/big.bin")
        .header("range", "bytes=1048570-1048589")
        .send()
        .await
        .expect("range");
    assert_eq!(range.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        range.bytes().await.expect("body"),
        body.slice(1_048_570..1_048_590)
    );

    // PROPFIND reports what REST reports.
    let listing = dav(&t, "PROPFIND", "docs/")
        .header("depth", "1")
        .send()
        .await
        .expect("propfind");
    assert_eq!(listing.status(), StatusCode::MULTI_STATUS);
    let xml = listing.text().await.expect("xml");
    // dav-server writes the entity tag without its quotes in PROPFIND.
    assert!(xml.contains(&format!("getetag>{}<", meta.rev)), "{xml}");
    assert!(xml.contains(&format!(">{}<", body.len())), "{xml}");
    assert!(xml.contains("Sun, 13 Sep 2020 12:26:40 GMT"), "{xml}");
    let quota = dav(&t, "PROPFIND", "")
        .header("depth", "0")
        .body(
            r#"<?xml version="1.0"?><propfind xmlns="DAV:"><prop>
            <quota-used-bytes/><quota-available-bytes/></prop></propfind>"#,
        )
        .send()
        .await
        .expect("propfind quota");
    let xml = quota.text().await.expect("xml");
    assert!(
        xml.contains(&format!("quota-used-bytes>{}<", body.len())),
        "{xml}"
    );
    assert!(xml.contains("quota-available-bytes>"), "{xml}");

    // A file written over REST reads the same over WebDAV.
    let small = Bytes::from_static(b"from the REST API\n");
    let m = c
        .upload_file("docs/rest.txt", small.clone())
        .await
        .expect("upload");
    let get = dav(&t, "GET", "docs/rest.txt").send().await.expect("get");
    assert_eq!(header(&get, "etag"), Some(format!("\"{}\"", m.rev)));
    assert_eq!(get.bytes().await.expect("body"), small);
}

#[tokio::test]
async fn copy_move_delete_keep_versions_and_honour_overwrite() {
    let t = TestServer::start().await;
    let c = &t.client;
    let one = Bytes::from_static(b"one\n");
    c.upload_file("a/one.txt", one.clone()).await.expect("upload");
    c.upload_file("a/two.txt", Bytes::from_static(b"two\n"))
        .await
        .expect("upload");
    let dest = |p: &str| t.url(&format!("/dav/{p}"));
    assert_eq!(
        status(dav(&t, "COPY", "a/one.txt").header("destination", dest("a/copy.txt"))).await,
        StatusCode::CREATED
    );
    assert_eq!(c.download_file("a/copy.txt").await.expect("copy"), one);
    assert_eq!(
        status(
            dav(&t, "MOVE", "a/two.txt")
                .header("destination", dest("a/copy.txt"))
                .header("overwrite", "F")
        )
        .await,
        StatusCode::PRECONDITION_FAILED
    );
    assert_eq!(
        status(dav(&t, "MOVE", "a/two.txt").header("destination", dest("a/copy.txt"))).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        c.download_file("a/copy.txt").await.expect("moved"),
        Bytes::from_static(b"two\n")
    );
    assert_eq!(
        status(dav(&t, "MOVE", "a/").header("destination", dest("b/"))).await,
        StatusCode::CREATED
    );
    assert_eq!(c.download_file("b/one.txt").await.expect("moved dir"), one);
    assert_eq!(status(dav(&t, "DELETE", "b/")).await, StatusCode::NO_CONTENT);
    assert!(c.get_file_metadata("b/one.txt").await.is_err());
    // Deleted through WebDAV, restorable through REST.
    let versions = c.versions("b/one.txt").await.expect("versions");
    assert!(!versions.versions.is_empty());
}

async fn colour(t: &TestServer, path: &str) -> String {
    let r = dav(t, "PROPFIND", path)
        .header("depth", "0")
        .body(r#"<?xml version="1.0"?><propfind xmlns="DAV:"><prop><colour xmlns="urn:x-test"/></prop></propfind>"#)
        .send()
        .await
        .expect("propfind");
    assert_eq!(r.status(), StatusCode::MULTI_STATUS);
    r.text().await.expect("xml")
}

#[tokio::test]
async fn dead_properties_persist_and_follow_their_file() {
    let mut t = TestServer::start().await;
    t.client
        .upload_file("p.txt", Bytes::from_static(b"x"))
        .await
        .expect("upload");
    let patch = r#"<?xml version="1.0"?><propertyupdate xmlns="DAV:"><set><prop>
        <colour xmlns="urn:x-test">heron grey</colour></prop></set></propertyupdate>"#;
    assert_eq!(
        status(dav(&t, "PROPPATCH", "p.txt").body(patch)).await,
        StatusCode::MULTI_STATUS
    );
    assert_eq!(
        status(dav(&t, "PROPPATCH", "absent.txt").body(patch)).await,
        StatusCode::NOT_FOUND
    );
    t.restart().await;
    assert!(colour(&t, "p.txt").await.contains("heron grey"));
    // A move through REST carries them; a delete and a new file at the path starts clean.
    t.client.move_file("p.txt", "q.txt").await.expect("move");
    assert!(colour(&t, "q.txt").await.contains("heron grey"));
    t.client.delete_file("q.txt").await.expect("delete");
    t.client
        .upload_file("q.txt", Bytes::from_static(b"y"))
        .await
        .expect("upload");
    assert!(!colour(&t, "q.txt").await.contains("heron grey"));

    // Those of files inside a directory go with the directory's WebDAV MOVE and COPY.
    t.client
        .upload_file("album/photos/p1.jpg", Bytes::from_static(b"jpeg"))
        .await
        .expect("upload");
    assert_eq!(
        status(dav(&t, "PROPPATCH", "album/photos/p1.jpg").body(patch)).await,
        StatusCode::MULTI_STATUS
    );
    let to = |dest: &str| t.url(&format!("/dav/{dest}"));
    assert_eq!(
        status(dav(&t, "MOVE", "album/").header("destination", to("trip/"))).await,
        StatusCode::CREATED
    );
    assert!(colour(&t, "trip/photos/p1.jpg").await.contains("heron grey"));
    assert_eq!(
        status(dav(&t, "COPY", "trip/").header("destination", to("trip-copy/"))).await,
        StatusCode::CREATED
    );
    assert!(colour(&t, "trip-copy/photos/p1.jpg").await.contains("heron grey"));
    assert!(colour(&t, "trip/photos/p1.jpg").await.contains("heron grey"));
    // A new file where a moved one was starts clean.
    t.client
        .upload_file("album/photos/p1.jpg", Bytes::from_static(b"new"))
        .await
        .expect("upload");
    assert!(!colour(&t, "album/photos/p1.jpg").await.contains("heron grey"));
}

#[tokio::test]
async fn a_put_over_the_size_limit_is_413_and_leaves_nothing() {
    let t = TestServer::start_with(|cfg| cfg.max_file_size = 100_000).await;
    let big = Bytes::from(pseudo_random(300_000, 3));
    assert_eq!(
        status(dav(&t, "PUT", "big.bin").body(big.clone())).await,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    // Without a length up front the limit is found while streaming.
    let stream = futures_util::stream::iter(
        big.chunks(16_384)
            .map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    );
    assert_eq!(
        status(dav(&t, "PUT", "big.bin").body(reqwest::Body::wrap_stream(stream))).await,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert!(t.client.get_file_metadata("big.bin").await.is_err());
    assert_eq!(status(dav(&t, "GET", "big.bin")).await, StatusCode::NOT_FOUND);
}

/// Runs an outside tool, returning its combined output; panics with it when it fails.
fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e} (install it with `make tools`)"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

/// The litmus suites run, each of which must end with 0 failures.
const LITMUS_SUITES: &str = "basic copymove props locks http";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn litmus_suites_pass() {
    let t = TestServer::start().await;
    let url = t.url("/dav/");
    let token = t.token().to_string();
    // litmus writes debug.log and child.log into its working directory.
    let logs = t.dir.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        run(Command::new("litmus")
            .current_dir(&logs)
            .arg("--keep-going")
            .arg(&url)
            .arg("litmus")
            .arg(&token)
            .env("TESTS", LITMUS_SUITES))
    })
    .await
    .expect("litmus");
    println!("{out}");
    let summaries: Vec<&str> = out.lines().filter(|l| l.starts_with("<- summary")).collect();
    assert_eq!(summaries.len(), LITMUS_SUITES.split(' ').count(), "{out}");
    for line in summaries {
        assert!(line.contains(" 0 failed"), "{line}\n{out}");
    }
}

/// rclone with a webdav remote `vb:` for the test server (configured through the
/// environment), `vendor` as given.
fn rclone(t: &TestServer, vendor: &str) -> impl Fn(&[&str]) -> String {
    let obscured = run(Command::new("rclone").args(["obscure", t.token()]));
    let env = [
        (
            "RCLONE_CONFIG",
            t.dir.path().join("rclone.conf").display().to_string(),
        ),
        ("RCLONE_CONFIG_VB_TYPE", "webdav".to_string()),
        ("RCLONE_CONFIG_VB_URL", t.url("/dav/")),
        ("RCLONE_CONFIG_VB_VENDOR", vendor.to_string()),
        ("RCLONE_CONFIG_VB_USER", "volebarn".to_string()),
        ("RCLONE_CONFIG_VB_PASS", obscured.trim().to_string()),
    ];
    let ca = t.ca_cert().display().to_string();
    move |args: &[&str]| {
        run(Command::new("rclone")
            .args(args)
            .args(["--ca-cert", &ca, "--transfers", "8", "--checkers", "8"])
            .envs(env.iter().map(|(k, v)| (k, v))))
    }
}

fn write_small_tree(root: &Path, files: usize) {
    for i in 0..files {
        let rel = format!("d{:02}/s{}/f{i:05}.txt", i % 40, i % 3);
        volebarn_testkit::write(root, &rel, &pseudo_random(50 + i % 700, i as u64));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rclone_sync_check_and_round_trip() {
    let t = TestServer::start().await;
    let src = t.dir.path().join("src");
    write_small_tree(&src, 3000);
    volebarn_testkit::write(&src, "notes/today.txt", b"written locally\n");
    let rc = rclone(&t, "other");
    let s = src.display().to_string();
    tokio::task::block_in_place(|| {
        rc(&["sync", &s, "vb:tree"]);
        rc(&["check", &s, "vb:tree"]);
    });
    let server = volebarn_testkit::server_tree(&t.client).await;
    assert_eq!(server.len(), 3001);
    assert_eq!(server["tree/notes/today.txt"], b"written locally\n");

    // A change through REST comes back with rclone copy.
    t.client
        .update_file(
            "tree/notes/today.txt",
            Bytes::from_static(b"edited on the server\n"),
        )
        .await
        .expect("update");
    let back = t.dir.path().join("back");
    let b = back.display().to_string();
    tokio::task::block_in_place(|| rc(&["copy", "vb:tree", &b]));
    assert_eq!(
        std::fs::read(back.join("notes/today.txt")).expect("read"),
        b"edited on the server\n"
    );
    assert_eq!(volebarn_testkit::tree(&back).len(), 3001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rclone_modification_times_survive_the_round_trip() {
    let t = TestServer::start().await;
    let src = t.dir.path().join("src");
    write_small_tree(&src, 20);
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_500_000_000);
    for p in volebarn_testkit::files_under(&src) {
        let f = std::fs::File::options().write(true).open(&p).expect("open");
        f.set_modified(when).expect("set mtime");
    }
    // rclone sends X-OC-Mtime only to servers it knows keep it (ownCloud's protocol).
    let rc = rclone(&t, "owncloud");
    let (s, back) = (src.display().to_string(), t.dir.path().join("back"));
    let b = back.display().to_string();
    tokio::task::block_in_place(|| {
        rc(&["copy", &s, "vb:m"]);
        rc(&["copy", "vb:m", &b]);
    });
    let meta = t
        .client
        .get_file_metadata("m/d00/s0/f00000.txt")
        .await
        .expect("metadata");
    assert_eq!(meta.modified, 1_500_000_000_000_000_000);
    let files = volebarn_testkit::files_under(&back);
    assert_eq!(files.len(), 20);
    for p in files {
        let m = std::fs::metadata(&p).expect("stat").modified().expect("mtime");
        assert_eq!(m, when, "{}", p.display());
    }
}
