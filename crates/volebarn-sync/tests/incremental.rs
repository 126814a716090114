//! Scoped passes (what `volebarn watch` runs after a notify event): only the reported paths
//! and what the server changed are scanned; the rest of the folder is taken as the last pass
//! left it, and the periodic full pass is the safety net.

use bytes::Bytes;
use std::collections::BTreeSet;
use volebarn_client::ConflictStrategy;
use volebarn_sync::{PassOptions, Scope};
use volebarn_testkit::{age, server_tree, tree, write, TestServer};

fn paths(p: &[&str]) -> Scope {
    Scope::Paths(p.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scoped_pass_scans_only_what_changed_and_never_loses_a_local_edit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = TestServer::start().await;
    let a = dir.path().join("A");
    for i in 0..200 {
        write(
            &a,
            &format!("d{}/f{i}.txt", i % 10),
            format!("file {i}").as_bytes(),
        );
    }
    age(&a);
    let mut engine = srv.engine(&a, ConflictStrategy::PreferNewer);
    // The first pass scans everything, whatever it is told.
    let first = engine
        .pass_scoped(PassOptions::default(), paths(&["d0"]))
        .await
        .expect("first pass");
    assert!(first.full_scan);
    assert_eq!(first.examined, 200);
    assert_eq!(first.result.uploaded.len(), 200);

    // An edit and a new file in a new directory, each reported: only they are looked at.
    write(&a, "d1/f1.txt", b"edited");
    write(&a, "new/inner/g.txt", b"new");
    age(&a);
    let r = engine
        .pass_scoped(PassOptions::default(), paths(&["d1/f1.txt", "new"]))
        .await
        .expect("scoped pass");
    assert!(!r.full_scan);
    assert_eq!(r.examined, 2, "the edited and the new file: {r:?}");
    let mut up = volebarn_testkit::names(&r.result.uploaded);
    up.sort();
    assert_eq!(up, ["d1/f1.txt", "new/inner/g.txt"], "{r:?}");
    assert_eq!(server_tree(&srv.client).await, tree(&a));

    // A deletion or a rename: the safety rails weigh deletions against the whole folder (and
    // a batch of them may be reported in parts), so such a pass scans everything.
    std::fs::remove_file(a.join("d2/f2.txt")).expect("rm");
    std::fs::rename(a.join("d3/f3.txt"), a.join("d3/renamed.txt")).expect("mv");
    let r = engine
        .pass_scoped(PassOptions::default(), paths(&["d2/f2.txt"]))
        .await
        .expect("pass with a deletion");
    assert!(r.full_scan);
    assert_eq!(r.examined, 200, "{r:?}");
    assert_eq!(r.result.deleted_remote, ["d2/f2.txt"], "{r:?}");
    assert_eq!(r.moved, [("d3/f3.txt".to_string(), "d3/renamed.txt".to_string())]);
    assert_eq!(server_tree(&srv.client).await, tree(&a));

    // The server's journal reports the rename as a move: the engine lists the server's tree
    // afresh, and the pass after a re-list scans in full.
    let r = engine
        .pass_scoped(PassOptions::default(), paths(&[]))
        .await
        .expect("pass after a move");
    assert!(r.full_scan);
    assert_eq!(r.pending.total(), 0, "{r:?}");

    // Written but not reported: a scoped pass leaves it for the full pass.
    write(&a, "d4/unreported.txt", b"quiet");

    // The server changes a file that was also edited here without a report: the server's
    // change makes the pass look at it, so both versions are kept.
    srv.client
        .update_file("d5/f5.txt", Bytes::from_static(b"server edit"))
        .await
        .expect("server edit");
    write(&a, "d5/f5.txt", b"local edit, not reported");
    age(&a);
    let r = engine
        .pass_scoped(PassOptions::default(), paths(&[]))
        .await
        .expect("remote pass");
    assert!(!r.full_scan);
    assert_eq!(r.examined, 1, "only the file the server changed: {r:?}");
    assert!(
        r.result.uploaded.iter().all(|p| &**p != "d4/unreported.txt"),
        "{r:?}"
    );
    assert_eq!(r.result.conflicts_resolved, ["d5/f5.txt"], "{r:?}");
    let copies: Vec<_> = r.result.conflict_copies.iter().map(|c| c.copy.clone()).collect();
    assert_eq!(copies.len(), 1);
    let local = tree(&a);
    let mut both: Vec<&[u8]> = vec![&local["d5/f5.txt"], &local[&copies[0]]];
    both.sort();
    assert_eq!(both, [&b"local edit, not reported"[..], &b"server edit"[..]]);

    // The periodic full pass finds what was never reported.
    let r = engine.pass(PassOptions::default()).await.expect("full pass");
    assert!(r.full_scan);
    assert!(
        volebarn_testkit::names(&r.result.uploaded).contains(&"d4/unreported.txt"),
        "{r:?}"
    );
    let again = engine.pass(PassOptions::DRY_RUN).await.expect("dry run");
    assert_eq!(again.pending.total(), 0, "converged: {again:?}");
    assert_eq!(server_tree(&srv.client).await, tree(&a));
}

/// A new engine (a new `volebarn sync` process) starts its mirror of the server from the
/// index, and asks the server only for the changes since, when the last pass left both sides
/// agreeing; what the server changed in between is synced exactly as after a full listing.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_engine_resumes_from_the_stored_cursor_instead_of_listing_the_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = TestServer::start().await;
    let a = dir.path().join("A");
    for i in 0..40 {
        write(
            &a,
            &format!("d{}/f{i}.txt", i % 4),
            format!("file {i}").as_bytes(),
        );
    }
    std::fs::create_dir_all(a.join("empty/inner")).expect("mkdir");
    age(&a);
    let open = || srv.engine(&a, ConflictStrategy::PreferNewer);
    let first = open().pass(PassOptions::default()).await.expect("first pass");
    assert!(first.listed_remote, "a new folder lists the server");
    assert_eq!(first.result.uploaded.len(), 40, "{first:?}");

    // The next process finds the cursor in the index: no listing, nothing to do. The cursor
    // is past the first pass's own uploads and directories, not read back from the journal.
    let mut engine = open();
    let cursor = engine.cursor().expect("the mirror starts from the index");
    let journal = srv.client.changes(cursor, 0).await.expect("changes");
    assert!(journal.changes.is_empty(), "{:?}", journal.changes);
    let r = engine.pass(PassOptions::default()).await.expect("no-op pass");
    assert!(!r.listed_remote, "{r:?}");
    assert!(!r.changed_anything(), "{r:?}");
    drop(engine);

    // The server changes while no engine runs.
    srv.client
        .upload_file("d0/new.txt", Bytes::from_static(b"new on the server"))
        .await
        .expect("upload");
    srv.client
        .update_file("d1/f1.txt", Bytes::from_static(b"edited on the server"))
        .await
        .expect("edit");
    srv.client.delete_file("d2/f2.txt").await.expect("delete");
    srv.client.create_directory("made/there").await.expect("mkdir");
    let mut engine = open();
    let r = engine
        .pass(PassOptions::default())
        .await
        .expect("pass after server changes");
    assert!(!r.listed_remote, "{r:?}");
    let mut down = volebarn_testkit::names(&r.result.downloaded);
    down.sort();
    assert_eq!(down, ["d0/new.txt", "d1/f1.txt"], "{r:?}");
    assert_eq!(r.result.deleted_local, ["d2/f2.txt"], "{r:?}");
    assert!(a.join("made/there").is_dir());
    assert!(a.join("empty/inner").is_dir());
    assert_eq!(server_tree(&srv.client).await, tree(&a));

    // After a pass that uploaded, the next process still needs no listing: the mirror
    // followed what the pass did on the server.
    write(&a, "d3/local.txt", b"written here");
    age(&a);
    let r = engine.pass(PassOptions::default()).await.expect("upload pass");
    assert_eq!(
        volebarn_testkit::names(&r.result.uploaded),
        ["d3/local.txt"],
        "{r:?}"
    );
    drop(engine);
    let r = open().pass(PassOptions::default()).await.expect("next process");
    assert!(!r.listed_remote, "{r:?}");
    assert!(!r.changed_anything(), "{r:?}");
    assert_eq!(server_tree(&srv.client).await, tree(&a));

    // The cursor belongs to that server: the same folder pointed at another one lists it.
    let other = TestServer::start().await;
    let engine = other.engine(&a, ConflictStrategy::PreferNewer);
    assert_eq!(engine.cursor(), None, "a cursor of another server is not used");
}

