//! Client subcommands for who may do what and what was done: login sessions, users, API
//! keys, Cedar policies, transaction signing, approvals and the audit log. Like
//! `client_cmd`, they print the response `data` as pretty JSON on stdout, with three
//! exceptions made for scripts: `login` prints only the session token, `audit export`
//! prints JSON lines, and `audit verify` prints a one-line summary.
//!
//! Passwords never come from a flag value (it would land in the shell history and in
//! `ps`): only from a file or the environment.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use dkms_audit::{Anchor, ChainError, JsonLinesError, Start, Summary, VerifyOptions};
use dkms_client::{Client, ClientError};
use dkms_proto::{ErrorCode, TaskStatus};
use zeroize::{Zeroize, Zeroizing};

use crate::client_cmd::{
    ClientArgs, add_token_hint, check_finished, connect, print_json, timeout_hint,
};

/// Where `login`, `user create` take a password from when no `--password-file` is given.
const PASSWORD_ENV: &str = "DKMS_PASSWORD";

#[derive(clap::Subcommand, Debug)]
pub enum GovernanceCommand {
    /// `dkms login --username U [--password-file F]` — prints only the session token, so
    /// `export DKMS_TOKEN=$(dkms login ...)` works (password from the file or DKMS_PASSWORD)
    Login(LoginArgs),
    /// End the login session of the token given (--token / DKMS_TOKEN)
    Logout,
    /// Show whom the token belongs to: kind, id, roles and groups
    Whoami,
    /// Users who log in: `dkms user create|update|delete|list`
    User {
        #[command(subcommand)]
        cmd: UserCmd,
    },
    /// API keys: `dkms apikey create --name N --role R`, `dkms apikey list|revoke`
    Apikey {
        #[command(subcommand)]
        cmd: ApiKeyCmd,
    },
    /// Cedar policy documents: `dkms policy put|get|list|history|delete|dry-run`
    Policy {
        #[command(subcommand)]
        cmd: PolicyCmd,
    },
    /// `dkms sign-tx --key-id K --chain-id C --tx-file tx.json [--no-wait]` — sign an
    /// Ethereum transaction; prints the task with signedTx and txHash
    SignTx(SignTxArgs),
    /// Signings held for approval: `dkms approval list|approve|reject`
    Approval {
        #[command(subcommand)]
        cmd: ApprovalCmd,
    },
    /// The tamper-evident audit log: `dkms audit query|head|export|verify`
    Audit {
        #[command(subcommand)]
        cmd: AuditCmd,
    },
}

#[derive(clap::Args, Debug)]
pub struct LoginArgs {
    /// The user to log in as
    #[arg(long)]
    pub username: String,
    /// File holding the password (else DKMS_PASSWORD; never a flag value)
    #[arg(long)]
    pub password_file: Option<PathBuf>,
}

