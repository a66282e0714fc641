//! Every validation outcome of `Validator::validate`, with tokens in Moat's wire format.

use aws_lc_rs::hmac;
use moat_guard::testing::{TestAuthority, TestKey, now};
use moat_guard::{Algorithm, ValidationError, Validator, ValidatorConfig};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use serde_json::json;

use crate::support::{self, RES, SERVER, b64, claims_of, env, signing_input, validator};

#[tokio::test]
async fn accepts_moat_tokens_for_every_algorithm_with_typed_claims() {
    let e = env().await;
    let ed = TestKey::eddsa("k-ed").unwrap();
    let rsa = TestKey::rs256("k-rsa").unwrap();
    e.authority.publish(&ed);
    e.authority.publish(&rsa);
    let v = validator(&e.authority);
    for key in [&e.key, &ed, &rsa] {
        let token = e
            .authority
            .token(key, SERVER)
            .subject("usr_alice")
            .scope("todo:write")
            .claim("sid", json!("ses_1"))
            .claim("oid", json!("org_1"))
            .claim("custom_claims", json!({"plan": "pro"}))
            .sign()
            .unwrap();
        let claims = v.validate(&token).await.unwrap();
        assert_eq!(claims.iss(), e.authority.issuer());
        assert_eq!(claims.sub(), "usr_alice");
        assert_eq!(claims.aud(), [SERVER.to_owned(), RES.to_owned()]);
        assert_eq!(claims.client_id(), "client_test");
        assert_eq!(claims.sid(), Some("ses_1"));
        assert!(claims.jti().starts_with("jti_"));
        assert!(claims.exp() > now());
        assert!(claims.scopes().contains("todo:write"));
        assert!(!claims.scopes().contains("todo:read"));
        // The hierarchy todo:write ⇒ todo:read.
        assert!(claims.has_scope("todo:read"));
        assert_eq!(claims.require_scopes(&["todo:read", "todo:write"]), Ok(()));
        assert_eq!(claims.claim("oid"), Some(&json!("org_1")));
        assert_eq!(claims.claim("custom_claims"), Some(&json!({"plan": "pro"})));
        assert!(v.is_valid(&token).await);
    }
    // One key-set fetch served all three keys.
    assert_eq!(e.authority.key_fetches(), 1);
}

#[tokio::test]
async fn audience_forms() {
    let e = env().await;
    let v = validator(&e.authority);
    let ok = |aud: serde_json::Value| e.authority.token(&e.key, SERVER).claim("aud", aud).sign().unwrap();
    // A single string; a canonical variant of the URL; the res_ id alone.
    for aud in [json!(SERVER), json!("HTTP://127.0.0.1:3000/mcp/"), json!(["https://other.example/mcp", RES])] {
        assert!(v.validate(&ok(aud.clone())).await.is_ok(), "{aud}");
    }
    // Another path, another port, another resource's id, an empty list.
    for aud in [
        json!("http://127.0.0.1:3000/mcp2"),
        json!("http://127.0.0.1:3001/mcp"),
        json!(["https://other.example/mcp", "res_other"]),
        json!([]),
        json!("res_TEST"),
    ] {
        assert_eq!(v.validate(&ok(aud.clone())).await.err(), Some(ValidationError::WrongAudience), "{aud}");
    }
}

#[tokio::test]
async fn time_claims_with_leeway() {
    let e = env().await;
    let v = validator(&e.authority); // 5 s leeway
    let t = |name: &str, value: i64| e.authority.token(&e.key, SERVER).claim(name, json!(value)).sign().unwrap();
    let n = now();
    assert_eq!(v.validate(&t("exp", n - 60)).await.err(), Some(ValidationError::Expired));
    assert!(v.validate(&t("exp", n - 2)).await.is_ok(), "within leeway");
    assert_eq!(v.validate(&t("nbf", n + 60)).await.err(), Some(ValidationError::NotYetValid));
    assert!(v.validate(&t("nbf", n + 2)).await.is_ok(), "within leeway");
    assert_eq!(v.validate(&t("iat", n + 60)).await.err(), Some(ValidationError::IssuedInFuture));
    assert!(v.validate(&t("iat", n + 2)).await.is_ok(), "within leeway");
}

