//! Secrets handling: the master key, the keys derived from it (HKDF, RFC 5869), authenticated
//! encryption of stored private keys, hashing of stored secrets, HMAC, and constant-time
//! comparison.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use aws_lc_rs::{aead, digest, hkdf, hmac};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use subtle::ConstantTimeEq;

use crate::config::Config;

/// The 32-byte master key every other key is derived from.
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(…)")
    }
}

impl MasterKey {
    /// Parses base64 (standard or url-safe, padding optional) of exactly 32 bytes.
    pub fn from_base64(s: &str) -> anyhow::Result<Self> {
        let s = s.trim();
        let bytes = STANDARD
            .decode(s)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(s))
            .or_else(|_| URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')))
            .map_err(|_| anyhow!("the master key is not valid base64"))?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| anyhow!("the master key must be exactly 32 bytes (base64 of 32 random bytes)"))?;
        Ok(Self(arr))
    }

    pub fn generate() -> Self {
        Self(moat_core::ids::random_bytes::<32>())
    }

    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// Resolves the master key for this configuration:
    /// `MOAT_MASTER_KEY` if set; else `master_key_file`; else, for a single SQLite instance
    /// only, `<database file>.key`, generated (mode 0600) when `create` is true and it does not
    /// exist. PostgreSQL deployments must share one explicit key (DESIGN.md §7): a silently
    /// generated per-instance key would make instances unable to read each other's signing keys.
    pub fn load(config: &Config, create: bool) -> anyhow::Result<Self> {
        if let Some(k) = &config.master_key {
            return Self::from_base64(k.expose()).context("MOAT_MASTER_KEY");
        }
        if let Some(path) = &config.master_key_file {
            return Self::read_file(path);
        }
        if config.is_postgres() {
            bail!(
                "a PostgreSQL deployment needs an explicit master key shared by every instance: \
                 set MOAT_MASTER_KEY (32 random bytes, base64, e.g. `openssl rand -base64 32`) \
                 or master_key_file"
            );
        }
        let path = default_key_file(config)
            .ok_or_else(|| anyhow!("set MOAT_MASTER_KEY: no database file to keep a key file beside"))?;
        if path.exists() {
            return Self::read_file(&path);
        }
        if !create {
            bail!(
                "no master key: {} does not exist yet (run `moat serve` once or set MOAT_MASTER_KEY)",
                path.display()
            );
        }
        let key = Self::generate();
        write_private_file(&path, format!("{}\n", key.to_base64()).as_bytes())
            .with_context(|| format!("writing the generated master key to {}", path.display()))?;
        tracing::info!(path = %path.display(), "generated a master key file (keep it secret, back it up with the database)");
        Ok(key)
    }

    fn read_file(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading master key file {}", path.display()))?;
        Self::from_base64(&text).with_context(|| format!("master key file {}", path.display()))
    }

    /// Derives an independent 32-byte key for one purpose (HKDF-SHA256, RFC 5869).
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, b"moat-master-key-v1");
        let prk = salt.extract(&self.0);
        let info = [purpose.as_bytes()];
        let mut out = [0u8; 32];
        // `expand`/`fill` only fail for output lengths above 255 * 32 bytes; 32 is always fine.
        if let Ok(okm) = prk.expand(&info, OutLen(32)) {
            let _ = okm.fill(&mut out);
        }
        out
    }
}

struct OutLen(usize);

impl hkdf::KeyType for OutLen {
    fn len(&self) -> usize {
        self.0
    }
}

/// `<database file>.key` for a SQLite database.
pub fn default_key_file(config: &Config) -> Option<PathBuf> {
    let db = config.sqlite_path()?;
    let mut name = db.file_name()?.to_os_string();
    name.push(".key");
    Some(db.with_file_name(name))
}

/// Writes a file readable only by its owner (0600), refusing to overwrite.
fn write_private_file(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(contents)?;
    f.sync_all()?;
    Ok(())
}

/// AES-256-GCM sealing of small secrets (stored private keys). Output: nonce ‖ ciphertext ‖ tag.
pub struct Sealer {
    key: aead::LessSafeKey,
}

impl Sealer {
    pub fn new(key: [u8; 32]) -> anyhow::Result<Self> {
        let unbound = aead::UnboundKey::new(&aead::AES_256_GCM, &key).map_err(|_| anyhow!("invalid AEAD key"))?;
        Ok(Self { key: aead::LessSafeKey::new(unbound) })
    }

