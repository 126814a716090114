//! The change feed, versions and restore, garbage collection, and chunked uploads.

use bytes::Bytes;
use std::time::{Duration, Instant};
use volebarn_client::{ChangeKind, ChunkedCommit, ErrorCode, Xxh3};
use volebarn_core::chunking::chunk_boundaries;
use volebarn_core::types::ChunkSpec;
use volebarn_core::ChunkId;
use volebarn_testkit::{pseudo_random, TestServer};

#[tokio::test]
async fn long_poll_wakes_within_100ms_of_a_write() {
    let t = TestServer::start().await;
    let head = t
        .client
        .upload_file("first", Bytes::from_static(b"1"))
        .await
        .expect("upload")
        .rev;
    let all = t.client.changes(0, 0).await.expect("changes");
    assert_eq!(all.changes.len(), 1);
    assert_eq!((all.changes[0].kind, all.next), (ChangeKind::Put, head));

    let poller = t.client.clone();
    let poll = tokio::spawn(async move {
        let resp = poller.changes(head, 30).await.expect("long poll");
        (resp, Instant::now())
    });
    // A second, independent connection writes.
    let writer = t.client();
    let m = writer
        .upload_file("second", Bytes::from_static(b"2"))
        .await
        .expect("write");
    let written = Instant::now();
    let (resp, returned) = poll.await.expect("poll task");
    let latency = returned.saturating_duration_since(written);
    eprintln!("long-poll latency after the write was acknowledged: {latency:?}");
    assert!(latency < Duration::from_millis(100), "long poll took {latency:?}");
    assert_eq!(resp.changes.len(), 1);
    assert_eq!(resp.changes[0].path, "second");
    assert_eq!(
        resp.changes[0].metadata.as_ref().map(|m| m.xxhash3),
        Some(m.xxhash3)
    );
    assert_eq!(resp.next, m.rev);

    // No change: the wait ends empty at the deadline with `next` unchanged.
    let idle = t.client.changes(m.rev, 1).await.expect("idle poll");
    assert!(idle.changes.is_empty());
    assert_eq!(idle.next, m.rev);
}

#[tokio::test]
async fn change_feed_kinds_and_410_after_trimming() {
    let t = TestServer::start_with(|c| c.retention.journal_keep = 10).await;
    let c = &t.client;
    c.create_directory("d").await.expect("mkdir");
    c.upload_file("d/f", Bytes::from_static(b"f")).await.expect("put");
    c.move_file("d/f", "d/g").await.expect("move");
    c.delete_file("d/g").await.expect("delete");
    c.delete_directory("d").await.expect("rmdir");
    let kinds: Vec<(ChangeKind, String, Option<String>)> = c
        .changes(0, 0)
        .await
        .expect("changes")
        .changes
        .into_iter()
        .map(|e| (e.kind, e.path, e.to_path))
        .collect();
    assert_eq!(
        kinds,
        [
            (ChangeKind::Mkdir, "d".into(), None),
            (ChangeKind::Put, "d/f".into(), None),
            (ChangeKind::Move, "d/f".into(), Some("d/g".into())),
            (ChangeKind::Delete, "d/g".into(), None),
            (ChangeKind::Rmdir, "d".into(), None),
        ]
    );
    let mut last = 0;
    for i in 0..30 {
        last = c
            .upload_file(&format!("n{i}"), Bytes::from_static(b"x"))
            .await
            .expect("upload")
            .rev;
    }
    let err = c.changes(0, 0).await.unwrap_err();
    assert_eq!(
        (err.status(), err.error_code()),
        (Some(410), Some(ErrorCode::Gone))
    );
    let recent = c.changes(last - 5, 0).await.expect("recent changes are kept");
    assert_eq!(recent.changes.len(), 5);
    let err = c.changes(last + 100, 0).await.unwrap_err();
    assert_eq!(
        err.error_code(),
        Some(ErrorCode::Gone),
        "a revision from another history"
    );
}

