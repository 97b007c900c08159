//! Users, login sessions and API keys. Passwords are Argon2id-hashed on the blocking
//! pool and wiped; tokens are shown once and stored as SHA-256.

use super::{ApiJson, ok, rfc3339};
use crate::auth::{self, Caller, Principal};
use crate::error::{ApiError, ApiResult};
use crate::extract::SecretJson;
use crate::{AppState, authz};
use axum::extract::State;
use axum::{Extension, Json};
use dkms_proto::ErrorCode;
use dkms_proto::api::{
    ApiKeyInfo, ApiKeyRequest, Envelope, IdRequest, LoginRequest, LoginResponse, UserInfo,
    UserRequest, UsernameRequest, WhoAmI,
};
use zeroize::Zeroizing;

const MIN_PASSWORD: usize = 12;
const MAX_PASSWORD: usize = 256;
/// Roles or groups one principal may carry.
const MAX_MEMBERSHIPS: usize = 32;

fn check_username(name: &str) -> ApiResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.@-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "username must be 1 to 64 characters of [A-Za-z0-9_.@-]",
        ))
    }
}

fn check_password(password: &str) -> ApiResult<()> {
    let n = password.chars().count();
    if (MIN_PASSWORD..=MAX_PASSWORD).contains(&n) {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters"
        )))
    }
}

/// Role and group names as the policy engine takes them (Cedar entity ids).
fn check_names(field: &str, names: &[String]) -> ApiResult<()> {
    if names.len() > MAX_MEMBERSHIPS {
        return Err(ApiError::invalid(format!(
            "{field}: at most {MAX_MEMBERSHIPS} entries"
        )));
    }
    for (i, n) in names.iter().enumerate() {
        // The same rule the policy engine applies to the names policies use.
        if !dkms_policy::is_valid_name(n) {
            return Err(ApiError::invalid(format!(
                "{field}[{i}]: {n:?} must be 1 to 128 printable characters without spaces or quotes"
            )));
        }
    }
    Ok(())
}

fn user_info(u: dkms_store::UserRow, now: i64) -> UserInfo {
    UserInfo {
        username: u.username,
        roles: u.roles,
        groups: u.groups,
        disabled: u.disabled,
        locked_until: u.locked_until.filter(|t| *t > now).map(rfc3339),
        created_at: rfc3339(u.created_at),
    }
}

fn api_key_info(k: dkms_store::ApiKeyRow) -> ApiKeyInfo {
    ApiKeyInfo {
        id: k.id,
        name: k.name,
        roles: k.roles,
        groups: k.groups,
        owner: k.owner,
        created_at: rfc3339(k.created_at),
        expires_at: k.expires_at.map(rfc3339),
        last_used_at: k.last_used_at.map(rfc3339),
        revoked: k.revoked,
        token: None,
    }
}

/// Writes the audit entry of a login attempt (login is public, so no guard writes it).
async fn audit_login(state: &AppState, caller: &Caller, username: &str, outcome: &str) {
    let entry = authz::Entry {
        request_id: &caller.request_id,
        principal: dkms_audit::Principal::new(dkms_audit::PrincipalKind::User, username),
        action: "auth.login",
        key_id: None,
        allowed: outcome == "ok",
        policies: Vec::new(),
        outcome,
        details: vec![("clientIp".into(), caller.ip.to_string())],
    };
    authz::record(state, entry).await;
}

/// `POST /api/mappic/auth/login`: a session token for a username and password. Failed
/// attempts in a row lock the account for a while; the answer never says whether the
/// username exists.
pub(super) async fn login(
    State(state): State<AppState>,
    caller: Caller,
    SecretJson(req): SecretJson<LoginRequest>,
) -> ApiResult<Json<Envelope<LoginResponse>>> {
    let LoginRequest { username, password } = req;
    let password = Zeroizing::new(password);
    let refused = || {
        ApiError::new(
            ErrorCode::Unauthenticated,
            "wrong username or password, or the account is disabled or locked",
        )
    };
    if check_username(&username).is_err() || password.chars().count() > MAX_PASSWORD {
        audit_login(&state, &caller, "-", "INVALID_PARAMETER").await;
        return Err(refused());
    }
    let now = state.clock.now_ms();
    let user = state.store.get_user_by_name(&username).await?;
    let locked = user
        .as_ref()
        .is_some_and(|u| u.locked_until.is_some_and(|t| t > now));
    let matches =
        auth::verify_password(password, user.as_ref().map(|u| u.password_hash.clone())).await;
    let user = match user {
        Some(u) if matches && !u.disabled && !locked => u,
        other => {
            // A wrong password counts towards the lockout; attempts during a lockout are
            // refused without being counted, so they do not extend it.
            if let Some(u) = other.filter(|_| !locked && !matches)
                && let Some(until) = state
                    .store
                    .login_failed(
                        &u.id,
                        now,
                        state.config.max_failed_logins,
                        i64::try_from(state.config.login_lockout.as_millis()).unwrap_or(i64::MAX),
                    )
                    .await?
            {
                tracing::warn!(username = %username, until = %rfc3339(until), "account locked after failed logins");
            }
            let outcome = if locked { "LOCKED" } else { "UNAUTHENTICATED" };
            audit_login(&state, &caller, &username, outcome).await;
            return Err(refused());
        }
    };
    state.store.login_succeeded(&user.id).await?;
    let token = auth::new_token()?;
    let ttl = i64::try_from(state.config.session_ttl.as_millis()).unwrap_or(i64::MAX);
    let expires_at = now.saturating_add(ttl);
    state
        .store
        .insert_session(&dkms_store::SessionRow {
            token_hash: auth::hash_token(&token),
            user_id: user.id.clone(),
            created_at: now,
            expires_at,
        })
        .await?;
    audit_login(&state, &caller, &username, "ok").await;
    Ok(ok(LoginResponse {
        token: token.to_string(),
        expires_at: rfc3339(expires_at),
        username: user.username,
        roles: user.roles,
    }))
}

