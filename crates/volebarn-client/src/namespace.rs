//! Move, copy, search, the change feed, versions and the chunk endpoints.

use crate::client::{check, encode_path, parse_path, Client};
use crate::error::Result;
use reqwest::Method;
use volebarn_core::timefmt::format_rfc3339;
use volebarn_core::types::{
    ChangesResponse, ChunkIds, ChunkedCommit, MissingChunks, MoveRequest, RestoreRequest, VersionList,
    CHUNKS_CONTENT_TYPE,
};
use volebarn_core::{ChunkId, FileMetadata, Xxh3};

impl Client {
    async fn relocate(&self, op: &str, from: &str, to: &str, overwrite: bool) -> Result<FileMetadata> {
        parse_path(from)?;
        parse_path(to)?;
        let body = MoveRequest {
            from_path: from.to_string(),
            to_path: to.to_string(),
            overwrite,
        };
        let resp = self
            .request(Method::POST, format!("{}/{op}", self.base))
            .json(&body)
            .send()
            .await?;
        Ok(check(resp, from).await?.json().await?)
    }

    /// Moves a file or directory on the server (metadata only); 409 if `to` exists.
    pub(crate) async fn move_file_once(&self, from: &str, to: &str) -> Result<FileMetadata> {
        self.relocate("move", from, to, false).await
    }

    /// Copies a file or directory on the server without copying bytes; 409 if `to` exists.
    pub(crate) async fn copy_file_once(&self, from: &str, to: &str) -> Result<FileMetadata> {
        self.relocate("copy", from, to, false).await
    }

    /// Move or copy that replaces an existing target (kept as a version).
    pub(crate) async fn move_or_copy_overwrite_once(
        &self,
        copy: bool,
        from: &str,
        to: &str,
    ) -> Result<FileMetadata> {
        self.relocate(if copy { "copy" } else { "move" }, from, to, true)
            .await
    }

    /// Files and directories whose name matches the glob `pattern`, below `path`
    /// (recursively), sorted by path.
    pub(crate) async fn search_files_once(
        &self,
        pattern: &str,
        path: Option<&str>,
    ) -> Result<Vec<FileMetadata>> {
        let mut query = vec![
            ("pattern", pattern.to_string()),
            ("recursive", "true".to_string()),
        ];
        if let Some(p) = path {
            query.push(("path", p.to_string()));
        }
        self.search_query(&query).await
    }

    /// Files modified at or after `since` (Unix nanoseconds).
    pub(crate) async fn search_modified_since_once(&self, since: i64) -> Result<Vec<FileMetadata>> {
        self.search_query(&[("modified_since", format_rfc3339(since))])
            .await
    }

    /// Files whose content hash is `hash`.
    pub(crate) async fn search_hash_once(&self, hash: Xxh3) -> Result<Vec<FileMetadata>> {
        self.search_query(&[("hash", hash.to_string())]).await
    }

    async fn search_query<T: serde::Serialize + ?Sized>(&self, query: &T) -> Result<Vec<FileMetadata>> {
        let resp = self
            .request(Method::GET, format!("{}/search", self.base))
            .query(query)
            .send()
            .await?;
        Ok(check(resp, "").await?.json().await?)
    }

    /// Journal entries after `since`, waiting up to `wait_secs` (max 60) for one. A
    /// `ClientError::Server` with code `gone` means `since` is too old: re-read the manifest.
    pub(crate) async fn changes_once(&self, since: u64, wait_secs: u64) -> Result<ChangesResponse> {
        let resp = self
            .request(Method::GET, format!("{}/changes", self.base))
            .query(&[("since", since), ("wait", wait_secs.min(60))])
            .send()
            .await?;
        Ok(check(resp, "").await?.json().await?)
    }

    /// Kept versions of a file, newest (current) first.
    pub(crate) async fn versions_once(&self, path: &str) -> Result<VersionList> {
        let p = parse_path(path)?;
        let resp = self
            .request(Method::GET, format!("{}/versions/{}", self.base, encode_path(&p)))
            .send()
            .await?;
        Ok(check(resp, path).await?.json().await?)
    }

    /// Makes version `rev` of `path` current again (as a new revision).
    pub(crate) async fn restore_version_once(&self, path: &str, rev: u64) -> Result<FileMetadata> {
        let p = parse_path(path)?;
        let resp = self
            .request(
                Method::POST,
                format!("{}/versions/{}/restore", self.base, encode_path(&p)),
            )
            .json(&RestoreRequest { rev })
            .send()
            .await?;
        Ok(check(resp, path).await?.json().await?)
    }

    /// The ids the server does not have yet.
    pub(crate) async fn missing_chunks_once(&self, ids: &[ChunkId]) -> Result<Vec<ChunkId>> {
        let resp = self
            .request(Method::POST, format!("{}/chunks/missing", self.base))
            .json(&ChunkIds { ids: ids.to_vec() })
            .send()
            .await?;
        let m: MissingChunks = check(resp, "").await?.json().await?;
        Ok(m.missing)
    }

    /// Stores one chunk (the server verifies its BLAKE3 id).
    pub(crate) async fn put_chunk_once(&self, id: ChunkId, data: bytes::Bytes) -> Result<()> {
        let len = data.len() as u64;
        let resp = self
            .request(Method::PUT, format!("{}/chunks/{id}", self.base))
            .body(data)
            .send()
            .await?;
        check(resp, "").await?;
        self.sent(len);
        Ok(())
    }

    /// Commits a file from stored chunks; `replace` chooses PUT (existing file) over POST.
    pub(crate) async fn commit_chunks_once(
        &self,
        path: &str,
        commit: &ChunkedCommit,
        replace: bool,
        mtime: Option<i64>,
        if_match: Option<u64>,
    ) -> Result<FileMetadata> {
        let p = parse_path(path)?;
        let mut req = self.write_request(&p, replace, if_match);
        if let Some(t) = mtime {
            req = req.header(volebarn_core::types::headers::MODIFIED_TIME, format_rfc3339(t));
        }
        let resp = req
            .header("content-type", CHUNKS_CONTENT_TYPE)
            .body(serde_json::to_vec(commit).map_err(|e| crate::ClientError::Protocol(e.to_string()))?)
            .send()
            .await?;
        Ok(check(resp, path).await?.json().await?)
    }
}
