//! The gateway's metadata store: nodes, mpc_keys (public data only), tasks, API mpc_keys (hashed)
//! and idempotency records, behind sqlx with versioned migrations.
//!
//! Status changes are guarded in SQL (`WHERE status IN (...)`) so that a task that has
//! reached a terminal state never changes again, whoever races to update it.

use sqlx::any::{AnyArguments, AnyPoolOptions, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, AnyPool, AssertSqlSafe, Executor, Row};
use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

pub use dkms_proto::TaskStatus;

mod approvals;
mod audit;
mod backup;
mod identity;
mod leases;
mod policies;
mod quota;
pub mod testdb;

pub use backup::{BackupGroupRow, KeyBackupRow};
pub use identity::{SessionRow, UserRow, UserUpdate};
pub use leases::{GatewayRow, Orphans};
pub use policies::PolicyRow;

pub use approvals::{
    APPROVAL_COMMENT_MAX, APPROVER_MAX, ApprovalOutcome, ApprovalRefused, ApprovalRow,
    ApprovalRule, ERROR_APPROVAL_EXPIRED, ERROR_REJECTED, SignExtras,
};
pub use audit::{
    AUDIT_ACTION_MAX, AUDIT_DEFAULT_LIMIT, AUDIT_MAX_LIMIT, AUDIT_PRINCIPAL_ID_MAX,
    AUDIT_RESOURCE_MAX,
};
pub use quota::QUOTA_SCOPE_MAX;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static MYSQL_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/mysql");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The SQL servers the store runs on, chosen by the scheme of `database.url`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    MySql,
    Postgres,
}

impl Backend {
    pub fn from_url(url: &str) -> Result<Backend> {
        let scheme = url.split(':').next().unwrap_or("");
        match scheme {
            "sqlite" => Ok(Backend::Sqlite),
            "mysql" | "mariadb" => Ok(Backend::MySql),
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            other => Err(StoreError::Db(format!(
                "unsupported database URL scheme {other:?}; use sqlite:, mysql: or postgres:"
            ))),
        }
    }
}

/// Rewrites `?` placeholders to PostgreSQL's `$1, $2, ...` (our SQL has no `?` in literals).
fn numbered_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("record already exists")]
    Conflict,
    #[error("database error: {0}")]
    Db(String),
    #[error("stored record is malformed: {0}")]
    Corrupt(String),
    /// A deadlock or serialization failure; running the statement again may succeed.
    #[error("transient database conflict: {0}")]
    Retryable(String),
    /// A node group member that is not a registered node.
    #[error("node {0} is not registered")]
    UnknownNode(String),
    /// A key names a node group that does not exist (or was deleted meanwhile).
    #[error("node group {0} does not exist")]
    GroupNotFound(String),
    /// A node group cannot be deleted while keys made from it are still in use.
    #[error("node group {group} is used by {count} key(s), e.g. {examples:?}")]
    GroupInUse {
        group: String,
        count: u64,
        /// A few of those keys' ids, oldest first.
        examples: Vec<String>,
    },
    /// Another policy version was written after the caller read (and validated against)
    /// the stored set; validate again against the new set.
    #[error("the stored policies changed meanwhile")]
    PoliciesChanged,
    /// An approval vote the task cannot take (unknown, not waiting, window closed).
    #[error(transparent)]
    ApprovalRefused(#[from] ApprovalRefused),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e {
            if db.is_unique_violation() {
                return StoreError::Conflict;
            }
            // SQLSTATE 40001 (MySQL deadlock, PostgreSQL serialization failure), 40P01
            // (PostgreSQL deadlock): the statement may simply be run again.
            if matches!(db.code().as_deref(), Some("40001" | "40P01")) {
                return StoreError::Retryable(e.to_string());
            }
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
    /// Where the node runs, as the operator labels it; empty when not set.
    pub region: String,
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
    /// [`ORIGIN_GENERATED`] or [`ORIGIN_IMPORTED`].
    pub origin: String,
    /// Lifecycle: [`STATE_ENABLED`], [`STATE_DISABLED`], [`STATE_PENDING_DELETION`],
    /// [`STATE_DELETED`].
    pub state: String,
    pub description: String,
    /// When a scheduled deletion is due (ms since the epoch).
    pub deletion_at: Option<i64>,
    /// Share generation the nodes sign with (0 at creation, +1 per committed refresh).
    pub generation: u32,
    /// The node group the key was made from, if it was named instead of its participants.
    pub node_group: Option<String>,
    /// The principal that asked for the key; empty for keys made before it was recorded.
    pub created_by: String,
    /// Whether the key may be exported whole (break-glass); fixed at creation, false for
    /// keys made before it was recorded. The nodes hold and enforce the same bit.
    pub exportable: bool,
    pub created_at: i64,
}

