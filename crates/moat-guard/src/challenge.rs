//! The `WWW-Authenticate: Bearer …` challenge (RFC 6750 §3) with the RFC 9728 §5.1
//! `resource_metadata` parameter the MCP authorization spec requires.
//!
//! Shapes produced (MCP authorization spec, "Protected Resource Metadata Discovery" and
//! "Scope Challenge Handling"):
//! - no token: `Bearer resource_metadata="…", scope="…"` (RFC 6750 §3.1: no error code when the
//!   request carried no authentication);
//! - bad token: the same plus `error="invalid_token", error_description="…"`;
//! - missing scope (403): `Bearer error="insufficient_scope", scope="…", resource_metadata="…",
//!   error_description="…"`.
//!
//! `error_description` is restricted to the RFC 6750 §3 character set
//! (`%x20-21 / %x23-5B / %x5D-7E`, so no quotes or backslashes) and additionally never contains
//! `=`: at least one MCP client parses the header with a `key=value` regex and would mistake
//! text like `exp=123` for a parameter.

use crate::scope::is_scope_token;

/// A Bearer challenge; render it with [`BearerChallenge::header_value`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BearerChallenge {
    /// RFC 6750 §3.1 error code: `invalid_request`, `invalid_token` or `insufficient_scope`.
    pub error: Option<&'static str>,
    /// Human-readable detail (sanitised when rendered).
    pub error_description: Option<String>,
    /// Scopes to request (RFC 6750 §3 `scope`); invalid scope-tokens are dropped.
    pub scope: Vec<String>,
    /// URL of the protected resource metadata (RFC 9728 §5.1).
    pub resource_metadata: Option<String>,
}

/// Makes `text` safe as an RFC 6750 `error_description`: only `%x20-21 / %x23-5B / %x5D-7E`,
/// no `=`, whitespace collapsed, at most 200 characters.
pub fn sanitize_description(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(200));
    let mut last_space = true;
    for c in text.chars() {
        let c = if c.is_whitespace() || c == '=' { ' ' } else { c };
        let allowed = c == ' ' || c == '!' || (('#'..='[').contains(&c) || (']'..='~').contains(&c));
        if !allowed {
            continue;
        }
        if c == ' ' {
            if last_space {
                continue;
            }
            last_space = true;
        } else {
            last_space = false;
        }
        if out.len() >= 200 {
            break;
        }
        out.push(c);
    }
    out.trim_end().to_owned()
}

/// Drops characters that cannot appear in a quoted-string without escaping.
fn quoted_safe(value: &str) -> String {
    value.chars().filter(|c| *c != '"' && *c != '\\' && !c.is_control()).collect()
}

impl BearerChallenge {
    /// `401` for a request without a token: only `resource_metadata` and `scope`.
    pub fn missing_token(resource_metadata: impl Into<String>, scope: &[String]) -> Self {
        Self { resource_metadata: Some(resource_metadata.into()), scope: scope.to_vec(), ..Self::default() }
    }

    /// `401` for a token that failed validation.
    pub fn invalid_token(
        resource_metadata: impl Into<String>,
        scope: &[String],
        description: impl Into<String>,
    ) -> Self {
        Self {
            error: Some("invalid_token"),
            error_description: Some(description.into()),
            ..Self::missing_token(resource_metadata, scope)
        }
    }

    /// `401` for a malformed request (e.g. a token in the query string, RFC 6750 §3.1).
    pub fn invalid_request(
        resource_metadata: impl Into<String>,
        scope: &[String],
        description: impl Into<String>,
    ) -> Self {
        Self {
            error: Some("invalid_request"),
            error_description: Some(description.into()),
            ..Self::missing_token(resource_metadata, scope)
        }
    }

    /// `403` for a valid token without the scopes the operation needs. `scope` must list every
    /// scope the operation needs, including ones the client already holds, because some clients
    /// request exactly the challenged scopes on step-up.
    pub fn insufficient_scope(
        resource_metadata: impl Into<String>,
        scope: &[String],
        description: impl Into<String>,
    ) -> Self {
        Self {
            error: Some("insufficient_scope"),
            error_description: Some(description.into()),
            ..Self::missing_token(resource_metadata, scope)
        }
    }

