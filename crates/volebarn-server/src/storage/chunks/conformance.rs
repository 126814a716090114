//! The conformance suite every [`ChunkStore`] implementation must pass.

use super::ChunkStore;
use crate::storage::StorageError;
use volebarn_core::ChunkId;

/// A named check of the suite.
type Check<S> = (&'static str, fn(&S));

pub fn run_all<S: ChunkStore, G>(make: impl Fn() -> (S, G)) {
    let checks: [Check<S>; 4] = [
        ("stage, publish, read, delete", round_trip),
        (
            "dropping a staged chunk leaves nothing",
            dropped_stage_leaves_nothing,
        ),
        ("publishing a present chunk keeps it", publish_is_idempotent),
        ("missing chunk", missing_chunk),
    ];
    for (name, check) in checks {
        let (store, _guard) = make();
        eprintln!("chunk conformance: {name}");
        check(&store);
    }
}

fn round_trip<S: ChunkStore>(s: &S) {
    let data = vec![7u8; 300_000];
    let id = ChunkId::of(&data);
    let staged = s.stage(id, &data, true).expect("stage");
    assert!(!s.contains(&id).expect("contains"), "staged is not visible yet");
    s.publish(vec![staged]).expect("publish");
    assert!(s.contains(&id).expect("contains"));
    assert_eq!(s.read(&id).expect("read"), data);
    assert_eq!(s.list().expect("list"), vec![id]);
    s.delete(&id).expect("delete");
    assert!(!s.contains(&id).expect("contains"));
    s.delete(&id).expect("deleting an absent chunk is fine");
    assert!(s.list().expect("list").is_empty());
}

fn dropped_stage_leaves_nothing<S: ChunkStore>(s: &S) {
    let id = ChunkId::of(b"abandoned");
    drop(s.stage(id, b"abandoned", false).expect("stage"));
    assert_eq!(s.clean_temp().expect("clean"), 0, "no temp file left");
    assert!(s.list().expect("list").is_empty());
}

fn publish_is_idempotent<S: ChunkStore>(s: &S) {
    let id = ChunkId::of(b"same");
    s.publish(vec![s.stage(id, b"same", true).expect("stage")])
        .expect("publish");
    s.publish(vec![s.stage(id, b"same", true).expect("stage")])
        .expect("publish again");
    assert_eq!(s.read(&id).expect("read"), b"same");
    assert_eq!(s.list().expect("list").len(), 1);
    assert_eq!(s.clean_temp().expect("clean"), 0);
}

fn missing_chunk<S: ChunkStore>(s: &S) {
    let id = ChunkId::of(b"never stored");
    assert!(matches!(s.read(&id), Err(StorageError::MissingChunk(x)) if x == id));
}
