//! Unit tests (one per row of the docs/design.md §6 table) and property tests that apply plans to a
//! simulated client and server.

use super::*;
use proptest::prelude::*;
use proptest::sample::subsequence;

/// Content `c` of the test alphabet: equal `c` ⇔ equal xxh3 and size.
fn content(c: u8) -> (Xxh3, u64) {
    (Xxh3(0x1000 + u64::from(c)), u64::from(c) * 7)
}

fn loc(c: u8, mtime: UnixNanos) -> LocalState {
    let (xxh3, size) = content(c);
    LocalState { xxh3, size, mtime }
}

fn rem(c: u8, mtime: UnixNanos, rev: u64) -> RemoteState {
    let (xxh3, size) = content(c);
    RemoteState {
        xxh3,
        size,
        mtime,
        rev,
    }
}

fn bas(c: u8, rev: u64) -> BaseState {
    rem(c, 0, rev).into()
}

fn map<T>(entries: Vec<(&str, T)>) -> BTreeMap<String, T> {
    entries.into_iter().map(|(p, v)| (p.to_string(), v)).collect()
}

fn set(paths: &[&str]) -> BTreeSet<String> {
    paths.iter().map(|p| p.to_string()).collect()
}

/// Plans one path `f` with the given sides and no directories.
fn one(
    l: Option<LocalState>,
    r: Option<RemoteState>,
    b: Option<BaseState>,
    strategy: ConflictStrategy,
) -> SyncPlan {
    fn at_f<T>(v: Option<T>) -> BTreeMap<String, T> {
        v.into_iter().map(|v| ("f".to_string(), v)).collect()
    }
    plan(&at_f(l), &at_f(r), &at_f(b), &set(&[]), &set(&[]), strategy)
}

fn paths(v: &[&str]) -> Vec<String> {
    v.iter().map(|p| p.to_string()).collect()
}

const S: ConflictStrategy = ConflictStrategy::PreferNewer;

#[test]
fn same_same_does_nothing() {
    let p = one(Some(loc(1, 5)), Some(rem(1, 5, 3)), Some(bas(1, 3)), S);
    assert!(p.is_empty(), "{p:?}");
}

#[test]
fn same_same_under_a_newer_rev_adopts_it() {
    let p = one(Some(loc(1, 5)), Some(rem(1, 9, 4)), Some(bas(1, 3)), S);
    assert_eq!(p.adopt, paths(&["f"]));
    assert_eq!(p.total_ops(), 1);
}

#[test]
fn local_edit_uploads_conditioned_on_the_base_rev() {
    let p = one(Some(loc(2, 5)), Some(rem(1, 5, 3)), Some(bas(1, 3)), S);
    assert_eq!(p.client_upload, paths(&["f"]));
    assert_eq!(p.if_match.get("f"), Some(&3));
    assert_eq!(p.total_ops(), 1);
}

#[test]
fn local_edit_over_a_same_bytes_reupload_uses_the_current_rev() {
    let p = one(Some(loc(2, 5)), Some(rem(1, 5, 8)), Some(bas(1, 3)), S);
    assert_eq!(p.client_upload, paths(&["f"]));
    assert_eq!(p.if_match.get("f"), Some(&8));
}

#[test]
fn local_delete_deletes_on_the_server_conditioned_on_the_base_rev() {
    let p = one(None, Some(rem(1, 5, 3)), Some(bas(1, 3)), S);
    assert_eq!(p.server_delete, paths(&["f"]));
    assert_eq!(p.if_match.get("f"), Some(&3));
    assert_eq!(p.total_ops(), 1);
}

#[test]
fn remote_edit_downloads() {
    let p = one(Some(loc(1, 5)), Some(rem(2, 6, 4)), Some(bas(1, 3)), S);
    assert_eq!(p.client_download, paths(&["f"]));
    assert_eq!(p.total_ops(), 1);
}

#[test]
fn remote_delete_deletes_locally() {
    let p = one(Some(loc(1, 5)), None, Some(bas(1, 3)), S);
    assert_eq!(p.client_delete, paths(&["f"]));
    assert_eq!(p.total_ops(), 1);
}

