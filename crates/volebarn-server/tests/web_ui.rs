//! The web UI end to end: a real TLS server, Debian's headless Chromium driven by Playwright
//! (`ui-tests/web-ui.test.mjs`, run with `node`), then the REST API checks what the browser
//! did (bytes of uploads, renamed, restored and kept files). Also the UI's HTTP surface
//! without a browser: security headers, the session cookie, CSRF and the brute-force guard.
//!
//! Screenshots of the main views land in `target/ui-screenshots/`. Needs `node` with the
//! packages of `ui-tests/` (`npm ci` there; `make tools` does it) and `chromium`
//! (`VOLEBARN_CHROMIUM` overrides `/usr/bin/chromium`). Under `CI=true` a missing one fails
//! the test; elsewhere the browser test is skipped with the reason.

use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::time::Duration;
use volebarn_testkit::{pseudo_random, wait_until, TestServer};

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `target/ui-screenshots` of the workspace (beside the build's own target directory).
fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir().join("../../target"));
    target.join("ui-screenshots")
}

/// What the browser test needs, or why it cannot run.
fn browser_tools() -> Result<(PathBuf, PathBuf), String> {
    let chromium = std::env::var_os("VOLEBARN_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if !chromium.is_file() {
        return Err(format!(
            "{} is missing (apt-get install chromium, or `make tools`)",
            chromium.display()
        ));
    }
    let tests = manifest_dir().join("ui-tests");
    if !tests.join("node_modules/playwright-core").is_dir() {
        return Err(format!(
            "playwright-core is not installed: run `npm ci` in {} (or `make tools`)",
            tests.display()
        ));
    }
    Ok((chromium, tests))
}

fn cookie_of(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_string)
}

/// The DOM-free modules (sizes, conflict names, diff, ZIP, multipart, BLAKE3) under
/// `node --test`.
#[test]
fn the_ui_modules_pass_their_unit_tests() {
    let script = manifest_dir().join("ui-tests/unit.test.mjs");
    let out = match std::process::Command::new("node")
        .arg("--test")
        .arg(&script)
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            let why = format!("cannot run node: {e} (apt-get install nodejs, or `make tools`)");
            assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "{why}");
            eprintln!("skipped: {why}");
            return;
        }
    };
    let report = String::from_utf8_lossy(&out.stdout);
    println!("{report}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "the UI unit tests failed; their report is above"
    );
    assert!(
        report.contains("# fail 0") && !report.contains("# pass 0"),
        "{report}"
    );
}

