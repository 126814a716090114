//! [`MetaStore`] on PostgreSQL ([docs/design.md](docs/design.md) §8): what N stateless servers share.
//!
//! - **Schema.** One table per kind of record, records encoded as on RocksDB (bitcode +
//!   snappy) with the columns queries need beside them. Paths are stored as the RocksDB key
//!   (`/` → `0x00`, in `bytea`, which sorts bytewise), so listings, pages and subtrees come
//!   out in exactly the order the embedded store gives. Migrations are embedded and run at
//!   start-up (sqlx's migrator takes an advisory lock, so replicas starting together are safe).
//! - **Transactions.** A write transaction locks the single `state` row (`FOR UPDATE`) first:
//!   writers of every replica take turns, as RocksDB's writer mutex makes them take turns in
//!   one process, so "read, check, write" never loses an update and revisions — the `head`
//!   column of that row — increase in commit order (a sequence would not: a later revision
//!   could become visible before an earlier one and a long-poll cursor would skip it). The
//!   batch is folded by [`resolve`] and written with a few set-based statements (`UNNEST`),
//!   so a bulk upload of a thousand files is a handful of round trips, not thousands.
//!   Within a replica, a local mutex queues writers before they take a connection, so
//!   waiting writers never exhaust the pool the readers need.
//! - **Wake-ups.** The commit runs `pg_notify('volebarn_changes', head)`; every replica
//!   keeps one `LISTEN` connection and fans the new head out to its long-polls through a
//!   watch channel. After the listening connection is re-established, the head is read
//!   again, so a notification lost meanwhile cannot leave a long-poll asleep.
//! - **Blocking.** The trait blocks (callers use the blocking pool); the store drives sqlx on
//!   a small runtime of its own and waits on a plain channel, so a call works from any
//!   thread, inside or outside the server's runtime.

use super::resolve::{resolve, Resolved};
use super::rocks::{key_path, path_key, subtree_prefix};
use super::{CommitOutcome, Entry, MetaBatch, MetaStore, MetaTxn, StoreStats};
use crate::storage::codec::{decode, encode};
use crate::storage::records::{Change, ChunkInfo, Claim, DeadProps, DirRecord, FileRecord, VersionRecord};
use crate::storage::{StorageError, StorageResult};
use bytes::Bytes;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions, PgRow};
use sqlx::{PgPool, Postgres, Row, Transaction};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use volebarn_core::{ChunkId, VPath};

/// The channel commits notify on; the payload is the new head revision.
const CHANNEL: &str = "volebarn_changes";

/// How long start-up waits for the database before giving up with an error.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

const SCHEMA_V1: &str = r#"
CREATE TABLE entries (
    key    bytea PRIMARY KEY,  -- the path, '/' stored as 0x00: sorts as the RocksDB keys do
    parent bytea NOT NULL,     -- the parent directory's key ('' for the root)
    is_dir boolean NOT NULL,
    xxh3   bigint,             -- files only: whole-file hash (u64 bits)
    mtime  bigint,             -- files only
    rec    bytea NOT NULL      -- FileRecord or DirRecord, bitcode + snappy
);
CREATE INDEX entries_parent ON entries (parent, key);
CREATE INDEX entries_xxh3 ON entries (xxh3, key) WHERE NOT is_dir;
CREATE INDEX entries_mtime ON entries (mtime, key) WHERE NOT is_dir;
CREATE TABLE chunks (
    id   bytea PRIMARY KEY,
    refs bigint NOT NULL CHECK (refs > 0),
    size integer NOT NULL
);
CREATE TABLE chunk_data (
    id   bytea PRIMARY KEY,
    data bytea NOT NULL
);
CREATE TABLE versions (
    key         bytea NOT NULL,
    rev         bigint NOT NULL,
    archived_at bigint NOT NULL,
    rec         bytea NOT NULL,
    PRIMARY KEY (key, rev)
);
CREATE INDEX versions_archived ON versions (archived_at);
CREATE TABLE journal (
    rev bigint PRIMARY KEY,
    rec bytea NOT NULL
);
CREATE TABLE claims (
    key bytea PRIMARY KEY,
    rec bytea NOT NULL
);
CREATE TABLE state (
    id            smallint PRIMARY KEY CHECK (id = 1),
    head          bigint NOT NULL,
    journal_floor bigint NOT NULL,
    files         bigint NOT NULL,
    file_bytes    bigint NOT NULL,
    chunks        bigint NOT NULL,
    chunk_bytes   bigint NOT NULL
);
INSERT INTO state VALUES (1, 0, 0, 0, 0, 0, 0);
"#;

/// WebDAV dead properties (docs/storage.md).
const SCHEMA_V2: &str = r#"
CREATE TABLE dead_props (
    key bytea PRIMARY KEY,  -- the path, as in entries
    rec bytea NOT NULL      -- DeadProps, bitcode + snappy
);
"#;

fn migrator() -> Migrator {
    let migration = |version, name, sql| {
        Migration::new(
            version,
            Cow::Borrowed(name),
            MigrationType::Simple,
            Cow::Borrowed(sql),
            false,
        )
    };
    Migrator {
        migrations: Cow::Owned(vec![
            migration(1, "volebarn schema", SCHEMA_V1),
            migration(2, "webdav dead properties", SCHEMA_V2),
        ]),
        ..Migrator::DEFAULT
    }
}

fn db_err(e: sqlx::Error) -> StorageError {
    StorageError::Db(format!("PostgreSQL: {e}"))
}

/// u64 values (revisions, hashes, sizes) travel as `bigint`, bit for bit.
fn i(v: u64) -> i64 {
    v as i64
}

fn u(v: i64) -> u64 {
    v as u64
}

/// The key of `key`'s parent directory (the root's children have `''`).
fn parent_key(key: &[u8]) -> Vec<u8> {
    match key.iter().rposition(|&b| b == 0) {
        Some(i) => key[..i].to_vec(),
        None => Vec::new(),
    }
}

