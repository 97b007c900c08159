//! Drives the node: keeps one WebSocket to the gateway, proves the node's identity on
//! connect, and runs protocol sessions. The protocol logic lives in `dkms_mpc` state
//! machines; this module only moves sealed messages and runs the CPU-heavy steps on the
//! blocking pool.

use crate::identity::NodeKeys;
use crate::store::{NodeStore, StoreError};
use dkms_mpc::envelope::{self, EncryptionKeypair, EnvelopeContext};
use dkms_mpc::session_id::{SessionKind, session_id};
use dkms_mpc::{
    KeyShare, KeygenConfig, MpcError, Outgoing, PartyIndex, Progress, Session, SessionOutput,
    ShareParticipant, SignConfig,
};
use dkms_proto::NodeTag;
use dkms_proto::node::{
    self, FailureKind, FromNode, LINK_VERSION, NodeIdentity, Operation, Outcome, SessionFailure,
    SessionRef, SessionStart, ToNode,
};
use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tracing::{Instrument, debug, info, info_span, warn};
use zeroize::Zeroizing;

/// Messages buffered per session; a session needs a few per peer and round, so a full
/// inbox means the sender floods, and the session is dropped.
const SESSION_INBOX: usize = 512;
/// Longest a session may stay open on this node, whatever the gateway does.
const SESSION_LIFETIME: Duration = Duration::from_secs(600);
/// Record that says this node has joined (so the join token is not sent again).
const JOINED_RECORD: &str = "joined";
/// Prefix of the records naming peers this node refuses to run sessions with.
const BANNED_PREFIX: &str = "banned-peer/";

/// DKLs23 reuses OT correlations across signings: a peer caught cheating in a way that
/// leaks them must never take part in a session with this node again (the paper's rule).
fn ban(store: &NodeStore, tag: &NodeTag) {
    match store.put_secret(&format!("{BANNED_PREFIX}{tag}"), b"1") {
        Ok(()) | Err(StoreError::AlreadyExists) => {
            warn!(peer = %tag, "peer banned: this node will refuse every session that includes it")
        }
        Err(e) => warn!(peer = %tag, error = %e, "could not record a ban"),
    }
}

/// Fails if any of `peers` is banned on this node.
fn refuse_banned(store: &NodeStore, peers: &[NodeTag]) -> Result<(), Failure> {
    for p in peers {
        let banned = store
            .get_secret(&format!("{BANNED_PREFIX}{p}"))
            .map_err(|e| Failure::internal(e.to_string()))?
            .is_some();
        if banned {
            return Err(Failure {
                kind: FailureKind::BadParameters,
                culprit: Some(p.clone()),
                message: format!(
                    "node {p} is banned on this node after it cheated in an earlier session"
                ),
            });
        }
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("the gateway refused this node: {0}")]
    Refused(String),
    #[error("{0}")]
    Other(String),
}

/// Everything a session needs from its node.
pub struct NodeContext {
    pub tag: NodeTag,
    pub store: Arc<NodeStore>,
    keys: NodeKeys,
    enc: EncryptionKeypair,
}

impl NodeContext {
    pub fn new(tag: NodeTag, store: Arc<NodeStore>) -> Result<Self, RunError> {
        let keys = NodeKeys::load_or_create(&store)?;
        let enc = EncryptionKeypair::from_seed(keys.encryption_seed());
        Ok(NodeContext {
            tag,
            store,
            keys,
            enc,
        })
    }

    pub fn identity(&self) -> NodeIdentity {
        NodeIdentity {
            signing_key: self.keys.signing_public(),
            encryption_key: self.enc.public_key(),
        }
    }
}

