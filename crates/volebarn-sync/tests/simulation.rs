//! Seeded multi-client simulation, the way Dropbox tests its sync engine: three clients with
//! their own folders and conflict strategies on one real server, each behind its own fault
//! proxy, run a seeded random script of edits, creations, deletions, renames (rename chains
//! too), directory creations, moves and deletions, editor saves, concurrent conflicting edits,
//! offline periods and network blips that drop every connection in the middle of a pass, with
//! passes interleaved at random (sometimes two clients' passes at once).
//!
//! What is checked:
//! - a pass on a healthy link (online, no blip armed) runs without an error;
//! - no file the ignore rules exclude ever reaches the server;
//! - at the end, once the links are healed and every client has run its passes, all three
//!   folders and the server hold the same files (byte for byte) and the same directories, and
//!   a dry run finds nothing left to do;
//! - nothing is lost: every content the server ever held (its manifest is read after every
//!   pass) and every content a folder held when a pass of that folder went through without an
//!   error is current, a conflict copy, or one of the server's versions.
//!
//! `VOLEBARN_SIM_SEED` and `VOLEBARN_SIM_OPS` pick the script (CI: the fixed default seed,
//! 1,000 operations). A failure prints the seed, the number of operations and the last
//! operations, so it can be replayed: `VOLEBARN_SIM_SEED=… cargo test -p volebarn-sync --test
//! simulation`. Which connection a blip cuts depends on how the client pooled them, so a replay
//! runs the same script with the same blips, not always with the same bytes cut.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;
use volebarn_client::{Client, ConflictStrategy, Xxh3};
use volebarn_sync::engine::{Engine, EngineConfig, PassReport};
use volebarn_sync::PassOptions;
use volebarn_testkit::{tree_and_dirs, Fault, FaultProxy, TestServer};

const DEFAULT_SEED: u64 = 20_261_130;
const DEFAULT_OPS: usize = 1_000;
/// Files above this go through the chunked upload; a few of the script's files do.
const LARGE_THRESHOLD: u64 = 256 * 1024;
const PASS: PassOptions = PassOptions {
    dry_run: false,
    force: true,
};
const DRY: PassOptions = PassOptions {
    dry_run: true,
    force: true,
};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Names the scratch files of editors have: the engine must never sync them.
fn is_scratch(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.ends_with(".swp") || name.starts_with(".goutputstream-") || name.ends_with('~')
}

struct SimClient {
    name: char,
    root: PathBuf,
    engine: Engine,
    proxy: FaultProxy,
    /// Offline until the log has this many lines.
    offline_until: Option<usize>,
}

struct Sim {
    seed: u64,
    ops: usize,
    rng: StdRng,
    clients: Vec<SimClient>,
    /// Talks to the server directly, to read what it holds.
    observer: Client,
    /// Contents written so far (each write's content is new).
    written: u64,
    /// Every content that must survive, with where it was first seen.
    must_survive: BTreeMap<Xxh3, String>,
    /// Every path a file was ever seen at, on the server or in a folder.
    seen_paths: BTreeSet<String>,
    /// Where each content was seen (operation number, side, path), for the failure message.
    sightings: BTreeMap<Xxh3, Vec<String>>,
    /// What the script did, for the failure message.
    log: Vec<String>,
    passes: usize,
    blips: usize,
    faulted_passes: usize,
}

impl Sim {
    fn ctx(&self) -> String {
        let tail: Vec<&String> = self
            .log
            .iter()
            .rev()
            .take(env_or("VOLEBARN_SIM_LOG", 40))
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!(
            "replay with VOLEBARN_SIM_SEED={} VOLEBARN_SIM_OPS={}\nlast operations:\n{}",
            self.seed,
            self.ops,
            tail.iter()
                .map(|s| format!("  {s}"))
                .collect::<Vec<_>>()
                .join("\n")
        )
    }

    fn note(&mut self, line: String) {
        self.log.push(format!("{:4} {line}", self.log.len()));
    }

    fn content(&mut self, who: char) -> Vec<u8> {
        self.written += 1;
        let n = self.written;
        // Now and then a file large enough for the chunked upload.
        if self.rng.random_range(0..40) == 0 {
            let len = self.rng.random_range(LARGE_THRESHOLD + 1..=3 * LARGE_THRESHOLD);
            let mut body = volebarn_testkit::pseudo_random(len as usize, self.seed ^ n);
            body[..8].copy_from_slice(&n.to_le_bytes());
            return body;
        }
        let pad = self.rng.random_range(0..64);
        format!("content {n} by {who}{}", "x".repeat(pad)).into_bytes()
    }

