//! `volebarn-client`: the one library every program uses to talk to a Volebarn server.
//!
//! Every download is verified against the server's `X-File-Hash` (xxh3); every error keeps
//! the server's `error_code`. Files on disk are streamed both ways ([`Client::upload_path`],
//! [`Client::download_to`]) so no call needs a whole large file in memory.

mod api;
mod bulk;
mod client;
pub mod durable;
mod error;
mod large;
pub mod metrics;
mod namespace;
mod progress;
pub mod queue;
pub mod resilience;

pub use bulk::{
    bulk_batches, BulkBatches, BulkDownload, ConditionalUpload, FileDownload, FileUpload, LocalUpload,
    UploadCondition,
};
pub use client::{hash_file, Client, ClientConfig, HealthMonitor};
pub use error::{ClientError, Result};
pub use large::LargeFileConfig;
pub use metrics::TransferMetrics;
pub use progress::TransferObserver;
pub use queue::{OfflineQueue, PendingOperation, Queued, ReplayReport};
pub use resilience::{BreakerConfig, BreakerState, RetryConfig, ServerHealth};
pub use volebarn_core::sync::{ConflictStrategy, SyncPlan};
pub use volebarn_core::types::{
    BulkDeleteResponse, BulkUploadResponse, ChangeEntry, ChangeKind, ChangesResponse, ChunkedCommit,
    ClientEntry, ClientManifest, FileManifest, SyncRequest, VersionInfo, VersionList,
};
pub use volebarn_core::{DirectoryListing, ErrorCode, FileMetadata, OperationError, VPath, Xxh3};
