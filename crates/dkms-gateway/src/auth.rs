//! Authentication: bearer tokens (API keys and login sessions), passwords, and the
//! per-route guard that authenticates, authorizes service actions and writes the audit
//! entry of each request. Tokens are 256-bit random strings; the store keeps only their
//! SHA-256, which is enough for a secret of that entropy. Passwords, which people choose,
//! are stored as Argon2id hashes.

use crate::AppState;
use crate::authz::{self, Access, AuditSlot};
use crate::error::ApiError;
use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use dkms_proto::ErrorCode;
use sha2::{Digest, Sha256};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use zeroize::Zeroizing;

/// Whether a caller logged in as a user or presents an API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    User,
    ApiKey,
}

/// Who is calling, as established by the bearer token, and what this request has been
/// decided so far.
#[derive(Debug, Clone)]
pub struct Principal {
    pub kind: PrincipalKind,
    /// The username, or the API key's id: the Cedar entity id.
    pub id: String,
    /// The API key's name (the username for users).
    pub name: String,
    pub roles: Vec<String>,
    pub groups: Vec<String>,
    /// The user behind the request: the user, or the API key's owner.
    pub user_id: Option<String>,
    /// SHA-256 of the session token, for logout.
    pub session: Option<String>,
    pub client_ip: IpAddr,
    pub request_id: String,
    /// What the route is (see [`Access`]).
    pub access: Access,
    pub audit: AuditSlot,
}

impl Principal {
    /// `user:<name>` or `apiKey:<id>`: how requesters and approvers are recorded.
    pub fn label(&self) -> String {
        match self.kind {
            PrincipalKind::User => format!("user:{}", self.id),
            PrincipalKind::ApiKey => format!("apiKey:{}", self.id),
        }
    }

    /// For messages: `user alice` or `API key "ci" (id)`.
    pub fn display_name(&self) -> String {
        match self.kind {
            PrincipalKind::User => format!("user {}", self.id),
            PrincipalKind::ApiKey => format!("API key {:?} ({})", self.name, self.id),
        }
    }

    pub fn policy_principal(&self) -> dkms_policy::Principal {
        let kind = match self.kind {
            PrincipalKind::User => dkms_policy::PrincipalKind::User,
            PrincipalKind::ApiKey => dkms_policy::PrincipalKind::ApiKey,
        };
        dkms_policy::Principal {
            kind,
            id: self.id.clone(),
            roles: self.roles.clone(),
            groups: self.groups.clone(),
        }
    }

    pub fn audit_principal(&self) -> dkms_audit::Principal {
        let kind = match self.kind {
            PrincipalKind::User => dkms_audit::PrincipalKind::User,
            PrincipalKind::ApiKey => dkms_audit::PrincipalKind::ApiKey,
        };
        dkms_audit::Principal::new(kind, self.id.clone())
    }

    /// Adds a non-secret fact to this request's audit entry.
    pub fn note(&self, key: &str, value: impl Into<String>) {
        let value = value.into();
        self.audit.with(|d| {
            d.details.insert(key.to_owned(), value);
        });
    }
}

pub const ROLE_ADMIN: &str = "admin";

/// Prefix that makes dkms tokens recognisable to secret scanners.
const TOKEN_PREFIX: &str = "dkms_";

/// A fresh random token (returned to its owner once, never stored).
pub fn new_token() -> Result<Zeroizing<String>, ApiError> {
    let mut raw = Zeroizing::new([0u8; 32]);
    getrandom::fill(raw.as_mut()).map_err(ApiError::internal)?;
    Ok(Zeroizing::new(format!(
        "{TOKEN_PREFIX}{}",
        hex::encode(*raw)
    )))
}

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// An Argon2id hash (PHC string, OWASP's default parameters) of `password`, computed
/// on the blocking pool.
pub async fn hash_password(password: Zeroizing<String>) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)
}

/// Whether `password` matches the stored hash. Without a stored hash (no such user) a
/// hash is still checked, so the answer takes as long either way.
pub async fn verify_password(password: Zeroizing<String>, stored: Option<String>) -> bool {
    tokio::task::spawn_blocking(move || {
        let (hash, real) = match stored {
            Some(h) => (h, true),
            None => (dummy_hash().to_owned(), false),
        };
        let ok = Argon2::default()
            .verify_password(password.as_bytes(), hash.as_str())
            .is_ok();
        ok && real
    })
    .await
    .unwrap_or(false)
}