    fn dir_path(&mut self) -> String {
        let depth = self.rng.random_range(1..=2);
        (0..depth)
            .map(|_| format!("d{}", self.rng.random_range(1..=4)))
            .collect::<Vec<_>>()
            .join("/")
    }

    fn file_path(&mut self) -> String {
        let f = format!("f{}.txt", self.rng.random_range(1..=6));
        if self.rng.random_range(0..3) == 0 {
            f
        } else {
            format!("{}/{f}", self.dir_path())
        }
    }

    fn pick<T: Clone>(&mut self, v: &[T]) -> Option<T> {
        (!v.is_empty()).then(|| v[self.rng.random_range(0..v.len())].clone())
    }

    /// The files (not scratch ones) and directories of client `c`'s folder.
    fn listing(&self, c: usize) -> (Vec<String>, Vec<String>) {
        let (files, dirs) = tree_and_dirs(&self.clients[c].root);
        (
            files.into_keys().filter(|p| !is_scratch(p)).collect(),
            dirs.into_iter().collect(),
        )
    }

    /// Writes `body` at `rel` in client `c`'s folder, unless a directory is in the way.
    fn write(&mut self, c: usize, rel: &str, body: &[u8]) -> bool {
        let root = self.clients[c].root.clone();
        let target = root.join(rel);
        if target.is_dir() || blocked_by_file(&root, rel) {
            return false;
        }
        std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
        std::fs::write(&target, body).expect("write");
        true
    }

    /// One step of the script: an edit in one folder, a pass, or a change of the network.
    async fn step(&mut self) {
        let now = self.log.len();
        for i in 0..self.clients.len() {
            if self.clients[i].offline_until.is_some_and(|t| t <= now) {
                self.clients[i].offline_until = None;
                self.clients[i].proxy.set_offline(false);
                let who = self.clients[i].name;
                self.note(format!("{who}: back online"));
            }
        }
        let c = self.rng.random_range(0..self.clients.len());
        let who = self.clients[c].name;
        let root = self.clients[c].root.clone();
        let (files, dirs) = self.listing(c);
        match self.rng.random_range(0..100) {
            // A new file, or a whole new content for an existing one.
            0..=13 => {
                let p = self.file_path();
                let body = self.content(who);
                if self.write(c, &p, &body) {
                    self.note(format!("{who}: write {p} ({} bytes)", body.len()));
                }
            }
            14..=25 => {
                if let Some(p) = self.pick(&files) {
                    let body = self.content(who);
                    if self.write(c, &p, &body) {
                        self.note(format!("{who}: edit {p}"));
                    }
                }
            }
            // An editor's save: the new content goes to a scratch file renamed over the old
            // one; sometimes a swap file is left behind.
            26..=31 => {
                if let Some(p) = self.pick(&files) {
                    let body = self.content(who);
                    let tmp = root.join(match p.rfind('/') {
                        Some(i) => format!("{}/.goutputstream-{}", &p[..i], self.written),
                        None => format!(".goutputstream-{}", self.written),
                    });
                    std::fs::write(&tmp, &body).expect("write scratch");
                    std::fs::rename(&tmp, root.join(&p)).expect("rename over");
                    if self.rng.random_range(0..3) == 0 {
                        std::fs::write(root.join(format!("{p}.swp")), b"swap").expect("swap file");
                    }
                    self.note(format!("{who}: editor save {p}"));
                }
            }
            32..=37 => {
                if let Some(p) = self.pick(&files) {
                    std::fs::remove_file(root.join(&p)).expect("rm");
                    self.note(format!("{who}: delete {p}"));
                }
            }
            38..=43 => {
                let to = self.file_path();
                if let Some(from) = self.pick(&files) {
                    if self.rename(c, &from, &to) {
                        self.note(format!("{who}: rename {from} -> {to}"));
                    }
                }
            }
            // A rename chain onto a synced path: b -> c, then a -> b.
            44..=46 => {
                let (a, b) = (self.pick(&files), self.pick(&files));
                let to = self.file_path();
                if let (Some(a), Some(b)) = (a, b) {
                    if a != b && self.rename(c, &b, &to) && self.rename(c, &a, &b) {
                        self.note(format!("{who}: rename {b} -> {to}, then {a} -> {b}"));
                    }
                }
            }
            47..=48 => {
                let d = self.dir_path();
                let target = root.join(&d);
                if !blocked_by_file(&root, &d) && !target.exists() {
                    std::fs::create_dir_all(target).expect("mkdir");
                    self.note(format!("{who}: mkdir {d}"));
                }
            }
            49..=51 => {
                let to = self.dir_path();
                if let Some(d) = self.pick(&dirs) {
                    let target = root.join(&to);
                    if !target.exists() && to != d && !under(&to, &d) && !blocked_by_file(&root, &to) {
                        std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
                        std::fs::rename(root.join(&d), target).expect("move dir");
                        self.note(format!("{who}: move dir {d} -> {to}"));
                    }
                }
            }
            52..=53 => {
                if let Some(d) = self.pick(&dirs) {
                    std::fs::remove_dir_all(root.join(&d)).expect("rm dir");
                    self.note(format!("{who}: delete dir {d}"));
                }
            }
            // Two clients change the same path before either syncs.
            54..=57 => {
                let other = (c + self.rng.random_range(1..self.clients.len())) % self.clients.len();
                let p = match self.pick(&files) {
                    Some(p) if self.rng.random_range(0..2) == 0 => p,
                    _ => self.file_path(),
                };
                let (mine, theirs) = (self.content(who), self.content(self.clients[other].name));
                if self.write(c, &p, &mine) && self.write(other, &p, &theirs) {
                    let o = self.clients[other].name;
                    self.note(format!("{who} and {o}: both write {p}"));
                }
            }
            // An offline period: the client's next few passes cannot reach the server.
            58..=60 => {
                if self.clients[c].offline_until.is_none() {
                    let until = self.log.len() + self.rng.random_range(10..60);
                    self.clients[c].offline_until = Some(until);
                    self.clients[c].proxy.set_offline(true);
                    self.note(format!("{who}: goes offline until operation {until}"));
                }
            }
            // Two clients' passes at the same time.
            63..=68 => {
                let other = (c + self.rng.random_range(1..self.clients.len())) % self.clients.len();
                self.passes_at_once(c, other).await;
            }
            _ => {
                let blip = (self.rng.random_range(0..3) == 0).then(|| self.rng.random_range(100..6_000));
                self.pass(c, blip).await;
            }
        }
    }

