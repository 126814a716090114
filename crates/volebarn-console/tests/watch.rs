//! `volebarn watch` end to end: two folders, each with its own watcher (notify + `/changes`
//! long-poll), against one real server. Every wait is on a condition, with a timeout.

mod common;

use common::{engine, server, tree, wait_for, write};
use std::path::Path;
use std::time::Duration;
use tokio::sync::oneshot;
use volebarn_client::ConflictStrategy;
use volebarn_console::watch::{self, WatchOptions};

/// Starts watching `root`; the watcher stops when the returned sender is dropped or fired.
fn start(
    srv: &volebarn_server::RunningServer,
    root: &Path,
) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let e = engine(srv, root, ConflictStrategy::PreferNewer);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        watch::run(
            e,
            WatchOptions {
                // Long enough that the tests exercise the watcher and the change feed, not the rescan.
                poll_interval: Duration::from_secs(60),
                debounce: Duration::from_millis(200),
            },
            async {
                let _ = stopped.await;
            },
            |_: &volebarn_console::engine::PassReport| {},
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

#[tokio::test(flavor = "multi_thread")]
async fn two_watchers_mirror_each_other_and_catch_up_after_being_offline() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(dir.path()).await;
    let (a, b) = (dir.path().join("A"), dir.path().join("B"));
    write(&a, "hello.txt", b"hello");
    let wa = start(&srv, &a);
    let wb = start(&srv, &b);
    let same = || tree(&a) == tree(&b);
    wait_for("B receives the initial file", 20, || b.join("hello.txt").exists()).await;

    // Create, edit, delete, rename a file and a directory tree in A.
    write(&a, "docs/one.md", b"one");
    write(&a, "docs/sub/two.md", b"two");
    wait_for("B receives the new tree", 20, || {
        std::fs::read(b.join("docs/sub/two.md")).ok().as_deref() == Some(&b"two"[..])
    })
    .await;
    write(&a, "hello.txt", b"hello, edited");
    wait_for("B receives the edit", 20, || {
        std::fs::read(b.join("hello.txt")).ok().as_deref() == Some(&b"hello, edited"[..])
    })
    .await;
    std::fs::rename(a.join("hello.txt"), a.join("greeting.txt")).unwrap();
    std::fs::rename(a.join("docs"), a.join("papers")).unwrap();
    wait_for("B sees the renames", 20, || {
        b.join("greeting.txt").exists() && b.join("papers/sub/two.md").exists() && !b.join("docs").exists()
    })
    .await;
    std::fs::remove_file(a.join("papers/one.md")).unwrap();
    wait_for("B sees the deletion", 20, || !b.join("papers/one.md").exists()).await;
    wait_for("A and B are identical", 20, same).await;

    // And back: B's changes reach A.
    write(&b, "from-b.txt", b"written in B");
    wait_for("A receives B's file", 20, || a.join("from-b.txt").exists()).await;

    // B goes offline; A changes things; B comes back and converges.
    stop(wb).await;
    write(&a, "while-away.txt", b"made while B was off");
    std::fs::remove_file(a.join("from-b.txt")).unwrap();
    write(&a, "papers/sub/two.md", b"two, edited while B was off");
    let wb = start(&srv, &b);
    wait_for("B catches up", 30, || {
        b.join("while-away.txt").exists() && !b.join("from-b.txt").exists() && same()
    })
    .await;
    assert_eq!(
        std::fs::read(b.join("papers/sub/two.md")).unwrap(),
        b"two, edited while B was off"
    );
    stop(wa).await;
    stop(wb).await;
}
