//! Client authentication at the token, revocation and introspection endpoints (RFC 6749 §2.3):
//! `client_secret_basic`, `client_secret_post`, `private_key_jwt` (RFC 7523 §2.2), and `none`
//! for public clients.

use axum::http::{HeaderMap, StatusCode, header};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use moat_core::ids::ClientId;
use moat_core::model::{AuthMethod, Client, Resource};
use moat_core::{OAuthError, OAuthErrorCode};

use super::assertion::{self, Assertion, JWT_BEARER_ASSERTION};
use super::clients::LookupError;
use crate::cimd::CimdFailure;
use crate::crypto::{ct_eq, sha256_hex};
use crate::http::{OAuthJsonError, Params};
use crate::state::{AppState, now};

/// The `WWW-Authenticate` challenge sent with `invalid_client` when the client used the
/// `Authorization` header (RFC 6749 §5.2).
pub const BASIC_CHALLENGE: &str = "Basic realm=\"moat\", charset=\"UTF-8\"";

/// What the request presented.
struct Presented {
    client_id: String,
    secret: Option<String>,
    assertion: Option<Assertion>,
    via_header: bool,
}

fn form_decode(s: &str) -> Option<String> {
    // RFC 6749 §2.3.1: id and secret are form-urlencoded before being placed in the header.
    let mut out = None;
    for (k, v) in form_urlencoded::parse(format!("x={s}").as_bytes()) {
        if k == "x" {
            out = Some(v.into_owned());
        }
    }
    out
}

fn presented(headers: &HeaderMap, params: &Params) -> Result<Presented, OAuthJsonError> {
    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let assertion_type = params.get("client_assertion_type");
    let assertion = params.get("client_assertion");
    if assertion_type.is_some() || assertion.is_some() {
        // RFC 7523 §2.2 / RFC 7521 §4.2; and only one authentication method (RFC 6749 §2.3).
        if auth.is_some() || params.get("client_secret").is_some() {
            return Err(OAuthError::invalid_request("use only one client authentication method").into());
        }
        if assertion_type != Some(JWT_BEARER_ASSERTION) {
            return Err(OAuthError::invalid_client("unsupported client_assertion_type").into());
        }
        let jwt = Assertion::parse(assertion.unwrap_or_default())?;
        let iss = jwt.issuer().map(str::to_owned).unwrap_or_default();
        if params.get("client_id").is_some_and(|id| id != iss) {
            return Err(OAuthError::invalid_client("client_id does not match the client assertion").into());
        }
        return Ok(Presented { client_id: iss, secret: None, assertion: Some(jwt), via_header: false });
    }
    if let Some(auth) = auth {
        // RFC 7235 §2.1: the auth-scheme is case-insensitive.
        let basic = auth.split_once(' ').filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"));
        let Some((_, b64)) = basic else {
            return Err(OAuthJsonError::new(OAuthError::invalid_client("unsupported Authorization scheme"))
                .with_challenge(BASIC_CHALLENGE));
        };
        let bad = || {
            OAuthJsonError::new(OAuthError::invalid_client("malformed Basic credentials"))
                .with_challenge(BASIC_CHALLENGE)
        };
        let decoded = STANDARD.decode(b64.trim()).map_err(|_| bad())?;
        let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
        let (id, secret) = decoded.split_once(':').ok_or_else(bad)?;
        let (id, secret) = (form_decode(id).ok_or_else(bad)?, form_decode(secret).ok_or_else(bad)?);
        // RFC 6749 §2.3: a client must not use more than one authentication method.
        if params.get("client_secret").is_some() {
            return Err(OAuthError::invalid_request("use only one client authentication method").into());
        }
        if params.get("client_id").is_some_and(|b| b != id) {
            return Err(OAuthError::invalid_request("client_id does not match the Authorization header").into());
        }
        return Ok(Presented { client_id: id, secret: Some(secret), assertion: None, via_header: true });
    }
    let client_id = params
        .get("client_id")
        .ok_or_else(|| OAuthJsonError::new(OAuthError::invalid_client("client authentication is required")))?;
    Ok(Presented {
        client_id: client_id.to_owned(),
        secret: params.get("client_secret").map(str::to_owned),
        assertion: None,
        via_header: false,
    })
}

/// Authenticates the client of a request to `resource`'s endpoints. Public clients identify
/// themselves with `client_id` only; confidential clients present their secret or a
/// `private_key_jwt` assertion, as registered. Metadata-document clients are resolved (fetched
/// when not cached) like at the authorization endpoint.
pub async fn authenticate(
    state: &AppState,
    resource: &Resource,
    headers: &HeaderMap,
    params: &Params,
    ip: Option<&str>,
) -> Result<Client, OAuthJsonError> {
    let p = presented(headers, params)?;
    let fail = |msg: &str| {
        let e = OAuthJsonError::new(OAuthError::invalid_client(msg));
        if p.via_header { e.with_challenge(BASIC_CHALLENGE) } else { e }
    };
    let Some(id) = ClientId::parse(&p.client_id) else {
        return Err(fail("unknown client"));
    };
    let client = match super::clients::lookup(state, resource, &id, ip).await {
        Ok(found) => found.client,
        Err(LookupError::Store(e)) => return Err(OAuthJsonError::internal("loading client", e)),
        Err(e @ LookupError::RateLimited) => {
            return Err(OAuthJsonError::new(OAuthError::new(OAuthErrorCode::TemporarilyUnavailable, e.to_string()))
                .with_status(StatusCode::TOO_MANY_REQUESTS));
        }
        Err(LookupError::Unknown) => return Err(fail("unknown client")),
        Err(e) => return Err(fail(&e.to_string())),
    };
    match (client.auth_method, &p.secret, &p.assertion) {
        (AuthMethod::None, None, None) => Ok(client),
        (AuthMethod::None, _, _) => Err(fail("this client is public and has no credentials")),
        (AuthMethod::ClientSecretBasic | AuthMethod::ClientSecretPost, Some(secret), None) => {
            let ok = client
                .secret_hash
                .as_deref()
                .is_some_and(|h| ct_eq(sha256_hex(secret.as_bytes()).as_bytes(), h.as_bytes()));
            let expired = client.secret_expires_at.is_some_and(|t| t > 0 && now() >= t);
            if ok && !expired { Ok(client) } else { Err(fail("client authentication failed")) }
        }
        (AuthMethod::ClientSecretBasic | AuthMethod::ClientSecretPost, _, _) => {
            Err(fail("this client must authenticate with its client secret"))
        }
        (AuthMethod::PrivateKeyJwt, None, Some(assertion)) => {
            let kid = assertion.kid();
            let keys = match super::clients::client_keys(state, &client, kid.as_deref(), ip).await {
                Ok(keys) => keys,
                Err(CimdFailure::RateLimited) => {
                    return Err(OAuthJsonError::new(OAuthError::new(
                        OAuthErrorCode::TemporarilyUnavailable,
                        "the client's key set could not be fetched right now: too many fetches from this address",
                    ))
                    .with_status(StatusCode::TOO_MANY_REQUESTS));
                }
                Err(e) => return Err(fail(&format!("the client's keys could not be loaded: {e}"))),
            };
            assertion::verify(state, &client, assertion, &keys, &state.issuer(&resource.id)).await?;
            Ok(client)
        }
        (AuthMethod::PrivateKeyJwt, _, _) => Err(fail("this client must authenticate with private_key_jwt")),
    }
}
