//! The store conformance suite: every rule of the `Store` contract as a backend-agnostic async
//! check taking a fresh, migrated [`DynStore`]. [`conformance_suite!`] turns the whole list into
//! one `#[tokio::test]` per check for a given store factory, so every backend runs exactly the
//! same checks (DESIGN.md §7 and §11).

use moat_core::OAuthError;
use moat_core::ids::{ClientId, FamilyId, ResourceId, UserId, random_secret};
use moat_core::model::{AuditEvent, AuthMethod, Client, ClientKind, GrantType, SigningKeyRecord};
use moat_core::refresh::RejectReason;
use moat_store::{AuditQuery, DynStore, PurgeStats, RedeemOutcome, RotateOutcome, Rotation, StoreError};
use tokio::task::JoinSet;

use crate::fixtures::{self, NOW, grant, world};

/// Generates one `#[tokio::test]` per conformance check. `$factory` is an async fn returning
/// `Option<(DynStore, Guard)>`: a fresh migrated store plus whatever must live as long as the
/// test (a temp dir, a scratch schema), or `None` to skip (a backend that is not configured).
macro_rules! conformance_suite {
    ($factory:path) => {
        $crate::conformance::conformance_suite!(@checks $factory;
            lifecycle,
            resource_round_trip,
            resource_server_url_is_unique_canonically,
            resource_delete_cascades,
            client_round_trip,
            client_fingerprint_lookup,
            disabling_client_revokes_families,
            client_delete_cascades,
            cimd_client_at_two_resources_is_two_clients,
            upsert_cimd_client_inserts_then_updates,
            upsert_cimd_client_never_rewrites_other_kinds,
            concurrent_cimd_upserts_keep_one_row,
            user_round_trip_and_email_conflict,
            disabling_user_ends_sessions_and_revokes_families,
            user_delete_cascades,
            session_lifecycle,
            authorization_request_lifecycle,
            complete_authorization_yields_one_code,
            complete_authorization_upserts_consent,
            concurrent_approvals_merge_consent,
            redeem_creates_family,
            redeem_without_family,
            redeem_replay_revokes_family,
            redeem_unknown_and_expired,
            rejected_check_leaves_code_redeemable,
            concurrent_redemptions_redeem_once,
            redeem_refuses_disabled_client,
            disabling_client_during_redemptions_leaves_no_live_family,
            client_last_used_written_at_most_once_a_minute,
            rotation_stores_successor,
            grace_replay_returns_same_successor,
            reuse_after_grace_revokes_family,
            reuse_after_successor_used_revokes_family,
            concurrent_rotations_rotate_once,
            rotation_rechecks_client_user_and_consent,
            rotation_idle_and_absolute_expiry,
            refresh_lookup_and_revoke_family,
            consent_delete_revokes_families,
            access_token_revocation,
            assertion_jti_single_use,
            signing_keys_lifecycle,
            signing_key_rotation_retires_only_older_keys,
            audit_paging_and_filters,
            purge_removes_only_what_is_expired,
        );
    };
    (@checks $factory:path; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $check() {
                let Some((store, _guard)) = $factory().await else {
                    eprintln!("skipped: backend not configured");
                    return;
                };
                $crate::conformance::$check(store).await;
            }
        )*
    };
}
pub(crate) use conformance_suite;

const GRACE: i64 = 60;
const IDLE: i64 = 7 * 86_400;

fn rotation<'a>(presented: &'a str, successor: &'a str, client: &'a Client, now: i64) -> Rotation<'a> {
    Rotation {
        presented_hash: presented,
        successor_hash: successor,
        client_id: &client.id,
        resource_id: &client.resource_id,
        requested_scopes: None,
        now,
        grace_seconds: GRACE,
        idle_ttl: IDLE,
    }
}

fn is_conflict<T: std::fmt::Debug>(r: Result<T, StoreError>) -> bool {
    matches!(r, Err(StoreError::Conflict(_)))
}

/// Counts what is left of everything by purging it all far in the future (a backend-agnostic
/// row count).
async fn purge_everything(store: &DynStore) -> PurgeStats {
    let end = i64::MAX / 2;
    store.purge_expired(end, end, i64::MIN).await.unwrap()
}

// ---- lifecycle -------------------------------------------------------------------------------

pub async fn lifecycle(store: DynStore) {
    store.ping().await.unwrap();
    assert!(!store.backend().is_empty());
    // Migrating an up-to-date database is a no-op.
    store.migrate().await.unwrap();
    assert!(store.list_resources().await.unwrap().is_empty());
}

// ---- resources -------------------------------------------------------------------------------

pub async fn resource_round_trip(store: DynStore) {
    let mut r = fixtures::resource(&fixtures::unique_server_url());
    store.create_resource(&r).await.unwrap();
    assert_eq!(store.get_resource(&r.id).await.unwrap(), Some(r.clone()));
    let mut later = fixtures::resource(&fixtures::unique_server_url());
    later.created_at = NOW + 1;
    store.create_resource(&later).await.unwrap();
    assert_eq!(store.list_resources().await.unwrap(), vec![r.clone(), later.clone()]);

    r.name = "Renamed".into();
    r.server_url = fixtures::unique_server_url();
    r.scopes.pop();
    r.default_scopes = vec![];
    r.dcr_enabled = false;
    r.cimd_enabled = true;
    r.cimd_allowed_hosts = vec![];
    r.access_token_ttl = 60;
    r.refresh_token_ttl = 120;
    r.refresh_idle_ttl = 90;
    r.updated_at = NOW + 10;
    assert!(store.update_resource(&r).await.unwrap());
    assert_eq!(store.get_resource(&r.id).await.unwrap(), Some(r.clone()));

    let ghost = fixtures::resource(&fixtures::unique_server_url());
    assert!(!store.update_resource(&ghost).await.unwrap());
    assert!(store.get_resource(&ghost.id).await.unwrap().is_none());

    assert!(store.delete_resource(&r.id).await.unwrap());
    assert!(store.get_resource(&r.id).await.unwrap().is_none());
    assert!(!store.delete_resource(&r.id).await.unwrap());
    assert_eq!(store.list_resources().await.unwrap(), vec![later]);
}

pub async fn resource_server_url_is_unique_canonically(store: DynStore) {
    let a = fixtures::resource("https://x.example/mcp");
    store.create_resource(&a).await.unwrap();
    // Same canonical URL: scheme and host case, default port, trailing slash.
    for dup in ["https://x.example/mcp", "https://X.example/mcp/", "HTTPS://x.EXAMPLE:443/mcp"] {
        let r = fixtures::resource(dup);
        assert!(is_conflict(store.create_resource(&r).await), "{dup} must conflict");
        assert!(store.get_resource(&r.id).await.unwrap().is_none());
    }
    // A different path is a different resource.
    let b = fixtures::resource("https://x.example/other");
    store.create_resource(&b).await.unwrap();
    // Updating onto another resource's URL conflicts and changes nothing.
    let mut moved = b.clone();
    moved.server_url = "https://X.example/mcp/".into();
    assert!(is_conflict(store.update_resource(&moved).await));
    assert_eq!(store.get_resource(&b.id).await.unwrap(), Some(b.clone()));
    // The registered string is kept exactly (tokens carry it in `aud`).
    let mut same = a.clone();
    same.server_url = "https://X.example/mcp/".into();
    assert!(store.update_resource(&same).await.unwrap());
    assert_eq!(store.get_resource(&a.id).await.unwrap().unwrap().server_url, "https://X.example/mcp/");
    // A duplicate id conflicts too.
    let mut dup_id = fixtures::resource(&fixtures::unique_server_url());
    dup_id.id = a.id.clone();
    assert!(is_conflict(store.create_resource(&dup_id).await));
}

pub async fn resource_delete_cascades(store: DynStore) {
    let g = grant(&store).await;
    let w = &g.world;
    let pending = fixtures::request(&w.resource, &w.client);
    store.create_authorization_request(&pending).await.unwrap();
    let other = world(&store).await;

    assert!(store.delete_resource(&w.resource.id).await.unwrap());
    assert!(store.get_client(&w.client.resource_id, &w.client.id).await.unwrap().is_none());
    assert!(store.get_consent(&w.user.id, &w.client.id, &w.resource.id).await.unwrap().is_none());
    assert!(store.get_family(&g.family.id).await.unwrap().is_none());
    assert!(store.get_refresh_token(g.family.first_token_hash.as_deref().unwrap()).await.unwrap().is_none());
    assert!(store.get_authorization_request(&pending.id).await.unwrap().is_none());
    let redeem = store.redeem_code(&g.code.code_hash, NOW, &|_| Ok(()), None).await.unwrap();
    assert_eq!(redeem, RedeemOutcome::NotFound);
    // Users are not owned by resources; other resources are untouched.
    assert!(store.get_user(&w.user.id).await.unwrap().is_some());
    assert!(store.get_client(&other.client.resource_id, &other.client.id).await.unwrap().is_some());
}

// ---- clients ---------------------------------------------------------------------------------

pub async fn client_round_trip(store: DynStore) {
    let w = world(&store).await;
    assert_eq!(store.get_client(&w.client.resource_id, &w.client.id).await.unwrap(), Some(w.client.clone()));
    assert!(is_conflict(store.create_client(&w.client).await));

    // A CIMD client: URL id, public, no secret, no optional fields.
    let mut cimd = fixtures::client(&w.resource.id);
    cimd.id = ClientId::parse("https://app.example.com/client.json").unwrap();
    cimd.kind = ClientKind::Cimd;
    cimd.auth_method = moat_core::model::AuthMethod::None;
    cimd.secret_hash = None;
    cimd.secret_expires_at = None;
    cimd.access_token_ttl = None;
    cimd.metadata = serde_json::Value::Null;
    cimd.grant_types = vec![];
    cimd.redirect_uris = vec![];
    cimd.last_used_at = Some(NOW + 3);
    cimd.created_at = NOW + 2;
    store.create_client(&cimd).await.unwrap();
    assert_eq!(store.get_client(&cimd.resource_id, &cimd.id).await.unwrap(), Some(cimd.clone()));

    let other = world(&store).await;
    assert_eq!(store.list_clients(Some(&w.resource.id)).await.unwrap(), vec![w.client.clone(), cimd.clone()]);
    assert_eq!(store.list_clients(Some(&other.resource.id)).await.unwrap(), vec![other.client.clone()]);
    assert_eq!(store.list_clients(None).await.unwrap().len(), 3);
    assert!(store.list_clients(Some(&ResourceId::generate())).await.unwrap().is_empty());
    assert!(store.get_client(&w.resource.id, &ClientId::generate()).await.unwrap().is_none());
    // A client is found only at its own resource.
    assert!(store.get_client(&other.resource.id, &w.client.id).await.unwrap().is_none());
    assert!(store.get_client(&ResourceId::generate(), &cimd.id).await.unwrap().is_none());

    // A duplicate (resource, id) conflicts; the same URL at another resource is another client.
    assert!(is_conflict(store.create_client(&cimd).await));
    let cimd_there = Client { resource_id: other.resource.id.clone(), name: "Elsewhere".into(), ..cimd.clone() };
    store.create_client(&cimd_there).await.unwrap();
    assert!(is_conflict(store.create_client(&cimd_there).await));
    assert_eq!(store.get_client(&w.resource.id, &cimd.id).await.unwrap(), Some(cimd.clone()));
    assert_eq!(store.get_client(&other.resource.id, &cimd.id).await.unwrap(), Some(cimd_there));

    // A client of an unknown resource is refused (foreign key), not a conflict.
    let orphan = fixtures::client(&ResourceId::generate());
    assert!(matches!(store.create_client(&orphan).await, Err(StoreError::Backend(_))));
}