/// A task on an existing key (a refresh).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTaskRow {
    pub instance_id: String,
    pub key_id: String,
    pub kind: String,
    pub status: TaskStatus,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub created_at: i64,
}

pub const STATE_ENABLED: &str = "ENABLED";
pub const STATE_DISABLED: &str = "DISABLED";
pub const STATE_PENDING_DELETION: &str = "PENDING_DELETION";
/// The waiting period is over and the nodes are destroying their shares; no longer
/// cancellable.
pub const STATE_DELETING: &str = "DELETING";
pub const STATE_DELETED: &str = "DELETED";

/// Filters of [`Store::list_keys`]; `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct KeyFilter {
    pub status: Option<TaskStatus>,
    pub state: Option<String>,
    /// A label name and value the key must carry.
    pub label: Option<(String, String)>,
    /// The node group the key was made from.
    pub node_group: Option<String>,
}

/// A named set of nodes that key generation can use instead of a participant list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeGroupRow {
    pub name: String,
    pub threshold: u8,
    /// The number of members; kept in the row so a listing needs no count.
    pub total_shares: u8,
    /// Distinct non-empty regions the members must span (0: no requirement).
    pub min_regions: u8,
    pub description: String,
    /// Node tags in party order.
    pub members: Vec<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

pub const ORIGIN_GENERATED: &str = "GENERATED";
pub const ORIGIN_IMPORTED: &str = "IMPORTED";

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
    /// The BIP-32 path of the child key that signs (`m/…`); `None`: the key itself.
    pub derivation_path: Option<String>,
    pub created_at: i64,
}

/// An API key (its token is never stored, only the token's SHA-256).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRow {
    pub id: String,
    pub name: String,
    pub roles: Vec<String>,
    pub groups: Vec<String>,
    /// The user the key belongs to; `None` for keys not tied to a user (e.g. bootstrap).
    pub owner: Option<String>,
    pub created_at: i64,
    /// When the key stops working (ms); `None`: never.
    pub expires_at: Option<i64>,
    /// Updated at most once a minute (see [`Store::touch_api_key`]).
    pub last_used_at: Option<i64>,
    pub revoked: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotentResponse {
    pub route: String,
    pub request_hash: String,
    pub status_code: u16,
    pub response: String,
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Serializes this process's audit appends (other processes are told apart by the
    /// unique `seq`; see `audit.rs`).
    audit_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// This process's id among the gateways sharing the database: every task it inserts
    /// or claims carries it, so survivors can tell whose tasks died with their gateway.
    gateway_id: std::sync::Arc<str>,
}

/// The states a task can still leave.
macro_rules! open_states {
    () => {
        "('INIT','PROCESSING','PENDING_APPROVAL')"
    };
}

/// Keys that hold (or will hold) shares: not deleted, and not a generation that failed.
macro_rules! keys_in_use {
    () => {
        "AND state <> 'DELETED' AND status <> 'FAILED'"
    };
}

/// A node group joined with its members, one row per member.
macro_rules! group_select {
    () => {
        "SELECT g.name, g.threshold, g.total_shares, g.min_regions, g.description, \
         g.created_at, g.updated_at, m.node_tag FROM node_groups g \
         LEFT JOIN node_group_members m ON m.group_name = g.name"
    };
}

