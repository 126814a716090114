//! The planner's property, end to end on a few seeds: a real server, a real folder, random edits
//! on both sides (writes, deletions, renames of files and directories, directory deletions),
//! then a dry run, a real pass, and another dry run. The real pass does exactly what the dry run
//! showed, nothing is left to do after it, the folder and the server hold the same tree, and
//! every content either side held is current or one of the server's versions. (The in-memory
//! property tests in `src/plan_tests.rs` run thousands of cases; these check the same things
//! against the real executor, filesystem and server.)

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeSet;
use std::path::Path;
use volebarn_client::{Client, ConflictStrategy, Xxh3};
use volebarn_sync::PassOptions;
use volebarn_testkit::{age, fail_fast, server_tree, tree, tree_and_dirs, write, TestServer};

const SEEDS: u64 = 8;
const REAL: PassOptions = PassOptions {
    dry_run: false,
    force: true,
};
const DRY: PassOptions = PassOptions {
    dry_run: true,
    force: true,
};

fn dir_path(rng: &mut StdRng) -> String {
    let depth = rng.random_range(1..=2);
    (0..depth)
        .map(|_| format!("d{}", rng.random_range(1..=3)))
        .collect::<Vec<_>>()
        .join("/")
}

fn file_path(rng: &mut StdRng) -> String {
    let f = format!("f{}.txt", rng.random_range(1..=3));
    match rng.random_range(0..3) {
        0 => f,
        _ => format!("{}/{f}", dir_path(rng)),
    }
}

fn pick<T: Clone>(rng: &mut StdRng, v: &[T]) -> Option<T> {
    (!v.is_empty()).then(|| v[rng.random_range(0..v.len())].clone())
}

fn under(p: &str, d: &str) -> bool {
    p.strip_prefix(d).is_some_and(|r| r.starts_with('/'))
}

/// The server's directories.
async fn server_dirs(c: &Client) -> BTreeSet<String> {
    let m = c.get_manifest(None).await.expect("manifest");
    m.files
        .into_iter()
        .filter(|(_, f)| f.is_directory)
        .map(|(p, _)| p)
        .filter(|p| !p.is_empty())
        .collect()
}

fn edit_local(rng: &mut StdRng, root: &Path, n: &mut u64) {
    let (files, dirs) = tree_and_dirs(root);
    let files: Vec<String> = files.into_keys().collect();
    let dirs: Vec<String> = dirs.into_iter().collect();
    match rng.random_range(0..5) {
        0 => {
            *n += 1;
            write(root, &file_path(rng), format!("local {n}").as_bytes());
        }
        1 => {
            if let Some(f) = pick(rng, &files) {
                std::fs::remove_file(root.join(f)).expect("rm");
            }
        }
        2 => {
            let to = file_path(rng);
            if let Some(f) = pick(rng, &files) {
                let target = root.join(&to);
                if !target.exists() && !dirs.contains(&to) {
                    std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
                    std::fs::rename(root.join(f), target).expect("rename");
                }
            }
        }
        3 => {
            let to = dir_path(rng);
            if let Some(d) = pick(rng, &dirs) {
                let target = root.join(&to);
                if !target.exists() && to != d && !under(&to, &d) {
                    std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
                    std::fs::rename(root.join(d), target).expect("rename dir");
                }
            }
        }
        _ => {
            if let Some(d) = pick(rng, &dirs) {
                std::fs::remove_dir_all(root.join(d)).expect("rm dir");
            }
        }
    }
}

