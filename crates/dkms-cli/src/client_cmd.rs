//! Client subcommands of the `dkms` binary: thin wrappers over `dkms-client` that print
//! the response `data` as pretty JSON on stdout. Errors go back to `main` as `anyhow`
//! errors carrying the gateway's error code and message; the token is never printed.

use std::io::ErrorKind;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use dkms_client::{Client, ClientError, KeyGenRequest, KeyInfo, KeyParams, SignInfo};
use dkms_proto::ErrorCode;
use serde::Serialize;

/// Where the local all-in-one mode stores the admin API key, relative to the working
/// directory.
pub const DEFAULT_TOKEN_FILE: &str = "dkms-data/admin.token";

// Connection options shared by every client subcommand. (A plain comment: a doc comment
// here would become the `about` of whatever command flattens these args.)
#[derive(clap::Args, Debug)]
pub struct ClientArgs {
    /// Gateway URL
    #[arg(
        long,
        env = "DKMS_URL",
        default_value = "http://127.0.0.1:8889",
        global = true
    )]
    pub url: String,
    /// API token (falls back to reading ./dkms-data/admin.token if present)
    #[arg(long, env = "DKMS_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(clap::Subcommand, Debug)]
pub enum ClientCommand {
    /// Show whether the gateway is up and which nodes are connected (no token needed)
    Health,
    /// Nodes: `dkms pod create <tag>`, `dkms pod list`, `dkms pod set-region <tag> <region>`
    Pod {
        #[command(subcommand)]
        cmd: PodCmd,
    },
    /// Node groups: `dkms group create <name> --members a,b,c --threshold 2 [--min-regions 2]`,
    /// `dkms group get|list|update|delete`
    Group {
        #[command(subcommand)]
        cmd: GroupCmd,
    },
    /// Keys: `dkms key gen --participants a,b,c --threshold 2 [--wait]` (or `--group <name>`),
    /// `dkms key get <keyId>`
    Key {
        #[command(subcommand)]
        cmd: KeyCmd,
    },
    /// `dkms sign <keyId> <digestHex> [--no-wait]` — request and (by default) wait; prints the signature JSON
    Sign {
        /// Key to sign with
        key_id: String,
        /// The 32-byte digest to sign, as 64 hex characters (optional 0x prefix)
        digest_hex: String,
        /// Print the signing instance id at once instead of waiting for the signature
        #[arg(long)]
        no_wait: bool,
        /// Seconds to wait for the signature
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        /// Idempotency-Key header: a repeat within 24 h returns the first instance id
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Sign with the BIP-32 child key at this non-hardened path (m/44/60/0/0/7)
        #[arg(long)]
        derivation_path: Option<String>,
    },
    /// Share backups to custodians: `dkms backup keygen`, `dkms backup group create`,
    /// `dkms backup fetch`, `dkms backup restore` (offline, by a custodian)
    Backup {
        #[command(subcommand)]
        cmd: crate::backup_cmd::BackupCmd,
    },
    /// `dkms wait key <id>` / `dkms wait sign <instanceId>` [--timeout 60]
    Wait {
        #[command(subcommand)]
        cmd: WaitCmd,
    },
}

