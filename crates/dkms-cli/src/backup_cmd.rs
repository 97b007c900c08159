//! Break-glass export (`dkms key export`) and share-group backup and restore
//! (`dkms backup ...`, `dkms key backup`, `dkms key restore`).
//!
//! Every private key this module touches stays in this process: the export's X25519 key
//! pair is made here and never written; a custodian's key is read from its file; a
//! combined key is written only to a new file of mode 0600, and only once it matches the
//! key's public key.

use crate::client_cmd::{check_finished, print_json, timeout_hint};
use anyhow::{Context, Result, anyhow, bail};
use dkms_client::{BackupGroupRequest, Client, Custodian, KeyBackupInfo, KeyRestoreRequest};
use dkms_mpc::envelope::EncryptionKeypair;
use dkms_mpc::export::{self, ExportedShare};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;
use zeroize::Zeroizing;

#[derive(clap::Subcommand, Debug)]
pub enum BackupCmd {
    /// Make a custodian's X25519 key pair: writes the private key to --out (mode 0600,
    /// never overwritten) and prints the public key to give to the operator
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Backup groups: `create <name> --custodian alice=<hex> --custodian bob=<hex> ...`
    /// (in share order), `get <name>`, `list`, `delete <name>`
    Group {
        #[command(subcommand)]
        cmd: BackupGroupCmd,
    },
    /// Save the latest backup of a key to a group (the sealed shares) as a bundle file
    Fetch {
        #[arg(long)]
        key_id: String,
        #[arg(long)]
        group: String,
        /// Where to write the bundle (JSON; ciphertext only)
        #[arg(long)]
        out: PathBuf,
    },
    /// Offline, by the custodian of --member: open that member's share from the bundle
    /// with the custodian's key and re-seal it to the node that will hold it. Writes the
    /// blob for `dkms key restore`. No gateway call.
    Restore {
        /// The custodian's private key file (from `dkms backup keygen`)
        #[arg(long)]
        custodian_key: PathBuf,
        /// The bundle from `dkms backup fetch`
        #[arg(long)]
        bundle: PathBuf,
        /// The member whose share is restored (its tag in the key)
        #[arg(long)]
        member: String,
        /// The receiving node's encryption public key (hex; `dkms pod list` shows it)
        #[arg(long)]
        node_key: String,
        /// The receiving node's tag, if it is not the member's own tag (a new node)
        #[arg(long)]
        node: Option<String>,
        /// Where to write the blob (JSON, mode 0600)
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(clap::Subcommand, Debug)]
pub enum BackupGroupCmd {
    /// Create a group: one --custodian name=publicKeyHex per share, in share order
    Create {
        name: String,
        #[arg(long = "custodian", required = true)]
        custodians: Vec<String>,
    },
    Get {
        name: String,
    },
    List,
    /// Delete a group that holds no backup
    Delete {
        name: String,
    },
}

/// Writes `bytes` to a new file readable by its owner only; never overwrites.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

fn x25519_hex(raw: &str, what: &str) -> Result<[u8; 32]> {
    hex::decode(raw.trim().trim_start_matches("0x"))
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| anyhow!("{what} must be 32 bytes as 64 hex digits"))
}

/// Reads a custodian key file: the 32-byte X25519 seed as hex.
fn read_custodian_key(path: &Path) -> Result<EncryptionKeypair> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
    );
    let mut seed = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text.trim(), seed.as_mut_slice()).map_err(|_| {
        anyhow!(
            "{} is not a custodian key file (64 hex digits)",
            path.display()
        )
    })?;
    Ok(EncryptionKeypair::from_seed(&seed))
}