#[tokio::test]
async fn wrong_issuer_and_missing_claims() {
    let e = env().await;
    let v = validator(&e.authority);
    for iss in [
        format!("{}/resources/res_other", e.authority.base()),
        format!("{}/", e.authority.issuer()),
        e.authority.base().to_owned(),
    ] {
        let token = e.authority.token(&e.key, SERVER).claim("iss", json!(iss)).sign().unwrap();
        assert_eq!(v.validate(&token).await.err(), Some(ValidationError::WrongIssuer), "{iss}");
    }
    for claim in ["sub", "client_id", "exp", "iat", "jti"] {
        let token = e.authority.token(&e.key, SERVER).without_claim(claim).sign().unwrap();
        assert_eq!(
            v.validate(&token).await.err(),
            Some(ValidationError::MissingClaim(match claim {
                "sub" => "sub",
                "client_id" => "client_id",
                "exp" => "exp",
                "iat" => "iat",
                _ => "jti",
            })),
            "{claim}"
        );
    }
    let no_aud = e.authority.token(&e.key, SERVER).without_claim("aud").sign().unwrap();
    assert_eq!(v.validate(&no_aud).await.err(), Some(ValidationError::MissingClaim("aud")));
}

#[tokio::test]
async fn header_attacks() {
    let e = env().await;
    let v = validator(&e.authority);
    let good = e.authority.token(&e.key, SERVER).sign().unwrap();
    let claims = claims_of(&good);

    // alg: none, unsigned (RFC 7519 §6).
    let none = format!("{}.", signing_input(&json!({"typ":"at+jwt","alg":"none","kid":"k-es256"}), &claims));
    assert!(matches!(v.validate(&none).await, Err(ValidationError::UnsupportedAlgorithm { .. })));

    // HS256 "signed" with the public key bytes (algorithm confusion, RFC 8725 §2.1): both the
    // JWK JSON and the raw EC point as the HMAC secret.
    let jwk = e.key.jwk().to_string();
    let x = e.key.jwk()["x"].as_str().unwrap().to_owned();
    for secret in [jwk.as_bytes().to_vec(), x.into_bytes()] {
        let input = signing_input(&json!({"typ":"at+jwt","alg":"HS256","kid":"k-es256"}), &claims);
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &secret), input.as_bytes());
        let forged = format!("{input}.{}", b64(tag.as_ref()));
        assert!(matches!(v.validate(&forged).await, Err(ValidationError::UnsupportedAlgorithm { .. })));
        // Same HMAC under a header claiming ES256: not a valid ECDSA signature.
        let input = signing_input(&json!({"typ":"at+jwt","alg":"ES256","kid":"k-es256"}), &claims);
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &secret), input.as_bytes());
        let forged = format!("{input}.{}", b64(tag.as_ref()));
        assert_eq!(v.validate(&forged).await.err(), Some(ValidationError::BadSignature));
    }

    // typ must be at+jwt (RFC 9068 §4); application/at+jwt and other cases are the same type.
    let typed = |typ: serde_json::Value| e.authority.token(&e.key, SERVER).header("typ", typ).sign().unwrap();
    for typ in [json!("JWT"), json!("jwt"), json!(null), json!("application/jwt")] {
        assert_eq!(v.validate(&typed(typ.clone())).await.err(), Some(ValidationError::WrongType), "{typ}");
    }
    for typ in ["AT+JWT", "application/at+jwt"] {
        assert!(v.validate(&typed(json!(typ))).await.is_ok(), "{typ}");
    }

    // The header names RS256, the kid names an EC key.
    let rsa = TestKey::rs256("k-es256").unwrap();
    let mismatched = e.authority.token(&rsa, SERVER).sign().unwrap();
    assert_eq!(v.validate(&mismatched).await.err(), Some(ValidationError::KeyMismatch));

    // An algorithm not in the configured list.
    let only_eddsa = Validator::new(support::config(&e.authority).with_algorithms([Algorithm::EdDsa])).unwrap();
    assert!(matches!(
        only_eddsa.validate(&good).await,
        Err(ValidationError::UnsupportedAlgorithm { alg }) if alg == "ES256"
    ));
}

