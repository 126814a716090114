//! The conformance suite every [`MetaStore`] implementation must pass. Public behind the
//! `conformance` feature, so a backend in another crate runs the very same checks:
//!
//! ```ignore
//! volebarn_server::storage::meta::conformance::run_all(|| (MyStore::open(..), ()));
//! ```

use super::{CommitOutcome, Entry, MetaBatch, MetaOp, MetaStore};
use crate::storage::records::{Change, ChangeKind, ChunkRef, DirRecord, FileRecord, VersionRecord};
use crate::storage::StorageResult;
use bytes::Bytes;
use std::sync::Arc;
use volebarn_core::{ChunkId, VPath};

fn p(s: &str) -> VPath {
    VPath::parse(s).expect("valid test path")
}

fn file(rev: u64, xxh3: u64, mtime: i64) -> FileRecord {
    FileRecord {
        size: 10,
        xxh3,
        mtime,
        rev,
        chunks: vec![ChunkRef {
            id: [rev as u8; 32],
            len: 10,
        }],
    }
}

fn try_commit<S: MetaStore + ?Sized>(s: &S, ops: Vec<MetaOp>) -> StorageResult<CommitOutcome> {
    s.begin()?.commit(MetaBatch { ops })
}

fn commit<S: MetaStore + ?Sized>(s: &S, ops: Vec<MetaOp>) -> CommitOutcome {
    try_commit(s, ops).expect("commit")
}

/// One transaction that allocates a revision and journals a put of `path` with it.
fn journal_put<S: MetaStore + ?Sized>(s: &S, path: &str) -> u64 {
    let mut tx = s.begin().expect("begin");
    let rev = tx.next_rev();
    let change = Change {
        rev,
        kind: ChangeKind::Put,
        path: path.into(),
        to_path: None,
        at: 0,
    };
    tx.commit(MetaBatch {
        ops: vec![MetaOp::Journal(change)],
    })
    .expect("commit");
    rev
}

