//! What a signing request carried beyond its digest ([`SignExtras`]: the requester, the
//! transaction, the approval rule, quota claims) and the approval votes on a task that
//! waits for people (`PENDING_APPROVAL`).
//!
//! A vote locks its task's row before it reads anything, so votes on one task are taken
//! one at a time on every backend and the vote that completes the count is the only one
//! that releases the task. Every status change is a conditional UPDATE
//! (`WHERE status = 'PENDING_APPROVAL'`), so a release, a rejection, an expiry sweep and a
//! failure that race change the task once.

use crate::{Result, SignRow, Store, StoreError, TaskStatus, sign_row};
use sqlx::Row;
use sqlx::any::AnyRow;
use std::time::Duration;

/// `error_code` of a task that an approver rejected.
pub const ERROR_REJECTED: &str = "REJECTED";
/// `error_code` of a task whose approval window closed without enough approvals.
pub const ERROR_APPROVAL_EXPIRED: &str = "APPROVAL_EXPIRED";
/// Longest approver principal (`kind:id`, in characters), the width of its column.
pub const APPROVER_MAX: usize = 300;
/// Longest approval comment, in characters.
pub const APPROVAL_COMMENT_MAX: usize = 4096;

/// What a signing request carried beyond [`SignRow`], stored beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignExtras {
    /// The principal that asked, written `kind:id`.
    pub requester: String,
    /// The unsigned transaction (JSON) when a transaction, not a bare digest, is signed.
    pub tx: Option<String>,
    /// The signed transaction, set once after signing ([`Store::set_signed_tx`]).
    pub signed_tx: Option<String>,
    pub tx_hash: Option<String>,
    /// `None`: the task needed no approval.
    pub approval: Option<ApprovalRule>,
    /// JSON the store keeps but does not read (what to refund if the task fails); `[]`
    /// when there is nothing.
    pub quota_claims: String,
}

/// How many people must approve a task, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRule {
    /// At least 1.
    pub required: u32,
    /// The group approvers come from; checking membership is the caller's job.
    pub group: Option<String>,
    /// The policy that asked for approval.
    pub policy: String,
    /// No vote is taken from this time on (ms); [`Store::expire_approvals`] then rejects
    /// the task.
    pub expires_at: i64,
}

/// The result of a vote that was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApprovalOutcome {
    /// Approving votes so far, this one included.
    pub approvals: u32,
    pub required: u32,
    /// This vote completed the count and moved the task PENDING_APPROVAL → INIT; exactly
    /// one vote of a task reports it.
    pub released: bool,
    /// This vote was a rejection and moved the task to REJECTED.
    pub rejected: bool,
}

/// Why a vote was not taken (a second vote of the same approver is
/// [`StoreError::Conflict`] instead).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalRefused {
    #[error("signing task {0} does not exist")]
    UnknownTask(String),
    #[error("signing task {instance_id} is {status}, not waiting for approval")]
    NotPending {
        instance_id: String,
        status: TaskStatus,
    },
    #[error("the approval window of signing task {instance_id} closed at {expires_at} ms")]
    Expired {
        instance_id: String,
        expires_at: i64,
    },
}

/// One vote on a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRow {
    pub instance_id: String,
    /// The voter, written `kind:id`.
    pub approver: String,
    /// `false`: a rejection.
    pub approve: bool,
    pub comment: String,
    pub created_at: i64,
}

/// The sign_extras columns, qualified for a join with sign_tasks `s`.
macro_rules! extras_columns {
    () => {
        "e.requester, e.tx, e.signed_tx, e.tx_hash, e.approvals_required, e.approver_group, \
         e.approval_policy, e.approval_expires_at, e.quota_claims"
    };
}

