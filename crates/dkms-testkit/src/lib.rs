//! Starts a real dkms stack for tests: one or more `dkms gateway` processes sharing a
//! database and `dkms node` processes linked to every gateway, on loopback, each test with
//! its own directory and database, and hands the test a ready client. Gateways and nodes
//! can be killed and restarted to exercise failures.

use anyhow::{Context, Result, anyhow, bail};
use dkms_client::Client;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use dkms_client;
use dkms_store::Backend;
use dkms_store::testdb::{self, TestDb};

/// The lease of gateways started by the test kit: short, so that the tasks of a killed
/// gateway end within seconds (a test may set its own `DKMS_GATEWAY_LEASE_SECS`).
pub const TEST_LEASE_SECS: u64 = 3;

/// One gateway process of a stack.
struct GatewayProc {
    port: u16,
    child: Option<Child>,
}

/// Running gateways with their nodes. Everything is killed on drop. `client`, `url` and
/// `token` are those of the first gateway.
pub struct Stack {
    pub client: Client,
    pub url: String,
    pub token: String,
    pub dir: tempfile::TempDir,
    bin: PathBuf,
    gateways: Vec<GatewayProc>,
    gateway_env: Vec<(String, String)>,
    /// The gateway's database: a SQLite file in `dir`, or a fresh database on the MariaDB
    /// or PostgreSQL server when `DKMS_TEST_DB` says so.
    pub db_url: String,
    pub backend: Backend,
    db: Option<TestDb>,
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
        Self::start_cluster(bin, nodes, 1, gateway_env).await
    }

    /// `gateways` gateway processes on one database (a fresh one on the server that
    /// `DKMS_TEST_DB` names; else SQLite for one gateway and MariaDB for several) and
    /// `nodes` nodes, each linked to every gateway.
    pub async fn start_cluster(
        bin: impl AsRef<Path>,
        nodes: usize,
        gateways: usize,
        gateway_env: &[(&str, &str)],
    ) -> Result<Stack> {
        let dir = tempfile::Builder::new().prefix("dkms-test-").tempdir()?;
        let mut backend = testdb::backend_from_env()?;
        if gateways > 1 && backend == Backend::Sqlite {
            // SQLite serves one process; gateways that share a database share a server.
            backend = Backend::MySql;
        }
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
            gateways: Vec::new(),
            nodes: BTreeMap::new(),
        };
        for _ in 0..gateways.max(1) {
            stack.gateways.push(GatewayProc {
                port: free_port()?,
                child: None,
            });
        }
        for i in 0..stack.gateways.len() {
            stack.start_gateway_at(i).await?;
        }
        let tags: Vec<String> = (1..=nodes).map(|i| format!("node{i}")).collect();
        for t in &tags {
            stack.add_node(t).await?;
        }
        for i in 0..stack.gateways.len() {
            stack
                .wait_connected_at(i, &tags, Duration::from_secs(30))
                .await?;
        }
        Ok(stack)
    }

    /// The first gateway's log.
    pub fn gateway_log(&self) -> PathBuf {
        self.gateway_log_at(0)
    }

    /// The log of gateway `i` (`gateway.log`, `gateway-2.log`, …).
    pub fn gateway_log_at(&self, i: usize) -> PathBuf {
        match i {
            0 => self.dir.path().join("gateway.log"),
            _ => self.dir.path().join(format!("gateway-{}.log", i + 1)),
        }
    }

    /// The REST URL of gateway `i`.
    pub fn gateway_url(&self, i: usize) -> String {
        let port = self.gateways.get(i).map_or(0, |g| g.port);
        format!("http://127.0.0.1:{port}")
    }

    /// An admin client of gateway `i`.
    pub fn client_at(&self, i: usize) -> Result<Client> {
        Ok(Client::new(&self.gateway_url(i), &self.token)?)
    }

    pub fn node_dir(&self, tag: &str) -> PathBuf {
        self.dir.path().join("nodes").join(tag)
    }

    /// (Re)starts the first gateway process on its port, with the same database.
    pub async fn start_gateway(&mut self) -> Result<()> {
        self.start_gateway_at(0).await
    }

    /// (Re)starts gateway `i` on its port, with the same database. The first gateway to
    /// start on an empty database writes the bootstrap admin token; the others find an
    /// API key already there and use the same token.
    pub async fn start_gateway_at(&mut self, i: usize) -> Result<()> {
        let port = self
            .gateways
            .get(i)
            .map(|g| g.port)
            .ok_or_else(|| anyhow!("no gateway {i}"))?;
        let log = log_file(&self.gateway_log_at(i))?;
        let child = Command::new(&self.bin)
            .arg("gateway")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--database-url")
            .arg(&self.db_url)
            .arg("--admin-token-file")
            .arg(self.dir.path().join("admin.token"))
            .env("RUST_LOG", "debug,sqlx=warn,hyper=info,tungstenite=info")
            .env("DKMS_GATEWAY_LEASE_SECS", TEST_LEASE_SECS.to_string())
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
        if let Some(g) = self.gateways.get_mut(i) {
            g.child = Some(child);
        }
        let url = self.gateway_url(i);
        let deadline = Instant::now() + Duration::from_secs(30);
        let token_file = self.dir.path().join("admin.token");
        loop {
            if let (Ok(token), Ok(c)) = (
                std::fs::read_to_string(&token_file),
                Client::new(&url, "probe"),
            ) && c.health().await.is_ok()
            {
                if i == 0 {
                    self.url = url;
                    self.token = token.trim().to_owned();
                    self.client = Client::new(&self.url, &self.token)?;
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "gateway {i} did not come up; log:\n{}",
                    std::fs::read_to_string(self.gateway_log_at(i)).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILLs the first gateway.
    pub fn kill_gateway(&mut self) {
        self.kill_gateway_at(0);
    }

    /// SIGKILLs gateway `i`.
    pub fn kill_gateway_at(&mut self, i: usize) {
        if let Some(mut c) = self.gateways.get_mut(i).and_then(|g| g.child.take()) {
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
        let links: Vec<String> = self
            .gateways
            .iter()
            .map(|g| format!("ws://127.0.0.1:{}/api/node/link", g.port))
            .collect();
        let mut cmd = Command::new(&self.bin);
        cmd.arg("node")
            .arg("--tag")
            .arg(tag)
            .arg("--gateway-url")
            .arg(links.join(","))
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

    /// Waits until the first gateway reports every tag as connected.
    pub async fn wait_connected(&self, tags: &[String], timeout: Duration) -> Result<()> {
        self.wait_connected_at(0, tags, timeout).await
    }

    /// Waits until gateway `i` reports every tag as connected.
    pub async fn wait_connected_at(
        &self,
        i: usize,
        tags: &[String],
        timeout: Duration,
    ) -> Result<()> {
        self.wait_nodes(i, timeout, |connected| {
            tags.iter().all(|t| connected.contains(t))
        })
        .await
    }

    /// Waits until the first gateway no longer reports `tag` as connected.
    pub async fn wait_disconnected(&self, tag: &str, timeout: Duration) -> Result<()> {
        self.wait_nodes(0, timeout, |connected| !connected.iter().any(|t| t == tag))
            .await
    }

    async fn wait_nodes(
        &self,
        i: usize,
        timeout: Duration,
        ready: impl Fn(&[String]) -> bool,
    ) -> Result<()> {
        let client = Client::new(&self.gateway_url(i), "probe")?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(h) = client.health().await
                && ready(&h.connected_nodes)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                let seen = client.health().await.map(|h| h.connected_nodes);
                bail!(
                    "nodes did not reach the expected state on gateway {i} within {timeout:?} \
                     (connected: {seen:?})"
                );
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
        for i in 0..self.gateways.len() {
            self.kill_gateway_at(i);
        }
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
