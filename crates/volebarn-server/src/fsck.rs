//! `volebarn-server fsck`: checks the stores against each other, offline.
//!
//! Every chunk's bytes are re-hashed against its BLAKE3 id (inline bytes in the metadata
//! store and the chunk store, both layouts of the filesystem store); every file and kept
//! version is checked for a chunk list that adds up to its size and chunks that exist with
//! the right length; reference counts are recounted from the files and versions; bytes
//! nothing references are listed as orphans. Files whose content is one chunk (most small
//! files) also have their whole-file xxh3 checked, since that costs nothing more; a longer
//! file's content is exactly its chunks, each checked against its id.
//!
//! Memory: one small entry per referenced chunk (the recount) plus the chunk store's listing;
//! files, versions and inline bytes are read in pages. Paths are gathered only for the chunks
//! found damaged, in a second walk over the records.
//!
//! `--repair` sets every wrong reference count to the recount, removes inline bytes nothing
//! references, and deletes orphan chunk-store bytes older than the orphan grace (as GC does,
//! each inside a transaction that re-checks the count). It never deletes or changes a file
//! record or a version: a damaged file stays listed and reading it fails (the service
//! verifies every chunk it serves) instead of returning wrong bytes.
//!
//! fsck needs the server stopped: RocksDB allows one process, so a running server makes fsck
//! exit 2; with PostgreSQL, stop every replica first (nothing else detects them).

use crate::config::{MetaBackend, ServerConfig};
use crate::storage::{ChunkInfo, ChunkStore, FileRecord, MetaOp, MetaStore, StorageError};
use crate::storage::{Claim, Entry, MetaBatch, StoredChunk, INLINE_MAX};
use anyhow::anyhow;
use futures_util::StreamExt;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};
use volebarn_core::timefmt::UnixNanos;
use volebarn_core::{ChunkId, VPath};

/// Records per page read from the metadata store.
const PAGE: usize = 1000;
/// Chunks re-hashed at once.
const READ_CONCURRENCY: usize = 4;

/// What fsck should do.
#[derive(Debug, Clone)]
pub struct FsckOptions {
    /// Fix reference counts and remove orphans.
    pub repair: bool,
    /// Orphan chunk-store bytes younger than this are left alone (and are not a problem).
    pub orphan_grace: Duration,
    /// The time orphans' ages are measured against.
    pub now: UnixNanos,
}

/// What one run found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FsckReport {
    pub files: u64,
    pub versions: u64,
    /// Chunk bytes re-hashed (inline and in the chunk store).
    pub chunks_checked: u64,
    pub bytes_checked: u64,
    /// Problems found, by kind (`corrupt`, `missing`, `refcount`, …).
    pub problems: Vec<(String, u64)>,
    /// Problems fixed by `--repair`.
    pub repaired: u64,
    /// Unreferenced chunk-store bytes still within the orphan grace (not a problem).
    pub orphans_in_grace: u64,
}

impl FsckReport {
    pub fn problem_count(&self) -> u64 {
        self.problems.iter().map(|(_, n)| n).sum()
    }

    fn count(&mut self, kind: &str) {
        match self.problems.iter_mut().find(|(k, _)| k == kind) {
            Some((_, n)) => *n += 1,
            None => self.problems.push((kind.to_string(), 1)),
        }
    }
}

/// What fsck knows about one referenced chunk.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    /// References counted from files and versions.
    refs: u64,
    /// The length the first reference gave.
    len: u32,
    /// A reference gave another length.
    len_conflict: bool,
    /// A reference record exists in the metadata store.
    recorded: bool,
    state: State,
    /// xxh3 of the bytes, once read (for one-chunk files' whole-file hash).
    xxh3: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    Unchecked,
    Good,
    Corrupt,
    /// Bytes that hash right but whose length differs from what files say.
    WrongLength(u64),
    Unreadable,
}

/// Where a damaged chunk's bytes were looked for.
fn state_line(id: &ChunkId, s: &Seen) -> (&'static str, String) {
    match s.state {
        State::Unchecked => (
            "missing",
            format!(
                "missing chunk {id} ({} bytes): in neither the metadata store nor the chunk store",
                s.len
            ),
        ),
        State::Corrupt => (
            "corrupt",
            format!(
                "corrupt chunk {id} ({} bytes): its stored bytes do not hash to its id",
                s.len
            ),
        ),
        State::WrongLength(n) => (
            "length",
            format!(
                "length chunk {id}: files say {} bytes, {n} bytes are stored",
                s.len
            ),
        ),
        State::Unreadable => ("unreadable", format!("unreadable chunk {id} ({} bytes)", s.len)),
        State::Good => ("", String::new()),
    }
}

