//! The planner against an in-memory world: a folder (files with content, inode and mtime;
//! directories), a server (files with content, revision and mtime; directories; every content
//! it ever held kept as a version) and the index. Property tests run random edit scripts on
//! both sides of a synced tree — writes, deletions, renames of files and directories, directory
//! deletions, new directories — then plan, apply the plan the way `apply.rs` does, and check:
//! the next plan is empty, both sides hold the same tree, and no content is lost (each is
//! current, a conflict copy, or one of the server's versions).

use super::*;
use crate::index::{Base, Stat};
use proptest::prelude::*;
use volebarn_client::Xxh3;
use volebarn_core::sync::{ConflictKind, ConflictResolution};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LocalFile {
    content: u64,
    inode: u64,
    mtime: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RemoteFile {
    content: u64,
    rev: u64,
    mtime: i64,
}

/// Content `c` has hash `c` and size `c` (never 0: renames are found by content).
fn stat(f: &LocalFile) -> Stat {
    Stat {
        size: f.content,
        mtime: f.mtime,
        inode: f.inode,
        xxh3: f.content,
    }
}

fn remote_state(f: &RemoteFile) -> RemoteState {
    RemoteState {
        xxh3: Xxh3(f.content),
        size: f.content,
        mtime: f.mtime,
        rev: f.rev,
    }
}

#[derive(Debug, Default)]
struct World {
    local: BTreeMap<String, LocalFile>,
    local_dirs: BTreeSet<String>,
    remote: BTreeMap<String, RemoteFile>,
    remote_dirs: BTreeSet<String>,
    /// Every content the server ever held (its versions).
    versions: BTreeSet<u64>,
    index: BTreeMap<Key, Entry>,
    /// Contents, inodes, revisions and mtimes come from one counter.
    clock: u64,
}

fn parents(dirs: &mut BTreeSet<String>, path: &str) {
    add_parents(dirs, path);
}

/// Everything at or below `dir` in `map`'s keys.
fn below<V>(map: &BTreeMap<String, V>, dir: &str) -> Vec<String> {
    map.keys().filter(|k| at_or_under(k, dir)).cloned().collect()
}

impl World {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn now(&mut self) -> i64 {
        self.tick() as i64
    }

    /// A tree both sides hold and the index knows as synced.
    fn synced(files: &[String], dirs: &[String]) -> World {
        let mut w = World {
            clock: 1000,
            ..World::default()
        };
        for p in files {
            let (content, inode, mtime, rev) = (w.tick(), w.tick(), w.now(), w.tick());
            w.local.insert(
                p.clone(),
                LocalFile {
                    content,
                    inode,
                    mtime,
                },
            );
            w.remote.insert(p.clone(), RemoteFile { content, rev, mtime });
            w.versions.insert(content);
            parents(&mut w.local_dirs, p);
            parents(&mut w.remote_dirs, p);
        }
        for d in dirs {
            w.local_dirs.insert(d.clone());
            parents(&mut w.local_dirs, d);
        }
        w.remote_dirs.extend(w.local_dirs.iter().cloned());
        let base: BTreeMap<String, BaseState> = w
            .remote
            .iter()
            .map(|(p, r)| (p.clone(), BaseState::from(remote_state(r))))
            .collect();
        w.remember(&base);
        w
    }

    /// The index after a pass: the folder's stats, the base, and the directories on both sides.
    fn remember(&mut self, base: &BTreeMap<String, BaseState>) {
        let mut next: BTreeMap<Key, Entry> = BTreeMap::new();
        for (p, f) in &self.local {
            next.entry(Key::from(p.as_str())).or_default().local = Some(stat(f));
        }
        for (p, b) in base {
            next.entry(Key::from(p.as_str())).or_default().base = Some(Base::from(*b));
        }
        let mut dirs: BTreeSet<String> = self.local_dirs.intersection(&self.remote_dirs).cloned().collect();
        for p in base.keys() {
            parents(&mut dirs, p);
        }
        for d in dirs {
            next.entry(Key::from(d)).or_default().dir = true;
        }
        self.index = next;
    }

    fn scan(&self) -> Scan {
        let files: BTreeMap<Key, Stat> = self
            .local
            .iter()
            .map(|(p, f)| (Key::from(p.as_str()), stat(f)))
            .collect();
        Scan {
            files,
            dirs: self.local_dirs.clone(),
            ..Scan::default()
        }
    }

    fn plan(&self, strategy: ConflictStrategy) -> Plan {
        let remote: BTreeMap<Key, RemoteState> = self
            .remote
            .iter()
            .map(|(p, r)| (Key::from(p.as_str()), remote_state(r)))
            .collect();
        make_plan(&PlanInput {
            scan: &self.scan(),
            index: &self.index,
            remote_files: &remote,
            remote_dirs: &self.remote_dirs,
            strategy,
            max_delete_percent: 50,
            force: true,
        })
    }

    fn put_remote(&mut self, path: &str, content: u64, mtime: i64) -> BaseState {
        let rev = self.tick();
        let f = RemoteFile { content, rev, mtime };
        self.remote.insert(path.to_string(), f);
        self.versions.insert(content);
        parents(&mut self.remote_dirs, path);
        remote_state(&f).into()
    }

    fn put_local(&mut self, path: &str, content: u64, mtime: i64) {
        let inode = self.tick();
        self.local.insert(
            path.to_string(),
            LocalFile {
                content,
                inode,
                mtime,
            },
        );
        parents(&mut self.local_dirs, path);
    }

    /// Does what `Executor::apply` does, on the model; panics where the real executor would
    /// meet a failed precondition (the model never changes between plan and apply).
    fn apply(&mut self, plan: &Plan) {
        let mut base: BTreeMap<String, BaseState> = base_of_index(&self.index)
            .into_iter()
            .map(|(p, b)| (p.to_string(), b))
            .collect();
        for m in &plan.moves {
            assert!(
                !self.remote.contains_key(&m.to) && !self.remote_dirs.contains(&m.to),
                "move onto an existing path: {m:?}"
            );
            if m.directory {
                assert!(self.remote_dirs.contains(&m.from), "{m:?}");
                move_keys(&mut self.remote, &m.from, &m.to);
                move_dirs(&mut self.remote_dirs, &m.from, &m.to);
            } else {
                let f = self.remote.remove(&m.from).expect("moved file on the server");
                let rev = self.tick();
                self.remote.insert(m.to.clone(), RemoteFile { rev, ..f });
                parents(&mut self.remote_dirs, &m.to);
            }
            move_keys(&mut base, &m.from, &m.to);
            for p in below(&self.remote, &m.to) {
                let r = remote_state(&self.remote[&p]);
                if let Some(b) = base.get_mut(&p) {
                    if (b.xxh3, b.size) == (r.xxh3, r.size) {
                        *b = r.into();
                    }
                }
            }
        }
        for d in &plan.create_dirs_local {
            self.local_dirs.insert(d.clone());
            parents(&mut self.local_dirs, d);
        }
        for d in &plan.create_dirs_remote {
            self.remote_dirs.insert(d.clone());
            parents(&mut self.remote_dirs, d);
        }
        for p in &plan.uploads {
            assert_eq!(
                self.remote.get(p).map(|r| r.rev),
                plan.if_match.get(p).copied(),
                "upload condition of {p}"
            );
            let l = self.local[p];
            let b = self.put_remote(p, l.content, l.mtime);
            base.insert(p.clone(), b);
        }
        for p in &plan.downloads {
            let r = self.remote[p];
            self.put_local(p, r.content, r.mtime);
            base.insert(p.clone(), remote_state(&r).into());
        }
        for p in &plan.deletes_local {
            // The executor keeps a file that no longer holds what the base says.
            if self.local.get(p).map(|l| l.content) == base.get(p).map(|b| b.xxh3.0) {
                self.local.remove(p);
                base.remove(p);
            }
        }
        for p in &plan.deletes_remote {
            assert_eq!(
                self.remote.get(p).map(|r| r.rev),
                plan.if_match.get(p).copied(),
                "delete condition of {p}"
            );
            self.remote.remove(p);
            base.remove(p);
        }
        for p in &plan.adopt {
            let r = self.remote[p];
            if self.local.get(p).map(|l| l.content) == Some(r.content) {
                base.insert(p.clone(), remote_state(&r).into());
            }
        }
        for p in &plan.forget {
            base.remove(p);
        }
        for c in &plan.conflicts {
            if c.kind == ConflictKind::FileDirectory {
                continue;
            }
            let mut n = 1;
            let copy = loop {
                let name = format!("{} (conflict {n})", c.path);
                if !self.local.contains_key(&name) && !self.remote.contains_key(&name) {
                    break name;
                }
                n += 1;
            };
            let (l, r) = (self.local[&c.path], self.remote[&c.path]);
            assert_eq!(Some(r.rev), c.remote_rev, "conflict on {}", c.path);
            let (kept, winner) = if c.resolution == ConflictResolution::UseLocal {
                (r, l.content)
            } else {
                let kept = RemoteFile {
                    content: l.content,
                    ..r
                };
                (kept, r.content)
            };
            self.put_local(&copy, kept.content, kept.mtime);
            let b = self.put_remote(&copy, kept.content, kept.mtime);
            base.insert(copy, b);
            let now = self.now();
            self.put_local(&c.path, winner, now);
            let b = self.put_remote(&c.path, winner, now);
            base.insert(c.path.clone(), b);
        }
        let mut remote_dirs = plan.dir_deletes_remote.clone();
        remote_dirs.sort();
        for d in remote_dirs {
            if self.remote.keys().all(|p| !is_under(p, &d)) {
                self.remote_dirs.retain(|k| !at_or_under(k, &d));
            }
        }
        let mut local_dirs = plan.dir_deletes_local.clone();
        local_dirs.sort_by(|a, b| b.cmp(a));
        for d in local_dirs {
            let empty = self.local.keys().all(|p| !is_under(p, &d))
                && self.local_dirs.iter().all(|k| !is_under(k, &d));
            if empty {
                self.local_dirs.remove(&d);
            }
        }
        self.remember(&base);
    }

    /// One edit on one side; edits that make no sense in the current tree are skipped.
    fn edit(&mut self, side: Side, op: &Op) {
        let files: Vec<String> = match side {
            Side::Local => self.local.keys().cloned().collect(),
            Side::Remote => self.remote.keys().cloned().collect(),
        };
        let dirs: Vec<String> = match side {
            Side::Local => self.local_dirs.iter().cloned().collect(),
            Side::Remote => self.remote_dirs.iter().cloned().collect(),
        };
        let pick = |v: &[String], i: usize| (!v.is_empty()).then(|| v[i % v.len()].clone());
        match (op, side) {
            (Op::Write(p), Side::Local) => {
                let (content, now) = (self.tick(), self.now());
                match self.local.get_mut(p) {
                    // An edit in place keeps the inode.
                    Some(f) => {
                        f.content = content;
                        f.mtime = now;
                    }
                    None => self.put_local(p, content, now),
                }
            }
            (Op::Write(p), Side::Remote) => {
                let (content, now) = (self.tick(), self.now());
                self.put_remote(p, content, now);
            }
            (Op::Delete(i), _) => {
                if let Some(p) = pick(&files, *i) {
                    match side {
                        Side::Local => {
                            self.local.remove(&p);
                        }
                        Side::Remote => {
                            self.remote.remove(&p);
                        }
                    }
                }
            }
            (Op::Rename(i, to), _) => {
                let Some(from) = pick(&files, *i) else { return };
                let taken = match side {
                    Side::Local => self.local.contains_key(to),
                    Side::Remote => self.remote.contains_key(to),
                };
                if taken || from == *to {
                    return;
                }
                match side {
                    Side::Local => {
                        let f = self.local.remove(&from).expect("picked");
                        self.local.insert(to.clone(), f);
                        parents(&mut self.local_dirs, to);
                    }
                    Side::Remote => {
                        let f = self.remote.remove(&from).expect("picked");
                        let rev = self.tick();
                        self.remote.insert(to.clone(), RemoteFile { rev, ..f });
                        parents(&mut self.remote_dirs, to);
                    }
                }
            }
            (Op::RenameDir(i, to), _) => {
                let Some(from) = pick(&dirs, *i) else { return };
                if dirs.contains(to) || at_or_under(to, &from) {
                    return;
                }
                match side {
                    Side::Local => {
                        move_keys(&mut self.local, &from, to);
                        move_dirs(&mut self.local_dirs, &from, to);
                    }
                    Side::Remote => {
                        move_keys(&mut self.remote, &from, to);
                        move_dirs(&mut self.remote_dirs, &from, to);
                        for p in below(&self.remote, to) {
                            let rev = self.tick();
                            if let Some(f) = self.remote.get_mut(&p) {
                                f.rev = rev;
                            }
                        }
                    }
                }
            }
            (Op::DeleteDir(i), _) => {
                let Some(d) = pick(&dirs, *i) else { return };
                match side {
                    Side::Local => {
                        self.local.retain(|k, _| !is_under(k, &d));
                        self.local_dirs.retain(|k| !at_or_under(k, &d));
                    }
                    Side::Remote => {
                        self.remote.retain(|k, _| !is_under(k, &d));
                        self.remote_dirs.retain(|k| !at_or_under(k, &d));
                    }
                }
            }
            // Directory and file names differ (d*, f*): never a file at `d`.
            (Op::Mkdir(d), _) => {
                let set = match side {
                    Side::Local => &mut self.local_dirs,
                    Side::Remote => &mut self.remote_dirs,
                };
                set.insert(d.clone());
                parents(set, d);
            }
        }
    }

    /// The folder's files and directories (contents only).
    fn local_tree(&self) -> (BTreeMap<String, u64>, BTreeSet<String>) {
        (
            self.local.iter().map(|(p, f)| (p.clone(), f.content)).collect(),
            self.local_dirs.clone(),
        )
    }

    fn remote_tree(&self) -> (BTreeMap<String, u64>, BTreeSet<String>) {
        (
            self.remote.iter().map(|(p, f)| (p.clone(), f.content)).collect(),
            self.remote_dirs.clone(),
        )
    }
}

#[derive(Debug, Clone, Copy)]
enum Side {
    Local,
    Remote,
}

#[derive(Debug, Clone)]
enum Op {
    /// Create or edit a file.
    Write(String),
    Delete(usize),
    /// Rename an existing file (picked by index) to a path.
    Rename(usize, String),
    /// Rename an existing directory (with everything below) to a path.
    RenameDir(usize, String),
    /// Delete an existing directory with everything below.
    DeleteDir(usize),
    Mkdir(String),
}

/// Directory paths of up to two levels (`d1`, `d2/d3`); file and directory names never meet.
fn dir_path() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec!["d1", "d2", "d3"]), 1..=2).prop_map(|v| v.join("/"))
}

