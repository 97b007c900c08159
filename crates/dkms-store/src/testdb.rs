//! Fresh databases for tests, on the real servers: every test gets its own database so
//! tests run in parallel and a failure leaves nothing behind for the next one.
//!
//! The servers come from `DKMS_TEST_MYSQL_URL` (default `mysql://root@127.0.0.1:3306/test`)
//! and `DKMS_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`). A
//! server that cannot be reached is an error, never a skipped test.

use crate::{Backend, Result, StoreError};
use sqlx::{AnyConnection, Connection, Executor};
use std::path::PathBuf;

pub const MYSQL_ENV: &str = "DKMS_TEST_MYSQL_URL";
pub const POSTGRES_ENV: &str = "DKMS_TEST_POSTGRES_URL";
/// Which backend the end-to-end suite uses: `sqlite` (default), `mysql` or `postgres`.
pub const BACKEND_ENV: &str = "DKMS_TEST_DB";

/// A database created for one test.
pub struct TestDb {
    pub url: String,
    pub backend: Backend,
    admin_url: Option<String>,
    name: String,
    file: Option<PathBuf>,
}

fn admin_url(backend: Backend) -> Option<String> {
    match backend {
        Backend::Sqlite => None,
        Backend::MySql => Some(
            std::env::var(MYSQL_ENV).unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into()),
        ),
        Backend::Postgres => Some(
            std::env::var(POSTGRES_ENV)
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into()),
        ),
    }
}

/// Replaces the database name (the last path segment) of a server URL.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let prefix = match base.rfind('/') {
        Some(i) if i > base.find("//").map_or(0, |j| j + 1) => &base[..i],
        _ => base,
    };
    match query {
        Some(q) => format!("{prefix}/{name}?{q}"),
        None => format!("{prefix}/{name}"),
    }
}

/// The backend the end-to-end suite should run on, from [`BACKEND_ENV`].
pub fn backend_from_env() -> Result<Backend> {
    match std::env::var(BACKEND_ENV).as_deref() {
        Err(_) | Ok("") | Ok("sqlite") => Ok(Backend::Sqlite),
        Ok("mysql") | Ok("mariadb") => Ok(Backend::MySql),
        Ok("postgres") | Ok("postgresql") => Ok(Backend::Postgres),
        Ok(other) => Err(StoreError::Db(format!(
            "{BACKEND_ENV}={other:?}: use sqlite, mysql or postgres"
        ))),
    }
}

impl TestDb {
    /// Creates an empty database. For SQLite, `dir` holds the file.
    pub async fn create(backend: Backend, dir: &std::path::Path) -> Result<TestDb> {
        sqlx::any::install_default_drivers();
        let name = format!("dkms_t_{}", uuid::Uuid::new_v4().simple());
        match admin_url(backend) {
            None => {
                let file = dir.join(format!("{name}.db"));
                Ok(TestDb {
                    url: format!("sqlite://{}", file.display()),
                    backend,
                    admin_url: None,
                    name,
                    file: Some(file),
                })
            }
            Some(admin) => {
                let mut conn = AnyConnection::connect(&admin).await.map_err(|e| {
                    StoreError::Db(format!(
                        "test database server {backend:?} at {admin} is not reachable: {e}"
                    ))
                })?;
                conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .await?;
                let _ = conn.close().await;
                Ok(TestDb {
                    url: with_database(&admin, &name),
                    backend,
                    admin_url: Some(admin),
                    name,
                    file: None,
                })
            }
        }
    }

    /// Drops the database (best effort).
    pub async fn drop_database(self) {
        if let Some(admin) = &self.admin_url
            && let Ok(mut conn) = AnyConnection::connect(admin).await
        {
            let sql = match self.backend {
                Backend::Postgres => format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
                _ => format!("DROP DATABASE IF EXISTS {}", self.name),
            };
            let _ = conn.execute(sqlx::AssertSqlSafe(sql)).await;
            let _ = conn.close().await;
        }
        if let Some(f) = &self.file {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", f.display()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_are_replaced() {
        assert_eq!(
            with_database("mysql://root@127.0.0.1:3306/test", "x"),
            "mysql://root@127.0.0.1:3306/x"
        );
        assert_eq!(
            with_database("postgres://u@h:5432/test?sslmode=disable", "x"),
            "postgres://u@h:5432/x?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://u@h:5432", "x"),
            "postgres://u@h:5432/x"
        );
    }
}