#[tokio::test]
async fn the_page_is_public_with_strict_headers_and_the_api_is_not() {
    let t = TestServer::start().await;
    let http = t.raw();
    for (path, kind) in [
        ("/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/style.css", "text/css"),
        ("/ui/icon.svg", "image/svg+xml"),
    ] {
        let resp = http.get(t.url(path)).send().await.expect("get");
        assert_eq!(resp.status(), 200, "{path}");
        let h = resp.headers();
        let header = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        assert!(
            header("content-type").starts_with(kind),
            "{path}: {}",
            header("content-type")
        );
        let csp = header("content-security-policy");
        for part in [
            "default-src 'self'",
            "script-src 'self'",
            "frame-ancestors 'none'",
            "img-src 'self' blob: data:",
        ] {
            assert!(csp.contains(part), "{path}: CSP {csp:?} lacks {part:?}");
        }
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        assert_eq!(header("x-content-type-options"), "nosniff");
        assert_eq!(header("referrer-policy"), "no-referrer");
        assert!(!header("cache-control").is_empty(), "{path}");
    }
    let page = http
        .get(t.url("/"))
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("text");
    assert!(
        !page.contains("<script>") && !page.contains("style="),
        "nothing inline"
    );
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "no other origin"
    );
    let missing = http.get(t.url("/ui/nope.js")).send().await.expect("get");
    assert_eq!(missing.status(), 404);
    // The API itself still needs a credential.
    let resp = http.get(t.url("/directories")).send().await.expect("get");
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn a_session_cookie_authenticates_writes_only_with_the_ui_header() {
    let t = TestServer::start().await;
    let http = t.raw();
    let wrong = http
        .post(t.url("/auth/login"))
        .json(&serde_json::json!({"token": "not the token"}))
        .send()
        .await
        .expect("login");
    assert_eq!(wrong.status(), 401);
    let body: serde_json::Value = wrong.json().await.expect("error body");
    assert_eq!(body["error_code"], "unauthorized");

    let ok = http
        .post(t.url("/auth/login"))
        .json(&serde_json::json!({"token": t.token()}))
        .send()
        .await
        .expect("login");
    assert_eq!(ok.status(), 204);
    let set = cookie_of(&ok, "volebarn_session").expect("session cookie");
    for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(set.contains(attr), "{set} lacks {attr}");
    }
    assert!(!set.contains(t.token()), "the cookie is not the token");
    assert!(cookie_of(&ok, "volebarn_signed_in").is_some());
    let value = set
        .split(';')
        .next()
        .and_then(|kv| kv.split_once('='))
        .map(|(_, v)| v.to_string())
        .expect("value");
    let cookie = format!("volebarn_session={value}");

    let list = http
        .get(t.url("/directories"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("list");
    assert_eq!(list.status(), 200);
    assert!(list.headers().contains_key("x-head-rev"));
    // A mkdir authenticated by the cookie, with these extra headers.
    let mkdir = |dir: &str, extra: &[(&'static str, &'static str)]| {
        let mut req = http
            .post(t.url(&format!("/directories/{dir}")))
            .header("cookie", &cookie);
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        req.send()
    };
    // A write with the cookie alone (what a cross-site form could send) is refused...
    let forged = mkdir("forged", &[]).await.expect("mkdir");
    assert_eq!(forged.status(), 403);
    let body: serde_json::Value = forged.json().await.expect("error body");
    assert_eq!(body["error_code"], "permission_denied");
    let other_origin = mkdir("forged", &[("origin", "https://evil.example")])
        .await
        .expect("mkdir");
    assert_eq!(other_origin.status(), 403);
    // ...and allowed with the UI's header, or from this server's origin.
    let made = mkdir("made", &[("x-volebarn-ui", "1")]).await.expect("mkdir");
    assert_eq!(made.status(), 201);
    let host = t.url("").trim_end_matches('/').to_string();
    let same = http
        .post(t.url("/directories/same-origin"))
        .header("cookie", &cookie)
        .header("origin", host)
        .send()
        .await
        .expect("mkdir");
    assert_eq!(same.status(), 201);
    // A tampered cookie is no credential.
    let tampered = http
        .get(t.url("/directories"))
        .header("cookie", format!("volebarn_session=1{value}"))
        .send()
        .await
        .expect("list");
    assert_eq!(tampered.status(), 401);
    let out = http.post(t.url("/auth/logout")).send().await.expect("logout");
    assert_eq!(out.status(), 204);
    let cleared = cookie_of(&out, "volebarn_session").expect("cleared cookie");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
}

#[tokio::test]
async fn wrong_tokens_at_login_trip_the_brute_force_guard() {
    let t = TestServer::start_with(|cfg| cfg.limits.auth_failures = 3).await;
    let http = t.raw();
    let login = |token: &str| {
        http.post(t.url("/auth/login"))
            .json(&serde_json::json!({ "token": token }))
            .send()
    };
    for _ in 0..3 {
        assert_eq!(login("guess").await.expect("login").status(), 401);
    }
    let blocked = login(t.token()).await.expect("login");
    assert_eq!(blocked.status(), 429, "even the right token, once blocked");
    assert!(blocked.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn trash_lists_deleted_files_of_a_folder_until_restored() {
    let t = TestServer::start().await;
    let c = &t.client;
    c.upload_file("d/gone.txt", Bytes::from_static(b"one"))
        .await
        .expect("upload");
    c.upload_file("d/kept.txt", Bytes::from_static(b"two"))
        .await
        .expect("upload");
    c.upload_file("d/sub/deep.txt", Bytes::from_static(b"3"))
        .await
        .expect("upload");
    let gone = c.list_directory(Some("d")).await.expect("list").entries;
    let rev = gone.iter().find(|e| e.name == "gone.txt").expect("gone.txt").rev;
    c.delete_file("d/gone.txt").await.expect("delete");
    c.delete_file("d/sub/deep.txt").await.expect("delete");
    let trash = |dir: &'static str| {
        let http = t.raw();
        let url = t.url(&format!("/trash/{dir}"));
        let token = t.token().to_string();
        async move {
            let resp = http.get(url).bearer_auth(token).send().await.expect("trash");
            assert_eq!(resp.status(), 200);
            resp.json::<volebarn_core::types::TrashList>()
                .await
                .expect("json")
        }
    };
    let list = trash("d").await;
    let names: Vec<_> = list.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["gone.txt"], "direct children only, deleted only");
    assert_eq!(list.entries[0].rev, rev);
    assert_eq!(list.entries[0].size, 3);
    // A version of it can be downloaded, then it is restored through /versions.
    let old = t
        .raw()
        .get(t.url(&format!("/files/d/gone.txt?rev={rev}")))
        .bearer_auth(t.token())
        .send()
        .await
        .expect("get version");
    assert_eq!(old.status(), 200);
    assert_eq!(old.bytes().await.expect("bytes"), Bytes::from_static(b"one"));
    let restored = t
        .raw()
        .post(t.url("/versions/d/gone.txt/restore"))
        .bearer_auth(t.token())
        .json(&serde_json::json!({ "rev": rev }))
        .send()
        .await
        .expect("restore");
    assert_eq!(restored.status(), 200);
    assert!(trash("d").await.entries.is_empty());
    assert_eq!(trash("d/sub").await.entries.len(), 1);
    let all = trash("d?recursive=true").await;
    let paths: Vec<_> = all.entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["d/sub/deep.txt"], "deleted files of subfolders too");
    let on_file = t
        .raw()
        .get(t.url("/trash/d/kept.txt"))
        .bearer_auth(t.token())
        .send()
        .await
        .expect("trash");
    assert_eq!(on_file.status(), 409);
}