/// A scoped pass starts from the folder as the last pass left it, which the engine keeps in
/// its index rather than in a second copy of the scan: deletions the safety rails held stay
/// missing (and held), and a file the last pass downloaded is there.
#[tokio::test(flavor = "multi_thread")]
async fn a_scoped_pass_sees_held_deletions_and_downloads_of_the_pass_before() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = TestServer::start().await;
    let a = dir.path().join("A");
    for i in 0..10 {
        write(
            &a,
            &format!("d{}/f{i}.txt", i % 2),
            format!("file {i}").as_bytes(),
        );
    }
    age(&a);
    let mut engine = srv.engine(&a, ConflictStrategy::PreferNewer);
    let first = engine.pass(PassOptions::default()).await.expect("first pass");
    assert_eq!(first.result.uploaded.len(), 10, "{first:?}");

    // Most of the folder deleted here (held: more than half), and a file new on the server.
    for i in 0..8 {
        std::fs::remove_file(a.join(format!("d{}/f{i}.txt", i % 2))).expect("rm");
    }
    srv.client
        .upload_file("d0/from-server.txt", Bytes::from_static(b"made there"))
        .await
        .expect("server upload");
    let r = engine.pass(PassOptions::default()).await.expect("pass");
    assert_eq!(r.held_deletions.len(), 8, "{r:?}");
    assert_eq!(
        volebarn_testkit::names(&r.result.downloaded),
        ["d0/from-server.txt"],
        "{r:?}"
    );

    // A reported edit: only it (and the download) is scanned; the rest is as the pass before
    // left it.
    write(&a, "d1/f9.txt", b"edited");
    age(&a);
    let r = engine
        .pass_scoped(PassOptions::default(), paths(&["d1/f9.txt"]))
        .await
        .expect("scoped pass");
    assert!(!r.full_scan, "{r:?}");
    assert_eq!(
        r.examined, 2,
        "the edit, and what the pass before wrote here: {r:?}"
    );
    assert_eq!(
        volebarn_testkit::names(&r.result.uploaded),
        ["d1/f9.txt"],
        "{r:?}"
    );
    assert!(
        r.result.downloaded.is_empty(),
        "the download is not fetched again: {r:?}"
    );
    assert_eq!(r.held_deletions.len(), 8, "still missing here, still held: {r:?}");
    assert!(r.result.deleted_remote.is_empty(), "{r:?}");
    let on_server = server_tree(&srv.client).await;
    assert_eq!(on_server.len(), 11, "nothing deleted there: {on_server:?}");
    assert_eq!(on_server["d1/f9.txt"], b"edited");
    assert_eq!(tree(&a)["d0/from-server.txt"], b"made there");
    srv.shutdown().await;
}

