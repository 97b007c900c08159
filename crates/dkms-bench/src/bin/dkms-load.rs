//! `dkms-load`: the hosted-keys load benchmark (issue 5). Starts a gateway and three
//! `dkms node` processes itself (so it knows their pids), puts thousands of 2-of-2 and
//! 2-of-3 keys in place through the gateway's `key/import`, then signs over random keys
//! at a fixed concurrency for a bounded time. Every signature is verified here with k256
//! against the public key of the key this process generated. It records throughput,
//! latency, the RSS of every process over the run, keys and bytes per node, and finally
//! measures key generation (DKG) throughput on a sample. Prints markdown tables; exits
//! non-zero if any signature failed or was wrong.
//!
//! `cargo build --release -p dkms-cli -p dkms-bench && target/release/dkms-load`

#![allow(clippy::print_stdout)]

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use dkms_client::{Client, ClientError, KeyGenRequest, KeyImportRequest, KeyParams, SignInfo};
use dkms_proto::ErrorCode;
use k256::ecdsa::signature::hazmat::PrehashVerifier;
use k256::ecdsa::{RecoveryId, Signature, VerifyingKey};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(about = "Load benchmark: thousands of hosted keys, sustained signing; markdown tables")]
struct Args {
    /// Hosted 2-of-2 keys, spread round-robin over the pairs node1+node2, node2+node3,
    /// node1+node3
    #[arg(long, default_value_t = 3000)]
    keys_2of2: usize,
    /// Hosted 2-of-3 keys on node1..node3
    #[arg(long, default_value_t = 3000)]
    keys_2of3: usize,
    /// Concurrent signing clients
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Length of the signing run; no request starts after it
    #[arg(long, default_value_t = 180)]
    seconds: u64,
    /// Key generations (DKG) per shape (2-of-2 and 2-of-3) in the keygen sample
    #[arg(long, default_value_t = 100)]
    keygens: usize,
    /// Concurrent key generations in the keygen sample
    #[arg(long, default_value_t = 2)]
    keygen_concurrency: usize,
    /// Concurrent imports while setting up the hosted keys
    #[arg(long, default_value_t = 16)]
    import_concurrency: usize,
    /// Seconds between two memory samples during the signing run
    #[arg(long, default_value_t = 10)]
    sample_secs: u64,
    /// Path of the `dkms` binary (default: next to this binary)
    #[arg(long)]
    dkms: Option<PathBuf>,
    /// Keep the working directory (databases, node stores, logs) and print its path
    #[arg(long)]
    keep: bool,
}

/// Gateway settings that bound the load; the defaults are `GatewayConfig::with_defaults`.
const GATEWAY_SETTINGS: [(&str, &str); 4] = [
    ("DKMS_MAX_OPEN_TASKS", "4096"),
    ("DKMS_MAX_RUNNING_SESSIONS", "64"),
    ("DKMS_SIGN_TIMEOUT_SECS", "30"),
    ("DKMS_KEYGEN_TIMEOUT_SECS", "180"),
];

const NODES: [&str; 3] = ["node1", "node2", "node3"];
const PAIRS: [[&str; 2]; 3] = [["node1", "node2"], ["node2", "node3"], ["node1", "node3"]];
const WAIT: Duration = Duration::from_secs(300);

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    let _ = getrandom::fill(&mut b);
    b
}

fn random_below(n: usize) -> usize {
    // The modulo bias over 2^64 is negligible for a few thousand keys.
    (u64::from_le_bytes(random_bytes::<8>()) % n.max(1) as u64) as usize
}

// ---- processes ----

/// The gateway and its nodes, killed on drop (before the working directory goes).
struct Stack {
    /// `None` when the directory is kept.
    _dir: Option<tempfile::TempDir>,
    root: PathBuf,
    gateway: Child,
    nodes: Vec<(String, Child)>,
    client: Client,
}

impl Drop for Stack {
    fn drop(&mut self) {
        for (_, c) in &mut self.nodes {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.gateway.kill();
        let _ = self.gateway.wait();
    }
}

impl Stack {
    fn node_dir(&self, tag: &str) -> PathBuf {
        self.root.join("nodes").join(tag)
    }

    /// (label, pid) of every process, gateway first.
    fn pids(&self) -> Vec<(String, u32)> {
        let mut v = vec![("gateway".to_owned(), self.gateway.id())];
        v.extend(self.nodes.iter().map(|(t, c)| (t.clone(), c.id())));
        v
    }

    /// Bytes of the gateway's SQLite database with its WAL.
    fn gateway_db_bytes(&self) -> u64 {
        ["gateway.db", "gateway.db-wal"]
            .iter()
            .map(|f| file_len(&self.root.join(f)))
            .sum()
    }

