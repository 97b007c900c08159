//! Policy documents: named, versioned texts of Cedar policies, each validated against
//! the schema together with every other live document before it is stored; and the
//! dry run that answers "would this be allowed, and by which policy".

use super::{ApiJson, ApiQuery, existing_key, ok, rfc3339};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::{AppState, authz};
use axum::extract::State;
use axum::{Extension, Json};
use dkms_policy::{Action, Obligation, PolicyStore, SignDetails, TxDetails};
use dkms_proto::ErrorCode;
use dkms_proto::api::{
    DryRunRequest, DryRunResponse, Envelope, PolicyDeleteRequest, PolicyInfo, PolicyPutRequest,
};
use serde::Deserialize;

/// Largest policy document.
const MAX_POLICY_TEXT: usize = 32 * 1024;
/// Name of the read-only document of built-in role policies.
const BUILTIN: &str = "builtin";

fn check_name(name: &str) -> ApiResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c));
    if !ok {
        return Err(ApiError::invalid(
            "name must be 1 to 128 characters of [A-Za-z0-9_.:-]",
        ));
    }
    if name == BUILTIN {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            "the built-in policies cannot be changed; override them with forbid policies",
        ));
    }
    Ok(())
}

fn info(row: dkms_store::PolicyRow) -> PolicyInfo {
    let policy_ids = PolicyStore::validate(&row.text)
        .map(|ids| ids.into_iter().map(String::from).collect())
        .unwrap_or_default();
    PolicyInfo {
        name: row.name,
        version: row.version,
        text: row.text,
        description: row.description,
        policy_ids,
        created_by: row.created_by,
        created_at: rfc3339(row.created_at),
        deleted: row.deleted,
        builtin: false,
    }
}

fn builtin_info() -> PolicyInfo {
    PolicyInfo {
        name: BUILTIN.into(),
        version: 1,
        text: dkms_policy::DEFAULT_POLICIES.into(),
        description: "the built-in roles: admin, operator, signer, approver, auditor".into(),
        policy_ids: PolicyStore::custom_only(dkms_policy::DEFAULT_POLICIES)
            .map(|set| set.policy_ids().to_vec())
            .unwrap_or_default(),
        created_by: "dkms".into(),
        created_at: rfc3339(0),
        deleted: false,
        builtin: true,
    }
}

/// The live documents with `name` replaced by `text` (or removed, for `None`).
async fn set_with(state: &AppState, name: &str, text: Option<&str>) -> ApiResult<String> {
    let mut rows = state.store.current_policies().await?;
    rows.retain(|r| r.name != name);
    let mut joined = authz::joined(&rows);
    if let Some(t) = text {
        joined.push('\n');
        joined.push_str(t);
    }
    Ok(joined)
}

/// Validates `text` as document `name` among the others: syntax, ids unique across
/// every document and the built-ins, annotations, and the schema.
async fn validate(state: &AppState, name: &str, text: &str) -> ApiResult<()> {
    if text.len() > MAX_POLICY_TEXT {
        return Err(ApiError::invalid(format!(
            "text is longer than {MAX_POLICY_TEXT} bytes"
        )));
    }
    let ids = PolicyStore::validate(text).map_err(|e| ApiError::invalid(format!("text: {e}")))?;
    if ids.is_empty() {
        return Err(ApiError::invalid("text holds no policy"));
    }
    PolicyStore::validate(&set_with(state, name, Some(text)).await?)
        .map_err(|e| ApiError::invalid(format!("text conflicts with the stored policies: {e}")))?;
    Ok(())
}

fn version_conflict(name: &str, expected: Option<i64>) -> ApiError {
    let msg = match expected {
        None => format!(
            "policy {name} already exists; send expectedVersion with the version you are replacing"
        ),
        Some(v) => format!(
            "policy {name} is not at version {v} (it was changed or deleted meanwhile); read it again"
        ),
    };
    ApiError::new(ErrorCode::Conflict, msg)
}

