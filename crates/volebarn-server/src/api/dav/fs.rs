//! dav-server's filesystem over the [`Service`]: every WebDAV operation is a service call,
//! so it gets revisions, versions and journal entries like the same call through REST.

use super::file::{OpenFile, Reader, Writer};
use super::DavRequest;
use crate::error::ServiceError;
use crate::service::{Service, UploadOptions, WriteMode};
use crate::storage::{DeadProp, DeadProps, Entry, FileRecord};
use axum::http::StatusCode;
use dav_server::davpath::DavPath;
use dav_server::fs::{
    DavDirEntry, DavFile, DavMetaData, DavProp, FsError, FsFuture, FsResult, FsStream, GuardedFileSystem,
    OpenOptions, ReadDirMeta,
};
use futures_util::FutureExt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use volebarn_core::timefmt::UnixNanos;
use volebarn_core::{FileMetadata, VPath};

/// The WebDAV view of the service.
#[derive(Clone)]
pub(crate) struct ServiceFs {
    service: Service,
    /// A directory on the disk the data lives on: its free space is `quota-available-bytes`.
    disk: Option<PathBuf>,
}

impl ServiceFs {
    pub(crate) fn new(service: Service, disk: Option<PathBuf>) -> Self {
        ServiceFs { service, disk }
    }
}

/// How a service error reads to dav-server (which turns it into the WebDAV status).
pub(super) fn fs_error(e: &ServiceError) -> FsError {
    match e {
        ServiceError::NotFound { .. } | ServiceError::NotADirectory { .. } => FsError::NotFound,
        ServiceError::AlreadyExists { .. } | ServiceError::Precondition { .. } => FsError::Exists,
        ServiceError::IsADirectory { .. } | ServiceError::InvalidPath { .. } => FsError::Forbidden,
        ServiceError::TooLarge { .. } => FsError::TooLarge,
        ServiceError::InsufficientStorage { .. } => FsError::InsufficientStorage,
        _ => FsError::GeneralFailure,
    }
}

/// The service path a WebDAV path names (already percent-decoded by dav-server).
fn vpath(path: &DavPath) -> FsResult<VPath> {
    let raw = std::str::from_utf8(path.as_bytes()).map_err(|_| FsError::Forbidden)?;
    VPath::parse(raw).map_err(|_| FsError::Forbidden)
}

fn system_time(nanos: UnixNanos) -> SystemTime {
    match u64::try_from(nanos) {
        Ok(n) => UNIX_EPOCH + Duration::from_nanos(n),
        Err(_) => UNIX_EPOCH - Duration::from_nanos(nanos.unsigned_abs()),
    }
}

/// What PROPFIND and GET report: the same size, time and revision (as the ETag) as REST.
#[derive(Debug, Clone)]
pub(super) struct DavMeta {
    len: u64,
    mtime: UnixNanos,
    rev: u64,
    dir: bool,
}

impl DavMeta {
    pub(super) fn of(m: &FileMetadata) -> Self {
        DavMeta {
            len: m.size,
            mtime: m.modified,
            rev: m.rev,
            dir: m.is_directory,
        }
    }

    pub(super) fn of_file(rec: &FileRecord) -> Self {
        DavMeta {
            len: rec.size,
            mtime: rec.mtime,
            rev: rec.rev,
            dir: false,
        }
    }

    fn root() -> Self {
        DavMeta {
            len: 0,
            mtime: 0,
            rev: 0,
            dir: true,
        }
    }
}

impl DavMetaData for DavMeta {
    fn len(&self) -> u64 {
        self.len
    }

    fn modified(&self) -> FsResult<SystemTime> {
        Ok(system_time(self.mtime))
    }

    fn is_dir(&self) -> bool {
        self.dir
    }

    /// The revision, as the REST API's `ETag` (dav-server adds the quotes).
    fn etag(&self) -> Option<String> {
        Some(self.rev.to_string())
    }
}

struct DirEntry {
    name: String,
    meta: DavMeta,
}

impl DavDirEntry for DirEntry {
    fn name(&self) -> Vec<u8> {
        self.name.as_bytes().to_vec()
    }

    fn metadata(&self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        let meta: Box<dyn DavMetaData> = Box::new(self.meta.clone());
        futures_util::future::ready(Ok(meta)).boxed()
    }
}

impl ServiceFs {
    async fn entry(&self, path: &VPath) -> FsResult<Option<Entry>> {
        self.service.get_entry(path).await.map_err(|e| fs_error(&e))
    }

    async fn stat(&self, path: &VPath) -> FsResult<DavMeta> {
        match self.service.stat(path).await {
            Ok(m) => Ok(DavMeta::of(&m)),
            Err(ServiceError::NotFound { .. }) if path.is_root() => Ok(DavMeta::root()),
            Err(e) => Err(fs_error(&e)),
        }
    }

