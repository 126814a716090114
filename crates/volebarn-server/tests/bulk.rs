//! Bulk upload/download/delete, the manifest and `/bulk/sync`, through the real client.

use bytes::Bytes;
use std::collections::BTreeMap;
use volebarn_client::{
    ClientEntry, ClientManifest, ConflictStrategy, ErrorCode, FileUpload, SyncRequest, Xxh3,
};
use volebarn_core::sync::ConflictResolution;
use volebarn_testkit::{pseudo_random, TestServer};

fn upload(path: &str, content: &[u8]) -> FileUpload {
    FileUpload {
        path: path.to_string(),
        content: Bytes::copy_from_slice(content),
    }
}

#[tokio::test]
async fn bulk_upload_partial_failure_keeps_the_good_parts() {
    let t = TestServer::start_with(|c| c.max_file_size = 1000).await;
    // Built by hand: the typed client would refuse the bad path before sending it.
    let form = reqwest::multipart::Form::new()
        .text("path", "ok/one.txt")
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"one".to_vec()).file_name("f"),
        )
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"two".to_vec()).file_name("ok/two.txt"),
        )
        .text("path", "bad/../escape.txt")
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"evil".to_vec()).file_name("f"),
        )
        .text("path", "big.bin")
        .part(
            "file",
            reqwest::multipart::Part::bytes(vec![0u8; 1001]).file_name("f"),
        )
        .text("path", "wrong-hash.txt")
        .part("file", {
            let mut h = reqwest::header::HeaderMap::new();
            h.insert("x-file-hash", "0000000000000001".parse().expect("header"));
            reqwest::multipart::Part::bytes(b"abc".to_vec())
                .file_name("f")
                .headers(h)
        })
        .text("path", "Ünï côdé/three.txt")
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"three".to_vec()).file_name("f"),
        );
    let resp = t
        .raw()
        .post(t.url("/bulk/upload"))
        .bearer_auth(t.token())
        .multipart(form)
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 200);
    let body: volebarn_client::BulkUploadResponse = resp.json().await.expect("json");
    assert_eq!(body.success, ["ok/one.txt", "ok/two.txt", "Ünï côdé/three.txt"]);
    let codes: Vec<(String, ErrorCode)> = body
        .failed
        .iter()
        .map(|f| (f.path.clone(), f.error_code))
        .collect();
    assert_eq!(
        codes,
        [
            ("bad/../escape.txt".to_string(), ErrorCode::InvalidPath),
            ("big.bin".to_string(), ErrorCode::PayloadTooLarge),
            ("wrong-hash.txt".to_string(), ErrorCode::HashMismatch),
        ]
    );
    assert_eq!(
        t.client.download_file("ok/two.txt").await.expect("two"),
        Bytes::from_static(b"two")
    );
    assert_eq!(
        t.client.download_file("Ünï côdé/three.txt").await.expect("three"),
        Bytes::from_static(b"three")
    );
    for missing in ["big.bin", "wrong-hash.txt"] {
        assert_eq!(
            t.client.get_file_metadata(missing).await.unwrap_err().status(),
            Some(404)
        );
    }
    assert!(t.tmp_files().is_empty(), "failed parts leave no temp files");
}