    fn node_store_bytes(&self, tag: &str) -> u64 {
        file_len(&self.node_dir(tag).join("node.redb"))
    }

    /// Stops the nodes with SIGTERM (their clean shutdown closes the store), so that their
    /// stores can be opened here.
    fn stop_nodes(&mut self) {
        for (_, c) in &mut self.nodes {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        for (_, c) in &mut self.nodes {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The node store's share table, as `dkms-node`'s store defines it (key id → format byte ‖
/// sealed share). If that layout changes, opening the table fails loudly here.
const SHARES: redb::TableDefinition<&[u8; 16], &[u8]> = redb::TableDefinition::new("shares");

/// What one stopped node's store holds, read with redb directly (nothing is unsealed).
#[derive(Default)]
struct Census {
    /// (shares, sum of stored record bytes) per shape: 2-of-2, 2-of-3; and of unknown keys.
    by_shape: [(u64, u64); 2],
    unknown: u64,
    file_bytes: u64,
    /// redb's own accounting of the share table: key + value bytes, index and metadata
    /// bytes, and bytes lost to fragmentation (redb allocates power-of-two pages).
    stored: u64,
    metadata: u64,
    fragmented: u64,
}

fn census(path: &Path, shapes: &std::collections::HashMap<[u8; 16], Shape>) -> Result<Census> {
    use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};
    let mut c = Census {
        file_bytes: file_len(path),
        ..Census::default()
    };
    let db = redb::Database::open(path).with_context(|| format!("opening {}", path.display()))?;
    let txn = db.begin_read()?;
    let table = txn.open_table(SHARES)?;
    for entry in table.iter()? {
        let (k, v) = entry?;
        match shapes.get(k.value()) {
            Some(shape) => {
                let slot = &mut c.by_shape[*shape as usize];
                slot.0 += 1;
                slot.1 += v.value().len() as u64;
            }
            None => c.unknown += 1,
        }
    }
    let stats = table.stats()?;
    c.stored = stats.stored_bytes();
    c.metadata = stats.metadata_bytes();
    c.fragmented = stats.fragmented_bytes();
    Ok(c)
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn log_file(path: &Path) -> Result<std::fs::File> {
    std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))
}

async fn start_stack(dkms: &Path, keep: bool) -> Result<Stack> {
    let dir = tempfile::Builder::new().prefix("dkms-load-").tempdir()?;
    let (dir, root) = if keep {
        (None, dir.keep())
    } else {
        let root = dir.path().to_path_buf();
        (Some(dir), root)
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let log = log_file(&root.join("gateway.log"))?;
    // The gateway inherits this process's environment, so DKMS_* settings pass through.
    let gateway = Command::new(dkms)
        .arg("gateway")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--database-url")
        .arg(format!("sqlite://{}", root.join("gateway.db").display()))
        .arg("--admin-token-file")
        .arg(root.join("admin.token"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {} gateway", dkms.display()))?;
    let mut stack = Stack {
        _dir: dir,
        root,
        gateway,
        nodes: Vec::new(),
        client: Client::new(&url, "probe")?,
    };
    if keep {
        eprintln!("working directory (kept): {}", stack.root.display());
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(token) = std::fs::read_to_string(stack.root.join("admin.token"))
            && stack.client.health().await.is_ok()
        {
            stack.client = Client::new(&url, token.trim())?;
            break;
        }
        if Instant::now() > deadline {
            bail!("the gateway did not come up; see its log");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for tag in NODES {
        stack.client.create_pod(tag).await?;
        let token = stack.client.join_token(tag).await?;
        let ndir = stack.node_dir(tag);
        std::fs::create_dir_all(&ndir)?;
        let log = log_file(&ndir.join("node.log"))?;
        let child = Command::new(dkms)
            .arg("node")
            .arg("--tag")
            .arg(tag)
            .arg("--gateway-url")
            .arg(format!("ws://127.0.0.1:{port}/api/node/link"))
            .arg("--data-dir")
            .arg(&ndir)
            .arg("--parent-pid")
            .arg(std::process::id().to_string())
            .env("RUST_LOG", "warn")
            .env("DKMS_JOIN_TOKEN", token)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting node {tag}"))?;
        stack.nodes.push((tag.to_owned(), child));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(h) = stack.client.health().await
            && NODES
                .iter()
                .all(|t| h.connected_nodes.iter().any(|c| c == t))
        {
            return Ok(stack);
        }
        if Instant::now() > deadline {
            bail!("the nodes did not connect; see their logs");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---- /proc ----

/// (VmRSS, VmHWM) of a process in KiB.
fn rss_kib(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("no {name} in /proc/{pid}/status"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// User + system CPU time of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces; the fields after it are space separated, starting
    // with field 3 (state), so utime (14) and stime (15) are at 11 and 12.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("unexpected /proc/{pid}/stat"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| -> Result<u64> {
        f.get(i)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("unexpected /proc/{pid}/stat"))
    };
    Ok(get(11)? + get(12)?)
}

fn clock_ticks_per_sec() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

#[derive(Clone)]
struct MemSample {
    at: Duration,
    signatures: usize,
    /// (VmRSS, VmHWM) in KiB per process, in `Stack::pids` order.
    rss: Vec<(u64, u64)>,
}

fn sample(stack: &Stack, at: Duration, signatures: usize) -> Result<MemSample> {
    Ok(MemSample {
        at,
        signatures,
        rss: stack
            .pids()
            .iter()
            .map(|(_, pid)| rss_kib(*pid))
            .collect::<Result<_>>()?,
    })
}

// ---- keys ----

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    TwoOfTwo = 0,
    TwoOfThree = 1,
}

impl Shape {
    fn label(self) -> &'static str {
        match self {
            Shape::TwoOfTwo => "2-of-2",
            Shape::TwoOfThree => "2-of-3",
        }
    }

    /// The participants of the `i`-th key of this shape.
    fn participants(self, i: usize) -> Vec<String> {
        let tags: &[&str] = match self {
            Shape::TwoOfTwo => &PAIRS[i % PAIRS.len()],
            Shape::TwoOfThree => &NODES,
        };
        tags.iter().map(|s| s.to_string()).collect()
    }
}

struct HostedKey {
    id: String,
    shape: Shape,
    /// Derived here from the secret key this process generated, not taken from the gateway.
    vk: VerifyingKey,
}

fn is_overloaded(e: &ClientError) -> bool {
    e.error_code() == Some(ErrorCode::Overloaded)
}

/// Runs `f` until it is not refused with `OVERLOADED` (503); the gateway asks for a retry
/// after 1 s (`Retry-After: 1`), which the SDK does not expose, so 1 s is waited.
async fn admitted<T, F, Fut>(retries: &AtomicUsize, mut f: F) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    loop {
        match f().await {
            Err(e) if is_overloaded(&e) => {
                retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            other => return other,
        }
    }
}

/// Imports one fresh random key with the gateway split and waits until it is FINISHED.
async fn import_one(
    c: &Client,
    shape: Shape,
    i: usize,
    retries: &AtomicUsize,
) -> Result<HostedKey> {
    let sk = loop {
        if let Ok(sk) = k256::SecretKey::from_slice(&random_bytes::<32>()) {
            break sk;
        }
    };
    let public_hex = hex::encode(sk.public_key().to_sec1_bytes());
    let vk = VerifyingKey::from(&sk.public_key());
    let pem = sk
        .to_sec1_pem(Default::default())
        .map_err(|e| anyhow!("encoding a PEM: {e}"))?;
    let participants = shape.participants(i);
    let req = KeyImportRequest {
        key_params: KeyParams {
            key_type: "ECDSA_K1".into(),
            length: None,
        },
        total_shares: participants.len() as i64,
        service_participants: participants,
        threshold: 2,
        private_key: pem.to_string(),
        password: None,
        exportable: false,
    };
    drop(pem);
    let resp = admitted(retries, || c.import_key(&req)).await?;
    drop(req);
    let k = c.wait_key(&resp.key_id, WAIT).await?;
    if k.status != "FINISHED" {
        bail!(
            "import of {} ended {}: {:?}",
            k.key_id,
            k.status,
            k.error_message
        );
    }
    if k.public_key_hex.as_deref() != Some(public_hex.as_str()) {
        bail!(
            "the gateway reports another public key for imported key {}",
            k.key_id
        );
    }
    Ok(HostedKey {
        id: resp.key_id,
        shape,
        vk,
    })
}

/// Imports `n` keys of `shape` at `concurrency`; returns the keys and the wall time.
async fn import_many(
    c: &Client,
    shape: Shape,
    n: usize,
    concurrency: usize,
    retries: &Arc<AtomicUsize>,
) -> Result<(Vec<HostedKey>, Duration)> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (c, next, retries) = (c.clone(), next.clone(), retries.clone());
        workers.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(out);
                }
                out.push(import_one(&c, shape, i, &retries).await?);
                if (i + 1) % 500 == 0 {
                    eprintln!("  {} {} keys imported", i + 1, shape.label());
                }
            }
        }));
    }
    let mut keys = Vec::with_capacity(n);
    for w in workers {
        keys.extend(w.await??);
    }
    Ok((keys, started.elapsed()))
}

// ---- signing ----

/// Why a signature does not count as good.
enum Bad {
    /// The request or the task failed.
    Failed(String),
    /// A signature came back but does not verify under the key.
    Wrong(String),
}

/// Checks a returned signature with k256 alone: (r, s) low-S and valid under the key this
/// process generated, `v` recovers that key, and the `r`, `s` fields agree with `sign`.
fn verify(key: &HostedKey, digest: &[u8; 32], sig: &SignInfo) -> Result<(), Bad> {
    if sig.status != "FINISHED" {
        return Err(Bad::Failed(format!(
            "{} ended {}: {:?}",
            sig.instance_id, sig.status, sig.error_message
        )));
    }
    let wrong = |m: &str| Bad::Wrong(format!("{}: {m}", sig.instance_id));
    if sig.key_id != key.id || sig.digest_hex != hex::encode(digest) {
        return Err(wrong("answer for another key or digest"));
    }
    let raw = sig
        .sign
        .as_deref()
        .and_then(|h| hex::decode(h).ok())
        .filter(|r| r.len() == 65)
        .ok_or_else(|| wrong("sign is not 65 bytes of hex"))?;
    if sig.r.as_deref() != Some(hex::encode(&raw[..32]).as_str())
        || sig.s.as_deref() != Some(hex::encode(&raw[32..64]).as_str())
        || sig.v != Some(raw[64])
    {
        return Err(wrong("r, s, v disagree with sign"));
    }
    let s = Signature::from_slice(&raw[..64]).map_err(|_| wrong("(r, s) out of range"))?;
    if s.normalize_s() != s {
        return Err(wrong("high-S signature"));
    }
    key.vk
        .verify_prehash(digest, &s)
        .map_err(|_| wrong("does not verify under the key"))?;
    let recid = RecoveryId::from_byte(raw[64]).ok_or_else(|| wrong("bad recovery id"))?;
    match VerifyingKey::recover_from_prehash(digest, &s, recid) {
        Ok(k) if k == key.vk => Ok(()),
        _ => Err(wrong("v does not recover the key")),
    }
}

#[derive(Default)]
struct SignTally {
    lat_2of2: Vec<Duration>,
    lat_2of3: Vec<Duration>,
    failed: usize,
    wrong: usize,
    /// The first few failure messages, for the report.
    errors: Vec<String>,
}

async fn sign_run(
    stack: &Stack,
    keys: Arc<Vec<HostedKey>>,
    concurrency: usize,
    window: Duration,
    sample_every: Duration,
    retries: &Arc<AtomicUsize>,
) -> Result<(SignTally, Duration, Vec<MemSample>, Vec<u64>)> {
    let done = Arc::new(AtomicUsize::new(0));
    let cpu_before: Vec<u64> = stack
        .pids()
        .iter()
        .map(|(_, p)| cpu_ticks(*p))
        .collect::<Result<_>>()?;
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (c, keys, done, retries) = (
            stack.client.clone(),
            keys.clone(),
            done.clone(),
            retries.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut t = SignTally::default();
            while started.elapsed() < window {
                let key = &keys[random_below(keys.len())];
                let digest = random_bytes::<32>();
                let d = hex::encode(digest);
                let s = Instant::now();
                let res = admitted(&retries, || c.sign(&key.id, &d, Duration::from_secs(60)))
                    .await
                    .map_err(|e| Bad::Failed(format!("{}: {e}", key.id)))
                    .and_then(|sig| verify(key, &digest, &sig));
                let took = s.elapsed();
                match res {
                    Ok(()) => {
                        match key.shape {
                            Shape::TwoOfTwo => t.lat_2of2.push(took),
                            Shape::TwoOfThree => t.lat_2of3.push(took),
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(b) => {
                        let msg = match b {
                            Bad::Failed(m) => {
                                t.failed += 1;
                                format!("failed: {m}")
                            }
                            Bad::Wrong(m) => {
                                t.wrong += 1;
                                format!("wrong: {m}")
                            }
                        };
                        if t.errors.len() < 5 {
                            t.errors.push(msg);
                        }
                    }
                }
            }
            t
        }));
    }
    let mut samples = vec![sample(stack, Duration::ZERO, 0)?];
    let mut next_sample = sample_every;
    while !workers.iter().all(|w| w.is_finished()) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if started.elapsed() >= next_sample && started.elapsed() < window {
            samples.push(sample(
                stack,
                started.elapsed(),
                done.load(Ordering::Relaxed),
            )?);
            next_sample += sample_every;
        }
    }
    let mut all = SignTally::default();
    for w in workers {
        let t = w.await?;
        all.lat_2of2.extend(t.lat_2of2);
        all.lat_2of3.extend(t.lat_2of3);
        all.failed += t.failed;
        all.wrong += t.wrong;
        for e in t.errors {
            if all.errors.len() < 10 {
                all.errors.push(e);
            }
        }
    }
    let elapsed = started.elapsed();
    samples.push(sample(stack, elapsed, done.load(Ordering::Relaxed))?);
    let cpu_after: Vec<u64> = stack
        .pids()
        .iter()
        .map(|(_, p)| cpu_ticks(*p))
        .collect::<Result<_>>()?;
    let cpu = cpu_after
        .iter()
        .zip(&cpu_before)
        .map(|(a, b)| a.saturating_sub(*b))
        .collect();
    Ok((all, elapsed, samples, cpu))
}