impl Store {
    /// Connects to `url` (`sqlite://path`, `mysql://…`, `postgres://…`), creating a SQLite
    /// file if needed, and applies pending migrations of that backend.
    pub async fn connect(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        let mut url = url.to_owned();
        if backend == Backend::Sqlite && !url.contains('?') && !url.contains(":memory:") {
            url.push_str("?mode=rwc");
        }
        let mut opts = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 4 } else { 16 })
            .acquire_timeout(Duration::from_secs(30));
        if backend == Backend::Sqlite {
            opts = opts.after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute(
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                         PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;",
                    )
                    .await
                    .map(|_| ())
                })
            });
        }
        if url.contains(":memory:") {
            // Every connection would open its own empty in-memory database.
            opts = opts.max_connections(1);
        }
        let pool = opts
            .connect(&url)
            .await
            .map_err(|e| StoreError::Db(format!("connecting to the {backend:?} store: {e}")))?;
        match backend {
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&pool).await?,
            Backend::MySql => MYSQL_MIGRATIONS.run(&pool).await?,
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&pool).await?,
        }
        Ok(Store {
            pool,
            backend,
            audit_lock: std::sync::Arc::default(),
            gateway_id: uuid::Uuid::new_v4().to_string().into(),
        })
    }

    /// This handle's gateway id (a fresh UUID per [`Store::connect`]).
    pub fn gateway_id(&self) -> &str {
        &self.gateway_id
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A query in the backend's placeholder syntax.
    fn q(&self, sql: &'static str) -> Query<'static, Any, AnyArguments> {
        match self.backend {
            Backend::Postgres => sqlx::query(AssertSqlSafe(numbered_placeholders(sql))),
            Backend::Sqlite | Backend::MySql => sqlx::query(sql),
        }
    }

    /// A query assembled from static fragments (values are always bound, never spliced).
    fn q_built(&self, sql: String) -> Query<'static, Any, AnyArguments> {
        match self.backend {
            Backend::Postgres => sqlx::query(AssertSqlSafe(numbered_placeholders(&sql))),
            Backend::Sqlite | Backend::MySql => sqlx::query(AssertSqlSafe(sql)),
        }
    }

    // ---- key lifecycle ----

    /// One page of keys, newest first, after the `(created_at, key_id)` cursor.
    pub async fn list_keys(
        &self,
        filter: &KeyFilter,
        after: Option<(i64, String)>,
        limit: u32,
    ) -> Result<Vec<KeyRow>> {
        let mut sql = String::from("SELECT * FROM mpc_keys WHERE 1 = 1");
        if filter.status.is_some() {
            sql.push_str(" AND status = ?");
        }
        if filter.state.is_some() {
            sql.push_str(" AND state = ?");
        }
        if filter.label.is_some() {
            sql.push_str(
                " AND EXISTS (SELECT 1 FROM key_labels l WHERE l.key_id = mpc_keys.key_id AND l.name = ? AND l.value = ?)",
            );
        }
        if filter.node_group.is_some() {
            sql.push_str(" AND node_group = ?");
        }
        if after.is_some() {
            sql.push_str(" AND (created_at < ? OR (created_at = ? AND key_id < ?))");
        }
        sql.push_str(" ORDER BY created_at DESC, key_id DESC LIMIT ?");
        let mut q = self.q_built(sql);
        if let Some(st) = filter.status {
            q = q.bind(st.as_str());
        }
        if let Some(st) = &filter.state {
            q = q.bind(st.clone());
        }
        if let Some((n, v)) = &filter.label {
            q = q.bind(n.clone()).bind(v.clone());
        }
        if let Some(g) = &filter.node_group {
            q = q.bind(g.clone());
        }
        if let Some((at, id)) = after {
            q = q.bind(at).bind(at).bind(id);
        }
        let rows = q.bind(i64::from(limit)).fetch_all(&self.pool).await?;
        rows.iter().map(key_row).collect()
    }

    pub async fn get_labels(&self, key_id: &str) -> Result<BTreeMap<String, String>> {
        let rows = self
            .q("SELECT name, value FROM key_labels WHERE key_id = ? ORDER BY name")
            .bind(key_id.to_owned())
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("name")?, r.try_get("value")?)))
            .collect()
    }

    /// Replaces a key's labels (all or nothing) and, if given, its description.
    pub async fn update_key_metadata(
        &self,
        key_id: &str,
        labels: Option<&BTreeMap<String, String>>,
        description: Option<&str>,
        now: i64,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let touched = self
            .q("UPDATE mpc_keys SET updated_at = ? WHERE key_id = ? AND state <> 'DELETED'")
            .bind(now)
            .bind(key_id.to_owned())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if touched != 1 {
            return Ok(false);
        }
        if let Some(d) = description {
            self.q("UPDATE mpc_keys SET description = ? WHERE key_id = ?")
                .bind(d.to_owned())
                .bind(key_id.to_owned())
                .execute(&mut *tx)
                .await?;
        }
        if let Some(labels) = labels {
            self.q("DELETE FROM key_labels WHERE key_id = ?")
                .bind(key_id.to_owned())
                .execute(&mut *tx)
                .await?;
            for (n, v) in labels {
                self.q("INSERT INTO key_labels (key_id, name, value) VALUES (?, ?, ?)")
                    .bind(key_id.to_owned())
                    .bind(n.clone())
                    .bind(v.clone())
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Moves a key from one lifecycle state to another; false if it was not in `from`.
    pub async fn set_key_state(
        &self,
        key_id: &str,
        from: &[&str],
        to: &str,
        deletion_at: Option<i64>,
        now: i64,
    ) -> Result<bool> {
        let mut sql = String::from(
            "UPDATE mpc_keys SET state = ?, deletion_at = ?, updated_at = ? WHERE key_id = ? AND state IN (",
        );
        sql.push_str(&vec!["?"; from.len().max(1)].join(", "));
        sql.push(')');
        let mut q = self
            .q_built(sql)
            .bind(to.to_owned())
            .bind(deletion_at)
            .bind(now)
            .bind(key_id.to_owned());
        if from.is_empty() {
            q = q.bind(String::new());
        }
        for f in from {
            q = q.bind((*f).to_owned());
        }
        Ok(q.execute(&self.pool).await?.rows_affected() == 1)
    }

    // ---- refresh ----

    /// Creates a refresh task and makes it the key's only running refresh. `Ok(false)`
    /// if another refresh holds the key.
    pub async fn begin_refresh(&self, task: &KeyTaskRow, now: i64) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let claimed = self
            .q("UPDATE mpc_keys SET refresh_task = ?, updated_at = ? WHERE key_id = ? AND refresh_task IS NULL")
            .bind(task.instance_id.clone())
            .bind(now)
            .bind(task.key_id.clone())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if claimed != 1 {
            return Ok(false);
        }
        self.q(
            "INSERT INTO key_tasks (instance_id, key_id, kind, status, created_at, updated_at, gateway_id) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(task.instance_id.clone())
        .bind(task.key_id.clone())
        .bind(task.kind.clone())
        .bind(task.status.as_str())
        .bind(task.created_at)
        .bind(task.created_at)
        .bind(self.gateway_id.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The commit point of a refresh: the key moves from generation `from` to `from + 1`,
    /// with `participants` as its members when a recovery replaced one. Only while the
    /// refresh task `task` still holds the key: a task that was ended meanwhile (its
    /// gateway was presumed dead) must not commit behind a newer refresh's back.
    pub async fn commit_generation(
        &self,
        key_id: &str,
        task: &str,
        from: u32,
        participants: Option<&[String]>,
        now: i64,
    ) -> Result<bool> {
        // Without a new member list the stored one stays (COALESCE of NULL).
        let participants = participants
            .map(|p| serde_json::to_string(p).map_err(|e| StoreError::Db(e.to_string())))
            .transpose()?;
        let done = self
            .q(
                "UPDATE mpc_keys SET generation = ?, participants = COALESCE(?, participants), \
                 updated_at = ? WHERE key_id = ? AND generation = ? AND refresh_task = ?",
            )
            .bind(i64::from(from) + 1)
            .bind(participants)
            .bind(now)
            .bind(key_id.to_owned())
            .bind(i64::from(from))
            .bind(task.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Ends a key task (FINISHED, or FAILED with a code and message) and releases the key.
    pub async fn end_key_task(
        &self,
        instance_id: &str,
        failure: Option<(&str, &str)>,
        now: i64,
    ) -> Result<()> {
        let (status, code, message) = match failure {
            None => (TaskStatus::Finished, None, None),
            Some((c, m)) => (TaskStatus::Failed, Some(c.to_owned()), Some(m.to_owned())),
        };
        self.q(concat!(
            "UPDATE key_tasks SET status = ?, error_code = ?, error_message = ?, updated_at = ? \
             WHERE instance_id = ? AND status IN ",
            open_states!()
        ))
        .bind(status.as_str())
        .bind(code)
        .bind(message)
        .bind(now)
        .bind(instance_id.to_owned())
        .execute(&self.pool)
        .await?;
        self.q("UPDATE mpc_keys SET refresh_task = NULL WHERE refresh_task = ?")
            .bind(instance_id.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn start_key_task(&self, instance_id: &str, now: i64) -> Result<bool> {
        let done = self
            .q("UPDATE key_tasks SET status = 'PROCESSING', updated_at = ? WHERE instance_id = ? AND status = 'INIT'")
            .bind(now)
            .bind(instance_id.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn get_key_task(&self, instance_id: &str) -> Result<Option<KeyTaskRow>> {
        let row = self
            .q("SELECT * FROM key_tasks WHERE instance_id = ?")
            .bind(instance_id.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(KeyTaskRow {
                instance_id: r.try_get("instance_id")?,
                key_id: r.try_get("key_id")?,
                kind: r.try_get("kind")?,
                status: status(&r)?,
                error_code: r.try_get("error_code")?,
                error_message: r.try_get("error_message")?,
                created_at: r.try_get("created_at")?,
            })
        })
        .transpose()
    }

    /// Keys whose scheduled deletion is due, and deletions already under way.
    pub async fn due_deletions(&self, now: i64) -> Result<Vec<KeyRow>> {
        let rows = self
            .q(
                "SELECT * FROM mpc_keys WHERE (state = 'PENDING_DELETION' AND deletion_at <= ?) \
                OR state = 'DELETING' ORDER BY deletion_at",
            )
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(key_row).collect()
    }

    // ---- nodes ----

    pub async fn insert_node(&self, tag: &str, join_token_hash: &str, now: i64) -> Result<()> {
        self.q(
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
        let row = self
            .q("SELECT * FROM nodes WHERE tag = ?")
            .bind(tag.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| node_row(&r)).transpose()
    }

    pub async fn list_nodes(&self) -> Result<Vec<NodeRow>> {
        let rows = self
            .q("SELECT * FROM nodes ORDER BY created_at, tag")
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
        let done = self.q(
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

    // ---- node groups ----

    /// Sets a node's region label (empty for none); false if there is no such node.
    pub async fn set_node_region(&self, tag: &str, region: &str, now: i64) -> Result<bool> {
        let done = self
            .q("UPDATE nodes SET region = ?, updated_at = ? WHERE tag = ?")
            .bind(region.to_owned())
            .bind(now)
            .bind(tag.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Creates a node group with its members in one transaction. A taken name is
    /// [`StoreError::Conflict`]; a member that is not a registered node is
    /// [`StoreError::UnknownNode`].
    pub async fn insert_node_group(&self, g: &NodeGroupRow) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        self.q(
            "INSERT INTO node_groups (name, threshold, total_shares, min_regions, description, \
             created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(g.name.clone())
        .bind(i64::from(g.threshold))
        .bind(i64::from(g.total_shares))
        .bind(i64::from(g.min_regions))
        .bind(g.description.clone())
        .bind(g.created_at)
        .bind(g.updated_at)
        .execute(&mut *tx)
        .await?;
        self.insert_group_members(&mut tx, g).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Replaces a group's threshold, region requirement, description and members in one
    /// transaction (`created_at` stays). `Ok(false)` if there is no such group.
    pub async fn update_node_group(&self, g: &NodeGroupRow) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        // The group row is written first: it orders concurrent changes of one group.
        let found = self
            .q(
                "UPDATE node_groups SET threshold = ?, total_shares = ?, min_regions = ?, \
                 description = ?, updated_at = ? WHERE name = ?",
            )
            .bind(i64::from(g.threshold))
            .bind(i64::from(g.total_shares))
            .bind(i64::from(g.min_regions))
            .bind(g.description.clone())
            .bind(g.updated_at)
            .bind(g.name.clone())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if found != 1 {
            return Ok(false);
        }
        self.q("DELETE FROM node_group_members WHERE group_name = ?")
            .bind(g.name.clone())
            .execute(&mut *tx)
            .await?;
        self.insert_group_members(&mut tx, g).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn insert_group_members(
        &self,
        tx: &mut sqlx::Transaction<'static, Any>,
        g: &NodeGroupRow,
    ) -> Result<()> {
        for (position, tag) in g.members.iter().enumerate() {
            let position = i64::try_from(position).map_err(|e| StoreError::Db(e.to_string()))?;
            self.q(
                "INSERT INTO node_group_members (group_name, node_tag, position) VALUES (?, ?, ?)",
            )
            .bind(g.name.clone())
            .bind(tag.clone())
            .bind(position)
            .execute(&mut **tx)
            .await
            .map_err(|e| match &e {
                sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
                    StoreError::UnknownNode(tag.clone())
                }
                _ => StoreError::from(e),
            })?;
        }
        Ok(())
    }

    /// A group with its members in party order (one statement, so one consistent view).
    pub async fn get_node_group(&self, name: &str) -> Result<Option<NodeGroupRow>> {
        let rows = self
            .q(concat!(
                group_select!(),
                " WHERE g.name = ? ORDER BY m.position"
            ))
            .bind(name.to_owned())
            .fetch_all(&self.pool)
            .await?;
        Ok(group_rows(&rows)?.into_iter().next())
    }

    /// Every group, by name.
    pub async fn list_node_groups(&self) -> Result<Vec<NodeGroupRow>> {
        let rows = self
            .q(concat!(group_select!(), " ORDER BY g.name, m.position"))
            .fetch_all(&self.pool)
            .await?;
        group_rows(&rows)
    }

    /// Deletes a group. Refused with [`StoreError::GroupInUse`] while keys made from it are
    /// in use, that is neither DELETED nor FAILED at creation (a failed generation left no
    /// shares). `Ok(false)` if there is no such group.
    ///
    /// The group row is written first and the keys counted after, while [`Store::insert_key`]
    /// inserts a group's key first and then reads the group row with a lock: of a deletion
    /// and a key generation that race, one always sees the other.
    pub async fn delete_node_group(&self, name: &str, now: i64) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let found = self
            .q("UPDATE node_groups SET updated_at = ? WHERE name = ?")
            .bind(now)
            .bind(name.to_owned())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if found != 1 {
            return Ok(false);
        }
        self.q("DELETE FROM node_group_members WHERE group_name = ?")
            .bind(name.to_owned())
            .execute(&mut *tx)
            .await?;
        self.q("DELETE FROM node_groups WHERE name = ?")
            .bind(name.to_owned())
            .execute(&mut *tx)
            .await?;
        let in_use: i64 = self
            .q(concat!(
                "SELECT COUNT(*) AS n FROM mpc_keys WHERE node_group = ? ",
                keys_in_use!()
            ))
            .bind(name.to_owned())
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        if in_use > 0 {
            let examples = self
                .q(concat!(
                    "SELECT key_id FROM mpc_keys WHERE node_group = ? ",
                    keys_in_use!(),
                    " ORDER BY created_at, key_id LIMIT 3"
                ))
                .bind(name.to_owned())
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| r.try_get("key_id"))
                .collect::<std::result::Result<Vec<String>, _>>()?;
            return Err(StoreError::GroupInUse {
                group: name.to_owned(),
                count: u64::try_from(in_use).unwrap_or(0),
                examples,
            });
        }
        tx.commit().await?;
        Ok(true)
    }

    // ---- mpc_keys ----

    /// Inserts a key. A key made from a node group is inserted in one transaction with a
    /// locking read of the group row ([`StoreError::GroupNotFound`] if it is gone), so that
    /// it cannot slip past a concurrent [`Store::delete_node_group`].
    pub async fn insert_key(&self, k: &KeyRow) -> Result<()> {
        let participants =
            serde_json::to_string(&k.participants).map_err(|e| StoreError::Db(e.to_string()))?;
        let mut tx = self.pool.begin().await?;
        self.q(
            "INSERT INTO mpc_keys (key_id, key_type, scheme, threshold, total_shares, participants, status, \
             public_key, address, error_code, error_message, origin, state, description, deletion_at, \
             node_group, created_by, exportable, created_at, updated_at, gateway_id) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        .bind(k.origin.clone())
        .bind(k.state.clone())
        .bind(k.description.clone())
        .bind(k.deletion_at)
        .bind(k.node_group.clone())
        .bind(k.created_by.clone())
        .bind(i64::from(k.exportable))
        .bind(k.created_at)
        .bind(k.created_at)
        .bind(self.gateway_id.to_string())
        .execute(&mut *tx)
        .await?;
        if let Some(group) = &k.node_group {
            let lock = match self.backend {
                Backend::Postgres => "SELECT name FROM node_groups WHERE name = ? FOR SHARE",
                Backend::MySql => "SELECT name FROM node_groups WHERE name = ? LOCK IN SHARE MODE",
                // SQLite has one writer at a time, and this transaction already writes.
                Backend::Sqlite => "SELECT name FROM node_groups WHERE name = ?",
            };
            let exists = self
                .q(lock)
                .bind(group.clone())
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
            if !exists {
                return Err(StoreError::GroupNotFound(group.clone()));
            }
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn get_key(&self, key_id: &str) -> Result<Option<KeyRow>> {
        let row = self
            .q("SELECT * FROM mpc_keys WHERE key_id = ?")
            .bind(key_id.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| key_row(&r)).transpose()
    }

    /// INIT → PROCESSING. Returns false if the key was no longer INIT.
    pub async fn start_key(&self, key_id: &str, now: i64) -> Result<bool> {
        let done = self.q(
            "UPDATE mpc_keys SET status = 'PROCESSING', updated_at = ? WHERE key_id = ? AND status = 'INIT'",
        )
        .bind(now)
        .bind(key_id.to_owned())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Ends a key's creation with its public key, address and BIP-32 chain code (hex).
    pub async fn finish_key(
        &self,
        key_id: &str,
        public_key: &str,
        address: Option<&str>,
        chain_code: Option<&str>,
        now: i64,
    ) -> Result<bool> {
        let done = self.q(concat!(
            "UPDATE mpc_keys SET status = 'FINISHED', public_key = ?, address = ?, chain_code = ?, updated_at = ? \
             WHERE key_id = ? AND status IN ",
            open_states!()
        ))
        .bind(public_key.to_owned())
        .bind(address.map(str::to_owned))
        .bind(chain_code.map(str::to_owned))
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
        let done = self.q(concat!(
            "UPDATE mpc_keys SET status = 'FAILED', error_code = ?, error_message = ?, updated_at = ? \
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
        self.insert_sign_on(&self.pool, s).await
    }

    /// The INSERT of a signing task, on the pool or inside a transaction
    /// ([`Store::insert_sign_with`]).
    async fn insert_sign_on<'c, E>(&self, exec: E, s: &SignRow) -> Result<()>
    where
        E: Executor<'c, Database = Any>,
    {
        let signers =
            serde_json::to_string(&s.signers).map_err(|e| StoreError::Db(e.to_string()))?;
        self.q(
            "INSERT INTO sign_tasks (instance_id, key_id, digest, status, signature, signers, error_code, \
             error_message, derivation_path, created_at, updated_at, gateway_id) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(s.instance_id.clone())
        .bind(s.key_id.clone())
        .bind(s.digest.clone())
        .bind(s.status.as_str())
        .bind(s.signature.clone())
        .bind(signers)
        .bind(s.error_code.clone())
        .bind(s.error_message.clone())
        .bind(s.derivation_path.clone())
        .bind(s.created_at)
        .bind(s.created_at)
        .bind(self.gateway_id.to_string())
        .execute(exec)
        .await?;
        Ok(())
    }

    /// A key's BIP-32 chain code (hex); `None` for keys made before it was recorded.
    pub async fn get_chain_code(&self, key_id: &str) -> Result<Option<String>> {
        let row = self
            .q("SELECT chain_code FROM mpc_keys WHERE key_id = ?")
            .bind(key_id.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => r.try_get("chain_code")?,
            None => None,
        })
    }

    pub async fn get_sign(&self, instance_id: &str) -> Result<Option<SignRow>> {
        let row = self
            .q("SELECT * FROM sign_tasks WHERE instance_id = ?")
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
        let done = self
            .q(
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
        let done = self
            // Only a signing that started (never one still waiting for approvals).
            .q(
                "UPDATE sign_tasks SET status = 'FINISHED', signature = ?, updated_at = ? \
             WHERE instance_id = ? AND status = 'PROCESSING'",
            )
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
        // A signing waiting for approvals ends by a vote or by expiry, not here.
        let done = self.q(
            "UPDATE sign_tasks SET status = 'FAILED', error_code = ?, error_message = ?, updated_at = ? \
             WHERE instance_id = ? AND status IN ('INIT','PROCESSING')",
        )
        .bind(code.to_owned())
        .bind(message.to_owned())
        .bind(now)
        .bind(instance_id.to_owned())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    // ---- API mpc_keys ----

    pub async fn count_api_keys(&self) -> Result<i64> {
        let row = self
            .q("SELECT COUNT(*) AS n FROM api_keys")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }

    // ---- idempotency ----

    /// Claims `key` for this request, or returns what the first request with that key got.
    /// A record older than `not_before` has expired and is taken over. Each step is one
    /// atomic statement (no multi-statement transaction, so no lock-order deadlocks under
    /// contention); a transient deadlock or serialization failure is retried.
    pub async fn reserve_idempotent(
        &self,
        principal: &str,
        key: &str,
        route: &str,
        request_hash: &str,
        now: i64,
        not_before: i64,
    ) -> Result<Reservation> {
        let mut attempt = 0;
        loop {
            match self
                .try_reserve(principal, key, route, request_hash, now, not_before)
                .await
            {
                Err(StoreError::Retryable(_)) if attempt < 5 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(5 << attempt)).await;
                }
                Err(StoreError::Retryable(e)) => return Err(StoreError::Db(e)),
                other => return other,
            }
        }
    }

    async fn try_reserve(
        &self,
        principal: &str,
        key: &str,
        route: &str,
        request_hash: &str,
        now: i64,
        not_before: i64,
    ) -> Result<Reservation> {
        let insert = match self.backend {
            Backend::MySql => self.q(
                "INSERT IGNORE INTO idempotency (principal, idem_key, route, request_hash, status_code, response, created_at) \
                 VALUES (?, ?, ?, ?, 0, '', ?)",
            ),
            Backend::Sqlite | Backend::Postgres => self.q(
                "INSERT INTO idempotency (principal, idem_key, route, request_hash, status_code, response, created_at) \
                 VALUES (?, ?, ?, ?, 0, '', ?) ON CONFLICT (principal, idem_key) DO NOTHING",
            ),
        };
        let inserted = insert
            .bind(principal.to_owned())
            .bind(key.to_owned())
            .bind(route.to_owned())
            .bind(request_hash.to_owned())
            .bind(now)
            .execute(&self.pool)
            .await?
            .rows_affected();
        if inserted == 1 {
            return Ok(Reservation::Reserved);
        }
        // Take over an expired record; of several racing requests one wins.
        let taken = self
            .q("UPDATE idempotency SET route = ?, request_hash = ?, status_code = 0, response = '', created_at = ? \
                WHERE principal = ? AND idem_key = ? AND created_at < ?")
            .bind(route.to_owned())
            .bind(request_hash.to_owned())
            .bind(now)
            .bind(principal.to_owned())
            .bind(key.to_owned())
            .bind(not_before)
            .execute(&self.pool)
            .await?
            .rows_affected();
        if taken == 1 {
            return Ok(Reservation::Reserved);
        }
        let r = self
            .q(
                "SELECT route, request_hash, status_code, response FROM idempotency \
                WHERE principal = ? AND idem_key = ?",
            )
            .bind(principal.to_owned())
            .bind(key.to_owned())
            .fetch_one(&self.pool)
            .await?;
        Ok(Reservation::Existing(IdempotentResponse {
            route: r.try_get("route")?,
            request_hash: r.try_get("request_hash")?,
            status_code: u16::try_from(r.try_get::<i64, _>("status_code")?)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            response: r.try_get("response")?,
        }))
    }

    /// Stores the answer to a reserved request.
    pub async fn complete_idempotent(
        &self,
        principal: &str,
        key: &str,
        status_code: u16,
        response: &str,
    ) -> Result<()> {
        self.q(
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
        self.q("DELETE FROM idempotency WHERE principal = ? AND idem_key = ? AND status_code = 0")
            .bind(principal.to_owned())
            .bind(key.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Issues a fresh join token for a node that has not joined yet.
    /// Unpins an active node's identity and gives it a new join token: the way back in for
    /// a node whose data directory (and so its identity keys) is gone. Its old identity
    /// can no longer connect. `Ok(false)` if the node is unknown or not active.
    pub async fn reset_node(&self, tag: &str, join_token_hash: &str, now: i64) -> Result<bool> {
        let done = self
            .q("UPDATE nodes SET status = ?, join_token_hash = ?, signing_key = NULL, encryption_key = NULL, updated_at = ? WHERE tag = ? AND status = ?")
            .bind(NODE_PENDING)
            .bind(join_token_hash.to_owned())
            .bind(now)
            .bind(tag.to_owned())
            .bind(NODE_ACTIVE)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn set_join_token(&self, tag: &str, join_token_hash: &str, now: i64) -> Result<bool> {
        let done = self
            .q("UPDATE nodes SET join_token_hash = ?, updated_at = ? WHERE tag = ? AND status = ?")
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

fn status(r: &AnyRow) -> Result<TaskStatus> {
    let s: String = r.try_get("status")?;
    TaskStatus::from_str(&s).map_err(|e| StoreError::Corrupt(e.0))
}

fn json_list(r: &AnyRow, col: &str) -> Result<Vec<String>> {
    let s: Option<String> = r.try_get(col)?;
    match s {
        None => Ok(Vec::new()),
        Some(s) => serde_json::from_str(&s).map_err(|e| StoreError::Corrupt(e.to_string())),
    }
}

fn small(r: &AnyRow, col: &str) -> Result<u8> {
    u8::try_from(r.try_get::<i64, _>(col)?).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn node_row(r: &AnyRow) -> Result<NodeRow> {
    Ok(NodeRow {
        tag: r.try_get("tag")?,
        status: r.try_get("status")?,
        join_token_hash: r.try_get("join_token_hash")?,
        signing_key: r.try_get("signing_key")?,
        encryption_key: r.try_get("encryption_key")?,
        region: r.try_get("region")?,
        created_at: r.try_get("created_at")?,
    })
}

fn key_row(r: &AnyRow) -> Result<KeyRow> {
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
        origin: r.try_get("origin")?,
        state: r.try_get("state")?,
        description: r.try_get("description")?,
        deletion_at: r.try_get("deletion_at")?,
        generation: u32::try_from(r.try_get::<i64, _>("generation")?)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        node_group: r.try_get("node_group")?,
        created_by: r.try_get("created_by")?,
        exportable: r.try_get::<i64, _>("exportable")? != 0,
        created_at: r.try_get("created_at")?,
    })
}

/// Folds rows of [`group_select!`] (ordered by group, then position) into groups.
fn group_rows(rows: &[AnyRow]) -> Result<Vec<NodeGroupRow>> {
    let mut out: Vec<NodeGroupRow> = Vec::new();
    for r in rows {
        let name: String = r.try_get("name")?;
        let member: Option<String> = r.try_get("node_tag")?;
        match out.last_mut() {
            Some(g) if g.name == name => g.members.extend(member),
            _ => out.push(NodeGroupRow {
                name,
                threshold: small(r, "threshold")?,
                total_shares: small(r, "total_shares")?,
                min_regions: small(r, "min_regions")?,
                description: r.try_get("description")?,
                members: member.into_iter().collect(),
                created_at: r.try_get("created_at")?,
                updated_at: r.try_get("updated_at")?,
            }),
        }
    }
    if let Some(g) = out
        .iter()
        .find(|g| g.members.len() != usize::from(g.total_shares))
    {
        return Err(StoreError::Corrupt(format!(
            "node group {} has {} members but total_shares {}",
            g.name,
            g.members.len(),
            g.total_shares
        )));
    }
    Ok(out)
}

fn sign_row(r: &AnyRow) -> Result<SignRow> {
    Ok(SignRow {
        instance_id: r.try_get("instance_id")?,
        key_id: r.try_get("key_id")?,
        digest: r.try_get("digest")?,
        status: status(r)?,
        signature: r.try_get("signature")?,
        signers: json_list(r, "signers")?,
        error_code: r.try_get("error_code")?,
        error_message: r.try_get("error_message")?,
        derivation_path: r.try_get("derivation_path")?,
        created_at: r.try_get("created_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_for_postgres() {
        assert_eq!(
            numbered_placeholders("UPDATE t SET a = ?, b = ? WHERE c = ?"),
            "UPDATE t SET a = $1, b = $2 WHERE c = $3"
        );
        assert_eq!(numbered_placeholders("SELECT 1"), "SELECT 1");
    }

    #[test]
    fn backends_come_from_the_url_scheme() {
        assert_eq!(Backend::from_url("sqlite://x.db").unwrap(), Backend::Sqlite);
        assert_eq!(Backend::from_url("mysql://r@h/db").unwrap(), Backend::MySql);
        assert_eq!(
            Backend::from_url("postgres://r@h/db").unwrap(),
            Backend::Postgres
        );
        assert!(Backend::from_url("oracle://x").is_err());
    }
}
