//! Validation of client registration metadata (RFC 7591 §2 and §3.2.2) for dynamic client
//! registration.
//!
//! Registration is anonymous (DESIGN.md §5), so everything here is untrusted input that ends up
//! stored, echoed back (RFC 7591 §3.2.1) and partly shown on the consent page. Every field
//! RFC 7591 §2 defines is type-checked and length-capped; unknown fields are kept verbatim
//! (requirements item 10: clients rely on their extensions being echoed).

use std::fmt::Write as _;

use aws_lc_rs::digest;
use serde_json::{Map, Value};

use crate::error::OAuthError;
use crate::model::{AuthMethod, GrantType};
use crate::redirect;
use crate::scope;
use crate::url::MAX_URL_LEN;

/// Most redirect URIs one client may register.
pub const MAX_REDIRECT_URIS: usize = 20;
/// Longest `client_name`.
pub const MAX_CLIENT_NAME_LEN: usize = 200;
/// Longest registered `scope` string.
pub const MAX_SCOPE_LEN: usize = 1000;
/// Most `contacts` entries.
pub const MAX_CONTACTS: usize = 10;
/// Longest `contacts` entry (the longest e-mail address RFC 5321 allows is 320 octets).
pub const MAX_CONTACT_LEN: usize = 320;
/// Longest `software_id` / `software_version`.
pub const MAX_SOFTWARE_FIELD_LEN: usize = 200;
/// Most keys in an inline `jwks`.
pub const MAX_JWKS_KEYS: usize = 10;
/// Largest normalised metadata document (canonical JSON bytes) Moat stores and echoes.
pub const MAX_METADATA_LEN: usize = 32 * 1024;

/// RFC 7591 §2 fields whose value is an absolute http(s) URL. The first four may also carry
/// language-tagged variants (`client_uri#fr`, RFC 7591 §2.2).
const URL_FIELDS: [&str; 5] = ["client_uri", "logo_uri", "tos_uri", "policy_uri", "jwks_uri"];

/// Human-readable fields that may be internationalised (RFC 7591 §2.2).
const LOCALIZABLE_FIELDS: [&str; 5] = ["client_name", "client_uri", "logo_uri", "tos_uri", "policy_uri"];

/// Every field name this module interprets. A JSON `null` for one of them is treated as absent
/// (some client libraries serialise unset optional fields as `null`).
const KNOWN_FIELDS: [&str; 23] = [
    "redirect_uris",
    "token_endpoint_auth_method",
    "grant_types",
    "response_types",
    "client_name",
    "client_uri",
    "logo_uri",
    "scope",
    "contacts",
    "tos_uri",
    "policy_uri",
    "jwks_uri",
    "jwks",
    "software_id",
    "software_version",
    "software_statement",
    "application_type",
    "client_id",
    "client_secret",
    "client_id_issued_at",
    "client_secret_expires_at",
    "registration_access_token",
    "registration_client_uri",
];

/// Values the server assigns in its response (RFC 7591 §3.2.1, RFC 7592 §3). A client that
/// sends them (some replay a previous response) has them dropped, not stored: the server's own
/// values replace them in the response.
const SERVER_ASSIGNED: [&str; 4] =
    ["client_id_issued_at", "client_secret_expires_at", "registration_access_token", "registration_client_uri"];

/// JWK members that carry private or symmetric key material (RFC 7518 §6.2.2, §6.3.2, §6.4.1;
/// RFC 8037 §2). A client's registered keys are public keys; anything else is a leaked secret.
const PRIVATE_JWK_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// A registration request that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedRegistration {
    pub client_name: String,
    pub redirect_uris: Vec<String>,
    pub grant_types: Vec<GrantType>,
    pub auth_method: AuthMethod,
    /// The registered `scope`, informational only (never an upper bound).
    pub scope: Option<String>,
    /// The metadata to store and echo: every field of the request (unknown ones kept) with the
    /// normalised values of the fields Moat interprets (`redirect_uris`, `grant_types`,
    /// `response_types`, `token_endpoint_auth_method`, `client_name`, `scope`). Server-assigned
    /// fields (`client_id_issued_at`, `client_secret_expires_at`, `registration_*`),
    /// `software_statement` and `null` values of known fields are removed.
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Lowercase hex SHA-256 over a canonical serialisation of `metadata`, so that identical
    /// registrations have identical fingerprints regardless of key order.
    pub fingerprint: String,
}

fn meta_err(msg: impl Into<String>) -> OAuthError {
    OAuthError::invalid_client_metadata(msg)
}