/// Bounds of `dir`'s subtree as key range `[lo, hi)`; `None` for the root (everything).
fn subtree_range(dir: &VPath) -> Option<(Vec<u8>, Vec<u8>)> {
    if dir.is_root() {
        return None;
    }
    let lo = subtree_prefix(dir);
    let mut hi = lo.clone();
    // The prefix ends in 0x00 (the separator): every key below starts with it and sorts
    // before the same prefix ending in 0x01.
    if let Some(last) = hi.last_mut() {
        *last = 1;
    }
    Some((lo, hi))
}

fn entry_of(row: &PgRow) -> StorageResult<(VPath, Entry)> {
    let key: Vec<u8> = row.try_get("key").map_err(db_err)?;
    let is_dir: bool = row.try_get("is_dir").map_err(db_err)?;
    let rec: Vec<u8> = row.try_get("rec").map_err(db_err)?;
    let entry = if is_dir {
        Entry::Dir(decode(&rec)?)
    } else {
        Entry::File(decode(&rec)?)
    };
    Ok((key_path(&key)?, entry))
}

fn chunk_id_col(row: &PgRow) -> StorageResult<ChunkId> {
    let id: Vec<u8> = row.try_get("id").map_err(db_err)?;
    let id: [u8; 32] = id
        .try_into()
        .map_err(|_| StorageError::Corrupt("bad chunk id".into()))?;
    Ok(ChunkId(id))
}

fn decode_col<T: bitcode::DecodeOwned>(row: &PgRow, col: &str) -> StorageResult<T> {
    let rec: Vec<u8> = row.try_get(col).map_err(db_err)?;
    decode(&rec)
}

pub struct PgMetaStore {
    pool: PgPool,
    /// Writers of this replica queue here before taking a connection (see the module docs).
    writer: Mutex<()>,
    head: tokio::sync::watch::Sender<u64>,
    /// The task that listens for other replicas' commits (it holds a connection of the pool).
    listening: tokio::task::JoinHandle<()>,
    /// Drives sqlx; `None` only while dropping.
    rt: Option<tokio::runtime::Runtime>,
}

impl PgMetaStore {
    /// Connects to `url` (`postgres://USER[:PASSWORD]@HOST:PORT/DB`, or any form sqlx
    /// accepts), runs the embedded migrations and starts listening for other replicas'
    /// commits. Fails within seconds when the database is unreachable.
    pub fn connect(url: &str) -> StorageResult<Self> {
        let opts = PgConnectOptions::from_str(url)
            .map_err(|e| StorageError::Db(format!("bad PostgreSQL URL: {e}")))?;
        let where_ = format!(
            "{}:{}/{}",
            opts.get_host(),
            opts.get_port(),
            opts.get_database().unwrap_or("postgres")
        );
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("volebarn-pg")
            .enable_all()
            .build()?;
        let head = tokio::sync::watch::Sender::new(0);
        let sender = head.clone();
        let connected = run_on(&rt, async move {
            let connect = async {
                let pool = PgPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(30))
                    .connect_with(opts)
                    .await?;
                migrator().run(&pool).await?;
                let mut listener = PgListener::connect_with(&pool).await?;
                listener.listen(CHANNEL).await?;
                Ok::<_, sqlx::Error>((pool, listener))
            };
            let (pool, listener) = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
                Ok(r) => r.map_err(|e| StorageError::Db(format!("PostgreSQL at {where_}: {e}")))?,
                Err(_) => {
                    return Err(StorageError::Db(format!(
                        "PostgreSQL at {where_}: no answer within {}s",
                        CONNECT_TIMEOUT.as_secs()
                    )))
                }
            };
            refresh_head(&pool, &sender).await?;
            let listening = tokio::spawn(listen(pool.clone(), listener, sender));
            Ok((pool, listening))
        })?;
        let (pool, listening) = match connected {
            Ok(p) => p,
            Err(e) => {
                rt.shutdown_background();
                return Err(e);
            }
        };
        Ok(PgMetaStore {
            pool,
            writer: Mutex::new(()),
            head,
            listening,
            rt: Some(rt),
        })
    }

    /// Runs `fut` on the store's runtime and waits for it.
    fn run<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static) -> StorageResult<T> {
        match &self.rt {
            Some(rt) => run_on(rt, fut),
            None => Err(StorageError::Db("PostgreSQL store is closed".into())),
        }
    }

    fn pool_all(&self, q: Query) -> StorageResult<Vec<PgRow>> {
        let pool = self.pool.clone();
        self.run(async move { q.build().fetch_all(&pool).await.map_err(db_err) })?
    }

    fn pool_one(&self, q: Query) -> StorageResult<Option<PgRow>> {
        let pool = self.pool.clone();
        self.run(async move { q.build().fetch_optional(&pool).await.map_err(db_err) })?
    }

    fn state(&self) -> StorageResult<PgRow> {
        self.pool_one(Query::new("SELECT * FROM state WHERE id = 1"))?
            .ok_or_else(|| StorageError::Corrupt("the state row is missing".into()))
    }
}

/// How long closing the store waits for its connections to be returned.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

impl Drop for PgMetaStore {
    fn drop(&mut self) {
        // The listener holds a connection until it stops; `close` waits for every connection.
        self.listening.abort();
        let pool = self.pool.clone();
        let _ = self.run(async move {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, pool.close()).await;
        });
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn run_on<T: Send + 'static>(
    rt: &tokio::runtime::Runtime,
    fut: impl Future<Output = T> + Send + 'static,
) -> StorageResult<T> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    rt.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv()
        .map_err(|_| StorageError::Db("PostgreSQL store stopped".into()))
}

/// Raises the watched head to the stored one.
async fn refresh_head(pool: &PgPool, head: &tokio::sync::watch::Sender<u64>) -> StorageResult<()> {
    let h: i64 = sqlx::query_scalar("SELECT head FROM state WHERE id = 1")
        .fetch_one(pool)
        .await
        .map_err(db_err)?;
    raise(head, u(h));
    Ok(())
}

fn raise(head: &tokio::sync::watch::Sender<u64>, to: u64) {
    head.send_if_modified(|h| {
        let newer = to > *h;
        if newer {
            *h = to;
        }
        newer
    });
}