/// `dkms key export`: ephemeral key pair, request, wait, open, combine, check, write.
pub async fn export_key(
    client: &Client,
    key_id: &str,
    out: &Path,
    timeout_secs: u64,
) -> Result<()> {
    if out.exists() {
        bail!("{} exists; choose a new file for the key", out.display());
    }
    let key_uuid: uuid::Uuid = key_id
        .parse()
        .map_err(|_| anyhow!("{key_id} is not a key id"))?;
    let (_seed, me) = export::new_recipient().map_err(|e| anyhow!("{e}"))?;
    let started = client
        .export_key(key_id, &hex::encode(me.public_key()))
        .await?;
    let info = client
        .wait_export(&started.instance_id, Duration::from_secs(timeout_secs))
        .await
        .map_err(|e| timeout_hint(e, timeout_secs, "export", &started.instance_id))?;
    check_finished(
        "export",
        &info.status,
        info.error_code.as_deref(),
        info.error_message.as_deref(),
    )?;
    let public_key: [u8; 33] = info
        .public_key_hex
        .as_deref()
        .and_then(|h| hex::decode(h).ok())
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| anyhow!("the gateway gave no public key for key {key_id}"))?;
    let mut opened: Vec<ExportedShare> = Vec::new();
    for s in &info.shares {
        let member = s
            .member
            .parse()
            .map_err(|e| anyhow!("member {:?}: {e}", s.member))?;
        let sealed = hex::decode(&s.sealed).map_err(|_| anyhow!("share of {member}: not hex"))?;
        match export::open_export(&me, &key_uuid, &member, info.generation, &sealed) {
            Ok(share) => opened.push(share),
            Err(e) => eprintln!("warning: the share of {member} does not open: {e}"),
        }
    }
    let key_type = client.get_key(key_id).await?.key_type;
    let curve =
        dkms_mpc::Curve::of_key_type_name(&key_type).map_err(|e| anyhow!("key {key_id}: {e}"))?;
    let secret = export::combine(&opened, info.threshold, &public_key, curve)
        .map_err(|e| anyhow!("combining the shares: {e}"))?;
    drop(opened);
    let pem = secret
        .to_sec1_pem()
        .map_err(|e| anyhow!("encoding the key: {e}"))?;
    drop(secret);
    write_private(out, pem.as_bytes())?;
    print_json(&serde_json::json!({
        "keyId": key_id,
        "publicKeyHex": hex::encode(public_key),
        "generation": info.generation,
        "out": out.display().to_string(),
    }))
}