    /// Renames `from` to `to` in client `c`'s folder when `to` is free.
    fn rename(&self, c: usize, from: &str, to: &str) -> bool {
        let root = &self.clients[c].root;
        let target = root.join(to);
        if from == to || target.exists() || blocked_by_file(root, to) || !root.join(from).is_file() {
            return false;
        }
        std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
        std::fs::rename(root.join(from), target).expect("rename");
        true
    }

    /// What a pass of client `c` will start from: its folder's files.
    fn snapshot(&self, c: usize) -> BTreeMap<String, Xxh3> {
        tree_and_dirs(&self.clients[c].root)
            .0
            .into_iter()
            .filter(|(p, _)| !is_scratch(p))
            .map(|(p, b)| (p, Xxh3::of(&b)))
            .collect()
    }

    /// A pass of client `c`, with a blip armed after `blip` bytes when set.
    async fn pass(&mut self, c: usize, blip: Option<u64>) {
        let before = self.snapshot(c);
        if let Some(b) = blip {
            self.clients[c].proxy.blip_after(b);
        }
        let report = self.clients[c].engine.pass(PASS).await;
        let blipped = blip.is_some() && self.clients[c].proxy.disarm_blip();
        let who = self.clients[c].name;
        let label = match (blip, blipped) {
            (Some(b), true) => format!("{who}: pass, link dropped after {b} bytes"),
            (Some(_), false) => format!("{who}: pass (armed blip never fired)"),
            _ => format!("{who}: pass"),
        };
        self.after_pass(c, label, before, report, blipped).await;
    }

    /// Passes of clients `a` and `b` running at the same time.
    async fn passes_at_once(&mut self, a: usize, b: usize) {
        let (before_a, before_b) = (self.snapshot(a), self.snapshot(b));
        let (ea, eb) = pair_mut(&mut self.clients, a, b);
        let (ra, rb) = tokio::join!(ea.engine.pass(PASS), eb.engine.pass(PASS));
        let (na, nb) = (self.clients[a].name, self.clients[b].name);
        self.after_pass(a, format!("{na}: pass (with {nb} at once)"), before_a, ra, false)
            .await;
        self.after_pass(b, format!("{nb}: pass (with {na} at once)"), before_b, rb, false)
            .await;
    }