#[test]
fn both_changed_to_the_same_content_adopts() {
    let p = one(Some(loc(2, 5)), Some(rem(2, 6, 4)), Some(bas(1, 3)), S);
    assert_eq!(p.adopt, paths(&["f"]));
    assert_eq!(p.total_ops(), 1);
}

#[test]
fn both_changed_differently_is_a_conflict_and_nothing_else() {
    let p = one(
        Some(loc(2, 5)),
        Some(rem(3, 6, 4)),
        Some(bas(1, 3)),
        ConflictStrategy::Manual,
    );
    assert_eq!(p.total_ops(), 1);
    let c = &p.conflicts[0];
    assert_eq!((c.path.as_str(), c.resolution), ("f", ConflictResolution::Manual));
    assert_eq!(
        (c.local_modified, c.remote_modified, c.remote_rev),
        (5, 6, Some(4))
    );
    assert_eq!(c.kind, ConflictKind::Content);
    assert!(p.if_match.is_empty());
}

#[test]
fn remote_edit_beats_local_delete() {
    let p = one(None, Some(rem(2, 6, 4)), Some(bas(1, 3)), S);
    assert_eq!(p.client_download, paths(&["f"]));
    assert_eq!(p.total_ops(), 1);
}

#[test]
fn local_edit_beats_remote_delete_with_an_unconditional_create() {
    let p = one(Some(loc(2, 5)), None, Some(bas(1, 3)), S);
    assert_eq!(p.client_upload, paths(&["f"]));
    assert!(p.if_match.is_empty());
}

#[test]
fn deleted_on_both_sides_forgets_the_base() {
    let p = one(None, None, Some(bas(1, 3)), S);
    assert_eq!(p.forget, paths(&["f"]));
    assert_eq!(p.total_ops(), 1);
}

#[test]
fn without_base_local_only_uploads_as_a_create() {
    let p = one(Some(loc(1, 5)), None, None, S);
    assert_eq!(p.client_upload, paths(&["f"]));
    assert!(p.if_match.is_empty());
}

#[test]
fn without_base_remote_only_downloads() {
    let p = one(None, Some(rem(1, 5, 3)), None, S);
    assert_eq!(p.client_download, paths(&["f"]));
}

#[test]
fn without_base_equal_content_adopts() {
    let p = one(Some(loc(1, 5)), Some(rem(1, 9, 3)), None, S);
    assert_eq!(p.adopt, paths(&["f"]));
}

#[test]
fn without_base_different_content_is_resolved_per_strategy() {
    use ConflictResolution as R;
    use ConflictStrategy as St;
    let cases = [
        (St::PreferLocal, 5, 9, R::UseLocal),
        (St::PreferRemote, 9, 5, R::UseRemote),
        (St::PreferNewer, 9, 5, R::UseLocal),
        (St::PreferNewer, 5, 9, R::UseRemote),
        (St::PreferNewer, 7, 7, R::UseRemote),
        (St::Manual, 9, 5, R::Manual),
    ];
    for (strategy, lt, rt, want) in cases {
        let p = one(Some(loc(1, lt)), Some(rem(2, rt, 3)), None, strategy);
        assert_eq!(p.conflicts.len(), 1, "{strategy:?}");
        assert_eq!(p.conflicts[0].resolution, want, "{strategy:?} {lt} {rt}");
        assert_eq!(p.total_ops(), 1);
        // Only a `use_local` conflict overwrites the remote, so only it needs a precondition.
        let want_if_match = (want == R::UseLocal).then_some(&3);
        assert_eq!(p.if_match.get("f"), want_if_match);
    }
}

#[test]
fn file_facing_a_directory_is_manual_and_blocks_its_subtree() {
    let local = map(vec![("d", loc(1, 5)), ("x", loc(1, 5))]);
    let remote = map(vec![("d/c", rem(2, 6, 4)), ("x", rem(1, 5, 1))]);
    let p = plan(
        &local,
        &remote,
        &BTreeMap::<String, BaseState>::new(),
        &set(&[]),
        &set(&["d/e", "y"]),
        S,
    );
    assert_eq!(p.conflicts.len(), 1);
    let c = &p.conflicts[0];
    assert_eq!(
        (c.path.as_str(), c.resolution, c.kind),
        ("d", ConflictResolution::Manual, ConflictKind::FileDirectory)
    );
    assert_eq!((c.local_modified, c.remote_modified, c.remote_rev), (5, 0, None));
    assert!(p.client_download.is_empty(), "d/c lies under the clash");
    assert_eq!(p.client_create_dirs, paths(&["y"]), "d/e lies under the clash");
    assert_eq!(p.adopt, paths(&["x"]));
}