#[tokio::test]
async fn signature_and_shape() {
    let e = env().await;
    let v = validator(&e.authority);
    let good = e.authority.token(&e.key, SERVER).subject("usr_a").sign().unwrap();
    let parts: Vec<&str> = good.split('.').collect();

    // Payload swapped for another user's, signature kept.
    let mut claims = claims_of(&good);
    claims["sub"] = json!("usr_admin");
    let tampered = format!("{}.{}.{}", parts[0], b64(claims.to_string().as_bytes()), parts[2]);
    assert_eq!(v.validate(&tampered).await.err(), Some(ValidationError::BadSignature));
    // Signed by a key with the same kid that Moat never published.
    let impostor = TestKey::es256("k-es256").unwrap();
    let forged = e.authority.token(&impostor, SERVER).sign().unwrap();
    assert_eq!(v.validate(&forged).await.err(), Some(ValidationError::BadSignature));

    for bad in ["", "abc", "a.b", "a.b.c.d", "e30.e30.", "!!!.e30.e30"] {
        assert!(matches!(v.validate(bad).await, Err(ValidationError::Malformed(_))), "{bad:?}");
    }
    let huge = format!("{}.{}.{}", parts[0], "A".repeat(9000), parts[2]);
    assert_eq!(v.validate(&huge).await.err(), Some(ValidationError::TooLarge { max: 8192 }));
    let not_object = format!("{}.{}.{}", parts[0], b64(b"[1,2]"), parts[2]);
    assert!(matches!(v.validate(&not_object).await, Err(ValidationError::Malformed(_))));
}

#[tokio::test]
async fn messages_never_echo_the_token_or_key_value_text() {
    let e = env().await;
    let v = validator(&e.authority);
    let tokens = [
        e.authority.token(&e.key, SERVER).expires_in(-600).sign().unwrap(),
        e.authority.token(&e.key, SERVER).header("alg", json!("HS256\"; error=x")).sign().unwrap(),
        e.authority.token(&e.key, SERVER).header("kid", json!("evil=\"1\"")).sign().unwrap(),
        e.authority.token(&e.key, SERVER).claim("aud", json!("https://x.example/?a=b")).sign().unwrap(),
    ];
    for token in tokens {
        let err = v.validate(&token).await.unwrap_err();
        let msg = err.to_string();
        assert!(!msg.contains('='), "{msg}");
        assert!(!msg.contains('"'), "{msg}");
        for part in token.split('.') {
            assert!(!msg.contains(part), "{msg}");
        }
    }
}

#[tokio::test]
async fn jwks_url_discovered_from_rfc8414_metadata() {
    let e = env().await;
    let mut config = ValidatorConfig::new(e.authority.issuer(), SERVER);
    config.jwks_url = None;
    let v = Validator::new(config).unwrap();
    let token = e.authority.token(&e.key, SERVER).sign().unwrap();
    assert!(v.validate(&token).await.is_ok());
    assert_eq!(e.authority.metadata_fetches(), 1);
    assert_eq!(e.authority.key_fetches(), 1);

    // Metadata whose issuer differs from the configured one is refused (RFC 8414 §3.3): here
    // the configured issuer has a trailing slash, so the metadata URL is the same but the
    // `issuer` inside is not byte-identical.
    let other = TestAuthority::start(RES).await.unwrap();
    other.publish(&e.key);
    let config = ValidatorConfig::new(format!("{}/", other.issuer()), SERVER);
    let v = Validator::new(config).unwrap();
    let token = other.token(&e.key, SERVER).claim("iss", json!(format!("{}/", other.issuer()))).sign().unwrap();
    match v.validate(&token).await {
        Err(ValidationError::KeysUnavailable(reason)) => {
            assert!(reason.contains("issuer differs"), "{reason}")
        }
        other => panic!("expected KeysUnavailable, got {other:?}"),
    }
    assert_eq!(other.key_fetches(), 0);
}

