-- Key lifecycle apart from the creating task: ENABLED, DISABLED, PENDING_DELETION, DELETED;
-- a description; the time a scheduled deletion is due; labels in their own table so that
-- listing can filter on them with plain SQL on every backend.
ALTER TABLE mpc_keys ADD COLUMN state VARCHAR(24) NOT NULL DEFAULT 'ENABLED';
ALTER TABLE mpc_keys ADD COLUMN description VARCHAR(1024) NOT NULL DEFAULT '';
ALTER TABLE mpc_keys ADD COLUMN deletion_at BIGINT;
CREATE INDEX mpc_keys_list ON mpc_keys (created_at, key_id);
CREATE INDEX mpc_keys_deletion ON mpc_keys (state, deletion_at);
CREATE TABLE key_labels (
    key_id VARCHAR(36) NOT NULL REFERENCES mpc_keys (key_id),
    name   VARCHAR(64) NOT NULL,
    value  VARCHAR(256) NOT NULL,
    PRIMARY KEY (key_id, name)
);
CREATE INDEX key_labels_name_value ON key_labels (name, value);