/// The paths a scoped pass looks at again (what the server changed, what the pass before
/// wrote here) are kept only up to a limit: past it the next pass scans the whole folder
/// instead of holding a list as long as the folder (a first sync down of 100,000 files).
#[tokio::test(flavor = "multi_thread")]
async fn past_the_limit_of_paths_to_look_at_again_a_scoped_pass_scans_in_full() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = TestServer::start().await;
    let a = dir.path().join("A");
    std::fs::create_dir_all(&a).expect("mkdir");
    let upload = |names: std::ops::Range<usize>| {
        let c = srv.client.clone();
        async move {
            for i in names {
                c.upload_file(&format!("s/f{i}.txt"), Bytes::from(format!("server {i}")))
                    .await
                    .expect("server upload");
            }
        }
    };
    upload(0..5).await;
    let mut engine = srv.engine(&a, ConflictStrategy::PreferNewer);
    let first = engine.pass(PassOptions::default()).await.expect("first pass");
    assert_eq!(first.result.downloaded.len(), 5, "{first:?}");

    // Under the limit (10,000 by default): the five downloads are looked at again, nothing else.
    let r = scoped(&mut engine).await;
    assert!(!r.full_scan, "{r:?}");
    assert_eq!(r.examined, 5, "{r:?}");

    // Four changes on the server, over a limit of three: that pass scans in full, and so does
    // the next one, since the first wrote four files here.
    engine.rescan_above(3);
    upload(5..9).await;
    let r = scoped(&mut engine).await;
    assert!(r.full_scan, "{r:?}");
    assert_eq!(r.examined, 5, "{r:?}");
    assert_eq!(r.result.downloaded.len(), 4, "{r:?}");
    let r = scoped(&mut engine).await;
    assert!(r.full_scan, "{r:?}");
    assert_eq!(r.examined, 9, "{r:?}");
    let r = scoped(&mut engine).await;
    assert!(!r.full_scan, "{r:?}");
    assert_eq!(r.examined, 0, "{r:?}");
    assert_eq!(server_tree(&srv.client).await, tree(&a));
}

