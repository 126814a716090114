//! Checking the whole-file hashes clients claim in chunked commits (see [`Claim`]).
//!
//! A chunked commit records the client's xxh3 with an open claim instead of reading the
//! file back. The claim is settled by reading the chunks once: in the background right after
//! the commit ([`Service::verify_claims`], woken by every commit), or before the file is
//! served when a download comes first ([`Service::open_file`]). A true claim is closed. A
//! false one (a buggy client: the bytes themselves were verified chunk by chunk against
//! their BLAKE3 ids, so they are exactly what the client sent) is corrected: every record
//! that makes it gets the real hash — current files as a new revision with a journal entry,
//! so clients see the change, kept versions in place.

use super::{blocking, expect_file, Service};
use crate::error::{ServiceError, ServiceResult};
use crate::storage::{ChangeKind, Claim, Entry, FileRecord};
use volebarn_core::hash::Xxh3Hasher;
use volebarn_core::VPath;

/// Claims settled per look at the queue.
const CLAIMS_PER_ROUND: usize = 16;

impl Service {
    /// The current record of a file (for download), with its hash verified.
    pub async fn open_file(&self, path: &VPath) -> ServiceResult<FileRecord> {
        let rec = expect_file(path, self.get_entry(path).await?)?;
        if rec.chunks.is_empty() {
            return Ok(rec);
        }
        let claim = Claim::of(path.as_str(), &rec);
        let key = claim.key();
        let meta = self.inner.meta.clone();
        let open = blocking(move || meta.has_claim(&key))
            .await?
            .map_err(|e| ServiceError::storage(path.as_str(), e))?;
        if !open {
            return Ok(rec);
        }
        self.settle_claim(claim).await?;
        expect_file(path, self.get_entry(path).await?)
    }

    /// Settles every open claim it can; returns how many. Run by the server after each
    /// commit. A claim that cannot be settled now (a chunk unreadable) is logged and left
    /// open for the next round — and its file is not served until it is settled.
    pub async fn verify_claims(&self) -> ServiceResult<usize> {
        let mut settled = 0;
        let mut failed = std::collections::HashSet::new();
        loop {
            let meta = self.inner.meta.clone();
            let limit = CLAIMS_PER_ROUND + failed.len();
            let claims: Vec<Claim> = blocking(move || meta.claims(limit))
                .await?
                .map_err(|e| ServiceError::storage("", e))?
                .into_iter()
                .filter(|c| !failed.contains(&c.key()))
                .collect();
            if claims.is_empty() {
                return Ok(settled);
            }
            for claim in claims {
                let key = claim.key();
                let path = claim.path.clone();
                match self.settle_claim(claim).await {
                    Ok(()) => settled += 1,
                    Err(e) => {
                        tracing::warn!(path = %path, error = %e, "could not verify a chunked commit");
                        failed.insert(key);
                    }
                }
            }
        }
    }

    /// Reads the claimed chunks, hashes them and records the outcome.
    async fn settle_claim(&self, claim: Claim) -> ServiceResult<()> {
        let mut hasher = Xxh3Hasher::new();
        for c in &claim.chunks {
            hasher.update(&self.read_chunk(&claim.path, *c).await?);
        }
        let actual = hasher.finish().0;
        self.mutate(move |tx| {
            let key = claim.key();
            if actual != claim.xxh3 {
                tracing::error!(
                    path = %claim.path,
                    claimed = %volebarn_core::Xxh3(claim.xxh3),
                    actual = %volebarn_core::Xxh3(actual),
                    "a chunked commit claimed the wrong file hash; correcting it"
                );
                correct(tx, &claim, actual)?;
            }
            tx.close_claim(key);
            Ok(())
        })
        .await
    }
}

/// Gives every record making the false `claim` the real hash `actual`.
fn correct(tx: &mut super::Tx<'_>, claim: &Claim, actual: u64) -> ServiceResult<()> {
    let mut paths = tx.files_with_hash(claim.xxh3)?;
    if let Ok(origin) = VPath::parse(&claim.path) {
        if !paths.contains(&origin) {
            paths.push(origin);
        }
    }
    for path in paths {
        if let Some(Entry::File(f)) = tx.get(&path)? {
            if claim.made_by(&f) {
                let rev = tx.rev();
                let fixed = FileRecord {
                    xxh3: actual,
                    rev,
                    ..f
                };
                tx.put_file(path.clone(), fixed, false);
                tx.journal(rev, ChangeKind::Put, &path, None);
            }
        }
        for mut v in tx.versions(&path)? {
            if claim.made_by(&v.file) {
                v.file.xxh3 = actual;
                tx.rewrite_version(&path, v);
            }
        }
    }
    Ok(())
}