#[derive(clap::Subcommand, Debug)]
pub enum UserCmd {
    /// Create a user (password from --password-file or DKMS_PASSWORD)
    Create {
        /// 1–64 characters of [A-Za-z0-9_.@-]
        #[arg(long)]
        username: String,
        /// A role the user holds (repeatable): admin, operator, signer, approver,
        /// auditor, or one your policies name
        #[arg(long = "role")]
        roles: Vec<String>,
        /// A group the user belongs to (repeatable), e.g. an approver group
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Create the user disabled (true|false)
        #[arg(long, value_parser = clap::value_parser!(bool))]
        disabled: Option<bool>,
        /// File holding the new user's password (else DKMS_PASSWORD; never a flag value)
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// Change a user's roles, groups, disabled flag or password; what is not given stays
    Update {
        /// The user to change
        #[arg(long)]
        username: String,
        /// Replace the roles with these (repeatable)
        #[arg(long = "role", conflicts_with = "clear_roles")]
        roles: Vec<String>,
        /// Remove every role
        #[arg(long)]
        clear_roles: bool,
        /// Replace the groups with these (repeatable)
        #[arg(long = "group", conflicts_with = "clear_groups")]
        groups: Vec<String>,
        /// Remove every group
        #[arg(long)]
        clear_groups: bool,
        /// Disable (true) or enable (false) the user; disabling ends their sessions
        #[arg(long, value_parser = clap::value_parser!(bool))]
        disabled: Option<bool>,
        /// Set a new password read from this file (ends the user's sessions)
        #[arg(long, conflicts_with = "password_from_env")]
        password_file: Option<PathBuf>,
        /// Set a new password taken from DKMS_PASSWORD. Explicit, so that a DKMS_PASSWORD
        /// exported for your own login never resets someone else's password by accident
        #[arg(long)]
        password_from_env: bool,
    },
    /// Delete a user (their sessions end)
    Delete {
        /// The user to delete
        #[arg(long)]
        username: String,
    },
    /// List every user
    List,
}

#[derive(clap::Subcommand, Debug)]
pub enum ApiKeyCmd {
    /// Create an API key; its token is printed this once and cannot be shown again
    Create {
        /// What the key is for
        #[arg(long)]
        name: String,
        /// A role the key holds (repeatable, at least one)
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// A group the key belongs to (repeatable)
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Days until the key expires (1 to 3650; default: never)
        #[arg(long)]
        expires_in_days: Option<i64>,
    },
    /// List the API keys (never their tokens)
    List,
    /// Revoke an API key at once
    Revoke {
        /// The key's id (from `apikey list`)
        #[arg(long)]
        id: String,
    },
}

#[derive(clap::Subcommand, Debug)]
pub enum PolicyCmd {
    /// Create a named policy document, or replace it (--expected-version: the version
    /// being replaced)
    Put {
        /// 1–128 characters of [A-Za-z0-9_.:-]
        #[arg(long)]
        name: String,
        /// The Cedar text (one or more policies, each with an @id)
        #[arg(long)]
        file: PathBuf,
        /// What the policies are for
        #[arg(long)]
        description: Option<String>,
        /// The live version this replaces (required to replace an existing document)
        #[arg(long)]
        expected_version: Option<i64>,
    },
    /// Show a policy document (the live version, or --version)
    Get {
        /// The document's name (`builtin` for the built-in roles)
        #[arg(long)]
        name: String,
        /// An earlier version (default: the live one)
        #[arg(long)]
        version: Option<i64>,
    },
    /// List the built-in document and every live one
    List,
    /// Every version of a policy document
    History {
        /// The document's name
        #[arg(long)]
        name: String,
    },
    /// Delete a policy document (its history stays)
    Delete {
        /// The document's name
        #[arg(long)]
        name: String,
        /// The live version being deleted, to refuse if it changed meanwhile
        #[arg(long)]
        expected_version: Option<i64>,
    },
    /// Would this request be allowed, by which policy, with which obligations? Prints the
    /// decision (exit 0 whether allowed or not)
    DryRun(DryRunArgs),
}

#[derive(clap::Args, Debug)]
pub struct DryRunArgs {
    /// A Cedar action id: sign, signTx, generate, managePolicies, ...
    #[arg(long)]
    pub action: String,
    /// An existing principal: user:<username> or apiKey:<id>
    #[arg(long, required_unless_present = "roles", conflicts_with_all = ["roles", "groups"])]
    pub principal: Option<String>,
    /// Or a hypothetical principal with these roles (repeatable) ...
    #[arg(long = "role")]
    pub roles: Vec<String>,
    /// ... and these groups (repeatable)
    #[arg(long = "group")]
    pub groups: Vec<String>,
    /// The key, for actions on a key
    #[arg(long)]
    pub key_id: Option<String>,
    /// For sign: the digest (64 hex characters)
    #[arg(long)]
    pub digest_hex: Option<String>,
    /// For sign and signTx: a BIP-32 non-hardened path
    #[arg(long)]
    pub derivation_path: Option<String>,
    /// For signTx: the chain id ...
    #[arg(long, requires = "tx_file")]
    pub chain_id: Option<u64>,
    /// ... and a JSON file with the unsigned transaction, as sign-tx takes it
    #[arg(long, requires = "chain_id")]
    pub tx_file: Option<PathBuf>,
    /// Evaluate as if this Cedar file were stored ...
    #[arg(long, requires = "candidate_name")]
    pub candidate_file: Option<PathBuf>,
    /// ... under this name (replacing a stored document of that name)
    #[arg(long, requires = "candidate_file")]
    pub candidate_name: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct SignTxArgs {
    /// The key to sign with
    #[arg(long)]
    pub key_id: String,
    /// The chain id (EIP-155)
    #[arg(long)]
    pub chain_id: u64,
    /// JSON file with the unsigned transaction: {"type":"eip1559"|"legacy","nonce",
    /// "to","value","gasLimit",...} (see the OpenAPI document)
    #[arg(long)]
    pub tx_file: PathBuf,
    /// Sign with the BIP-32 child key at this non-hardened path (m/44/60/0/0/7)
    #[arg(long)]
    pub derivation_path: Option<String>,
    /// Print the signing instance id at once instead of waiting
    #[arg(long)]
    pub no_wait: bool,
    /// Seconds to wait for the signature
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
}

#[derive(clap::Subcommand, Debug)]
pub enum ApprovalCmd {
    /// Signings waiting for approvals
    List,
    /// Approve a held signing (it starts once enough approvals are in)
    Approve {
        /// The signing's instance id
        #[arg(long)]
        instance_id: String,
        /// Why (kept with the vote and in the audit log)
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Reject a held signing (it ends REJECTED)
    Reject {
        /// The signing's instance id
        #[arg(long)]
        instance_id: String,
        /// Why (kept with the vote and in the audit log)
        #[arg(long, default_value = "")]
        comment: String,
    },
}

#[derive(clap::Subcommand, Debug)]
pub enum AuditCmd {
    /// One page of entries matching the filters; page on with --after-seq <nextAfterSeq>
    Query(AuditQueryArgs),
    /// The newest entry as a checkpoint (`anchor`: keep it somewhere the gateway cannot
    /// write, and pass it to `audit verify --anchor` later)
    Head,
    /// The log as JSON lines, from the start or after --after-seq
    Export {
        /// Only entries after this one
        #[arg(long, default_value_t = 0)]
        after_seq: u64,
        /// Write to this file instead of stdout
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Check an exported log offline: every hash and link, no gaps, duplicates or
    /// reordering, and the checkpoints given. Exits non-zero, naming the line and entry,
    /// when anything was changed
    Verify(AuditVerifyArgs),
}

#[derive(clap::Args, Debug)]
pub struct AuditQueryArgs {
    /// From this time, inclusive (RFC 3339 UTC with milliseconds: 2025-01-01T00:00:00.000Z)
    #[arg(long)]
    pub from: Option<String>,
    /// Up to this time, exclusive (same form as --from)
    #[arg(long)]
    pub to: Option<String>,
    /// user:<name>, apiKey:<id>, system:gateway, or just the kind
    #[arg(long)]
    pub principal: Option<String>,
    /// Entries about this key
    #[arg(long)]
    pub key_id: Option<String>,
    /// The audit action, e.g. sign.tx, policy.put, auth.login
    #[arg(long)]
    pub action: Option<String>,
    /// allow or deny
    #[arg(long, value_parser = ["allow", "deny"])]
    pub decision: Option<String>,
    /// Only entries after this sequence number
    #[arg(long)]
    pub after_seq: Option<u64>,
    /// Entries per page (1 to 1000; default 100)
    #[arg(long)]
    pub limit: Option<u32>,
}

#[derive(clap::Args, Debug)]
pub struct AuditVerifyArgs {
    /// The JSON lines file to check (default: fetch the log from the gateway)
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// A checkpoint SEQ:HASH (from `audit head`) the log must contain unchanged
    /// (repeatable); catches a cut tail or a history rewritten and re-hashed
    #[arg(long = "anchor")]
    pub anchors: Vec<Anchor>,
    /// The log starts right after this trusted checkpoint SEQ:HASH instead of at entry 1
    /// (for an export taken with --after-seq)
    #[arg(long)]
    pub after: Option<Anchor>,
}

impl AuditVerifyArgs {
    fn options(&self) -> VerifyOptions {
        VerifyOptions {
            start: self.after.map_or(Start::Genesis, Start::After),
            checkpoints: self.anchors.clone(),
        }
    }
}

/// Runs one governance subcommand. `login` and `audit verify --file` need no token (and
/// get no "no API token given" hint); the rest authenticate like every client command.
pub async fn run(args: &ClientArgs, cmd: GovernanceCommand) -> Result<()> {
    match cmd {
        GovernanceCommand::Login(login_args) => login(&args.url, login_args).await,
        GovernanceCommand::Audit {
            cmd: AuditCmd::Verify(v),
        } if v.file.is_some() => audit_verify(None, &v).await,
        cmd => {
            let (client, had_token) = connect(args)?;
            run_with(&client, cmd)
                .await
                .map_err(|e| add_token_hint(e, had_token))
        }
    }
}

async fn run_with(client: &Client, cmd: GovernanceCommand) -> Result<()> {
    match cmd {
        GovernanceCommand::Login(login_args) => login(client.base_url(), login_args).await,
        GovernanceCommand::Logout => {
            print_json(&serde_json::json!({ "loggedOut": client.logout().await? }))
        }
        GovernanceCommand::Whoami => print_json(&client.whoami().await?),
        GovernanceCommand::User { cmd } => user(client, cmd).await,
        GovernanceCommand::Apikey { cmd } => api_key(client, cmd).await,
        GovernanceCommand::Policy { cmd } => policy(client, cmd).await,
        GovernanceCommand::SignTx(sign_args) => sign_tx(client, sign_args).await,
        GovernanceCommand::Approval { cmd } => match cmd {
            ApprovalCmd::List => print_json(&client.list_approvals().await?),
            ApprovalCmd::Approve {
                instance_id,
                comment,
            } => print_json(&client.vote(&instance_id, true, &comment).await?),
            ApprovalCmd::Reject {
                instance_id,
                comment,
            } => print_json(&client.vote(&instance_id, false, &comment).await?),
        },
        GovernanceCommand::Audit { cmd } => audit(client, cmd).await,
    }
}

// ---- login and passwords ----

async fn login(url: &str, args: LoginArgs) -> Result<()> {
    let password = read_password(args.password_file.as_deref(), password_env())?
        .ok_or_else(|| no_password("login"))?;
    // No bearer token: login is public, and a stale DKMS_TOKEN must not get in the way.
    let client = Client::new(url, "").with_context(|| format!("cannot use gateway URL {url:?}"))?;
    let session = client.login(&args.username, &password).await.map_err(|e| {
        let refused = e.error_code() == Some(ErrorCode::Unauthenticated);
        let err = anyhow::Error::from(e);
        if refused {
            err.context(format!("login as {} refused", args.username))
        } else {
            err
        }
    })?;
    drop(password);
    let roles = if session.roles.is_empty() {
        "none".to_owned()
    } else {
        session.roles.join(", ")
    };
    eprintln!(
        "logged in as {} (roles: {roles}); the session expires at {}",
        session.username, session.expires_at
    );
    let mut token = Zeroizing::new(session.token);
    println!("{}", token.as_str());
    token.zeroize();
    Ok(())
}

fn password_env() -> Option<Zeroizing<String>> {
    std::env::var(PASSWORD_ENV).ok().map(Zeroizing::new)
}

/// The password from `file` (its trailing line break removed) if given, else from
/// `env` (the value of DKMS_PASSWORD), else `None`. An empty password is an error.
fn read_password(
    file: Option<&Path>,
    env: Option<Zeroizing<String>>,
) -> Result<Option<Zeroizing<String>>> {
    if let Some(path) = file {
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the password file {}", path.display()))?,
        );
        let password = Zeroizing::new(text.trim_end_matches(['\r', '\n']).to_owned());
        if password.is_empty() {
            bail!("the password file {} is empty", path.display());
        }
        return Ok(Some(password));
    }
    match env {
        Some(p) if p.is_empty() => bail!("{PASSWORD_ENV} is set but empty"),
        other => Ok(other),
    }
}

fn no_password(what: &str) -> anyhow::Error {
    anyhow!(
        "{what} needs a password: give --password-file FILE or set {PASSWORD_ENV} \
         (a password is never taken as a flag value: it would show in the shell history and in ps)"
    )
}

// ---- users and API keys ----

async fn user(client: &Client, cmd: UserCmd) -> Result<()> {
    match cmd {
        UserCmd::Create {
            username,
            roles,
            groups,
            disabled,
            password_file,
        } => {
            let password = read_password(password_file.as_deref(), password_env())?
                .ok_or_else(|| no_password("user create"))?;
            let mut req = dkms_client::UserRequest {
                username,
                password: Some(password.to_string()),
                roles: Some(roles),
                groups: Some(groups),
                disabled,
            };
            let created = client.create_user(&req).await;
            req.password.zeroize();
            print_json(&created?)
        }
        UserCmd::Update {
            username,
            roles,
            clear_roles,
            groups,
            clear_groups,
            disabled,
            password_file,
            password_from_env,
        } => {
            let password = if password_from_env {
                Some(
                    read_password(None, password_env())?
                        .ok_or_else(|| anyhow!("--password-from-env: {PASSWORD_ENV} is not set"))?,
                )
            } else {
                read_password(password_file.as_deref(), None)?
            };
            let roles = (clear_roles || !roles.is_empty()).then_some(roles);
            let groups = (clear_groups || !groups.is_empty()).then_some(groups);
            if roles.is_none() && groups.is_none() && disabled.is_none() && password.is_none() {
                let hint = if std::env::var_os(PASSWORD_ENV).is_some() {
                    format!(
                        " ({PASSWORD_ENV} is only used with --password-from-env, so that it \
                         never changes a password by accident)"
                    )
                } else {
                    String::new()
                };
                bail!(
                    "nothing to change: give --role, --clear-roles, --group, --clear-groups, \
                     --disabled, --password-file or --password-from-env{hint}"
                );
            }
            let mut req = dkms_client::UserRequest {
                username,
                password: password.as_ref().map(|p| p.to_string()),
                roles,
                groups,
                disabled,
            };
            let updated = client.update_user(&req).await;
            req.password.zeroize();
            print_json(&updated?)
        }
        UserCmd::Delete { username } => {
            let deleted = client.delete_user(&username).await?;
            print_json(&serde_json::json!({ "username": username, "deleted": deleted }))
        }
        UserCmd::List => print_json(&client.list_users().await?),
    }
}

async fn api_key(client: &Client, cmd: ApiKeyCmd) -> Result<()> {
    match cmd {
        ApiKeyCmd::Create {
            name,
            roles,
            groups,
            expires_in_days,
        } => {
            let created = client
                .create_api_key(&dkms_client::ApiKeyRequest {
                    name,
                    roles,
                    groups,
                    expires_in_days,
                })
                .await?;
            print_json(&created)?;
            eprintln!(
                "API key {} created. Its \"token\" above is shown only this once and cannot be \
                 retrieved again: store it now (use it as --token or DKMS_TOKEN).",
                created.id
            );
            Ok(())
        }
        ApiKeyCmd::List => print_json(&client.list_api_keys().await?),
        ApiKeyCmd::Revoke { id } => print_json(&client.revoke_api_key(&id).await?),
    }
}

// ---- policies ----

fn read_text(path: &Path, what: &str) -> Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the {what} {}", path.display()))
}

fn read_json(path: &Path, what: &str) -> Result<serde_json::Value> {
    let text = read_text(path, what)?;
    serde_json::from_str(&text)
        .with_context(|| format!("the {what} {} is not valid JSON", path.display()))
}

async fn policy(client: &Client, cmd: PolicyCmd) -> Result<()> {
    match cmd {
        PolicyCmd::Put {
            name,
            file,
            description,
            expected_version,
        } => {
            let req = dkms_client::PolicyPutRequest {
                name,
                text: read_text(&file, "policy file")?,
                description: description.unwrap_or_default(),
                expected_version,
            };
            print_json(&client.put_policy(&req).await?)
        }
        PolicyCmd::Get { name, version } => print_json(&client.get_policy(&name, version).await?),
        PolicyCmd::List => print_json(&client.list_policies().await?),
        PolicyCmd::History { name } => print_json(&client.policy_history(&name).await?),
        PolicyCmd::Delete {
            name,
            expected_version,
        } => {
            let deleted = client.delete_policy(&name, expected_version).await?;
            print_json(&serde_json::json!({ "name": name, "deleted": deleted }))
        }
        PolicyCmd::DryRun(args) => print_json(&client.dry_run(&dry_run_request(args)?).await?),
    }
}

fn dry_run_request(args: DryRunArgs) -> Result<dkms_client::DryRunRequest> {
    let hypothetical = args.principal.is_none();
    let candidate = match (args.candidate_file, args.candidate_name) {
        (Some(file), Some(name)) => Some(dkms_client::PolicyPutRequest {
            name,
            text: read_text(&file, "candidate policy file")?,
            description: String::new(),
            expected_version: None,
        }),
        _ => None,
    };
    Ok(dkms_client::DryRunRequest {
        principal: args.principal,
        roles: hypothetical.then_some(args.roles),
        groups: hypothetical.then_some(args.groups),
        action: args.action,
        key_id: args.key_id,
        digest_hex: args.digest_hex,
        derivation_path: args.derivation_path,
        chain_id: args.chain_id,
        transaction: args
            .tx_file
            .map(|f| read_json(&f, "transaction file"))
            .transpose()?,
        candidate,
    })
}

// ---- transaction signing ----

/// Requests a transaction signing and, unless `--no-wait`, waits for it like `dkms sign`.
/// A signing held for approvals is printed as it is (exit 0): waiting would only run into
/// the timeout; `dkms wait sign <id>` picks it up once approved. Once the request is
/// accepted, every error names the instance id, so the signing is never lost sight of.
async fn sign_tx(client: &Client, args: SignTxArgs) -> Result<()> {
    let req = dkms_client::SignTxRequest {
        key_id: args.key_id,
        chain_id: args.chain_id,
        transaction: read_json(&args.tx_file, "transaction file")?,
        derivation_path: args.derivation_path,
    };
    let instance_id = client.request_sign_tx(&req).await?;
    if args.no_wait {
        return print_json(&serde_json::json!({ "instanceId": instance_id }));
    }
    let info = match follow_sign(client, &instance_id, args.timeout).await {
        Ok(info) => info,
        Err(ClientError::Timeout) => {
            return Err(timeout_hint(
                ClientError::Timeout,
                args.timeout,
                "sign",
                &instance_id,
            ));
        }
        Err(e) => {
            let hint = if e.error_code() == Some(ErrorCode::PolicyDenied) {
                " (a principal that may not read the key's tasks should use --no-wait)"
            } else {
                ""
            };
            return Err(anyhow::Error::from(e).context(format!(
                "signing {instance_id} was requested, but its status cannot be read{hint}"
            )));
        }
    };
    print_json(&info)?;
    if info.status == TaskStatus::PendingApproval.as_str() {
        eprintln!(
            "signing {instance_id} waits for approvals (see `dkms approval list`); once \
             approved, `dkms wait sign {instance_id}` prints signedTx and txHash"
        );
        return Ok(());
    }
    check_finished(
        "signing",
        &info.status,
        info.error_code.as_deref(),
        info.error_message.as_deref(),
    )
}

/// The signing once it is terminal, or at once if it waits for approvals (held signings
/// are stored PENDING_APPROVAL before their id is returned, and stay so for hours).
async fn follow_sign(
    client: &Client,
    instance_id: &str,
    timeout_secs: u64,
) -> Result<dkms_client::SignInfo, ClientError> {
    let first = client.get_sign(instance_id).await?;
    if first.status == TaskStatus::PendingApproval.as_str()
        || first
            .status
            .parse::<TaskStatus>()
            .is_ok_and(TaskStatus::is_terminal)
    {
        return Ok(first);
    }
    client
        .wait_sign(instance_id, Duration::from_secs(timeout_secs))
        .await
}

// ---- audit ----

async fn audit(client: &Client, cmd: AuditCmd) -> Result<()> {
    match cmd {
        AuditCmd::Query(q) => {
            let after_seq = q.after_seq.map(|n| n.to_string());
            let limit = q.limit.map(|n| n.to_string());
            let mut query: Vec<(&str, &str)> = Vec::new();
            for (name, v) in [
                ("from", q.from.as_deref()),
                ("to", q.to.as_deref()),
                ("principal", q.principal.as_deref()),
                ("keyId", q.key_id.as_deref()),
                ("action", q.action.as_deref()),
                ("decision", q.decision.as_deref()),
                ("afterSeq", after_seq.as_deref()),
                ("limit", limit.as_deref()),
            ] {
                if let Some(v) = v {
                    query.push((name, v));
                }
            }
            print_json(&client.audit_query(&query).await?)
        }
        AuditCmd::Head => print_json(&client.audit_head().await?),
        AuditCmd::Export { after_seq, out } => {
            let entries = match &out {
                Some(path) => {
                    let file = std::fs::File::create(path)
                        .with_context(|| format!("cannot create {}", path.display()))?;
                    let mut w = std::io::BufWriter::new(file);
                    let n = export_pages(client, after_seq, |page| {
                        w.write_all(page.as_bytes())
                            .with_context(|| format!("writing {}", path.display()))
                    })
                    .await?;
                    w.flush()
                        .with_context(|| format!("writing {}", path.display()))?;
                    n
                }
                None => {
                    let stdout = std::io::stdout();
                    export_pages(client, after_seq, |page| {
                        let mut lock = stdout.lock();
                        lock.write_all(page.as_bytes())
                            .and_then(|()| lock.flush())
                            .context("writing to stdout")
                    })
                    .await?
                }
            };
            if let Some(path) = &out {
                eprintln!(
                    "wrote {entries} audit entries to {}; check it with `dkms audit verify --file {}`",
                    path.display(),
                    path.display()
                );
            }
            Ok(())
        }
        AuditCmd::Verify(v) => audit_verify(Some(client), &v).await,
    }
}

/// Fetches the log after `after_seq` up to (at least) the head at the start, page by
/// page (the gateway caps one answer), handing each page of JSON lines to `sink`.
/// Returns the number of entries.
async fn export_pages(
    client: &Client,
    after_seq: u64,
    mut sink: impl FnMut(&str) -> Result<()>,
) -> Result<u64> {
    let head = match client.audit_head().await {
        Ok(h) => h.seq,
        Err(e) if e.error_code() == Some(ErrorCode::NotFound) => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    let mut after = after_seq;
    let mut entries = 0u64;
    while after < head {
        let page = client.audit_export(after).await?;
        let lines = page.lines().filter(|l| !l.trim().is_empty()).count();
        if lines == 0 {
            break;
        }
        sink(&page)?;
        entries += u64::try_from(lines).unwrap_or(u64::MAX);
        // A last line that is not an entry is left for `audit verify` to report.
        match page.lines().rev().find_map(line_seq) {
            Some(last) if last > after => after = last,
            _ => break,
        }
    }
    Ok(entries)
}

#[derive(serde::Deserialize)]
struct SeqOnly {
    seq: u64,
}

/// The `seq` of one JSON line, if it has one (nothing else is checked).
fn line_seq(line: &str) -> Option<u64> {
    if line.trim().is_empty() {
        return None;
    }
    serde_json::from_str::<SeqOnly>(line).ok().map(|s| s.seq)
}

async fn audit_verify(client: Option<&Client>, args: &AuditVerifyArgs) -> Result<()> {
    let options = args.options();
    let summary = match (&args.file, client) {
        (Some(path), _) => verify_file(path, &options)?,
        (None, Some(client)) => {
            let after = args.after.map_or(0, |a| a.seq);
            let mut text = String::new();
            export_pages(client, after, |page| {
                text.push_str(page);
                Ok(())
            })
            .await?;
            verify_lines(|| Ok(text.as_bytes()), &options, "the gateway's export")?
        }
        (None, None) => bail!("audit verify needs --file or a gateway to fetch the log from"),
    };
    println!("{}", summary_line(&summary, &options));
    Ok(())
}

fn verify_file(path: &Path, options: &VerifyOptions) -> Result<Summary> {
    let open = || {
        std::fs::File::open(path)
            .map(BufReader::new)
            .with_context(|| format!("cannot open {}", path.display()))
    };
    verify_lines(open, options, &path.display().to_string())
}

/// Verifies JSON lines with `dkms_audit::verify_json_lines`. On a chain error, reads the
/// input once more to say on which lines the entries it names are.
fn verify_lines<R: BufRead>(
    open: impl Fn() -> Result<R>,
    options: &VerifyOptions,
    source: &str,
) -> Result<Summary> {
    match dkms_audit::verify_json_lines(open()?, options) {
        Ok(summary) => Ok(summary),
        Err(JsonLinesError::Chain(err)) => {
            let seqs = involved(&err);
            let lines = if seqs.is_empty() {
                BTreeMap::new()
            } else {
                locate(open()?, &seqs)?
            };
            bail!(
                "audit log INVALID ({source}): {err}{}",
                describe_lines(&seqs, &lines)
            )
        }
        // Already names the line.
        Err(err) => bail!("audit log INVALID ({source}): {err}"),
    }
}

/// The entries a chain error is about, in the order worth reporting.
fn involved(err: &ChainError) -> Vec<u64> {
    match *err {
        ChainError::Altered { seq }
        | ChainError::BrokenLink { seq }
        | ChainError::Duplicate { seq }
        | ChainError::OutOfOrder { seq, .. }
        | ChainError::CheckpointMismatch { seq } => vec![seq],
        ChainError::Missing { seq, next_present } => vec![seq, next_present],
        ChainError::Reordered { seq, found_first } => vec![found_first, seq],
        ChainError::TruncatedHead { found_first, .. }
        | ChainError::UnexpectedStart { found_first, .. } => vec![found_first],
        ChainError::TruncatedTail { ends_at, .. } => ends_at.into_iter().collect(),
        ChainError::CheckpointNotCovered { .. } => Vec::new(),
    }
}

/// The line numbers (from 1, as `verify_json_lines` counts them) holding each of `seqs`.
fn locate(reader: impl BufRead, seqs: &[u64]) -> Result<BTreeMap<u64, Vec<u64>>> {
    let mut found: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for (n, line) in (1u64..).zip(reader.lines()) {
        let line = line.with_context(|| format!("reading line {n}"))?;
        if let Some(seq) = line_seq(&line).filter(|s| seqs.contains(s)) {
            found.entry(seq).or_default().push(n);
        }
    }
    Ok(found)
}

fn describe_lines(seqs: &[u64], lines: &BTreeMap<u64, Vec<u64>>) -> String {
    if seqs.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = seqs
        .iter()
        .map(|seq| match lines.get(seq).map(Vec::as_slice) {
            None | Some([]) => format!("entry {seq}: not present"),
            Some([one]) => format!("entry {seq}: line {one}"),
            Some(many) => format!(
                "entry {seq}: lines {}",
                many.iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
        .collect();
    format!(" [{}]", parts.join("; "))
}

fn summary_line(summary: &Summary, options: &VerifyOptions) -> String {
    let checkpoints = match options.checkpoints.len() {
        0 => String::new(),
        1 => ", 1 checkpoint matched".to_owned(),
        n => format!(", {n} checkpoints matched"),
    };
    match (summary.first_seq, summary.last) {
        (Some(first), Some(last)) => format!(
            "audit log valid: {} entries, seq {first}..{}, head {last}{checkpoints}",
            summary.entries, last.seq
        ),
        _ => match options.start {
            Start::After(a) => format!("audit log valid: no entries after {a}{checkpoints}"),
            Start::Genesis | Start::Unanchored => {
                format!("audit log valid: empty (0 entries){checkpoints}")
            }
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};
    use dkms_audit::{AuditRecord, Chain, Decision, Details, Principal, PrincipalKind, Timestamp};

    #[derive(Parser, Debug)]
    struct TestCli {
        #[command(flatten)]
        args: ClientArgs,
        #[command(subcommand)]
        cmd: GovernanceCommand,
    }

    /// Both command sets side by side, as `main` flattens them: no name may collide.
    #[derive(Parser, Debug)]
    struct AllCli {
        #[command(flatten)]
        args: ClientArgs,
        #[command(subcommand)]
        cmd: AllCommands,
    }

    #[derive(clap::Subcommand, Debug)]
    enum AllCommands {
        #[command(flatten)]
        Client(crate::client_cmd::ClientCommand),
        #[command(flatten)]
        Governance(GovernanceCommand),
    }

    fn try_parse(argv: &[&str]) -> Result<TestCli, clap::Error> {
        TestCli::try_parse_from(std::iter::once("dkms").chain(argv.iter().copied()))
    }

    fn parse(argv: &[&str]) -> GovernanceCommand {
        match try_parse(argv) {
            Ok(cli) => cli.cmd,
            Err(e) => panic!("{argv:?}: {e}"),
        }
    }

    fn fails(argv: &[&str]) -> clap::error::ErrorKind {
        match try_parse(argv) {
            Ok(cli) => panic!("{argv:?} parsed: {:?}", cli.cmd),
            Err(e) => e.kind(),
        }
    }

    #[test]
    fn command_definitions_are_valid() {
        TestCli::command().debug_assert();
        AllCli::command().debug_assert();
        assert!(matches!(
            AllCli::try_parse_from([
                "dkms",
                "sign-tx",
                "--key-id",
                "k",
                "--chain-id",
                "1",
                "--tx-file",
                "t"
            ])
            .unwrap()
            .cmd,
            AllCommands::Governance(GovernanceCommand::SignTx(_))
        ));
        assert!(matches!(
            AllCli::try_parse_from(["dkms", "sign", "k", "00"])
                .unwrap()
                .cmd,
            AllCommands::Client(_)
        ));
    }

    #[test]
    fn login_logout_whoami_parse() {
        match parse(&["login", "--username", "tina", "--password-file", "/p"]) {
            GovernanceCommand::Login(a) => {
                assert_eq!(a.username, "tina");
                assert_eq!(a.password_file.as_deref(), Some(Path::new("/p")));
            }
            other => panic!("{other:?}"),
        }
        match parse(&["login", "--username", "tina"]) {
            GovernanceCommand::Login(a) => assert_eq!(a.password_file, None),
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse(&["logout"]), GovernanceCommand::Logout));
        assert!(matches!(parse(&["whoami"]), GovernanceCommand::Whoami));
        assert_eq!(
            fails(&["login"]),
            clap::error::ErrorKind::MissingRequiredArgument
        );
    }

    #[test]
    fn no_password_flag_exists() {
        use clap::error::ErrorKind::UnknownArgument;
        for argv in [
            &["login", "--username", "u", "--password", "secret-password"][..],
            &["login", "--username", "u", "--password=secret-password"][..],
            &[
                "user",
                "create",
                "--username",
                "u",
                "--password",
                "secret-password",
            ][..],
            &[
                "user",
                "update",
                "--username",
                "u",
                "--password",
                "secret-password",
            ][..],
        ] {
            assert_eq!(fails(argv), UnknownArgument, "{argv:?}");
        }
        // Nor does any abbreviation of one sneak in.
        let cmd = TestCli::command();
        for path in [&["login"][..], &["user", "create"], &["user", "update"]] {
            let mut sub = &cmd;
            for p in path {
                sub = sub.find_subcommand(p).unwrap();
            }
            assert!(
                sub.get_arguments()
                    .all(|a| a.get_long() != Some("password")),
                "{path:?}"
            );
        }
    }

    #[test]
    fn user_commands_parse() {
        match parse(&[
            "user",
            "create",
            "--username",
            "ann",
            "--role",
            "approver",
            "--role",
            "signer",
            "--group",
            "treasury",
            "--disabled",
            "false",
            "--password-file",
            "pw.txt",
        ]) {
            GovernanceCommand::User {
                cmd:
                    UserCmd::Create {
                        username,
                        roles,
                        groups,
                        disabled,
                        password_file,
                    },
            } => {
                assert_eq!(username, "ann");
                assert_eq!(roles, ["approver", "signer"]);
                assert_eq!(groups, ["treasury"]);
                assert_eq!(disabled, Some(false));
                assert_eq!(password_file.as_deref(), Some(Path::new("pw.txt")));
            }
            other => panic!("{other:?}"),
        }
        match parse(&[
            "user",
            "update",
            "--username",
            "ann",
            "--disabled",
            "true",
            "--clear-groups",
        ]) {
            GovernanceCommand::User {
                cmd:
                    UserCmd::Update {
                        roles,
                        clear_roles,
                        groups,
                        clear_groups,
                        disabled,
                        password_file,
                        password_from_env,
                        ..
                    },
            } => {
                assert!(roles.is_empty() && !clear_roles);
                assert!(groups.is_empty() && clear_groups);
                assert_eq!(disabled, Some(true));
                assert_eq!(password_file, None);
                assert!(!password_from_env);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&["user", "delete", "--username", "ann"]),
            GovernanceCommand::User {
                cmd: UserCmd::Delete { .. }
            }
        ));
        assert!(matches!(
            parse(&["user", "list"]),
            GovernanceCommand::User { cmd: UserCmd::List }
        ));
        use clap::error::ErrorKind;
        assert_eq!(
            fails(&["user", "create", "--username", "a", "--disabled", "maybe"]),
            ErrorKind::InvalidValue
        );
        assert_eq!(
            fails(&[
                "user",
                "update",
                "--username",
                "a",
                "--role",
                "x",
                "--clear-roles"
            ]),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(
            fails(&[
                "user",
                "update",
                "--username",
                "a",
                "--password-file",
                "f",
                "--password-from-env"
            ]),
            ErrorKind::ArgumentConflict
        );
    }

    #[test]
    fn apikey_commands_parse() {
        match parse(&[
            "apikey",
            "create",
            "--name",
            "ci",
            "--role",
            "signer",
            "--group",
            "g",
            "--expires-in-days",
            "30",
        ]) {
            GovernanceCommand::Apikey {
                cmd:
                    ApiKeyCmd::Create {
                        name,
                        roles,
                        groups,
                        expires_in_days,
                    },
            } => {
                assert_eq!(name, "ci");
                assert_eq!(roles, ["signer"]);
                assert_eq!(groups, ["g"]);
                assert_eq!(expires_in_days, Some(30));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            fails(&["apikey", "create", "--name", "ci"]),
            clap::error::ErrorKind::MissingRequiredArgument
        );
        assert!(matches!(
            parse(&["apikey", "list"]),
            GovernanceCommand::Apikey {
                cmd: ApiKeyCmd::List
            }
        ));
        match parse(&["apikey", "revoke", "--id", "k-1"]) {
            GovernanceCommand::Apikey {
                cmd: ApiKeyCmd::Revoke { id },
            } => assert_eq!(id, "k-1"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn policy_commands_parse() {
        match parse(&[
            "policy",
            "put",
            "--name",
            "treasury",
            "--file",
            "t.cedar",
            "--description",
            "d",
            "--expected-version",
            "2",
        ]) {
            GovernanceCommand::Policy {
                cmd:
                    PolicyCmd::Put {
                        name,
                        file,
                        description,
                        expected_version,
                    },
            } => {
                assert_eq!(name, "treasury");
                assert_eq!(file, Path::new("t.cedar"));
                assert_eq!(description.as_deref(), Some("d"));
                assert_eq!(expected_version, Some(2));
            }
            other => panic!("{other:?}"),
        }
        match parse(&["policy", "get", "--name", "p", "--version", "3"]) {
            GovernanceCommand::Policy {
                cmd: PolicyCmd::Get { name, version },
            } => assert_eq!((name.as_str(), version), ("p", Some(3))),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&["policy", "list"]),
            GovernanceCommand::Policy {
                cmd: PolicyCmd::List
            }
        ));
        assert!(matches!(
            parse(&["policy", "history", "--name", "p"]),
            GovernanceCommand::Policy {
                cmd: PolicyCmd::History { .. }
            }
        ));
        match parse(&["policy", "delete", "--name", "p", "--expected-version", "4"]) {
            GovernanceCommand::Policy {
                cmd: PolicyCmd::Delete {
                    expected_version, ..
                },
            } => assert_eq!(expected_version, Some(4)),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            fails(&["policy", "put", "--name", "p"]),
            clap::error::ErrorKind::MissingRequiredArgument
        );
    }

    fn dry_run_args(argv: &[&str]) -> DryRunArgs {
        let mut full = vec!["policy", "dry-run"];
        full.extend_from_slice(argv);
        match parse(&full) {
            GovernanceCommand::Policy {
                cmd: PolicyCmd::DryRun(a),
            } => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn dry_run_parses_and_builds_the_request() {
        let dir = tempfile::tempdir().unwrap();
        let tx = dir.path().join("tx.json");
        std::fs::write(&tx, r#"{"type":"legacy","nonce":1}"#).unwrap();
        let cand = dir.path().join("c.cedar");
        std::fs::write(&cand, "@id(\"x\") permit (principal, action, resource);").unwrap();
        let tx_s = tx.to_str().unwrap();
        let cand_s = cand.to_str().unwrap();

        let req = dry_run_request(dry_run_args(&[
            "--action",
            "signTx",
            "--principal",
            "user:tina",
            "--key-id",
            "k",
            "--chain-id",
            "1",
            "--tx-file",
            tx_s,
            "--candidate-file",
            cand_s,
            "--candidate-name",
            "treasury",
        ]))
        .unwrap();
        assert_eq!(req.principal.as_deref(), Some("user:tina"));
        assert_eq!((req.roles, req.groups), (None, None));
        assert_eq!(req.action, "signTx");
        assert_eq!(req.key_id.as_deref(), Some("k"));
        assert_eq!(req.chain_id, Some(1));
        assert_eq!(req.transaction.unwrap()["nonce"], 1);
        let c = req.candidate.unwrap();
        assert_eq!(c.name, "treasury");
        assert!(c.text.contains("permit"));

        let req = dry_run_request(dry_run_args(&[
            "--action",
            "sign",
            "--role",
            "signer",
            "--group",
            "ops",
            "--digest-hex",
            "00",
        ]))
        .unwrap();
        assert_eq!(req.principal, None);
        assert_eq!(req.roles.unwrap(), ["signer"]);
        assert_eq!(req.groups.unwrap(), ["ops"]);
        assert_eq!(req.digest_hex.as_deref(), Some("00"));
        assert!(req.transaction.is_none() && req.candidate.is_none());

        use clap::error::ErrorKind;
        let base = ["policy", "dry-run", "--action", "sign"];
        let with = |extra: &[&'static str]| {
            let mut v = base.to_vec();
            v.extend_from_slice(extra);
            fails(&v)
        };
        assert_eq!(with(&[]), ErrorKind::MissingRequiredArgument);
        assert_eq!(
            with(&["--principal", "user:a", "--role", "r"]),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(
            with(&["--principal", "user:a", "--group", "g"]),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(
            with(&["--role", "r", "--chain-id", "1"]),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            with(&["--role", "r", "--candidate-file", "f"]),
            ErrorKind::MissingRequiredArgument
        );

        std::fs::write(&tx, "{not json").unwrap();
        let e = dry_run_request(dry_run_args(&[
            "--action",
            "signTx",
            "--role",
            "r",
            "--chain-id",
            "1",
            "--tx-file",
            tx_s,
        ]))
        .unwrap_err();
        assert!(format!("{e:#}").contains("not valid JSON"), "{e:#}");
    }

    #[test]
    fn sign_tx_and_approval_commands_parse() {
        match parse(&[
            "sign-tx",
            "--key-id",
            "k",
            "--chain-id",
            "5",
            "--tx-file",
            "tx.json",
            "--derivation-path",
            "m/44/60/0/0/7",
            "--no-wait",
        ]) {
            GovernanceCommand::SignTx(a) => {
                assert_eq!(a.key_id, "k");
                assert_eq!(a.chain_id, 5);
                assert_eq!(a.tx_file, Path::new("tx.json"));
                assert_eq!(a.derivation_path.as_deref(), Some("m/44/60/0/0/7"));
                assert!(a.no_wait);
                assert_eq!(a.timeout, 60);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            fails(&["sign-tx", "--key-id", "k", "--tx-file", "t"]),
            clap::error::ErrorKind::MissingRequiredArgument
        );
        assert!(matches!(
            parse(&["approval", "list"]),
            GovernanceCommand::Approval {
                cmd: ApprovalCmd::List
            }
        ));
        match parse(&[
            "approval",
            "approve",
            "--instance-id",
            "i",
            "--comment",
            "ok",
        ]) {
            GovernanceCommand::Approval {
                cmd:
                    ApprovalCmd::Approve {
                        instance_id,
                        comment,
                    },
            } => assert_eq!((instance_id.as_str(), comment.as_str()), ("i", "ok")),
            other => panic!("{other:?}"),
        }
        match parse(&["approval", "reject", "--instance-id", "i"]) {
            GovernanceCommand::Approval {
                cmd: ApprovalCmd::Reject { comment, .. },
            } => assert_eq!(comment, ""),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn audit_commands_parse() {
        match parse(&[
            "audit",
            "query",
            "--from",
            "2025-01-01T00:00:00.000Z",
            "--principal",
            "user:tina",
            "--decision",
            "deny",
            "--after-seq",
            "10",
            "--limit",
            "50",
        ]) {
            GovernanceCommand::Audit {
                cmd: AuditCmd::Query(q),
            } => {
                assert_eq!(q.from.as_deref(), Some("2025-01-01T00:00:00.000Z"));
                assert_eq!(q.principal.as_deref(), Some("user:tina"));
                assert_eq!(q.decision.as_deref(), Some("deny"));
                assert_eq!((q.after_seq, q.limit), (Some(10), Some(50)));
                assert_eq!((q.to, q.key_id, q.action), (None, None, None));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            fails(&["audit", "query", "--decision", "maybe"]),
            clap::error::ErrorKind::InvalidValue
        );
        assert!(matches!(
            parse(&["audit", "head"]),
            GovernanceCommand::Audit {
                cmd: AuditCmd::Head
            }
        ));
        match parse(&["audit", "export", "--after-seq", "7", "--out", "log.jsonl"]) {
            GovernanceCommand::Audit {
                cmd: AuditCmd::Export { after_seq, out },
            } => {
                assert_eq!(after_seq, 7);
                assert_eq!(out.as_deref(), Some(Path::new("log.jsonl")));
            }
            other => panic!("{other:?}"),
        }
        let hash = "ab".repeat(32);
        let anchor = format!("12:{hash}");
        match parse(&[
            "audit",
            "verify",
            "--file",
            "log.jsonl",
            "--anchor",
            &anchor,
        ]) {
            GovernanceCommand::Audit {
                cmd: AuditCmd::Verify(v),
            } => {
                assert_eq!(v.file.as_deref(), Some(Path::new("log.jsonl")));
                assert_eq!(v.anchors.len(), 1);
                assert_eq!(v.anchors[0].seq, 12);
                assert_eq!(v.anchors[0].to_string(), anchor);
                assert_eq!(v.options().start, Start::Genesis);
            }
            other => panic!("{other:?}"),
        }
        for bad in ["12", "0:00", &format!("x:{hash}"), &format!("0:{hash}")] {
            assert_eq!(
                fails(&["audit", "verify", "--anchor", bad]),
                clap::error::ErrorKind::ValueValidation,
                "{bad}"
            );
        }
    }

    #[test]
    fn passwords_come_from_a_file_or_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "correct horse battery\r\n").unwrap();
        let env = || Some(Zeroizing::new("from-env-password".to_owned()));
        assert_eq!(
            read_password(Some(&file), env()).unwrap().unwrap().as_str(),
            "correct horse battery",
            "the file wins, without its line break"
        );
        assert_eq!(
            read_password(None, env()).unwrap().unwrap().as_str(),
            "from-env-password"
        );
        assert!(read_password(None, None).unwrap().is_none());
        let e = read_password(None, Some(Zeroizing::new(String::new()))).unwrap_err();
        assert!(e.to_string().contains("DKMS_PASSWORD"), "{e}");
        std::fs::write(&file, "\n").unwrap();
        let e = read_password(Some(&file), None).unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
        let e = read_password(Some(&dir.path().join("missing")), None).unwrap_err();
        assert!(
            e.to_string().contains("cannot read the password file"),
            "{e}"
        );
        let e = no_password("login").to_string();
        assert!(
            e.contains("--password-file") && e.contains("DKMS_PASSWORD"),
            "{e}"
        );
    }

    // ---- audit verify on files ----

    fn record(n: u64) -> AuditRecord {
        AuditRecord {
            time: Timestamp::from_unix_millis(1_735_689_600_000 + i64::try_from(n).unwrap())
                .unwrap(),
            request_id: format!("req-{n}"),
            principal: Principal::new(PrincipalKind::User, format!("user{}", n % 3)),
            action: if n.is_multiple_of(2) {
                "sign.tx"
            } else {
                "policy.put"
            }
            .to_owned(),
            resource: n
                .is_multiple_of(2)
                .then(|| dkms_audit::key_resource(format!("key-{n}"))),
            decision: if n.is_multiple_of(5) {
                Decision::Deny
            } else {
                Decision::Allow
            },
            policies: vec![format!("policy-{n}")],
            outcome: if n.is_multiple_of(5) {
                "POLICY_DENIED"
            } else {
                "ok"
            }
            .to_owned(),
            details: Details::new().with("chainId", "1").unwrap(),
        }
    }

    /// A valid log of `n` entries as JSON lines, and the anchor of every entry.
    fn chain(n: u64) -> (Vec<String>, Vec<Anchor>) {
        let mut chain = Chain::new();
        let entries: Vec<_> = (1..=n).map(|i| chain.append(record(i)).unwrap()).collect();
        (
            entries.iter().map(dkms_audit::to_json_line).collect(),
            entries.iter().map(|e| e.anchor()).collect(),
        )
    }

    fn check(dir: &Path, name: &str, lines: &[String], options: &VerifyOptions) -> Result<Summary> {
        let path = dir.join(name);
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        verify_file(&path, options)
    }

    fn err_of(r: Result<Summary>) -> String {
        format!("{:#}", r.expect_err("must not verify"))
    }

    #[test]
    fn a_valid_log_verifies_with_a_summary() {
        let dir = tempfile::tempdir().unwrap();
        let (lines, anchors) = chain(8);
        let plain = VerifyOptions::default();
        let s = check(dir.path(), "ok.jsonl", &lines, &plain).unwrap();
        assert_eq!(
            (s.entries, s.first_seq, s.last),
            (8, Some(1), Some(anchors[7]))
        );
        let line = summary_line(&s, &plain);
        assert_eq!(
            line,
            format!("audit log valid: 8 entries, seq 1..8, head {}", anchors[7])
        );
        assert!(line.contains(&hex::encode(anchors[7].hash)));

        // Checkpoints inside the log, and at its head, hold.
        let anchored = VerifyOptions {
            start: Start::Genesis,
            checkpoints: vec![anchors[2], anchors[7]],
        };
        let s = check(dir.path(), "ok.jsonl", &lines, &anchored).unwrap();
        assert!(summary_line(&s, &anchored).ends_with("2 checkpoints matched"));

        // An export taken after a checkpoint verifies from it.
        let after = VerifyOptions {
            start: Start::After(anchors[4]),
            checkpoints: vec![],
        };
        let s = check(dir.path(), "tail.jsonl", &lines[5..], &after).unwrap();
        assert_eq!(
            summary_line(&s, &after),
            format!("audit log valid: 3 entries, seq 6..8, head {}", anchors[7])
        );
        let s = check(dir.path(), "none.jsonl", &[], &after).unwrap();
        assert_eq!(
            summary_line(&s, &after),
            format!("audit log valid: no entries after {}", anchors[4])
        );
        let s = check(dir.path(), "empty.jsonl", &[], &plain).unwrap();
        assert_eq!(
            summary_line(&s, &plain),
            "audit log valid: empty (0 entries)"
        );
    }

    #[test]
    fn tampering_is_reported_with_line_and_entry() {
        let dir = tempfile::tempdir().unwrap();
        let (lines, anchors) = chain(8);
        let plain = VerifyOptions::default();

        // Edited: the outcome of entry 5 (a denial) rewritten as a success.
        let mut edited = lines.clone();
        edited[4] = edited[4].replace("\"outcome\":\"POLICY_DENIED\"", "\"outcome\":\"ok\"");
        assert_ne!(edited[4], lines[4]);
        let e = err_of(check(dir.path(), "edited.jsonl", &edited, &plain));
        assert!(
            e.contains("audit log INVALID") && e.contains("entry 5 was altered"),
            "{e}"
        );
        assert!(e.contains("[entry 5: line 5]"), "{e}");

        // Removed: entry 4 is gone.
        let mut removed = lines.clone();
        removed.remove(3);
        let e = err_of(check(dir.path(), "removed.jsonl", &removed, &plain));
        assert!(e.contains("entry 4 is missing"), "{e}");
        assert!(e.contains("[entry 4: not present; entry 5: line 4]"), "{e}");

        // Reordered: entries 3 and 4 swapped.
        let mut swapped = lines.clone();
        swapped.swap(2, 3);
        let e = err_of(check(dir.path(), "swapped.jsonl", &swapped, &plain));
        assert!(e.contains("entry 3 is out of order"), "{e}");
        assert!(e.contains("[entry 4: line 3; entry 3: line 4]"), "{e}");

        // Moved far: entry 2 at the end.
        let mut moved = lines.clone();
        let two = moved.remove(1);
        moved.push(two);
        let e = err_of(check(dir.path(), "moved.jsonl", &moved, &plain));
        assert!(e.contains("entry 2"), "{e}");
        assert!(e.contains("entry 2: line 8"), "{e}");

        // Duplicated: entry 6 twice.
        let mut dup = lines.clone();
        dup.insert(6, lines[5].clone());
        let e = err_of(check(dir.path(), "dup.jsonl", &dup, &plain));
        assert!(e.contains("entry 6 appears twice"), "{e}");
        assert!(e.contains("[entry 6: lines 6, 7]"), "{e}");

        // The head cut off: entry 1 removed.
        let e = err_of(check(dir.path(), "head.jsonl", &lines[1..], &plain));
        assert!(e.contains("entries before it were removed"), "{e}");
        assert!(e.contains("[entry 2: line 1]"), "{e}");

        // A line that is not an entry is named by its line number.
        let mut garbage = lines.clone();
        garbage[2] = "{not json".to_owned();
        let e = err_of(check(dir.path(), "garbage.jsonl", &garbage, &plain));
        assert!(e.contains("line 3: "), "{e}");

        // The file is named in the message.
        assert!(e.contains("garbage.jsonl"), "{e}");
        let _ = anchors;
    }

    #[test]
    fn anchors_catch_a_rewritten_history_and_a_cut_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (lines, anchors) = chain(8);

        // A wrong hash for entry 3.
        let wrong = Anchor {
            seq: 3,
            hash: anchors[3].hash,
        };
        let options = VerifyOptions {
            start: Start::Genesis,
            checkpoints: vec![wrong],
        };
        let e = err_of(check(dir.path(), "log.jsonl", &lines, &options));
        assert!(e.contains("entry 3 differs from its checkpoint"), "{e}");
        assert!(e.contains("[entry 3: line 3]"), "{e}");

        // A history rewritten from entry 4 on and re-hashed: internally consistent, so
        // only the checkpoint of entry 6 taken before catches it.
        let mut chain = Chain::resume(Some(anchors[2])).unwrap();
        let mut forged = lines[..3].to_vec();
        for i in 4..=8 {
            let mut r = record(i);
            if i == 5 {
                r.outcome = "ok".into();
                r.decision = Decision::Allow;
            }
            forged.push(dkms_audit::to_json_line(&chain.append(r).unwrap()));
        }
        assert!(
            check(
                dir.path(),
                "forged.jsonl",
                &forged,
                &VerifyOptions::default()
            )
            .is_ok()
        );
        let options = VerifyOptions {
            start: Start::Genesis,
            checkpoints: vec![anchors[5]],
        };
        let e = err_of(check(dir.path(), "forged.jsonl", &forged, &options));
        assert!(e.contains("entry 6 differs from its checkpoint"), "{e}");

        // The tail cut off below a checkpoint.
        let options = VerifyOptions {
            start: Start::Genesis,
            checkpoints: vec![anchors[7]],
        };
        let e = err_of(check(dir.path(), "cut.jsonl", &lines[..6], &options));
        assert!(
            e.contains("checkpoint entry 8 is missing") && e.contains("the log ends at entry 6"),
            "{e}"
        );
        assert!(e.contains("[entry 6: line 6]"), "{e}");
    }

    #[test]
    fn verify_reads_files_only_when_asked() {
        // `audit verify --file` runs without a gateway or token.
        let dir = tempfile::tempdir().unwrap();
        let (lines, _) = chain(3);
        let path = dir.path().join("log.jsonl");
        std::fs::write(&path, lines.join("\n")).unwrap();
        let args = AuditVerifyArgs {
            file: Some(path.clone()),
            anchors: vec![],
            after: None,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(audit_verify(None, &args)).unwrap();
        let missing = AuditVerifyArgs {
            file: Some(dir.path().join("missing.jsonl")),
            anchors: vec![],
            after: None,
        };
        let e = format!(
            "{:#}",
            rt.block_on(audit_verify(None, &missing)).unwrap_err()
        );
        assert!(e.contains("cannot open"), "{e}");
    }

    #[test]
    fn seq_of_a_line() {
        assert_eq!(line_seq(r#"{"version":1,"seq":42,"x":[1]}"#), Some(42));
        assert_eq!(line_seq("   "), None);
        assert_eq!(line_seq("{not json"), None);
        assert_eq!(line_seq(r#"{"seq":-1}"#), None);
    }
}
