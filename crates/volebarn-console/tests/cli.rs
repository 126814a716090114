//! The folder commands (`init`, `sync`, `status`, `conflicts`, `conflicts resolve`) as a user
//! runs them: the real `volebarn` binary, a config written by `init`, a real TLS server, and
//! what shows up in the output, the exit code, the folder and on the server.

mod common;

use common::{volebarn, Env, Run};
use std::ffi::OsStr;
use std::path::Path;
use volebarn_testkit::{age, fail_fast, server_tree, tree, write};

/// The binary with the default config under `home/` (or the one given).
impl Env {
    /// `volebarn ARGS`, with `config` as `--config` when given (else the default location).
    fn run(&self, config: Option<&Path>, args: &[&str]) -> Run {
        let mut all: Vec<&OsStr> = Vec::new();
        if let Some(c) = config {
            all.extend([OsStr::new("--config"), c.as_os_str()]);
        }
        all.extend(args.iter().map(OsStr::new));
        volebarn(self.dir.path(), &self.path("home"), &all)
    }

    /// `volebarn init` for `folder`, with the server's URL, token and CA.
    fn init(&self, config: Option<&Path>, folder: &Path) -> Run {
        let ca = self.srv.ca_cert();
        self.run(
            config,
            &[
                "init",
                "--folder",
                folder.to_str().expect("UTF-8 path"),
                "--server",
                &self.srv.url(""),
                "--token",
                self.srv.token(),
                "--ca-cert",
                ca.to_str().expect("UTF-8 path"),
            ],
        )
    }