/// Fans other replicas' commits out to this one's long-polls, for as long as the store lives.
async fn listen(pool: PgPool, mut listener: PgListener, head: tokio::sync::watch::Sender<u64>) {
    while !pool.is_closed() {
        match listener.try_recv().await {
            Ok(Some(n)) => match n.payload().parse::<u64>() {
                Ok(h) => raise(&head, h),
                Err(_) => tracing::warn!(payload = n.payload(), "unexpected notification"),
            },
            // The connection was lost and re-established: what was notified meanwhile is gone.
            Ok(None) => {
                if let Err(e) = refresh_head(&pool, &head).await {
                    tracing::warn!(error = %e, "reading the head after reconnecting");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "listening for other replicas' commits");
                // try_recv reconnects on the next call; do not spin while the database is down.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// A query with owned arguments, so it can move onto the store's runtime.
struct Query {
    sql: &'static str,
    args: Vec<Arg>,
}

/// A row limit as the `bigint` SQL wants (a `usize` beyond `i64::MAX` means "all").
fn limit_arg(limit: usize) -> Arg {
    Arg::I64(limit.min(i64::MAX as usize) as i64)
}

/// One page of a listing keyed by chunk id: `sql` takes the last id of the previous page as
/// `$1` (the empty key, before every id, for the first page) and the page size as `$2`.
fn chunk_page(sql: &'static str, after: Option<&ChunkId>, limit: usize) -> Query {
    Query::new(sql)
        .bind(Arg::Bytes(after.map(|a| a.0.to_vec()).unwrap_or_default()))
        .bind(limit_arg(limit))
}

enum Arg {
    Bytes(Vec<u8>),
    I64(i64),
    BytesArr(Vec<Vec<u8>>),
    I64Arr(Vec<i64>),
    OptI64Arr(Vec<Option<i64>>),
    I32Arr(Vec<i32>),
    BoolArr(Vec<bool>),
}

impl Query {
    fn new(sql: &'static str) -> Self {
        Query {
            sql,
            args: Vec::new(),
        }
    }

    fn bind(mut self, a: Arg) -> Self {
        self.args.push(a);
        self
    }

    fn build(&self) -> sqlx::query::Query<'_, Postgres, sqlx::postgres::PgArguments> {
        let mut q = sqlx::query(self.sql);
        for a in &self.args {
            q = match a {
                Arg::Bytes(v) => q.bind(v.as_slice()),
                Arg::I64(v) => q.bind(*v),
                Arg::BytesArr(v) => q.bind(v.as_slice()),
                Arg::I64Arr(v) => q.bind(v.as_slice()),
                Arg::OptI64Arr(v) => q.bind(v.as_slice()),
                Arg::I32Arr(v) => q.bind(v.as_slice()),
                Arg::BoolArr(v) => q.bind(v.as_slice()),
            };
        }
        q
    }
}

/// Reads shared by the store (through the pool) and a transaction (through its connection).
trait Reads {
    fn fetch_all(&self, q: Query) -> StorageResult<Vec<PgRow>>;
    fn fetch_optional(&self, q: Query) -> StorageResult<Option<PgRow>>;

    fn get(&self, path: &VPath) -> StorageResult<Option<Entry>> {
        if path.is_root() {
            return Ok(Some(Entry::Dir(DirRecord { mtime: 0, rev: 0 })));
        }
        let q = Query::new("SELECT key, is_dir, rec FROM entries WHERE key = $1")
            .bind(Arg::Bytes(path_key(path)));
        self.fetch_optional(q)?
            .map(|row| entry_of(&row).map(|(_, e)| e))
            .transpose()
    }

    fn descendants(&self, dir: &VPath) -> StorageResult<Vec<(VPath, Entry)>> {
        let q = match subtree_range(dir) {
            None => Query::new("SELECT key, is_dir, rec FROM entries ORDER BY key"),
            Some((lo, hi)) => {
                Query::new("SELECT key, is_dir, rec FROM entries WHERE key >= $1 AND key < $2 ORDER BY key")
                    .bind(Arg::Bytes(lo))
                    .bind(Arg::Bytes(hi))
            }
        };
        self.fetch_all(q)?.iter().map(entry_of).collect()
    }

    fn chunk(&self, id: &ChunkId) -> StorageResult<Option<ChunkInfo>> {
        let q = Query::new("SELECT refs, size FROM chunks WHERE id = $1").bind(Arg::Bytes(id.0.to_vec()));
        self.fetch_optional(q)?
            .map(|row| {
                Ok(ChunkInfo {
                    refs: u(row.try_get("refs").map_err(db_err)?),
                    size: row.try_get::<i32, _>("size").map_err(db_err)? as u32,
                })
            })
            .transpose()
    }

    fn versions(&self, path: &VPath) -> StorageResult<Vec<VersionRecord>> {
        let q = Query::new("SELECT rec FROM versions WHERE key = $1 ORDER BY rev")
            .bind(Arg::Bytes(path_key(path)));
        self.fetch_all(q)?.iter().map(|r| decode_col(r, "rec")).collect()
    }

    fn versions_archived_before(
        &self,
        before: i64,
        limit: usize,
    ) -> StorageResult<Vec<(VPath, VersionRecord)>> {
        let q = Query::new("SELECT key, rec FROM versions WHERE archived_at < $1 ORDER BY key, rev LIMIT $2")
            .bind(Arg::I64(before))
            .bind(limit_arg(limit));
        self.fetch_all(q)?
            .iter()
            .map(|row| {
                let key: Vec<u8> = row.try_get("key").map_err(db_err)?;
                Ok((key_path(&key)?, decode_col(row, "rec")?))
            })
            .collect()
    }

    fn files_with_hash(&self, xxh3: u64) -> StorageResult<Vec<VPath>> {
        let q = Query::new("SELECT key FROM entries WHERE NOT is_dir AND xxh3 = $1 ORDER BY key")
            .bind(Arg::I64(i(xxh3)));
        keys(self.fetch_all(q)?)
    }

    fn journal_floor(&self) -> StorageResult<u64> {
        let row = self
            .fetch_optional(Query::new("SELECT journal_floor FROM state WHERE id = 1"))?
            .ok_or_else(|| StorageError::Corrupt("the state row is missing".into()))?;
        Ok(u(row.try_get("journal_floor").map_err(db_err)?))
    }

    fn has_chunk_data(&self, id: &ChunkId) -> StorageResult<bool> {
        let q = Query::new("SELECT 1 AS one FROM chunk_data WHERE id = $1").bind(Arg::Bytes(id.0.to_vec()));
        Ok(self.fetch_optional(q)?.is_some())
    }
}

fn keys(rows: Vec<PgRow>) -> StorageResult<Vec<VPath>> {
    rows.iter()
        .map(|row| {
            let key: Vec<u8> = row.try_get("key").map_err(db_err)?;
            key_path(&key)
        })
        .collect()
}

impl Reads for PgMetaStore {
    fn fetch_all(&self, q: Query) -> StorageResult<Vec<PgRow>> {
        self.pool_all(q)
    }
    fn fetch_optional(&self, q: Query) -> StorageResult<Option<PgRow>> {
        self.pool_one(q)
    }
}

impl MetaStore for PgMetaStore {
    fn get(&self, path: &VPath) -> StorageResult<Option<Entry>> {
        Reads::get(self, path)
    }

    fn children(&self, dir: &VPath) -> StorageResult<Vec<(VPath, Entry)>> {
        let q = Query::new("SELECT key, is_dir, rec FROM entries WHERE parent = $1 ORDER BY key")
            .bind(Arg::Bytes(path_key(dir)));
        self.fetch_all(q)?.iter().map(entry_of).collect()
    }

    fn descendants(&self, dir: &VPath) -> StorageResult<Vec<(VPath, Entry)>> {
        Reads::descendants(self, dir)
    }

    fn chunk(&self, id: &ChunkId) -> StorageResult<Option<ChunkInfo>> {
        Reads::chunk(self, id)
    }

    fn versions(&self, path: &VPath) -> StorageResult<Vec<VersionRecord>> {
        Reads::versions(self, path)
    }

    fn versions_below(&self, dir: &VPath, direct_only: bool) -> StorageResult<Vec<(VPath, VersionRecord)>> {
        let lo = subtree_prefix(dir);
        let (_, hi) = subtree_range(dir).unwrap_or_else(|| (Vec::new(), Vec::new()));
        // An empty upper bound means "no upper bound" (the root's subtree is everything);
        // for `direct_only`, deeper paths (a 0 byte after the prefix) are left out here.
        let q = Query::new(
            "SELECT key, rec FROM versions WHERE key >= $1 AND (octet_length($2) = 0 OR key < $2) \
             ORDER BY key, rev",
        )
        .bind(Arg::Bytes(lo.clone()))
        .bind(Arg::Bytes(hi));
        let mut out = Vec::new();
        for row in self.fetch_all(q)? {
            let key: Vec<u8> = row.try_get("key").map_err(db_err)?;
            if key
                .get(lo.len()..)
                .is_none_or(|rest| direct_only && rest.contains(&0))
            {
                continue;
            }
            out.push((key_path(&key)?, decode_col(&row, "rec")?));
        }
        Ok(out)
    }

    fn head_rev(&self) -> StorageResult<u64> {
        Ok(u(self.state()?.try_get("head").map_err(db_err)?))
    }

    fn descendants_page(
        &self,
        dir: &VPath,
        after: Option<&VPath>,
        limit: usize,
    ) -> StorageResult<Vec<(VPath, Entry)>> {
        let (lo, hi) = subtree_range(dir).unwrap_or_else(|| (Vec::new(), Vec::new()));
        // An empty upper bound means "no upper bound" (the root's subtree is everything).
        let q = Query::new(
            "SELECT key, is_dir, rec FROM entries \
             WHERE key >= $1 AND (octet_length($2) = 0 OR key < $2) AND key > $3 \
             ORDER BY key LIMIT $4",
        )
        .bind(Arg::Bytes(lo))
        .bind(Arg::Bytes(hi))
        .bind(Arg::Bytes(after.map(path_key).unwrap_or_default()))
        .bind(limit_arg(limit));
        let rows = self.fetch_all(q)?;
        let mut out: Vec<(VPath, Entry)> = rows.iter().map(entry_of).collect::<StorageResult<_>>()?;
        // `key > ''` holds for every key but the root's, which is never stored.
        out.retain(|(p, _)| !p.is_root());
        Ok(out)
    }

    fn versions_archived_before(
        &self,
        before: i64,
        limit: usize,
    ) -> StorageResult<Vec<(VPath, VersionRecord)>> {
        Reads::versions_archived_before(self, before, limit)
    }

    fn journal_floor(&self) -> StorageResult<u64> {
        Reads::journal_floor(self)
    }

    fn changes_since(&self, since: u64, limit: usize) -> StorageResult<Vec<Change>> {
        let q = Query::new("SELECT rec FROM journal WHERE rev > $1 ORDER BY rev LIMIT $2")
            .bind(Arg::I64(i(since)))
            .bind(limit_arg(limit));
        self.fetch_all(q)?.iter().map(|r| decode_col(r, "rec")).collect()
    }

    fn files_with_hash(&self, xxh3: u64) -> StorageResult<Vec<VPath>> {
        Reads::files_with_hash(self, xxh3)
    }

    fn modified_since(&self, since: i64) -> StorageResult<Vec<VPath>> {
        let q = Query::new("SELECT key FROM entries WHERE NOT is_dir AND mtime >= $1 ORDER BY mtime, key")
            .bind(Arg::I64(since));
        keys(self.fetch_all(q)?)
    }

    fn stats(&self) -> StorageResult<StoreStats> {
        stats_of(&self.state()?)
    }

    fn chunk_data(&self, id: &ChunkId) -> StorageResult<Option<Bytes>> {
        let q = Query::new("SELECT data FROM chunk_data WHERE id = $1").bind(Arg::Bytes(id.0.to_vec()));
        self.fetch_optional(q)?
            .map(|row| row.try_get::<Vec<u8>, _>("data").map(Bytes::from).map_err(db_err))
            .transpose()
    }

    fn claims(&self, limit: usize) -> StorageResult<Vec<Claim>> {
        let q = Query::new("SELECT rec FROM claims ORDER BY key LIMIT $1").bind(limit_arg(limit));
        self.fetch_all(q)?.iter().map(|r| decode_col(r, "rec")).collect()
    }

    fn has_claim(&self, key: &[u8; 32]) -> StorageResult<bool> {
        let q = Query::new("SELECT 1 AS one FROM claims WHERE key = $1").bind(Arg::Bytes(key.to_vec()));
        Ok(self.fetch_optional(q)?.is_some())
    }

    fn dead_props(&self, path: &VPath) -> StorageResult<Option<DeadProps>> {
        let q = Query::new("SELECT rec FROM dead_props WHERE key = $1").bind(Arg::Bytes(path_key(path)));
        self.fetch_optional(q)?
            .map(|row| decode_col(&row, "rec"))
            .transpose()
    }

    fn dead_props_below(&self, dir: &VPath) -> StorageResult<Vec<(VPath, DeadProps)>> {
        let q = match subtree_range(dir) {
            None => Query::new("SELECT key, rec FROM dead_props ORDER BY key"),
            Some((lo, hi)) => {
                Query::new("SELECT key, rec FROM dead_props WHERE key >= $1 AND key < $2 ORDER BY key")
                    .bind(Arg::Bytes(lo))
                    .bind(Arg::Bytes(hi))
            }
        };
        self.fetch_all(q)?
            .iter()
            .map(|row| {
                let key: Vec<u8> = row.try_get("key").map_err(db_err)?;
                Ok((key_path(&key)?, decode_col(row, "rec")?))
            })
            .collect()
    }

    fn chunks_page(&self, after: Option<&ChunkId>, limit: usize) -> StorageResult<Vec<(ChunkId, ChunkInfo)>> {
        let q = chunk_page(
            "SELECT id, refs, size FROM chunks WHERE id > $1 ORDER BY id LIMIT $2",
            after,
            limit,
        );
        self.fetch_all(q)?
            .iter()
            .map(|row| {
                let refs: i64 = row.try_get("refs").map_err(db_err)?;
                let size: i32 = row.try_get("size").map_err(db_err)?;
                Ok((
                    chunk_id_col(row)?,
                    ChunkInfo {
                        refs: u(refs),
                        size: size as u32,
                    },
                ))
            })
            .collect()
    }

    fn chunk_data_page(&self, after: Option<&ChunkId>, limit: usize) -> StorageResult<Vec<(ChunkId, Bytes)>> {
        let q = chunk_page(
            "SELECT id, data FROM chunk_data WHERE id > $1 ORDER BY id LIMIT $2",
            after,
            limit,
        );
        self.fetch_all(q)?
            .iter()
            .map(|row| {
                let data: Vec<u8> = row.try_get("data").map_err(db_err)?;
                Ok((chunk_id_col(row)?, Bytes::from(data)))
            })
            .collect()
    }

    fn versions_page(
        &self,
        after: Option<&(VPath, u64)>,
        limit: usize,
    ) -> StorageResult<Vec<(VPath, u64, VersionRecord)>> {
        // Every stored key is non-empty, so `('', -1)` is before the first row.
        let (key, rev) = after.map_or((Vec::new(), -1), |(p, r)| (path_key(p), i(*r)));
        let q = Query::new(
            "SELECT key, rev, rec FROM versions WHERE (key, rev) > ($1, $2) ORDER BY key, rev LIMIT $3",
        )
        .bind(Arg::Bytes(key))
        .bind(Arg::I64(rev))
        .bind(limit_arg(limit));
        self.fetch_all(q)?
            .iter()
            .map(|row| {
                let key: Vec<u8> = row.try_get("key").map_err(db_err)?;
                let rev: i64 = row.try_get("rev").map_err(db_err)?;
                Ok((key_path(&key)?, u(rev), decode_col(row, "rec")?))
            })
            .collect()
    }

    fn begin(&self) -> StorageResult<Box<dyn MetaTxn + '_>> {
        let guard = self
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let pool = self.pool.clone();
        let (tx, head) = self.run(async move {
            let mut tx = pool.begin().await.map_err(db_err)?;
            let head: i64 = sqlx::query_scalar("SELECT head FROM state WHERE id = 1 FOR UPDATE")
                .fetch_one(&mut *tx)
                .await
                .map_err(db_err)?;
            Ok::<_, StorageError>((tx, u(head)))
        })??;
        Ok(Box::new(PgTxn {
            store: self,
            _writer: guard,
            tx: Arc::new(tokio::sync::Mutex::new(Some(tx))),
            head,
            next: head + 1,
        }))
    }

    fn watch_head(&self) -> tokio::sync::watch::Receiver<u64> {
        self.head.subscribe()
    }
}

fn stats_of(row: &PgRow) -> StorageResult<StoreStats> {
    let g = |c: &str| row.try_get::<i64, _>(c).map(u).map_err(db_err);
    Ok(StoreStats {
        files: g("files")?,
        file_bytes: g("file_bytes")?,
        chunks: g("chunks")?,
        chunk_bytes: g("chunk_bytes")?,
    })
}

type SharedTx = Arc<tokio::sync::Mutex<Option<Transaction<'static, Postgres>>>>;

/// An open write transaction: holds the state row's lock (and this replica's writer mutex)
/// until committed or dropped; a dropped one is rolled back.
struct PgTxn<'a> {
    store: &'a PgMetaStore,
    _writer: MutexGuard<'a, ()>,
    tx: SharedTx,
    head: u64,
    next: u64,
}

/// What [`PgTxn::on_tx`] fetched.
enum Fetched {
    All(Vec<PgRow>),
    One(Option<PgRow>),
}

impl PgTxn<'_> {
    /// Runs a read on the transaction's own connection (it holds the writer's lock, so the
    /// pool is not asked for a second connection).
    fn on_tx(&self, q: Query, all: bool) -> StorageResult<Fetched> {
        let tx = self.tx.clone();
        self.store.run(async move {
            let mut g = tx.lock().await;
            let t = g
                .as_mut()
                .ok_or_else(|| StorageError::Db("transaction already finished".into()))?;
            let fetched = if all {
                Fetched::All(q.build().fetch_all(&mut **t).await.map_err(db_err)?)
            } else {
                Fetched::One(q.build().fetch_optional(&mut **t).await.map_err(db_err)?)
            };
            Ok(fetched)
        })?
    }
}

