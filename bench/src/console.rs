//! Scenario "console": the `volebarn` console's sync engine (`Engine::pass`, what one
//! `volebarn sync` does) against `rsync -a --delete` to an rsync daemon on loopback, on the same
//! folder, for the rows of docs/design.md §7:
//! 1. first sync of N files of 1–16 KiB from folder A to a fresh server,
//! 2. a no-op resync of A (which must read no file contents),
//! 3. 100 edits + 100 adds + 100 deletes in A, then one pass,
//! 4. a second client B with its own engine and an empty folder: the first sync down,
//! 5. one pass of B pulling A's change.
//!
//! rsync pushes A (its `.volebarn/` excluded) before and after the same change, and pulls into
//! its own folder for B's rows. Only the passes and the rsync runs are timed; opening an engine
//! (its RocksDB index) is not.

use crate::rsync::RsyncDaemon;
use crate::server::{client_for, fresh_server};
use crate::tree;
use anyhow::{bail, ensure};
use std::path::Path;
use std::time::{Duration, Instant};
use volebarn_client::{Client, ConflictStrategy};
use volebarn_sync::{Engine, EngineConfig, PassOptions, PassReport, STATE_DIR};

/// Edits, adds and deletes in the change step (docs/design.md §7: 100 of each).
const CHANGES: usize = 100;
/// The file count docs/design.md §7's targets are stated for.
const TARGET_FILES: usize = 10_000;

const PUSH: &[&str] = &["--delete", "--exclude=/.volebarn/"];
const PULL: &[&str] = &["--delete"];

/// One line of the table.
struct Row {
    scenario: String,
    volebarn: Duration,
    rsync: Option<Duration>,
    /// docs/design.md §7's target; `true` when §7 states it for the uploading client only and it is
    /// applied to client B by analogy.
    target: Option<(Duration, bool)>,
}

/// rsync's figures, in the order the runs happen.
#[derive(Default)]
struct RsyncTimes {
    first: Option<Duration>,
    no_op: Option<Duration>,
    pull_first: Option<Duration>,
    change: Option<Duration>,
    pull_change: Option<Duration>,
}

pub async fn run(work: &Path, n: usize) -> anyhow::Result<()> {
    let changes = CHANGES.min(n / 3);
    let a = work.join("console-a");
    let b = work.join("console-b");
    let files = tree::make_tree(&a, n)?;
    let bytes: usize = files.iter().map(|(_, b)| b.len()).sum();
    drop(files);
    println!(
        "console sync: {} files, {:.1} MiB, 1–16 KiB each; volebarn engine passes over TLS on \
         loopback, durable; rsync -a --delete to an rsync daemon on loopback, no fsync",
        thousands(n),
        bytes as f64 / 1048576.0
    );

    // rsync first, while A holds only the tree.
    let rsync_dir = work.join("console-rsync");
    std::fs::create_dir_all(&rsync_dir)?;
    let daemon = RsyncDaemon::start(&rsync_dir)?;
    let mut rs = RsyncTimes::default();
    let rsync_b = work.join("console-rsync-b");
    if let Some(d) = &daemon {
        rs.first = Some(d.push(&a, PUSH)?);
        rs.no_op = Some(d.push(&a, PUSH)?);
        rs.pull_first = Some(d.pull(&rsync_b, PULL)?);
    } else {
        println!("rsync not installed: its column stays empty (make bench installs it)");
    }

    let (server, client_a) = fresh_server(&work.join("console-srv")).await?;
    let mut ea = open_engine(&a, client_a)?;
    let (first, r) = timed_pass(&mut ea).await?;
    expect("first sync of A", &r, [n, 0, 0, 0])?;
    let (no_op, r) = timed_pass(&mut ea).await?;
    expect("no-op resync of A", &r, [0, 0, 0, 0])?;
    let no_op_read = (r.hashed, r.bytes_read);

    std::fs::create_dir_all(&b)?;
    let mut eb = open_engine(&b, client_for(&server)?)?;
    let (down, r) = timed_pass(&mut eb).await?;
    expect("first sync of B", &r, [0, n, 0, 0])?;

    let ch = tree::change_tree(&a, n, changes)?;
    let (change, r) = timed_pass(&mut ea).await?;
    let sent = ch.edited.len() + ch.added.len();
    expect("change in A", &r, [sent, 0, ch.deleted.len(), 0])?;
    let change_read = (r.hashed, r.bytes_read);
    let (pull, r) = timed_pass(&mut eb).await?;
    expect("pull into B", &r, [0, sent, 0, ch.deleted.len()])?;
    server.shutdown().await?;
    let want = tree::read_tree(&a, STATE_DIR)?;
    ensure!(
        tree::read_tree(&b, STATE_DIR)? == want,
        "folders A and B differ after the sync"
    );

    if let Some(d) = &daemon {
        rs.change = Some(d.push(&a, PUSH)?);
        rs.pull_change = Some(d.pull(&rsync_b, PULL)?);
        ensure!(
            tree::read_tree(&rsync_b, STATE_DIR)? == want,
            "rsync's copy differs from folder A"
        );
    }
    drop(daemon);

    let change_name = format!("{changes} edits + {changes} adds + {changes} deletes");
    let secs = Duration::from_secs_f64;
    let rows = [
        Row {
            scenario: format!("A: first sync, {} files up", thousands(n)),
            volebarn: first,
            rsync: rs.first,
            target: Some((secs(1.0), false)),
        },
        Row {
            scenario: "A: no-op resync".into(),
            volebarn: no_op,
            rsync: rs.no_op,
            target: Some((secs(0.10), false)),
        },
        Row {
            scenario: format!("A: {change_name}"),
            volebarn: change,
            rsync: rs.change,
            target: Some((secs(0.25), false)),
        },
        Row {
            scenario: format!("B: first sync, {} files down", thousands(n)),
            volebarn: down,
            rsync: rs.pull_first,
            target: Some((secs(1.0), true)),
        },
        Row {
            scenario: "B: pull A's change".into(),
            volebarn: pull,
            rsync: rs.pull_change,
            target: Some((secs(0.25), true)),
        },
    ];
    print_table(&rows, n == TARGET_FILES && changes == CHANGES);
    println!(
        "  no-op pass on A read {} files, {} bytes (must be 0, 0){}",
        no_op_read.0,
        no_op_read.1,
        if no_op_read == (0, 0) {
            ""
        } else {
            "  <-- NOT A NO-OP: the scan read file contents"
        }
    );
    println!(
        "  change pass on A read {} files, {} bytes ({} edited + {} added)",
        change_read.0,
        change_read.1,
        ch.edited.len(),
        ch.added.len()
    );
    println!("  B's rows: rsync pulls from its daemon into a folder of its own");
    println!("  * §7 states this target for the uploading side; applied to B by analogy");
    if n != TARGET_FILES {
        println!(
            "  the §7 targets are for {} files: not judged",
            thousands(TARGET_FILES)
        );
    }
    Ok(())
}