/// One file or version using a damaged chunk, as printed.
fn usage(path: &VPath, version: Option<u64>) -> String {
    match version {
        None => format!("{:?}", path.as_str()),
        Some(rev) => format!("version {rev} of {:?}", path.as_str()),
    }
}

/// Runs fsck on opened stores, printing one line per problem and a summary line to `out`.
/// Blocking: call it from a blocking thread with `rt` a handle of the runtime the chunk
/// store runs on.
pub fn check(
    meta: &dyn MetaStore,
    chunks: &dyn ChunkStore,
    rt: &tokio::runtime::Handle,
    opts: &FsckOptions,
    out: &mut dyn Write,
) -> anyhow::Result<FsckReport> {
    let started = Instant::now();
    let mut report = FsckReport::default();
    let mut seen: HashMap<ChunkId, Seen> = HashMap::new();

    // 1. Recount references from every file and kept version.
    for_each_record(meta, &mut |path, version, rec| {
        match version {
            None => report.files += 1,
            Some(_) => report.versions += 1,
        }
        let total: u64 = rec.chunks.iter().map(|c| u64::from(c.len)).sum();
        if total != rec.size {
            report.count("size");
            writeln!(
                out,
                "size {}: the record says {} bytes, its {} chunks add up to {total}",
                usage(path, version),
                rec.size,
                rec.chunks.len()
            )?;
        }
        if rec.chunks.is_empty() && rec.size == 0 && rec.xxh3 != volebarn_core::Xxh3::of(b"").0 {
            report.count("hash");
            writeln!(
                out,
                "hash {}: empty, but its hash is not that of no bytes",
                usage(path, version)
            )?;
        }
        for c in &rec.chunks {
            let s = seen.entry(c.chunk_id()).or_insert(Seen {
                len: c.len,
                ..Seen::default()
            });
            s.refs += 1;
            s.len_conflict |= s.len != c.len;
        }
        Ok(())
    })?;

    // 2. Reference records against the recount.
    let mut fixes: Vec<(ChunkId, u32, u64)> = Vec::new(); // id, size, right count
    let mut after = None;
    loop {
        let page = meta.chunks_page(after.as_ref(), PAGE)?;
        let Some(last) = page.last() else { break };
        after = Some(last.0);
        for (id, info) in page {
            let counted = match seen.get_mut(&id) {
                Some(s) => {
                    s.recorded = true;
                    if info.size != s.len {
                        report.count("length");
                        writeln!(
                            out,
                            "length chunk {id}: its record says {} bytes, files say {}",
                            info.size, s.len
                        )?;
                    }
                    s.refs
                }
                None => 0,
            };
            if info.refs != counted {
                report.count("refcount");
                let what = if counted == 0 {
                    " (an orphan: nothing uses it)"
                } else {
                    ""
                };
                writeln!(
                    out,
                    "refcount chunk {id}: recorded {}, counted {counted}{what}",
                    info.refs
                )?;
                fixes.push((id, info.size, counted));
            }
        }
    }
    for (id, s) in &seen {
        if !s.recorded {
            report.count("refcount");
            writeln!(out, "refcount chunk {id}: no record, counted {}", s.refs)?;
            fixes.push((*id, s.len, s.refs));
        }
        if s.len_conflict {
            report.count("length");
            writeln!(out, "length chunk {id}: files give it different lengths")?;
        }
    }

    // 3. Inline bytes: re-hash; bytes nothing references are orphans.
    let mut inline_orphans = Vec::new();
    let mut after = None;
    loop {
        let page = meta.chunk_data_page(after.as_ref(), PAGE / 10)?;
        let Some(last) = page.last() else { break };
        after = Some(last.0);
        for (id, data) in page {
            report.chunks_checked += 1;
            report.bytes_checked += data.len() as u64;
            let good = ChunkId::of(&data) == id;
            match seen.get_mut(&id) {
                Some(s) => {
                    s.state = if !good {
                        State::Corrupt
                    } else if data.len() as u64 != u64::from(s.len) {
                        State::WrongLength(data.len() as u64)
                    } else {
                        s.xxh3 = volebarn_core::Xxh3::of(&data).0;
                        State::Good
                    };
                }
                None => {
                    report.count("orphan");
                    writeln!(
                        out,
                        "orphan inline chunk {id} ({} bytes in the metadata store): nothing uses it",
                        data.len()
                    )?;
                    inline_orphans.push(id);
                }
            }
        }
    }

    // 4. The chunk store: re-hash what is referenced (and not already read inline, where the
    // server reads small chunks first); list what nothing references.
    let stored: Vec<StoredChunk> = rt.block_on(chunks.list())?;
    let grace_start = opts
        .now
        .saturating_sub(opts.orphan_grace.as_nanos().min(i64::MAX as u128) as i64);
    let mut store_orphans = Vec::new();
    let mut to_read = Vec::new();
    for c in &stored {
        match seen.get(&c.id) {
            Some(s) if s.state == State::Good && s.len <= INLINE_MAX => {}
            Some(_) => to_read.push(c.id),
            None if c.stored_at <= grace_start => {
                report.count("orphan");
                writeln!(
                    out,
                    "orphan chunk {} ({} bytes in the chunk store): nothing uses it, stored longer ago than the orphan grace ({})",
                    c.id,
                    c.len,
                    humantime::format_duration(opts.orphan_grace)
                )?;
                store_orphans.push(c.id);
            }
            None => report.orphans_in_grace += 1,
        }
    }
    drop(stored);
    for batch in to_read.chunks(64) {
        // Each read keeps only the length and xxh3: at most READ_CONCURRENCY chunks in memory.
        let results: Vec<(ChunkId, ReadResult)> = rt.block_on(
            futures_util::stream::iter(batch.iter().copied())
                .map(|id| async move {
                    let got = chunks.get(&id).await;
                    (id, got.map(|d| (d.len() as u64, volebarn_core::Xxh3::of(&d).0)))
                })
                .buffer_unordered(READ_CONCURRENCY)
                .collect(),
        );
        for (id, got) in results {
            let Some(s) = seen.get_mut(&id) else { continue };
            match got {
                Ok((len, xxh3)) => {
                    report.chunks_checked += 1;
                    report.bytes_checked += len;
                    s.state = if len != u64::from(s.len) {
                        State::WrongLength(len)
                    } else {
                        s.xxh3 = xxh3;
                        State::Good
                    };
                }
                Err(StorageError::Corrupt(_)) => {
                    report.chunks_checked += 1;
                    s.state = State::Corrupt;
                }
                // Deleted since the listing: as missing as it gets.
                Err(StorageError::MissingChunk(_)) => {}
                Err(e) => {
                    tracing::warn!(chunk = %id, error = %e, "reading a chunk failed");
                    s.state = State::Unreadable;
                }
            }
        }
    }

    // 5. Damaged chunks, each with every file and version that uses it; one-chunk files'
    // whole-file hashes.
    let damaged: HashSet<ChunkId> = seen
        .iter()
        .filter(|(_, s)| s.state != State::Good)
        .map(|(id, _)| *id)
        .collect();
    let mut users: HashMap<ChunkId, Vec<String>> = HashMap::new();
    for_each_record(meta, &mut |path, version, rec| {
        for c in &rec.chunks {
            if damaged.contains(&c.chunk_id()) {
                let u = users.entry(c.chunk_id()).or_default();
                let name = usage(path, version);
                if !u.contains(&name) {
                    u.push(name);
                }
            }
        }
        if let [c] = rec.chunks.as_slice() {
            let s = &seen[&c.chunk_id()];
            if s.state == State::Good && s.xxh3 != rec.xxh3 {
                // An open claim is a chunked commit not yet checked: the verifier corrects it.
                let open = meta.has_claim(&Claim::of(path.as_str(), rec).key())?;
                if !open {
                    report.count("hash");
                    writeln!(
                        out,
                        "hash {}: its recorded xxh3 {:016x} is not that of its content ({:016x})",
                        usage(path, version),
                        rec.xxh3,
                        s.xxh3
                    )?;
                }
            }
        }
        Ok(())
    })?;
    let mut damaged: Vec<ChunkId> = damaged.into_iter().collect();
    damaged.sort();
    for id in damaged {
        let (kind, mut line) = state_line(&id, &seen[&id]);
        report.count(kind);
        let u = users.remove(&id).unwrap_or_default();
        let _ = write!(line, "; used by {}", u.join(", "));
        writeln!(out, "{line}")?;
    }

    // 6. Repairs: counts first (a count going to zero takes inline bytes with it), then
    // orphans, each re-checked inside a transaction as GC does.
    if opts.repair {
        for group in fixes.chunks(PAGE) {
            let tx = meta.begin()?;
            let current = tx.chunk_many(&group.iter().map(|f| f.0).collect::<Vec<_>>())?;
            let mut batch = MetaBatch::default();
            for ((id, size, right), cur) in group.iter().zip(current) {
                let have = cur.map_or(0, |c: ChunkInfo| c.refs);
                batch.push(MetaOp::AdjustChunk {
                    id: *id,
                    size: *size,
                    delta: *right as i64 - have as i64,
                });
            }
            tx.commit(batch)?;
            report.repaired += group.len() as u64;
        }
        for group in inline_orphans.chunks(PAGE) {
            let tx = meta.begin()?;
            let mut batch = MetaBatch::default();
            for id in group {
                // No reference record (or one just set to zero): a zero adjustment leaves
                // none, and the inline bytes go with it. A chunk referenced meanwhile keeps
                // its count.
                batch.push(MetaOp::AdjustChunk {
                    id: *id,
                    size: 0,
                    delta: 0,
                });
            }
            tx.commit(batch)?;
            report.repaired += group.len() as u64;
        }
        for group in store_orphans.chunks(PAGE) {
            let tx = meta.begin()?;
            let current = tx.chunk_many(group)?;
            for (id, cur) in group.iter().zip(current) {
                if cur.is_none_or(|c| c.refs == 0) {
                    rt.block_on(chunks.delete(id))?;
                    report.repaired += 1;
                }
            }
            drop(tx);
        }
    }

    let mut line = format!(
        "summary: {} problem{}",
        report.problem_count(),
        if report.problem_count() == 1 { "" } else { "s" }
    );
    if !report.problems.is_empty() {
        let kinds: Vec<String> = report.problems.iter().map(|(k, n)| format!("{n} {k}")).collect();
        let _ = write!(line, " ({})", kinds.join(", "));
    }
    if opts.repair {
        let _ = write!(line, ", {} repaired", report.repaired);
    }
    let _ = write!(
        line,
        "; checked {} files, {} versions, {} chunks ({} bytes) in {:.1}s",
        report.files,
        report.versions,
        report.chunks_checked,
        report.bytes_checked,
        started.elapsed().as_secs_f64()
    );
    if report.orphans_in_grace > 0 {
        let _ = write!(
            line,
            "; {} unreferenced chunks within the orphan grace left for GC",
            report.orphans_in_grace
        );
    }
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(report)
}

