//! Shared helpers: an authority with a published ES256 key, validator configs, raw token
//! crafting for attacks the minter would never produce.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use moat_guard::testing::{TestAuthority, TestKey};
use moat_guard::{ScopeHierarchy, Validator, ValidatorConfig};
use serde_json::Value;

/// The MCP server URL tokens are minted for (validation tests need no server there).
pub const SERVER: &str = "http://127.0.0.1:3000/mcp";
pub const RES: &str = "res_test";

pub struct Env {
    pub authority: TestAuthority,
    pub key: TestKey,
}

pub async fn env() -> Env {
    let authority = TestAuthority::start(RES).await.unwrap();
    let key = TestKey::es256("k-es256").unwrap();
    authority.publish(&key);
    Env { authority, key }
}

/// Explicit JWKS URL, 5 s leeway, hierarchy todo:write ⇒ todo:read.
pub fn config(authority: &TestAuthority) -> ValidatorConfig {
    let mut c = ValidatorConfig::new(authority.issuer(), SERVER)
        .with_audience(RES)
        .with_jwks_url(authority.jwks_url())
        .with_leeway(Duration::from_secs(5))
        .with_scope_hierarchy(ScopeHierarchy::new().with_implication("todo:write", "todo:read"));
    c.http_timeout = Duration::from_secs(2);
    c
}

pub fn validator(authority: &TestAuthority) -> Validator {
    Validator::new(config(authority)).unwrap()
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `header.payload` without a signature.
pub fn signing_input(header: &Value, claims: &Value) -> String {
    format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()))
}

/// Decodes the claims of a minted token (to re-sign them differently).
pub fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

pub fn random_kid() -> String {
    let mut b = [0u8; 12];
    aws_lc_rs::rand::fill(&mut b).unwrap();
    b64(&b)
}
