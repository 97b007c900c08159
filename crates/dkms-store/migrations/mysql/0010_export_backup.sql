-- Break-glass export and share-group backup. `exportable` is fixed when a key is created
-- (the nodes hold the same bit in their shares and enforce it themselves). `result` holds
-- a task's public output (an export's shares, each sealed to the requester's key).
-- A backup group is a named, ordered list of custodian X25519 public keys, one per share;
-- key_backups keeps the latest backup of a key to a group: its share generation and the
-- shares, each sealed to its custodian (ciphertext only, JSON).
ALTER TABLE mpc_keys ADD COLUMN exportable BIGINT NOT NULL DEFAULT 0;
ALTER TABLE key_tasks ADD COLUMN result MEDIUMTEXT;
CREATE TABLE backup_groups (
    name       VARCHAR(64) PRIMARY KEY,
    custodians TEXT NOT NULL,
    created_at BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE TABLE key_backups (
    key_id       VARCHAR(36) NOT NULL,
    backup_group VARCHAR(64) NOT NULL,
    generation   BIGINT NOT NULL,
    shares       MEDIUMTEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (key_id, backup_group),
    FOREIGN KEY (key_id) REFERENCES mpc_keys (key_id),
    FOREIGN KEY (backup_group) REFERENCES backup_groups (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
