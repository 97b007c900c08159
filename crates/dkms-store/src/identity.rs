//! Identity: users, their login sessions, and API keys.
//!
//! The store holds only derived values: an Argon2id PHC string per user (computed by the
//! gateway; the store never sees a password) and the SHA-256 of every session and API-key
//! token. Changes that must end a user's sessions (a new password, disabling, deletion) do
//! so in the transaction that makes them.

use crate::{ApiKeyRow, Backend, Result, Store, StoreError, json_list};
use sqlx::Row;
use sqlx::any::AnyRow;

/// `touch_api_key` writes only when the stored time is older than this, so a busy key costs
/// at most one write a minute rather than one per request.
const TOUCH_INTERVAL_MS: i64 = 60_000;

/// A user account. `Debug` leaves out the password hash (it can be attacked offline).
#[derive(Clone, PartialEq, Eq)]
pub struct UserRow {
    /// A UUID.
    pub id: String,
    /// Unique, 1–64 characters (the gateway validates).
    pub username: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    pub roles: Vec<String>,
    pub groups: Vec<String>,
    pub disabled: bool,
    /// Consecutive failed logins since the last lock or success.
    pub failed_logins: u32,
    /// Logins are refused until then (ms since the epoch).
    pub locked_until: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl std::fmt::Debug for UserRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRow")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("password_hash", &"<redacted>")
            .field("roles", &self.roles)
            .field("groups", &self.groups)
            .field("disabled", &self.disabled)
            .field("failed_logins", &self.failed_logins)
            .field("locked_until", &self.locked_until)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

/// The changes [`Store::update_user`] makes; `None` leaves a field as it is.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct UserUpdate {
    pub roles: Option<Vec<String>>,
    pub groups: Option<Vec<String>>,
    /// `Some(true)` also ends the user's sessions.
    pub disabled: Option<bool>,
    /// A new Argon2id PHC string; also ends the user's sessions.
    pub password_hash: Option<String>,
}

impl std::fmt::Debug for UserUpdate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserUpdate")
            .field("roles", &self.roles)
            .field("groups", &self.groups)
            .field("disabled", &self.disabled)
            .field(
                "password_hash",
                &self.password_hash.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// A login session, found by the SHA-256 (hex) of its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub token_hash: String,
    pub user_id: String,
    pub created_at: i64,
    pub expires_at: i64,
}

fn to_json(list: &[String]) -> Result<String> {
    serde_json::to_string(list).map_err(|e| StoreError::Db(e.to_string()))
}

fn flag(r: &AnyRow, col: &str) -> Result<bool> {
    Ok(r.try_get::<i64, _>(col)? != 0)
}

