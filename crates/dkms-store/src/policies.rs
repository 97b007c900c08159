//! Versioned policies (Cedar text), append-only.
//!
//! Every change of a policy is a new version `latest + 1`; a deletion is a tombstone
//! version. Writers say which latest version they expect, and the `(name, version)` primary
//! key is the compare-and-swap: of two writers that read the same latest version, exactly
//! one inserts the next. Each write also bumps a one-row epoch in the same transaction, so
//! gateways can poll [`Store::policy_epoch`] and recompile only when something changed.

use crate::{Result, Store, StoreError};
use sqlx::Row;
use sqlx::any::AnyRow;
use std::time::Duration;

/// One version of a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRow {
    /// 1–128 characters (the gateway validates).
    pub name: String,
    /// From 1, +1 per change of this name.
    pub version: i64,
    /// The Cedar policy text; empty in a tombstone.
    pub text: String,
    pub description: String,
    pub created_by: String,
    pub created_at: i64,
    /// A tombstone: the policy was deleted at this version.
    pub deleted: bool,
}

/// How often a write is retried after a transient deadlock, or, for a deletion that
/// expects no particular version, after losing a race to another writer.
const ATTEMPTS: u32 = 5;

fn policy_row(r: &AnyRow) -> Result<PolicyRow> {
    Ok(PolicyRow {
        name: r.try_get("name")?,
        version: r.try_get("version")?,
        text: r.try_get("policy_text")?,
        description: r.try_get("description")?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        deleted: r.try_get::<i64, _>("deleted")? != 0,
    })
}

/// Waits a little longer after each failed attempt.
async fn back_off(attempt: u32) {
    tokio::time::sleep(Duration::from_millis(5 << attempt)).await;
}

impl Store {
    /// Creates (`expected_version: None`) or updates (`Some(v)`) a policy and returns the
    /// version written. Creating is allowed when the name has no version or its latest is a
    /// tombstone; updating only when the latest version is `v` and live. Anything else, and
    /// losing a race to a concurrent writer, is [`StoreError::Conflict`]. `seen_epoch` is
    /// the [`Store::policy_epoch`] read before the text was validated against the stored
    /// set: if any version was written since, nothing is written and the answer is
    /// [`StoreError::PoliciesChanged`], so two documents that conflict with each other can
    /// never both be stored by concurrent writers.
    #[allow(clippy::too_many_arguments)]
    pub async fn put_policy(
        &self,
        name: &str,
        expected_version: Option<i64>,
        text: &str,
        description: &str,
        created_by: &str,
        seen_epoch: i64,
        now: i64,
    ) -> Result<PolicyRow> {
        let mut attempt = 0;
        loop {
            let latest = self.latest_policy(name).await?;
            let live = latest.as_ref().filter(|p| !p.deleted).map(|p| p.version);
            if live != expected_version {
                return Err(StoreError::Conflict);
            }
            let row = PolicyRow {
                name: name.to_owned(),
                version: latest.map_or(1, |p| p.version + 1),
                text: text.to_owned(),
                description: description.to_owned(),
                created_by: created_by.to_owned(),
                created_at: now,
                deleted: false,
            };
            match self.append_policy(&row, Some(seen_epoch)).await {
                Ok(()) => return Ok(row),
                Err(StoreError::Retryable(_)) if attempt < ATTEMPTS => {
                    attempt += 1;
                    back_off(attempt).await;
                }
                Err(StoreError::Retryable(e)) => return Err(StoreError::Db(e)),
                Err(e) => return Err(e),
            }
        }
    }

