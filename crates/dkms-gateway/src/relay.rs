//! The protocol relay: one WebSocket per node (the node dials out), identity checks on
//! connect, and forwarding of sealed node-to-node messages within a session.
//!
//! The relay sees only HPKE ciphertexts. It checks that sender and recipient belong to
//! the session so that a node cannot use the gateway to reach nodes outside it.

use crate::AppState;
use axum::extract::ws::{Message, WebSocket};
use axum::extract::{State, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use dkms_proto::NodeTag;
use dkms_proto::node::{
    self, FromNode, LINK_VERSION, NodeIdentity, Outcome, SessionFailure, SessionRef, SessionStart,
    ToNode,
};
use futures_util::{SinkExt, StreamExt};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// How often the gateway pings each node link.
const PING_INTERVAL: Duration = Duration::from_secs(20);

/// Frames queued towards one node before the relay applies back-pressure.
const NODE_QUEUE: usize = 1024;
/// Events buffered per session; a party sends at most a few, so overflow means abuse.
const SESSION_EVENTS: usize = 256;

/// What a session's orchestrator hears about its parties.
#[derive(Debug)]
pub enum SessionEvent {
    Done(NodeTag, Outcome),
    Failed(NodeTag, SessionFailure),
    Disconnected(NodeTag),
}

struct NodeConn {
    conn_id: u64,
    tx: mpsc::Sender<ToNode>,
}

struct SessionEntry {
    participants: HashSet<NodeTag>,
    events: mpsc::Sender<SessionEvent>,
    /// Messages relayed from each party, to name the ones that fell silent.
    sent: HashMap<NodeTag, u32>,
    /// Parties whose start frame is queued. A fast party's first message can reach the
    /// relay before a slower party's start has been sent; the node would drop a message
    /// for a session it does not know, so such messages wait here until the start is out.
    started: HashSet<NodeTag>,
    held: Vec<(NodeTag, ToNode)>,
}

/// Messages held for one session before the relay treats the sender as abusive.
const HELD_PER_SESSION: usize = 1024;

/// Live node connections and running sessions.
#[derive(Default)]
pub struct Hub {
    nodes: Mutex<HashMap<NodeTag, NodeConn>>,
    sessions: Mutex<HashMap<SessionRef, SessionEntry>>,
    next_id: AtomicU64,
}

/// A registered session; dropping it unregisters the session.
pub struct SessionHandle<'a> {
    hub: &'a Hub,
    pub session: SessionRef,
    pub events: mpsc::Receiver<SessionEvent>,
}

impl Drop for SessionHandle<'_> {
    fn drop(&mut self) {
        if let Ok(mut s) = self.hub.sessions.lock() {
            s.remove(&self.session);
        }
    }
}

