//! WebDAV and the sync engine see one store: a file written over WebDAV reaches a synced
//! folder on the next pass, and a file the engine synced reads back over WebDAV with the same
//! bytes, hash and entity tag as over the REST API.

use volebarn_client::ConflictStrategy;
use volebarn_sync::PassOptions;
use volebarn_testkit::{age, write, TestServer};

#[tokio::test(flavor = "multi_thread")]
async fn webdav_writes_reach_the_folder_and_synced_files_read_the_same_over_webdav() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = TestServer::start().await;
    let raw = srv.raw();
    let a = dir.path().join("A");
    let synced = volebarn_testkit::pseudo_random(200 * 1024, 11);
    write(&a, "from-sync.bin", &synced);
    age(&a);
    let mut engine = srv.engine(&a, ConflictStrategy::PreferNewer);
    let first = engine.pass(PassOptions::default()).await.expect("first pass");
    assert_eq!(
        volebarn_testkit::names(&first.result.uploaded),
        ["from-sync.bin"],
        "{first:?}"
    );

    let dav = raw
        .get(srv.url("/dav/from-sync.bin"))
        .basic_auth("anyone", Some(srv.token()))
        .send()
        .await
        .expect("dav get");
    assert_eq!(dav.status(), 200);
    let rest = raw
        .get(srv.url("/files/from-sync.bin"))
        .bearer_auth(srv.token())
        .send()
        .await
        .expect("rest get");
    assert_eq!(rest.status(), 200);
    for header in ["etag", "x-file-hash"] {
        assert_eq!(
            dav.headers().get(header),
            rest.headers().get(header),
            "{header} differs between WebDAV and REST"
        );
        assert!(dav.headers().get(header).is_some(), "no {header} over WebDAV");
    }
    assert_eq!(dav.bytes().await.expect("dav bytes").as_ref(), synced.as_slice());

    let put = raw
        .put(srv.url("/dav/from-dav.txt"))
        .basic_auth("anyone", Some(srv.token()))
        .body("written with a WebDAV client")
        .send()
        .await
        .expect("dav put");
    assert!(put.status().is_success(), "PUT answered {}", put.status());
    let second = engine.pass(PassOptions::default()).await.expect("second pass");
    assert_eq!(
        volebarn_testkit::names(&second.result.downloaded),
        ["from-dav.txt"],
        "{second:?}"
    );
    assert_eq!(
        std::fs::read(a.join("from-dav.txt")).expect("synced file"),
        b"written with a WebDAV client"
    );
    let third = engine.pass(PassOptions::DRY_RUN).await.expect("dry run");
    assert_eq!(third.pending.total(), 0, "converged: {third:?}");
}
