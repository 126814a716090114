//! The offline queue against a real server: changes made while it is unreachable are kept
//! on disk (across a restart of the client) and replayed when it is back; a change made on
//! the server meanwhile surfaces as a 412 conflict, never as a silent overwrite.

use bytes::Bytes;
use volebarn_client::{Client, ErrorCode, OfflineQueue, PendingOperation, Queued, RetryConfig};
use volebarn_testkit::TestServer;

/// A client of `srv` without retries, at `url` (the server's own, or one nothing listens on).
fn client(srv: &TestServer, url: String) -> Client {
    srv.client_with(|cfg| {
        cfg.server_url = url;
        cfg.retry = RetryConfig::none();
    })
}

#[tokio::test]
async fn offline_changes_are_queued_persisted_and_replayed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = TestServer::start().await;
    let live = client(&srv, srv.url(""));
    let old = live
        .upload_file("old.txt", Bytes::from_static(b"old"))
        .await
        .expect("upload");
    let edit = live
        .upload_file("edit.txt", Bytes::from_static(b"v1"))
        .await
        .expect("upload");

    // A port nothing listens on: the server is unreachable.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let offline = client(&srv, format!("https://{closed}"));
    let qdir = dir.path().join("queue");
    {
        let q = OfflineQueue::open(&qdir).expect("queue");
        let r = offline
            .upload_or_queue(&q, "new.txt", Bytes::from_static(b"created offline"), None)
            .await
            .expect("queued");
        assert!(matches!(r, Queued::Queued));
        offline
            .upload_or_queue(&q, "edit.txt", Bytes::from_static(b"v2"), Some(edit.rev))
            .await
            .expect("queued");
        offline
            .upload_or_queue(&q, "edit.txt", Bytes::from_static(b"v3"), Some(edit.rev))
            .await
            .expect("queued");
        offline
            .delete_or_queue(&q, "old.txt", Some(old.rev))
            .await
            .expect("queued");
        offline
            .upload_or_queue(&q, "temp.txt", Bytes::from_static(b"scratch"), None)
            .await
            .expect("queued");
        offline
            .delete_or_queue(&q, "temp.txt", None)
            .await
            .expect("queued");
        assert_eq!(
            q.len(),
            3,
            "edits merged, create+delete cancelled: {:?}",
            q.operations()
        );
    }
    // The process restarts: the queue is read back from disk.
    let q = OfflineQueue::open(&qdir).expect("reopen");
    assert_eq!(q.len(), 3);
    let report = live.replay_queue(&q).await.expect("replay");
    assert_eq!(
        (report.applied.len(), report.conflicts.len(), report.remaining),
        (3, 0, 0)
    );
    assert!(q.is_empty());
    assert_eq!(
        live.download_file("new.txt").await.expect("new"),
        Bytes::from_static(b"created offline")
    );
    assert_eq!(
        live.download_file("edit.txt").await.expect("edit"),
        Bytes::from_static(b"v3")
    );
    assert_eq!(
        live.get_file_metadata("old.txt").await.unwrap_err().status(),
        Some(404)
    );
    assert_eq!(
        live.get_file_metadata("temp.txt").await.unwrap_err().status(),
        Some(404)
    );
    assert_eq!(
        live.versions("edit.txt").await.expect("versions").versions.len(),
        2,
        "v2 never travelled"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn replay_over_a_server_change_is_a_412_conflict() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = TestServer::start().await;
    let c = client(&srv, srv.url(""));
    let base = c
        .upload_file("doc.txt", Bytes::from_static(b"base"))
        .await
        .expect("upload");
    let q = OfflineQueue::open(dir.path().join("q")).expect("queue");
    q.push_upload("doc.txt", b"my offline edit", Some(base.rev))
        .expect("push");
    q.push_upload("other.txt", b"fine", None).expect("push");
    // Someone else edits the file on the server meanwhile.
    c.update_file("doc.txt", Bytes::from_static(b"their edit"))
        .await
        .expect("their edit");

    let report = c.replay_queue(&q).await.expect("replay");
    assert_eq!(report.conflicts.len(), 1);
    let conflict = &report.conflicts[0];
    assert!(matches!(&conflict.operation, PendingOperation::Upload { path, .. } if path == "doc.txt"));
    assert_eq!(
        (conflict.error.status(), conflict.error.error_code()),
        (Some(412), Some(ErrorCode::PreconditionFailed))
    );
    assert_eq!(
        conflict.content.as_deref(),
        Some(&b"my offline edit"[..]),
        "the caller gets the content back"
    );
    assert_eq!(
        c.download_file("doc.txt").await.expect("doc"),
        Bytes::from_static(b"their edit"),
        "not overwritten"
    );
    assert_eq!(report.applied.len(), 1, "the rest of the queue still applies");
    assert!(q.is_empty());
    srv.shutdown().await;
}