#[tokio::test]
async fn bulk_upload_replaces_and_bulk_download_verifies() {
    let t = TestServer::start().await;
    let big = pseudo_random(5 * 1024 * 1024, 8);
    let first = t
        .client
        .bulk_upload(vec![
            upload("d/a.txt", b"a1"),
            upload("d/b.bin", &big),
            upload("c.txt", b"c"),
        ])
        .await
        .expect("bulk upload");
    assert!(first.failed.is_empty(), "{:?}", first.failed);
    let revs: Vec<u64> = first.files.iter().map(|f| f.rev).collect();
    assert!(
        revs.windows(2).all(|w| w[0] < w[1]),
        "each file gets its own rev: {revs:?}"
    );
    let second = t
        .client
        .bulk_upload(vec![upload("d/a.txt", b"a2")])
        .await
        .expect("replace");
    assert_eq!(second.success, ["d/a.txt"]);

    let paths: Vec<String> = ["d/a.txt", "nope.txt", "d/b.bin", "d", "c.txt"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let got = t.client.bulk_download(&paths).await.expect("bulk download");
    let files: Vec<(&str, &[u8])> = got
        .files
        .iter()
        .map(|f| (f.path.as_str(), f.content.as_ref()))
        .collect();
    assert_eq!(
        files,
        [
            ("d/a.txt", &b"a2"[..]),
            ("d/b.bin", &big[..]),
            ("c.txt", &b"c"[..])
        ]
    );
    assert_eq!(got.files[1].xxhash3, Xxh3::of(&big));
    let missing: Vec<(&str, ErrorCode)> = got
        .missing
        .iter()
        .map(|m| (m.path.as_str(), m.error_code))
        .collect();
    assert_eq!(
        missing,
        [
            ("nope.txt", ErrorCode::FileNotFound),
            ("d", ErrorCode::IsADirectory)
        ]
    );
}

#[tokio::test]
async fn bulk_delete_reports_each_path() {
    let t = TestServer::start().await;
    t.client
        .bulk_upload(vec![
            upload("x/1", b"1"),
            upload("x/2", b"2"),
            upload("y/deep/3", b"3"),
            upload("z", b"z"),
        ])
        .await
        .expect("upload");
    let paths: Vec<String> = ["x/1", "y", "missing", "a/../b", "z"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let resp = t.client.bulk_delete(&paths).await.expect("bulk delete");
    assert_eq!(resp.success, ["x/1", "y", "z"]);
    let failed: Vec<(&str, ErrorCode)> = resp
        .failed
        .iter()
        .map(|f| (f.path.as_str(), f.error_code))
        .collect();
    assert_eq!(
        failed,
        [
            ("missing", ErrorCode::FileNotFound),
            ("a/../b", ErrorCode::InvalidPath)
        ]
    );
    let left: Vec<String> = t
        .client
        .get_manifest(None)
        .await
        .expect("manifest")
        .files
        .into_keys()
        .collect();
    assert_eq!(left, ["x", "x/2"]);
}

#[tokio::test]
async fn manifest_of_20000_files() {
    let t = TestServer::start().await;
    for batch in 0..10 {
        let files: Vec<FileUpload> = (0..2000)
            .map(|i| {
                let n = batch * 2000 + i;
                FileUpload {
                    path: format!("m/{:03}/f{n:05}.txt", n % 100),
                    content: Bytes::from(format!("file {n}")),
                }
            })
            .collect();
        let r = t.client.bulk_upload(files).await.expect("bulk upload");
        assert_eq!(r.success.len(), 2000, "{:?}", r.failed.first());
    }
    let manifest = t.client.get_manifest(None).await.expect("manifest");
    let files: Vec<_> = manifest.files.values().filter(|m| !m.is_directory).collect();
    let dirs = manifest.files.values().filter(|m| m.is_directory).count();
    assert_eq!(files.len(), 20_000);
    assert_eq!(dirs, 101, "m and m/000..m/099");
    let f = &manifest.files["m/042/f12342.txt"];
    assert_eq!((f.size, f.xxhash3), (10, Xxh3::of(b"file 12342")));
    let sub = t.client.get_manifest(Some("m/007")).await.expect("sub manifest");
    assert_eq!(sub.files.len(), 200);
    assert!(sub.files.keys().all(|k| k.starts_with("m/007/")));
    assert_eq!(
        t.client.get_manifest(Some("nope")).await.unwrap_err().status(),
        Some(404)
    );
}

fn entry(content: &[u8], base: Option<(u64, &[u8])>, modified: i64) -> ClientEntry {
    ClientEntry {
        path: String::new(),
        name: String::new(),
        size: content.len() as u64,
        modified,
        is_directory: false,
        xxhash3: Xxh3::of(content),
        base_rev: base.map(|b| b.0),
        base_xxhash3: None,
        base_size: base.map(|b| b.1.len() as u64),
    }
}

/// Every row of the docs/design.md §6 table through `/bulk/sync`. The server state is set up
/// with real uploads; the client side is described by the manifest (content hash + base rev).
#[tokio::test]
async fn sync_plan_covers_every_row_of_the_table() {
    let t = TestServer::start().await;
    let c = &t.client;
    let rev = |m: volebarn_client::FileMetadata| m.rev;
    // Base state of every path: content "base" at some rev.
    let mut base = BTreeMap::new();
    for p in [
        "same",
        "local_edit",
        "local_del",
        "remote_edit",
        "remote_del",
        "both_equal",
        "both_differ",
        "del_vs_edit",
        "edit_vs_del",
    ] {
        base.insert(
            p,
            rev(c
                .upload_file(p, Bytes::from_static(b"base"))
                .await
                .expect("upload")),
        );
    }
    // Remote-side changes since the base.
    for p in ["remote_edit", "both_equal", "both_differ", "del_vs_edit"] {
        let content: &[u8] = if p == "both_differ" {
            b"remote-version"
        } else {
            b"remote"
        };
        c.update_file(
            p,
            Bytes::copy_from_slice(if p == "both_equal" { b"same-new" } else { content }),
        )
        .await
        .expect("edit");
    }
    for p in ["remote_del", "edit_vs_del"] {
        c.delete_file(p).await.expect("delete");
    }
    c.upload_file("remote_new", Bytes::from_static(b"new"))
        .await
        .expect("remote new");

    let mut files = BTreeMap::new();
    let b = |p: &str| Some((base[p], &b"base"[..]));
    files.insert("same".to_string(), entry(b"base", b("same"), 1));
    files.insert("local_edit".to_string(), entry(b"local", b("local_edit"), 1));
    files.insert("remote_edit".to_string(), entry(b"base", b("remote_edit"), 1));
    files.insert("remote_del".to_string(), entry(b"base", b("remote_del"), 1));
    files.insert("both_equal".to_string(), entry(b"same-new", b("both_equal"), 1));
    files.insert(
        "both_differ".to_string(),
        entry(b"local-version", b("both_differ"), 1),
    );
    files.insert(
        "edit_vs_del".to_string(),
        entry(b"local-edit", b("edit_vs_del"), 1),
    );
    files.insert("local_new".to_string(), entry(b"fresh", None, 1));
    let mut deleted = BTreeMap::new();
    deleted.insert("local_del".to_string(), base["local_del"]);
    deleted.insert("del_vs_edit".to_string(), base["del_vs_edit"]);
    let req = SyncRequest {
        client_manifest: ClientManifest { files },
        conflict_resolution: ConflictStrategy::PreferLocal,
        deleted,
    };
    let plan = c.sync_plan(&req).await.expect("sync plan");
    assert_eq!(plan.client_upload, ["edit_vs_del", "local_edit", "local_new"]);
    assert_eq!(plan.client_download, ["del_vs_edit", "remote_edit", "remote_new"]);
    assert_eq!(plan.client_delete, ["remote_del"]);
    assert_eq!(plan.server_delete, ["local_del"]);
    assert_eq!(plan.adopt, ["both_equal"]);
    assert_eq!(plan.conflicts.len(), 1);
    assert_eq!(plan.conflicts[0].path, "both_differ");
    assert_eq!(plan.conflicts[0].resolution, ConflictResolution::UseLocal);
    // Uploads over an unchanged remote are conditioned on its rev; a deleted remote is not.
    assert_eq!(plan.if_match.get("local_edit"), Some(&base["local_edit"]));
    assert_eq!(plan.if_match.get("local_del"), Some(&base["local_del"]));
    assert_eq!(plan.if_match.get("edit_vs_del"), None);

    // Without base information the server is the source of truth; local-only files upload.
    let mut files = BTreeMap::new();
    files.insert("local_only".to_string(), entry(b"mine", None, 1));
    files.insert("remote_new".to_string(), entry(b"new", None, 1));
    let plain = SyncRequest {
        client_manifest: ClientManifest { files },
        ..SyncRequest::default()
    };
    let plan = c.sync_plan(&plain).await.expect("plain plan");
    assert_eq!(plan.client_upload, ["local_only"]);
    assert!(plan.client_download.contains(&"remote_edit".to_string()));
    assert!(plan.conflicts.is_empty(), "equal content is never a conflict");
    assert!(
        plan.client_delete.is_empty() && plan.server_delete.is_empty(),
        "nothing deleted without a base"
    );
}

#[tokio::test]
async fn bulk_upload_parts_honour_their_conditions() {
    use volebarn_client::{ConditionalUpload, UploadCondition};
    let t = TestServer::start().await;
    let existing = t
        .client
        .upload_file("exists.txt", Bytes::from_static(b"v1"))
        .await
        .expect("upload");
    let part = |path: &str, content: &'static [u8], condition| ConditionalUpload {
        path: path.to_string(),
        content: Bytes::from_static(content),
        condition,
        mtime: Some(1_600_000_000_000_000_000),
    };
    let resp = t
        .client
        .bulk_upload_conditional(vec![
            part("exists.txt", b"clobber", UploadCondition::Create),
            part("fresh.txt", b"new", UploadCondition::Create),
        ])
        .await
        .expect("bulk");
    assert_eq!(resp.success, ["fresh.txt"]);
    let codes: Vec<ErrorCode> = resp.failed.iter().map(|f| f.error_code).collect();
    assert_eq!(codes, [ErrorCode::AlreadyExists]);
    assert_eq!(
        resp.files[0].modified, 1_600_000_000_000_000_000,
        "mtime travels per part"
    );
    let resp = t
        .client
        .bulk_upload_conditional(vec![part(
            "exists.txt",
            b"stale",
            UploadCondition::IfMatch(existing.rev + 100),
        )])
        .await
        .expect("bulk");
    let codes: Vec<ErrorCode> = resp.failed.iter().map(|f| f.error_code).collect();
    assert_eq!(codes, [ErrorCode::PreconditionFailed]);
    assert_eq!(
        t.client.download_file("exists.txt").await.expect("dl"),
        Bytes::from_static(b"v1")
    );
    let resp = t
        .client
        .bulk_upload_conditional(vec![part(
            "exists.txt",
            b"v2",
            UploadCondition::IfMatch(existing.rev),
        )])
        .await
        .expect("bulk");
    assert_eq!(resp.success, ["exists.txt"]);
    assert_eq!(
        t.client.download_file("exists.txt").await.expect("dl"),
        Bytes::from_static(b"v2")
    );
}

#[tokio::test]
async fn bulk_upload_of_local_files_reads_them_as_it_sends() {
    use volebarn_client::{LocalUpload, UploadCondition};
    let t = TestServer::start().await;
    let existing = t
        .client
        .upload_file("exists.txt", Bytes::from_static(b"v1"))
        .await
        .expect("upload");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut files = Vec::new();
    let mut local = BTreeMap::new();
    for i in 0..150u64 {
        let content = pseudo_random((i as usize * 997) % 200_000, i);
        let path = dir.path().join(format!("{i}.bin"));
        std::fs::write(&path, &content).expect("write");
        files.push(LocalUpload {
            path: format!("up/{i}.bin"),
            local: path,
            condition: UploadCondition::Create,
        });
        local.insert(format!("up/{i}.bin"), content);
    }
    let stale = dir.path().join("stale.txt");
    std::fs::write(&stale, b"stale").expect("write");
    files.push(LocalUpload {
        path: "exists.txt".into(),
        local: stale,
        condition: UploadCondition::IfMatch(existing.rev + 1),
    });
    files.push(LocalUpload {
        path: "gone.txt".into(),
        local: dir.path().join("never-written.txt"),
        condition: UploadCondition::Create,
    });
    let sent_before = t.client.metrics().bytes_sent;
    let resp = t.client.bulk_upload_files(files).await.expect("bulk");
    assert_eq!(resp.success.len(), 150);
    let failed: Vec<(&str, ErrorCode)> = resp
        .failed
        .iter()
        .map(|f| (f.path.as_str(), f.error_code))
        .collect();
    assert_eq!(
        failed,
        [
            ("exists.txt", ErrorCode::PreconditionFailed),
            ("gone.txt", ErrorCode::FileNotFound)
        ],
        "a part fails alone, and a file that cannot be read is named"
    );
    for (path, content) in &local {
        let got = t.client.download_file(path).await.expect("download");
        assert_eq!(&got[..], &content[..], "{path}");
    }
    let on_disk = std::fs::metadata(dir.path().join("3.bin")).expect("stat");
    let mtime = on_disk
        .modified()
        .expect("mtime")
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos();
    let meta = resp.files.iter().find(|m| m.path == "up/3.bin").expect("3.bin");
    assert_eq!(meta.modified as u128, mtime, "the file's mtime travels with it");
    assert_eq!(
        t.client.download_file("exists.txt").await.expect("dl"),
        Bytes::from_static(b"v1")
    );
    // Every file read was sent, the refused "stale" too; the unreadable one was not.
    let bytes: u64 = local.values().map(|c| c.len() as u64).sum::<u64>() + 5;
    assert_eq!(
        t.client.metrics().bytes_sent - sent_before,
        bytes,
        "bytes sent are counted"
    );
}