/// A named check of the suite.
type Check<S> = (&'static str, fn(Arc<S>));

/// Runs every check, each against a fresh store made by `make` (its second value keeps
/// whatever the store needs alive, such as a temp directory, until the check ends).
pub fn run_all<S: MetaStore, G>(make: impl Fn() -> (S, G)) {
    let checks: [Check<S>; 17] = [
        ("paged descendants", paged_descendants),
        ("journal trimming and old versions", trimming),
        ("empty store", empty_store),
        ("listing", listing),
        ("chunk refcounts", chunk_refcounts),
        ("inline chunk data", inline_chunk_data),
        ("failed batch applies nothing", failed_batch_applies_nothing),
        ("versions", versions),
        ("versions below a directory", versions_below),
        ("journal", journal),
        ("indexes", indexes),
        ("revisions come from the store", revisions_from_the_store),
        ("a dropped transaction changes nothing", dropped_transaction),
        (
            "concurrent transactions on one path: no lost update, no duplicate revision",
            concurrent_transactions,
        ),
        ("head watchers see every commit", head_watch),
        ("claims", claims),
        ("dead properties", dead_props),
    ];
    for (name, check) in checks {
        let (store, _guard) = make();
        eprintln!("meta conformance: {name}");
        check(Arc::new(store));
    }
}

fn empty_store<S: MetaStore>(s: Arc<S>) {
    assert!(matches!(s.get(&VPath::root()).expect("get"), Some(Entry::Dir(_))));
    assert_eq!(s.get(&p("nope")).expect("get"), None);
    assert!(s.children(&VPath::root()).expect("children").is_empty());
    assert_eq!(s.head_rev().expect("head"), 0);
    assert_eq!(s.stats().expect("stats").files, 0);
}

fn listing<S: MetaStore>(s: Arc<S>) {
    let dir = DirRecord { mtime: 1, rev: 1 };
    commit(
        &*s,
        vec![
            MetaOp::PutDir(p("a"), dir),
            MetaOp::PutFile(p("a/x"), file(2, 1, 1)),
            MetaOp::PutDir(p("a/sub"), dir),
            MetaOp::PutFile(p("a/sub/deep"), file(3, 1, 1)),
            MetaOp::PutFile(p("ab"), file(4, 1, 1)),
            MetaOp::PutFile(p("a b"), file(5, 1, 1)),
            MetaOp::PutFile(p("Ä"), file(6, 1, 1)),
        ],
    );
    let names = |d: &str| -> Vec<String> {
        s.children(&p(d))
            .expect("children")
            .into_iter()
            .map(|(path, _)| path.to_string())
            .collect()
    };
    assert_eq!(names(""), ["a", "a b", "ab", "Ä"]);
    assert_eq!(names("a"), ["a/sub", "a/x"]);
    assert_eq!(names("a/sub"), ["a/sub/deep"]);
    let desc: Vec<String> = s
        .descendants(&p("a"))
        .expect("descendants")
        .into_iter()
        .map(|(path, _)| path.to_string())
        .collect();
    assert_eq!(desc, ["a/sub", "a/sub/deep", "a/x"]);
    assert!(matches!(s.get(&p("a/x")).expect("get"), Some(Entry::File(f)) if f.rev == 2));
    assert!(matches!(s.get(&p("a/sub")).expect("get"), Some(Entry::Dir(_))));
    commit(
        &*s,
        vec![MetaOp::DeleteFile(p("a/x")), MetaOp::DeleteDir(p("a/sub"))],
    );
    assert_eq!(s.get(&p("a/x")).expect("get"), None);
    assert_eq!(s.stats().expect("stats").files, 4);
}

fn chunk_refcounts<S: MetaStore>(s: Arc<S>) {
    let id = ChunkId([9; 32]);
    let adj = |delta| MetaOp::AdjustChunk { id, size: 100, delta };
    let out = commit(&*s, vec![adj(1), adj(1)]);
    assert!(out.freed_chunks.is_empty());
    assert_eq!(s.chunk(&id).expect("chunk").map(|c| c.refs), Some(2));
    assert_eq!(s.stats().expect("stats").chunks, 1);
    assert_eq!(s.stats().expect("stats").chunk_bytes, 100);
    let out = commit(&*s, vec![adj(-1)]);
    assert!(out.freed_chunks.is_empty());
    let out = commit(&*s, vec![adj(-1)]);
    assert_eq!(out.freed_chunks, vec![id]);
    assert_eq!(s.chunk(&id).expect("chunk"), None);
    assert_eq!(s.stats().expect("stats").chunks, 0);
    // Re-referenced inside the same batch that drops it: not freed.
    commit(&*s, vec![adj(1)]);
    let out = commit(&*s, vec![adj(-1), adj(1)]);
    assert!(out.freed_chunks.is_empty());
}

fn failed_batch_applies_nothing<S: MetaStore>(s: Arc<S>) {
    let id = ChunkId([3; 32]);
    let res = try_commit(
        &*s,
        vec![
            MetaOp::PutFile(p("f"), file(1, 1, 1)),
            MetaOp::AdjustChunk {
                id,
                size: 1,
                delta: -1,
            },
        ],
    );
    assert!(res.is_err(), "a refcount below zero must be refused");
    assert_eq!(s.get(&p("f")).expect("get"), None);
    assert_eq!(s.stats().expect("stats").files, 0);
}

fn versions<S: MetaStore>(s: Arc<S>) {
    let v = |rev| VersionRecord {
        file: file(rev, rev, 0),
        deleted: rev == 3,
        archived_at: 0,
    };
    commit(
        &*s,
        vec![
            MetaOp::PutVersion(p("doc"), v(3)),
            MetaOp::PutVersion(p("doc"), v(1)),
            MetaOp::PutVersion(p("doc/inner"), v(2)),
            MetaOp::PutVersion(p("docs"), v(2)),
        ],
    );
    let revs: Vec<u64> = s
        .versions(&p("doc"))
        .expect("versions")
        .iter()
        .map(|v| v.file.rev)
        .collect();
    assert_eq!(revs, [1, 3], "oldest first, only this path");
    commit(&*s, vec![MetaOp::DeleteVersion(p("doc"), 1)]);
    let left = s.versions(&p("doc")).expect("versions");
    assert_eq!(left.len(), 1);
    assert!(left[0].deleted);
}

fn versions_below<S: MetaStore>(s: Arc<S>) {
    let v = |rev| VersionRecord {
        file: file(rev, rev, 0),
        deleted: rev % 2 == 0,
        archived_at: 0,
    };
    // Revisions whose big-endian bytes hold 0x00 and 0xFF, like the key separators.
    commit(
        &*s,
        vec![
            MetaOp::PutVersion(p("d/b"), v(0xFF00)),
            MetaOp::PutVersion(p("d/a"), v(255)),
            MetaOp::PutVersion(p("d/a"), v(2)),
            MetaOp::PutVersion(p("d/ab"), v(12)),
            MetaOp::PutVersion(p("d/sub/deep"), v(4)),
            MetaOp::PutVersion(p("d"), v(6)),
            MetaOp::PutVersion(p("dd/x"), v(8)),
            MetaOp::PutVersion(p("top"), v(10)),
        ],
    );
    let got_all = |dir: &str, direct_only: bool| -> Vec<(String, u64)> {
        let dir = if dir.is_empty() { VPath::root() } else { p(dir) };
        s.versions_below(&dir, direct_only)
            .expect("versions below")
            .into_iter()
            .map(|(path, v)| (path.to_string(), v.file.rev))
            .collect()
    };
    let got = |dir: &str| got_all(dir, true);
    let own = |list: &[(&str, u64)]| -> Vec<(String, u64)> {
        list.iter().map(|(p, r)| (p.to_string(), *r)).collect()
    };
    assert_eq!(
        got("d"),
        own(&[("d/a", 2), ("d/a", 255), ("d/ab", 12), ("d/b", 0xFF00)]),
        "direct children only, by path then revision"
    );
    assert_eq!(got(""), own(&[("d", 6), ("top", 10)]));
    assert_eq!(got("d/sub"), own(&[("d/sub/deep", 4)]));
    assert!(got("none").is_empty());
    assert_eq!(
        got_all("d", false),
        own(&[
            ("d/a", 2),
            ("d/a", 255),
            ("d/ab", 12),
            ("d/b", 0xFF00),
            ("d/sub/deep", 4)
        ]),
        "the whole subtree, in path-key order"
    );
    assert_eq!(got_all("", false).len(), 8);
    assert_eq!(got_all("", false)[0], ("d".to_string(), 6));
    // fsck's pages read the same keys, revisions with 0xFF bytes included (RocksDB split its
    // keys at their last 0xFF byte, so revision 255 read as a corrupt key).
    let paged = s.versions_page(None, 100).expect("versions page");
    assert_eq!(paged.len(), 8);
    assert!(paged
        .iter()
        .any(|(p, rev, _)| p.as_str() == "d/b" && *rev == 0xFF00));
    // And GC's: versions archived before a time.
    assert_eq!(s.versions_archived_before(1, 100).expect("old versions").len(), 8);
}

fn journal<S: MetaStore>(s: Arc<S>) {
    for i in 1..=5u64 {
        assert_eq!(journal_put(&*s, &format!("f{i}")), i);
    }
    assert_eq!(s.head_rev().expect("head"), 5);
    let revs: Vec<u64> = s
        .changes_since(2, 100)
        .expect("changes")
        .iter()
        .map(|c| c.rev)
        .collect();
    assert_eq!(revs, [3, 4, 5]);
    assert_eq!(s.changes_since(0, 2).expect("changes").len(), 2);
    assert!(s.changes_since(5, 10).expect("changes").is_empty());
}

fn indexes<S: MetaStore>(s: Arc<S>) {
    commit(
        &*s,
        vec![
            MetaOp::PutFile(p("one"), file(1, 0xAA, -50)),
            MetaOp::PutFile(p("two"), file(2, 0xAA, 200)),
            MetaOp::PutFile(p("three"), file(3, 0xBB, 100)),
        ],
    );
    let names = |v: Vec<VPath>| -> Vec<String> { v.into_iter().map(|p| p.to_string()).collect() };
    assert_eq!(names(s.files_with_hash(0xAA).expect("hash")), ["one", "two"]);
    assert_eq!(names(s.modified_since(0).expect("mod")), ["three", "two"]);
    assert_eq!(
        names(s.modified_since(-100).expect("mod")),
        ["one", "three", "two"]
    );
    // Replacing and deleting keep the indexes exact.
    commit(
        &*s,
        vec![
            MetaOp::PutFile(p("one"), file(4, 0xBB, 300)),
            MetaOp::DeleteFile(p("two")),
        ],
    );
    assert!(s.files_with_hash(0xAA).expect("hash").is_empty());
    assert_eq!(names(s.files_with_hash(0xBB).expect("hash")), ["one", "three"]);
    assert_eq!(names(s.modified_since(0).expect("mod")), ["three", "one"]);
}

fn paged_descendants<S: MetaStore>(s: Arc<S>) {
    let mut ops = vec![MetaOp::PutDir(p("d"), DirRecord { mtime: 1, rev: 1 })];
    for i in 0..25 {
        ops.push(MetaOp::PutFile(p(&format!("d/f{i:02}")), file(i + 2, 1, 1)));
    }
    ops.push(MetaOp::PutDir(p("d/sub"), DirRecord { mtime: 1, rev: 30 }));
    ops.push(MetaOp::PutFile(p("d/sub/x"), file(31, 1, 1)));
    ops.push(MetaOp::PutFile(p("e"), file(32, 1, 1)));
    commit(&*s, ops);
    let mut all = Vec::new();
    let mut after: Option<VPath> = None;
    loop {
        let page = s.descendants_page(&p("d"), after.as_ref(), 7).expect("page");
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 7);
        after = page.last().map(|(p, _)| p.clone());
        all.extend(page.into_iter().map(|(p, _)| p.to_string()));
    }
    let whole: Vec<String> = s
        .descendants(&p("d"))
        .expect("all")
        .into_iter()
        .map(|(p, _)| p.to_string())
        .collect();
    assert_eq!(all, whole);
    assert_eq!(all.len(), 27);
    let from_root = s.descendants_page(&VPath::root(), None, 1000).expect("root page");
    assert_eq!(from_root.len(), 29);
    assert_eq!(s.stats().expect("stats").file_bytes, 27 * 10);
}

