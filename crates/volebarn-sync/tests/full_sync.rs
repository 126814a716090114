//! `full_sync`: two folders kept in line through one real server, three-way, by the one engine
//! (the seed's whole-folder call, formerly the client's own scan and executor).

use std::path::Path;
use volebarn_client::ConflictStrategy;
use volebarn_sync::{full_sync, PassOptions, SyncResult};
use volebarn_testkit::{pseudo_random, tree, write, TestServer};

#[tokio::test(flavor = "multi_thread")]
async fn two_folders_converge_and_resync_is_a_no_op() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = TestServer::start().await;
    let c = srv.client();
    let (a, b) = (dir.path().join("A"), dir.path().join("B"));
    std::fs::create_dir_all(&b).expect("mkdir");
    write(&a, "a.txt", b"alpha");
    write(&a, "dir/b.txt", b"beta");
    write(&a, "dir/deeper/c.bin", &vec![7u8; 20_000]);
    std::fs::create_dir_all(a.join("empty")).expect("mkdir");
    let strategy = ConflictStrategy::PreferNewer;

    let r = full_sync(&c, &a, strategy).await.expect("sync A");
    assert_eq!(r.result.uploaded.len(), 3, "{r:?}");
    assert!(r.result.errors.is_empty(), "{:?}", r.result.errors);
    let r = full_sync(&c, &b, strategy).await.expect("sync B");
    assert_eq!(r.result.downloaded.len(), 3, "{r:?}");
    assert_eq!(tree(&a), tree(&b));
    assert!(b.join("empty").is_dir(), "empty directories travel too");
    let mtime = |p: &Path| std::fs::metadata(p).expect("meta").modified().expect("mtime");
    assert_eq!(
        mtime(&a.join("dir/deeper/c.bin")),
        mtime(&b.join("dir/deeper/c.bin")),
        "the author's mtime travels"
    );
    for side in [&a, &b] {
        let r = full_sync(&c, side, strategy).await.expect("no-op");
        assert!(!r.changed_anything(), "in sync: {r:?}");
    }

    // A dry run shows the plan and changes nothing; the next sync does what it showed.
    write(&a, "two-step.txt", b"planned");
    let mut engine = srv.engine(&a, strategy);
    let dry = engine.pass(PassOptions::DRY_RUN).await.expect("dry run");
    drop(engine);
    assert_eq!(dry.plan.expect("plan").uploads, ["two-step.txt"]);
    let not_there = c
        .get_file_metadata("two-step.txt")
        .await
        .expect_err("a dry run uploads nothing");
    assert_eq!(
        not_there.error_code(),
        Some(volebarn_client::ErrorCode::FileNotFound)
    );
    let r = full_sync(&c, &a, strategy).await.expect("sync A");
    assert_eq!(volebarn_testkit::names(&r.result.uploaded), ["two-step.txt"]);
    full_sync(&c, &b, strategy).await.expect("sync B");

    // B edits one file and deletes another; A follows.
    write(&b, "a.txt", b"alpha, edited in B");
    std::fs::remove_file(b.join("dir/b.txt")).expect("rm");
    let r = full_sync(&c, &b, strategy).await.expect("sync B");
    assert_eq!(
        (
            volebarn_testkit::names(&r.result.uploaded),
            r.result.deleted_remote.clone()
        ),
        (vec!["a.txt"], vec!["dir/b.txt".to_string()])
    );
    let r = full_sync(&c, &a, strategy).await.expect("sync A");
    assert_eq!(
        (
            volebarn_testkit::names(&r.result.downloaded),
            r.result.deleted_local.clone()
        ),
        (vec!["a.txt"], vec!["dir/b.txt".to_string()])
    );
    assert_eq!(tree(&a), tree(&b));
    assert_eq!(tree(&a)["a.txt"], b"alpha, edited in B");
    let r = full_sync(&c, &a, strategy).await.expect("no-op");
    assert_eq!(r.result, SyncResult::default(), "nothing to do the second time");
    assert!(!r.changed_anything(), "{r:?}");
    // The deletion is recoverable from the server's history.
    let versions = c.versions("dir/b.txt").await.expect("versions");
    assert!(versions.versions[0].deleted);
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_edits_keep_both_versions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = TestServer::start().await;
    let c = srv.client();
    let (a, b) = (dir.path().join("A"), dir.path().join("B"));
    write(&a, "notes.txt", b"base");
    std::fs::create_dir_all(&b).expect("mkdir");
    let remote = ConflictStrategy::PreferRemote;
    full_sync(&c, &a, remote).await.expect("sync A");
    full_sync(&c, &b, remote).await.expect("sync B");

    write(&a, "notes.txt", b"edit from A");
    write(&b, "notes.txt", b"edit from B");
    full_sync(&c, &a, remote).await.expect("A uploads first");
    let r = full_sync(&c, &b, remote).await.expect("B meets the conflict");
    assert_eq!(r.result.conflicts_resolved, ["notes.txt"], "{r:?}");
    full_sync(&c, &a, remote).await.expect("A picks up the copy");

    for side in [&a, &b] {
        let t = tree(side);
        assert_eq!(
            t["notes.txt"], b"edit from A",
            "the server's version wins with prefer_remote"
        );
        let copies: Vec<_> = t
            .iter()
            .filter(|(k, _)| k.starts_with("notes (conflict "))
            .collect();
        assert_eq!(copies.len(), 1, "{:?}", t.keys());
        assert_eq!(
            copies[0].1, b"edit from B",
            "the losing edit is kept as a conflict copy"
        );
    }
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_emptied_folder_deletes_nothing_remotely() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = TestServer::start().await;
    let c = srv.client();
    let a = dir.path().join("A");
    write(&a, "keep1.txt", b"1");
    write(&a, "keep2.txt", b"2");
    let strategy = ConflictStrategy::PreferNewer;
    full_sync(&c, &a, strategy).await.expect("sync");
    std::fs::remove_file(a.join("keep1.txt")).expect("rm");
    std::fs::remove_file(a.join("keep2.txt")).expect("rm");
    let r = full_sync(&c, &a, strategy).await.expect("sync");
    assert!(r.result.deleted_remote.is_empty(), "{r:?}");
    assert_eq!(r.held_deletions, ["keep1.txt", "keep2.txt"], "{r:?}");
    assert!(
        r.held_reason.as_deref().is_some_and(|why| why.contains("empty")),
        "{r:?}"
    );
    assert_eq!(
        c.get_manifest(None).await.expect("manifest").files.len(),
        2,
        "server untouched"
    );
    srv.shutdown().await;
}

