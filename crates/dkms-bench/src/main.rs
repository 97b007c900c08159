//! `dkms-bench`: measures the DKLs23 protocol in process (all parties in one process,
//! no network, no sealing) and the same work end to end through `dkms dev` (gateway,
//! three node processes, HPKE envelopes, relay, SQLite tasks), and prints one table.
//!
//! Build and run with release settings:
//! `cargo build --release -p dkms-cli -p dkms-bench && target/release/dkms-bench`

#![allow(clippy::print_stdout)]

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use dkms_client::{Client, KeyGenRequest, KeyParams};
use dkms_mpc::local::run_local;
use dkms_mpc::session_id::{SessionKind, session_id};
use dkms_mpc::{
    Curve, KeyShare, KeygenConfig, PartyIndex, Session, SessionOutput, ShareParticipant,
    SignConfig, envelope::EncryptionKeypair, keygen, sign,
};
use dkms_proto::NodeTag;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(about = "Raw DKLs23 versus end-to-end dkms benchmark; prints a markdown table")]
struct Args {
    /// Key generations per configuration (raw and end to end)
    #[arg(long, default_value_t = 3)]
    keygens: usize,
    /// Signatures per party-count in the raw single-thread run
    #[arg(long, default_value_t = 200)]
    raw_signs: usize,
    /// Seconds of each throughput measurement
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Path of the `dkms` binary (default: next to this binary)
    #[arg(long)]
    dkms: Option<std::path::PathBuf>,
}

fn participants(n: u8) -> Result<Vec<ShareParticipant>> {
    (1..=n)
        .map(|i| {
            Ok(ShareParticipant {
                tag: format!("node{i}").parse()?,
                encryption_key: EncryptionKeypair::from_seed(&[i; 32]).public_key(),
            })
        })
        .collect()
}

fn random32() -> [u8; 32] {
    let mut b = [0u8; 32];
    let _ = getrandom::fill(&mut b);
    b
}

/// One in-process DKG with every party; returns the shares.
fn raw_keygen(curve: Curve, t: u8, n: u8) -> Result<Vec<KeyShare>> {
    let key_id = uuid::Uuid::new_v4();
    let ps = participants(n)?;
    let tags: Vec<NodeTag> = ps.iter().map(|p| p.tag.clone()).collect();
    let sid = session_id(
        &key_id,
        curve.scheme(),
        &SessionKind::Keygen {
            threshold: t,
            participants: &tags,
            encryption_keys: &ps.iter().map(|p| p.encryption_key).collect::<Vec<_>>(),
        },
        &random32(),
    );
    let sessions: Vec<(PartyIndex, Box<dyn Session>)> = (1..=n)
        .map(|i| {
            keygen(KeygenConfig {
                key_id,
                session_id: sid,
                threshold: t,
                participants: ps.clone(),
                my_index: i,
                curve,
            })
            .map(|s| (i, s))
        })
        .collect::<Result<_, _>>()?;
    run_local(sessions)?
        .into_iter()
        .map(|o| match o {
            SessionOutput::Key(k) => Ok(k),
            SessionOutput::Signature(_) | SessionOutput::Repaired => {
                Err(anyhow!("keygen produced no key share"))
            }
        })
        .collect()
}

/// One in-process signing by parties 1..=t, from serialized shares.
fn raw_sign(shares: &[KeyShare], signers: &[PartyIndex], loaded: Vec<KeyShare>) -> Result<()> {
    let key = &shares[0];
    let tags: Vec<NodeTag> = key.participants().iter().map(|p| p.tag.clone()).collect();
    let signer_tags: Vec<NodeTag> = signers
        .iter()
        .map(|i| tags[usize::from(*i) - 1].clone())
        .collect();
    let digest = random32();
    let sid = session_id(
        &key.key_id(),
        key.curve().scheme(),
        &SessionKind::Sign {
            threshold: key.threshold(),
            participants: &tags,
            signers: &signer_tags,
            digest: &digest,
            derivation_path: &[],
        },
        &random32(),
    );
    let sessions: Vec<(PartyIndex, Box<dyn Session>)> = loaded
        .into_iter()
        .map(|share| {
            let i = share.my_index();
            sign(
                share,
                SignConfig {
                    session_id: sid,
                    signers: signers.to_vec(),
                    digest,
                },
            )
            .map(|s| (i, s))
        })
        .collect::<Result<_, _>>()?;
    for out in run_local(sessions)? {
        if !matches!(out, SessionOutput::Signature(_)) {
            bail!("signing produced no signature");
        }
    }
    Ok(())
}

fn reload(shares: &[KeyShare], signers: &[PartyIndex]) -> Result<Vec<KeyShare>> {
    signers
        .iter()
        .map(|i| KeyShare::from_bytes(&shares[usize::from(*i) - 1].to_bytes()).map_err(Into::into))
        .collect()
}

