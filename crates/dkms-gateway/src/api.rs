//! REST handlers of API.md. Each handler parses its input into domain types first and
//! answers anything malformed with a 400 in the envelope before touching state.

use crate::auth::{self, Principal};
use crate::authz::{self, Access};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiQuery, SecretJson};
use crate::{AppState, MAX_BODY_BYTES, orchestrator, relay};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::handler::Handler;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use axum::{Extension, Json, Router};
use dkms_proto::api::TaskInfo;
use dkms_proto::api::{
    CreatePodRequest, DerivedKey, Envelope, Health, JoinTokenResponse, KeyGenRequest,
    KeyGenResponse, KeyIdRequest, KeyImportRequest, KeyImportResponse, KeyImportSharesRequest,
    KeyInfo, KeyList, KeyUpdateRequest, PodInfo, RecoverKeyRequest, ScheduleDeletionRequest,
    SignInfo, SignRequest, SignRequestResponse,
};
use dkms_proto::{Digest32, ErrorCode, KeyId, KeyType, NodeTag, TaskStatus};
use serde::Deserialize;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::time::Duration;
use tower_http::catch_panic::CatchPanicLayer;
use tracing::Instrument;

mod approvals;
mod audit;
mod backup;
mod groups;
mod identity;
mod policy;

/// Most parties a key may have (DKG cost grows with n²).
pub const MAX_PARTIES: usize = 16;
/// Longest long poll on `key/get` and `sign/get`.
pub const MAX_WAIT_MS: u64 = 30_000;
/// How long an `Idempotency-Key` is remembered.
const IDEMPOTENCY_WINDOW_MS: i64 = 24 * 3600 * 1000;

/// The HTTP methods the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Get,
    Post,
}

/// One endpoint: method, path, who may call it, and its handler.
struct Route {
    /// Also encoded in `handler`; kept for the OpenAPI test.
    #[cfg_attr(not(test), allow(dead_code))]
    verb: Verb,
    path: &'static str,
    access: Access,
    handler: MethodRouter<AppState>,
}

fn route<H, T>(verb: Verb, path: &'static str, access: Access, handler: H) -> Route
where
    H: Handler<T, AppState>,
    T: 'static,
{
    let filter = match verb {
        Verb::Get => MethodFilter::GET,
        Verb::Post => MethodFilter::POST,
    };
    Route {
        verb,
        path,
        access,
        handler: on(filter, handler),
    }
}

/// Sealed shares of a large key are a few hundred KB each.
pub const MAX_SHARES_BODY_BYTES: usize = 32 * 1024 * 1024;

fn with_body_limit(mut r: Route, limit: usize) -> Route {
    r.handler = r.handler.layer(DefaultBodyLimit::max(limit));
    r
}

/// Every endpoint of the gateway, in one place: the router is built from this table, and
/// a test checks that `openapi.json` documents exactly these.
fn routes() -> Vec<Route> {
    use Access::{Authenticated, Key, Public, Service};
    use Verb::{Get, Post};
    use dkms_policy::Action as A;
    vec![
        route(Get, "/api/health", Public, health),
        route(Get, "/api/openapi.json", Public, openapi),
        route(Get, "/api/node/link", Public, relay::node_link),
        route(Post, "/api/mappic/auth/login", Public, identity::login),
        route(
            Post,
            "/api/mappic/auth/logout",
            Authenticated,
            identity::logout,
        ),
        route(
            Get,
            "/api/mappic/auth/whoami",
            Authenticated,
            identity::whoami,
        ),
        route(
            Post,
            "/api/mappic/user/create",
            Service(A::ManageUsers),
            identity::user_create,
        ),
        route(
            Post,
            "/api/mappic/user/update",
            Service(A::ManageUsers),
            identity::user_update,
        ),
        route(
            Post,
            "/api/mappic/user/delete",
            Service(A::ManageUsers),
            identity::user_delete,
        ),
        route(
            Get,
            "/api/mappic/user/list",
            Service(A::ManageUsers),
            identity::user_list,
        ),
        route(
            Post,
            "/api/mappic/apikey/create",
            Service(A::ManageUsers),
            identity::apikey_create,
        ),
        route(
            Get,
            "/api/mappic/apikey/list",
            Service(A::ManageUsers),
            identity::apikey_list,
        ),
        route(
            Post,
            "/api/mappic/apikey/revoke",
            Service(A::ManageUsers),
            identity::apikey_revoke,
        ),
        route(
            Post,
            "/api/mappic/policy/put",
            Service(A::ManagePolicies),
            policy::put,
        ),
        route(
            Post,
            "/api/mappic/policy/delete",
            Service(A::ManagePolicies),
            policy::delete,
        ),
        route(
            Post,
            "/api/mappic/policy/dryRun",
            Service(A::ManagePolicies),
            policy::dry_run,
        ),
        route(
            Get,
            "/api/mappic/policy/get",
            Service(A::ReadAudit),
            policy::get,
        ),
        route(
            Get,
            "/api/mappic/policy/list",
            Service(A::ReadAudit),
            policy::list,
        ),
        route(
            Get,
            "/api/mappic/policy/history",
            Service(A::ReadAudit),
            policy::history,
        ),
        route(
            Get,
            "/api/mappic/audit/query",
            Service(A::ReadAudit),
            audit::query,
        ),
        route(
            Get,
            "/api/mappic/audit/export",
            Service(A::ReadAudit),
            audit::export,
        ),
        route(
            Get,
            "/api/mappic/audit/head",
            Service(A::ReadAudit),
            audit::head,
        ),
        route(
            Post,
            "/api/mappic/pod/createPod",
            Service(A::ManageNodes),
            create_pod,
        ),
        route(
            Post,
            "/api/mappic/pod/joinToken",
            Service(A::ManageNodes),
            join_token,
        ),
        route(Get, "/api/mappic/pod/list", Service(A::List), list_pods),
        route(
            Post,
            "/api/mappic/pod/resetPod",
            Service(A::ManageNodes),
            reset_pod,
        ),
        route(
            Post,
            "/api/mappic/pod/setRegion",
            Service(A::ManageNodes),
            groups::set_region,
        ),
        route(
            Post,
            "/api/mappic/group/create",
            Service(A::ManageGroups),
            groups::group_create,
        ),
        route(
            Get,
            "/api/mappic/group/get",
            Service(A::List),
            groups::group_get,
        ),
        route(
            Get,
            "/api/mappic/group/list",
            Service(A::List),
            groups::group_list,
        ),
        route(
            Post,
            "/api/mappic/group/update",
            Service(A::ManageGroups),
            groups::group_update,
        ),
        route(
            Post,
            "/api/mappic/group/delete",
            Service(A::ManageGroups),
            groups::group_delete,
        ),
        route(Post, "/api/mappic/dkms/key/gen", Key(A::Generate), key_gen),
        route(Get, "/api/mappic/dkms/key/get", Key(A::Get), key_get),
        route(
            Post,
            "/api/mappic/dkms/key/import",
            Key(A::Import),
            key_import,
        ),
        route(Get, "/api/mappic/dkms/key/list", Service(A::List), key_list),
        route(
            Post,
            "/api/mappic/dkms/key/update",
            Key(A::Update),
            key_update,
        ),
        route(
            Post,
            "/api/mappic/dkms/key/disable",
            Key(A::Update),
            key_disable,
        ),
        route(
            Post,
            "/api/mappic/dkms/key/enable",
            Key(A::Update),
            key_enable,
        ),
        route(
            Post,
            "/api/mappic/dkms/key/scheduleDeletion",
            Key(A::Delete),
            key_schedule_deletion,
        ),
        route(
            Post,
            "/api/mappic/dkms/key/cancelDeletion",
            Key(A::Delete),
            key_cancel_deletion,
        ),
        route(
            Post,
            "/api/mappic/dkms/key/refresh",
            Key(A::Refresh),
            key_refresh,
        ),
        route(
            Post,
            "/api/mappic/dkms/key/recover",
            Key(A::Recover),
            key_recover,
        ),
        route(Get, "/api/mappic/dkms/key/derive", Key(A::Get), key_derive),
        route(
            Post,
            "/api/mappic/dkms/key/export",
            Key(A::Export),
            backup::key_export,
        ),
        route(
            Get,
            "/api/mappic/dkms/key/export/get",
            Key(A::Export),
            backup::key_export_get,
        ),
        route(
            Post,
            "/api/mappic/dkms/backupGroup/create",
            Service(A::ManageGroups),
            backup::group_create,
        ),
        route(
            Get,
            "/api/mappic/dkms/backupGroup/get",
            Service(A::List),
            backup::group_get,
        ),
        route(
            Get,
            "/api/mappic/dkms/backupGroup/list",
            Service(A::List),
            backup::group_list,
        ),
        route(
            Post,
            "/api/mappic/dkms/backupGroup/delete",
            Service(A::ManageGroups),
            backup::group_delete,
        ),
        route(
            Post,
            "/api/mappic/dkms/key/backup",
            Key(A::Backup),
            backup::key_backup,
        ),
        route(
            Get,
            "/api/mappic/dkms/key/backup/get",
            Key(A::Backup),
            backup::key_backup_get,
        ),
        with_body_limit(
            route(
                Post,
                "/api/mappic/dkms/key/restore",
                Key(A::Recover),
                backup::key_restore,
            ),
            MAX_SHARES_BODY_BYTES,
        ),
        route(Get, "/api/mappic/dkms/task/get", Key(A::Get), task_get),
        with_body_limit(
            route(
                Post,
                "/api/mappic/dkms/key/importShares",
                Key(A::Import),
                key_import_shares,
            ),
            MAX_SHARES_BODY_BYTES,
        ),
        route(Post, "/api/mappic/dkms/sign/req", Key(A::Sign), sign_req),
        with_body_limit(
            route(
                Post,
                "/api/mappic/dkms/sign/tx",
                Key(A::SignTx),
                approvals::sign_tx,
            ),
            MAX_TX_BODY_BYTES,
        ),
        route(Get, "/api/mappic/dkms/sign/get", Key(A::Get), sign_get),
        route(
            Get,
            "/api/mappic/dkms/approval/list",
            Service(A::List),
            approvals::list,
        ),
        route(
            Post,
            "/api/mappic/dkms/approval/approve",
            Key(A::Approve),
            approvals::approve,
        ),
        route(
            Post,
            "/api/mappic/dkms/approval/reject",
            Key(A::Approve),
            approvals::reject,
        ),
    ]
}

/// A transaction's call data may be up to 128 KiB, sent as hex.
pub const MAX_TX_BODY_BYTES: usize = 512 * 1024;

pub fn router(state: AppState) -> Router {
    let mut router = Router::new();
    for r in routes() {
        let handler = match r.access {
            Access::Public => r.handler,
            access => r.handler.route_layer(middleware::from_fn_with_state(
                auth::RouteGuard {
                    state: state.clone(),
                    access,
                    action: auth::action_name(r.path),
                },
                auth::guard,
            )),
        };
        router = router.route(r.path, handler);
    }
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // The panic catcher sits inside the request-id layer so a 500 still carries the id.
        .layer(CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                ApiError::internal("handler panicked").into_response()
            },
        ))
        .layer(middleware::from_fn(request_id))
        .with_state(state)
}