fn file_path() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(prop::sample::select(vec!["d1", "d2", "d3"]), 0..=2),
        prop::sample::select(vec!["f1", "f2", "f3"]),
    )
        .prop_map(|(mut dirs, f)| {
            dirs.push(f);
            dirs.join("/")
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => file_path().prop_map(Op::Write),
        2 => any::<usize>().prop_map(Op::Delete),
        3 => (any::<usize>(), file_path()).prop_map(|(i, p)| Op::Rename(i, p)),
        3 => (any::<usize>(), dir_path()).prop_map(|(i, p)| Op::RenameDir(i, p)),
        2 => any::<usize>().prop_map(Op::DeleteDir),
        1 => dir_path().prop_map(Op::Mkdir),
    ]
}

fn strategy() -> impl Strategy<Value = ConflictStrategy> {
    prop::sample::select(vec![
        ConflictStrategy::PreferLocal,
        ConflictStrategy::PreferRemote,
        ConflictStrategy::PreferNewer,
        ConflictStrategy::Manual,
    ])
}

/// Plans and applies once; checks convergence, an empty next plan and that nothing is lost.
fn sync_and_check(w: &mut World, strategy: ConflictStrategy) -> Result<Plan, TestCaseError> {
    // Every content either side holds now must survive the pass somewhere.
    let before: BTreeSet<u64> = w
        .local
        .values()
        .map(|f| f.content)
        .chain(w.remote.values().map(|f| f.content))
        .collect();
    let plan = w.plan(strategy);
    prop_assert!(
        plan.held_deletions.is_empty() && plan.clashes.is_empty(),
        "{plan:?}"
    );
    w.apply(&plan);
    let again = w.plan(strategy);
    prop_assert!(
        again.is_empty(),
        "not empty after applying {plan:#?}:\n{again:#?}\n{w:#?}"
    );
    prop_assert_eq!(w.local_tree(), w.remote_tree(), "diverged after {:#?}", plan);
    let now: BTreeSet<u64> = w.local.values().map(|f| f.content).collect();
    for c in before {
        prop_assert!(
            now.contains(&c) || w.versions.contains(&c),
            "content {} lost by {:#?}",
            c,
            plan
        );
    }
    Ok(plan)
}

