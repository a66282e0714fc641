-- Moat schema, PostgreSQL flavour (DESIGN.md §7): the twin of migrations/sqlite/0001_init.sql,
-- with the same tables, columns, constraint names (so uniqueness conflicts map to the same
-- StoreError::Conflict messages, see codec.rs) and indexes. Types: times are BIGINT Unix seconds,
-- flags are SMALLINT 0/1 (CHECKed; the same 0/1 integers SQLite stores), scope lists are
-- space-joined TEXT, structured lists and documents are JSON kept as TEXT (not JSONB: stored
-- exactly as encoded, like SQLite), the sealed signing key is BYTEA, audit ids come from an
-- identity column.
--
-- Kept portable toward PostgreSQL-compatible distributed databases (CockroachDB, YugabyteDB, …;
-- DESIGN.md §7), so this file deliberately avoids:
--   * triggers, stored procedures and functions (PL/pgSQL), rules, extensions;
--   * LISTEN/NOTIFY, advisory locks or any session state for correctness: every atomic
--     operation relies only on row locks (SELECT … FOR UPDATE) and guarded UPDATEs/DELETEs
--     (src/postgres.rs). The only advisory lock is the one sqlx's migrator takes to serialise
--     concurrent `migrate()` calls, a convenience rather than a correctness requirement;
--   * any assumption that sequences are gapless or ordered by commit: audit ids are unique and
--     grow within a session, which is all id-based paging needs;
--   * SERIAL/sequence DDL (an SQL-standard identity column instead), deferrable constraints,
--     partial or expression indexes, exclusion constraints, inheritance, partitioning,
--     JSONB operators, CREATE INDEX CONCURRENTLY, and server-side defaults for anything the
--     application supplies (every value is bound explicitly, so the schema holds no logic).
-- Foreign keys cascade where the Store trait says deletes cascade, and every lookup path and
-- every cascading foreign key has an index whose leading columns are its columns. A client is
-- identified by (resource_id, id) (a Client ID Metadata Document URL may be a client of several
-- resources, DESIGN.md §5), so every table naming a client references (resource_id, client_id),
-- and that index also serves the foreign key to resources.

-- Registered MCP servers. `server_url` is kept exactly as registered (tokens carry it in `aud`);
-- uniqueness is enforced on its canonical form (DESIGN.md §8, RFC 8707 §2).
CREATE TABLE resources (
    id                   TEXT     NOT NULL,
    name                 TEXT     NOT NULL,
    server_url           TEXT     NOT NULL,
    server_url_canonical TEXT     NOT NULL,
    scopes               TEXT     NOT NULL, -- JSON array of {name, description}
    default_scopes       TEXT     NOT NULL, -- space-joined
    dcr_enabled          SMALLINT NOT NULL,
    cimd_enabled         SMALLINT NOT NULL,
    cimd_allowed_hosts   TEXT     NOT NULL, -- JSON array of strings
    access_token_ttl     BIGINT   NOT NULL,
    refresh_token_ttl    BIGINT   NOT NULL,
    refresh_idle_ttl     BIGINT   NOT NULL,
    created_at           BIGINT   NOT NULL,
    updated_at           BIGINT   NOT NULL,
    CONSTRAINT resources_pkey PRIMARY KEY (id),
    CONSTRAINT resources_server_url_canonical_key UNIQUE (server_url_canonical),
    CONSTRAINT resources_dcr_enabled_flag CHECK (dcr_enabled IN (0, 1)),
    CONSTRAINT resources_cimd_enabled_flag CHECK (cimd_enabled IN (0, 1))
);

CREATE TABLE clients (
    id                TEXT     NOT NULL,
    resource_id       TEXT     NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
    kind              TEXT     NOT NULL, -- pre_registered | dynamic | cimd
    name              TEXT     NOT NULL,
    redirect_uris     TEXT     NOT NULL, -- JSON array of strings
    grant_types       TEXT     NOT NULL, -- JSON array of strings
    auth_method       TEXT     NOT NULL,
    secret_hash       TEXT,
    secret_expires_at BIGINT,
    metadata          TEXT     NOT NULL, -- JSON document (RFC 7591 §3.2.1 echo)
    fingerprint       TEXT,
    access_token_ttl  BIGINT,
    disabled          SMALLINT NOT NULL,
    created_at        BIGINT   NOT NULL,
    updated_at        BIGINT   NOT NULL,
    last_used_at      BIGINT,
    CONSTRAINT clients_pkey PRIMARY KEY (resource_id, id),
    CONSTRAINT clients_disabled_flag CHECK (disabled IN (0, 1))
);
-- No index on `id` alone: every lookup names the resource (the primary key serves it); listing
-- all clients reads the whole table anyway.
CREATE INDEX clients_resource_created ON clients (resource_id, created_at);
CREATE INDEX clients_resource_fingerprint ON clients (resource_id, fingerprint);
CREATE INDEX clients_kind_unused ON clients (kind, last_used_at, created_at);

