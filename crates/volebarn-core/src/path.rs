//! Validated API paths ([docs/design.md](docs/design.md) §2): parse once at the edge, trust afterwards.

use std::fmt;

/// Longest accepted path, in bytes.
pub const MAX_PATH_BYTES: usize = 4096;
/// Longest accepted path component, in bytes.
pub const MAX_COMPONENT_BYTES: usize = 255;
/// Deepest accepted path, in components.
pub const MAX_DEPTH: usize = 256;

/// Why a path was rejected; shown to the user in the `invalid_path` error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path component '{0}' is not allowed")]
    DotComponent(String),
    #[error("path contains an empty component")]
    EmptyComponent,
    #[error("path contains a control character")]
    ControlCharacter,
    #[error("path contains a backslash")]
    Backslash,
    #[error("path component is longer than {MAX_COMPONENT_BYTES} bytes")]
    ComponentTooLong,
    #[error("path is longer than {MAX_PATH_BYTES} bytes")]
    TooLong,
    #[error("path is deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("the root directory is not allowed here")]
    Root,
}

/// A relative, `/`-separated, validated path. The empty path is the root directory.
///
/// Stored byte-exact: no Unicode normalization, case-sensitive.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct VPath(String);

impl VPath {
    /// The root directory.
    pub fn root() -> Self {
        VPath(String::new())
    }

    /// Validates `raw` (already percent-decoded). One leading `/` and one trailing `/` are
    /// accepted and dropped; everything else that docs/design.md §2 forbids is rejected.
    pub fn parse(raw: &str) -> Result<Self, PathError> {
        let s = raw.strip_prefix('/').unwrap_or(raw);
        let s = s.strip_suffix('/').unwrap_or(s);
        if s.is_empty() {
            return Ok(VPath::root());
        }
        if s.len() > MAX_PATH_BYTES {
            return Err(PathError::TooLong);
        }
        let mut depth = 0;
        for comp in s.split('/') {
            depth += 1;
            if comp.is_empty() {
                return Err(PathError::EmptyComponent);
            }
            if comp == "." || comp == ".." {
                return Err(PathError::DotComponent(comp.to_string()));
            }
            if comp.len() > MAX_COMPONENT_BYTES {
                return Err(PathError::ComponentTooLong);
            }
            if comp.chars().any(char::is_control) {
                return Err(PathError::ControlCharacter);
            }
            if comp.contains('\\') {
                return Err(PathError::Backslash);
            }
        }
        if depth > MAX_DEPTH {
            return Err(PathError::TooDeep);
        }
        Ok(VPath(s.to_string()))
    }

    /// Like [`VPath::parse`] but rejects the root: files always have a name.
    pub fn parse_non_root(raw: &str) -> Result<Self, PathError> {
        let p = Self::parse(raw)?;
        if p.is_root() {
            return Err(PathError::Root);
        }
        Ok(p)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The last component (empty for the root).
    pub fn name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or("")
    }

    /// The parent directory; `None` for the root.
    pub fn parent(&self) -> Option<VPath> {
        if self.is_root() {
            return None;
        }
        Some(match self.0.rfind('/') {
            Some(i) => VPath(self.0[..i].to_string()),
            None => VPath::root(),
        })
    }

    /// Every proper ancestor, nearest the root first, excluding the root itself.
    pub fn ancestors(&self) -> Vec<VPath> {
        let mut out = Vec::new();
        let mut cur = self.parent();
        while let Some(p) = cur {
            if p.is_root() {
                break;
            }
            cur = p.parent();
            out.push(p);
        }
        out.reverse();
        out
    }

    /// `self/name`; `name` must be a valid single component.
    pub fn join(&self, name: &str) -> Result<VPath, PathError> {
        if self.is_root() {
            VPath::parse_non_root(name)
        } else {
            VPath::parse_non_root(&format!("{}/{}", self.0, name))
        }
    }

    /// True when `self` is `other` or lies below it.
    pub fn starts_with(&self, other: &VPath) -> bool {
        other.is_root()
            || self.0 == other.0
            || (self.0.starts_with(&other.0) && self.0.as_bytes().get(other.0.len()) == Some(&b'/'))
    }

    /// Number of components (0 for the root).
    pub fn depth(&self) -> usize {
        if self.is_root() {
            0
        } else {
            self.0.split('/').count()
        }
    }
}

impl fmt::Display for VPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for VPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VPath({:?})", self.0)
    }
}

impl AsRef<str> for VPath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_normalizes_leading_slash() {
        assert_eq!(VPath::parse("/a/b.txt").unwrap().as_str(), "a/b.txt");
        assert_eq!(VPath::parse("a/b.txt").unwrap().as_str(), "a/b.txt");
        assert!(VPath::parse("/").unwrap().is_root());
        assert!(VPath::parse("").unwrap().is_root());
        assert_eq!(VPath::parse("dir/").unwrap().as_str(), "dir");
    }

    #[test]
    fn rejects_every_bad_class() {
        for bad in [
            "..", "a/../b", "./a", "a/.", "a//b", "a\0b", "a\nb", "a\\b", "//a",
        ] {
            assert!(VPath::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert_eq!(VPath::parse(&"x".repeat(256)), Err(PathError::ComponentTooLong));
        assert!(VPath::parse(&"x".repeat(255)).is_ok());
        let deep = vec!["d"; 257].join("/");
        assert_eq!(VPath::parse(&deep), Err(PathError::TooDeep));
        let long = vec!["y".repeat(200); 21].join("/");
        assert_eq!(VPath::parse(&long), Err(PathError::TooLong));
        assert_eq!(VPath::parse_non_root("/"), Err(PathError::Root));
    }

    #[test]
    fn unicode_and_spaces_are_kept_byte_exact() {
        let p = VPath::parse("Fotos 2024/Größe #1 (copy) & ü.txt").unwrap();
        assert_eq!(p.name(), "Größe #1 (copy) & ü.txt");
        assert_eq!(p.parent().unwrap().as_str(), "Fotos 2024");
    }

    #[test]
    fn ancestors_and_prefixes() {
        let p = VPath::parse("a/b/c").unwrap();
        let anc: Vec<_> = p.ancestors().iter().map(|a| a.to_string()).collect();
        assert_eq!(anc, ["a", "a/b"]);
        assert!(p.starts_with(&VPath::parse("a/b").unwrap()));
        assert!(!VPath::parse("a/bc")
            .unwrap()
            .starts_with(&VPath::parse("a/b").unwrap()));
        assert!(p.starts_with(&VPath::root()));
        assert_eq!(p.depth(), 3);
    }
}
