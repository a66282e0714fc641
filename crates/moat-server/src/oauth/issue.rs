//! Minting access tokens (RFC 9068 JWTs, DESIGN.md §4) and building token responses
//! (RFC 6749 §5.1).

use axum::response::Response;
use moat_core::ids::{FamilyId, random_id};
use moat_core::model::{Client, Resource};
use moat_core::token::{ACCESS_TOKEN_TYP, AccessTokenClaims};
use serde_json::json;

use crate::http::{OAuthJsonError, no_store_json};
use crate::keys::MAX_ACCESS_TOKEN_TTL;
use crate::state::AppState;

/// Who and what a token is for.
pub struct Grant<'a> {
    pub resource: &'a Resource,
    pub client: &'a Client,
    pub subject: &'a str,
    pub scopes: &'a [String],
    pub session_id: Option<&'a str>,
    pub auth_time: Option<i64>,
    /// The refresh family the token descends from: its id prefixes the `jti`, so revoking the
    /// family also deactivates the access tokens it produced (introspection, DESIGN.md §4).
    pub family: Option<&'a FamilyId>,
}

/// A signed access token.
pub struct Minted {
    pub token: String,
    pub expires_in: i64,
}

/// Access-token `jti`: `{family}.{random}` for tokens descended from a refresh family,
/// `at_{random}` otherwise.
fn new_jti(family: Option<&FamilyId>) -> String {
    match family {
        Some(f) => format!("{f}.{}", random_id("")),
        None => random_id("at_"),
    }
}

/// The family a `jti` names, if any.
pub fn family_of_jti(jti: &str) -> Option<FamilyId> {
    jti.split_once('.').and_then(|(f, _)| FamilyId::parse(f))
}

/// Lifetime of the access tokens `client` gets for `resource`.
pub fn access_token_ttl(client: &Client, resource: &Resource) -> i64 {
    client.access_token_ttl.unwrap_or(resource.access_token_ttl).clamp(1, MAX_ACCESS_TOKEN_TTL)
}

pub fn mint(state: &AppState, grant: &Grant<'_>, now: i64) -> Result<Minted, OAuthJsonError> {
    let ttl = access_token_ttl(grant.client, grant.resource);
    let claims = AccessTokenClaims {
        iss: state.issuer(&grant.resource.id),
        sub: grant.subject.to_owned(),
        aud: vec![grant.resource.server_url.clone(), grant.resource.id.to_string()],
        client_id: grant.client.id.to_string(),
        scope: moat_core::scope::join(grant.scopes),
        iat: now,
        nbf: now,
        exp: now + ttl,
        jti: new_jti(grant.family),
        sid: grant.session_id.map(str::to_owned),
        auth_time: grant.auth_time,
    };
    let token = state
        .keys
        .sign_jwt(ACCESS_TOKEN_TYP, &claims, now)
        .map_err(|e| OAuthJsonError::internal("signing an access token", e))?;
    Ok(Minted { token, expires_in: ttl })
}

/// The RFC 6749 §5.1 success response (`Cache-Control: no-store`).
pub fn token_response(minted: &Minted, scopes: &[String], refresh_token: Option<&str>) -> Response {
    let mut body = json!({
        "access_token": minted.token,
        "token_type": "Bearer",
        "expires_in": minted.expires_in,
        "scope": moat_core::scope::join(scopes),
    });
    if let (Some(rt), Some(obj)) = (refresh_token, body.as_object_mut()) {
        obj.insert("refresh_token".into(), json!(rt));
    }
    no_store_json(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jti_carries_family() {
        let f = FamilyId::generate();
        let jti = new_jti(Some(&f));
        assert_eq!(family_of_jti(&jti), Some(f));
        assert_eq!(family_of_jti(&new_jti(None)), None);
        assert_ne!(new_jti(None), new_jti(None));
    }
}