impl Reads for PgTxn<'_> {
    fn fetch_all(&self, q: Query) -> StorageResult<Vec<PgRow>> {
        match self.on_tx(q, true)? {
            Fetched::All(rows) => Ok(rows),
            Fetched::One(row) => Ok(row.into_iter().collect()),
        }
    }
    fn fetch_optional(&self, q: Query) -> StorageResult<Option<PgRow>> {
        match self.on_tx(q, false)? {
            Fetched::One(row) => Ok(row),
            Fetched::All(rows) => Ok(rows.into_iter().next()),
        }
    }
}

impl Drop for PgTxn<'_> {
    fn drop(&mut self) {
        let tx = self.tx.clone();
        if let Some(rt) = &self.store.rt {
            // Rolled back on the store's runtime (sqlx returns connections there); the next
            // writer's `FOR UPDATE` waits for it, so nothing can slip in between.
            rt.spawn(async move {
                if let Some(t) = tx.lock().await.take() {
                    let _ = t.rollback().await;
                }
            });
        }
    }
}

impl MetaTxn for PgTxn<'_> {
    fn get(&self, path: &VPath) -> StorageResult<Option<Entry>> {
        Reads::get(self, path)
    }

    fn descendants(&self, dir: &VPath) -> StorageResult<Vec<(VPath, Entry)>> {
        Reads::descendants(self, dir)
    }

    fn versions(&self, path: &VPath) -> StorageResult<Vec<VersionRecord>> {
        Reads::versions(self, path)
    }

    fn versions_archived_before(
        &self,
        before: i64,
        limit: usize,
    ) -> StorageResult<Vec<(VPath, VersionRecord)>> {
        Reads::versions_archived_before(self, before, limit)
    }

    fn chunk(&self, id: &ChunkId) -> StorageResult<Option<ChunkInfo>> {
        Reads::chunk(self, id)
    }

    fn has_chunk_data(&self, id: &ChunkId) -> StorageResult<bool> {
        Reads::has_chunk_data(self, id)
    }

    fn files_with_hash(&self, xxh3: u64) -> StorageResult<Vec<VPath>> {
        Reads::files_with_hash(self, xxh3)
    }

    fn get_many(&self, paths: &[VPath]) -> StorageResult<Vec<Option<Entry>>> {
        let keys: Vec<Vec<u8>> = paths.iter().filter(|p| !p.is_root()).map(path_key).collect();
        let mut found: HashMap<VPath, Entry> = HashMap::new();
        if !keys.is_empty() {
            let q = Query::new("SELECT key, is_dir, rec FROM entries WHERE key = ANY($1)")
                .bind(Arg::BytesArr(keys));
            for row in Reads::fetch_all(self, q)? {
                let (p, e) = entry_of(&row)?;
                found.insert(p, e);
            }
        }
        paths
            .iter()
            .map(|p| {
                if p.is_root() {
                    Reads::get(self, p)
                } else {
                    Ok(found.get(p).cloned())
                }
            })
            .collect()
    }

    fn chunk_many(&self, ids: &[ChunkId]) -> StorageResult<Vec<Option<ChunkInfo>>> {
        let found = self.chunk_infos(ids)?;
        Ok(ids.iter().map(|id| found.get(id.0.as_slice()).copied()).collect())
    }

    fn has_chunk_data_many(&self, ids: &[ChunkId]) -> StorageResult<Vec<bool>> {
        let mut present = HashSet::new();
        if !ids.is_empty() {
            let q = Query::new("SELECT id FROM chunk_data WHERE id = ANY($1)")
                .bind(Arg::BytesArr(ids.iter().map(|id| id.0.to_vec()).collect()));
            for row in Reads::fetch_all(self, q)? {
                present.insert(row.try_get::<Vec<u8>, _>("id").map_err(db_err)?);
            }
        }
        Ok(ids.iter().map(|id| present.contains(id.0.as_slice())).collect())
    }

    fn journal_floor(&self) -> StorageResult<u64> {
        Reads::journal_floor(self)
    }

    fn next_rev(&mut self) -> u64 {
        let r = self.next;
        self.next += 1;
        r
    }

    fn commit(self: Box<Self>, batch: MetaBatch) -> StorageResult<CommitOutcome> {
        let head = self.next - 1;
        let advanced = head > self.head;
        let resolved = self.resolve(batch)?;
        let freed_chunks = resolved.freed();
        let statements = writes(&resolved, advanced.then_some(head));
        let tx = self.tx.clone();
        self.store.run(async move {
            let Some(mut t) = tx.lock().await.take() else {
                return Err(StorageError::Db("transaction already finished".into()));
            };
            for q in &statements {
                q.build().execute(&mut *t).await.map_err(db_err)?;
            }
            t.commit().await.map_err(db_err)
        })??;
        if advanced {
            raise(&self.store.head, head);
        }
        Ok(CommitOutcome { freed_chunks, head })
    }
}

