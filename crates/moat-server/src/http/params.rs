//! `application/x-www-form-urlencoded` parameters (query strings and form bodies) with the
//! OAuth rules: a parameter may appear at most once (RFC 6749 §3.1, §3.2) and a parameter sent
//! without a value is treated as omitted (RFC 6749 §3.1).

use std::collections::HashMap;

use moat_core::OAuthError;

/// Most distinct parameters accepted in one request.
pub const MAX_PARAMS: usize = 64;
/// Longest single parameter value accepted.
pub const MAX_VALUE_LEN: usize = 8 * 1024;

/// Parsed parameters.
#[derive(Debug, Default, Clone)]
pub struct Params {
    values: HashMap<String, String>,
    duplicates: Vec<String>,
}

impl Params {
    /// Parses `input`, refusing too many parameters or oversized values.
    pub fn parse(input: &[u8]) -> Result<Self, OAuthError> {
        let mut p = Params::default();
        for (k, v) in form_urlencoded::parse(input) {
            if v.len() > MAX_VALUE_LEN || k.len() > 256 {
                return Err(OAuthError::invalid_request(format!("parameter {k} is too long")));
            }
            if v.is_empty() {
                // RFC 6749 §3.1: treated as if omitted; a repeat still counts as a duplicate.
                if p.values.contains_key(k.as_ref()) && !p.duplicates.iter().any(|d| d == &k) {
                    p.duplicates.push(k.into_owned());
                }
                continue;
            }
            if p.values.contains_key(k.as_ref()) {
                if !p.duplicates.iter().any(|d| d == &k) {
                    p.duplicates.push(k.into_owned());
                }
                continue;
            }
            if p.values.len() >= MAX_PARAMS {
                return Err(OAuthError::invalid_request("too many parameters"));
            }
            p.values.insert(k.into_owned(), v.into_owned());
        }
        Ok(p)
    }

    /// The value of `name`, if present and non-empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Whether `name` appeared more than once.
    pub fn is_duplicated(&self, name: &str) -> bool {
        self.duplicates.iter().any(|d| d == name)
    }

    /// Fails with `invalid_request` when any parameter appeared more than once.
    pub fn reject_duplicates(&self) -> Result<(), OAuthError> {
        match self.duplicates.first() {
            Some(d) => Err(OAuthError::invalid_request(format!("parameter {d} was given more than once"))),
            None => Ok(()),
        }
    }

    /// The value of a required parameter.
    pub fn required(&self, name: &str) -> Result<&str, OAuthError> {
        self.get(name).ok_or_else(|| OAuthError::invalid_request(format!("missing parameter {name}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_values_are_omitted_and_duplicates_detected() {
        let p = Params::parse(b"a=1&b=&c=x&c=y&b=").unwrap();
        assert_eq!(p.get("a"), Some("1"));
        assert_eq!(p.get("b"), None);
        assert!(p.is_duplicated("c"));
        assert_eq!(p.get("c"), Some("x"));
        assert!(p.reject_duplicates().is_err());
        assert!(Params::parse(b"a=1&b=2").unwrap().reject_duplicates().is_ok());
    }

    #[test]
    fn decodes_percent_and_plus() {
        let p = Params::parse(b"scope=todo%3Aread+todo%3Awrite").unwrap();
        assert_eq!(p.get("scope"), Some("todo:read todo:write"));
    }

    #[test]
    fn limits() {
        let long = format!("a={}", "x".repeat(MAX_VALUE_LEN + 1));
        assert!(Params::parse(long.as_bytes()).is_err());
        let many: Vec<String> = (0..=MAX_PARAMS).map(|i| format!("p{i}=1")).collect();
        assert!(Params::parse(many.join("&").as_bytes()).is_err());
    }
}
