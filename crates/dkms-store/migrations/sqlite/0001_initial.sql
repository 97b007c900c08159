-- Gateway metadata: public data and hashes only, never key material.
CREATE TABLE nodes (
    tag             TEXT PRIMARY KEY,
    status          TEXT NOT NULL,          -- PENDING until the node joins, then ACTIVE
    join_token_hash TEXT,                   -- SHA-256 of the one-time join token; NULL once used
    signing_key     TEXT,                   -- hex Ed25519 identity key, pinned at join
    encryption_key  TEXT,                   -- hex X25519 key, pinned at join
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

CREATE TABLE mpc_keys (
    key_id        TEXT PRIMARY KEY,
    key_type      TEXT NOT NULL,
    scheme        TEXT NOT NULL,
    threshold     INTEGER NOT NULL,
    total_shares  INTEGER NOT NULL,
    participants  TEXT NOT NULL,            -- JSON array of node tags in party order
    status        TEXT NOT NULL,
    public_key    TEXT,                     -- hex SEC1 compressed
    address       TEXT,
    error_code    TEXT,
    error_message TEXT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
CREATE INDEX mpc_keys_status ON mpc_keys (status);

CREATE TABLE sign_tasks (
    instance_id   TEXT PRIMARY KEY,
    key_id        TEXT NOT NULL REFERENCES mpc_keys (key_id),
    digest        TEXT NOT NULL,            -- hex, 32 bytes
    status        TEXT NOT NULL,
    signature     TEXT,                     -- hex r || s || v
    signers       TEXT,                     -- JSON array of node tags
    error_code    TEXT,
    error_message TEXT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
CREATE INDEX sign_tasks_status ON sign_tasks (status);
CREATE INDEX sign_tasks_key ON sign_tasks (key_id);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    token_hash   TEXT NOT NULL UNIQUE,      -- SHA-256 of the token; the token itself is never stored
    role         TEXT NOT NULL,
    name         TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked      INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE idempotency (
    principal     TEXT NOT NULL,
    idem_key      TEXT NOT NULL,
    route         TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    status_code   INTEGER NOT NULL,
    response      TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (principal, idem_key)
);
