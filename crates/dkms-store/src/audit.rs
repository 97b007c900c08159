//! The audit log's rows: appending through the `dkms-audit` hash chain, querying and
//! exporting. The chain logic (numbering, hashing, verifying) is `dkms-audit`'s; this
//! module only stores one row per entry and reads it back exactly.
//!
//! Several gateways may share one database. An append reads the head, links the record
//! to it and inserts; the primary key on `seq` lets only one of two gateways that read the
//! same head win, and the other re-reads and tries again. Within one process appends are
//! serialized by a lock held in the [`Store`], so a gateway never races itself.

use crate::{Backend, Result, Store, StoreError};
use dkms_audit::{Anchor, AuditEntry, AuditQuery, AuditRecord, Chain, FORMAT_VERSION, Page};
use sqlx::Row;
use sqlx::any::AnyRow;
use std::collections::BTreeMap;
use std::time::Duration;

/// The page size of [`Store::query_audit`] when the query sets none.
pub const AUDIT_DEFAULT_LIMIT: usize = 100;
/// The largest page [`Store::query_audit`] returns, whatever the query asks.
pub const AUDIT_MAX_LIMIT: usize = 1000;
/// Longest principal id, action and resource (in characters) an audit record may carry:
/// the widths of their indexed columns. Longer records are refused on every backend alike.
pub const AUDIT_PRINCIPAL_ID_MAX: usize = 255;
pub const AUDIT_ACTION_MAX: usize = 128;
pub const AUDIT_RESOURCE_MAX: usize = 512;

/// How often an append re-reads the head after another gateway took its `seq`. Every
/// collision means another append succeeded, so the log always progresses; the bound
/// only keeps one gateway from waiting forever under a sustained stream from others.
const APPEND_ATTEMPTS: u32 = 64;

