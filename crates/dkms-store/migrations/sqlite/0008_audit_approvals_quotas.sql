-- Governance: the tamper-evident audit log, approvals of signing tasks (with what a
-- signing request carried beyond its digest), and quota usage for rate and spend limits.

-- One row per audit entry of dkms-audit format v1. seq is the primary key: of two
-- gateways that append the same seq, one collides here and re-reads the head. Hashes are
-- 64 lowercase hex digits; principal_kind and decision are dkms-audit's stable names
-- (apiKey/user/node/system, allow/deny); policies is a JSON array of strings and details a
-- JSON object of strings. The indexes serve the query filters (time, principal, resource,
-- action), each ending in seq so a filtered page comes out in seq order.
CREATE TABLE audit_log (
    seq            INTEGER PRIMARY KEY,
    prev_hash      VARCHAR(64) NOT NULL,
    hash           VARCHAR(64) NOT NULL,
    time_ms        BIGINT NOT NULL,
    request_id     TEXT NOT NULL,
    principal_kind VARCHAR(16) NOT NULL,
    principal_id   VARCHAR(255) NOT NULL,
    action         VARCHAR(128) NOT NULL,
    resource       VARCHAR(512),
    decision       VARCHAR(8) NOT NULL,
    policies       TEXT NOT NULL,
    outcome        TEXT NOT NULL,
    details        TEXT NOT NULL
);
CREATE INDEX audit_log_time ON audit_log (time_ms, seq);
CREATE INDEX audit_log_principal ON audit_log (principal_id, seq);
CREATE INDEX audit_log_resource ON audit_log (resource, seq);
CREATE INDEX audit_log_action ON audit_log (action, seq);

-- What a signing request carried beyond sign_tasks' columns, one row per task created
-- with it. Principals are written "kind:id". approvals_required 0 means no approval rule
-- (and then approver_group, approval_policy and approval_expires_at are NULL).
-- quota_claims is JSON that the store does not read: what to refund if the task fails.
CREATE TABLE sign_extras (
    instance_id         VARCHAR(36) PRIMARY KEY REFERENCES sign_tasks (instance_id),
    requester           TEXT NOT NULL,
    tx                  TEXT,                  -- the unsigned transaction (JSON) of a transaction signing
    signed_tx           TEXT,                  -- set once, after signing
    tx_hash             TEXT,
    approvals_required  BIGINT NOT NULL DEFAULT 0,
    approver_group      VARCHAR(128),
    approval_policy     TEXT,                  -- the policy that asked for approval
    approval_expires_at BIGINT,                -- ms; no vote is taken from then on
    quota_claims        TEXT NOT NULL DEFAULT '[]'
);

-- One vote per approver and task; the primary key refuses a second one.
CREATE TABLE sign_approvals (
    instance_id VARCHAR(36) NOT NULL REFERENCES sign_tasks (instance_id),
    approver    VARCHAR(300) NOT NULL,         -- principal "kind:id"
    approve     BIGINT NOT NULL,               -- 1 approve, 0 reject
    comment     TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (instance_id, approver)
);

-- Usage per quota scope and time bucket. used is a u128 (wei amounts reach 2^128 - 1).
-- SQLite has no integer wider than 64 bits and its REAL is inexact, so here used is TEXT
-- of exactly 39 decimal digits, zero-padded (2^128 - 1 has 39): exact, and ordered like
-- the numbers. The store adds and compares in Rust inside a write transaction.
CREATE TABLE quota_usage (
    scope        VARCHAR(255) NOT NULL,
    bucket_start BIGINT NOT NULL,             -- ms
    used         TEXT NOT NULL CHECK (length(used) = 39 AND used NOT GLOB '*[^0-9]*'),
    PRIMARY KEY (scope, bucket_start)
);
CREATE INDEX quota_usage_bucket ON quota_usage (bucket_start);