impl Hub {
    pub fn connected(&self) -> Vec<NodeTag> {
        let mut v: Vec<NodeTag> = self
            .nodes
            .lock()
            .map(|n| n.keys().cloned().collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    pub fn is_connected(&self, tag: &NodeTag) -> bool {
        self.nodes
            .lock()
            .map(|n| n.contains_key(tag))
            .unwrap_or(false)
    }

    /// Registers a session over `participants` and returns its handle.
    pub fn open_session(&self, participants: &[NodeTag]) -> SessionHandle<'_> {
        let session = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = mpsc::channel(SESSION_EVENTS);
        if let Ok(mut s) = self.sessions.lock() {
            s.insert(
                session,
                SessionEntry {
                    participants: participants.iter().cloned().collect(),
                    events: tx,
                    sent: HashMap::new(),
                    started: HashSet::new(),
                    held: Vec::new(),
                },
            );
        }
        SessionHandle {
            hub: self,
            session,
            events: rx,
        }
    }

    /// The parties that sent fewer messages than the others in a session (those a stalled
    /// session waits for); empty when everyone sent as much.
    pub fn laggards(&self, session: SessionRef) -> Vec<NodeTag> {
        let Ok(s) = self.sessions.lock() else {
            return Vec::new();
        };
        let Some(e) = s.get(&session) else {
            return Vec::new();
        };
        let count = |p: &NodeTag| e.sent.get(p).copied().unwrap_or(0);
        let max = e.participants.iter().map(count).max().unwrap_or(0);
        let mut v: Vec<NodeTag> = e
            .participants
            .iter()
            .filter(|p| count(p) < max)
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// Sends a frame to a connected node; false if it is not connected.
    pub async fn send_to(&self, tag: &NodeTag, msg: ToNode) -> bool {
        let tx = match self.nodes.lock() {
            Ok(n) => n.get(tag).map(|c| c.tx.clone()),
            Err(_) => None,
        };
        match tx {
            Some(tx) => tx.send(msg).await.is_ok(),
            None => false,
        }
    }

    /// Sends a session's start to one party, then whatever its peers sent it meanwhile.
    /// The node's session buffers messages of any round, so held messages may arrive after
    /// later ones without harm.
    pub async fn start(&self, tag: &NodeTag, start: SessionStart) -> bool {
        let session = start.session;
        if !self.send_to(tag, ToNode::Start(start)).await {
            return false;
        }
        let held: Vec<ToNode> = match self.sessions.lock() {
            Ok(mut s) => match s.get_mut(&session) {
                Some(e) => {
                    e.started.insert(tag.clone());
                    let (mine, rest) = std::mem::take(&mut e.held)
                        .into_iter()
                        .partition(|(to, _)| to == tag);
                    e.held = rest;
                    mine.into_iter().map(|(_, m)| m).collect()
                }
                None => Vec::new(),
            },
            Err(_) => Vec::new(),
        };
        for msg in held {
            if !self.send_to(tag, msg).await {
                return false;
            }
        }
        true
    }

    fn session_event(&self, session: SessionRef, from: &NodeTag, ev: SessionEvent) {
        if let Ok(s) = self.sessions.lock()
            && let Some(entry) = s.get(&session)
            && entry.participants.contains(from)
        {
            let _ = entry.events.try_send(ev);
        }
    }

    /// Forwards a sealed message if both ends belong to the session.
    async fn relay(
        &self,
        session: SessionRef,
        from: &NodeTag,
        to: NodeTag,
        round: u8,
        payload: Vec<u8>,
    ) {
        let msg = ToNode::Deliver {
            session,
            from: from.clone(),
            round,
            payload,
        };
        let msg = match self.sessions.lock() {
            Ok(mut s) => match s.get_mut(&session) {
                Some(e)
                    if e.participants.contains(from)
                        && e.participants.contains(&to)
                        && *from != to =>
                {
                    *e.sent.entry(from.clone()).or_default() += 1;
                    if e.started.contains(&to) {
                        Some(msg)
                    } else {
                        if e.held.len() < HELD_PER_SESSION {
                            e.held.push((to.clone(), msg));
                        } else {
                            warn!(session, %from, "too many messages before the session started; dropping");
                        }
                        None
                    }
                }
                _ => {
                    debug!(session, %from, %to, "dropping message outside its session");
                    None
                }
            },
            Err(_) => None,
        };
        let Some(msg) = msg else {
            return;
        };
        if !self.send_to(&to, msg).await {
            debug!(session, %to, "recipient not connected");
        }
    }

    fn attach(&self, tag: &NodeTag, tx: mpsc::Sender<ToNode>) -> u64 {
        let conn_id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        if let Ok(mut n) = self.nodes.lock()
            && n.insert(tag.clone(), NodeConn { conn_id, tx }).is_some()
        {
            info!(node = %tag, "node reconnected; the previous connection is replaced");
        }
        conn_id
    }

    /// Drops a node's connection (its identity was unpinned); its sessions hear of it.
    pub fn evict(&self, tag: &NodeTag) {
        let conn_id = self
            .nodes
            .lock()
            .ok()
            .and_then(|n| n.get(tag).map(|c| c.conn_id));
        if let Some(id) = conn_id {
            self.detach(tag, id);
        }
    }

    fn detach(&self, tag: &NodeTag, conn_id: u64) {
        let removed = match self.nodes.lock() {
            Ok(mut n) => {
                if n.get(tag).is_some_and(|c| c.conn_id == conn_id) {
                    n.remove(tag);
                    true
                } else {
                    false
                }
            }
            Err(_) => false,
        };
        if removed && let Ok(s) = self.sessions.lock() {
            for entry in s.values() {
                if entry.participants.contains(tag) {
                    let _ = entry
                        .events
                        .try_send(SessionEvent::Disconnected(tag.clone()));
                }
            }
        }
    }
}

/// `GET /api/node/link`: a node's WebSocket.
pub async fn node_link(
    State(state): State<AppState>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(_) => {
            return crate::error::ApiError::invalid(
                "this endpoint is the node link: connect with a WebSocket upgrade",
            )
            .into_response();
        }
    };
    ws.max_message_size(node::MAX_FRAME_BYTES)
        .max_frame_size(node::MAX_FRAME_BYTES)
        .on_upgrade(move |socket| async move {
            if let Err(e) = serve_node(state, socket).await {
                debug!(error = %e, "node link closed");
            }
        })
}

async fn recv_frame(socket: &mut WebSocket) -> Result<Option<FromNode>, String> {
    loop {
        match socket.recv().await {
            None => return Ok(None),
            Some(Err(e)) => return Err(e.to_string()),
            Some(Ok(Message::Binary(b))) => {
                return node::decode::<FromNode>(&b)
                    .map(Some)
                    .map_err(|e| e.to_string());
            }
            Some(Ok(Message::Close(_))) => return Ok(None),
            Some(Ok(_)) => continue,
        }
    }
}

async fn send_frame(socket: &mut WebSocket, msg: &ToNode) -> Result<(), String> {
    socket
        .send(Message::Binary(node::encode(msg).into()))
        .await
        .map_err(|e| e.to_string())
}

async fn serve_node(state: AppState, mut socket: WebSocket) -> Result<(), String> {
    let mut nonce = [0u8; 32];
    getrandom::fill(&mut nonce).map_err(|e| e.to_string())?;
    send_frame(
        &mut socket,
        &ToNode::Challenge {
            link_version: LINK_VERSION,
            nonce,
        },
    )
    .await?;
    let hello = tokio::time::timeout(Duration::from_secs(10), recv_frame(&mut socket))
        .await
        .map_err(|_| "no hello within 10 s".to_string())??;
    let Some(FromNode::Hello {
        link_version,
        tag,
        identity,
        join_token,
        signature,
    }) = hello
    else {
        return Err("first frame was not a hello".into());
    };
    if let Err(reason) = admit(
        &state,
        link_version,
        &nonce,
        &tag,
        &identity,
        join_token,
        &signature,
    )
    .await
    {
        warn!(node = %tag, %reason, "node refused");
        let _ = send_frame(&mut socket, &ToNode::Refused { reason }).await;
        let _ = socket.close().await;
        return Ok(());
    }
    send_frame(&mut socket, &ToNode::Welcome).await?;
    info!(node = %tag, "node connected");

    let (tx, mut rx) = mpsc::channel::<ToNode>(NODE_QUEUE);
    let conn_id = state.hub.attach(&tag, tx);
    let (mut sink, mut stream) = socket.split();
    let writer = tokio::spawn(async move {
        // Pings keep idle links alive through proxies and NAT, which drop silent connections.
        let mut ping = tokio::time::interval(PING_INTERVAL);
        ping.tick().await;
        loop {
            let frame = tokio::select! {
                msg = rx.recv() => match msg {
                    Some(msg) => Message::Binary(node::encode(&msg).into()),
                    None => break,
                },
                _ = ping.tick() => Message::Ping(Vec::new().into()),
            };
            if sink.send(frame).await.is_err() {
                break;
            }
        }
    });
    let result = loop {
        let frame = match stream.next().await {
            None => break Ok(()),
            Some(Err(e)) => break Err(e.to_string()),
            Some(Ok(Message::Binary(b))) => b,
            Some(Ok(Message::Close(_))) => break Ok(()),
            Some(Ok(_)) => continue,
        };
        match node::decode::<FromNode>(&frame) {
            Ok(FromNode::Send {
                session,
                to,
                round,
                payload,
            }) => state.hub.relay(session, &tag, to, round, payload).await,
            Ok(FromNode::Done { session, outcome }) => {
                state
                    .hub
                    .session_event(session, &tag, SessionEvent::Done(tag.clone(), outcome))
            }
            Ok(FromNode::Failed { session, failure }) => {
                state
                    .hub
                    .session_event(session, &tag, SessionEvent::Failed(tag.clone(), failure))
            }
            Ok(FromNode::Hello { .. }) => warn!(node = %tag, "ignoring a second hello"),
            Err(e) => warn!(node = %tag, error = %e, "ignoring an undecodable frame"),
        }
    };
    state.hub.detach(&tag, conn_id);
    writer.abort();
    info!(node = %tag, "node disconnected");
    result
}

/// Checks a node's hello: known tag, valid join token on first join, pinned identity
/// afterwards, and a signature over the challenge by the presented identity key.
async fn admit(
    state: &AppState,
    link_version: u16,
    nonce: &[u8; 32],
    tag: &NodeTag,
    identity: &NodeIdentity,
    join_token: Option<String>,
    signature: &[u8],
) -> Result<(), String> {
    if link_version != LINK_VERSION {
        return Err(format!(
            "link version {link_version} is not supported (gateway speaks {LINK_VERSION})"
        ));
    }
    let transcript = node::hello_transcript(nonce, tag, identity);
    if !verify_ed25519(&identity.signing_key, &transcript, signature) {
        return Err("identity proof does not verify".into());
    }
    let row = state
        .store
        .get_node(tag.as_str())
        .await
        .map_err(|e| format!("store: {e}"))?
        .ok_or_else(|| format!("node tag {tag} is not registered; create it with createPod"))?;
    let sk = hex::encode(identity.signing_key);
    let ek = hex::encode(identity.encryption_key);
    let pinned = |row: &dkms_store::NodeRow| {
        if row.signing_key.as_deref() != Some(sk.as_str())
            || row.encryption_key.as_deref() != Some(ek.as_str())
        {
            return Err("identity keys differ from the ones pinned when this node joined".into());
        }
        Ok(())
    };
    if row.status == dkms_store::NODE_ACTIVE {
        return pinned(&row);
    }
    let token = join_token.ok_or("this node has not joined yet and sent no join token")?;
    let ok = state
        .store
        .activate_node(
            tag.as_str(),
            &crate::auth::hash_token(&token),
            &sk,
            &ek,
            state.clock.now_ms(),
        )
        .await
        .map_err(|e| format!("store: {e}"))?;
    if !ok {
        // A node linked to several gateways presents its token to each at first start;
        // one of them pinned it meanwhile, and then the pinned identity decides.
        return match state.store.get_node(tag.as_str()).await {
            Ok(Some(row)) if row.status == dkms_store::NODE_ACTIVE => pinned(&row),
            _ => Err("invalid or already used join token".into()),
        };
    }
    info!(node = %tag, "node joined; identity pinned");
    Ok(())
}

fn verify_ed25519(public: &[u8; 32], msg: &[u8], sig: &[u8]) -> bool {
    let Ok(vk) = ed25519_dalek::VerifyingKey::from_bytes(public) else {
        return false;
    };
    let Ok(sig) = ed25519_dalek::Signature::from_slice(sig) else {
        return false;
    };
    vk.verify_strict(msg, &sig).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use dkms_proto::node::{Operation, Scheme};

    fn tag(s: &str) -> NodeTag {
        NodeTag::try_from(s.to_owned()).unwrap()
    }

    fn start(session: SessionRef) -> SessionStart {
        SessionStart {
            session,
            key_id: uuid::Uuid::nil(),
            scheme: Scheme::Dkls23Secp256k1,
            operation: Operation::Refresh {
                generation: 1,
                replacements: vec![],
            },
            nonce: [0; 32],
        }
    }

    #[tokio::test]
    async fn a_message_to_a_party_not_yet_started_follows_its_start() {
        let hub = Hub::default();
        let (a, b) = (tag("a"), tag("b"));
        let (tx_a, mut rx_a) = mpsc::channel(16);
        let (tx_b, mut rx_b) = mpsc::channel(16);
        hub.attach(&a, tx_a);
        hub.attach(&b, tx_b);
        let h = hub.open_session(&[a.clone(), b.clone()]);
        let session = h.session;

        assert!(hub.start(&a, start(session)).await);
        // a answers before b has been started.
        hub.relay(session, &a, b.clone(), 1, vec![7]).await;
        assert!(rx_b.try_recv().is_err(), "held until b's start is out");
        assert!(hub.start(&b, start(session)).await);
        assert!(matches!(rx_b.try_recv(), Ok(ToNode::Start(s)) if s.session == session));
        assert!(matches!(
            rx_b.try_recv(),
            Ok(ToNode::Deliver { round: 1, ref payload, .. }) if *payload == vec![7]
        ));
        // Once both are started, messages go straight through.
        hub.relay(session, &b, a.clone(), 1, vec![8]).await;
        assert!(matches!(rx_a.try_recv(), Ok(ToNode::Start(_))));
        assert!(matches!(rx_a.try_recv(), Ok(ToNode::Deliver { from, .. }) if from == b));
        assert_eq!(hub.laggards(session), Vec::<NodeTag>::new());
    }

    #[tokio::test]
    async fn messages_outside_the_session_are_dropped() {
        let hub = Hub::default();
        let (a, b, c) = (tag("a"), tag("b"), tag("c"));
        let (tx_c, mut rx_c) = mpsc::channel(16);
        hub.attach(&c, tx_c);
        let h = hub.open_session(&[a.clone(), b.clone()]);
        hub.relay(h.session, &a, c.clone(), 1, vec![1]).await;
        hub.relay(h.session, &c, a.clone(), 1, vec![1]).await;
        assert!(rx_c.try_recv().is_err());
        assert_eq!(hub.laggards(h.session), Vec::<NodeTag>::new());
    }
}
