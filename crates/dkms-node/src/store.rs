//! The node's embedded transactional store (redb), in which every value is sealed.
//!
//! Tables: `shares` (key id → key share), `secrets` (name → singleton secret such as the node
//! identity), `peer_pins` (peer tag → pinned X25519 key) and `meta` (a sealed canary that tells
//! a wrong sealing key apart from a damaged record at open time).
//!
//! Each stored value is `record format version (1 byte) ‖ sealed bytes`, sealed with the
//! associated data `"dkms/node-store/v1" ‖ table ‖ record id ‖ record format version` (table
//! and id each prefixed with their length as a big-endian u32, so no two distinct pairs encode
//! alike). A sealed value copied to another record, table or version does not open.
//!
//! Crash safety is redb's: each method below is one transaction whose commit is atomic and
//! durable (redb's default `Durability::Immediate`), so a crash leaves either the old or the new
//! state, never a half-written share. Keys (share ids, names, tags) are stored in the clear;
//! only values are sealed.

use std::fmt;
use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use zeroize::Zeroizing;

use crate::sealer::{SealError, Sealer};

const SHARES_NAME: &str = "shares";
const SECRETS_NAME: &str = "secrets";
const PEER_PINS_NAME: &str = "peer_pins";
const META_NAME: &str = "meta";
const STAGED_NAME: &str = "staged_shares";
const GENERATIONS_NAME: &str = "share_generations";
const REPAIRS_NAME: &str = "repairs_helped";

const SHARES: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new(SHARES_NAME);
const SECRETS: TableDefinition<&str, &[u8]> = TableDefinition::new(SECRETS_NAME);
const PEER_PINS: TableDefinition<&str, &[u8]> = TableDefinition::new(PEER_PINS_NAME);
const META: TableDefinition<&str, &[u8]> = TableDefinition::new(META_NAME);
/// A refreshed share waiting for the gateway to commit its generation: key id →
/// generation (u32 big endian) ‖ sealed share.
const STAGED: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new(STAGED_NAME);
/// The generation of the share in `shares` (absent = 0, the generation a key is born with).
const GENERATIONS: TableDefinition<&[u8; 16], u32> = TableDefinition::new(GENERATIONS_NAME);
/// The members replaced by the repairs this node helped with at the latest share
/// generation it helped at, per key: generation (u32 big endian) ‖ their tags joined by
/// `,` (a byte no tag holds, so a record of the first format, with one tag, reads as a
/// set of one). Public facts, kept to refuse rebuilding more members of one generation
/// than the key allows.
const REPAIRS: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new(REPAIRS_NAME);

/// Between the tags of a `repairs_helped` record.
const REPAIR_TAG_SEPARATOR: u8 = b',';

/// Domain separator at the start of every record's associated data.
const AAD_DOMAIN: &[u8] = b"dkms/node-store/v1";
/// Format version of the records written by this code.
pub const RECORD_FORMAT_V1: u8 = 1;
const CANARY_ID: &str = "canary";
const CANARY_PLAINTEXT: &[u8] = b"dkms node store canary v1";
/// redb's page cache holds sealed pages only; keep it modest, several nodes may share a host.
const CACHE_SIZE_BYTES: usize = 64 * 1024 * 1024;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("node store database error: {0}")]
    Db(#[source] Box<redb::Error>),
    #[error("creating the node store file {path}: {source}")]
    CreateFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the node store {path} was sealed under a different key than the configured sealer \
         ({sealer}): wrong key file or passphrase?"
    )]
    WrongSealingKey { path: PathBuf, sealer: String },
    #[error("sealing a record for table {table}: {source}")]
    Seal {
        table: &'static str,
        #[source]
        source: SealError,
    },
    #[error("record {id} in table {table} could not be opened: {source}")]
    Unreadable {
        table: &'static str,
        id: String,
        #[source]
        source: SealError,
    },
    #[error("record {id} in table {table} has unsupported format version {version}")]
    UnsupportedRecordVersion {
        table: &'static str,
        id: String,
        version: u8,
    },
    #[error("record {id} in table {table} is malformed: {reason}")]
    Malformed {
        table: &'static str,
        id: String,
        reason: &'static str,
    },
    #[error("a record with this id already exists")]
    AlreadyExists,
    #[error("peer {tag} is pinned to a different encryption key")]
    PinMismatch { tag: String },
    #[error("the operating system random number generator failed: {0}")]
    Random(String),
}

/// What [`NodeStore::record_repair_help`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepairHelp {
    /// Recorded (or recorded already): the helper may give its term.
    Recorded,
    /// Over the limit; `named` are the members already recorded at that generation.
    Refused { named: Vec<String> },
}

impl RepairHelp {
    pub fn allowed(&self) -> bool {
        *self == RepairHelp::Recorded
    }
}

fn db<E: Into<redb::Error>>(e: E) -> StoreError {
    StoreError::Db(Box::new(e.into()))
}

/// The node's sealed store. `Send + Sync`: share it as `Arc<NodeStore>` and call it from
/// blocking threads (`spawn_blocking`); redb serialises writers and lets readers run alongside.
pub struct NodeStore {
    db: redb::Database,
    sealer: Arc<dyn Sealer>,
    path: PathBuf,
}

impl fmt::Debug for NodeStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeStore")
            .field("path", &self.path)
            .field("sealer", &self.sealer.describe())
            .finish_non_exhaustive()
    }
}