/// `POST /api/mappic/policy/put`
pub(super) async fn put(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiJson(req): ApiJson<PolicyPutRequest>,
) -> ApiResult<Json<Envelope<PolicyInfo>>> {
    check_name(&req.name)?;
    if req.description.chars().count() > 1024 {
        return Err(ApiError::invalid(
            "description is longer than 1024 characters",
        ));
    }
    principal.note("policy", &req.name);
    // Validated against the set as of `seen`; stored only if no version was written
    // since, so two documents that clash with each other cannot both get in.
    let mut attempt = 0;
    let row = loop {
        let seen = state.store.policy_epoch().await?;
        validate(&state, &req.name, &req.text).await?;
        match state
            .store
            .put_policy(
                &req.name,
                req.expected_version,
                &req.text,
                &req.description,
                &principal.label(),
                seen,
                state.clock.now_ms(),
            )
            .await
        {
            Ok(row) => break row,
            Err(dkms_store::StoreError::Conflict) => {
                return Err(version_conflict(&req.name, req.expected_version));
            }
            Err(dkms_store::StoreError::PoliciesChanged) if attempt < 3 => attempt += 1,
            Err(dkms_store::StoreError::PoliciesChanged) => {
                return Err(ApiError::new(
                    ErrorCode::Conflict,
                    "the stored policies kept changing while this document was validated; send it again",
                ));
            }
            Err(other) => return Err(other.into()),
        }
    };
    state.policies.invalidate();
    principal.note("version", row.version.to_string());
    tracing::info!(policy = %row.name, version = row.version, "policy stored");
    Ok(ok(info(row)))
}

/// `POST /api/mappic/policy/delete`
pub(super) async fn delete(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiJson(req): ApiJson<PolicyDeleteRequest>,
) -> ApiResult<Json<Envelope<bool>>> {
    check_name(&req.name)?;
    principal.note("policy", &req.name);
    let deleted = state
        .store
        .delete_policy(
            &req.name,
            req.expected_version,
            &principal.label(),
            state.clock.now_ms(),
        )
        .await
        .map_err(|e| match e {
            dkms_store::StoreError::Conflict => version_conflict(&req.name, req.expected_version),
            other => other.into(),
        })?;
    if !deleted {
        return Err(ApiError::new(
            ErrorCode::PolicyNotFound,
            format!("no live policy named {}", req.name),
        ));
    }
    state.policies.invalidate();
    Ok(ok(true))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PolicyQuery {
    name: Option<String>,
    version: Option<i64>,
}

/// `GET /api/mappic/policy/get?name=&version=`
pub(super) async fn get(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<PolicyQuery>,
) -> ApiResult<Json<Envelope<PolicyInfo>>> {
    let name = q
        .name
        .ok_or_else(|| ApiError::invalid("name is required"))?;
    if name == BUILTIN {
        return Ok(ok(builtin_info()));
    }
    check_name(&name)?;
    let row = state
        .store
        .get_policy(&name, q.version)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::PolicyNotFound,
                match q.version {
                    Some(v) => format!("policy {name} has no version {v}"),
                    None => format!("no live policy named {name}"),
                },
            )
        })?;
    Ok(ok(info(row)))
}

/// `GET /api/mappic/policy/list`: the built-in document first, then every live one.
pub(super) async fn list(
    State(state): State<AppState>,
) -> ApiResult<Json<Envelope<Vec<PolicyInfo>>>> {
    let mut out = vec![builtin_info()];
    out.extend(state.store.current_policies().await?.into_iter().map(info));
    Ok(ok(out))
}

/// `GET /api/mappic/policy/history?name=`: every version, tombstones included.
pub(super) async fn history(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<PolicyQuery>,
) -> ApiResult<Json<Envelope<Vec<PolicyInfo>>>> {
    let name = q
        .name
        .ok_or_else(|| ApiError::invalid("name is required"))?;
    check_name(&name)?;
    let rows = state.store.policy_history(&name).await?;
    if rows.is_empty() {
        return Err(ApiError::new(
            ErrorCode::PolicyNotFound,
            format!("no policy named {name}"),
        ));
    }
    Ok(ok(rows.into_iter().map(info).collect()))
}

fn describe(o: &Obligation) -> String {
    match o {
        Obligation::RequireApprovals { count, group } => match group {
            Some(g) => format!("needs {count} approval(s) from group {g}"),
            None => format!("needs {count} approval(s)"),
        },
        Obligation::RateLimit { max, window, per } => {
            format!("at most {max} per {window}, counted per {}", per.as_str())
        }
        Obligation::SpendLimit {
            max_wei,
            window,
            per,
        } => format!(
            "at most {max_wei} wei per {window}, counted per {}",
            per.as_str()
        ),
    }
}