/// A chunk read back: its length and xxh3, or why it could not be.
type ReadResult = Result<(u64, u64), StorageError>;

/// What [`for_each_record`] calls: a path, `Some(rev)` for a kept version, the record.
type RecordVisitor<'a> = dyn FnMut(&VPath, Option<u64>, &FileRecord) -> anyhow::Result<()> + 'a;

/// Calls `f` on every current file (version `None`) and kept version (`Some(rev)`), in pages.
fn for_each_record(meta: &dyn MetaStore, f: &mut RecordVisitor<'_>) -> anyhow::Result<()> {
    let root = VPath::root();
    let mut after: Option<VPath> = None;
    loop {
        let page = meta.descendants_page(&root, after.as_ref(), PAGE)?;
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        for (path, entry) in &page {
            if let Entry::File(rec) = entry {
                f(path, None, rec)?;
            }
        }
    }
    let mut after: Option<(VPath, u64)> = None;
    loop {
        let page = meta.versions_page(after.as_ref(), PAGE)?;
        let Some((last, rev, _)) = page.last() else { break };
        after = Some((last.clone(), *rev));
        for (path, rev, v) in &page {
            f(path, Some(*rev), &v.file)?;
        }
    }
    Ok(())
}

/// Why fsck could not run (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CannotRun(pub String);