impl Store {
    /// Inserts a signing task and its extras in one transaction. The task may start in
    /// `PENDING_APPROVAL`, which needs an approval rule (and a rule needs `required` ≥ 1).
    pub async fn insert_sign_with(&self, s: &SignRow, x: &SignExtras) -> Result<()> {
        match (&x.approval, s.status) {
            (Some(rule), _) if rule.required == 0 => {
                return Err(StoreError::Db(format!(
                    "signing task {}: an approval rule needs at least one approval",
                    s.instance_id
                )));
            }
            (None, TaskStatus::PendingApproval) => {
                return Err(StoreError::Db(format!(
                    "signing task {} waits for approval but has no approval rule",
                    s.instance_id
                )));
            }
            _ => {}
        }
        let mut tx = self.pool.begin().await?;
        self.insert_sign_on(&mut *tx, s).await?;
        let rule = x.approval.as_ref();
        self.q(
            "INSERT INTO sign_extras (instance_id, requester, tx, signed_tx, tx_hash, \
             approvals_required, approver_group, approval_policy, approval_expires_at, \
             quota_claims) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(s.instance_id.clone())
        .bind(x.requester.clone())
        .bind(x.tx.clone())
        .bind(x.signed_tx.clone())
        .bind(x.tx_hash.clone())
        .bind(rule.map_or(0, |r| i64::from(r.required)))
        .bind(rule.and_then(|r| r.group.clone()))
        .bind(rule.map(|r| r.policy.clone()))
        .bind(rule.map(|r| r.expires_at))
        .bind(x.quota_claims.clone())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The extras of a task; `None` if it has none (or does not exist).
    pub async fn get_sign_extras(&self, instance_id: &str) -> Result<Option<SignExtras>> {
        let row = self
            .q(concat!(
                "SELECT ",
                extras_columns!(),
                " FROM sign_extras e WHERE e.instance_id = ?"
            ))
            .bind(instance_id.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| extras_row(&r)).transpose()
    }

    /// Records the signed transaction and its hash, once: `false` if the task has no
    /// extras or they were already set.
    pub async fn set_signed_tx(
        &self,
        instance_id: &str,
        signed_tx: &str,
        tx_hash: &str,
    ) -> Result<bool> {
        let done = self
            .q("UPDATE sign_extras SET signed_tx = ?, tx_hash = ? \
                 WHERE instance_id = ? AND signed_tx IS NULL")
            .bind(signed_tx.to_owned())
            .bind(tx_hash.to_owned())
            .bind(instance_id.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Takes `approver`'s vote on a task waiting for approval, at `now` (ms).
    ///
    /// Refused with [`StoreError::ApprovalRefused`] if the task is unknown, no longer
    /// `PENDING_APPROVAL`, or its window closed (`expires_at <= now`); with
    /// [`StoreError::Conflict`] if this approver already voted. An approval that brings the
    /// count to the rule's `required` releases the task (→ INIT, `released: true`); a
    /// rejection ends it (→ REJECTED, error code [`ERROR_REJECTED`]).
    pub async fn record_approval(
        &self,
        instance_id: &str,
        approver: &str,
        approve: bool,
        comment: &str,
        now: i64,
    ) -> Result<ApprovalOutcome> {
        if approver.chars().count() > APPROVER_MAX {
            return Err(StoreError::Db(format!(
                "approver is longer than {APPROVER_MAX} characters"
            )));
        }
        if comment.chars().count() > APPROVAL_COMMENT_MAX {
            return Err(StoreError::Db(format!(
                "approval comment is longer than {APPROVAL_COMMENT_MAX} characters"
            )));
        }
        let mut attempt = 0;
        loop {
            match self
                .try_record_approval(instance_id, approver, approve, comment, now)
                .await
            {
                Err(StoreError::Retryable(_)) if attempt < 5 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(5 << attempt)).await;
                }
                other => return other,
            }
        }
    }

    async fn try_record_approval(
        &self,
        instance_id: &str,
        approver: &str,
        approve: bool,
        comment: &str,
        now: i64,
    ) -> Result<ApprovalOutcome> {
        let mut tx = self.pool.begin().await?;
        // Write the task row first: the row lock (on SQLite the database write lock) makes
        // concurrent votes on this task wait here, before they read its state.
        self.q("UPDATE sign_tasks SET updated_at = updated_at WHERE instance_id = ?")
            .bind(instance_id.to_owned())
            .execute(&mut *tx)
            .await?;
        let row = self
            .q(
                "SELECT s.status, e.approvals_required, e.approval_expires_at FROM sign_tasks s \
                 LEFT JOIN sign_extras e ON e.instance_id = s.instance_id WHERE s.instance_id = ?",
            )
            .bind(instance_id.to_owned())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| ApprovalRefused::UnknownTask(instance_id.to_owned()))?;
        let status = crate::status(&row)?;
        if status != TaskStatus::PendingApproval {
            return Err(ApprovalRefused::NotPending {
                instance_id: instance_id.to_owned(),
                status,
            }
            .into());
        }
        let required: Option<i64> = row.try_get("approvals_required")?;
        let expires_at: Option<i64> = row.try_get("approval_expires_at")?;
        let (required, expires_at) = match (required.map(u32::try_from), expires_at) {
            (Some(Ok(required)), Some(expires_at)) if required > 0 => (required, expires_at),
            _ => {
                return Err(StoreError::Corrupt(format!(
                    "signing task {instance_id} waits for approval without an approval rule"
                )));
            }
        };
        if expires_at <= now {
            return Err(ApprovalRefused::Expired {
                instance_id: instance_id.to_owned(),
                expires_at,
            }
            .into());
        }
        self.q(
            "INSERT INTO sign_approvals (instance_id, approver, approve, comment, created_at) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(instance_id.to_owned())
        .bind(approver.to_owned())
        .bind(i64::from(approve))
        .bind(comment.to_owned())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let approvals: i64 = self
            .q("SELECT COUNT(*) AS n FROM sign_approvals WHERE instance_id = ? AND approve = 1")
            .bind(instance_id.to_owned())
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        let approvals = u32::try_from(approvals).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut outcome = ApprovalOutcome {
            approvals,
            required,
            released: false,
            rejected: false,
        };
        if !approve {
            outcome.rejected = self
                .q(
                    "UPDATE sign_tasks SET status = 'REJECTED', error_code = ?, error_message = ?, \
                     updated_at = ? WHERE instance_id = ? AND status = 'PENDING_APPROVAL'",
                )
                .bind(ERROR_REJECTED)
                .bind(format!("rejected by {approver}"))
                .bind(now)
                .bind(instance_id.to_owned())
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1;
        } else if approvals >= required {
            outcome.released = self
                .q(
                    "UPDATE sign_tasks SET status = 'INIT', updated_at = ?, gateway_id = ? \
                     WHERE instance_id = ? AND status = 'PENDING_APPROVAL'",
                )
                .bind(now)
                .bind(self.gateway_id.to_string())
                .bind(instance_id.to_owned())
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1;
        }
        tx.commit().await?;
        Ok(outcome)
    }

    /// A task's votes in the order they were cast.
    pub async fn list_approvals(&self, instance_id: &str) -> Result<Vec<ApprovalRow>> {
        let rows = self
            .q(
                "SELECT instance_id, approver, approve, comment, created_at FROM sign_approvals \
                 WHERE instance_id = ? ORDER BY created_at, approver",
            )
            .bind(instance_id.to_owned())
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(ApprovalRow {
                    instance_id: r.try_get("instance_id")?,
                    approver: r.try_get("approver")?,
                    approve: r.try_get::<i64, _>("approve")? != 0,
                    comment: r.try_get("comment")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    /// Up to `limit` tasks waiting for approval, oldest first (including any whose window
    /// closed but that [`Store::expire_approvals`] has not swept yet).
    pub async fn list_pending_approvals(&self, limit: u32) -> Result<Vec<(SignRow, SignExtras)>> {
        let rows = self
            .q(concat!(
                "SELECT s.*, ",
                extras_columns!(),
                " FROM sign_tasks s JOIN sign_extras e ON e.instance_id = s.instance_id \
                 WHERE s.status = 'PENDING_APPROVAL' ORDER BY s.created_at, s.instance_id LIMIT ?"
            ))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((sign_row(r)?, extras_row(r)?)))
            .collect()
    }

    /// Rejects every task still waiting for approval whose window closed (`expires_at <=
    /// now`) with error code [`ERROR_APPROVAL_EXPIRED`], and returns their instance ids.
    /// Each change is conditional, so of concurrent sweepers exactly one expires a task.
    pub async fn expire_approvals(&self, now: i64) -> Result<Vec<String>> {
        let due = self
            .q("SELECT s.instance_id FROM sign_tasks s JOIN sign_extras e \
                 ON e.instance_id = s.instance_id WHERE s.status = 'PENDING_APPROVAL' \
                 AND e.approval_expires_at <= ? ORDER BY e.approval_expires_at, s.instance_id")
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        let mut expired = Vec::new();
        for r in &due {
            let id: String = r.try_get("instance_id")?;
            let done = self
                .q(
                    "UPDATE sign_tasks SET status = 'REJECTED', error_code = ?, error_message = ?, \
                     updated_at = ? WHERE instance_id = ? AND status = 'PENDING_APPROVAL'",
                )
                .bind(ERROR_APPROVAL_EXPIRED)
                .bind("the approval window closed before enough approvers agreed")
                .bind(now)
                .bind(id.clone())
                .execute(&self.pool)
                .await?;
            if done.rows_affected() == 1 {
                expired.push(id);
            }
        }
        Ok(expired)
    }
}

/// Reads the [`extras_columns!`] of a row.
fn extras_row(r: &AnyRow) -> Result<SignExtras> {
    let required = u32::try_from(r.try_get::<i64, _>("approvals_required")?)
        .map_err(|e| StoreError::Corrupt(format!("approvals_required: {e}")))?;
    let policy: Option<String> = r.try_get("approval_policy")?;
    let expires_at: Option<i64> = r.try_get("approval_expires_at")?;
    let approval = match (required, policy, expires_at) {
        (0, _, _) => None,
        (required, Some(policy), Some(expires_at)) => Some(ApprovalRule {
            required,
            group: r.try_get("approver_group")?,
            policy,
            expires_at,
        }),
        _ => {
            return Err(StoreError::Corrupt(
                "an approval rule without its policy or deadline".to_owned(),
            ));
        }
    };
    Ok(SignExtras {
        requester: r.try_get("requester")?,
        tx: r.try_get("tx")?,
        signed_tx: r.try_get("signed_tx")?,
        tx_hash: r.try_get("tx_hash")?,
        approval,
        quota_claims: r.try_get("quota_claims")?,
    })
}
