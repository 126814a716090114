//! `GET /openapi.json`: the API description, generated with utoipa from the wire types in
//! `volebarn-core`. Each `#[utoipa::path]` below documents one route of [`super::router`];
//! a test checks that the router's route table and this document list the same routes.
#![allow(dead_code)] // the functions exist only to carry their `#[utoipa::path]` attributes

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use volebarn_core::sync::{ConflictKind, ConflictResolution, ConflictStrategy, SyncConflict, SyncPlan};
use volebarn_core::types::*;
use volebarn_core::{DirectoryListing, ErrorCode, FileMetadata, OperationError};

#[derive(OpenApi)]
#[openapi(
    info(title = "Volebarn File Sync API", version = "1.0.0", description = "Self-hosted file sync: durable storage, three-way sync, change feed. Every route but /health, /auth/login and /auth/logout needs `Authorization: Bearer <token>` (or the web UI's session cookie from /auth/login); every error body is an OperationError."),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    paths(
        health, metrics, openapi_json, login, logout,
        upload_file, update_file, download_file, head_file, delete_file,
        list_root, create_directory, list_directory, delete_directory,
        bulk_upload, bulk_download, bulk_delete, bulk_manifest, bulk_sync,
        move_path, copy_path, search, changes, versions, restore_version, trash_root, trash,
        missing_chunks, put_chunk,
    ),
    components(schemas(
        FileMetadata, DirectoryListing, OperationError, ErrorCode, HealthStatus, VersionInfo, VersionList,
        ChunkSpec, ChunkedCommit, ChunkIds, MissingChunks, MoveRequest, RestoreRequest, PathList,
        BulkUploadResponse, BulkDeleteResponse, ChangeKind, ChangeEntry, ChangesResponse, FileManifest,
        ClientEntry, ClientManifest, SyncRequest, SyncPlan, SyncConflict, ConflictStrategy,
        ConflictResolution, ConflictKind, TrashEntry, TrashList, super::session::LoginRequest,
    ))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
        // The answers routes share, added here so no route forgets one (README, "Error codes"):
        // what every route but /health can answer before its handler runs (a missing or wrong
        // token, the per-address limits), a server failure, a path that is not one, a body
        // that cannot be read, and a full disk on every write.
        for (path, item) in openapi.paths.paths.iter_mut() {
            if path == "/health" {
                continue;
            }
            let operations = [
                ("get", &mut item.get),
                ("put", &mut item.put),
                ("post", &mut item.post),
                ("delete", &mut item.delete),
                ("head", &mut item.head),
                ("patch", &mut item.patch),
                ("options", &mut item.options),
                ("trace", &mut item.trace),
            ];
            for (method, op) in operations {
                let Some(op) = op else { continue };
                let head = method == "head";
                let named_path = op.parameters.iter().flatten().any(|p| p.name == "path");
                let has_body = op.request_body.is_some();
                let writes = method != "get" && method != "head";
                let mut add = |status: &str, description: &str, retry: bool| {
                    op.responses
                        .responses
                        .entry(status.into())
                        .or_insert_with(|| error_response(description, retry, head).into());
                };
                // Signing out needs no credential.
                if path != "/auth/logout" {
                    add("401", "Missing or wrong bearer token (`unauthorized`)", false);
                }
                if writes && path != "/auth/login" {
                    add(
                        "403",
                        "`permission_denied`: authenticated by the session cookie without `X-Volebarn-UI: 1` or this server's `Origin`",
                        false,
                    );
                }
                add(
                    "429",
                    "Too many requests, or too many failed authentications, from this address (`rate_limited`)",
                    true,
                );
                add(
                    "500",
                    "The server failed (`server_error`); details are in its log",
                    false,
                );
                match (named_path, has_body) {
                    (true, true) => add(
                        "400",
                        "`invalid_path`: not a valid path; `bad_request`: a body or header that cannot be read",
                        false,
                    ),
                    (true, false) => add("400", "`invalid_path`: not a valid path", false),
                    (false, true) => add("400", "`bad_request`: a body that cannot be read", false),
                    (false, false) => {}
                }
                if has_body {
                    add(
                        "413",
                        "`payload_too_large`: over --max-file-size, or the request over --max-request-size",
                        false,
                    );
                }
                let reads_only = ["/chunks/missing", "/bulk/download", "/bulk/sync", "/auth/login"];
                if writes && !reads_only.contains(&path.as_str()) {
                    add("507", "`insufficient_storage`: the server's disk is full", false);
                }
            }
        }
    }
}

/// A response whose body is an `OperationError` (with `Retry-After` when `retry`; without
/// a body for `HEAD`).
fn error_response(description: &str, retry: bool, head: bool) -> utoipa::openapi::Response {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let mut b = ResponseBuilder::new().description(description);
    if !head {
        b = b.content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("OperationError")))
                .build(),
        );
    }
    if retry {
        b = b.header(
            "Retry-After",
            utoipa::openapi::HeaderBuilder::new()
                .schema(utoipa::openapi::ObjectBuilder::new().schema_type(utoipa::openapi::Type::Integer))
                .description(Some("Seconds to wait before trying again"))
                .build(),
        );
    }
    b.build()
}

pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[utoipa::path(get, path = "/health", security(()), responses((status = 200, body = HealthStatus)))]
fn health() {}

#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus/OpenMetrics text", content_type = "application/openmetrics-text")))]
fn metrics() {}

#[utoipa::path(get, path = "/openapi.json", responses((status = 200, description = "This document")))]
fn openapi_json() {}

#[utoipa::path(post, path = "/files/{path}",
    params(("path" = String, Path, description = "File path, `/`-separated and percent-encoded per segment"),
           ("X-File-Hash" = Option<String>, Header, description = "xxh3 of the body; 400 hash_mismatch if it differs"),
           ("X-Modified-Time" = Option<String>, Header, description = "The file's own mtime (RFC 3339)")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The file's bytes, or a ChunkedCommit with Content-Type application/vnd.volebarn.chunks+json"),
    responses((status = 201, body = FileMetadata, headers(("ETag" = String))),
              (status = 400, body = OperationError, description = "invalid_path, hash_mismatch, missing_chunks, bad_request"),
              (status = 409, body = OperationError, description = "already_exists, is_a_directory, not_a_directory"),
              (status = 413, body = OperationError, description = "payload_too_large")))]
fn upload_file() {}

#[utoipa::path(put, path = "/files/{path}",
    params(("path" = String, Path, description = "File path"),
           ("If-Match" = Option<String>, Header, description = "\"<rev>\": replace only if unchanged"),
           ("X-File-Hash" = Option<String>, Header), ("X-Modified-Time" = Option<String>, Header)),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, body = FileMetadata), (status = 404, body = OperationError),
              (status = 400, body = OperationError, description = "invalid_path, hash_mismatch, bad_request"),
              (status = 409, body = OperationError, description = "is_a_directory, not_a_directory"),
              (status = 412, body = OperationError, description = "precondition_failed"),
              (status = 413, body = OperationError)))]
fn update_file() {}

#[utoipa::path(get, path = "/files/{path}", params(("path" = String, Path, description = "File path"),
           ("rev" = Option<u64>, Query, description = "A revision from GET /versions/{path} (the current one or a kept version, also of a deleted file); default: the current content")),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>,
               headers(("X-File-Hash" = String), ("ETag" = String), ("X-Modified-Time" = String))),
              (status = 400, body = OperationError, description = "invalid_path; bad_request: rev is not a number"),
              (status = 404, body = OperationError), (status = 409, body = OperationError, description = "is_a_directory")))]
fn download_file() {}

#[utoipa::path(head, path = "/files/{path}", params(("path" = String, Path, description = "File path")),
    responses((status = 200, description = "Metadata only",
               headers(("X-File-Size" = u64), ("X-File-Hash" = String), ("X-Modified-Time" = String), ("ETag" = String))),
              (status = 404, description = "No such file"),
              (status = 409, description = "is_a_directory")))]
fn head_file() {}

#[utoipa::path(delete, path = "/files/{path}",
    params(("path" = String, Path, description = "File path"), ("If-Match" = Option<String>, Header)),
    responses((status = 204, description = "Deleted (kept as a version)"), (status = 404, body = OperationError),
              (status = 409, body = OperationError, description = "is_a_directory"),
              (status = 412, body = OperationError)))]
fn delete_file() {}

#[utoipa::path(get, path = "/directories", responses((status = 200, body = DirectoryListing, description = "The root directory (also at /directories/)",
    headers(("X-Head-Rev" = u64, description = "The head revision read before the listing: a /changes long-poll from it keeps the listing current")))))]
fn list_root() {}

#[utoipa::path(post, path = "/directories/{path}", params(("path" = String, Path, description = "Directory path")),
    responses((status = 201, body = FileMetadata), (status = 409, body = OperationError, description = "already_exists, not_a_directory")))]
fn create_directory() {}

#[utoipa::path(get, path = "/directories/{path}", params(("path" = String, Path, description = "Directory path")),
    responses((status = 200, body = DirectoryListing, headers(("X-Head-Rev" = u64, description = "The head revision read before the listing"))),
              (status = 404, body = OperationError), (status = 409, body = OperationError, description = "not_a_directory")))]
fn list_directory() {}

#[utoipa::path(delete, path = "/directories/{path}", params(("path" = String, Path, description = "Directory path")),
    responses((status = 204, description = "Deleted recursively (files kept as versions)"), (status = 404, body = OperationError),
              (status = 409, body = OperationError, description = "not_a_directory")))]
fn delete_directory() {}

#[utoipa::path(post, path = "/bulk/upload",
    request_body(content_type = "multipart/form-data", description = "One part per file, named by its filename or a preceding `path` field; optional per-part X-File-Hash, X-Modified-Time, If-Match headers"),
    responses((status = 200, body = BulkUploadResponse)))]
fn bulk_upload() {}

#[utoipa::path(post, path = "/bulk/download", request_body = PathList,
    responses((status = 200, content_type = "multipart/mixed", description = "One part per file (X-File-Path, X-File-Hash, ETag) and a final JSON part {\"missing\": [OperationError]}")))]
