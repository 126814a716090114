//! The sync engine against a real server, pass by pass: index, renames, safety rails,
//! conflicts, editor saves, ignores, symlinks, name clashes, and scale.

use volebarn_client::ConflictStrategy;
use volebarn_console::engine::PassOptions;
use volebarn_testkit::{age, fail_fast, server_tree, tree, write, TestServer};

const NEWER: ConflictStrategy = ConflictStrategy::PreferNewer;

fn force() -> PassOptions {
    PassOptions {
        dry_run: false,
        force: true,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_folders_converge_and_a_no_op_pass_reads_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start().await;
    let (a, b) = (dir.path().join("A"), dir.path().join("B"));
    write(&a, "notes.txt", b"alpha");
    write(&a, "docs/report.md", b"# report");
    write(&a, "docs/deep/data.bin", &vec![7u8; 300_000]);
    age(&a);
    let mut ea = srv.engine(&a, NEWER);
    let mut eb = srv.engine(&b, NEWER);

    let r = ea.pass(PassOptions::default()).await.unwrap();
    assert_eq!(r.result.uploaded.len(), 3, "{r:?}");
    let r = eb.pass(PassOptions::default()).await.unwrap();
    assert_eq!(r.result.downloaded.len(), 3, "{r:?}");
    assert_eq!(tree(&a), tree(&b));

    for e in [&mut ea, &mut eb] {
        let r = e.pass(PassOptions::default()).await.unwrap();
        assert!(!r.changed_anything(), "{r:?}");
        assert_eq!((r.hashed, r.bytes_read), (0, 0), "a no-op pass must only stat");
    }

    // Edit and delete in B; A follows.
    write(&b, "notes.txt", b"alpha, edited in B");
    std::fs::remove_file(b.join("docs/report.md")).unwrap();
    let r = eb.pass(PassOptions::default()).await.unwrap();
    assert_eq!(r.hashed, 1, "only the edited file is read: {r:?}");
    assert_eq!(volebarn_testkit::names(&r.result.uploaded), vec!["notes.txt"]);
    assert_eq!(r.result.deleted_remote, vec!["docs/report.md"]);
    let r = ea.pass(PassOptions::default()).await.unwrap();
    assert_eq!(
        volebarn_testkit::names(&r.result.downloaded),
        vec!["notes.txt"],
        "{r:?}"
    );
    assert_eq!(r.result.deleted_local, vec!["docs/report.md"], "{r:?}");
    assert_eq!(tree(&a), tree(&b));
}

/// One pass's progress as the engine announced it and as the transfers reported it.
#[derive(Default)]
struct Heard {
    announced: std::sync::Mutex<Vec<(u64, u64)>>,
    bytes: std::sync::atomic::AtomicU64,
    files: std::sync::atomic::AtomicU64,
}

struct Observer(std::sync::Arc<Heard>);

impl volebarn_client::TransferObserver for Observer {
    fn bytes(&self, n: u64) {
        self.0.bytes.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
    fn file_done(&self, _path: &str) {
        self.0.files.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Heard {
    fn install(self: &std::sync::Arc<Self>, e: &mut volebarn_console::engine::Engine) {
        let heard = self.clone();
        e.set_progress(Box::new(move |bytes, files| {
            heard.announced.lock().expect("lock").push((bytes, files));
            std::sync::Arc::new(Observer(heard.clone()))
        }));
    }

    /// (announced totals, bytes heard, files heard); resets.
    fn take(&self) -> (Vec<(u64, u64)>, u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            std::mem::take(&mut *self.announced.lock().expect("lock")),
            self.bytes.swap(0, Relaxed),
            self.files.swap(0, Relaxed),
        )
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn progress_announces_each_pass_and_adds_up() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start().await;
    let (a, b) = (dir.path().join("A"), dir.path().join("B"));
    write(&a, "small.txt", b"small");
    write(&a, "docs/medium.bin", &vec![3u8; 200_000]);
    write(&a, "big.bin", &vec![9u8; 3_000_000]);
    age(&a);
    let total = 5 + 200_000 + 3_000_000;
    let heard = std::sync::Arc::new(Heard::default());
    let mut ea = srv.engine(&a, NEWER);
    let mut eb = srv.engine(&b, NEWER);
    heard.install(&mut ea);
    heard.install(&mut eb);

    ea.pass(PassOptions::default()).await.unwrap();
    assert_eq!(heard.take(), (vec![(total, 3)], total, 3), "upload");
    eb.pass(PassOptions::default()).await.unwrap();
    assert_eq!(heard.take(), (vec![(total, 3)], total, 3), "download");
    // Nothing to transfer: no progress at all.
    ea.pass(PassOptions::default()).await.unwrap();
    assert_eq!(heard.take(), (vec![], 0, 0), "no-op pass");
}

#[tokio::test(flavor = "multi_thread")]
async fn renames_of_files_and_directories_become_server_moves() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start().await;
    let (a, b) = (dir.path().join("A"), dir.path().join("B"));
    write(&a, "old.txt", b"a file that gets renamed");
    write(&a, "photos/2025/one.jpg", b"jpeg one");
    write(&a, "photos/2025/two.jpg", b"jpeg two");
    write(&a, "photos/cover.png", b"png");
    let mut ea = srv.engine(&a, NEWER);
    let mut eb = srv.engine(&b, NEWER);
    ea.pass(PassOptions::default()).await.unwrap();
    eb.pass(PassOptions::default()).await.unwrap();
    let c = srv.client_with(fail_fast);
    let before = c.versions("photos/2025/one.jpg").await.unwrap().versions.len();

    std::fs::rename(a.join("old.txt"), a.join("new.txt")).unwrap();
    std::fs::rename(a.join("photos"), a.join("pictures")).unwrap();
    let r = ea.pass(PassOptions::default()).await.unwrap();
    assert_eq!(
        r.moved,
        vec![
            ("photos".to_string(), "pictures".to_string()),
            ("old.txt".to_string(), "new.txt".to_string())
        ],
        "{r:?}"
    );
    assert!(r.result.uploaded.is_empty(), "a rename re-sends nothing: {r:?}");
    assert!(r.result.deleted_remote.is_empty(), "{r:?}");
    assert_eq!(server_tree(&c).await, tree(&a));
    // The history moved with the file: a move, not a delete and a re-upload.
    assert_eq!(
        c.versions("pictures/2025/one.jpg").await.unwrap().versions.len(),
        before
    );

    let r = eb.pass(PassOptions::default()).await.unwrap();
    assert!(r.result.errors.is_empty(), "{r:?}");
    assert_eq!(tree(&a), tree(&b));
    assert!(!b.join("photos").exists(), "the old directory is gone in B too");
    assert!(
        c.list_directory(Some("photos")).await.is_err(),
        "and on the server"
    );

    // Deleting a whole tree deletes it everywhere, directories included.
    std::fs::remove_dir_all(a.join("pictures/2025")).unwrap();
    let r = ea.pass(PassOptions::default()).await.unwrap();
    assert_eq!(r.result.deleted_remote.len(), 2, "{r:?}");
    assert_eq!(r.dirs_deleted_remote, vec!["pictures/2025"], "{r:?}");
    let r = eb.pass(PassOptions::default()).await.unwrap();
    assert_eq!(r.dirs_deleted_local, vec!["pictures/2025"], "{r:?}");
    assert!(!b.join("pictures/2025").exists());
    assert_eq!(tree(&a), tree(&b));
    let r = ea.pass(PassOptions::default()).await.unwrap();
    assert!(!r.changed_anything(), "{r:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn mass_deletion_is_held_until_forced_and_stays_restorable() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start().await;
    let (a, b) = (dir.path().join("A"), dir.path().join("B"));
    for i in 0..6 {
        write(&a, &format!("f{i}.txt"), format!("file {i}").as_bytes());
    }
    let mut ea = srv.engine(&a, NEWER);
    let mut eb = srv.engine(&b, NEWER);
    ea.pass(PassOptions::default()).await.unwrap();
    eb.pass(PassOptions::default()).await.unwrap();
    let c = srv.client_with(fail_fast);

    for i in 0..4 {
        std::fs::remove_file(a.join(format!("f{i}.txt"))).unwrap();
    }
    let r = ea.pass(PassOptions::default()).await.unwrap();
    assert_eq!(r.held_deletions.len(), 4, "{r:?}");
    assert!(r.held_reason.as_deref().unwrap().contains("max_delete"), "{r:?}");
    assert!(r.result.deleted_remote.is_empty());
    assert_eq!(server_tree(&c).await.len(), 6, "nothing deleted on the server");
    assert!(!a.join("f0.txt").exists(), "and nothing downloaded back either");
    let status = volebarn_console::state::read_status(&a).unwrap().unwrap();
    assert_eq!(status.held_deletions.len(), 4);
    // Held again on the next pass: still nothing deleted.
    let r = ea.pass(PassOptions::default()).await.unwrap();
    assert_eq!(r.held_deletions.len(), 4);

    let r = ea.pass(force()).await.unwrap();
    assert_eq!(r.result.deleted_remote.len(), 4, "{r:?}");
    assert_eq!(server_tree(&c).await.len(), 2);
    let r = eb.pass(PassOptions::default()).await.unwrap();
    assert_eq!(r.result.deleted_local.len(), 4, "{r:?}");
    assert_eq!(tree(&a), tree(&b));

    // Restorable from versions.
    let v = c.versions("f0.txt").await.unwrap();
    let rev = v.versions.first().expect("a kept version").rev;
    c.restore_version("f0.txt", rev).await.unwrap();
    assert_eq!(&c.download_file("f0.txt").await.unwrap()[..], b"file 0");
    eb.pass(PassOptions::default()).await.unwrap();
    assert_eq!(std::fs::read(b.join("f0.txt")).unwrap(), b"file 0");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_emptied_or_vanished_folder_never_deletes_remotely() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start().await;
    let a = dir.path().join("A");
    write(&a, "only.txt", b"the single file");
    let mut ea = srv.engine(&a, NEWER);
    ea.pass(PassOptions::default()).await.unwrap();
    let c = srv.client_with(fail_fast);

    // Emptied (marker kept): even one file is held, because the folder is empty.
    std::fs::remove_file(a.join("only.txt")).unwrap();
    let r = ea.pass(PassOptions::default()).await.unwrap();
    assert_eq!(r.held_deletions, vec!["only.txt"], "{r:?}");
    assert!(r.held_reason.as_deref().unwrap().contains("empty"));
    assert_eq!(server_tree(&c).await.len(), 1);

    // The marker is gone: refused outright.
    write(&a, "other.txt", b"x");
    std::fs::remove_file(a.join(".volebarn/marker")).unwrap();
    let r = ea.pass(PassOptions::default()).await.unwrap();
    assert!(r.refused.as_deref().unwrap().contains("marker"), "{r:?}");
    assert!(r.result.uploaded.is_empty());

    // The whole folder is gone, state included.
    std::fs::remove_dir_all(&a).unwrap();
    let r = ea.pass(PassOptions::default()).await.unwrap();
    assert!(r.refused.as_deref().unwrap().contains("gone"), "{r:?}");
    assert!(!a.exists(), "the folder is not recreated");
    assert_eq!(server_tree(&c).await.keys().collect::<Vec<_>>(), vec!["only.txt"]);

    // A recreated folder starts fresh: it downloads, deletes nothing.
    drop(ea);
    let mut fresh = srv.engine(&a, NEWER);
    let r = fresh.pass(PassOptions::default()).await.unwrap();
    assert_eq!(volebarn_testkit::names(&r.result.downloaded), vec!["only.txt"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_marker_is_readopted_with_force_without_deleting() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start().await;
    let a = dir.path().join("A");
    write(&a, "keep.txt", b"k");
    write(&a, "gone.txt", b"g");
    let mut ea = srv.engine(&a, NEWER);
    ea.pass(PassOptions::default()).await.unwrap();
    std::fs::remove_file(a.join(".volebarn/marker")).unwrap();
    std::fs::remove_file(a.join("gone.txt")).unwrap();
    let r = ea.pass(force()).await.unwrap();
    assert!(r.refused.is_none(), "{r:?}");
    assert!(r.result.deleted_remote.is_empty(), "{r:?}");
    assert_eq!(
        volebarn_testkit::names(&r.result.downloaded),
        vec!["gone.txt"],
        "re-adopting restores, never deletes"
    );
    assert!(a.join(".volebarn/marker").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_edits_keep_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start().await;
    let (a, b) = (dir.path().join("A"), dir.path().join("B"));
    write(&a, "plan.txt", b"v0");
    let mut ea = srv.engine(&a, ConflictStrategy::Manual);
    let mut eb = srv.engine(&b, ConflictStrategy::Manual);
    ea.pass(PassOptions::default()).await.unwrap();
    eb.pass(PassOptions::default()).await.unwrap();

    write(&a, "plan.txt", b"edited in A");
    write(&b, "plan.txt", b"edited in B");
    ea.pass(PassOptions::default()).await.unwrap();
    let r = eb.pass(PassOptions::default()).await.unwrap();
    assert_eq!(r.result.conflict_copies.len(), 1, "{r:?}");
    let copy = r.result.conflict_copies[0].copy.clone();
    assert!(copy.starts_with("plan (conflict "), "{copy}");
    assert_eq!(std::fs::read(b.join("plan.txt")).unwrap(), b"edited in A");
    assert_eq!(std::fs::read(b.join(&copy)).unwrap(), b"edited in B");
    let listed = volebarn_console::state::read_conflicts(&b).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].copy.as_deref(), Some(copy.as_str()));
    assert!(listed[0].copy_is_local);

    ea.pass(PassOptions::default()).await.unwrap();
    assert_eq!(tree(&a), tree(&b), "both versions everywhere");
    let r = eb.pass(PassOptions::default()).await.unwrap();
    assert!(!r.changed_anything(), "{r:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn editor_saves_sync_as_one_edit_and_scratch_files_stay_local() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start().await;
    let a = dir.path().join("A");
    write(&a, "essay.txt", b"draft 1");
    write(&a, ".volebarnignore", b"build/\n*.log\n");
    let mut ea = srv.engine(&a, NEWER);
    ea.pass(PassOptions::default()).await.unwrap();
    let c = srv.client_with(fail_fast);

    // Atomic save: temp file, then rename over the original (new inode).
    write(&a, ".essay.txt.tmp-save", b"draft 2");
    std::fs::rename(a.join(".essay.txt.tmp-save"), a.join("essay.txt")).unwrap();
    // vim: swap file, backup, and the 4913 probe; Office owner file; emacs lock.
    write(&a, ".essay.txt.swp", b"swap");
    write(&a, "essay.txt~", b"draft 1");
    write(&a, "4913", b"");
    write(&a, "~$budget.xlsx", b"owner");
    write(&a, ".#essay.txt", b"lock");
    write(&a, "build/out.o", b"object");
    write(&a, "debug.log", b"log");
    let r = ea.pass(PassOptions::default()).await.unwrap();
    assert_eq!(
        volebarn_testkit::names(&r.result.uploaded),
        vec!["essay.txt"],
        "{r:?}"
    );
    let on_server = server_tree(&c).await;
    assert_eq!(
        on_server.keys().cloned().collect::<Vec<_>>(),
        vec![".volebarnignore", "essay.txt"]
    );
    assert_eq!(on_server["essay.txt"], b"draft 2");
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn symlinks_are_skipped_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start().await;
    let a = dir.path().join("A");
    write(&a, "real.txt", b"real");
    std::fs::create_dir_all(dir.path().join("outside")).unwrap();
    write(&dir.path().join("outside"), "secret.txt", b"not in the folder");
    std::os::unix::fs::symlink(dir.path().join("outside"), a.join("link-dir")).unwrap();
    std::os::unix::fs::symlink(a.join("real.txt"), a.join("link.txt")).unwrap();
    let mut ea = srv.engine(&a, NEWER);
    let r = ea.pass(PassOptions::default()).await.unwrap();
    assert_eq!(
        volebarn_testkit::names(&r.result.uploaded),
        vec!["real.txt"],
        "{r:?}"
    );
    let reported: Vec<&str> = r
        .problems
        .iter()
        .filter(|(_, why)| why.contains("symlink"))
        .map(|(p, _)| p.as_str())
        .collect();
    assert_eq!(reported.len(), 2, "{r:?}");
    assert_eq!(server_tree(&srv.client_with(fail_fast)).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn names_that_clash_by_case_are_reported_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start().await;
    let a = dir.path().join("A");
    write(&a, "README.md", b"local readme");
    let c = srv.client_with(fail_fast);
    c.upload_file("Readme.md", bytes::Bytes::from_static(b"remote readme"))
        .await
        .unwrap();
    let mut ea = srv.engine(&a, NEWER);
    let r = ea.pass(PassOptions::default()).await.unwrap();
    assert!(
        r.problems
            .iter()
            .any(|(p, why)| p == "Readme.md" && why.contains("clashes")),
        "{r:?}"
    );
    assert_eq!(std::fs::read(a.join("README.md")).unwrap(), b"local readme");
    assert!(!a.join("Readme.md").exists());
    // Both stay on the server.
    assert_eq!(server_tree(&c).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_files_sync_and_resync_without_reading_them() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start().await;
    let (a, b) = (dir.path().join("A"), dir.path().join("B"));
    for i in 0..10_000u32 {
        write(
            &a,
            &format!("d{}/f{i}.txt", i % 100),
            format!("file number {i}").as_bytes(),
        );
    }
    age(&a);
    let mut ea = srv.engine(&a, NEWER);
    let r = ea.pass(PassOptions::default()).await.unwrap();
    assert_eq!(r.result.uploaded.len(), 10_000);
    assert!(
        r.result.errors.is_empty(),
        "{:?}",
        &r.result.errors[..3.min(r.result.errors.len())]
    );
    let mut eb = srv.engine(&b, NEWER);
    let r = eb.pass(PassOptions::default()).await.unwrap();
    assert_eq!(r.result.downloaded.len(), 10_000);
    assert_eq!(tree(&a), tree(&b));
    for e in [&mut ea, &mut eb] {
        let r = e.pass(PassOptions::default()).await.unwrap();
        assert!(!r.changed_anything());
        assert_eq!(
            (r.hashed, r.bytes_read),
            (0, 0),
            "no-op resync reads no file contents"
        );
    }
    // And after a restart (index from disk), still nothing read.
    drop(ea);
    let mut ea = srv.engine(&a, NEWER);
    let r = ea.pass(PassOptions::default()).await.unwrap();
    assert_eq!((r.hashed, r.bytes_read, r.result.uploaded.len()), (0, 0, 0));
}