proptest! {
    // PROPTEST_CASES raises the number of cases (for a longer search than CI's).
    #![proptest_config(ProptestConfig { cases: ProptestConfig::default().cases.max(2000), ..ProptestConfig::default() })]

    #[test]
    fn plan_apply_replan_is_empty_both_sides_converge_nothing_lost(
        files in prop::collection::btree_set(file_path(), 0..8),
        dirs in prop::collection::vec(dir_path(), 0..3),
        local_ops in prop::collection::vec(op(), 0..6),
        remote_ops in prop::collection::vec(op(), 0..6),
        strategy in strategy(),
    ) {
        let files: Vec<String> = files.into_iter().collect();
        let mut w = World::synced(&files, &dirs);
        prop_assert!(w.plan(strategy).is_empty(), "a synced tree plans nothing");
        for o in &local_ops {
            w.edit(Side::Local, o);
        }
        for o in &remote_ops {
            w.edit(Side::Remote, o);
        }
        sync_and_check(&mut w, strategy)?;
    }

    /// Renames on one side only are server-side moves: nothing is uploaded or downloaded.
    #[test]
    fn local_renames_are_moves_not_transfers(
        files in prop::collection::btree_set(file_path(), 1..8),
        renames in prop::collection::vec(
            prop_oneof![
                (any::<usize>(), file_path()).prop_map(|(i, p)| Op::Rename(i, p)),
                (any::<usize>(), dir_path()).prop_map(|(i, p)| Op::RenameDir(i, p)),
            ],
            1..4,
        ),
    ) {
        let files: Vec<String> = files.into_iter().collect();
        let mut w = World::synced(&files, &[]);
        for o in &renames {
            w.edit(Side::Local, o);
        }
        // Chains of renames onto synced paths are moves too; only a cycle (a swap through a
        // temporary name) cannot be done as moves, and syncs as uploads.
        prop_assume!(!renames_form_a_cycle(&w));
        let plan = sync_and_check(&mut w, ConflictStrategy::PreferNewer)?;
        prop_assert!(plan.uploads.is_empty() && plan.downloads.is_empty(), "{plan:#?}");
        prop_assert!(plan.conflicts.is_empty(), "{plan:#?}");
    }
}

