//! Starts a real dkms stack for tests: a `dkms gateway` process and `dkms node`
//! processes on loopback, each test with its own directory and database, and hands the
//! test a ready client. Nodes can be killed and restarted to exercise failures.

use anyhow::{Context, Result, anyhow, bail};
use dkms_client::Client;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use dkms_client;
use dkms_store::Backend;
use dkms_store::testdb::{self, TestDb};

/// A running gateway with its nodes. Everything is killed on drop.
pub struct Stack {
    pub client: Client,
    pub url: String,
    pub token: String,
    pub dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    gateway_env: Vec<(String, String)>,
    /// The gateway's database: a SQLite file in `dir`, or a fresh database on the MariaDB
    /// or PostgreSQL server when `DKMS_TEST_DB` says so.
    pub db_url: String,
    pub backend: Backend,
    db: Option<TestDb>,
    gateway: Option<Child>,
    nodes: BTreeMap<String, Child>,
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn log_file(path: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

impl Stack {
    /// Starts a gateway and `nodes` nodes tagged `node1`..`nodeN`, all connected.
    pub async fn start(bin: impl AsRef<Path>, nodes: usize) -> Result<Stack> {
        Self::start_with(bin, nodes, &[]).await
    }

    /// As [`Stack::start`], with extra environment for the gateway process (for example
    /// `DKMS_SIGN_TIMEOUT_SECS`).
    pub async fn start_with(
        bin: impl AsRef<Path>,
        nodes: usize,
        gateway_env: &[(&str, &str)],
    ) -> Result<Stack> {
        let dir = tempfile::Builder::new().prefix("dkms-test-").tempdir()?;
        let backend = testdb::backend_from_env()?;
        let (db_url, db) = match backend {
            Backend::Sqlite => (
                format!("sqlite://{}", dir.path().join("gateway.db").display()),
                None,
            ),
            _ => {
                let db = TestDb::create(backend, dir.path()).await?;
                (db.url.clone(), Some(db))
            }
        };
        let mut stack = Stack {
            gateway_env: gateway_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            db_url,
            backend,
            db,
            client: Client::new("http://127.0.0.1:1", "none")?,
            url: String::new(),
            token: String::new(),
            dir,
            bin: bin.as_ref().to_path_buf(),
            port: 0,
            gateway: None,
            nodes: BTreeMap::new(),
        };
        stack.start_gateway().await?;
        let tags: Vec<String> = (1..=nodes).map(|i| format!("node{i}")).collect();
        for t in &tags {
            stack.add_node(t).await?;
        }
        stack.wait_connected(&tags, Duration::from_secs(30)).await?;
        Ok(stack)
    }

    pub fn gateway_log(&self) -> PathBuf {
        self.dir.path().join("gateway.log")
    }

    pub fn node_dir(&self, tag: &str) -> PathBuf {
        self.dir.path().join("nodes").join(tag)
    }

    /// (Re)starts the gateway process on its port, with the same database.
    pub async fn start_gateway(&mut self) -> Result<()> {
        if self.port == 0 {
            self.port = free_port()?;
        }
        let log = log_file(&self.gateway_log())?;
        let child = Command::new(&self.bin)
            .arg("gateway")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--database-url")
            .arg(&self.db_url)
            .arg("--admin-token-file")
            .arg(self.dir.path().join("admin.token"))
            .env("RUST_LOG", "debug,sqlx=warn,hyper=info,tungstenite=info")
            .envs(
                self.gateway_env
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting the gateway")?;
        self.gateway = Some(child);
        self.url = format!("http://127.0.0.1:{}", self.port);
        let deadline = Instant::now() + Duration::from_secs(30);
        let token_file = self.dir.path().join("admin.token");
        loop {
            if let (Ok(token), Ok(c)) = (
                std::fs::read_to_string(&token_file),
                Client::new(&self.url, "probe"),
            ) && c.health().await.is_ok()
            {
                self.token = token.trim().to_owned();
                self.client = Client::new(&self.url, &self.token)?;
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "gateway did not come up; log:\n{}",
                    std::fs::read_to_string(self.gateway_log()).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILLs the gateway.
    pub fn kill_gateway(&mut self) {
        if let Some(mut c) = self.gateway.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Registers `tag` with createPod and starts its node with a fresh join token.
    pub async fn add_node(&mut self, tag: &str) -> Result<()> {
        self.client
            .create_pod(tag)
            .await
            .map_err(|e| anyhow!("createPod {tag}: {e}"))?;
        let token = self
            .client
            .join_token(tag)
            .await
            .map_err(|e| anyhow!("joinToken {tag}: {e}"))?;
        self.spawn_node(tag, Some(&token), &[])
    }

    /// Kills `tag`, deletes its data directory for real (shares, identity keys, sealing
    /// key) and brings it back as a new machine would come: unpinned through `resetPod`,
    /// started on an empty directory with the new join token.
    pub async fn wipe_and_rejoin_node(&mut self, tag: &str) -> Result<()> {
        self.kill_node(tag);
        let dir = self.node_dir(tag);
        std::fs::remove_dir_all(&dir).with_context(|| format!("wiping {}", dir.display()))?;
        let token = self
            .client
            .reset_pod(tag)
            .await
            .map_err(|e| anyhow!("resetPod {tag}: {e}"))?;
        self.wait_disconnected(tag, Duration::from_secs(10)).await?;
        self.spawn_node(tag, Some(&token), &[])?;
        self.wait_connected(&[tag.to_owned()], Duration::from_secs(30))
            .await
    }

    fn spawn_node(
        &mut self,
        tag: &str,
        join_token: Option<&str>,
        env: &[(&str, &str)],
    ) -> Result<()> {
        let dir = self.node_dir(tag);
        std::fs::create_dir_all(&dir)?;
        let log = log_file(&dir.join("node.log"))?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("node")
            .arg("--tag")
            .arg(tag)
            .arg("--gateway-url")
            .arg(format!("ws://127.0.0.1:{}/api/node/link", self.port))
            .arg("--data-dir")
            .arg(&dir)
            .arg("--parent-pid")
            .arg(std::process::id().to_string())
            .env("RUST_LOG", "debug")
            .env_remove("DKMS_JOIN_TOKEN")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(t) = join_token {
            cmd.env("DKMS_JOIN_TOKEN", t);
        }
        cmd.envs(env.iter().copied());
        let child = cmd
            .spawn()
            .with_context(|| format!("starting node {tag}"))?;
        self.nodes.insert(tag.to_owned(), child);
        Ok(())
    }

    /// SIGKILLs a node process.
    pub fn kill_node(&mut self, tag: &str) {
        if let Some(mut c) = self.nodes.remove(tag) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Restarts a node that has joined before, keeping its data.
    pub async fn restart_node(&mut self, tag: &str) -> Result<()> {
        self.restart_node_with(tag, &[]).await
    }

    /// Restarts a node with extra environment (for example `DKMS_TEST_MISBEHAVE`).
    pub async fn restart_node_with(&mut self, tag: &str, env: &[(&str, &str)]) -> Result<()> {
        self.kill_node(tag);
        self.wait_disconnected(tag, Duration::from_secs(10)).await?;
        self.spawn_node(tag, None, env)?;
        self.wait_connected(&[tag.to_owned()], Duration::from_secs(30))
            .await
    }

    /// Waits until the gateway reports every tag as connected.
    pub async fn wait_connected(&self, tags: &[String], timeout: Duration) -> Result<()> {
        self.wait_nodes(timeout, |connected| {
            tags.iter().all(|t| connected.contains(t))
        })
        .await
    }

    /// Waits until the gateway no longer reports `tag` as connected.
    pub async fn wait_disconnected(&self, tag: &str, timeout: Duration) -> Result<()> {
        self.wait_nodes(timeout, |connected| !connected.iter().any(|t| t == tag))
            .await
    }

    async fn wait_nodes(&self, timeout: Duration, ready: impl Fn(&[String]) -> bool) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(h) = self.client.health().await
                && ready(&h.connected_nodes)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("nodes did not reach the expected state within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every byte the gateway wrote: its log and its database (the SQLite files, or a
    /// dump of the MariaDB / PostgreSQL database made with the servers' dump tools).
    pub fn gateway_artifacts(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(self.dir.path())? {
            let p = entry?.path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with("gateway") && p.is_file() {
                out.extend(std::fs::read(&p)?);
            }
        }
        if let Some(db) = &self.db {
            let name = db
                .url
                .rsplit('/')
                .next()
                .unwrap_or("")
                .split('?')
                .next()
                .unwrap_or("");
            let dump = match self.backend {
                Backend::MySql => Command::new("mysqldump")
                    .args([
                        "-h",
                        "127.0.0.1",
                        "-u",
                        "root",
                        "--skip-extended-insert",
                        name,
                    ])
                    .output(),
                _ => Command::new("pg_dump")
                    .args(["-h", "127.0.0.1", "-U", "postgres", "--inserts", name])
                    .output(),
            }
            .context("running the database dump tool")?;
            if !dump.status.success() || dump.stdout.is_empty() {
                bail!(
                    "database dump failed: {}",
                    String::from_utf8_lossy(&dump.stderr)
                );
            }
            out.extend(dump.stdout);
        }
        Ok(out)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let tags: Vec<String> = self.nodes.keys().cloned().collect();
        for t in tags {
            self.kill_node(&t);
        }
        self.kill_gateway();
        if let Some(db) = self.db.take() {
            // Drop runs outside any runtime guarantee; use a private one on its own thread.
            let _ = std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    rt.block_on(db.drop_database());
                }
            })
            .join();
        }
    }
}