fn user_row(r: &AnyRow) -> Result<UserRow> {
    Ok(UserRow {
        id: r.try_get("id")?,
        username: r.try_get("username")?,
        password_hash: r.try_get("password_hash")?,
        roles: json_list(r, "roles")?,
        groups: json_list(r, "group_names")?,
        disabled: flag(r, "disabled")?,
        failed_logins: u32::try_from(r.try_get::<i64, _>("failed_logins")?)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        locked_until: r.try_get("locked_until")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn session_row(r: &AnyRow) -> Result<SessionRow> {
    Ok(SessionRow {
        token_hash: r.try_get("token_hash")?,
        user_id: r.try_get("user_id")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
    })
}

/// The columns of [`api_key_row`]; never the token hash.
macro_rules! api_key_select {
    () => {
        "SELECT id, name, roles, group_names, owner, created_at, expires_at, last_used_at, \
         revoked FROM api_keys"
    };
}

fn api_key_row(r: &AnyRow) -> Result<ApiKeyRow> {
    Ok(ApiKeyRow {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        roles: json_list(r, "roles")?,
        groups: json_list(r, "group_names")?,
        owner: r.try_get("owner")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        last_used_at: r.try_get("last_used_at")?,
        revoked: flag(r, "revoked")?,
    })
}

impl Store {
    // ---- users ----

    /// Creates a user. A taken username (or id) is [`StoreError::Conflict`].
    pub async fn insert_user(&self, u: &UserRow) -> Result<()> {
        self.q(
            "INSERT INTO users (id, username, password_hash, roles, group_names, disabled, \
             failed_logins, locked_until, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(u.id.clone())
        .bind(u.username.clone())
        .bind(u.password_hash.clone())
        .bind(to_json(&u.roles)?)
        .bind(to_json(&u.groups)?)
        .bind(i64::from(u.disabled))
        .bind(i64::from(u.failed_logins))
        .bind(u.locked_until)
        .bind(u.created_at)
        .bind(u.updated_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn get_user(&self, id: &str) -> Result<Option<UserRow>> {
        let row = self
            .q("SELECT * FROM users WHERE id = ?")
            .bind(id.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| user_row(&r)).transpose()
    }

    /// The user with exactly this name (names are compared byte for byte).
    pub async fn get_user_by_name(&self, username: &str) -> Result<Option<UserRow>> {
        let row = self
            .q("SELECT * FROM users WHERE username = ?")
            .bind(username.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| user_row(&r)).transpose()
    }

    /// Every user, by username.
    pub async fn list_users(&self) -> Result<Vec<UserRow>> {
        let rows = self
            .q("SELECT * FROM users ORDER BY username")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(user_row).collect()
    }

    pub async fn count_users(&self) -> Result<i64> {
        let row = self
            .q("SELECT COUNT(*) AS n FROM users")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }

    /// Applies `u`; a new password or disabling also deletes the user's sessions, in the
    /// same transaction. `Ok(false)` if there is no such user.
    pub async fn update_user(&self, id: &str, u: &UserUpdate, now: i64) -> Result<bool> {
        let mut sql = String::from("UPDATE users SET updated_at = ?");
        if u.roles.is_some() {
            sql.push_str(", roles = ?");
        }
        if u.groups.is_some() {
            sql.push_str(", group_names = ?");
        }
        if u.disabled.is_some() {
            sql.push_str(", disabled = ?");
        }
        if u.password_hash.is_some() {
            sql.push_str(", password_hash = ?");
        }
        sql.push_str(" WHERE id = ?");
        let mut q = self.q_built(sql).bind(now);
        if let Some(roles) = &u.roles {
            q = q.bind(to_json(roles)?);
        }
        if let Some(groups) = &u.groups {
            q = q.bind(to_json(groups)?);
        }
        if let Some(disabled) = u.disabled {
            q = q.bind(i64::from(disabled));
        }
        if let Some(hash) = &u.password_hash {
            q = q.bind(hash.clone());
        }
        let mut tx = self.pool.begin().await?;
        // The user row is written first: it orders this against logins and deletion.
        if q.bind(id.to_owned())
            .execute(&mut *tx)
            .await?
            .rows_affected()
            != 1
        {
            return Ok(false);
        }
        if u.password_hash.is_some() || u.disabled == Some(true) {
            self.q("DELETE FROM sessions WHERE user_id = ?")
                .bind(id.to_owned())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Deletes a user with its sessions and revokes the API keys it owns (they stay, with
    /// their owner's id, for the record), in one transaction. `Ok(false)` if there is no
    /// such user.
    pub async fn delete_user(&self, id: &str, now: i64) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        // Lock the user row first, so that a session being created for it concurrently
        // either is seen and deleted here or fails its foreign-key check.
        let lock = match self.backend {
            Backend::Postgres | Backend::MySql => "SELECT id FROM users WHERE id = ? FOR UPDATE",
            // SQLite has one writer at a time: this write takes the database's write lock.
            Backend::Sqlite => "UPDATE users SET updated_at = updated_at WHERE id = ?",
        };
        let q = self.q(lock).bind(id.to_owned());
        let found = match self.backend {
            Backend::Sqlite => q.execute(&mut *tx).await?.rows_affected() == 1,
            Backend::Postgres | Backend::MySql => q.fetch_optional(&mut *tx).await?.is_some(),
        };
        if !found {
            return Ok(false);
        }
        self.q("DELETE FROM sessions WHERE user_id = ?")
            .bind(id.to_owned())
            .execute(&mut *tx)
            .await?;
        self.q("UPDATE api_keys SET revoked = 1, revoked_at = ? WHERE owner = ? AND revoked = 0")
            .bind(now)
            .bind(id.to_owned())
            .execute(&mut *tx)
            .await?;
        self.q("DELETE FROM users WHERE id = ?")
            .bind(id.to_owned())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Records a failed login. The count goes up in one statement, so concurrent failures
    /// all count; the failure that reaches `max_failures` locks the user until
    /// `now + lock_ms`, resets the count and gets `Some(locked_until)`. `None` otherwise
    /// (also when there is no such user).
    pub async fn login_failed(
        &self,
        user_id: &str,
        now: i64,
        max_failures: u32,
        lock_ms: i64,
    ) -> Result<Option<i64>> {
        let until = now.saturating_add(lock_ms);
        let max = i64::from(max_failures);
        let mut tx = self.pool.begin().await?;
        // locked_until is assigned first: MySQL evaluates SET left to right with the new
        // values, and both assignments must see the old count.
        let found = self
            .q(
                "UPDATE users SET \
                 locked_until = CASE WHEN failed_logins + 1 >= ? THEN ? ELSE locked_until END, \
                 failed_logins = CASE WHEN failed_logins + 1 >= ? THEN 0 ELSE failed_logins + 1 END \
                 WHERE id = ?",
            )
            .bind(max)
            .bind(until)
            .bind(max)
            .bind(user_id.to_owned())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if found != 1 {
            return Ok(None);
        }
        // This transaction holds the row's write lock until commit, so the row read here is
        // exactly what the update above made of it; the count is 0 only if it locked.
        let r = self
            .q("SELECT failed_logins, locked_until FROM users WHERE id = ?")
            .bind(user_id.to_owned())
            .fetch_one(&mut *tx)
            .await?;
        let count: i64 = r.try_get("failed_logins")?;
        let locked_until: Option<i64> = r.try_get("locked_until")?;
        tx.commit().await?;
        Ok(if count == 0 { locked_until } else { None })
    }

    /// Records a successful login: the failure count and any lock are cleared.
    pub async fn login_succeeded(&self, user_id: &str) -> Result<()> {
        self.q("UPDATE users SET failed_logins = 0, locked_until = NULL WHERE id = ?")
            .bind(user_id.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- sessions ----

    /// Stores a session. A user that does not exist (or is being deleted) is an error.
    pub async fn insert_session(&self, s: &SessionRow) -> Result<()> {
        self.q(
            "INSERT INTO sessions (token_hash, user_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
        )
        .bind(s.token_hash.clone())
        .bind(s.user_id.clone())
        .bind(s.created_at)
        .bind(s.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The session with this token hash, unless it has expired by `now`.
    pub async fn find_session(&self, token_hash: &str, now: i64) -> Result<Option<SessionRow>> {
        let row = self
            .q("SELECT * FROM sessions WHERE token_hash = ? AND expires_at > ?")
            .bind(token_hash.to_owned())
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| session_row(&r)).transpose()
    }

    /// Ends one session (logout); false if there was none.
    pub async fn delete_session(&self, token_hash: &str) -> Result<bool> {
        let done = self
            .q("DELETE FROM sessions WHERE token_hash = ?")
            .bind(token_hash.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Ends every session of a user; returns how many there were.
    pub async fn delete_user_sessions(&self, user_id: &str) -> Result<u64> {
        let done = self
            .q("DELETE FROM sessions WHERE user_id = ?")
            .bind(user_id.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Deletes sessions that expired by `now`; returns how many.
    pub async fn purge_expired_sessions(&self, now: i64) -> Result<u64> {
        let done = self
            .q("DELETE FROM sessions WHERE expires_at <= ?")
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    // ---- API keys ----

    /// Stores an API key under the SHA-256 (hex) of its token. A taken id or token hash is
    /// [`StoreError::Conflict`]. The legacy `role` column gets the first role.
    pub async fn insert_api_key(&self, k: &ApiKeyRow, token_hash: &str) -> Result<()> {
        self.q(
            "INSERT INTO api_keys (id, token_hash, role, roles, group_names, owner, name, \
             created_at, expires_at, last_used_at, revoked, revoked_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(k.id.clone())
        .bind(token_hash.to_owned())
        .bind(k.roles.first().cloned().unwrap_or_default())
        .bind(to_json(&k.roles)?)
        .bind(to_json(&k.groups)?)
        .bind(k.owner.clone())
        .bind(k.name.clone())
        .bind(k.created_at)
        .bind(k.expires_at)
        .bind(k.last_used_at)
        .bind(i64::from(k.revoked))
        .bind(k.revoked.then_some(k.created_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The key with this token hash, revoked and expired ones included: the caller decides,
    /// and can say precisely why a key is refused.
    pub async fn find_api_key(&self, token_hash: &str) -> Result<Option<ApiKeyRow>> {
        let row = self
            .q(concat!(api_key_select!(), " WHERE token_hash = ?"))
            .bind(token_hash.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| api_key_row(&r)).transpose()
    }

    pub async fn get_api_key(&self, id: &str) -> Result<Option<ApiKeyRow>> {
        let row = self
            .q(concat!(api_key_select!(), " WHERE id = ?"))
            .bind(id.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| api_key_row(&r)).transpose()
    }

    /// Every API key, newest first.
    pub async fn list_api_keys(&self) -> Result<Vec<ApiKeyRow>> {
        let rows = self
            .q(concat!(
                api_key_select!(),
                " ORDER BY created_at DESC, id DESC"
            ))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(api_key_row).collect()
    }

    /// Revokes a key; false if there is no such key or it was already revoked.
    pub async fn revoke_api_key(&self, id: &str, now: i64) -> Result<bool> {
        let done = self
            .q("UPDATE api_keys SET revoked = 1, revoked_at = ? WHERE id = ? AND revoked = 0")
            .bind(now)
            .bind(id.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Notes that a key was used at `now`, writing only if the stored time is unset or more
    /// than a minute older. Returns whether it wrote.
    pub async fn touch_api_key(&self, id: &str, now: i64) -> Result<bool> {
        let done = self
            .q("UPDATE api_keys SET last_used_at = ? \
                 WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)")
            .bind(now)
            .bind(id.to_owned())
            .bind(now.saturating_sub(TOUCH_INTERVAL_MS))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}
