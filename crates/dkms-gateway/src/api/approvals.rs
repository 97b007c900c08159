//! Signing admission (shared by `sign/req` and `sign/tx`): the policy decision with what
//! is being signed, the limits it carries, and the approvals it may ask for; and the
//! approval endpoints that release or reject a held signing.

use super::{
    ApiJson, ApiQuery, admit_task, existing_key, idempotent, ok, parse_id, rfc3339, to_value,
};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::{AppState, authz, limits, orchestrator};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::{Extension, Json};
use dkms_policy::{Decision, Obligation, SignDetails, TxDetails};
use dkms_proto::api::{
    ApprovalInfo, ApprovalRequest, ApprovalVote, Envelope, SignRequestResponse, SignTxRequest,
};
use dkms_proto::{Digest32, ErrorCode, TaskStatus};
use serde::Deserialize;

/// What one signing request asks for, once parsed.
pub(super) struct SignAsk {
    pub key_id: String,
    pub digest: Digest32,
    /// Canonical BIP-32 path, `None` for the key itself.
    pub derivation_path: Option<String>,
    /// A transaction signing: what is stored to rebuild it, and its decoded fields.
    pub tx: Option<(orchestrator::StoredTx, TxDetails)>,
}

/// Parses a `derivationPath` into its canonical form.
pub(super) fn canonical_path(raw: Option<&str>) -> ApiResult<Option<String>> {
    raw.map(|p| {
        dkms_mpc::derive::parse_path(p)
            .map(|path| dkms_mpc::derive::format_path(&path))
            .map_err(|e| ApiError::invalid(format!("derivationPath: {e}")))
    })
    .transpose()
}

/// Decides, limits and stores one signing; starts it unless it must wait for approvals.
/// Returns the task id.
pub(super) async fn submit_sign(
    state: &AppState,
    principal: &Principal,
    ask: SignAsk,
) -> ApiResult<String> {
    let key = existing_key(state, &ask.key_id).await?;
    let attrs = authz::key_attrs(state, &key).await?;
    let decision = principal
        .authorize_key(state, attrs, |ctx| {
            ctx.sign = Some(SignDetails {
                digest: ask.digest.0.to_vec(),
                derivation_path: ask.derivation_path.clone().unwrap_or_default(),
            });
            ctx.tx = ask.tx.as_ref().map(|(_, d)| d.clone());
        })
        .await?;
    if key.status != TaskStatus::Finished {
        return Err(ApiError::new(
            ErrorCode::KeyNotReady,
            format!(
                "key {} is {}; only a FINISHED key can sign",
                key.key_id, key.status
            ),
        ));
    }
    if key.state != dkms_store::STATE_ENABLED {
        return Err(ApiError::new(
            ErrorCode::KeyDisabled,
            format!(
                "key {} is {}; only an ENABLED key can sign",
                key.key_id, key.state
            ),
        ));
    }
    if ask.tx.is_some() && super::key_curve(&key.key_type)? != dkms_mpc::Curve::Secp256k1 {
        return Err(ApiError::invalid(format!(
            "sign/tx builds Ethereum transactions, which need an ECDSA_K1 key; key {} is {}",
            key.key_id, key.key_type
        )));
    }
    if let Some(p) = &ask.derivation_path {
        // Checks that the key can derive (it has a chain code) before anything is stored.
        super::derived(state, &key, p).await?;
    }
    let now = state.clock.now_ms();
    let approval = approval_rule(&decision, now, state);
    let permit = match approval {
        None => Some(admit_task(state)?),
        Some(_) => None,
    };
    let value = ask.tx.as_ref().map(|(_, d)| d.value_wei);
    let claims = limits::consume(state, principal, &key.key_id, &decision, value).await?;
    let instance_id = uuid::Uuid::new_v4().to_string();
    let tx_json = match &ask.tx {
        Some((stored, _)) => Some(serde_json::to_string(stored).map_err(ApiError::internal)?),
        None => None,
    };
    let row = dkms_store::SignRow {
        instance_id: instance_id.clone(),
        key_id: key.key_id.clone(),
        digest: ask.digest.to_hex(),
        status: if approval.is_some() {
            TaskStatus::PendingApproval
        } else {
            TaskStatus::Init
        },
        signature: None,
        signers: Vec::new(),
        error_code: None,
        error_message: None,
        derivation_path: ask.derivation_path,
        created_at: now,
    };
    let extras = dkms_store::SignExtras {
        requester: principal.label(),
        tx: tx_json,
        signed_tx: None,
        tx_hash: None,
        approval: approval.clone(),
        quota_claims: serde_json::to_string(&claims).map_err(ApiError::internal)?,
    };
    if let Err(e) = state.store.insert_sign_with(&row, &extras).await {
        limits::refund_claims_list(state, &claims).await;
        return Err(e.into());
    }
    principal.note("instanceId", &instance_id);
    principal.note("digest", ask.digest.to_hex());
    match (permit, approval) {
        (Some(permit), _) => {
            tracing::info!(instance_id = %instance_id, key_id = %key.key_id, principal = %principal.id, "signing requested");
            orchestrator::spawn_sign(state.clone(), instance_id.clone(), permit);
        }
        (None, Some(rule)) => {
            principal.note("awaitingApprovals", rule.required.to_string());
            tracing::info!(instance_id = %instance_id, key_id = %key.key_id, required = rule.required, policy = %rule.policy, "signing waits for approvals");
        }
        (None, None) => {}
    }
    Ok(instance_id)
}