#[tokio::test]
async fn restore_overwritten_and_deleted_files() {
    let t = TestServer::start().await;
    let c = &t.client;
    let v1 = c
        .upload_file("doc.txt", Bytes::from_static(b"version one"))
        .await
        .expect("v1");
    let v2 = c
        .update_file("doc.txt", Bytes::from_static(b"version two"))
        .await
        .expect("v2");
    let list = c.versions("doc.txt").await.expect("versions");
    let revs: Vec<(u64, bool)> = list.versions.iter().map(|v| (v.rev, v.current)).collect();
    assert_eq!(revs, [(v2.rev, true), (v1.rev, false)]);
    assert_eq!(list.versions[1].xxhash3, Xxh3::of(b"version one"));

    let restored = c.restore_version("doc.txt", v1.rev).await.expect("restore");
    assert!(restored.rev > v2.rev, "a restore is a new revision");
    assert_eq!(
        c.download_file("doc.txt").await.expect("dl"),
        Bytes::from_static(b"version one")
    );
    assert_eq!(
        c.versions("doc.txt").await.expect("versions").versions.len(),
        3,
        "v2 became a version too"
    );

    c.delete_file("doc.txt").await.expect("delete");
    let list = c.versions("doc.txt").await.expect("versions of a deleted file");
    assert!(!list.versions.iter().any(|v| v.current));
    assert!(
        list.versions[0].deleted,
        "the newest version is marked as deleted"
    );
    c.restore_version("doc.txt", v2.rev).await.expect("undelete");
    assert_eq!(
        c.download_file("doc.txt").await.expect("dl"),
        Bytes::from_static(b"version two")
    );

    let err = c.restore_version("doc.txt", 9999).await.unwrap_err();
    assert_eq!(err.status(), Some(404));
    assert_eq!(c.versions("never").await.unwrap_err().status(), Some(404));
}

/// The chunks of `data` stored as chunk files (small ones live inline in the metadata).
fn ids_of(data: &[u8]) -> Vec<ChunkId> {
    let mut v: Vec<ChunkId> = chunk_boundaries(data)
        .iter()
        .filter(|(_, l)| *l > volebarn_server::storage::INLINE_MAX as usize)
        .map(|(o, l)| ChunkId::of(&data[*o..o + l]))
        .collect();
    v.sort();
    v.dedup();
    v
}

#[tokio::test]
async fn gc_drops_expired_versions_but_never_shared_chunks() {
    let t = TestServer::start_with(|c| c.retention.versions_max_age = Duration::from_secs(3600)).await;
    let c = &t.client;
    let shared = pseudo_random(2 * 1024 * 1024, 1);
    let unique = pseudo_random(2 * 1024 * 1024, 2);
    c.upload_file("a", Bytes::from(unique.clone()))
        .await
        .expect("a v1");
    c.update_file("a", Bytes::from(shared.clone()))
        .await
        .expect("a v2 (shared content)");
    c.upload_file("b", Bytes::from(shared.clone()))
        .await
        .expect("b shares a's content");
    c.upload_file("old", Bytes::from(shared.clone()))
        .await
        .expect("old");
    c.delete_file("old")
        .await
        .expect("old deleted: a version that shares chunks");

    let now = volebarn_core::timefmt::now_nanos();
    let report = t.server().service.gc(now).await.expect("gc now");
    assert_eq!(report.versions_dropped, 0, "nothing is old enough yet");
    let later = now + 2 * 3600 * 1_000_000_000;
    let report = t.server().service.gc(later).await.expect("gc later");
    assert_eq!(report.versions_dropped, 2, "a's v1 and old's last version");
    // Freed chunk files go once the orphan grace period (24 h) has passed too.
    let day_later = now + 25 * 3600 * 1_000_000_000;
    t.server().service.gc(day_later).await.expect("gc a day later");
    let mut on_disk: Vec<ChunkId> = t
        .chunk_files()
        .iter()
        .filter_map(|p| p.file_name()?.to_str()?.parse().ok())
        .collect();
    on_disk.sort();
    assert_eq!(
        on_disk,
        ids_of(&shared),
        "unique old chunks freed, shared ones kept"
    );
    assert_eq!(
        c.download_file("a").await.expect("a"),
        Bytes::from(shared.clone())
    );
    assert_eq!(c.download_file("b").await.expect("b"), Bytes::from(shared));
    assert_eq!(c.versions("a").await.expect("versions").versions.len(), 1);
}