/// Gives every request an id, in a tracing span and the `x-request-id` header.
async fn request_id(mut req: Request, next: Next) -> Response {
    let id = uuid::Uuid::new_v4().to_string();
    req.extensions_mut().insert(auth::RequestId(id.clone()));
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path());
    let mut resp = next.run(req).instrument(span).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "this endpoint does not accept that HTTP method",
    )
}

fn ok<T: Serialize>(data: T) -> Json<Envelope<T>> {
    Json(Envelope::ok(data))
}

pub fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

async fn health(State(state): State<AppState>) -> Json<Envelope<Health>> {
    ok(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        connected_nodes: state
            .hub
            .connected()
            .iter()
            .map(|t| t.to_string())
            .collect(),
    })
}

/// The OpenAPI document served at `/api/openapi.json`.
const OPENAPI_JSON: &str = include_str!("../openapi.json");

async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI_JSON,
    )
        .into_response()
}

// ---- idempotency ----

/// Runs `work` at most once per `Idempotency-Key` (per principal) within 24 h; repeats
/// get the first answer. Without the header, `work` simply runs.
async fn idempotent<F, Fut>(
    state: &AppState,
    principal: &Principal,
    headers: &HeaderMap,
    route: &str,
    request: &impl Serialize,
    work: F,
) -> Response
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ApiResult<serde_json::Value>>,
{
    let Some(raw) = headers.get("idempotency-key") else {
        return match work().await {
            Ok(v) => ok(v).into_response(),
            Err(e) => e.into_response(),
        };
    };
    let key = match raw.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= 255 => k.to_owned(),
        _ => {
            return ApiError::invalid("Idempotency-Key must be 1 to 255 visible ASCII characters")
                .into_response();
        }
    };
    let mut h = Sha256::new();
    h.update(route.as_bytes());
    h.update(serde_json::to_vec(request).unwrap_or_default());
    let request_hash = hex::encode(h.finalize());
    let now = state.clock.now_ms();
    let reservation = state
        .store
        .reserve_idempotent(
            &principal.id,
            &key,
            route,
            &request_hash,
            now,
            now - IDEMPOTENCY_WINDOW_MS,
        )
        .await;
    match reservation {
        Err(e) => return ApiError::from(e).into_response(),
        Ok(dkms_store::Reservation::Existing(prev)) => {
            if prev.route != route || prev.request_hash != request_hash {
                return ApiError::new(
                    ErrorCode::Conflict,
                    "this Idempotency-Key was already used for a different request",
                )
                .into_response();
            }
            if prev.status_code == 0 {
                return ApiError::new(
                    ErrorCode::Conflict,
                    "a request with this Idempotency-Key is still being processed; retry shortly",
                )
                .into_response();
            }
            // The first request was decided and audited; this only repeats its answer.
            principal.audit.with(|d| {
                d.decision = Some((true, Vec::new()));
                d.details.insert("idempotentReplay".into(), key.clone());
            });
            let status = StatusCode::from_u16(prev.status_code).unwrap_or(StatusCode::OK);
            return (
                status,
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                prev.response,
            )
                .into_response();
        }
        Ok(dkms_store::Reservation::Reserved) => {}
    }
    let (status, body) = match work().await {
        Ok(v) => (StatusCode::OK, serde_json::to_string(&Envelope::ok(v))),
        Err(e) if e.status().is_server_error() => {
            let _ = state.store.release_idempotent(&principal.id, &key).await;
            return e.into_response();
        }
        Err(e) => (
            e.status(),
            serde_json::to_string(&Envelope::<()>::err(e.code, e.message)),
        ),
    };
    let body = body.unwrap_or_default();
    if let Err(e) = state
        .store
        .complete_idempotent(&principal.id, &key, status.as_u16(), &body)
        .await
    {
        tracing::warn!(error = %e, "could not record an idempotent answer");
    }
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

fn to_value<T: Serialize>(v: T) -> ApiResult<serde_json::Value> {
    serde_json::to_value(v).map_err(ApiError::internal)
}

fn admit_task(state: &AppState) -> ApiResult<tokio::sync::OwnedSemaphorePermit> {
    state
        .open_tasks
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError {
            code: ErrorCode::Overloaded,
            message: "the gateway has too many unfinished tasks; retry later".into(),
            retry_after: Some(1),
        })
}

// ---- pods ----

async fn create_pod(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<CreatePodRequest>,
) -> Response {
    idempotent(&state, &principal, &headers, "createPod", &req, || async {
        let tag: NodeTag = req
            .node_tag
            .parse()
            .map_err(|e: dkms_proto::ParseError| ApiError::invalid(format!("nodeTag: {e}")))?;
        let token = auth::new_token()?;
        state
            .store
            .insert_node(
                tag.as_str(),
                &auth::hash_token(&token),
                state.clock.now_ms(),
            )
            .await
            .map_err(|e| match e {
                dkms_store::StoreError::Conflict => ApiError::new(
                    ErrorCode::Conflict,
                    format!("a node with tag {tag} already exists"),
                ),
                other => other.into(),
            })?;
        if let Some(l) = &state.launcher {
            l.launch(tag.as_str(), &token).map_err(|e| {
                ApiError::internal(format!("starting the local node {tag} failed: {e}"))
            })?;
        }
        tracing::info!(node = %tag, "pod created");
        to_value(tag.as_str())
    })
    .await
}

