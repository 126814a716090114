//! The conformance suite every [`ChunkStore`] implementation must pass. Public behind the
//! `conformance` feature, so a backend in another crate runs the very same checks:
//!
//! ```ignore
//! volebarn_server::storage::chunks::conformance::run_all(|| async { (MyStore::new().await, ()) }).await;
//! ```

use super::ChunkStore;
use crate::storage::StorageError;
use bytes::Bytes;
use std::future::Future;
use std::sync::Arc;
use volebarn_core::ChunkId;

fn chunk(data: &[u8]) -> (ChunkId, Bytes) {
    (ChunkId::of(data), Bytes::copy_from_slice(data))
}

/// Runs every check, each against a fresh store made by `make` (its second value keeps
/// whatever the store needs alive, such as a temp directory, until the check ends).
pub async fn run_all<S, G, F, Fut>(make: F)
where
    S: ChunkStore,
    F: Fn() -> Fut,
    Fut: Future<Output = (S, G)>,
{
    let (s, _g) = make().await;
    eprintln!("chunk conformance: put, get, contains, list, delete");
    round_trip(s).await;
    let (s, _g) = make().await;
    eprintln!("chunk conformance: put is idempotent");
    put_is_idempotent(s).await;
    let (s, _g) = make().await;
    eprintln!("chunk conformance: missing chunks");
    missing_chunk(s).await;
    let (s, _g) = make().await;
    eprintln!("chunk conformance: concurrent puts of one chunk");
    concurrent_puts(Arc::new(s)).await;
    let (s, _g) = make().await;
    eprintln!("chunk conformance: a batch of many chunks");
    many_chunks(s).await;
}

async fn round_trip<S: ChunkStore>(s: S) {
    let data = vec![7u8; 300_000];
    let (id, bytes) = chunk(&data);
    assert_eq!(s.contains_many(&[id]).await.expect("contains"), vec![None]);
    s.put_many(vec![(id, bytes)]).await.expect("put");
    assert_eq!(
        s.contains_many(&[id]).await.expect("contains"),
        vec![Some(300_000)]
    );
    assert_eq!(s.get(&id).await.expect("get"), data);
    let listed = s.list().await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].id, listed[0].len), (id, 300_000));
    assert!(listed[0].stored_at > 0, "a stored time is reported");
    s.delete(&id).await.expect("delete");
    assert_eq!(s.contains_many(&[id]).await.expect("contains"), vec![None]);
    s.delete(&id).await.expect("deleting an absent chunk is fine");
    assert!(s.list().await.expect("list").is_empty());
}

async fn put_is_idempotent<S: ChunkStore>(s: S) {
    let same = chunk(b"same");
    s.put_many(vec![same.clone()]).await.expect("put");
    s.put_many(vec![same.clone(), same.clone()])
        .await
        .expect("put again, twice in one batch");
    assert_eq!(s.get(&same.0).await.expect("get"), same.1);
    assert_eq!(s.list().await.expect("list").len(), 1);
}

async fn missing_chunk<S: ChunkStore>(s: S) {
    let (id, _) = chunk(b"never stored");
    let (present, bytes) = chunk(b"stored");
    s.put_many(vec![(present, bytes)]).await.expect("put");
    assert!(matches!(s.get(&id).await, Err(StorageError::MissingChunk(x)) if x == id));
    assert_eq!(
        s.contains_many(&[id, present, id]).await.expect("contains"),
        vec![None, Some(6), None],
        "answers come in the order asked"
    );
    s.put_many(Vec::new()).await.expect("an empty batch is fine");
}

async fn concurrent_puts<S: ChunkStore>(s: Arc<S>) {
    let data = Bytes::from(vec![3u8; 100_000]);
    let id = ChunkId::of(&data);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (s, data) = (s.clone(), data.clone());
            tokio::spawn(async move { s.put_many(vec![(id, data)]).await })
        })
        .collect();
    for t in tasks {
        t.await.expect("task").expect("put");
    }
    assert_eq!(s.get(&id).await.expect("get"), data);
    assert_eq!(s.list().await.expect("list").len(), 1);
}

async fn many_chunks<S: ChunkStore>(s: S) {
    let batch: Vec<(ChunkId, Bytes)> = (0..200u32)
        .map(|i| chunk(format!("small chunk number {i}").as_bytes()))
        .collect();
    s.put_many(batch.clone()).await.expect("put");
    let ids: Vec<ChunkId> = batch.iter().map(|(id, _)| *id).collect();
    let present = s.contains_many(&ids).await.expect("contains");
    assert!(present.iter().all(Option::is_some));
    for (id, data) in batch.iter().step_by(37) {
        assert_eq!(&s.get(id).await.expect("get"), data);
    }
    let mut listed: Vec<ChunkId> = s.list().await.expect("list").into_iter().map(|c| c.id).collect();
    let mut expected = ids;
    expected.sort();
    listed.sort();
    assert_eq!(listed, expected);
}
