//! Break-glass export (`key/export`, `key/export/get`), backup groups (`backupGroup/*`),
//! share backups (`key/backup`, `key/backup/get`) and restores (`key/restore`).
//!
//! The gateway handles ciphertext only: every share leaves its node sealed (HPKE) to the
//! requester's or a custodian's X25519 key, and a restore blob comes in sealed to the node
//! that stores it. An export is refused for a key not created exportable by the built-in
//! policy `key-not-exportable` (403 POLICY_DENIED), here again, and by every node.

use super::{
    TaskQuery, authorized_key, begin_maintenance, idempotent, load_waiting, ok, parse_id, rfc3339,
    to_value,
};
use crate::AppState;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiQuery};
use crate::orchestrator::{self, ExportResult, Rebuild, Recovery, SealTask};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::{Extension, Json};
use dkms_proto::api::{
    BackupGroupInfo, BackupGroupName, BackupGroupRequest, Custodian, Envelope, KeyBackupInfo,
    KeyBackupRequest, KeyExportInfo, KeyExportRequest, KeyImportResponse, KeyRestoreRequest,
    MemberSealedShare,
};
use dkms_proto::{ErrorCode, GroupName, TaskStatus};
use dkms_store::{BackupGroupRow, StoreError};
use serde::Deserialize;
use std::collections::HashSet;

/// Longest custodian name.
const MAX_CUSTODIAN_NAME: usize = 64;
/// Largest restore blob accepted (a share of a 16-party key is far smaller).
const MAX_RESTORE_BLOB: usize = 4 * 1024 * 1024;

/// An X25519 public key given as hex: 32 bytes, and a valid curve point encoding (every 32
/// bytes are one, but the all-zero key and other low-order points are refused by HPKE at
/// seal time; refuse the all-zero key here, where the message can name the field).
fn x25519_key(raw: &str, field: &str) -> ApiResult<[u8; 32]> {
    let bytes: [u8; 32] = hex::decode(raw.trim().trim_start_matches("0x"))
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            ApiError::invalid(format!(
                "{field} must be an X25519 public key: 32 bytes as 64 hex digits"
            ))
        })?;
    if bytes == [0u8; 32] {
        return Err(ApiError::invalid(format!(
            "{field} is the all-zero X25519 key"
        )));
    }
    Ok(bytes)
}

fn group_name(raw: &str, field: &str) -> ApiResult<GroupName> {
    raw.parse()
        .map_err(|e: dkms_proto::ParseError| ApiError::invalid(format!("{field}: {e}")))
}

fn group_not_found(name: &GroupName) -> ApiError {
    ApiError::new(
        ErrorCode::GroupNotFound,
        format!("no backup group named {name}"),
    )
}

fn custodians_of(row: &BackupGroupRow) -> ApiResult<Vec<Custodian>> {
    serde_json::from_str(&row.custodians).map_err(ApiError::internal)
}

fn group_info(row: &BackupGroupRow) -> ApiResult<BackupGroupInfo> {
    Ok(BackupGroupInfo {
        name: row.name.clone(),
        custodians: custodians_of(row)?,
        created_at: rfc3339(row.created_at),
    })
}

/// The key must have finished creation: an export or backup of a key without shares has
/// nothing to seal.
fn require_ready(key: &dkms_store::KeyRow, what: &str) -> ApiResult<()> {
    if key.status != TaskStatus::Finished {
        return Err(ApiError::new(
            ErrorCode::KeyNotReady,
            format!(
                "key {} is {}; only a FINISHED key can be {what}",
                key.key_id, key.status
            ),
        ));
    }
    Ok(())
}

