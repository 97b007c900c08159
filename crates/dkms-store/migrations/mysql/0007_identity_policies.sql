-- Identity and policy: users (password hashes only), login sessions (token hashes only),
-- API keys with several roles, groups, an owner and an expiry, versioned policies, and the
-- principal that created each key. Lists are JSON arrays in TEXT columns. The group
-- columns are called group_names because GROUPS is a reserved word in MySQL 8.
CREATE TABLE users (
    id            VARCHAR(36) PRIMARY KEY,
    username      VARCHAR(64) NOT NULL UNIQUE,
    password_hash VARCHAR(255) NOT NULL,    -- Argon2id PHC string; passwords are never stored
    roles         TEXT NOT NULL,            -- JSON array of role names
    group_names   TEXT NOT NULL,            -- JSON array of group names
    disabled      BIGINT NOT NULL DEFAULT 0,
    failed_logins BIGINT NOT NULL DEFAULT 0, -- consecutive failures since the last lock or success
    locked_until  BIGINT,                   -- logins refused until then (ms)
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE sessions (
    token_hash VARCHAR(64) PRIMARY KEY,     -- SHA-256 of the session token; the token is never stored
    user_id    VARCHAR(36) NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    FOREIGN KEY (user_id) REFERENCES users (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_expiry ON sessions (expires_at);

-- api_keys.role stays (the first role, or '') so that older code still reads the rows; it
-- is widened because role names are no longer limited to the built-in ones. owner has no
-- foreign key: a deleted user's keys stay, revoked, with the id they had.
ALTER TABLE api_keys MODIFY role VARCHAR(255) NOT NULL;
ALTER TABLE api_keys ADD COLUMN roles TEXT;
ALTER TABLE api_keys ADD COLUMN group_names TEXT;
ALTER TABLE api_keys ADD COLUMN owner VARCHAR(36);
ALTER TABLE api_keys ADD COLUMN expires_at BIGINT;
ALTER TABLE api_keys ADD COLUMN revoked_at BIGINT;
UPDATE api_keys SET roles = CASE WHEN role = '' THEN '[]' ELSE JSON_ARRAY(role) END, group_names = '[]';
ALTER TABLE api_keys MODIFY roles TEXT NOT NULL;
ALTER TABLE api_keys MODIFY group_names TEXT NOT NULL;
CREATE INDEX api_keys_owner ON api_keys (owner);
CREATE INDEX api_keys_list ON api_keys (created_at, id);

ALTER TABLE mpc_keys ADD COLUMN created_by VARCHAR(255) NOT NULL DEFAULT '';

-- Policies are append-only: every change is a new version, a deletion is a tombstone
-- version, and the primary key lets exactly one of two writers that expect the same latest
-- version succeed.
CREATE TABLE policy_versions (
    name        VARCHAR(128) NOT NULL,
    version     BIGINT NOT NULL,            -- from 1, +1 per change of this name
    policy_text LONGTEXT NOT NULL,          -- Cedar source; empty in a tombstone
    description TEXT NOT NULL,
    created_by  VARCHAR(255) NOT NULL,
    created_at  BIGINT NOT NULL,
    deleted     BIGINT NOT NULL DEFAULT 0,  -- 1: a tombstone
    PRIMARY KEY (name, version)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- One row, bumped in the same transaction as every policy version: gateways poll it and
-- reload their compiled policy set only when it changed.
CREATE TABLE policy_epoch (
    id    BIGINT PRIMARY KEY,
    epoch BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
INSERT INTO policy_epoch (id, epoch) VALUES (1, 0);