/// `POST /api/mappic/policy/dryRun`: evaluates a request without doing it, against the
/// stored policies or with a candidate document in place of the stored one.
pub(super) async fn dry_run(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    ApiJson(req): ApiJson<DryRunRequest>,
) -> ApiResult<Json<Envelope<DryRunResponse>>> {
    let action: Action = req
        .action
        .parse()
        .map_err(|e: dkms_policy::UnknownAction| ApiError::invalid(format!("action: {e}")))?;
    let principal = dry_run_principal(&state, &req).await?;
    let resource = match (&req.key_id, action.resource_kind()) {
        (Some(id), dkms_policy::ResourceKind::Key) => {
            let key = existing_key(&state, id).await?;
            Some(authz::key_attrs(&state, &key).await?)
        }
        (None, dkms_policy::ResourceKind::Key) => {
            return Err(ApiError::invalid(format!(
                "keyId is required for action {action}"
            )));
        }
        (Some(_), dkms_policy::ResourceKind::Service) => {
            return Err(ApiError::invalid(format!(
                "action {action} is on the service, not a key; leave keyId out"
            )));
        }
        (None, dkms_policy::ResourceKind::Service) => None,
    };
    let mut context =
        dkms_policy::RequestContext::new(state.clock.now_ms().div_euclid(1000), caller.client_ip);
    if matches!(action, Action::Sign | Action::SignTx) {
        let mut digest = match &req.digest_hex {
            Some(h) => h
                .parse::<dkms_proto::Digest32>()
                .map_err(|e| ApiError::invalid(e.0))?
                .0
                .to_vec(),
            None => vec![0; 32],
        };
        let mut tx = None;
        if action == Action::SignTx {
            let (chain_id, raw) = req
                .chain_id
                .zip(req.transaction.clone())
                .ok_or_else(|| ApiError::invalid("signTx needs chainId and transaction"))?;
            let t: dkms_eth::TxRequest = serde_json::from_value(raw)
                .map_err(|e| ApiError::invalid(format!("transaction: {e}")))?;
            let unsigned = dkms_eth::UnsignedTx::new(chain_id, &t)
                .map_err(|e| ApiError::invalid(format!("transaction: {e}")))?;
            let s = unsigned.summary();
            digest = unsigned.signing_hash().to_vec();
            tx = Some(TxDetails {
                chain_id: s.chain_id,
                to: s.to,
                value_wei: s.value_wei,
                selector: s.selector,
                gas_limit: s.gas_limit,
            });
        }
        context.sign = Some(SignDetails {
            digest,
            derivation_path: super::approvals::canonical_path(req.derivation_path.as_deref())?
                .unwrap_or_default(),
        });
        context.tx = tx;
    }
    let set = match &req.candidate {
        None => state.policies.current(&state.store).await?,
        Some(c) => {
            check_name(&c.name)?;
            validate(&state, &c.name, &c.text).await?;
            let text = set_with(&state, &c.name, Some(&c.text)).await?;
            std::sync::Arc::new(
                PolicyStore::new(&text)
                    .map_err(|e| ApiError::invalid(format!("candidate: {e}")))?,
            )
        }
    };
    let decision = set.evaluate(&dkms_policy::Request {
        principal,
        action,
        resource,
        context,
    });
    Ok(ok(DryRunResponse {
        allowed: decision.allowed,
        determining_policies: decision.determining_policies,
        obligations: decision
            .obligations
            .iter()
            .map(|o| format!("{}: {}", o.policy, describe(&o.obligation)))
            .collect(),
        errors: decision.errors,
    }))
}

/// The principal a dry run asks about: an existing one by label, or roles and groups.
async fn dry_run_principal(
    state: &AppState,
    req: &DryRunRequest,
) -> ApiResult<dkms_policy::Principal> {
    let not_found = |what: String| ApiError::new(ErrorCode::PrincipalNotFound, what);
    match (&req.principal, &req.roles) {
        (Some(label), None) => {
            if let Some(name) = label.strip_prefix("user:") {
                let u = state
                    .store
                    .get_user_by_name(name)
                    .await?
                    .ok_or_else(|| not_found(format!("no user named {name}")))?;
                Ok(dkms_policy::Principal {
                    kind: dkms_policy::PrincipalKind::User,
                    id: u.username,
                    roles: u.roles,
                    groups: u.groups,
                })
            } else if let Some(id) = label.strip_prefix("apiKey:") {
                let k = state
                    .store
                    .get_api_key(id)
                    .await?
                    .ok_or_else(|| not_found(format!("no API key with id {id}")))?;
                Ok(dkms_policy::Principal {
                    kind: dkms_policy::PrincipalKind::ApiKey,
                    id: k.id,
                    roles: k.roles,
                    groups: k.groups,
                })
            } else {
                Err(ApiError::invalid(
                    "principal must be user:<username> or apiKey:<id>",
                ))
            }
        }
        (None, Some(roles)) => Ok(dkms_policy::Principal {
            kind: dkms_policy::PrincipalKind::User,
            id: "dry-run".into(),
            roles: roles.clone(),
            groups: req.groups.clone().unwrap_or_default(),
        }),
        _ => Err(ApiError::invalid(
            "give either principal (user:<name> or apiKey:<id>) or roles (and groups)",
        )),
    }
}
