//! `volebarn-sync`: the one folder-sync engine. It owns the local scan with the persisted
//! RocksDB index (`<folder>/.volebarn/index`), the ignore rules, the three-way plan
//! (docs/design.md §6) with rename and directory-move detection and the
//! safety rails, applying the plan, and the folder's status and conflict state.
//!
//! It talks to the server only through `volebarn-client` and knows nothing of command lines,
//! configuration files, terminals or file watching: front ends (the `volebarn` console app,
//! the benchmarks) open an [`engine::Engine`] and run passes. The dependency goes one way:
//! this crate depends on the client, never the client on it.

pub mod engine;
pub mod index;
pub mod rules;
pub mod scan;
pub mod state;