    /// Renders the header value.
    pub fn header_value(&self) -> String {
        let mut params: Vec<(&str, String)> = Vec::with_capacity(4);
        let scope: Vec<&str> = self.scope.iter().map(String::as_str).filter(|s| is_scope_token(s)).collect();
        let scope = (!scope.is_empty()).then(|| scope.join(" "));
        let metadata = self.resource_metadata.as_deref().map(quoted_safe);
        let error = self.error.map(quoted_safe);
        let description = self.error_description.as_deref().map(sanitize_description).filter(|d| !d.is_empty());
        if self.error == Some("insufficient_scope") {
            // The error first, as the MCP spec's scope-challenge example shows it.
            params.extend(error.map(|e| ("error", e)));
            params.extend(scope.map(|s| ("scope", s)));
            params.extend(metadata.map(|m| ("resource_metadata", m)));
        } else {
            params.extend(metadata.map(|m| ("resource_metadata", m)));
            params.extend(scope.map(|s| ("scope", s)));
            params.extend(error.map(|e| ("error", e)));
        }
        params.extend(description.map(|d| ("error_description", d)));
        let rendered: Vec<String> = params.into_iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        if rendered.is_empty() { "Bearer".to_owned() } else { format!("Bearer {}", rendered.join(", ")) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRM: &str = "https://m.example/.well-known/oauth-protected-resource/mcp";

    fn scopes(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn missing_token_has_no_error() {
        let c = BearerChallenge::missing_token(PRM, &scopes(&["todo:read", "todo:write"]));
        assert_eq!(c.header_value(), format!(r#"Bearer resource_metadata="{PRM}", scope="todo:read todo:write""#));
    }

    #[test]
    fn invalid_token_adds_error() {
        let c = BearerChallenge::invalid_token(PRM, &scopes(&["todo:read"]), "token has expired");
        assert_eq!(
            c.header_value(),
            format!(
                r#"Bearer resource_metadata="{PRM}", scope="todo:read", error="invalid_token", error_description="token has expired""#
            )
        );
    }

    #[test]
    fn insufficient_scope_puts_error_first() {
        let c = BearerChallenge::insufficient_scope(
            PRM,
            &scopes(&["todo:read", "todo:write"]),
            "token lacks a scope this operation needs: todo:read todo:write",
        );
        assert_eq!(
            c.header_value(),
            format!(
                r#"Bearer error="insufficient_scope", scope="todo:read todo:write", resource_metadata="{PRM}", error_description="token lacks a scope this operation needs: todo:read todo:write""#
            )
        );
    }

    #[test]
    fn descriptions_are_sanitised() {
        assert_eq!(sanitize_description("exp=123 \"x\"\\y\n z"), "exp 123 xy z");
        assert_eq!(sanitize_description("é ü ok"), "ok");
        assert!(sanitize_description(&"a".repeat(500)).len() <= 200);
        let c = BearerChallenge::invalid_token(PRM, &[], "a=b, c=\"d\"");
        let v = c.header_value();
        assert!(v.ends_with(r#"error_description="a b, c d""#), "{v}");
        // No key=value text inside the description.
        let desc = v.split("error_description=").nth(1).unwrap_or_default();
        assert!(!desc.trim_matches('"').contains('='));
    }

    #[test]
    fn invalid_scopes_and_quotes_are_dropped() {
        let c = BearerChallenge {
            scope: scopes(&["ok", "bad\"scope", ""]),
            resource_metadata: Some("https://x/\"y".into()),
            ..BearerChallenge::default()
        };
        assert_eq!(c.header_value(), r#"Bearer resource_metadata="https://x/y", scope="ok""#);
        assert_eq!(BearerChallenge::default().header_value(), "Bearer");
    }
}
