//! Rust SDK for the dkms REST API (see `API.md`).
//!
//! [`Client`] wraps the gateway's endpoints: every response is the dkms envelope
//! `{"errorCode","errorMessage","data","success"}`, which the client unpacks into the
//! typed `data` or into a [`ClientError`]. Key generation and signing run as tasks on the
//! gateway; [`Client::wait_key`] and [`Client::wait_sign`] follow a task to its end with the
//! gateway's long poll (`waitMs`), and [`Client::sign`] requests and waits in one call.
//!
//! The SDK depends only on the wire types of `dkms-proto`, so it never drifts from them.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use dkms_proto::api::{
    CreatePodRequest, Envelope, JoinTokenResponse, KeyGenResponse, RecoverKeyRequest,
    SignRequestResponse,
};
use dkms_proto::{ErrorCode, TaskStatus};
use reqwest::Url;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

pub use dkms_proto::api::{DerivedKey, SignRequest};
pub use dkms_proto::api::{
    Health, KeyGenRequest, KeyIdRequest, KeyImportRequest, KeyImportResponse,
    KeyImportSharesRequest, KeyInfo, KeyList, KeyParams, KeyUpdateRequest, PodInfo,
    ScheduleDeletionRequest, SealedShare, SignInfo, TaskInfo,
};

pub use dkms_proto::api::{
    ApiKeyInfo, ApiKeyRequest, ApprovalInfo, ApprovalVote, AuditHead, AuditPage, DryRunRequest,
    DryRunResponse, LoginResponse, PolicyInfo, PolicyPutRequest, SignTxRequest, UserInfo,
    UserRequest, WhoAmI,
};
pub use dkms_proto::api::{
    BackupGroupInfo, BackupGroupRequest, BackupShare, Custodian, KeyBackupInfo, KeyExportInfo,
    KeyRestoreRequest, MemberSealedShare,
};
pub use dkms_proto::api::{NodeGroupInfo, NodeGroupRequest};

mod governance;

/// Lifecycle changes that take only a key id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAction {
    Disable,
    Enable,
    CancelDeletion,
}
/// Re-exported so that callers of [`Client::raw`] need no direct `reqwest` dependency.
pub use reqwest::Method;

/// The header that makes a POST idempotent (API.md, "Idempotency").
pub const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";

/// The longest long poll the gateway accepts in one request (`waitMs`).
pub const MAX_WAIT_MS: u64 = 30_000;

/// Time allowed for one ordinary request, from connecting to the end of the body.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Extra time a long-poll request gets on top of the `waitMs` it asks for.
const LONG_POLL_GRACE: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Floor between two polls, so a gateway that ignores `waitMs` is not hammered.
const MIN_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// How much of an unexpected response body an error message quotes.
const SNIPPET_CHARS: usize = 200;

const PATH_HEALTH: &str = "/api/health";
const PATH_CREATE_POD: &str = "/api/mappic/pod/createPod";
const PATH_JOIN_TOKEN: &str = "/api/mappic/pod/joinToken";
const PATH_LIST_PODS: &str = "/api/mappic/pod/list";
const PATH_KEY_GEN: &str = "/api/mappic/dkms/key/gen";
const PATH_KEY_GET: &str = "/api/mappic/dkms/key/get";
const PATH_KEY_IMPORT: &str = "/api/mappic/dkms/key/import";
const PATH_KEY_IMPORT_SHARES: &str = "/api/mappic/dkms/key/importShares";
const PATH_SIGN_REQ: &str = "/api/mappic/dkms/sign/req";
const PATH_SIGN_GET: &str = "/api/mappic/dkms/sign/get";

/// What can go wrong in a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The gateway answered with `success: false`.
    #[error("{code} (HTTP {status}): {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// The request did not get an HTTP answer (connection refused, reset, timed out, ...).
    #[error("transport error: {0}")]
    Transport(String),
    /// The gateway answered with something that is not the dkms envelope, or whose `data`
    /// has an unexpected shape.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A `wait_*` call gave up before the task reached a terminal status.
    #[error("timed out waiting for the task to reach a terminal status")]
    Timeout,
    /// The caller passed something unusable: a base URL, token or header that cannot go
    /// into an HTTP request. Nothing was sent.
    #[error("invalid input: {0}")]
    InvalidInput(String),
}