/// 2 ≤ `threshold` ≤ `n`, where `n` is the count named by `of`.
pub(crate) fn check_threshold(threshold: i64, n: usize, of: &str) -> ApiResult<()> {
    if threshold < 2 {
        return Err(ApiError::invalid(format!(
            "threshold must be at least 2 (got {threshold}); 1-of-n is not threshold custody"
        )));
    }
    if threshold > n as i64 {
        return Err(ApiError::invalid(format!(
            "threshold {threshold} is greater than {of} {n}"
        )));
    }
    Ok(())
}

async fn join_token(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CreatePodRequest>,
) -> ApiResult<Json<Envelope<JoinTokenResponse>>> {
    issue_join_token(&state, &req, false).await
}

/// Unpins a node's identity and issues a new join token: how a node whose data directory
/// is gone (new identity keys) is let back in under its tag, before `key/recover` rebuilds
/// its shares. The old identity is disconnected and can no longer connect.
async fn reset_pod(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CreatePodRequest>,
) -> ApiResult<Json<Envelope<JoinTokenResponse>>> {
    issue_join_token(&state, &req, true).await
}

/// A fresh one-time join token for a node that has not joined (`reset` false) or, with
/// `reset`, for a joined node whose pinned identity is dropped.
async fn issue_join_token(
    state: &AppState,
    req: &CreatePodRequest,
    reset: bool,
) -> ApiResult<Json<Envelope<JoinTokenResponse>>> {
    let tag: NodeTag = req
        .node_tag
        .parse()
        .map_err(|e: dkms_proto::ParseError| ApiError::invalid(format!("nodeTag: {e}")))?;
    let token = auth::new_token()?;
    let (hash, now) = (auth::hash_token(&token), state.clock.now_ms());
    let done = if reset {
        state.store.reset_node(tag.as_str(), &hash, now).await?
    } else {
        state.store.set_join_token(tag.as_str(), &hash, now).await?
    };
    if !done {
        let why = if reset {
            format!("node {tag} has not joined yet; use joinToken for a new token")
        } else {
            format!("node {tag} has already joined; its identity is pinned")
        };
        return Err(match state.store.get_node(tag.as_str()).await? {
            None => ApiError::new(ErrorCode::NodeNotFound, format!("unknown node tag {tag}")),
            Some(_) => ApiError::new(ErrorCode::Conflict, why),
        });
    }
    if reset {
        state.hub.evict(&tag);
        tracing::warn!(node = %tag, "node identity unpinned; it may join again with a new join token");
    }
    Ok(ok(JoinTokenResponse {
        node_tag: tag.to_string(),
        join_token: token.to_string(),
    }))
}

async fn list_pods(State(state): State<AppState>) -> ApiResult<Json<Envelope<Vec<PodInfo>>>> {
    let connected: HashSet<String> = state
        .hub
        .connected()
        .into_iter()
        .map(|t| t.to_string())
        .collect();
    let nodes = state.store.list_nodes().await?;
    Ok(ok(nodes
        .into_iter()
        .map(|n| {
            let up = connected.contains(&n.tag);
            pod_info(n, up)
        })
        .collect()))
}

fn pod_info(n: dkms_store::NodeRow, connected: bool) -> PodInfo {
    PodInfo {
        connected,
        node_tag: n.tag,
        status: n.status,
        signing_key: n.signing_key,
        encryption_key: n.encryption_key,
        region: n.region,
        created_at: rfc3339(n.created_at),
    }
}

// ---- keys ----

/// The fields of a key-creating request that [`plan_key`] checks.
struct KeyShape<'a> {
    key_params: &'a dkms_proto::api::KeyParams,
    service_participants: &'a [String],
    threshold: i64,
    total_shares: i64,
}

/// A validated key-generation request.
struct KeygenPlan {
    key_type: KeyType,
    threshold: u8,
    participants: Vec<NodeTag>,
    /// Whether the key may be exported whole; fixed at creation.
    exportable: bool,
}

/// Validates a key/gen request: its own participant list, or a node group's members
/// (then the group's name is returned too, for the key to remember).
async fn plan_keygen(
    state: &AppState,
    req: &KeyGenRequest,
) -> ApiResult<(KeygenPlan, Option<dkms_proto::GroupName>)> {
    if let Some(group) = &req.node_group {
        let (plan, name) = groups::plan_group_keygen(state, req, group).await?;
        return Ok((plan, Some(name)));
    }
    let threshold = req.threshold.ok_or_else(|| {
        ApiError::invalid("threshold is required (or name a nodeGroup to use its threshold)")
    })?;
    let total_shares = req.total_shares.ok_or_else(|| {
        ApiError::invalid("totalShares is required (or name a nodeGroup to use its members)")
    })?;
    let plan = plan_key(
        &req.key_params,
        &req.service_participants,
        threshold,
        total_shares,
    )?;
    Ok((plan, None))
}

/// Validates the parameters every key-creating request shares.
fn plan_key(
    key_params: &dkms_proto::api::KeyParams,
    service_participants: &[String],
    threshold: i64,
    total_shares: i64,
) -> ApiResult<KeygenPlan> {
    let req = KeyShape {
        key_params,
        service_participants,
        threshold,
        total_shares,
    };
    let key_type: KeyType = req
        .key_params
        .key_type
        .parse()
        .map_err(|e: dkms_proto::ParseError| ApiError::invalid(format!("keyParams.type: {e}")))?;
    match (key_type, req.key_params.length) {
        (KeyType::EcdsaK1, None | Some(256) | Some(512)) | (KeyType::EcdsaR1, None | Some(256)) => {
        }
        (_, Some(l)) => {
            return Err(ApiError::invalid(format!(
                "keyParams.length {l} is not valid for {}; use {}, or omit it",
                key_type.as_str(),
                if key_type == KeyType::EcdsaK1 {
                    "256 or 512"
                } else {
                    "256"
                }
            )));
        }
    }
    let mut participants = Vec::with_capacity(req.service_participants.len());
    let mut seen = HashSet::new();
    for (i, raw) in req.service_participants.iter().enumerate() {
        let tag: NodeTag = raw.parse().map_err(|e: dkms_proto::ParseError| {
            ApiError::invalid(format!("serviceParticipants[{i}]: {e}"))
        })?;
        if !seen.insert(tag.clone()) {
            return Err(ApiError::invalid(format!(
                "serviceParticipants lists node {tag} more than once; each share needs its own node"
            )));
        }
        participants.push(tag);
    }
    let n = participants.len();
    if req.total_shares != n as i64 {
        return Err(ApiError::invalid(format!(
            "totalShares is {} but serviceParticipants names {n} nodes; they must be equal",
            req.total_shares
        )));
    }
    if n > MAX_PARTIES {
        return Err(ApiError::invalid(format!(
            "at most {MAX_PARTIES} participants are supported, got {n}"
        )));
    }
    check_threshold(req.threshold, n, "totalShares")?;
    Ok(KeygenPlan {
        key_type,
        threshold: u8::try_from(req.threshold)
            .map_err(|_| ApiError::invalid("threshold is out of range"))?,
        participants,
        exportable: false,
    })
}

async fn key_gen(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<KeyGenRequest>,
) -> Response {
    idempotent(&state, &principal, &headers, "keyGen", &req, || async {
        let (mut plan, group) = plan_keygen(&state, &req).await?;
        plan.exportable = req.exportable;
        let key_id = KeyId::new_random().to_string();
        authorize_new_key(&state, &principal, &key_id, &plan, group.as_ref()).await?;
        check_nodes(&state, &plan).await?;
        let permit = admit_task(&state)?;
        insert_key_row(
            &state,
            &principal,
            &key_id,
            &plan,
            dkms_store::ORIGIN_GENERATED,
            group.as_ref(),
        )
        .await?;
        tracing::info!(key_id = %key_id, principal = %principal.id, "key generation requested");
        orchestrator::spawn_keygen(state.clone(), key_id.clone(), permit);
        to_value(KeyGenResponse { key_id })
    })
    .await
}