/// Bidirectional formatting characters (Unicode UAX #9): they can make a client name render as
/// something else on the consent page.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// `Some(&str)` when `key` is present, `None` when absent; a non-string, an over-long string
/// or one with control characters is `invalid_client_metadata`. `max` counts characters.
fn opt_str<'a>(meta: &'a Map<String, Value>, key: &str, max: usize) -> Result<Option<&'a str>, OAuthError> {
    match meta.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => {
            if s.chars().count() > max {
                return Err(meta_err(format!("{key} is too long (at most {max} characters)")));
            }
            if s.chars().any(|c| c.is_control() || is_bidi_control(c)) {
                return Err(meta_err(format!("{key} must not contain control characters")));
            }
            Ok(Some(s))
        }
        Some(_) => Err(meta_err(format!("{key} must be a string"))),
    }
}

/// An optional array of strings.
fn opt_str_array<'a>(meta: &'a Map<String, Value>, key: &str) -> Result<Option<Vec<&'a str>>, OAuthError> {
    match meta.get(key) {
        None => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().ok_or_else(|| meta_err(format!("{key} must be an array of strings"))))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(meta_err(format!("{key} must be an array of strings"))),
    }
}

/// RFC 7591 §2.2 language tag after `#`: BCP 47 characters, bounded.
fn is_language_tag(tag: &str) -> bool {
    (1..=35).contains(&tag.len()) && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// `redirect_uris`: required, 1..=20 valid redirect URIs (OAuth 2.1 §2.3.1), exact duplicates
/// removed. Every problem here is `invalid_redirect_uri` (RFC 7591 §3.2.2).
fn validate_redirect_uris(meta: &Map<String, Value>) -> Result<Vec<String>, OAuthError> {
    fn bad(msg: impl Into<String>) -> OAuthError {
        OAuthError::invalid_redirect_uri(msg)
    }
    let items = match meta.get("redirect_uris") {
        None => return Err(bad("redirect_uris is required")),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(bad("redirect_uris must be an array of strings")),
    };
    if items.is_empty() {
        return Err(bad("redirect_uris must contain at least one redirect URI"));
    }
    if items.len() > MAX_REDIRECT_URIS {
        return Err(bad(format!("too many redirect_uris (at most {MAX_REDIRECT_URIS})")));
    }
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let uri = item.as_str().ok_or_else(|| bad("redirect_uris must be an array of strings"))?;
        redirect::validate_redirect_uri(uri).map_err(|e| bad(format!("redirect_uris[{i}]: {e}")))?;
        if !out.iter().any(|u| u == uri) {
            out.push(uri.to_owned());
        }
    }
    Ok(out)
}

/// `token_endpoint_auth_method` (RFC 7591 §2): defaults to `none` (public client, the MCP norm);
/// `client_secret_basic` and `client_secret_post` get a secret. `private_key_jwt` needs key
/// management Moat does not do for anonymous registrations yet, and Moat never assigns it on
/// its own (requirements item 10).
fn validate_auth_method(meta: &Map<String, Value>) -> Result<AuthMethod, OAuthError> {
    let Some(s) = opt_str(meta, "token_endpoint_auth_method", 64)? else {
        return Ok(AuthMethod::None);
    };
    match AuthMethod::parse(s) {
        Some(AuthMethod::PrivateKeyJwt) => {
            Err(meta_err("token_endpoint_auth_method private_key_jwt is not supported for dynamic registration"))
        }
        Some(m) => Ok(m),
        None => Err(meta_err(
            "unsupported token_endpoint_auth_method (supported: none, client_secret_basic, client_secret_post)",
        )),
    }
}

/// `grant_types`: defaults to `authorization_code`; only `authorization_code` and
/// `refresh_token` may be registered anonymously (`client_credentials` would hand a token to
/// anyone who can reach the endpoint). The normalised list is in canonical order so that
/// reorderings fingerprint identically.
fn validate_grant_types(meta: &Map<String, Value>) -> Result<Vec<GrantType>, OAuthError> {
    let Some(items) = opt_str_array(meta, "grant_types")? else {
        return Ok(vec![GrantType::AuthorizationCode]);
    };
    let mut code = false;
    let mut refresh = false;
    for g in items {
        match GrantType::parse(g) {
            Some(GrantType::AuthorizationCode) => code = true,
            Some(GrantType::RefreshToken) => refresh = true,
            Some(GrantType::ClientCredentials) => {
                return Err(meta_err("grant type client_credentials is not allowed for dynamic registration"));
            }
            // OAuth 2.1 removed these; a client asking for them is misconfigured.
            None if g == "implicit" || g == "password" => {
                return Err(meta_err(format!("unsupported grant type: {g}")));
            }
            // Other grant types (e.g. VS Code's device_code) are dropped rather than refused:
            // RFC 7591 §3.2.1 lets the server replace requested metadata, and the echoed
            // registration tells the client what it actually got.
            None => {}
        }
    }
    // RFC 7591 §2.1: `response_types` is `code`, so `grant_types` must include its grant.
    if !code {
        return Err(meta_err("grant_types must include authorization_code"));
    }
    let mut out = vec![GrantType::AuthorizationCode];
    if refresh {
        out.push(GrantType::RefreshToken);
    }
    Ok(out)
}

