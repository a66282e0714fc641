//! Typed identifiers (`res_…`, `usr_…`, `cli_…`, …) and the random source they and every
//! secret Moat mints are drawn from.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

/// Fills `N` bytes from the operating system's CSPRNG.
///
/// A failing OS random source leaves no safe way to continue (every code, token and key would
/// be guessable), so this aborts the process instead of returning an error that callers could
/// be tempted to ignore. This is the behaviour of BoringSSL/AWS-LC as well.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    if getrandom::fill(&mut buf).is_err() {
        eprintln!("fatal: the operating system's random number generator failed");
        std::process::abort();
    }
    buf
}

/// A 256-bit random secret encoded as unpadded base64url (43 characters): authorization codes,
/// refresh tokens, client secrets, session cookies.
pub fn random_secret() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes::<32>())
}

const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// `prefix` + 20 characters of lowercase Crockford base32 (100 random bits).
pub fn random_id(prefix: &str) -> String {
    let bytes = random_bytes::<20>();
    let mut s = String::with_capacity(prefix.len() + 20);
    s.push_str(prefix);
    for b in bytes {
        s.push(ALPHABET[(b & 31) as usize] as char);
    }
    s
}

fn is_id_with_prefix(s: &str, prefix: &str) -> bool {
    s.strip_prefix(prefix).is_some_and(|rest| rest.len() == 20 && rest.bytes().all(|b| ALPHABET.contains(&b)))
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A fresh random id.
            pub fn generate() -> Self {
                Self(random_id($prefix))
            }

            /// Parses an id, accepting only the exact `prefix` + 20 base32 characters form.
            pub fn parse(s: &str) -> Option<Self> {
                is_id_with_prefix(s, $prefix).then(|| Self(s.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::parse(&s).ok_or_else(|| format!("not a valid {} id", $prefix))
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

prefixed_id!(
    /// A registered MCP server (a *resource*).
    ResourceId,
    "res_"
);
prefixed_id!(
    /// A local or federated user.
    UserId,
    "usr_"
);
prefixed_id!(
    /// A refresh-token family: every refresh token descended from one authorization.
    FamilyId,
    "rtf_"
);

/// A client identifier: `cli_…` for pre-registered and dynamically registered clients, or an
/// https URL for Client ID Metadata Document clients. At most [`ClientId::MAX_LEN`] bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClientId(String);

impl ClientId {
    pub const PREFIX: &'static str = "cli_";
    /// Longest client id accepted anywhere (CIMD URLs included).
    pub const MAX_LEN: usize = 512;

    pub fn generate() -> Self {
        Self(random_id(Self::PREFIX))
    }

    /// Accepts any non-empty, printable-ASCII string up to [`Self::MAX_LEN`]; whether it names
    /// a known client is the store's business.
    pub fn parse(s: &str) -> Option<Self> {
        (!s.is_empty() && s.len() <= Self::MAX_LEN && s.bytes().all(|b| (0x21..=0x7e).contains(&b)))
            .then(|| Self(s.to_owned()))
    }

    /// True when this id is a URL (a Client ID Metadata Document client).
    pub fn is_url(&self) -> bool {
        self.0.starts_with("https://") || self.0.starts_with("http://")
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ClientId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_round_trip_and_have_prefix() {
        let r = ResourceId::generate();
        assert!(r.as_str().starts_with("res_"));
        assert_eq!(r.as_str().len(), 24);
        assert_eq!(ResourceId::parse(r.as_str()), Some(r.clone()));
        assert_eq!(UserId::parse(r.as_str()), None);
    }

    #[test]
    fn parse_rejects_bad_forms() {
        assert!(ResourceId::parse("res_").is_none());
        assert!(ResourceId::parse("res_ABCDEFGHJKMNPQRSTVWX").is_none());
        assert!(ResourceId::parse("res_0123456789abcdefghjkm").is_none());
        assert!(ResourceId::parse("res_0123456789abcdefghij").is_none(), "i is not in the alphabet");
    }

    #[test]
    fn secrets_are_43_chars_and_distinct() {
        let a = random_secret();
        let b = random_secret();
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
    }

    #[test]
    fn client_id_bounds() {
        assert!(ClientId::parse("").is_none());
        assert!(ClientId::parse("a b").is_none());
        assert!(ClientId::parse(&"a".repeat(513)).is_none());
        assert!(ClientId::parse("https://app.example.com/client.json").unwrap().is_url());
        assert!(!ClientId::generate().is_url());
    }
}