/// True when following "the content now at `p` was synced at `q`" from some synced path leads
/// back to it (files were swapped through a temporary name).
fn renames_form_a_cycle(w: &World) -> bool {
    let origin = |p: &String| -> Option<&String> {
        let content = w.local.get(p)?.content;
        w.remote
            .iter()
            .find(|(_, r)| r.content == content)
            .map(|(q, _)| q)
    };
    w.remote.keys().any(|start| {
        let mut at = start;
        for _ in 0..=w.remote.len() {
            match origin(at) {
                Some(q) if q != at => {
                    if q == start {
                        return true;
                    }
                    at = q;
                }
                _ => return false,
            }
        }
        false
    })
}

#[test]
fn a_rename_chain_onto_synced_paths_is_two_moves() {
    let mut w = World::synced(&s(&["f1", "f2"]), &[]);
    // f2 -> f3, then f1 -> f2.
    w.edit(Side::Local, &Op::Rename(1, "f3".into()));
    w.edit(Side::Local, &Op::Rename(0, "f2".into()));
    let plan = w.plan(ConflictStrategy::PreferNewer);
    let moves: Vec<(&str, &str)> = plan
        .moves
        .iter()
        .map(|m| (m.from.as_str(), m.to.as_str()))
        .collect();
    assert_eq!(moves, [("f2", "f3"), ("f1", "f2")], "{plan:#?}");
    assert_eq!(plan.actions(), 2, "{plan:#?}");
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|p| p.to_string()).collect()
}