/// Every participant must be registered and joined.
async fn check_nodes(state: &AppState, plan: &KeygenPlan) -> ApiResult<()> {
    for tag in &plan.participants {
        match state.store.get_node(tag.as_str()).await? {
            None => {
                return Err(ApiError::new(
                    ErrorCode::NodeNotFound,
                    format!("unknown node tag {tag}; register it with pod/createPod first"),
                ));
            }
            Some(n) if n.status != dkms_store::NODE_ACTIVE => {
                return Err(ApiError::new(
                    ErrorCode::NodeUnavailable,
                    format!("node {tag} is registered but has not joined yet"),
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Decides the route's action (generate or import) on the key about to be created.
async fn authorize_new_key(
    state: &AppState,
    principal: &Principal,
    key_id: &str,
    plan: &KeygenPlan,
    node_group: Option<&dkms_proto::GroupName>,
) -> ApiResult<()> {
    let attrs = dkms_policy::KeyAttrs {
        id: key_id.to_owned(),
        labels: Default::default(),
        group: node_group.map(|g| g.to_string()).unwrap_or_default(),
        key_type: plan.key_type.as_str().into(),
        exportable: plan.exportable,
        creator: principal.label(),
    };
    principal.authorize_key(state, attrs, |_| {}).await?;
    Ok(())
}

async fn insert_key_row(
    state: &AppState,
    principal: &Principal,
    key_id: &str,
    plan: &KeygenPlan,
    origin: &str,
    node_group: Option<&dkms_proto::GroupName>,
) -> ApiResult<()> {
    state
        .store
        .insert_key(&dkms_store::KeyRow {
            key_id: key_id.to_owned(),
            key_type: plan.key_type.as_str().into(),
            scheme: plan.key_type.scheme_name().into(),
            threshold: plan.threshold,
            total_shares: plan.participants.len() as u8,
            participants: plan.participants.iter().map(|t| t.to_string()).collect(),
            status: TaskStatus::Init,
            public_key: None,
            address: None,
            error_code: None,
            error_message: None,
            origin: origin.to_owned(),
            state: dkms_store::STATE_ENABLED.into(),
            description: String::new(),
            deletion_at: None,
            generation: 0,
            node_group: node_group.map(|g| g.to_string()),
            created_by: principal.label(),
            exportable: plan.exportable,
            created_at: state.clock.now_ms(),
        })
        .await
        .map_err(|e| match e {
            dkms_store::StoreError::Conflict => {
                ApiError::new(ErrorCode::Conflict, format!("key {key_id} already exists"))
            }
            dkms_store::StoreError::GroupNotFound(g) => ApiError::new(
                ErrorCode::GroupNotFound,
                format!("node group {g} was deleted while the key was being created"),
            ),
            other => other.into(),
        })
}

/// What an import's idempotency and logs may see: the parameters and the public key,
/// never the private key or its password.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ImportFingerprint<'a> {
    key_params: &'a dkms_proto::api::KeyParams,
    service_participants: &'a [String],
    threshold: i64,
    total_shares: i64,
    public_key_hex: String,
    exportable: bool,
}

/// `POST /api/mappic/dkms/key/import`: the compatible API's import. The PEM is parsed
/// here (a wrong password is a 400 before any node is contacted), split on the blocking
/// pool, sealed to each node, and zeroized.
async fn key_import(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    SecretJson(req): SecretJson<KeyImportRequest>,
) -> Response {
    let KeyImportRequest {
        key_params,
        service_participants,
        threshold,
        total_shares,
        private_key,
        password,
        exportable,
    } = req;
    let pem = zeroize::Zeroizing::new(private_key);
    let password = password.map(zeroize::Zeroizing::new);
    let plan = match plan_key(&key_params, &service_participants, threshold, total_shares) {
        Ok(p) => KeygenPlan { exportable, ..p },
        Err(e) => return e.into_response(),
    };
    let curve = dkms_mpc::Curve::of_key_type(plan.key_type);
    let parsed = tokio::task::spawn_blocking(move || {
        dkms_mpc::import::parse_private_key_pem(
            &pem,
            password.as_ref().map(|p| p.as_bytes()),
            curve,
        )
    })
    .await;
    let secret = match parsed {
        Ok(Ok(secret)) => secret,
        Ok(Err(e)) => return ApiError::invalid(format!("privateKey: {e}")).into_response(),
        Err(e) => return ApiError::internal(e).into_response(),
    };
    let fingerprint = ImportFingerprint {
        key_params: &key_params,
        service_participants: &service_participants,
        threshold,
        total_shares,
        public_key_hex: hex::encode(secret.public_key()),
        exportable,
    };
    let mut secret = Some(secret);
    idempotent(
        &state,
        &principal,
        &headers,
        "keyImport",
        &fingerprint,
        || async {
            let key_id = KeyId::new_random().to_string();
            authorize_new_key(&state, &principal, &key_id, &plan, None).await?;
            check_nodes(&state, &plan).await?;
            let permit = admit_task(&state)?;
            let secret = secret
                .take()
                .ok_or_else(|| ApiError::internal("import ran twice"))?;
            insert_key_row(
                &state,
                &principal,
                &key_id,
                &plan,
                dkms_store::ORIGIN_IMPORTED,
                None,
            )
            .await?;
            tracing::info!(key_id = %key_id, principal = %principal.id, "key import requested");
            orchestrator::spawn_import(
                state.clone(),
                key_id.clone(),
                permit,
                orchestrator::ImportSource::Plain(secret),
            );
            to_value(KeyImportResponse {
                instance_id: key_id.clone(),
                key_id,
            })
        },
    )
    .await
}

/// `POST /api/mappic/dkms/key/importShares`: client-side import. The client split the
/// key and sealed each share to its node; the gateway only relays ciphertext.
async fn key_import_shares(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<KeyImportSharesRequest>,
) -> Response {
    idempotent(&state, &principal, &headers, "keyImportShares", &req, || async {
        let plan = KeygenPlan {
            exportable: req.exportable,
            ..plan_key(
                &req.key_params,
                &req.service_participants,
                req.threshold,
                req.total_shares,
            )?
        };
        let key_id = parse_id(Some(req.key_id.as_str()), "keyId")?.to_string();
        let public_key: [u8; 33] = hex::decode(req.public_key_hex.trim_start_matches("0x"))
            .ok()
            .and_then(|b| b.try_into().ok())
            .filter(|pk: &[u8; 33]| {
                dkms_mpc::ecdsa::public_key_pem(dkms_mpc::Curve::of_key_type(plan.key_type), pk)
                    .is_ok()
            })
            .ok_or_else(|| {
                ApiError::invalid(format!(
                    "publicKeyHex must be a SEC1 compressed {} point (33 bytes hex)",
                    dkms_mpc::Curve::of_key_type(plan.key_type)
                ))
            })?;
        if req.shares.len() != plan.participants.len() {
            return Err(ApiError::invalid(format!(
                "shares has {} entries but serviceParticipants names {} nodes; send one sealed share per node",
                req.shares.len(),
                plan.participants.len()
            )));
        }
        let mut shares = Vec::with_capacity(req.shares.len());
        for (i, (tag, share)) in plan.participants.iter().zip(&req.shares).enumerate() {
            if share.node_tag != tag.as_str() {
                return Err(ApiError::invalid(format!(
                    "shares[{i}] is for {:?} but serviceParticipants[{i}] is {tag}; keep the same order",
                    share.node_tag
                )));
            }
            let sealed = hex::decode(&share.sealed).map_err(|_| {
                ApiError::invalid(format!("shares[{i}].sealed is not hex"))
            })?;
            shares.push((tag.clone(), sealed));
        }
        authorize_new_key(&state, &principal, &key_id, &plan, None).await?;
        check_nodes(&state, &plan).await?;
        let permit = admit_task(&state)?;
        insert_key_row(
            &state,
            &principal,
            &key_id,
            &plan,
            dkms_store::ORIGIN_IMPORTED,
            None,
        )
        .await?;
        tracing::info!(key_id = %key_id, principal = %principal.id, "client-side key import requested");
        orchestrator::spawn_import(
            state.clone(),
            key_id.clone(),
            permit,
            orchestrator::ImportSource::Sealed { public_key, shares },
        );
        to_value(KeyImportResponse {
            instance_id: key_id.clone(),
            key_id,
        })
    })
    .await
}

// ---- key lifecycle ----

/// Largest page of `key/list`.
pub const MAX_PAGE_SIZE: u32 = 100;
/// Limits on key metadata, so a row stays small on every backend.
const MAX_LABELS: usize = 32;
const MAX_DESCRIPTION: usize = 1024;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    status: Option<String>,
    state: Option<String>,
    /// `name=value`
    label: Option<String>,
    node_group: Option<String>,
    page_size: Option<u32>,
    page_token: Option<String>,
}

const STATES: [&str; 5] = [
    dkms_store::STATE_ENABLED,
    dkms_store::STATE_DISABLED,
    dkms_store::STATE_PENDING_DELETION,
    dkms_store::STATE_DELETING,
    dkms_store::STATE_DELETED,
];

async fn key_list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Envelope<KeyList>>> {
    let status = q
        .status
        .as_deref()
        .map(|s| {
            s.parse::<TaskStatus>()
                .map_err(|e: dkms_proto::ParseError| ApiError::invalid(format!("status: {e}")))
        })
        .transpose()?;
    if let Some(st) = &q.state
        && !STATES.contains(&st.as_str())
    {
        return Err(ApiError::invalid(format!(
            "state {st:?} is not one of {}",
            STATES.join(", ")
        )));
    }
    let label = q
        .label
        .as_deref()
        .map(|l| {
            l.split_once('=')
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
                .ok_or_else(|| ApiError::invalid("label must be name=value"))
        })
        .transpose()?;
    let page_size = q.page_size.unwrap_or(50);
    if page_size == 0 || page_size > MAX_PAGE_SIZE {
        return Err(ApiError::invalid(format!(
            "pageSize must be 1 to {MAX_PAGE_SIZE}"
        )));
    }
    let after = q
        .page_token
        .as_deref()
        .map(|t| {
            t.split_once('_')
                .and_then(|(at, id)| Some((at.parse::<i64>().ok()?, id.to_owned())))
                .filter(|(_, id)| uuid::Uuid::parse_str(id).is_ok())
                .ok_or_else(|| ApiError::invalid("pageToken is not one this gateway issued"))
        })
        .transpose()?;
    let node_group = q
        .node_group
        .as_deref()
        .map(|g| {
            g.parse::<dkms_proto::GroupName>()
                .map(|g| g.to_string())
                .map_err(|e: dkms_proto::ParseError| ApiError::invalid(format!("nodeGroup: {e}")))
        })
        .transpose()?;
    let filter = dkms_store::KeyFilter {
        status,
        state: q.state.clone(),
        label,
        node_group,
    };
    let rows = state.store.list_keys(&filter, after, page_size + 1).await?;
    let more = rows.len() > page_size as usize;
    let mut keys = Vec::with_capacity(rows.len().min(page_size as usize));
    let mut last = None;
    for row in rows.into_iter().take(page_size as usize) {
        last = Some(format!("{}_{}", row.created_at, row.key_id));
        keys.push(key_info(&state, row).await?);
    }
    Ok(ok(KeyList {
        keys,
        next_page_token: if more { last } else { None },
    }))
}

async fn existing_key(state: &AppState, raw: &str) -> ApiResult<dkms_store::KeyRow> {
    let key_id = parse_id(Some(raw), "keyId")?.to_string();
    state
        .store
        .get_key(&key_id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::KeyNotFound, format!("no key with id {key_id}")))
}

/// Loads a key and decides the route's action on it (with `context` for what is signed).
async fn authorized_key(
    state: &AppState,
    principal: &Principal,
    raw: &str,
    context: impl FnOnce(&mut dkms_policy::RequestContext),
) -> ApiResult<dkms_store::KeyRow> {
    let key = existing_key(state, raw).await?;
    principal
        .authorize_key(state, authz::key_attrs(state, &key).await?, context)
        .await?;
    Ok(key)
}

async fn key_update(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiJson(req): ApiJson<KeyUpdateRequest>,
) -> ApiResult<Json<Envelope<KeyInfo>>> {
    let key = authorized_key(&state, &principal, &req.key_id, |_| {}).await?;
    if let Some(labels) = &req.labels {
        if labels.len() > MAX_LABELS {
            return Err(ApiError::invalid(format!(
                "at most {MAX_LABELS} labels per key"
            )));
        }
        for (n, v) in labels {
            let name_ok = !n.is_empty()
                && n.len() <= 64
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
            if !name_ok {
                return Err(ApiError::invalid(format!(
                    "label name {n:?} must be 1 to 64 characters of [A-Za-z0-9_.-]"
                )));
            }
            if v.chars().count() > 256 {
                return Err(ApiError::invalid(format!(
                    "label {n} is longer than 256 characters"
                )));
            }
        }
    }
    if let Some(d) = &req.description
        && d.chars().count() > MAX_DESCRIPTION
    {
        return Err(ApiError::invalid(format!(
            "description is longer than {MAX_DESCRIPTION} characters"
        )));
    }
    if !state
        .store
        .update_key_metadata(
            &key.key_id,
            req.labels.as_ref(),
            req.description.as_deref(),
            state.clock.now_ms(),
        )
        .await?
    {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("key {} is deleted", key.key_id),
        ));
    }
    reload(&state, &key.key_id).await
}

async fn reload(state: &AppState, key_id: &str) -> ApiResult<Json<Envelope<KeyInfo>>> {
    let row =
        state.store.get_key(key_id).await?.ok_or_else(|| {
            ApiError::new(ErrorCode::KeyNotFound, format!("no key with id {key_id}"))
        })?;
    Ok(ok(key_info(state, row).await?))
}

/// Moves a key between lifecycle states, or says why it cannot.
async fn transition(
    state: &AppState,
    principal: &Principal,
    raw_id: &str,
    from: &[&str],
    to: &str,
    deletion_at: Option<i64>,
) -> ApiResult<Json<Envelope<KeyInfo>>> {
    let key = authorized_key(state, principal, raw_id, |_| {}).await?;
    if !state
        .store
        .set_key_state(&key.key_id, from, to, deletion_at, state.clock.now_ms())
        .await?
    {
        let now = state
            .store
            .get_key(&key.key_id)
            .await?
            .map(|k| k.state)
            .unwrap_or_default();
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "key {} is {now}; this needs it to be {}",
                key.key_id,
                from.join(" or ")
            ),
        ));
    }
    tracing::info!(key_id = %key.key_id, to, "key state changed");
    reload(state, &key.key_id).await
}