impl ClientError {
    /// The envelope's `errorCode` of an [`ClientError::Api`] error.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The `errorCode` as a known [`ErrorCode`], if it is one.
    pub fn error_code(&self) -> Option<ErrorCode> {
        self.code().and_then(ErrorCode::parse)
    }

    /// The HTTP status of an [`ClientError::Api`] error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A request body for [`Client::raw`]: exact bytes and an optional `Content-Type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawBody {
    /// Sent as `Content-Type` when set; no `Content-Type` header at all when `None`.
    pub content_type: Option<String>,
    pub bytes: Vec<u8>,
}

impl RawBody {
    /// `bytes` sent with the given content type.
    pub fn new(content_type: &str, bytes: impl Into<Vec<u8>>) -> Self {
        RawBody {
            content_type: Some(content_type.to_owned()),
            bytes: bytes.into(),
        }
    }

    /// `bytes` sent without a `Content-Type` header.
    pub fn without_content_type(bytes: impl Into<Vec<u8>>) -> Self {
        RawBody {
            content_type: None,
            bytes: bytes.into(),
        }
    }

    /// A JSON value, as `application/json`.
    pub fn json(value: &serde_json::Value) -> Self {
        RawBody::new("application/json", value.to_string())
    }
}

/// A fresh random `Idempotency-Key` value (a UUID v4).
pub fn new_idempotency_key() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A handle on one gateway. Cheap to clone; clones share the connection pool.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// Base URL without a trailing `/`; paths are appended to it.
    base: Arc<str>,
    /// `Bearer <token>`, marked sensitive; `None` for an empty token.
    auth: Option<HeaderValue>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.base)
            .field(
                "token",
                &if self.auth.is_some() {
                    "<redacted>"
                } else {
                    "<none>"
                },
            )
            .finish()
    }
}

impl Client {
    /// A client for the gateway at `base_url` (e.g. `http://127.0.0.1:8889`, optionally
    /// with a path prefix) that authenticates with `token`. An empty token sends no
    /// `Authorization` header (only `health` works without one).
    pub fn new(base_url: &str, token: &str) -> Result<Client, ClientError> {
        let base = base_url.trim().trim_end_matches('/');
        let url = Url::parse(base)
            .map_err(|e| ClientError::InvalidInput(format!("base URL {base:?}: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ClientError::InvalidInput(format!(
                "base URL {base:?} must start with http:// or https://"
            )));
        }
        if url.host().is_none() || url.query().is_some() || url.fragment().is_some() {
            return Err(ClientError::InvalidInput(format!(
                "base URL {base:?} must be scheme://host[:port][/prefix] without query or fragment"
            )));
        }