/// `POST /api/mappic/dkms/key/export`
pub(super) async fn key_export(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<KeyExportRequest>,
) -> Response {
    idempotent(&state, &principal, &headers, "keyExport", &req, || async {
        let recipient = x25519_key(&req.recipient_public_key, "recipientPublicKey")?;
        let key = authorized_key(&state, &principal, &req.key_id, |_| {}).await?;
        // The built-in policy already forbids this; a custom policy set that dropped it
        // still does not export a key created non-exportable (nor would its nodes).
        if !key.exportable {
            return Err(ApiError::new(
                ErrorCode::PolicyDenied,
                format!(
                    "key {} was not created exportable; it can never be exported",
                    key.key_id
                ),
            ));
        }
        require_ready(&key, "exported")?;
        let (instance_id, permit) = begin_maintenance(&state, &key, "EXPORT", "exported").await?;
        principal.note("instanceId", &instance_id);
        tracing::warn!(key_id = %key.key_id, instance_id = %instance_id, principal = %principal.id, "break-glass export requested");
        orchestrator::spawn_seal_task(
            state.clone(),
            instance_id.clone(),
            key.key_id.clone(),
            SealTask::Export { recipient },
            permit,
        );
        to_value(KeyImportResponse {
            instance_id,
            key_id: key.key_id,
        })
    })
    .await
}

/// `GET /api/mappic/dkms/key/export/get?instanceId=...&waitMs=...`
pub(super) async fn key_export_get(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiQuery(q): ApiQuery<TaskQuery>,
) -> ApiResult<Json<Envelope<KeyExportInfo>>> {
    let id = parse_id(q.instance_id.as_deref(), "instanceId")?.to_string();
    let load = || async {
        let row = state
            .store
            .get_key_task(&id)
            .await?
            .filter(|t| t.kind == "EXPORT")
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::TaskNotFound,
                    format!("no export task with id {id}"),
                )
            })?;
        let key = state.store.get_key(&row.key_id).await?.ok_or_else(|| {
            ApiError::new(
                ErrorCode::KeyNotFound,
                format!("no key with id {}", row.key_id),
            )
        })?;
        let result: Option<ExportResult> = match state.store.get_key_task_result(&id).await? {
            Some(json) => Some(serde_json::from_str(&json).map_err(ApiError::internal)?),
            None => None,
        };
        let status = row.status;
        let (generation, shares) = match result {
            Some(r) if status == TaskStatus::Finished => (r.generation, r.shares),
            _ => (key.generation, Vec::new()),
        };
        Ok((
            KeyExportInfo {
                instance_id: row.instance_id,
                key_id: row.key_id,
                status: status.to_string(),
                error_code: row.error_code,
                error_message: row.error_message,
                generation,
                threshold: key.threshold,
                public_key_hex: key.public_key,
                shares,
            },
            status,
        ))
    };
    let (first, _) = load().await?;
    authorized_key(&state, &principal, &first.key_id, |_| {}).await?;
    Ok(ok(
        load_waiting(&state, &id, q.wait_ms.unwrap_or(0), load).await?
    ))
}

