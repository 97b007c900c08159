//! Reading the audit log: filtered pages, the whole log as JSON lines (what
//! `dkms audit verify` checks), and the head to keep as a checkpoint elsewhere.

use super::{ApiQuery, ok};
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use dkms_proto::api::{AuditHead, AuditPage, Envelope};
use serde::Deserialize;

/// Entries read from the store per round while exporting.
const EXPORT_BATCH: usize = 1000;
/// Most entries one export answer carries; page with `afterSeq` for more.
const EXPORT_MAX: usize = 100_000;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct AuditQueryParams {
    /// RFC 3339, inclusive.
    from: Option<String>,
    /// RFC 3339, exclusive.
    to: Option<String>,
    /// `user:<name>`, `apiKey:<id>`, `system:gateway`, or just the kind.
    principal: Option<String>,
    key_id: Option<String>,
    action: Option<String>,
    /// `allow` or `deny`.
    decision: Option<String>,
    after_seq: Option<u64>,
    limit: Option<usize>,
}

fn time(field: &str, raw: &Option<String>) -> ApiResult<Option<dkms_audit::Timestamp>> {
    raw.as_deref()
        .map(|t| {
            let parsed =
                time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                    .map_err(|e| {
                        ApiError::invalid(format!("{field}: not an RFC 3339 time: {e}"))
                    })?;
            let ms = i64::try_from(parsed.unix_timestamp_nanos() / 1_000_000)
                .map_err(|_| ApiError::invalid(format!("{field}: out of range")))?;
            dkms_audit::Timestamp::from_unix_millis(ms)
                .map_err(|e| ApiError::invalid(format!("{field}: {e}")))
        })
        .transpose()
}

/// `GET /api/mappic/audit/query`
pub(super) async fn query(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<AuditQueryParams>,
) -> ApiResult<Json<Envelope<AuditPage>>> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit must be 1 to 1000"));
    }
    let (principal_kind, principal_id) = match q.principal.as_deref() {
        None => (None, None),
        Some(p) => {
            let (kind, id) = match p.split_once(':') {
                Some((k, id)) => (k, Some(id.to_owned())),
                None => (p, None),
            };
            let kind = dkms_audit::PrincipalKind::from_name(kind).ok_or_else(|| {
                ApiError::invalid(format!(
                    "principal: unknown kind {kind:?}; use user, apiKey, node or system"
                ))
            })?;
            (Some(kind), id)
        }
    };
    let decision = match q.decision.as_deref() {
        None => None,
        Some(d) => Some(
            dkms_audit::Decision::from_name(d)
                .ok_or_else(|| ApiError::invalid("decision must be allow or deny"))?,
        ),
    };
    if let Some(k) = &q.key_id {
        super::parse_id(Some(k), "keyId")?;
    }
    let page = state
        .store
        .query_audit(&dkms_audit::AuditQuery {
            from: time("from", &q.from)?,
            to: time("to", &q.to)?,
            principal_kind,
            principal_id,
            resource: q.key_id.as_deref().map(dkms_audit::key_resource),
            action: q.action,
            decision,
            after_seq: q.after_seq,
            limit: Some(limit),
        })
        .await?;
    let entries = page
        .entries
        .iter()
        .map(|e| serde_json::from_str(&dkms_audit::to_json_line(e)).map_err(ApiError::internal))
        .collect::<ApiResult<Vec<serde_json::Value>>>()?;
    Ok(ok(AuditPage {
        entries,
        next_after_seq: page.next_cursor,
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ExportParams {
    after_seq: Option<u64>,
    limit: Option<usize>,
}

/// `GET /api/mappic/audit/export`: entries as JSON lines (`application/x-ndjson`), in
/// order, from `afterSeq` (default: the start).
pub(super) async fn export(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ExportParams>,
) -> ApiResult<Response> {
    let limit = q.limit.unwrap_or(EXPORT_MAX);
    if !(1..=EXPORT_MAX).contains(&limit) {
        return Err(ApiError::invalid(format!(
            "limit must be 1 to {EXPORT_MAX}"
        )));
    }
    let mut after = q.after_seq.unwrap_or(0);
    let mut body = String::new();
    let mut left = limit;
    while left > 0 {
        let batch = state
            .store
            .audit_entries(after, left.min(EXPORT_BATCH))
            .await?;
        let Some(last) = batch.last() else { break };
        after = last.seq;
        left -= batch.len();
        for e in &batch {
            body.push_str(&dkms_audit::to_json_line(e));
            body.push('\n');
        }
    }
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

/// `GET /api/mappic/audit/head`
pub(super) async fn head(State(state): State<AppState>) -> ApiResult<Json<Envelope<AuditHead>>> {
    let anchor =
        state.store.audit_head().await?.ok_or_else(|| {
            ApiError::new(dkms_proto::ErrorCode::NotFound, "the audit log is empty")
        })?;
    Ok(ok(AuditHead {
        seq: anchor.seq,
        hash: hex::encode(anchor.hash),
        anchor: anchor.to_string(),
    }))
}