        let token = token.trim();
        let auth = if token.is_empty() {
            None
        } else {
            // The token itself never goes into an error message.
            let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                ClientError::InvalidInput(
                    "the token contains characters that cannot go into an HTTP header".into(),
                )
            })?;
            value.set_sensitive(true);
            Some(value)
        };

        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| ClientError::Transport(error_chain(&e)))?;
        Ok(Client {
            http,
            base: base.into(),
            auth,
        })
    }

    /// The base URL the client talks to (without a trailing `/`).
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `GET /api/health` (sent without credentials).
    pub async fn health(&self) -> Result<Health, ClientError> {
        let url = self.url(PATH_HEALTH, &[])?;
        let req = self
            .http
            .get(url)
            .timeout(REQUEST_TIMEOUT)
            .header(reqwest::header::ACCEPT, "application/json");
        let (status, body) = send(req).await?;
        decode_envelope(status, &body)
    }

    /// `POST /api/mappic/pod/createPod`: registers a node; returns its tag.
    pub async fn create_pod(&self, node_tag: &str) -> Result<String, ClientError> {
        self.create_pod_inner(node_tag, None).await
    }

    /// [`Client::create_pod`] with an `Idempotency-Key`.
    pub async fn create_pod_idempotent(
        &self,
        node_tag: &str,
        idempotency_key: &str,
    ) -> Result<String, ClientError> {
        self.create_pod_inner(node_tag, Some(idempotency_key)).await
    }

    async fn create_pod_inner(
        &self,
        node_tag: &str,
        idempotency_key: Option<&str>,
    ) -> Result<String, ClientError> {
        let body = CreatePodRequest {
            node_tag: node_tag.to_owned(),
        };
        self.post(PATH_CREATE_POD, &body, idempotency_key).await
    }

    /// `POST /api/mappic/pod/joinToken`: a fresh one-time join token for a node that has
    /// not joined yet (hand it to the node as `DKMS_JOIN_TOKEN`).
    pub async fn join_token(&self, node_tag: &str) -> Result<String, ClientError> {
        let body = CreatePodRequest {
            node_tag: node_tag.to_owned(),
        };
        let resp: JoinTokenResponse = self.post(PATH_JOIN_TOKEN, &body, None).await?;
        Ok(resp.join_token)
    }

    /// `POST /api/mappic/pod/resetPod`: unpins a node whose identity is lost (its data
    /// directory is gone) and returns the join token it joins again with.
    pub async fn reset_pod(&self, node_tag: &str) -> Result<String, ClientError> {
        let body = CreatePodRequest {
            node_tag: node_tag.to_owned(),
        };
        let resp: JoinTokenResponse = self.post("/api/mappic/pod/resetPod", &body, None).await?;
        Ok(resp.join_token)
    }

    /// `POST /api/mappic/dkms/key/import`: sends the private key (PEM) to the gateway,
    /// which splits it at once. Prefer [`Client::import_key_shares`], where the gateway
    /// never sees the key.
    pub async fn import_key(
        &self,
        req: &KeyImportRequest,
    ) -> Result<KeyImportResponse, ClientError> {
        self.post(PATH_KEY_IMPORT, req, None).await
    }

    /// `POST /api/mappic/dkms/key/importShares`: a key split and sealed by the client.
    pub async fn import_key_shares(
        &self,
        req: &KeyImportSharesRequest,
    ) -> Result<KeyImportResponse, ClientError> {
        self.post(PATH_KEY_IMPORT_SHARES, req, None).await
    }

    /// `GET /api/mappic/pod/list`.
    pub async fn list_pods(&self) -> Result<Vec<PodInfo>, ClientError> {
        self.get(PATH_LIST_PODS, &[], REQUEST_TIMEOUT).await
    }

    /// `POST /api/mappic/pod/setRegion`: labels where a node runs (`""` clears it);
    /// returns the node.
    pub async fn set_region(&self, node_tag: &str, region: &str) -> Result<PodInfo, ClientError> {
        let body = dkms_proto::api::SetRegionRequest {
            node_tag: node_tag.to_owned(),
            region: region.to_owned(),
        };
        self.post("/api/mappic/pod/setRegion", &body, None).await
    }

    /// `POST /api/mappic/group/create`: a named set of nodes that key generation can name
    /// instead of listing participants.
    pub async fn create_group(&self, req: &NodeGroupRequest) -> Result<NodeGroupInfo, ClientError> {
        self.post("/api/mappic/group/create", req, None).await
    }

    /// `GET /api/mappic/group/get?name=...`.
    pub async fn get_group(&self, name: &str) -> Result<NodeGroupInfo, ClientError> {
        self.get("/api/mappic/group/get", &[("name", name)], REQUEST_TIMEOUT)
            .await
    }

    /// `GET /api/mappic/group/list`: every group, by name.
    pub async fn list_groups(&self) -> Result<Vec<NodeGroupInfo>, ClientError> {
        self.get("/api/mappic/group/list", &[], REQUEST_TIMEOUT)
            .await
    }

    /// `POST /api/mappic/group/update`: replaces the group's members and settings.
    pub async fn update_group(&self, req: &NodeGroupRequest) -> Result<NodeGroupInfo, ClientError> {
        self.post("/api/mappic/group/update", req, None).await
    }

    /// `POST /api/mappic/group/delete`; refused (`CONFLICT`) while keys use the group.
    pub async fn delete_group(&self, name: &str) -> Result<String, ClientError> {
        let body = dkms_proto::api::GroupNameRequest {
            name: name.to_owned(),
        };
        self.post("/api/mappic/group/delete", &body, None).await
    }

    /// `POST /api/mappic/dkms/key/gen`: starts a key generation; returns the key id at once.
    pub async fn generate_key(&self, req: &KeyGenRequest) -> Result<String, ClientError> {
        self.generate_key_inner(req, None).await
    }

    /// [`Client::generate_key`] with an `Idempotency-Key`: a repeat within 24 h returns the
    /// first key id and starts no second generation.
    pub async fn generate_key_idempotent(
        &self,
        req: &KeyGenRequest,
        idempotency_key: &str,
    ) -> Result<String, ClientError> {
        self.generate_key_inner(req, Some(idempotency_key)).await
    }

    async fn generate_key_inner(
        &self,
        req: &KeyGenRequest,
        idempotency_key: Option<&str>,
    ) -> Result<String, ClientError> {
        let resp: KeyGenResponse = self.post(PATH_KEY_GEN, req, idempotency_key).await?;
        Ok(resp.key_id)
    }

    /// `GET /api/mappic/dkms/key/list`: one page of keys, newest first. `query` holds
    /// the filters and paging parameters (`status`, `state`, `label` as `name=value`,
    /// `nodeGroup`, `pageSize`, `pageToken`).
    pub async fn list_keys(&self, query: &[(&str, &str)]) -> Result<KeyList, ClientError> {
        self.get("/api/mappic/dkms/key/list", query, REQUEST_TIMEOUT)
            .await
    }

    /// `POST /api/mappic/dkms/key/update`: replaces labels and/or the description.
    pub async fn update_key(&self, req: &KeyUpdateRequest) -> Result<KeyInfo, ClientError> {
        self.post("/api/mappic/dkms/key/update", req, None).await
    }

    /// `POST /api/mappic/dkms/key/{disable,enable,cancelDeletion}` by name.
    pub async fn key_state(&self, action: KeyAction, key_id: &str) -> Result<KeyInfo, ClientError> {
        let path = match action {
            KeyAction::Disable => "/api/mappic/dkms/key/disable",
            KeyAction::Enable => "/api/mappic/dkms/key/enable",
            KeyAction::CancelDeletion => "/api/mappic/dkms/key/cancelDeletion",
        };
        let body = KeyIdRequest {
            key_id: key_id.to_owned(),
        };
        self.post(path, &body, None).await
    }

    /// `POST /api/mappic/dkms/key/refresh`: new shares for every node, same public key.
    pub async fn refresh_key(&self, key_id: &str) -> Result<KeyImportResponse, ClientError> {
        let body = KeyIdRequest {
            key_id: key_id.to_owned(),
        };
        self.post("/api/mappic/dkms/key/refresh", &body, None).await
    }

    /// `POST /api/mappic/dkms/key/recover`: rebuilds the share of `lost` on `new_participant`
    /// (on `lost` itself, joined again, if `None`), then refreshes every share.
    pub async fn recover_key(
        &self,
        key_id: &str,
        lost: &str,
        new_participant: Option<&str>,
    ) -> Result<KeyImportResponse, ClientError> {
        let body = RecoverKeyRequest {
            key_id: key_id.to_owned(),
            lost_participant: Some(lost.to_owned()),
            new_participant: new_participant.map(str::to_owned),
            ..RecoverKeyRequest::default()
        };
        self.post("/api/mappic/dkms/key/recover", &body, None).await
    }

    /// `POST /api/mappic/dkms/key/recover` for several members lost at once: rebuilds
    /// each share of `lost` on the node at the same position of `new_participants` (each
    /// lost node itself, joined again, if `None`), then refreshes every share once.
    pub async fn recover_keys(
        &self,
        key_id: &str,
        lost: &[&str],
        new_participants: Option<&[&str]>,
    ) -> Result<KeyImportResponse, ClientError> {
        let owned = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let body = RecoverKeyRequest {
            key_id: key_id.to_owned(),
            lost_participants: Some(owned(lost)),
            new_participants: new_participants.map(owned),
            ..RecoverKeyRequest::default()
        };
        self.post("/api/mappic/dkms/key/recover", &body, None).await
    }

    /// `POST /api/mappic/dkms/key/export`: break-glass export of an exportable key; every
    /// connected member seals its share to `recipient_public_key` (X25519, hex). Follow
    /// it with [`Client::wait_export`]. `dkms key export` does the whole procedure.
    pub async fn export_key(
        &self,
        key_id: &str,
        recipient_public_key: &str,
    ) -> Result<KeyImportResponse, ClientError> {
        let body = dkms_proto::api::KeyExportRequest {
            key_id: key_id.to_owned(),
            recipient_public_key: recipient_public_key.to_owned(),
        };
        self.post("/api/mappic/dkms/key/export", &body, None).await
    }

    /// `GET /api/mappic/dkms/key/export/get`, long-polling until the export task ends or
    /// `timeout`.
    pub async fn wait_export(
        &self,
        instance_id: &str,
        timeout: Duration,
    ) -> Result<KeyExportInfo, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let wait = left.as_millis().min(u128::from(MAX_WAIT_MS)) as u64;
            let info: KeyExportInfo = self
                .long_poll(
                    "/api/mappic/dkms/key/export/get",
                    "instanceId",
                    instance_id,
                    wait,
                )
                .await?;
            if matches!(info.status.as_str(), "FINISHED" | "FAILED") {
                return Ok(info);
            }
            if left.is_zero() {
                return Err(ClientError::Timeout);
            }
        }
    }

    /// `POST /api/mappic/dkms/backupGroup/create`.
    pub async fn create_backup_group(
        &self,
        req: &BackupGroupRequest,
    ) -> Result<BackupGroupInfo, ClientError> {
        self.post("/api/mappic/dkms/backupGroup/create", req, None)
            .await
    }

    /// `GET /api/mappic/dkms/backupGroup/get?name=...`.
    pub async fn get_backup_group(&self, name: &str) -> Result<BackupGroupInfo, ClientError> {
        self.get(
            "/api/mappic/dkms/backupGroup/get",
            &[("name", name)],
            REQUEST_TIMEOUT,
        )
        .await
    }

    /// `GET /api/mappic/dkms/backupGroup/list`.
    pub async fn list_backup_groups(&self) -> Result<Vec<BackupGroupInfo>, ClientError> {
        self.get("/api/mappic/dkms/backupGroup/list", &[], REQUEST_TIMEOUT)
            .await
    }

    /// `POST /api/mappic/dkms/backupGroup/delete`; refused (`CONFLICT`) while backups use it.
    pub async fn delete_backup_group(&self, name: &str) -> Result<(), ClientError> {
        let body = dkms_proto::api::BackupGroupName {
            name: name.to_owned(),
        };
        let _: dkms_proto::api::BackupGroupName = self
            .post("/api/mappic/dkms/backupGroup/delete", &body, None)
            .await?;
        Ok(())
    }

    /// `POST /api/mappic/dkms/key/backup`: every member seals its share to its custodian
    /// in `backup_group`; follow it with [`Client::wait_task`].
    pub async fn backup_key(
        &self,
        key_id: &str,
        backup_group: &str,
    ) -> Result<KeyImportResponse, ClientError> {
        let body = dkms_proto::api::KeyBackupRequest {
            key_id: key_id.to_owned(),
            backup_group: backup_group.to_owned(),
        };
        self.post("/api/mappic/dkms/key/backup", &body, None).await
    }

    /// `GET /api/mappic/dkms/key/backup/get`: the latest backup of a key to a group.
    pub async fn get_key_backup(
        &self,
        key_id: &str,
        backup_group: &str,
    ) -> Result<KeyBackupInfo, ClientError> {
        self.get(
            "/api/mappic/dkms/key/backup/get",
            &[("keyId", key_id), ("backupGroup", backup_group)],
            REQUEST_TIMEOUT,
        )
        .await
    }

    /// `POST /api/mappic/dkms/key/restore`: delivers a blob a custodian re-sealed to a node,
    /// then refreshes every share; follow it with [`Client::wait_task`].
    pub async fn restore_key(
        &self,
        req: &KeyRestoreRequest,
    ) -> Result<KeyImportResponse, ClientError> {
        self.post("/api/mappic/dkms/key/restore", req, None).await
    }

    /// `GET /api/mappic/dkms/task/get`, long-polling until the task ends or `timeout`.
    pub async fn wait_task(
        &self,
        instance_id: &str,
        timeout: Duration,
    ) -> Result<TaskInfo, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let wait = left.as_millis().min(u128::from(MAX_WAIT_MS)).to_string();
            let info: TaskInfo = self
                .get(
                    "/api/mappic/dkms/task/get",
                    &[("instanceId", instance_id), ("waitMs", &wait)],
                    left + REQUEST_TIMEOUT,
                )
                .await?;
            let done = matches!(info.status.as_str(), "FINISHED" | "FAILED" | "REJECTED");
            if done {
                return Ok(info);
            }
            if left.is_zero() {
                return Err(ClientError::Timeout);
            }
        }
    }

    /// `POST /api/mappic/dkms/key/scheduleDeletion` (7 to 30 days; default 30).
    pub async fn schedule_key_deletion(
        &self,
        key_id: &str,
        pending_window_days: Option<i64>,
    ) -> Result<KeyInfo, ClientError> {
        let body = ScheduleDeletionRequest {
            key_id: key_id.to_owned(),
            pending_window_days,
        };
        self.post("/api/mappic/dkms/key/scheduleDeletion", &body, None)
            .await
    }

    /// `GET /api/mappic/dkms/key/get?keyId=...`.
    pub async fn get_key(&self, key_id: &str) -> Result<KeyInfo, ClientError> {
        self.get(PATH_KEY_GET, &[("keyId", key_id)], REQUEST_TIMEOUT)
            .await
    }

    /// `POST /api/mappic/dkms/sign/req`: starts a signing; returns the instance id at once.
    pub async fn request_sign(
        &self,
        key_id: &str,
        digest_hex: &str,
    ) -> Result<String, ClientError> {
        self.request_sign_inner(key_id, digest_hex, None).await
    }

    /// [`Client::request_sign`] with an `Idempotency-Key`: a repeat within 24 h returns the
    /// first instance id and starts no second signing.
    pub async fn request_sign_idempotent(
        &self,
        key_id: &str,
        digest_hex: &str,
        idempotency_key: &str,
    ) -> Result<String, ClientError> {
        self.request_sign_inner(key_id, digest_hex, Some(idempotency_key))
            .await
    }

    async fn request_sign_inner(
        &self,
        key_id: &str,
        digest_hex: &str,
        idempotency_key: Option<&str>,
    ) -> Result<String, ClientError> {
        let body = SignRequest {
            digest_hex: digest_hex.to_owned(),
            key_id: key_id.to_owned(),
            derivation_path: None,
        };
        self.request_sign_body(&body, idempotency_key).await
    }

    /// `POST /api/mappic/dkms/sign/req` with every field of [`SignRequest`] (a
    /// `derivationPath`, say).
    pub async fn request_sign_body(
        &self,
        body: &SignRequest,
        idempotency_key: Option<&str>,
    ) -> Result<String, ClientError> {
        let resp: SignRequestResponse = self.post(PATH_SIGN_REQ, body, idempotency_key).await?;
        Ok(resp.instance_id)
    }

    /// `GET /api/mappic/dkms/key/derive`: the child key of `key_id` at `path` (`m/…`).
    pub async fn derive_key(&self, key_id: &str, path: &str) -> Result<DerivedKey, ClientError> {
        self.get(
            "/api/mappic/dkms/key/derive",
            &[("keyId", key_id), ("path", path)],
            REQUEST_TIMEOUT,
        )
        .await
    }

    /// `GET /api/mappic/dkms/sign/get?instanceId=...`.
    pub async fn get_sign(&self, instance_id: &str) -> Result<SignInfo, ClientError> {
        self.get(
            PATH_SIGN_GET,
            &[("instanceId", instance_id)],
            REQUEST_TIMEOUT,
        )
        .await
    }

    /// Waits until the key's task is terminal (`FINISHED`, `FAILED` or `REJECTED`) and
    /// returns it, or fails with [`ClientError::Timeout`] once `timeout` has passed.
    /// Uses the gateway's long poll, so a finished task is seen at once.
    pub async fn wait_key(&self, key_id: &str, timeout: Duration) -> Result<KeyInfo, ClientError> {
        wait_until_terminal(
            timeout,
            |wait_ms| self.long_poll(PATH_KEY_GET, "keyId", key_id, wait_ms),
            |info: &KeyInfo| info.status.as_str(),
        )
        .await
    }

    /// As [`Client::wait_key`], for a signing task.
    pub async fn wait_sign(
        &self,
        instance_id: &str,
        timeout: Duration,
    ) -> Result<SignInfo, ClientError> {
        wait_until_terminal(
            timeout,
            |wait_ms| self.long_poll(PATH_SIGN_GET, "instanceId", instance_id, wait_ms),
            |info: &SignInfo| info.status.as_str(),
        )
        .await
    }

    /// Requests a signature and waits for the task, all within `timeout`. Returns the
    /// terminal [`SignInfo`]; the caller checks its `status` (a `FAILED` or `REJECTED`
    /// signing is not an `Err`).
    pub async fn sign(
        &self,
        key_id: &str,
        digest_hex: &str,
        timeout: Duration,
    ) -> Result<SignInfo, ClientError> {
        let deadline = Instant::now() + timeout;
        let instance_id = self.request_sign(key_id, digest_hex).await?;
        self.wait_sign(
            &instance_id,
            deadline.saturating_duration_since(Instant::now()),
        )
        .await
    }

    /// Sends any method, path (with query, if any) and body, and returns the HTTP status
    /// and the response body as JSON, whatever its shape. Sends the bearer token unless
    /// `headers` sets `Authorization` itself; `headers` replace any header of the same
    /// name. A body that is not JSON is a [`ClientError::Protocol`] error.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<RawBody>,
        headers: &[(&str, &str)],
    ) -> Result<(u16, serde_json::Value), ClientError> {
        let url = self.url(path, &[])?;
        let mut map = HeaderMap::new();
        if let Some(auth) = &self.auth {
            map.insert(AUTHORIZATION, auth.clone());
        }
        let mut req = self.http.request(method, url).timeout(REQUEST_TIMEOUT);
        if let Some(body) = body {
            if let Some(ct) = &body.content_type {
                let value = HeaderValue::from_str(ct).map_err(|_| {
                    ClientError::InvalidInput(format!("content type {ct:?} is not a header value"))
                })?;
                map.insert(CONTENT_TYPE, value);
            }
            req = req.body(body.bytes);
        }
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| ClientError::InvalidInput(format!("{name:?} is not a header name")))?;
            let value = HeaderValue::from_str(value).map_err(|_| {
                ClientError::InvalidInput(format!("the value of header {name} is not valid"))
            })?;
            map.insert(name, value);
        }
        let (status, bytes) = send(req.headers(map)).await?;
        let value = serde_json::from_slice(&bytes).map_err(|e| {
            ClientError::Protocol(format!(
                "HTTP {status}: response body is not JSON ({e}): {}",
                snippet(&bytes)
            ))
        })?;
        Ok((status, value))
    }

    /// `base + path`, with `query` appended (percent-encoded).
    fn url(&self, path: &str, query: &[(&str, &str)]) -> Result<Url, ClientError> {
        let sep = if path.starts_with('/') { "" } else { "/" };
        let mut url = Url::parse(&format!("{}{sep}{path}", self.base))
            .map_err(|e| ClientError::InvalidInput(format!("path {path:?}: {e}")))?;
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        Ok(url)
    }

    fn authed(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let req = req.header(reqwest::header::ACCEPT, "application/json");
        match &self.auth {
            Some(auth) => req.header(AUTHORIZATION, auth.clone()),
            None => req,
        }
    }

    async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<T, ClientError> {
        let url = self.url(path, query)?;
        let req = self.authed(self.http.get(url).timeout(timeout));
        let (status, body) = send(req).await?;
        decode_envelope(status, &body)
    }

    async fn long_poll<T: DeserializeOwned>(
        &self,
        path: &str,
        id_name: &str,
        id: &str,
        wait_ms: u64,
    ) -> Result<T, ClientError> {
        let wait = wait_ms.to_string();
        let timeout = Duration::from_millis(wait_ms) + LONG_POLL_GRACE;
        self.get(path, &[(id_name, id), ("waitMs", &wait)], timeout)
            .await
    }

    /// A GET whose success body is not the envelope (JSON lines); errors still are.
    async fn get_text(&self, path: &str, query: &[(&str, &str)]) -> Result<String, ClientError> {
        let url = self.url(path, query)?;
        let req = self.authed(self.http.get(url).timeout(REQUEST_TIMEOUT));
        let (status, body) = send(req).await?;
        if (200..300).contains(&status) {
            return String::from_utf8(body)
                .map_err(|_| ClientError::Protocol(format!("{path}: the answer is not UTF-8")));
        }
        decode_envelope::<serde_json::Value>(status, &body)?;
        Err(ClientError::Protocol(format!(
            "{path}: HTTP {status} with a success envelope"
        )))
    }

    async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        idempotency_key: Option<&str>,
    ) -> Result<T, ClientError> {
        let url = self.url(path, &[])?;
        let mut req = self.authed(self.http.post(url).timeout(REQUEST_TIMEOUT).json(body));
        if let Some(key) = idempotency_key {
            let value = HeaderValue::from_str(key).map_err(|_| {
                ClientError::InvalidInput(
                    "the idempotency key contains characters that cannot go into an HTTP header"
                        .into(),
                )
            })?;
            req = req.header(IDEMPOTENCY_KEY_HEADER, value);
        }
        let (status, body) = send(req).await?;
        decode_envelope(status, &body)
    }
}