#[tokio::test]
async fn a_chunked_commit_without_a_hash_gets_the_one_of_its_content() {
    let t = TestServer::start().await;
    let c = &t.client;
    let data = pseudo_random(5 << 20, 3);
    let parts = [&data[..4 << 20], &data[4 << 20..]];
    let mut chunks = Vec::new();
    for p in parts {
        let id = volebarn_core::ChunkId::of(p);
        chunks.push(volebarn_core::types::ChunkSpec {
            id,
            len: p.len() as u32,
        });
    }
    let commit = volebarn_core::types::ChunkedCommit {
        size: data.len() as u64,
        xxhash3: None,
        chunks,
    };
    let missing = c.commit_chunks("no-hash.bin", &commit, false).await.unwrap_err();
    assert_eq!(missing.status(), Some(400), "{missing}");
    for p in parts {
        c.put_chunk(volebarn_core::ChunkId::of(p), Bytes::copy_from_slice(p))
            .await
            .expect("chunk");
    }
    let meta = c
        .commit_chunks("no-hash.bin", &commit, false)
        .await
        .expect("commit");
    assert_eq!(meta.xxhash3, volebarn_core::Xxh3::of(&data));
    assert_eq!(c.download_file("no-hash.bin").await.expect("download"), data);
}

/// Files the browser uploads, made here so the bytes can be checked afterwards.
struct Uploads {
    single: PathBuf,
    folder: PathBuf,
    /// Large enough for the chunked upload (three 4 MiB chunks, the last one short).
    big: PathBuf,
}

