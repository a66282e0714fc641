-- Moat schema, SQLite flavour (DESIGN.md §7). A PostgreSQL twin lives in migrations/postgres and
-- must stay structurally identical: times are BIGINT Unix seconds, booleans are INTEGER 0/1,
-- scope lists are space-joined TEXT, structured lists and documents are JSON TEXT. No triggers.
-- Foreign keys cascade where the Store trait says deletes cascade; every lookup path and every
-- cascading foreign key has an index whose leading columns are its columns (SQLite scans the
-- child table otherwise). A client belongs to one resource and is identified by
-- (resource_id, id): a Client ID Metadata Document client's id is its URL, and the same URL may
-- be a client of several resources, each with a row, consents and grants of its own (DESIGN.md
-- §5). So every table naming a client references (resource_id, client_id), and its index on
-- those columns also serves the foreign key to resources (no separate resource_id index).

-- Registered MCP servers. `server_url` is kept exactly as registered (tokens carry it in `aud`);
-- uniqueness is enforced on its canonical form (DESIGN.md §8, RFC 8707 §2).
CREATE TABLE resources (
    id                   TEXT    NOT NULL PRIMARY KEY,
    name                 TEXT    NOT NULL,
    server_url           TEXT    NOT NULL,
    server_url_canonical TEXT    NOT NULL,
    scopes               TEXT    NOT NULL, -- JSON array of {name, description}
    default_scopes       TEXT    NOT NULL, -- space-joined
    dcr_enabled          INTEGER NOT NULL,
    cimd_enabled         INTEGER NOT NULL,
    cimd_allowed_hosts   TEXT    NOT NULL, -- JSON array of strings
    access_token_ttl     BIGINT  NOT NULL,
    refresh_token_ttl    BIGINT  NOT NULL,
    refresh_idle_ttl     BIGINT  NOT NULL,
    created_at           BIGINT  NOT NULL,
    updated_at           BIGINT  NOT NULL,
    CONSTRAINT resources_server_url_canonical_key UNIQUE (server_url_canonical)
);

CREATE TABLE clients (
    id                TEXT    NOT NULL,
    resource_id       TEXT    NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
    kind              TEXT    NOT NULL, -- pre_registered | dynamic | cimd
    name              TEXT    NOT NULL,
    redirect_uris     TEXT    NOT NULL, -- JSON array of strings
    grant_types       TEXT    NOT NULL, -- JSON array of strings
    auth_method       TEXT    NOT NULL,
    secret_hash       TEXT,
    secret_expires_at BIGINT,
    metadata          TEXT    NOT NULL, -- JSON document (RFC 7591 §3.2.1 echo)
    fingerprint       TEXT,
    access_token_ttl  BIGINT,
    disabled          INTEGER NOT NULL,
    created_at        BIGINT  NOT NULL,
    updated_at        BIGINT  NOT NULL,
    last_used_at      BIGINT,
    PRIMARY KEY (resource_id, id)
);
-- No index on `id` alone: every lookup names the resource (the primary key serves it); listing
-- all clients reads the whole table anyway.
CREATE INDEX clients_resource_created ON clients (resource_id, created_at);
CREATE INDEX clients_resource_fingerprint ON clients (resource_id, fingerprint);
CREATE INDEX clients_kind_unused ON clients (kind, last_used_at, created_at);

CREATE TABLE users (
    id            TEXT    NOT NULL PRIMARY KEY,
    email         TEXT    NOT NULL,
    name          TEXT,
    password_hash TEXT,
    disabled      INTEGER NOT NULL,
    created_at    BIGINT  NOT NULL,
    updated_at    BIGINT  NOT NULL,
    CONSTRAINT users_email_key UNIQUE (email)
);

