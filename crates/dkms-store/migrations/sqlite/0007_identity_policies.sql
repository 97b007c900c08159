-- Identity and policy: users (password hashes only), login sessions (token hashes only),
-- API keys with several roles, groups, an owner and an expiry, versioned policies, and the
-- principal that created each key. Lists are JSON arrays in TEXT columns. The group
-- columns are called group_names because GROUPS is a reserved word in MySQL 8.
CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,            -- Argon2id PHC string; passwords are never stored
    roles         TEXT NOT NULL,            -- JSON array of role names
    group_names   TEXT NOT NULL,            -- JSON array of group names
    disabled      INTEGER NOT NULL DEFAULT 0,
    failed_logins INTEGER NOT NULL DEFAULT 0, -- consecutive failures since the last lock or success
    locked_until  BIGINT,                   -- logins refused until then (ms)
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,            -- SHA-256 of the session token; the token is never stored
    user_id    TEXT NOT NULL REFERENCES users (id),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_expiry ON sessions (expires_at);

-- api_keys.role stays (the first role, or '') so that older code still reads the rows.
-- owner has no foreign key: a deleted user's keys stay, revoked, with the id they had.
ALTER TABLE api_keys ADD COLUMN roles TEXT NOT NULL DEFAULT '[]';
ALTER TABLE api_keys ADD COLUMN group_names TEXT NOT NULL DEFAULT '[]';
ALTER TABLE api_keys ADD COLUMN owner TEXT;
ALTER TABLE api_keys ADD COLUMN expires_at BIGINT;
ALTER TABLE api_keys ADD COLUMN revoked_at BIGINT;
UPDATE api_keys SET roles = json_array(role) WHERE role <> '';
CREATE INDEX api_keys_owner ON api_keys (owner);
CREATE INDEX api_keys_list ON api_keys (created_at, id);

ALTER TABLE mpc_keys ADD COLUMN created_by TEXT NOT NULL DEFAULT '';

-- Policies are append-only: every change is a new version, a deletion is a tombstone
-- version, and the primary key lets exactly one of two writers that expect the same latest
-- version succeed.
CREATE TABLE policy_versions (
    name        TEXT NOT NULL,
    version     BIGINT NOT NULL,            -- from 1, +1 per change of this name
    policy_text TEXT NOT NULL,              -- Cedar source; empty in a tombstone
    description TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    deleted     INTEGER NOT NULL DEFAULT 0, -- 1: a tombstone
    PRIMARY KEY (name, version)
);

-- One row, bumped in the same transaction as every policy version: gateways poll it and
-- reload their compiled policy set only when it changed.
CREATE TABLE policy_epoch (
    id    INTEGER PRIMARY KEY,
    epoch BIGINT NOT NULL
);
INSERT INTO policy_epoch (id, epoch) VALUES (1, 0);
