//! Helpers for walking sorted collections of paths side by side: the sync planner compares
//! whole-folder maps, and a merge costs far less than a lookup per path.

use std::iter::Peekable;

/// Answers "is `key` there?" for keys asked in ascending order, walking the sorted `keys` once.
pub struct Cursor<I: Iterator> {
    keys: Peekable<I>,
}

impl<'a, I: Iterator<Item = &'a str>> Cursor<I> {
    pub fn new(keys: I) -> Self {
        Cursor {
            keys: keys.peekable(),
        }
    }

    /// Whether `key` is among the keys; every earlier call must have asked for a smaller or
    /// equal key.
    pub fn contains(&mut self, key: &str) -> bool {
        while let Some(k) = self.keys.peek() {
            match (*k).cmp(key) {
                std::cmp::Ordering::Less => {
                    self.keys.next();
                }
                std::cmp::Ordering::Equal => return true,
                std::cmp::Ordering::Greater => return false,
            }
        }
        false
    }
}

/// The parent directory of `path` (`""` at the top).
pub fn parent(path: &str) -> &str {
    path.rfind('/').map_or("", |i| &path[..i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_answers_ascending_questions_like_a_lookup() {
        let keys = ["a", "a/b", "a/c", "b", "d"];
        let asked = ["", "a", "a/b", "a/bb", "c", "d", "e"];
        let mut c = Cursor::new(keys.iter().copied());
        let answers: Vec<bool> = asked.iter().map(|k| c.contains(k)).collect();
        let expected: Vec<bool> = asked.iter().map(|k| keys.contains(k)).collect();
        assert_eq!(answers, expected);
        assert_eq!(parent("a/b/c"), "a/b");
        assert_eq!(parent("top"), "");
    }
}
