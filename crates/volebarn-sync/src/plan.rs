//! The engine's plan: every decision of a pass, made before anything is touched.
//!
//! [`make_plan`] is a pure function of what the scan saw, the index (stats, base, synced
//! directories), the mirror of the server and the configuration. It detects renames (a
//! directory's as one move), applies the safety rails (held deletions and why), runs the
//! three-way planner of `volebarn-core` on the state the moves leave, finds case/Unicode name
//! clashes and the directories deleted on one side. The [`Plan`] it returns is plain data:
//! `volebarn sync --dry-run` shows it (and `--json` prints it), and `apply` only executes it,
//! in this order: moves, directories, uploads, downloads, deletions, adoptions, conflicts,
//! directory deletions.

use crate::index::{Entry, Key};
use crate::scan::Scan;
use serde::{Deserialize, Serialize};
use std::borrow::Borrow;
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use unicode_normalization::UnicodeNormalization;
use volebarn_client::{ConflictStrategy, SyncPlan};
use volebarn_core::sorted::Cursor;
use volebarn_core::sync::{plan, BaseState, RemoteState, SyncConflict};

/// A server-side move: a renamed file, or a renamed directory with everything below it. The
/// folder already shows the new name; the server is moved to match (history moves along).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    pub from: String,
    pub to: String,
    pub directory: bool,
}

/// A server name that would land on another name on a case-insensitive or normalizing
/// filesystem: not downloaded (nor its directory created) until one of them is renamed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clash {
    pub path: String,
    pub clashes_with: String,
}

/// Every decision of one pass. Paths are relative to the folder, `/`-separated; each list is
/// sorted by path except `moves` (applied in order). A path is in at most one file list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Plan {
    /// Renames done as server-side moves, first of all.
    pub moves: Vec<Move>,
    /// Local files to upload (new or edited here).
    pub uploads: Vec<String>,
    /// Server files to download (new or edited there).
    pub downloads: Vec<String>,
    /// Files deleted here, to delete on the server (kept there as versions).
    pub deletes_remote: Vec<String>,
    /// Files deleted on the server, to delete here (only if unchanged since the last sync).
    pub deletes_local: Vec<String>,
    /// Directories deleted here, to delete on the server (only once no file is left below).
    pub dir_deletes_remote: Vec<String>,
    /// Directories deleted on the server, to delete here (only when empty).
    pub dir_deletes_local: Vec<String>,
    /// Directories to create on the server / here.
    pub create_dirs_remote: Vec<String>,
    pub create_dirs_local: Vec<String>,
    /// Paths changed on both sides, each with its resolution (`use_local`: the local version
    /// goes up and the remote one is kept as a conflict copy; `use_remote`: the other way
    /// round; `manual`: both kept, listed by `volebarn conflicts`). A `file_directory` conflict
    /// touches nothing.
    pub conflicts: Vec<SyncConflict>,
    /// Local deletions held back by the safety rails, and why; not done until
    /// `volebarn sync --force` (or the files are restored).
    pub held_deletions: Vec<String>,
    pub held_reason: Option<String>,
    /// Downloads left out because their names clash on case-insensitive filesystems.
    pub clashes: Vec<Clash>,
    /// Local paths left untouched this pass, and why (unreadable, symlink, invalid name,
    /// still changing).
    pub not_synced: Vec<(String, String)>,
    /// Bookkeeping: both sides hold the same content; record it as the base.
    pub adopt: Vec<String>,
    /// Bookkeeping: gone on both sides; forget the base.
    pub forget: Vec<String>,
    /// The server revision each upload, remote deletion or `use_local` conflict is conditioned
    /// on (absent for an upload: the path must not exist on the server).
    pub if_match: BTreeMap<String, u64>,
}

