//! `dkms`: one binary for the node daemon, the gateway, the all-in-one local mode and the
//! client commands.

mod backup_cmd;
mod client_cmd;
mod config;
mod dev;
mod governance_cmd;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, Subcommand};
use config::Config;
use dkms_node::runner::{self, NodeContext};
use dkms_node::sealer::{KdfParams, Sealer, SoftwareSealer};
use dkms_node::store::NodeStore;
use dkms_proto::NodeTag;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use zeroize::Zeroizing;

#[derive(Parser, Debug)]
#[command(
    name = "dkms",
    version,
    about = "Distributed key management: threshold keys across MPC nodes"
)]
struct Cli {
    /// Configuration file (TOML); DKMS_* environment variables override it
    #[arg(long, env = "DKMS_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(flatten)]
    client: client_cmd::ClientArgs,
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one MPC node (dials out to the gateway)
    Node(NodeArgs),
    /// Run the gateway (REST API on port 8889 and the node relay)
    Gateway(GatewayArgs),
    /// Run everything locally: the gateway on 127.0.0.1:8889 and three node processes
    Dev(dev::DevArgs),
    #[command(flatten)]
    Client(client_cmd::ClientCommand),
    #[command(flatten)]
    Governance(governance_cmd::GovernanceCommand),
}

#[derive(clap::Args, Debug)]
struct NodeArgs {
    /// This node's tag (overrides node.tag / DKMS_NODE_TAG)
    #[arg(long)]
    tag: Option<String>,
    /// Gateway node link URL, e.g. ws://127.0.0.1:8889/api/node/link
    #[arg(long)]
    gateway_url: Option<String>,
    /// Data directory of this node
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// File holding the one-time join token (the token may also come from DKMS_JOIN_TOKEN)
    #[arg(long)]
    join_token_file: Option<PathBuf>,
    /// Exit when this process id is gone (used by `dkms dev` for its children)
    #[arg(long, hide = true)]
    parent_pid: Option<u32>,
}

#[derive(clap::Args, Debug)]
struct GatewayArgs {
    /// Listen address (overrides gateway.listen / DKMS_GATEWAY_LISTEN)
    #[arg(long)]
    listen: Option<String>,
    /// Metadata store URL (overrides gateway.database_url / DKMS_DATABASE_URL)
    #[arg(long)]
    database_url: Option<String>,
    /// Bootstrap admin token file (overrides gateway.admin_token_file)
    #[arg(long)]
    admin_token_file: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Command::Client(cmd) => client_cmd::run(&cli.client, cmd).await,
        Command::Governance(cmd) => governance_cmd::run(&cli.client, cmd).await,
        Command::Node(args) => {
            let cfg = Config::load(cli.config.as_deref())?;
            init_logging(&cfg.log_format);
            run_node(cfg, args).await
        }
        Command::Gateway(args) => {
            let mut cfg = Config::load(cli.config.as_deref())?;
            init_logging(&cfg.log_format);
            if let Some(v) = args.listen {
                cfg.gateway.listen = v;
            }
            if let Some(v) = args.database_url {
                cfg.gateway.database_url = v;
            }
            if let Some(v) = args.admin_token_file {
                cfg.gateway.admin_token_file = v;
            }
            let gw = dkms_gateway::Gateway::bind(gateway_config(&cfg)?, None).await?;
            tracing::info!(addr = %gw.local_addr()?, "gateway listening");
            gw.serve(shutdown_signal()).await?;
            Ok(())
        }
        Command::Dev(args) => {
            let cfg = Config::load(cli.config.as_deref())?;
            init_logging(&cfg.log_format);
            dev::run(cfg, args).await
        }
    }
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