#[tokio::test]
async fn config_is_checked() {
    use moat_guard::ConfigError;
    let bad = |c: ValidatorConfig| Validator::new(c).err();
    assert_eq!(bad(ValidatorConfig::default()), Some(ConfigError::NoIssuer));
    // Struct-literal construction, as DESIGN.md §9 shows it.
    let literal = ValidatorConfig {
        issuers: vec!["https://moat.example/resources/res_1".into()],
        audiences: vec![SERVER.into(), "res_1".into()],
        jwks_url: Some("https://moat.example/keys".into()),
        leeway: std::time::Duration::from_secs(10),
        ..ValidatorConfig::default()
    };
    assert!(Validator::new(literal).is_ok());
    assert!(matches!(
        bad(ValidatorConfig::new("http://moat.example/resources/res_1", SERVER)),
        Some(ConfigError::InsecureUrl { .. })
    ));
    assert!(
        Validator::new(ValidatorConfig::new("http://moat.internal/resources/res_1", SERVER).with_insecure_http(true))
            .is_ok()
    );
    assert!(matches!(
        bad(ValidatorConfig::new("https://moat.example/resources/res_1", "not a url")),
        Some(ConfigError::BadAudience(_))
    ));
    assert_eq!(
        bad(ValidatorConfig::new("https://moat.example/r", SERVER).with_algorithms([])),
        Some(ConfigError::NoAlgorithm)
    );
}

/// Header strings: anything, plus near-misses of the values the checks look for, so that
/// generated tokens get past the `alg` check and reach `typ`, `kid` and the key lookup.
fn header_value(interesting: &'static [&'static str]) -> impl Strategy<Value = String> {
    let pick = || proptest::sample::select(interesting);
    prop_oneof![
        any::<String>(),
        pick().prop_map(str::to_owned),
        (pick(), any::<String>()).prop_map(|(a, b)| format!("{a}{b}")),
        (any::<String>(), pick()).prop_map(|(a, b)| format!("{a}{b}")),
    ]
}

/// The public entry point the axum layer calls for any bearer token, unauthenticated: hostile
/// JOSE header values (RFC 7515 §4, attacker-controlled) in a correctly signed token, and
/// arbitrary token text, always give `Ok` or `Err`, never a panic.
#[test]
fn arbitrary_headers_and_tokens_never_panic() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (e, v) = rt.block_on(async {
        let e = env().await;
        let v = validator(&e.authority);
        (e, v)
    });
    let headers = (
        header_value(&["ES256", "EdDSA", "RS256", "none", "HS256"]),
        header_value(&["at+jwt", "application/at+jwt", "APPLICATION/", "aaaaaaaaaaa€", "€"]),
        header_value(&["k-es256", ""]),
    );
    let text = prop_oneof![any::<String>(), "[A-Za-z0-9_.=-]{0,300}"];
    let mut runner = TestRunner::new(ProptestConfig { cases: 128, ..ProptestConfig::default() });
    let outcome = runner.run(&(headers, text), |((alg, typ, kid), text)| {
        rt.block_on(async {
            let token = e
                .authority
                .token(&e.key, SERVER)
                .header("alg", json!(alg))
                .header("typ", json!(typ))
                .header("kid", json!(kid))
                .sign()
                .unwrap();
            let _ = v.validate(&token).await;
            let _ = v.validate(&text).await;
        });
        Ok(())
    });
    assert!(outcome.is_ok(), "{outcome:?}");
}