#[test]
fn missing_directories_are_created_on_the_other_side() {
    let local = map(vec![("a/f", loc(1, 5))]);
    let remote = map(vec![("a/f", rem(1, 5, 1))]);
    let base = map(vec![("a/f", bas(1, 1))]);
    let p = plan(&local, &remote, &base, &set(&["a", "l/m"]), &set(&["r", "a"]), S);
    assert_eq!(p.client_create_dirs, paths(&["r"]));
    assert_eq!(p.server_create_dirs, paths(&["l/m"]));
}

#[test]
fn directories_implied_by_planned_files_are_not_listed() {
    // `n` comes with the download of `n/f`; `k` would vanish on the server with `k/f`.
    let local = map(vec![("k/f", loc(1, 5))]);
    let remote = map(vec![("n/f", rem(1, 5, 1))]);
    let p = plan(
        &local,
        &remote,
        &BTreeMap::<String, BaseState>::new(),
        &set(&["k"]),
        &set(&["n"]),
        S,
    );
    assert!(
        p.client_create_dirs.is_empty() && p.server_create_dirs.is_empty(),
        "{p:?}"
    );

    let base = map(vec![("k/f", bas(1, 1))]);
    let remote = map(vec![("k/f", rem(1, 5, 1))]);
    let p = plan(
        &BTreeMap::<String, LocalState>::new(),
        &remote,
        &base,
        &set(&["k"]),
        &set(&[]),
        S,
    );
    assert_eq!(p.server_delete, paths(&["k/f"]));
    assert_eq!(
        p.server_create_dirs,
        paths(&["k"]),
        "the local folder stays, so the server keeps it"
    );
}

#[test]
fn conflict_copy_names() {
    let at = 1_795_649_881_500_000_000; // 2026-11-25T23:38:01.5Z
    assert_eq!(
        conflict_copy_name("a/b/report.pdf", at),
        "a/b/report (conflict 2026-11-25 233801).pdf"
    );
    assert_eq!(
        conflict_copy_name("Makefile", at),
        "Makefile (conflict 2026-11-25 233801)"
    );
    assert_eq!(
        conflict_copy_name("x/.bashrc", at),
        "x/.bashrc (conflict 2026-11-25 233801)"
    );
    assert_eq!(
        conflict_copy_name("archive.tar.gz", at),
        "archive.tar (conflict 2026-11-25 233801).gz"
    );
    assert_eq!(
        conflict_copy_name("v1.2/notes", 0),
        "v1.2/notes (conflict 1970-01-01 000000)"
    );
}

