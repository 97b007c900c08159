//! Backup groups (named, ordered lists of custodian X25519 public keys), the latest backup
//! of a key to a group (the share generation and the shares, each sealed to its custodian:
//! ciphertext only) and the public output of a key task (an export's sealed shares).

use crate::{Result, Store, StoreError};
use sqlx::Row;

/// A backup group. `custodians` is JSON the gateway writes and reads (name and public key
/// of each custodian, in share order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupGroupRow {
    pub name: String,
    pub custodians: String,
    pub created_at: i64,
}

/// The latest backup of `key_id` to `backup_group`. `shares` is JSON of the sealed shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyBackupRow {
    pub key_id: String,
    pub backup_group: String,
    pub generation: u32,
    pub shares: String,
    pub created_at: i64,
}

impl Store {
    /// Inserts a backup group; [`StoreError::Conflict`] if the name is taken.
    pub async fn insert_backup_group(&self, g: &BackupGroupRow) -> Result<()> {
        self.q("INSERT INTO backup_groups (name, custodians, created_at) VALUES (?, ?, ?)")
            .bind(g.name.clone())
            .bind(g.custodians.clone())
            .bind(g.created_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn get_backup_group(&self, name: &str) -> Result<Option<BackupGroupRow>> {
        let row = self
            .q("SELECT name, custodians, created_at FROM backup_groups WHERE name = ?")
            .bind(name.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(BackupGroupRow {
                name: r.try_get("name")?,
                custodians: r.try_get("custodians")?,
                created_at: r.try_get("created_at")?,
            })
        })
        .transpose()
    }

    pub async fn list_backup_groups(&self) -> Result<Vec<BackupGroupRow>> {
        let rows = self
            .q("SELECT name, custodians, created_at FROM backup_groups ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(BackupGroupRow {
                    name: r.try_get("name")?,
                    custodians: r.try_get("custodians")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    /// Deletes a group that holds no backup. `Ok(false)`: no such group;
    /// [`StoreError::Conflict`]: backups of keys to it exist (delete them first by
    /// deleting the keys, or keep the group while its custodians hold shares).
    pub async fn delete_backup_group(&self, name: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let used = self
            .q("SELECT key_id FROM key_backups WHERE backup_group = ?")
            .bind(name.to_owned())
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if used {
            return Err(StoreError::Conflict);
        }
        let done = self
            .q("DELETE FROM backup_groups WHERE name = ?")
            .bind(name.to_owned())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(done == 1)
    }

    /// Records the backup of a key to a group, replacing an older one.
    pub async fn put_key_backup(&self, b: &KeyBackupRow) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        self.q("DELETE FROM key_backups WHERE key_id = ? AND backup_group = ?")
            .bind(b.key_id.clone())
            .bind(b.backup_group.clone())
            .execute(&mut *tx)
            .await?;
        self.q(
            "INSERT INTO key_backups (key_id, backup_group, generation, shares, created_at) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(b.key_id.clone())
        .bind(b.backup_group.clone())
        .bind(i64::from(b.generation))
        .bind(b.shares.clone())
        .bind(b.created_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn get_key_backup(
        &self,
        key_id: &str,
        backup_group: &str,
    ) -> Result<Option<KeyBackupRow>> {
        let row = self
            .q(
                "SELECT key_id, backup_group, generation, shares, created_at FROM key_backups \
                WHERE key_id = ? AND backup_group = ?",
            )
            .bind(key_id.to_owned())
            .bind(backup_group.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(KeyBackupRow {
                key_id: r.try_get("key_id")?,
                backup_group: r.try_get("backup_group")?,
                generation: u32::try_from(r.try_get::<i64, _>("generation")?)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                shares: r.try_get("shares")?,
                created_at: r.try_get("created_at")?,
            })
        })
        .transpose()
    }

    /// Stores the public output of a key task (before the task is ended).
    pub async fn set_key_task_result(&self, instance_id: &str, result: &str) -> Result<()> {
        self.q("UPDATE key_tasks SET result = ? WHERE instance_id = ?")
            .bind(result.to_owned())
            .bind(instance_id.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn get_key_task_result(&self, instance_id: &str) -> Result<Option<String>> {
        let row = self
            .q("SELECT result FROM key_tasks WHERE instance_id = ?")
            .bind(instance_id.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        match row {
            None => Ok(None),
            Some(r) => Ok(r.try_get("result")?),
        }
    }
}