#[test]
fn a_renamed_directory_becomes_one_move() {
    let mut w = World::synced(&s(&["d1/f1", "d1/d2/f2", "f3"]), &[]);
    w.edit(Side::Local, &Op::RenameDir(0, "d3".into()));
    let plan = w.plan(ConflictStrategy::PreferNewer);
    assert_eq!(
        plan.moves,
        [Move {
            from: "d1".into(),
            to: "d3".into(),
            directory: true
        }]
    );
    assert_eq!(plan.actions(), 1, "{plan:#?}");
}

#[test]
fn a_partly_moved_directory_stays_file_moves() {
    let mut w = World::synced(&s(&["d1/f1", "d1/f2"]), &[]);
    w.edit(Side::Local, &Op::Rename(0, "d2/f1".into()));
    let plan = w.plan(ConflictStrategy::PreferNewer);
    assert_eq!(
        plan.moves,
        [Move {
            from: "d1/f1".into(),
            to: "d2/f1".into(),
            directory: false
        }]
    );
    assert_eq!(plan.actions(), 1, "{plan:#?}");
}

#[test]
fn mass_deletions_are_held_with_the_reason_and_nothing_else_waits() {
    let mut w = World::synced(&s(&["f1", "d1/f1", "d1/f2", "d2/f3"]), &[]);
    for _ in 0..3 {
        w.edit(Side::Local, &Op::Delete(0));
    }
    w.edit(Side::Local, &Op::Write("d3/f1".into()));
    let remote: BTreeMap<Key, RemoteState> = w
        .remote
        .iter()
        .map(|(p, r)| (Key::from(p.as_str()), remote_state(r)))
        .collect();
    let plan = make_plan(&PlanInput {
        scan: &w.scan(),
        index: &w.index,
        remote_files: &remote,
        remote_dirs: &w.remote_dirs,
        strategy: ConflictStrategy::PreferNewer,
        max_delete_percent: 50,
        force: false,
    });
    assert_eq!(plan.held_deletions, s(&["d1/f1", "d1/f2", "d2/f3"]), "{plan:#?}");
    assert!(
        plan.held_reason
            .as_deref()
            .unwrap_or_default()
            .contains("3 of 4 synced files"),
        "{plan:#?}"
    );
    assert!(
        plan.deletes_remote.is_empty() && plan.dir_deletes_remote.is_empty(),
        "{plan:#?}"
    );
    assert_eq!(plan.uploads, s(&["d3/f1"]), "{plan:#?}");
}