#[test]
fn json_shapes_match_the_seed() {
    assert_eq!(ConflictStrategy::default(), ConflictStrategy::PreferNewer);
    let names = [
        (ConflictStrategy::PreferLocal, "\"prefer_local\""),
        (ConflictStrategy::PreferRemote, "\"prefer_remote\""),
        (ConflictStrategy::PreferNewer, "\"prefer_newer\""),
        (ConflictStrategy::Manual, "\"manual\""),
    ];
    for (s, json) in names {
        assert_eq!(serde_json::to_string(&s).unwrap(), json);
    }
    let p = one(
        Some(loc(1, 0)),
        Some(rem(2, 1_000_000_001, 3)),
        None,
        ConflictStrategy::PreferLocal,
    );
    let v = serde_json::to_value(&p).unwrap();
    assert_eq!(
        v["conflicts"][0],
        serde_json::json!({
            "path": "f",
            "local_modified": "1970-01-01T00:00:00Z",
            "remote_modified": "1970-01-01T00:00:01.000000001Z",
            "resolution": "use_local",
            "remote_rev": 3,
            "kind": "content",
        })
    );
    assert_eq!(v["if_match"], serde_json::json!({ "f": 3 }));
    assert_eq!(v["client_upload"], serde_json::json!([]));
    assert_eq!(serde_json::from_value::<SyncPlan>(v).unwrap(), p);

    // The seed's response: four lists and conflicts without our additions.
    let seed = r#"{"client_download":["a"],"client_delete":[],"client_upload":[],
        "conflicts":[{"path":"b","local_modified":"2024-01-01T00:00:00Z",
        "remote_modified":"2024-01-01T00:00:00Z","resolution":"use_newer"}]}"#;
    let p: SyncPlan = serde_json::from_str(seed).unwrap();
    assert_eq!(p.client_download, paths(&["a"]));
    assert_eq!(
        (p.conflicts[0].remote_rev, p.conflicts[0].kind),
        (None, ConflictKind::Content)
    );
    assert!(serde_json::from_str::<SyncPlan>("{}").unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Property tests: a simulated client applies plans the way docs/design.md §6 says a correct one must.

/// When the simulated client makes conflict copies.
const COPY_AT: UnixNanos = 1_795_649_881_000_000_000;

#[derive(Debug, Clone, Default)]
struct World {
    local: BTreeMap<String, LocalState>,
    remote: BTreeMap<String, RemoteState>,
    base: BTreeMap<String, BaseState>,
    local_dirs: BTreeSet<String>,
    remote_dirs: BTreeSet<String>,
    next_rev: u64,
    /// Whether writing a file makes its parents real, listed directories on that side (a local
    /// file system) or leaves them implied, gone with the last file (a server may do either).
    local_keeps_parents: bool,
    remote_keeps_parents: bool,
}

fn lc(l: &LocalState) -> (Xxh3, u64) {
    (l.xxh3, l.size)
}
fn rc(r: &RemoteState) -> (Xxh3, u64) {
    (r.xxh3, r.size)
}
fn bc(b: &BaseState) -> (Xxh3, u64) {
    (b.xxh3, b.size)
}

impl World {
    fn plan(&self, strategy: ConflictStrategy) -> SyncPlan {
        plan(
            &self.local,
            &self.remote,
            &self.base,
            &self.local_dirs,
            &self.remote_dirs,
            strategy,
        )
    }

    /// Writes a local file.
    fn put_local(&mut self, path: &str, (xxh3, size): (Xxh3, u64), mtime: UnixNanos) {
        self.local
            .insert(path.to_string(), LocalState { xxh3, size, mtime });
        if self.local_keeps_parents {
            self.local_dirs.extend(ancestors(path).map(str::to_string));
        }
    }

    /// Uploads as the server would and records the result as the base.
    fn put_remote(&mut self, path: &str, (xxh3, size): (Xxh3, u64), mtime: UnixNanos) {
        self.next_rev += 1;
        let r = RemoteState {
            xxh3,
            size,
            mtime,
            rev: self.next_rev,
        };
        self.remote.insert(path.to_string(), r);
        self.base.insert(path.to_string(), r.into());
        if self.remote_keeps_parents {
            self.remote_dirs.extend(ancestors(path).map(str::to_string));
        }
    }

    /// The server's `If-Match` check.
    fn check_precondition(&self, plan: &SyncPlan, path: &str) {
        assert_eq!(
            plan.if_match.get(path),
            self.remote.get(path).map(|r| &r.rev),
            "If-Match for {path}"
        );
    }

    fn apply(&mut self, plan: &SyncPlan) {
        for p in &plan.client_upload {
            self.check_precondition(plan, p);
            let l = self.local[p];
            self.put_remote(p, lc(&l), l.mtime);
        }
        for p in &plan.client_download {
            let r = self.remote[p];
            self.put_local(p, rc(&r), r.mtime);
            self.base.insert(p.clone(), r.into());
        }
        for p in &plan.client_delete {
            let l = self.local.remove(p).expect("client_delete of a missing file");
            let b = self.base.remove(p).expect("client_delete of a never-synced file");
            assert_eq!(
                lc(&l),
                bc(&b),
                "client_delete of {p} would lose an unsynced version"
            );
            assert!(!self.remote.contains_key(p));
        }
        for p in &plan.server_delete {
            self.check_precondition(plan, p);
            let r = self.remote.remove(p).expect("server_delete of a missing file");
            let b = self.base.remove(p).expect("server_delete of a never-synced file");
            assert_eq!(
                rc(&r),
                bc(&b),
                "server_delete of {p} would delete an unseen version"
            );
            assert!(!self.local.contains_key(p));
        }
        for p in &plan.adopt {
            let r = self.remote[p];
            assert_eq!(lc(&self.local[p]), rc(&r), "adopt of {p} with different content");
            self.base.insert(p.clone(), r.into());
        }
        for p in &plan.forget {
            assert!(!self.local.contains_key(p) && !self.remote.contains_key(p));
            self.base.remove(p).unwrap();
        }
        for c in &plan.conflicts {
            if c.kind == ConflictKind::FileDirectory {
                continue; // the user has to act
            }
            let p = c.path.as_str();
            let (l, r) = (self.local[p], self.remote[p]);
            assert_ne!(lc(&l), rc(&r), "equal content is never a conflict");
            assert_eq!(c.remote_rev, Some(r.rev));
            let copy = conflict_copy_name(p, COPY_AT);
            assert!(!self.local.contains_key(&copy) && !self.remote.contains_key(&copy));
            match c.resolution {
                ConflictResolution::UseLocal => {
                    self.check_precondition(plan, p);
                    self.put_local(&copy, rc(&r), r.mtime);
                    self.put_remote(&copy, rc(&r), r.mtime);
                    self.put_remote(p, lc(&l), l.mtime);
                }
                ConflictResolution::UseRemote | ConflictResolution::Manual => {
                    assert!(!plan.if_match.contains_key(p));
                    self.put_local(&copy, lc(&l), l.mtime);
                    self.put_remote(&copy, lc(&l), l.mtime);
                    self.put_local(p, rc(&r), r.mtime);
                    self.base.insert(p.to_string(), r.into());
                }
                ConflictResolution::UseNewer => panic!("the planner decides prefer_newer itself"),
            }
        }
        for d in &plan.client_create_dirs {
            assert!(!self.local.contains_key(d), "mkdir over local file {d}");
            self.local_dirs.insert(d.clone());
            self.local_dirs.extend(ancestors(d).map(str::to_string));
        }
        for d in &plan.server_create_dirs {
            assert!(!self.remote.contains_key(d), "mkdir over remote file {d}");
            self.remote_dirs.insert(d.clone());
        }
    }

    /// Every content present on either side.
    fn contents(&self) -> BTreeSet<(Xxh3, u64)> {
        self.local
            .values()
            .map(lc)
            .chain(self.remote.values().map(rc))
            .collect()
    }
}

fn tree_of(dirs: &BTreeSet<String>, files: impl Iterator<Item = String>) -> BTreeSet<String> {
    let files: Vec<String> = files.collect();
    tree(dirs.iter(), files.iter().map(String::as_str))
        .into_iter()
        .map(str::to_string)
        .collect()
}

#[derive(Debug, Clone)]
enum Edit {
    Keep,
    Delete,
    Write(u8, UnixNanos),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        3 => Just(Edit::Keep),
        1 => Just(Edit::Delete),
        // Three contents only, so "both changed to the same bytes" happens often.
        2 => (0u8..3, 0i64..3).prop_map(|(c, t)| Edit::Write(c, t)),
    ]
}