impl Plan {
    fn from_files(p: SyncPlan) -> Plan {
        Plan {
            uploads: p.client_upload,
            downloads: p.client_download,
            deletes_remote: p.server_delete,
            deletes_local: p.client_delete,
            create_dirs_remote: p.server_create_dirs,
            create_dirs_local: p.client_create_dirs,
            conflicts: p.conflicts,
            adopt: p.adopt,
            forget: p.forget,
            if_match: p.if_match,
            ..Plan::default()
        }
    }

    /// Number of operations a pass would perform (held deletions and clashes are not
    /// operations: they wait for the user).
    pub fn actions(&self) -> usize {
        self.moves.len()
            + self.uploads.len()
            + self.downloads.len()
            + self.deletes_remote.len()
            + self.deletes_local.len()
            + self.dir_deletes_remote.len()
            + self.dir_deletes_local.len()
            + self.create_dirs_remote.len()
            + self.create_dirs_local.len()
            + self.conflicts.len()
            + self.adopt.len()
            + self.forget.len()
    }

    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.actions() == 0
    }
}

/// What a plan is made from.
pub struct PlanInput<'a> {
    /// The folder now.
    pub scan: &'a Scan,
    /// Per path: the last scan's stat, the base, whether the directory was synced.
    pub index: &'a BTreeMap<Key, Entry>,
    /// The server as the mirror knows it (directories include files' parents).
    pub remote_files: &'a BTreeMap<Key, RemoteState>,
    pub remote_dirs: &'a BTreeSet<String>,
    pub strategy: ConflictStrategy,
    pub max_delete_percent: u8,
    /// `--force`: no deletion is held.
    pub force: bool,
}

/// The base of every synced file, from the index.
pub fn base_of_index(index: &BTreeMap<Key, Entry>) -> BTreeMap<Key, BaseState> {
    crate::index::bases(index)
        .map(|(p, b)| (Key::clone(p), b))
        .collect()
}

/// Decides everything one pass does (see the module documentation).
pub fn make_plan(i: &PlanInput) -> Plan {
    let sc = i.scan;
    // Plan the rest on the server and base as the moves leave them.
    let mut after = Tree {
        base: Cow::Borrowed(i.index),
        files: Cow::Borrowed(i.remote_files),
        dirs: Cow::Borrowed(i.remote_dirs),
    };
    let renames = detect_renames(sc, i.index);
    let moves = planned_moves(&renames, &sc.dirs, &mut after);
    let Tree {
        mut base,
        files: remote_files,
        dirs: remote_dirs,
    } = after;

    // Safety rail: mass deletions wait for --force.
    let mut here = Cursor::new(sc.files.keys().map(|k| &**k));
    let deleted: Vec<String> = base
        .iter()
        .filter(|(p, e)| e.base.is_some() && !here.contains(p) && !sc.is_skipped(p))
        .map(|(p, _)| p.to_string())
        .collect();
    let held_reason = if i.force || deleted.is_empty() {
        None
    } else {
        let total = base.values().filter(|e| e.base.is_some()).count();
        let limit = total * usize::from(i.max_delete_percent) / 100;
        if sc.files.is_empty() {
            Some(format!(
                "the folder is empty but {total} files were synced: not deleting them on the server"
            ))
        } else if deleted.len() > 1 && deleted.len() > limit {
            Some(format!(
                "{} of {total} synced files were deleted locally, more than max_delete ({}%)",
                deleted.len(),
                i.max_delete_percent
            ))
        } else {
            None
        }
    };
    let held: BTreeSet<String> = match held_reason {
        Some(_) => deleted.into_iter().collect(),
        None => BTreeSet::new(),
    };

    let untouched = |p: &str| held.contains(p) || sc.is_skipped(p);
    // The three-way plan reads the scan's stats as they are and leaves untouched paths out;
    // the directory deletions see them.
    let (mut local, mut planned_files, mut planned_dirs) = (
        Cow::Borrowed(&sc.files),
        Cow::Borrowed(&*remote_files),
        Cow::Borrowed(&*remote_dirs),
    );
    if !held.is_empty() || sc.skips_any() {
        local.to_mut().retain(|p, _| !untouched(p));
        planned_files.to_mut().retain(|p, _| !untouched(p));
        base.to_mut().retain(|p, _| !untouched(p));
        planned_dirs.to_mut().retain(|d| !untouched(d));
    }
    let files = plan(
        &local,
        &planned_files,
        &*base,
        &sc.dirs,
        &planned_dirs,
        i.strategy,
    );
    let mut out = Plan::from_files(files);
    out.moves = moves;
    out.held_deletions = held.into_iter().collect();
    out.held_reason =
        held_reason.map(|r| format!("{r}; held until `volebarn sync --force` (or restore the files)"));
    out.clashes = clashes(sc, &mut out);
    out.not_synced = sc.problems.clone();
    dir_deletions(sc, i.index, &remote_files, &remote_dirs, &mut out);
    out
}