fn open_engine(root: &Path, client: Client) -> anyhow::Result<Engine> {
    Ok(Engine::open(
        root,
        client,
        EngineConfig {
            strategy: ConflictStrategy::PreferNewer,
            // 100 deletes of 10,000 is 1%: far below the rail, as for a user's ordinary day.
            max_delete_percent: 50,
        },
    )?)
}

/// One pass, timed after a `settle`; fails when it did not run or did not finish cleanly.
async fn timed_pass(engine: &mut Engine) -> anyhow::Result<(Duration, PassReport)> {
    crate::settle()?;
    let start = Instant::now();
    let r = engine.pass(PassOptions::default()).await?;
    let elapsed = start.elapsed();
    if let Some(why) = r
        .refused
        .as_ref()
        .or(r.offline.as_ref())
        .or(r.held_reason.as_ref())
    {
        bail!("the pass did not sync: {why}");
    }
    if let Some((path, why)) = r.result.errors.first().or(r.problems.first()) {
        bail!(
            "the pass had {} errors and {} problems, first: {path}: {why}",
            r.result.errors.len(),
            r.problems.len()
        );
    }
    Ok((elapsed, r))
}

/// Checks the pass moved what it should: [uploaded, downloaded, deleted remotely, deleted locally].
fn expect(what: &str, r: &PassReport, want: [usize; 4]) -> anyhow::Result<()> {
    let res = &r.result;
    let got = [
        res.uploaded.len(),
        res.downloaded.len(),
        res.deleted_remote.len(),
        res.deleted_local.len(),
    ];
    ensure!(
        got == want,
        "{what}: [uploaded, downloaded, deleted remotely, deleted locally] = {got:?}, expected {want:?}"
    );
    Ok(())
}

fn print_table(rows: &[Row], judge: bool) {
    println!(
        "  {:<42} {:>10} {:>10}   §7 target",
        "scenario", "volebarn", "rsync"
    );
    for row in rows {
        let rsync = row.rsync.map_or("—".to_string(), seconds);
        let (target, verdict) = match row.target {
            Some((t, analogy)) => (
                format!("≤ {:.2} s{}", t.as_secs_f64(), if analogy { "*" } else { "" }),
                match (judge, row.volebarn <= t) {
                    (false, _) => "",
                    (true, true) => "met",
                    (true, false) => "MISSED",
                },
            ),
            None => ("—".to_string(), ""),
        };
        let line = format!(
            "  {:<42} {:>10} {:>10}   {:<10} {verdict}",
            row.scenario,
            seconds(row.volebarn),
            rsync,
            target
        );
        println!("{}", line.trim_end());
    }
}

fn seconds(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

/// `10000` as `10,000`.
pub fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