pub async fn run(client: &Client, cmd: BackupCmd) -> Result<()> {
    match cmd {
        BackupCmd::Keygen { out } => {
            let (seed, pair) = export::new_recipient().map_err(|e| anyhow!("{e}"))?;
            // Built in a zeroized buffer: a format! temporary would leave the seed behind.
            let mut text = Zeroizing::new(hex::encode(seed.as_slice()));
            text.push('\n');
            write_private(&out, text.as_bytes())?;
            print_json(&serde_json::json!({
                "publicKey": hex::encode(pair.public_key()),
                "privateKeyFile": out.display().to_string(),
            }))
        }
        BackupCmd::Group { cmd } => match cmd {
            BackupGroupCmd::Create { name, custodians } => {
                let custodians = custodians
                    .iter()
                    .map(|c| {
                        let (n, k) = c.split_once('=').ok_or_else(|| {
                            anyhow!("--custodian {c:?}: expected name=publicKeyHex")
                        })?;
                        Ok(Custodian {
                            name: n.trim().to_owned(),
                            public_key: k.trim().to_owned(),
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                print_json(
                    &client
                        .create_backup_group(&BackupGroupRequest { name, custodians })
                        .await?,
                )
            }
            BackupGroupCmd::Get { name } => print_json(&client.get_backup_group(&name).await?),
            BackupGroupCmd::List => print_json(&client.list_backup_groups().await?),
            BackupGroupCmd::Delete { name } => {
                client.delete_backup_group(&name).await?;
                print_json(&serde_json::json!({ "name": name, "deleted": true }))
            }
        },
        BackupCmd::Fetch { key_id, group, out } => {
            let bundle = client.get_key_backup(&key_id, &group).await?;
            let json = serde_json::to_vec_pretty(&bundle)?;
            write_private(&out, &json)?;
            print_json(&serde_json::json!({
                "keyId": bundle.key_id,
                "backupGroup": bundle.backup_group,
                "generation": bundle.generation,
                "out": out.display().to_string(),
            }))
        }
        BackupCmd::Restore {
            custodian_key,
            bundle,
            member,
            node_key,
            node,
            out,
        } => {
            let req = restore_blob(&custodian_key, &bundle, &member, &node_key, node)?;
            let json = serde_json::to_vec_pretty(&req)?;
            write_private(&out, &json)?;
            print_json(&serde_json::json!({
                "keyId": req.key_id,
                "lostParticipant": req.lost_participant,
                "newParticipant": req.new_participant,
                "generation": req.generation,
                "out": out.display().to_string(),
            }))
        }
    }
}

/// The custodian's offline step: open `member`'s share from the bundle, re-seal it to the
/// receiving node.
fn restore_blob(
    custodian_key: &Path,
    bundle: &Path,
    member: &str,
    node_key: &str,
    node: Option<String>,
) -> Result<KeyRestoreRequest> {
    let custodian = read_custodian_key(custodian_key)?;
    let text = std::fs::read(bundle).with_context(|| format!("reading {}", bundle.display()))?;
    let info: KeyBackupInfo = serde_json::from_slice(&text)
        .map_err(|e| anyhow!("{} is not a backup bundle: {e}", bundle.display()))?;
    let key_id: uuid::Uuid = info
        .key_id
        .parse()
        .map_err(|_| anyhow!("the bundle's keyId is not a key id"))?;
    let node_key = x25519_hex(node_key, "--node-key")?;
    let member_tag: dkms_proto::NodeTag = member.parse().map_err(|e| anyhow!("--member: {e}"))?;
    if let Some(n) = &node {
        n.parse::<dkms_proto::NodeTag>()
            .map_err(|e| anyhow!("--node: {e}"))?;
    }
    let entry = info
        .shares
        .iter()
        .find(|s| s.member == member)
        .ok_or_else(|| {
            let members: Vec<&str> = info.shares.iter().map(|s| s.member.as_str()).collect();
            anyhow!(
                "member {member} is not in the bundle (it holds {})",
                members.join(", ")
            )
        })?;
    let sealed = hex::decode(&entry.sealed)
        .map_err(|_| anyhow!("the bundle's share of {member} is not hex"))?;
    let share = export::open_backup(&custodian, &key_id, &member_tag, info.generation, &sealed)
        .map_err(|_| {
            anyhow!(
                "the share of {member} does not open with this custodian key: it is held by custodian {:?}; use that custodian's key file",
                entry.custodian
            )
        })?;
    let blob = export::seal_restore(&share, info.generation, &member_tag, &node_key)
        .map_err(|e| anyhow!("sealing to the node: {e}"))?;
    drop(share);
    Ok(KeyRestoreRequest {
        key_id: info.key_id,
        lost_participant: member.to_owned(),
        new_participant: node,
        generation: info.generation,
        sealed: hex::encode(blob),
    })
}

/// `dkms key restore`: sends the blob, waits for the task.
pub async fn restore_key(client: &Client, blob: &Path, timeout_secs: u64) -> Result<()> {
    let text = std::fs::read(blob).with_context(|| format!("reading {}", blob.display()))?;
    let req: KeyRestoreRequest = serde_json::from_slice(&text).map_err(|e| {
        anyhow!(
            "{} is not a restore blob from `dkms backup restore`: {e}",
            blob.display()
        )
    })?;
    let started = client.restore_key(&req).await?;
    crate::client_cmd::wait_task(client, &started.instance_id, timeout_secs).await
}

/// `dkms key backup`: starts the backup and waits for it.
pub async fn backup_key(
    client: &Client,
    key_id: &str,
    group: &str,
    timeout_secs: u64,
) -> Result<()> {
    let started = client.backup_key(key_id, group).await?;
    crate::client_cmd::wait_task(client, &started.instance_id, timeout_secs).await
}
