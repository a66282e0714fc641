//! Configuration: `moat.toml` (optional) < `MOAT_*` environment < command-line flags.
//!
//! Every setting is declared once in the `settings!` table below, which generates the TOML
//! schema (unknown keys are errors), the environment mapping (`MOAT_` + upper-case key) and the
//! defaults. Secrets (the master key) come only from the environment or a key file, never from
//! the TOML file, so configuration files can be shared without leaking them.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, anyhow, bail};
use serde::Deserialize;

/// JWS algorithm used to sign access tokens (RFC 7518 §3.1, RFC 8037).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SigningAlg {
    ES256,
    EdDSA,
    RS256,
}

impl SigningAlg {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ES256 => "ES256",
            Self::EdDSA => "EdDSA",
            Self::RS256 => "RS256",
        }
    }
}

impl FromStr for SigningAlg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ES256" => Ok(Self::ES256),
            "EdDSA" => Ok(Self::EdDSA),
            "RS256" => Ok(Self::RS256),
            other => Err(format!("unsupported signing algorithm {other:?} (ES256, EdDSA, RS256)")),
        }
    }
}

impl fmt::Display for SigningAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!("unknown log format {other:?} (text, json)")),
        }
    }
}

/// A secret value whose `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Self {
        Self(s)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

macro_rules! settings {
    (
        defaults { $( $(#[$dm:meta])* $d:ident : $dt:ty = $dv:expr ),* $(,)? }
        optional { $( $(#[$om:meta])* $o:ident : $ot:ty ),* $(,)? }
    ) => {
        /// Settings as read from one layer (file or environment): everything optional.
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct Layer {
            $( $(#[$dm])* pub $d: Option<$dt>, )*
            $( $(#[$om])* pub $o: Option<$ot>, )*
        }

        impl Layer {
            /// Reads `MOAT_<KEY>` for every key.
            pub fn from_env(get: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
                let mut layer = Layer::default();
                $( layer.$d = env_value(get, stringify!($d))?; )*
                $( layer.$o = env_value(get, stringify!($o))?; )*
                Ok(layer)
            }

            /// Values of `other` override those of `self`.
            pub fn merge(mut self, other: Layer) -> Layer {
                $( if other.$d.is_some() { self.$d = other.$d; } )*
                $( if other.$o.is_some() { self.$o = other.$o; } )*
                self
            }
        }

        /// The resolved configuration.
        #[derive(Debug, Clone)]
        pub struct Config {
            $( $(#[$dm])* pub $d: $dt, )*
            $( $(#[$om])* pub $o: Option<$ot>, )*
            /// `MOAT_MASTER_KEY`: 32 random bytes, base64 (environment only).
            pub master_key: Option<Secret>,
        }

        impl Config {
            fn from_layer(layer: Layer, master_key: Option<Secret>) -> Config {
                Config {
                    $( $d: layer.$d.unwrap_or_else(|| $dv), )*
                    $( $o: layer.$o, )*
                    master_key,
                }
            }

            /// Every key with its environment variable, for `--help`-style documentation.
            pub fn keys() -> &'static [&'static str] {
                &[ $( stringify!($d), )* $( stringify!($o), )* ]
            }
        }
    };
}

settings! {
    defaults {
        /// Address to listen on.
        listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8080)),
        /// Database URL: `sqlite://moat.db` (default) or `postgres://…`.
        database_url: String = "sqlite://moat.db".to_owned(),
        /// Algorithm new signing keys use.
        signing_alg: SigningAlg = SigningAlg::ES256,
        /// Authorization-code lifetime.
        auth_code_ttl_seconds: i64 = 60,
        /// How long a started authorization (login + consent) may take.
        authorization_request_ttl_seconds: i64 = 600,
        /// Grace window in which the previous refresh token yields the same successor.
        refresh_reuse_grace_seconds: i64 = 60,
        /// A browser session unused this long ends.
        session_idle_seconds: i64 = 12 * 3600,
        /// A browser session ends this long after login, however active.
        session_absolute_seconds: i64 = 7 * 24 * 3600,
        /// A rotated-in signing key is published this long before it signs.
        key_publish_delay_seconds: i64 = 900,
        /// `Cache-Control: max-age` of the JWKS (must be shorter than the publish delay).
        jwks_max_age_seconds: i64 = 300,
        /// How often the server reloads signing keys from the database.
        key_reload_seconds: u64 = 30,
        /// Failed logins per account within the window before the account is throttled.
        login_max_failures_per_account: u32 = 5,
        /// Failed logins per source address within the window before it is throttled.
        login_max_failures_per_ip: u32 = 30,
        /// Window of the login throttles.
        login_failure_window_seconds: i64 = 900,
        /// Dynamic registrations allowed per source address per minute.
        dcr_rate_limit_per_minute: u32 = 10,
        /// A dynamically registered client never used within this time is deleted.
        dcr_unused_client_ttl_seconds: i64 = 24 * 3600,
        /// Largest request body accepted by the OAuth endpoints and forms.
        max_body_bytes: usize = 16 * 1024,
        /// How often expired rows are purged.
        housekeeping_interval_seconds: u64 = 300,
        /// Largest database connection pool.
        db_max_connections: u32 = 8,
        /// How long to wait for a pooled database connection.
        db_acquire_timeout_seconds: u64 = 5,
        /// SQLite: how long to wait for the database write lock.
        db_busy_timeout_ms: u64 = 5000,
        /// How long resource settings are cached (found rows only).
        resource_cache_seconds: u64 = 2,
        /// Name shown on the login and consent pages.
        brand_name: String = "Moat".to_owned(),
        /// Log format.
        log_format: LogFormat = LogFormat::Text,
        /// Apply database migrations when `serve` starts.
        migrate_on_start: bool = true,
        /// Let the client-metadata fetcher reach loopback addresses (only for Moat's own tests
        /// and single-machine setups; off by default: an SSRF guard).
        cimd_allow_loopback: bool = false,
        /// Connect timeout of client-metadata fetches, in milliseconds.
        cimd_connect_timeout_ms: u64 = 3000,
        /// Total timeout of client-metadata fetches, in milliseconds.
        cimd_timeout_ms: u64 = 5000,
        /// Metadata-document fetches (cache misses) one source address may cause per minute at
        /// the authorization endpoint: each is an outbound request and, when valid, a stored
        /// client row, and anyone can ask for one by naming a new `client_id` URL.
        cimd_fetch_rate_limit_per_minute: u32 = 30,
    }
    optional {
        /// Public URL (origin) clients reach Moat at; default `http://{listen}`.
        public_url: String,
        /// File holding the base64 master key; default `<database file>.key` for SQLite.
        master_key_file: PathBuf,
        /// Extra trusted root CA (PEM file) for client-metadata fetches (private deployments, tests).
        cimd_extra_root_ca: PathBuf,
        /// Host-to-address overrides for client-metadata fetches: `host=ip[,host=ip…]`; the
        /// addresses are still checked against the outbound address policy.
        cimd_resolve: String,
        /// Header a trusted reverse proxy sets to the client address (e.g. `X-Forwarded-For`;
        /// the right-most entry is used). Unset: the TCP peer address.
        trusted_proxy_header: String,
    }
}

fn env_value<T: FromStr>(get: &dyn Fn(&str) -> Option<String>, key: &str) -> anyhow::Result<Option<T>>
where
    T::Err: fmt::Display,
{
    let var = format!("MOAT_{}", key.to_ascii_uppercase());
    match get(&var) {
        None => Ok(None),
        Some(v) if v.is_empty() => Ok(None),
        Some(v) => v.parse::<T>().map(Some).map_err(|e| anyhow!("{var}: {e}")),
    }
}

/// Values given on the command line (highest precedence).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub public_url: Option<String>,
    pub database_url: Option<String>,
}

impl Config {
    /// Loads the configuration from `config_file` (or `./moat.toml` when it exists), the process
    /// environment and `overrides`.
    pub fn load(config_file: Option<&Path>, overrides: &Overrides) -> anyhow::Result<Config> {
        let env = |k: &str| std::env::var(k).ok();
        Self::load_with(config_file, &env, overrides)
    }

    /// As [`Config::load`] with an explicit environment (tests).
    pub fn load_with(
        config_file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
        overrides: &Overrides,
    ) -> anyhow::Result<Config> {
        let file_path = match config_file {
            Some(p) => Some(p.to_path_buf()),
            None => env("MOAT_CONFIG").map(PathBuf::from).or_else(|| {
                let default = PathBuf::from("moat.toml");
                default.exists().then_some(default)
            }),
        };
        let file_layer = match &file_path {
            Some(p) => {
                let text =
                    std::fs::read_to_string(p).with_context(|| format!("reading config file {}", p.display()))?;
                toml::from_str::<Layer>(&text).with_context(|| format!("invalid config file {}", p.display()))?
            }
            None => Layer::default(),
        };
        let mut layer = file_layer.merge(Layer::from_env(env)?);
        if let Some(l) = overrides.listen {
            layer.listen = Some(l);
        }
        if let Some(u) = &overrides.public_url {
            layer.public_url = Some(u.clone());
        }
        if let Some(d) = &overrides.database_url {
            layer.database_url = Some(d.clone());
        }
        let master_key = env("MOAT_MASTER_KEY").filter(|k| !k.is_empty()).map(Secret::new);
        let config = Config::from_layer(layer, master_key);
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if let Some(u) = &self.public_url {
            moat_core::url::parse_public_url(u).map_err(|e| anyhow!("public_url {u:?}: {e}"))?;
        }
        let positive = [
            ("auth_code_ttl_seconds", self.auth_code_ttl_seconds),
            ("authorization_request_ttl_seconds", self.authorization_request_ttl_seconds),
            ("session_idle_seconds", self.session_idle_seconds),
            ("session_absolute_seconds", self.session_absolute_seconds),
            ("login_failure_window_seconds", self.login_failure_window_seconds),
            ("dcr_unused_client_ttl_seconds", self.dcr_unused_client_ttl_seconds),
        ];
        for (name, v) in positive {
            if v <= 0 {
                bail!("{name} must be positive");
            }
        }
        if self.refresh_reuse_grace_seconds < 0 || self.key_publish_delay_seconds < 0 {
            bail!("refresh_reuse_grace_seconds and key_publish_delay_seconds must not be negative");
        }
        // A rotated-in key reaches every instance within key_reload_seconds and every resource
        // server's cache within jwks_max_age_seconds more; it must not sign before that.
        let reload = i64::try_from(self.key_reload_seconds).unwrap_or(i64::MAX);
        if self.jwks_max_age_seconds < 0
            || self.jwks_max_age_seconds.saturating_add(reload) > self.key_publish_delay_seconds
        {
            bail!(
                "jwks_max_age_seconds ({}) + key_reload_seconds ({}) must not exceed key_publish_delay_seconds ({}): \
                 a new key must be published longer than instances and caches take to see it",
                self.jwks_max_age_seconds,
                self.key_reload_seconds,
                self.key_publish_delay_seconds
            );
        }
        if self.max_body_bytes < 1024 || self.max_body_bytes > 1024 * 1024 {
            bail!("max_body_bytes must be between 1024 and 1048576");
        }
        if let Some(r) = &self.cimd_resolve {
            crate::fetch::parse_resolve_overrides(r).map_err(|e| anyhow!("cimd_resolve: {e}"))?;
        }
        if self.cimd_connect_timeout_ms == 0 || self.cimd_timeout_ms == 0 || self.cimd_timeout_ms > 60_000 {
            bail!("cimd_connect_timeout_ms and cimd_timeout_ms must be between 1 and 60000");
        }
        // Zero would refuse every fetch at the authorization endpoint, silently breaking every
        // metadata-document client; turning CIMD off is a per-resource setting instead.
        if self.cimd_fetch_rate_limit_per_minute == 0 {
            bail!("cimd_fetch_rate_limit_per_minute must be at least 1 (to refuse metadata documents, use --no-cimd)");
        }
        if self.db_max_connections == 0 {
            bail!("db_max_connections must be at least 1");
        }
        Ok(())
    }

    /// Whether the database is PostgreSQL (several instances may share it).
    pub fn is_postgres(&self) -> bool {
        self.database_url.starts_with("postgres://") || self.database_url.starts_with("postgresql://")
    }

    /// The SQLite database file, if the database is a SQLite file.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        let rest = self.database_url.strip_prefix("sqlite:")?;
        let rest = rest.strip_prefix("//").unwrap_or(rest);
        let path = rest.split('?').next().unwrap_or(rest);
        (!path.is_empty() && !path.starts_with(':')).then(|| PathBuf::from(path))
    }

    /// Settings of the fetcher for client-supplied URLs.
    pub fn fetch_settings(&self) -> anyhow::Result<crate::fetch::FetchSettings> {
        let extra_root_ca_pem = match &self.cimd_extra_root_ca {
            Some(p) => Some(std::fs::read(p).with_context(|| format!("reading cimd_extra_root_ca {}", p.display()))?),
            None => None,
        };
        let resolve = match &self.cimd_resolve {
            Some(r) => crate::fetch::parse_resolve_overrides(r).map_err(|e| anyhow!("cimd_resolve: {e}"))?,
            None => Default::default(),
        };
        Ok(crate::fetch::FetchSettings {
            allow_loopback: self.cimd_allow_loopback,
            extra_root_ca_pem,
            resolve,
            connect_timeout: std::time::Duration::from_millis(self.cimd_connect_timeout_ms),
            total_timeout: std::time::Duration::from_millis(self.cimd_timeout_ms),
        })
    }

    /// Store connection options derived from the settings.
    pub fn connect_options(&self) -> moat_store::ConnectOptions {
        moat_store::ConnectOptions {
            max_connections: self.db_max_connections,
            acquire_timeout: std::time::Duration::from_secs(self.db_acquire_timeout_seconds),
            busy_timeout: std::time::Duration::from_millis(self.db_busy_timeout_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults_apply_without_file_or_env() {
        let c = Config::load_with(None, &env_of(&[]), &Overrides::default()).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.database_url, "sqlite://moat.db");
        assert_eq!(c.auth_code_ttl_seconds, 60);
        assert_eq!(c.refresh_reuse_grace_seconds, 60);
        assert!(c.master_key.is_none());
    }

    #[test]
    fn file_then_env_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("moat.toml");
        std::fs::write(&file, "auth_code_ttl_seconds = 30\nlisten = \"127.0.0.1:9000\"\n").unwrap();
        let env = env_of(&[("MOAT_AUTH_CODE_TTL_SECONDS", "20"), ("MOAT_LISTEN", "127.0.0.1:9100")]);
        let flags = Overrides { listen: Some("127.0.0.1:9200".parse().unwrap()), ..Default::default() };
        let c = Config::load_with(Some(&file), &env, &flags).unwrap();
        assert_eq!(c.auth_code_ttl_seconds, 20);
        assert_eq!(c.listen.to_string(), "127.0.0.1:9200");
    }

    #[test]
    fn unknown_file_keys_and_bad_values_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("moat.toml");
        std::fs::write(&file, "no_such_key = 1\n").unwrap();
        let err = Config::load_with(Some(&file), &env_of(&[]), &Overrides::default()).unwrap_err();
        assert!(format!("{err:#}").contains("no_such_key"), "{err:#}");
        let err = Config::load_with(None, &env_of(&[("MOAT_AUTH_CODE_TTL_SECONDS", "soon")]), &Overrides::default())
            .unwrap_err();
        assert!(err.to_string().contains("MOAT_AUTH_CODE_TTL_SECONDS"), "{err}");
    }

    #[test]
    fn jwks_max_age_must_be_below_publish_delay() {
        let env = env_of(&[("MOAT_JWKS_MAX_AGE_SECONDS", "1000"), ("MOAT_KEY_PUBLISH_DELAY_SECONDS", "10")]);
        assert!(Config::load_with(None, &env, &Overrides::default()).is_err());
    }

    #[test]
    fn cimd_fetch_rate_limit_from_env_and_at_least_one() {
        let c = Config::load_with(None, &env_of(&[]), &Overrides::default()).unwrap();
        assert_eq!(c.cimd_fetch_rate_limit_per_minute, 30);
        let env = env_of(&[("MOAT_CIMD_FETCH_RATE_LIMIT_PER_MINUTE", "5")]);
        assert_eq!(Config::load_with(None, &env, &Overrides::default()).unwrap().cimd_fetch_rate_limit_per_minute, 5);
        let env = env_of(&[("MOAT_CIMD_FETCH_RATE_LIMIT_PER_MINUTE", "0")]);
        let err = Config::load_with(None, &env, &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("cimd_fetch_rate_limit_per_minute"), "{err}");
    }

    #[test]
    fn sqlite_path_forms() {
        let mut c = Config::load_with(None, &env_of(&[]), &Overrides::default()).unwrap();
        assert_eq!(c.sqlite_path(), Some(PathBuf::from("moat.db")));
        c.database_url = "sqlite:/var/lib/moat/moat.db?mode=rwc".into();
        assert_eq!(c.sqlite_path(), Some(PathBuf::from("/var/lib/moat/moat.db")));
        c.database_url = "postgres://x/y".into();
        assert_eq!(c.sqlite_path(), None);
        assert!(c.is_postgres());
    }
}