fn trimming<S: MetaStore>(s: Arc<S>) {
    for _ in 1..=10u64 {
        journal_put(&*s, "x");
    }
    assert_eq!(s.journal_floor().expect("floor"), 0);
    commit(&*s, vec![MetaOp::TrimJournal(6)]);
    assert_eq!(s.journal_floor().expect("floor"), 6);
    let revs: Vec<u64> = s
        .changes_since(0, 100)
        .expect("changes")
        .iter()
        .map(|c| c.rev)
        .collect();
    assert_eq!(revs, [7, 8, 9, 10]);
    assert_eq!(s.head_rev().expect("head"), 10);

    let v = |rev, at| VersionRecord {
        file: file(rev, rev, 0),
        deleted: false,
        archived_at: at,
    };
    commit(
        &*s,
        vec![
            MetaOp::PutVersion(p("old"), v(1, 100)),
            MetaOp::PutVersion(p("old"), v(2, 300)),
            MetaOp::PutVersion(p("n/b"), v(3, 50)),
        ],
    );
    let old: Vec<(String, u64)> = s
        .versions_archived_before(200, 100)
        .expect("old versions")
        .into_iter()
        .map(|(p, v)| (p.to_string(), v.file.rev))
        .collect();
    assert_eq!(old, [("n/b".to_string(), 3), ("old".to_string(), 1)]);
}