/// An Argon2id hash of a random password nobody knows, for unknown usernames; made
/// once per process with the same parameters as real hashes, so it costs the same.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        let mut secret = Zeroizing::new([0u8; 32]);
        let _ = getrandom::fill(secret.as_mut());
        Argon2::default()
            .hash_password(secret.as_ref())
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

/// The id of a request, set by the outermost middleware.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// What the guard of one route needs.
#[derive(Clone)]
pub struct RouteGuard {
    pub state: AppState,
    pub access: Access,
    /// The audit action name, e.g. `key.gen` for `/api/mappic/dkms/key/gen`.
    pub action: String,
}

/// `/api/mappic/dkms/key/gen` → `key.gen`.
pub fn action_name(path: &str) -> String {
    let rest = path
        .strip_prefix("/api/mappic/dkms/")
        .or_else(|| path.strip_prefix("/api/mappic/"))
        .or_else(|| path.strip_prefix("/api/"))
        .unwrap_or(path);
    rest.replace('/', ".")
}

fn bearer(req: &Request) -> Result<&str, ApiError> {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unauthenticated,
                "missing Authorization header; send `Authorization: Bearer <token>`",
            )
        })?;
    header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unauthenticated,
                "malformed Authorization header; expected `Bearer <token>`",
            )
        })
}

/// Who a token belongs to.
struct Identity {
    kind: PrincipalKind,
    id: String,
    name: String,
    roles: Vec<String>,
    groups: Vec<String>,
    user_id: Option<String>,
    session: Option<String>,
}

/// Finds who a token belongs to: a live login session, or a valid API key.
async fn authenticate(state: &AppState, token: &str) -> Result<Identity, ApiError> {
    let hash = hash_token(token);
    let now = state.clock.now_ms();
    let unauthenticated = || {
        ApiError::new(
            ErrorCode::Unauthenticated,
            "invalid, expired or revoked token",
        )
    };
    if let Some(session) = state.store.find_session(&hash, now).await? {
        let user = state
            .store
            .get_user(&session.user_id)
            .await?
            .filter(|u| !u.disabled)
            .ok_or_else(unauthenticated)?;
        return Ok(Identity {
            kind: PrincipalKind::User,
            id: user.username.clone(),
            name: user.username,
            roles: user.roles,
            groups: user.groups,
            user_id: Some(user.id),
            session: Some(hash),
        });
    }
    let key = state
        .store
        .find_api_key(&hash)
        .await?
        .ok_or_else(unauthenticated)?;
    if key.revoked {
        return Err(ApiError::new(
            ErrorCode::Unauthenticated,
            "this API key was revoked",
        ));
    }
    if key.expires_at.is_some_and(|t| t <= now) {
        return Err(ApiError::new(
            ErrorCode::Unauthenticated,
            "this API key has expired; create a new one",
        ));
    }
    if let Some(owner) = &key.owner {
        let active = state
            .store
            .get_user(owner)
            .await?
            .is_some_and(|u| !u.disabled);
        if !active {
            return Err(ApiError::new(
                ErrorCode::Unauthenticated,
                "the user this API key belongs to is disabled or deleted",
            ));
        }
    }
    if let Err(e) = state.store.touch_api_key(&key.id, now).await {
        tracing::warn!(error = %e, "could not record an API key's last use");
    }
    Ok(Identity {
        kind: PrincipalKind::ApiKey,
        id: key.id,
        name: key.name,
        roles: key.roles,
        groups: key.groups,
        user_id: key.owner,
        session: None,
    })
}

/// The client's address as the TCP connection gives it (a proxy's, behind one).
fn client_ip(ext: &axum::http::Extensions) -> IpAddr {
    ext.get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

fn request_id(ext: &axum::http::Extensions) -> String {
    ext.get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default()
}

/// The caller's address and the request id, for public routes (login) that audit
/// without the guard.
pub struct Caller {
    pub ip: IpAddr,
    pub request_id: String,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Caller {
            ip: client_ip(&parts.extensions),
            request_id: request_id(&parts.extensions),
        })
    }
}

