//! Several gateways on one database. Each gateway process renews a heartbeat row; every
//! unfinished task names the gateway that runs it (`gateway_id`, written when the task is
//! inserted or released by its approvals). A task's protocol sessions live in that
//! process's memory, so when the process dies the task cannot go on: any surviving
//! gateway (or the same one, restarted) ends it FAILED once the dead one's heartbeat is
//! older than the lease. Every end is conditional in SQL, so concurrent sweepers end each
//! task once, and a task whose gateway turns out to be alive after all is left alone.

use crate::{Result, Store};
use sqlx::Row;

/// A gateway process that shares this database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayRow {
    pub id: String,
    pub started_at: i64,
    pub heartbeat_at: i64,
}

/// Tasks one sweep ended, by kind, each with the gateway that had run it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Orphans {
    pub keys: Vec<(String, Option<String>)>,
    pub signs: Vec<(String, Option<String>)>,
    /// Tasks on existing keys (refreshes, recoveries).
    pub tasks: Vec<(String, Option<String>)>,
}

impl Orphans {
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.signs.is_empty() && self.tasks.is_empty()
    }
}

/// The tables whose rows are tasks, with their id column and the column naming the key.
const TASK_TABLES: [(&str, &str, &str); 3] = [
    ("mpc_keys", "key_id", "key_id"),
    ("sign_tasks", "instance_id", "key_id"),
    ("key_tasks", "instance_id", "key_id"),
];

/// A task is orphaned when it is still running (INIT or PROCESSING: a signing waiting
/// for approvals waits for people, not for a process) and no live gateway owns it.
const ORPHANED: &str = "status IN ('INIT','PROCESSING') AND (gateway_id IS NULL OR gateway_id NOT IN \
     (SELECT id FROM gateways WHERE heartbeat_at >= ?))";

impl Store {
    /// Records this gateway as alive at `now`; the first call registers it.
    pub async fn heartbeat(&self, now: i64) -> Result<()> {
        let updated = self
            .q("UPDATE gateways SET heartbeat_at = ? WHERE id = ?")
            .bind(now)
            .bind(self.gateway_id.to_string())
            .execute(&self.pool)
            .await?
            .rows_affected();
        if updated == 0 {
            // Only this process writes its own id, so the insert cannot race another.
            self.q("INSERT INTO gateways (id, started_at, heartbeat_at) VALUES (?, ?, ?)")
                .bind(self.gateway_id.to_string())
                .bind(now)
                .bind(now)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Gateways whose last heartbeat is at or after `cutoff`, oldest first.
    pub async fn live_gateways(&self, cutoff: i64) -> Result<Vec<GatewayRow>> {
        let rows = self
            .q(
                "SELECT id, started_at, heartbeat_at FROM gateways WHERE heartbeat_at >= ? \
                ORDER BY started_at, id",
            )
            .bind(cutoff)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(GatewayRow {
                    id: r.try_get("id")?,
                    started_at: r.try_get("started_at")?,
                    heartbeat_at: r.try_get("heartbeat_at")?,
                })
            })
            .collect()
    }

    /// Ends FAILED every running task whose gateway has not renewed its heartbeat since
    /// `cutoff` (or that names none: tasks from before gateways were recorded), with
    /// `code` and the message `message(gateway_id)`, and releases the keys those refreshes
    /// held. Returns the tasks this call ended. The lookups use the status indexes, so a
    /// sweep that finds nothing costs three index reads.
    pub async fn fail_orphaned(
        &self,
        cutoff: i64,
        code: &str,
        message: impl Fn(Option<&str>) -> String,
        now: i64,
    ) -> Result<Orphans> {
        let mut ended: [Vec<(String, Option<String>)>; 3] = Default::default();
        for ((table, id_col, key_col), ended) in TASK_TABLES.iter().zip(ended.iter_mut()) {
            let found = self
                .q_built(format!(
                    "SELECT {id_col} AS id, {key_col} AS key_id, gateway_id FROM {table} WHERE {ORPHANED}"
                ))
                .bind(cutoff)
                .fetch_all(&self.pool)
                .await?;
            for row in found {
                let id: String = row.try_get("id")?;
                let key_id: String = row.try_get("key_id")?;
                let gateway: Option<String> = row.try_get("gateway_id")?;
                let done = self
                    .q_built(format!(
                        "UPDATE {table} SET status = 'FAILED', error_code = ?, error_message = ?, \
                         updated_at = ? WHERE {id_col} = ? AND {ORPHANED}"
                    ))
                    .bind(code.to_owned())
                    .bind(message(gateway.as_deref()))
                    .bind(now)
                    .bind(id.clone())
                    .bind(cutoff)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                if done != 1 {
                    continue;
                }
                if *table == "key_tasks" {
                    self.q("UPDATE mpc_keys SET refresh_task = NULL WHERE key_id = ? AND refresh_task = ?")
                        .bind(key_id)
                        .bind(id.clone())
                        .execute(&self.pool)
                        .await?;
                }
                ended.push((id, gateway));
            }
        }
        let [keys, signs, tasks] = ended;
        Ok(Orphans { keys, signs, tasks })
    }

    /// Releases keys held by a refresh that is no longer running: a gateway that died
    /// between ending a refresh task and releasing its key leaves such a hold. A full scan
    /// of the keys, so it runs rarely (at start, then hourly).
    pub async fn release_stale_refresh_holds(&self) -> Result<u64> {
        Ok(self
            .q(
                "UPDATE mpc_keys SET refresh_task = NULL WHERE refresh_task IS NOT NULL AND refresh_task NOT IN \
                 (SELECT instance_id FROM key_tasks WHERE status IN ('INIT','PROCESSING'))",
            )
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    /// Forgets gateways silent since before `before` that no running task names.
    pub async fn forget_gateways(&self, before: i64) -> Result<u64> {
        let mut sql = String::from("DELETE FROM gateways WHERE heartbeat_at < ?");
        for (table, _, _) in TASK_TABLES {
            sql.push_str(&format!(
                " AND id NOT IN (SELECT gateway_id FROM {table} WHERE gateway_id IS NOT NULL \
                 AND status IN ('INIT','PROCESSING'))"
            ));
        }
        Ok(self
            .q_built(sql)
            .bind(before)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }
}
