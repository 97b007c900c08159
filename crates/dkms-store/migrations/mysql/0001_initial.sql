-- Gateway metadata: public data and hashes only, never key material. InnoDB, utf8mb4.
CREATE TABLE nodes (
    tag             VARCHAR(64) PRIMARY KEY,
    status          VARCHAR(16) NOT NULL,   -- PENDING until the node joins, then ACTIVE
    join_token_hash VARCHAR(64),            -- SHA-256 of the one-time join token; NULL once used
    signing_key     VARCHAR(64),            -- hex Ed25519 identity key, pinned at join
    encryption_key  VARCHAR(64),            -- hex X25519 key, pinned at join
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE mpc_keys (
    key_id        VARCHAR(36) PRIMARY KEY,
    key_type      VARCHAR(32) NOT NULL,
    scheme        VARCHAR(32) NOT NULL,
    threshold     BIGINT NOT NULL,
    total_shares  BIGINT NOT NULL,
    participants  TEXT NOT NULL,            -- JSON array of node tags in party order
    status        VARCHAR(24) NOT NULL,
    public_key    TEXT,                     -- hex SEC1 compressed
    address       VARCHAR(64),
    error_code    VARCHAR(64),
    error_message TEXT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE INDEX mpc_keys_status ON mpc_keys (status);

CREATE TABLE sign_tasks (
    instance_id   VARCHAR(36) PRIMARY KEY,
    key_id        VARCHAR(36) NOT NULL,
    digest        VARCHAR(64) NOT NULL,     -- hex, 32 bytes
    status        VARCHAR(24) NOT NULL,
    signature     TEXT,                     -- hex r || s || v
    signers       TEXT,                     -- JSON array of node tags
    error_code    VARCHAR(64),
    error_message TEXT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    FOREIGN KEY (key_id) REFERENCES mpc_keys (key_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE INDEX sign_tasks_status ON sign_tasks (status);
CREATE INDEX sign_tasks_key ON sign_tasks (key_id);

CREATE TABLE api_keys (
    id           VARCHAR(36) PRIMARY KEY,
    token_hash   VARCHAR(64) NOT NULL UNIQUE, -- SHA-256 of the token; the token itself is never stored
    role         VARCHAR(32) NOT NULL,
    name         VARCHAR(255) NOT NULL,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked      BIGINT NOT NULL DEFAULT 0
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE idempotency (
    principal     VARCHAR(64) NOT NULL,
    idem_key      VARCHAR(255) NOT NULL,
    route         VARCHAR(64) NOT NULL,
    request_hash  VARCHAR(64) NOT NULL,
    status_code   BIGINT NOT NULL,
    response      TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (principal, idem_key)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