#[tokio::test]
async fn chunked_upload_commit_and_missing_chunks() {
    let t = TestServer::start().await;
    let c = &t.client;
    let data = pseudo_random(9 * 1024 * 1024, 3);
    let pieces: Vec<(ChunkId, Bytes)> = chunk_boundaries(&data)
        .iter()
        .map(|(o, l)| {
            (
                ChunkId::of(&data[*o..o + l]),
                Bytes::copy_from_slice(&data[*o..o + l]),
            )
        })
        .collect();
    let commit = ChunkedCommit {
        size: data.len() as u64,
        xxhash3: Some(Xxh3::of(&data)),
        chunks: pieces
            .iter()
            .map(|(id, b)| ChunkSpec {
                id: *id,
                len: b.len() as u32,
            })
            .collect(),
    };
    let ids: Vec<ChunkId> = pieces.iter().map(|p| p.0).collect();
    assert_eq!(c.missing_chunks(&ids).await.expect("missing"), ids);

    // Upload all but the last chunk, then try to commit: 400 missing_chunks, nothing stored.
    for (id, bytes) in &pieces[..pieces.len() - 1] {
        c.put_chunk(*id, bytes.clone()).await.expect("put chunk");
        c.put_chunk(*id, bytes.clone()).await.expect("idempotent");
    }
    let last = pieces.last().expect("chunks").0;
    assert_eq!(c.missing_chunks(&ids).await.expect("missing"), vec![last]);
    let err = c.commit_chunks("big.bin", &commit, false).await.unwrap_err();
    assert_eq!(
        (err.status(), err.error_code()),
        (Some(400), Some(ErrorCode::MissingChunks))
    );
    assert!(err.to_string().contains(&last.to_hex()), "{err}");
    assert_eq!(
        c.get_file_metadata("big.bin").await.unwrap_err().status(),
        Some(404)
    );

    // A chunk whose bytes do not hash to its id is refused.
    let err = c
        .put_chunk(last, Bytes::from_static(b"not it"))
        .await
        .unwrap_err();
    assert_eq!(err.error_code(), Some(ErrorCode::HashMismatch));

    c.put_chunk(last, pieces.last().expect("chunks").1.clone())
        .await
        .expect("last chunk");
    // A length that is not the stored chunk's, or lengths that do not add up to the size:
    // refused, nothing recorded.
    let mut bad_len = commit.clone();
    bad_len.chunks[0].len += 1;
    bad_len.size += 1;
    let mut bad_size = commit.clone();
    bad_size.size += 1;
    for bad in [bad_len, bad_size] {
        let err = c.commit_chunks("big.bin", &bad, false).await.unwrap_err();
        assert_eq!(
            (err.status(), err.error_code()),
            (Some(400), Some(ErrorCode::BadRequest)),
            "{err}"
        );
    }
    assert_eq!(
        c.get_file_metadata("big.bin").await.unwrap_err().status(),
        Some(404)
    );
    // The whole-file hash is the client's claim, checked by the server before the file is
    // served: a wrong one is corrected (a new revision), never served.
    let mut wrong = commit.clone();
    wrong.xxhash3 = Some(Xxh3(1));
    let claimed = c
        .commit_chunks("wrong.bin", &wrong, false)
        .await
        .expect("recorded as a claim");
    let head = c.get_file_metadata("wrong.bin").await.expect("head");
    assert_eq!(head.xxhash3, Xxh3::of(&data), "the served hash is the real one");
    assert!(head.rev > claimed.rev, "the correction is a new revision");
    assert_eq!(
        c.download_file("wrong.bin").await.expect("download"),
        Bytes::from(data.clone())
    );
    let meta = c.commit_chunks("big.bin", &commit, false).await.expect("commit");
    assert_eq!((meta.size, meta.xxhash3), (data.len() as u64, Xxh3::of(&data)));
    assert_eq!(
        c.download_file("big.bin").await.expect("download"),
        Bytes::from(data)
    );
}

#[tokio::test]
async fn orphan_chunks_are_collected_after_the_grace_period() {
    let t = TestServer::start().await;
    let data = Bytes::from(pseudo_random(300_000, 4));
    let id = ChunkId::of(&data);
    t.client.put_chunk(id, data).await.expect("put chunk");
    let now = volebarn_core::timefmt::now_nanos();
    assert_eq!(
        t.server().service.gc(now).await.expect("gc").orphans_deleted,
        0,
        "within grace"
    );
    assert_eq!(t.chunk_files().len(), 1);
    let day_later = now + 25 * 3600 * 1_000_000_000;
    assert_eq!(
        t.server()
            .service
            .gc(day_later)
            .await
            .expect("gc")
            .orphans_deleted,
        1
    );
    assert!(t.chunk_files().is_empty());
    assert!(matches!(
        t.client.missing_chunks(&[id]).await.as_deref(),
        Ok([x]) if *x == id
    ));
}