    /// Checks a pass's outcome and records what must now survive.
    async fn after_pass(
        &mut self,
        c: usize,
        label: String,
        before: BTreeMap<String, Xxh3>,
        report: volebarn_sync::Result<PassReport>,
        blipped: bool,
    ) {
        self.passes += 1;
        let healthy = self.clients[c].offline_until.is_none() && !blipped;
        let report = match report {
            Ok(r) => r,
            Err(e) => {
                assert!(
                    !healthy,
                    "{label}: the pass failed on a healthy link: {e}\n{}",
                    self.ctx()
                );
                self.faulted_passes += 1;
                self.note(format!("{label}: failed: {e}"));
                return;
            }
        };
        let clean = report.offline.is_none() && report.result.errors.is_empty() && report.refused.is_none();
        if healthy {
            assert!(
                clean,
                "{label}: a pass on a healthy link went wrong: offline {:?}, refused {:?}, errors {:#?}\n{}",
                report.offline,
                report.refused,
                report.result.errors,
                self.ctx()
            );
        }
        if blipped {
            self.blips += 1;
        }
        if clean {
            for (p, h) in before {
                self.sightings
                    .entry(h)
                    .or_default()
                    .push(format!("{} {label} {p}", self.log.len()));
                self.seen_paths.insert(p.clone());
                self.must_survive.entry(h).or_insert(p);
            }
            self.note(label);
        } else {
            self.faulted_passes += 1;
            self.note(format!("{label}: did not go through (as expected on this link)"));
        }
        for (p, h) in self.server_tree().await.0 {
            assert!(
                !is_scratch(&p),
                "scratch file {p} reached the server\n{}",
                self.ctx()
            );
            self.seen_paths.insert(p.clone());
            let at = format!("{} server {p}", self.log.len());
            let seen = self.sightings.entry(h).or_default();
            if seen
                .last()
                .is_none_or(|l| l.split_once(' ').map(|x| x.1) != at.split_once(' ').map(|x| x.1))
            {
                seen.push(at);
            }
            self.must_survive.entry(h).or_insert(p);
        }
    }

    /// Every file on the server with its hash, and every directory (from one manifest).
    async fn server_tree(&self) -> (BTreeMap<String, Xxh3>, BTreeSet<String>) {
        let m = self.observer.get_manifest(None).await.expect("manifest");
        let (mut files, mut dirs) = (BTreeMap::new(), BTreeSet::new());
        for (p, f) in m.files {
            if !f.is_directory {
                files.insert(p, f.xxhash3);
            } else if !p.is_empty() {
                dirs.insert(p);
            }
        }
        (files, dirs)
    }

    /// Heals every link and runs rounds of passes until a round changes nothing.
    async fn converge(&mut self) {
        for c in &mut self.clients {
            c.offline_until = None;
            c.proxy.set_offline(false);
            c.proxy.disarm_blip();
        }
        self.note("every link healed".into());
        for round in 0..8 {
            let mut changed = false;
            for c in 0..self.clients.len() {
                let before = self.snapshot(c);
                let report = self.clients[c].engine.pass(PASS).await;
                if let Ok(r) = &report {
                    changed |= r.changed_anything();
                }
                let who = self.clients[c].name;
                self.after_pass(c, format!("{who}: settling pass {round}"), before, report, false)
                    .await;
            }
            if !changed {
                return;
            }
        }
        panic!("still changing after 8 rounds of passes\n{}", self.ctx());
    }

