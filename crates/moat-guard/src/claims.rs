//! [`Claims`]: the verified contents of an RFC 9068 access token, with typed accessors for the
//! registered claims (RFC 9068 §2.2, RFC 7519 §4.1), the parsed scope set, and the raw JSON for
//! custom claims (`oid`, `custom_claims`, …).
//!
//! `Claims` is an `Arc` inside, so the token cache and request extensions clone it cheaply.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::error::ValidationError;
use crate::scope::{ScopeHierarchy, parse_scope};

/// The verified claims of an access token.
#[derive(Clone)]
pub struct Claims(Arc<Inner>);

struct Inner {
    iss: String,
    sub: String,
    aud: Vec<String>,
    client_id: String,
    scopes: BTreeSet<String>,
    effective: BTreeSet<String>,
    iat: i64,
    nbf: Option<i64>,
    exp: i64,
    jti: String,
    sid: Option<String>,
    auth_time: Option<i64>,
    raw: Map<String, Value>,
}

impl std::fmt::Debug for Claims {
    // Only identifiers and times: custom claims may carry personal data.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claims")
            .field("iss", &self.0.iss)
            .field("sub", &self.0.sub)
            .field("aud", &self.0.aud)
            .field("client_id", &self.0.client_id)
            .field("scopes", &self.0.scopes)
            .field("exp", &self.0.exp)
            .field("jti", &self.0.jti)
            .finish_non_exhaustive()
    }
}

/// A NumericDate (RFC 7519 §2): seconds since the epoch, possibly fractional (floored).
fn numeric_date(raw: &Map<String, Value>, name: &'static str) -> Result<Option<i64>, ValidationError> {
    match raw.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_i64()
            .or_else(|| v.as_f64().filter(|f| f.is_finite() && f.abs() < 1e15).map(|f| f.floor() as i64))
            .map(Some)
            .ok_or(ValidationError::InvalidClaim(name)),
    }
}

fn string(raw: &Map<String, Value>, name: &'static str) -> Result<Option<String>, ValidationError> {
    match raw.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ValidationError::InvalidClaim(name)),
    }
}

fn required<T>(v: Option<T>, name: &'static str) -> Result<T, ValidationError> {
    v.ok_or(ValidationError::MissingClaim(name))
}

/// `aud` as RFC 7519 §4.1.3 allows it: one string or an array of strings.
pub(crate) fn audiences(raw: &Map<String, Value>) -> Result<Vec<String>, ValidationError> {
    match raw.get("aud") {
        None => Err(ValidationError::MissingClaim("aud")),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => {
            items.iter().map(|i| i.as_str().map(str::to_owned).ok_or(ValidationError::InvalidClaim("aud"))).collect()
        }
        Some(_) => Err(ValidationError::InvalidClaim("aud")),
    }
}

impl Claims {
    /// Builds claims from a payload whose signature, issuer and audience were already checked.
    /// Requires the claims RFC 9068 §2.2 makes mandatory.
    pub(crate) fn from_verified(
        raw: Map<String, Value>,
        aud: Vec<String>,
        hierarchy: &ScopeHierarchy,
    ) -> Result<Self, ValidationError> {
        let iss = required(string(&raw, "iss")?, "iss")?;
        let sub = required(string(&raw, "sub")?, "sub")?;
        let client_id = required(string(&raw, "client_id")?, "client_id")?;
        let jti = required(string(&raw, "jti")?, "jti")?;
        let exp = required(numeric_date(&raw, "exp")?, "exp")?;
        let iat = required(numeric_date(&raw, "iat")?, "iat")?;
        let nbf = numeric_date(&raw, "nbf")?;
        let auth_time = numeric_date(&raw, "auth_time")?;
        let sid = string(&raw, "sid")?;
        let scopes = match string(&raw, "scope")? {
            None => BTreeSet::new(),
            Some(s) => parse_scope(&s).ok_or(ValidationError::InvalidClaim("scope"))?,
        };
        let effective = hierarchy.expand(scopes.iter());
        Ok(Self(Arc::new(Inner {
            iss,
            sub,
            aud,
            client_id,
            scopes,
            effective,
            iat,
            nbf,
            exp,
            jti,
            sid,
            auth_time,
            raw,
        })))
    }

    /// `iss`: the issuer (for Moat, `{base}/resources/{res_id}`).
    pub fn iss(&self) -> &str {
        &self.0.iss
    }

    /// `sub`: the user id (`usr_…`), or the client id for client-credentials tokens.
    pub fn sub(&self) -> &str {
        &self.0.sub
    }

    /// `aud`, always as a list.
    pub fn aud(&self) -> &[String] {
        &self.0.aud
    }

    /// `client_id`: the OAuth client the token was issued to.
    pub fn client_id(&self) -> &str {
        &self.0.client_id
    }