fn conflict_strategy() -> impl Strategy<Value = ConflictStrategy> {
    prop_oneof![
        Just(ConflictStrategy::PreferLocal),
        Just(ConflictStrategy::PreferRemote),
        Just(ConflictStrategy::PreferNewer),
        Just(ConflictStrategy::Manual),
    ]
}

const ALL: [ConflictStrategy; 4] = [
    ConflictStrategy::PreferLocal,
    ConflictStrategy::PreferRemote,
    ConflictStrategy::PreferNewer,
    ConflictStrategy::Manual,
];

/// No file path is a directory path here; `clash_world` adds some that are.
const FILES: [&str; 6] = ["a", "b.txt", ".rc", "d/c", "d/e.tar.gz", "g/h/i"];
const DIRS: [&str; 4] = ["d", "e", "e/f", "g"];

/// A base over `files`, and two sides derived from it by independent edits.
fn world_over(files: &'static [&'static str]) -> impl Strategy<Value = World> {
    let n = files.len();
    (
        proptest::collection::vec(proptest::option::of((0u8..3, 0i64..3)), n),
        proptest::collection::vec(edit(), n),
        proptest::collection::vec(edit(), n),
        subsequence(DIRS.to_vec(), 0..=DIRS.len()),
        subsequence(DIRS.to_vec(), 0..=DIRS.len()),
        any::<(bool, bool)>(),
    )
        .prop_map(move |(base, local_edits, remote_edits, ld, rd, (lkeep, rkeep))| {
            let mut w = World {
                next_rev: 100,
                local_keeps_parents: lkeep,
                remote_keeps_parents: rkeep,
                ..World::default()
            };
            w.local_dirs = ld.iter().map(|d| d.to_string()).collect();
            w.remote_dirs = rd.iter().map(|d| d.to_string()).collect();
            for (i, path) in files.iter().enumerate() {
                let b = base[i].map(|(c, t)| BaseState {
                    mtime: t,
                    ..bas(c, i as u64 + 1)
                });
                if let Some(b) = b {
                    w.base.insert(path.to_string(), b);
                }
                match (&local_edits[i], b) {
                    (Edit::Keep, Some(b)) => w.put_local(path, bc(&b), b.mtime),
                    (Edit::Write(c, t), _) => w.put_local(path, content(*c), *t),
                    _ => {}
                }
                match (&remote_edits[i], b) {
                    (Edit::Keep, Some(b)) => {
                        let r = RemoteState {
                            xxh3: b.xxh3,
                            size: b.size,
                            mtime: b.mtime,
                            rev: b.rev,
                        };
                        w.remote.insert(path.to_string(), r);
                    }
                    // A fresh rev even for the base's bytes: a re-upload elsewhere.
                    (Edit::Write(c, t), _) => {
                        w.next_rev += 1;
                        w.remote.insert(path.to_string(), rem(*c, *t, w.next_rev));
                    }
                    _ => {}
                }
            }
            if w.remote_keeps_parents {
                let parents: Vec<String> = w
                    .remote
                    .keys()
                    .flat_map(|p| ancestors(p))
                    .map(str::to_string)
                    .collect();
                w.remote_dirs.extend(parents);
            }
            realistic(w)
        })
}

