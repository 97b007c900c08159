//! The gateway's metadata store: nodes, keys (public data only), tasks, API keys (hashed)
//! and idempotency records, behind sqlx with versioned migrations.
//!
//! Status changes are guarded in SQL (`WHERE status IN (...)`) so that a task that has
//! reached a terminal state never changes again, whoever races to update it.

use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use std::str::FromStr;
use std::time::Duration;

pub use dkms_proto::TaskStatus;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("record already exists")]
    Conflict,
    #[error("database error: {0}")]
    Db(String),
    #[error("stored record is malformed: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e
            && db.is_unique_violation()
        {
            return StoreError::Conflict;
        }
        StoreError::Db(e.to_string())
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Db(format!("migration failed: {e}"))
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRow {
    pub tag: String,
    pub status: String,
    pub join_token_hash: Option<String>,
    pub signing_key: Option<String>,
    pub encryption_key: Option<String>,
    pub created_at: i64,
}

pub const NODE_PENDING: &str = "PENDING";
pub const NODE_ACTIVE: &str = "ACTIVE";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRow {
    pub key_id: String,
    pub key_type: String,
    pub scheme: String,
    pub threshold: u8,
    pub total_shares: u8,
    pub participants: Vec<String>,
    pub status: TaskStatus,
    pub public_key: Option<String>,
    pub address: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignRow {
    pub instance_id: String,
    pub key_id: String,
    pub digest: String,
    pub status: TaskStatus,
    pub signature: Option<String>,
    pub signers: Vec<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRow {
    pub id: String,
    pub role: String,
    pub name: String,
    pub created_at: i64,
    pub revoked: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotentResponse {
    pub route: String,
    pub request_hash: String,
    pub status_code: u16,
    pub response: String,
}

/// Which tasks a startup sweep found unfinished and ended.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub keys: u64,
    pub signs: u64,
}

#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
}

/// The states a task can still leave.
macro_rules! open_states {
    () => {
        "('INIT','PROCESSING','PENDING_APPROVAL')"
    };
}

impl Store {
    /// Opens (creating if needed) the database at `url` and applies pending migrations.
    pub async fn connect(url: &str) -> Result<Store> {
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Db(format!("bad database url: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await?;
        SQLITE_MIGRATIONS.run(&pool).await?;
        Ok(Store { pool })
    }

    // ---- nodes ----

    pub async fn insert_node(&self, tag: &str, join_token_hash: &str, now: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO nodes (tag, status, join_token_hash, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(tag.to_owned())
        .bind(NODE_PENDING)
        .bind(join_token_hash.to_owned())
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn get_node(&self, tag: &str) -> Result<Option<NodeRow>> {
        let row = sqlx::query("SELECT * FROM nodes WHERE tag = ?")
            .bind(tag.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| node_row(&r)).transpose()
    }

    pub async fn list_nodes(&self) -> Result<Vec<NodeRow>> {
        let rows = sqlx::query("SELECT * FROM nodes ORDER BY created_at, tag")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(node_row).collect()
    }

    /// Pins a node's identity and burns its join token. Only a PENDING node whose token
    /// hash matches is activated; returns whether that happened.
    pub async fn activate_node(
        &self,
        tag: &str,
        join_token_hash: &str,
        signing_key: &str,
        encryption_key: &str,
        now: i64,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE nodes SET status = ?, join_token_hash = NULL, signing_key = ?, encryption_key = ?, updated_at = ? \
             WHERE tag = ? AND status = ? AND join_token_hash = ?",
        )
        .bind(NODE_ACTIVE)
        .bind(signing_key.to_owned())
        .bind(encryption_key.to_owned())
        .bind(now)
        .bind(tag.to_owned())
        .bind(NODE_PENDING)
        .bind(join_token_hash.to_owned())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    // ---- keys ----

    pub async fn insert_key(&self, k: &KeyRow) -> Result<()> {
        let participants =
            serde_json::to_string(&k.participants).map_err(|e| StoreError::Db(e.to_string()))?;
        sqlx::query(
            "INSERT INTO keys (key_id, key_type, scheme, threshold, total_shares, participants, status, \
             public_key, address, error_code, error_message, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(k.key_id.clone())
        .bind(k.key_type.clone())
        .bind(k.scheme.clone())
        .bind(i64::from(k.threshold))
        .bind(i64::from(k.total_shares))
        .bind(participants)
        .bind(k.status.as_str())
        .bind(k.public_key.clone())
        .bind(k.address.clone())
        .bind(k.error_code.clone())
        .bind(k.error_message.clone())
        .bind(k.created_at)
        .bind(k.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn get_key(&self, key_id: &str) -> Result<Option<KeyRow>> {
        let row = sqlx::query("SELECT * FROM keys WHERE key_id = ?")
            .bind(key_id.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| key_row(&r)).transpose()
    }

    /// INIT → PROCESSING. Returns false if the key was no longer INIT.
    pub async fn start_key(&self, key_id: &str, now: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE keys SET status = 'PROCESSING', updated_at = ? WHERE key_id = ? AND status = 'INIT'",
        )
        .bind(now)
        .bind(key_id.to_owned())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn finish_key(
        &self,
        key_id: &str,
        public_key: &str,
        address: Option<&str>,
        now: i64,
    ) -> Result<bool> {
        let done = sqlx::query(concat!(
            "UPDATE keys SET status = 'FINISHED', public_key = ?, address = ?, updated_at = ? \
             WHERE key_id = ? AND status IN ",
            open_states!()
        ))
        .bind(public_key.to_owned())
        .bind(address.map(str::to_owned))
        .bind(now)
        .bind(key_id.to_owned())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn fail_key(
        &self,
        key_id: &str,
        code: &str,
        message: &str,
        now: i64,
    ) -> Result<bool> {
        let done = sqlx::query(concat!(
            "UPDATE keys SET status = 'FAILED', error_code = ?, error_message = ?, updated_at = ? \
             WHERE key_id = ? AND status IN ",
            open_states!()
        ))
        .bind(code.to_owned())
        .bind(message.to_owned())
        .bind(now)
        .bind(key_id.to_owned())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    // ---- sign tasks ----

    pub async fn insert_sign(&self, s: &SignRow) -> Result<()> {
        let signers =
            serde_json::to_string(&s.signers).map_err(|e| StoreError::Db(e.to_string()))?;
        sqlx::query(
            "INSERT INTO sign_tasks (instance_id, key_id, digest, status, signature, signers, error_code, \
             error_message, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(s.instance_id.clone())
        .bind(s.key_id.clone())
        .bind(s.digest.clone())
        .bind(s.status.as_str())
        .bind(s.signature.clone())
        .bind(signers)
        .bind(s.error_code.clone())
        .bind(s.error_message.clone())
        .bind(s.created_at)
        .bind(s.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn get_sign(&self, instance_id: &str) -> Result<Option<SignRow>> {
        let row = sqlx::query("SELECT * FROM sign_tasks WHERE instance_id = ?")
            .bind(instance_id.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| sign_row(&r)).transpose()
    }

    /// INIT → PROCESSING with the chosen signers.
    pub async fn start_sign(
        &self,
        instance_id: &str,
        signers: &[String],
        now: i64,
    ) -> Result<bool> {
        let signers = serde_json::to_string(signers).map_err(|e| StoreError::Db(e.to_string()))?;
        let done = sqlx::query(
            "UPDATE sign_tasks SET status = 'PROCESSING', signers = ?, updated_at = ? \
             WHERE instance_id = ? AND status IN ('INIT','PROCESSING')",
        )
        .bind(signers)
        .bind(now)
        .bind(instance_id.to_owned())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn finish_sign(&self, instance_id: &str, signature: &str, now: i64) -> Result<bool> {
        let done = sqlx::query(concat!(
            "UPDATE sign_tasks SET status = 'FINISHED', signature = ?, updated_at = ? \
             WHERE instance_id = ? AND status IN ",
            open_states!()
        ))
        .bind(signature.to_owned())
        .bind(now)
        .bind(instance_id.to_owned())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn fail_sign(
        &self,
        instance_id: &str,
        code: &str,
        message: &str,
        now: i64,
    ) -> Result<bool> {
        let done = sqlx::query(concat!(
            "UPDATE sign_tasks SET status = 'FAILED', error_code = ?, error_message = ?, updated_at = ? \
             WHERE instance_id = ? AND status IN ",
            open_states!()
        ))
        .bind(code.to_owned())
        .bind(message.to_owned())
        .bind(now)
        .bind(instance_id.to_owned())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Ends every unfinished task as FAILED. Run at gateway start: a task that was running
    /// when the previous process died cannot be resumed (its sessions lived in memory).
    pub async fn fail_unfinished(&self, code: &str, message: &str, now: i64) -> Result<Swept> {
        let keys = sqlx::query(concat!(
            "UPDATE keys SET status = 'FAILED', error_code = ?, error_message = ?, updated_at = ? WHERE status IN ",
            open_states!()
        ))
        .bind(code.to_owned())
        .bind(message.to_owned())
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected();
        let signs = sqlx::query(concat!(
            "UPDATE sign_tasks SET status = 'FAILED', error_code = ?, error_message = ?, updated_at = ? WHERE status IN ",
            open_states!()
        ))
        .bind(code.to_owned())
        .bind(message.to_owned())
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(Swept { keys, signs })
    }

    // ---- API keys ----

    pub async fn insert_api_key(
        &self,
        id: &str,
        token_hash: &str,
        role: &str,
        name: &str,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO api_keys (id, token_hash, role, name, created_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(id.to_owned())
        .bind(token_hash.to_owned())
        .bind(role.to_owned())
        .bind(name.to_owned())
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn find_api_key(&self, token_hash: &str) -> Result<Option<ApiKeyRow>> {
        let row = sqlx::query(
            "SELECT id, role, name, created_at, revoked FROM api_keys WHERE token_hash = ?",
        )
        .bind(token_hash.to_owned())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(ApiKeyRow {
                id: r.try_get("id")?,
                role: r.try_get("role")?,
                name: r.try_get("name")?,
                created_at: r.try_get("created_at")?,
                revoked: r.try_get::<i64, _>("revoked")? != 0,
            })
        })
        .transpose()
    }

    pub async fn count_api_keys(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM api_keys")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }

    // ---- idempotency ----

    /// Claims `key` for this request, or returns what the first request with that key got.
    /// A record older than `not_before` has expired and is replaced.
    pub async fn reserve_idempotent(
        &self,
        principal: &str,
        key: &str,
        route: &str,
        request_hash: &str,
        now: i64,
        not_before: i64,
    ) -> Result<Reservation> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "DELETE FROM idempotency WHERE principal = ? AND idem_key = ? AND created_at < ?",
        )
        .bind(principal.to_owned())
        .bind(key.to_owned())
        .bind(not_before)
        .execute(&mut *tx)
        .await?;
        let inserted = sqlx::query(
            "INSERT INTO idempotency (principal, idem_key, route, request_hash, status_code, response, created_at) \
             VALUES (?, ?, ?, ?, 0, '', ?) ON CONFLICT (principal, idem_key) DO NOTHING",
        )
        .bind(principal.to_owned())
        .bind(key.to_owned())
        .bind(route.to_owned())
        .bind(request_hash.to_owned())
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let out = if inserted == 1 {
            Reservation::Reserved
        } else {
            let r = sqlx::query(
                "SELECT route, request_hash, status_code, response FROM idempotency \
                 WHERE principal = ? AND idem_key = ?",
            )
            .bind(principal.to_owned())
            .bind(key.to_owned())
            .fetch_one(&mut *tx)
            .await?;
            Reservation::Existing(IdempotentResponse {
                route: r.try_get("route")?,
                request_hash: r.try_get("request_hash")?,
                status_code: u16::try_from(r.try_get::<i64, _>("status_code")?)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                response: r.try_get("response")?,
            })
        };
        tx.commit().await?;
        Ok(out)
    }

    /// Stores the answer to a reserved request.
    pub async fn complete_idempotent(
        &self,
        principal: &str,
        key: &str,
        status_code: u16,
        response: &str,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE idempotency SET status_code = ?, response = ? WHERE principal = ? AND idem_key = ?",
        )
        .bind(i64::from(status_code))
        .bind(response.to_owned())
        .bind(principal.to_owned())
        .bind(key.to_owned())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets a reservation whose request failed before producing an answer worth replaying.
    pub async fn release_idempotent(&self, principal: &str, key: &str) -> Result<()> {
        sqlx::query(
            "DELETE FROM idempotency WHERE principal = ? AND idem_key = ? AND status_code = 0",
        )
        .bind(principal.to_owned())
        .bind(key.to_owned())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Issues a fresh join token for a node that has not joined yet.
    pub async fn set_join_token(&self, tag: &str, join_token_hash: &str, now: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE nodes SET join_token_hash = ?, updated_at = ? WHERE tag = ? AND status = ?",
        )
        .bind(join_token_hash.to_owned())
        .bind(now)
        .bind(tag.to_owned())
        .bind(NODE_PENDING)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

/// The outcome of [`Store::reserve_idempotent`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    Reserved,
    /// `status_code` 0 means the first request is still being answered.
    Existing(IdempotentResponse),
}

fn status(r: &SqliteRow) -> Result<TaskStatus> {
    let s: String = r.try_get("status")?;
    TaskStatus::from_str(&s).map_err(|e| StoreError::Corrupt(e.0))
}

fn json_list(r: &SqliteRow, col: &str) -> Result<Vec<String>> {
    let s: Option<String> = r.try_get(col)?;
    match s {
        None => Ok(Vec::new()),
        Some(s) => serde_json::from_str(&s).map_err(|e| StoreError::Corrupt(e.to_string())),
    }
}

fn small(r: &SqliteRow, col: &str) -> Result<u8> {
    u8::try_from(r.try_get::<i64, _>(col)?).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn node_row(r: &SqliteRow) -> Result<NodeRow> {
    Ok(NodeRow {
        tag: r.try_get("tag")?,
        status: r.try_get("status")?,
        join_token_hash: r.try_get("join_token_hash")?,
        signing_key: r.try_get("signing_key")?,
        encryption_key: r.try_get("encryption_key")?,
        created_at: r.try_get("created_at")?,
    })
}

fn key_row(r: &SqliteRow) -> Result<KeyRow> {
    Ok(KeyRow {
        key_id: r.try_get("key_id")?,
        key_type: r.try_get("key_type")?,
        scheme: r.try_get("scheme")?,
        threshold: small(r, "threshold")?,
        total_shares: small(r, "total_shares")?,
        participants: json_list(r, "participants")?,
        status: status(r)?,
        public_key: r.try_get("public_key")?,
        address: r.try_get("address")?,
        error_code: r.try_get("error_code")?,
        error_message: r.try_get("error_message")?,
        created_at: r.try_get("created_at")?,
    })
}

fn sign_row(r: &SqliteRow) -> Result<SignRow> {
    Ok(SignRow {
        instance_id: r.try_get("instance_id")?,
        key_id: r.try_get("key_id")?,
        digest: r.try_get("digest")?,
        status: status(r)?,
        signature: r.try_get("signature")?,
        signers: json_list(r, "signers")?,
        error_code: r.try_get("error_code")?,
        error_message: r.try_get("error_message")?,
        created_at: r.try_get("created_at")?,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    async fn mem() -> Store {
        Store::connect("sqlite::memory:").await.unwrap()
    }

    fn key(id: &str) -> KeyRow {
        KeyRow {
            key_id: id.into(),
            key_type: "ECDSA_K1".into(),
            scheme: "DKLS23_SECP256K1".into(),
            threshold: 2,
            total_shares: 3,
            participants: vec!["a".into(), "b".into(), "c".into()],
            status: TaskStatus::Init,
            public_key: None,
            address: None,
            error_code: None,
            error_message: None,
            created_at: 1,
        }
    }

    #[tokio::test]
    async fn nodes_join_once() {
        let s = mem().await;
        s.insert_node("n1", "h", 1).await.unwrap();
        assert!(matches!(
            s.insert_node("n1", "h", 1).await,
            Err(StoreError::Conflict)
        ));
        assert!(!s.activate_node("n1", "wrong", "sk", "ek", 2).await.unwrap());
        assert!(s.activate_node("n1", "h", "sk", "ek", 2).await.unwrap());
        assert!(!s.activate_node("n1", "h", "sk2", "ek2", 3).await.unwrap());
        let n = s.get_node("n1").await.unwrap().unwrap();
        assert_eq!(n.status, NODE_ACTIVE);
        assert_eq!(n.signing_key.as_deref(), Some("sk"));
        assert_eq!(n.join_token_hash, None);
    }

    #[tokio::test]
    async fn terminal_states_stick() {
        let s = mem().await;
        s.insert_key(&key("k1")).await.unwrap();
        assert!(s.start_key("k1", 2).await.unwrap());
        assert!(!s.start_key("k1", 2).await.unwrap());
        assert!(s.finish_key("k1", "02ab", Some("0xabc"), 3).await.unwrap());
        assert!(!s.fail_key("k1", "X", "late failure", 4).await.unwrap());
        let k = s.get_key("k1").await.unwrap().unwrap();
        assert_eq!(k.status, TaskStatus::Finished);
        assert_eq!(k.participants, vec!["a", "b", "c"]);

        let sign = SignRow {
            instance_id: "s1".into(),
            key_id: "k1".into(),
            digest: "00".repeat(32),
            status: TaskStatus::Init,
            signature: None,
            signers: vec![],
            error_code: None,
            error_message: None,
            created_at: 5,
        };
        s.insert_sign(&sign).await.unwrap();
        assert!(
            s.start_sign("s1", &["a".into(), "b".into()], 6)
                .await
                .unwrap()
        );
        assert!(
            s.fail_sign("s1", "NODE_UNAVAILABLE", "gone", 7)
                .await
                .unwrap()
        );
        assert!(!s.finish_sign("s1", "ff", 8).await.unwrap());
        let got = s.get_sign("s1").await.unwrap().unwrap();
        assert_eq!(got.status, TaskStatus::Failed);
        assert_eq!(got.signers, vec!["a", "b"]);
    }

    #[tokio::test]
    async fn sweep_fails_only_open_tasks() {
        let s = mem().await;
        s.insert_key(&key("open")).await.unwrap();
        s.insert_key(&key("done")).await.unwrap();
        s.finish_key("done", "02", None, 2).await.unwrap();
        let swept = s.fail_unfinished("INTERNAL", "restarted", 3).await.unwrap();
        assert_eq!(swept, Swept { keys: 1, signs: 0 });
        assert_eq!(
            s.get_key("open").await.unwrap().unwrap().status,
            TaskStatus::Failed
        );
        assert_eq!(
            s.get_key("done").await.unwrap().unwrap().status,
            TaskStatus::Finished
        );
    }

    #[tokio::test]
    async fn idempotency_reserves_once_and_expires() {
        let s = mem().await;
        let r = s
            .reserve_idempotent("p", "k", "sign", "h", 10, 0)
            .await
            .unwrap();
        assert_eq!(r, Reservation::Reserved);
        match s
            .reserve_idempotent("p", "k", "sign", "h", 11, 0)
            .await
            .unwrap()
        {
            Reservation::Existing(e) => assert_eq!(e.status_code, 0),
            other => panic!("{other:?}"),
        }
        s.complete_idempotent("p", "k", 200, "{}").await.unwrap();
        match s
            .reserve_idempotent("p", "k", "sign", "h2", 12, 0)
            .await
            .unwrap()
        {
            Reservation::Existing(e) => {
                assert_eq!((e.status_code, e.request_hash.as_str()), (200, "h"))
            }
            other => panic!("{other:?}"),
        }
        // Another principal has its own key space; an expired record is replaced.
        assert_eq!(
            s.reserve_idempotent("q", "k", "sign", "h", 12, 0)
                .await
                .unwrap(),
            Reservation::Reserved
        );
        assert_eq!(
            s.reserve_idempotent("p", "k", "sign", "h", 30, 20)
                .await
                .unwrap(),
            Reservation::Reserved
        );
        s.release_idempotent("p", "k").await.unwrap();
        assert_eq!(
            s.reserve_idempotent("p", "k", "sign", "h", 31, 20)
                .await
                .unwrap(),
            Reservation::Reserved
        );
    }
}