/// Middleware of every non-public route: authenticate, decide service actions, run the
/// handler, then write the audit entry.
pub async fn guard(State(guard): State<RouteGuard>, mut req: Request, next: Next) -> Response {
    let state = &guard.state;
    let token = match bearer(&req) {
        Ok(t) => Zeroizing::new(t.to_owned()),
        Err(e) => return e.into_response(),
    };
    let who = match authenticate(state, &token).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    drop(token);
    let principal = Principal {
        kind: who.kind,
        id: who.id,
        name: who.name,
        roles: who.roles,
        groups: who.groups,
        user_id: who.user_id,
        session: who.session,
        client_ip: client_ip(req.extensions()),
        request_id: request_id(req.extensions()),
        access: guard.access,
        audit: AuditSlot::default(),
    };
    let is_read = req.method() == Method::GET;
    let early = match guard.access {
        Access::Service(action) => principal.authorize_service(state, action).await.err(),
        Access::Authenticated => {
            principal
                .audit
                .with(|d| d.decision = Some((true, Vec::new())));
            None
        }
        Access::Key(_) | Access::Public => None,
    };
    let response = match early {
        Some(e) => e.into_response(),
        None => {
            req.extensions_mut().insert(principal.clone());
            next.run(req).await
        }
    };
    finish(state, &guard, &principal, is_read, response).await
}

/// Writes the request's audit entry and enforces that key routes were authorized.
async fn finish(
    state: &AppState,
    guard: &RouteGuard,
    principal: &Principal,
    is_read: bool,
    response: Response,
) -> Response {
    let draft = principal.audit.take();
    let code = response.extensions().get::<ErrorCode>().copied();
    let success = response.status().is_success();
    if matches!(guard.access, Access::Key(_)) && success && draft.decision.is_none() {
        // A handler answered without asking the policy engine: a bug, never a grant.
        return ApiError::internal(format!(
            "route {} answered without an authorization decision",
            guard.action
        ))
        .into_response();
    }
    let Some((allowed, policies)) = draft.decision else {
        return response;
    };
    if is_read && allowed {
        return response;
    }
    let outcome = match code {
        None if success => "ok".to_owned(),
        None => format!("http {}", response.status().as_u16()),
        Some(c) => c.as_str().to_owned(),
    };
    let mut details: Vec<(String, String)> = draft.details.into_iter().collect();
    if let Access::Service(a) | Access::Key(a) = guard.access {
        details.push(("cedarAction".into(), a.as_str().into()));
    }
    let entry = authz::Entry {
        request_id: &principal.request_id,
        principal: principal.audit_principal(),
        action: &guard.action,
        key_id: draft.key_id.as_deref(),
        allowed,
        policies,
        outcome: &outcome,
        details,
    };
    authz::record(state, entry).await;
    response
}

/// Creates the bootstrap admin key when the store has none, writing the token to `path`
/// (mode 0600). Returns whether a key was created.
pub async fn bootstrap_admin(
    store: &dkms_store::Store,
    path: &std::path::Path,
    now: i64,
) -> Result<bool, ApiError> {
    if store.count_api_keys().await? > 0 {
        return Ok(false);
    }
    let token = new_token()?;
    write_secret_file(path, token.as_bytes()).map_err(ApiError::internal)?;
    let key = dkms_store::ApiKeyRow {
        id: uuid::Uuid::new_v4().to_string(),
        name: "bootstrap admin".into(),
        roles: vec![ROLE_ADMIN.into()],
        groups: Vec::new(),
        owner: None,
        created_at: now,
        expires_at: None,
        last_used_at: None,
        revoked: false,
    };
    store.insert_api_key(&key, &hash_token(&token)).await?;
    Ok(true)
}

/// Writes a file readable only by its owner, replacing it atomically.
pub fn write_secret_file(path: &std::path::Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts.open(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hash_stably() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        assert_ne!(*a, *b);
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() == TOKEN_PREFIX.len() + 64);
        assert_eq!(hash_token(&a), hash_token(&a));
        assert_ne!(hash_token(&a), hash_token(&b));
        assert!(!hash_token(&a).contains(&a[TOKEN_PREFIX.len()..]));
    }

    #[test]
    fn action_names_follow_the_path() {
        assert_eq!(action_name("/api/mappic/dkms/key/gen"), "key.gen");
        assert_eq!(action_name("/api/mappic/pod/createPod"), "pod.createPod");
        assert_eq!(action_name("/api/mappic/policy/put"), "policy.put");
    }

    #[tokio::test]
    async fn passwords_hash_with_argon2id_and_verify() {
        let h = hash_password(Zeroizing::new("correct horse battery".into()))
            .await
            .unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(!h.contains("correct horse"));
        assert!(
            verify_password(
                Zeroizing::new("correct horse battery".into()),
                Some(h.clone())
            )
            .await
        );
        assert!(!verify_password(Zeroizing::new("correct horse batterz".into()), Some(h)).await);
        // No user: false, even for the dummy's password (nobody knows it anyway).
        assert!(!verify_password(Zeroizing::new("x".into()), None).await);
    }
}