/// Opens the configured stores (the server's own config resolution) and runs [`check`],
/// printing to stdout. Returns the exit code: 0 clean, 1 problems found, 2 could not run.
pub async fn run(cfg: &ServerConfig, repair: bool) -> u8 {
    match run_inner(cfg, repair).await {
        Ok(r) if r.problem_count() == 0 => 0,
        Ok(_) => 1,
        Err(e) => {
            eprintln!("volebarn-server fsck: could not run: {e:#}");
            2
        }
    }
}

async fn run_inner(cfg: &ServerConfig, repair: bool) -> anyhow::Result<FsckReport> {
    if !cfg.data_dir.is_dir() && (cfg.meta.is_none() || cfg.chunks.is_none()) {
        return Err(anyhow!("no data directory at {}", cfg.data_dir.display()));
    }
    if cfg.meta.is_none() || matches!(cfg.meta, Some(MetaBackend::Rocks(_))) {
        let dir = match &cfg.meta {
            Some(MetaBackend::Rocks(d)) => d.clone(),
            _ => cfg.data_dir.join("meta"),
        };
        // Opening would create an empty store: a wrong path must not look clean.
        if !dir.join("CURRENT").is_file() {
            return Err(anyhow!("no metadata store in {}", dir.display()));
        }
    }
    let meta = crate::open_meta(cfg).await.map_err(|e| {
        let text = format!("{e:#}");
        if text.contains("lock") {
            anyhow!(
                "{text}\nthe metadata store is in use by another process: is volebarn-server running? \
                 Stop it, then run fsck again"
            )
        } else {
            e
        }
    })?;
    let chunks: Arc<dyn ChunkStore> = crate::open_chunks(cfg).await?;
    let opts = FsckOptions {
        repair,
        orphan_grace: cfg.retention.orphan_grace,
        now: volebarn_core::timefmt::now_nanos(),
    };
    let rt = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        check(meta.as_ref(), chunks.as_ref(), &rt, &opts, &mut out)
    })
    .await
    .map_err(|e| anyhow!("fsck task failed: {e}"))?
}
