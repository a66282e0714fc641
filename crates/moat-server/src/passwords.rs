//! Password hashing with argon2id (RFC 9106), always off the async runtime
//! (`spawn_blocking`), with the OWASP-recommended parameters (m = 19 MiB, t = 2, p = 1).

use anyhow::anyhow;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// Longest password accepted (bytes); bounds the hashing work an attacker can request.
pub const MAX_PASSWORD_LEN: usize = 1024;
/// Shortest password `moat user create` accepts.
pub const MIN_PASSWORD_LEN: usize = 8;

fn argon2() -> anyhow::Result<Argon2<'static>> {
    let params = Params::new(19 * 1024, 2, 1, None).map_err(|e| anyhow!("argon2 params: {e}"))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes a password (PHC string format). Blocking: call through [`hash_password`].
fn hash_blocking(password: &str) -> anyhow::Result<String> {
    let salt_bytes = moat_core::ids::random_bytes::<16>();
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| anyhow!("salt: {e}"))?;
    Ok(argon2()?.hash_password(password.as_bytes(), &salt).map_err(|e| anyhow!("argon2: {e}"))?.to_string())
}

fn verify_blocking(password: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    // Verify with the parameters recorded in the hash itself (allows raising them later).
    Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok()
}

/// Hashes on the blocking pool.
pub async fn hash_password(password: String) -> anyhow::Result<String> {
    if password.len() > MAX_PASSWORD_LEN {
        return Err(anyhow!("password is longer than {MAX_PASSWORD_LEN} bytes"));
    }
    tokio::task::spawn_blocking(move || hash_blocking(&password)).await.map_err(|e| anyhow!("hashing task: {e}"))?
}

/// Verifies on the blocking pool. Over-long passwords fail without hashing.
pub async fn verify_password(password: String, phc: String) -> bool {
    if password.len() > MAX_PASSWORD_LEN {
        return false;
    }
    tokio::task::spawn_blocking(move || verify_blocking(&password, &phc)).await.unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_and_verify() {
        let h = hash_password("correct horse".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify_password("correct horse".into(), h.clone()).await);
        assert!(!verify_password("wrong".into(), h.clone()).await);
        assert!(!verify_password("x".repeat(MAX_PASSWORD_LEN + 1), h).await);
        assert!(!verify_password("x".into(), "not a hash".into()).await);
    }
}
