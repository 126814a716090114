//! The remote commands (`ls`, `get`, `put`, `rm`, `mv`, `cp`, `mkdir`, `search`, `versions`,
//! `restore`, `verify`): the real `volebarn` binary against a real server with TLS, checked by
//! what a user sees — exit codes, stdout, stderr, JSON and bytes on disk.

mod common;

use common::{volebarn, Env, Run};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::Path;
use volebarn_testkit::{pseudo_random, tree_and_dirs as tree, write};

/// The binary with `--server`, `--token` and `--ca-cert` on the command line, the scratch
/// directory as `$HOME`, and no config file.
impl Env {
    /// Runs `volebarn --server … ARGS` in `cwd`, never reading the user's own config.
    fn run_in(&self, cwd: &Path, args: &[&str]) -> Run {
        let ca = self.srv.ca_cert();
        self.run_with(cwd, &self.path("none.toml"), &self.srv.url(""), ca, args)
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_in(self.dir.path(), args)
    }

    fn run_with(&self, cwd: &Path, config: &Path, url: &str, ca: &Path, args: &[&str]) -> Run {
        let mut all: Vec<&OsStr> = vec![OsStr::new("--config"), config.as_os_str()];
        all.extend(["--server", url, "--token", self.srv.token(), "--ca-cert"].map(OsStr::new));
        all.push(ca.as_os_str());
        all.extend(args.iter().map(OsStr::new));
        volebarn(cwd, self.dir.path(), &all)
    }
}