/// `POST /api/mappic/dkms/backupGroup/create`
pub(super) async fn group_create(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<BackupGroupRequest>,
) -> ApiResult<Json<Envelope<BackupGroupInfo>>> {
    let name = group_name(&req.name, "name")?;
    if req.custodians.len() < 2 || req.custodians.len() > super::MAX_PARTIES {
        return Err(ApiError::invalid(format!(
            "custodians must list 2 to {} custodians (one per share of the keys backed up to the group), got {}",
            super::MAX_PARTIES,
            req.custodians.len()
        )));
    }
    let mut names = HashSet::new();
    let mut keys = HashSet::new();
    let mut custodians = Vec::with_capacity(req.custodians.len());
    for (i, c) in req.custodians.iter().enumerate() {
        let cname = c.name.trim();
        if cname.is_empty()
            || cname.chars().count() > MAX_CUSTODIAN_NAME
            || cname.chars().any(char::is_control)
        {
            return Err(ApiError::invalid(format!(
                "custodians[{i}].name must be 1 to {MAX_CUSTODIAN_NAME} printable characters"
            )));
        }
        let key = x25519_key(&c.public_key, &format!("custodians[{i}].publicKey"))?;
        if !names.insert(cname.to_owned()) {
            return Err(ApiError::invalid(format!(
                "custodians[{i}].name {cname:?} is listed twice"
            )));
        }
        // One custodian holding two shares could combine them alone.
        if !keys.insert(key) {
            return Err(ApiError::invalid(format!(
                "custodians[{i}].publicKey is listed twice; each share needs its own custodian"
            )));
        }
        custodians.push(Custodian {
            name: cname.to_owned(),
            public_key: hex::encode(key),
        });
    }
    let row = BackupGroupRow {
        name: name.to_string(),
        custodians: serde_json::to_string(&custodians).map_err(ApiError::internal)?,
        created_at: state.clock.now_ms(),
    };
    state
        .store
        .insert_backup_group(&row)
        .await
        .map_err(|e| match e {
            StoreError::Conflict => ApiError::new(
                ErrorCode::Conflict,
                format!("a backup group named {name} already exists"),
            ),
            other => other.into(),
        })?;
    tracing::info!(group = %name, custodians = custodians.len(), "backup group created");
    Ok(ok(group_info(&row)?))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct GroupQuery {
    name: Option<String>,
}

/// `GET /api/mappic/dkms/backupGroup/get?name=...`
pub(super) async fn group_get(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<GroupQuery>,
) -> ApiResult<Json<Envelope<BackupGroupInfo>>> {
    let name = group_name(
        q.name
            .as_deref()
            .ok_or_else(|| ApiError::invalid("name is required"))?,
        "name",
    )?;
    let row = state
        .store
        .get_backup_group(name.as_str())
        .await?
        .ok_or_else(|| group_not_found(&name))?;
    Ok(ok(group_info(&row)?))
}

/// `GET /api/mappic/dkms/backupGroup/list`
pub(super) async fn group_list(
    State(state): State<AppState>,
) -> ApiResult<Json<Envelope<Vec<BackupGroupInfo>>>> {
    let rows = state.store.list_backup_groups().await?;
    let groups = rows.iter().map(group_info).collect::<ApiResult<Vec<_>>>()?;
    Ok(ok(groups))
}

/// `POST /api/mappic/dkms/backupGroup/delete`: refused while backups to it exist.
pub(super) async fn group_delete(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<BackupGroupName>,
) -> ApiResult<Json<Envelope<BackupGroupName>>> {
    let name = group_name(&req.name, "name")?;
    let deleted = state
        .store
        .delete_backup_group(name.as_str())
        .await
        .map_err(|e| match e {
            StoreError::Conflict => ApiError::new(
                ErrorCode::Conflict,
                format!("backup group {name} holds backups of keys; it cannot be deleted"),
            ),
            other => other.into(),
        })?;
    if !deleted {
        return Err(group_not_found(&name));
    }
    Ok(ok(BackupGroupName {
        name: name.to_string(),
    }))
}

/// `POST /api/mappic/dkms/key/backup`
pub(super) async fn key_backup(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<KeyBackupRequest>,
) -> Response {
    idempotent(&state, &principal, &headers, "keyBackup", &req, || async {
        let name = group_name(&req.backup_group, "backupGroup")?;
        let key = authorized_key(&state, &principal, &req.key_id, |_| {}).await?;
        require_ready(&key, "backed up")?;
        let group = state
            .store
            .get_backup_group(name.as_str())
            .await?
            .ok_or_else(|| group_not_found(&name))?;
        let custodians = custodians_of(&group)?;
        if custodians.len() != key.participants.len() {
            return Err(ApiError::invalid(format!(
                "backup group {name} has {} custodians but key {} has {} shares; a group needs one custodian per share",
                custodians.len(),
                key.key_id,
                key.participants.len()
            )));
        }
        let custodian_keys = custodians
            .iter()
            .map(|c| x25519_key(&c.public_key, "custodian publicKey"))
            .collect::<ApiResult<Vec<_>>>()?;
        let (instance_id, permit) = begin_maintenance(&state, &key, "BACKUP", "backed up").await?;
        principal.note("instanceId", &instance_id);
        principal.note("backupGroup", name.as_str());
        tracing::info!(key_id = %key.key_id, instance_id = %instance_id, group = %name, "backup requested");
        orchestrator::spawn_seal_task(
            state.clone(),
            instance_id.clone(),
            key.key_id.clone(),
            SealTask::Backup {
                group: name.to_string(),
                custodians: custodian_keys,
            },
            permit,
        );
        to_value(KeyImportResponse {
            instance_id,
            key_id: key.key_id,
        })
    })
    .await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct BackupQuery {
    key_id: Option<String>,
    backup_group: Option<String>,
}

/// `GET /api/mappic/dkms/key/backup/get?keyId=...&backupGroup=...`
pub(super) async fn key_backup_get(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiQuery(q): ApiQuery<BackupQuery>,
) -> ApiResult<Json<Envelope<KeyBackupInfo>>> {
    let key_id = parse_id(q.key_id.as_deref(), "keyId")?.to_string();
    let name = group_name(
        q.backup_group
            .as_deref()
            .ok_or_else(|| ApiError::invalid("backupGroup is required"))?,
        "backupGroup",
    )?;
    let key = authorized_key(&state, &principal, &key_id, |_| {}).await?;
    let group = state
        .store
        .get_backup_group(name.as_str())
        .await?
        .ok_or_else(|| group_not_found(&name))?;
    let custodians = custodians_of(&group)?;
    let row = state
        .store
        .get_key_backup(&key_id, name.as_str())
        .await?
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::NotFound,
                format!("key {key_id} has no backup to group {name}; run key/backup first"),
            )
        })?;
    let sealed: Vec<MemberSealedShare> =
        serde_json::from_str(&row.shares).map_err(ApiError::internal)?;
    let shares = sealed
        .into_iter()
        .zip(&custodians)
        .map(|(s, c)| dkms_proto::api::BackupShare {
            member: s.member,
            custodian: c.name.clone(),
            sealed: s.sealed,
        })
        .collect();
    Ok(ok(KeyBackupInfo {
        key_id,
        backup_group: name.to_string(),
        generation: row.generation,
        threshold: key.threshold,
        public_key_hex: key.public_key,
        shares,
        created_at: rfc3339(row.created_at),
    }))
}