CREATE TABLE users (
    id            TEXT     NOT NULL,
    email         TEXT     NOT NULL,
    name          TEXT,
    password_hash TEXT,
    disabled      SMALLINT NOT NULL,
    created_at    BIGINT   NOT NULL,
    updated_at    BIGINT   NOT NULL,
    CONSTRAINT users_pkey PRIMARY KEY (id),
    CONSTRAINT users_email_key UNIQUE (email),
    CONSTRAINT users_disabled_flag CHECK (disabled IN (0, 1))
);

-- Browser login sessions, found by the hash of the cookie secret.
CREATE TABLE sessions (
    id           TEXT   NOT NULL,
    token_hash   TEXT   NOT NULL,
    user_id      TEXT   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    auth_time    BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    CONSTRAINT sessions_pkey PRIMARY KEY (id),
    CONSTRAINT sessions_token_hash_key UNIQUE (token_hash)
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_expires ON sessions (expires_at);
CREATE INDEX sessions_last_seen ON sessions (last_seen_at);

-- Pending authorization requests between /authorize and the redirect back (DESIGN.md §6).
CREATE TABLE authorization_requests (
    id                    TEXT     NOT NULL,
    browser_hash          TEXT     NOT NULL,
    resource_id           TEXT     NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
    client_id             TEXT     NOT NULL,
    redirect_uri          TEXT     NOT NULL,
    redirect_uri_explicit SMALLINT NOT NULL,
    scopes                TEXT     NOT NULL, -- space-joined
    state                 TEXT,
    code_challenge        TEXT     NOT NULL,
    resource_url          TEXT     NOT NULL,
    prompt                TEXT,
    created_at            BIGINT   NOT NULL,
    expires_at            BIGINT   NOT NULL,
    CONSTRAINT authorization_requests_pkey PRIMARY KEY (id),
    CONSTRAINT authorization_requests_client_fkey FOREIGN KEY (resource_id, client_id)
        REFERENCES clients (resource_id, id) ON DELETE CASCADE,
    CONSTRAINT authorization_requests_redirect_uri_explicit_flag CHECK (redirect_uri_explicit IN (0, 1))
);
CREATE INDEX authorization_requests_client ON authorization_requests (resource_id, client_id);
CREATE INDEX authorization_requests_expires ON authorization_requests (expires_at);

-- Remembered consent per (user, client, resource).
CREATE TABLE consents (
    user_id     TEXT   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id   TEXT   NOT NULL,
    resource_id TEXT   NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
    scopes      TEXT   NOT NULL, -- space-joined
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    CONSTRAINT consents_pkey PRIMARY KEY (user_id, client_id, resource_id),
    CONSTRAINT consents_client_fkey FOREIGN KEY (resource_id, client_id)
        REFERENCES clients (resource_id, id) ON DELETE CASCADE
);
CREATE INDEX consents_client ON consents (resource_id, client_id);

-- Refresh-token families (DESIGN.md §4): revoking the family revokes every token in it.
-- `session_id` is informational (the `sid` claim), not a foreign key: logging out of the browser
-- does not end grants already made.
CREATE TABLE refresh_families (
    id          TEXT   NOT NULL,
    resource_id TEXT   NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
    client_id   TEXT   NOT NULL,
    user_id     TEXT            REFERENCES users (id) ON DELETE CASCADE,
    session_id  TEXT,
    scopes      TEXT   NOT NULL, -- space-joined
    auth_time   BIGINT,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    revoked_at  BIGINT,
    CONSTRAINT refresh_families_pkey PRIMARY KEY (id),
    CONSTRAINT refresh_families_client_fkey FOREIGN KEY (resource_id, client_id)
        REFERENCES clients (resource_id, id) ON DELETE CASCADE
);
CREATE INDEX refresh_families_client ON refresh_families (resource_id, client_id);
CREATE INDEX refresh_families_user_client_resource
    ON refresh_families (user_id, client_id, resource_id);
CREATE INDEX refresh_families_expires ON refresh_families (expires_at);

-- Refresh tokens by SHA-256 hash. A token has at most one successor (the successor hash is
-- derived deterministically from its parent), which the unique constraint on parent_hash
-- enforces as a last line of defence against a double rotation (NULLs, the first tokens of
-- families, are distinct). Rotated tokens stay until their own expiry so a reuse is still
-- recognised (RFC 9700 §4.14.2).
CREATE TABLE refresh_tokens (
    token_hash  TEXT   NOT NULL,
    family_id   TEXT   NOT NULL REFERENCES refresh_families (id) ON DELETE CASCADE,
    parent_hash TEXT,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    rotated_at  BIGINT,
    CONSTRAINT refresh_tokens_pkey PRIMARY KEY (token_hash),
    CONSTRAINT refresh_tokens_parent_hash_key UNIQUE (parent_hash)
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_expires ON refresh_tokens (expires_at);

-- Authorization codes by SHA-256 hash. Consumed codes stay until they expire so that a replay
-- can revoke the family the first redemption created (RFC 9700 §4.4). `session_id` is
-- informational like the families'.
CREATE TABLE authorization_codes (
    code_hash             TEXT     NOT NULL,
    resource_id           TEXT     NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
    client_id             TEXT     NOT NULL,
    user_id               TEXT     NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    session_id            TEXT,
    redirect_uri          TEXT     NOT NULL,
    redirect_uri_explicit SMALLINT NOT NULL,
    scopes                TEXT     NOT NULL, -- space-joined
    code_challenge        TEXT     NOT NULL,
    resource_url          TEXT     NOT NULL,
    auth_time             BIGINT   NOT NULL,
    created_at            BIGINT   NOT NULL,
    expires_at            BIGINT   NOT NULL,
    consumed_at           BIGINT,
    family_id             TEXT              REFERENCES refresh_families (id) ON DELETE SET NULL,
    CONSTRAINT authorization_codes_pkey PRIMARY KEY (code_hash),
    CONSTRAINT authorization_codes_client_fkey FOREIGN KEY (resource_id, client_id)
        REFERENCES clients (resource_id, id) ON DELETE CASCADE,
    CONSTRAINT authorization_codes_redirect_uri_explicit_flag CHECK (redirect_uri_explicit IN (0, 1))
);
CREATE INDEX authorization_codes_client ON authorization_codes (resource_id, client_id);
CREATE INDEX authorization_codes_user ON authorization_codes (user_id);
CREATE INDEX authorization_codes_family ON authorization_codes (family_id);
CREATE INDEX authorization_codes_expires ON authorization_codes (expires_at);

-- Revoked access tokens (by jti), kept until the token would have expired anyway.
CREATE TABLE revoked_access_tokens (
    jti        TEXT   NOT NULL,
    expires_at BIGINT NOT NULL,
    CONSTRAINT revoked_access_tokens_pkey PRIMARY KEY (jti)
);
CREATE INDEX revoked_access_tokens_expires ON revoked_access_tokens (expires_at);

-- Client-assertion jtis seen (RFC 7523 §3: single use). Not a foreign key to clients: the rows
-- are short-lived and recording one must never fail because of unrelated client bookkeeping.
CREATE TABLE assertion_jtis (
    client_id  TEXT   NOT NULL,
    jti        TEXT   NOT NULL,
    expires_at BIGINT NOT NULL,
    CONSTRAINT assertion_jtis_pkey PRIMARY KEY (client_id, jti)
);
CREATE INDEX assertion_jtis_expires ON assertion_jtis (expires_at);

-- Signing keys, the private half sealed under the master key (DESIGN.md §4).
CREATE TABLE signing_keys (
    kid                   TEXT   NOT NULL,
    alg                   TEXT   NOT NULL,
    encrypted_private_key BYTEA  NOT NULL,
    public_jwk            TEXT   NOT NULL,
    created_at            BIGINT NOT NULL,
    activates_at          BIGINT NOT NULL,
    retires_at            BIGINT,
    unpublish_at          BIGINT,
    CONSTRAINT signing_keys_pkey PRIMARY KEY (kid)
);
CREATE INDEX signing_keys_created ON signing_keys (created_at);

-- Audit log (DESIGN.md §10). No foreign keys: the log outlives what it mentions. Ids come from
-- an identity column: unique and increasing within one appending transaction, but neither
-- gapless nor in commit order across instances, and nothing relies on either.
CREATE TABLE audit_events (
    id          BIGINT GENERATED ALWAYS AS IDENTITY,
    at          BIGINT NOT NULL,
    kind        TEXT   NOT NULL,
    resource_id TEXT,
    client_id   TEXT,
    user_id     TEXT,
    ip          TEXT,
    detail      TEXT   NOT NULL, -- JSON document
    CONSTRAINT audit_events_pkey PRIMARY KEY (id)
);
CREATE INDEX audit_events_kind ON audit_events (kind, id);
CREATE INDEX audit_events_resource ON audit_events (resource_id, id);
CREATE INDEX audit_events_client ON audit_events (client_id, id);
CREATE INDEX audit_events_user ON audit_events (user_id, id);
