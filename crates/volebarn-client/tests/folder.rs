//! `full_sync`: two folders kept in line through one real server, three-way.

use std::path::Path;
use volebarn_client::ConflictStrategy;
use volebarn_testkit::{pseudo_random, tree, write, TestServer};

#[tokio::test]
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

    let r = c.full_sync(&a, strategy).await.expect("sync A");
    assert_eq!(r.uploaded.len(), 3, "{r:?}");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let r = c.full_sync(&b, strategy).await.expect("sync B");
    assert_eq!(r.downloaded.len(), 3, "{r:?}");
    assert_eq!(tree(&a), tree(&b));
    assert!(b.join("empty").is_dir(), "empty directories travel too");
    let mtime = |p: &Path| std::fs::metadata(p).expect("meta").modified().expect("mtime");
    assert_eq!(
        mtime(&a.join("dir/deeper/c.bin")),
        mtime(&b.join("dir/deeper/c.bin")),
        "the author's mtime travels"
    );
    assert!(
        c.plan_folder(&a, strategy).await.expect("plan").is_empty(),
        "A is in sync"
    );
    let plan = c.plan_folder(&b, strategy).await.expect("plan");
    assert!(plan.is_empty(), "B is in sync: {plan:?}");

    // plan → apply in two steps does the same as full_sync.
    write(&a, "two-step.txt", b"planned");
    let plan = c.plan_folder(&a, strategy).await.expect("plan");
    assert_eq!(plan.client_upload, ["two-step.txt"]);
    let r = c.apply_sync_plan(&a, &plan).await.expect("apply");
    assert_eq!(r.uploaded, ["two-step.txt"]);
    assert!(c.plan_folder(&a, strategy).await.expect("plan").is_empty());
    c.full_sync(&b, strategy).await.expect("sync B");

    // B edits one file and deletes another; A follows.
    write(&b, "a.txt", b"alpha, edited in B");
    std::fs::remove_file(b.join("dir/b.txt")).expect("rm");
    let r = c.full_sync(&b, strategy).await.expect("sync B");
    assert_eq!(
        (r.uploaded.clone(), r.deleted_remote.clone()),
        (vec!["a.txt".to_string()], vec!["dir/b.txt".to_string()])
    );
    let r = c.full_sync(&a, strategy).await.expect("sync A");
    assert_eq!(
        (r.downloaded.clone(), r.deleted_local.clone()),
        (vec!["a.txt".to_string()], vec!["dir/b.txt".to_string()])
    );
    assert_eq!(tree(&a), tree(&b));
    assert_eq!(tree(&a)["a.txt"], b"alpha, edited in B");
    let r = c.full_sync(&a, strategy).await.expect("no-op");
    assert_eq!(
        r,
        volebarn_client::SyncResult::default(),
        "nothing to do the second time"
    );
    // The deletion is recoverable from the server's history.
    let versions = c.versions("dir/b.txt").await.expect("versions");
    assert!(versions.versions[0].deleted);
    srv.shutdown().await;
}

#[tokio::test]
async fn concurrent_edits_keep_both_versions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = TestServer::start().await;
    let c = srv.client();
    let (a, b) = (dir.path().join("A"), dir.path().join("B"));
    write(&a, "notes.txt", b"base");
    std::fs::create_dir_all(&b).expect("mkdir");
    c.full_sync(&a, ConflictStrategy::PreferRemote)
        .await
        .expect("sync A");
    c.full_sync(&b, ConflictStrategy::PreferRemote)
        .await
        .expect("sync B");

    write(&a, "notes.txt", b"edit from A");
    write(&b, "notes.txt", b"edit from B");
    c.full_sync(&a, ConflictStrategy::PreferRemote)
        .await
        .expect("A uploads first");
    let r = c
        .full_sync(&b, ConflictStrategy::PreferRemote)
        .await
        .expect("B meets the conflict");
    assert_eq!(r.conflicts_resolved, ["notes.txt"], "{r:?}");
    c.full_sync(&a, ConflictStrategy::PreferRemote)
        .await
        .expect("A picks up the copy");

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

#[tokio::test]
async fn an_emptied_folder_deletes_nothing_remotely() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = TestServer::start().await;
    let c = srv.client();
    let a = dir.path().join("A");
    write(&a, "keep1.txt", b"1");
    write(&a, "keep2.txt", b"2");
    c.full_sync(&a, ConflictStrategy::PreferNewer)
        .await
        .expect("sync");
    std::fs::remove_file(a.join("keep1.txt")).expect("rm");
    std::fs::remove_file(a.join("keep2.txt")).expect("rm");
    let r = c
        .full_sync(&a, ConflictStrategy::PreferNewer)
        .await
        .expect("sync");
    assert!(r.deleted_remote.is_empty());
    assert!(
        r.errors
            .iter()
            .any(|(_, e)| e.contains("remote deletions refused")),
        "{:?}",
        r.errors
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

#[tokio::test]
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
    let r = c.full_sync(&a, strategy).await.expect("sync A");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(counter.take(), (total, all.clone()), "uploads");
    let r = c.full_sync(&b, strategy).await.expect("sync B");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(counter.take(), (total, all), "downloads");

    // One byte changed in the chunked file: chunks the server holds count as sent.
    big[6_000_000] ^= 0xff;
    write(&a, "chunked.bin", &big);
    c.full_sync(&a, strategy).await.expect("sync A");
    assert_eq!(counter.take(), (12_000_000, vec!["chunked.bin".to_string()]));
    srv.shutdown().await;
}

#[tokio::test]
async fn a_file_vanishing_mid_sync_fails_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = TestServer::start().await;
    let c = srv.client();
    let a = dir.path().join("A");
    write(&a, "stays.txt", b"stays");
    write(&a, "small-gone.txt", b"deleted after planning");
    write(&a, "big-gone.bin", &vec![5u8; 2_000_000]);
    let strategy = ConflictStrategy::PreferNewer;
    let plan = c.plan_folder(&a, strategy).await.expect("plan");
    assert_eq!(plan.client_upload.len(), 3, "{plan:?}");

    // Deleted between the scan and the upload (by the user, an editor, a build tool).
    std::fs::remove_file(a.join("small-gone.txt")).expect("rm");
    std::fs::remove_file(a.join("big-gone.bin")).expect("rm");
    let r = c.apply_sync_plan(&a, &plan).await.expect("apply");
    assert_eq!(r.uploaded, ["stays.txt"], "{r:?}");
    let mut failed: Vec<&str> = r.errors.iter().map(|(p, _)| p.as_str()).collect();
    failed.sort();
    assert_eq!(failed, ["big-gone.bin", "small-gone.txt"], "{r:?}");
    assert!(
        r.errors.iter().all(|(_, e)| e.contains("No such file")),
        "{:?}",
        r.errors
    );

    // The next sync sees nothing left to do, and the server has only what exists.
    assert!(c.plan_folder(&a, strategy).await.expect("plan").is_empty());
    let m = c.get_manifest(None).await.expect("manifest");
    assert_eq!(m.files.keys().collect::<Vec<_>>(), ["stays.txt"]);
    srv.shutdown().await;
}