fn inline_chunk_data<S: MetaStore>(s: Arc<S>) {
    let data = Bytes::from_static(b"small file content");
    let id = ChunkId::of(&data);
    let adj = |delta| MetaOp::AdjustChunk {
        id,
        size: data.len() as u32,
        delta,
    };
    assert_eq!(s.chunk_data(&id).expect("data"), None);
    commit(&*s, vec![MetaOp::PutChunkData(id, data.clone()), adj(1)]);
    assert_eq!(s.chunk_data(&id).expect("data"), Some(data.clone()));
    assert!(s.begin().expect("begin").has_chunk_data(&id).expect("has"));
    commit(&*s, vec![adj(1)]);
    commit(&*s, vec![adj(-1)]);
    assert_eq!(
        s.chunk_data(&id).expect("data"),
        Some(data.clone()),
        "still referenced"
    );
    let out = commit(&*s, vec![adj(-1)]);
    assert_eq!(out.freed_chunks, vec![id]);
    assert_eq!(
        s.chunk_data(&id).expect("data"),
        None,
        "freed with its last reference"
    );
    assert!(!s.begin().expect("begin").has_chunk_data(&id).expect("has"));
    // Bytes sent in a batch that ends without a reference are not kept.
    commit(&*s, vec![MetaOp::PutChunkData(id, data.clone()), adj(1), adj(-1)]);
    assert_eq!(s.chunk_data(&id).expect("data"), None);
}