-- Browser login sessions, found by the hash of the cookie secret.
CREATE TABLE sessions (
    id           TEXT   NOT NULL PRIMARY KEY,
    token_hash   TEXT   NOT NULL,
    user_id      TEXT   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    auth_time    BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    CONSTRAINT sessions_token_hash_key UNIQUE (token_hash)
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_expires ON sessions (expires_at);
CREATE INDEX sessions_last_seen ON sessions (last_seen_at);

-- Pending authorization requests between /authorize and the redirect back (DESIGN.md §6).
CREATE TABLE authorization_requests (
    id                    TEXT    NOT NULL PRIMARY KEY,
    browser_hash          TEXT    NOT NULL,
    resource_id           TEXT    NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
    client_id             TEXT    NOT NULL,
    redirect_uri          TEXT    NOT NULL,
    redirect_uri_explicit INTEGER NOT NULL,
    scopes                TEXT    NOT NULL, -- space-joined
    state                 TEXT,
    code_challenge        TEXT    NOT NULL,
    resource_url          TEXT    NOT NULL,
    prompt                TEXT,
    created_at            BIGINT  NOT NULL,
    expires_at            BIGINT  NOT NULL,
    CONSTRAINT authorization_requests_client_fkey FOREIGN KEY (resource_id, client_id)
        REFERENCES clients (resource_id, id) ON DELETE CASCADE
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
    PRIMARY KEY (user_id, client_id, resource_id),
    CONSTRAINT consents_client_fkey FOREIGN KEY (resource_id, client_id)
        REFERENCES clients (resource_id, id) ON DELETE CASCADE
);
CREATE INDEX consents_client ON consents (resource_id, client_id);

-- Refresh-token families (DESIGN.md §4): revoking the family revokes every token in it.
-- `session_id` is informational (the `sid` claim), not a foreign key: logging out of the browser
-- does not end grants already made.
CREATE TABLE refresh_families (
    id          TEXT   NOT NULL PRIMARY KEY,
    resource_id TEXT   NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
    client_id   TEXT   NOT NULL,
    user_id     TEXT            REFERENCES users (id) ON DELETE CASCADE,
    session_id  TEXT,
    scopes      TEXT   NOT NULL, -- space-joined
    auth_time   BIGINT,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    revoked_at  BIGINT,
    CONSTRAINT refresh_families_client_fkey FOREIGN KEY (resource_id, client_id)
        REFERENCES clients (resource_id, id) ON DELETE CASCADE
);
CREATE INDEX refresh_families_client ON refresh_families (resource_id, client_id);
CREATE INDEX refresh_families_user_client_resource
    ON refresh_families (user_id, client_id, resource_id);
CREATE INDEX refresh_families_expires ON refresh_families (expires_at);

-- Refresh tokens by SHA-256 hash. A token has at most one successor (the successor hash is
-- derived deterministically from its parent), which the unique index on parent_hash enforces
-- as a last line of defence against a double rotation. Rotated tokens stay until their own
-- expiry so a reuse is still recognised (RFC 9700 §4.14.2).
CREATE TABLE refresh_tokens (
    token_hash  TEXT   NOT NULL PRIMARY KEY,
    family_id   TEXT   NOT NULL REFERENCES refresh_families (id) ON DELETE CASCADE,
    parent_hash TEXT,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    rotated_at  BIGINT,
    CONSTRAINT refresh_tokens_parent_hash_key UNIQUE (parent_hash)
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_expires ON refresh_tokens (expires_at);

-- Authorization codes by SHA-256 hash. Consumed codes stay until they expire so that a replay
-- can revoke the family the first redemption created (RFC 9700 §4.4). `session_id` is
-- informational like the families'.
CREATE TABLE authorization_codes (
    code_hash             TEXT    NOT NULL PRIMARY KEY,
    resource_id           TEXT    NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
    client_id             TEXT    NOT NULL,
    user_id               TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    session_id            TEXT,
    redirect_uri          TEXT    NOT NULL,
    redirect_uri_explicit INTEGER NOT NULL,
    scopes                TEXT    NOT NULL, -- space-joined
    code_challenge        TEXT    NOT NULL,
    resource_url          TEXT    NOT NULL,
    auth_time             BIGINT  NOT NULL,
    created_at            BIGINT  NOT NULL,
    expires_at            BIGINT  NOT NULL,
    consumed_at           BIGINT,
    family_id             TEXT             REFERENCES refresh_families (id) ON DELETE SET NULL,
    CONSTRAINT authorization_codes_client_fkey FOREIGN KEY (resource_id, client_id)
        REFERENCES clients (resource_id, id) ON DELETE CASCADE
);
CREATE INDEX authorization_codes_client ON authorization_codes (resource_id, client_id);
CREATE INDEX authorization_codes_user ON authorization_codes (user_id);
CREATE INDEX authorization_codes_family ON authorization_codes (family_id);
CREATE INDEX authorization_codes_expires ON authorization_codes (expires_at);

-- Revoked access tokens (by jti), kept until the token would have expired anyway.
CREATE TABLE revoked_access_tokens (
    jti        TEXT   NOT NULL PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX revoked_access_tokens_expires ON revoked_access_tokens (expires_at);

-- Client-assertion jtis seen (RFC 7523 §3: single use). Not a foreign key to clients: the rows
-- are short-lived and recording one must never fail because of unrelated client bookkeeping.
CREATE TABLE assertion_jtis (
    client_id  TEXT   NOT NULL,
    jti        TEXT   NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (client_id, jti)
);
CREATE INDEX assertion_jtis_expires ON assertion_jtis (expires_at);

-- Signing keys, the private half sealed under the master key (DESIGN.md §4).
CREATE TABLE signing_keys (
    kid                   TEXT   NOT NULL PRIMARY KEY,
    alg                   TEXT   NOT NULL,
    encrypted_private_key BLOB   NOT NULL, -- BYTEA in PostgreSQL
    public_jwk            TEXT   NOT NULL,
    created_at            BIGINT NOT NULL,
    activates_at          BIGINT NOT NULL,
    retires_at            BIGINT,
    unpublish_at          BIGINT
);
CREATE INDEX signing_keys_created ON signing_keys (created_at);

-- Audit log (DESIGN.md §10). No foreign keys: the log outlives what it mentions. Ids only grow
-- (AUTOINCREMENT never reuses one; PostgreSQL uses an identity column), so paging by id is
-- stable.
CREATE TABLE audit_events (
    id          INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    at          BIGINT  NOT NULL,
    kind        TEXT    NOT NULL,
    resource_id TEXT,
    client_id   TEXT,
    user_id     TEXT,
    ip          TEXT,
    detail      TEXT    NOT NULL -- JSON document
);
CREATE INDEX audit_events_kind ON audit_events (kind, id);
CREATE INDEX audit_events_resource ON audit_events (resource_id, id);
CREATE INDEX audit_events_client ON audit_events (client_id, id);
CREATE INDEX audit_events_user ON audit_events (user_id, id);
