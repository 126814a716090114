//! `volebarn watch` end to end: two folders, each with its own watcher (notify + `/changes`
//! long-poll), against one real server. Every wait is on a condition, with a timeout.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use volebarn_client::ConflictStrategy;
use volebarn_console::watch::{self, WatchOptions};
use volebarn_testkit::{fail_fast, server_tree, tree, wait_for, wait_until, write, TestServer};

/// Starts watching `root`; the watcher stops when the returned sender is dropped or fired.
fn start(srv: &TestServer, root: &Path) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    start_counting(srv, root, Arc::default())
}

/// [`start`], counting the watcher's passes in `passes`.
fn start_counting(
    srv: &TestServer,
    root: &Path,
    passes: Arc<AtomicUsize>,
) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    start_with(
        srv,
        root,
        // Long enough that the tests exercise the watcher and the change feed, not the rescan.
        Duration::from_secs(60),
        move |_: &volebarn_console::engine::PassReport| {
            passes.fetch_add(1, Ordering::SeqCst);
        },
    )
}

/// Starts watching `root` with a full rescan every `rescan`; `on_pass` sees every report.
fn start_with(
    srv: &TestServer,
    root: &Path,
    rescan: Duration,
    on_pass: impl FnMut(&volebarn_console::engine::PassReport) + Send + 'static,
) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let e = srv.engine(root, ConflictStrategy::PreferNewer);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        watch::run(
            e,
            WatchOptions {
                poll_interval: Duration::from_secs(5),
                rescan_interval: rescan,
                debounce: Duration::from_millis(200),
            },
            async {
                let _ = stopped.await;
            },
            on_pass,
        )
        .await
        .expect("watch");
    });
    (stop, task)
}

async fn stop(w: (oneshot::Sender<()>, tokio::task::JoinHandle<()>)) {
    let _ = w.0.send(());
    w.1.await.expect("watcher task");
}

/// A pass opens and reads the folder, which inotify reports as access events; they must not
/// wake the watcher again, or it would scan without end. Passes follow changes.
#[tokio::test(flavor = "multi_thread")]
async fn passes_follow_changes_and_do_not_wake_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start().await;
    let a = dir.path().join("A");
    // In a directory: scanning it opens it, and inotify reports that open.
    write(&a, "docs/first.txt", b"first");
    let passes = Arc::new(AtomicUsize::new(0));
    let w = start_counting(&srv, &a, passes.clone());
    let c = srv.client_with(fail_fast);
    assert!(
        wait_until(Duration::from_secs(20), || async {
            c.get_file_metadata("docs/first.txt").await.is_ok()
        })
        .await,
        "timed out waiting for: the first pass uploads docs/first.txt"
    );
    let before = passes.load(Ordering::SeqCst);
    for i in 0..5 {
        let name = format!("docs/remote{i}.txt");
        c.upload_file(&name, bytes::Bytes::from(format!("remote {i}")))
            .await
            .expect("upload");
        assert!(
            wait_for(Duration::from_secs(20), || a.join(&name).exists()).await,
            "timed out waiting for: {name} reaches the folder"
        );
    }
    // Each remote change: the pass the change feed wakes, and at most the one the download's
    // own rename in the folder wakes (and a spare).
    let spent = passes.load(Ordering::SeqCst) - before;
    assert!(spent <= 5 * 3, "{spent} passes for 5 remote changes");
    // Then nothing changes for a while (an observation window, not a wait for a condition: the
    // claim is that nothing happens in it): at most the echoes of the last downloads (notify
    // reports the rename of each download into place, debounced).
    let quiet = passes.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = passes.load(Ordering::SeqCst) - quiet;
    // (A watcher woken by its own scans runs one pass per debounce period: about ten.)
    assert!(idle <= 4, "{idle} passes in 2 s with nothing changing");
    stop(w).await;
}