    /// Deletes a policy by writing a tombstone version. `Ok(false)` if it has no live
    /// version; [`StoreError::Conflict`] if `expected_version` is given and is not the
    /// latest. Without an expectation the latest live version is deleted, whichever it is.
    pub async fn delete_policy(
        &self,
        name: &str,
        expected_version: Option<i64>,
        by: &str,
        now: i64,
    ) -> Result<bool> {
        let mut attempt = 0;
        loop {
            let Some(latest) = self.latest_policy(name).await?.filter(|p| !p.deleted) else {
                return Ok(false);
            };
            if expected_version.is_some_and(|v| v != latest.version) {
                return Err(StoreError::Conflict);
            }
            let tombstone = PolicyRow {
                name: name.to_owned(),
                version: latest.version + 1,
                text: String::new(),
                description: String::new(),
                created_by: by.to_owned(),
                created_at: now,
                deleted: true,
            };
            match self.append_policy(&tombstone, None).await {
                Ok(()) => return Ok(true),
                // Someone else wrote the next version first: look again at what is live.
                Err(StoreError::Conflict) if expected_version.is_none() && attempt < ATTEMPTS => {
                    attempt += 1;
                }
                Err(StoreError::Retryable(_)) if attempt < ATTEMPTS => {
                    attempt += 1;
                    back_off(attempt).await;
                }
                Err(StoreError::Retryable(e)) => return Err(StoreError::Db(e)),
                Err(e) => return Err(e),
            }
        }
    }

    /// The latest version of every policy that is not deleted, by name.
    pub async fn current_policies(&self) -> Result<Vec<PolicyRow>> {
        let rows = self
            .q(
                "SELECT p.* FROM policy_versions p WHERE p.deleted = 0 AND p.version = \
                 (SELECT MAX(l.version) FROM policy_versions l WHERE l.name = p.name) \
                 ORDER BY p.name",
            )
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(policy_row).collect()
    }

    /// One version of a policy (tombstones included), or with `None` its latest version if
    /// that is live.
    pub async fn get_policy(&self, name: &str, version: Option<i64>) -> Result<Option<PolicyRow>> {
        match version {
            None => Ok(self.latest_policy(name).await?.filter(|p| !p.deleted)),
            Some(v) => {
                let row = self
                    .q("SELECT * FROM policy_versions WHERE name = ? AND version = ?")
                    .bind(name.to_owned())
                    .bind(v)
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(|r| policy_row(&r)).transpose()
            }
        }
    }

    /// Every version of a policy, tombstones included, oldest first.
    pub async fn policy_history(&self, name: &str) -> Result<Vec<PolicyRow>> {
        let rows = self
            .q("SELECT * FROM policy_versions WHERE name = ? ORDER BY version")
            .bind(name.to_owned())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(policy_row).collect()
    }

    /// A number that changes whenever a policy version is written (one single-row read).
    /// Read it before [`Store::current_policies`]: then a change made in between is seen
    /// again at the next poll, never missed.
    pub async fn policy_epoch(&self) -> Result<i64> {
        let row = self
            .q("SELECT epoch FROM policy_epoch WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("epoch")?)
    }

    async fn latest_policy(&self, name: &str) -> Result<Option<PolicyRow>> {
        let row = self
            .q("SELECT * FROM policy_versions WHERE name = ? ORDER BY version DESC LIMIT 1")
            .bind(name.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| policy_row(&r)).transpose()
    }

    /// Inserts a version and bumps the epoch in one transaction. The insert comes first, so
    /// a transaction starts with a write (SQLite then waits for the write lock instead of
    /// failing to upgrade a read) and losers of a race fail before touching the epoch.
    async fn append_policy(&self, p: &PolicyRow, seen_epoch: Option<i64>) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        self.q(
            "INSERT INTO policy_versions (name, version, policy_text, description, created_by, \
             created_at, deleted) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(p.name.clone())
        .bind(p.version)
        .bind(p.text.clone())
        .bind(p.description.clone())
        .bind(p.created_by.clone())
        .bind(p.created_at)
        .bind(i64::from(p.deleted))
        .execute(&mut *tx)
        .await?;
        let bumped = match seen_epoch {
            None => {
                self.q("UPDATE policy_epoch SET epoch = epoch + 1 WHERE id = 1")
                    .execute(&mut *tx)
                    .await?
            }
            // Row-locked: a concurrent writer that bumped first makes this match nothing.
            Some(e) => {
                self.q("UPDATE policy_epoch SET epoch = epoch + 1 WHERE id = 1 AND epoch = ?")
                    .bind(e)
                    .execute(&mut *tx)
                    .await?
            }
        }
        .rows_affected();
        if bumped != 1 {
            return Err(StoreError::PoliciesChanged);
        }
        tx.commit().await?;
        Ok(())
    }
}