async fn key_disable(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiJson(req): ApiJson<KeyIdRequest>,
) -> ApiResult<Json<Envelope<KeyInfo>>> {
    use dkms_store::{STATE_DISABLED, STATE_ENABLED};
    transition(
        &state,
        &principal,
        &req.key_id,
        &[STATE_ENABLED],
        STATE_DISABLED,
        None,
    )
    .await
}

async fn key_enable(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiJson(req): ApiJson<KeyIdRequest>,
) -> ApiResult<Json<Envelope<KeyInfo>>> {
    use dkms_store::{STATE_DISABLED, STATE_ENABLED};
    transition(
        &state,
        &principal,
        &req.key_id,
        &[STATE_DISABLED],
        STATE_ENABLED,
        None,
    )
    .await
}

/// Shortest and longest waiting period before a deletion destroys the shares.
pub const DELETION_WINDOW_DAYS: std::ops::RangeInclusive<i64> = 7..=30;

async fn key_schedule_deletion(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiJson(req): ApiJson<ScheduleDeletionRequest>,
) -> ApiResult<Json<Envelope<KeyInfo>>> {
    use dkms_store::{STATE_DISABLED, STATE_ENABLED, STATE_PENDING_DELETION};
    let days = req.pending_window_days.unwrap_or(30);
    if !DELETION_WINDOW_DAYS.contains(&days) {
        return Err(ApiError::invalid(format!(
            "pendingWindowDays must be {} to {} days, got {days}",
            DELETION_WINDOW_DAYS.start(),
            DELETION_WINDOW_DAYS.end()
        )));
    }
    let day_ms = i64::try_from(state.config.deletion_day.as_millis()).unwrap_or(i64::MAX);
    let due = state
        .clock
        .now_ms()
        .saturating_add(days.saturating_mul(day_ms));
    transition(
        &state,
        &principal,
        &req.key_id,
        &[STATE_ENABLED, STATE_DISABLED],
        STATE_PENDING_DELETION,
        Some(due),
    )
    .await
}