pub async fn client_fingerprint_lookup(store: DynStore) {
    let w = world(&store).await;
    let mut dynamic = fixtures::client(&w.resource.id);
    dynamic.kind = ClientKind::Dynamic;
    dynamic.fingerprint = Some("fp-1".into());
    store.create_client(&dynamic).await.unwrap();
    let mut pre = fixtures::client(&w.resource.id);
    pre.fingerprint = Some("fp-2".into());
    store.create_client(&pre).await.unwrap();
    let mut disabled = fixtures::client(&w.resource.id);
    disabled.kind = ClientKind::Dynamic;
    disabled.fingerprint = Some("fp-3".into());
    disabled.disabled = true;
    store.create_client(&disabled).await.unwrap();
    let other = world(&store).await;

    let found = store.find_client_by_fingerprint(&w.resource.id, "fp-1").await.unwrap();
    assert_eq!(found, Some(dynamic.clone()));
    assert!(store.find_client_by_fingerprint(&other.resource.id, "fp-1").await.unwrap().is_none());
    assert!(store.find_client_by_fingerprint(&w.resource.id, "fp-2").await.unwrap().is_none());
    assert!(store.find_client_by_fingerprint(&w.resource.id, "fp-3").await.unwrap().is_none());
    assert!(store.find_client_by_fingerprint(&w.resource.id, "nope").await.unwrap().is_none());
    assert!(store.set_client_disabled(&dynamic.resource_id, &dynamic.id, true, NOW).await.unwrap());
    assert!(store.find_client_by_fingerprint(&w.resource.id, "fp-1").await.unwrap().is_none());
}

pub async fn disabling_client_revokes_families(store: DynStore) {
    let g = grant(&store).await;
    let w = &g.world;
    let at = NOW + 5;
    assert!(store.set_client_disabled(&w.client.resource_id, &w.client.id, true, at).await.unwrap());
    let client = store.get_client(&w.client.resource_id, &w.client.id).await.unwrap().unwrap();
    assert!(client.disabled);
    assert_eq!(client.updated_at, at);
    assert_eq!(store.get_family(&g.family.id).await.unwrap().unwrap().revoked_at, Some(at));

    // Enabling again does not revive what was revoked.
    assert!(store.set_client_disabled(&w.client.resource_id, &w.client.id, false, at + 1).await.unwrap());
    assert!(!store.get_client(&w.client.resource_id, &w.client.id).await.unwrap().unwrap().disabled);
    assert_eq!(store.get_family(&g.family.id).await.unwrap().unwrap().revoked_at, Some(at));
    let succ = random_secret();
    let out = store
        .rotate_refresh_token(&rotation(g.family.first_token_hash.as_deref().unwrap(), &succ, &w.client, at + 2))
        .await
        .unwrap();
    assert_eq!(out, RotateOutcome::Invalid(Some(RejectReason::FamilyRevoked)));

    assert!(!store.set_client_disabled(&w.resource.id, &ClientId::generate(), true, at).await.unwrap());
}

pub async fn client_delete_cascades(store: DynStore) {
    let g = grant(&store).await;
    let w = &g.world;
    let pending = fixtures::request(&w.resource, &w.client);
    store.create_authorization_request(&pending).await.unwrap();
    assert!(store.record_assertion_jti(&w.client.id, "jti-1", NOW + 60).await.unwrap());

    assert!(store.delete_client(&w.client.resource_id, &w.client.id).await.unwrap());
    assert!(store.get_client(&w.client.resource_id, &w.client.id).await.unwrap().is_none());
    assert!(store.get_consent(&w.user.id, &w.client.id, &w.resource.id).await.unwrap().is_none());
    assert!(store.get_family(&g.family.id).await.unwrap().is_none());
    assert!(store.get_refresh_token(g.family.first_token_hash.as_deref().unwrap()).await.unwrap().is_none());
    assert!(store.get_authorization_request(&pending.id).await.unwrap().is_none());
    let redeem = store.redeem_code(&g.code.code_hash, NOW, &|_| Ok(()), None).await.unwrap();
    assert_eq!(redeem, RedeemOutcome::NotFound);
    assert!(store.get_user(&w.user.id).await.unwrap().is_some());
    assert!(store.get_resource(&w.resource.id).await.unwrap().is_some());
    assert!(!store.delete_client(&w.client.resource_id, &w.client.id).await.unwrap());
    // Seen assertion jtis outlive the client (a CIMD id can come back): still single-use.
    assert!(!store.record_assertion_jti(&w.client.id, "jti-1", NOW + 60).await.unwrap());
}

/// One metadata-document URL used with two resources: two client rows, each with its own
/// consent, codes and refresh families; disabling or deleting it at one resource leaves the
/// other untouched (DESIGN.md §5).
pub async fn cimd_client_at_two_resources_is_two_clients(store: DynStore) {
    const URL: &str = "https://app.example.com/client.json";
    let user = fixtures::user(&fixtures::unique_email());
    store.create_user(&user).await.unwrap();
    let mut grants = Vec::new();
    for _ in 0..2 {
        let resource = fixtures::resource(&fixtures::unique_server_url());
        store.create_resource(&resource).await.unwrap();
        let client = store.upsert_cimd_client(&fixtures::cimd_client(&resource.id, URL)).await.unwrap();
        grants.push(fixtures::grant_in(&store, fixtures::World { resource, client, user: user.clone() }).await);
    }
    let (a, b) = (&grants[0], &grants[1]);
    let (ra, rb, id) = (&a.world.resource.id, &b.world.resource.id, &a.world.client.id);
    assert_eq!(id, &b.world.client.id);

    // Two rows, one per resource, each with its own consent and family.
    let all = store.list_clients(None).await.unwrap();
    assert!(all.iter().all(|c| c.id == *id));
    let mut owners: Vec<_> = all.iter().map(|c| &c.resource_id).collect();
    owners.sort();
    let mut expected = vec![ra, rb];
    expected.sort();
    assert_eq!(owners, expected);
    assert_eq!(store.list_clients(Some(ra)).await.unwrap().len(), 1);
    for (g, r) in [(a, ra), (b, rb)] {
        assert_eq!(store.get_client(r, id).await.unwrap().unwrap().resource_id, *r);
        assert!(store.get_consent(&user.id, id, r).await.unwrap().is_some());
        assert_eq!(store.get_family(&g.family.id).await.unwrap().unwrap().resource_id, *r);
    }
    // A code waiting for redemption at each resource.
    let mut pending = Vec::new();
    for g in [a, b] {
        let req = fixtures::request(&g.world.resource, &g.world.client);
        store.create_authorization_request(&req).await.unwrap();
        let code = fixtures::code(&g.world.resource, &g.world.client, &user.id);
        assert!(store.complete_authorization(&req.id, &code, None).await.unwrap());
        pending.push(code.code_hash);
    }

    // Naming a resource the client does not belong to changes nothing.
    assert!(!store.set_client_disabled(&ResourceId::generate(), id, true, NOW + 1).await.unwrap());
    assert!(!store.delete_client(&ResourceId::generate(), id).await.unwrap());
    assert_eq!(count_clients(&store, &[ra, rb]).await, 2);

    // Disabling at A: A's families are revoked and its codes refused; B keeps working.
    let at = NOW + 5;
    assert!(store.set_client_disabled(ra, id, true, at).await.unwrap());
    assert!(store.get_client(ra, id).await.unwrap().unwrap().disabled);
    let at_b = store.get_client(rb, id).await.unwrap().unwrap();
    assert!(!at_b.disabled);
    assert_eq!(at_b.updated_at, NOW);
    assert_eq!(store.get_family(&a.family.id).await.unwrap().unwrap().revoked_at, Some(at));
    assert_eq!(store.get_family(&b.family.id).await.unwrap().unwrap().revoked_at, None);
    let out = store.redeem_code(&pending[0], at, &|_| Ok(()), Some(&fixtures::new_family())).await.unwrap();
    assert_eq!(out, RedeemOutcome::Rejected(OAuthError::invalid_grant("the client is disabled")));
    let nf = fixtures::new_family();
    let out = store.redeem_code(&pending[1], at, &|_| Ok(()), Some(&nf)).await.unwrap();
    assert!(matches!(out, RedeemOutcome::Redeemed(ref c) if c.resource_id == *rb), "{out:?}");
    let out = store
        .rotate_refresh_token(&rotation(
            a.family.first_token_hash.as_deref().unwrap(),
            &random_secret(),
            &a.world.client,
            at,
        ))
        .await
        .unwrap();
    assert_eq!(out, RotateOutcome::Invalid(Some(RejectReason::FamilyRevoked)));
    let succ = random_secret();
    let out = store
        .rotate_refresh_token(&rotation(b.family.first_token_hash.as_deref().unwrap(), &succ, &b.world.client, at))
        .await
        .unwrap();
    assert!(matches!(out, RotateOutcome::Rotated { ref family, .. } if family.resource_id == *rb), "{out:?}");

    // Deleting at A removes A's row with its consent, codes and families; B's are untouched.
    assert!(store.delete_client(ra, id).await.unwrap());
    assert!(store.get_client(ra, id).await.unwrap().is_none());
    assert!(store.get_consent(&user.id, id, ra).await.unwrap().is_none());
    assert!(store.get_family(&a.family.id).await.unwrap().is_none());
    assert_eq!(store.redeem_code(&a.code.code_hash, at, &|_| Ok(()), None).await.unwrap(), RedeemOutcome::NotFound);
    assert!(!store.delete_client(ra, id).await.unwrap());
    assert!(!store.get_client(rb, id).await.unwrap().unwrap().disabled);
    assert!(store.get_consent(&user.id, id, rb).await.unwrap().is_some());
    assert_eq!(store.get_family(&b.family.id).await.unwrap().unwrap().revoked_at, None);
    assert!(store.get_family(&nf.id).await.unwrap().is_some());
    assert!(store.get_refresh_token(&succ).await.unwrap().is_some());
    // B's consumed code is still recognised: a replay revokes its family.
    let out = store.redeem_code(&b.code.code_hash, at, &|_| Ok(()), None).await.unwrap();
    assert_eq!(out, RedeemOutcome::Replayed { revoked_family: Some(b.family.id.clone()) });
    assert_eq!(count_clients(&store, &[ra, rb]).await, 1);
}

/// How many clients the given resources have.
async fn count_clients(store: &DynStore, resources: &[&ResourceId]) -> usize {
    let mut n = 0;
    for r in resources {
        n += store.list_clients(Some(r)).await.unwrap().len();
    }
    n
}