/// `response_types`: defaults to and must be exactly `code` (OAuth 2.1 has no implicit flow).
fn validate_response_types(meta: &Map<String, Value>) -> Result<(), OAuthError> {
    let Some(items) = opt_str_array(meta, "response_types")? else {
        return Ok(());
    };
    if items.is_empty() || items.iter().any(|r| *r != "code") {
        return Err(meta_err("response_types must be [\"code\"]"));
    }
    Ok(())
}

/// An absolute http(s) URL without userinfo or fragment (the resource-URL rules of
/// [`crate::url`], which also refuse whitespace, controls and `\`).
fn validate_url_field(meta: &Map<String, Value>, key: &str) -> Result<(), OAuthError> {
    if let Some(s) = opt_str(meta, key, MAX_URL_LEN)? {
        crate::url::canonical_resource(s).map_err(|_| {
            meta_err(format!("{key} must be an absolute http(s) URL without user information or fragment"))
        })?;
    }
    Ok(())
}

/// `client_name`: trimmed, 1..=200 characters without control or bidi characters; defaults to
/// the host (or private-use scheme) of the first redirect URI, which is what the consent page
/// can honestly say about an anonymous client.
fn validate_client_name(meta: &Map<String, Value>, first_redirect: &str) -> Result<String, OAuthError> {
    if let Some(name) = opt_str(meta, "client_name", MAX_CLIENT_NAME_LEN)? {
        let name = name.trim();
        if !name.is_empty() {
            return Ok(name.to_owned());
        }
    }
    redirect::display_host(first_redirect)
        .ok_or_else(|| OAuthError::invalid_redirect_uri("redirect_uris[0] is not valid"))
}

/// `scope`: informational (DESIGN.md §5), but must still be a well-formed scope string
/// (RFC 6749 §3.3). Normalised to single spaces without duplicates; empty counts as absent.
fn validate_scope(meta: &Map<String, Value>) -> Result<Option<String>, OAuthError> {
    let Some(s) = opt_str(meta, "scope", MAX_SCOPE_LEN)? else {
        return Ok(None);
    };
    let tokens = scope::parse_scope_param(s).map_err(|e| meta_err(format!("scope: {}", e.description)))?;
    Ok((!tokens.is_empty()).then(|| scope::join(&tokens)))
}

/// `contacts`: at most 10 non-empty strings of at most 320 characters without whitespace or
/// controls. Not checked further: RFC 7591 §2 only says "typically email addresses".
fn validate_contacts(meta: &Map<String, Value>) -> Result<(), OAuthError> {
    let Some(items) = opt_str_array(meta, "contacts")? else {
        return Ok(());
    };
    if items.len() > MAX_CONTACTS {
        return Err(meta_err(format!("too many contacts (at most {MAX_CONTACTS})")));
    }
    for c in items {
        if c.is_empty()
            || c.chars().count() > MAX_CONTACT_LEN
            || c.chars().any(|ch| ch.is_control() || ch.is_whitespace() || is_bidi_control(ch))
        {
            return Err(meta_err("contacts entries must be non-empty e-mail addresses"));
        }
    }
    Ok(())
}

/// `jwks` (RFC 7591 §2, RFC 7517 §5): a JWK Set of public keys, mutually exclusive with
/// `jwks_uri`.
fn validate_jwks(meta: &Map<String, Value>) -> Result<(), OAuthError> {
    let Some(jwks) = meta.get("jwks") else {
        return Ok(());
    };
    if meta.contains_key("jwks_uri") {
        return Err(meta_err("jwks and jwks_uri must not both be present"));
    }
    let keys = jwks
        .as_object()
        .and_then(|o| o.get("keys"))
        .and_then(Value::as_array)
        .ok_or_else(|| meta_err("jwks must be a JWK Set object with a keys array"))?;
    if keys.len() > MAX_JWKS_KEYS {
        return Err(meta_err(format!("too many keys in jwks (at most {MAX_JWKS_KEYS})")));
    }
    for key in keys {
        let key = key.as_object().ok_or_else(|| meta_err("jwks keys must be JSON objects"))?;
        if PRIVATE_JWK_MEMBERS.iter().any(|m| key.contains_key(*m)) {
            return Err(meta_err("jwks must not contain private or symmetric key material"));
        }
    }
    Ok(())
}

