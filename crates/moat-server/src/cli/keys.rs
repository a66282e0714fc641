//! `moat keys …`: list and rotate signing keys.

use anyhow::Context as _;
use clap::Subcommand;
use serde_json::{Value, json};

use super::Ctx;
use super::output::{out, print_json, print_table};
use crate::config::SigningAlg;
use crate::crypto::{MasterKey, Sealer};
use crate::state::now;

#[derive(Subcommand, Debug)]
pub enum KeysCmd {
    /// Create a new signing key: published now, signing after the publish delay
    /// (`key_publish_delay_seconds`); the current key retires then and stays published until
    /// the tokens it signed have expired. If no key can sign yet (a new database), the new key
    /// signs at once.
    Rotate {
        /// Algorithm of the new key (default: the `signing_alg` setting).
        #[arg(long)]
        alg: Option<SigningAlg>,
        #[arg(long)]
        json: bool,
    },
    /// List signing keys.
    List {
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(cmd: KeysCmd, ctx: &Ctx) -> anyhow::Result<()> {
    match cmd {
        KeysCmd::Rotate { alg, json } => {
            // The new key must be sealed with the master key that sealed the stored ones: a
            // made-up or foreign master key would store a key no server can open and leave the
            // next start unable to load the key set. So a master key is generated only when no
            // key exists yet, and it must open every stored key (DESIGN.md §4, §7).
            let existing = ctx.store.list_signing_keys().await?;
            let master = MasterKey::load(&ctx.config, existing.is_empty())?;
            let sealer = Sealer::new(master.derive("signing-key-encryption"))?;
            for k in &existing {
                sealer.open(&k.encrypted_private_key, k.kid.as_bytes()).with_context(|| {
                    format!("the master key does not open signing key {} (wrong MOAT_MASTER_KEY or key file?)", k.kid)
                })?;
            }
            let alg = alg.unwrap_or(ctx.config.signing_alg);
            let rec =
                crate::keys::rotate(&ctx.store, &sealer, alg, now(), ctx.config.key_publish_delay_seconds).await?;
            if json {
                return print_json(&json!({ "kid": rec.kid, "alg": rec.alg, "activates_at": rec.activates_at }));
            }
            // A key signs at once when no stored key could sign (or the delay is 0).
            if rec.activates_at <= rec.created_at {
                out!("new key {} ({}) is published and signs now", rec.kid, rec.alg);
            } else {
                out!(
                    "new key {} ({}) is published now and signs from {} (Unix time)",
                    rec.kid,
                    rec.alg,
                    rec.activates_at
                );
            }
            Ok(())
        }
        KeysCmd::List { json } => {
            let keys = ctx.store.list_signing_keys().await?;
            if json {
                let v: Vec<Value> = keys
                    .iter()
                    .map(|k| {
                        json!({ "kid": k.kid, "alg": k.alg, "created_at": k.created_at, "activates_at": k.activates_at,
                                     "retires_at": k.retires_at, "unpublish_at": k.unpublish_at })
                    })
                    .collect();
                return print_json(&Value::Array(v));
            }
            let now = now();
            let rows: Vec<Vec<String>> = keys
                .iter()
                .map(|k| {
                    let status = match (k.retires_at, k.unpublish_at) {
                        (_, Some(u)) if now >= u => "unpublished",
                        (Some(r), _) if now >= r => "retired (still published)",
                        _ if now < k.activates_at => "published, not signing yet",
                        _ => "signing",
                    };
                    vec![k.kid.clone(), k.alg.clone(), status.to_owned()]
                })
                .collect();
            print_table(&["KID", "ALG", "STATUS"], &rows);
            Ok(())
        }
    }
}