    fn client(&self) -> volebarn_client::Client {
        self.srv.client_with(fail_fast)
    }
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().expect("string").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn init_then_sync_status_dry_run_and_the_safety_rails() {
    let env = Env::start().await;
    let a = env.path("A");

    // init writes the default config, readable only by its owner.
    let r = env.init(None, &a).ok();
    let config = env.path("home/.config/volebarn/config.toml");
    assert!(r.stdout.contains(config.to_str().unwrap()), "{r:?}");
    let text = std::fs::read_to_string(&config).unwrap();
    let folder = std::fs::canonicalize(&a).unwrap();
    assert!(
        text.contains(&format!("local_folder = {:?}", folder.to_str().unwrap())),
        "{text}"
    );
    assert!(text.contains(&env.srv.url("")), "{text}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&config).unwrap().permissions().mode() & 0o777,
        0o600
    );

    write(&a, "notes.txt", b"alpha");
    write(&a, "docs/report.md", b"# report");
    write(&a, "docs/plan.md", b"# plan");
    write(&a, "docs/todo.md", b"# todo");
    age(&a);
    let r = env.run(None, &["sync"]).ok();
    assert!(r.stdout.starts_with("uploaded 4, downloaded 0"), "{r:?}");
    let c = env.client();
    assert_eq!(server_tree(&c).await.len(), 4);

    let s = env.run(None, &["status", "--json"]).ok().json();
    assert_eq!(s["server_ok"], true, "{s}");
    assert_eq!(s["synced_files"], 4, "{s}");
    assert!(s["last_sync"].is_string(), "{s}");
    assert_eq!(s["pending"]["uploads"], serde_json::json!([]), "{s}");
    // Running totals (status's own dry run is not counted): 4 files, 25 bytes of content up.
    let m = &s["metrics"];
    assert_eq!(
        (m["passes"].as_u64(), m["files_synced"].as_u64()),
        (Some(1), Some(4)),
        "{s}"
    );
    assert_eq!(
        (m["bytes_sent"].as_u64(), m["bytes_received"].as_u64()),
        (Some(25), Some(0)),
        "{s}"
    );
    assert_eq!(
        (m["sync_errors"].as_u64(), m["network_errors"].as_u64()),
        (Some(0), Some(0)),
        "{s}"
    );
    assert!(m["requests"].as_u64() > Some(0), "{s}");

    // A dry run shows the plan and changes nothing; status lists the same pending upload.
    write(&a, "notes.txt", b"alpha, edited");
    let r = env.run(None, &["sync", "--dry-run"]).ok();
    assert!(r.stdout.contains("would upload (1):\n  notes.txt"), "{r:?}");
    assert_eq!(server_tree(&c).await["notes.txt"], b"alpha");
    let s = env.run(None, &["status", "--json"]).ok().json();
    assert_eq!(strings(&s["pending"]["uploads"]), ["notes.txt"], "{s}");
    let r = env.run(None, &["sync", "--json"]).ok().json();
    assert_eq!(strings(&r["result"]["uploaded"]), ["notes.txt"], "{r}");
    assert_eq!(server_tree(&c).await["notes.txt"], b"alpha, edited");

    // Deleting 3 of 4 files is held: exit 2, nothing deleted on the server, status says so.
    for f in ["docs/report.md", "docs/plan.md", "docs/todo.md"] {
        std::fs::remove_file(a.join(f)).unwrap();
    }
    let r = env.run(None, &["sync"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stdout.contains("deletions held: 3 of 4 synced files"), "{r:?}");
    assert_eq!(server_tree(&c).await.len(), 4);
    let r = env.run(None, &["status"]).ok();
    assert!(r.stdout.contains("HELD:       3 deletions"), "{r:?}");
    let r = env.run(None, &["sync", "--force"]).ok();
    assert!(r.stdout.contains("deleted 0 here and 3 on the server"), "{r:?}");
    assert_eq!(server_tree(&c).await.len(), 1);

    // Without the root marker nothing happens at all: exit 1, one line saying why.
    std::fs::remove_file(a.join(".volebarn/marker")).unwrap();
    std::fs::remove_file(a.join("notes.txt")).unwrap();
    let r = env.run(None, &["sync"]);
    assert!(r.error_line().contains("marker"), "{r:?}");
    assert_eq!(server_tree(&c).await.len(), 1, "nothing deleted on the server");
    // --force re-adopts the folder without deleting: the file comes back.
    env.run(None, &["sync", "--force"]).ok();
    assert_eq!(std::fs::read(a.join("notes.txt")).unwrap(), b"alpha, edited");
    assert_eq!(server_tree(&c).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn manual_conflicts_are_listed_and_settled_from_the_command_line() {
    let env = Env::start().await;
    let (a, b) = (env.path("A"), env.path("B"));
    let (ca, cb) = (env.path("a.toml"), env.path("b.toml"));
    env.init(Some(&ca), &a).ok();
    env.init(Some(&cb), &b).ok();
    write(&a, "story.txt", b"once upon a time");
    age(&a);
    env.run(Some(&ca), &["sync"]).ok();
    env.run(Some(&cb), &["sync"]).ok();

    write(&a, "story.txt", b"written in A");
    env.run(Some(&ca), &["sync"]).ok();
    write(&b, "story.txt", b"written in B");
    let r = env.run(Some(&cb), &["sync", "--strategy", "manual"]);
    assert_eq!(r.code, 2, "a conflict left for the user: {r:?}");
    assert!(r.stdout.contains("volebarn conflicts resolve"), "{r:?}");

    // Both versions are in B: the remote one at the path, B's own as the copy.
    let list = env.run(Some(&cb), &["conflicts", "--json"]).ok().json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["path"], "story.txt");
    assert_eq!(list[0]["copy_is_local"], true);
    let copy = list[0]["copy"].as_str().unwrap().to_string();
    assert!(copy.starts_with("story (conflict "), "{copy}");
    assert_eq!(std::fs::read(b.join("story.txt")).unwrap(), b"written in A");
    assert_eq!(std::fs::read(b.join(&copy)).unwrap(), b"written in B");
    let r = env.run(Some(&cb), &["conflicts"]).ok();
    assert!(
        r.stdout.contains(&format!("{copy:?}: the local version")),
        "{r:?}"
    );

    // A path that is not in the list: one clear line.
    let r = env.run(
        Some(&cb),
        &["conflicts", "resolve", "other.txt", "--keep", "local"],
    );
    assert!(r.error_line().contains("not in the conflicts list"), "{r:?}");

    // Keep B's version: it takes the path, the copy goes, everywhere.
    let r = env.run(
        Some(&cb),
        &["conflicts", "resolve", "story.txt", "--keep", "local"],
    );
    assert!(r.ok().stdout.contains("kept local version"));
    assert_eq!(std::fs::read(b.join("story.txt")).unwrap(), b"written in B");
    assert!(!b.join(&copy).exists());
    let list = env.run(Some(&cb), &["conflicts", "--json"]).ok().json();
    assert_eq!(list, serde_json::json!([]));
    let on_server = server_tree(&env.client()).await;
    assert_eq!(
        on_server.keys().collect::<Vec<_>>(),
        ["story.txt"],
        "the copy is deleted on the server"
    );
    assert_eq!(on_server["story.txt"], b"written in B");
    // A follows; the dropped copy stays restorable from the server's versions.
    env.run(Some(&ca), &["sync"]).ok();
    assert_eq!(tree(&a).into_keys().collect::<Vec<_>>(), ["story.txt"]);
    assert_eq!(std::fs::read(a.join("story.txt")).unwrap(), b"written in B");
    let versions = env.client().versions(&copy).await.unwrap();
    assert!(versions.versions[0].deleted, "{versions:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_failing_on_one_path_is_reported_and_the_rest_syncs() {
    let env = Env::start().await;
    let (a, b) = (env.path("A"), env.path("B"));
    let (ca, cb) = (env.path("a.toml"), env.path("b.toml"));
    env.init(Some(&ca), &a).ok();
    env.init(Some(&cb), &b).ok();
    write(&a, "small/one.txt", b"one");
    write(&a, "small/two.txt", b"two");
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    write(&a, "big.bin", &big);
    age(&a);
    env.run(Some(&ca), &["sync"]).ok();

    // B's disk "fills up" at 1 MB per file: the kernel refuses the big download (EFBIG, as
    // for a full disk or a quota; SIGXFSZ is ignored so the write fails instead of killing us).
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg("trap '' XFSZ; exec prlimit --fsize=1000000 \"$@\"")
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_volebarn"))
        .arg("--config")
        .arg(&cb)
        .arg("sync")
        .env("HOME", env.path("home"))
        .env_remove("VOLEBARN_CONFIG")
        .output()
        .expect("run volebarn under prlimit");
    let (code, stdout) = (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).to_string(),
    );
    assert_eq!(
        code,
        Some(2),
        "the sync finished, with a failed path: {stdout} {out:?}"
    );
    assert!(stdout.contains("errors (1):\n  big.bin: "), "{stdout}");
    assert!(
        stdout.contains("File too large"),
        "the cause, as the OS gave it: {stdout}"
    );
    assert_eq!(std::fs::read(b.join("small/one.txt")).unwrap(), b"one");
    assert_eq!(std::fs::read(b.join("small/two.txt")).unwrap(), b"two");
    assert!(!b.join("big.bin").exists(), "no partial file at the path");
    let leftovers: Vec<String> = tree(&b).into_keys().filter(|p| p.ends_with(".tmp")).collect();
    assert!(leftovers.is_empty(), "temp files cleaned up: {leftovers:?}");

    // status reports it; the next sync (with room on disk) fetches it.
    let r = env.run(Some(&cb), &["status"]).ok();
    assert!(
        r.stdout.contains("errors in the last pass (1):\n  big.bin: "),
        "{r:?}"
    );
    assert!(r.stdout.contains("totals:     1 passes"), "{r:?}");
    let s = env.run(Some(&cb), &["status", "--json"]).ok().json();
    assert_eq!(s["metrics"]["sync_errors"], 1, "{s}");
    assert_eq!(s["metrics"]["files_synced"], 2, "{s}");
    let r = env.run(Some(&cb), &["sync"]).ok();
    assert!(r.stdout.starts_with("uploaded 0, downloaded 1"), "{r:?}");
    assert_eq!(std::fs::read(b.join("big.bin")).unwrap(), big);
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_json_lists_a_move_a_held_deletion_and_a_conflict_and_the_pass_does_exactly_that() {
    let env = Env::start().await;
    let a = env.path("A");
    env.init(None, &a).ok();
    write(&a, "m.txt", b"a file to rename");
    write(&a, "c.txt", b"both sides edit this");
    for i in 1..=4 {
        write(&a, &format!("d/x{i}.txt"), format!("file {i}").as_bytes());
    }
    age(&a);
    env.run(None, &["sync"]).ok();
    let c = env.client();

    // A rename, 4 of 6 files deleted (more than max_delete: held), and a conflict.
    std::fs::rename(a.join("m.txt"), a.join("n.txt")).unwrap();
    for i in 1..=4 {
        std::fs::remove_file(a.join(format!("d/x{i}.txt"))).unwrap();
    }
    write(&a, "c.txt", b"edited here");
    c.update_file("c.txt", bytes::Bytes::from_static(b"edited on the server"))
        .await
        .expect("remote edit");
    let before = server_tree(&c).await;

    let held = ["d/x1.txt", "d/x2.txt", "d/x3.txt", "d/x4.txt"];
    let r = env.run(
        None,
        &["sync", "--dry-run", "--json", "--strategy", "prefer-local"],
    );
    assert_eq!(r.code, 2, "held deletions need the user: {r:?}");
    let plan = r.json();
    assert_eq!(
        plan["moves"],
        serde_json::json!([{ "from": "m.txt", "to": "n.txt", "directory": false }]),
        "{plan}"
    );
    assert_eq!(strings(&plan["held_deletions"]), held, "{plan}");
    assert!(
        plan["held_reason"]
            .as_str()
            .is_some_and(|r| r.contains("4 of 6 synced files")),
        "{plan}"
    );
    let conflicts = plan["conflicts"].as_array().expect("conflicts");
    assert_eq!(conflicts.len(), 1, "{plan}");
    assert_eq!(conflicts[0]["path"], "c.txt", "{plan}");
    assert_eq!(conflicts[0]["resolution"], "use_local", "{plan}");
    assert_eq!(conflicts[0]["kind"], "content", "{plan}");
    for list in [
        "uploads",
        "downloads",
        "deletes_remote",
        "deletes_local",
        "dir_deletes_remote",
        "dir_deletes_local",
    ] {
        assert_eq!(strings(&plan[list]), Vec::<String>::new(), "{list}: {plan}");
    }
    assert_eq!(server_tree(&c).await, before, "a dry run changes nothing");

    // The real pass does exactly that: one move, the conflict settled, deletions held.
    let r = env.run(None, &["sync", "--json", "--strategy", "prefer-local"]);
    assert_eq!(r.code, 2, "{r:?}");
    let done = r.json();
    assert_eq!(done["moved"], serde_json::json!([["m.txt", "n.txt"]]), "{done}");
    assert_eq!(strings(&done["held_deletions"]), held, "{done}");
    let x = &done["result"];
    assert_eq!(strings(&x["conflicts_resolved"]), ["c.txt"], "{done}");
    for list in ["uploaded", "downloaded", "deleted_local", "deleted_remote"] {
        assert_eq!(strings(&x[list]), Vec::<String>::new(), "{list}: {done}");
    }
    let copy = x["conflict_copies"][0]["copy"]
        .as_str()
        .expect("copy")
        .to_string();
    assert!(copy.starts_with("c (conflict "), "{copy}");

    // What the user sees: the folder and the server agree, held files stay on the server,
    // both versions of c.txt are kept, and the moved file has its versions.
    let here = tree(&a);
    assert_eq!(here["n.txt"], b"a file to rename");
    assert_eq!(here["c.txt"], b"edited here");
    assert_eq!(here[&copy], b"edited on the server");
    let there = server_tree(&c).await;
    assert!(!there.contains_key("m.txt"), "{there:?}");
    for p in held {
        assert!(there.contains_key(p), "held: {p} still on the server");
        assert!(!here.contains_key(p));
    }
    let synced: std::collections::BTreeMap<_, _> =
        there.iter().filter(|(p, _)| !p.starts_with("d/")).collect();
    assert_eq!(synced, here.iter().collect(), "the folder and the server agree");
    let history = c.versions("n.txt").await.expect("versions");
    assert!(!history.versions.is_empty(), "{history:?}");

    // Nothing left to do but the held deletions.
    let plan = env
        .run(
            None,
            &["sync", "--dry-run", "--json", "--strategy", "prefer-local"],
        )
        .json();
    for list in ["moves", "uploads", "downloads", "conflicts"] {
        assert_eq!(plan[list], serde_json::json!([]), "{list}: {plan}");
    }
    assert_eq!(strings(&plan["held_deletions"]), held, "{plan}");
}