/// `POST /api/mappic/auth/logout`: ends the session of the token presented.
pub(super) async fn logout(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> ApiResult<Json<Envelope<bool>>> {
    let Some(session) = &principal.session else {
        return Err(ApiError::invalid(
            "this token is an API key, not a login session; revoke it with apikey/revoke",
        ));
    };
    Ok(ok(state.store.delete_session(session).await?))
}

/// `GET /api/mappic/auth/whoami`
pub(super) async fn whoami(Extension(principal): Extension<Principal>) -> Json<Envelope<WhoAmI>> {
    ok(WhoAmI {
        kind: match principal.kind {
            auth::PrincipalKind::User => "user".into(),
            auth::PrincipalKind::ApiKey => "apiKey".into(),
        },
        id: principal.id,
        name: principal.name,
        roles: principal.roles,
        groups: principal.groups,
    })
}

async fn user_named(state: &AppState, username: &str) -> ApiResult<dkms_store::UserRow> {
    check_username(username)?;
    state
        .store
        .get_user_by_name(username)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::PrincipalNotFound,
                format!("no user named {username}"),
            )
        })
}

/// `POST /api/mappic/user/create`
pub(super) async fn user_create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    SecretJson(req): SecretJson<UserRequest>,
) -> ApiResult<Json<Envelope<UserInfo>>> {
    let UserRequest {
        username,
        password,
        roles,
        groups,
        disabled,
    } = req;
    let password = Zeroizing::new(
        password.ok_or_else(|| ApiError::invalid("password is required for a new user"))?,
    );
    check_username(&username)?;
    check_password(&password)?;
    let roles = roles.unwrap_or_default();
    let groups = groups.unwrap_or_default();
    check_names("roles", &roles)?;
    check_names("groups", &groups)?;
    principal.note("username", &username);
    principal.note("roles", roles.join(","));
    let now = state.clock.now_ms();
    let row = dkms_store::UserRow {
        id: uuid::Uuid::new_v4().to_string(),
        username: username.clone(),
        password_hash: auth::hash_password(password).await?,
        roles,
        groups,
        disabled: disabled.unwrap_or(false),
        failed_logins: 0,
        locked_until: None,
        created_at: now,
        updated_at: now,
    };
    state.store.insert_user(&row).await.map_err(|e| match e {
        dkms_store::StoreError::Conflict => ApiError::new(
            ErrorCode::Conflict,
            format!("user {username} already exists"),
        ),
        other => other.into(),
    })?;
    Ok(ok(user_info(row, now)))
}

/// `POST /api/mappic/user/update`: roles, groups, disabled, or a new password. Disabling
/// a user or setting a password ends their sessions.
pub(super) async fn user_update(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    SecretJson(req): SecretJson<UserRequest>,
) -> ApiResult<Json<Envelope<UserInfo>>> {
    let UserRequest {
        username,
        password,
        roles,
        groups,
        disabled,
    } = req;
    let password = password.map(Zeroizing::new);
    let user = user_named(&state, &username).await?;
    if let Some(p) = &password {
        check_password(p)?;
    }
    if let Some(r) = &roles {
        check_names("roles", r)?;
    }
    if let Some(g) = &groups {
        check_names("groups", g)?;
    }
    if roles.is_none() && groups.is_none() && disabled.is_none() && password.is_none() {
        return Err(ApiError::invalid(
            "nothing to change: give roles, groups, disabled or password",
        ));
    }
    principal.note("username", &username);
    if let Some(r) = &roles {
        principal.note("roles", r.join(","));
    }
    if password.is_some() {
        principal.note("passwordChanged", "true");
    }
    let password_hash = match password {
        Some(p) => Some(auth::hash_password(p).await?),
        None => None,
    };
    let unlock = password_hash.is_some() || disabled == Some(false);
    let now = state.clock.now_ms();
    state
        .store
        .update_user(
            &user.id,
            &dkms_store::UserUpdate {
                roles,
                groups,
                disabled,
                password_hash,
            },
            now,
        )
        .await?;
    if unlock {
        // An admin who sets a password or enables the account also lifts a lockout.
        state.store.login_succeeded(&user.id).await?;
    }
    Ok(ok(user_info(user_named(&state, &username).await?, now)))
}