impl NodeStore {
    /// Opens the store at `path`, creating it (file mode 0600) if absent.
    ///
    /// On first open a sealed canary is written; later opens check it, so a wrong key file or
    /// passphrase fails here with [`StoreError::WrongSealingKey`] instead of on the first read.
    /// The parent directory must exist. The file is locked: a second open of the same store,
    /// in this process or another, fails until the first is dropped.
    pub fn open(path: &Path, sealer: Arc<dyn Sealer>) -> Result<Self, StoreError> {
        create_private_empty_file(path)?;
        let database = redb::Database::builder()
            .set_cache_size(CACHE_SIZE_BYTES)
            .create(path)
            .map_err(db)?;
        let store = Self {
            db: database,
            sealer,
            path: path.to_path_buf(),
        };
        store.init()?;
        Ok(store)
    }

    /// Creates the tables (read transactions cannot open a missing table) and writes or
    /// checks the canary, in one transaction.
    fn init(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db)?;
        let existing = {
            let _ = txn.open_table(SHARES).map_err(db)?;
            let _ = txn.open_table(SECRETS).map_err(db)?;
            let _ = txn.open_table(PEER_PINS).map_err(db)?;
            let _ = txn.open_table(STAGED).map_err(db)?;
            let _ = txn.open_table(GENERATIONS).map_err(db)?;
            let _ = txn.open_table(REPAIRS).map_err(db)?;
            let meta = txn.open_table(META).map_err(db)?;
            meta.get(CANARY_ID).map_err(db)?.map(|g| g.value().to_vec())
        };
        match existing {
            Some(stored) => {
                let ok = self
                    .open_record(META_NAME, CANARY_ID.as_bytes(), &stored)
                    .is_ok_and(|pt| pt.as_slice() == CANARY_PLAINTEXT);
                if !ok {
                    txn.abort().map_err(db)?;
                    return Err(StoreError::WrongSealingKey {
                        path: self.path.clone(),
                        sealer: self.sealer.describe(),
                    });
                }
            }
            None => {
                let sealed = self.seal_record(META_NAME, CANARY_ID.as_bytes(), CANARY_PLAINTEXT)?;
                let mut meta = txn.open_table(META).map_err(db)?;
                meta.insert(CANARY_ID, sealed.as_slice()).map_err(db)?;
            }
        }
        txn.commit().map_err(db)?;
        Ok(())
    }

    /// Writes a key share once, atomically (one redb write transaction).
    /// `Err(StoreError::AlreadyExists)` if the key id is present: a share is never silently
    /// overwritten (a refresh that swaps shares will need its own atomic replace).
    pub fn put_share(&self, key_id: &uuid::Uuid, share: &[u8]) -> Result<(), StoreError> {
        // Seal before taking the write lock; sealing 500 KB is the slow part.
        let sealed = self.seal_record(SHARES_NAME, key_id.as_bytes(), share)?;
        let txn = self.db.begin_write().map_err(db)?;
        let inserted = {
            let mut table = txn.open_table(SHARES).map_err(db)?;
            if table.get(key_id.as_bytes()).map_err(db)?.is_some() {
                false
            } else {
                table
                    .insert(key_id.as_bytes(), sealed.as_slice())
                    .map_err(db)?;
                true
            }
        };
        if !inserted {
            txn.abort().map_err(db)?;
            return Err(StoreError::AlreadyExists);
        }
        txn.commit().map_err(db)?;
        Ok(())
    }

    /// Reads and opens a key share; `None` if there is none for this key id.
    pub fn get_share(&self, key_id: &uuid::Uuid) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        let txn = self.db.begin_read().map_err(db)?;
        let table = txn.open_table(SHARES).map_err(db)?;
        let Some(guard) = table.get(key_id.as_bytes()).map_err(db)? else {
            return Ok(None);
        };
        self.open_record(SHARES_NAME, key_id.as_bytes(), guard.value())
            .map(Some)
    }

    /// Stores a share rebuilt by a repair as the live share of `generation`, in one
    /// transaction. A share already stored is replaced only if `replaceable` says so on its
    /// plaintext (a hollow share from an earlier, unfinished recovery); otherwise
    /// `Err(StoreError::AlreadyExists)`.
    pub fn put_repaired_share(
        &self,
        key_id: &uuid::Uuid,
        generation: u32,
        share: &[u8],
        replaceable: impl FnOnce(&[u8]) -> bool,
    ) -> Result<(), StoreError> {
        let sealed = self.seal_record(SHARES_NAME, key_id.as_bytes(), share)?;
        let txn = self.db.begin_write().map_err(db)?;
        {
            let mut table = txn.open_table(SHARES).map_err(db)?;
            let existing = table
                .get(key_id.as_bytes())
                .map_err(db)?
                .map(|g| g.value().to_vec());
            if let Some(stored) = existing {
                let plain = self.open_record(SHARES_NAME, key_id.as_bytes(), &stored)?;
                if !replaceable(&plain) {
                    drop(table);
                    txn.abort().map_err(db)?;
                    return Err(StoreError::AlreadyExists);
                }
            }
            table
                .insert(key_id.as_bytes(), sealed.as_slice())
                .map_err(db)?;
            txn.open_table(STAGED)
                .map_err(db)?
                .remove(key_id.as_bytes())
                .map_err(db)?;
            txn.open_table(GENERATIONS)
                .map_err(db)?
                .insert(key_id.as_bytes(), generation)
                .map_err(db)?;
        }
        txn.commit().map_err(db)?;
        Ok(())
    }

    /// Records that this node helps a repair of `key_id` at `generation` that replaces the
    /// members `replaced` (the one it rebuilds and the recovery's other lost members).
    /// [`RepairHelp::Refused`], recording nothing, if that would make more than `limit` distinct
    /// members in the repairs it helped at that generation: each repair hands its
    /// recipient a real share of the generation, and the caller's `limit` (below the
    /// key's threshold, from this node's own share) keeps the rebuilt shares from making
    /// the key together. Members already recorded (a retried recovery) are always
    /// allowed; a new generation starts a new set.
    pub fn record_repair_help(
        &self,
        key_id: &uuid::Uuid,
        generation: u32,
        replaced: &[&str],
        limit: usize,
    ) -> Result<RepairHelp, StoreError> {
        if replaced
            .iter()
            .any(|t| t.is_empty() || t.as_bytes().contains(&REPAIR_TAG_SEPARATOR))
        {
            return Ok(RepairHelp::Refused { named: Vec::new() });
        }
        let txn = self.db.begin_write().map_err(db)?;
        let allowed = {
            let mut table = txn.open_table(REPAIRS).map_err(db)?;
            let previous = table
                .get(key_id.as_bytes())
                .map_err(db)?
                .map(|g| g.value().to_vec());
            let mut helped: Vec<&[u8]> = previous
                .as_deref()
                .and_then(|prev| prev.split_at_checked(4))
                .filter(|(g, _)| *g == generation.to_be_bytes())
                .map(|(_, tags)| {
                    tags.split(|b| *b == REPAIR_TAG_SEPARATOR)
                        .filter(|t| !t.is_empty())
                        .collect()
                })
                .unwrap_or_default();
            let known = helped.len();
            for tag in replaced {
                if !helped.contains(&tag.as_bytes()) {
                    helped.push(tag.as_bytes());
                }
            }
            if helped.len() > limit {
                let named = helped[..known]
                    .iter()
                    .map(|t| String::from_utf8_lossy(t).into_owned())
                    .collect();
                RepairHelp::Refused { named }
            } else {
                if helped.len() > known {
                    let mut value = generation.to_be_bytes().to_vec();
                    value.extend_from_slice(&helped.join(&REPAIR_TAG_SEPARATOR));
                    table
                        .insert(key_id.as_bytes(), value.as_slice())
                        .map_err(db)?;
                }
                RepairHelp::Recorded
            }
        };
        txn.commit().map_err(db)?;
        Ok(allowed)
    }

    /// Deletes a key share, with any staged successor; `true` if there was one.
    pub fn delete_share(&self, key_id: &uuid::Uuid) -> Result<bool, StoreError> {
        let txn = self.db.begin_write().map_err(db)?;
        let existed = {
            let mut table = txn.open_table(SHARES).map_err(db)?;
            let existed = table.remove(key_id.as_bytes()).map_err(db)?.is_some();
            txn.open_table(STAGED)
                .map_err(db)?
                .remove(key_id.as_bytes())
                .map_err(db)?;
            txn.open_table(GENERATIONS)
                .map_err(db)?
                .remove(key_id.as_bytes())
                .map_err(db)?;
            existed
        };
        txn.commit().map_err(db)?;
        Ok(existed)
    }

    /// The generation of the stored share of `key_id` (0 until a refresh is committed).
    pub fn share_generation(&self, key_id: &uuid::Uuid) -> Result<u32, StoreError> {
        let txn = self.db.begin_read().map_err(db)?;
        let table = txn.open_table(GENERATIONS).map_err(db)?;
        Ok(table
            .get(key_id.as_bytes())
            .map_err(db)?
            .map(|g| g.value())
            .unwrap_or(0))
    }

    /// Keeps a refreshed share beside the current one until its generation is committed.
    /// A later staging for the same key replaces it (a failed refresh leaves nothing live).
    pub fn stage_share(
        &self,
        key_id: &uuid::Uuid,
        generation: u32,
        share: &[u8],
    ) -> Result<(), StoreError> {
        let id = staged_id(key_id, generation);
        let sealed = self.seal_record(STAGED_NAME, &id, share)?;
        let mut value = generation.to_be_bytes().to_vec();
        value.extend_from_slice(&sealed);
        let txn = self.db.begin_write().map_err(db)?;
        {
            let shares = txn.open_table(SHARES).map_err(db)?;
            if shares.get(key_id.as_bytes()).map_err(db)?.is_none() {
                return Err(StoreError::Malformed {
                    table: SHARES_NAME,
                    id: key_id.to_string(),
                    reason: "no current share to refresh",
                });
            }
            let mut staged = txn.open_table(STAGED).map_err(db)?;
            staged
                .insert(key_id.as_bytes(), value.as_slice())
                .map_err(db)?;
        }
        txn.commit().map_err(db)?;
        Ok(())
    }

    /// Makes the staged share of `generation` the current one, in one transaction that
    /// also overwrites (destroys) the old share. `Ok(false)` if no such share is staged.
    pub fn promote_share(&self, key_id: &uuid::Uuid, generation: u32) -> Result<bool, StoreError> {
        let txn = self.db.begin_write().map_err(db)?;
        {
            let mut staged = txn.open_table(STAGED).map_err(db)?;
            let Some(value) = staged
                .get(key_id.as_bytes())
                .map_err(db)?
                .map(|g| g.value().to_vec())
            else {
                return Ok(false);
            };
            let (gen_bytes, sealed) = value.split_at_checked(4).ok_or(StoreError::Malformed {
                table: STAGED_NAME,
                id: key_id.to_string(),
                reason: "truncated",
            })?;
            let staged_gen =
                u32::from_be_bytes([gen_bytes[0], gen_bytes[1], gen_bytes[2], gen_bytes[3]]);
            if staged_gen != generation {
                return Ok(false);
            }
            let plain = self.open_record(STAGED_NAME, &staged_id(key_id, generation), sealed)?;
            let resealed = self.seal_record(SHARES_NAME, key_id.as_bytes(), &plain)?;
            let mut shares = txn.open_table(SHARES).map_err(db)?;
            shares
                .insert(key_id.as_bytes(), resealed.as_slice())
                .map_err(db)?;
            staged.remove(key_id.as_bytes()).map_err(db)?;
            txn.open_table(GENERATIONS)
                .map_err(db)?
                .insert(key_id.as_bytes(), generation)
                .map_err(db)?;
        }
        txn.commit().map_err(db)?;
        Ok(true)
    }

    /// The key ids of all stored shares, in byte order. Shares are not opened.
    pub fn list_shares(&self) -> Result<Vec<uuid::Uuid>, StoreError> {
        let txn = self.db.begin_read().map_err(db)?;
        let table = txn.open_table(SHARES).map_err(db)?;
        let mut ids = Vec::new();
        for entry in table.iter().map_err(db)? {
            let (key, _) = entry.map_err(db)?;
            ids.push(uuid::Uuid::from_bytes(*key.value()));
        }
        Ok(ids)
    }

    /// Generic sealed singleton records (identity keys etc.).
    ///
    /// Written once, like shares: `Err(StoreError::AlreadyExists)` if `name` is present, so a
    /// long-term secret such as the node identity is never silently replaced.
    pub fn put_secret(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        let sealed = self.seal_record(SECRETS_NAME, name.as_bytes(), value)?;
        let txn = self.db.begin_write().map_err(db)?;
        let inserted = {
            let mut table = txn.open_table(SECRETS).map_err(db)?;
            if table.get(name).map_err(db)?.is_some() {
                false
            } else {
                table.insert(name, sealed.as_slice()).map_err(db)?;
                true
            }
        };
        if !inserted {
            txn.abort().map_err(db)?;
            return Err(StoreError::AlreadyExists);
        }
        txn.commit().map_err(db)?;
        Ok(())
    }

    /// Reads and opens a singleton secret; `None` if there is none of that name.
    pub fn get_secret(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        let txn = self.db.begin_read().map_err(db)?;
        let table = txn.open_table(SECRETS).map_err(db)?;
        let Some(guard) = table.get(name).map_err(db)? else {
            return Ok(None);
        };
        self.open_record(SECRETS_NAME, name.as_bytes(), guard.value())
            .map(Some)
    }

    /// Trust-on-first-use pin of a peer node's X25519 key: stores it if the tag is new; Ok if
    /// equal; `Err(StoreError::PinMismatch{tag})` if a different key is pinned.
    ///
    /// The key is public, but it is sealed all the same so that whoever can write the file
    /// cannot swap in a key of their own.
    pub fn pin_peer(&self, tag: &str, encryption_key: &[u8; 32]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db)?;
        let existing = {
            let table = txn.open_table(PEER_PINS).map_err(db)?;
            table.get(tag).map_err(db)?.map(|g| g.value().to_vec())
        };
        if let Some(stored) = existing {
            let pinned = self.open_record(PEER_PINS_NAME, tag.as_bytes(), &stored);
            txn.abort().map_err(db)?;
            return if pinned?.as_slice() == encryption_key.as_slice() {
                Ok(())
            } else {
                Err(StoreError::PinMismatch {
                    tag: tag.to_owned(),
                })
            };
        }
        let sealed = self.seal_record(PEER_PINS_NAME, tag.as_bytes(), encryption_key)?;
        {
            let mut table = txn.open_table(PEER_PINS).map_err(db)?;
            table.insert(tag, sealed.as_slice()).map_err(db)?;
        }
        txn.commit().map_err(db)?;
        Ok(())
    }

    /// Pins `tag` to a new X25519 key, replacing any earlier pin: for a member that a
    /// recovery this node took part in has replaced.
    pub fn repin_peer(&self, tag: &str, encryption_key: &[u8; 32]) -> Result<(), StoreError> {
        let sealed = self.seal_record(PEER_PINS_NAME, tag.as_bytes(), encryption_key)?;
        let txn = self.db.begin_write().map_err(db)?;
        {
            let mut table = txn.open_table(PEER_PINS).map_err(db)?;
            table.insert(tag, sealed.as_slice()).map_err(db)?;
        }
        txn.commit().map_err(db)?;
        Ok(())
    }

    fn seal_record(
        &self,
        table: &'static str,
        id: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        let aad = record_aad(table, id, RECORD_FORMAT_V1);
        let sealed = self
            .sealer
            .seal(&aad, plaintext)
            .map_err(|source| StoreError::Seal { table, source })?;
        let mut stored = Vec::with_capacity(1 + sealed.len());
        stored.push(RECORD_FORMAT_V1);
        stored.extend_from_slice(&sealed);
        Ok(stored)
    }

    fn open_record(
        &self,
        table: &'static str,
        id: &[u8],
        stored: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        let Some((&version, sealed)) = stored.split_first() else {
            return Err(StoreError::Malformed {
                table,
                id: display_id(table, id),
                reason: "empty value",
            });
        };
        if version != RECORD_FORMAT_V1 {
            return Err(StoreError::UnsupportedRecordVersion {
                table,
                id: display_id(table, id),
                version,
            });
        }
        self.sealer
            .open(&record_aad(table, id, version), sealed)
            .map_err(|source| StoreError::Unreadable {
                table,
                id: display_id(table, id),
                source,
            })
    }
}