fn revisions_from_the_store<S: MetaStore>(s: Arc<S>) {
    let mut tx = s.begin().expect("begin");
    let (a, b) = (tx.next_rev(), tx.next_rev());
    assert!(b > a && a > 0);
    let out = tx
        .commit(MetaBatch {
            ops: vec![MetaOp::PutDir(p("d"), DirRecord { mtime: 0, rev: b })],
        })
        .expect("commit");
    assert_eq!(out.head, b);
    assert_eq!(s.head_rev().expect("head"), b);
    let next = journal_put(&*s, "x");
    assert!(next > b, "the next transaction continues after the head");
    // A transaction without revisions leaves the head alone.
    commit(
        &*s,
        vec![MetaOp::PutDir(p("e"), DirRecord { mtime: 0, rev: next })],
    );
    assert_eq!(s.head_rev().expect("head"), next);
}

fn dropped_transaction<S: MetaStore>(s: Arc<S>) {
    {
        let mut tx = s.begin().expect("begin");
        tx.next_rev();
        // Dropped without commit.
    }
    assert_eq!(s.head_rev().expect("head"), 0);
    assert_eq!(s.get(&p("never")).expect("get"), None);
    let rev = journal_put(&*s, "after");
    assert_eq!(s.head_rev().expect("head"), rev);
}

fn concurrent_transactions<S: MetaStore>(s: Arc<S>) {
    const THREADS: usize = 4;
    const EACH: u64 = 25;
    let path = p("counter");
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (s, path) = (s.clone(), path.clone());
            std::thread::spawn(move || {
                let mut revs = Vec::new();
                for _ in 0..EACH {
                    // Read, check, write: the file's size counts the updates.
                    let mut tx = s.begin().expect("begin");
                    let size = match tx.get(&path).expect("get") {
                        Some(Entry::File(f)) => f.size,
                        _ => 0,
                    };
                    let rev = tx.next_rev();
                    let rec = FileRecord {
                        size: size + 1,
                        xxh3: size + 1,
                        mtime: 0,
                        rev,
                        chunks: vec![],
                    };
                    let change = Change {
                        rev,
                        kind: ChangeKind::Put,
                        path: path.to_string(),
                        to_path: None,
                        at: 0,
                    };
                    tx.commit(MetaBatch {
                        ops: vec![MetaOp::PutFile(path.clone(), rec), MetaOp::Journal(change)],
                    })
                    .expect("commit");
                    revs.push(rev);
                }
                revs
            })
        })
        .collect();
    let mut revs: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("thread"))
        .collect();
    let total = THREADS as u64 * EACH;
    match s.get(&path).expect("get") {
        Some(Entry::File(f)) => assert_eq!(f.size, total, "no update was lost"),
        other => panic!("counter is {other:?}"),
    }
    revs.sort_unstable();
    revs.dedup();
    assert_eq!(revs.len() as u64, total, "no revision was handed out twice");
    let journal = s.changes_since(0, 1000).expect("changes");
    assert_eq!(journal.len() as u64, total);
    assert!(journal.windows(2).all(|w| w[0].rev < w[1].rev));
    assert_eq!(s.head_rev().expect("head"), *revs.last().expect("revs"));
}

