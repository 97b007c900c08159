-- Share generations (0 at creation, +1 per committed refresh), the refresh that holds a
-- key (one at a time), and tasks on existing keys (refresh) with their outcome.
ALTER TABLE mpc_keys ADD COLUMN generation BIGINT NOT NULL DEFAULT 0;
ALTER TABLE mpc_keys ADD COLUMN refresh_task VARCHAR(36);
CREATE TABLE key_tasks (
    instance_id   VARCHAR(36) PRIMARY KEY,
    key_id        VARCHAR(36) NOT NULL,
    kind          VARCHAR(24) NOT NULL,
    status        VARCHAR(24) NOT NULL,
    error_code    VARCHAR(64),
    error_message TEXT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    FOREIGN KEY (key_id) REFERENCES mpc_keys (key_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE INDEX key_tasks_status ON key_tasks (status);