/// `"dkms/node-store/v1" ‖ len ‖ table ‖ len ‖ id ‖ version`, lengths as big-endian u32.
fn record_aad(table: &str, id: &[u8], version: u8) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_DOMAIN.len() + 8 + table.len() + id.len() + 1);
    aad.extend_from_slice(AAD_DOMAIN);
    for part in [table.as_bytes(), id] {
        // Ids come from our own tables and are short; saturate rather than panic.
        let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
        aad.extend_from_slice(&len.to_be_bytes());
        aad.extend_from_slice(part);
    }
    aad.push(version);
    aad
}

/// Record id for error messages: a UUID for shares, the name otherwise.
fn display_id(table: &str, id: &[u8]) -> String {
    match <[u8; 16]>::try_from(id) {
        Ok(bytes) if table == SHARES_NAME => uuid::Uuid::from_bytes(bytes).to_string(),
        _ => String::from_utf8_lossy(id).into_owned(),
    }
}

/// Pre-creates the database file owner-only, since redb would create it with the umask's mode.
fn create_private_empty_file(path: &Path) -> Result<(), StoreError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(StoreError::CreateFile {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Record id of a staged share: the key id and the generation, so a staged record cannot
/// be replayed as another generation.
fn staged_id(key_id: &uuid::Uuid, generation: u32) -> Vec<u8> {
    let mut id = key_id.as_bytes().to_vec();
    id.extend_from_slice(&generation.to_be_bytes());
    id
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::sealer::SoftwareSealer;

    fn sealer(dir: &tempfile::TempDir, name: &str) -> Arc<dyn Sealer> {
        Arc::new(SoftwareSealer::from_key_file(&dir.path().join(name)).unwrap())
    }

    fn id(n: u8) -> uuid::Uuid {
        uuid::Uuid::from_bytes([n; 16])
    }

    fn big_share(seed: u8) -> Vec<u8> {
        (0..400_000u32)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    }

    #[test]
    fn store_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<NodeStore>();
        assert_send_sync::<Arc<NodeStore>>();
    }

    #[test]
    fn shares_round_trip_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.redb");
        let s = sealer(&dir, "seal.key");
        let share = big_share(1);
        {
            let store = NodeStore::open(&path, s.clone()).unwrap();
            assert!(store.list_shares().unwrap().is_empty());
            assert!(store.get_share(&id(1)).unwrap().is_none());
            store.put_share(&id(1), &share).unwrap();
            store.put_share(&id(2), b"small").unwrap();
            store.put_secret("identity", b"sekrit").unwrap();
            store.pin_peer("node-b", &[5; 32]).unwrap();
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let store = NodeStore::open(&path, s).unwrap();
        assert_eq!(
            store.get_share(&id(1)).unwrap().unwrap().as_slice(),
            &share[..]
        );
        assert_eq!(
            store.get_share(&id(2)).unwrap().unwrap().as_slice(),
            b"small"
        );
        assert_eq!(store.list_shares().unwrap(), vec![id(1), id(2)]);
        assert_eq!(
            store.get_secret("identity").unwrap().unwrap().as_slice(),
            b"sekrit"
        );
        assert!(store.get_secret("other").unwrap().is_none());
        store.pin_peer("node-b", &[5; 32]).unwrap();

        assert!(store.delete_share(&id(1)).unwrap());
        assert!(!store.delete_share(&id(1)).unwrap());
        assert!(store.get_share(&id(1)).unwrap().is_none());
        assert_eq!(store.list_shares().unwrap(), vec![id(2)]);
    }

    #[test]
    fn values_are_not_stored_in_the_clear() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.redb");
        let marker = b"THIS-IS-A-VERY-RECOGNISABLE-SHARE-MARKER".repeat(100);
        {
            let store = NodeStore::open(&path, sealer(&dir, "k")).unwrap();
            store.put_share(&id(1), &marker).unwrap();
            store.put_secret("s", &marker).unwrap();
        }
        let raw = std::fs::read(&path).unwrap();
        assert!(!raw.windows(40).any(|w| w == &marker[..40]));
    }

    #[test]
    fn put_share_twice_is_already_exists_and_keeps_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = NodeStore::open(&dir.path().join("db"), sealer(&dir, "k")).unwrap();
        store.put_share(&id(1), b"first").unwrap();
        assert!(matches!(
            store.put_share(&id(1), b"second"),
            Err(StoreError::AlreadyExists)
        ));
        assert_eq!(
            store.get_share(&id(1)).unwrap().unwrap().as_slice(),
            b"first"
        );
        store.put_secret("n", b"one").unwrap();
        assert!(matches!(
            store.put_secret("n", b"two"),
            Err(StoreError::AlreadyExists)
        ));
        assert_eq!(store.get_secret("n").unwrap().unwrap().as_slice(), b"one");
    }

    #[test]
    fn wrong_sealer_key_fails_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let store = NodeStore::open(&path, sealer(&dir, "a")).unwrap();
            store.put_share(&id(1), b"share").unwrap();
        }
        let err = NodeStore::open(&path, sealer(&dir, "b")).unwrap_err();
        assert!(matches!(err, StoreError::WrongSealingKey { .. }), "{err}");
        assert!(err.to_string().contains("wrong key file or passphrase"));
        // The right key still works afterwards.
        let store = NodeStore::open(&path, sealer(&dir, "a")).unwrap();
        assert_eq!(
            store.get_share(&id(1)).unwrap().unwrap().as_slice(),
            b"share"
        );
    }

    #[test]
    fn wrong_sealer_key_fails_on_read_not_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let store = NodeStore::open(&path, sealer(&dir, "a")).unwrap();
            store.put_share(&id(1), b"share").unwrap();
            store.put_secret("s", b"secret").unwrap();
        }
        // Bypass the canary check to see what a read does under the wrong key.
        let store = NodeStore {
            db: redb::Database::create(&path).unwrap(),
            sealer: sealer(&dir, "b"),
            path: path.clone(),
        };
        assert!(matches!(
            store.get_share(&id(1)),
            Err(StoreError::Unreadable {
                source: SealError::Decrypt,
                ..
            })
        ));
        assert!(matches!(
            store.get_secret("s"),
            Err(StoreError::Unreadable { .. })
        ));
    }

    /// Copies the raw stored bytes of one record over another through redb directly.
    fn copy_share_raw(store: &NodeStore, from: &uuid::Uuid, to: &uuid::Uuid) {
        let txn = store.db.begin_write().unwrap();
        {
            let mut t = txn.open_table(SHARES).unwrap();
            let raw = t.get(from.as_bytes()).unwrap().unwrap().value().to_vec();
            t.insert(to.as_bytes(), raw.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }

    #[test]
    fn a_sealed_value_moved_to_another_record_does_not_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = NodeStore::open(&dir.path().join("db"), sealer(&dir, "k")).unwrap();
        store.put_share(&id(1), b"share one").unwrap();
        store.put_share(&id(2), b"share two").unwrap();

        // Share 1's value over share 2 (an existing record) and over a new id.
        copy_share_raw(&store, &id(1), &id(2));
        copy_share_raw(&store, &id(1), &id(3));
        assert_eq!(
            store.get_share(&id(1)).unwrap().unwrap().as_slice(),
            b"share one"
        );
        for target in [id(2), id(3)] {
            let err = store.get_share(&target).unwrap_err();
            assert!(matches!(err, StoreError::Unreadable { .. }), "{err}");
            assert!(err.to_string().contains(&target.to_string()));
        }

        // Across tables: a share's bytes under a secret's name, and between secret names.
        store.put_secret("a", b"secret a").unwrap();
        let txn = store.db.begin_write().unwrap();
        {
            let shares = txn.open_table(SHARES).unwrap();
            let raw_share = shares
                .get(id(1).as_bytes())
                .unwrap()
                .unwrap()
                .value()
                .to_vec();
            let mut secrets = txn.open_table(SECRETS).unwrap();
            let raw_a = secrets.get("a").unwrap().unwrap().value().to_vec();
            secrets.insert("b", raw_a.as_slice()).unwrap();
            secrets.insert("c", raw_share.as_slice()).unwrap();
            let mut pins = txn.open_table(PEER_PINS).unwrap();
            pins.insert("peer", raw_a.as_slice()).unwrap();
        }
        txn.commit().unwrap();
        assert!(matches!(
            store.get_secret("b"),
            Err(StoreError::Unreadable { .. })
        ));
        assert!(matches!(
            store.get_secret("c"),
            Err(StoreError::Unreadable { .. })
        ));
        assert!(matches!(
            store.pin_peer("peer", &[0; 32]),
            Err(StoreError::Unreadable { .. })
        ));
        assert_eq!(
            store.get_secret("a").unwrap().unwrap().as_slice(),
            b"secret a"
        );
    }

    #[test]
    fn a_changed_record_version_does_not_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = NodeStore::open(&dir.path().join("db"), sealer(&dir, "k")).unwrap();
        store.put_share(&id(1), b"share").unwrap();
        let txn = store.db.begin_write().unwrap();
        {
            let mut t = txn.open_table(SHARES).unwrap();
            let mut raw = t.get(id(1).as_bytes()).unwrap().unwrap().value().to_vec();
            raw[0] = 2;
            t.insert(id(1).as_bytes(), raw.as_slice()).unwrap();
        }
        txn.commit().unwrap();
        assert!(matches!(
            store.get_share(&id(1)),
            Err(StoreError::UnsupportedRecordVersion { version: 2, .. })
        ));
    }

    #[test]
    fn pin_peer_is_trust_on_first_use() {
        let dir = tempfile::tempdir().unwrap();
        let store = NodeStore::open(&dir.path().join("db"), sealer(&dir, "k")).unwrap();
        store.pin_peer("node-a", &[1; 32]).unwrap();
        store.pin_peer("node-a", &[1; 32]).unwrap();
        store.pin_peer("node-b", &[2; 32]).unwrap();
        let err = store.pin_peer("node-a", &[2; 32]).unwrap_err();
        assert!(matches!(&err, StoreError::PinMismatch { tag } if tag == "node-a"));
        // The original pin stays.
        store.pin_peer("node-a", &[1; 32]).unwrap();
    }

    #[test]
    fn repin_replaces_a_pin() {
        let dir = tempfile::tempdir().unwrap();
        let store = NodeStore::open(&dir.path().join("db"), sealer(&dir, "k")).unwrap();
        store.pin_peer("node-a", &[1; 32]).unwrap();
        store.repin_peer("node-a", &[2; 32]).unwrap();
        store.pin_peer("node-a", &[2; 32]).unwrap();
        assert!(store.pin_peer("node-a", &[1; 32]).is_err());
    }

    #[test]
    fn a_repaired_share_replaces_only_what_the_caller_allows() {
        let dir = tempfile::tempdir().unwrap();
        let store = NodeStore::open(&dir.path().join("db"), sealer(&dir, "k")).unwrap();
        store
            .put_repaired_share(&id(1), 3, b"hollow", |_| unreachable!())
            .unwrap();
        assert_eq!(store.share_generation(&id(1)).unwrap(), 3);
        store
            .put_repaired_share(&id(1), 3, b"hollow again", |old| old == b"hollow")
            .unwrap();
        assert_eq!(
            store.get_share(&id(1)).unwrap().unwrap().as_slice(),
            b"hollow again"
        );
        assert!(matches!(
            store.put_repaired_share(&id(1), 3, b"x", |_| false),
            Err(StoreError::AlreadyExists)
        ));
        assert_eq!(
            store.get_share(&id(1)).unwrap().unwrap().as_slice(),
            b"hollow again"
        );
    }

    /// Whether the store lets this node help a repair replacing `tags` of key `key`.
    fn allowed(store: &NodeStore, key: u8, generation: u32, tags: &[&str], limit: usize) -> bool {
        store
            .record_repair_help(&id(key), generation, tags, limit)
            .unwrap()
            .allowed()
    }

    #[test]
    fn a_helper_repairs_at_most_the_limit_of_members_per_generation() {
        let dir = tempfile::tempdir().unwrap();
        let store = NodeStore::open(&dir.path().join("db"), sealer(&dir, "k")).unwrap();
        // Limit 1 (a 2-of-3 key): one member per generation, as before.
        assert!(allowed(&store, 1, 0, &["c"], 1));
        assert!(allowed(&store, 1, 0, &["c"], 1), "a retry");
        assert!(!allowed(&store, 1, 0, &["b"], 1));
        assert!(allowed(&store, 2, 0, &["b"], 1), "another key");
        assert!(allowed(&store, 1, 1, &["b"], 1), "next generation");
        assert!(!allowed(&store, 1, 1, &["c"], 1));

        // Limit 2 (a 3-of-5 key): two members pass, in any order and with retries; a
        // third is refused, and the refusal records nothing.
        assert!(allowed(&store, 3, 4, &["n4"], 2));
        assert!(allowed(&store, 3, 4, &["n5"], 2));
        assert!(allowed(&store, 3, 4, &["n4"], 2), "a retry");
        assert!(allowed(&store, 3, 4, &["n5"], 2), "a retry");
        assert!(!allowed(&store, 3, 4, &["n1"], 2));
        assert!(!allowed(&store, 3, 4, &["n1"], 2));
        assert!(allowed(&store, 3, 4, &["n5"], 2));
        // Limit 4 (5-of-9): four pass, the fifth is refused.
        for (i, tag) in ["a", "b", "c", "d"].into_iter().enumerate() {
            assert!(allowed(&store, 4, 0, &[tag], 4), "{i}");
        }
        assert!(!allowed(&store, 4, 0, &["e"], 4));
        // A key that cannot spare a member (t = n) allows none; a tag with the
        // separator is never recorded.
        assert!(!allowed(&store, 5, 0, &["a"], 0));
        assert!(!allowed(&store, 5, 0, &["a,b"], 3));
        assert!(!allowed(&store, 5, 0, &[""], 3));
        // A repair that replaces several members counts all of them (they are the
        // recovery's, whichever this one rebuilds): two of a 3-of-5 key pass together,
        // again and one by one; a recovery naming another member is refused.
        assert!(allowed(&store, 6, 2, &["n4", "n5"], 2));
        assert!(allowed(&store, 6, 2, &["n5", "n4"], 2));
        assert!(allowed(&store, 6, 2, &["n5"], 2));
        assert_eq!(
            store
                .record_repair_help(&id(6), 2, &["n4", "n1"], 2)
                .unwrap(),
            RepairHelp::Refused {
                named: vec!["n4".into(), "n5".into()]
            },
            "the refusal names the members recorded before"
        );
        assert!(!allowed(&store, 7, 0, &["a", "b", "c"], 2));
        assert!(
            allowed(&store, 7, 0, &["a", "b"], 2),
            "nothing was recorded"
        );
        // The set survives reopening the store.
        drop(store);
        let store = NodeStore::open(&dir.path().join("db"), sealer(&dir, "k")).unwrap();
        assert!(allowed(&store, 3, 4, &["n4"], 2));
        assert!(!allowed(&store, 3, 4, &["n2"], 2));
    }

    #[test]
    fn a_repair_record_of_the_first_format_reads_as_one_member() {
        let dir = tempfile::tempdir().unwrap();
        let store = NodeStore::open(&dir.path().join("db"), sealer(&dir, "k")).unwrap();
        // Written as the one-member code wrote it: u32be(generation) ‖ tag.
        let old: &[u8] = b"\x00\x00\x00\x07node3";
        let txn = store.db.begin_write().unwrap();
        txn.open_table(REPAIRS)
            .unwrap()
            .insert(id(1).as_bytes(), old)
            .unwrap();
        txn.commit().unwrap();
        assert!(allowed(&store, 1, 7, &["node3"], 1));
        assert!(!allowed(&store, 1, 7, &["node2"], 1));
        assert!(allowed(&store, 1, 7, &["node2"], 2));
        assert!(!allowed(&store, 1, 7, &["node1"], 2));
        let txn = store.db.begin_read().unwrap();
        let table = txn.open_table(REPAIRS).unwrap();
        assert_eq!(
            table.get(id(1).as_bytes()).unwrap().unwrap().value(),
            b"\x00\x00\x00\x07node3,node2"
        );
    }

    #[test]
    fn concurrent_writers_from_many_threads() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(NodeStore::open(&dir.path().join("db"), sealer(&dir, "k")).unwrap());
        let handles: Vec<_> = (0..8u8)
            .map(|n| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    store.put_share(&id(n), &big_share(n)).unwrap();
                    // Everyone races for the same id: exactly one wins.
                    store.put_share(&id(100), &[n]).is_ok()
                })
            })
            .collect();
        let wins = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|&won| won)
            .count();
        assert_eq!(wins, 1);
        assert_eq!(store.list_shares().unwrap().len(), 9);
        for n in 0..8u8 {
            assert_eq!(
                store.get_share(&id(n)).unwrap().unwrap().as_slice(),
                &big_share(n)[..]
            );
        }
    }

    #[test]
    fn a_second_open_of_the_same_store_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let s = sealer(&dir, "k");
        let _store = NodeStore::open(&path, s.clone()).unwrap();
        assert!(matches!(NodeStore::open(&path, s), Err(StoreError::Db(_))));
    }

    /// A share record written by format v1 (sealer key `[0x42; 32]`, share id `[7; 16]`).
    /// Must keep opening: stored formats are never silently changed.
    const SHARE_RECORD_V1_FIXTURE: &str = "010140126523c70a718b59938ff8bc52a434929137743e6c2842c9c2\
        cca2f558dff4ebc6bcaa2e9f917da9b03fcce0aaef047be936b20786700a9e92475306";

    #[test]
    fn share_record_v1_fixture_still_opens() {
        let dir = tempfile::tempdir().unwrap();
        let sealer = Arc::new(SoftwareSealer::from_raw_key_for_tests([0x42; 32]));
        let store = NodeStore::open(&dir.path().join("db"), sealer).unwrap();
        let stored = hex::decode(SHARE_RECORD_V1_FIXTURE).unwrap();
        let opened = store.open_record(SHARES_NAME, &[7; 16], &stored).unwrap();
        assert_eq!(opened.as_slice(), b"dkms share fixture v1");
        assert!(store.open_record(SHARES_NAME, &[8; 16], &stored).is_err());
    }

    #[test]
    fn record_aad_is_unambiguous() {
        assert_ne!(record_aad("ab", b"c", 1), record_aad("a", b"bc", 1));
        assert_ne!(record_aad("a", b"b", 1), record_aad("a", b"b", 2));
        assert!(record_aad("shares", b"x", 1).starts_with(AAD_DOMAIN));
    }

    #[test]
    fn refreshed_shares_are_staged_then_promoted_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let store = NodeStore::open(&dir.path().join("db"), sealer(&dir, "k")).unwrap();
        assert!(
            store.stage_share(&id(1), 1, b"next").is_err(),
            "nothing to refresh"
        );
        store.put_share(&id(1), b"gen0").unwrap();
        assert_eq!(store.share_generation(&id(1)).unwrap(), 0);
        store.stage_share(&id(1), 1, b"gen1-first-try").unwrap();
        store.stage_share(&id(1), 2, b"gen2").unwrap();
        assert!(
            !store.promote_share(&id(1), 1).unwrap(),
            "only the latest staging counts"
        );
        assert_eq!(
            store.get_share(&id(1)).unwrap().unwrap().as_slice(),
            b"gen0"
        );
        assert!(store.promote_share(&id(1), 2).unwrap());
        assert_eq!(
            store.get_share(&id(1)).unwrap().unwrap().as_slice(),
            b"gen2"
        );
        assert_eq!(store.share_generation(&id(1)).unwrap(), 2);
        assert!(!store.promote_share(&id(1), 2).unwrap(), "promoted once");
        assert!(store.delete_share(&id(1)).unwrap());
        assert_eq!(store.share_generation(&id(1)).unwrap(), 0);
    }
}