/// `POST /api/mappic/dkms/key/refresh`: every node gets a new share of the same key; the
/// old shares stop combining with the new ones. One refresh per key at a time.
async fn key_refresh(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<KeyIdRequest>,
) -> Response {
    idempotent(&state, &principal, &headers, "keyRefresh", &req, || async {
        let key = authorized_key(&state, &principal, &req.key_id, |_| {}).await?;
        let (instance_id, permit) = begin_maintenance(&state, &key, "REFRESH", "refreshed").await?;
        principal.note("instanceId", &instance_id);
        tracing::info!(key_id = %key.key_id, instance_id = %instance_id, principal = %principal.id, "refresh requested");
        orchestrator::spawn_maintenance(
            state.clone(),
            instance_id.clone(),
            key.key_id.clone(),
            None,
            permit,
        );
        to_value(KeyImportResponse {
            instance_id,
            key_id: key.key_id,
        })
    })
    .await
}

/// Checks that `key` can be refreshed or recovered and claims it for a task of `kind`:
/// one such task per key at a time.
async fn begin_maintenance(
    state: &AppState,
    key: &dkms_store::KeyRow,
    kind: &str,
    verb: &str,
) -> ApiResult<(String, tokio::sync::OwnedSemaphorePermit)> {
    if key.status != TaskStatus::Finished {
        return Err(ApiError::new(
            ErrorCode::KeyNotReady,
            format!(
                "key {} is {}; only a FINISHED key can be {verb}",
                key.key_id, key.status
            ),
        ));
    }
    if ![dkms_store::STATE_ENABLED, dkms_store::STATE_DISABLED].contains(&key.state.as_str()) {
        return Err(ApiError::new(
            ErrorCode::KeyDisabled,
            format!("key {} is {}; it cannot be {verb}", key.key_id, key.state),
        ));
    }
    let permit = admit_task(state)?;
    let instance_id = uuid::Uuid::new_v4().to_string();
    let claimed = state
        .store
        .begin_refresh(
            &dkms_store::KeyTaskRow {
                instance_id: instance_id.clone(),
                key_id: key.key_id.clone(),
                kind: kind.into(),
                status: TaskStatus::Init,
                error_code: None,
                error_message: None,
                created_at: state.clock.now_ms(),
            },
            state.clock.now_ms(),
        )
        .await?;
    if !claimed {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "a refresh, recovery, export, backup or restore of key {} is already running",
                key.key_id
            ),
        ));
    }
    Ok((instance_id, permit))
}

/// The member a recovery or restore replaces and the node that takes its place (the
/// same tag by default), checked against the key's members and the node's admission.
pub(super) async fn replacement_of(
    state: &AppState,
    key: &dkms_store::KeyRow,
    lost: &str,
    new: Option<&str>,
) -> ApiResult<(NodeTag, NodeTag)> {
    replacement_named(state, key, lost, new, ("lostParticipant", "newParticipant")).await
}

/// [`replacement_of`], naming the request's `fields` (lost, new) in its messages.
async fn replacement_named(
    state: &AppState,
    key: &dkms_store::KeyRow,
    lost: &str,
    new: Option<&str>,
    (lost_field, new_field): (&str, &str),
) -> ApiResult<(NodeTag, NodeTag)> {
    let lost: NodeTag = lost
        .parse()
        .map_err(|e: dkms_proto::ParseError| ApiError::invalid(format!("{lost_field}: {e}")))?;
    let newcomer: NodeTag = match new {
        None => lost.clone(),
        Some(t) => t
            .parse()
            .map_err(|e: dkms_proto::ParseError| ApiError::invalid(format!("{new_field}: {e}")))?,
    };
    if !key.participants.iter().any(|p| *p == lost.as_str()) {
        return Err(ApiError::invalid(format!(
            "{lost_field}: {lost} is not a participant of key {}",
            key.key_id
        )));
    }
    if newcomer != lost && key.participants.iter().any(|p| *p == newcomer.as_str()) {
        return Err(ApiError::invalid(format!(
            "{new_field}: {newcomer} already holds a share of key {}",
            key.key_id
        )));
    }
    match state.store.get_node(newcomer.as_str()).await? {
        None => Err(ApiError::new(
            ErrorCode::NodeNotFound,
            format!("{new_field}: unknown node tag {newcomer}"),
        )),
        Some(n) if n.status != dkms_store::NODE_ACTIVE => Err(ApiError::new(
            ErrorCode::NodeUnavailable,
            format!("node {newcomer} has not joined yet"),
        )),
        Some(_) => Ok((lost, newcomer)),
    }
}

/// The members a `key/recover` rebuilds and the nodes that take their places, from
/// either form of the request, refused before anything starts if the key cannot afford
/// them (see [`dkms_proto::node::max_lost_at_once`]).
async fn recovery_of(
    state: &AppState,
    key: &dkms_store::KeyRow,
    req: &RecoverKeyRequest,
) -> ApiResult<Vec<(NodeTag, NodeTag)>> {
    let (asked, fields): (Vec<(&str, Option<&str>)>, _) = match (
        &req.lost_participant,
        &req.lost_participants,
    ) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "give either lostParticipant (one member) or lostParticipants (several), not both",
            ));
        }
        (None, None) => {
            return Err(ApiError::invalid(
                "lostParticipant (or lostParticipants) is required",
            ));
        }
        (Some(lost), None) => {
            if req.new_participants.is_some() {
                return Err(ApiError::invalid(
                    "newParticipants goes with lostParticipants; with lostParticipant, give newParticipant",
                ));
            }
            (
                vec![(lost.as_str(), req.new_participant.as_deref())],
                ("lostParticipant", "newParticipant"),
            )
        }
        (None, Some(lost)) => {
            if req.new_participant.is_some() {
                return Err(ApiError::invalid(
                    "newParticipant goes with lostParticipant; with lostParticipants, give newParticipants",
                ));
            }
            if lost.is_empty() {
                return Err(ApiError::invalid(
                    "lostParticipants: the list is empty; name at least one lost member",
                ));
            }
            let new: Vec<Option<&str>> = match &req.new_participants {
                None => vec![None; lost.len()],
                Some(new) if new.len() != lost.len() => {
                    return Err(ApiError::invalid(format!(
                        "newParticipants: {} entries for {} lost participants; give one per lost participant, in the same order (its own tag to rebuild it in place)",
                        new.len(),
                        lost.len()
                    )));
                }
                Some(new) => new.iter().map(|t| Some(t.as_str())).collect(),
            };
            (
                lost.iter().map(String::as_str).zip(new).collect(),
                ("lostParticipants", "newParticipants"),
            )
        }
    };
    for (i, (lost, new)) in asked.iter().enumerate() {
        if asked[..i].iter().any(|(l, _)| l == lost) {
            return Err(ApiError::invalid(format!(
                "{}: {lost} is named twice",
                fields.0
            )));
        }
        let newcomer = new.unwrap_or(lost);
        if asked[..i].iter().any(|(l, n)| n.unwrap_or(l) == newcomer) {
            return Err(ApiError::invalid(format!(
                "{}: {newcomer} cannot take the places of two lost members",
                fields.1
            )));
        }
    }
    let (t, n) = (usize::from(key.threshold), key.participants.len());
    let allowed = dkms_proto::node::max_lost_at_once(t, n);
    if asked.len() > allowed {
        let why = if allowed == 0 {
            format!(
                "key {} is {t}-of-{n}: rebuilding a share takes {t} members that lost nothing, so none can be rebuilt; only a backup (key/restore) brings a member back",
                key.key_id
            )
        } else {
            format!(
                "key {} is {t}-of-{n}, so at most {allowed} of its members can be rebuilt at once: a repair needs {t} members that lost nothing (at most {} lost), and fewer than {t} shares may be rebuilt from one share generation, so that rebuilt shares alone can never make the key (at most {})",
                key.key_id,
                n - t,
                t - 1
            )
        };
        return Err(ApiError::invalid(format!(
            "{}: {} lost members cannot be recovered: {why}",
            fields.0,
            asked.len()
        )));
    }
    let mut replacements = Vec::with_capacity(asked.len());
    for (lost, new) in asked {
        replacements.push(replacement_named(state, key, lost, new, fields).await?);
    }
    Ok(replacements)
}