struct Raw {
    keygen_per_party: Duration,
    sign_per_party: Duration,
    /// Signatures per second with all cores busy.
    sign_throughput: f64,
}

fn raw(curve: Curve, t: u8, n: u8, args: &Args) -> Result<Raw> {
    let mut kg = Duration::ZERO;
    let mut shares = Vec::new();
    for _ in 0..args.keygens.max(1) {
        let start = Instant::now();
        shares = raw_keygen(curve, t, n)?;
        kg += start.elapsed();
    }
    let keygen_per_party = kg / (args.keygens.max(1) as u32 * u32::from(n));
    let signers: Vec<PartyIndex> = (1..=t).collect();
    let loaded: Vec<Vec<KeyShare>> = (0..args.raw_signs)
        .map(|_| reload(&shares, &signers))
        .collect::<Result<_>>()?;
    let start = Instant::now();
    for l in loaded {
        raw_sign(&shares, &signers, l)?;
    }
    let sign_per_party = start.elapsed() / (args.raw_signs as u32 * u32::from(t));

    // Throughput with every core signing (shares are deserialized outside the clock).
    let shares = Arc::new(shares);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let window = Duration::from_secs(args.seconds);
    let batch = 64;
    let mut handles = Vec::new();
    for _ in 0..threads {
        let shares = shares.clone();
        let signers = signers.clone();
        handles.push(std::thread::spawn(move || -> Result<(usize, Duration)> {
            let mut done = 0;
            let mut busy = Duration::ZERO;
            let started = Instant::now();
            while started.elapsed() < window {
                let loaded: Vec<Vec<KeyShare>> = (0..batch)
                    .map(|_| reload(&shares, &signers))
                    .collect::<Result<_>>()?;
                let s = Instant::now();
                for l in loaded {
                    raw_sign(&shares, &signers, l)?;
                    done += 1;
                }
                busy += s.elapsed();
            }
            Ok((done, busy))
        }));
    }
    let mut rate = 0.0;
    for h in handles {
        let (done, busy) = h.join().map_err(|_| anyhow!("bench thread panicked"))??;
        rate += done as f64 / busy.as_secs_f64();
    }
    Ok(Raw {
        keygen_per_party,
        sign_per_party,
        sign_throughput: rate,
    })
}

struct DevStack {
    child: Child,
    _dir: tempfile::TempDir,
    client: Client,
}

