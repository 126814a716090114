//! What is never synced: `.volebarn/`, our own download temp files, editor and OS scratch
//! files, and whatever `.volebarnignore` files (gitignore syntax, any directory) exclude.

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use std::path::Path;

pub const IGNORE_FILE: &str = ".volebarnignore";

/// Built-in patterns (gitignore syntax), applied before any `.volebarnignore`.
pub const DEFAULT_IGNORES: &[&str] = &[
    "/.volebarn/",
    // Our own downloads in progress.
    ".*.volebarn-*.tmp",
    // vim: swap files, backups, the `4913` write probe.
    "*.swp",
    "*.swo",
    "*.swx",
    "*~",
    "4913",
    // emacs: lock and autosave files.
    ".#*",
    "\\#*#",
    // Office and LibreOffice owner/lock files, Word's temp saves.
    "~$*",
    ".~lock.*#",
    "~*.tmp",
    // GNOME's atomic-save temp files.
    ".goutputstream-*",
    // OS litter.
    ".DS_Store",
    "Thumbs.db",
    "desktop.ini",
];

/// The built-in rules for the folder at `root`.
pub fn defaults(root: &Path) -> Gitignore {
    let mut b = GitignoreBuilder::new(root);
    for line in DEFAULT_IGNORES {
        // The patterns are constants and valid; a failure here would be a bug caught by tests.
        let _ = b.add_line(None, line);
    }
    b.build().unwrap_or_else(|_| Gitignore::empty())
}

/// True when `rel` (a `/`-separated path below the root) is ignored by the built-in rules;
/// the watcher uses it to drop events that cannot matter.
pub fn ignored_by_default(rules: &Gitignore, root: &Path, rel: &str, is_dir: bool) -> bool {
    if rel == ".volebarn" || rel.starts_with(".volebarn/") {
        return true;
    }
    let parts: Vec<&str> = rel.split('/').collect();
    let mut path = root.to_path_buf();
    for (i, part) in parts.iter().enumerate() {
        path.push(part);
        if rules.matched(&path, is_dir || i + 1 < parts.len()).is_ignore() {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn editor_scratch_files_and_state_are_ignored_but_real_files_are_not() {
        let root = Path::new("/sync");
        let r = defaults(root);
        for p in [
            ".volebarn",
            ".volebarn/index/LOG",
            ".notes.txt.swp",
            "docs/.report.md.swx",
            "docs/report.md~",
            "4913",
            "docs/~$budget.xlsx",
            "docs/.~lock.budget.ods#",
            "docs/~WRL0001.tmp",
            ".#notes.org",
            "#notes.org#",
            ".a.txt.volebarn-00ff00ff00ff00ff.tmp",
            "photos/.DS_Store",
        ] {
            assert!(ignored_by_default(&r, root, p, false), "{p} should be ignored");
        }
        for p in [
            "notes.txt",
            "docs/report.md",
            "docs/budget.xlsx",
            "sub/.volebarn",
            "a (conflict 2026-11-26 101010).txt",
            "swp",
            "archive.tmp",
        ] {
            assert!(!ignored_by_default(&r, root, p, false), "{p} should be synced");
        }
    }
}