/// Counts what a `TransferObserver` hears.
#[derive(Default)]
struct Counter {
    bytes: std::sync::atomic::AtomicU64,
    files: std::sync::Mutex<Vec<String>>,
}

impl volebarn_client::TransferObserver for Counter {
    fn bytes(&self, n: u64) {
        self.bytes.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
    fn file_done(&self, path: &str) {
        self.files.lock().expect("lock").push(path.to_string());
    }
}

impl Counter {
    /// Bytes and sorted file paths heard so far; resets both.
    fn take(&self) -> (u64, Vec<String>) {
        let bytes = self.bytes.swap(0, std::sync::atomic::Ordering::Relaxed);
        let mut files = std::mem::take(&mut *self.files.lock().expect("lock"));
        files.sort();
        (bytes, files)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn transfer_observer_hears_every_byte_and_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = TestServer::start().await;
    let counter = std::sync::Arc::new(Counter::default());
    let c = srv.client().with_observer(counter.clone());
    let (a, b) = (dir.path().join("A"), dir.path().join("B"));
    std::fs::create_dir_all(&b).expect("mkdir");
    // Bulk-sized files, one streamed on its own (over 1 MiB) and one sent as chunks (over 10 MB).
    let mut big = pseudo_random(12_000_000, 1);
    write(&a, "small/one.txt", b"one");
    write(&a, "small/two.txt", &pseudo_random(5_000, 2));
    write(&a, "streamed.bin", &pseudo_random(2_000_000, 3));
    write(&a, "chunked.bin", &big);
    let total = 3 + 5_000 + 2_000_000 + 12_000_000;
    let all: Vec<String> = ["chunked.bin", "small/one.txt", "small/two.txt", "streamed.bin"]
        .map(String::from)
        .to_vec();

    let strategy = ConflictStrategy::PreferNewer;
    let r = full_sync(&c, &a, strategy).await.expect("sync A");
    assert!(r.result.errors.is_empty(), "{:?}", r.result.errors);
    assert_eq!(counter.take(), (total, all.clone()), "uploads");
    let r = full_sync(&c, &b, strategy).await.expect("sync B");
    assert!(r.result.errors.is_empty(), "{:?}", r.result.errors);
    assert_eq!(counter.take(), (total, all), "downloads");

    // One byte changed in the chunked file: chunks the server holds count as sent.
    big[6_000_000] ^= 0xff;
    write(&a, "chunked.bin", &big);
    full_sync(&c, &a, strategy).await.expect("sync A");
    assert_eq!(counter.take(), (12_000_000, vec!["chunked.bin".to_string()]));
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_vanishing_mid_sync_fails_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = TestServer::start().await;
    let c = srv.client();
    let a = dir.path().join("A");
    write(&a, "stays.txt", b"stays");
    write(&a, "small-gone.txt", b"deleted after planning");
    write(&a, "big-gone.bin", &vec![5u8; 2_000_000]);
    let strategy = ConflictStrategy::PreferNewer;

    // Deleted between the scan and the upload (by the user, an editor, a build tool): the
    // engine announces its transfers after planning and right before applying the plan.
    let mut engine = srv.engine(&a, strategy);
    let root = a.clone();
    engine.set_progress(Box::new(move |_bytes, files| {
        assert_eq!(files, 3, "the plan uploads all three");
        let _ = std::fs::remove_file(root.join("small-gone.txt"));
        let _ = std::fs::remove_file(root.join("big-gone.bin"));
        std::sync::Arc::new(Counter::default())
    }));
    let r = engine.pass(PassOptions::default()).await.expect("pass");
    drop(engine);
    assert_eq!(
        volebarn_testkit::names(&r.result.uploaded),
        ["stays.txt"],
        "{r:?}"
    );
    // The two uploads failed; the pass planned again, found them gone, and nothing stands.
    let mut failed: Vec<&str> = r.retried.iter().map(|(p, _)| p.as_str()).collect();
    failed.sort();
    assert_eq!(failed, ["big-gone.bin", "small-gone.txt"], "{r:?}");
    assert!(
        r.retried.iter().all(|(_, e)| e.contains("No such file")),
        "{:?}",
        r.retried
    );
    assert!(r.result.errors.is_empty(), "{r:?}");

    // The next sync sees nothing left to do, and the server has only what exists.
    let r = full_sync(&c, &a, strategy).await.expect("sync");
    assert!(!r.changed_anything(), "{r:?}");
    assert!(r.result.errors.is_empty(), "{r:?}");
    let m = c.get_manifest(None).await.expect("manifest");
    assert_eq!(m.files.keys().collect::<Vec<_>>(), ["stays.txt"]);
    srv.shutdown().await;
}