pub async fn upsert_cimd_client_inserts_then_updates(store: DynStore) {
    const URL: &str = "https://app.example.com/client.json";
    let w = world(&store).await;
    // Insert: the row is stored as given and returned.
    let first = fixtures::cimd_client(&w.resource.id, URL);
    assert_eq!(store.upsert_cimd_client(&first).await.unwrap(), first);
    assert_eq!(store.get_client(&w.resource.id, &first.id).await.unwrap(), Some(first.clone()));
    // Used: a grant sets `last_used_at`.
    let g = fixtures::grant_in(
        &store,
        fixtures::World { resource: w.resource.clone(), client: first.clone(), user: w.user.clone() },
    )
    .await;
    let used = store.get_client(&w.resource.id, &first.id).await.unwrap().unwrap();
    assert_eq!(used.last_used_at, Some(NOW));

    // Update from a changed document: the document's fields and `updated_at` are replaced;
    // `disabled`, `created_at`, `last_used_at` and what no document carries are kept.
    let mut doc = fixtures::cimd_client(&w.resource.id, URL);
    doc.name = "Renamed".into();
    doc.redirect_uris = vec!["https://new.example.com/cb".into(), "http://127.0.0.1/callback".into()];
    doc.grant_types = vec![GrantType::AuthorizationCode];
    doc.auth_method = AuthMethod::PrivateKeyJwt;
    doc.metadata = serde_json::json!({"client_id": URL, "jwks_uri": "https://app.example.com/jwks"});
    (doc.created_at, doc.updated_at, doc.last_used_at) = (NOW + 50, NOW + 50, None);
    (doc.secret_hash, doc.secret_expires_at) = (Some("cd".repeat(32)), Some(1));
    (doc.fingerprint, doc.access_token_ttl) = (Some("fp".into()), Some(5));
    let expected = Client {
        name: doc.name.clone(),
        redirect_uris: doc.redirect_uris.clone(),
        grant_types: doc.grant_types.clone(),
        auth_method: doc.auth_method,
        metadata: doc.metadata.clone(),
        updated_at: NOW + 50,
        ..used.clone()
    };
    assert_eq!(store.upsert_cimd_client(&doc).await.unwrap(), expected);
    assert_eq!(store.get_client(&w.resource.id, &first.id).await.unwrap(), Some(expected.clone()));
    // An update is not a re-creation: the client's consent and grants survive it.
    assert!(store.get_consent(&w.user.id, &first.id, &w.resource.id).await.unwrap().is_some());
    assert_eq!(store.get_family(&g.family.id).await.unwrap().unwrap().revoked_at, None);
    assert_eq!(store.list_clients(Some(&w.resource.id)).await.unwrap().len(), 2);

    // A disabled client stays disabled whatever its document says.
    assert!(store.set_client_disabled(&w.resource.id, &first.id, true, NOW + 60).await.unwrap());
    let mut again = fixtures::cimd_client(&w.resource.id, URL);
    (again.name, again.updated_at) = ("Third".into(), NOW + 70);
    let stored = store.upsert_cimd_client(&again).await.unwrap();
    assert!(stored.disabled);
    assert_eq!((stored.name.as_str(), stored.updated_at, stored.created_at), ("Third", NOW + 70, first.created_at));
    assert_eq!(store.get_client(&w.resource.id, &first.id).await.unwrap(), Some(stored));
}

pub async fn upsert_cimd_client_never_rewrites_other_kinds(store: DynStore) {
    const URL: &str = "https://app.example.com/client.json";
    let w = world(&store).await;
    // A pre-registered or dynamic client that has the URL as its id is never rewritten by a
    // document: `Conflict`, nothing changed.
    for kind in [ClientKind::PreRegistered, ClientKind::Dynamic] {
        let resource = fixtures::resource(&fixtures::unique_server_url());
        store.create_resource(&resource).await.unwrap();
        let registered = Client { id: ClientId::parse(URL).unwrap(), kind, ..fixtures::client(&resource.id) };
        store.create_client(&registered).await.unwrap();
        let mut doc = fixtures::cimd_client(&resource.id, URL);
        doc.redirect_uris = vec!["https://evil.example.net/cb".into()];
        assert!(is_conflict(store.upsert_cimd_client(&doc).await), "{kind:?}");
        assert_eq!(store.get_client(&resource.id, &registered.id).await.unwrap(), Some(registered));
    }
    // Only metadata-document clients are recorded this way.
    let not_cimd = Client { kind: ClientKind::Dynamic, ..fixtures::cimd_client(&w.resource.id, URL) };
    assert!(matches!(store.upsert_cimd_client(&not_cimd).await, Err(StoreError::Backend(_))));
    assert!(store.get_client(&w.resource.id, &not_cimd.id).await.unwrap().is_none());
    // A client of an unknown resource is refused (foreign key).
    let orphan = fixtures::cimd_client(&ResourceId::generate(), URL);
    assert!(matches!(store.upsert_cimd_client(&orphan).await, Err(StoreError::Backend(_))));
}

/// Instances recording the same document at once: every call succeeds, one row results, and
/// every call returns the creation time of the first insert.
pub async fn concurrent_cimd_upserts_keep_one_row(store: DynStore) {
    const TASKS: i64 = 16;
    const URL: &str = "https://app.example.com/client.json";
    let w = world(&store).await;
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(TASKS as usize));
    let mut tasks = JoinSet::new();
    for i in 0..TASKS {
        let (store, start) = (store.clone(), start.clone());
        let mut doc = fixtures::cimd_client(&w.resource.id, URL);
        (doc.name, doc.created_at, doc.updated_at) = (format!("v{i}"), NOW + i, NOW + i);
        tasks.spawn(async move {
            start.wait().await;
            store.upsert_cimd_client(&doc).await.unwrap()
        });
    }
    let mut created = Vec::new();
    while let Some(done) = tasks.join_next().await {
        created.push(done.unwrap().created_at);
    }
    assert!(created.iter().all(|c| *c == created[0]), "{created:?}");
    let clients = store.list_clients(Some(&w.resource.id)).await.unwrap();
    assert_eq!(clients.len(), 2);
    let stored = store.get_client(&w.resource.id, &ClientId::parse(URL).unwrap()).await.unwrap().unwrap();
    assert_eq!(stored.created_at, created[0]);
}

// ---- users -----------------------------------------------------------------------------------

pub async fn user_round_trip_and_email_conflict(store: DynStore) {
    let u = fixtures::user("ada@example.com");
    store.create_user(&u).await.unwrap();
    assert_eq!(store.get_user(&u.id).await.unwrap(), Some(u.clone()));
    assert_eq!(store.get_user_by_email("ada@example.com").await.unwrap(), Some(u.clone()));
    // Matched exactly: callers lowercase.
    assert!(store.get_user_by_email("Ada@example.com").await.unwrap().is_none());

    let dup = fixtures::user("ada@example.com");
    assert!(is_conflict(store.create_user(&dup).await));
    assert!(store.get_user(&dup.id).await.unwrap().is_none());

    let mut federated = fixtures::user("bob@example.com");
    federated.password_hash = None;
    federated.name = None;
    federated.created_at = NOW + 1;
    store.create_user(&federated).await.unwrap();
    assert_eq!(store.list_users().await.unwrap(), vec![u.clone(), federated.clone()]);
    assert!(store.get_user(&UserId::generate()).await.unwrap().is_none());
}

pub async fn disabling_user_ends_sessions_and_revokes_families(store: DynStore) {
    let g = grant(&store).await;
    let w = &g.world;
    let s = fixtures::session(&w.user.id);
    store.create_session(&s).await.unwrap();
    let bystander = fixtures::user(&fixtures::unique_email());
    store.create_user(&bystander).await.unwrap();
    let theirs = fixtures::session(&bystander.id);
    store.create_session(&theirs).await.unwrap();

    let at = NOW + 7;
    assert!(store.set_user_disabled(&w.user.id, true, at).await.unwrap());
    let u = store.get_user(&w.user.id).await.unwrap().unwrap();
    assert!(u.disabled);
    assert_eq!(u.updated_at, at);
    assert!(store.get_session_by_token_hash(&s.token_hash).await.unwrap().is_none());
    assert_eq!(store.get_family(&g.family.id).await.unwrap().unwrap().revoked_at, Some(at));
    assert!(store.get_session_by_token_hash(&theirs.token_hash).await.unwrap().is_some());

    assert!(store.set_user_disabled(&w.user.id, false, at + 1).await.unwrap());
    assert!(!store.get_user(&w.user.id).await.unwrap().unwrap().disabled);
    assert!(!store.set_user_disabled(&UserId::generate(), true, at).await.unwrap());
}

pub async fn user_delete_cascades(store: DynStore) {
    let g = grant(&store).await;
    let w = &g.world;
    let s = fixtures::session(&w.user.id);
    store.create_session(&s).await.unwrap();

    assert!(store.delete_user(&w.user.id).await.unwrap());
    assert!(store.get_user(&w.user.id).await.unwrap().is_none());
    assert!(store.get_user_by_email(&w.user.email).await.unwrap().is_none());
    assert!(store.get_session_by_token_hash(&s.token_hash).await.unwrap().is_none());
    assert!(store.get_consent(&w.user.id, &w.client.id, &w.resource.id).await.unwrap().is_none());
    assert!(store.get_family(&g.family.id).await.unwrap().is_none());
    assert!(store.get_refresh_token(g.family.first_token_hash.as_deref().unwrap()).await.unwrap().is_none());
    let redeem = store.redeem_code(&g.code.code_hash, NOW, &|_| Ok(()), None).await.unwrap();
    assert_eq!(redeem, RedeemOutcome::NotFound);
    assert!(store.get_client(&w.client.resource_id, &w.client.id).await.unwrap().is_some());
    assert!(!store.delete_user(&w.user.id).await.unwrap());
    // The email is free again.
    store.create_user(&fixtures::user(&w.user.email)).await.unwrap();
}

// ---- sessions and pending requests -----------------------------------------------------------

pub async fn session_lifecycle(store: DynStore) {
    let u = fixtures::user(&fixtures::unique_email());
    store.create_user(&u).await.unwrap();
    let s = fixtures::session(&u.id);
    store.create_session(&s).await.unwrap();
    assert_eq!(store.get_session_by_token_hash(&s.token_hash).await.unwrap(), Some(s.clone()));
    assert!(is_conflict(store.create_session(&s).await));

    store.touch_session(&s.token_hash, NOW + 30).await.unwrap();
    let touched = store.get_session_by_token_hash(&s.token_hash).await.unwrap().unwrap();
    assert_eq!(touched.last_seen_at, NOW + 30);
    assert_eq!(touched.created_at, s.created_at);
    // Touching a session that is gone is not an error.
    store.touch_session("no-such-hash", NOW).await.unwrap();

    assert!(store.delete_session(&s.token_hash).await.unwrap());
    assert!(store.get_session_by_token_hash(&s.token_hash).await.unwrap().is_none());
    assert!(!store.delete_session(&s.token_hash).await.unwrap());
}