/// Sends a request and reads the whole response body.
async fn send(req: reqwest::RequestBuilder) -> Result<(u16, Vec<u8>), ClientError> {
    let resp = req
        .send()
        .await
        .map_err(|e| ClientError::Transport(error_chain(&e)))?;
    let status = resp.status().as_u16();
    let body = resp
        .bytes()
        .await
        .map_err(|e| ClientError::Transport(error_chain(&e)))?;
    Ok((status, body.to_vec()))
}

/// Unpacks the envelope: `data` as `T` on success, [`ClientError::Api`] on failure.
fn decode_envelope<T: DeserializeOwned>(status: u16, body: &[u8]) -> Result<T, ClientError> {
    let env: Envelope<serde_json::Value> = serde_json::from_slice(body).map_err(|e| {
        ClientError::Protocol(format!(
            "HTTP {status}: response body is not the dkms envelope ({e}): {}",
            snippet(body)
        ))
    })?;
    if !env.success {
        return Err(ClientError::Api {
            status,
            code: env.error_code,
            message: env.error_message,
        });
    }
    if !(200..300).contains(&status) {
        return Err(ClientError::Protocol(format!(
            "HTTP {status} with an envelope that says success"
        )));
    }
    let data = env.data.unwrap_or(serde_json::Value::Null);
    serde_json::from_value(data).map_err(|e| {
        ClientError::Protocol(format!(
            "HTTP {status}: unexpected `data` in the response: {e}"
        ))
    })
}

