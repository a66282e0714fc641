//! The verified-token cache: honours `exp`, stays bounded, can be disabled.

use std::time::Duration;

use moat_guard::testing::now;
use moat_guard::{ValidationError, Validator};

use crate::support::{SERVER, config, env};

#[tokio::test]
async fn cached_token_is_never_served_past_exp() {
    let e = env().await;
    let v = Validator::new(config(&e.authority).with_leeway(Duration::ZERO)).unwrap();
    let exp = now() + 2;
    let token = e.authority.token(&e.key, SERVER).claim("exp", serde_json::json!(exp)).sign().unwrap();
    let first = v.validate(&token).await.unwrap();
    assert_eq!(v.cached_tokens(), 1);
    let hit = v.validate(&token).await.unwrap();
    assert_eq!(hit.jti(), first.jti());
    // Wait until the wall clock is past exp.
    while now() < exp {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(v.validate(&token).await.err(), Some(ValidationError::Expired));
    assert_eq!(v.cached_tokens(), 0, "the expired entry is gone");
}

#[tokio::test]
async fn cache_is_bounded_and_optional() {
    let e = env().await;
    let v = Validator::new(config(&e.authority).with_token_cache_capacity(32)).unwrap();
    for i in 0..300 {
        let t = e.authority.token(&e.key, SERVER).subject(&format!("usr_{i}")).sign().unwrap();
        assert_eq!(v.validate(&t).await.unwrap().sub(), format!("usr_{i}"));
    }
    assert!(v.cached_tokens() <= 32, "{}", v.cached_tokens());
    assert!(v.cached_tokens() > 0);

    let off = Validator::new(config(&e.authority).with_token_cache_capacity(0)).unwrap();
    let t = e.authority.token(&e.key, SERVER).sign().unwrap();
    assert!(off.validate(&t).await.is_ok());
    assert!(off.validate(&t).await.is_ok());
    assert_eq!(off.cached_tokens(), 0);
}

#[tokio::test]
async fn token_within_leeway_after_exp_is_validated_fully_not_cached() {
    let e = env().await;
    let v = Validator::new(config(&e.authority).with_leeway(Duration::from_secs(30))).unwrap();
    let token = e.authority.token(&e.key, SERVER).expires_in(-5).sign().unwrap();
    assert!(v.validate(&token).await.is_ok());
    assert_eq!(v.cached_tokens(), 0);
}
