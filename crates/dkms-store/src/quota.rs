//! Usage counters for rate and spend limits: one `u128` per scope and time bucket, raised
//! only while it stays within a limit, atomically across every gateway on the database.
//!
//! The representation of `used` differs by backend, each exact for the whole `u128` range
//! (wei amounts reach 2^128 − 1): PostgreSQL `NUMERIC(39,0)` and MySQL `DECIMAL(39,0)`,
//! where one conditional UPDATE adds and compares in SQL; SQLite, which has no integer
//! wider than 64 bits and an inexact REAL, TEXT of exactly 39 zero-padded decimal digits,
//! added and compared in Rust inside a transaction that holds the database write lock
//! from its first statement. Amounts travel to the servers as decimal text and are cast
//! there, because sqlx's `Any` driver has no decimal type.

use crate::{Backend, Result, Store, StoreError};
use sqlx::Row;
use std::time::Duration;

/// Longest quota scope (in characters), the width of its column.
pub const QUOTA_SCOPE_MAX: usize = 255;

/// SQLite's spelling of an amount: 39 digits, zero-padded, so text order is number order.
fn sqlite_text(n: u128) -> String {
    format!("{n:039}")
}

fn parse_used(text: &str) -> Result<u128> {
    text.parse::<u128>()
        .map_err(|e| StoreError::Corrupt(format!("quota usage {text:?}: {e}")))
}

fn check_scope(scope: &str) -> Result<()> {
    if scope.chars().count() > QUOTA_SCOPE_MAX {
        return Err(StoreError::Db(format!(
            "quota scope is longer than {QUOTA_SCOPE_MAX} characters"
        )));
    }
    Ok(())
}

impl Store {
    /// Adds `amount` to the usage of (`scope`, `bucket_start`) if the sum stays within
    /// `limit` and returns true; otherwise changes nothing and returns false. Concurrent
    /// consumers, in this process or others, never take the usage past `limit`.
    pub async fn consume_quota(
        &self,
        scope: &str,
        bucket_start: i64,
        amount: u128,
        limit: u128,
    ) -> Result<bool> {
        check_scope(scope)?;
        if amount > limit {
            return Ok(false);
        }
        retry(|| self.try_consume(scope, bucket_start, amount, limit)).await
    }