/// The strictest approval obligation of the decision, if any.
fn approval_rule(
    decision: &Decision,
    now: i64,
    state: &AppState,
) -> Option<dkms_store::ApprovalRule> {
    let ttl = i64::try_from(state.config.approval_ttl.as_millis()).unwrap_or(i64::MAX);
    decision
        .obligations
        .iter()
        .filter_map(|o| match &o.obligation {
            Obligation::RequireApprovals { count, group } => Some((*count, group, &o.policy)),
            _ => None,
        })
        .max_by_key(|(count, _, _)| *count)
        .map(|(count, group, policy)| dkms_store::ApprovalRule {
            required: count,
            group: group.clone(),
            policy: policy.clone(),
            expires_at: now.saturating_add(ttl),
        })
}

/// `POST /api/mappic/dkms/sign/tx`: signs an EIP-1559 or legacy (EIP-155) transaction.
pub(super) async fn sign_tx(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<SignTxRequest>,
) -> Response {
    idempotent(&state, &principal, &headers, "signTx", &req, || async {
        let transaction: dkms_eth::TxRequest = serde_json::from_value(req.transaction.clone())
            .map_err(|e| ApiError::invalid(format!("transaction: {e}")))?;
        let unsigned = dkms_eth::UnsignedTx::new(req.chain_id, &transaction)
            .map_err(|e| ApiError::invalid(format!("transaction: {e}")))?;
        let summary = unsigned.summary();
        let details = TxDetails {
            chain_id: summary.chain_id,
            to: summary.to,
            value_wei: summary.value_wei,
            selector: summary.selector,
            gas_limit: summary.gas_limit,
        };
        principal.note("chainId", req.chain_id.to_string());
        principal.note(
            "to",
            summary
                .to
                .map(|a| format!("0x{}", hex::encode(a)))
                .unwrap_or_default(),
        );
        principal.note("valueWei", summary.value_wei.to_string());
        let instance_id = submit_sign(
            &state,
            &principal,
            SignAsk {
                key_id: parse_id(Some(req.key_id.as_str()), "keyId")?.to_string(),
                digest: Digest32(unsigned.signing_hash()),
                derivation_path: canonical_path(req.derivation_path.as_deref())?,
                tx: Some((
                    orchestrator::StoredTx {
                        chain_id: req.chain_id,
                        transaction,
                    },
                    details,
                )),
            },
        )
        .await?;
        to_value(SignRequestResponse { instance_id })
    })
    .await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ApprovalListQuery {
    limit: Option<u32>,
}

/// `GET /api/mappic/dkms/approval/list`: signings waiting for approvals, oldest first.
pub(super) async fn list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ApprovalListQuery>,
) -> ApiResult<Json<Envelope<Vec<ApprovalInfo>>>> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid("limit must be 1 to 500"));
    }
    let mut out = Vec::new();
    for (row, extras) in state.store.list_pending_approvals(limit).await? {
        out.push(approval_info(&state, row, extras).await?);
    }
    Ok(ok(out))
}

async fn approval_info(
    state: &AppState,
    row: dkms_store::SignRow,
    extras: dkms_store::SignExtras,
) -> ApiResult<ApprovalInfo> {
    let votes = state
        .store
        .list_approvals(&row.instance_id)
        .await?
        .into_iter()
        .map(|v| ApprovalVote {
            approver: v.approver,
            approve: v.approve,
            comment: v.comment,
            created_at: rfc3339(v.created_at),
        })
        .collect();
    let stored: Option<orchestrator::StoredTx> = extras
        .tx
        .as_deref()
        .and_then(|t| serde_json::from_str(t).ok());
    let rule = extras.approval.unwrap_or(dkms_store::ApprovalRule {
        required: 0,
        group: None,
        policy: String::new(),
        expires_at: 0,
    });
    Ok(ApprovalInfo {
        instance_id: row.instance_id,
        key_id: row.key_id,
        status: row.status.to_string(),
        requester: extras.requester,
        digest_hex: row.digest,
        chain_id: stored.as_ref().map(|s| s.chain_id),
        transaction: stored.and_then(|s| serde_json::to_value(s.transaction).ok()),
        required: rule.required,
        approver_group: rule.group,
        policy: rule.policy,
        expires_at: rfc3339(rule.expires_at),
        votes,
    })
}