    /// Encrypts `plaintext`, binding it to `aad` (e.g. the key id) so ciphertexts cannot be
    /// swapped between rows.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> anyhow::Result<Vec<u8>> {
        let nonce_bytes = moat_core::ids::random_bytes::<12>();
        let nonce = aead::Nonce::assume_unique_for_key(nonce_bytes);
        let mut buf = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(nonce, aead::Aad::from(aad), &mut buf)
            .map_err(|_| anyhow!("encryption failed"))?;
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&buf);
        Ok(out)
    }

    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> anyhow::Result<Vec<u8>> {
        if sealed.len() < 12 + 16 {
            bail!("sealed value too short");
        }
        let (nonce_bytes, rest) = sealed.split_at(12);
        let nonce = aead::Nonce::try_assume_unique_for_key(nonce_bytes).map_err(|_| anyhow!("bad nonce"))?;
        let mut buf = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, aead::Aad::from(aad), &mut buf)
            .map_err(|_| anyhow!("decryption failed: wrong master key or corrupted data"))?;
        Ok(plain.to_vec())
    }
}

/// Lowercase hex SHA-256: how codes, refresh tokens, client secrets and session cookies are
/// stored (they are 256-bit random values, so a fast hash is preimage-safe).
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, data).as_ref())
}

/// Constant-time equality of two byte strings (length is not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// HMAC-SHA256 keyed by a derived key.
pub struct Mac {
    key: hmac::Key,
}

impl Mac {
    pub fn new(key: &[u8; 32]) -> Self {
        Self { key: hmac::Key::new(hmac::HMAC_SHA256, key) }
    }

    pub fn sign(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.key);
        for p in parts {
            // Length-prefix every part so ("ab","c") and ("a","bc") differ.
            ctx.update(&(p.len() as u64).to_be_bytes());
            ctx.update(p);
        }
        let tag = ctx.sign();
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    pub fn sign_b64(&self, parts: &[&[u8]]) -> String {
        URL_SAFE_NO_PAD.encode(self.sign(parts))
    }

    /// Constant-time verification of a base64url tag.
    pub fn verify_b64(&self, parts: &[&[u8]], tag: &str) -> bool {
        ct_eq(self.sign_b64(parts).as_bytes(), tag.as_bytes())
    }
}

/// Every key Moat derives from the master key, by purpose.
pub struct DerivedKeys {
    /// Encrypts signing keys at rest.
    pub key_sealer: std::sync::Arc<Sealer>,
    /// Derives refresh-token successors deterministically (DESIGN.md §4).
    pub refresh_successor: Mac,
    /// CSRF tokens on forms.
    pub csrf: Mac,
}

impl DerivedKeys {
    pub fn new(master: &MasterKey) -> anyhow::Result<Self> {
        Ok(Self {
            key_sealer: std::sync::Arc::new(Sealer::new(master.derive("signing-key-encryption"))?),
            refresh_successor: Mac::new(&master.derive("refresh-token-successor")),
            csrf: Mac::new(&master.derive("csrf")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trip_and_aad_binding() {
        let s = Sealer::new([7u8; 32]).unwrap();
        let sealed = s.seal(b"private key", b"kid-1").unwrap();
        assert_eq!(s.open(&sealed, b"kid-1").unwrap(), b"private key");
        assert!(s.open(&sealed, b"kid-2").is_err());
        let other = Sealer::new([8u8; 32]).unwrap();
        assert!(other.open(&sealed, b"kid-1").is_err());
    }

    #[test]
    fn derived_keys_differ_by_purpose_and_master() {
        let m = MasterKey([1u8; 32]);
        assert_ne!(m.derive("a"), m.derive("b"));
        assert_ne!(m.derive("a"), MasterKey([2u8; 32]).derive("a"));
        assert_eq!(m.derive("a"), m.derive("a"));
    }

    #[test]
    fn master_key_parsing() {
        let k = MasterKey::generate();
        let b64 = k.to_base64();
        assert_eq!(MasterKey::from_base64(&b64).unwrap().0, k.0);
        assert!(MasterKey::from_base64("c2hvcnQ=").is_err());
        assert!(MasterKey::from_base64("not base64!").is_err());
    }

    #[test]
    fn mac_parts_are_length_prefixed() {
        let m = Mac::new(&[3u8; 32]);
        assert_ne!(m.sign(&[b"ab", b"c"]), m.sign(&[b"a", b"bc"]));
        let tag = m.sign_b64(&[b"x"]);
        assert!(m.verify_b64(&[b"x"], &tag));
        assert!(!m.verify_b64(&[b"y"], &tag));
    }

    #[test]
    fn sha256_hex_vector() {
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