// ---- key generation ----

struct KeygenResult {
    shape: Shape,
    ids: Vec<String>,
    latencies: Vec<Duration>,
    failed: usize,
    wall: Duration,
    errors: Vec<String>,
}

async fn keygen_sample(
    c: &Client,
    shape: Shape,
    n: usize,
    concurrency: usize,
    retries: &Arc<AtomicUsize>,
) -> Result<KeygenResult> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (c, next, retries) = (c.clone(), next.clone(), retries.clone());
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut ids = Vec::new();
            let mut errors = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return (lat, ids, errors);
                }
                let participants = shape.participants(i);
                let req = KeyGenRequest {
                    key_params: KeyParams {
                        key_type: "ECDSA_K1".into(),
                        length: None,
                    },
                    total_shares: Some(participants.len() as i64),
                    service_participants: participants,
                    threshold: Some(2),
                    node_group: None,
                    exportable: false,
                };
                let s = Instant::now();
                let res = async {
                    let id = admitted(&retries, || c.generate_key(&req)).await?;
                    let k = c.wait_key(&id, WAIT).await?;
                    if k.status != "FINISHED" {
                        bail!("keygen {id} ended {}: {:?}", k.status, k.error_message);
                    }
                    Ok(id)
                }
                .await;
                match res {
                    Ok(id) => {
                        lat.push(s.elapsed());
                        ids.push(id);
                    }
                    Err(e) => errors.push(format!("{e:#}")),
                }
            }
        }));
    }
    let mut out = KeygenResult {
        shape,
        ids: Vec::new(),
        latencies: Vec::new(),
        failed: 0,
        wall: Duration::ZERO,
        errors: Vec::new(),
    };
    for w in workers {
        let (lat, ids, errors) = w.await?;
        out.latencies.extend(lat);
        out.ids.extend(ids);
        out.failed += errors.len();
        out.errors.extend(errors.into_iter().take(3));
    }
    out.wall = started.elapsed();
    out.latencies.sort();
    Ok(out)
}