impl Drop for DevStack {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-INT")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_dev(dkms: &std::path::Path) -> Result<DevStack> {
    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = Command::new(dkms)
        .arg("dev")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", dkms.display()))?;
    let token_file = dir.path().join("data").join("admin.token");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(token) = std::fs::read_to_string(&token_file) {
            let client = Client::new(&format!("http://127.0.0.1:{port}"), token.trim())?;
            if let Ok(h) = client.health().await
                && h.connected_nodes.len() >= 3
            {
                return Ok(DevStack {
                    child,
                    _dir: dir,
                    client,
                });
            }
        }
        if Instant::now() > deadline {
            bail!("dkms dev did not come up");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn keygen_request(parts: &[&str], t: i64) -> KeyGenRequest {
    KeyGenRequest {
        key_params: KeyParams {
            key_type: "ECDSA_K1".into(),
            length: None,
        },
        service_participants: parts.iter().map(|s| s.to_string()).collect(),
        threshold: Some(t),
        total_shares: Some(parts.len() as i64),
        node_group: None,
        exportable: false,
    }
}

/// A fresh random secp256k1 key as SEC1 PEM.
fn random_pem() -> Result<String> {
    loop {
        if let Ok(sk) = k256::SecretKey::from_slice(&random32()) {
            let pem = sk
                .to_sec1_pem(Default::default())
                .map_err(|e| anyhow!("encoding a PEM: {e}"))?;
            return Ok(pem.to_string());
        }
    }
}

/// Gateway-side import (`key/import`) of a fresh key, 2-of-3, until FINISHED.
async fn e2e_import(c: &Client) -> Result<(String, Duration)> {
    let start = Instant::now();
    let req = dkms_client::KeyImportRequest {
        key_params: KeyParams {
            key_type: "ECDSA_K1".into(),
            length: None,
        },
        service_participants: vec!["node1".into(), "node2".into(), "node3".into()],
        threshold: 2,
        total_shares: 3,
        private_key: random_pem()?,
        password: None,
        exportable: false,
    };
    let resp = c.import_key(&req).await?;
    let k = c.wait_key(&resp.key_id, Duration::from_secs(300)).await?;
    if k.status != "FINISHED" {
        bail!("import ended {}: {:?}", k.status, k.error_message);
    }
    Ok((resp.key_id, start.elapsed()))
}

/// A refresh of every share of `key_id`, until committed.
async fn e2e_refresh(c: &Client, key_id: &str) -> Result<Duration> {
    let start = Instant::now();
    let t = c.refresh_key(key_id).await?;
    let task = c
        .wait_task(&t.instance_id, Duration::from_secs(300))
        .await?;
    if task.status != "FINISHED" {
        bail!("refresh ended {}: {:?}", task.status, task.error_message);
    }
    Ok(start.elapsed())
}

/// A recovery of `key_id`'s member `lost` onto a node created for it (dev mode starts it),
/// timed from the request to the commit.
/// Creates a node in dev mode (which starts it) and waits until it is connected.
async fn add_node(c: &Client, tag: &str) -> Result<()> {
    c.create_pod(tag).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !c.health().await?.connected_nodes.iter().any(|n| n == tag) {
        if Instant::now() > deadline {
            bail!("{tag} did not connect");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// One `key/recover` of `lost` onto `newcomers` (nodes created for it), from the request
/// to the committed generation.
async fn e2e_recover(
    c: &Client,
    key_id: &str,
    lost: &[&str],
    newcomers: &[&str],
) -> Result<Duration> {
    for n in newcomers {
        add_node(c, n).await?;
    }
    let start = Instant::now();
    let t = c.recover_keys(key_id, lost, Some(newcomers)).await?;
    let task = c
        .wait_task(&t.instance_id, Duration::from_secs(300))
        .await?;
    if task.status != "FINISHED" {
        bail!("recovery ended {}: {:?}", task.status, task.error_message);
    }
    Ok(start.elapsed())
}

async fn e2e_keygen(c: &Client, parts: &[&str], t: i64) -> Result<(String, Duration)> {
    let start = Instant::now();
    let id = c.generate_key(&keygen_request(parts, t)).await?;
    let k = c.wait_key(&id, Duration::from_secs(300)).await?;
    if k.status != "FINISHED" {
        bail!("keygen ended {}: {:?}", k.status, k.error_message);
    }
    Ok((id, start.elapsed()))
}

struct Load {
    p50: Duration,
    p99: Duration,
    throughput: f64,
    count: usize,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// `concurrency` clients each sign back to back for the window; every signature is
/// checked by the gateway, and any failure aborts the benchmark.
async fn e2e_sign_load(
    c: &Client,
    key_id: &str,
    concurrency: usize,
    window: Duration,
) -> Result<Load> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let c = c.clone();
        let key_id = key_id.to_string();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while started.elapsed() < window {
                let d = hex::encode(random32());
                let s = Instant::now();
                let sig = c.sign(&key_id, &d, Duration::from_secs(60)).await?;
                if sig.status != "FINISHED" {
                    bail!("signing ended {}: {:?}", sig.status, sig.error_message);
                }
                lat.push(s.elapsed());
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let elapsed = started.elapsed();
    all.sort();
    Ok(Load {
        p50: percentile(&all, 0.50),
        p99: percentile(&all, 0.99),
        throughput: all.len() as f64 / elapsed.as_secs_f64(),
        count: all.len(),
    })
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let dkms = match &args.dkms {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .ok_or_else(|| anyhow!("no parent directory"))?
            .join("dkms"),
    };
    eprintln!("raw in-process DKLs23 ...");
    let raw22 = raw(Curve::Secp256k1, 2, 2, &args)?;
    let raw23 = raw(Curve::Secp256k1, 2, 3, &args)?;
    let raw23_p256 = raw(Curve::P256, 2, 3, &args)?;

    eprintln!("end to end through dkms dev ...");
    let stack = start_dev(&dkms).await?;
    let c = &stack.client;
    let mut kg22 = Vec::new();
    let mut kg23 = Vec::new();
    let mut key23 = String::new();
    for _ in 0..args.keygens.max(1) {
        kg22.push(e2e_keygen(c, &["node1", "node2"], 2).await?.1);
        let (id, d) = e2e_keygen(c, &["node1", "node2", "node3"], 2).await?;
        kg23.push(d);
        key23 = id;
    }
    let avg = |v: &[Duration]| v.iter().sum::<Duration>() / v.len().max(1) as u32;
    let mut imports = Vec::new();
    let mut refreshes = Vec::new();
    for _ in 0..args.keygens.max(1) {
        let (id, d) = e2e_import(c).await?;
        imports.push(d);
        refreshes.push(e2e_refresh(c, &id).await?);
    }
    let mut recoveries = Vec::new();
    let mut lost = "node1".to_owned();
    for i in 0..args.keygens.max(1) {
        let newcomer = format!("bench-node{}", i + 4);
        recoveries.push(e2e_recover(c, &key23, &[&lost], &[&newcomer]).await?);
        lost = newcomer;
    }
    // Two members of a 3-of-5 key at once, each onto a node created for it.
    let mut recoveries35 = Vec::new();
    for i in 0..args.keygens.max(1) {
        let (a, b) = (format!("bench-a{i}"), format!("bench-b{i}"));
        add_node(c, &a).await?;
        add_node(c, &b).await?;
        let (key35, _) = e2e_keygen(c, &["node1", "node2", "node3", &a, &b], 3).await?;
        let (na, nb) = (format!("bench-c{i}"), format!("bench-d{i}"));
        recoveries35.push(e2e_recover(c, &key35, &[&a, &b], &[&na, &nb]).await?);
    }
    let mut kg23_p256 = Vec::new();
    for _ in 0..args.keygens.max(1) {
        let start = Instant::now();
        let req = KeyGenRequest {
            key_params: KeyParams {
                key_type: "ECDSA_R1".into(),
                length: None,
            },
            ..keygen_request(&["node1", "node2", "node3"], 2)
        };
        let id = c.generate_key(&req).await?;
        let k = c.wait_key(&id, Duration::from_secs(300)).await?;
        if k.status != "FINISHED" {
            bail!("P-256 keygen ended {}: {:?}", k.status, k.error_message);
        }
        kg23_p256.push(start.elapsed());
    }
    let window = Duration::from_secs(args.seconds);
    // Warm up connections and caches.
    e2e_sign_load(c, &key23, 4, Duration::from_secs(1)).await?;
    let mut loads = Vec::new();
    for conc in [1usize, 8, 32] {
        eprintln!("  signing at concurrency {conc} ...");
        loads.push((conc, e2e_sign_load(c, &key23, conc, window).await?));
    }
    drop(stack);

    println!("| measurement | 2-of-2 | 2-of-3 |");
    println!("|---|---|---|");
    println!(
        "| raw keygen, per party (CPU, in process) | {} | {} |",
        ms(raw22.keygen_per_party),
        ms(raw23.keygen_per_party)
    );
    println!(
        "| raw sign, per party (CPU, in process, 2 signers) | {} | {} |",
        ms(raw22.sign_per_party),
        ms(raw23.sign_per_party)
    );
    println!(
        "| raw sign throughput, all cores | {:.1}/s | {:.1}/s |",
        raw22.sign_throughput, raw23.sign_throughput
    );
    println!(
        "| end-to-end keygen latency (mean of {}) | {} | {} |",
        kg22.len(),
        ms(avg(&kg22)),
        ms(avg(&kg23))
    );
    // Both raw runs measure the same two-signer protocol; the larger is the conservative
    // denominator.
    let raw_rate = raw22.sign_throughput.max(raw23.sign_throughput);
    println!(
        "| end-to-end import latency, gateway split (mean of {}) | | {} |",
        imports.len(),
        ms(avg(&imports))
    );
    println!(
        "| end-to-end refresh latency (mean of {}) | | {} |",
        refreshes.len(),
        ms(avg(&refreshes))
    );
    println!(
        "| end-to-end recovery onto a new node: repair + refresh (mean of {}) | | {} |",
        recoveries.len(),
        ms(avg(&recoveries))
    );
    println!(
        "| end-to-end recovery of two members of a 3-of-5 key at once: 2 repairs + refresh (mean of {}) | | {} |",
        recoveries35.len(),
        ms(avg(&recoveries35))
    );
    println!();
    println!(
        "| end-to-end 2-of-3 signing | signatures | p50 | p99 | throughput | e2e / raw throughput ({raw_rate:.1}/s) |"
    );
    println!("|---|---|---|---|---|---|");
    for (conc, l) in &loads {
        println!(
            "| concurrency {conc} | {} | {} | {} | {:.1}/s | {:.2} |",
            l.count,
            ms(l.p50),
            ms(l.p99),
            l.throughput,
            l.throughput / raw_rate
        );
    }
    println!();
    println!("| P-256 (`ECDSA_R1`), raw in process | 2-of-3 secp256k1 | 2-of-3 P-256 |");
    println!("|---|---|---|");
    println!(
        "| keygen, per party | {} | {} |",
        ms(raw23.keygen_per_party),
        ms(raw23_p256.keygen_per_party)
    );
    println!(
        "| sign, per party (2 signers) | {} | {} |",
        ms(raw23.sign_per_party),
        ms(raw23_p256.sign_per_party)
    );
    println!(
        "| sign throughput, all cores | {:.1}/s | {:.1}/s |",
        raw23.sign_throughput, raw23_p256.sign_throughput
    );
    println!(
        "| end-to-end keygen latency (mean of {}) | {} | {} |",
        kg23_p256.len(),
        ms(avg(&kg23)),
        ms(avg(&kg23_p256))
    );
    Ok(())
}