impl Store {
    /// Appends `record` as the next entry and returns it as stored.
    ///
    /// Refused ([`StoreError::Db`]) if a field exceeds its column
    /// ([`AUDIT_PRINCIPAL_ID_MAX`], [`AUDIT_ACTION_MAX`], [`AUDIT_RESOURCE_MAX`]) or a
    /// plain text field holds a NUL character (PostgreSQL cannot store one).
    /// [`StoreError::Retryable`] if other gateways took the next `seq` every time.
    pub async fn append_audit(&self, record: &AuditRecord) -> Result<AuditEntry> {
        check_record(record)?;
        let _one_at_a_time = self.audit_lock.lock().await;
        let mut attempt = 0;
        loop {
            let head = self.audit_head().await?;
            let entry = Chain::resume(head)
                .and_then(|mut chain| chain.append(record.clone()))
                .map_err(|e| StoreError::Corrupt(format!("audit log head {head:?}: {e}")))?;
            match self.insert_audit(&entry).await {
                Ok(()) => return Ok(entry),
                Err(StoreError::Conflict | StoreError::Retryable(_))
                    if attempt + 1 < APPEND_ATTEMPTS =>
                {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(u64::from(attempt.min(10)))).await;
                }
                Err(StoreError::Conflict) => {
                    return Err(StoreError::Retryable(format!(
                        "audit entry {} was taken by another writer {APPEND_ATTEMPTS} times in a row",
                        entry.seq
                    )));
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn insert_audit(&self, e: &AuditEntry) -> Result<()> {
        let r = &e.record;
        let details: BTreeMap<&str, &str> = r.details.iter().collect();
        self.q(
            "INSERT INTO audit_log (seq, prev_hash, hash, time_ms, request_id, principal_kind, \
             principal_id, action, resource, decision, policies, outcome, details) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(seq_to_db(e.seq)?)
        .bind(hex::encode(e.prev_hash))
        .bind(hex::encode(e.hash))
        .bind(r.time.unix_millis())
        .bind(r.request_id.clone())
        .bind(r.principal.kind.as_str())
        .bind(r.principal.id.clone())
        .bind(r.action.clone())
        .bind(r.resource.clone())
        .bind(r.decision.as_str())
        .bind(to_json(&r.policies)?)
        .bind(r.outcome.clone())
        .bind(to_json(&details)?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The newest entry's sequence number and hash; `None` for an empty log.
    pub async fn audit_head(&self) -> Result<Option<Anchor>> {
        let row = self
            .q("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            let seq = seq_from_db(r.try_get("seq")?)?;
            let hash: String = r.try_get("hash")?;
            format!("{seq}:{hash}")
                .parse::<Anchor>()
                .map_err(|e| StoreError::Corrupt(format!("audit entry {seq}: {e}")))
        })
        .transpose()
    }

    /// One page of matching entries in ascending seq, filtered in SQL with the meaning of
    /// [`AuditQuery::matches`]: the result equals [`AuditQuery::select`] over the whole log
    /// with the limit set to the effective one ([`AUDIT_DEFAULT_LIMIT`] when unset, at most
    /// [`AUDIT_MAX_LIMIT`]).
    pub async fn query_audit(&self, query: &AuditQuery) -> Result<Page> {
        let limit = query
            .limit
            .unwrap_or(AUDIT_DEFAULT_LIMIT)
            .min(AUDIT_MAX_LIMIT);
        // MySQL's utf8mb4_bin ignores trailing spaces in `=`; comparing byte lengths as
        // well makes it an exact match, as on the other backends and in `matches`.
        let mysql = self.backend == Backend::MySql;
        let mut sql = String::from("SELECT * FROM audit_log WHERE 1 = 1");
        let mut text_filters: Vec<&String> = Vec::new();
        if query.after_seq.is_some() {
            sql.push_str(" AND seq > ?");
        }
        if query.from.is_some() {
            sql.push_str(" AND time_ms >= ?");
        }
        if query.to.is_some() {
            sql.push_str(" AND time_ms < ?");
        }
        if query.principal_kind.is_some() {
            sql.push_str(" AND principal_kind = ?");
        }
        if query.decision.is_some() {
            sql.push_str(" AND decision = ?");
        }
        for (col, value) in [
            ("principal_id", &query.principal_id),
            ("resource", &query.resource),
            ("action", &query.action),
        ] {
            if let Some(v) = value {
                sql.push_str(&format!(" AND {col} = ?"));
                if mysql {
                    sql.push_str(&format!(" AND LENGTH({col}) = ?"));
                }
                text_filters.push(v);
            }
        }
        sql.push_str(" ORDER BY seq LIMIT ?");

        let mut q = self.q_built(sql);
        if let Some(after) = query.after_seq {
            // Stored seqs fit in an i64, so a larger cursor matches nothing either way.
            q = q.bind(i64::try_from(after).unwrap_or(i64::MAX));
        }
        if let Some(from) = query.from {
            q = q.bind(from.unix_millis());
        }
        if let Some(to) = query.to {
            q = q.bind(to.unix_millis());
        }
        if let Some(kind) = query.principal_kind {
            q = q.bind(kind.as_str());
        }
        if let Some(decision) = query.decision {
            q = q.bind(decision.as_str());
        }
        for v in text_filters {
            q = q.bind(v.clone());
            if mysql {
                q = q.bind(i64::try_from(v.len()).unwrap_or(i64::MAX));
            }
        }
        // One more than the page, to tell whether another page follows.
        let rows = q
            .bind(i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1))
            .fetch_all(&self.pool)
            .await?;
        let mut entries = rows.iter().map(audit_row).collect::<Result<Vec<_>>>()?;
        let more = entries.len() > limit;
        entries.truncate(limit);
        let next_cursor = if more {
            entries.last().map(|e| e.seq)
        } else {
            None
        };
        Ok(Page {
            entries,
            next_cursor,
        })
    }

    /// Up to `limit` entries after `after_seq` in ascending seq, unfiltered: the export
    /// and verification path (start with 0, continue with the last seq returned).
    pub async fn audit_entries(&self, after_seq: u64, limit: usize) -> Result<Vec<AuditEntry>> {
        let rows = self
            .q("SELECT * FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?")
            .bind(i64::try_from(after_seq).unwrap_or(i64::MAX))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(audit_row).collect()
    }
}

/// Refuses what some backend could not store as given, so all of them behave alike.
fn check_record(r: &AuditRecord) -> Result<()> {
    let too_long = |field: &str, value: &str, max: usize| {
        if value.chars().count() > max {
            Err(StoreError::Db(format!(
                "audit record {field} is longer than {max} characters"
            )))
        } else {
            Ok(())
        }
    };
    too_long("principal id", &r.principal.id, AUDIT_PRINCIPAL_ID_MAX)?;
    too_long("action", &r.action, AUDIT_ACTION_MAX)?;
    if let Some(res) = &r.resource {
        too_long("resource", res, AUDIT_RESOURCE_MAX)?;
    }
    // Policies and details are stored as JSON, which escapes NUL; these columns are not.
    let plain = [
        ("request id", Some(&r.request_id)),
        ("principal id", Some(&r.principal.id)),
        ("action", Some(&r.action)),
        ("resource", r.resource.as_ref()),
        ("outcome", Some(&r.outcome)),
    ];
    for (field, value) in plain {
        if value.is_some_and(|v| v.contains('\0')) {
            return Err(StoreError::Db(format!(
                "audit record {field} contains a NUL character"
            )));
        }
    }
    Ok(())
}

fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Db(e.to_string()))
}

fn seq_to_db(seq: u64) -> Result<i64> {
    i64::try_from(seq).map_err(|_| StoreError::Db(format!("audit seq {seq} exceeds the column")))
}

fn seq_from_db(seq: i64) -> Result<u64> {
    u64::try_from(seq).map_err(|_| StoreError::Corrupt(format!("audit seq {seq} is negative")))
}

/// A stored row back to the entry it was written from.
///
/// It goes through [`dkms_audit::from_json_line`], the crate's import path, because that
/// is how a stored log is read without today's secret-key guard on `details` (a marker
/// added later must not make old, honest entries unreadable). The hash is not checked
/// here; [`dkms_audit::verify`] does that.
fn audit_row(r: &AnyRow) -> Result<AuditEntry> {
    let seq = seq_from_db(r.try_get("seq")?)?;
    let corrupt = |what: String| StoreError::Corrupt(format!("audit entry {seq}: {what}"));
    let time = dkms_audit::Timestamp::from_unix_millis(r.try_get("time_ms")?)
        .map_err(|e| corrupt(e.to_string()))?;
    let policies: Vec<String> = serde_json::from_str(&r.try_get::<String, _>("policies")?)
        .map_err(|e| corrupt(format!("policies: {e}")))?;
    let details: BTreeMap<String, String> =
        serde_json::from_str(&r.try_get::<String, _>("details")?)
            .map_err(|e| corrupt(format!("details: {e}")))?;
    let line = serde_json::json!({
        "version": FORMAT_VERSION,
        "seq": seq,
        "prevHash": r.try_get::<String, _>("prev_hash")?,
        "hash": r.try_get::<String, _>("hash")?,
        "time": time.to_string(),
        "requestId": r.try_get::<String, _>("request_id")?,
        "principal": {
            "kind": r.try_get::<String, _>("principal_kind")?,
            "id": r.try_get::<String, _>("principal_id")?,
        },
        "action": r.try_get::<String, _>("action")?,
        "resource": r.try_get::<Option<String>, _>("resource")?,
        "decision": r.try_get::<String, _>("decision")?,
        "policies": policies,
        "outcome": r.try_get::<String, _>("outcome")?,
        "details": details,
    });
    dkms_audit::from_json_line(&line.to_string()).map_err(|e| corrupt(e.to_string()))
}