impl PgTxn<'_> {
    /// Refcount records of `ids` that exist, by id bytes (one query).
    fn chunk_infos(&self, ids: &[ChunkId]) -> StorageResult<HashMap<Vec<u8>, ChunkInfo>> {
        let mut out = HashMap::new();
        if ids.is_empty() {
            return Ok(out);
        }
        let q = Query::new("SELECT id, refs, size FROM chunks WHERE id = ANY($1)")
            .bind(Arg::BytesArr(ids.iter().map(|id| id.0.to_vec()).collect()));
        for row in Reads::fetch_all(self, q)? {
            let id: Vec<u8> = row.try_get("id").map_err(db_err)?;
            let info = ChunkInfo {
                refs: u(row.try_get("refs").map_err(db_err)?),
                size: row.try_get::<i32, _>("size").map_err(db_err)? as u32,
            };
            out.insert(id, info);
        }
        Ok(out)
    }

    /// Folds the batch against committed state, reading every record it touches in two
    /// queries (not one per op).
    fn resolve(&self, batch: MetaBatch) -> StorageResult<Resolved> {
        use super::MetaOp;
        let mut paths = HashSet::new();
        let mut ids = HashSet::new();
        for op in &batch.ops {
            match op {
                MetaOp::PutFile(p, _) | MetaOp::DeleteFile(p) => {
                    paths.insert(path_key(p));
                }
                MetaOp::AdjustChunk { id, .. } => {
                    ids.insert(*id);
                }
                _ => {}
            }
        }
        let mut files: HashMap<Vec<u8>, FileRecord> = HashMap::new();
        if !paths.is_empty() {
            let q = Query::new("SELECT key, rec FROM entries WHERE NOT is_dir AND key = ANY($1)")
                .bind(Arg::BytesArr(paths.into_iter().collect()));
            for row in Reads::fetch_all(self, q)? {
                let key: Vec<u8> = row.try_get("key").map_err(db_err)?;
                files.insert(key, decode_col(&row, "rec")?);
            }
        }
        let ids: Vec<ChunkId> = ids.into_iter().collect();
        let chunks = self.chunk_infos(&ids)?;
        let state = Reads::fetch_optional(self, Query::new("SELECT * FROM state WHERE id = 1"))?
            .ok_or_else(|| StorageError::Corrupt("the state row is missing".into()))?;
        resolve(
            batch,
            |p| Ok(files.get(&path_key(p)).cloned()),
            |id| Ok(chunks.get(id.0.as_slice()).copied()),
            stats_of(&state)?,
        )
    }
}

