//! A dry run shows what the pass after it does: renames as moves (a directory's as one move),
//! directory deletions, and no uploads or deletions of the moved files.

use volebarn_client::ConflictStrategy;
use volebarn_sync::PassOptions;
use volebarn_testkit::{age, fail_fast, server_tree, tree, write, TestServer};

fn pair(a: &str, b: &str) -> (String, String) {
    (a.to_string(), b.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_shows_moves_and_directory_deletions_as_the_pass_does_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = TestServer::start().await;
    let c = srv.client_with(fail_fast);
    let a = dir.path().join("A");
    write(&a, "old/one.txt", b"one");
    write(&a, "old/sub/two.txt", b"two");
    write(&a, "gone/three.txt", b"three");
    write(&a, "keep.txt", b"keep");
    write(&a, "moved.txt", b"a file renamed");
    age(&a);
    let mut engine = srv.engine(&a, ConflictStrategy::PreferNewer);
    engine.pass(PassOptions::default()).await.expect("first pass");
    let synced = server_tree(&c).await;

    std::fs::rename(a.join("old"), a.join("new")).expect("rename dir");
    std::fs::rename(a.join("moved.txt"), a.join("renamed.txt")).expect("rename file");
    std::fs::remove_dir_all(a.join("gone")).expect("rm dir");
    let dry = engine.pass(PassOptions::DRY_RUN).await.expect("dry run");
    let p = &dry.pending;
    assert_eq!(
        p.moves,
        [pair("old", "new"), pair("moved.txt", "renamed.txt")],
        "{dry:?}"
    );
    assert!(
        p.uploads.is_empty(),
        "moved files are not uploaded again: {dry:?}"
    );
    assert_eq!(p.deletes_remote, ["gone/three.txt"], "{dry:?}");
    assert_eq!(p.dir_deletes_remote, ["gone"], "{dry:?}");
    assert!(dry.held_deletions.is_empty(), "{dry:?}");
    let plan = dry.plan.as_ref().expect("a dry run returns its plan");
    let moves: Vec<(&str, &str, bool)> = plan
        .moves
        .iter()
        .map(|m| (m.from.as_str(), m.to.as_str(), m.directory))
        .collect();
    assert_eq!(
        moves,
        [("old", "new", true), ("moved.txt", "renamed.txt", false)],
        "{plan:?}"
    );
    assert!(plan.downloads.is_empty() && plan.conflicts.is_empty(), "{plan:?}");
    assert_eq!(server_tree(&c).await, synced, "a dry run changes nothing");

    let real = engine.pass(PassOptions::default()).await.expect("pass");
    assert_eq!(real.moved, p.moves, "{real:?}");
    assert!(real.result.uploaded.is_empty(), "{real:?}");
    assert_eq!(real.result.deleted_remote, p.deletes_remote, "{real:?}");
    assert_eq!(real.dirs_deleted_remote, p.dir_deletes_remote, "{real:?}");
    assert_eq!(
        real.pending.total(),
        0,
        "what the pass did is not pending: {real:?}"
    );
    let status = volebarn_sync::state::read_status(&a)
        .expect("status")
        .expect("written");
    assert_eq!(
        status.pending.total(),
        0,
        "status (what `volebarn status` shows beside a watch)"
    );
    assert_eq!(server_tree(&c).await, tree(&a));
    let again = engine.pass(PassOptions::DRY_RUN).await.expect("dry run");
    assert_eq!(again.pending.total(), 0, "nothing left: {again:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn what_a_pass_could_not_do_stays_pending_and_the_rest_does_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = TestServer::start_with(|c| c.max_file_size = 100).await;
    let c = srv.client_with(fail_fast);
    let a = dir.path().join("A");
    write(&a, "small.txt", b"fits");
    write(&a, "big.bin", &[7u8; 101]);
    age(&a);
    let mut engine = srv.engine(&a, ConflictStrategy::PreferNewer);
    let r = engine.pass(PassOptions::default()).await.expect("pass");
    assert_eq!(
        volebarn_testkit::names(&r.result.uploaded),
        ["small.txt"],
        "{r:?}"
    );
    let failed: Vec<&str> = r.result.errors.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(failed, ["big.bin"], "{r:?}");
    assert_eq!(r.pending.uploads, ["big.bin"], "{r:?}");
    assert_eq!(r.pending.total(), 1, "{r:?}");
    let status = volebarn_sync::state::read_status(&a)
        .expect("status")
        .expect("written");
    assert_eq!(status.pending.uploads, ["big.bin"]);
    assert_eq!(server_tree(&c).await.keys().collect::<Vec<_>>(), ["small.txt"]);
}
