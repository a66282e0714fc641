//! Scopes: parsing the space-delimited `scope` claim (RFC 6749 §3.3, RFC 9068 §2.2.3) and an
//! opt-in hierarchy where one scope implies others (`todo:write` ⇒ `todo:read`).
//!
//! Moat grants exactly the scopes a client asked for; it knows nothing of implications. The
//! hierarchy is the resource server's own policy, applied when it checks a token's scopes.

use std::collections::{BTreeMap, BTreeSet};

/// True when `s` is a valid RFC 6749 §3.3 scope-token: `1*( %x21 / %x23-5B / %x5D-7E )`.
/// Such a token can be placed inside an RFC 7230 quoted-string without escaping.
pub fn is_scope_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

/// Parses a space-delimited scope string into a set. `None` when an entry is not a valid
/// scope-token (a token carrying such a scope is malformed).
pub fn parse_scope(s: &str) -> Option<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for part in s.split(' ').filter(|p| !p.is_empty()) {
        if !is_scope_token(part) {
            return None;
        }
        out.insert(part.to_owned());
    }
    Some(out)
}

/// Which scopes imply which others. Implications are transitive (`admin` ⇒ `write` ⇒ `read`
/// gives `admin` ⇒ `read`) and cycles are harmless.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeHierarchy {
    implies: BTreeMap<String, BTreeSet<String>>,
}

impl ScopeHierarchy {
    /// No implications: every scope stands for itself.
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares that holding `scope` also grants `implied`.
    pub fn with_implication(mut self, scope: impl Into<String>, implied: impl Into<String>) -> Self {
        self.add_implication(scope, implied);
        self
    }

    /// Declares that holding `scope` also grants `implied`.
    pub fn add_implication(&mut self, scope: impl Into<String>, implied: impl Into<String>) {
        self.implies.entry(scope.into()).or_default().insert(implied.into());
    }

    /// True when no implication is declared.
    pub fn is_empty(&self) -> bool {
        self.implies.is_empty()
    }

    /// The granted scopes plus everything they imply (transitive closure).
    pub fn expand<'a>(&self, granted: impl IntoIterator<Item = &'a String>) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = BTreeSet::new();
        let mut todo: Vec<&str> = granted.into_iter().map(String::as_str).collect();
        while let Some(scope) = todo.pop() {
            if out.insert(scope.to_owned())
                && let Some(implied) = self.implies.get(scope)
            {
                todo.extend(implied.iter().map(String::as_str));
            }
        }
        out
    }

    /// True when `granted` (already expanded or not) satisfies `needed`.
    pub fn satisfies(&self, granted: &BTreeSet<String>, needed: &str) -> bool {
        granted.contains(needed) || self.expand(granted.iter()).contains(needed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn parses_space_delimited_scopes() {
        assert_eq!(parse_scope("todo:read  todo:write"), Some(set(&["todo:read", "todo:write"])));
        assert_eq!(parse_scope(""), Some(BTreeSet::new()));
        assert_eq!(parse_scope("a \"b\""), None);
        assert_eq!(parse_scope("a\\b"), None);
        assert_eq!(parse_scope("a\tb"), None);
        assert_eq!(parse_scope("é"), None);
    }

    #[test]
    fn hierarchy_is_transitive_and_opt_in() {
        let none = ScopeHierarchy::new();
        assert!(!none.satisfies(&set(&["todo:write"]), "todo:read"));

        let h = ScopeHierarchy::new()
            .with_implication("todo:admin", "todo:write")
            .with_implication("todo:write", "todo:read");
        assert!(h.satisfies(&set(&["todo:write"]), "todo:read"));
        assert!(h.satisfies(&set(&["todo:admin"]), "todo:read"));
        assert!(!h.satisfies(&set(&["todo:read"]), "todo:write"));
        assert_eq!(h.expand(set(&["todo:admin"]).iter()), set(&["todo:admin", "todo:read", "todo:write"]));
    }

    #[test]
    fn cycles_terminate() {
        let h = ScopeHierarchy::new().with_implication("a", "b").with_implication("b", "a");
        assert_eq!(h.expand(set(&["a"]).iter()), set(&["a", "b"]));
    }
}