/// Drops what no file system or server can hold: a file at a path that is also a directory on
/// the same side (listed, or the parent of another file).
fn realistic(mut w: World) -> World {
    let ltree = tree_of(&w.local_dirs, w.local.keys().cloned());
    let rtree = tree_of(&w.remote_dirs, w.remote.keys().cloned());
    w.local.retain(|p, _| !ltree.contains(p));
    w.remote.retain(|p, _| !rtree.contains(p));
    w
}

/// Sorted, and each path in at most one file list.
fn assert_well_formed(plan: &SyncPlan) {
    let lists = [
        &plan.client_upload,
        &plan.client_download,
        &plan.client_delete,
        &plan.server_delete,
        &plan.adopt,
        &plan.forget,
        &plan.client_create_dirs,
        &plan.server_create_dirs,
    ];
    let conflicts: Vec<String> = plan.conflicts.iter().map(|c| c.path.clone()).collect();
    let mut seen = BTreeSet::new();
    for list in lists.iter().take(6).copied().chain([&conflicts]) {
        assert!(list.windows(2).all(|w| w[0] < w[1]), "unsorted {list:?}");
        for p in list {
            assert!(seen.insert(p.clone()), "{p} planned twice in {plan:?}");
        }
    }
    for list in &lists[6..] {
        assert!(list.windows(2).all(|w| w[0] < w[1]), "unsorted {list:?}");
    }
    let use_local = plan
        .conflicts
        .iter()
        .filter(|c| c.resolution == ConflictResolution::UseLocal);
    let conditioned: BTreeSet<&String> = plan
        .client_upload
        .iter()
        .chain(&plan.server_delete)
        .chain(use_local.map(|c| &c.path))
        .collect();
    assert!(
        plan.if_match.keys().all(|p| conditioned.contains(p)),
        "stray if_match in {plan:?}"
    );
}

