//! Bearer-token authentication. Tokens are 256-bit random strings; the store keeps only
//! their SHA-256, which is enough for a secret of that entropy (no password stretching needed).

use crate::AppState;
use crate::error::ApiError;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use dkms_proto::ErrorCode;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Who is calling, as established by the bearer token.
#[derive(Debug, Clone)]
pub struct Principal {
    pub id: String,
    pub role: String,
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

/// Middleware: every route behind it requires a valid bearer token.
pub async fn require_token(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
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
    let token = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unauthenticated,
                "malformed Authorization header; expected `Bearer <token>`",
            )
        })?;
    let key = state
        .store
        .find_api_key(&hash_token(token))
        .await?
        .filter(|k| !k.revoked)
        .ok_or_else(|| ApiError::new(ErrorCode::Unauthenticated, "invalid or revoked token"))?;
    req.extensions_mut().insert(Principal {
        id: key.id,
        role: key.role,
    });
    Ok(next.run(req).await)
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
    let id = uuid::Uuid::new_v4().to_string();
    store
        .insert_api_key(&id, &hash_token(&token), ROLE_ADMIN, "bootstrap admin", now)
        .await?;
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
}
