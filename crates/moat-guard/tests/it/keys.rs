//! Key-set behaviour: lazy start, refetch on unknown kid (once, coalesced, rate-limited),
//! rotation, stale keys while Moat is down, withdrawn keys.

use std::time::Duration;

use moat_guard::testing::{TestAuthority, TestKey};
use moat_guard::{ValidationError, Validator};

use crate::support::{RES, SERVER, config, env, random_kid, validator};

#[tokio::test]
async fn unknown_kid_triggers_one_refetch_then_rejects() {
    let e = env().await;
    let v = validator(&e.authority);
    let good = e.authority.token(&e.key, SERVER).sign().unwrap();
    assert!(v.validate(&good).await.is_ok());
    assert_eq!(e.authority.key_fetches(), 1);

    // Nothing fetched at construction.
    let fresh = Validator::new(config(&e.authority).with_jwks_refetch_interval(Duration::from_secs(1))).unwrap();
    assert_eq!(e.authority.key_fetches(), 1);
    assert!(fresh.validate(&good).await.is_ok());
    assert_eq!(e.authority.key_fetches(), 2);
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let stranger = TestKey::es256("k-unknown").unwrap();
    let token = e.authority.token(&stranger, SERVER).sign().unwrap();
    assert!(matches!(
        fresh.validate(&token).await,
        Err(ValidationError::UnknownKey { kid }) if kid == "k-unknown"
    ));
    assert_eq!(e.authority.key_fetches(), 3, "exactly one refetch");
    // Immediately again: rate-limited, no fetch.
    assert!(matches!(fresh.validate(&token).await, Err(ValidationError::UnknownKey { .. })));
    assert_eq!(e.authority.key_fetches(), 3);
}

#[tokio::test]
async fn flood_of_random_kids_is_bounded() {
    let e = env().await;
    // Default refetch interval (10 s).
    let v = validator(&e.authority);
    let signer = TestKey::es256("x").unwrap();
    let mut tokens = Vec::new();
    for _ in 0..200 {
        let kid = random_kid();
        tokens.push(e.authority.token(&signer, SERVER).header("kid", serde_json::json!(kid)).sign().unwrap());
    }
    // Cold start: 200 concurrent unknown kids share one fetch.
    let results = futures_join(&v, &tokens).await;
    assert!(results.iter().all(|r| matches!(r, Err(ValidationError::UnknownKey { .. }))));
    assert_eq!(e.authority.key_fetches(), 1);
    // Warm: more random kids inside the interval fetch nothing.
    let results = futures_join(&v, &tokens).await;
    assert!(results.iter().all(Result::is_err));
    assert_eq!(e.authority.key_fetches(), 1);
    // The genuine key still works.
    let good = e.authority.token(&e.key, SERVER).sign().unwrap();
    assert!(v.validate(&good).await.is_ok());
    assert_eq!(e.authority.key_fetches(), 1);
}

#[tokio::test]
async fn zero_min_ttl_and_no_store_cannot_disable_the_refetch_limit() {
    // An authority that forbids caching (RFC 9111 §5.2.2.5 no-store, or max-age=0) and a
    // validator that lets it (jwks_min_ttl 0): the cached set is stale the moment it arrives.
    // The stale-set refetch must still be spaced (at most one a second), or a flood of random
    // kids turns into back-to-back key-set fetches.
    for cache_control in ["no-store", "max-age=0"] {
        let e = env().await;
        e.authority.set_cache_control(Some(cache_control));
        let v = Validator::new(config(&e.authority).with_jwks_ttl(
            Duration::from_secs(300),
            Duration::ZERO,
            Duration::from_secs(3600),
        ))
        .unwrap();
        let signer = TestKey::es256("x").unwrap();
        let start = std::time::Instant::now();
        let mut waves = 0;
        while start.elapsed() < Duration::from_millis(1200) {
            let tokens: Vec<String> = (0..20)
                .map(|_| {
                    e.authority.token(&signer, SERVER).header("kid", serde_json::json!(random_kid())).sign().unwrap()
                })
                .collect();
            let results = futures_join(&v, &tokens).await;
            assert!(results.iter().all(|r| matches!(r, Err(ValidationError::UnknownKey { .. }))), "{results:?}");
            waves += 1;
        }
        let elapsed = start.elapsed();
        let fetches = e.authority.key_fetches();
        // One fetch at the start, then at most one per elapsed second.
        assert!(
            fetches <= elapsed.as_secs() + 1,
            "{cache_control}: {fetches} fetches for {waves} waves in {elapsed:?}"
        );
        assert!(waves >= 2, "{cache_control}: the flood did not run ({waves} waves)");
        // The genuine key still validates (from the stale set, at once).
        assert!(v.validate(&e.authority.token(&e.key, SERVER).sign().unwrap()).await.is_ok());
    }
}

async fn futures_join(v: &Validator, tokens: &[String]) -> Vec<Result<moat_guard::Claims, ValidationError>> {
    let mut set = tokio::task::JoinSet::new();
    for t in tokens {
        let v = v.clone();
        let t = t.clone();
        set.spawn(async move { v.validate(&t).await });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        out.push(r.unwrap());
    }
    out
}

#[tokio::test]
async fn concurrent_requests_for_a_new_key_share_one_fetch() {
    let e = env().await;
    // A long interval compared with the test's own timing, so that only coalescing (not the
    // rate limit running out) can explain a single fetch.
    let v = Validator::new(config(&e.authority).with_jwks_refetch_interval(Duration::from_secs(1))).unwrap();
    assert!(v.validate(&e.authority.token(&e.key, SERVER).sign().unwrap()).await.is_ok());
    let next = TestKey::eddsa("k-next").unwrap();
    e.authority.publish(&next);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let tokens: Vec<String> =
        (0..50).map(|i| e.authority.token(&next, SERVER).subject(&format!("usr_{i}")).sign().unwrap()).collect();
    let results = futures_join(&v, &tokens).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(e.authority.key_fetches(), 2);
}

