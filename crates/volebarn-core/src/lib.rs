//! `volebarn-core`: what the server, the client and the console app must agree on.
//!
//! It owns the wire types (the seed's JSON schemas plus our additions), validated paths
//! ([`VPath`]), hash newtypes ([`Xxh3`], [`ChunkId`]), error codes ([`ErrorCode`],
//! [`OperationError`]), the content-defined chunking parameters ([`chunking`]) and the three-way
//! sync planner ([`sync`]).
//! It knows nothing of HTTP, disks or databases: every function here is pure.

pub mod chunking;
pub mod error;
pub mod hash;
pub mod path;
pub mod sorted;
pub mod sync;
pub mod timefmt;
pub mod types;

pub use error::{ErrorCode, OperationError};
pub use hash::{ChunkId, Xxh3};
pub use path::{PathError, VPath};
pub use types::{DirectoryListing, FileMetadata};