#[derive(clap::Subcommand, Debug)]
pub enum PodCmd {
    /// Register a node under a unique tag (1–64 chars of [A-Za-z0-9_-])
    Create {
        /// The node's tag
        tag: String,
        /// Idempotency-Key header
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// List the registered nodes
    List,
    /// Issue a one-time join token for a registered node that has not joined yet
    /// (printed once; give it to the node as DKMS_JOIN_TOKEN)
    JoinToken {
        /// The node's tag
        tag: String,
    },
    /// Unpin a joined node whose data directory (and identity) is lost, and issue the join
    /// token it joins again with; then run `key recover` for each of its keys
    Reset {
        /// The node's tag
        tag: String,
    },
    /// Label where a node runs (0–64 chars of [A-Za-z0-9_.-]; "" clears it); node groups
    /// with --min-regions count distinct regions
    SetRegion {
        /// The node's tag
        tag: String,
        /// The region, e.g. eu-west-1
        region: String,
    },
}

#[derive(clap::Subcommand, Debug)]
pub enum GroupCmd {
    /// Create a named set of nodes with a default threshold (2-of-3, 5-of-7, 5-of-9, 2-of-2, ...)
    Create(GroupArgs),
    /// Show a group: members, threshold, region requirement and the regions they are in now
    Get {
        /// The group's name
        name: String,
    },
    /// List every group
    List,
    /// Replace a group's members, threshold, minimum regions and description
    Update(GroupArgs),
    /// Delete a group (refused while keys made from it are in use)
    Delete {
        /// The group's name
        name: String,
    },
}

#[derive(clap::Args, Debug)]
pub struct GroupArgs {
    /// The group's name (1–64 chars of [A-Za-z0-9_-])
    pub name: String,
    /// Member node tags in party order, comma-separated
    #[arg(long, value_delimiter = ',', required = true, num_args = 1..)]
    pub members: Vec<String>,
    /// Default threshold (t) of keys made from the group
    #[arg(long)]
    pub threshold: i64,
    /// Distinct regions the members must span (default 0: no requirement)
    #[arg(long)]
    pub min_regions: Option<i64>,
    /// What the group is for
    #[arg(long)]
    pub description: Option<String>,
}

impl GroupArgs {
    fn request(&self) -> dkms_client::NodeGroupRequest {
        dkms_client::NodeGroupRequest {
            name: self.name.clone(),
            members: self
                .members
                .iter()
                .map(|m| m.trim().to_owned())
                .filter(|m| !m.is_empty())
                .collect(),
            threshold: self.threshold,
            min_regions: self.min_regions,
            description: self.description.clone(),
        }
    }
}

#[derive(clap::Subcommand, Debug)]
pub enum KeyCmd {
    /// Start a distributed key generation; prints the key id (or, with --wait, the key)
    Gen(KeyGenArgs),
    /// Show a key and the status of its generation
    Get {
        /// The key id
        key_id: String,
    },
    /// Import an existing private key (PEM). By default the key is split here and each
    /// share sealed to its node, so the gateway never sees the key
    Import(KeyImportArgs),
    /// List keys, newest first (one page; pass --page-token for the next)
    List {
        /// Task status: INIT, PROCESSING, FINISHED, FAILED
        #[arg(long)]
        status: Option<String>,
        /// Lifecycle state: ENABLED, DISABLED, PENDING_DELETION, DELETING, DELETED
        #[arg(long)]
        state: Option<String>,
        /// A label the key must carry, as name=value
        #[arg(long)]
        label: Option<String>,
        /// Only keys made from this node group
        #[arg(long)]
        group: Option<String>,
        /// Keys per page (1 to 100)
        #[arg(long)]
        page_size: Option<u32>,
        /// nextPageToken of the previous page
        #[arg(long)]
        page_token: Option<String>,
    },
    /// Replace a key's labels (--label name=value, repeatable; --clear-labels for none)
    /// and/or its description
    Update {
        key_id: String,
        #[arg(long = "label")]
        labels: Vec<String>,
        #[arg(long)]
        clear_labels: bool,
        #[arg(long)]
        description: Option<String>,
    },
    /// Stop a key from signing
    Disable { key_id: String },
    /// Let a disabled key sign again
    Enable { key_id: String },
    /// Schedule the destruction of every share of a key after a waiting period
    ScheduleDeletion {
        key_id: String,
        /// Waiting period in days (7 to 30)
        #[arg(long, default_value_t = 30)]
        days: i64,
    },
    /// Cancel a scheduled deletion (the key comes back disabled)
    CancelDeletion { key_id: String },
    /// Give every node a new share of the key (same public key); old shares stop working
    Refresh {
        key_id: String,
        /// Print the task at once instead of waiting for it
        #[arg(long)]
        no_wait: bool,
        /// Seconds to wait
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// Break-glass export of a key created with --exportable: the nodes seal their shares
    /// to a key pair made here, and the key is combined here, checked against its public
    /// key and written as a SEC1 PEM (mode 0600). The gateway never sees the key
    Export {
        key_id: String,
        /// The PEM file to write (must not exist)
        #[arg(long)]
        out: std::path::PathBuf,
        /// Seconds to wait
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
    /// Back up every share of a key to the custodians of a backup group (sealed to each)
    Backup {
        key_id: String,
        /// The backup group
        #[arg(long)]
        group: String,
        /// Seconds to wait
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
    /// Deliver a blob from `dkms backup restore` to its node, then refresh every share
    Restore {
        /// The blob file
        #[arg(long)]
        blob: std::path::PathBuf,
        /// Seconds to wait
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// The BIP-32 child of a key at a non-hardened path: public key, address, chain code
    Derive {
        key_id: String,
        /// m/44/60/0/0/7
        path: String,
    },
    /// Rebuild the share a lost node held (from threshold others), on the node joined
    /// again under its tag or on --new-participant, then refresh every share. Repeat
    /// --lost (and --new-participant, one per --lost, in the same order) to recover
    /// several members lost at once: at most min(t - 1, n - t) of a t-of-n key
    Recover {
        key_id: String,
        /// The member whose share is lost (repeat for several)
        #[arg(long, required = true)]
        lost: Vec<String>,
        /// The node that takes its place (default: the lost node, joined again); with
        /// several --lost, one per --lost in the same order, the lost tag itself to
        /// rebuild that one in place
        #[arg(long, alias = "new")]
        new_participant: Vec<String>,
        /// Print the task at once instead of waiting for it
        #[arg(long)]
        no_wait: bool,
        /// Seconds to wait
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
}

#[derive(clap::Args, Debug)]
pub struct KeyImportArgs {
    /// PEM file: encrypted or plain PKCS#8, SEC1 EC PRIVATE KEY, or legacy OpenSSL-encrypted SEC1
    #[arg(long)]
    pub file: std::path::PathBuf,
    /// File holding the PEM's password (the password may also come from DKMS_KEY_PASSWORD)
    #[arg(long)]
    pub password_file: Option<std::path::PathBuf>,
    /// Send the PEM to the gateway's key/import instead of splitting it here
    #[arg(long)]
    pub server_side: bool,
    #[command(flatten)]
    pub key: KeyGenArgs,
}

#[derive(clap::Args, Debug)]
pub struct KeyGenArgs {
    /// Node tags that will each hold a share, comma-separated
    #[arg(
        long,
        value_delimiter = ',',
        num_args = 1..,
        required_unless_present = "group",
        conflicts_with = "group"
    )]
    pub participants: Vec<String>,
    /// A node group whose members hold the shares, instead of --participants (its
    /// threshold is the default)
    #[arg(long)]
    pub group: Option<String>,
    /// Shares needed to sign (t); with --group, defaults to the group's
    #[arg(long, required_unless_present = "group")]
    pub threshold: Option<i64>,
    /// Key type
    #[arg(long = "type", default_value = "ECDSA_K1")]
    pub key_type: String,
    /// Key length, accepted for compatibility (256 or 512 for ECDSA_K1)
    #[arg(long)]
    pub length: Option<i64>,
    /// Shares made (n); defaults to the number of participants
    #[arg(long)]
    pub total_shares: Option<i64>,
    /// Wait for the generation to finish and print the key
    #[arg(long)]
    pub wait: bool,
    /// Seconds to wait with --wait
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// Idempotency-Key header: a repeat within 24 h returns the first key id
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Let the key be exported whole later (`dkms key export`, break-glass); fixed for
    /// the key's life. Default: never exportable
    #[arg(long)]
    pub exportable: bool,
}

#[derive(clap::Subcommand, Debug)]
pub enum WaitCmd {
    /// Wait until a key generation is FINISHED, FAILED or REJECTED; prints the key
    Key {
        /// The key id
        key_id: String,
        /// Seconds to wait
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Wait until a signing is FINISHED, FAILED or REJECTED; prints the signature
    Sign {
        /// The signing instance id
        instance_id: String,
        /// Seconds to wait
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Wait until a task on a key (a refresh) is FINISHED or FAILED; prints the task
    Task {
        /// The task's instance id
        instance_id: String,
        /// Seconds to wait
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
}

/// Runs one client subcommand against the gateway at `args.url`.
pub async fn run(args: &ClientArgs, cmd: ClientCommand) -> Result<()> {
    let (client, had_token) = connect(args)?;
    run_with(&client, cmd)
        .await
        .map_err(|e| add_token_hint(e, had_token))
}

/// A client for `args.url` with the resolved token, and whether there was a token (for
/// [`add_token_hint`]).
pub(crate) fn connect(args: &ClientArgs) -> Result<(Client, bool)> {
    let token = resolve_token(args.token.as_deref(), Path::new(DEFAULT_TOKEN_FILE))?;
    let client = Client::new(&args.url, token.as_deref().unwrap_or(""))
        .with_context(|| format!("cannot use gateway URL {:?}", args.url))?;
    Ok((client, token.is_some()))
}

async fn run_with(client: &Client, cmd: ClientCommand) -> Result<()> {
    match cmd {
        ClientCommand::Health => print_json(&client.health().await?),
        ClientCommand::Pod { cmd } => match cmd {
            PodCmd::Create {
                tag,
                idempotency_key,
            } => {
                let tag = match idempotency_key {
                    Some(k) => client.create_pod_idempotent(&tag, &k).await?,
                    None => client.create_pod(&tag).await?,
                };
                print_json(&tag)
            }
            PodCmd::List => print_json(&client.list_pods().await?),
            PodCmd::JoinToken { tag } => print_json(&serde_json::json!({
                "nodeTag": tag,
                "joinToken": client.join_token(&tag).await?,
            })),
            PodCmd::Reset { tag } => print_json(&serde_json::json!({
                "nodeTag": tag,
                "joinToken": client.reset_pod(&tag).await?,
            })),
            PodCmd::SetRegion { tag, region } => {
                print_json(&client.set_region(&tag, &region).await?)
            }
        },
        ClientCommand::Group { cmd } => match cmd {
            GroupCmd::Create(args) => print_json(&client.create_group(&args.request()).await?),
            GroupCmd::Get { name } => print_json(&client.get_group(&name).await?),
            GroupCmd::List => print_json(&client.list_groups().await?),
            GroupCmd::Update(args) => print_json(&client.update_group(&args.request()).await?),
            GroupCmd::Delete { name } => print_json(&serde_json::json!({
                "name": client.delete_group(&name).await?,
                "deleted": true,
            })),
        },
        ClientCommand::Key { cmd } => match cmd {
            KeyCmd::Gen(gen_args) => {
                let req = keygen_request(&gen_args);
                let key_id = match &gen_args.idempotency_key {
                    Some(k) => client.generate_key_idempotent(&req, k).await?,
                    None => client.generate_key(&req).await?,
                };
                if gen_args.wait {
                    wait_key(client, &key_id, gen_args.timeout).await
                } else {
                    print_json(&serde_json::json!({ "keyId": key_id }))
                }
            }
            KeyCmd::Get { key_id } => print_json(&client.get_key(&key_id).await?),
            KeyCmd::Import(args) => import_key(client, args).await,
            KeyCmd::List {
                status,
                state,
                label,
                group,
                page_size,
                page_token,
            } => {
                let page_size = page_size.map(|n| n.to_string());
                let mut q: Vec<(&str, &str)> = Vec::new();
                for (name, v) in [
                    ("status", status.as_deref()),
                    ("state", state.as_deref()),
                    ("label", label.as_deref()),
                    ("nodeGroup", group.as_deref()),
                    ("pageSize", page_size.as_deref()),
                    ("pageToken", page_token.as_deref()),
                ] {
                    if let Some(v) = v {
                        q.push((name, v));
                    }
                }
                print_json(&client.list_keys(&q).await?)
            }
            KeyCmd::Update {
                key_id,
                labels,
                clear_labels,
                description,
            } => {
                let labels = if clear_labels || !labels.is_empty() {
                    let mut map = std::collections::BTreeMap::new();
                    for l in &labels {
                        let (n, v) = l
                            .split_once('=')
                            .ok_or_else(|| anyhow!("--label {l:?} must be name=value"))?;
                        map.insert(n.to_owned(), v.to_owned());
                    }
                    Some(map)
                } else {
                    None
                };
                let req = dkms_client::KeyUpdateRequest {
                    key_id,
                    labels,
                    description,
                };
                print_json(&client.update_key(&req).await?)
            }
            KeyCmd::Disable { key_id } => print_json(
                &client
                    .key_state(dkms_client::KeyAction::Disable, &key_id)
                    .await?,
            ),
            KeyCmd::Enable { key_id } => print_json(
                &client
                    .key_state(dkms_client::KeyAction::Enable, &key_id)
                    .await?,
            ),
            KeyCmd::CancelDeletion { key_id } => print_json(
                &client
                    .key_state(dkms_client::KeyAction::CancelDeletion, &key_id)
                    .await?,
            ),
            KeyCmd::Refresh {
                key_id,
                no_wait,
                timeout,
            } => {
                let started = client.refresh_key(&key_id).await?;
                if no_wait {
                    return print_json(&started);
                }
                wait_task(client, &started.instance_id, timeout).await
            }
            KeyCmd::Derive { key_id, path } => {
                print_json(&client.derive_key(&key_id, &path).await?)
            }
            KeyCmd::Recover {
                key_id,
                lost,
                new_participant,
                no_wait,
                timeout,
            } => {
                let started = match (lost.as_slice(), new_participant.as_slice()) {
                    ([one], []) => client.recover_key(&key_id, one, None).await?,
                    ([one], [new]) => client.recover_key(&key_id, one, Some(new)).await?,
                    (many, new) => {
                        if !new.is_empty() && new.len() != many.len() {
                            bail!(
                                "{} --lost but {} --new-participant: give one --new-participant per --lost, in the same order (the lost tag itself to rebuild it in place), or none",
                                many.len(),
                                new.len()
                            );
                        }
                        let lost: Vec<&str> = many.iter().map(String::as_str).collect();
                        let new: Vec<&str> = new.iter().map(String::as_str).collect();
                        let new = (!new.is_empty()).then_some(new.as_slice());
                        client.recover_keys(&key_id, &lost, new).await?
                    }
                };
                if no_wait {
                    return print_json(&started);
                }
                wait_task(client, &started.instance_id, timeout).await
            }
            KeyCmd::ScheduleDeletion { key_id, days } => {
                print_json(&client.schedule_key_deletion(&key_id, Some(days)).await?)
            }
            KeyCmd::Export {
                key_id,
                out,
                timeout,
            } => crate::backup_cmd::export_key(client, &key_id, &out, timeout).await,
            KeyCmd::Backup {
                key_id,
                group,
                timeout,
            } => crate::backup_cmd::backup_key(client, &key_id, &group, timeout).await,
            KeyCmd::Restore { blob, timeout } => {
                crate::backup_cmd::restore_key(client, &blob, timeout).await
            }
        },
        ClientCommand::Backup { cmd } => crate::backup_cmd::run(client, cmd).await,
        ClientCommand::Sign {
            key_id,
            digest_hex,
            no_wait,
            timeout,
            idempotency_key,
            derivation_path,
        } => {
            let body = dkms_client::SignRequest {
                digest_hex,
                key_id,
                derivation_path,
            };
            let instance_id = client
                .request_sign_body(&body, idempotency_key.as_deref())
                .await?;
            if no_wait {
                print_json(&serde_json::json!({ "instanceId": instance_id }))
            } else {
                wait_sign(client, &instance_id, timeout).await
            }
        }
        ClientCommand::Wait { cmd } => match cmd {
            WaitCmd::Key { key_id, timeout } => wait_key(client, &key_id, timeout).await,
            WaitCmd::Sign {
                instance_id,
                timeout,
            } => wait_sign(client, &instance_id, timeout).await,
            WaitCmd::Task {
                instance_id,
                timeout,
            } => wait_task(client, &instance_id, timeout).await,
        },
    }
}

/// Waits for a key, prints it, and fails unless it FINISHED.
async fn wait_key(client: &Client, key_id: &str, timeout_secs: u64) -> Result<()> {
    let info: KeyInfo = client
        .wait_key(key_id, Duration::from_secs(timeout_secs))
        .await
        .map_err(|e| timeout_hint(e, timeout_secs, "key", key_id))?;
    print_json(&info)?;
    check_finished(
        "key generation",
        &info.status,
        info.error_code.as_deref(),
        info.error_message.as_deref(),
    )
}

/// Waits for a signing, prints it, and fails unless it FINISHED.
async fn wait_sign(client: &Client, instance_id: &str, timeout_secs: u64) -> Result<()> {
    let info: SignInfo = client
        .wait_sign(instance_id, Duration::from_secs(timeout_secs))
        .await
        .map_err(|e| timeout_hint(e, timeout_secs, "sign", instance_id))?;
    print_json(&info)?;
    check_finished(
        "signing",
        &info.status,
        info.error_code.as_deref(),
        info.error_message.as_deref(),
    )
}

pub(crate) fn check_finished(
    what: &str,
    status: &str,
    code: Option<&str>,
    message: Option<&str>,
) -> Result<()> {
    if status == "FINISHED" {
        return Ok(());
    }
    let code = code.unwrap_or(status);
    let message = message.unwrap_or("no reason given");
    bail!("{what} ended with status {status}: {code}: {message}")
}

/// Imports a PEM key. Client-side (the default): parse, split with the trusted-dealer
/// procedure, seal each share to its node's encryption key as the gateway lists it, and
/// send only ciphertext. The plaintext is zeroized when this returns.
async fn import_key(client: &Client, args: KeyImportArgs) -> Result<()> {
    let pem = zeroize::Zeroizing::new(
        std::fs::read_to_string(&args.file)
            .with_context(|| format!("reading {}", args.file.display()))?,
    );
    let password = match (&args.password_file, std::env::var("DKMS_KEY_PASSWORD").ok()) {
        (Some(p), _) => Some(zeroize::Zeroizing::new(
            std::fs::read_to_string(p)
                .with_context(|| format!("reading {}", p.display()))?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
        )),
        (None, Some(pw)) => Some(zeroize::Zeroizing::new(pw)),
        (None, None) => None,
    };
    if args.key.group.is_some() {
        bail!("key import takes --participants and --threshold, not --group");
    }
    let shape = keygen_request(&args.key);
    let (Some(threshold), Some(total_shares)) = (shape.threshold, shape.total_shares) else {
        bail!("key import needs --threshold");
    };
    let response = if args.server_side {
        let req = dkms_client::KeyImportRequest {
            key_params: shape.key_params,
            service_participants: shape.service_participants,
            threshold,
            total_shares,
            private_key: pem.to_string(),
            password: password.as_ref().map(|p| p.to_string()),
            exportable: shape.exportable,
        };
        let resp = client.import_key(&req).await;
        let mut req = req;
        zeroize::Zeroize::zeroize(&mut req.private_key);
        if let Some(p) = req.password.as_mut() {
            zeroize::Zeroize::zeroize(p);
        }
        resp?
    } else {
        let key_type: dkms_proto::KeyType = shape
            .key_params
            .key_type
            .parse()
            .map_err(|e: dkms_proto::ParseError| anyhow!("--type: {e}"))?;
        let secret = dkms_mpc::import::parse_private_key_pem(
            &pem,
            password.as_ref().map(|p| p.as_bytes()),
            dkms_mpc::Curve::of_key_type(key_type),
        )
        .map_err(|e| anyhow!("{}: {e}", args.file.display()))?;
        let pods = client.list_pods().await?;
        let mut participants = Vec::new();
        for tag in &shape.service_participants {
            let pod = pods
                .iter()
                .find(|p| &p.node_tag == tag)
                .ok_or_else(|| anyhow!("node {tag} is not registered"))?;
            let key: [u8; 32] = pod
                .encryption_key
                .as_deref()
                .and_then(|h| hex::decode(h).ok())
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| anyhow!("node {tag} has not joined yet"))?;
            participants.push(dkms_mpc::ShareParticipant {
                tag: tag.parse().map_err(|e| anyhow!("node tag {tag}: {e}"))?,
                encryption_key: key,
            });
        }
        let threshold = u8::try_from(threshold)
            .map_err(|_| anyhow!("threshold {threshold} is out of range"))?;
        let key_id = uuid::Uuid::new_v4();
        let public_key = secret.public_key();
        let shares = dkms_mpc::import::split(&secret, key_id, threshold, participants)
            .map_err(|e| anyhow!("splitting the key: {e}"))?;
        drop(secret);
        let mut sealed = Vec::with_capacity(shares.len());
        for (share, tag) in shares.into_iter().zip(&shape.service_participants) {
            // The bit travels inside each sealed share; the nodes compare it with the request's.
            let share = share.with_exportable(shape.exportable);
            let ct = dkms_mpc::import::seal_share(&share)
                .map_err(|e| anyhow!("sealing the share of {tag}: {e}"))?;
            sealed.push(dkms_client::SealedShare {
                node_tag: tag.clone(),
                sealed: hex::encode(ct),
            });
        }
        client
            .import_key_shares(&dkms_client::KeyImportSharesRequest {
                key_id: key_id.to_string(),
                key_params: shape.key_params,
                service_participants: shape.service_participants,
                threshold: i64::from(threshold),
                total_shares,
                public_key_hex: hex::encode(public_key),
                shares: sealed,
                exportable: shape.exportable,
            })
            .await?
    };
    if args.key.wait {
        wait_key(client, &response.key_id, args.key.timeout).await
    } else {
        print_json(&response)
    }
}

pub(crate) async fn wait_task(client: &Client, instance_id: &str, timeout_secs: u64) -> Result<()> {
    let task = client
        .wait_task(instance_id, Duration::from_secs(timeout_secs))
        .await
        .map_err(|e| timeout_hint(e, timeout_secs, "task", instance_id))?;
    print_json(&task)?;
    check_finished(
        "task",
        &task.status,
        task.error_code.as_deref(),
        task.error_message.as_deref(),
    )
}

fn keygen_request(args: &KeyGenArgs) -> KeyGenRequest {
    let participants: Vec<String> = args
        .participants
        .iter()
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect();
    // With a group the gateway takes n from the group; otherwise n is the participant count.
    let total_shares = match (&args.group, args.total_shares) {
        (_, Some(n)) => Some(n),
        (Some(_), None) => None,
        (None, None) => Some(i64::try_from(participants.len()).unwrap_or(i64::MAX)),
    };
    KeyGenRequest {
        key_params: KeyParams {
            key_type: args.key_type.clone(),
            length: args.length,
        },
        service_participants: participants,
        threshold: args.threshold,
        total_shares,
        node_group: args.group.clone(),
        exportable: args.exportable,
    }
}

/// The token from `--token`/`DKMS_TOKEN`, else the contents of `file` if it exists.
fn resolve_token(explicit: Option<&str>, file: &Path) -> Result<Option<String>> {
    if let Some(t) = explicit {
        let t = t.trim();
        return Ok((!t.is_empty()).then(|| t.to_owned()));
    }
    match std::fs::read_to_string(file) {
        Ok(s) => {
            let t = s.trim();
            Ok((!t.is_empty()).then(|| t.to_owned()))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read the token file {}", file.display())),
    }
}

pub(crate) fn add_token_hint(err: anyhow::Error, had_token: bool) -> anyhow::Error {
    let unauthenticated = err
        .downcast_ref::<ClientError>()
        .and_then(ClientError::error_code)
        == Some(ErrorCode::Unauthenticated);
    if unauthenticated && !had_token {
        err.context(format!(
            "no API token given: pass --token, set DKMS_TOKEN, or run from the directory that \
             holds {DEFAULT_TOKEN_FILE}"
        ))
    } else {
        err
    }
}

pub(crate) fn timeout_hint(
    err: ClientError,
    timeout_secs: u64,
    kind: &str,
    id: &str,
) -> anyhow::Error {
    match err {
        ClientError::Timeout => anyhow!(
            "TIMEOUT: {kind} {id} did not reach a terminal status within {timeout_secs}s; \
             check again with `dkms wait {kind} {id}`"
        ),
        other => other.into(),
    }
}

pub(crate) fn print_json<T: Serialize + ?Sized>(value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).context("cannot format the response")?;
    println!("{text}");
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser, Debug)]
    struct TestCli {
        #[command(flatten)]
        args: ClientArgs,
        #[command(subcommand)]
        cmd: ClientCommand,
    }

    fn parse(argv: &[&str]) -> TestCli {
        TestCli::try_parse_from(std::iter::once("dkms").chain(argv.iter().copied())).unwrap()
    }

    #[test]
    fn command_definition_is_valid() {
        TestCli::command().debug_assert();
    }

    #[test]
    fn key_gen_defaults() {
        let cli = parse(&["key", "gen", "--participants", "a,b, c", "--threshold", "2"]);
        let ClientCommand::Key {
            cmd: KeyCmd::Gen(args),
        } = cli.cmd
        else {
            panic!("{:?}", cli.cmd)
        };
        assert!(!args.wait);
        assert_eq!(args.timeout, 60);
        let req = keygen_request(&args);
        assert_eq!(req.key_params.key_type, "ECDSA_K1");
        assert_eq!(req.key_params.length, None);
        assert_eq!(req.service_participants, vec!["a", "b", "c"]);
        assert_eq!(req.threshold, Some(2));
        assert_eq!(req.total_shares, Some(3));
        assert_eq!(req.node_group, None);
    }

    #[test]
    fn key_gen_by_group() {
        let cli = parse(&["key", "gen", "--group", "treasury", "--wait"]);
        let ClientCommand::Key {
            cmd: KeyCmd::Gen(args),
        } = cli.cmd
        else {
            panic!("{:?}", cli.cmd)
        };
        let req = keygen_request(&args);
        assert_eq!(req.node_group.as_deref(), Some("treasury"));
        assert!(req.service_participants.is_empty());
        assert_eq!((req.threshold, req.total_shares), (None, None));
        let cli = parse(&["key", "gen", "--group", "g", "--threshold", "2"]);
        let ClientCommand::Key {
            cmd: KeyCmd::Gen(args),
        } = cli.cmd
        else {
            panic!("{:?}", cli.cmd)
        };
        assert_eq!(keygen_request(&args).threshold, Some(2));
        assert!(
            TestCli::try_parse_from([
                "dkms",
                "key",
                "gen",
                "--group",
                "g",
                "--participants",
                "a,b"
            ])
            .is_err(),
            "a group or participants, not both"
        );
    }

    #[test]
    fn group_and_region_commands_parse() {
        match parse(&[
            "group",
            "create",
            "treasury",
            "--members",
            "a, b,c",
            "--threshold",
            "2",
            "--min-regions",
            "2",
        ])
        .cmd
        {
            ClientCommand::Group {
                cmd: GroupCmd::Create(args),
            } => {
                let req = args.request();
                assert_eq!(req.name, "treasury");
                assert_eq!(req.members, ["a", "b", "c"]);
                assert_eq!((req.threshold, req.min_regions), (2, Some(2)));
                assert_eq!(req.description, None);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&[
                "group",
                "update",
                "g",
                "--members",
                "a,b",
                "--threshold",
                "2"
            ])
            .cmd,
            ClientCommand::Group {
                cmd: GroupCmd::Update(_)
            }
        ));
        assert!(matches!(
            parse(&["group", "list"]).cmd,
            ClientCommand::Group {
                cmd: GroupCmd::List
            }
        ));
        assert!(matches!(
            parse(&["group", "get", "g"]).cmd,
            ClientCommand::Group {
                cmd: GroupCmd::Get { .. }
            }
        ));
        assert!(matches!(
            parse(&["group", "delete", "g"]).cmd,
            ClientCommand::Group {
                cmd: GroupCmd::Delete { .. }
            }
        ));
        assert!(
            TestCli::try_parse_from(["dkms", "group", "create", "g", "--threshold", "2"]).is_err()
        );
        match parse(&["pod", "set-region", "n1", ""]).cmd {
            ClientCommand::Pod {
                cmd: PodCmd::SetRegion { tag, region },
            } => assert_eq!((tag.as_str(), region.as_str()), ("n1", "")),
            other => panic!("{other:?}"),
        }
        match parse(&["key", "list", "--group", "g"]).cmd {
            ClientCommand::Key {
                cmd: KeyCmd::List { group, .. },
            } => assert_eq!(group.as_deref(), Some("g")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn key_gen_options() {
        let cli = parse(&[
            "--url",
            "http://gw:1",
            "key",
            "gen",
            "--participants",
            "a",
            "--participants",
            "b",
            "--threshold",
            "2",
            "--total-shares",
            "5",
            "--type",
            "ECDSA_R1",
            "--length",
            "256",
            "--wait",
            "--timeout",
            "5",
            "--idempotency-key",
            "k1",
        ]);
        assert_eq!(cli.args.url, "http://gw:1");
        let ClientCommand::Key {
            cmd: KeyCmd::Gen(args),
        } = cli.cmd
        else {
            panic!("{:?}", cli.cmd)
        };
        assert!(args.wait);
        assert_eq!(args.timeout, 5);
        assert_eq!(args.idempotency_key.as_deref(), Some("k1"));
        let req = keygen_request(&args);
        assert_eq!(req.service_participants, vec!["a", "b"]);
        assert_eq!(req.total_shares, Some(5));
        assert_eq!(req.key_params.key_type, "ECDSA_R1");
        assert_eq!(req.key_params.length, Some(256));
    }

    #[test]
    fn key_gen_needs_participants_and_threshold() {
        assert!(TestCli::try_parse_from(["dkms", "key", "gen", "--threshold", "2"]).is_err());
        assert!(TestCli::try_parse_from(["dkms", "key", "gen", "--participants", "a,b"]).is_err());
    }

    #[test]
    fn sign_and_wait_parse() {
        let cli = parse(&["sign", "k1", "abcd", "--no-wait", "--token", "t"]);
        assert_eq!(cli.args.token.as_deref(), Some("t"));
        match cli.cmd {
            ClientCommand::Sign {
                key_id,
                digest_hex,
                no_wait,
                timeout,
                idempotency_key,
                derivation_path,
            } => {
                assert_eq!(derivation_path, None);
                assert_eq!(key_id, "k1");
                assert_eq!(digest_hex, "abcd");
                assert!(no_wait);
                assert_eq!(timeout, 60);
                assert_eq!(idempotency_key, None);
            }
            other => panic!("{other:?}"),
        }
        match parse(&["wait", "sign", "i1", "--timeout", "7"]).cmd {
            ClientCommand::Wait {
                cmd:
                    WaitCmd::Sign {
                        instance_id,
                        timeout,
                    },
            } => {
                assert_eq!(instance_id, "i1");
                assert_eq!(timeout, 7);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&["wait", "key", "k"]).cmd,
            ClientCommand::Wait {
                cmd: WaitCmd::Key { timeout: 60, .. }
            }
        ));
        assert!(matches!(
            parse(&["pod", "create", "n1"]).cmd,
            ClientCommand::Pod {
                cmd: PodCmd::Create { .. }
            }
        ));
        assert!(matches!(
            parse(&["pod", "list"]).cmd,
            ClientCommand::Pod { cmd: PodCmd::List }
        ));
        assert!(matches!(
            parse(&["key", "get", "k"]).cmd,
            ClientCommand::Key {
                cmd: KeyCmd::Get { .. }
            }
        ));
    }

    #[test]
    fn help_does_not_show_the_token() {
        let cmd = TestCli::command();
        let token = cmd.get_arguments().find(|a| a.get_id() == "token").unwrap();
        assert!(token.is_hide_env_values_set());
        assert!(token.is_global_set());
        let help = TestCli::command().render_long_help().to_string();
        assert!(help.contains("DKMS_TOKEN"), "{help}");
        assert!(help.contains("DKMS_URL"), "{help}");
    }

    #[test]
    fn token_resolution() {
        let dir = std::env::temp_dir().join(format!("dkms-cli-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("admin.token");
        let missing = dir.join("missing.token");

        assert_eq!(
            resolve_token(Some(" tok "), &missing).unwrap().as_deref(),
            Some("tok")
        );
        assert_eq!(resolve_token(None, &missing).unwrap(), None);
        std::fs::write(&file, "from-file\n").unwrap();
        assert_eq!(
            resolve_token(None, &file).unwrap().as_deref(),
            Some("from-file")
        );
        assert_eq!(
            resolve_token(Some("flag"), &file).unwrap().as_deref(),
            Some("flag")
        );
        // A directory where the file should be is an error, not a silent fallback.
        assert!(resolve_token(None, &dir).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn terminal_status_check() {
        assert!(check_finished("signing", "FINISHED", None, None).is_ok());
        let e = check_finished("signing", "REJECTED", Some("POLICY_DENIED"), Some("no"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("REJECTED") && e.contains("POLICY_DENIED") && e.contains("no"));
        let e = check_finished("key generation", "FAILED", None, Some("node b left"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("FAILED: node b left"), "{e}");
    }

    #[test]
    fn unauthenticated_without_token_gets_a_hint() {
        let api = || ClientError::Api {
            status: 401,
            code: "UNAUTHENTICATED".into(),
            message: "missing bearer token".into(),
        };
        let hinted = format!("{:#}", add_token_hint(api().into(), false));
        assert!(hinted.contains("--token"), "{hinted}");
        assert!(hinted.contains("missing bearer token"), "{hinted}");
        let plain = format!("{:#}", add_token_hint(api().into(), true));
        assert!(!plain.contains("--token"), "{plain}");
    }

    #[test]
    fn timeout_message_names_the_task() {
        let e = timeout_hint(ClientError::Timeout, 5, "sign", "i-1").to_string();
        assert!(
            e.contains("TIMEOUT") && e.contains("i-1") && e.contains("5s"),
            "{e}"
        );
    }
}