fn head_watch<S: MetaStore>(s: Arc<S>) {
    let mut rx = s.watch_head();
    assert_eq!(*rx.borrow_and_update(), 0);
    let rev = journal_put(&*s, "x");
    assert!(rx.has_changed().expect("sender alive"));
    assert_eq!(*rx.borrow_and_update(), rev);
}

fn claims<S: MetaStore>(s: Arc<S>) {
    use crate::storage::Claim;
    let claim = |xxh3| Claim {
        size: 10,
        xxh3,
        chunks: file(1, 0, 0).chunks,
        path: "big.bin".into(),
    };
    assert!(s.claims(10).expect("claims").is_empty());
    commit(&*s, vec![MetaOp::PutClaim(claim(1)), MetaOp::PutClaim(claim(2))]);
    commit(&*s, vec![MetaOp::PutClaim(claim(1))]);
    let mut open: Vec<u64> = s.claims(10).expect("claims").iter().map(|c| c.xxh3).collect();
    open.sort_unstable();
    assert_eq!(open, [1, 2], "one entry per claim");
    assert_eq!(s.claims(1).expect("claims").len(), 1, "limit");
    assert!(s.has_claim(&claim(1).key()).expect("has"));
    commit(&*s, vec![MetaOp::DeleteClaim(claim(1).key())]);
    assert!(!s.has_claim(&claim(1).key()).expect("has"));
    assert_eq!(s.claims(10).expect("claims"), vec![claim(2)]);
}

fn dead_props<S: MetaStore>(s: Arc<S>) {
    use crate::storage::{DeadProp, DeadProps};
    let props = |value: &str| DeadProps {
        props: vec![DeadProp {
            namespace: Some("http://example.com/ns".into()),
            name: "colour".into(),
            prefix: Some("E".into()),
            xml: Some(format!("<E:colour xmlns:E=\"http://example.com/ns\">{value}</E:colour>").into_bytes()),
        }],
    };
    assert_eq!(s.dead_props(&p("doc")).expect("read"), None);
    commit(&*s, vec![MetaOp::SetDeadProps(p("doc"), Some(props("red")))]);
    assert_eq!(s.dead_props(&p("doc")).expect("read"), Some(props("red")));
    assert_eq!(
        s.dead_props(&p("doc/inner")).expect("read"),
        None,
        "per path, not per subtree"
    );
    // The last op of a batch on a path wins.
    commit(
        &*s,
        vec![
            MetaOp::SetDeadProps(p("doc"), None),
            MetaOp::SetDeadProps(p("doc"), Some(props("blue"))),
        ],
    );
    assert_eq!(s.dead_props(&p("doc")).expect("read"), Some(props("blue")));
    commit(&*s, vec![MetaOp::SetDeadProps(p("doc"), None)]);
    assert_eq!(s.dead_props(&p("doc")).expect("read"), None);

    // Below a directory: every path under it, in path order, and nothing beside it.
    commit(
        &*s,
        vec![
            MetaOp::SetDeadProps(p("tree"), Some(props("top"))),
            MetaOp::SetDeadProps(p("tree/b/deep"), Some(props("deep"))),
            MetaOp::SetDeadProps(p("tree/a"), Some(props("a"))),
            MetaOp::SetDeadProps(p("tree-sibling"), Some(props("beside"))),
            MetaOp::SetDeadProps(p("treetop"), Some(props("beside"))),
        ],
    );
    assert_eq!(
        s.dead_props_below(&p("tree")).expect("below"),
        vec![(p("tree/a"), props("a")), (p("tree/b/deep"), props("deep"))]
    );
    assert_eq!(s.dead_props_below(&p("tree/b")).expect("below").len(), 1);
    assert_eq!(s.dead_props_below(&VPath::root()).expect("below").len(), 5);
}