pub(crate) fn gateway_config(cfg: &Config) -> Result<dkms_gateway::GatewayConfig> {
    let listen =
        cfg.gateway.listen.parse().with_context(|| {
            format!("gateway.listen {:?} is not an address", cfg.gateway.listen)
        })?;
    let mut g = dkms_gateway::GatewayConfig::with_defaults(
        listen,
        cfg.gateway.database_url.clone(),
        cfg.gateway.admin_token_file.clone(),
    );
    g.keygen_timeout = Duration::from_secs(cfg.gateway.keygen_timeout_secs);
    g.sign_timeout = Duration::from_secs(cfg.gateway.sign_timeout_secs);
    g.max_running_sessions = cfg.gateway.max_running_sessions;
    g.max_open_tasks = cfg.gateway.max_open_tasks;
    g.deletion_day = Duration::from_secs(cfg.gateway.deletion_day_secs.max(1));
    g.reaper_interval = Duration::from_secs(cfg.gateway.reaper_interval_secs.max(1));
    g.session_ttl = Duration::from_secs(cfg.gateway.session_ttl_secs.max(1));
    g.max_failed_logins = cfg.gateway.max_failed_logins.max(1);
    g.login_lockout = Duration::from_secs(cfg.gateway.login_lockout_secs);
    g.approval_ttl = Duration::from_secs(cfg.gateway.approval_ttl_secs.max(1));
    g.lease = Duration::from_secs(cfg.gateway.lease_secs.max(1));
    Ok(g)
}

/// Resolves on Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

fn create_private_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting {}", dir.display()))?;
    }
    Ok(())
}

async fn run_node(mut cfg: Config, args: NodeArgs) -> Result<()> {
    if let Some(v) = args.tag {
        cfg.node.tag = Some(v);
    }
    if let Some(v) = args.gateway_url {
        cfg.node.gateway_url = v;
    }
    if let Some(v) = args.data_dir {
        cfg.node.data_dir = v;
    }
    let tag: NodeTag = cfg
        .node
        .tag
        .clone()
        .ok_or_else(|| anyhow!("the node needs a tag: --tag, node.tag or DKMS_NODE_TAG"))?
        .parse()
        .map_err(|e| anyhow!("node tag: {e}"))?;
    let urls = cfg.node.gateway_urls()?;
    let dir = cfg.node.data_dir.clone();
    create_private_dir(&dir)?;
    let sealer: Arc<dyn Sealer> = match cfg.node.sealer.as_str() {
        "keyfile" => {
            let path = cfg
                .node
                .sealing_key_file
                .clone()
                .unwrap_or_else(|| dir.join("sealing.key"));
            Arc::new(SoftwareSealer::from_key_file(&path)?)
        }
        "passphrase" => {
            let pass =
                Zeroizing::new(std::env::var("DKMS_SEALER_PASSPHRASE").map_err(|_| {
                    anyhow!("node.sealer = passphrase needs DKMS_SEALER_PASSPHRASE")
                })?);
            Arc::new(SoftwareSealer::from_passphrase(
                &pass,
                &dir.join("sealing.salt"),
                KdfParams::default(),
            )?)
        }
        other => bail!("unknown node.sealer {other:?}; use keyfile or passphrase"),
    };
    tracing::warn!(sealer = %sealer.describe(), "sealing at rest (software sealing is not a TEE)");
    let store = Arc::new(NodeStore::open(&dir.join("node.redb"), sealer)?);
    let ctx = Arc::new(NodeContext::new(tag.clone(), store)?);
    let join_token = match (&args.join_token_file, std::env::var("DKMS_JOIN_TOKEN").ok()) {
        (Some(p), _) => Some(Zeroizing::new(
            std::fs::read_to_string(p)
                .with_context(|| format!("reading {}", p.display()))?
                .trim()
                .to_owned(),
        )),
        (None, Some(t)) => Some(Zeroizing::new(t)),
        (None, None) => None,
    };
    let (tx, rx) = tokio::sync::watch::channel(false);
    let parent = args.parent_pid;
    tokio::spawn(async move {
        let parent_gone = async {
            match parent {
                Some(pid) => loop {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    if !Path::new(&format!("/proc/{pid}")).exists() {
                        break;
                    }
                },
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = shutdown_signal() => {},
            _ = parent_gone => {},
        }
        let _ = tx.send(true);
    });
    tracing::info!(node = %tag, gateways = ?urls, "node starting");
    runner::run_all(ctx, urls, join_token, rx).await?;
    tracing::info!("node stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_definition_is_valid() {
        Cli::command().debug_assert();
    }
}
