//! `volebarn-sync`: the one folder-sync engine. It owns the local scan with the persisted
//! RocksDB index (`<folder>/.volebarn/index`), the ignore rules, the three-way plan
//! (docs/design.md §6) with rename and directory-move detection and the
//! safety rails — every decision of a pass in one [`Plan`] — executing the plan, and the folder's status and conflict state.
//!
//! It talks to the server only through `volebarn-client` and knows nothing of command lines,
//! configuration files, terminals or file watching: front ends (the `volebarn` console app,
//! the benchmarks) open an [`engine::Engine`] and run passes. The dependency goes one way:
//! this crate depends on the client, never the client on it.

mod apply;
pub mod engine;
mod error;
pub mod index;
pub mod plan;
pub mod rules;
pub mod scan;
pub mod state;

pub use apply::{ConflictCopy, SyncResult};
pub use engine::{Engine, EngineConfig, OpenFolder, PassOptions, PassReport, Scope};
pub use error::{Result, SyncError};
pub use plan::{Clash, Move, Plan};
pub use state::STATE_DIR;

use std::path::Path;
use volebarn_client::{Client, ConflictStrategy};

/// Deletions held back in one [`full_sync`] pass: more than this percentage of the synced files.
pub const DEFAULT_MAX_DELETE_PERCENT: u8 = 50;

/// Syncs the folder at `root` (which must exist) with the server in one call: one engine pass
/// with `strategy` and the default safety rails — scan against the folder's index, plan
/// three-way, apply, persist. Nothing is deleted on the server when the folder is emptied, or
/// when more than [`DEFAULT_MAX_DELETE_PERCENT`] of its synced files are gone (the report's
/// `held_deletions` says which and why). The report's `offline` is set when the server could
/// not be reached; per-path failures are in `result.errors`.
pub async fn full_sync(client: &Client, root: &Path, strategy: ConflictStrategy) -> Result<PassReport> {
    let mut engine = Engine::open(
        root,
        client.clone(),
        EngineConfig {
            strategy,
            max_delete_percent: DEFAULT_MAX_DELETE_PERCENT,
        },
    )?;
    engine.pass(PassOptions::default()).await
}