fn p(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temp path")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tree_goes_up_and_comes_back_byte_for_byte() {
    let env = Env::start().await;
    let src = env.path("src");
    write(&src, "a.txt", b"alpha");
    write(&src, "dir/b.txt", b"beta");
    write(&src, "dir/deeper/c.bin", &pseudo_random(20_000, 1));
    write(&src, "mid.bin", &pseudo_random(3_000_000, 2));
    write(&src, "large/video.bin", &pseudo_random(10_500_000, 3));
    write(&src, ".volebarn/state", b"never uploaded");
    write(&src, "dir/.volebarn/state", b"never uploaded either");
    std::fs::create_dir_all(src.join("empty")).expect("mkdir");
    std::fs::create_dir_all(src.join("hollow/inner/most")).expect("mkdir");
    std::os::unix::fs::symlink(src.join("a.txt"), src.join("dir/link.txt")).expect("symlink");

    let put = env.run(&["put", p(&src), "photos"]).ok();
    assert!(put.stdout.contains("uploaded 5 files"), "{put:?}");
    assert!(
        put.stderr.contains("skipped dir/link.txt: symbolic link"),
        "{put:?}"
    );

    let ls = env.run(&["ls", "photos"]).ok();
    let names: Vec<&str> = ls
        .stdout
        .lines()
        .map(|l| l.rsplit("  ").next().expect("name"))
        .collect();
    assert_eq!(
        names,
        ["a.txt", "dir/", "empty/", "hollow/", "large/", "mid.bin"],
        "{ls:?}"
    );
    assert!(
        ls.stdout
            .lines()
            .any(|l| l.trim_start().starts_with("5 ") && l.ends_with("a.txt")),
        "size column: {ls:?}"
    );

    let rec = env.run(&["ls", "-R", "photos"]).ok();
    for shown in ["dir/deeper/c.bin", "hollow/inner/most/", "large/video.bin"] {
        assert!(rec.stdout.lines().any(|l| l.ends_with(shown)), "{shown}: {rec:?}");
    }
    assert!(
        !rec.stdout.contains("link.txt") && !rec.stdout.contains(".volebarn"),
        "{rec:?}"
    );

    let json = env.run(&["--json", "ls", "-R", "photos"]).ok().json();
    let files = json["files"].as_object().expect("files");
    assert_eq!(files["photos/mid.bin"]["size"], 3_000_000);
    assert_eq!(files["photos/hollow/inner"]["is_directory"], true);
    assert_eq!(files.len(), 12, "{json}");

    let get = env.run(&["get", "photos", p(&env.path("back"))]).ok();
    assert!(get.stdout.contains("downloaded 5 files"), "{get:?}");
    let (want_files, mut want_dirs) = tree(&src);
    let want_files: BTreeMap<_, _> = want_files
        .into_iter()
        .filter(|(k, _)| !k.contains(".volebarn"))
        .collect();
    want_dirs.retain(|d| !d.contains(".volebarn"));
    assert_eq!(tree(&env.path("back")), (want_files, want_dirs));

    // Without LOCAL the tree lands under its own name in the current directory.
    std::fs::create_dir_all(env.path("cwd")).expect("mkdir");
    env.run_in(&env.path("cwd"), &["get", "photos/dir"]).ok();
    assert_eq!(
        std::fs::read(env.path("cwd/dir/deeper/c.bin")).expect("read"),
        pseudo_random(20_000, 1)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn single_files_land_where_named_or_inside_an_existing_directory() {
    let env = Env::start().await;
    write(env.dir.path(), "notes.txt", b"first");
    env.run(&["put", "notes.txt"]).ok();
    env.run(&["mkdir", "docs"]).ok();
    env.run(&["put", "notes.txt", "docs"]).ok();
    env.run(&["put", "notes.txt", "docs/renamed.txt"]).ok();
    let ls = env.run(&["--json", "ls", "docs"]).ok().json();
    let names: Vec<&str> = ls["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["notes.txt", "renamed.txt"]);

    // Uploading again replaces the file.
    write(env.dir.path(), "notes.txt", b"second, longer");
    let put = env
        .run(&["--json", "put", "notes.txt", "docs/notes.txt"])
        .ok()
        .json();
    assert_eq!(put["files"], 1);
    assert_eq!(put["bytes"], 14);

    let dl = env.path("dl");
    std::fs::create_dir_all(dl.join("sub")).expect("mkdir");
    env.run_in(&dl, &["get", "docs/notes.txt"]).ok();
    assert_eq!(
        std::fs::read(dl.join("notes.txt")).expect("read"),
        b"second, longer"
    );
    env.run_in(&dl, &["get", "/notes.txt", "sub"]).ok();
    assert_eq!(std::fs::read(dl.join("sub/notes.txt")).expect("read"), b"first");
    env.run_in(&dl, &["get", "docs/renamed.txt", "other.txt"]).ok();
    assert_eq!(std::fs::read(dl.join("other.txt")).expect("read"), b"first");

    let missing = env.run(&["get", "docs/nope.txt"]);
    assert_eq!(
        missing.error_line(),
        "volebarn: get docs/nope.txt: file_not_found: not found on the server"
    );
    let bad = env.run(&["ls", "a//b"]);
    assert_eq!(
        bad.error_line(),
        "volebarn: ls a//b: invalid_path: path contains an empty component"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rm_mv_cp_mkdir_and_search_change_what_ls_shows() {
    let env = Env::start().await;
    let made = env.run(&["--json", "mkdir", "a/b/c"]).ok().json();
    assert_eq!(made["created"], true);
    assert!(env.run(&["ls", "a/b"]).ok().stdout.ends_with("c/\n"));
    let again = env.run(&["mkdir", "a/b/c"]).ok();
    assert!(again.stdout.contains("already exists"), "{again:?}");

    let src = env.path("src");
    write(&src, "x.txt", b"x");
    write(&src, "keep/y.txt", b"y");
    write(&src, "keep/z.md", b"z");
    env.run(&["put", p(&src), "/"]).ok();

    env.run(&["rm", "x.txt"]).ok();
    let root = env.run(&["ls"]).ok();
    assert!(!root.stdout.contains("x.txt"), "{root:?}");

    let refused = env.run(&["rm", "keep"]);
    let line = refused.error_line();
    assert!(line.starts_with("volebarn: rm keep: is_a_directory"), "{line}");
    assert!(line.contains("rm -r keep"), "{line}");
    assert!(env.run(&["ls", "keep"]).ok().stdout.contains("y.txt"));

    env.run(&["cp", "keep", "copy"]).ok();
    env.run(&["mv", "copy/y.txt", "copy/moved.txt"]).ok();
    env.run(&["mv", "copy/z.md", "a"]).ok();
    let found = env.run(&["--json", "search", "*.txt"]).ok().json();
    let paths: Vec<&str> = found
        .as_array()
        .expect("list")
        .iter()
        .map(|m| m["path"].as_str().expect("path"))
        .collect();
    assert_eq!(paths, ["copy/moved.txt", "keep/y.txt"]);
    let md = env.run(&["search", "**/*.md"]).ok();
    assert!(md.stdout.lines().any(|l| l.ends_with("  a/z.md")), "{md:?}");
    assert!(md.stdout.lines().any(|l| l.ends_with("  keep/z.md")), "{md:?}");

    let deleted = env.run(&["--json", "rm", "-r", "keep"]).ok().json();
    assert_eq!(deleted["directory"], true);
    let gone = env.run(&["ls", "keep"]);
    assert_eq!(
        gone.error_line(),
        "volebarn: ls keep: file_not_found: not found on the server"
    );
    // The copy shares no fate with the original.
    let got = env.path("copy");
    env.run(&["get", "copy", p(&got)]).ok();
    assert_eq!(std::fs::read(got.join("moved.txt")).expect("read"), b"y");
}

#[tokio::test(flavor = "multi_thread")]
async fn versions_list_every_revision_and_restore_brings_back_old_bytes() {
    let env = Env::start().await;
    write(env.dir.path(), "report.txt", b"draft one");
    env.run(&["put", "report.txt"]).ok();
    write(env.dir.path(), "report.txt", b"final version");
    env.run(&["put", "report.txt"]).ok();

    let list = env.run(&["--json", "versions", "report.txt"]).ok().json();
    let versions = list["versions"].as_array().expect("versions");
    assert_eq!(versions.len(), 2, "{list}");
    assert_eq!(versions[0]["current"], true);
    assert_eq!(versions[1]["size"], 9);
    let old_rev = versions[1]["rev"].as_u64().expect("rev");
    let human = env.run(&["versions", "report.txt"]).ok();
    assert!(
        human
            .stdout
            .lines()
            .any(|l| l.trim_start().starts_with(&format!("{old_rev} ")) && l.contains(" 9 ")),
        "{human:?}"
    );

    env.run(&["restore", "report.txt", "--rev", &old_rev.to_string()])
        .ok();
    env.run(&["get", "report.txt", p(&env.path("restored.txt"))]).ok();
    assert_eq!(
        std::fs::read(env.path("restored.txt")).expect("read"),
        b"draft one"
    );

    // A deleted file keeps its versions and comes back from them.
    env.run(&["rm", "report.txt"]).ok();
    env.run(&["restore", "report.txt", "--rev", &old_rev.to_string()])
        .ok();
    env.run(&["get", "report.txt", p(&env.path("again.txt"))]).ok();
    assert_eq!(std::fs::read(env.path("again.txt")).expect("read"), b"draft one");

    let nope = env.run(&["restore", "report.txt", "--rev", "999999"]);
    assert!(
        nope.error_line().starts_with(
            "volebarn: restore report.txt --rev 999999: file_not_found: report.txt has no version 999999"
        ),
        "{nope:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_finds_every_difference_and_exits_1() {
    let env = Env::start().await;
    let folder = env.path("folder");
    write(&folder, "a.txt", b"alpha");
    write(&folder, "dir/b.txt", b"beta");
    write(&folder, "dir/big.bin", &pseudo_random(2_000_000, 4));
    write(&folder, ".volebarn/index", b"state, not data");
    std::os::unix::fs::symlink(folder.join("a.txt"), folder.join("link")).expect("symlink");
    env.run(&["put", p(&folder), "/"]).ok();

    let same = env.run(&["verify", "--folder", p(&folder)]).ok();
    assert_eq!(same.stdout, "verify: 3 files, all match\n", "{same:?}");
    assert!(
        same.stderr.contains("not compared link: symlink: skipped"),
        "{same:?}"
    );

    write(&folder, "dir/b.txt", b"beta, edited");
    write(&folder, "new.txt", b"only here");
    write(env.dir.path(), "extra.txt", b"only there");
    env.run(&["put", "extra.txt", "dir/extra.txt"]).ok();

    let diff = env.run(&["verify", "--folder", p(&folder)]);
    assert_eq!(diff.code, 1, "{diff:?}");
    let lines: Vec<&str> = diff.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "only local:  new.txt",
            "only remote: dir/extra.txt",
            &format!(
                "differs:     dir/b.txt (local 12 bytes {}, remote 4 bytes {})",
                xxh3(b"beta, edited"),
                xxh3(b"beta")
            ),
            "verify: 5 files: 1 only local, 1 only remote, 1 differ, 0 corrupt, 0 unreadable",
        ],
        "{diff:?}"
    );

    let json = env.run(&["--json", "verify", "dir", "--folder", p(&folder)]);
    assert_eq!(json.code, 1, "{json:?}");
    let report = json.json();
    assert_eq!(report["only_local"], serde_json::json!([]));
    assert_eq!(report["only_remote"], serde_json::json!(["dir/extra.txt"]));
    assert_eq!(report["differ"][0]["path"], "dir/b.txt");
    assert_eq!(report["files"], 3);

    let one = env.run(&["verify", "a.txt", "--folder", p(&folder)]).ok();
    assert_eq!(one.stdout, "verify: 1 file, all match\n");

    // Damage the stored bytes of a file on the server: the local copy still matches the
    // recorded hash, but the server can no longer deliver it, and verify says so. (The file
    // is over 64 KiB: small files' bytes live inline in the server's metadata store.)
    let big = volebarn_testkit::pseudo_random(100 * 1024, 7);
    write(&folder, "big.bin", &big);
    let local_big = folder.join("big.bin");
    env.run(&["put", p(&local_big), "big.bin"]).ok();
    let hex = volebarn_core::ChunkId::of(&big).to_hex();
    let chunk = env.srv.data().join("chunks").join(&hex[0..2]).join(&hex);
    let mut perms = std::fs::metadata(&chunk).expect("chunk on disk").permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&chunk, perms).expect("chmod");
    let mut damaged_bytes = big.clone();
    damaged_bytes[0] ^= 1;
    std::fs::write(&chunk, &damaged_bytes).expect("damage the chunk");
    let config = env.path("no-retries.toml");
    std::fs::write(&config, "[client]\nretry_attempts = 0\n").expect("write config");
    let ca = env.srv.ca_cert();
    let damaged = env.run_with(
        env.dir.path(),
        &config,
        &env.srv.url(""),
        ca,
        &["verify", "big.bin", "--folder", p(&folder)],
    );
    assert_eq!(damaged.code, 1, "{damaged:?}");
    let lines: Vec<&str> = damaged.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{damaged:?}");
    assert!(lines[0].starts_with("unreadable:  big.bin: "), "{damaged:?}");
    assert_eq!(
        lines[1],
        "verify: 1 file: 0 only local, 0 only remote, 0 differ, 0 corrupt, 1 unreadable"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_compares_only_what_sync_would_sync() {
    let env = Env::start().await;
    let folder = env.path("folder");
    write(&folder, ".volebarnignore", b"*.log\nbuild/\n");
    write(&folder, "notes.txt", b"first draft");
    write(&folder, "docs/plan.md", b"plan");
    env.run(&["put", p(&folder), "/"]).ok();

    // Only here, and never synced: ignored by .volebarnignore, or by the built-in rules
    // (vim swap files, Office owner files).
    write(&folder, "debug.log", b"noise");
    write(&folder, "build/out.bin", &pseudo_random(5_000, 5));
    write(&folder, "docs/.plan.md.swp", b"vim swap");
    write(&folder, "docs/~$plan.docx", b"office lock");
    // A real difference.
    write(&folder, "notes.txt", b"second draft, longer");

    let diff = env.run(&["verify", "--folder", p(&folder)]);
    assert_eq!(diff.code, 1, "{diff:?}");
    let lines: Vec<&str> = diff.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            &format!(
                "differs:     notes.txt (local 20 bytes {}, remote 11 bytes {})",
                xxh3(b"second draft, longer"),
                xxh3(b"first draft")
            ),
            "verify: 3 files: 0 only local, 0 only remote, 1 differ, 0 corrupt, 0 unreadable",
        ],
        "{diff:?}"
    );

    let json = env.run(&["--json", "verify", "--folder", p(&folder)]);
    assert_eq!(json.code, 1, "{json:?}");
    let report = json.json();
    assert_eq!(report["only_local"], serde_json::json!([]));
    assert_eq!(report["only_remote"], serde_json::json!([]));
    assert_eq!(report["differ"].as_array().map(Vec::len), Some(1), "{report}");
    assert_eq!(report["differ"][0]["path"], "notes.txt");
    assert_eq!(report["files"], 3);

    // Below a path, the rules of the folder above it still apply.
    let docs = env.run(&["verify", "docs", "--folder", p(&folder)]).ok();
    assert_eq!(docs.stdout, "verify: 1 file, all match\n", "{docs:?}");

    // A folder that is not there is a mistake, not an empty folder.
    let missing = env.path("no-such-folder");
    let run = env.run(&["verify", "--folder", p(&missing)]);
    assert_eq!(
        run.error_line(),
        format!(
            "volebarn: verify /: {}: No such file or directory (os error 2)",
            missing.display()
        )
    );
}

fn xxh3(data: &[u8]) -> String {
    volebarn_core::Xxh3::of(data).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_server_fails_with_one_line() {
    let env = Env::start().await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let config = env.path("no-retries.toml");
    std::fs::write(&config, "[client]\nretry_attempts = 0\n").expect("write config");
    let ca = env.srv.ca_cert();
    let url = format!("https://127.0.0.1:{closed}");
    let started = std::time::Instant::now();
    let run = env.run_with(env.dir.path(), &config, &url, ca, &["ls", "docs"]);
    let line = run.error_line();
    assert!(line.starts_with("volebarn: ls docs: "), "{line}");
    assert!(
        line.contains("network_error") && line.contains("Connection refused"),
        "{line}"
    );
    assert_eq!(
        line.matches("error sending request").count(),
        1,
        "no cause said twice: {line}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "no retries were configured"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partly_failed_put_lists_each_failure_and_exits_1() {
    let env = Env::start().await;
    write(
        env.dir.path(),
        "blocker",
        b"a file where the tree wants a directory",
    );
    env.run(&["put", "blocker", "tree/sub"]).ok();
    let src = env.path("src");
    write(&src, "ok.txt", b"fine");
    write(&src, "sub/x.txt", b"cannot land");

    let run = env.run(&["put", p(&src), "tree"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.starts_with("uploaded 1 file "), "{run:?}");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{run:?}");
    assert!(lines[0].starts_with("failed sub/x.txt: "), "{run:?}");
    assert_eq!(
        lines[1],
        format!("volebarn: put {}: 1 failed (listed above)", src.display())
    );
    let back = env.path("back");
    env.run(&["get", "tree", p(&back)]).ok();
    assert_eq!(std::fs::read(back.join("ok.txt")).expect("read"), b"fine");
}