/// The statements that write `r` (and the new head, if any), in an order where deletes of a
/// key come before its puts.
fn writes(r: &Resolved, head: Option<u64>) -> Vec<Query> {
    let mut out = Vec::new();
    // Files and directories share `entries`: deletes first, each only of its own kind.
    let gone_files: Vec<Vec<u8>> = r
        .files
        .iter()
        .filter(|(_, d)| d.new.is_none() && d.old.is_some())
        .map(|(p, _)| path_key(p))
        .collect();
    if !gone_files.is_empty() {
        out.push(
            Query::new("DELETE FROM entries WHERE NOT is_dir AND key = ANY($1)")
                .bind(Arg::BytesArr(gone_files)),
        );
    }
    let gone_dirs: Vec<Vec<u8>> = r
        .dirs
        .iter()
        .filter(|(_, d)| d.is_none())
        .map(|(p, _)| path_key(p))
        .collect();
    if !gone_dirs.is_empty() {
        out.push(
            Query::new("DELETE FROM entries WHERE is_dir AND key = ANY($1)").bind(Arg::BytesArr(gone_dirs)),
        );
    }
    let (mut k, mut par, mut dir, mut x, mut m, mut rec) = (vec![], vec![], vec![], vec![], vec![], vec![]);
    for (p, d) in &r.files {
        if let Some(f) = &d.new {
            let key = path_key(p);
            par.push(parent_key(&key));
            k.push(key);
            dir.push(false);
            x.push(Some(i(f.xxh3)));
            m.push(Some(f.mtime));
            rec.push(encode(f));
        }
    }
    for (p, d) in &r.dirs {
        if let Some(dr) = d {
            let key = path_key(p);
            par.push(parent_key(&key));
            k.push(key);
            dir.push(true);
            x.push(None);
            m.push(None);
            rec.push(encode(dr));
        }
    }
    if !k.is_empty() {
        out.push(
            Query::new(
                "INSERT INTO entries (key, parent, is_dir, xxh3, mtime, rec) \
                 SELECT * FROM UNNEST($1::bytea[], $2::bytea[], $3::bool[], $4::int8[], $5::int8[], $6::bytea[]) \
                 ON CONFLICT (key) DO UPDATE SET parent = EXCLUDED.parent, is_dir = EXCLUDED.is_dir, \
                 xxh3 = EXCLUDED.xxh3, mtime = EXCLUDED.mtime, rec = EXCLUDED.rec",
            )
            .bind(Arg::BytesArr(k))
            .bind(Arg::BytesArr(par))
            .bind(Arg::BoolArr(dir))
            .bind(Arg::OptI64Arr(x))
            .bind(Arg::OptI64Arr(m))
            .bind(Arg::BytesArr(rec)),
        );
    }
    // Chunks: a chunk left without references goes, with its inline bytes.
    let freed: Vec<Vec<u8>> = r
        .chunks
        .iter()
        .filter(|(_, d)| d.new.is_none())
        .map(|(id, _)| id.0.to_vec())
        .collect();
    if !freed.is_empty() {
        out.push(Query::new("DELETE FROM chunks WHERE id = ANY($1)").bind(Arg::BytesArr(freed.clone())));
        out.push(Query::new("DELETE FROM chunk_data WHERE id = ANY($1)").bind(Arg::BytesArr(freed)));
    }
    let (mut ids, mut refs, mut sizes) = (vec![], vec![], vec![]);
    for (id, d) in &r.chunks {
        if let Some(info) = d.new {
            ids.push(id.0.to_vec());
            refs.push(i(info.refs));
            sizes.push(info.size as i32);
        }
    }
    if !ids.is_empty() {
        out.push(
            Query::new(
                "INSERT INTO chunks (id, refs, size) SELECT * FROM UNNEST($1::bytea[], $2::int8[], $3::int4[]) \
                 ON CONFLICT (id) DO UPDATE SET refs = EXCLUDED.refs, size = EXCLUDED.size",
            )
            .bind(Arg::BytesArr(ids))
            .bind(Arg::I64Arr(refs))
            .bind(Arg::I32Arr(sizes)),
        );
    }
    if !r.chunk_data.is_empty() {
        let (ids, data): (Vec<Vec<u8>>, Vec<Vec<u8>>) = r
            .chunk_data
            .iter()
            .map(|(id, d)| (id.0.to_vec(), d.to_vec()))
            .unzip();
        out.push(
            Query::new(
                "INSERT INTO chunk_data (id, data) SELECT * FROM UNNEST($1::bytea[], $2::bytea[]) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(Arg::BytesArr(ids))
            .bind(Arg::BytesArr(data)),
        );
    }
    // Versions.
    let (mut dk, mut dr) = (vec![], vec![]);
    let (mut pk, mut pr, mut pa, mut prec) = (vec![], vec![], vec![], vec![]);
    for ((p, rev), v) in &r.versions {
        match v {
            None => {
                dk.push(path_key(p));
                dr.push(i(*rev));
            }
            Some(v) => {
                pk.push(path_key(p));
                pr.push(i(*rev));
                pa.push(v.archived_at);
                prec.push(encode(v));
            }
        }
    }
    if !dk.is_empty() {
        out.push(
            Query::new(
                "DELETE FROM versions WHERE (key, rev) IN (SELECT * FROM UNNEST($1::bytea[], $2::int8[]))",
            )
            .bind(Arg::BytesArr(dk))
            .bind(Arg::I64Arr(dr)),
        );
    }
    if !pk.is_empty() {
        out.push(
            Query::new(
                "INSERT INTO versions (key, rev, archived_at, rec) \
                 SELECT * FROM UNNEST($1::bytea[], $2::int8[], $3::int8[], $4::bytea[]) \
                 ON CONFLICT (key, rev) DO UPDATE SET archived_at = EXCLUDED.archived_at, rec = EXCLUDED.rec",
            )
            .bind(Arg::BytesArr(pk))
            .bind(Arg::I64Arr(pr))
            .bind(Arg::I64Arr(pa))
            .bind(Arg::BytesArr(prec)),
        );
    }
    // Claims and dead properties: records by key, put or deleted.
    keyed_records(
        &mut out,
        "DELETE FROM claims WHERE key = ANY($1)",
        "INSERT INTO claims (key, rec) SELECT * FROM UNNEST($1::bytea[], $2::bytea[]) \
         ON CONFLICT (key) DO UPDATE SET rec = EXCLUDED.rec",
        r.claims.iter().map(|(k, c)| (k.to_vec(), c.as_ref().map(encode))),
    );
    keyed_records(
        &mut out,
        "DELETE FROM dead_props WHERE key = ANY($1)",
        "INSERT INTO dead_props (key, rec) SELECT * FROM UNNEST($1::bytea[], $2::bytea[]) \
         ON CONFLICT (key) DO UPDATE SET rec = EXCLUDED.rec",
        r.dead_props
            .iter()
            .map(|(p, d)| (path_key(p), d.as_ref().map(encode))),
    );
    // Journal.
    if let Some(upto) = r.trim {
        out.push(Query::new("DELETE FROM journal WHERE rev <= $1").bind(Arg::I64(i(upto))));
        out.push(
            Query::new("UPDATE state SET journal_floor = GREATEST(journal_floor, $1) WHERE id = 1")
                .bind(Arg::I64(i(upto))),
        );
    }
    if !r.journal.is_empty() {
        let (revs, recs): (Vec<i64>, Vec<Vec<u8>>) = r.journal.iter().map(|c| (i(c.rev), encode(c))).unzip();
        out.push(
            Query::new(
                "INSERT INTO journal (rev, rec) SELECT * FROM UNNEST($1::int8[], $2::bytea[]) \
                 ON CONFLICT (rev) DO UPDATE SET rec = EXCLUDED.rec",
            )
            .bind(Arg::I64Arr(revs))
            .bind(Arg::BytesArr(recs)),
        );
    }
    let s = r.stats;
    out.push(
        Query::new(
            "UPDATE state SET files = $1, file_bytes = $2, chunks = $3, chunk_bytes = $4, \
             head = GREATEST(head, $5) WHERE id = 1",
        )
        .bind(Arg::I64(i(s.files)))
        .bind(Arg::I64(i(s.file_bytes)))
        .bind(Arg::I64(i(s.chunks)))
        .bind(Arg::I64(i(s.chunk_bytes)))
        .bind(Arg::I64(i(head.unwrap_or(0)))),
    );
    if let Some(h) = head {
        // Delivered to every listener when (and only if) the transaction commits.
        out.push(Query::new("SELECT pg_notify('volebarn_changes', $1::text)").bind(Arg::I64(i(h))));
    }
    out
}

/// Writes the rows of a `(key bytea, rec bytea)` table a batch leaves: `None` deleted with
/// `delete` (`key = ANY($1)`), `Some` upserted with `upsert` (`$1` keys, `$2` records).
fn keyed_records(
    out: &mut Vec<Query>,
    delete: &'static str,
    upsert: &'static str,
    rows: impl Iterator<Item = (Vec<u8>, Option<Vec<u8>>)>,
) {
    let mut gone = Vec::new();
    let (mut keys, mut recs) = (Vec::new(), Vec::new());
    for (key, rec) in rows {
        match rec {
            Some(rec) => {
                keys.push(key);
                recs.push(rec);
            }
            None => gone.push(key),
        }
    }
    if !gone.is_empty() {
        out.push(Query::new(delete).bind(Arg::BytesArr(gone)));
    }
    if !keys.is_empty() {
        out.push(
            Query::new(upsert)
                .bind(Arg::BytesArr(keys))
                .bind(Arg::BytesArr(recs)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_ranges() {
        let p = VPath::parse("a/b").expect("path");
        assert_eq!(parent_key(&path_key(&p)), b"a".to_vec());
        assert_eq!(parent_key(b"top"), Vec::<u8>::new());
        let (lo, hi) = subtree_range(&p).expect("not the root");
        assert_eq!(lo, b"a\0b\0".to_vec());
        assert_eq!(hi, b"a\0b\x01".to_vec());
        assert!(subtree_range(&VPath::root()).is_none());
    }
}