/// `POST /api/mappic/dkms/key/restore`: a recovery whose repair step is the delivery of a
/// share a custodian re-sealed to the new node. Same access rule as `key/recover`.
pub(super) async fn key_restore(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<KeyRestoreRequest>,
) -> Response {
    idempotent(&state, &principal, &headers, "keyRestore", &req, || async {
        let key = authorized_key(&state, &principal, &req.key_id, |_| {}).await?;
        let (lost, newcomer) = super::replacement_of(
            &state,
            &key,
            &req.lost_participant,
            req.new_participant.as_deref(),
        )
        .await?;
        if req.sealed.len() > 2 * MAX_RESTORE_BLOB {
            return Err(ApiError::invalid("sealed: the restore blob is too large"));
        }
        let sealed = hex::decode(req.sealed.trim())
            .map_err(|_| ApiError::invalid("sealed: the restore blob is not hex"))?;
        if sealed.len() < 48 {
            return Err(ApiError::invalid(
                "sealed: the restore blob is too short to be a sealed share",
            ));
        }
        if req.generation != key.generation {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "the backup is of share generation {} but key {} is at generation {}: shares of an older generation do not combine with the current ones; take a new backup (key/backup) after every refresh or recovery",
                    req.generation, key.key_id, key.generation
                ),
            ));
        }
        let (instance_id, permit) = begin_maintenance(&state, &key, "RESTORE", "restored").await?;
        principal.note("instanceId", &instance_id);
        principal.note("lostParticipant", lost.as_str());
        principal.note("newParticipant", newcomer.as_str());
        tracing::info!(key_id = %key.key_id, instance_id = %instance_id, %lost, %newcomer, "restore requested");
        orchestrator::spawn_maintenance(
            state.clone(),
            instance_id.clone(),
            key.key_id.clone(),
            Some(Recovery {
                replacements: vec![(lost, newcomer)],
                rebuild: Rebuild::Restore {
                    generation: req.generation,
                    sealed,
                },
            }),
            permit,
        );
        to_value(KeyImportResponse {
            instance_id,
            key_id: key.key_id,
        })
    })
    .await
}