/// `path` folded as a case-insensitive, normalizing filesystem would see it.
pub(crate) fn fold(path: &str) -> String {
    if path.is_ascii() {
        // NFC leaves ASCII as it is.
        return path.to_ascii_lowercase();
    }
    path.nfc().collect::<String>().to_lowercase()
}

pub(crate) fn is_under(path: &str, dir: &str) -> bool {
    path.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
}

/// `path` is `dir` or below it.
fn at_or_under(path: &str, dir: &str) -> bool {
    path == dir || is_under(path, dir)
}

/// A file's parent directories exist implicitly ([docs/design.md](docs/design.md) §2).
pub(crate) fn add_parents(dirs: &mut BTreeSet<String>, path: &str) {
    let mut end = path.len();
    while let Some(i) = path[..end].rfind('/') {
        if !dirs.insert(path[..i].to_string()) {
            break;
        }
        end = i;
    }
}

/// Renames the keys `from` and those below it to the same place below `to`.
pub(crate) fn move_keys<K: Ord + Borrow<str> + From<String>, V>(
    map: &mut BTreeMap<K, V>,
    from: &str,
    to: &str,
) {
    let moved: Vec<String> = crate::scan::covered(map, from)
        .map(|(k, _)| k.borrow().to_string())
        .collect();
    for old in moved {
        if let Some(v) = map.remove(old.as_str()) {
            map.insert(K::from(format!("{to}{}", &old[from.len()..])), v);
        }
    }
}

/// Renames the directories `from` and below to the same place below `to` (parents of `to`
/// exist afterwards).
pub(crate) fn move_dirs(dirs: &mut BTreeSet<String>, from: &str, to: &str) {
    let moved = remove_dirs(dirs, from);
    for d in moved {
        dirs.remove(&d);
        dirs.insert(format!("{to}{}", &d[from.len()..]));
    }
    add_parents(dirs, to);
}

/// Removes the key `path` and every key below it, found as a range of the sorted map, not by
/// a walk over all of it (a journal of many deletions used to walk the mirror once for each).
/// `""` names no path here (not the root, as for [`crate::scan::covers`]): nothing is removed.
pub(crate) fn remove_keys<K: Ord + Borrow<str> + Clone, V>(map: &mut BTreeMap<K, V>, path: &str) {
    if path.is_empty() {
        return;
    }
    let gone: Vec<K> = crate::scan::covered(map, path).map(|(k, _)| k.clone()).collect();
    for k in gone {
        map.remove(k.borrow());
    }
}

/// [`remove_keys`] for a set of directories: removes `path` and the directories below it, and
/// returns them in path order.
pub(crate) fn remove_dirs(dirs: &mut BTreeSet<String>, path: &str) -> Vec<String> {
    if path.is_empty() {
        return Vec::new();
    }
    let gone: Vec<String> = crate::scan::covered_in(dirs, path).cloned().collect();
    for d in &gone {
        dirs.remove(d);
    }
    gone
}