fn make_uploads(dir: &Path) -> Uploads {
    let single = dir.join("upload.bin");
    std::fs::write(&single, pseudo_random(300_000, 7)).expect("write");
    let folder = dir.join("album");
    std::fs::create_dir_all(folder.join("inner")).expect("mkdir");
    std::fs::write(folder.join("a.txt"), b"first file of the folder\n").expect("write");
    std::fs::write(folder.join("inner/b.bin"), pseudo_random(70_000, 8)).expect("write");
    let big = dir.join("big.bin");
    std::fs::write(&big, pseudo_random(9 << 20, 9)).expect("write");
    Uploads { single, folder, big }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_ui_works_in_headless_chromium() {
    let (chromium, tests) = match browser_tools() {
        Ok(found) => found,
        Err(why) => {
            assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "{why}");
            eprintln!("skipped: {why}");
            return;
        }
    };
    let t = TestServer::start().await;
    let c = &t.client;
    // Something to browse: a folder with a text file in two versions, an image, and a file
    // with a sync client's conflict copy beside it.
    c.upload_file("docs/readme.txt", Bytes::from_static(b"first version\n"))
        .await
        .expect("upload");
    let current = c
        .update_file("docs/readme.txt", Bytes::from_static(b"second version\n"))
        .await
        .expect("replace");
    assert!(current.rev > 0);
    c.upload_file("docs/pixel.svg", Bytes::from_static(br#"<svg xmlns="http://www.w3.org/2000/svg" width="40" height="40"><rect width="40" height="40" fill="teal"/></svg>"#))
        .await
        .expect("upload");
    c.upload_file("notes.txt", Bytes::from_static(b"milk\neggs\nbread\n"))
        .await
        .expect("upload");
    let copy = Bytes::from_static(b"milk\nbutter\nbread\ntea\n");
    c.upload_file("notes (conflict 2026-11-30 101500).txt", copy.clone())
        .await
        .expect("upload");

    let work = tempfile::tempdir().expect("tempdir");
    let uploads = make_uploads(work.path());
    // The first chunk of the large file is on the server already, as if an earlier upload
    // had been cut off after it: the browser must upload only the other two.
    let big = std::fs::read(&uploads.big).expect("read");
    let first = Bytes::copy_from_slice(&big[..4 << 20]);
    c.put_chunk(volebarn_core::ChunkId::of(&first), first)
        .await
        .expect("first chunk");
    let downloads = work.path().join("downloads");
    let shots = screenshot_dir();
    std::fs::create_dir_all(&shots).expect("screenshot dir");

    let out = tokio::process::Command::new("node")
        .arg(tests.join("web-ui.test.mjs"))
        .current_dir(&tests)
        .env("VOLEBARN_URL", t.url(""))
        .env("VOLEBARN_TOKEN", t.token())
        .env("VOLEBARN_CHROMIUM", &chromium)
        .env("VOLEBARN_UPLOAD_FILE", &uploads.single)
        .env("VOLEBARN_UPLOAD_DIR", &uploads.folder)
        .env("VOLEBARN_UPLOAD_BIG", &uploads.big)
        .env("VOLEBARN_DOWNLOADS", &downloads)
        .env("VOLEBARN_SCREENSHOTS", &shots)
        .env("NODE_EXTRA_CA_CERTS", t.ca_cert())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(300), out)
        .await
        .expect("the browser test took over 5 minutes")
        .unwrap_or_else(|e| panic!("cannot run node: {e}"));
    println!("{}", String::from_utf8_lossy(&out.stdout));
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "the browser test failed ({}); its output is above",
        out.status
    );

    // What the browser did, seen through the REST API.
    let single = std::fs::read(&uploads.single).expect("read");
    assert_eq!(
        c.download_file("renamed.bin")
            .await
            .expect("renamed, deleted, restored"),
        single
    );
    assert!(c.download_file("upload.bin").await.is_err(), "renamed away");
    assert_eq!(c.download_file("big.bin").await.expect("chunked upload"), big);
    let meta = c.get_file_metadata("big.bin").await.expect("metadata");
    assert_eq!(
        meta.xxhash3,
        volebarn_core::Xxh3::of(&big),
        "the server's own hash"
    );
    assert_eq!(
        c.download_file("album/a.txt").await.expect("folder upload"),
        std::fs::read(uploads.folder.join("a.txt")).expect("read")
    );
    assert_eq!(
        c.download_file("album/inner/b.bin").await.expect("folder upload"),
        std::fs::read(uploads.folder.join("inner/b.bin")).expect("read")
    );
    assert_eq!(
        c.download_file("dropped.txt")
            .await
            .expect("drag and drop, deleted, undone, replaced"),
        Bytes::from_static(b"dropped again\n")
    );
    let kept = c.versions("dropped.txt").await.expect("versions").versions;
    assert!(
        kept.iter().any(|v| !v.current && v.size == 22),
        "the first drop is kept as a version: {kept:?}"
    );
    assert_eq!(
        c.download_file("docs/readme.txt")
            .await
            .expect("restored version"),
        Bytes::from_static(b"first version\n")
    );
    assert_eq!(c.download_file("notes.txt").await.expect("kept copy"), copy);
    let root = c.list_directory(None).await.expect("list").entries;
    assert!(
        !root.iter().any(|e| e.name.contains("(conflict")),
        "the conflict copy became the file"
    );
    assert!(
        c.list_directory(Some("made in browser")).await.is_ok(),
        "new folder"
    );
    let shot = |name: &str| shots.join(name);
    let ok = wait_until(Duration::from_secs(5), || async {
        [
            "login.png",
            "listing.png",
            "versions.png",
            "trash.png",
            "upload.png",
            "conflict.png",
            "phone.png",
        ]
        .iter()
        .all(|n| shot(n).is_file())
    })
    .await;
    assert!(ok, "screenshots missing in {}", shots.display());
}