pub async fn authorization_request_lifecycle(store: DynStore) {
    let w = world(&store).await;
    let mut r = fixtures::request(&w.resource, &w.client);
    store.create_authorization_request(&r).await.unwrap();
    assert_eq!(store.get_authorization_request(&r.id).await.unwrap(), Some(r.clone()));

    r.id = random_secret();
    r.state = None;
    r.prompt = Some("consent".into());
    r.scopes = vec![];
    r.redirect_uri_explicit = false;
    store.create_authorization_request(&r).await.unwrap();
    assert_eq!(store.get_authorization_request(&r.id).await.unwrap(), Some(r.clone()));

    assert!(store.delete_authorization_request(&r.id).await.unwrap());
    assert!(store.get_authorization_request(&r.id).await.unwrap().is_none());
    assert!(!store.delete_authorization_request(&r.id).await.unwrap());
}

// ---- completing an authorization -------------------------------------------------------------

pub async fn complete_authorization_yields_one_code(store: DynStore) {
    let w = world(&store).await;
    let req = fixtures::request(&w.resource, &w.client);
    store.create_authorization_request(&req).await.unwrap();
    let first = fixtures::code(&w.resource, &w.client, &w.user.id);
    let second = fixtures::code(&w.resource, &w.client, &w.user.id);
    let consent = fixtures::consent(&w.user.id, &w.client, &["todo:read"]);

    assert!(store.complete_authorization(&req.id, &first, Some(&consent)).await.unwrap());
    // A double-submitted form: the request is gone, nothing is stored.
    let mut other_consent = consent.clone();
    other_consent.scopes = vec!["todo:write".into()];
    assert!(!store.complete_authorization(&req.id, &second, Some(&other_consent)).await.unwrap());
    assert!(store.get_authorization_request(&req.id).await.unwrap().is_none());

    let ok = store.redeem_code(&first.code_hash, NOW, &|_| Ok(()), None).await.unwrap();
    assert!(matches!(ok, RedeemOutcome::Redeemed(_)), "{ok:?}");
    let none = store.redeem_code(&second.code_hash, NOW, &|_| Ok(()), None).await.unwrap();
    assert_eq!(none, RedeemOutcome::NotFound);
    let stored = store.get_consent(&w.user.id, &w.client.id, &w.resource.id).await.unwrap();
    assert_eq!(stored, Some(consent));
}