/// Pairs (gone, new) where the new local file has exactly the content the gone one had at the
/// last sync. The same inode wins; otherwise a unique content match (empty files only by
/// inode). A synced path whose file was replaced by another one (a different inode and other
/// content: `mv a b` over it, not an edit in place) counts both as gone and as new, but only
/// by inode, so a chain of renames onto synced paths (`b → c`, then `a → b`) is two moves; an
/// editor's save (a new inode at the same path) pairs with nothing.
fn detect_renames(sc: &Scan, index: &BTreeMap<Key, Entry>) -> Vec<(String, String)> {
    let replaced = |p: &str, e: &Entry| match (sc.files.get(p), e.local, e.base) {
        (Some(s), Some(l), Some(b)) => {
            s.inode != 0 && l.inode != 0 && s.inode != l.inode && (s.xxh3, s.size) != (b.xxh3, b.size)
        }
        _ => false,
    };
    let mut here = Cursor::new(sc.files.keys().map(|k| &**k));
    let gone: Vec<(&Key, &Entry, bool)> = index
        .iter()
        .filter(|(p, e)| e.base.is_some() && !sc.is_skipped(p))
        .filter_map(|(p, e)| {
            if !here.contains(p) {
                Some((p, e, false))
            } else {
                replaced(p, e).then_some((p, e, true))
            }
        })
        .collect();
    if gone.is_empty() {
        return Vec::new();
    }
    let mut by_content: BTreeMap<(u64, u64), Vec<&Key>> = BTreeMap::new();
    let mut by_inode: BTreeMap<u64, &Key> = BTreeMap::new();
    for (p, s) in &sc.files {
        match index.get(p) {
            Some(e) if e.base.is_some() => {
                if !replaced(p, e) {
                    continue;
                }
            }
            _ => by_content.entry((s.xxh3, s.size)).or_default().push(p),
        }
        if s.inode != 0 {
            by_inode.insert(s.inode, p);
        }
    }
    let mut used = BTreeSet::new();
    let mut out = Vec::new();
    for (old, e, still_there) in gone {
        let Some(b) = e.base else { continue };
        let same_content = |p: &Key| {
            sc.files
                .get(p)
                .is_some_and(|s| (s.xxh3, s.size) == (b.xxh3, b.size))
        };
        let by_ino = e
            .local
            .and_then(|l| by_inode.get(&l.inode))
            .filter(|p| same_content(p))
            .copied();
        let pick = by_ino.or_else(|| {
            if still_there {
                return None;
            }
            let candidates = by_content.get(&(b.xxh3, b.size))?;
            let free: Vec<&&Key> = candidates.iter().filter(|c| !used.contains(**c)).collect();
            (b.size > 0 && free.len() == 1).then(|| *free[0])
        });
        if let Some(new) = pick.filter(|new| *new != old) {
            if used.insert(new.clone()) {
                out.push((old.to_string(), new.to_string()));
            }
        }
    }
    out
}

/// The base and the server's tree, as the moves planned so far leave them (the server's
/// tree is copied only when a move changes it).
struct Tree<'a> {
    /// The index's entries: only their base counts here (copied only when a move changes it).
    base: Cow<'a, BTreeMap<Key, Entry>>,
    files: Cow<'a, BTreeMap<Key, RemoteState>>,
    dirs: Cow<'a, BTreeSet<String>>,
}

impl Tree<'_> {
    /// Whether the server can move `from` to `to` now: the source is there (a directory, or a
    /// file still as synced) and nothing is at the target or above it.
    fn can_move(&self, from: &str, to: &str) -> Option<bool> {
        let directory = self.dirs.contains(from);
        let source_there = directory
            || match (self.files.get(from), self.base.get(from).and_then(|e| e.base)) {
                (Some(r), Some(b)) => r.rev == b.rev || (r.xxh3.0, r.size) == (b.xxh3, b.size),
                _ => false,
            };
        let target_free = !self.files.contains_key(to)
            && !self.dirs.contains(to)
            && !self.files.keys().any(|f| is_under(to, f));
        (source_there && target_free).then_some(directory)
    }

    fn apply(&mut self, m: &Move) {
        move_keys(self.base.to_mut(), &m.from, &m.to);
        move_keys(self.files.to_mut(), &m.from, &m.to);
        move_dirs(self.dirs.to_mut(), &m.from, &m.to);
    }
}