#[tokio::test]
async fn rotation_prepublished_key_is_found_once_the_cached_set_is_stale() {
    // Moat publishes a new key longer than max-age before signing with it (DESIGN.md §3). The
    // refetch interval is long here, so only staleness allows the refetch.
    let e = env().await;
    e.authority.set_cache_control(Some("public, max-age=1"));
    let v = Validator::new(config(&e.authority).with_jwks_refetch_interval(Duration::from_secs(600)).with_jwks_ttl(
        Duration::from_secs(300),
        Duration::from_secs(1),
        Duration::from_secs(3600),
    ))
    .unwrap();
    assert!(v.validate(&e.authority.token(&e.key, SERVER).sign().unwrap()).await.is_ok());
    let new_key = TestKey::es256("k-2").unwrap();
    e.authority.publish(&new_key);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let token = e.authority.token(&new_key, SERVER).sign().unwrap();
    assert!(v.validate(&token).await.is_ok());
    assert_eq!(e.authority.key_fetches(), 2);
    // The old key keeps working while it is published.
    assert!(v.validate(&e.authority.token(&e.key, SERVER).sign().unwrap()).await.is_ok());
}

#[tokio::test]
async fn stale_known_key_is_used_at_once_and_refreshed_in_background() {
    let e = env().await;
    e.authority.set_cache_control(Some("max-age=1"));
    let v = Validator::new(config(&e.authority).with_jwks_ttl(
        Duration::from_secs(300),
        Duration::from_secs(1),
        Duration::from_secs(3600),
    ))
    .unwrap();
    assert!(v.validate(&e.authority.token(&e.key, SERVER).sign().unwrap()).await.is_ok());
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(v.validate(&e.authority.token(&e.key, SERVER).sign().unwrap()).await.is_ok());
    for _ in 0..50 {
        if e.authority.key_fetches() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(e.authority.key_fetches(), 2);
}

#[tokio::test]
async fn moat_down_cached_keys_keep_serving() {
    let mut e = env().await;
    e.authority.set_cache_control(Some("max-age=1"));
    let v = Validator::new(config(&e.authority).with_jwks_refetch_interval(Duration::from_millis(100)).with_jwks_ttl(
        Duration::from_secs(300),
        Duration::from_secs(1),
        Duration::from_secs(3600),
    ))
    .unwrap();
    let mint = |sub: &str| e.authority.token(&e.key, SERVER).subject(sub).sign().unwrap();
    let (t1, t2, t3) = (mint("usr_1"), mint("usr_2"), mint("usr_3"));
    let stranger = TestKey::es256("k-x").unwrap();
    let unknown = e.authority.token(&stranger, SERVER).sign().unwrap();
    assert!(v.validate(&t1).await.is_ok());

    e.authority.shutdown().await;
    // A token never seen before, checked with the cached keys.
    assert!(v.validate(&t2).await.is_ok());
    // Stale set, Moat unreachable: the last good keys still serve.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(v.validate(&t3).await.is_ok());
    // An unknown kid is still "unknown" (we have keys), not "unavailable".
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(matches!(v.validate(&unknown).await, Err(ValidationError::UnknownKey { .. })));

    // Moat back: the next refetch succeeds.
    e.authority.restart().await.unwrap();
    let fresh = TestKey::eddsa("k-fresh").unwrap();
    e.authority.publish(&fresh);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let t4 = e.authority.token(&fresh, SERVER).sign().unwrap();
    assert!(v.validate(&t4).await.is_ok());
}

#[tokio::test]
async fn starts_while_moat_is_down_and_recovers() {
    // Reserve a port, then free it: nothing listens there yet.
    let addr = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let issuer = format!("http://{addr}/resources/{RES}");
    let mut c = moat_guard::ValidatorConfig::new(issuer.clone(), SERVER)
        .with_jwks_url(format!("http://{addr}/keys"))
        .with_jwks_refetch_interval(Duration::from_millis(200));
    c.http_timeout = Duration::from_secs(2);
    let v = Validator::new(c).unwrap();

    let key = TestKey::es256("k-late").unwrap();
    // Mint with an authority elsewhere but the same issuer string.
    let minter = TestAuthority::start(RES).await.unwrap();
    let token = minter.token(&key, SERVER).claim("iss", serde_json::json!(issuer)).sign().unwrap();
    assert!(matches!(v.validate(&token).await, Err(ValidationError::KeysUnavailable(_))));
    assert!(v.refresh_keys().await.is_err());

    let authority = TestAuthority::start_on(addr, RES).await.unwrap();
    authority.publish(&key);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(v.validate(&token).await.is_ok());
    assert_eq!(authority.key_fetches(), 1);
}

#[tokio::test]
async fn withdrawn_key_stops_its_cached_tokens() {
    let e = env().await;
    let v = validator(&e.authority);
    let token = e.authority.token(&e.key, SERVER).sign().unwrap();
    assert!(v.validate(&token).await.is_ok());
    assert_eq!(v.cached_tokens(), 1);
    e.authority.unpublish(e.key.kid());
    v.refresh_keys().await.unwrap();
    assert!(matches!(v.validate(&token).await, Err(ValidationError::UnknownKey { .. })));
}