    /// The parent of `path` must be an existing directory (WebDAV creates no parents: 409).
    async fn require_parent(&self, path: &VPath) -> FsResult<()> {
        match path.parent() {
            None => Err(FsError::Forbidden),
            Some(p) if p.is_root() => Ok(()),
            Some(p) => match self.entry(&p).await? {
                Some(Entry::Dir(_)) => Ok(()),
                _ => Err(FsError::NotFound),
            },
        }
    }

    async fn open_file(&self, path: &VPath, oo: OpenOptions, req: &DavRequest) -> FsResult<OpenFile> {
        if !oo.write {
            let rec = self.service.open_file(path).await.map_err(|e| fs_error(&e))?;
            req.served(rec.xxh3);
            return Ok(OpenFile::Read(Reader::new(
                self.service.clone(),
                path.clone(),
                rec,
            )));
        }
        self.require_parent(path).await?;
        let existing = self.entry(path).await?;
        if !oo.truncate || oo.append {
            if existing.is_some() || !oo.create {
                // Partial updates (Content-Range, sabredav PATCH) would rewrite part of a file.
                return Err(FsError::NotImplemented);
            }
            // A LOCK of an unmapped URL: an empty file, created now (nothing will be written).
            let empty = futures_util::stream::empty::<Result<bytes::Bytes, std::convert::Infallible>>();
            let opts = UploadOptions {
                mtime: req.mtime,
                ..UploadOptions::default()
            };
            let meta = self
                .service
                .write_file(path, WriteMode::Create, opts, empty)
                .await
                .map_err(|e| fs_error(&e))?;
            return Ok(OpenFile::Created(DavMeta::of(&meta)));
        }
        let mode = match existing {
            Some(Entry::Dir(_)) => return Err(FsError::Forbidden),
            Some(Entry::File(_)) if oo.create_new => return Err(FsError::Exists),
            None if !oo.create => return Err(FsError::NotFound),
            _ if oo.create_new => WriteMode::Create,
            _ if !oo.create => WriteMode::Replace { if_match: None },
            _ => WriteMode::Upsert { if_match: None },
        };
        if oo.size.is_some_and(|n| n > self.service.config().max_file_size) {
            return Err(FsError::TooLarge);
        }
        let opts = UploadOptions {
            expected_hash: None,
            mtime: req.mtime,
            declared_len: oo.size,
        };
        Ok(OpenFile::Write(Writer::start(
            self.service.clone(),
            path.clone(),
            mode,
            opts,
        )))
    }

    /// MOVE (`copy = false`) or COPY of one resource. dav-server has already checked
    /// `Overwrite` and removed the destination when it allowed that; a copy still overwrites,
    /// because dav-server copies the files of a collection one by one through here.
    async fn relocate(&self, from: &DavPath, to: &DavPath, copy: bool) -> FsResult<()> {
        let (f, t) = (vpath(from)?, vpath(to)?);
        self.require_parent(&t).await?;
        let done = if copy {
            self.service.copy_path(&f, &t, true).await
        } else {
            self.service.move_path(&f, &t, false).await
        };
        done.map(|_| ()).map_err(|e| fs_error(&e))
    }

    async fn dead_props(&self, path: &VPath) -> FsResult<DeadProps> {
        self.service.dead_props(path).await.map_err(|e| fs_error(&e))
    }

    async fn free_space(&self) -> Option<u64> {
        let dir = self.disk.clone()?;
        tokio::task::spawn_blocking(move || {
            rustix::fs::statvfs(&dir)
                .ok()
                .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
        })
        .await
        .ok()
        .flatten()
    }
}