/// Polls with `fetch(wait_ms)` until `status_of` gives a terminal status or `timeout` passes.
async fn wait_until_terminal<T, F, Fut>(
    timeout: Duration,
    mut fetch: F,
    status_of: fn(&T) -> &str,
) -> Result<T, ClientError>
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = Result<T, ClientError>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let started = Instant::now();
        let remaining = deadline.saturating_duration_since(started);
        let wait_ms = u64::try_from(remaining.as_millis())
            .unwrap_or(MAX_WAIT_MS)
            .min(MAX_WAIT_MS);
        let item = fetch(wait_ms).await?;
        if is_terminal(status_of(&item)) {
            return Ok(item);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(ClientError::Timeout);
        }
        let elapsed = now - started;
        if elapsed < MIN_POLL_INTERVAL {
            tokio::time::sleep((MIN_POLL_INTERVAL - elapsed).min(deadline - now)).await;
        }
    }
}

/// `FINISHED`, `FAILED` or `REJECTED`. An unknown status counts as still running.
fn is_terminal(status: &str) -> bool {
    status
        .parse::<TaskStatus>()
        .map(TaskStatus::is_terminal)
        .unwrap_or(false)
}

/// An error with its causes, e.g. "error sending request for url (...): ...: Connection refused".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

/// The start of a body, for error messages.
fn snippet(body: &[u8]) -> String {
    if body.is_empty() {
        return "<empty body>".into();
    }
    let text = String::from_utf8_lossy(body);
    let mut out: String = text.chars().take(SNIPPET_CHARS).collect();
    if text.chars().count() > SNIPPET_CHARS {
        out.push('…');
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;