/// The server-side moves for detected renames (directories first), in an order the server can
/// do them: a
/// directory's files as one move of the directory; a file only while the server still holds
/// it as synced; none onto a path the server has (the three-way plan settles those: nothing is
/// lost either way). `tree` ends as the moves leave it.
fn planned_moves(renames: &[(String, String)], local_dirs: &BTreeSet<String>, tree: &mut Tree) -> Vec<Move> {
    let mut waiting = collapse_dir_moves(renames, local_dirs, &tree.dirs, &tree.base);
    let mut out: Vec<Move> = Vec::new();
    // A move may free the target of another, and nothing may be moved into a directory that
    // is still to move away: take the next move that can go now, until none can (those left
    // sync as uploads and deletions).
    loop {
        let next = (0..waiting.len()).find_map(|i| {
            let (from, to) = &waiting[i];
            // Into a directory still to move away, below another move's target (that move
            // makes the directory), or onto a path something still has to move away from
            // (even if the server no longer holds it there: moving onto it would take that
            // move's base, and the move would then carry the wrong file).
            let blocked = waiting
                .iter()
                .enumerate()
                .any(|(j, (f, t))| j != i && (at_or_under(to, f) || is_under(to, t) || at_or_under(f, to)));
            if blocked {
                return None;
            }
            tree.can_move(from, to).map(|directory| (i, directory))
        });
        let Some((i, directory)) = next else {
            return out;
        };
        let (from, to) = waiting.remove(i);
        let m = Move { from, to, directory };
        tree.apply(&m);
        out.push(m);
    }
}

/// Turns file renames that are really one directory rename into that directory's move: every
/// synced file below the old directory went to the same place below the new one, and the old
/// directory is gone here.
fn collapse_dir_moves(
    renames: &[(String, String)],
    local_dirs: &BTreeSet<String>,
    remote_dirs: &BTreeSet<String>,
    base: &BTreeMap<Key, Entry>,
) -> Vec<(String, String)> {
    let map: BTreeMap<&str, &str> = renames.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let mut dir_moves: BTreeMap<String, String> = BTreeMap::new();
    for (from, to) in renames {
        let (fp, tp): (Vec<&str>, Vec<&str>) = (from.split('/').collect(), to.split('/').collect());
        let common = fp
            .iter()
            .rev()
            .zip(tp.iter().rev())
            .take_while(|(a, b)| a == b)
            .count();
        // The deepest directory pair with the same contents below it, if any.
        for k in (1..=common).rev() {
            let (od, nd) = (fp[..fp.len() - k].join("/"), tp[..tp.len() - k].join("/"));
            if od.is_empty() || nd.is_empty() || od == nd || is_under(&nd, &od) || is_under(&od, &nd) {
                continue;
            }
            if local_dirs.contains(&od) || !remote_dirs.contains(&od) || remote_dirs.contains(&nd) {
                continue;
            }
            if dir_moves.iter().any(|(o, n)| *n == nd && *o != od) {
                continue;
            }
            let all_moved = base
                .iter()
                .filter(|(p, e)| e.base.is_some() && is_under(p, &od))
                .all(|(p, _)| {
                    map.get(&**p)
                        .is_some_and(|t| *t == format!("{nd}{}", &p[od.len()..]))
                });
            if all_moved {
                dir_moves.insert(od, nd);
                break;
            }
        }
    }
    // A directory moved into another moved directory's target where that one brings a
    // directory or file of the same name along (`d1 → d2/d2/d1` beside `d3 → d2/d2` with a
    // `d3/d1`) would land on it: its files move one by one instead.
    let lands_on_another = |od: &str, nd: &str| {
        dir_moves.iter().any(|(o, n)| {
            let mapped = is_under(nd, n).then(|| format!("{o}{}", &nd[n.len()..]));
            mapped.is_some_and(|m| {
                m != od
                    && (remote_dirs.contains(&m) || base.get(m.as_str()).is_some_and(|e| e.base.is_some()))
            })
        })
    };
    let dir_moves: BTreeMap<String, String> = dir_moves
        .iter()
        .filter(|(od, nd)| !lands_on_another(od, nd))
        .map(|(a, b)| (a.clone(), b.clone()))
        .collect();
    // Keep the outermost directory moves only.
    let outer: Vec<(String, String)> = dir_moves
        .iter()
        .filter(|(od, _)| !dir_moves.keys().any(|o| is_under(od, o)))
        .map(|(a, b)| (a.clone(), b.clone()))
        .collect();
    let mut out = outer.clone();
    for (from, to) in renames {
        if !outer.iter().any(|(od, _)| is_under(from, od)) {
            out.push((from.clone(), to.clone()));
        }
    }
    out
}