    async fn try_consume(
        &self,
        scope: &str,
        bucket_start: i64,
        amount: u128,
        limit: u128,
    ) -> Result<bool> {
        let update = match self.backend {
            Backend::Sqlite => {
                let mut tx = self.pool.begin().await?;
                // A write first: it takes the database write lock before the read below.
                self.q(
                    "INSERT INTO quota_usage (scope, bucket_start, used) VALUES (?, ?, ?) \
                     ON CONFLICT (scope, bucket_start) DO NOTHING",
                )
                .bind(scope.to_owned())
                .bind(bucket_start)
                .bind(sqlite_text(0))
                .execute(&mut *tx)
                .await?;
                let used: String = self
                    .q("SELECT used FROM quota_usage WHERE scope = ? AND bucket_start = ?")
                    .bind(scope.to_owned())
                    .bind(bucket_start)
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get("used")?;
                let Some(new) = parse_used(&used)?
                    .checked_add(amount)
                    .filter(|n| *n <= limit)
                else {
                    return Ok(false);
                };
                self.q("UPDATE quota_usage SET used = ? WHERE scope = ? AND bucket_start = ?")
                    .bind(sqlite_text(new))
                    .bind(scope.to_owned())
                    .bind(bucket_start)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                return Ok(true);
            }
            // Each statement on its own (autocommit): no lock is held between them, so
            // concurrent consumers cannot deadlock; the UPDATE alone decides.
            Backend::Postgres => {
                self.q(
                    "INSERT INTO quota_usage (scope, bucket_start, used) VALUES (?, ?, 0) \
                     ON CONFLICT (scope, bucket_start) DO NOTHING",
                )
                .bind(scope.to_owned())
                .bind(bucket_start)
                .execute(&self.pool)
                .await?;
                self.q("UPDATE quota_usage SET used = used + CAST(? AS NUMERIC) \
                     WHERE scope = ? AND bucket_start = ? \
                     AND used + CAST(? AS NUMERIC) <= CAST(? AS NUMERIC)")
            }
            Backend::MySql => {
                self.q(
                    "INSERT IGNORE INTO quota_usage (scope, bucket_start, used) VALUES (?, ?, 0)",
                )
                .bind(scope.to_owned())
                .bind(bucket_start)
                .execute(&self.pool)
                .await?;
                self.q(
                    "UPDATE quota_usage SET used = used + CAST(? AS DECIMAL(39,0)) \
                     WHERE scope = ? AND bucket_start = ? \
                     AND used + CAST(? AS DECIMAL(39,0)) <= CAST(? AS DECIMAL(39,0))",
                )
            }
        };
        // The connection reports matched rows (MySQL included), so adding 0 within the
        // limit counts as done too.
        let done = update
            .bind(amount.to_string())
            .bind(scope.to_owned())
            .bind(bucket_start)
            .bind(amount.to_string())
            .bind(limit.to_string())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives back `amount` of (`scope`, `bucket_start`) after a consumer's operation did
    /// not happen; the usage never goes below zero. Nothing happens without a record.
    pub async fn refund_quota(&self, scope: &str, bucket_start: i64, amount: u128) -> Result<()> {
        check_scope(scope)?;
        retry(|| self.try_refund(scope, bucket_start, amount)).await
    }

    async fn try_refund(&self, scope: &str, bucket_start: i64, amount: u128) -> Result<()> {
        let update = match self.backend {
            Backend::Sqlite => {
                let mut tx = self.pool.begin().await?;
                // A no-op write first, for the write lock (see `try_consume`).
                self.q("UPDATE quota_usage SET used = used WHERE scope = ? AND bucket_start = ?")
                    .bind(scope.to_owned())
                    .bind(bucket_start)
                    .execute(&mut *tx)
                    .await?;
                let row = self
                    .q("SELECT used FROM quota_usage WHERE scope = ? AND bucket_start = ?")
                    .bind(scope.to_owned())
                    .bind(bucket_start)
                    .fetch_optional(&mut *tx)
                    .await?;
                if let Some(row) = row {
                    let used = parse_used(&row.try_get::<String, _>("used")?)?;
                    self.q("UPDATE quota_usage SET used = ? WHERE scope = ? AND bucket_start = ?")
                        .bind(sqlite_text(used.saturating_sub(amount)))
                        .bind(scope.to_owned())
                        .bind(bucket_start)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                return Ok(());
            }
            Backend::Postgres => self.q(
                "UPDATE quota_usage SET used = CASE WHEN used > CAST(? AS NUMERIC) \
                 THEN used - CAST(? AS NUMERIC) ELSE 0 END WHERE scope = ? AND bucket_start = ?",
            ),
            Backend::MySql => self.q(
                "UPDATE quota_usage SET used = CASE WHEN used > CAST(? AS DECIMAL(39,0)) \
                 THEN used - CAST(? AS DECIMAL(39,0)) ELSE 0 END \
                 WHERE scope = ? AND bucket_start = ?",
            ),
        };
        update
            .bind(amount.to_string())
            .bind(amount.to_string())
            .bind(scope.to_owned())
            .bind(bucket_start)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The usage of (`scope`, `bucket_start`); 0 without a record.
    pub async fn quota_used(&self, scope: &str, bucket_start: i64) -> Result<u128> {
        let sql = match self.backend {
            Backend::Sqlite => "SELECT used FROM quota_usage WHERE scope = ? AND bucket_start = ?",
            Backend::Postgres => {
                "SELECT CAST(used AS TEXT) AS used FROM quota_usage \
                 WHERE scope = ? AND bucket_start = ?"
            }
            Backend::MySql => {
                "SELECT CAST(used AS CHAR) AS used FROM quota_usage \
                 WHERE scope = ? AND bucket_start = ?"
            }
        };
        let row = self
            .q(sql)
            .bind(scope.to_owned())
            .bind(bucket_start)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(r) => parse_used(&r.try_get::<String, _>("used")?),
            None => Ok(0),
        }
    }

    /// Deletes the usage of every bucket that started before `before_bucket`; returns how
    /// many records went.
    pub async fn purge_quota(&self, before_bucket: i64) -> Result<u64> {
        let done = self
            .q("DELETE FROM quota_usage WHERE bucket_start < ?")
            .bind(before_bucket)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}

/// Runs `op` again after a deadlock or serialization failure (the statement was rolled
/// back, so nothing was counted twice), a few times with growing pauses.
async fn retry<T, F, Fut>(mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut attempt = 0;
    loop {
        match op().await {
            Err(StoreError::Retryable(_)) if attempt < 5 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(5 << attempt)).await;
            }
            other => return other,
        }
    }
}
