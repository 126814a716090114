//! The PostgreSQL metadata store against a real throwaway cluster (see the test kit): the
//! conformance suite every `MetaStore` passes, and what a user of `--meta postgres://…`
//! sees when the database is not there.

use std::time::{Duration, Instant};
use volebarn_server::storage::meta::postgres::PgMetaStore;
use volebarn_server::storage::meta::MetaStore;
use volebarn_testkit::pg_cluster;

#[test]
fn meta_conformance_on_postgres() {
    let cluster = pg_cluster();
    volebarn_server::storage::meta::conformance::run_all(|| {
        let url = cluster.database();
        (PgMetaStore::connect(&url).expect("connect"), ())
    });
}

#[test]
fn a_second_store_on_the_same_database_sees_commits_and_wakes() {
    let url = pg_cluster().database();
    let a = PgMetaStore::connect(&url).expect("connect a");
    let b = PgMetaStore::connect(&url).expect("connect b");
    let mut watch = b.watch_head();
    let before = *watch.borrow_and_update();
    let mut tx = a.begin().expect("begin");
    let rev = tx.next_rev();
    tx.commit(Default::default()).expect("commit");
    assert_eq!(b.head_rev().expect("head"), rev);
    // The other store's long-polls learn of the commit through NOTIFY.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), watch.wait_for(|h| *h >= rev))
            .await
            .expect("woken within 5 s")
            .expect("watch open");
    });
    assert!(rev > before);
}

#[test]
fn an_unreachable_database_fails_fast_with_a_clear_error() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let started = Instant::now();
    let err = PgMetaStore::connect(&format!("postgres://postgres@127.0.0.1:{port}/x"))
        .err()
        .expect("no database there");
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "took {:?}",
        started.elapsed()
    );
    let msg = err.to_string();
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
    let missing = pg_cluster().url("no_such_database");
    let msg = PgMetaStore::connect(&missing)
        .err()
        .expect("no such database")
        .to_string();
    assert!(msg.contains("no_such_database"), "{msg}");
}