/// A file written the moment the watcher reports its first pass (a user who starts
/// `volebarn watch` and goes on working) is synced by the watcher, not left for the periodic
/// rescan: the folder is watched before that pass starts.
#[tokio::test(flavor = "multi_thread")]
async fn a_change_right_after_the_first_pass_is_not_left_for_the_rescan() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start().await;
    let a = dir.path().join("A");
    write(&a, "before.txt", b"there at the start");
    let folder = a.clone();
    let mut first = true;
    // The rescan is far beyond the test's wait: only the watcher can sync the new file.
    let w = start_with(&srv, &a, Duration::from_secs(600), move |_| {
        if std::mem::take(&mut first) {
            write(&folder, "new/right-after.txt", b"written as the first pass ended");
        }
    });
    let c = srv.client_with(fail_fast);
    assert!(
        wait_until(Duration::from_secs(20), || async {
            c.download_file("new/right-after.txt")
                .await
                .is_ok_and(|b| b.as_ref() == b"written as the first pass ended")
        })
        .await,
        "timed out waiting for: the file written after the first pass reaches the server"
    );
    assert_eq!(server_tree(&c).await, tree(&a));
    stop(w).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_watchers_mirror_each_other_and_catch_up_after_being_offline() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start().await;
    let (a, b) = (dir.path().join("A"), dir.path().join("B"));
    write(&a, "hello.txt", b"hello");
    let wa = start(&srv, &a);
    let wb = start(&srv, &b);
    let same = || tree(&a) == tree(&b);
    assert!(
        wait_for(Duration::from_secs(20), || b.join("hello.txt").exists()).await,
        "timed out waiting for: B receives the initial file"
    );

    // Create, edit, delete, rename a file and a directory tree in A.
    write(&a, "docs/one.md", b"one");
    write(&a, "docs/sub/two.md", b"two");
    assert!(
        wait_for(Duration::from_secs(20), || {
            std::fs::read(b.join("docs/sub/two.md")).ok().as_deref() == Some(&b"two"[..])
        })
        .await,
        "timed out waiting for: B receives the new tree"
    );
    write(&a, "hello.txt", b"hello, edited");
    assert!(
        wait_for(Duration::from_secs(20), || {
            std::fs::read(b.join("hello.txt")).ok().as_deref() == Some(&b"hello, edited"[..])
        })
        .await,
        "timed out waiting for: B receives the edit"
    );
    std::fs::rename(a.join("hello.txt"), a.join("greeting.txt")).unwrap();
    std::fs::rename(a.join("docs"), a.join("papers")).unwrap();
    assert!(
        wait_for(Duration::from_secs(20), || {
            b.join("greeting.txt").exists()
                && b.join("papers/sub/two.md").exists()
                && !b.join("docs").exists()
        })
        .await,
        "timed out waiting for: B sees the renames"
    );
    std::fs::remove_file(a.join("papers/one.md")).unwrap();
    assert!(
        wait_for(Duration::from_secs(20), || !b.join("papers/one.md").exists()).await,
        "timed out waiting for: B sees the deletion"
    );
    assert!(
        wait_for(Duration::from_secs(20), same).await,
        "timed out waiting for: A and B are identical"
    );

    // And back: B's changes reach A.
    write(&b, "from-b.txt", b"written in B");
    assert!(
        wait_for(Duration::from_secs(20), || a.join("from-b.txt").exists()).await,
        "timed out waiting for: A receives B's file"
    );

    // B goes offline; A changes things; B comes back and converges.
    stop(wb).await;
    write(&a, "while-away.txt", b"made while B was off");
    std::fs::remove_file(a.join("from-b.txt")).unwrap();
    write(&a, "papers/sub/two.md", b"two, edited while B was off");
    let wb = start(&srv, &b);
    assert!(
        wait_for(Duration::from_secs(30), || {
            b.join("while-away.txt").exists() && !b.join("from-b.txt").exists() && same()
        })
        .await,
        "timed out waiting for: B catches up"
    );
    assert_eq!(
        std::fs::read(b.join("papers/sub/two.md")).unwrap(),
        b"two, edited while B was off"
    );
    stop(wa).await;
    stop(wb).await;
}

