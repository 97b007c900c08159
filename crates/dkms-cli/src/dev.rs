//! `dkms dev`: the gateway plus local node processes, all state under one data
//! directory. The same code paths as a deployment: nodes are separate `dkms node`
//! processes that join with a one-time token and dial the gateway over loopback.

use crate::config::Config;
use anyhow::{Context, Result};
use dkms_gateway::{Gateway, PodLauncher, auth};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

#[derive(clap::Args, Debug)]
pub struct DevArgs {
    /// Directory for all state: gateway database, admin token, node stores and logs
    #[arg(long, default_value = "./dkms-data")]
    pub data_dir: PathBuf,
    /// Gateway listen address [default: gateway.listen, 127.0.0.1:8889]
    #[arg(long)]
    pub listen: Option<String>,
    /// Nodes to create on first start
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
}

/// Starts `dkms node` child processes and stops them when dropped.
struct LocalNodes {
    exe: PathBuf,
    data_dir: PathBuf,
    gateway_url: String,
    log_format: String,
    children: Mutex<Vec<(String, Child)>>,
}

impl PodLauncher for LocalNodes {
    fn launch(&self, tag: &str, join_token: &str) -> Result<(), String> {
        self.spawn(tag, Some(join_token))
            .map_err(|e| format!("{e:#}"))
    }
}

impl LocalNodes {
    fn spawn(&self, tag: &str, join_token: Option<&str>) -> Result<()> {
        let dir = self.data_dir.join("nodes").join(tag);
        crate::create_private_dir(&dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("node.log"))
            .with_context(|| format!("opening the log of node {tag}"))?;
        let mut cmd = Command::new(&self.exe);
        cmd.arg("node")
            .arg("--tag")
            .arg(tag)
            .arg("--gateway-url")
            .arg(&self.gateway_url)
            .arg("--data-dir")
            .arg(&dir)
            .arg("--parent-pid")
            .arg(std::process::id().to_string())
            .env("DKMS_LOG_FORMAT", &self.log_format)
            // Each local node has its own key file and identity under the data directory.
            .env_remove("DKMS_JOIN_TOKEN")
            .env_remove("DKMS_SEALING_KEY_FILE")
            .env_remove("DKMS_SEALER")
            .env_remove("DKMS_SEALER_PASSPHRASE")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // The one-time token goes through a 0600 file, not the child's environment, which
        // other processes of the same user can read.
        if let Some(t) = join_token {
            let file = dir.join("join.token");
            auth::write_secret_file(&file, t.as_bytes())
                .with_context(|| format!("writing the join token of node {tag}"))?;
            cmd.arg("--join-token-file").arg(file);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting node {tag}"))?;
        tracing::info!(node = tag, pid = child.id(), log = %dir.join("node.log").display(), "started local node");
        if let Ok(mut c) = self.children.lock() {
            c.push((tag.to_owned(), child));
        }
        Ok(())
    }

    fn stop_all(&self) {
        if let Ok(mut c) = self.children.lock() {
            for (tag, child) in c.iter_mut() {
                let _ = child.kill();
                let _ = child.wait();
                tracing::info!(node = %tag, "stopped local node");
            }
            c.clear();
        }
    }
}

impl Drop for LocalNodes {
    fn drop(&mut self) {
        self.stop_all();
    }
}

pub async fn run(mut cfg: Config, args: DevArgs) -> Result<()> {
    crate::create_private_dir(&args.data_dir)?;
    let data_dir = std::fs::canonicalize(&args.data_dir)?;
    if let Some(l) = &args.listen {
        cfg.gateway.listen = l.clone();
    }
    cfg.gateway.database_url = format!("sqlite://{}", data_dir.join("gateway.db").display());
    cfg.gateway.admin_token_file = data_dir.join("admin.token");
    let gw_cfg = crate::gateway_config(&cfg)?;
    let exe = std::env::current_exe().context("locating the dkms binary")?;
    // The launcher needs the bound address, so bind first and fill it in.
    let launcher_slot = Arc::new(LateLauncher(Mutex::new(None)));
    let gw = Gateway::bind(gw_cfg, Some(launcher_slot.clone())).await?;
    let addr = gw.local_addr()?;
    let local = Arc::new(LocalNodes {
        gateway_url: format!("ws://{addr}/api/node/link"),
        exe,
        data_dir: data_dir.clone(),
        log_format: cfg.log_format.clone(),
        children: Mutex::new(Vec::new()),
    });
    if let Ok(mut slot) = launcher_slot.0.lock() {
        *slot = Some(local.clone());
    }
    tracing::info!(%addr, data_dir = %data_dir.display(), "dkms dev: gateway listening");
    tracing::info!(
        token_file = %data_dir.join("admin.token").display(),
        "admin API token: export DKMS_TOKEN=$(cat {})",
        data_dir.join("admin.token").display()
    );

    let store = gw.state.store.clone();
    let now = gw.state.clock.now_ms();
    let nodes = store.list_nodes().await?;
    if nodes.is_empty() {
        for i in 1..=args.nodes {
            let tag = format!("node{i}");
            let token = auth::new_token().map_err(|e| anyhow::anyhow!(e.message))?;
            store
                .insert_node(&tag, &auth::hash_token(&token), now)
                .await?;
            local.spawn(&tag, Some(&token))?;
        }
    } else {
        for n in nodes {
            if n.status == dkms_store::NODE_ACTIVE {
                local.spawn(&n.tag, None)?;
            } else {
                let token = auth::new_token().map_err(|e| anyhow::anyhow!(e.message))?;
                store
                    .set_join_token(&n.tag, &auth::hash_token(&token), now)
                    .await?;
                local.spawn(&n.tag, Some(&token))?;
            }
        }
    }
    let served = gw.serve(crate::shutdown_signal()).await;
    local.stop_all();
    served?;
    tracing::info!("dkms dev stopped");
    Ok(())
}

/// A launcher whose target is set after the gateway has bound its port.
struct LateLauncher(Mutex<Option<Arc<LocalNodes>>>);

impl PodLauncher for LateLauncher {
    fn launch(&self, tag: &str, join_token: &str) -> Result<(), String> {
        let target = self.0.lock().ok().and_then(|s| s.clone());
        match target {
            Some(l) => l.launch(tag, join_token),
            None => Err("local nodes are not ready yet".into()),
        }
    }
}