/// Serves every gateway in `urls` at once (gateways sharing one database each run their
/// own sessions), each link reconnecting on its own. Ends when all links have ended:
/// on shutdown, or when every gateway refused the node; a refusal by one gateway does
/// not stop the others. A failure of the node's own store stops every link at once.
pub async fn run_all(
    ctx: Arc<NodeContext>,
    urls: Vec<String>,
    join_token: Option<Zeroizing<String>>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), RunError> {
    let mut links = tokio::task::JoinSet::new();
    for url in urls {
        let span = info_span!("link", gateway = %url);
        links.spawn(run(ctx.clone(), url, join_token.clone(), shutdown.clone()).instrument(span));
    }
    let mut first_error = None;
    while let Some(ended) = links.join_next().await {
        let result = ended.map_err(|e| RunError::Other(format!("gateway link task: {e}")))?;
        match result {
            Ok(()) => {}
            // The node's own store failed: no link can serve sessions; stop them all.
            Err(e @ RunError::Store(_)) => {
                links.abort_all();
                return Err(e);
            }
            Err(e) => {
                tracing::error!(error = %e, "a gateway link ended");
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Connects to `url` (`ws://host:port/api/node/link`) and serves sessions, reconnecting
/// with back-off until `shutdown` fires. A refusal by the gateway is final.
pub async fn run(
    ctx: Arc<NodeContext>,
    url: String,
    join_token: Option<Zeroizing<String>>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), RunError> {
    const FIRST_BACKOFF: Duration = Duration::from_millis(100);
    let mut backoff = FIRST_BACKOFF;
    loop {
        let started = std::time::Instant::now();
        let attempt = connect_and_serve(&ctx, &url, join_token.as_ref(), &mut shutdown).await;
        // A link that held for a while was healthy: reconnect quickly after it drops.
        if started.elapsed() > Duration::from_secs(10) {
            backoff = FIRST_BACKOFF;
        }
        match attempt {
            Ok(()) => return Ok(()),
            Err(RunError::Refused(r)) => return Err(RunError::Refused(r)),
            Err(RunError::Store(e)) => return Err(RunError::Store(e)),
            Err(e) => {
                warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "gateway link down; reconnecting");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => return Ok(()),
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn connect_and_serve(
    ctx: &Arc<NodeContext>,
    url: &str,
    join_token: Option<&Zeroizing<String>>,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<(), RunError> {
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(node::MAX_FRAME_BYTES))
        .max_frame_size(Some(node::MAX_FRAME_BYTES));
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
        .await
        .map_err(|e| RunError::Other(format!("connecting to {url}: {e}")))?;

    let nonce = match next_frame(&mut ws).await? {
        Some(ToNode::Challenge {
            link_version,
            nonce,
        }) if link_version == LINK_VERSION => nonce,
        Some(ToNode::Challenge { link_version, .. }) => {
            return Err(RunError::Refused(format!(
                "gateway speaks link version {link_version}, this node {LINK_VERSION}"
            )));
        }
        _ => return Err(RunError::Other("expected a challenge".into())),
    };
    let identity = ctx.identity();
    let joined = ctx.store.get_secret(JOINED_RECORD)?.is_some();
    let signature = ctx
        .keys
        .sign(&node::hello_transcript(&nonce, &ctx.tag, &identity))
        .to_vec();
    let hello = FromNode::Hello {
        link_version: LINK_VERSION,
        tag: ctx.tag.clone(),
        identity,
        join_token: if joined {
            None
        } else {
            join_token.map(|t| t.to_string())
        },
        signature,
    };
    ws.send(Message::Binary(node::encode(&hello).into()))
        .await
        .map_err(|e| RunError::Other(e.to_string()))?;
    match next_frame(&mut ws).await? {
        Some(ToNode::Welcome) => {}
        Some(ToNode::Refused { reason }) => return Err(RunError::Refused(reason)),
        _ => return Err(RunError::Other("expected welcome".into())),
    }
    if !joined {
        // Another gateway link of this node may have recorded the join just now.
        match ctx.store.put_secret(JOINED_RECORD, b"1") {
            Ok(()) | Err(StoreError::AlreadyExists) => {}
            Err(e) => return Err(e.into()),
        }
    }
    info!(node = %ctx.tag, "connected to the gateway");

    let (mut sink, mut stream) = ws.split();
    let (out_tx, mut out_rx) = mpsc::channel::<FromNode>(4096);
    let writer = tokio::spawn(async move {
        while let Some(msg) = out_rx.recv().await {
            if sink
                .send(Message::Binary(node::encode(&msg).into()))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let mut sessions: HashMap<SessionRef, mpsc::Sender<Inbound>> = HashMap::new();
    let result = loop {
        let frame = tokio::select! {
            f = stream.next() => f,
            _ = shutdown.changed() => break Ok(()),
        };
        let bytes = match frame {
            None => break Err(RunError::Other("gateway closed the link".into())),
            Some(Err(e)) => break Err(RunError::Other(e.to_string())),
            Some(Ok(Message::Binary(b))) => b,
            Some(Ok(Message::Close(_))) => {
                break Err(RunError::Other("gateway closed the link".into()));
            }
            Some(Ok(_)) => continue,
        };
        sessions.retain(|_, tx| !tx.is_closed());
        match node::decode::<ToNode>(&bytes) {
            Ok(ToNode::Start(start)) => {
                let (tx, rx) = mpsc::channel(SESSION_INBOX);
                sessions.insert(start.session, tx);
                let span = info_span!("session", session = start.session, key_id = %start.key_id);
                tokio::spawn(run_session(ctx.clone(), start, rx, out_tx.clone()).instrument(span));
            }
            Ok(ToNode::Deliver {
                session,
                from,
                round,
                payload,
            }) => match sessions.get(&session) {
                Some(tx) => {
                    let msg = Inbound::Message {
                        from,
                        round,
                        payload,
                    };
                    if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(msg) {
                        warn!(session, "session inbox overflowed; dropping the session");
                        sessions.remove(&session);
                    }
                }
                None => debug!(session, "message for an unknown or finished session"),
            },
            Ok(ToNode::Abort { session, reason }) => {
                if let Some(tx) = sessions.remove(&session) {
                    let _ = tx.try_send(Inbound::Abort(reason));
                }
            }
            Ok(other) => debug!(?other, "unexpected frame"),
            Err(e) => warn!(error = %e, "undecodable frame from the gateway"),
        }
    };
    writer.abort();
    result
}

async fn next_frame<S>(ws: &mut S) -> Result<Option<ToNode>, RunError>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let fut = async {
        loop {
            match ws.next().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(RunError::Other(e.to_string())),
                Some(Ok(Message::Binary(b))) => {
                    return node::decode::<ToNode>(&b)
                        .map(Some)
                        .map_err(|e| RunError::Other(e.to_string()));
                }
                Some(Ok(Message::Close(_))) => return Ok(None),
                Some(Ok(_)) => continue,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .map_err(|_| RunError::Other("gateway did not answer in time".into()))?
}

enum Inbound {
    Message {
        from: NodeTag,
        round: u8,
        payload: Vec<u8>,
    },
    Abort(String),
}

/// Faults a node can be told to commit in signing sessions, for tests of how the others
/// cope. Only a build with the `misbehave` feature reads `DKMS_TEST_MISBEHAVE`; a normal
/// build always behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "misbehave"), allow(dead_code))]
enum Fault {
    None,
    /// Computes but sends nothing.
    Silent,
    /// Sends random bytes instead of sealed messages.
    Garbage,
    /// Seals a protocol message with one bit flipped.
    Tamper,
}

fn signing_fault() -> Fault {
    #[cfg(feature = "misbehave")]
    {
        match std::env::var("DKMS_TEST_MISBEHAVE").as_deref() {
            Ok("silent") => return Fault::Silent,
            Ok("garbage") => return Fault::Garbage,
            Ok("tamper") => return Fault::Tamper,
            _ => {}
        }
    }
    Fault::None
}

/// A session's failure as reported to the gateway.
struct Failure {
    kind: FailureKind,
    culprit: Option<NodeTag>,
    message: String,
}

impl Failure {
    fn bad(message: impl Into<String>) -> Self {
        Failure {
            kind: FailureKind::BadParameters,
            culprit: None,
            message: message.into(),
        }
    }

    fn internal(message: impl Into<String>) -> Self {
        Failure {
            kind: FailureKind::Internal,
            culprit: None,
            message: message.into(),
        }
    }
}

/// Where a share that a session produces goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Disposition {
    /// A new key: stored once.
    Store,
    /// A generated key: marked exportable or not, as the key was asked for, then stored once.
    New { exportable: bool },
    /// A refresh: staged as this generation until the gateway commits it.
    Stage(u32),
    /// A repair's hollow share: live at this generation, replacing only another hollow one.
    Repaired(u32),
}

/// The parties of a running session, by index.
struct Roster {
    store: Arc<NodeStore>,
    fault: Fault,
    /// What becomes of a share the session produces.
    disposition: Disposition,
    /// For a repair helper: what it records before its term goes out.
    repair_help: Option<RepairHelp>,
    me: PartyIndex,
    session_id: [u8; 32],
    peers: HashMap<PartyIndex, ShareParticipant>,
}

/// The repair a helper takes part in, recorded in its store (`record_repair_help`): every
/// member the recovery replaces, not only the one this session rebuilds. Together with
/// helpers fixed by the replaced set (see [`prepare_repair`]), any two repairs of one
/// generation then share a helper that saw both replaced sets, so a gateway cannot have
/// more than `limit` members rebuilt from one generation by splitting them across
/// recoveries with different helpers.
#[derive(Clone)]
struct RepairHelp {
    generation: u32,
    /// The member this session rebuilds first, then the recovery's other lost members.
    replaced: Vec<NodeTag>,
    /// How many members of the key may be rebuilt from one generation, from the helper's
    /// own share ([`node::max_lost_at_once`]).
    limit: usize,
}

impl Roster {
    fn index_of(&self, tag: &NodeTag) -> Option<PartyIndex> {
        self.peers
            .iter()
            .find(|(_, p)| p.tag == *tag)
            .map(|(i, _)| *i)
    }

    fn culprit(&self, e: &MpcError) -> Option<NodeTag> {
        e.culprit()
            .and_then(|i| self.peers.get(&i))
            .map(|p| p.tag.clone())
    }
}

fn mpc_failure(roster: &Roster, e: MpcError) -> Failure {
    let culprit = roster.culprit(&e);
    let kind = match (&e, &culprit) {
        (MpcError::BadParameters(_), _) => FailureKind::BadParameters,
        (MpcError::Corrupt(_) | MpcError::Internal(_), _) => FailureKind::Internal,
        (MpcError::Crypto(_), Some(_)) => FailureKind::Misbehaviour,
        (_, Some(_)) => FailureKind::Misbehaviour,
        _ => FailureKind::Internal,
    };
    if e.requires_ban() {
        warn!(culprit = ?culprit, "a party cheated in a way that requires excluding it from future sessions");
        if let Some(c) = &culprit {
            ban(&roster.store, c);
        }
    }
    Failure {
        kind,
        culprit,
        message: e.to_string(),
    }
}

async fn run_session(
    ctx: Arc<NodeContext>,
    start: SessionStart,
    mut inbox: mpsc::Receiver<Inbound>,
    out: mpsc::Sender<FromNode>,
) {
    let session = start.session;
    let result = tokio::time::timeout(
        SESSION_LIFETIME,
        drive_session(&ctx, start, &mut inbox, &out),
    )
    .await
    .unwrap_or_else(|_| Err(Failure::internal("session lifetime exceeded on this node")));
    let msg = match result {
        Ok(outcome) => FromNode::Done { session, outcome },
        Err(f) => {
            warn!(kind = ?f.kind, culprit = ?f.culprit, message = %f.message, "session failed");
            FromNode::Failed {
                session,
                failure: SessionFailure {
                    kind: f.kind,
                    culprit: f.culprit,
                    message: f.message,
                },
            }
        }
    };
    let _ = out.send(msg).await;
}

/// Checks the session's parameters, builds the state machine and runs it to the end.
async fn drive_session(
    ctx: &Arc<NodeContext>,
    start: SessionStart,
    inbox: &mut mpsc::Receiver<Inbound>,
    out: &mpsc::Sender<FromNode>,
) -> Result<Outcome, Failure> {
    let key_id = start.key_id;
    let (roster, session) = match &start.operation {
        Operation::Keygen {
            threshold,
            participants,
            exportable,
        } => prepare_keygen(ctx, &start, *threshold, participants, *exportable).await?,
        Operation::Sign {
            signers,
            digest,
            generation,
            derivation_path,
        } => prepare_sign(ctx, &start, signers, digest, *generation, derivation_path).await?,
        Operation::Refresh {
            generation,
            replacements,
        } => prepare_refresh(ctx, &start, *generation, replacements).await?,
        Operation::Repair {
            generation,
            threshold,
            public_key,
            participants,
            replacement,
            also_replaced,
            helpers,
            exportable,
        } => {
            let params = RepairParams {
                generation: *generation,
                threshold: *threshold,
                public_key,
                participants,
                replacement,
                also_replaced,
                helpers,
                exportable: *exportable,
            };
            prepare_repair(ctx, &start, &params).await?
        }
        Operation::Promote { generation } => {
            let store = ctx.store.clone();
            let generation = *generation;
            let current =
                blocking(move || ensure_generation(&store, &key_id, generation)).await??;
            info!(generation = current, "share generation committed");
            return Ok(Outcome::Promoted {
                generation: current,
            });
        }
        Operation::Import {
            threshold,
            participants,
            sealed_share,
            exportable,
        } => {
            return import_share(
                ctx,
                &start,
                *threshold,
                participants,
                sealed_share,
                *exportable,
            )
            .await;
        }
        Operation::Export {
            generation,
            recipient,
        } => return seal_out(ctx, key_id, *generation, Outward::Export(*recipient)).await,
        Operation::Backup {
            generation,
            custodian,
        } => return seal_out(ctx, key_id, *generation, Outward::Backup(*custodian)).await,
        Operation::Restore {
            generation,
            threshold,
            public_key,
            participants,
            replacement,
            sealed_share,
        } => {
            let params = RestoreParams {
                generation: *generation,
                threshold: *threshold,
                public_key,
                participants,
                replacement,
                sealed: sealed_share,
            };
            return restore_share(ctx, &start, &params).await;
        }
        Operation::Delete => {
            let store = ctx.store.clone();
            let existed = blocking(move || store.delete_share(&key_id))
                .await?
                .map_err(|e| Failure::internal(format!("deleting the share: {e}")))?;
            info!(existed, "share destroyed (scheduled deletion)");
            return Ok(Outcome::Deleted);
        }
    };
    let roster = Arc::new(roster);
    let (mut session, first) = blocking(move || {
        let mut s = session;
        let r = s.start();
        (s, r)
    })
    .await?;
    let first = first.map_err(|e| mpc_failure(&roster, e))?;
    send_all(ctx, &roster, &start, first, out).await?;

    loop {
        let (from, round, payload) = match inbox.recv().await {
            Some(Inbound::Message {
                from,
                round,
                payload,
            }) => (from, round, payload),
            Some(Inbound::Abort(reason)) => {
                return Err(Failure::internal(format!(
                    "aborted by the gateway: {reason}"
                )));
            }
            None => return Err(Failure::internal("session dropped")),
        };
        let Some(from_idx) = roster.index_of(&from) else {
            return Err(Failure {
                kind: FailureKind::Misbehaviour,
                culprit: None,
                message: format!("message from {from}, who is not in this session"),
            });
        };
        let sender_pk = roster
            .peers
            .get(&from_idx)
            .map(|p| p.encryption_key)
            .unwrap_or_default();
        let ctx2 = ctx.clone();
        let roster2 = roster.clone();
        let (s, step) = blocking(move || {
            let mut s = session;
            let ectx = EnvelopeContext {
                session_id: &roster2.session_id,
                round,
                sender: &from,
                recipient: &ctx2.tag,
            };
            let step = envelope::open(&ctx2.enc, &sender_pk, &ectx, &payload)
                .map_err(|e| (from_idx, e))
                .and_then(|plain| {
                    s.receive(from_idx, round, &plain)
                        .map_err(|e| (from_idx, e))
                });
            (s, step)
        })
        .await?;
        session = s;
        match step {
            Ok(Progress::Continue(msgs)) => send_all(ctx, &roster, &start, msgs, out).await?,
            Ok(Progress::Done { output, outgoing }) => {
                // Our last round may complete together with the session: peers still need it.
                send_all(ctx, &roster, &start, outgoing, out).await?;
                return match (roster.disposition, output) {
                    (Disposition::Stage(generation), SessionOutput::Key(share)) => {
                        let outcome = stage(ctx, key_id, generation, share).await?;
                        pin_replacement(ctx, &start.operation).await?;
                        Ok(outcome)
                    }
                    (Disposition::Repaired(generation), SessionOutput::Key(share)) => {
                        store_repaired(ctx, key_id, generation, share).await
                    }
                    (Disposition::New { exportable }, SessionOutput::Key(share)) => {
                        let share = share.with_exportable(exportable);
                        finish(ctx, key_id, SessionOutput::Key(share)).await
                    }
                    (_, output) => finish(ctx, key_id, output).await,
                };
            }
            Err((from_idx, e)) => {
                let mut f = mpc_failure(&roster, e);
                if f.culprit.is_none() && f.kind != FailureKind::BadParameters {
                    // An envelope that does not open was sent (or altered) on the sender's link.
                    f.culprit = roster.peers.get(&from_idx).map(|p| p.tag.clone());
                    f.kind = FailureKind::Misbehaviour;
                }
                return Err(f);
            }
        }
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Failure> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Failure::internal(format!("protocol step failed: {e}")))
}

async fn send_all(
    ctx: &Arc<NodeContext>,
    roster: &Arc<Roster>,
    start: &SessionStart,
    msgs: Vec<Outgoing>,
    out: &mpsc::Sender<FromNode>,
) -> Result<(), Failure> {
    if msgs.is_empty() {
        return Ok(());
    }
    if let Some(help) = &roster.repair_help {
        // Recorded only now, when the term is about to leave: a repair refused before any
        // term went out does not count against the limit.
        let (store, key_id, help) = (ctx.store.clone(), start.key_id, help.clone());
        let limit = help.limit;
        let decision = blocking(move || {
            let replaced: Vec<&str> = help.replaced.iter().map(NodeTag::as_str).collect();
            store.record_repair_help(&key_id, help.generation, &replaced, limit)
        })
        .await?
        .map_err(|e| Failure::internal(e.to_string()))?;
        if let crate::store::RepairHelp::Refused { named } = decision {
            return Err(Failure::bad(format!(
                "with the members this recovery replaces, this node would have helped repairs of more than {limit} members of this key at this share generation, more than the key allows (fewer than its threshold); members named before at this generation: {}; retry the recovery with them, or refresh the key first",
                named.join(", ")
            )));
        }
    }
    let ctx2 = ctx.clone();
    let roster2 = roster.clone();
    let sealed = blocking(move || {
        msgs.into_iter()
            .map(|m| {
                let peer = roster2
                    .peers
                    .get(&m.to)
                    .ok_or_else(|| Failure::internal(format!("no party {}", m.to)))?;
                let ectx = EnvelopeContext {
                    session_id: &roster2.session_id,
                    round: m.round,
                    sender: &ctx2.tag,
                    recipient: &peer.tag,
                };
                let mut plain = m.payload;
                if roster2.fault == Fault::Tamper
                    && let Some(b) = plain.last_mut()
                {
                    *b ^= 0x01;
                }
                let mut ct = envelope::seal(&ctx2.enc, &peer.encryption_key, &ectx, &plain)
                    .map_err(|e| Failure::internal(format!("sealing: {e}")))?;
                if roster2.fault == Fault::Garbage {
                    getrandom::fill(&mut ct).map_err(|e| Failure::internal(e.to_string()))?;
                }
                Ok((peer.tag.clone(), m.round, ct))
            })
            .collect::<Result<Vec<_>, Failure>>()
    })
    .await??;
    if roster.fault == Fault::Silent {
        return Ok(());
    }
    for (to, round, payload) in sealed {
        out.send(FromNode::Send {
            session: start.session,
            to,
            round,
            payload,
        })
        .await
        .map_err(|_| Failure::internal("gateway link closed"))?;
    }
    Ok(())
}

/// Checks the parameters of a new key (generated or imported) and pins the peers'
/// encryption keys; returns this node's position and the participants' tags.
async fn check_new_key(
    ctx: &Arc<NodeContext>,
    start: &SessionStart,
    threshold: u8,
    participants: &[node::Peer],
) -> Result<(usize, Vec<NodeTag>), Failure> {
    let n = participants.len();
    if threshold < 2 || usize::from(threshold) > n || n > usize::from(u8::MAX) {
        return Err(Failure::bad(format!(
            "threshold {threshold} of {n} participants is not a valid threshold key"
        )));
    }
    let me = participants
        .iter()
        .position(|p| p.tag == ctx.tag)
        .ok_or_else(|| Failure::bad("this node is not among the participants"))?;
    if participants[me].encryption_key != ctx.enc.public_key() {
        return Err(Failure::bad(
            "the gateway announced a different encryption key for this node",
        ));
    }
    let tags: Vec<NodeTag> = participants.iter().map(|p| p.tag.clone()).collect();
    let mut unique = tags.clone();
    unique.sort();
    unique.dedup();
    if unique.len() != n {
        return Err(Failure::bad("a participant is listed twice"));
    }
    let store = ctx.store.clone();
    let key_id = start.key_id;
    let pins: Vec<(NodeTag, [u8; 32])> = participants
        .iter()
        .map(|p| (p.tag.clone(), p.encryption_key))
        .collect();
    let my_tag = ctx.tag.clone();
    blocking(move || -> Result<(), Failure> {
        if store
            .get_share(&key_id)
            .map_err(|e| Failure::internal(e.to_string()))?
            .is_some()
        {
            return Err(Failure::bad(format!("this node already holds key {key_id}")));
        }
        let others: Vec<NodeTag> = pins
            .iter()
            .filter(|(t, _)| *t != my_tag)
            .map(|(t, _)| t.clone())
            .collect();
        refuse_banned(&store, &others)?;
        for (tag, key) in pins.iter().filter(|(t, _)| *t != my_tag) {
            store.pin_peer(tag.as_str(), key).map_err(|e| match e {
                StoreError::PinMismatch { .. } => Failure {
                    kind: FailureKind::BadParameters,
                    culprit: None,
                    message: format!(
                        "the encryption key announced for node {tag} differs from the one this node pinned"
                    ),
                },
                other => Failure::internal(other.to_string()),
            })?;
        }
        Ok(())
    })
    .await??;
    Ok((me, tags))
}

async fn prepare_keygen(
    ctx: &Arc<NodeContext>,
    start: &SessionStart,
    threshold: u8,
    participants: &[node::Peer],
    exportable: bool,
) -> Result<(Roster, Box<dyn Session>), Failure> {
    let (me, tags) = check_new_key(ctx, start, threshold, participants).await?;
    let session_id = session_id(
        &start.key_id,
        start.scheme,
        &SessionKind::Keygen {
            threshold,
            participants: &tags,
            encryption_keys: &participants
                .iter()
                .map(|p| p.encryption_key)
                .collect::<Vec<_>>(),
        },
        &start.nonce,
    );
    let share_participants: Vec<ShareParticipant> = participants
        .iter()
        .cloned()
        .map(ShareParticipant::from)
        .collect();
    let my_index = (me + 1) as PartyIndex;
    let roster = Roster {
        store: ctx.store.clone(),
        fault: Fault::None,
        disposition: Disposition::New { exportable },
        repair_help: None,
        me: my_index,
        session_id,
        peers: share_participants
            .iter()
            .enumerate()
            .map(|(i, p)| ((i + 1) as PartyIndex, p.clone()))
            .collect(),
    };
    let session = dkms_mpc::keygen(KeygenConfig {
        key_id: start.key_id,
        session_id,
        threshold,
        participants: share_participants,
        my_index,
        curve: dkms_mpc::Curve::of_scheme(start.scheme),
    })
    .map_err(|e| Failure::bad(e.to_string()))?;
    debug!(me = roster.me, "keygen session prepared");
    Ok((roster, session))
}

/// Makes `generation` the live share if it is staged (the gateway has committed it);
/// fails if this node holds neither it nor a staged copy.
fn ensure_generation(
    store: &NodeStore,
    key_id: &uuid::Uuid,
    generation: u32,
) -> Result<u32, Failure> {
    let internal = |e: StoreError| Failure::internal(e.to_string());
    let current = store.share_generation(key_id).map_err(internal)?;
    if current == generation {
        return Ok(current);
    }
    if current < generation && store.promote_share(key_id, generation).map_err(internal)? {
        return Ok(generation);
    }
    Err(Failure {
        kind: FailureKind::UnknownKey,
        culprit: None,
        message: format!(
            "this node holds generation {current} of key {key_id}, not the committed generation {generation}"
        ),
    })
}

/// Refuses a session whose scheme is not the one of the key's share: the gateway named
/// the wrong curve, and the session id would bind a scheme the share does not run.
fn check_scheme(share: &KeyShare, start: &SessionStart) -> Result<(), Failure> {
    let announced = dkms_mpc::Curve::of_scheme(start.scheme);
    if share.curve() != announced {
        return Err(Failure::bad(format!(
            "the session is for a {announced} key, but this node's share of key {} is on {}",
            start.key_id,
            share.curve()
        )));
    }
    Ok(())
}

/// Loads this node's live share of `key_id`.
async fn load_share(ctx: &Arc<NodeContext>, key_id: uuid::Uuid) -> Result<KeyShare, Failure> {
    let store = ctx.store.clone();
    blocking(move || -> Result<KeyShare, Failure> {
        let bytes = store
            .get_share(&key_id)
            .map_err(|e| Failure::internal(e.to_string()))?
            .ok_or_else(|| Failure {
                kind: FailureKind::UnknownKey,
                culprit: None,
                message: format!("this node holds no share of key {key_id}"),
            })?;
        KeyShare::from_bytes(&bytes).map_err(|e| Failure::internal(e.to_string()))
    })
    .await?
}

async fn prepare_refresh(
    ctx: &Arc<NodeContext>,
    start: &SessionStart,
    generation: u32,
    replacements: &[node::Replacement],
) -> Result<(Roster, Box<dyn Session>), Failure> {
    let store = ctx.store.clone();
    let key_id = start.key_id;
    // The gateway refreshes from its committed generation: promote it first if this node
    // missed the promotion.
    let previous = generation
        .checked_sub(1)
        .ok_or_else(|| Failure::bad("refresh to generation 0"))?;
    let current = blocking(move || {
        ensure_generation(&store, &key_id, previous)?;
        store
            .share_generation(&key_id)
            .map_err(|e| Failure::internal(e.to_string()))
    })
    .await??;
    if generation != current + 1 {
        return Err(Failure::bad(format!(
            "refresh to generation {generation} asked, but this node holds generation {current}"
        )));
    }
    let mut share = load_share(ctx, key_id).await?;
    check_scheme(&share, start)?;
    if !replacements.is_empty() {
        adopt_replacements(ctx, &mut share, replacements)?;
    } else if share.needs_refresh() {
        return Err(Failure::bad(
            "this node's share was rebuilt by a repair; only the recovery that made it can refresh it",
        ));
    }
    let participants: Vec<NodeTag> = share.participants().iter().map(|p| p.tag.clone()).collect();
    let encryption_keys: Vec<[u8; 32]> = share
        .participants()
        .iter()
        .map(|p| p.encryption_key)
        .collect();
    refuse_banned(
        &ctx.store,
        &participants
            .iter()
            .filter(|p| **p != ctx.tag)
            .cloned()
            .collect::<Vec<_>>(),
    )?;
    let public_key = share.public_key();
    let session_id = session_id(
        &start.key_id,
        start.scheme,
        &SessionKind::Refresh {
            threshold: share.threshold(),
            participants: &participants,
            encryption_keys: &encryption_keys,
            public_key: &public_key,
        },
        &start.nonce,
    );
    let roster = Roster {
        store: ctx.store.clone(),
        fault: Fault::None,
        me: share.my_index(),
        session_id,
        peers: share
            .participants()
            .iter()
            .enumerate()
            .map(|(i, p)| ((i + 1) as PartyIndex, p.clone()))
            .collect(),
        disposition: Disposition::Stage(generation),
        repair_help: None,
    };
    let session = dkms_mpc::refresh(share, dkms_mpc::RefreshConfig { session_id })
        .map_err(|e| Failure::bad(e.to_string()))?;
    Ok((roster, session))
}

/// Puts each of a recovery's replacements in its lost member's place in `share` (a
/// recipient's repaired share lists the replacements already). Every replacement must fit
/// the share as it was: a distinct slot each, a distinct newcomer each, never this node
/// in place of itself, and no more of them than the key can rebuild from one generation
/// (counted from this share, not taken from the gateway). Their keys are pinned only once
/// the refresh has produced this node's new share (see [`drive_session`]).
fn adopt_replacements(
    ctx: &Arc<NodeContext>,
    share: &mut KeyShare,
    replacements: &[node::Replacement],
) -> Result<(), Failure> {
    let members = share.participants().to_vec();
    let limit = node::max_lost_at_once(usize::from(share.threshold()), members.len());
    if replacements.len() > limit {
        return Err(Failure::bad(format!(
            "{} replacements in one refresh, but a {}-of-{} key can rebuild at most {limit} members at once",
            replacements.len(),
            share.threshold(),
            members.len()
        )));
    }
    let position = |tag: &NodeTag| members.iter().position(|p| p.tag == *tag);
    let mut slots: Vec<usize> = Vec::with_capacity(replacements.len());
    for (k, r) in replacements.iter().enumerate() {
        if replacements[..k]
            .iter()
            .any(|o| o.lost == r.lost || o.member.tag == r.member.tag)
        {
            return Err(Failure::bad(format!(
                "{} or {} is named in two replacements",
                r.lost, r.member.tag
            )));
        }
        let index = match (position(&r.lost), position(&r.member.tag)) {
            // Helpers and bystanders: the lost member is still listed.
            (Some(i), None) => i,
            (Some(i), Some(j)) if i == j => i,
            // A recipient: its repaired share lists the replacement already.
            (None, Some(j)) => j,
            _ => {
                return Err(Failure::bad(format!(
                    "the replacement of {} by {} does not fit this key's members",
                    r.lost, r.member.tag
                )));
            }
        };
        if slots.contains(&index) {
            return Err(Failure::bad(format!(
                "two replacements for the place of member {}",
                index + 1
            )));
        }
        slots.push(index);
        let member = ShareParticipant {
            tag: r.member.tag.clone(),
            encryption_key: r.member.encryption_key,
        };
        if members[index] != member && usize::from(share.my_index()) == index + 1 {
            return Err(Failure::bad(
                "this node cannot be the replacement of itself",
            ));
        }
        if r.member.tag == ctx.tag && r.member.encryption_key != ctx.enc.public_key() {
            return Err(Failure::bad(
                "the gateway announced a different encryption key for this node",
            ));
        }
    }
    for (r, index) in replacements.iter().zip(slots) {
        let member = ShareParticipant {
            tag: r.member.tag.clone(),
            encryption_key: r.member.encryption_key,
        };
        if members[index] != member {
            share
                .replace_participant((index + 1) as PartyIndex, member)
                .map_err(|e| Failure::bad(e.to_string()))?;
        }
    }
    Ok(())
}

/// After a recovery's refresh completed here: pin the replacements' keys, so later keys
/// with them work. Not before: a refresh that never ran through must not move a pin.
async fn pin_replacement(ctx: &Arc<NodeContext>, operation: &Operation) -> Result<(), Failure> {
    let Operation::Refresh { replacements, .. } = operation else {
        return Ok(());
    };
    let pins: Vec<(NodeTag, [u8; 32])> = replacements
        .iter()
        .filter(|r| r.member.tag != ctx.tag)
        .map(|r| (r.member.tag.clone(), r.member.encryption_key))
        .collect();
    if pins.is_empty() {
        return Ok(());
    }
    let store = ctx.store.clone();
    blocking(move || {
        pins.iter()
            .try_for_each(|(tag, key)| store.repin_peer(tag.as_str(), key))
    })
    .await?
    .map_err(|e| Failure::internal(e.to_string()))
}

/// The places (0-based, key order) of a repair's helpers: the first `threshold` of the
/// `members` places that the recovery does not replace.
fn repair_helper_places(members: usize, replaced: &[usize], threshold: usize) -> Vec<usize> {
    (0..members)
        .filter(|i| !replaced.contains(i))
        .take(threshold)
        .collect()
}

/// The members a recovery announces for after it (party order), and the position of
/// `member`, the node that takes a lost member's place, among them.
fn members_after(
    participants: &[node::Peer],
    member: &node::Peer,
    what: &str,
) -> Result<(Vec<ShareParticipant>, usize), Failure> {
    let after: Vec<ShareParticipant> = participants
        .iter()
        .cloned()
        .map(ShareParticipant::from)
        .collect();
    let position = after
        .iter()
        .position(|m| m.tag == member.tag && m.encryption_key == member.encryption_key)
        .ok_or_else(|| {
            Failure::bad(format!(
                "the replacement is not among the members after the {what}"
            ))
        })?;
    Ok((after, position))
}

/// A node that still holds a usable share of the key is not lost: it refuses to have a
/// share rebuilt or restored onto it.
async fn refuse_if_holding(
    ctx: &Arc<NodeContext>,
    key_id: uuid::Uuid,
    what: &str,
) -> Result<(), Failure> {
    let store = ctx.store.clone();
    let held = blocking(move || store.get_share(&key_id))
        .await?
        .map_err(|e| Failure::internal(e.to_string()))?;
    if let Some(bytes) = held
        && KeyShare::from_bytes(&bytes).is_ok_and(|s| !s.needs_refresh())
    {
        return Err(Failure::bad(format!(
            "this node holds a usable share of key {key_id}; it has nothing to {what}"
        )));
    }
    Ok(())
}

/// The parameters of a repair as the gateway sent them.
struct RepairParams<'a> {
    generation: u32,
    threshold: u8,
    public_key: &'a [u8],
    participants: &'a [node::Peer],
    replacement: &'a node::Replacement,
    also_replaced: &'a [node::Replacement],
    helpers: &'a [NodeTag],
    exportable: bool,
}

/// A repair: this node is either a helper (it holds a share of the key) or the recipient
/// (the replacement, holding no usable share).
async fn prepare_repair(
    ctx: &Arc<NodeContext>,
    start: &SessionStart,
    p: &RepairParams<'_>,
) -> Result<(Roster, Box<dyn Session>), Failure> {
    let key_id = start.key_id;
    let newcomer = &p.replacement.member;
    let (after, lost_index) = members_after(p.participants, newcomer, "repair")?;
    let mut unique: Vec<&NodeTag> = after.iter().map(|m| &m.tag).collect();
    unique.sort();
    unique.dedup();
    if unique.len() != after.len() {
        return Err(Failure::bad("a member is listed twice"));
    }
    let tags: Vec<NodeTag> = after.iter().map(|m| m.tag.clone()).collect();
    let keys: Vec<[u8; 32]> = after.iter().map(|m| m.encryption_key).collect();
    let index_of = |tag: &NodeTag| {
        tags.iter()
            .position(|t| t == tag)
            .map(|i| (i + 1) as PartyIndex)
            .ok_or_else(|| Failure::bad(format!("helper {tag} is not a member of the key")))
    };
    // The other members this recovery replaces: where their newcomers sit in `after`
    // and the lost tag a helper's share still names there.
    let mut replaced: Vec<(usize, &NodeTag)> = vec![(lost_index, &p.replacement.lost)];
    for r in p.also_replaced {
        let slot = after
            .iter()
            .position(|m| m.tag == r.member.tag && m.encryption_key == r.member.encryption_key)
            .ok_or_else(|| {
                Failure::bad(format!(
                    "the replacement of {} by {} is not among the members after the recovery",
                    r.lost, r.member.tag
                ))
            })?;
        if replaced
            .iter()
            .any(|(i, lost)| *i == slot || **lost == r.lost)
        {
            return Err(Failure::bad(format!(
                "{} or its place is named in two replacements",
                r.lost
            )));
        }
        replaced.push((slot, &r.lost));
    }
    let mut helper_indices = p
        .helpers
        .iter()
        .map(index_of)
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(h) = p.helpers.iter().zip(&helper_indices).find(|(_, i)| {
        replaced
            .iter()
            .any(|(slot, _)| usize::from(**i) == slot + 1)
    }) {
        return Err(Failure::bad(format!(
            "helper {} takes the place of a member this recovery replaces",
            h.0
        )));
    }
    // The helpers must be the first `threshold` members, in key order, that the recovery
    // does not replace (the gateway's own choice). With every helper recording all the
    // replaced members it is told of (`RepairHelp`), repairs of one generation cannot
    // use disjoint helper sets to rebuild more members than the limit.
    let slots: Vec<usize> = replaced.iter().map(|(slot, _)| *slot).collect();
    let expected: Vec<PartyIndex> =
        repair_helper_places(after.len(), &slots, usize::from(p.threshold))
            .into_iter()
            .map(|i| (i + 1) as PartyIndex)
            .collect();
    helper_indices.sort_unstable();
    if helper_indices != expected {
        return Err(Failure::bad(format!(
            "the helpers must be the first {} members, in key order, that the recovery does not replace",
            p.threshold
        )));
    }
    let helper_tags: Vec<NodeTag> = helper_indices
        .iter()
        .map(|&i| tags[usize::from(i) - 1].clone())
        .collect();
    let public_key: [u8; 33] = p
        .public_key
        .try_into()
        .map_err(|_| Failure::bad("the key's public key is not 33 bytes"))?;
    let sid = session_id(
        &key_id,
        start.scheme,
        &SessionKind::Repair {
            threshold: p.threshold,
            participants: &tags,
            encryption_keys: &keys,
            public_key: &public_key,
            lost: &p.replacement.lost,
            helpers: &helper_tags,
        },
        &start.nonce,
    );
    let lost = (lost_index + 1) as PartyIndex;
    let cfg = dkms_mpc::RepairConfig {
        session_id: sid,
        lost,
        helpers: helper_indices,
    };
    let others: Vec<NodeTag> = tags.iter().filter(|t| **t != ctx.tag).cloned().collect();
    refuse_banned(&ctx.store, &others)?;
    let roster = |me, disposition, repair_help| Roster {
        store: ctx.store.clone(),
        fault: Fault::None,
        disposition,
        repair_help,
        me,
        session_id: sid,
        peers: after
            .iter()
            .enumerate()
            .map(|(i, m)| ((i + 1) as PartyIndex, m.clone()))
            .collect(),
    };

    if newcomer.tag == ctx.tag {
        if newcomer.encryption_key != ctx.enc.public_key() {
            return Err(Failure::bad(
                "the gateway announced a different encryption key for this node",
            ));
        }
        refuse_if_holding(ctx, key_id, "recover").await?;
        let session = dkms_mpc::repair_recipient(
            dkms_mpc::RepairPublic {
                key_id,
                threshold: p.threshold,
                participants: after.clone(),
                public_key,
                exportable: p.exportable,
                curve: dkms_mpc::Curve::of_scheme(start.scheme),
            },
            cfg,
            lost,
        )
        .map_err(|e| Failure::bad(e.to_string()))?;
        return Ok((
            roster(lost, Disposition::Repaired(p.generation), None),
            session,
        ));
    }

    // A helper: its own share must be of the committed generation and list the same
    // members as the gateway says.
    if !p.helpers.contains(&ctx.tag) {
        return Err(Failure::bad(
            "this node is neither a helper nor the recipient",
        ));
    }
    let store = ctx.store.clone();
    let generation = p.generation;
    blocking(move || ensure_generation(&store, &key_id, generation)).await??;
    let share = load_share(ctx, key_id).await?;
    check_scheme(&share, start)?;
    let mine = share.participants();
    let agrees = mine.len() == after.len()
        && mine.iter().zip(&after).enumerate().all(|(i, (a, b))| {
            match replaced.iter().find(|(slot, _)| *slot == i) {
                Some((_, lost)) => a.tag == **lost,
                None => a == b,
            }
        });
    if !agrees || share.threshold() != p.threshold || share.public_key() != public_key {
        return Err(Failure::bad(
            "the key's members, threshold or public key differ from this node's share",
        ));
    }
    // The rebuilt shares of one generation stay fewer than the threshold (and leave
    // threshold members that lost nothing), counted from this node's own share.
    let limit = node::max_lost_at_once(usize::from(share.threshold()), mine.len());
    if replaced.len() > limit {
        return Err(Failure::bad(format!(
            "the recovery replaces {} members, but a {}-of-{} key can rebuild at most {limit} at once",
            replaced.len(),
            share.threshold(),
            mine.len()
        )));
    }
    if share.exportable() != p.exportable {
        return Err(Failure::bad(
            "the repair announces another exportable bit than this node's share holds",
        ));
    }
    let me = share.my_index();
    let session = dkms_mpc::repair_helper(share, cfg).map_err(|e| Failure::bad(e.to_string()))?;
    let help = Some(RepairHelp {
        generation,
        replaced: replaced.iter().map(|(_, lost)| (*lost).clone()).collect(),
        limit,
    });
    Ok((roster(me, Disposition::Store, help), session))
}

async fn prepare_sign(
    ctx: &Arc<NodeContext>,
    start: &SessionStart,
    signers: &[NodeTag],
    digest: &[u8; 32],
    generation: u32,
    derivation_path: &[u32],
) -> Result<(Roster, Box<dyn Session>), Failure> {
    let store = ctx.store.clone();
    let key_id = start.key_id;
    blocking(move || ensure_generation(&store, &key_id, generation)).await??;
    let share = load_share(ctx, key_id).await?;
    check_scheme(&share, start)?;
    if share.key_id() != key_id {
        return Err(Failure::internal("stored share belongs to another key"));
    }
    if share.needs_refresh() {
        // A recovery is under way or failed half-way: the gateway retries without us.
        return Err(Failure {
            kind: FailureKind::UnknownKey,
            culprit: None,
            message: format!(
                "this node's share of key {key_id} was rebuilt by a repair and signs only after the recovery's refresh"
            ),
        });
    }
    let participants: Vec<NodeTag> = share.participants().iter().map(|p| p.tag.clone()).collect();
    let mut indices = Vec::with_capacity(signers.len());
    for s in signers {
        let i = participants
            .iter()
            .position(|p| p == s)
            .ok_or_else(|| Failure::bad(format!("signer {s} does not hold a share of this key")))?;
        indices.push((i + 1) as PartyIndex);
    }
    if !signers.contains(&ctx.tag) {
        return Err(Failure::bad("this node is not among the signers"));
    }
    let others: Vec<NodeTag> = signers.iter().filter(|s| **s != ctx.tag).cloned().collect();
    refuse_banned(&ctx.store, &others)?;
    let session_id = session_id(
        &start.key_id,
        start.scheme,
        &SessionKind::Sign {
            threshold: share.threshold(),
            participants: &participants,
            signers,
            digest,
            derivation_path,
        },
        &start.nonce,
    );
    let roster = Roster {
        store: ctx.store.clone(),
        fault: signing_fault(),
        disposition: Disposition::Store,
        repair_help: None,
        me: share.my_index(),
        session_id,
        peers: share
            .participants()
            .iter()
            .enumerate()
            .map(|(i, p)| ((i + 1) as PartyIndex, p.clone()))
            .collect(),
    };
    let share = if derivation_path.is_empty() {
        share
    } else {
        if derivation_path.len() > dkms_mpc::derive::MAX_DEPTH {
            return Err(Failure::bad("derivation path is too deep"));
        }
        let path = derivation_path.to_vec();
        blocking(move || share.derive(&path))
            .await?
            .map_err(|e| Failure::bad(e.to_string()))?
    };
    let session = dkms_mpc::sign(
        share,
        SignConfig {
            session_id,
            signers: indices,
            digest: *digest,
        },
    )
    .map_err(|e| Failure::bad(e.to_string()))?;
    Ok((roster, session))
}

/// Stores this node's share of an imported key after checking that it is the share the
/// announced parameters describe.
async fn import_share(
    ctx: &Arc<NodeContext>,
    start: &SessionStart,
    threshold: u8,
    participants: &[node::Peer],
    sealed: &[u8],
    exportable: bool,
) -> Result<Outcome, Failure> {
    check_new_key(ctx, start, threshold, participants).await?;
    let ctx2 = ctx.clone();
    let key_id = start.key_id;
    let sealed = sealed.to_vec();
    let share =
        blocking(move || dkms_mpc::import::open_share(&ctx2.enc, &ctx2.tag, &key_id, &sealed))
            .await?
            .map_err(|e| {
                Failure::bad(format!("the sealed share does not open or validate: {e}"))
            })?;
    check_scheme(&share, start)?;
    let announced: Vec<ShareParticipant> = participants
        .iter()
        .cloned()
        .map(ShareParticipant::from)
        .collect();
    if share.threshold() != threshold || share.participants() != announced.as_slice() {
        return Err(Failure::bad(
            "the sealed share was made for other parameters than the ones announced",
        ));
    }
    if share.exportable() != exportable {
        return Err(Failure::bad(
            "the sealed share's exportable bit differs from the one announced",
        ));
    }
    finish(ctx, key_id, SessionOutput::Key(share)).await
}

/// Where a share sealed for outside the nodes goes.
enum Outward {
    /// A client's X25519 key, for a break-glass export.
    Export([u8; 32]),
    /// A custodian's X25519 key, for a backup.
    Backup([u8; 32]),
}

/// Seals this node's share of the committed `generation` for an export or a backup. An
/// export of a key not created exportable is refused here, whatever the gateway decided.
async fn seal_out(
    ctx: &Arc<NodeContext>,
    key_id: uuid::Uuid,
    generation: u32,
    to: Outward,
) -> Result<Outcome, Failure> {
    let store = ctx.store.clone();
    blocking(move || ensure_generation(&store, &key_id, generation)).await??;
    let share = load_share(ctx, key_id).await?;
    if share.key_id() != key_id {
        return Err(Failure::internal("stored share belongs to another key"));
    }
    let sealed = blocking(move || match to {
        Outward::Export(recipient) => dkms_mpc::export::seal_export(&share, generation, &recipient),
        Outward::Backup(custodian) => dkms_mpc::export::seal_backup(&share, generation, &custodian),
    })
    .await?
    .map_err(|e| match e {
        MpcError::BadParameters(m) => Failure::bad(m),
        other => Failure::internal(other.to_string()),
    })?;
    info!(generation, "share sealed for an export or backup");
    Ok(Outcome::Sealed { sealed })
}

/// The parameters of a restore as the gateway sent them.
struct RestoreParams<'a> {
    generation: u32,
    threshold: u8,
    public_key: &'a [u8],
    participants: &'a [node::Peer],
    replacement: &'a node::Replacement,
    sealed: &'a [u8],
}

/// Stores a share a custodian re-sealed to this node, in the lost member's place, as a
/// recovery's repair would: live at `generation`, and refreshed (with this node in every
/// member's share) by the refresh that follows.
async fn restore_share(
    ctx: &Arc<NodeContext>,
    start: &SessionStart,
    p: &RestoreParams<'_>,
) -> Result<Outcome, Failure> {
    let key_id = start.key_id;
    let me = &p.replacement.member;
    if me.tag != ctx.tag || me.encryption_key != ctx.enc.public_key() {
        return Err(Failure::bad(
            "the restore names another node or encryption key than this node's",
        ));
    }
    let (after, position) = members_after(p.participants, me, "restore")?;
    let public_key: [u8; 33] = p
        .public_key
        .try_into()
        .map_err(|_| Failure::bad("the key's public key is not 33 bytes"))?;
    refuse_if_holding(ctx, key_id, "restore").await?;
    let (ctx2, lost, generation, sealed) = (
        ctx.clone(),
        p.replacement.lost.clone(),
        p.generation,
        p.sealed.to_vec(),
    );
    let mut share = blocking(move || {
        dkms_mpc::export::open_restore(&ctx2.enc, &key_id, &lost, generation, &sealed)
    })
    .await?
    .map_err(|e| {
        Failure::bad(format!(
            "the restore blob does not open for this node, member and generation, or holds no valid share: {e}"
        ))
    })?;
    check_scheme(&share, start)?;
    let index = share.my_index();
    let agrees = share.threshold() == p.threshold
        && share.public_key() == public_key
        && usize::from(index) == position + 1
        && share.participants().len() == after.len()
        && share
            .participants()
            .iter()
            .zip(&after)
            .enumerate()
            .all(|(i, (a, b))| i == position || a == b);
    if !agrees {
        return Err(Failure::bad(
            "the restored share's key, threshold, position or members differ from the key's",
        ));
    }
    share
        .replace_participant(index, after[position].clone())
        .map_err(|e| Failure::bad(e.to_string()))?;
    // From here a restored share is what a repair would have made.
    store_repaired(ctx, key_id, generation, share).await
}

/// Keeps a refreshed share staged until the gateway commits its generation.
async fn stage(
    ctx: &Arc<NodeContext>,
    key_id: uuid::Uuid,
    generation: u32,
    share: KeyShare,
) -> Result<Outcome, Failure> {
    let (public_key, chain_code) = (share.public_key().to_vec(), share.chain_code());
    let store = ctx.store.clone();
    blocking(move || {
        let bytes = share.to_bytes();
        store.stage_share(&key_id, generation, &bytes)
    })
    .await?
    .map_err(|e| Failure::internal(format!("staging the refreshed share: {e}")))?;
    info!(generation, "refreshed share staged");
    Ok(Outcome::KeyGenerated {
        public_key,
        chain_code,
    })
}

async fn store_repaired(
    ctx: &Arc<NodeContext>,
    key_id: uuid::Uuid,
    generation: u32,
    share: KeyShare,
) -> Result<Outcome, Failure> {
    let store = ctx.store.clone();
    blocking(move || {
        let bytes = share.to_bytes();
        store.put_repaired_share(&key_id, generation, &bytes, |old| {
            KeyShare::from_bytes(old).is_ok_and(|s| s.needs_refresh())
        })
    })
    .await?
    .map_err(|e| Failure::internal(format!("storing the repaired or restored share: {e}")))?;
    info!(
        generation,
        "repaired or restored share stored; it signs after the recovery's refresh"
    );
    Ok(Outcome::Repaired)
}

/// Persists a new share (once, atomically) or hands back a signature.
async fn finish(
    ctx: &Arc<NodeContext>,
    key_id: uuid::Uuid,
    output: SessionOutput,
) -> Result<Outcome, Failure> {
    match output {
        SessionOutput::Key(share) => {
            let (public_key, chain_code) = (share.public_key().to_vec(), share.chain_code());
            let store = ctx.store.clone();
            blocking(move || {
                let bytes = share.to_bytes();
                store.put_share(&key_id, &bytes)
            })
            .await?
            .map_err(|e| Failure::internal(format!("storing the share: {e}")))?;
            info!("share stored");
            Ok(Outcome::KeyGenerated {
                public_key,
                chain_code,
            })
        }
        SessionOutput::Signature(sig) => Ok(Outcome::Signed {
            signature: sig.to_bytes().to_vec(),
        }),
        SessionOutput::Repaired => {
            info!("repair term delivered and confirmed by the recipient");
            Ok(Outcome::Repaired)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sealer::SoftwareSealer;

    #[test]
    fn a_banned_peer_is_refused_by_later_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let sealer = Arc::new(SoftwareSealer::from_key_file(&dir.path().join("k")).unwrap());
        let store = NodeStore::open(&dir.path().join("s.redb"), sealer).unwrap();
        let cheat: NodeTag = "cheat".parse().unwrap();
        let honest: NodeTag = "honest".parse().unwrap();
        assert!(refuse_banned(&store, &[cheat.clone(), honest.clone()]).is_ok());
        ban(&store, &cheat);
        ban(&store, &cheat); // idempotent
        let f = refuse_banned(&store, &[honest.clone(), cheat.clone()]).unwrap_err();
        assert_eq!(f.culprit, Some(cheat));
        assert!(matches!(f.kind, FailureKind::BadParameters));
        assert!(refuse_banned(&store, &[honest]).is_ok());
    }

    /// An imported share's exportable bit, sealed by the dealer, must be the one the
    /// gateway announces: a gateway cannot turn an import exportable on its own.
    #[test]
    fn an_import_whose_announced_exportable_bit_differs_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let sealer = Arc::new(SoftwareSealer::from_key_file(&dir.path().join("k")).unwrap());
        let store = Arc::new(NodeStore::open(&dir.path().join("s.redb"), sealer).unwrap());
        let ctx = Arc::new(NodeContext::new("node1".parse().unwrap(), store.clone()).unwrap());
        let other = EncryptionKeypair::from_seed(&[3; 32]);
        let peers = vec![
            node::Peer {
                tag: ctx.tag.clone(),
                encryption_key: ctx.enc.public_key(),
            },
            node::Peer {
                tag: "node2".parse().unwrap(),
                encryption_key: other.public_key(),
            },
        ];
        let members: Vec<ShareParticipant> = peers.iter().cloned().map(Into::into).collect();
        let pem = "-----BEGIN EC PRIVATE KEY-----\nMC4CAQEEIAcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHoAcGBSuBBAAK\n-----END EC PRIVATE KEY-----\n";
        let secret =
            dkms_mpc::import::parse_private_key_pem(pem, None, dkms_mpc::Curve::Secp256k1).unwrap();
        let key_id = uuid::Uuid::new_v4();
        let mut shares = dkms_mpc::import::split(&secret, key_id, 2, members).unwrap();
        let sealed = dkms_mpc::import::seal_share(&shares.remove(0)).unwrap();
        let start = SessionStart {
            session: 1,
            key_id,
            scheme: node::Scheme::Dkls23Secp256k1,
            operation: Operation::Delete,
            nonce: [0; 32],
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let f = rt
            .block_on(import_share(&ctx, &start, 2, &peers, &sealed, true))
            .err()
            .unwrap();
        assert_eq!(f.kind, FailureKind::BadParameters);
        assert!(
            f.message.contains("exportable bit differs"),
            "{}",
            f.message
        );
        assert!(
            store.get_share(&key_id).unwrap().is_none(),
            "nothing stored"
        );
        assert!(matches!(
            rt.block_on(import_share(&ctx, &start, 2, &peers, &sealed, false)),
            Ok(Outcome::KeyGenerated { .. })
        ));
    }

    /// The node enforces `exportable` itself: whatever the gateway asks, a share of a key
    /// created non-exportable is not sealed out; an exportable one is, and only the
    /// recipient opens it.
    #[test]
    fn a_node_refuses_to_export_a_non_exportable_share() {
        let dir = tempfile::tempdir().unwrap();
        let sealer = Arc::new(SoftwareSealer::from_key_file(&dir.path().join("k")).unwrap());
        let store = Arc::new(NodeStore::open(&dir.path().join("s.redb"), sealer).unwrap());
        let ctx = Arc::new(NodeContext::new("node1".parse().unwrap(), store.clone()).unwrap());
        let other = EncryptionKeypair::from_seed(&[3; 32]);
        let members = vec![
            ShareParticipant {
                tag: ctx.tag.clone(),
                encryption_key: ctx.enc.public_key(),
            },
            ShareParticipant {
                tag: "node2".parse().unwrap(),
                encryption_key: other.public_key(),
            },
        ];
        let pem = "-----BEGIN EC PRIVATE KEY-----\nMC4CAQEEIAcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHoAcGBSuBBAAK\n-----END EC PRIVATE KEY-----\n";
        let secret =
            dkms_mpc::import::parse_private_key_pem(pem, None, dkms_mpc::Curve::Secp256k1).unwrap();
        let (_, client) = dkms_mpc::export::new_recipient().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        for exportable in [false, true] {
            let key_id = uuid::Uuid::new_v4();
            let mut shares = dkms_mpc::import::split(&secret, key_id, 2, members.clone()).unwrap();
            let mine = shares.remove(0).with_exportable(exportable);
            store.put_share(&key_id, &mine.to_bytes()).unwrap();
            let asked = rt.block_on(seal_out(
                &ctx,
                key_id,
                0,
                Outward::Export(client.public_key()),
            ));
            match (exportable, asked) {
                (false, Err(f)) => {
                    assert_eq!(f.kind, FailureKind::BadParameters);
                    assert!(
                        f.message.contains("not created exportable"),
                        "{}",
                        f.message
                    );
                }
                (true, Ok(Outcome::Sealed { sealed })) => {
                    let opened =
                        dkms_mpc::export::open_export(&client, &key_id, &ctx.tag, 0, &sealed)
                            .unwrap();
                    assert_eq!(opened.index, 1);
                    assert!(
                        dkms_mpc::export::open_export(&other, &key_id, &ctx.tag, 0, &sealed)
                            .is_err()
                    );
                }
                (e, other) => panic!("exportable {e}: unexpected {:?}", other.is_ok()),
            }
        }
    }

    /// A `t`-of-`n` key split by a dealer among node1 (this node, `ctx`) and node2..node`n`,
    /// with node1's share stored at generation 0.
    struct Split {
        ctx: Arc<NodeContext>,
        key_id: uuid::Uuid,
        peers: Vec<node::Peer>,
        /// node1's share, encoded (a share is not `Clone`).
        bytes: Vec<u8>,
        share: KeyShare,
        rt: tokio::runtime::Runtime,
        _dir: tempfile::TempDir,
    }

    impl Split {
        fn mine(&self) -> KeyShare {
            KeyShare::from_bytes(&self.bytes).unwrap()
        }
    }

    fn done<T>(r: Result<T, Failure>) -> T {
        r.unwrap_or_else(|f| panic!("refused: {}", f.message))
    }

    fn peer(n: u8) -> node::Peer {
        node::Peer {
            tag: format!("node{n}").parse().unwrap(),
            encryption_key: EncryptionKeypair::from_seed(&[n; 32]).public_key(),
        }
    }

    fn split(t: u8, n: u8) -> Split {
        let dir = tempfile::tempdir().unwrap();
        let sealer = Arc::new(SoftwareSealer::from_key_file(&dir.path().join("k")).unwrap());
        let store = Arc::new(NodeStore::open(&dir.path().join("s.redb"), sealer).unwrap());
        let ctx = Arc::new(NodeContext::new("node1".parse().unwrap(), store.clone()).unwrap());
        let mut peers = vec![node::Peer {
            tag: ctx.tag.clone(),
            encryption_key: ctx.enc.public_key(),
        }];
        peers.extend((2..=n).map(peer));
        let members: Vec<ShareParticipant> = peers.iter().cloned().map(Into::into).collect();
        let pem = "-----BEGIN EC PRIVATE KEY-----\nMC4CAQEEIAcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHoAcGBSuBBAAK\n-----END EC PRIVATE KEY-----\n";
        let secret =
            dkms_mpc::import::parse_private_key_pem(pem, None, dkms_mpc::Curve::Secp256k1).unwrap();
        let key_id = uuid::Uuid::new_v4();
        let share = dkms_mpc::import::split(&secret, key_id, t, members)
            .unwrap()
            .remove(0);
        let bytes = share.to_bytes().to_vec();
        store.put_share(&key_id, &bytes).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Split {
            ctx,
            key_id,
            peers,
            bytes,
            share,
            rt,
            _dir: dir,
        }
    }

    fn replaced(lost: u8, by: node::Peer) -> node::Replacement {
        node::Replacement {
            lost: format!("node{lost}").parse().unwrap(),
            member: by,
        }
    }

    /// node4 back in place with a new key (seed 14), node5 replaced by node6.
    fn two_replacements() -> Vec<node::Replacement> {
        let node4_again = node::Peer {
            encryption_key: EncryptionKeypair::from_seed(&[14; 32]).public_key(),
            ..peer(4)
        };
        vec![replaced(4, node4_again), replaced(5, peer(6))]
    }

    #[test]
    fn a_refresh_adopts_as_many_replacements_as_the_key_allows_and_no_more() {
        let k = split(3, 5);
        let two = two_replacements();
        let mut share = k.mine();
        done(adopt_replacements(&k.ctx, &mut share, &two));
        let tags: Vec<&str> = share
            .participants()
            .iter()
            .map(|p| p.tag.as_str())
            .collect();
        assert_eq!(tags, ["node1", "node2", "node3", "node4", "node6"]);
        assert_eq!(
            share.participants()[3].encryption_key,
            two[0].member.encryption_key
        );
        // A share that lists the replacements already (a recipient's) takes them as is.
        let mut again = KeyShare::from_bytes(&share.to_bytes()).unwrap();
        done(adopt_replacements(&k.ctx, &mut again, &two));
        assert_eq!(again.participants(), share.participants());

        let refused = |list: Vec<node::Replacement>, words: &str| {
            let mut share = k.mine();
            let f = adopt_replacements(&k.ctx, &mut share, &list).unwrap_err();
            assert_eq!(f.kind, FailureKind::BadParameters);
            assert!(f.message.contains(words), "{words}: {}", f.message);
            assert_eq!(share.participants(), k.share.participants(), "unchanged");
        };
        // A third member would let the rebuilt shares of one generation reach t = 3.
        let mut three = two.clone();
        three.push(replaced(3, peer(7)));
        refused(three, "at most 2");
        refused(
            vec![replaced(5, peer(6)), replaced(5, peer(7))],
            "named in two replacements",
        );
        refused(
            vec![replaced(4, peer(6)), replaced(5, peer(6))],
            "named in two replacements",
        );
        refused(
            vec![replaced(5, peer(6)), replaced(6, peer(7))],
            "does not fit",
        );
        refused(vec![replaced(1, peer(1))], "replacement of itself");
    }

    fn repair_params<'a>(
        k: &'a Split,
        after: &'a [node::Peer],
        replacement: &'a node::Replacement,
        also_replaced: &'a [node::Replacement],
        helpers: &'a [NodeTag],
    ) -> RepairParams<'a> {
        RepairParams {
            generation: 0,
            threshold: k.share.threshold(),
            public_key: Box::leak(Box::new(k.share.public_key())),
            participants: after,
            replacement,
            also_replaced,
            helpers,
            exportable: false,
        }
    }

    fn start(key_id: uuid::Uuid) -> SessionStart {
        SessionStart {
            session: 1,
            key_id,
            scheme: node::Scheme::Dkls23Secp256k1,
            operation: Operation::Delete,
            nonce: [0; 32],
        }
    }

    /// A helper rebuilds one lost member while another of the same recovery is listed by
    /// its newcomer; it checks every other member against its own share, refuses a helper
    /// in a replaced place, and refuses a recovery that replaces more members than its
    /// own share's threshold allows.
    #[test]
    fn a_helper_accepts_the_other_replacements_of_its_recovery_up_to_the_limit() {
        let k = split(3, 5);
        let two = two_replacements();
        let mut after = k.peers.clone();
        after[3] = two[0].member.clone();
        after[4] = two[1].member.clone();
        let helpers: Vec<NodeTag> = after[..3].iter().map(|p| p.tag.clone()).collect();
        let run = |p: RepairParams<'_>| {
            k.rt.block_on(prepare_repair(&k.ctx, &start(k.key_id), &p))
                .map(|(roster, _)| roster)
        };
        let roster = done(run(repair_params(&k, &after, &two[0], &two[1..], &helpers)));
        let help = roster.repair_help.unwrap();
        let named: Vec<&str> = help.replaced.iter().map(NodeTag::as_str).collect();
        assert_eq!((named, help.limit), (vec!["node4", "node5"], 2));
        let roster = done(run(repair_params(&k, &after, &two[1], &two[..1], &helpers)));
        assert_eq!(roster.repair_help.unwrap().replaced[0].as_str(), "node5");

        let refused = |p: RepairParams<'_>, words: &str| {
            let f = run(p).err().unwrap();
            assert_eq!(f.kind, FailureKind::BadParameters);
            assert!(f.message.contains(words), "{words}: {}", f.message);
        };
        // Without the other replacement named, node6 in node5's place is a wrong member.
        refused(
            repair_params(&k, &after, &two[0], &[], &helpers),
            "members, threshold or public key differ",
        );
        // The helpers are the first three members the recovery does not replace: a
        // gateway cannot pick another set for a repair of node4 alone.
        let mut only_node4 = k.peers.clone();
        only_node4[3] = two[0].member.clone();
        let skip_node3: Vec<NodeTag> = ["node1", "node2", "node5"]
            .iter()
            .map(|t| t.parse().unwrap())
            .collect();
        refused(
            repair_params(&k, &only_node4, &two[0], &[], &skip_node3),
            "must be the first 3 members",
        );
        done(run(repair_params(&k, &only_node4, &two[0], &[], &helpers)));
        // A replaced member cannot help.
        let bad_helpers: Vec<NodeTag> = ["node1", "node2", "node6"]
            .iter()
            .map(|t| t.parse().unwrap())
            .collect();
        refused(
            repair_params(&k, &after, &two[0], &two[1..], &bad_helpers),
            "takes the place of a member this recovery replaces",
        );
        refused(
            repair_params(&k, &after, &two[0], &[two[0].clone()], &helpers),
            "named in two replacements",
        );

        // 3-of-6: two replaced members pass, a third is refused by the node itself.
        let k = split(3, 6);
        let mut after = k.peers.clone();
        let all = [
            replaced(4, peer(14)),
            replaced(5, peer(15)),
            replaced(6, peer(16)),
        ];
        for (i, r) in all.iter().enumerate() {
            after[3 + i] = r.member.clone();
        }
        let helpers: Vec<NodeTag> = after[..3].iter().map(|p| p.tag.clone()).collect();
        let mut two_after = after.clone();
        two_after[5] = k.peers[5].clone();
        let run = |p: RepairParams<'_>| {
            k.rt.block_on(prepare_repair(&k.ctx, &start(k.key_id), &p))
                .map(|(roster, _)| roster)
        };
        assert_eq!(
            done(run(repair_params(
                &k,
                &two_after,
                &all[0],
                &all[1..2],
                &helpers
            )))
            .repair_help
            .unwrap()
            .limit,
            2
        );
        let f = run(repair_params(&k, &after, &all[0], &all[1..], &helpers))
            .err()
            .unwrap();
        assert!(f.message.contains("at most 2"), "{}", f.message);
    }

    /// The rule of `prepare_repair` and `record_repair_help` against a gateway that
    /// splits lost members across repairs: helpers fixed by the replaced set, each
    /// recording every member replaced by the repairs it helped, at most
    /// `max_lost_at_once` of them. Every strategy (any replaced sets, each repaired as
    /// often as wished) is searched: none rebuilds `t` members of one generation.
    /// Without fixed helpers (any t members outside the set), 3-of-5 would allow it.
    #[test]
    fn no_split_of_repairs_rebuilds_threshold_members_in_one_generation() {
        fn sets(n: usize, max: usize) -> Vec<Vec<usize>> {
            let mut out: Vec<Vec<usize>> = vec![vec![]];
            for i in 0..n {
                let more: Vec<Vec<usize>> = out
                    .iter()
                    .filter(|s| s.len() < max)
                    .map(|s| [s.as_slice(), &[i]].concat())
                    .collect();
                out.extend(more);
            }
            out.retain(|s| !s.is_empty());
            out
        }
        /// Extends `recorded` (per helper) with repairs of `options[from..]`; true if some
        /// strategy replaces `t` members in all.
        fn reaches(
            n: usize,
            t: usize,
            limit: usize,
            options: &[Vec<usize>],
            from: usize,
            recorded: &[Vec<usize>],
            covered: &[usize],
        ) -> bool {
            if covered.len() >= t {
                return true;
            }
            for (k, set) in options.iter().enumerate().skip(from) {
                if set.iter().all(|m| covered.contains(m)) {
                    continue;
                }
                let helpers = repair_helper_places(n, set, t);
                let mut next = recorded.to_vec();
                let fits = helpers.iter().all(|&h| {
                    for m in set {
                        if !next[h].contains(m) {
                            next[h].push(*m);
                        }
                    }
                    next[h].len() <= limit
                });
                if !fits {
                    continue;
                }
                let mut more = covered.to_vec();
                more.extend(set.iter().filter(|m| !covered.contains(m)));
                if reaches(n, t, limit, options, k + 1, &next, &more) {
                    return true;
                }
            }
            false
        }
        for (t, n) in [
            (2, 3),
            (2, 4),
            (3, 5),
            (3, 6),
            (4, 6),
            (3, 7),
            (4, 7),
            (2, 8),
        ] {
            let limit = node::max_lost_at_once(t, n);
            let options = sets(n, limit);
            assert_eq!(repair_helper_places(n, &[], t), (0..t).collect::<Vec<_>>());
            assert!(
                !reaches(n, t, limit, &options, 0, &vec![vec![]; n], &[]),
                "{t}-of-{n}: a split of repairs rebuilds {t} members"
            );
        }
        // Why the helpers are fixed: with any three helpers outside the rebuilt member,
        // each recording only that member, these three repairs of a 3-of-5 key stay within
        // two members per helper and rebuild three.
        let free_choice = [(0, [1, 2, 3]), (1, [0, 2, 4]), (2, [0, 1, 3])];
        let mut per_helper = vec![Vec::new(); 5];
        for (rebuilt, helpers) in free_choice {
            assert!(!helpers.contains(&rebuilt));
            for h in helpers {
                per_helper[h].push(rebuilt);
            }
        }
        assert!(
            per_helper
                .iter()
                .all(|r| r.len() <= node::max_lost_at_once(3, 5))
        );
        assert!(
            free_choice
                .iter()
                .any(|(rebuilt, helpers)| repair_helper_places(5, &[*rebuilt], 3) != helpers)
        );
        // The honest recovery of two of a 3-of-5 key fits: helpers 0, 1, 2 record {3, 4}.
        assert_eq!(repair_helper_places(5, &[3, 4], 3), [0, 1, 2]);
        assert_eq!(repair_helper_places(5, &[0, 2], 3), [1, 3, 4]);
    }
}
