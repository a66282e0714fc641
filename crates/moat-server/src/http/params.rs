//! `application/x-www-form-urlencoded` parameters (query strings and form bodies) with the
//! OAuth rules: a parameter may appear at most once (RFC 6749 §3.1, §3.2) and a parameter sent
//! without a value is treated as omitted (RFC 6749 §3.1).

use std::collections::HashMap;

use moat_core::OAuthError;

/// Most distinct parameters accepted in one request.
pub const MAX_PARAMS: usize = 64;
/// Longest single parameter value accepted.
pub const MAX_VALUE_LEN: usize = 8 * 1024;
/// Longest parameter name accepted.
pub const MAX_NAME_LEN: usize = 256;

/// One `application/x-www-form-urlencoded` name or value: `+` is a space, `%XX` a byte; the
/// result must be UTF-8 without NUL.
fn decode(raw: &[u8]) -> Result<String, OAuthError> {
    let spaced: Vec<u8> = raw.iter().map(|&b| if b == b'+' { b' ' } else { b }).collect();
    let bytes: Vec<u8> = percent_encoding::percent_decode(&spaced).collect();
    let text = String::from_utf8(bytes).map_err(|_| OAuthError::invalid_request("a parameter is not valid UTF-8"))?;
    if text.contains('\0') {
        return Err(OAuthError::invalid_request("a parameter contains a NUL character"));
    }
    Ok(text)
}

/// Parsed parameters.
#[derive(Debug, Default, Clone)]
pub struct Params {
    values: HashMap<String, String>,
    duplicates: Vec<String>,
}

impl Params {
    /// Parses `input`, refusing too many parameters, oversized values, bytes that are not
    /// UTF-8 once percent-decoded (a lossy decoding would change what the client sent, e.g. the
    /// `state` it expects back exactly) and NUL characters (no OAuth parameter holds one, and
    /// PostgreSQL text cannot store it).
    pub fn parse(input: &[u8]) -> Result<Self, OAuthError> {
        let mut p = Params::default();
        let mut seen: Vec<String> = Vec::new();
        for pair in input.split(|&b| b == b'&').filter(|pair| !pair.is_empty()) {
            let (k, v) = match pair.iter().position(|&b| b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &pair[pair.len()..]),
            };
            // Checked on the encoded form first, so no oversized value is ever decoded.
            if v.len() > 3 * MAX_VALUE_LEN || k.len() > 3 * MAX_NAME_LEN {
                return Err(OAuthError::invalid_request("a parameter is too long"));
            }
            let k = decode(k)?;
            let v = decode(v)?;
            if v.len() > MAX_VALUE_LEN || k.len() > MAX_NAME_LEN {
                return Err(OAuthError::invalid_request(format!("parameter {k} is too long")));
            }
            // Every name counts, empty or not: `a=&a=x` repeats `a` (RFC 6749 §3.1, §3.2).
            if seen.contains(&k) {
                if !p.duplicates.contains(&k) {
                    p.duplicates.push(k);
                }
                continue;
            }
            if seen.len() >= MAX_PARAMS {
                return Err(OAuthError::invalid_request("too many parameters"));
            }
            seen.push(k.clone());
            // RFC 6749 §3.1: a parameter sent without a value is treated as omitted.
            if !v.is_empty() {
                p.values.insert(k, v);
            }
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
        // An empty first copy still counts: the later value must not slip through as the only one.
        let p = Params::parse(b"grant_type=&grant_type=client_credentials").unwrap();
        assert!(p.is_duplicated("grant_type"));
        assert!(p.reject_duplicates().is_err());
    }

    #[test]
    fn refuses_invalid_utf8_and_nul() {
        assert!(Params::parse(b"state=%ff").is_err());
        assert!(Params::parse(b"state=a%00b").is_err());
        assert!(Params::parse(b"a%00=1").is_err());
        assert_eq!(Params::parse(b"state=%C3%A9").unwrap().get("state"), Some("\u{e9}"));
        // A lone name without `=` is a parameter without a value (omitted), as in the URL spec.
        let p = Params::parse(b"flag&a=1&&").unwrap();
        assert_eq!(p.get("flag"), None);
        assert_eq!(p.get("a"), Some("1"));
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