/// `POST /api/mappic/dkms/approval/approve`
pub(super) async fn approve(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiJson(req): ApiJson<ApprovalRequest>,
) -> ApiResult<Json<Envelope<ApprovalInfo>>> {
    vote(&state, &principal, &req, true).await
}

/// `POST /api/mappic/dkms/approval/reject`
pub(super) async fn reject(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiJson(req): ApiJson<ApprovalRequest>,
) -> ApiResult<Json<Envelope<ApprovalInfo>>> {
    vote(&state, &principal, &req, false).await
}

/// The user behind a `kind:id` principal label: the user, or an API key's owner.
async fn person_of(state: &AppState, label: &str) -> ApiResult<Option<String>> {
    if let Some(name) = label.strip_prefix("user:") {
        return Ok(state.store.get_user_by_name(name).await?.map(|u| u.id));
    }
    if let Some(id) = label.strip_prefix("apiKey:") {
        return Ok(state.store.get_api_key(id).await?.and_then(|k| k.owner));
    }
    Ok(None)
}

async fn vote(
    state: &AppState,
    principal: &Principal,
    req: &ApprovalRequest,
    approve: bool,
) -> ApiResult<Json<Envelope<ApprovalInfo>>> {
    let id = parse_id(Some(req.instance_id.as_str()), "instanceId")?.to_string();
    if req.comment.chars().count() > 1024 {
        return Err(ApiError::invalid("comment is longer than 1024 characters"));
    }
    let row = state.store.get_sign(&id).await?.ok_or_else(|| {
        ApiError::new(
            ErrorCode::TaskNotFound,
            format!("no signing task with id {id}"),
        )
    })?;
    let key = existing_key(state, &row.key_id).await?;
    principal
        .authorize_key(state, authz::key_attrs(state, &key).await?, |_| {})
        .await?;
    principal.note("instanceId", &id);
    let extras = state.store.get_sign_extras(&id).await?;
    let Some((extras, rule)) = extras.and_then(|e| e.approval.clone().map(|r| (e, r))) else {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("signing task {id} does not wait for approvals"),
        ));
    };
    let me = principal.label();
    let requester_person = person_of(state, &extras.requester).await?;
    let same_person = requester_person.is_some() && requester_person == principal.user_id;
    if extras.requester == me || same_person {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "a request cannot be approved or rejected by the one who made it",
        ));
    }
    if let Some(group) = &rule.group
        && !principal.groups.iter().any(|g| g == group)
    {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "policy {} asks for approvers from group {group}; {} is not in it",
                rule.policy,
                principal.display_name()
            ),
        ));
    }
    let now = state.clock.now_ms();
    let outcome = state
        .store
        .record_approval(&id, &me, approve, &req.comment, now)
        .await
        .map_err(|e| match e {
            dkms_store::StoreError::Conflict => ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "{} already voted on signing task {id}",
                    principal.display_name()
                ),
            ),
            dkms_store::StoreError::ApprovalRefused(r) => {
                ApiError::new(ErrorCode::Conflict, r.to_string())
            }
            other => other.into(),
        })?;
    principal.note(
        "votes",
        format!("{}/{}", outcome.approvals, outcome.required),
    );
    if outcome.released {
        tracing::info!(instance_id = %id, "approvals complete; signing starts");
        let state2 = state.clone();
        let id2 = id.clone();
        tokio::spawn(async move {
            // Released tasks wait for a free slot rather than fail on a busy gateway.
            if let Ok(permit) = state2.open_tasks.clone().acquire_owned().await {
                orchestrator::spawn_sign(state2, id2, permit);
            }
        });
    }
    if outcome.rejected {
        tracing::info!(instance_id = %id, "signing rejected by an approver");
        limits::refund_claims(state, &id).await;
        state.waiters.wake(&id);
    }
    let row = state.store.get_sign(&id).await?.ok_or_else(|| {
        ApiError::new(
            ErrorCode::TaskNotFound,
            format!("no signing task with id {id}"),
        )
    })?;
    let extras = state.store.get_sign_extras(&id).await?.unwrap_or(extras);
    Ok(ok(approval_info(state, row, extras).await?))
}