fn bulk_download() {}

#[utoipa::path(post, path = "/bulk/delete", request_body = PathList, responses((status = 200, body = BulkDeleteResponse)))]
fn bulk_delete() {}

#[utoipa::path(get, path = "/bulk/manifest", params(("path" = Option<String>, Query, description = "Directory (default: root)")),
    responses((status = 200, body = FileManifest), (status = 404, body = OperationError), (status = 409, body = OperationError, description = "not_a_directory")))]
fn bulk_manifest() {}

#[utoipa::path(post, path = "/bulk/sync", request_body = SyncRequest, responses((status = 200, body = SyncPlan)))]
fn bulk_sync() {}

#[utoipa::path(post, path = "/move", request_body = MoveRequest,
    responses((status = 200, body = FileMetadata), (status = 400, body = OperationError), (status = 404, body = OperationError), (status = 409, body = OperationError)))]
fn move_path() {}

#[utoipa::path(post, path = "/copy", request_body = MoveRequest,
    responses((status = 200, body = FileMetadata), (status = 400, body = OperationError), (status = 404, body = OperationError), (status = 409, body = OperationError)))]
fn copy_path() {}

#[utoipa::path(get, path = "/search",
    params(("pattern" = Option<String>, Query, description = "Glob on the name (or on the path below `path` when it contains /)"),
           ("path" = Option<String>, Query, description = "Directory to search (default: root)"),
           ("recursive" = Option<bool>, Query, description = "Default true"),
           ("modified_since" = Option<String>, Query, description = "RFC 3339"),
           ("hash" = Option<String>, Query, description = "xxh3, 16 hex digits")),
    responses((status = 200, body = Vec<FileMetadata>), (status = 400, body = OperationError)))]
fn search() {}

#[utoipa::path(get, path = "/changes",
    params(("since" = Option<u64>, Query, description = "Last revision seen (default 0)"),
           ("wait" = Option<u64>, Query, maximum = 60, description = "Seconds to wait for a change, at most 60")),
    responses((status = 200, body = ChangesResponse), (status = 400, body = OperationError, description = "bad_request: since or wait is not a number, or wait is over 60"), (status = 410, body = OperationError, description = "gone: re-read the manifest")))]
fn changes() {}

#[utoipa::path(get, path = "/versions/{path}", params(("path" = String, Path, description = "File path")),
    responses((status = 200, body = VersionList), (status = 404, body = OperationError), (status = 409, body = OperationError, description = "is_a_directory")))]
fn versions() {}

#[utoipa::path(post, path = "/versions/{path}/restore", params(("path" = String, Path, description = "File path")),
    request_body = RestoreRequest, responses((status = 200, body = FileMetadata), (status = 404, body = OperationError),
              (status = 409, body = OperationError, description = "is_a_directory, not_a_directory")))]
fn restore_version() {}

#[utoipa::path(post, path = "/chunks/missing", request_body = ChunkIds, responses((status = 200, body = MissingChunks)))]
fn missing_chunks() {}

#[utoipa::path(put, path = "/chunks/{id}", params(("id" = String, Path, description = "BLAKE3 of the chunk, 64 hex digits")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "At most 4 MiB"),
    responses((status = 204, description = "Stored"), (status = 400, body = OperationError, description = "hash_mismatch"), (status = 413, body = OperationError)))]
fn put_chunk() {}

#[utoipa::path(post, path = "/auth/login", security(()), request_body = super::session::LoginRequest,
    responses((status = 204, description = "Signed in: `Set-Cookie: volebarn_session=…; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=43200`. The cookie then authenticates like the bearer token; requests with unsafe methods must also send `X-Volebarn-UI: 1` or this server's `Origin`.",
               headers(("Set-Cookie" = String))),
              (status = 401, body = OperationError, description = "Wrong token (`unauthorized`); counts as a failed authentication for the brute-force guard")))]
fn login() {}

#[utoipa::path(post, path = "/auth/logout", security(()),
    responses((status = 204, description = "The session cookie is cleared in this browser", headers(("Set-Cookie" = String)))))]
fn logout() {}

#[utoipa::path(get, path = "/trash",
    params(("recursive" = Option<bool>, Query, description = "Every deleted file below, not only the directory's own (default false)")),
    responses((status = 200, body = TrashList, description = "Deleted, restorable files of the root directory (also at /trash/)"),
              (status = 400, body = OperationError, description = "bad_request: recursive is not true or false")))]
fn trash_root() {}

#[utoipa::path(get, path = "/trash/{path}", params(("path" = String, Path, description = "Directory path (it may itself be deleted)"),
           ("recursive" = Option<bool>, Query, description = "Every deleted file below, not only the directory's own (default false)")),
    responses((status = 200, body = TrashList, description = "Deleted files of this directory whose content is kept: restore one with POST /versions/{path}/restore"),
              (status = 400, body = OperationError, description = "invalid_path; bad_request: recursive is not true or false"),
              (status = 409, body = OperationError, description = "not_a_directory")))]
fn trash() {}