/// Type-checks language-tagged variants (`client_name#ja-Jpan-JP`) like their base field.
fn validate_localized(meta: &Map<String, Value>) -> Result<(), OAuthError> {
    for key in meta.keys() {
        let Some((base, tag)) = key.split_once('#') else {
            continue;
        };
        if !LOCALIZABLE_FIELDS.contains(&base) {
            continue;
        }
        if !is_language_tag(tag) {
            return Err(meta_err(format!("{base} has an invalid language tag")));
        }
        if base == "client_name" {
            opt_str(meta, key, MAX_CLIENT_NAME_LEN)?;
        } else {
            validate_url_field(meta, key)?;
        }
    }
    Ok(())
}

/// Validates a DCR request body. Rules: `redirect_uris` required (1..=20 valid redirect URIs,
/// else `invalid_redirect_uri`); `grant_types` default `["authorization_code"]`, may contain
/// `authorization_code` and `refresh_token` (anything else, including `client_credentials` which
/// anonymous registration must never grant, is `invalid_client_metadata`); `response_types`
/// default `["code"]` and must be exactly that; `token_endpoint_auth_method` defaults to `none`
/// and may be `none`, `client_secret_basic` or `client_secret_post`; known string fields
/// (`client_name`, `client_uri`, `logo_uri`, `scope`, `software_id`, `software_version`,
/// `application_type`, …) must be strings of bounded length; URL fields must be absolute
/// http(s) URLs; `client_name` defaults to the host of the first redirect URI.
///
/// Further decisions:
/// - `client_id` and `client_secret` in the request are `invalid_client_metadata`: they are
///   issued by the server (RFC 7591 §3.2.1), a client may not choose its identity or its
///   credential, and silently replacing a secret the client believes it has would only surface
///   later as an authentication failure.
/// - Server-assigned response fields (`client_id_issued_at`, `client_secret_expires_at`,
///   `registration_access_token`, `registration_client_uri`) are dropped: they are harmless,
///   and clients that replay an earlier response should still register (RFC 7591 §3.2.1 lets
///   the server replace values).
/// - `software_statement` is dropped: Moat does not verify software statements (RFC 7591
///   §3.1.1 leaves that optional), and echoing an unverified one would suggest it was honoured.
/// - `application_type` must be `web` or `native` (OpenID Connect Dynamic Registration §2)
///   but does not restrict redirect URIs: real MCP clients label themselves inconsistently,
///   and loopback and private-use redirects are safe for any client under PKCE.
/// - `jwks` must be a JWK Set without private key material and excludes `jwks_uri`.
/// - A `null` value of a known field counts as absent.
/// - The normalised metadata must fit in [`MAX_METADATA_LEN`] bytes of canonical JSON.
pub fn validate_registration(body: &serde_json::Value) -> Result<ValidatedRegistration, OAuthError> {
    let request = body.as_object().ok_or_else(|| meta_err("registration request must be a JSON object"))?;

    let mut meta: Map<String, Value> = request
        .iter()
        .filter(|(k, v)| !(v.is_null() && KNOWN_FIELDS.contains(&k.as_str())))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();

    for field in ["client_id", "client_secret"] {
        if meta.contains_key(field) {
            return Err(meta_err(format!("{field} is assigned by the server and must not be sent")));
        }
    }
    for field in SERVER_ASSIGNED.iter().chain(["software_statement"].iter()) {
        meta.remove(*field);
    }

    let redirect_uris = validate_redirect_uris(&meta)?;
    let auth_method = validate_auth_method(&meta)?;
    let grant_types = validate_grant_types(&meta)?;
    validate_response_types(&meta)?;
    for field in URL_FIELDS {
        validate_url_field(&meta, field)?;
    }
    validate_localized(&meta)?;
    let scope = validate_scope(&meta)?;
    validate_contacts(&meta)?;
    validate_jwks(&meta)?;
    opt_str(&meta, "software_id", MAX_SOFTWARE_FIELD_LEN)?;
    opt_str(&meta, "software_version", MAX_SOFTWARE_FIELD_LEN)?;
    if let Some(t) = opt_str(&meta, "application_type", 16)?
        && t != "web"
        && t != "native"
    {
        return Err(meta_err("application_type must be web or native"));
    }
    let first_redirect = redirect_uris.first().map(String::as_str).unwrap_or_default();
    let client_name = validate_client_name(&meta, first_redirect)?;

    meta.insert("redirect_uris".into(), Value::Array(redirect_uris.iter().cloned().map(Value::String).collect()));
    meta.insert(
        "grant_types".into(),
        Value::Array(grant_types.iter().map(|g| Value::String(g.as_str().into())).collect()),
    );
    meta.insert("response_types".into(), Value::Array(vec![Value::String("code".into())]));
    meta.insert("token_endpoint_auth_method".into(), Value::String(auth_method.as_str().into()));
    meta.insert("client_name".into(), Value::String(client_name.clone()));
    match &scope {
        Some(s) => meta.insert("scope".into(), Value::String(s.clone())),
        None => meta.remove("scope"),
    };

    let canonical = canonical_json(&Value::Object(meta.clone()));
    if canonical.len() > MAX_METADATA_LEN {
        return Err(meta_err(format!("registration metadata is too large (at most {MAX_METADATA_LEN} bytes)")));
    }
    let fingerprint = hex(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref());

    Ok(ValidatedRegistration {
        client_name,
        redirect_uris,
        grant_types,
        auth_method,
        scope,
        metadata: meta,
        fingerprint,
    })
}