#[test]
fn a_download_that_would_clash_by_case_or_normalization_is_listed_not_planned() {
    let mut w = World::synced(&[], &[]);
    w.put_local("Readme.md", 5, 1);
    w.put_remote("README.md", 6, 2);
    w.put_remote("cafe\u{301}.txt", 7, 3);
    w.put_local("caf\u{e9}.txt", 8, 4);
    let plan = w.plan(ConflictStrategy::PreferNewer);
    assert_eq!(
        plan.clashes,
        [
            Clash {
                path: "README.md".into(),
                clashes_with: "Readme.md".into()
            },
            Clash {
                path: "cafe\u{301}.txt".into(),
                clashes_with: "caf\u{e9}.txt".into()
            }
        ]
    );
    assert!(plan.downloads.is_empty(), "{plan:#?}");
}

#[test]
fn of_two_new_remote_names_that_fold_alike_one_is_downloaded_and_the_other_listed() {
    let mut w = World::synced(&[], &[]);
    w.put_remote("Notes.txt", 5, 1);
    w.put_remote("notes.txt", 6, 2);
    w.put_remote("plain.txt", 7, 3);
    w.put_local("Docs/a.txt", 8, 4);
    w.put_remote("docs/A.TXT", 9, 5);
    let plan = w.plan(ConflictStrategy::PreferNewer);
    assert_eq!(
        plan.clashes,
        [
            Clash {
                path: "docs/A.TXT".into(),
                clashes_with: "Docs/a.txt".into()
            },
            Clash {
                path: "notes.txt".into(),
                clashes_with: "Notes.txt".into()
            },
        ]
    );
    assert_eq!(plan.downloads, s(&["Notes.txt", "plain.txt"]), "{plan:#?}");
}