/// Case/normalization clashes: a download (or a directory to create here) must not land on
/// another name's file. Takes them out of the plan and lists them.
///
/// Every name here (the folder's and the incoming ones) is reduced to a 64-bit hash of its
/// fold, and only the names whose hash is shared are folded again and compared: a map from
/// every name's fold to the name took 12 MB at 100,000 files, on every pass that downloads
/// anything. A local name holds its fold; otherwise the first incoming one does.
fn clashes(sc: &Scan, p: &mut Plan) -> Vec<Clash> {
    if p.downloads.is_empty() && p.create_dirs_local.is_empty() {
        return Vec::new();
    }
    let local = || {
        sc.files
            .keys()
            .map(|k| &**k)
            .chain(sc.dirs.iter().map(String::as_str))
    };
    let is_local = |n: &str| sc.files.contains_key(n) || sc.dirs.contains(n);
    let incoming = p
        .downloads
        .iter()
        .chain(p.create_dirs_local.iter())
        .map(String::as_str);
    let hash = |n: &str| volebarn_core::Xxh3::of(folded(n).as_bytes()).0;
    let mut hashes: Vec<u64> = local()
        .chain(incoming.clone().filter(|n| !is_local(n)))
        .map(hash)
        .collect();
    hashes.sort_unstable();
    let shared: BTreeSet<u64> = hashes.windows(2).filter(|w| w[0] == w[1]).map(|w| w[0]).collect();
    drop(hashes);
    if shared.is_empty() {
        return Vec::new();
    }
    // The holder of each contested fold.
    let mut taken: BTreeMap<Cow<str>, &str> = BTreeMap::new();
    for n in local().filter(|n| shared.contains(&hash(n))) {
        taken.entry(folded(n)).or_insert(n);
    }
    let mut out = Vec::new();
    for d in incoming.filter(|n| shared.contains(&hash(n))) {
        match taken.entry(folded(d)) {
            std::collections::btree_map::Entry::Occupied(o) if *o.get() != d => out.push(Clash {
                path: d.to_string(),
                clashes_with: o.get().to_string(),
            }),
            std::collections::btree_map::Entry::Occupied(_) => {}
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(d);
            }
        }
    }
    drop(taken);
    if !out.is_empty() {
        let clashing: BTreeSet<String> = out.iter().map(|c| c.path.clone()).collect();
        p.downloads.retain(|d| !clashing.contains(d));
        p.create_dirs_local.retain(|d| !clashing.contains(d));
    }
    out
}

/// [`fold`], borrowing `path` when it is folded already (the common case: no capitals).
fn folded(path: &str) -> Cow<'_, str> {
    if path.is_ascii() && !path.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(fold(path))
    }
}