/// Compact JSON with object keys sorted (by UTF-8 bytes, i.e. code point order) at every level,
/// so equal metadata serialises identically whatever the key order of the request or of
/// `serde_json::Map` (which keeps insertion order when `preserve_order` is enabled anywhere in
/// the build). Strings and numbers use serde_json's own serialisation.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, val)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                // Display of a JSON value is its compact serialisation; writing to a String
                // cannot fail.
                let _ = write!(out, "{}", Value::String(k.clone()));
                out.push(':');
                write_canonical(val, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => {
            let _ = write!(out, "{scalar}");
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::error::OAuthErrorCode;

    fn ok(body: Value) -> ValidatedRegistration {
        validate_registration(&body).unwrap_or_else(|e| panic!("{body}: {e}"))
    }

    fn err(body: Value) -> OAuthError {
        validate_registration(&body).expect_err(&body.to_string())
    }

    #[test]
    fn minimal_registration_gets_defaults() {
        let r = ok(json!({"redirect_uris": ["http://localhost:3334/oauth/callback"]}));
        assert_eq!(r.client_name, "localhost");
        assert_eq!(r.redirect_uris, vec!["http://localhost:3334/oauth/callback"]);
        assert_eq!(r.grant_types, vec![GrantType::AuthorizationCode]);
        assert_eq!(r.auth_method, AuthMethod::None);
        assert_eq!(r.scope, None);
        assert_eq!(
            Value::Object(r.metadata.clone()),
            json!({
                "redirect_uris": ["http://localhost:3334/oauth/callback"],
                "grant_types": ["authorization_code"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "none",
                "client_name": "localhost",
            })
        );
        assert_eq!(r.fingerprint.len(), 64);
        assert!(r.fingerprint.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    }

    #[test]
    fn typical_mcp_clients_register() {
        // Shapes sent by the TypeScript SDK, VS Code, Claude and mcp-remote.
        let r = ok(json!({
            "client_name": "Visual Studio Code",
            "client_uri": "https://code.visualstudio.com",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "redirect_uris": [
                "https://insiders.vscode.dev/redirect",
                "https://vscode.dev/redirect",
                "http://127.0.0.1/",
                "http://127.0.0.1:33418/"
            ],
            "token_endpoint_auth_method": "none",
            "application_type": "native",
            "scope": "todo:read todo:write"
        }));
        assert_eq!(r.client_name, "Visual Studio Code");
        assert_eq!(r.grant_types, vec![GrantType::AuthorizationCode, GrantType::RefreshToken]);
        assert_eq!(r.scope.as_deref(), Some("todo:read todo:write"));
        assert_eq!(r.metadata["application_type"], "native");
        assert_eq!(r.metadata["client_uri"], "https://code.visualstudio.com");

        let r = ok(json!({
            "redirect_uris": ["https://claude.ai/api/mcp/auth_callback"],
            "token_endpoint_auth_method": "client_secret_post",
            "grant_types": ["refresh_token", "authorization_code"],
            "client_name": "Claude",
            "software_id": "com.anthropic.claude",
            "software_version": "1.0.0",
            "x_vendor_extension": {"nested": [1, 2, 3]}
        }));
        assert_eq!(r.auth_method, AuthMethod::ClientSecretPost);
        assert_eq!(r.metadata["grant_types"], json!(["authorization_code", "refresh_token"]));
        assert_eq!(r.metadata["software_id"], "com.anthropic.claude");
        // Unknown fields are kept verbatim.
        assert_eq!(r.metadata["x_vendor_extension"], json!({"nested": [1, 2, 3]}));

        let r = ok(json!({
            "redirect_uris": ["com.example.app:/oauth2redirect"],
            "client_name": "  Example App  ",
            "application_type": "native",
            "client_name#ja-Jpan-JP": "例",
            "contacts": ["ops@example.com"]
        }));
        assert_eq!(r.client_name, "Example App");
        assert_eq!(r.metadata["client_name"], "Example App");
    }

    #[test]
    fn default_client_name_comes_from_first_redirect() {
        let name = |uri: &str| ok(json!({"redirect_uris": [uri]})).client_name;
        assert_eq!(name("https://App.Example.com/cb"), "app.example.com");
        assert_eq!(name("http://[::1]:8/cb"), "[::1]");
        assert_eq!(name("com.example.app:/cb"), "com.example.app");
        assert_eq!(
            ok(json!({"redirect_uris": ["https://a.example/cb"], "client_name": "   "})).client_name,
            "a.example"
        );
    }

    #[test]
    fn unknown_grant_types_are_dropped_not_refused() {
        let r = ok(json!({
            "redirect_uris": ["http://127.0.0.1/cb"],
            "grant_types": ["authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:device_code"],
        }));
        assert_eq!(r.grant_types, vec![GrantType::AuthorizationCode, GrantType::RefreshToken]);
        assert_eq!(r.metadata["grant_types"], json!(["authorization_code", "refresh_token"]));
    }

    #[test]
    fn redirect_uri_errors_are_invalid_redirect_uri() {
        let cases = [
            json!({}),
            json!({"redirect_uris": []}),
            json!({"redirect_uris": "https://a.example/cb"}),
            json!({"redirect_uris": [1]}),
            json!({"redirect_uris": [null]}),
            json!({"redirect_uris": ["javascript:alert(1)"]}),
            json!({"redirect_uris": ["https://a.example/cb", "http://evil.example/cb"]}),
            json!({"redirect_uris": ["https://a.example/cb#frag"]}),
            json!({"redirect_uris": ["https://user@a.example/cb"]}),
            json!({"redirect_uris": ["intent://cb"]}),
            json!({"redirect_uris": ["/relative"]}),
            json!({"redirect_uris": [format!("https://a.example/{}", "x".repeat(2000))]}),
            json!({"redirect_uris": (0..=MAX_REDIRECT_URIS).map(|i| format!("https://a.example/{i}")).collect::<Vec<_>>()}),
            json!({"redirect_uris": null}),
        ];
        for body in cases {
            assert_eq!(err(body.clone()).code, OAuthErrorCode::InvalidRedirectUri, "{body}");
        }
        let e = err(json!({"redirect_uris": ["https://a.example/cb", "data:text/html,x"]}));
        assert!(e.description.contains("redirect_uris[1]"), "{}", e.description);
        // Twenty is fine, and duplicates are removed.
        let twenty: Vec<String> = (0..MAX_REDIRECT_URIS).map(|i| format!("https://a.example/{i}")).collect();
        assert_eq!(ok(json!({"redirect_uris": twenty})).redirect_uris.len(), MAX_REDIRECT_URIS);
        let r = ok(json!({"redirect_uris": ["https://a.example/cb", "https://a.example/cb"]}));
        assert_eq!(r.redirect_uris, vec!["https://a.example/cb"]);
        assert_eq!(r.metadata["redirect_uris"], json!(["https://a.example/cb"]));
    }

    #[test]
    fn metadata_errors_are_invalid_client_metadata() {
        let base = || json!({"redirect_uris": ["https://a.example/cb"]});
        let with = |k: &str, v: Value| {
            let mut b = base();
            b[k] = v;
            b
        };
        let long = |n: usize| Value::String("x".repeat(n));
        let cases: Vec<(Value, &str)> = vec![
            (json!([]), "JSON object"),
            (json!("x"), "JSON object"),
            (Value::Null, "JSON object"),
            (with("client_id", json!("mine")), "client_id"),
            (with("client_secret", json!("s3cret")), "client_secret"),
            (with("token_endpoint_auth_method", json!("private_key_jwt")), "not supported for dynamic registration"),
            (with("token_endpoint_auth_method", json!("client_secret_jwt")), "unsupported token_endpoint_auth_method"),
            (with("token_endpoint_auth_method", json!("NONE")), "unsupported token_endpoint_auth_method"),
            (with("token_endpoint_auth_method", json!(1)), "must be a string"),
            (with("grant_types", json!(["client_credentials"])), "client_credentials"),
            (with("grant_types", json!(["authorization_code", "client_credentials"])), "client_credentials"),
            (with("grant_types", json!(["implicit"])), "unsupported grant type"),
            (with("grant_types", json!(["password"])), "unsupported grant type"),
            (with("grant_types", json!(["refresh_token"])), "must include authorization_code"),
            (with("grant_types", json!([])), "must include authorization_code"),
            (with("grant_types", json!("authorization_code")), "array of strings"),
            (with("grant_types", json!([1])), "array of strings"),
            (with("response_types", json!(["token"])), "response_types"),
            (with("response_types", json!(["code", "id_token"])), "response_types"),
            (with("response_types", json!([])), "response_types"),
            (with("response_types", json!("code")), "array of strings"),
            (with("client_name", json!(42)), "must be a string"),
            (with("client_name", long(MAX_CLIENT_NAME_LEN + 1)), "too long"),
            (with("client_name", json!("Good\nApp")), "control characters"),
            (with("client_name", json!("evil\u{202e}ppa")), "control characters"),
            (with("client_uri", json!("javascript:alert(1)")), "client_uri"),
            (with("client_uri", json!("not a url")), "client_uri"),
            (with("client_uri", json!("https://a@b.example")), "client_uri"),
            (with("logo_uri", json!("file:///etc/passwd")), "logo_uri"),
            (with("logo_uri", json!(["https://a.example/l.png"])), "must be a string"),
            (with("tos_uri", json!("ftp://a.example/tos")), "tos_uri"),
            (with("policy_uri", json!("https://a.example/p#x")), "policy_uri"),
            (with("jwks_uri", json!("https://a.example/\tjwks")), "jwks_uri"),
            (with("client_uri", Value::String(format!("https://a.example/{}", "x".repeat(2000)))), "too long"),
            (with("client_uri#fr", json!("javascript:x")), "client_uri#fr"),
            (with("client_name#", json!("x")), "language tag"),
            (with("client_name#fr", json!(1)), "must be a string"),
            (with("scope", json!(["a"])), "must be a string"),
            (with("scope", json!("a\tb")), "scope"),
            (with("scope", long(MAX_SCOPE_LEN + 1)), "too long"),
            (with("contacts", json!("ops@example.com")), "array of strings"),
            (with("contacts", json!([""])), "contacts"),
            (with("contacts", json!(["a b@example.com"])), "contacts"),
            (
                with("contacts", json!((0..=MAX_CONTACTS).map(|i| format!("{i}@x.example")).collect::<Vec<_>>())),
                "too many contacts",
            ),
            (with("jwks", json!("keys")), "JWK Set"),
            (with("jwks", json!({"keys": "x"})), "JWK Set"),
            (with("jwks", json!({"keys": [1]})), "JSON objects"),
            (with("jwks", json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]})), "private"),
            (with("jwks", json!({"keys": [{"kty": "EC", "crv": "P-256", "x": "a", "y": "b", "d": "c"}]})), "private"),
            (with("software_id", json!(7)), "must be a string"),
            (with("software_version", long(MAX_SOFTWARE_FIELD_LEN + 1)), "too long"),
            (with("application_type", json!("browser")), "application_type"),
            (with("application_type", json!("Native")), "application_type"),
            (with("application_type", json!(true)), "must be a string"),
        ];
        for (body, needle) in cases {
            let e = err(body.clone());
            assert_eq!(e.code, OAuthErrorCode::InvalidClientMetadata, "{body}");
            assert!(e.description.contains(needle), "{body}: {}", e.description);
        }
        let mut both = base();
        both["jwks"] = json!({"keys": [{"kty": "EC", "crv": "P-256", "x": "a", "y": "b"}]});
        both["jwks_uri"] = json!("https://a.example/jwks");
        assert!(err(both).description.contains("jwks and jwks_uri"));
        let mut huge = base();
        huge["x_blob"] = Value::String("x".repeat(MAX_METADATA_LEN));
        assert!(err(huge).description.contains("too large"));
    }

    #[test]
    fn lenient_on_nulls_and_server_assigned_fields() {
        let r = ok(json!({
            "redirect_uris": ["https://a.example/cb"],
            "client_uri": null,
            "scope": null,
            "client_id": null,
            "client_id_issued_at": 1_700_000_000,
            "client_secret_expires_at": 0,
            "registration_access_token": "x",
            "registration_client_uri": "https://moat.example/reg/1",
            "software_statement": "eyJ...",
            "x_unknown_null": null
        }));
        for dropped in [
            "client_uri",
            "scope",
            "client_id",
            "client_id_issued_at",
            "client_secret_expires_at",
            "registration_access_token",
            "registration_client_uri",
            "software_statement",
        ] {
            assert!(!r.metadata.contains_key(dropped), "{dropped}");
        }
        // Unknown fields are kept even when null.
        assert_eq!(r.metadata["x_unknown_null"], Value::Null);
        // Public jwks are accepted.
        let r = ok(json!({
            "redirect_uris": ["https://a.example/cb"],
            "jwks": {"keys": [{"kty": "EC", "crv": "P-256", "x": "a", "y": "b"}]}
        }));
        assert!(r.metadata.contains_key("jwks"));
    }

    #[test]
    fn scope_is_normalised() {
        let r = ok(json!({"redirect_uris": ["https://a.example/cb"], "scope": "  b a  b "}));
        assert_eq!(r.scope.as_deref(), Some("b a"));
        assert_eq!(r.metadata["scope"], "b a");
        let r = ok(json!({"redirect_uris": ["https://a.example/cb"], "scope": "   "}));
        assert_eq!(r.scope, None);
        assert!(!r.metadata.contains_key("scope"));
    }

    #[test]
    fn fingerprint_ignores_key_order_and_equivalent_forms() {
        let a = ok(json!({
            "redirect_uris": ["http://127.0.0.1/cb"],
            "client_name": "X",
            "grant_types": ["authorization_code", "refresh_token"],
            "x": {"b": 1, "a": [2, {"d": 3, "c": 4}]}
        }));
        let b = ok(json!({
            "x": {"a": [2, {"c": 4, "d": 3}], "b": 1},
            "grant_types": ["refresh_token", "authorization_code", "refresh_token"],
            "client_name": " X ",
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
            "redirect_uris": ["http://127.0.0.1/cb", "http://127.0.0.1/cb"]
        }));
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_eq!(a.metadata, b.metadata);
        let c = ok(json!({
            "redirect_uris": ["http://127.0.0.1/cb"],
            "client_name": "Y",
            "grant_types": ["authorization_code", "refresh_token"],
            "x": {"b": 1, "a": [2, {"d": 3, "c": 4}]}
        }));
        assert_ne!(a.fingerprint, c.fingerprint);
        // Array order is significant.
        let d = ok(json!({"redirect_uris": ["https://a.example/1", "https://a.example/2"]}));
        let e = ok(json!({"redirect_uris": ["https://a.example/2", "https://a.example/1"]}));
        assert_ne!(d.fingerprint, e.fingerprint);
    }

    #[test]
    fn canonical_json_sorts_keys_recursively() {
        let v = json!({"b": [{"z": 1, "y": "\"q\""}], "a": null, "é": 1.5});
        assert_eq!(canonical_json(&v), r#"{"a":null,"b":[{"y":"\"q\"","z":1}],"é":1.5}"#);
        // Canonical JSON is valid JSON that round-trips to the same value.
        let back: Value = serde_json::from_str(&canonical_json(&v)).unwrap();
        assert_eq!(back, v);
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            ".{0,10}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z#_]{1,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn arbitrary_bodies_never_panic(v in json_value()) {
            let _ = validate_registration(&v);
            let mut body = json!({"redirect_uris": ["https://a.example/cb"]});
            if let (Some(o), Value::Object(extra)) = (body.as_object_mut(), v) {
                for (k, val) in extra {
                    o.insert(k, val);
                }
            }
            if let Ok(r) = validate_registration(&body) {
                prop_assert_eq!(r.fingerprint.len(), 64);
                prop_assert!(!r.redirect_uris.is_empty());
                prop_assert!(r.grant_types.contains(&GrantType::AuthorizationCode));
                // The echoed metadata re-validates to the same result (normalisation is stable).
                let again = validate_registration(&Value::Object(r.metadata.clone()));
                prop_assert_eq!(again.map(|a| a.fingerprint), Ok(r.fingerprint));
            }
        }

        #[test]
        fn canonical_json_is_order_independent_and_valid(v in json_value()) {
            let s = canonical_json(&v);
            let back: Value = serde_json::from_str(&s).unwrap();
            prop_assert_eq!(&back, &v);
            prop_assert_eq!(canonical_json(&back), s);
        }
    }
}