async fn edit_remote(rng: &mut StdRng, c: &Client, n: &mut u64) {
    let files: Vec<String> = server_tree(c).await.into_keys().collect();
    let dirs: Vec<String> = server_dirs(c).await.into_iter().collect();
    match rng.random_range(0..5) {
        0 => {
            *n += 1;
            let p = file_path(rng);
            let body = bytes::Bytes::from(format!("remote {n}"));
            let r = if files.contains(&p) {
                c.update_file(&p, body).await
            } else {
                c.upload_file(&p, body).await
            };
            r.expect("remote write");
        }
        1 => {
            if let Some(f) = pick(rng, &files) {
                c.delete_file(&f).await.expect("remote delete");
            }
        }
        2 => {
            let to = file_path(rng);
            if let Some(f) = pick(rng, &files) {
                if !files.contains(&to) && !dirs.contains(&to) {
                    c.move_file(&f, &to).await.expect("remote move");
                }
            }
        }
        3 => {
            let to = dir_path(rng);
            if let Some(d) = pick(rng, &dirs) {
                if !dirs.contains(&to) && to != d && !under(&to, &d) {
                    c.move_file(&d, &to).await.expect("remote dir move");
                }
            }
        }
        _ => {
            if let Some(d) = pick(rng, &dirs) {
                c.delete_directory(&d).await.expect("remote rmdir");
            }
        }
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

async fn one_seed(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = TestServer::start().await;
    let c = srv.client_with(fail_fast);
    let a = dir.path().join("A");
    let mut n = 0;
    for _ in 0..6 {
        n += 1;
        write(&a, &file_path(&mut rng), format!("first {n}").as_bytes());
    }
    age(&a);
    let strategy = match seed % 4 {
        0 => ConflictStrategy::PreferLocal,
        1 => ConflictStrategy::PreferRemote,
        2 => ConflictStrategy::PreferNewer,
        _ => ConflictStrategy::Manual,
    };
    let mut engine = srv.engine(&a, strategy);
    engine.pass(REAL).await.expect("first pass");
    assert_eq!(server_tree(&c).await, tree(&a), "seed {seed}: first sync");

    // Every path a content was ever at, to look for it in the server's versions at the end.
    let mut seen: BTreeSet<String> = tree(&a).into_keys().collect();
    for _ in 0..4 {
        edit_local(&mut rng, &a, &mut n);
        seen.extend(tree(&a).into_keys());
    }
    for _ in 0..3 {
        edit_remote(&mut rng, &c, &mut n).await;
        seen.extend(server_tree(&c).await.into_keys());
    }
    let (here, there) = (tree(&a), server_tree(&c).await);
    let held: BTreeSet<Vec<u8>> = here.values().chain(there.values()).cloned().collect();

    let dry = engine.pass(DRY).await.expect("dry run");
    let plan = dry.plan.expect("plan");
    assert_eq!(
        server_tree(&c).await,
        there,
        "seed {seed}: a dry run changes nothing"
    );
    assert_eq!(tree(&a), here, "seed {seed}: a dry run changes nothing");

    let real = engine.pass(REAL).await.expect("pass");
    let x = &real.result;
    let ctx = format!("seed {seed}: plan {plan:#?}\nreport {real:#?}");
    assert!(x.errors.is_empty(), "{ctx}");
    let moves: Vec<(String, String)> = plan
        .moves
        .iter()
        .map(|m| (m.from.clone(), m.to.clone()))
        .collect();
    assert_eq!(real.moved, moves, "{ctx}");
    assert_eq!(
        sorted(x.uploaded.iter().map(|p| p.to_string()).collect()),
        plan.uploads,
        "{ctx}"
    );
    assert_eq!(
        sorted(x.downloaded.iter().map(|p| p.to_string()).collect()),
        plan.downloads,
        "{ctx}"
    );
    assert_eq!(sorted(x.deleted_remote.clone()), plan.deletes_remote, "{ctx}");
    assert_eq!(sorted(x.deleted_local.clone()), plan.deletes_local, "{ctx}");
    let settled: Vec<String> = plan.conflicts.iter().map(|c| c.path.clone()).collect();
    assert_eq!(sorted(x.conflicts_resolved.clone()), settled, "{ctx}");
    for d in &plan.dir_deletes_remote {
        assert!(
            real.dirs_deleted_remote.iter().any(|r| r == d || under(d, r)),
            "{d} not deleted on the server: {ctx}"
        );
    }
    assert_eq!(
        sorted(real.dirs_deleted_local.clone()),
        plan.dir_deletes_local,
        "{ctx}"
    );

    let again = engine.pass(DRY).await.expect("dry run");
    let next = again.plan.expect("plan");
    assert!(next.is_empty(), "seed {seed}: left to do {next:#?}\nafter {ctx}");
    let (files, dirs) = tree_and_dirs(&a);
    assert_eq!(
        files,
        server_tree(&c).await,
        "seed {seed}: converged files: {ctx}"
    );
    assert_eq!(
        dirs,
        server_dirs(&c).await,
        "seed {seed}: converged directories: {ctx}"
    );

    // Nothing lost: each content is in the folder (current or a conflict copy) or a version.
    let mut versions: BTreeSet<Xxh3> = BTreeSet::new();
    for p in seen.iter().chain(files.keys()) {
        if let Ok(v) = c.versions(p).await {
            versions.extend(v.versions.iter().map(|v| v.xxhash3));
        }
    }
    let now: BTreeSet<&Vec<u8>> = files.values().collect();
    for content in &held {
        assert!(
            now.contains(content) || versions.contains(&Xxh3::of(content)),
            "seed {seed}: {:?} lost: {ctx}",
            String::from_utf8_lossy(content)
        );
    }
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn random_edits_on_both_sides_sync_as_the_dry_run_said_and_converge() {
    for seed in 0..SEEDS {
        one_seed(seed).await;
    }
}

/// `mv b c; mv a b` in the folder: two server-side moves, in that order, and no upload.
#[tokio::test(flavor = "multi_thread")]
async fn a_rename_chain_onto_a_synced_path_is_done_as_two_moves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = TestServer::start().await;
    let c = srv.client_with(fail_fast);
    let a = dir.path().join("A");
    write(&a, "a.txt", b"first file");
    write(&a, "b.txt", b"second file");
    age(&a);
    let mut engine = srv.engine(&a, ConflictStrategy::PreferNewer);
    engine.pass(REAL).await.expect("first pass");
    std::fs::rename(a.join("b.txt"), a.join("c.txt")).expect("mv b c");
    std::fs::rename(a.join("a.txt"), a.join("b.txt")).expect("mv a b");

    let dry = engine.pass(DRY).await.expect("dry run").plan.expect("plan");
    let moves: Vec<(String, String)> = dry.moves.iter().map(|m| (m.from.clone(), m.to.clone())).collect();
    let expected = vec![
        ("b.txt".to_string(), "c.txt".to_string()),
        ("a.txt".to_string(), "b.txt".to_string()),
    ];
    assert_eq!(moves, expected, "{dry:#?}");
    let real = engine.pass(REAL).await.expect("pass");
    assert_eq!(real.moved, expected, "{real:#?}");
    assert!(
        real.result.uploaded.is_empty() && real.result.errors.is_empty(),
        "{real:#?}"
    );
    let server = server_tree(&c).await;
    assert_eq!(server, tree(&a));
    assert_eq!(server.get("b.txt").map(Vec::as_slice), Some(&b"first file"[..]));
    assert_eq!(server.get("c.txt").map(Vec::as_slice), Some(&b"second file"[..]));
    assert!(engine
        .pass(DRY)
        .await
        .expect("dry run")
        .plan
        .expect("plan")
        .is_empty());
    srv.shutdown().await;
}