/// Directories synced last time and gone from one side since: deleted there, so to be
/// deleted on the other — unless the other side has something new inside (a file the plan
/// does not delete, a directory never synced, a move's target): then it is kept (re-created).
/// Takes them out of the plan's directory creations.
fn dir_deletions(
    sc: &Scan,
    index: &BTreeMap<Key, Entry>,
    remote_files: &BTreeMap<Key, RemoteState>,
    remote_dirs: &BTreeSet<String>,
    plan: &mut Plan,
) {
    let synced = |d: &str| index.get(d).is_some_and(|e| e.dir);
    // What lies below a directory is found by a range scan of each sorted map, and the plan's
    // lists are asked through sets made when first needed: a directory deleted with 10,000
    // files in a folder of 100,000 cost a walk of every path and, for each of its files, one
    // of the planned deletions.
    let new_dir_below = |dirs: &BTreeSet<String>, d: &str| set_below(dirs, d).any(|s| !synced(s));
    let moved_in = |d: &str| plan.moves.iter().any(|m| at_or_under(&m.to, d));
    fn set(l: &[String]) -> BTreeSet<&str> {
        l.iter().map(String::as_str).collect()
    }
    let (deleting_remote, deleting_local, held, downloads) = (
        std::cell::OnceCell::new(),
        std::cell::OnceCell::new(),
        std::cell::OnceCell::new(),
        std::cell::OnceCell::new(),
    );
    let mut remote_del = Vec::new();
    let mut local_del = Vec::new();
    for d in index.iter().filter(|(_, e)| e.dir).map(|(p, _)| &**p) {
        if sc.is_skipped(d) {
            continue;
        }
        let (here, there) = (sc.dirs.contains(d), remote_dirs.contains(d));
        if !here && there {
            let deleting = deleting_remote.get_or_init(|| set(&plan.deletes_remote));
            let busy = keys_below(remote_files, d).any(|p| !deleting.contains(p))
                || keys_below(&sc.files, d).next().is_some()
                || set_below(held.get_or_init(|| set(&plan.held_deletions)), d)
                    .next()
                    .is_some()
                || new_dir_below(remote_dirs, d)
                || moved_in(d);
            if !busy {
                remote_del.push(d.to_string());
            }
        } else if here && !there {
            let deleting = deleting_local.get_or_init(|| set(&plan.deletes_local));
            let busy = keys_below(&sc.files, d).any(|p| !deleting.contains(p))
                || set_below(downloads.get_or_init(|| set(&plan.downloads)), d)
                    .next()
                    .is_some()
                || new_dir_below(&sc.dirs, d)
                || moved_in(d);
            if !busy {
                local_del.push(d.to_string());
            }
        }
    }
    plan.create_dirs_local
        .retain(|c| !remote_del.iter().any(|d| at_or_under(c, d)));
    plan.create_dirs_remote
        .retain(|c| !local_del.iter().any(|d| at_or_under(c, d)));
    plan.dir_deletes_remote = remote_del;
    plan.dir_deletes_local = local_del;
}

/// The keys of a sorted map that lie below directory `d` ([`crate::scan::covered`], without
/// `d` itself).
fn keys_below<'a, K: Ord + Borrow<str>, V>(
    map: &'a BTreeMap<K, V>,
    d: &'a str,
) -> impl Iterator<Item = &'a str> {
    crate::scan::covered(map, d)
        .map(|(k, _)| k.borrow())
        .filter(move |k| is_under(k, d))
}

/// [`keys_below`] for a set.
fn set_below<'a, K: Ord + Borrow<str>>(set: &'a BTreeSet<K>, d: &'a str) -> impl Iterator<Item = &'a str> {
    crate::scan::covered_in(set, d)
        .map(|k| k.borrow())
        .filter(move |k| is_under(k, d))
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
