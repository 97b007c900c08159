-- Break-glass export and share-group backup. `exportable` is fixed when a key is created
-- (the nodes hold the same bit in their shares and enforce it themselves). `result` holds
-- a task's public output (an export's shares, each sealed to the requester's key).
-- A backup group is a named, ordered list of custodian X25519 public keys, one per share;
-- key_backups keeps the latest backup of a key to a group: its share generation and the
-- shares, each sealed to its custodian (ciphertext only, JSON).
ALTER TABLE mpc_keys ADD COLUMN exportable BIGINT NOT NULL DEFAULT 0;
ALTER TABLE key_tasks ADD COLUMN result TEXT;
CREATE TABLE backup_groups (
    name       VARCHAR(64) PRIMARY KEY,
    custodians TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE key_backups (
    key_id       VARCHAR(36) NOT NULL REFERENCES mpc_keys (key_id),
    backup_group VARCHAR(64) NOT NULL REFERENCES backup_groups (name),
    generation   BIGINT NOT NULL,
    shares       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (key_id, backup_group)
);