async fn scoped(engine: &mut volebarn_sync::Engine) -> volebarn_sync::PassReport {
    engine
        .pass_scoped(PassOptions::default(), paths(&[]))
        .await
        .expect("scoped pass")
}

/// The cursor goes past a pass's own writes only when no one else's came between: a file
/// another client uploads while this pass plans its uploads is in the journal before them,
/// and the next pass still reads it (and downloads the file).
#[tokio::test(flavor = "multi_thread")]
async fn a_write_of_another_client_amid_a_pass_s_own_is_still_read_from_the_journal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = TestServer::start().await;
    let a = dir.path().join("A");
    write(&a, "base.txt", b"synced first");
    age(&a);
    let mut engine = srv.engine(&a, ConflictStrategy::PreferNewer);
    engine.pass(PassOptions::default()).await.expect("first pass");
    for i in 0..5 {
        write(&a, &format!("up/f{i}.txt"), format!("local {i}").as_bytes());
    }
    age(&a);
    // Called once a pass that transfers has read the journal and planned, before it does.
    let other = srv.client();
    let once = std::sync::atomic::AtomicBool::new(false);
    engine.set_progress(Box::new(move |_, _| {
        if once.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return std::sync::Arc::new(Quiet);
        }
        let other = other.clone();
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(other.upload_file("theirs.txt", Bytes::from_static(b"from another client")))
                .expect("the other client's upload");
        })
        .join()
        .expect("thread");
        std::sync::Arc::new(Quiet)
    }));
    let r = engine.pass(PassOptions::default()).await.expect("upload pass");
    assert_eq!(r.result.uploaded.len(), 5, "{r:?}");
    assert!(!a.join("theirs.txt").exists(), "written after this pass planned");
    let r = engine.pass(PassOptions::default()).await.expect("next pass");
    assert!(!r.listed_remote, "{r:?}");
    assert_eq!(
        volebarn_testkit::names(&r.result.downloaded),
        ["theirs.txt"],
        "{r:?}"
    );
    assert_eq!(
        std::fs::read(a.join("theirs.txt")).expect("read"),
        b"from another client"
    );
    assert_eq!(server_tree(&srv.client).await, tree(&a));
}

struct Quiet;

impl volebarn_client::TransferObserver for Quiet {
    fn bytes(&self, _: u64) {}
    fn file_done(&self, _: &str) {}
}
