-- Several gateways on one database: each running gateway process has a row here and
-- renews heartbeat_at while it lives; every unfinished task names the process that runs
-- it (gateway_id). A task whose gateway stopped renewing is ended FAILED by any
-- surviving gateway, so no task stays unfinished when its gateway dies.
CREATE TABLE gateways (
    id           VARCHAR(36) PRIMARY KEY,
    started_at   BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL
);
ALTER TABLE mpc_keys ADD COLUMN gateway_id VARCHAR(36);
ALTER TABLE sign_tasks ADD COLUMN gateway_id VARCHAR(36);
ALTER TABLE key_tasks ADD COLUMN gateway_id VARCHAR(36);