/// `POST /api/mappic/user/delete`: also ends the user's sessions and revokes their API keys.
pub(super) async fn user_delete(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiJson(req): ApiJson<UsernameRequest>,
) -> ApiResult<Json<Envelope<bool>>> {
    let user = user_named(&state, &req.username).await?;
    if principal.user_id.as_deref() == Some(user.id.as_str()) {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            "you cannot delete your own user; ask another admin",
        ));
    }
    principal.note("username", &req.username);
    Ok(ok(state
        .store
        .delete_user(&user.id, state.clock.now_ms())
        .await?))
}

/// `GET /api/mappic/user/list`
pub(super) async fn user_list(
    State(state): State<AppState>,
) -> ApiResult<Json<Envelope<Vec<UserInfo>>>> {
    let now = state.clock.now_ms();
    Ok(ok(state
        .store
        .list_users()
        .await?
        .into_iter()
        .map(|u| user_info(u, now))
        .collect()))
}

/// `POST /api/mappic/apikey/create`: the token is in this answer and nowhere else.
pub(super) async fn apikey_create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiJson(req): ApiJson<ApiKeyRequest>,
) -> ApiResult<Json<Envelope<ApiKeyInfo>>> {
    let name_ok = !req.name.trim().is_empty() && req.name.chars().count() <= 128;
    if !name_ok {
        return Err(ApiError::invalid("name must be 1 to 128 characters"));
    }
    if req.roles.is_empty() {
        return Err(ApiError::invalid(
            "roles must name at least one role (admin, operator, signer, approver, auditor or a custom one)",
        ));
    }
    check_names("roles", &req.roles)?;
    check_names("groups", &req.groups)?;
    let now = state.clock.now_ms();
    let expires_at = match req.expires_in_days {
        None => None,
        Some(d) if (1..=3650).contains(&d) => Some(now.saturating_add(d * 86_400_000)),
        Some(d) => {
            return Err(ApiError::invalid(format!(
                "expiresInDays must be 1 to 3650, got {d}"
            )));
        }
    };
    let token = auth::new_token()?;
    let row = dkms_store::ApiKeyRow {
        id: uuid::Uuid::new_v4().to_string(),
        name: req.name.clone(),
        roles: req.roles.clone(),
        groups: req.groups.clone(),
        owner: principal.user_id.clone(),
        created_at: now,
        expires_at,
        last_used_at: None,
        revoked: false,
    };
    state
        .store
        .insert_api_key(&row, &auth::hash_token(&token))
        .await?;
    principal.note("apiKeyId", &row.id);
    principal.note("roles", req.roles.join(","));
    let mut info = api_key_info(row);
    info.token = Some(token.to_string());
    Ok(ok(info))
}

/// `GET /api/mappic/apikey/list`
pub(super) async fn apikey_list(
    State(state): State<AppState>,
) -> ApiResult<Json<Envelope<Vec<ApiKeyInfo>>>> {
    Ok(ok(state
        .store
        .list_api_keys()
        .await?
        .into_iter()
        .map(api_key_info)
        .collect()))
}

/// `POST /api/mappic/apikey/revoke`
pub(super) async fn apikey_revoke(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiJson(req): ApiJson<IdRequest>,
) -> ApiResult<Json<Envelope<ApiKeyInfo>>> {
    let key = state.store.get_api_key(&req.id).await?.ok_or_else(|| {
        ApiError::new(
            ErrorCode::PrincipalNotFound,
            format!("no API key with id {}", req.id),
        )
    })?;
    principal.note("apiKeyId", &key.id);
    if !state
        .store
        .revoke_api_key(&key.id, state.clock.now_ms())
        .await?
    {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("API key {} is already revoked", key.id),
        ));
    }
    let key = state.store.get_api_key(&req.id).await?.unwrap_or(key);
    Ok(ok(api_key_info(key)))
}