#[test]
fn folding_matches_case_and_unicode_normalization() {
    assert_eq!(fold("Docs/README.md"), fold("docs/readme.md"));
    assert_eq!(fold("caf\u{e9}.txt"), fold("cafe\u{301}.txt"));
    assert_ne!(fold("a.txt"), fold("b.txt"));
}

/// Found by the property test in CI: a directory moved on both sides, with a file renamed into
/// the moved directory on the server.
#[test]
fn regression_directory_moves_on_both_sides_with_a_file_renamed_into_one() {
    let files = s(&["d1/d1/f1", "d1/f1", "d2/d1/f1", "d3/d1/f1", "f1"]);
    for strategy in [
        ConflictStrategy::PreferLocal,
        ConflictStrategy::PreferRemote,
        ConflictStrategy::PreferNewer,
        ConflictStrategy::Manual,
    ] {
        let mut w = World::synced(&files, &[]);
        w.edit(Side::Local, &Op::RenameDir(14598647653468551868, "d1/d2".into()));
        w.edit(Side::Local, &Op::RenameDir(2102155850764072285, "d3/d1".into()));
        w.edit(Side::Remote, &Op::Rename(1883970176402746651, "d1/d2/f1".into()));
        w.edit(Side::Remote, &Op::RenameDir(9996478762828857872, "d2/d2".into()));
        sync_and_check(&mut w, strategy).unwrap();
    }
}

/// Found by the property test: `d1 → d2/d1` and `d3 → d2/d2` after `mv d1/f1 d3/d1/f1` look
/// like two directory moves, `d1 → d2/d2/d1` and `d3 → d2/d2`, but the second brings `d3/d1`
/// to the first one's target: `d3` moves as a directory and `d1/f1` as a file.
#[test]
fn a_directory_moved_onto_what_another_move_brings_moves_its_files_instead() {
    let mut w = World::synced(&s(&["d1/f1", "d3/d1/f2"]), &[]);
    for o in [
        Op::Rename(0, "d3/d1/f1".into()),
        Op::RenameDir(0, "d2/d1".into()),
        Op::RenameDir(2, "d2/d2".into()),
    ] {
        w.edit(Side::Local, &o);
    }
    assert_eq!(w.local.keys().collect::<Vec<_>>(), ["d2/d2/d1/f1", "d2/d2/d1/f2"]);
    let plan = sync_and_check(&mut w, ConflictStrategy::PreferNewer).unwrap();
    let moves: Vec<(&str, &str, bool)> = plan
        .moves
        .iter()
        .map(|m| (m.from.as_str(), m.to.as_str(), m.directory))
        .collect();
    assert_eq!(
        moves,
        [("d3", "d2/d2", true), ("d1/f1", "d2/d2/d1/f1", false)],
        "{plan:#?}"
    );
    assert!(plan.uploads.is_empty() && plan.downloads.is_empty(), "{plan:#?}");
}

#[test]
fn removing_a_path_removes_it_and_what_is_below_it_and_nothing_that_only_shares_its_prefix() {
    let names = [
        "photos",
        "photos.txt",
        "photos/a.jpg",
        "photos/2020/b.jpg",
        "photos2020/c.jpg",
        "photo",
        "z",
    ];
    let mut map: BTreeMap<Key, u32> = names.iter().zip(0..).map(|(n, i)| (Key::from(*n), i)).collect();
    remove_keys(&mut map, "");
    assert_eq!(map.len(), names.len(), "no path is empty: nothing removed");
    remove_keys(&mut map, "photos");
    assert_eq!(
        map.keys().map(|k| &**k).collect::<Vec<_>>(),
        ["photo", "photos.txt", "photos2020/c.jpg", "z"]
    );
    let mut dirs: BTreeSet<String> = names.iter().map(|n| n.to_string()).collect();
    assert_eq!(
        remove_dirs(&mut dirs, "photos"),
        ["photos", "photos/2020/b.jpg", "photos/a.jpg"]
    );
    assert_eq!(
        dirs.iter().map(String::as_str).collect::<Vec<_>>(),
        ["photo", "photos.txt", "photos2020/c.jpg", "z"]
    );
    move_dirs(&mut dirs, "photos2020", "old/2020");
    assert_eq!(
        dirs.iter().map(String::as_str).collect::<Vec<_>>(),
        ["old", "old/2020/c.jpg", "photo", "photos.txt", "z"]
    );
}