/// Approvals of one (user, client, resource) for different scopes at the same moment (on
/// PostgreSQL through separate pooled connections): the remembered consent is the union,
/// never the last writer's scopes alone.
pub async fn concurrent_approvals_merge_consent(store: DynStore) {
    for round in 0..5 {
        let w = world(&store).await;
        let mut tasks = JoinSet::new();
        for (i, scope) in ["todo:read", "todo:write", "todo:read", "todo:write"].into_iter().enumerate() {
            let (store, w) = (store.clone(), w.clone());
            tasks.spawn(async move {
                let req = fixtures::request(&w.resource, &w.client);
                store.create_authorization_request(&req).await.unwrap();
                let code = fixtures::code(&w.resource, &w.client, &w.user.id);
                let mut consent = fixtures::consent(&w.user.id, &w.client, &[scope]);
                consent.updated_at = NOW + i as i64;
                assert!(store.complete_authorization(&req.id, &code, Some(&consent)).await.unwrap());
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        let mut stored = store.get_consent(&w.user.id, &w.client.id, &w.resource.id).await.unwrap().unwrap().scopes;
        stored.sort();
        assert_eq!(stored, ["todo:read", "todo:write"], "round {round}");
    }
}

pub async fn complete_authorization_upserts_consent(store: DynStore) {
    let w = world(&store).await;
    let req = fixtures::request(&w.resource, &w.client);
    store.create_authorization_request(&req).await.unwrap();
    let code = fixtures::code(&w.resource, &w.client, &w.user.id);
    // Without consent, none is stored.
    assert!(store.complete_authorization(&req.id, &code, None).await.unwrap());
    assert!(store.get_consent(&w.user.id, &w.client.id, &w.resource.id).await.unwrap().is_none());

    let first = fixtures::consent(&w.user.id, &w.client, &["todo:read"]);
    let req = fixtures::request(&w.resource, &w.client);
    store.create_authorization_request(&req).await.unwrap();
    let code = fixtures::code(&w.resource, &w.client, &w.user.id);
    assert!(store.complete_authorization(&req.id, &code, Some(&first)).await.unwrap());

    // A later grant adds its scopes, sets updated_at, and keeps created_at.
    let mut wider = fixtures::consent(&w.user.id, &w.client, &["todo:read", "todo:write"]);
    wider.created_at = NOW + 100;
    wider.updated_at = NOW + 100;
    let req = fixtures::request(&w.resource, &w.client);
    store.create_authorization_request(&req).await.unwrap();
    let code = fixtures::code(&w.resource, &w.client, &w.user.id);
    assert!(store.complete_authorization(&req.id, &code, Some(&wider)).await.unwrap());
    let stored = store.get_consent(&w.user.id, &w.client.id, &w.resource.id).await.unwrap().unwrap();
    assert_eq!(stored.scopes, wider.scopes);
    assert_eq!(stored.updated_at, NOW + 100);
    assert_eq!(stored.created_at, first.created_at);

    // A code for an unknown client fails the whole completion: the request stays.
    let req = fixtures::request(&w.resource, &w.client);
    store.create_authorization_request(&req).await.unwrap();
    let mut bad = fixtures::code(&w.resource, &w.client, &w.user.id);
    bad.client_id = ClientId::generate();
    assert!(store.complete_authorization(&req.id, &bad, None).await.is_err());
    assert!(store.get_authorization_request(&req.id).await.unwrap().is_some());
}

// ---- redeeming codes -------------------------------------------------------------------------

pub async fn redeem_creates_family(store: DynStore) {
    let w = world(&store).await;
    let req = fixtures::request(&w.resource, &w.client);
    store.create_authorization_request(&req).await.unwrap();
    let code = fixtures::code(&w.resource, &w.client, &w.user.id);
    assert!(store.complete_authorization(&req.id, &code, None).await.unwrap());
    let nf = fixtures::new_family();
    let at = NOW + 3;

    let out = store.redeem_code(&code.code_hash, at, &|_| Ok(()), Some(&nf)).await.unwrap();
    let mut expected = code.clone();
    expected.consumed_at = Some(at);
    expected.family_id = Some(nf.id.clone());
    assert_eq!(out, RedeemOutcome::Redeemed(expected));

    let fam = store.get_family(&nf.id).await.unwrap().unwrap();
    assert_eq!(fam.resource_id, code.resource_id);
    assert_eq!(fam.client_id, code.client_id);
    assert_eq!(fam.user_id, Some(code.user_id.clone()));
    assert_eq!(fam.session_id, code.session_id);
    assert_eq!(fam.scopes, code.scopes);
    assert_eq!(fam.auth_time, Some(code.auth_time));
    assert_eq!(fam.created_at, at);
    assert_eq!(fam.expires_at, nf.expires_at);
    assert_eq!(fam.revoked_at, None);

    let (tok, tok_fam) = store.get_refresh_token(nf.first_token_hash.as_deref().unwrap()).await.unwrap().unwrap();
    assert_eq!(tok_fam, fam);
    assert_eq!(tok.family_id, nf.id);
    assert_eq!(tok.parent_hash, None);
    assert_eq!(tok.created_at, at);
    assert_eq!(tok.expires_at, nf.token_expires_at);
    assert_eq!(tok.rotated_at, None);
    assert_eq!(store.get_client(&w.client.resource_id, &w.client.id).await.unwrap().unwrap().last_used_at, Some(at));
}

pub async fn redeem_without_family(store: DynStore) {
    let w = world(&store).await;
    let req = fixtures::request(&w.resource, &w.client);
    store.create_authorization_request(&req).await.unwrap();
    let code = fixtures::code(&w.resource, &w.client, &w.user.id);
    assert!(store.complete_authorization(&req.id, &code, None).await.unwrap());

    let out = store.redeem_code(&code.code_hash, NOW, &|_| Ok(()), None).await.unwrap();
    let RedeemOutcome::Redeemed(redeemed) = out else { panic!("{out:?}") };
    assert_eq!(redeemed.consumed_at, Some(NOW));
    assert_eq!(redeemed.family_id, None);
    assert_eq!(store.get_client(&w.client.resource_id, &w.client.id).await.unwrap().unwrap().last_used_at, Some(NOW));
    let again = store.redeem_code(&code.code_hash, NOW + 1, &|_| Ok(()), None).await.unwrap();
    assert_eq!(again, RedeemOutcome::Replayed { revoked_family: None });
}

pub async fn redeem_replay_revokes_family(store: DynStore) {
    let g = grant(&store).await;
    let at = NOW + 10;
    // The replay revokes even though its own check would pass and it asks for a family.
    let out = store.redeem_code(&g.code.code_hash, at, &|_| Ok(()), Some(&fixtures::new_family())).await.unwrap();
    assert_eq!(out, RedeemOutcome::Replayed { revoked_family: Some(g.family.id.clone()) });
    assert_eq!(store.get_family(&g.family.id).await.unwrap().unwrap().revoked_at, Some(at));
    let succ = random_secret();
    let r = store
        .rotate_refresh_token(&rotation(g.family.first_token_hash.as_deref().unwrap(), &succ, &g.world.client, at))
        .await
        .unwrap();
    assert_eq!(r, RotateOutcome::Invalid(Some(RejectReason::FamilyRevoked)));
    // Still a replay later, and the first revocation time is kept.
    let out = store.redeem_code(&g.code.code_hash, at + 5, &|_| Ok(()), None).await.unwrap();
    assert_eq!(out, RedeemOutcome::Replayed { revoked_family: Some(g.family.id.clone()) });
    assert_eq!(store.get_family(&g.family.id).await.unwrap().unwrap().revoked_at, Some(at));
    // Exactly one family exists.
    assert_eq!(purge_everything(&store).await.families, 1);
}

pub async fn redeem_unknown_and_expired(store: DynStore) {
    let w = world(&store).await;
    let out = store.redeem_code("no-such-code", NOW, &|_| Ok(()), None).await.unwrap();
    assert_eq!(out, RedeemOutcome::NotFound);

    let req = fixtures::request(&w.resource, &w.client);
    store.create_authorization_request(&req).await.unwrap();
    let code = fixtures::code(&w.resource, &w.client, &w.user.id);
    assert!(store.complete_authorization(&req.id, &code, None).await.unwrap());
    let nf = fixtures::new_family();
    // Expired at exactly `expires_at`; the check is not even consulted.
    let out = store.redeem_code(&code.code_hash, code.expires_at, &|_| panic!("check ran"), Some(&nf)).await.unwrap();
    assert_eq!(out, RedeemOutcome::Expired);
    assert!(store.get_family(&nf.id).await.unwrap().is_none());
    assert_eq!(store.get_client(&w.client.resource_id, &w.client.id).await.unwrap().unwrap().last_used_at, None);
    // Nothing changed: it is still expired, not a replay.
    let out = store.redeem_code(&code.code_hash, code.expires_at + 100, &|_| Ok(()), None).await.unwrap();
    assert_eq!(out, RedeemOutcome::Expired);
}

pub async fn rejected_check_leaves_code_redeemable(store: DynStore) {
    let w = world(&store).await;
    let req = fixtures::request(&w.resource, &w.client);
    store.create_authorization_request(&req).await.unwrap();
    let code = fixtures::code(&w.resource, &w.client, &w.user.id);
    assert!(store.complete_authorization(&req.id, &code, None).await.unwrap());
    let wrong = fixtures::new_family();
    let refusal = OAuthError::invalid_grant("PKCE verification failed");

    let seen = std::sync::Mutex::new(None);
    let check = |c: &moat_core::model::AuthorizationCode| {
        *seen.lock().unwrap() = Some(c.clone());
        Err(refusal.clone())
    };
    let out = store.redeem_code(&code.code_hash, NOW, &check, Some(&wrong)).await.unwrap();
    assert_eq!(out, RedeemOutcome::Rejected(refusal.clone()));
    // The check saw the stored, unconsumed code.
    assert_eq!(seen.lock().unwrap().clone(), Some(code.clone()));
    assert!(store.get_family(&wrong.id).await.unwrap().is_none());
    assert!(store.get_refresh_token(wrong.first_token_hash.as_deref().unwrap()).await.unwrap().is_none());
    assert_eq!(store.get_client(&w.client.resource_id, &w.client.id).await.unwrap().unwrap().last_used_at, None);

    let nf = fixtures::new_family();
    let out = store.redeem_code(&code.code_hash, NOW + 1, &|_| Ok(()), Some(&nf)).await.unwrap();
    assert!(matches!(out, RedeemOutcome::Redeemed(ref c) if c.family_id == Some(nf.id.clone())), "{out:?}");
    assert!(store.get_family(&nf.id).await.unwrap().is_some());
}

pub async fn concurrent_redemptions_redeem_once(store: DynStore) {
    const TASKS: usize = 24;
    let w = world(&store).await;
    let req = fixtures::request(&w.resource, &w.client);
    store.create_authorization_request(&req).await.unwrap();
    let code = fixtures::code(&w.resource, &w.client, &w.user.id);
    assert!(store.complete_authorization(&req.id, &code, None).await.unwrap());

    let start = std::sync::Arc::new(tokio::sync::Barrier::new(TASKS));
    let mut tasks = JoinSet::new();
    for _ in 0..TASKS {
        let store = store.clone();
        let hash = code.code_hash.clone();
        let start = start.clone();
        tasks.spawn(async move {
            let nf = fixtures::new_family();
            start.wait().await;
            let out = store.redeem_code(&hash, NOW, &|_| Ok(()), Some(&nf)).await.unwrap();
            (nf.id, out)
        });
    }
    let mut winners = Vec::new();
    let mut replays = 0;
    while let Some(done) = tasks.join_next().await {
        match done.unwrap() {
            (id, RedeemOutcome::Redeemed(c)) => {
                assert_eq!(c.family_id.as_ref(), Some(&id));
                winners.push(id);
            }
            (_, RedeemOutcome::Replayed { .. }) => replays += 1,
            (_, other) => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one redemption wins");
    assert_eq!(replays, TASKS - 1);
    // The replays revoked the winner's family; no other family was created.
    let fam = store.get_family(&winners[0]).await.unwrap().unwrap();
    assert_eq!(fam.revoked_at, Some(NOW));
    let counts = purge_everything(&store).await;
    assert_eq!((counts.families, counts.refresh_tokens, counts.codes), (1, 1, 1));
}

pub async fn redeem_refuses_disabled_client(store: DynStore) {
    let w = world(&store).await;
    let req = fixtures::request(&w.resource, &w.client);
    store.create_authorization_request(&req).await.unwrap();
    let code = fixtures::code(&w.resource, &w.client, &w.user.id);
    assert!(store.complete_authorization(&req.id, &code, None).await.unwrap());
    // Disabled after the token endpoint's client check (which `check` stands for) passed.
    assert!(store.set_client_disabled(&w.client.resource_id, &w.client.id, true, NOW + 1).await.unwrap());

    let nf = fixtures::new_family();
    let out = store.redeem_code(&code.code_hash, NOW + 2, &|_| Ok(()), Some(&nf)).await.unwrap();
    let RedeemOutcome::Rejected(e) = out else { panic!("{out:?}") };
    assert_eq!(e, OAuthError::invalid_grant("the client is disabled"));
    assert!(store.get_family(&nf.id).await.unwrap().is_none());
    assert!(store.get_refresh_token(nf.first_token_hash.as_deref().unwrap()).await.unwrap().is_none());
    let client = store.get_client(&w.client.resource_id, &w.client.id).await.unwrap().unwrap();
    assert_eq!(client.last_used_at, None, "a refused redemption does not mark the client used");

    // Nothing was consumed: enabled again, the (unexpired) code redeems normally.
    assert!(store.set_client_disabled(&w.client.resource_id, &w.client.id, false, NOW + 3).await.unwrap());
    let out = store.redeem_code(&code.code_hash, NOW + 4, &|_| Ok(()), Some(&nf)).await.unwrap();
    assert!(matches!(out, RedeemOutcome::Redeemed(ref c) if c.family_id == Some(nf.id.clone())), "{out:?}");
}

/// Redemptions of many codes of one client race with disabling it: whichever way each race
/// goes, no family of the client is left unrevoked.
pub async fn disabling_client_during_redemptions_leaves_no_live_family(store: DynStore) {
    const CODES: usize = 12;
    let w = world(&store).await;
    let mut hashes = Vec::new();
    for _ in 0..CODES {
        let req = fixtures::request(&w.resource, &w.client);
        store.create_authorization_request(&req).await.unwrap();
        let code = fixtures::code(&w.resource, &w.client, &w.user.id);
        assert!(store.complete_authorization(&req.id, &code, None).await.unwrap());
        hashes.push(code.code_hash);
    }

    let start = std::sync::Arc::new(tokio::sync::Barrier::new(CODES + 1));
    let mut tasks = JoinSet::new();
    for (i, hash) in hashes.into_iter().enumerate() {
        let (store, start) = (store.clone(), start.clone());
        tasks.spawn(async move {
            let nf = fixtures::new_family();
            start.wait().await;
            // Spread the redemptions around the moment of disabling.
            if i % 2 == 1 {
                tokio::task::yield_now().await;
            }
            let out = store.redeem_code(&hash, NOW + 1, &|_| Ok(()), Some(&nf)).await.unwrap();
            Some((nf.id, out))
        });
    }
    let disabler = {
        let (store, resource, id) = (store.clone(), w.resource.id.clone(), w.client.id.clone());
        tasks
            .spawn(async move {
                start.wait().await;
                assert!(store.set_client_disabled(&resource, &id, true, NOW + 1).await.unwrap());
                None
            })
            .id()
    };
    let mut families = Vec::new();
    while let Some(done) = tasks.join_next_with_id().await {
        let (id, result) = done.unwrap();
        let Some((family, out)) = result else {
            assert_eq!(id, disabler);
            continue;
        };
        match out {
            RedeemOutcome::Redeemed(c) => {
                assert_eq!(c.family_id.as_ref(), Some(&family));
                families.push(family);
            }
            RedeemOutcome::Rejected(e) => assert_eq!(e, OAuthError::invalid_grant("the client is disabled")),
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    for id in &families {
        let fam = store.get_family(id).await.unwrap().unwrap();
        assert_eq!(fam.revoked_at, Some(NOW + 1), "family {id} of the disabled client is still live");
    }
    assert_eq!(purge_everything(&store).await.families, families.len() as u64);
}

pub async fn client_last_used_written_at_most_once_a_minute(store: DynStore) {
    let resolution = moat_store::LAST_USED_RESOLUTION_SECONDS;
    let w = world(&store).await;
    let last_used = async |store: &DynStore| {
        store.get_client(&w.client.resource_id, &w.client.id).await.unwrap().unwrap().last_used_at
    };
    let redeem = async |store: &DynStore, at: i64| {
        let req = fixtures::request(&w.resource, &w.client);
        store.create_authorization_request(&req).await.unwrap();
        let mut code = fixtures::code(&w.resource, &w.client, &w.user.id);
        (code.created_at, code.expires_at) = (at, at + 60);
        let consent = fixtures::consent(&w.user.id, &w.client, &["todo:read", "todo:write"]);
        assert!(store.complete_authorization(&req.id, &code, Some(&consent)).await.unwrap());
        let nf = fixtures::new_family();
        let out = store.redeem_code(&code.code_hash, at, &|_| Ok(()), Some(&nf)).await.unwrap();
        assert!(matches!(out, RedeemOutcome::Redeemed(_)), "{out:?}");
        nf.first_token_hash.unwrap()
    };

    // Unset: the first redemption writes it.
    let token = redeem(&store, NOW).await;
    assert_eq!(last_used(&store).await, Some(NOW));
    // Within the resolution (up to and including exactly `resolution` seconds later), neither a
    // redemption nor a rotation rewrites it.
    redeem(&store, NOW + 1).await;
    let succ = random_secret();
    let out = store.rotate_refresh_token(&rotation(&token, &succ, &w.client, NOW + resolution)).await.unwrap();
    assert!(matches!(out, RotateOutcome::Rotated { .. }), "{out:?}");
    assert_eq!(last_used(&store).await, Some(NOW));
    // Older than that: a rotation writes it …
    let third = random_secret();
    let at = NOW + resolution + 1;
    let out = store.rotate_refresh_token(&rotation(&succ, &third, &w.client, at)).await.unwrap();
    assert!(matches!(out, RotateOutcome::Rotated { .. }), "{out:?}");
    assert_eq!(last_used(&store).await, Some(at));
    // … and so does a redemption.
    redeem(&store, at + resolution).await;
    assert_eq!(last_used(&store).await, Some(at));
    redeem(&store, at + resolution + 1).await;
    assert_eq!(last_used(&store).await, Some(at + resolution + 1));
    // Other columns were left alone.
    let client = store.get_client(&w.client.resource_id, &w.client.id).await.unwrap().unwrap();
    assert_eq!(client, moat_core::model::Client { last_used_at: client.last_used_at, ..w.client.clone() });
}

// ---- refresh rotation ------------------------------------------------------------------------

pub async fn rotation_stores_successor(store: DynStore) {
    let g = grant(&store).await;
    let client = &g.world.client;
    let presented = g.family.first_token_hash.as_deref().unwrap();
    let succ = random_secret();
    let at = NOW + 100;

    let out = store.rotate_refresh_token(&rotation(presented, &succ, client, at)).await.unwrap();
    let fam = store.get_family(&g.family.id).await.unwrap().unwrap();
    let expected_expiry = (at + IDLE).min(fam.expires_at);
    assert_eq!(out, RotateOutcome::Rotated { family: fam.clone(), successor_expires_at: expected_expiry });

    let (old, _) = store.get_refresh_token(presented).await.unwrap().unwrap();
    assert_eq!(old.rotated_at, Some(at));
    let (new, new_fam) = store.get_refresh_token(&succ).await.unwrap().unwrap();
    assert_eq!(new_fam, fam);
    assert_eq!(new.parent_hash.as_deref(), Some(presented));
    assert_eq!(new.family_id, g.family.id);
    assert_eq!(new.created_at, at);
    assert_eq!(new.expires_at, expected_expiry);
    assert_eq!(new.rotated_at, None);
    assert_eq!(store.get_client(&g.world.resource.id, &client.id).await.unwrap().unwrap().last_used_at, Some(at));

    // The successor rotates in turn.
    let third = random_secret();
    let out = store.rotate_refresh_token(&rotation(&succ, &third, client, at + 200)).await.unwrap();
    assert!(matches!(out, RotateOutcome::Rotated { .. }), "{out:?}");

    // Unknown tokens change nothing.
    let out = store.rotate_refresh_token(&rotation("unknown", &random_secret(), client, at)).await.unwrap();
    assert_eq!(out, RotateOutcome::Invalid(None));
}

pub async fn grace_replay_returns_same_successor(store: DynStore) {
    let g = grant(&store).await;
    let client = &g.world.client;
    let presented = g.family.first_token_hash.as_deref().unwrap();
    let succ = random_secret();
    let out = store.rotate_refresh_token(&rotation(presented, &succ, client, NOW)).await.unwrap();
    let RotateOutcome::Rotated { family, successor_expires_at } = out else { panic!("{out:?}") };

    for dt in [0, 1, GRACE] {
        let again = store.rotate_refresh_token(&rotation(presented, &succ, client, NOW + dt)).await.unwrap();
        assert_eq!(again, RotateOutcome::GraceReplay { family: family.clone(), successor_expires_at });
    }
    // Nothing changed: the presented token keeps its first rotation time, the successor is unused.
    let (old, _) = store.get_refresh_token(presented).await.unwrap().unwrap();
    assert_eq!(old.rotated_at, Some(NOW));
    let (new, _) = store.get_refresh_token(&succ).await.unwrap().unwrap();
    assert_eq!(new.rotated_at, None);
    assert_eq!(purge_everything(&store).await.refresh_tokens, 2);
}

pub async fn reuse_after_grace_revokes_family(store: DynStore) {
    let g = grant(&store).await;
    let client = &g.world.client;
    let presented = g.family.first_token_hash.as_deref().unwrap();
    let succ = random_secret();
    let out = store.rotate_refresh_token(&rotation(presented, &succ, client, NOW)).await.unwrap();
    assert!(matches!(out, RotateOutcome::Rotated { .. }), "{out:?}");

    let late = NOW + GRACE + 1;
    let out = store.rotate_refresh_token(&rotation(presented, &succ, client, late)).await.unwrap();
    assert_eq!(out, RotateOutcome::Reused { family_id: g.family.id.clone() });
    assert_eq!(store.get_family(&g.family.id).await.unwrap().unwrap().revoked_at, Some(late));
    // The legitimate holder of the successor is locked out too (RFC 9700 §4.14.2).
    let out = store.rotate_refresh_token(&rotation(&succ, &random_secret(), client, late)).await.unwrap();
    assert_eq!(out, RotateOutcome::Invalid(Some(RejectReason::FamilyRevoked)));
}

pub async fn reuse_after_successor_used_revokes_family(store: DynStore) {
    let g = grant(&store).await;
    let client = &g.world.client;
    let first = g.family.first_token_hash.as_deref().unwrap();
    let second = random_secret();
    let third = random_secret();
    store.rotate_refresh_token(&rotation(first, &second, client, NOW)).await.unwrap();
    let out = store.rotate_refresh_token(&rotation(&second, &third, client, NOW + 1)).await.unwrap();
    assert!(matches!(out, RotateOutcome::Rotated { .. }), "{out:?}");
    // Inside the grace window, but the successor was already used: reuse.
    let out = store.rotate_refresh_token(&rotation(first, &second, client, NOW + 2)).await.unwrap();
    assert_eq!(out, RotateOutcome::Reused { family_id: g.family.id.clone() });
    assert!(store.get_family(&g.family.id).await.unwrap().unwrap().revoked_at.is_some());
}

pub async fn concurrent_rotations_rotate_once(store: DynStore) {
    const TASKS: usize = 24;
    let g = grant(&store).await;
    let succ = random_secret();
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(TASKS));
    let mut tasks = JoinSet::new();
    for _ in 0..TASKS {
        let store = store.clone();
        let presented = g.family.first_token_hash.clone().unwrap();
        let succ = succ.clone();
        let client = g.world.client.clone();
        let start = start.clone();
        tasks.spawn(async move {
            start.wait().await;
            store.rotate_refresh_token(&rotation(&presented, &succ, &client, NOW)).await.unwrap()
        });
    }
    let mut rotated = Vec::new();
    let mut replays = Vec::new();
    while let Some(done) = tasks.join_next().await {
        match done.unwrap() {
            RotateOutcome::Rotated { successor_expires_at, .. } => rotated.push(successor_expires_at),
            RotateOutcome::GraceReplay { successor_expires_at, .. } => replays.push(successor_expires_at),
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(rotated.len(), 1, "exactly one rotation wins");
    assert_eq!(replays.len(), TASKS - 1);
    assert!(replays.iter().all(|e| *e == rotated[0]), "every replay returns the same successor");
    let (tok, fam) = store.get_refresh_token(&succ).await.unwrap().unwrap();
    assert_eq!(tok.parent_hash.as_deref(), Some(g.family.first_token_hash.as_deref().unwrap()));
    assert_eq!(fam.revoked_at, None);
    // Never two successors: the family holds exactly its first token and one successor.
    let counts = purge_everything(&store).await;
    assert_eq!((counts.families, counts.refresh_tokens), (1, 2));
}

pub async fn rotation_rechecks_client_user_and_consent(store: DynStore) {
    // Wrong client: refused, nothing revoked, the right client can still rotate.
    let g = grant(&store).await;
    let other = fixtures::client(&g.world.resource.id);
    store.create_client(&other).await.unwrap();
    let succ = random_secret();
    let out = store
        .rotate_refresh_token(&rotation(g.family.first_token_hash.as_deref().unwrap(), &succ, &other, NOW))
        .await
        .unwrap();
    assert_eq!(out, RotateOutcome::Invalid(Some(RejectReason::WrongClient)));
    assert!(store.get_refresh_token(&succ).await.unwrap().is_none());
    assert_eq!(store.get_family(&g.family.id).await.unwrap().unwrap().revoked_at, None);

    // The same client id presented at another resource (a metadata-document client is a client
    // of several): refused, nothing changed.
    let elsewhere = ResourceId::generate();
    let mut r = rotation(g.family.first_token_hash.as_deref().unwrap(), &succ, &g.world.client, NOW);
    r.resource_id = &elsewhere;
    assert_eq!(
        store.rotate_refresh_token(&r).await.unwrap(),
        RotateOutcome::Invalid(Some(RejectReason::WrongResource))
    );
    // A scope the family was not granted: refused before any write (RFC 6749 §6).
    let wider = vec!["todo:read".to_owned(), "todo:admin".to_owned()];
    let mut r = rotation(g.family.first_token_hash.as_deref().unwrap(), &succ, &g.world.client, NOW);
    r.requested_scopes = Some(&wider);
    assert_eq!(
        store.rotate_refresh_token(&r).await.unwrap(),
        RotateOutcome::Invalid(Some(RejectReason::ScopeNotGranted))
    );
    assert!(store.get_refresh_token(&succ).await.unwrap().is_none());
    let (tok, fam) = store.get_refresh_token(g.family.first_token_hash.as_deref().unwrap()).await.unwrap().unwrap();
    assert_eq!((tok.rotated_at, fam.revoked_at), (None, None));

    // A later, narrower approval merges into the remembered consent: it never withdraws what
    // the family was granted, so the family still refreshes.
    let w = &g.world;
    let req = fixtures::request(&w.resource, &w.client);
    store.create_authorization_request(&req).await.unwrap();
    let code = fixtures::code(&w.resource, &w.client, &w.user.id);
    let narrow = fixtures::consent(&w.user.id, &w.client, &["todo:read"]);
    assert!(store.complete_authorization(&req.id, &code, Some(&narrow)).await.unwrap());
    let remembered = store.get_consent(&w.user.id, &w.client.id, &w.resource.id).await.unwrap().unwrap();
    assert_eq!(remembered.scopes, ["todo:read", "todo:write"]);
    let out = store
        .rotate_refresh_token(&rotation(g.family.first_token_hash.as_deref().unwrap(), &succ, &w.client, NOW))
        .await
        .unwrap();
    assert!(matches!(out, RotateOutcome::Rotated { .. }), "{out:?}");

    // Disabled client, disabled user, withdrawn consent: each refuses the refresh.
    for case in ["client", "user", "consent"] {
        let g = grant(&store).await;
        let w = &g.world;
        match case {
            "client" => {
                assert!(store.set_client_disabled(&w.client.resource_id, &w.client.id, true, NOW).await.unwrap())
            }
            "user" => assert!(store.set_user_disabled(&w.user.id, true, NOW).await.unwrap()),
            _ => assert!(store.delete_consent(&w.user.id, &w.client.id, &w.resource.id, NOW).await.unwrap()),
        }
        let succ = random_secret();
        let out = store
            .rotate_refresh_token(&rotation(g.family.first_token_hash.as_deref().unwrap(), &succ, &w.client, NOW + 1))
            .await
            .unwrap();
        assert!(matches!(out, RotateOutcome::Invalid(Some(_))), "{case}: {out:?}");
        assert!(store.get_refresh_token(&succ).await.unwrap().is_none(), "{case}");
    }
}

pub async fn rotation_idle_and_absolute_expiry(store: DynStore) {
    // Idle expiry of the presented token.
    let g = grant(&store).await;
    let client = &g.world.client;
    let out = store
        .rotate_refresh_token(&rotation(
            g.family.first_token_hash.as_deref().unwrap(),
            &random_secret(),
            client,
            g.family.token_expires_at,
        ))
        .await
        .unwrap();
    assert_eq!(out, RotateOutcome::Invalid(Some(RejectReason::TokenExpired)));

    // A successor never outlives the family, and the family's end is final.
    let w = world(&store).await;
    let req = fixtures::request(&w.resource, &w.client);
    store.create_authorization_request(&req).await.unwrap();
    let code = fixtures::code(&w.resource, &w.client, &w.user.id);
    let consent = fixtures::consent(&w.user.id, &w.client, &["todo:read", "todo:write"]);
    assert!(store.complete_authorization(&req.id, &code, Some(&consent)).await.unwrap());
    let mut nf = fixtures::new_family();
    nf.expires_at = NOW + 100;
    nf.token_expires_at = NOW + 100;
    store.redeem_code(&code.code_hash, NOW, &|_| Ok(()), Some(&nf)).await.unwrap();
    let succ = random_secret();
    let out = store
        .rotate_refresh_token(&rotation(nf.first_token_hash.as_deref().unwrap(), &succ, &w.client, NOW + 10))
        .await
        .unwrap();
    let RotateOutcome::Rotated { successor_expires_at, .. } = out else { panic!("{out:?}") };
    assert_eq!(successor_expires_at, NOW + 100);
    let out = store.rotate_refresh_token(&rotation(&succ, &random_secret(), &w.client, NOW + 100)).await.unwrap();
    assert_eq!(out, RotateOutcome::Invalid(Some(RejectReason::FamilyExpired)));
}

pub async fn refresh_lookup_and_revoke_family(store: DynStore) {
    let g = grant(&store).await;
    assert!(store.get_refresh_token("nope").await.unwrap().is_none());
    assert!(store.get_family(&FamilyId::generate()).await.unwrap().is_none());
    let (tok, fam) = store.get_refresh_token(g.family.first_token_hash.as_deref().unwrap()).await.unwrap().unwrap();
    assert_eq!(tok.family_id, fam.id);
    assert_eq!(store.get_family(&fam.id).await.unwrap(), Some(fam.clone()));

    assert!(store.revoke_family(&fam.id, NOW + 1).await.unwrap());
    // Idempotent: succeeds again and keeps the first revocation time.
    assert!(store.revoke_family(&fam.id, NOW + 2).await.unwrap());
    assert_eq!(store.get_family(&fam.id).await.unwrap().unwrap().revoked_at, Some(NOW + 1));
    assert!(!store.revoke_family(&FamilyId::generate(), NOW).await.unwrap());
}

// ---- consent ---------------------------------------------------------------------------------

pub async fn consent_delete_revokes_families(store: DynStore) {
    let g = grant(&store).await;
    let w = &g.world;
    // A grant of the same user to another client is not affected.
    let other_client = fixtures::client(&w.resource.id);
    store.create_client(&other_client).await.unwrap();
    let other = fixtures::grant_in(
        &store,
        fixtures::World { resource: w.resource.clone(), client: other_client, user: w.user.clone() },
    )
    .await;

    assert!(store.get_consent(&w.user.id, &w.client.id, &w.resource.id).await.unwrap().is_some());
    assert!(store.delete_consent(&w.user.id, &w.client.id, &w.resource.id, NOW + 4).await.unwrap());
    assert!(store.get_consent(&w.user.id, &w.client.id, &w.resource.id).await.unwrap().is_none());
    assert_eq!(store.get_family(&g.family.id).await.unwrap().unwrap().revoked_at, Some(NOW + 4));
    assert_eq!(store.get_family(&other.family.id).await.unwrap().unwrap().revoked_at, None);
    assert!(!store.delete_consent(&w.user.id, &w.client.id, &w.resource.id, NOW + 5).await.unwrap());
}

// ---- revocation lists ------------------------------------------------------------------------

pub async fn access_token_revocation(store: DynStore) {
    assert!(!store.is_access_token_revoked("jti-a").await.unwrap());
    store.revoke_access_token("jti-a", NOW + 3600).await.unwrap();
    assert!(store.is_access_token_revoked("jti-a").await.unwrap());
    // Revoking twice is fine.
    store.revoke_access_token("jti-a", NOW + 3600).await.unwrap();
    assert!(!store.is_access_token_revoked("jti-b").await.unwrap());
}

pub async fn assertion_jti_single_use(store: DynStore) {
    let a = ClientId::generate();
    let b = ClientId::generate();
    assert!(store.record_assertion_jti(&a, "j1", NOW + 60).await.unwrap());
    assert!(!store.record_assertion_jti(&a, "j1", NOW + 60).await.unwrap());
    assert!(store.record_assertion_jti(&b, "j1", NOW + 60).await.unwrap());
    assert!(store.record_assertion_jti(&a, "j2", NOW + 60).await.unwrap());
}

// ---- signing keys ----------------------------------------------------------------------------

fn key(kid: &str, created_at: i64) -> SigningKeyRecord {
    SigningKeyRecord {
        kid: kid.into(),
        alg: "ES256".into(),
        encrypted_private_key: vec![0, 1, 2, 254, 255, kid.len() as u8],
        public_jwk: format!(r#"{{"kty":"EC","kid":"{kid}"}}"#),
        created_at,
        activates_at: created_at + 600,
        retires_at: None,
        unpublish_at: None,
    }
}

pub async fn signing_keys_lifecycle(store: DynStore) {
    let newer = key("k-newer", NOW + 10);
    let older = key("k-older", NOW);
    store.insert_signing_key(&newer).await.unwrap();
    store.insert_signing_key(&older).await.unwrap();
    assert!(is_conflict(store.insert_signing_key(&older).await));
    assert_eq!(store.list_signing_keys().await.unwrap(), vec![older.clone(), newer.clone()]);

    assert!(store.retire_signing_key("k-older", NOW + 20, NOW + 20 + 3600).await.unwrap());
    assert!(!store.retire_signing_key("k-unknown", NOW, NOW).await.unwrap());
    let keys = store.list_signing_keys().await.unwrap();
    assert_eq!(keys[0].retires_at, Some(NOW + 20));
    assert_eq!(keys[0].unpublish_at, Some(NOW + 20 + 3600));
    assert_eq!(keys[1], newer);
}

// ---- audit log -------------------------------------------------------------------------------

pub async fn audit_paging_and_filters(store: DynStore) {
    store.append_audit_events(&[]).await.unwrap();
    let mut events = Vec::new();
    for i in 0..25_i64 {
        let mut e = AuditEvent::new(if i % 2 == 0 { "token.issued" } else { "login.succeeded" }, NOW + i);
        e.resource_id = Some(format!("res-{}", i % 3));
        e.client_id = (i % 5 == 0).then(|| "cli-x".to_owned());
        e.user_id = Some(if i < 10 { "usr-a".to_owned() } else { "usr-b".to_owned() });
        e.ip = (i == 7).then(|| "203.0.113.9".to_owned());
        e.detail = serde_json::json!({ "n": i });
        events.push(e);
    }
    store.append_audit_events(&events[..5]).await.unwrap();
    store.append_audit_events(&events[5..]).await.unwrap();

    // Newest first, ids assigned increasing in append order, fields intact.
    let all = store.list_audit_events(&AuditQuery { limit: 100, ..Default::default() }).await.unwrap();
    assert_eq!(all.len(), 25);
    for (got, want) in all.iter().rev().zip(&events) {
        assert_eq!(AuditEvent { id: 0, ..got.clone() }, *want);
    }
    assert!(all.windows(2).all(|w| w[0].id > w[1].id));
    // A default query (limit 0) still returns a page.
    assert_eq!(store.list_audit_events(&AuditQuery::default()).await.unwrap(), all);

    // Paging with before_id covers everything exactly once.
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page =
            store.list_audit_events(&AuditQuery { limit: 10, before_id: before, ..Default::default() }).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 10);
        before = page.last().map(|e| e.id);
        seen.extend(page);
    }
    assert_eq!(seen, all);

    let q = |f: fn(&mut AuditQuery)| {
        let mut q = AuditQuery { limit: 100, ..Default::default() };
        f(&mut q);
        q
    };
    let by_kind = store.list_audit_events(&q(|q| q.kind = Some("login.succeeded".into()))).await.unwrap();
    assert_eq!(by_kind.len(), 12);
    assert!(by_kind.iter().all(|e| e.kind == "login.succeeded"));
    let by_res = store.list_audit_events(&q(|q| q.resource_id = Some("res-1".into()))).await.unwrap();
    assert_eq!(by_res.len(), 8);
    let by_client = store.list_audit_events(&q(|q| q.client_id = Some("cli-x".into()))).await.unwrap();
    assert_eq!(by_client.len(), 5);
    let combined = store
        .list_audit_events(&q(|q| {
            q.user_id = Some("usr-a".into());
            q.kind = Some("token.issued".into());
        }))
        .await
        .unwrap();
    assert_eq!(combined.iter().map(|e| e.at - NOW).collect::<Vec<_>>(), vec![8, 6, 4, 2, 0]);
    let none = store.list_audit_events(&q(|q| q.user_id = Some("usr-z".into()))).await.unwrap();
    assert!(none.is_empty());
}

// ---- housekeeping ----------------------------------------------------------------------------

pub async fn purge_removes_only_what_is_expired(store: DynStore) {
    let now = NOW + 1000;
    let w = world(&store).await;

    // Pending requests: one expired, one live.
    let mut old_req = fixtures::request(&w.resource, &w.client);
    old_req.expires_at = now;
    store.create_authorization_request(&old_req).await.unwrap();
    let mut live_req = fixtures::request(&w.resource, &w.client);
    live_req.expires_at = now + 1;
    store.create_authorization_request(&live_req).await.unwrap();

    // Codes: one expired (consumed), one live.
    let req = fixtures::request(&w.resource, &w.client);
    store.create_authorization_request(&req).await.unwrap();
    let mut old_code = fixtures::code(&w.resource, &w.client, &w.user.id);
    old_code.expires_at = now - 1;
    let consent = fixtures::consent(&w.user.id, &w.client, &["todo:read", "todo:write"]);
    assert!(store.complete_authorization(&req.id, &old_code, Some(&consent)).await.unwrap());
    // Its family lives on; its first token is rotated and reaches its own (idle) expiry before
    // `now`, the successor does not.
    let mut long = fixtures::new_family();
    long.token_expires_at = now - 1;
    store.redeem_code(&old_code.code_hash, NOW, &|_| Ok(()), Some(&long)).await.unwrap();
    let succ = random_secret();
    let out = store
        .rotate_refresh_token(&rotation(long.first_token_hash.as_deref().unwrap(), &succ, &w.client, NOW))
        .await
        .unwrap();
    assert!(matches!(out, RotateOutcome::Rotated { .. }));
    let req = fixtures::request(&w.resource, &w.client);
    store.create_authorization_request(&req).await.unwrap();
    let mut live_code = fixtures::code(&w.resource, &w.client, &w.user.id);
    live_code.expires_at = now + 60;
    assert!(store.complete_authorization(&req.id, &live_code, None).await.unwrap());

    // A rotated token that has not reached its own expiry stays (reuse must still be seen).
    let req = fixtures::request(&w.resource, &w.client);
    store.create_authorization_request(&req).await.unwrap();
    let code = fixtures::code(&w.resource, &w.client, &w.user.id);
    assert!(store.complete_authorization(&req.id, &code, None).await.unwrap());
    let kept = fixtures::new_family();
    store.redeem_code(&code.code_hash, NOW, &|_| Ok(()), Some(&kept)).await.unwrap();
    let kept_succ = random_secret();
    store
        .rotate_refresh_token(&rotation(kept.first_token_hash.as_deref().unwrap(), &kept_succ, &w.client, NOW))
        .await
        .unwrap();

    // A family past its absolute expiry goes with all its tokens.
    let req = fixtures::request(&w.resource, &w.client);
    store.create_authorization_request(&req).await.unwrap();
    let code = fixtures::code(&w.resource, &w.client, &w.user.id);
    assert!(store.complete_authorization(&req.id, &code, None).await.unwrap());
    let mut short = fixtures::new_family();
    short.expires_at = now;
    short.token_expires_at = now + 5000; // first token's idle expiry beyond the family's end
    store.redeem_code(&code.code_hash, NOW, &|_| Ok(()), Some(&short)).await.unwrap();

    // Sessions: absolute expiry, idle, live.
    let mut s_abs = fixtures::session(&w.user.id);
    s_abs.expires_at = now;
    store.create_session(&s_abs).await.unwrap();
    let mut s_idle = fixtures::session(&w.user.id);
    s_idle.expires_at = now + 10_000;
    s_idle.last_seen_at = now - 101;
    store.create_session(&s_idle).await.unwrap();
    let mut s_live = fixtures::session(&w.user.id);
    s_live.expires_at = now + 10_000;
    s_live.last_seen_at = now - 100;
    store.create_session(&s_live).await.unwrap();

    // Revocation lists.
    store.revoke_access_token("gone", now).await.unwrap();
    store.revoke_access_token("kept", now + 1).await.unwrap();
    assert!(store.record_assertion_jti(&w.client.id, "gone", now - 1).await.unwrap());
    assert!(store.record_assertion_jti(&w.client.id, "kept", now + 1).await.unwrap());

    // Dynamic clients: old and never used (goes), old but used, recent; old pre-registered.
    let mut dyn_old = fixtures::client(&w.resource.id);
    dyn_old.kind = ClientKind::Dynamic;
    dyn_old.created_at = now - 500;
    store.create_client(&dyn_old).await.unwrap();
    // Old and never used, but with a sign-in under way: kept, or the sign-in would break.
    let mut dyn_busy = dyn_old.clone();
    dyn_busy.id = ClientId::generate();
    store.create_client(&dyn_busy).await.unwrap();
    let mut dyn_busy_req = fixtures::request(&w.resource, &dyn_busy);
    dyn_busy_req.expires_at = now + 100;
    store.create_authorization_request(&dyn_busy_req).await.unwrap();
    let mut dyn_used = dyn_old.clone();
    dyn_used.id = ClientId::generate();
    dyn_used.last_used_at = Some(now - 400);
    store.create_client(&dyn_used).await.unwrap();
    let mut dyn_new = dyn_old.clone();
    dyn_new.id = ClientId::generate();
    dyn_new.created_at = now - 100;
    store.create_client(&dyn_new).await.unwrap();
    let mut pre_old = fixtures::client(&w.resource.id);
    pre_old.created_at = now - 500;
    store.create_client(&pre_old).await.unwrap();
    // Metadata-document clients expire unused the same way (recorded again on their next use).
    let mut cimd_old = fixtures::cimd_client(&w.resource.id, "https://old.example/client.json");
    cimd_old.created_at = now - 500;
    store.upsert_cimd_client(&cimd_old).await.unwrap();
    let mut cimd_used = fixtures::cimd_client(&w.resource.id, "https://used.example/client.json");
    (cimd_used.created_at, cimd_used.last_used_at) = (now - 500, Some(now - 400));
    store.upsert_cimd_client(&cimd_used).await.unwrap();
    // A disabled one stays: deleting it would lift the operator's block.
    let mut cimd_blocked = fixtures::cimd_client(&w.resource.id, "https://blocked.example/client.json");
    cimd_blocked.created_at = now - 500;
    store.upsert_cimd_client(&cimd_blocked).await.unwrap();
    assert!(store.set_client_disabled(&w.resource.id, &cimd_blocked.id, true, now - 450).await.unwrap());

    let stats = store.purge_expired(now, now - 100, now - 200).await.unwrap();
    assert_eq!(
        stats,
        PurgeStats {
            authorization_requests: 1,
            // `old_code` and the two codes redeemed for `kept` and `short` (fixtures expire at
            // NOW + 60); `live_code` stays.
            codes: 3,
            sessions: 2,
            // `long`'s idle-expired first token, and `short`'s first token with its family.
            refresh_tokens: 2,
            families: 1,
            revoked_jtis: 1,
            assertion_jtis: 1,
            unused_dynamic_clients: 2,
        }
    );
    assert!(store.get_client(&w.resource.id, &cimd_old.id).await.unwrap().is_none());
    assert!(store.get_client(&w.resource.id, &cimd_used.id).await.unwrap().is_some());
    assert!(store.get_client(&w.resource.id, &cimd_blocked.id).await.unwrap().unwrap().disabled);
    assert!(store.get_client(&w.resource.id, &dyn_busy.id).await.unwrap().is_some());
    assert!(store.get_authorization_request(&dyn_busy_req.id).await.unwrap().is_some());

    assert!(store.get_authorization_request(&old_req.id).await.unwrap().is_none());
    assert!(store.get_authorization_request(&live_req.id).await.unwrap().is_some());
    assert_eq!(store.redeem_code(&old_code.code_hash, now, &|_| Ok(()), None).await.unwrap(), RedeemOutcome::NotFound);
    assert!(matches!(
        store.redeem_code(&live_code.code_hash, now, &|_| Ok(()), None).await.unwrap(),
        RedeemOutcome::Redeemed(_)
    ));
    // The expired code's family survives it (families end on their own schedule); of its
    // tokens only the one past its own expiry is gone.
    assert!(store.get_family(&long.id).await.unwrap().is_some());
    assert!(store.get_refresh_token(long.first_token_hash.as_deref().unwrap()).await.unwrap().is_none());
    assert!(store.get_refresh_token(&succ).await.unwrap().is_some());
    // The rotated-but-unexpired token is still there, so its reuse is still detected.
    let reuse = store
        .rotate_refresh_token(&rotation(kept.first_token_hash.as_deref().unwrap(), &kept_succ, &w.client, now))
        .await
        .unwrap();
    assert_eq!(reuse, RotateOutcome::Reused { family_id: kept.id.clone() });
    assert!(store.get_family(&short.id).await.unwrap().is_none());
    assert!(store.get_refresh_token(short.first_token_hash.as_deref().unwrap()).await.unwrap().is_none());

    assert!(store.get_session_by_token_hash(&s_abs.token_hash).await.unwrap().is_none());
    assert!(store.get_session_by_token_hash(&s_idle.token_hash).await.unwrap().is_none());
    assert!(store.get_session_by_token_hash(&s_live.token_hash).await.unwrap().is_some());
    assert!(!store.is_access_token_revoked("gone").await.unwrap());
    assert!(store.is_access_token_revoked("kept").await.unwrap());
    assert!(store.record_assertion_jti(&w.client.id, "gone", now + 60).await.unwrap());
    assert!(!store.record_assertion_jti(&w.client.id, "kept", now + 60).await.unwrap());

    assert!(store.get_client(&dyn_old.resource_id, &dyn_old.id).await.unwrap().is_none());
    assert!(store.get_client(&dyn_used.resource_id, &dyn_used.id).await.unwrap().is_some());
    assert!(store.get_client(&dyn_new.resource_id, &dyn_new.id).await.unwrap().is_some());
    assert!(store.get_client(&pre_old.resource_id, &pre_old.id).await.unwrap().is_some());
    assert!(store.get_client(&w.client.resource_id, &w.client.id).await.unwrap().is_some());

    // Nothing expired is left: purging again at the same time removes nothing.
    assert_eq!(store.purge_expired(now, now - 100, now - 200).await.unwrap(), PurgeStats::default());
}

// ---- signing-key rotation ----------------------------------------------------------------------

/// Seconds a retired key stays published in these checks.
const UNPUBLISH_AFTER: i64 = 86_400;

fn unretired(keys: &[SigningKeyRecord]) -> Vec<&str> {
    keys.iter().filter(|k| k.retires_at.is_none()).map(|k| k.kid.as_str()).collect()
}

pub async fn signing_key_rotation_retires_only_older_keys(store: DynStore) {
    let stored = |kid: &'static str| {
        let store = std::sync::Arc::clone(&store);
        async move { store.list_signing_keys().await.unwrap().into_iter().find(|k| k.kid == kid).unwrap() }
    };
    // The first key: nothing to retire.
    let a = SigningKeyRecord { activates_at: NOW, ..key("rot-a", NOW) };
    store.rotate_signing_key(&a, UNPUBLISH_AFTER).await.unwrap();
    assert_eq!(store.list_signing_keys().await.unwrap(), vec![a.clone()]);

    // A newer key: the older one retires when the newer activates.
    let b = key("rot-b", NOW + 10);
    store.rotate_signing_key(&b, UNPUBLISH_AFTER).await.unwrap();
    let old = stored("rot-a").await;
    assert_eq!((old.retires_at, old.unpublish_at), (Some(b.activates_at), Some(b.activates_at + UNPUBLISH_AFTER)));
    assert_eq!(stored("rot-b").await, b);

    // A key older than the newest (a skewed clock, or a rotation that lost a race) retires
    // itself, at its own activation since that is later: it never signs. The newest stays, and
    // a key already retired keeps its times.
    let c = SigningKeyRecord { activates_at: NOW + 700, ..key("rot-c", NOW + 5) };
    store.rotate_signing_key(&c, UNPUBLISH_AFTER).await.unwrap();
    let keys = store.list_signing_keys().await.unwrap();
    assert_eq!(unretired(&keys), vec!["rot-b"]);
    let c_now = stored("rot-c").await;
    assert_eq!((c_now.retires_at, c_now.unpublish_at), (Some(NOW + 700), Some(NOW + 700 + UNPUBLISH_AFTER)));
    assert_eq!(stored("rot-a").await, old);

    // A newer key that activates before the pending one: the pending one retires at its own
    // activation (it never signs), not before it could.
    let d = SigningKeyRecord { activates_at: NOW + 20, ..key("rot-d", NOW + 20) };
    store.rotate_signing_key(&d, UNPUBLISH_AFTER).await.unwrap();
    let keys = store.list_signing_keys().await.unwrap();
    assert_eq!(unretired(&keys), vec!["rot-d"]);
    assert_eq!(stored("rot-b").await.retires_at, Some(b.activates_at));

    // A kid already stored is a conflict, and nothing is retired.
    let dup = SigningKeyRecord { created_at: NOW + 30, ..d.clone() };
    assert!(is_conflict(store.rotate_signing_key(&dup, UNPUBLISH_AFTER).await));
    assert_eq!(store.list_signing_keys().await.unwrap(), keys);

    // Racing rotations never retire each other's key: exactly the newest stays unretired, and
    // every other key retires when a newer key activates (the newest one a rotation saw), so
    // at every moment some key signs.
    let mut racers = JoinSet::new();
    for i in 0..16_i64 {
        let store = std::sync::Arc::clone(&store);
        racers.spawn(async move {
            let k = key(&format!("race-{i:02}"), NOW + 100 + i);
            store.rotate_signing_key(&k, UNPUBLISH_AFTER).await.unwrap();
        });
    }
    while let Some(done) = racers.join_next().await {
        done.unwrap();
    }
    let keys = store.list_signing_keys().await.unwrap();
    assert_eq!(keys.len(), 4 + 16);
    assert_eq!(unretired(&keys), vec!["race-15"]);
    let newest = keys.last().unwrap();
    assert_eq!(newest.kid, "race-15");
    for (i, k) in keys.iter().enumerate().filter(|(_, k)| k.retires_at.is_some()) {
        let retires_at = k.retires_at.unwrap();
        let newer = &keys[i + 1..];
        assert!(
            newer.iter().any(|n| retires_at == n.activates_at.max(k.activates_at)),
            "{} retires at {retires_at}, neither when a newer key activates nor at its own activation after that",
            k.kid
        );
        assert_eq!(k.unpublish_at, Some(retires_at + UNPUBLISH_AFTER), "{}", k.kid);
    }
}