    /// The end state: converged, nothing lost.
    async fn check(&mut self) {
        let (server, server_dirs) = self.server_tree().await;
        for c in 0..self.clients.len() {
            let who = self.clients[c].name;
            let plan = self.clients[c]
                .engine
                .pass(DRY)
                .await
                .expect("dry run")
                .plan
                .expect("plan");
            assert!(plan.is_empty(), "{who}: left to do {plan:#?}\n{}", self.ctx());
            let files = self.snapshot(c);
            assert_eq!(
                files,
                server,
                "{who}: the folder differs from the server\n{}",
                self.ctx()
            );
            let (_, dirs) = tree_and_dirs(&self.clients[c].root);
            assert_eq!(
                dirs,
                server_dirs,
                "{who}: directories differ from the server's\n{}",
                self.ctx()
            );
        }
        let mut kept: BTreeSet<Xxh3> = server.values().copied().collect();
        let paths: Vec<String> = self.seen_paths.iter().cloned().collect();
        for p in &paths {
            if let Ok(v) = self.observer.versions(p).await {
                kept.extend(v.versions.iter().map(|v| v.xxhash3));
            }
        }
        let lost: Vec<String> = self
            .must_survive
            .keys()
            .filter(|h| !kept.contains(h))
            .map(|h| format!("{h:?} seen: {:#?}", self.sightings.get(h)))
            .collect();
        assert!(
            lost.is_empty(),
            "contents lost:\n{}\n{}",
            lost.join("\n"),
            self.ctx()
        );
    }
}

/// True when a file stands where `rel` or one of its parent directories would go.
fn blocked_by_file(root: &Path, rel: &str) -> bool {
    let mut p = root.to_path_buf();
    let parts: Vec<&str> = rel.split('/').collect();
    for part in &parts[..parts.len() - 1] {
        p.push(part);
        if p.is_file() {
            return true;
        }
    }
    false
}

fn under(p: &str, d: &str) -> bool {
    p.strip_prefix(d).is_some_and(|r| r.starts_with('/'))
}

fn pair_mut<T>(v: &mut [T], a: usize, b: usize) -> (&mut T, &mut T) {
    assert_ne!(a, b);
    if a < b {
        let (x, y) = v.split_at_mut(b);
        (&mut x[a], &mut y[0])
    } else {
        let (x, y) = v.split_at_mut(a);
        (&mut y[0], &mut x[b])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_clients_converge_and_lose_nothing_under_a_seeded_random_script() {
    let seed = env_or("VOLEBARN_SIM_SEED", DEFAULT_SEED);
    let ops = env_or("VOLEBARN_SIM_OPS", DEFAULT_OPS);
    eprintln!("simulation: VOLEBARN_SIM_SEED={seed} VOLEBARN_SIM_OPS={ops}");
    // Every version is kept, so "in versions" is a check of the engine, not of retention.
    let srv = TestServer::start_with(|cfg| cfg.versions_keep = usize::MAX).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let strategies = [
        ('A', ConflictStrategy::PreferNewer),
        ('B', ConflictStrategy::PreferLocal),
        ('C', ConflictStrategy::Manual),
    ];
    let mut clients = Vec::new();
    for (name, strategy) in strategies {
        let root = dir.path().join(name.to_string());
        std::fs::create_dir_all(&root).expect("mkdir");
        let proxy = srv.proxy(Fault::None).await;
        let client = srv.client_via(&proxy, |cfg| {
            cfg.retry.max_retries = 2;
            cfg.retry.initial_delay = Duration::from_millis(5);
            cfg.retry.max_delay = Duration::from_millis(20);
            cfg.connect_timeout = Duration::from_secs(2);
            // The breaker has tests of its own; here a blip must not leave a client
            // failing fast for its recovery time.
            cfg.breaker.failure_threshold = u32::MAX;
            cfg.large.threshold = LARGE_THRESHOLD;
        });
        let engine = Engine::open(
            &root,
            client,
            EngineConfig {
                strategy,
                max_delete_percent: 100,
            },
        )
        .expect("engine");
        clients.push(SimClient {
            name,
            root,
            engine,
            proxy,
            offline_until: None,
        });
    }
    let mut sim = Sim {
        seed,
        ops,
        rng: StdRng::seed_from_u64(seed),
        clients,
        observer: srv.client(),
        written: 0,
        must_survive: BTreeMap::new(),
        seen_paths: BTreeSet::new(),
        sightings: BTreeMap::new(),
        log: Vec::new(),
        passes: 0,
        blips: 0,
        faulted_passes: 0,
    };
    for _ in 0..ops {
        sim.step().await;
    }
    sim.converge().await;
    sim.check().await;
    eprintln!(
        "simulation: {ops} operations, {} passes ({} cut by a blip, {} did not go through), {} contents \
         kept, {} paths, converged",
        sim.passes,
        sim.blips,
        sim.faulted_passes,
        sim.must_survive.len(),
        sim.seen_paths.len()
    );
    srv.shutdown().await;
}
