//! Criterion benchmarks of token validation (`cargo bench -p moat-guard`):
//! - `first_seen/<alg>`: full validation of a token not in the cache (parse, header checks,
//!   JSON, key lookup, signature, claims) — measured with the token cache disabled so every
//!   iteration pays the full price;
//! - `cached/<alg>`: the same token again with the cache on (SHA-256 of the token, map lookup,
//!   `exp` and key checks);
//! - `verify_only/<alg>`: the bare aws-lc-rs signature check with an already parsed key, the
//!   floor under `first_seen`.
//!
//! Keys are served by a loopback `TestAuthority` and fetched once before measuring.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ED25519, ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, criterion_group, criterion_main};
use moat_guard::testing::{TestAuthority, TestKey};
use moat_guard::{Algorithm, ScopeHierarchy, Validator, ValidatorConfig};

const SERVER: &str = "https://mcp.example.com/mcp";

fn field(key: &TestKey, name: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(key.jwk()[name].as_str().unwrap()).unwrap()
}

fn parsed(key: &TestKey) -> ParsedPublicKey {
    match key.alg() {
        Algorithm::Es256 => {
            let mut point = vec![4u8];
            point.extend(field(key, "x"));
            point.extend(field(key, "y"));
            ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point).unwrap()
        }
        Algorithm::EdDsa => ParsedPublicKey::new(&ED25519, field(key, "x")).unwrap(),
        _ => {
            let (n, e) = (field(key, "n"), field(key, "e"));
            RsaPublicKeyComponents { n: &n, e: &e }.to_parsed_public_key(&RSA_PKCS1_2048_8192_SHA256).unwrap()
        }
    }
}

fn validator(authority: &TestAuthority, cache: usize) -> Validator {
    Validator::new(
        ValidatorConfig::new(authority.issuer(), SERVER)
            .with_audience(authority.resource_id())
            .with_jwks_url(authority.jwks_url())
            .with_scope_hierarchy(ScopeHierarchy::new().with_implication("todo:write", "todo:read"))
            .with_token_cache_capacity(cache),
    )
    .unwrap()
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let authority = rt.block_on(TestAuthority::start("res_bench")).unwrap();
    let keys = [TestKey::es256("k-es").unwrap(), TestKey::eddsa("k-ed").unwrap(), TestKey::rs256("k-rs").unwrap()];
    for k in &keys {
        authority.publish(k);
    }
    let uncached = validator(&authority, 0);
    let cached = validator(&authority, 10_000);
    rt.block_on(async {
        uncached.refresh_keys().await.unwrap();
        cached.refresh_keys().await.unwrap();
    });

    for key in &keys {
        let alg = key.alg().as_str();
        let token = authority.token(key, SERVER).subject("usr_bench").scope("todo:read todo:write").sign().unwrap();
        rt.block_on(async {
            assert!(uncached.validate(&token).await.is_ok());
            assert!(cached.validate(&token).await.is_ok());
        });

        c.bench_function(&format!("first_seen/{alg}"), |b| {
            b.to_async(&rt).iter(|| async { black_box(uncached.validate(black_box(&token)).await.unwrap()) })
        });
        c.bench_function(&format!("cached/{alg}"), |b| {
            b.to_async(&rt).iter(|| async { black_box(cached.validate(black_box(&token)).await.unwrap()) })
        });

        let (input, sig) = token.rsplit_once('.').unwrap();
        let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
        let public = parsed(key);
        c.bench_function(&format!("verify_only/{alg}"), |b| {
            b.iter(|| public.verify_sig(black_box(input.as_bytes()), black_box(&sig)).unwrap())
        });
    }
}

criterion_group!(validate, benches);
criterion_main!(validate);