/// Regular files below `root` (outside `.volebarn/`) whose name starts with `prefix`.
fn named(root: &Path, prefix: &str) -> Vec<(String, Vec<u8>)> {
    tree(root)
        .into_iter()
        .filter(|(p, _)| p.starts_with(prefix))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_edits_while_watching_keep_both_versions_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start().await;
    let (a, b) = (dir.path().join("A"), dir.path().join("B"));
    write(&a, "doc.txt", b"first draft");
    let wa = start(&srv, &a);
    let wb = start(&srv, &b);
    assert!(
        wait_for(Duration::from_secs(20), || b.join("doc.txt").exists()).await,
        "timed out waiting for: B receives the file"
    );

    // Both edit before either watcher's debounce is over: both sides changed since the base.
    write(&a, "doc.txt", b"edited in A");
    write(&b, "doc.txt", b"edited in B");
    assert!(
        wait_for(Duration::from_secs(30), || {
            named(&a, "doc").len() == 2 && tree(&a) == tree(&b)
        })
        .await,
        "timed out waiting for: a conflict copy in both folders, and the folders agree"
    );
    let files = named(&a, "doc");
    let mut contents: Vec<&[u8]> = files.iter().map(|(_, c)| c.as_slice()).collect();
    contents.sort();
    assert_eq!(contents, [&b"edited in A"[..], b"edited in B"], "{files:?}");
    assert!(
        files
            .iter()
            .any(|(p, _)| p.starts_with("doc (conflict ") && p.ends_with(").txt")),
        "{files:?}"
    );
    stop(wa).await;
    stop(wb).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mass_delete_while_watching_is_held_until_sync_force() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start().await;
    let (a, b) = (dir.path().join("A"), dir.path().join("B"));
    let names = ["one.txt", "two.txt", "docs/three.txt", "docs/four.txt"];
    for n in names {
        write(&a, n, n.as_bytes());
    }
    let wa = start(&srv, &a);
    let wb = start(&srv, &b);
    assert!(
        wait_for(Duration::from_secs(20), || tree(&b).len() == 4).await,
        "timed out waiting for: B has every file"
    );

    // Delete every file in A (the marker stays): held, nothing deleted on the server or in B.
    for n in names {
        std::fs::remove_file(a.join(n)).unwrap();
    }
    assert!(
        wait_for(Duration::from_secs(20), || {
            volebarn_console::state::read_status(&a)
                .ok()
                .flatten()
                .is_some_and(|s| s.held_deletions.len() == 4)
        })
        .await,
        "timed out waiting for: A's watch holds the deletions"
    );
    let c = srv.client_with(fail_fast);
    assert_eq!(server_tree(&c).await.len(), 4, "nothing deleted remotely");
    assert_eq!(tree(&b).len(), 4, "nothing deleted in B");

    // `volebarn status` and `volebarn sync --force` while A's watch holds the folder.
    let ca = srv.ca_cert();
    let url = srv.url("");
    let cli = |args: &[&str]| {
        let mut all: Vec<&std::ffi::OsStr> = ["--server", &url, "--token", srv.token(), "--ca-cert"]
            .into_iter()
            .map(std::ffi::OsStr::new)
            .collect();
        all.push(ca.as_os_str());
        all.extend(args.iter().map(std::ffi::OsStr::new));
        all.extend(["--folder".as_ref(), a.as_os_str()]);
        common::volebarn(dir.path(), dir.path(), &all)
    };
    let r = cli(&["status"]).ok();
    assert!(r.stdout.contains("(volebarn watch is running)"), "{r:?}");
    assert!(r.stdout.contains("HELD:       4 deletions"), "{r:?}");
    let r = cli(&["sync", "--force"]).ok();
    assert!(r.stderr.contains("asking it for this pass"), "{r:?}");
    assert!(r.stdout.contains("deleted 0 here and 4 on the server"), "{r:?}");
    assert!(server_tree(&c).await.is_empty());
    assert!(
        wait_for(Duration::from_secs(20), || tree(&b).is_empty()).await,
        "timed out waiting for: B follows"
    );

    // Every deleted file is restorable from its versions.
    for n in names {
        let v = c.versions(n).await.unwrap();
        let last = v.versions.iter().find(|v| v.deleted).expect("a deleted version");
        c.restore_version(n, last.rev).await.unwrap();
    }
    assert!(
        wait_for(Duration::from_secs(20), || {
            tree(&a).len() == 4 && tree(&a) == tree(&b)
        })
        .await,
        "timed out waiting for: the restored files reach A and B"
    );
    assert_eq!(
        std::fs::read(a.join("docs/three.txt")).unwrap(),
        b"docs/three.txt"
    );
    stop(wa).await;
    stop(wb).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn webdav_and_a_watched_folder_see_each_others_writes() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start().await;
    let raw = srv.raw();
    let a = dir.path().join("A");
    std::fs::create_dir_all(&a).unwrap();
    let wa = start(&srv, &a);

    // A WebDAV client (as rclone, Finder or davfs2 would) makes a folder and saves a file.
    let mkcol = raw
        .request(
            reqwest::Method::from_bytes(b"MKCOL").unwrap(),
            srv.url("/dav/shared"),
        )
        .basic_auth("anyone", Some(srv.token()))
        .send()
        .await
        .expect("MKCOL");
    assert_eq!(mkcol.status(), 201);
    let from_dav = volebarn_testkit::pseudo_random(70 * 1024, 3);
    let put = raw
        .put(srv.url("/dav/shared/from-dav.bin"))
        .basic_auth("anyone", Some(srv.token()))
        .body(from_dav.clone())
        .send()
        .await
        .expect("PUT");
    assert_eq!(put.status(), 201);
    assert!(
        wait_for(Duration::from_secs(20), || {
            std::fs::read(a.join("shared/from-dav.bin")).ok().as_deref() == Some(&from_dav[..])
        })
        .await,
        "timed out waiting for: the watched folder receives the WebDAV write"
    );

    // A file saved in the watched folder reads back over WebDAV with the REST API's tags.
    write(&a, "shared/from-folder.txt", b"saved in the watched folder");
    let dav_get = || {
        raw.get(srv.url("/dav/shared/from-folder.txt"))
            .basic_auth("anyone", Some(srv.token()))
            .send()
    };
    assert!(
        wait_until(Duration::from_secs(20), || async {
            dav_get().await.is_ok_and(|r| r.status() == 200)
        })
        .await,
        "timed out waiting for: the folder's file is readable over WebDAV"
    );
    let dav = dav_get().await.expect("WebDAV GET");
    let rest = raw
        .get(srv.url("/files/shared/from-folder.txt"))
        .bearer_auth(srv.token())
        .send()
        .await
        .expect("REST GET");
    for header in ["etag", "x-file-hash"] {
        assert!(dav.headers().get(header).is_some(), "no {header} over WebDAV");
        assert_eq!(dav.headers().get(header), rest.headers().get(header), "{header}");
    }
    assert_eq!(
        dav.bytes().await.unwrap().as_ref(),
        b"saved in the watched folder"
    );

    // A WebDAV delete reaches the folder too.
    let del = raw
        .delete(srv.url("/dav/shared/from-dav.bin"))
        .basic_auth("anyone", Some(srv.token()))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(del.status(), 204);
    assert!(
        wait_for(Duration::from_secs(20), || !a
            .join("shared/from-dav.bin")
            .exists())
        .await,
        "timed out waiting for: the WebDAV delete reaches the folder"
    );
    stop(wa).await;
}