    /// The scopes exactly as granted (the `scope` claim, split on spaces).
    pub fn scopes(&self) -> &BTreeSet<String> {
        &self.0.scopes
    }

    /// The granted scopes plus everything they imply under the validator's hierarchy.
    pub fn effective_scopes(&self) -> &BTreeSet<String> {
        &self.0.effective
    }

    /// True when the token grants `scope`, directly or through the hierarchy.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.0.effective.contains(scope)
    }

    /// `Ok` when every scope in `needed` is granted; otherwise
    /// [`ValidationError::InsufficientScope`] listing all of `needed` (RFC 6750 §3.1 asks the
    /// challenge to name the scopes necessary for the resource, not only the missing ones).
    pub fn require_scopes<S: AsRef<str>>(&self, needed: &[S]) -> Result<(), ValidationError> {
        if needed.iter().all(|s| self.has_scope(s.as_ref())) {
            Ok(())
        } else {
            Err(ValidationError::InsufficientScope { needed: needed.iter().map(|s| s.as_ref().to_owned()).collect() })
        }
    }

    /// `iat` (seconds since the epoch).
    pub fn iat(&self) -> i64 {
        self.0.iat
    }

    /// `nbf`, when present.
    pub fn nbf(&self) -> Option<i64> {
        self.0.nbf
    }

    /// `exp` (seconds since the epoch).
    pub fn exp(&self) -> i64 {
        self.0.exp
    }

    /// `jti`: the token's unique id.
    pub fn jti(&self) -> &str {
        &self.0.jti
    }

    /// `sid`: Moat's login session, when the token came from an interactive login.
    pub fn sid(&self) -> Option<&str> {
        self.0.sid.as_deref()
    }

    /// `auth_time`, when present.
    pub fn auth_time(&self) -> Option<i64> {
        self.0.auth_time
    }

    /// Any claim by name, e.g. `oid` or `custom_claims`.
    pub fn claim(&self, name: &str) -> Option<&Value> {
        self.0.raw.get(name)
    }

    /// The whole verified payload.
    pub fn raw(&self) -> &Map<String, Value> {
        &self.0.raw
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value, h: &ScopeHierarchy) -> Result<Claims, ValidationError> {
        let Value::Object(map) = v else {
            return Err(ValidationError::Malformed("test"));
        };
        let aud = audiences(&map)?;
        Claims::from_verified(map, aud, h)
    }

    fn base() -> Value {
        json!({"iss":"https://a/resources/res_1","sub":"usr_1","aud":"https://m/mcp",
               "client_id":"c","jti":"j","iat":1,"exp":2,"scope":"todo:write","oid":"org_1"})
    }

    #[test]
    fn typed_claims_and_scope_hierarchy() {
        let h = ScopeHierarchy::new().with_implication("todo:write", "todo:read");
        let c = claims(base(), &h).map_err(|e| e.to_string());
        let Ok(c) = c else { unreachable!("claims must parse: {c:?}") };
        assert_eq!(c.aud(), ["https://m/mcp".to_owned()]);
        assert!(c.has_scope("todo:read"));
        assert!(c.has_scope("todo:write"));
        assert!(!c.scopes().contains("todo:read"));
        assert_eq!(c.claim("oid"), Some(&json!("org_1")));
        assert_eq!(c.require_scopes(&["todo:read"]), Ok(()));
        let flat = claims(base(), &ScopeHierarchy::new()).map_err(|e| e.to_string());
        assert_eq!(
            flat.map(|c| c.require_scopes(&["todo:read", "todo:write"])),
            Ok(Err(ValidationError::InsufficientScope { needed: vec!["todo:read".into(), "todo:write".into()] }))
        );
    }

    #[test]
    fn claim_types_are_checked() {
        let h = ScopeHierarchy::new();
        for (name, value, want) in [
            ("exp", json!("soon"), ValidationError::InvalidClaim("exp")),
            ("sub", json!(5), ValidationError::InvalidClaim("sub")),
            ("aud", json!([1]), ValidationError::InvalidClaim("aud")),
            ("scope", json!("a \"b"), ValidationError::InvalidClaim("scope")),
        ] {
            let mut v = base();
            v[name] = value;
            assert_eq!(claims(v, &h).err(), Some(want), "{name}");
        }
        for name in ["sub", "client_id", "jti", "iat", "exp", "aud"] {
            let mut v = base();
            v.as_object_mut().map(|o| o.remove(name));
            assert_eq!(claims(v, &h).err(), Some(ValidationError::MissingClaim(name)), "{name}");
        }
        let mut v = base();
        v["exp"] = json!(2.9);
        assert_eq!(claims(v, &h).map(|c| c.exp()).ok(), Some(2));
    }
}