proptest! {
    // PROPTEST_CASES raises the number of cases (`make proptest`).
    #![proptest_config(ProptestConfig::with_cases(ProptestConfig::default().cases.max(1024)))]

    /// Properties 1, 2, 3 and 5: well formed, nothing lost, converged, and then nothing to do.
    #[test]
    fn apply_converges_loses_nothing_and_replans_empty(w in world_over(&FILES), strategy in conflict_strategy()) {
        let plan = w.plan(strategy);
        assert_well_formed(&plan);
        for c in &plan.conflicts {
            prop_assert_ne!(lc(&w.local[&c.path]), rc(&w.remote[&c.path]), "equal content is a conflict");
        }

        let mut after = w.clone();
        after.apply(&plan);

        // A content may vanish only where it equalled the base: the deletion or overwrite of a
        // version both sides had seen (and the server's history still holds).
        let left = after.contents();
        let sides = w.local.iter().map(|(p, l)| (p, lc(l))).chain(w.remote.iter().map(|(p, r)| (p, rc(r))));
        for (p, c) in sides {
            if !left.contains(&c) {
                prop_assert_eq!(w.base.get(p).map(bc), Some(c), "{} lost {:?}", p, c);
            }
        }

        let local: BTreeMap<&String, _> = after.local.iter().map(|(p, l)| (p, lc(l))).collect();
        let remote: BTreeMap<&String, _> = after.remote.iter().map(|(p, r)| (p, rc(r))).collect();
        prop_assert_eq!(&local, &remote);
        let base: BTreeMap<String, BaseState> = after.remote.iter().map(|(p, r)| (p.clone(), (*r).into())).collect();
        prop_assert_eq!(&after.base, &base);
        prop_assert_eq!(
            tree_of(&after.local_dirs, after.local.keys().cloned()),
            tree_of(&after.remote_dirs, after.remote.keys().cloned())
        );

        for again in ALL {
            let next = after.plan(again);
            prop_assert!(next.is_empty(), "{:?} after applying {:?}: {:?}", again, plan, next);
        }
    }

    /// Property 4: edits beat deletes, whatever the strategy.
    #[test]
    fn edits_beat_deletes(w in world_over(&FILES), strategy in conflict_strategy()) {
        let plan = w.plan(strategy);
        for (p, b) in &w.base {
            match (w.local.get(p), w.remote.get(p)) {
                (None, Some(r)) if r.rev != b.rev && rc(r) != bc(b) => {
                    prop_assert!(plan.client_download.contains(p), "remote edit of {} lost to a local delete", p);
                }
                (Some(l), None) if lc(l) != bc(b) => {
                    prop_assert!(plan.client_upload.contains(p), "local edit of {} lost to a remote delete", p);
                    prop_assert!(!plan.if_match.contains_key(p));
                }
                _ => {}
            }
        }
    }

    /// Files facing directories are reported, left alone with their subtrees, and the rest still
    /// converges.
    #[test]
    fn file_directory_clashes_are_manual_and_isolated(w in world_over(&CLASH_FILES), strategy in conflict_strategy()) {
        let ltree = tree_of(&w.local_dirs, w.local.keys().cloned());
        let rtree = tree_of(&w.remote_dirs, w.remote.keys().cloned());
        let clashes: BTreeSet<String> = w.local.keys().filter(|p| rtree.contains(*p))
            .chain(w.remote.keys().filter(|p| ltree.contains(*p))).cloned().collect();
        let touches = |p: &String| clashes.iter().any(|c| p == c || p.starts_with(&format!("{c}/")));

        let plan = w.plan(strategy);
        assert_well_formed(&plan);
        let reported: BTreeSet<String> = plan.conflicts.iter()
            .filter(|c| c.kind == ConflictKind::FileDirectory)
            .inspect(|c| assert_eq!(c.resolution, ConflictResolution::Manual))
            .map(|c| c.path.clone()).collect();
        prop_assert_eq!(&reported, &clashes);
        let others = [&plan.client_upload, &plan.client_download, &plan.client_delete, &plan.server_delete,
            &plan.adopt, &plan.forget, &plan.client_create_dirs, &plan.server_create_dirs];
        for p in others.into_iter().flatten() {
            prop_assert!(!touches(p), "{} planned under a clash", p);
        }

        let mut after = w.clone();
        after.apply(&plan);
        let next = after.plan(strategy);
        let still: BTreeSet<String> = next.conflicts.iter().map(|c| c.path.clone()).collect();
        prop_assert_eq!(&still, &clashes);
        prop_assert_eq!(next.total_ops(), clashes.len(), "{:?}", next);
    }
}

/// `d` and `e` are also directory names in `DIRS`, and `d` is the parent of `d/c`.
const CLASH_FILES: [&str; 5] = ["a", "d", "d/c", "e", "e/f/g"];