async fn key_recover(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<RecoverKeyRequest>,
) -> Response {
    idempotent(&state, &principal, &headers, "keyRecover", &req, || async {
        let key = authorized_key(&state, &principal, &req.key_id, |_| {}).await?;
        let replacements = recovery_of(&state, &key, &req).await?;
        let (instance_id, permit) = begin_maintenance(&state, &key, "RECOVER", "recovered").await?;
        let list = |f: fn(&(NodeTag, NodeTag)) -> &NodeTag| {
            replacements.iter().map(f).map(|t| t.as_str()).collect::<Vec<_>>().join(",")
        };
        let (lost, newcomer) = (list(|p| &p.0), list(|p| &p.1));
        principal.note("instanceId", &instance_id);
        if req.lost_participants.is_some() {
            principal.note("lostParticipants", &lost);
            principal.note("newParticipants", &newcomer);
        } else {
            principal.note("lostParticipant", &lost);
            principal.note("newParticipant", &newcomer);
        }
        tracing::info!(key_id = %key.key_id, instance_id = %instance_id, %lost, %newcomer, principal = %principal.id, "recovery requested");
        orchestrator::spawn_maintenance(
            state.clone(),
            instance_id.clone(),
            key.key_id.clone(),
            Some(orchestrator::Recovery {
                replacements,
                rebuild: orchestrator::Rebuild::Repair,
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

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TaskQuery {
    instance_id: Option<String>,
    wait_ms: Option<u64>,
}

async fn task_get(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiQuery(q): ApiQuery<TaskQuery>,
) -> ApiResult<Json<Envelope<TaskInfo>>> {
    let id = parse_id(q.instance_id.as_deref(), "instanceId")?.to_string();
    let load = || async {
        let row = state.store.get_key_task(&id).await?.ok_or_else(|| {
            ApiError::new(ErrorCode::TaskNotFound, format!("no task with id {id}"))
        })?;
        let status = row.status;
        Ok((
            TaskInfo {
                instance_id: row.instance_id,
                key_id: row.key_id,
                kind: row.kind,
                status: row.status.to_string(),
                error_code: row.error_code,
                error_message: row.error_message,
                created_at: rfc3339(row.created_at),
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

async fn key_cancel_deletion(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiJson(req): ApiJson<KeyIdRequest>,
) -> ApiResult<Json<Envelope<KeyInfo>>> {
    use dkms_store::{STATE_DISABLED, STATE_PENDING_DELETION};
    // As AWS KMS: a key whose deletion was cancelled comes back disabled.
    transition(
        &state,
        &principal,
        &req.key_id,
        &[STATE_PENDING_DELETION],
        STATE_DISABLED,
        None,
    )
    .await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyQuery {
    key_id: Option<String>,
    wait_ms: Option<u64>,
}

fn parse_id(raw: Option<&str>, name: &str) -> ApiResult<KeyId> {
    let raw = raw
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::invalid(format!("{name} is required")))?;
    raw.parse()
        .map_err(|e: dkms_proto::ParseError| ApiError::invalid(format!("{name}: {e}")))
}

/// How often a long-poll re-reads its task while other gateways share the database: a
/// task run by one of them ends without waking this process's waiters. Alone, a gateway
/// is woken by its own tasks and does not re-read.
const REPOLL: Duration = Duration::from_millis(250);

/// Loads a task view, long-polling up to `wait_ms` until it is terminal.
async fn load_waiting<T, F, Fut>(state: &AppState, id: &str, wait_ms: u64, load: F) -> ApiResult<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ApiResult<(T, TaskStatus)>>,
{
    if wait_ms > MAX_WAIT_MS {
        return Err(ApiError::invalid(format!(
            "waitMs must be at most {MAX_WAIT_MS}"
        )));
    }
    if wait_ms == 0 {
        return load().await.map(|(v, _)| v);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
    loop {
        let notify = state.waiters.get(id);
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let (v, status) = load().await?;
        if status.is_terminal() {
            state.waiters.wake(id);
            return Ok(v);
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(v);
        }
        let until = if state
            .other_gateways
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            deadline.min(now + REPOLL)
        } else {
            deadline
        };
        let _ = tokio::time::timeout_at(until, notified).await;
    }
}

async fn key_get(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiQuery(q): ApiQuery<KeyQuery>,
) -> ApiResult<Json<Envelope<KeyInfo>>> {
    let key_id = parse_id(q.key_id.as_deref(), "keyId")?.to_string();
    authorized_key(&state, &principal, &key_id, |_| {}).await?;
    let info = load_waiting(&state, &key_id, q.wait_ms.unwrap_or(0), || async {
        let row = state.store.get_key(&key_id).await?.ok_or_else(|| {
            ApiError::new(ErrorCode::KeyNotFound, format!("no key with id {key_id}"))
        })?;
        let status = row.status;
        Ok((key_info(&state, row).await?, status))
    })
    .await?;
    Ok(ok(info))
}

async fn key_info(state: &AppState, row: dkms_store::KeyRow) -> ApiResult<KeyInfo> {
    let labels = state.store.get_labels(&row.key_id).await?;
    let pem = match &row.public_key {
        Some(h) => {
            let bytes = hex::decode(h).map_err(ApiError::internal)?;
            Some(
                dkms_mpc::ecdsa::public_key_pem(key_curve(&row.key_type)?, &bytes)
                    .map_err(ApiError::internal)?,
            )
        }
        None => None,
    };
    Ok(KeyInfo {
        key_id: row.key_id,
        status: row.status.to_string(),
        public_key: pem,
        public_key_hex: row.public_key,
        error_message: row.error_message,
        error_code: row.error_code,
        address: row.address,
        key_type: row.key_type,
        threshold: row.threshold,
        total_shares: row.total_shares,
        service_participants: row.participants,
        origin: row.origin,
        state: row.state,
        labels,
        description: row.description,
        deletion_at: row.deletion_at.map(rfc3339),
        generation: row.generation,
        node_group: row.node_group,
        exportable: row.exportable,
        created_at: rfc3339(row.created_at),
    })
}

// ---- signing ----

async fn sign_req(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<SignRequest>,
) -> Response {
    idempotent(&state, &principal, &headers, "signReq", &req, || async {
        let digest: Digest32 = req
            .digest_hex
            .parse()
            .map_err(|e: dkms_proto::ParseError| ApiError::invalid(e.0))?;
        let instance_id = approvals::submit_sign(
            &state,
            &principal,
            approvals::SignAsk {
                key_id: parse_id(Some(req.key_id.as_str()), "keyId")?.to_string(),
                digest,
                derivation_path: approvals::canonical_path(req.derivation_path.as_deref())?,
                tx: None,
            },
        )
        .await?;
        to_value(SignRequestResponse { instance_id })
    })
    .await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignQuery {
    instance_id: Option<String>,
    wait_ms: Option<u64>,
}

async fn sign_get(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiQuery(q): ApiQuery<SignQuery>,
) -> ApiResult<Json<Envelope<SignInfo>>> {
    let id = parse_id(q.instance_id.as_deref(), "instanceId")?.to_string();
    let load = || async {
        let row = state.store.get_sign(&id).await?.ok_or_else(|| {
            ApiError::new(
                ErrorCode::TaskNotFound,
                format!("no signing task with id {id}"),
            )
        })?;
        let status = row.status;
        let extras = state.store.get_sign_extras(&id).await?;
        Ok((sign_info(row, extras.as_ref())?, status))
    };
    let (first, _) = load().await?;
    authorized_key(&state, &principal, &first.key_id, |_| {}).await?;
    Ok(ok(
        load_waiting(&state, &id, q.wait_ms.unwrap_or(0), load).await?
    ))
}

fn sign_info(
    row: dkms_store::SignRow,
    extras: Option<&dkms_store::SignExtras>,
) -> ApiResult<SignInfo> {
    let (r, s, v, der) = match &row.signature {
        Some(h) => {
            let b = hex::decode(h).map_err(ApiError::internal)?;
            if b.len() != 65 {
                return Err(ApiError::internal("stored signature has the wrong length"));
            }
            let der = dkms_mpc::ecdsa::signature_der(&b).map_err(ApiError::internal)?;
            (
                Some(hex::encode(&b[..32])),
                Some(hex::encode(&b[32..64])),
                Some(b[64]),
                Some(hex::encode(der)),
            )
        }
        None => (None, None, None, None),
    };
    Ok(SignInfo {
        instance_id: row.instance_id,
        key_id: row.key_id,
        digest_hex: row.digest,
        status: row.status.to_string(),
        sign: row.signature,
        r,
        s,
        v,
        der,
        error_message: row.error_message,
        error_code: row.error_code,
        signers: row.signers,
        derivation_path: row.derivation_path,
        signed_tx: extras.and_then(|e| e.signed_tx.clone()),
        tx_hash: extras.and_then(|e| e.tx_hash.clone()),
        created_at: rfc3339(row.created_at),
    })
}

/// The curve of a stored key. A key type the store holds but this gateway does not know
/// would be a corrupt row, hence internal.
pub(crate) fn key_curve(key_type: &str) -> ApiResult<dkms_mpc::Curve> {
    dkms_mpc::Curve::of_key_type_name(key_type).map_err(ApiError::internal)
}

/// Parses a `derivationPath` and derives the child of a finished key: (path, child public
/// key, child chain code).
async fn derived(
    state: &AppState,
    key: &dkms_store::KeyRow,
    raw: &str,
) -> ApiResult<(Vec<u32>, (Vec<u8>, [u8; 32]))> {
    let path = dkms_mpc::derive::parse_path(raw)
        .map_err(|e| ApiError::invalid(format!("derivationPath: {e}")))?;
    if key_curve(&key.key_type)? != dkms_mpc::Curve::Secp256k1 {
        return Err(ApiError::invalid(format!(
            "derivationPath: BIP-32 derivation is defined for ECDSA_K1 keys only; key {} is {}",
            key.key_id, key.key_type
        )));
    }
    let public_key = key
        .public_key
        .as_deref()
        .and_then(|h| hex::decode(h).ok())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::KeyNotReady,
                format!("key {} has no public key yet", key.key_id),
            )
        })?;
    let chain_code = state.store.get_chain_code(&key.key_id).await?;
    let child = orchestrator::child_key(&public_key, chain_code.as_deref(), &path)
        .map_err(|e| ApiError::invalid(format!("derivationPath: {e}")))?;
    Ok((path, child))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeriveQuery {
    key_id: Option<String>,
    path: Option<String>,
}

async fn key_derive(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiQuery(q): ApiQuery<DeriveQuery>,
) -> ApiResult<Json<Envelope<DerivedKey>>> {
    let key = authorized_key(
        &state,
        &principal,
        q.key_id.as_deref().unwrap_or_default(),
        |_| {},
    )
    .await?;
    let raw = q
        .path
        .as_deref()
        .ok_or_else(|| ApiError::invalid("path: missing (a BIP-32 path such as m/44/60/0/0/7)"))?;
    let (path, (public_key, chain_code)) = derived(&state, &key, raw).await?;
    let pem = dkms_mpc::ecdsa::public_key_pem(dkms_mpc::Curve::Secp256k1, &public_key)
        .map_err(ApiError::internal)?;
    let address = dkms_mpc::ecdsa::eth_address(&public_key).map_err(ApiError::internal)?;
    Ok(ok(DerivedKey {
        key_id: key.key_id,
        derivation_path: dkms_mpc::derive::format_path(&path),
        public_key: pem,
        public_key_hex: hex::encode(&public_key),
        address: Some(address),
        chain_code: hex::encode(chain_code),
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::collections::BTreeSet;

    fn document() -> Value {
        serde_json::from_str(OPENAPI_JSON).expect("openapi.json is valid JSON")
    }

    fn operation_key(verb: Verb) -> &'static str {
        match verb {
            Verb::Get => "get",
            Verb::Post => "post",
        }
    }

    const HTTP_METHODS: &[&str] = &[
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];

    /// (method, path) of every operation in the document.
    fn documented_operations(doc: &Value) -> BTreeSet<(String, String)> {
        let paths = doc["paths"].as_object().expect("`paths` is an object");
        let mut ops = BTreeSet::new();
        for (path, item) in paths {
            let item = item.as_object().expect("a path item is an object");
            for method in item.keys().filter(|k| HTTP_METHODS.contains(&k.as_str())) {
                ops.insert((method.clone(), path.clone()));
            }
        }
        ops
    }

    #[test]
    fn openapi_documents_exactly_the_routes() {
        let doc = document();
        assert!(
            doc["openapi"]
                .as_str()
                .is_some_and(|v| v.starts_with("3.1")),
            "the document must be OpenAPI 3.1"
        );
        let registered: BTreeSet<(String, String)> = routes()
            .iter()
            .map(|r| (operation_key(r.verb).to_owned(), r.path.to_owned()))
            .collect();
        assert_eq!(registered.len(), routes().len(), "a route is listed twice");
        let documented = documented_operations(&doc);
        let undocumented: Vec<_> = registered.difference(&documented).collect();
        let phantom: Vec<_> = documented.difference(&registered).collect();
        assert!(
            undocumented.is_empty() && phantom.is_empty(),
            "openapi.json is out of step with the router: registered but not documented: \
             {undocumented:?}; documented but not registered: {phantom:?}"
        );
    }

    #[test]
    fn openapi_security_matches_route_access() {
        let doc = document();
        assert!(doc["components"]["securitySchemes"]["bearerAuth"].is_object());
        assert_eq!(doc["security"], serde_json::json!([{ "bearerAuth": [] }]));
        for r in routes() {
            let op = &doc["paths"][r.path][operation_key(r.verb)];
            let public = op
                .get("security")
                .is_some_and(|s| s.as_array().is_some_and(Vec::is_empty));
            assert_eq!(
                public,
                r.access == Access::Public,
                "{} {}: `security: []` must mark exactly the public routes",
                operation_key(r.verb),
                r.path
            );
        }
    }

    /// Every `$ref` (all local) resolves to a node of the document.
    #[test]
    fn openapi_refs_resolve() {
        fn walk(node: &Value, doc: &Value, seen: &mut usize, broken: &mut Vec<String>) {
            match node {
                Value::Object(map) => {
                    if let Some(r) = map.get("$ref") {
                        *seen += 1;
                        let target = r
                            .as_str()
                            .and_then(|r| r.strip_prefix('#'))
                            .and_then(|ptr| doc.pointer(ptr));
                        if target.is_none() {
                            broken.push(r.to_string());
                        }
                    }
                    for v in map.values() {
                        walk(v, doc, seen, broken);
                    }
                }
                Value::Array(items) => {
                    for v in items {
                        walk(v, doc, seen, broken);
                    }
                }
                _ => {}
            }
        }
        let doc = document();
        let (mut seen, mut broken) = (0, Vec::new());
        walk(&doc, &doc, &mut seen, &mut broken);
        assert!(seen > 0, "the document has no $ref at all");
        assert!(broken.is_empty(), "unresolved $ref: {broken:?}");
    }

    /// The documented error codes are the real ones, and every error example sits under
    /// the HTTP status its code is answered with.
    #[test]
    fn openapi_error_codes_match_the_code() {
        let doc = document();
        let codes = doc["components"]["schemas"]["ErrorCode"]["enum"]
            .as_array()
            .expect("ErrorCode has an enum");
        for c in codes {
            let c = c.as_str().expect("codes are strings");
            assert!(ErrorCode::parse(c).is_some(), "unknown error code {c}");
        }
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("path item") {
                let Some(responses) = op.get("responses").and_then(Value::as_object) else {
                    continue;
                };
                for (status, resp) in responses {
                    let resp = match resp.get("$ref").and_then(Value::as_str) {
                        Some(r) => doc.pointer(&r[1..]).expect("resolvable $ref"),
                        None => resp,
                    };
                    let examples = resp
                        .pointer("/content/application~1json/examples")
                        .and_then(Value::as_object);
                    for (name, ex) in examples.into_iter().flatten() {
                        let code = ex["value"]["errorCode"].as_str().expect("errorCode");
                        let expected = match code {
                            "200" => 200,
                            other => ErrorCode::parse(other)
                                .unwrap_or_else(|| panic!("{method} {path} {name}: code {other}"))
                                .http_status(),
                        };
                        assert_eq!(
                            status.as_str(),
                            expected.to_string(),
                            "{method} {path}: example {name} ({code}) is under the wrong status"
                        );
                    }
                }
            }
        }
    }
}
