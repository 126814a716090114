//! Durable writes for the client and the crates built on it (the sync engine, the console):
//! [`atomic_write`], the one way a small state file is replaced, and the batched flush of many
//! new files that bulk downloads use.

use std::collections::BTreeSet;
use std::path::Path;

/// Replaces the file at `path` with `data` so that a crash leaves the old content or the new,
/// never a mix: a temp file beside it, fsync, rename, then fsync of the directory (without
/// which the rename itself may not survive a crash).
pub fn atomic_write(path: &Path, data: &[u8]) -> std::io::Result<()> {
    write_replace(path, data, false)
}

/// [`atomic_write`] for secrets (tokens, configuration holding them): on Unix the file is
/// readable by its owner only, from the moment it exists.
pub fn atomic_write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    write_replace(path, data, true)
}

fn write_replace(path: &Path, data: &[u8], private: bool) -> std::io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path"))?;
    let mut tmp_name = name.to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut f = opts.open(&tmp)?;
    std::io::Write::write_all(&mut f, data)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    sync_dir(
        path.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new(".")),
    )
}

/// Makes a directory's entries (a rename into it) durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Makes `files` and the entries of `dirs` durable: one `syncfs` per filesystem they live on.
#[cfg(target_os = "linux")]
pub(crate) fn flush<'a>(
    root: &Path,
    dirs: &BTreeSet<&Path>,
    _files: impl Iterator<Item = &'a Path>,
) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let mut devices = BTreeSet::new();
    for d in std::iter::once(root).chain(dirs.iter().copied()) {
        let dir = std::fs::File::open(d)?;
        if devices.insert(dir.metadata()?.dev()) {
            rustix::fs::syncfs(&dir)?;
        }
    }
    Ok(())
}

/// Makes `files` and the entries of `dirs` durable, one `fsync` each.
#[cfg(not(target_os = "linux"))]
pub(crate) fn flush<'a>(
    _root: &Path,
    dirs: &BTreeSet<&Path>,
    files: impl Iterator<Item = &'a Path>,
) -> std::io::Result<()> {
    for f in files {
        std::fs::File::open(f)?.sync_all()?;
    }
    for d in dirs {
        #[cfg(unix)]
        std::fs::File::open(d)?.sync_all()?;
        #[cfg(not(unix))]
        let _ = d;
    }
    Ok(())
}