impl GuardedFileSystem<DavRequest> for ServiceFs {
    fn open<'a>(
        &'a self,
        path: &'a DavPath,
        options: OpenOptions,
        req: &'a DavRequest,
    ) -> FsFuture<'a, Box<dyn DavFile>> {
        async move {
            let p = vpath(path)?;
            let file: Box<dyn DavFile> = Box::new(self.open_file(&p, options, req).await?);
            Ok(file)
        }
        .boxed()
    }

    fn read_dir<'a>(
        &'a self,
        path: &'a DavPath,
        _meta: ReadDirMeta,
        _req: &'a DavRequest,
    ) -> FsFuture<'a, FsStream<Box<dyn DavDirEntry>>> {
        async move {
            let p = vpath(path)?;
            let listing = self.service.list_dir(&p).await.map_err(|e| fs_error(&e))?;
            let entries: Vec<FsResult<Box<dyn DavDirEntry>>> = listing
                .entries
                .iter()
                .map(|m| {
                    let e: Box<dyn DavDirEntry> = Box::new(DirEntry {
                        name: m.name.clone(),
                        meta: DavMeta::of(m),
                    });
                    Ok(e)
                })
                .collect();
            let stream: FsStream<Box<dyn DavDirEntry>> = Box::pin(futures_util::stream::iter(entries));
            Ok(stream)
        }
        .boxed()
    }

    fn metadata<'a>(&'a self, path: &'a DavPath, _req: &'a DavRequest) -> FsFuture<'a, Box<dyn DavMetaData>> {
        async move {
            let meta: Box<dyn DavMetaData> = Box::new(self.stat(&vpath(path)?).await?);
            Ok(meta)
        }
        .boxed()
    }

    fn create_dir<'a>(&'a self, path: &'a DavPath, _req: &'a DavRequest) -> FsFuture<'a, ()> {
        async move {
            let p = vpath(path)?;
            if p.is_root() {
                return Err(FsError::Exists);
            }
            self.require_parent(&p).await?;
            self.service.create_dir(&p).await.map_err(|e| fs_error(&e))?;
            Ok(())
        }
        .boxed()
    }

    fn remove_dir<'a>(&'a self, path: &'a DavPath, _req: &'a DavRequest) -> FsFuture<'a, ()> {
        async move {
            let p = vpath(path)?;
            if p.is_root() {
                return Err(FsError::Forbidden);
            }
            self.service.delete_dir(&p).await.map_err(|e| fs_error(&e))
        }
        .boxed()
    }

    fn remove_file<'a>(&'a self, path: &'a DavPath, _req: &'a DavRequest) -> FsFuture<'a, ()> {
        async move {
            let p = vpath(path)?;
            self.service.delete_file(&p, None).await.map_err(|e| fs_error(&e))
        }
        .boxed()
    }

    fn rename<'a>(&'a self, from: &'a DavPath, to: &'a DavPath, _req: &'a DavRequest) -> FsFuture<'a, ()> {
        self.relocate(from, to, false).boxed()
    }

    fn copy<'a>(&'a self, from: &'a DavPath, to: &'a DavPath, _req: &'a DavRequest) -> FsFuture<'a, ()> {
        self.relocate(from, to, true).boxed()
    }

    fn have_props<'a>(
        &'a self,
        _path: &'a DavPath,
        _req: &'a DavRequest,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        futures_util::future::ready(true).boxed()
    }

    fn patch_props<'a>(
        &'a self,
        path: &'a DavPath,
        patch: Vec<(bool, DavProp)>,
        _req: &'a DavRequest,
    ) -> FsFuture<'a, Vec<(StatusCode, DavProp)>> {
        async move {
            let p = vpath(path)?;
            let mut props = self.dead_props(&p).await?;
            let mut answer = Vec::with_capacity(patch.len());
            // In document order: a later instruction for the same property wins.
            for (set, prop) in patch {
                props
                    .props
                    .retain(|d| !(d.namespace == prop.namespace && d.name == prop.name));
                answer.push((StatusCode::OK, without_value(&prop)));
                if set {
                    props.props.push(DeadProp {
                        namespace: prop.namespace,
                        name: prop.name,
                        prefix: prop.prefix,
                        xml: prop.xml,
                    });
                }
            }
            self.service
                .set_dead_props(&p, props)
                .await
                .map_err(|e| fs_error(&e))?;
            Ok(answer)
        }
        .boxed()
    }

    fn get_props<'a>(
        &'a self,
        path: &'a DavPath,
        do_content: bool,
        _req: &'a DavRequest,
    ) -> FsFuture<'a, Vec<DavProp>> {
        async move {
            let props = self.dead_props(&vpath(path)?).await?;
            Ok(props
                .props
                .into_iter()
                .map(|d| {
                    let prop = DavProp {
                        name: d.name,
                        prefix: d.prefix,
                        namespace: d.namespace,
                        xml: d.xml,
                    };
                    if do_content {
                        prop
                    } else {
                        without_value(&prop)
                    }
                })
                .collect())
        }
        .boxed()
    }

    fn get_prop<'a>(
        &'a self,
        path: &'a DavPath,
        prop: DavProp,
        _req: &'a DavRequest,
    ) -> FsFuture<'a, Vec<u8>> {
        async move {
            let props = self.dead_props(&vpath(path)?).await?;
            props
                .props
                .into_iter()
                .find(|d| d.namespace == prop.namespace && d.name == prop.name)
                .and_then(|d| d.xml)
                .ok_or(FsError::NotFound)
        }
        .boxed()
    }

    fn get_quota<'a>(&'a self, _req: &'a DavRequest) -> FsFuture<'a, (u64, Option<u64>)> {
        async move {
            let stats = self.service.stats().await.map_err(|e| fs_error(&e))?;
            Ok((stats.file_bytes, self.free_space().await))
        }
        .boxed()
    }
}

/// A property's name without its value (what PROPPATCH answers and `propname` lists).
fn without_value(p: &DavProp) -> DavProp {
    DavProp {
        name: p.name.clone(),
        prefix: p.prefix.clone(),
        namespace: p.namespace.clone(),
        xml: None,
    }
}