// ---- output ----

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn mib_kib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Signed difference in MiB between two KiB figures.
fn delta_kib(from: u64, to: u64) -> String {
    format!("{:+.1} MiB", (to as f64 - from as f64) / 1024.0)
}

fn latency_row(label: &str, lat: &mut [Duration], elapsed: Duration) -> String {
    lat.sort();
    format!(
        "| {label} | {} | {:.1}/s | {} | {} | {} |",
        lat.len(),
        lat.len() as f64 / elapsed.as_secs_f64(),
        ms(percentile(lat, 0.50)),
        ms(percentile(lat, 0.99)),
        ms(lat.last().copied().unwrap_or_default()),
    )
}

#[tokio::main]
async fn main() -> Result<ExitCode> {
    let args = Args::parse();
    let dkms = match &args.dkms {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .ok_or_else(|| anyhow!("no parent directory"))?
            .join("dkms"),
    };
    let load_at_start = loadavg();
    eprintln!("starting a gateway and three nodes ...");
    let mut stack = start_stack(&dkms, args.keep).await?;
    let c = stack.client.clone();
    let pids = stack.pids();
    let idle = sample(&stack, Duration::ZERO, 0)?;
    let retries = Arc::new(AtomicUsize::new(0));

    eprintln!("importing {} 2-of-3 keys ...", args.keys_2of3);
    let (mut keys, t23) = import_many(
        &c,
        Shape::TwoOfThree,
        args.keys_2of3,
        args.import_concurrency,
        &retries,
    )
    .await?;
    eprintln!("importing {} 2-of-2 keys ...", args.keys_2of2);
    let (keys22, t22) = import_many(
        &c,
        Shape::TwoOfTwo,
        args.keys_2of2,
        args.import_concurrency,
        &retries,
    )
    .await?;
    keys.extend(keys22);
    let store_after_setup: Vec<u64> = NODES.iter().map(|t| stack.node_store_bytes(t)).collect();
    let import_retries = retries.swap(0, Ordering::Relaxed);
    let db_after_setup = stack.gateway_db_bytes();
    let after_setup = sample(&stack, Duration::ZERO, 0)?;
    let hosted: Vec<(usize, usize)> = NODES
        .iter()
        .map(|tag| {
            let on = |shape: Shape| {
                (0..match shape {
                    Shape::TwoOfTwo => args.keys_2of2,
                    Shape::TwoOfThree => args.keys_2of3,
                })
                    .filter(|i| shape.participants(*i).iter().any(|p| p == tag))
                    .count()
            };
            (on(Shape::TwoOfTwo), on(Shape::TwoOfThree))
        })
        .collect();

    eprintln!(
        "signing over {} random keys at concurrency {} for {} s ...",
        keys.len(),
        args.concurrency,
        args.seconds
    );
    let keys = Arc::new(keys);
    let own_cpu_before = cpu_ticks(std::process::id())?;
    let (mut tally, elapsed, samples, cpu) = sign_run(
        &stack,
        keys.clone(),
        args.concurrency,
        Duration::from_secs(args.seconds),
        Duration::from_secs(args.sample_secs.max(1)),
        &retries,
    )
    .await?;
    let own_cpu = cpu_ticks(std::process::id())?.saturating_sub(own_cpu_before);
    let sign_retries = retries.swap(0, Ordering::Relaxed);
    let db_after_sign = stack.gateway_db_bytes();
    let load_after_sign = loadavg();

    let mut keygens = Vec::new();
    if args.keygens > 0 {
        for shape in [Shape::TwoOfTwo, Shape::TwoOfThree] {
            eprintln!(
                "key generation sample: {} {} DKGs at concurrency {} ...",
                args.keygens,
                shape.label(),
                args.keygen_concurrency
            );
            keygens.push(
                keygen_sample(&c, shape, args.keygens, args.keygen_concurrency, &retries).await?,
            );
        }
    }
    let keygen_retries = retries.load(Ordering::Relaxed);
    let after_keygen = sample(&stack, Duration::ZERO, 0)?;
    let load_at_end = loadavg();

    // Count what each node really stores, from its stopped store.
    let mut shapes = std::collections::HashMap::new();
    let ids = keys.iter().map(|k| (k.id.as_str(), k.shape)).chain(
        keygens
            .iter()
            .flat_map(|k| k.ids.iter().map(move |id| (id.as_str(), k.shape))),
    );
    for (id, shape) in ids {
        shapes.insert(*uuid::Uuid::parse_str(id)?.as_bytes(), shape);
    }
    stack.stop_nodes();
    let censuses: Vec<Census> = NODES
        .iter()
        .map(|t| census(&stack.node_dir(t).join("node.redb"), &shapes))
        .collect::<Result<_>>()?;
    drop(stack);

    // ---- tables ----
    let tick = clock_ticks_per_sec() as f64;
    println!(
        "Hosted keys: {} 2-of-2 (round-robin over node1+node2, node2+node3, node1+node3) and {} \
         2-of-3 (node1..node3), imported with the gateway split (`key/import`) at concurrency \
         {}. Gateway on SQLite, all processes on loopback, logs at `warn`. Gateway settings: {}. \
         Load average (1/5/15 min): {load_at_start} at start, {load_after_sign} after signing, \
         {load_at_end} at the end.",
        args.keys_2of2,
        args.keys_2of3,
        args.import_concurrency,
        GATEWAY_SETTINGS
            .iter()
            .map(|(k, d)| match std::env::var(k) {
                Ok(v) => format!("{k}={v} (set)"),
                Err(_) => format!("{k}={d} (default)"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!();
    println!("| setup | 2-of-2 | 2-of-3 |");
    println!("|---|---|---|");
    println!(
        "| import wall time | {:.1} s ({:.1} keys/s) | {:.1} s ({:.1} keys/s) |",
        t22.as_secs_f64(),
        args.keys_2of2 as f64 / t22.as_secs_f64().max(1e-9),
        t23.as_secs_f64(),
        args.keys_2of3 as f64 / t23.as_secs_f64().max(1e-9),
    );
    println!("| import requests refused with 503 and retried | {import_retries} (both) | |");
    println!();

    println!(
        "| node | hosted 2-of-2 | hosted 2-of-3 | shares in the store at the end (2-of-2 + \
         2-of-3, with the keygen sample) | sealed record, 2-of-2 (mean) | sealed record, 2-of-3 \
         (mean) | node.redb after setup | node.redb at the end | file bytes per share | \
         redb share table: stored / index+metadata / fragmented |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mean = |(n, bytes): (u64, u64)| {
        bytes
            .checked_div(n)
            .map_or_else(|| "–".to_owned(), |m| format!("{m} B"))
    };
    for (i, tag) in NODES.iter().enumerate() {
        let (n22, n23) = hosted[i];
        let c = &censuses[i];
        let shares = c.by_shape[0].0 + c.by_shape[1].0 + c.unknown;
        let unknown = if c.unknown > 0 {
            format!(" + {} unknown", c.unknown)
        } else {
            String::new()
        };
        println!(
            "| {tag} | {n22} | {n23} | {} + {}{unknown} | {} | {} | {} | {} | {} B | {} / {} / {} |",
            c.by_shape[0].0,
            c.by_shape[1].0,
            mean(c.by_shape[0]),
            mean(c.by_shape[1]),
            mib(store_after_setup[i]),
            mib(c.file_bytes),
            c.file_bytes / shares.max(1),
            mib(c.stored),
            mib(c.metadata),
            mib(c.fragmented),
        );
    }
    println!();
    println!(
        "Gateway database (SQLite + WAL) after setup: {} ({} B per hosted key, with the \
         import tasks and audit entries).",
        mib(db_after_setup),
        db_after_setup / (args.keys_2of2 + args.keys_2of3).max(1) as u64
    );
    println!();

    let total = tally.lat_2of2.len() + tally.lat_2of3.len();
    let mut all: Vec<Duration> = tally
        .lat_2of2
        .iter()
        .chain(&tally.lat_2of3)
        .copied()
        .collect();
    println!(
        "Signing: {} clients, each signing back to back over keys drawn uniformly at random \
         from all {} hosted keys, for {} s (in-flight requests finish; measured {:.1} s). \
         Good signatures: {total}; failed: {}; wrong: {}; requests refused with 503 and \
         retried: {sign_retries}.",
        args.concurrency,
        keys.len(),
        args.seconds,
        elapsed.as_secs_f64(),
        tally.failed,
        tally.wrong,
    );
    println!();
    println!("| signing | good signatures | throughput | p50 | p99 | max |");
    println!("|---|---|---|---|---|---|");
    println!("{}", latency_row("all keys", &mut all, elapsed));
    println!(
        "{}",
        latency_row("on 2-of-2 keys", &mut tally.lat_2of2, elapsed)
    );
    println!(
        "{}",
        latency_row("on 2-of-3 keys", &mut tally.lat_2of3, elapsed)
    );
    println!();

    println!(
        "| process | RSS idle | RSS after setup | RSS at signing start | RSS at end of signing | \
         change during signing | peak (VmHWM) at end of signing | CPU during signing | \
         CPU per signature |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let (first, last) = (samples.first(), samples.last());
    for (i, (label, _)) in pids.iter().enumerate() {
        let start = first.map_or(0, |s| s.rss[i].0);
        let end = last.map_or(0, |s| s.rss[i].0);
        let cpu_s = cpu.get(i).copied().unwrap_or(0) as f64 / tick;
        println!(
            "| {label} | {} | {} | {} | {} | {} | {} | {:.1} s | {:.2} ms |",
            mib_kib(idle.rss[i].0),
            mib_kib(after_setup.rss[i].0),
            mib_kib(start),
            mib_kib(end),
            delta_kib(start, end),
            mib_kib(last.map_or(0, |s| s.rss[i].1)),
            cpu_s,
            cpu_s * 1000.0 / total.max(1) as f64,
        );
    }
    println!();
    println!(
        "The benchmark client itself ({} async clients, HTTP, two k256 checks per signature) \
         used {:.1} s of CPU during signing, on the same machine.",
        args.concurrency,
        own_cpu as f64 / tick
    );
    println!();
    let mut header = "| t | signatures |".to_owned();
    let mut rule = "|---|---|".to_owned();
    for (label, _) in &pids {
        header.push_str(&format!(" {label} RSS |"));
        rule.push_str("---|");
    }
    println!("{header}");
    println!("{rule}");
    for s in &samples {
        let mut row = format!("| {:.0} s | {} |", s.at.as_secs_f64(), s.signatures);
        for (rss, _) in &s.rss {
            row.push_str(&format!(" {} |", mib_kib(*rss)));
        }
        println!("{row}");
    }
    println!();
    println!(
        "Gateway database (SQLite + WAL): {} after setup, {} after signing.",
        mib(db_after_setup),
        mib(db_after_sign)
    );
    println!();

    let mut keygen_failed = 0;
    if !keygens.is_empty() {
        println!(
            "| key generation (DKG) sample | keys | concurrency | wall time | keys/s | p50 | p99 | failed |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        for k in &keygens {
            keygen_failed += k.failed;
            println!(
                "| {} | {} | {} | {:.1} s | {:.2} | {} | {} | {} |",
                k.shape.label(),
                k.latencies.len(),
                args.keygen_concurrency,
                k.wall.as_secs_f64(),
                k.latencies.len() as f64 / k.wall.as_secs_f64().max(1e-9),
                ms(percentile(&k.latencies, 0.50)),
                ms(percentile(&k.latencies, 0.99)),
                k.failed,
            );
        }
        println!();
        println!("Key generation requests refused with 503 and retried: {keygen_retries}.");
        let rss: Vec<String> = pids
            .iter()
            .enumerate()
            .map(|(i, (l, _))| {
                format!(
                    "{l} {} (peak {})",
                    mib_kib(after_keygen.rss[i].0),
                    mib_kib(after_keygen.rss[i].1)
                )
            })
            .collect();
        println!("RSS after the key generation sample: {}.", rss.join(", "));
    }

    let errors: Vec<&String> = tally
        .errors
        .iter()
        .chain(keygens.iter().flat_map(|k| &k.errors))
        .collect();
    if !errors.is_empty() {
        eprintln!("first errors:");
        for e in errors {
            eprintln!("  {e}");
        }
    }
    if tally.failed + tally.wrong + keygen_failed > 0 {
        eprintln!(
            "FAIL: {} failed and {} wrong signatures, {} failed key generations",
            tally.failed, tally.wrong, keygen_failed
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use k256::ecdsa::SigningKey;

    fn key_and_signature(digest: &[u8; 32]) -> (HostedKey, SignInfo) {
        let sk = SigningKey::from_slice(&[7u8; 32]).unwrap();
        let (sig, recid) = sk.sign_prehash_recoverable(digest);
        assert_eq!(sig.normalize_s(), sig, "k256 signs low-S");
        let mut raw = sig.to_bytes().to_vec();
        raw.push(recid.to_byte());
        let key = HostedKey {
            id: "0f6b2a52-5d0b-4c8e-9d39-3b0e8f1d2c11".into(),
            shape: Shape::TwoOfThree,
            vk: *sk.verifying_key(),
        };
        let info = SignInfo {
            instance_id: "i".into(),
            key_id: key.id.clone(),
            digest_hex: hex::encode(digest),
            status: "FINISHED".into(),
            sign: Some(hex::encode(&raw)),
            r: Some(hex::encode(&raw[..32])),
            s: Some(hex::encode(&raw[32..64])),
            v: Some(raw[64]),
            der: None,
            error_message: None,
            error_code: None,
            signers: vec![],
            derivation_path: None,
            signed_tx: None,
            tx_hash: None,
            created_at: String::new(),
        };
        (key, info)
    }

    #[test]
    fn verify_accepts_a_good_signature_and_counts_every_defect_as_wrong() {
        let digest = [3u8; 32];
        let (key, good) = key_and_signature(&digest);
        assert!(verify(&key, &digest, &good).is_ok());

        // Another digest, another key, a flipped recovery id, a high-S twin, a torn field.
        assert!(matches!(
            verify(&key, &[4u8; 32], &good),
            Err(Bad::Wrong(_))
        ));
        let other = HostedKey {
            id: key.id.clone(),
            shape: key.shape,
            vk: *SigningKey::from_slice(&[8u8; 32]).unwrap().verifying_key(),
        };
        assert!(matches!(verify(&other, &digest, &good), Err(Bad::Wrong(_))));
        let mut flipped = good.clone();
        let mut raw = hex::decode(good.sign.as_deref().unwrap()).unwrap();
        raw[64] ^= 1;
        flipped.sign = Some(hex::encode(&raw));
        flipped.v = Some(raw[64]);
        assert!(matches!(
            verify(&key, &digest, &flipped),
            Err(Bad::Wrong(_))
        ));
        let s = Signature::from_slice(&raw[..64]).unwrap();
        let high = Signature::from_scalars(s.r().to_bytes(), (-*s.s()).to_bytes()).unwrap();
        let mut high_raw = high.to_bytes().to_vec();
        high_raw.push(raw[64] ^ 1);
        let mut high_s = good.clone();
        high_s.sign = Some(hex::encode(&high_raw));
        high_s.s = Some(hex::encode(&high_raw[32..64]));
        high_s.v = Some(high_raw[64]);
        assert!(matches!(verify(&key, &digest, &high_s), Err(Bad::Wrong(_))));
        let mut torn = good.clone();
        torn.r = Some(hex::encode([0u8; 32]));
        assert!(matches!(verify(&key, &digest, &torn), Err(Bad::Wrong(_))));

        let mut failed = good;
        failed.status = "FAILED".into();
        assert!(matches!(
            verify(&key, &digest, &failed),
            Err(Bad::Failed(_))
        ));
    }
}
