//! Runs tasks: starts a protocol session on the nodes, waits for their results under a
//! deadline and records a truthful end state. Every path out of here ends the task as
//! FINISHED or FAILED; nothing is left PROCESSING.

use crate::AppState;
use crate::relay::SessionEvent;
use dkms_proto::node::{FailureKind, Operation, Outcome, Peer, Replacement, Scheme, SessionStart};
use dkms_proto::{ErrorCode, NodeTag};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::time::Instant;
use tracing::{Instrument, info, info_span, warn};

/// Why a session did not produce a result.
#[derive(Debug, Clone)]
pub struct TaskFailure {
    pub code: ErrorCode,
    pub message: String,
    /// A node to leave out when retrying.
    pub culprit: Option<NodeTag>,
}

impl TaskFailure {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        TaskFailure {
            code,
            message: message.into(),
            culprit: None,
        }
    }
}

fn tags(v: &[String]) -> Result<Vec<NodeTag>, TaskFailure> {
    v.iter()
        .map(|t| {
            t.parse::<NodeTag>()
                .map_err(|e| TaskFailure::new(ErrorCode::Internal, format!("stored tag: {e}")))
        })
        .collect()
}

fn join(tags: &[NodeTag]) -> String {
    tags.iter()
        .map(NodeTag::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Fails with NODE_UNAVAILABLE, naming them, if any participant is not connected.
fn require_connected(
    state: &AppState,
    participants: &[NodeTag],
    what: &str,
) -> Result<(), TaskFailure> {
    let missing: Vec<NodeTag> = participants
        .iter()
        .filter(|t| !state.hub.is_connected(t))
        .cloned()
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(TaskFailure::new(
        ErrorCode::NodeUnavailable,
        format!(
            "{what} needs all {} participants, but these nodes are not connected: {}",
            participants.len(),
            join(&missing)
        ),
    ))
}

fn nonce() -> Result<[u8; 32], TaskFailure> {
    let mut n = [0u8; 32];
    getrandom::fill(&mut n).map_err(|e| TaskFailure::new(ErrorCode::Internal, e.to_string()))?;
    Ok(n)
}

/// Spawns the key generation of `key_id` in the background.
pub fn spawn_keygen(state: AppState, key_id: String, permit: tokio::sync::OwnedSemaphorePermit) {
    spawn_key_task(state, key_id, permit, None);
}

/// What an import brings: the plaintext key (the compatible API: split here, then
/// zeroized) or shares the client split and sealed to their nodes itself.
pub enum ImportSource {
    Plain(dkms_mpc::import::SecretScalar),
    Sealed {
        public_key: [u8; 33],
        shares: Vec<(NodeTag, Vec<u8>)>,
    },
}

/// Spawns the import of `key_id` in the background.
pub fn spawn_import(
    state: AppState,
    key_id: String,
    permit: tokio::sync::OwnedSemaphorePermit,
    source: ImportSource,
) {
    spawn_key_task(state, key_id, permit, Some(source));
}

/// Runs a key-creating task (generation, or import when `import` is set) and records how
/// it ended.
fn spawn_key_task(
    state: AppState,
    key_id: String,
    permit: tokio::sync::OwnedSemaphorePermit,
    import: Option<ImportSource>,
) {
    let what = if import.is_some() { "import" } else { "keygen" };
    let span = info_span!("key", op = what, key_id = %key_id);
    tokio::spawn(
        async move {
            let _permit = permit;
            let result = run_key_task(&state, &key_id, import).await;
            let now = state.clock.now_ms();
            let stored = match &result {
                Ok(made) => {
                    info!("key ready");
                    state
                        .store
                        .finish_key(
                            &key_id,
                            &made.public_key,
                            made.address.as_deref(),
                            Some(&made.chain_code),
                            now,
                        )
                        .await
                }
                Err(f) => {
                    warn!(code = %f.code, message = %f.message, "key task failed");
                    state
                        .store
                        .fail_key(&key_id, f.code.as_str(), &f.message, now)
                        .await
                }
            };
            if let Err(e) = stored {
                warn!(error = %e, "could not record the end of the key task");
            }
            let outcome = match &result {
                Ok(_) => "FINISHED".to_owned(),
                Err(f) => format!("FAILED {}", f.code),
            };
            crate::authz::task_outcome(&state, "key.end", &key_id, &key_id, &outcome).await;
            state.waiters.wake(&key_id);
        }
        .instrument(span),
    );
}

/// The announced identity of each participant, from the pinned node records.
async fn peers_of(state: &AppState, participants: &[NodeTag]) -> Result<Vec<Peer>, TaskFailure> {
    let mut peers = Vec::with_capacity(participants.len());
    for tag in participants {
        let row = state
            .store
            .get_node(tag.as_str())
            .await
            .map_err(|e| TaskFailure::new(ErrorCode::Internal, e.to_string()))?
            .ok_or_else(|| {
                TaskFailure::new(
                    ErrorCode::NodeNotFound,
                    format!("node {tag} is not registered"),
                )
            })?;
        let ek = row
            .encryption_key
            .as_deref()
            .and_then(|h| hex::decode(h).ok())
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| {
                TaskFailure::new(
                    ErrorCode::NodeUnavailable,
                    format!("node {tag} has not joined"),
                )
            })?;
        peers.push(Peer {
            tag: tag.clone(),
            encryption_key: ek,
        });
    }
    Ok(peers)
}

/// What every node reported about a key it now holds a share of (hex).
struct MadeKey {
    public_key: String,
    address: Option<String>,
    chain_code: String,
}

async fn run_key_task(
    state: &AppState,
    key_id: &str,
    import: Option<ImportSource>,
) -> Result<MadeKey, TaskFailure> {
    let _running = state
        .sessions
        .acquire()
        .await
        .map_err(|_| TaskFailure::new(ErrorCode::Internal, "gateway is shutting down"))?;
    let key = state
        .store
        .get_key(key_id)
        .await
        .map_err(|e| TaskFailure::new(ErrorCode::Internal, e.to_string()))?
        .ok_or_else(|| TaskFailure::new(ErrorCode::Internal, "key row vanished"))?;
    let participants = tags(&key.participants)?;
    require_connected(state, &participants, "the key")?;
    let peers = peers_of(state, &participants).await?;
    let session_key = SessionKey::of(&key)?;
    state
        .store
        .start_key(key_id, state.clock.now_ms())
        .await
        .map_err(|e| TaskFailure::new(ErrorCode::Internal, e.to_string()))?;
    state.waiters.wake(key_id);

    let (outcomes, expected) = match import {
        None => {
            let operation = Operation::Keygen {
                threshold: key.threshold,
                participants: peers,
                exportable: key.exportable,
            };
            let outcomes = run_session(
                state,
                session_key,
                operation,
                &participants,
                state.config.keygen_timeout,
            )
            .await?;
            (outcomes, None)
        }
        Some(source) => {
            let (public_key, sealed) = seal_import(
                source,
                session_key.id,
                key.threshold,
                key.exportable,
                &peers,
            )
            .await?;
            let operations = sealed
                .into_iter()
                .map(|(tag, sealed_share)| {
                    (
                        tag,
                        Operation::Import {
                            threshold: key.threshold,
                            participants: peers.clone(),
                            sealed_share,
                            exportable: key.exportable,
                        },
                    )
                })
                .collect();
            let outcomes =
                run_session_each(state, session_key, operations, state.config.keygen_timeout)
                    .await?;
            (outcomes, Some(public_key))
        }
    };
    let mut keys: BTreeMap<(Vec<u8>, [u8; 32]), Vec<NodeTag>> = BTreeMap::new();
    for (tag, outcome) in outcomes {
        match outcome {
            Outcome::KeyGenerated {
                public_key,
                chain_code,
            } => keys.entry((public_key, chain_code)).or_default().push(tag),
            Outcome::Signed { .. }
            | Outcome::Deleted
            | Outcome::Promoted { .. }
            | Outcome::Repaired
            | Outcome::Sealed { .. } => {
                return Err(TaskFailure::new(
                    ErrorCode::ProtocolFailed,
                    format!("node {tag} answered a key task with something else"),
                ));
            }
        }
    }
    if keys.len() != 1 {
        return Err(TaskFailure::new(
            ErrorCode::ProtocolFailed,
            "the nodes reported different public keys or chain codes; the key is not usable",
        ));
    }
    let Some((pk, chain_code)) = keys.into_keys().next() else {
        return Err(TaskFailure::new(
            ErrorCode::ProtocolFailed,
            "no public key reported",
        ));
    };
    if let Some(expected) = expected
        && pk != expected
    {
        return Err(TaskFailure::new(
            ErrorCode::ProtocolFailed,
            "the nodes hold shares of a different public key than the one imported",
        ));
    }
    let invalid = |e: dkms_mpc::MpcError| {
        TaskFailure::new(
            ErrorCode::ProtocolFailed,
            format!("the nodes reported an invalid public key: {e}"),
        )
    };
    let curve = dkms_mpc::Curve::of_key_type_name(&key.key_type)
        .map_err(|e| TaskFailure::new(ErrorCode::Internal, e.to_string()))?;
    // An Ethereum address exists only for secp256k1 keys; a P-256 key is checked to be a
    // point of its curve instead.
    let address = match curve {
        dkms_mpc::Curve::Secp256k1 => Some(dkms_mpc::ecdsa::eth_address(&pk).map_err(invalid)?),
        dkms_mpc::Curve::P256 => {
            dkms_mpc::ecdsa::public_key_pem(curve, &pk).map_err(invalid)?;
            None
        }
    };
    Ok(MadeKey {
        public_key: hex::encode(pk),
        address,
        chain_code: hex::encode(chain_code),
    })
}

/// The per-node sealed shares of an import and the public key they must add up to. A
/// plaintext key is split and sealed on the blocking pool and dropped (zeroized) there.
async fn seal_import(
    source: ImportSource,
    key_id: uuid::Uuid,
    threshold: u8,
    exportable: bool,
    peers: &[Peer],
) -> Result<([u8; 33], Vec<(NodeTag, Vec<u8>)>), TaskFailure> {
    match source {
        ImportSource::Sealed { public_key, shares } => Ok((public_key, shares)),
        ImportSource::Plain(secret) => {
            let participants: Vec<dkms_mpc::ShareParticipant> = peers
                .iter()
                .map(|p| dkms_mpc::ShareParticipant {
                    tag: p.tag.clone(),
                    encryption_key: p.encryption_key,
                })
                .collect();
            let tags: Vec<NodeTag> = peers.iter().map(|p| p.tag.clone()).collect();
            tokio::task::spawn_blocking(move || {
                let public_key = secret.public_key();
                let shares = dkms_mpc::import::split(&secret, key_id, threshold, participants)
                    .map_err(|e| TaskFailure::new(ErrorCode::Internal, e.to_string()))?;
                drop(secret);
                // `split` returns the shares in participant order.
                let sealed = shares
                    .into_iter()
                    .zip(tags)
                    .map(|(share, tag)| {
                        let share = share.with_exportable(exportable);
                        dkms_mpc::import::seal_share(&share)
                            .map(|ct| (tag, ct))
                            .map_err(|e| TaskFailure::new(ErrorCode::Internal, e.to_string()))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((public_key, sealed))
            })
            .await
            .map_err(|e| TaskFailure::new(ErrorCode::Internal, e.to_string()))?
        }
    }
}

/// Destroys the shares of keys whose scheduled deletion is due, every
/// `reaper_interval`. A key is marked DELETED only once every participant confirmed;
/// while a node is unreachable the key stays PENDING_DELETION (it cannot sign) and the
/// next round tries again.
pub fn spawn_reaper(state: AppState) {
    tokio::spawn(
        async move {
            let mut tick = tokio::time::interval(state.config.reaper_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                expire_approvals(&state).await;
                purge_expired(&state).await;
                let due = match state.store.due_deletions(state.clock.now_ms()).await {
                    Ok(due) => due,
                    Err(e) => {
                        warn!(error = %e, "could not look for due deletions");
                        continue;
                    }
                };
                for key in due {
                    match delete_shares(&state, &key).await {
                        Ok(()) => info!(key_id = %key.key_id, "key deleted on every node"),
                        Err(f) => {
                            warn!(key_id = %key.key_id, message = %f.message, "deletion postponed")
                        }
                    }
                }
            }
        }
        .instrument(info_span!("reaper")),
    );
}

/// Renews this gateway's heartbeat, several times per lease, and ends FAILED the tasks of
/// gateways whose heartbeat lapsed (another process sharing the database, or an earlier
/// process of this one), so that no task stays unfinished after its gateway died.
pub fn spawn_heartbeat(state: AppState) {
    tokio::spawn(
        async move {
            let lease = state.config.lease;
            let mut tick = tokio::time::interval((lease / 5).max(Duration::from_millis(200)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
            let mut gate = SweepGate::default();
            let mut last_forget = 0;
            loop {
                tick.tick().await;
                let now = state.clock.now_ms();
                let renewed = state.store.heartbeat(now).await;
                if let Err(e) = &renewed {
                    warn!(error = %e, "could not renew this gateway's heartbeat");
                }
                if !gate.may_sweep(renewed.is_ok(), now, lease_ms) {
                    continue;
                }
                match state
                    .store
                    .live_gateways(now.saturating_sub(lease_ms))
                    .await
                {
                    Ok(live) => state
                        .other_gateways
                        .store(live.len() > 1, std::sync::atomic::Ordering::Relaxed),
                    Err(e) => warn!(error = %e, "could not list the live gateways"),
                }
                end_orphans(&state, now.saturating_sub(lease_ms), now).await;
                if now - last_forget > 3_600_000 {
                    last_forget = now;
                    if let Err(e) = state.store.forget_gateways(now - 86_400_000).await {
                        warn!(error = %e, "could not forget long-gone gateways");
                    }
                    match state.store.release_stale_refresh_holds().await {
                        Ok(0) => {}
                        Ok(n) => warn!(keys = n, "released keys held by refreshes that had ended"),
                        Err(e) => warn!(error = %e, "could not look for stale refresh holds"),
                    }
                }
            }
        }
        .instrument(info_span!("heartbeat")),
    );
}

/// Whether a heartbeat tick may end other gateways' tasks. Not while this gateway cannot
/// reach the database, and not for a lease after it could not: an outage of the
/// database silences every gateway at once, and the others need a lease to renew their
/// heartbeats before their silence means anything.
#[derive(Debug, Default)]
struct SweepGate {
    outage: bool,
    quiet_until: i64,
}

impl SweepGate {
    fn may_sweep(&mut self, renewed: bool, now: i64, lease_ms: i64) -> bool {
        if !renewed {
            self.outage = true;
            return false;
        }
        if self.outage {
            self.outage = false;
            self.quiet_until = now.saturating_add(lease_ms);
        }
        now >= self.quiet_until
    }
}

/// Ends the tasks whose gateway has been silent since `cutoff`, with what an auditor and
/// the caller need: the audit entry, given-back limit claims, and woken long-polls.
async fn end_orphans(state: &AppState, cutoff: i64, now: i64) {
    let secs = state.config.lease.as_secs();
    let message = |gateway: Option<&str>| match gateway {
        Some(id) => format!(
            "the gateway that ran this task ({id}) stopped before the task ended \
             (no heartbeat for {secs} s); it did not complete and can be sent again"
        ),
        None => "the gateway that ran this task stopped before the task ended; \
                 it did not complete and can be sent again"
            .to_owned(),
    };
    let orphans = match state
        .store
        .fail_orphaned(cutoff, ErrorCode::GatewayLost.as_str(), message, now)
        .await
    {
        Ok(o) => o,
        Err(e) => {
            warn!(error = %e, "could not look for tasks of stopped gateways");
            return;
        }
    };
    if orphans.is_empty() {
        return;
    }
    warn!(
        keys = orphans.keys.len(),
        signs = orphans.signs.len(),
        tasks = orphans.tasks.len(),
        "ended FAILED the tasks of a gateway that stopped"
    );
    let outcome = format!("FAILED {}", ErrorCode::GatewayLost);
    for (key_id, _) in &orphans.keys {
        crate::authz::task_outcome(state, "key.end", key_id, key_id, &outcome).await;
        state.waiters.wake(key_id);
    }
    for (id, _) in &orphans.signs {
        crate::limits::refund_claims(state, id).await;
        if let Ok(Some(row)) = state.store.get_sign(id).await {
            crate::authz::task_outcome(state, "sign.end", &row.key_id, id, &outcome).await;
        }
        state.waiters.wake(id);
    }
    for (id, _) in &orphans.tasks {
        if let Ok(Some(task)) = state.store.get_key_task(id).await {
            crate::authz::task_outcome(state, "task.end", &task.key_id, id, &outcome).await;
        }
        state.waiters.wake(id);
    }
}

/// Drops login sessions past their expiry and limit counters of windows long gone (the
/// longest window is 366 days).
async fn purge_expired(state: &AppState) {
    let now = state.clock.now_ms();
    if let Err(e) = state.store.purge_expired_sessions(now).await {
        warn!(error = %e, "could not purge expired sessions");
    }
    let oldest_bucket = now.div_euclid(1000) - 367 * 86_400;
    if let Err(e) = state.store.purge_quota(oldest_bucket).await {
        warn!(error = %e, "could not purge old limit counters");
    }
}

/// Rejects signings whose approval window closed, and gives back their limit claims.
async fn expire_approvals(state: &AppState) {
    let expired = match state.store.expire_approvals(state.clock.now_ms()).await {
        Ok(ids) => ids,
        Err(e) => {
            warn!(error = %e, "could not look for expired approvals");
            return;
        }
    };
    for id in expired {
        info!(instance_id = %id, "approval window closed; signing rejected");
        crate::limits::refund_claims(state, &id).await;
        if let Ok(Some(row)) = state.store.get_sign(&id).await {
            crate::authz::task_outcome(state, "sign.end", &row.key_id, &id, "APPROVAL_EXPIRED")
                .await;
        }
        state.waiters.wake(&id);
    }
}

async fn delete_shares(state: &AppState, key: &dkms_store::KeyRow) -> Result<(), TaskFailure> {
    let store_err =
        |e: dkms_store::StoreError| TaskFailure::new(ErrorCode::Internal, e.to_string());
    // Past this point a deletion cannot be cancelled, so no node destroys a share of a
    // key that then comes back.
    if key.state == dkms_store::STATE_PENDING_DELETION
        && !state
            .store
            .set_key_state(
                &key.key_id,
                &[dkms_store::STATE_PENDING_DELETION],
                dkms_store::STATE_DELETING,
                key.deletion_at,
                state.clock.now_ms(),
            )
            .await
            .map_err(store_err)?
    {
        return Err(TaskFailure::new(
            ErrorCode::Conflict,
            "the deletion was cancelled",
        ));
    }
    let participants = tags(&key.participants)?;
    require_connected(state, &participants, "destroying the shares")?;
    let session_key = SessionKey::of(key)?;
    let outcomes = run_session(
        state,
        session_key,
        Operation::Delete,
        &participants,
        state.config.sign_timeout,
    )
    .await?;
    if let Some((tag, _)) = outcomes.iter().find(|(_, o)| *o != Outcome::Deleted) {
        return Err(TaskFailure::new(
            ErrorCode::ProtocolFailed,
            format!("node {tag} did not confirm the deletion"),
        ));
    }
    state
        .store
        .set_key_state(
            &key.key_id,
            &[dkms_store::STATE_DELETING],
            dkms_store::STATE_DELETED,
            key.deletion_at,
            state.clock.now_ms(),
        )
        .await
        .map_err(store_err)?;
    Ok(())
}

/// How a lost member's share comes back before the refresh of a recovery.
pub enum Rebuild {
    /// Rebuilt by `threshold` members (repair).
    Repair,
    /// Delivered: a custodian re-sealed the member's backed-up share of `generation` to
    /// the newcomer (`dkms backup restore`).
    Restore { generation: u32, sealed: Vec<u8> },
}

/// Lost members, the nodes that take their places, and how their shares come back.
pub struct Recovery {
    /// (lost member, newcomer) pairs, checked by the API: distinct lost members of the
    /// key, distinct newcomers that are not other members, at most
    /// [`dkms_proto::node::max_lost_at_once`] of them (one for a restore). A newcomer
    /// equal to its lost member is the same tag joined again.
    pub replacements: Vec<(NodeTag, NodeTag)>,
    pub rebuild: Rebuild,
}

/// Spawns a refresh (or, with a `recovery`, a recovery or restore) task `instance_id` of
/// `key_id` in the background.
pub fn spawn_maintenance(
    state: AppState,
    instance_id: String,
    key_id: String,
    recovery: Option<Recovery>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let span = match &recovery {
        None => info_span!("refresh", instance_id = %instance_id, key_id = %key_id),
        Some(r) => {
            let list = |f: fn(&(NodeTag, NodeTag)) -> &NodeTag| {
                r.replacements
                    .iter()
                    .map(f)
                    .map(|t| t.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let (lost, newcomer) = (list(|p| &p.0), list(|p| &p.1));
            info_span!("recover", instance_id = %instance_id, key_id = %key_id, %lost, %newcomer)
        }
    };
    tokio::spawn(
        async move {
            let _permit = permit;
            let result = run_maintenance(&state, &instance_id, &key_id, recovery).await;
            if let Ok(generation) = &result {
                info!(generation, "new share generation committed");
            }
            let result = result.map(|generation| format!("FINISHED generation {generation}"));
            end_task_on_key(&state, &instance_id, &key_id, result).await;
        }
        .instrument(span),
    );
}

/// Records how a task on an existing key ended (`Ok` carries the audit outcome), releases
/// the key, writes the audit entry and wakes long polls.
async fn end_task_on_key(
    state: &AppState,
    instance_id: &str,
    key_id: &str,
    result: Result<String, TaskFailure>,
) {
    let failure = result
        .as_ref()
        .err()
        .map(|f| (f.code.as_str(), f.message.as_str()));
    if let Err(f) = &result {
        warn!(code = %f.code, error = %f.message, "task failed");
    }
    if let Err(e) = state
        .store
        .end_key_task(instance_id, failure, state.clock.now_ms())
        .await
    {
        warn!(error = %e, "could not record the end of the task");
    }
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(f) => format!("FAILED {}", f.code),
    };
    crate::authz::task_outcome(state, "task.end", key_id, instance_id, &outcome).await;
    state.waiters.wake(instance_id);
}

/// What a task on an existing key starts with: a session slot (held until the task
/// ends), the task marked PROCESSING, and the key as it is now.
struct KeyTaskStart<'a> {
    _running: tokio::sync::SemaphorePermit<'a>,
    key: dkms_store::KeyRow,
    participants: Vec<NodeTag>,
    session_key: SessionKey,
}

async fn start_key_task<'a>(
    state: &'a AppState,
    instance_id: &str,
    key_id: &str,
) -> Result<KeyTaskStart<'a>, TaskFailure> {
    let internal = |e: dkms_store::StoreError| TaskFailure::new(ErrorCode::Internal, e.to_string());
    let running = state
        .sessions
        .acquire()
        .await
        .map_err(|_| TaskFailure::new(ErrorCode::Internal, "gateway is shutting down"))?;
    state
        .store
        .start_key_task(instance_id, state.clock.now_ms())
        .await
        .map_err(internal)?;
    state.waiters.wake(instance_id);
    let key = state
        .store
        .get_key(key_id)
        .await
        .map_err(internal)?
        .ok_or_else(|| TaskFailure::new(ErrorCode::KeyNotFound, "the key no longer exists"))?;
    let participants = tags(&key.participants)?;
    let session_key = SessionKey::of(&key)?;
    Ok(KeyTaskStart {
        _running: running,
        key,
        participants,
        session_key,
    })
}

/// A refresh, or a recovery: a repair of each lost member's share onto its replacement,
/// one after the other, then one refresh of every share with every replacement in its
/// lost member's place. The new generation is committed only when every member reports
/// the key's public key; until then every node keeps signing with its current share, so
/// a task that fails at any point (a node down, a crash, a refused repair) leaves the key
/// usable as it was. A failed recovery can be run again: the recipients' unusable shares
/// are replaced by the next repairs.
async fn run_maintenance(
    state: &AppState,
    instance_id: &str,
    key_id: &str,
    recovery: Option<Recovery>,
) -> Result<u32, TaskFailure> {
    let internal = |e: dkms_store::StoreError| TaskFailure::new(ErrorCode::Internal, e.to_string());
    let KeyTaskStart {
        _running,
        key,
        participants,
        session_key,
    } = start_key_task(state, instance_id, key_id).await?;
    let expected = key
        .public_key
        .as_deref()
        .and_then(|h| hex::decode(h).ok())
        .ok_or_else(|| TaskFailure::new(ErrorCode::Internal, "the key has no public key"))?;

    let (members, replacements) = match recovery {
        None => {
            require_connected(state, &participants, "a refresh")?;
            (participants, Vec::new())
        }
        Some(r) => repair(state, &key, session_key, &participants, &expected, r).await?,
    };
    let recovered = !replacements.is_empty();
    let target = key.generation + 1;
    let outcomes = run_session(
        state,
        session_key,
        Operation::Refresh {
            generation: target,
            replacements,
        },
        &members,
        state.config.keygen_timeout,
    )
    .await?;
    for (tag, outcome) in &outcomes {
        match outcome {
            Outcome::KeyGenerated { public_key, .. } if *public_key == expected => {}
            _ => {
                return Err(TaskFailure {
                    code: ErrorCode::ProtocolFailed,
                    message: format!(
                        "node {tag} did not report the key's public key after the refresh"
                    ),
                    culprit: Some(tag.clone()),
                });
            }
        }
    }
    let new_members: Option<Vec<String>> =
        recovered.then(|| members.iter().map(|t| t.to_string()).collect());
    if !state
        .store
        .commit_generation(
            key_id,
            instance_id,
            key.generation,
            new_members.as_deref(),
            state.clock.now_ms(),
        )
        .await
        .map_err(internal)?
    {
        return Err(TaskFailure::new(
            ErrorCode::Conflict,
            "the key's generation changed during the task, or the task was ended meanwhile",
        ));
    }
    // Best effort: a node that misses this promotes its staged share at its next signing.
    if let Err(f) = run_session(
        state,
        session_key,
        Operation::Promote { generation: target },
        &members,
        state.config.sign_timeout,
    )
    .await
    {
        warn!(error = %f.message, "some nodes will promote the new shares at their next signing");
    }
    Ok(target)
}

/// The repair half of a recovery: for each lost member in turn, `threshold` connected
/// members that lost nothing rebuild its share on its newcomer (or, for a restore, the
/// newcomer stores the share its custodian re-sealed to it). Returns the members after the
/// recovery and the replacements, for the one refresh that must follow (all members must
/// be connected for it, so that is checked first).
async fn repair(
    state: &AppState,
    key: &dkms_store::KeyRow,
    session_key: SessionKey,
    participants: &[NodeTag],
    public_key: &[u8],
    recovery: Recovery,
) -> Result<(Vec<NodeTag>, Vec<Replacement>), TaskFailure> {
    let Recovery {
        replacements: pairs,
        rebuild,
    } = recovery;
    let mut members = participants.to_vec();
    for (lost, newcomer) in &pairs {
        let slot = members.iter_mut().find(|m| *m == lost).ok_or_else(|| {
            TaskFailure::new(
                ErrorCode::InvalidParameter,
                format!("{lost} is not a member of the key"),
            )
        })?;
        *slot = newcomer.clone();
    }
    let allowed = dkms_proto::node::max_lost_at_once(usize::from(key.threshold), members.len());
    if pairs.is_empty() || (pairs.len() > allowed && !matches!(rebuild, Rebuild::Restore { .. })) {
        return Err(TaskFailure::new(
            ErrorCode::InvalidParameter,
            format!(
                "{} lost members of a {}-of-{} key cannot be rebuilt at once (at most {allowed})",
                pairs.len(),
                key.threshold,
                members.len()
            ),
        ));
    }
    require_connected(state, &members, "a recovery")?;
    let peers = peers_of(state, &members).await?;
    let replacements = pairs
        .iter()
        .map(|(lost, newcomer)| {
            let member = peers
                .iter()
                .find(|p| p.tag == *newcomer)
                .cloned()
                .ok_or_else(|| TaskFailure::new(ErrorCode::Internal, "the replacement vanished"))?;
            Ok(Replacement {
                lost: lost.clone(),
                member,
            })
        })
        .collect::<Result<Vec<_>, TaskFailure>>()?;
    if let Rebuild::Restore { generation, sealed } = rebuild {
        let [replacement] = replacements.as_slice() else {
            return Err(TaskFailure::new(
                ErrorCode::Internal,
                "a restore brings back one member",
            ));
        };
        if generation != key.generation {
            return Err(TaskFailure::new(
                ErrorCode::Conflict,
                format!(
                    "the backup is of share generation {generation} but the key is at {}; take a new backup",
                    key.generation
                ),
            ));
        }
        let newcomer = replacement.member.tag.clone();
        let outcomes = run_session(
            state,
            session_key,
            Operation::Restore {
                generation,
                threshold: key.threshold,
                public_key: public_key.to_vec(),
                participants: peers,
                replacement: replacement.clone(),
                sealed_share: sealed,
            },
            std::slice::from_ref(&newcomer),
            state.config.sign_timeout,
        )
        .await?;
        if outcomes.iter().any(|(_, o)| *o != Outcome::Repaired) {
            return Err(TaskFailure::new(
                ErrorCode::ProtocolFailed,
                format!("node {newcomer} did not confirm the restore"),
            ));
        }
        info!("restored share delivered; refreshing every share");
        return Ok((members, replacements));
    }
    // Helpers: members that lost nothing. Neither a lost member nor a share rebuilt by an
    // earlier repair of this recovery (it is hollow and cannot help) is among them.
    let helpers: Vec<NodeTag> = participants
        .iter()
        .filter(|p| {
            !pairs
                .iter()
                .any(|(lost, newcomer)| lost == *p || newcomer == *p)
        })
        .take(usize::from(key.threshold))
        .cloned()
        .collect();
    if helpers.len() < usize::from(key.threshold) {
        return Err(TaskFailure::new(
            ErrorCode::InvalidParameter,
            format!(
                "a repair needs {} members that lost nothing; only {} are left",
                key.threshold,
                helpers.len()
            ),
        ));
    }
    let count = replacements.len();
    for (i, replacement) in replacements.iter().enumerate() {
        let (lost, newcomer) = (&replacement.lost, &replacement.member.tag);
        // With several lost members, every message says which repair failed and which
        // were done (their recipients hold shares that cannot sign until the refresh).
        let step = |message: String| {
            if count == 1 {
                message
            } else {
                format!(
                    "repairing {lost} onto {newcomer} (repair {} of {count}): {message}",
                    i + 1
                )
            }
        };
        let also_replaced: Vec<Replacement> = replacements
            .iter()
            .filter(|r| r.lost != *lost)
            .cloned()
            .collect();
        let mut parties = helpers.clone();
        parties.push(newcomer.clone());
        let outcomes = run_session(
            state,
            session_key,
            Operation::Repair {
                generation: key.generation,
                threshold: key.threshold,
                public_key: public_key.to_vec(),
                participants: peers.clone(),
                replacement: replacement.clone(),
                also_replaced,
                helpers: helpers.clone(),
                exportable: key.exportable,
            },
            &parties,
            state.config.keygen_timeout,
        )
        .await
        .map_err(|f| TaskFailure {
            message: step(f.message),
            ..f
        })?;
        if let Some((tag, _)) = outcomes.iter().find(|(_, o)| *o != Outcome::Repaired) {
            return Err(TaskFailure::new(
                ErrorCode::ProtocolFailed,
                step(format!("node {tag} did not confirm the repair")),
            ));
        }
        info!(%lost, %newcomer, step = i + 1, of = count, "repair done");
    }
    info!("every lost share rebuilt; refreshing every share");
    Ok((members, replacements))
}

/// Spawns the signing task `instance_id` in the background.
pub fn spawn_sign(state: AppState, instance_id: String, permit: tokio::sync::OwnedSemaphorePermit) {
    let span = info_span!("sign", instance_id = %instance_id);
    tokio::spawn(
        async move {
            let _permit = permit;
            let mut result = run_sign(&state, &instance_id).await;
            if let Ok(sig) = &result
                && let Err(f) = attach_signed_tx(&state, &instance_id, sig).await
            {
                result = Err(f);
            }
            let now = state.clock.now_ms();
            let (stored, outcome) = match &result {
                Ok(sig) => {
                    info!("signed");
                    let stored = state.store.finish_sign(&instance_id, sig, now).await;
                    (stored, "FINISHED".to_owned())
                }
                Err(f) => {
                    warn!(code = %f.code, message = %f.message, "signing failed");
                    let stored = state
                        .store
                        .fail_sign(&instance_id, f.code.as_str(), &f.message, now)
                        .await;
                    if matches!(stored, Ok(true)) {
                        crate::limits::refund_claims(&state, &instance_id).await;
                    }
                    (stored, format!("FAILED {}", f.code))
                }
            };
            if let Err(e) = stored {
                warn!(error = %e, "could not record the end of signing");
            }
            if let Ok(Some(row)) = state.store.get_sign(&instance_id).await {
                crate::authz::task_outcome(&state, "sign.end", &row.key_id, &instance_id, &outcome)
                    .await;
            }
            state.waiters.wake(&instance_id);
        }
        .instrument(span),
    );
}

/// The transaction a `sign/tx` task signs, as stored with it.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredTx {
    pub chain_id: u64,
    pub transaction: dkms_eth::TxRequest,
}

/// For a transaction signing, builds the raw signed transaction from the signature and
/// stores it with its hash before the task is marked FINISHED.
async fn attach_signed_tx(
    state: &AppState,
    instance_id: &str,
    signature_hex: &str,
) -> Result<(), TaskFailure> {
    let internal = |e: String| TaskFailure::new(ErrorCode::Internal, e);
    let Some(extras) = state
        .store
        .get_sign_extras(instance_id)
        .await
        .map_err(|e| internal(e.to_string()))?
    else {
        return Ok(());
    };
    let Some(tx) = extras.tx.as_deref() else {
        return Ok(());
    };
    let stored: StoredTx = serde_json::from_str(tx).map_err(|e| internal(e.to_string()))?;
    let unsigned = dkms_eth::UnsignedTx::new(stored.chain_id, &stored.transaction)
        .map_err(|e| internal(e.to_string()))?;
    let sig = hex::decode(signature_hex).map_err(|e| internal(e.to_string()))?;
    let (r, rest) = sig
        .split_at_checked(32)
        .ok_or_else(|| internal("short signature".into()))?;
    let (s, v) = rest
        .split_at_checked(32)
        .ok_or_else(|| internal("short signature".into()))?;
    let (r, s): ([u8; 32], [u8; 32]) = (
        r.try_into().map_err(|_| internal("bad r".into()))?,
        s.try_into().map_err(|_| internal("bad s".into()))?,
    );
    let recovery_id = *v.first().ok_or_else(|| internal("no recovery id".into()))?;
    let signed = unsigned
        .encode_signed(&r, &s, recovery_id)
        .map_err(|e| internal(e.to_string()))?;
    state
        .store
        .set_signed_tx(instance_id, &signed.raw_hex(), &signed.hash_hex())
        .await
        .map_err(|e| internal(e.to_string()))?;
    Ok(())
}

async fn run_sign(state: &AppState, instance_id: &str) -> Result<String, TaskFailure> {
    let internal = |e: dkms_store::StoreError| TaskFailure::new(ErrorCode::Internal, e.to_string());
    let _running = state
        .sessions
        .acquire()
        .await
        .map_err(|_| TaskFailure::new(ErrorCode::Internal, "gateway is shutting down"))?;
    let task = state
        .store
        .get_sign(instance_id)
        .await
        .map_err(internal)?
        .ok_or_else(|| TaskFailure::new(ErrorCode::Internal, "task row vanished"))?;
    let key = state
        .store
        .get_key(&task.key_id)
        .await
        .map_err(internal)?
        .ok_or_else(|| TaskFailure::new(ErrorCode::KeyNotFound, "the key no longer exists"))?;
    // Checked again here: a signing held for approvals may be released after the key
    // was disabled or scheduled for deletion.
    if key.state != dkms_store::STATE_ENABLED {
        return Err(TaskFailure::new(
            ErrorCode::KeyDisabled,
            format!(
                "key {} is {}; only an ENABLED key can sign",
                key.key_id, key.state
            ),
        ));
    }
    let curve = dkms_mpc::Curve::of_key_type_name(&key.key_type)
        .map_err(|e| TaskFailure::new(ErrorCode::Internal, e.to_string()))?;
    let public_key = key
        .public_key
        .as_deref()
        .and_then(|h| hex::decode(h).ok())
        .ok_or_else(|| TaskFailure::new(ErrorCode::KeyNotReady, "the key has no public key"))?;
    let digest: [u8; 32] = hex::decode(&task.digest)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| TaskFailure::new(ErrorCode::Internal, "stored digest is malformed"))?;
    let path = match task.derivation_path.as_deref() {
        None => Vec::new(),
        Some(p) => dkms_mpc::derive::parse_path(p)
            .map_err(|e| TaskFailure::new(ErrorCode::Internal, e.to_string()))?,
    };
    // The signature must verify under the child key the path names.
    let public_key = if path.is_empty() {
        public_key
    } else {
        let chain_code = state
            .store
            .get_chain_code(&key.key_id)
            .await
            .map_err(internal)?;
        child_key(&public_key, chain_code.as_deref(), &path)
            .map_err(|e| TaskFailure::new(ErrorCode::InvalidParameter, e))?
            .0
    };
    let session_key = SessionKey::of(&key)?;
    let participants = tags(&key.participants)?;
    let t = usize::from(key.threshold);

    // A t < n key keeps signing while nodes are down: pick t connected participants, and
    // after a failure that names a node, try once more without it.
    let mut excluded: BTreeSet<NodeTag> = BTreeSet::new();
    let mut last_failure = None;
    for attempt in 0..2 {
        let live: Vec<NodeTag> = participants
            .iter()
            .filter(|p| !excluded.contains(*p) && state.hub.is_connected(p))
            .cloned()
            .collect();
        if live.len() < t {
            let down: Vec<NodeTag> = participants
                .iter()
                .filter(|p| !state.hub.is_connected(p) || excluded.contains(*p))
                .cloned()
                .collect();
            let failure = TaskFailure::new(
                ErrorCode::NodeUnavailable,
                format!(
                    "signing needs {t} of the key's {} nodes but only {} are available; unavailable: {}",
                    participants.len(),
                    live.len(),
                    join(&down)
                ),
            );
            return Err(match last_failure {
                Some(TaskFailure { message, .. }) if attempt > 0 => TaskFailure {
                    message: format!("{message}; retry impossible: {}", failure.message),
                    ..failure
                },
                _ => failure,
            });
        }
        let signers: Vec<NodeTag> = live.into_iter().take(t).collect();
        state
            .store
            .start_sign(
                instance_id,
                &signers.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                state.clock.now_ms(),
            )
            .await
            .map_err(internal)?;
        let operation = Operation::Sign {
            signers: signers.clone(),
            digest,
            generation: key.generation,
            derivation_path: path.clone(),
        };
        match run_session(
            state,
            session_key,
            operation,
            &signers,
            state.config.sign_timeout,
        )
        .await
        {
            Ok(outcomes) => return check_signatures(curve, &public_key, &digest, outcomes),
            Err(f) => {
                warn!(attempt, code = %f.code, message = %f.message, "signing session failed");
                match &f.culprit {
                    Some(c) => {
                        excluded.insert(c.clone());
                        last_failure = Some(f);
                    }
                    _ => return Err(f),
                }
            }
        }
    }
    Err(last_failure
        .unwrap_or_else(|| TaskFailure::new(ErrorCode::ProtocolFailed, "signing failed")))
}

/// The SEC1 compressed public key and the chain code of the child of a key at a BIP-32
/// `path` (the key itself for an empty path), from the key's public key and chain code (hex).
pub fn child_key(
    public_key: &[u8],
    chain_code: Option<&str>,
    path: &[u32],
) -> Result<(Vec<u8>, [u8; 32]), String> {
    let chain_code: [u8; 32] = chain_code
        .and_then(|h| hex::decode(h).ok())
        .and_then(|b| b.try_into().ok())
        .ok_or("this key has no recorded chain code (it was made before derivation was supported); it cannot derive child keys")?;
    if path.is_empty() {
        return Ok((public_key.to_vec(), chain_code));
    }
    dkms_mpc::derive::derive_public_key(public_key, &chain_code, path)
        .map(|(k, c)| (k.to_vec(), c))
        .map_err(|e| e.to_string())
}

/// Every signer computes the signature; all must agree and it must verify under the key.
fn check_signatures(
    curve: dkms_mpc::Curve,
    public_key: &[u8],
    digest: &[u8; 32],
    outcomes: Vec<(NodeTag, Outcome)>,
) -> Result<String, TaskFailure> {
    let mut chosen: Option<Vec<u8>> = None;
    for (tag, outcome) in outcomes {
        let Outcome::Signed { signature } = outcome else {
            return Err(TaskFailure::new(
                ErrorCode::ProtocolFailed,
                format!("node {tag} answered a signing with a key"),
            ));
        };
        if let Err(e) = dkms_mpc::ecdsa::verify_signature(curve, public_key, digest, &signature) {
            return Err(TaskFailure {
                code: ErrorCode::ProtocolFailed,
                message: format!("node {tag} returned a signature that does not verify: {e}"),
                culprit: Some(tag),
            });
        }
        match &chosen {
            None => chosen = Some(signature),
            Some(c) if *c != signature => {
                return Err(TaskFailure::new(
                    ErrorCode::ProtocolFailed,
                    "signers returned different signatures",
                ));
            }
            Some(_) => {}
        }
    }
    chosen
        .map(hex::encode)
        .ok_or_else(|| TaskFailure::new(ErrorCode::ProtocolFailed, "no signature returned"))
}

/// Starts one session on `parties` and collects one outcome from each, or fails with
/// the names of the parties that failed, left or did not answer in time.
async fn run_session(
    state: &AppState,
    target: SessionKey,
    operation: Operation,
    parties: &[NodeTag],
    timeout: Duration,
) -> Result<Vec<(NodeTag, Outcome)>, TaskFailure> {
    let per_party = parties
        .iter()
        .map(|p| (p.clone(), operation.clone()))
        .collect::<Vec<_>>();
    run_session_each(state, target, per_party, timeout).await
}

/// The key a protocol session is for, as every node is told: its id and the scheme its
/// type runs on, both from the key row the caller holds.
#[derive(Debug, Clone, Copy)]
struct SessionKey {
    id: uuid::Uuid,
    scheme: Scheme,
}

impl SessionKey {
    fn of(key: &dkms_store::KeyRow) -> Result<SessionKey, TaskFailure> {
        let corrupt = |e: String| TaskFailure::new(ErrorCode::Internal, e);
        Ok(SessionKey {
            id: uuid::Uuid::parse_str(&key.key_id).map_err(|e| corrupt(e.to_string()))?,
            scheme: key
                .key_type
                .parse::<dkms_proto::KeyType>()
                .map(dkms_proto::KeyType::scheme)
                .map_err(|e| corrupt(e.0))?,
        })
    }
}

/// As [`run_session`], with an operation per party (an import sends each node its own
/// sealed share).
async fn run_session_each(
    state: &AppState,
    target: SessionKey,
    operations: Vec<(NodeTag, Operation)>,
    timeout: Duration,
) -> Result<Vec<(NodeTag, Outcome)>, TaskFailure> {
    let parties: Vec<NodeTag> = operations.iter().map(|(p, _)| p.clone()).collect();
    let parties = parties.as_slice();
    let mut handle = state.hub.open_session(parties);
    let nonce = nonce()?;
    for (p, operation) in operations {
        let start = SessionStart {
            session: handle.session,
            key_id: target.id,
            scheme: target.scheme,
            operation,
            nonce,
        };
        if !state.hub.start(&p, start).await {
            let f = TaskFailure {
                code: ErrorCode::NodeUnavailable,
                message: format!("node {p} disconnected before the session started"),
                culprit: Some(p.clone()),
            };
            abort(state, handle.session, parties, &f.message).await;
            return Err(f);
        }
    }
    let deadline = Instant::now() + timeout;
    let mut results: BTreeMap<NodeTag, Outcome> = BTreeMap::new();
    let failure = loop {
        if results.len() == parties.len() {
            return Ok(results.into_iter().collect());
        }
        let ev = match tokio::time::timeout_at(deadline, handle.events.recv()).await {
            Ok(Some(ev)) => ev,
            Ok(None) => break TaskFailure::new(ErrorCode::Internal, "session channel closed"),
            Err(_) => {
                let pending: Vec<NodeTag> = parties
                    .iter()
                    .filter(|p| !results.contains_key(*p))
                    .cloned()
                    .collect();
                // Parties that sent less than the rest are the ones the others wait for.
                let laggards = state.hub.laggards(handle.session);
                let blame = if laggards.is_empty() {
                    String::new()
                } else {
                    format!("; stalled waiting for messages from: {}", join(&laggards))
                };
                let culprit = match (laggards.as_slice(), pending.as_slice()) {
                    ([one], _) | ([], [one]) => Some(one.clone()),
                    _ => None,
                };
                break TaskFailure {
                    code: ErrorCode::Timeout,
                    message: format!(
                        "the session did not finish within {} s; no result from: {}{blame}",
                        timeout.as_secs(),
                        join(&pending)
                    ),
                    culprit,
                };
            }
        };
        match ev {
            SessionEvent::Done(tag, outcome) => {
                results.insert(tag, outcome);
            }
            SessionEvent::Disconnected(tag) => {
                break TaskFailure {
                    code: ErrorCode::NodeUnavailable,
                    message: format!("node {tag} disconnected during the session"),
                    culprit: Some(tag),
                };
            }
            SessionEvent::Failed(tag, failure) => {
                let code = match failure.kind {
                    FailureKind::BadParameters => ErrorCode::InvalidParameter,
                    FailureKind::UnknownKey => ErrorCode::KeyNotFound,
                    FailureKind::Misbehaviour => ErrorCode::ProtocolFailed,
                    FailureKind::Internal => ErrorCode::Internal,
                };
                let culprit = failure.culprit.clone().or_else(|| {
                    matches!(
                        failure.kind,
                        FailureKind::UnknownKey | FailureKind::Internal
                    )
                    .then(|| tag.clone())
                });
                let blame = match &failure.culprit {
                    Some(c) => format!(" (blames node {c})"),
                    None => String::new(),
                };
                break TaskFailure {
                    code,
                    message: format!("node {tag} aborted the session{blame}: {}", failure.message),
                    culprit,
                };
            }
        }
    };
    abort(state, handle.session, parties, &failure.message).await;
    Err(failure)
}

async fn abort(state: &AppState, session: u64, parties: &[NodeTag], reason: &str) {
    for p in parties {
        let _ = state
            .hub
            .send_to(
                p,
                dkms_proto::node::ToNode::Abort {
                    session,
                    reason: reason.to_owned(),
                },
            )
            .await;
    }
}

/// What leaves the nodes sealed in an export or a backup task.
pub enum SealTask {
    /// Break-glass export to the requester's X25519 key.
    Export { recipient: [u8; 32] },
    /// Backup of every member's share to the custodian at its position in the group.
    Backup {
        group: String,
        custodians: Vec<[u8; 32]>,
    },
}

/// Spawns an export or backup task `instance_id` of `key_id` in the background.
pub fn spawn_seal_task(
    state: AppState,
    instance_id: String,
    key_id: String,
    task: SealTask,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let what = match &task {
        SealTask::Export { .. } => "export",
        SealTask::Backup { .. } => "backup",
    };
    let span = info_span!("seal", op = what, instance_id = %instance_id, key_id = %key_id);
    tokio::spawn(
        async move {
            let _permit = permit;
            let result = run_seal_task(&state, &instance_id, &key_id, task).await;
            if result.is_ok() {
                info!("shares sealed and stored");
            }
            let result = result.map(|()| "FINISHED".to_owned());
            end_task_on_key(&state, &instance_id, &key_id, result).await;
        }
        .instrument(span),
    );
}

/// The public result of an export task, kept in `key_tasks.result`.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct ExportResult {
    pub generation: u32,
    pub shares: Vec<dkms_proto::api::MemberSealedShare>,
}

/// An export asks every connected member (at least `threshold` of them) for its share
/// sealed to the requester; a backup asks every member for its share sealed to its
/// custodian. Only ciphertext reaches the gateway, and it is stored only once every
/// asked member answered.
async fn run_seal_task(
    state: &AppState,
    instance_id: &str,
    key_id: &str,
    task: SealTask,
) -> Result<(), TaskFailure> {
    let internal = |e: dkms_store::StoreError| TaskFailure::new(ErrorCode::Internal, e.to_string());
    let KeyTaskStart {
        _running,
        key,
        participants,
        session_key,
    } = start_key_task(state, instance_id, key_id).await?;
    let generation = key.generation;
    let operations: Vec<(NodeTag, Operation)> = match &task {
        SealTask::Export { recipient } => {
            let live: Vec<NodeTag> = participants
                .iter()
                .filter(|t| state.hub.is_connected(t))
                .cloned()
                .collect();
            if live.len() < usize::from(key.threshold) {
                return Err(TaskFailure::new(
                    ErrorCode::NodeUnavailable,
                    format!(
                        "an export needs {} connected members, but only {} are: {}",
                        key.threshold,
                        live.len(),
                        join(&live)
                    ),
                ));
            }
            live.into_iter()
                .map(|t| {
                    (
                        t,
                        Operation::Export {
                            generation,
                            recipient: *recipient,
                        },
                    )
                })
                .collect()
        }
        SealTask::Backup { custodians, .. } => {
            require_connected(state, &participants, "a backup")?;
            if custodians.len() != participants.len() {
                return Err(TaskFailure::new(
                    ErrorCode::InvalidParameter,
                    format!(
                        "the backup group has {} custodians but the key has {} members",
                        custodians.len(),
                        participants.len()
                    ),
                ));
            }
            participants
                .iter()
                .zip(custodians)
                .map(|(t, c)| {
                    (
                        t.clone(),
                        Operation::Backup {
                            generation,
                            custodian: *c,
                        },
                    )
                })
                .collect()
        }
    };
    let outcomes =
        run_session_each(state, session_key, operations, state.config.sign_timeout).await?;
    let mut sealed = BTreeMap::new();
    for (tag, outcome) in outcomes {
        match outcome {
            Outcome::Sealed { sealed: ct } => {
                sealed.insert(tag, hex::encode(ct));
            }
            _ => {
                return Err(TaskFailure::new(
                    ErrorCode::ProtocolFailed,
                    format!("node {tag} did not answer with a sealed share"),
                ));
            }
        }
    }
    // In the key's member order.
    let ordered = participants
        .iter()
        .filter_map(|t| sealed.remove(t).map(|ct| (t.clone(), ct)));
    let now = state.clock.now_ms();
    match task {
        SealTask::Export { .. } => {
            let result = ExportResult {
                generation,
                shares: ordered
                    .map(|(t, ct)| dkms_proto::api::MemberSealedShare {
                        member: t.to_string(),
                        sealed: ct,
                    })
                    .collect(),
            };
            let json = serde_json::to_string(&result)
                .map_err(|e| TaskFailure::new(ErrorCode::Internal, e.to_string()))?;
            state
                .store
                .set_key_task_result(instance_id, &json)
                .await
                .map_err(internal)?;
        }
        SealTask::Backup { group, .. } => {
            let shares: Vec<dkms_proto::api::MemberSealedShare> = ordered
                .map(|(t, ct)| dkms_proto::api::MemberSealedShare {
                    member: t.to_string(),
                    sealed: ct,
                })
                .collect();
            let json = serde_json::to_string(&shares)
                .map_err(|e| TaskFailure::new(ErrorCode::Internal, e.to_string()))?;
            state
                .store
                .put_key_backup(&dkms_store::KeyBackupRow {
                    key_id: key_id.to_owned(),
                    backup_group: group,
                    generation,
                    shares: json,
                    created_at: now,
                })
                .await
                .map_err(internal)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::SweepGate;

    #[test]
    fn a_gateway_sweeps_from_its_first_heartbeat_but_waits_a_lease_after_an_outage() {
        let mut gate = SweepGate::default();
        assert!(gate.may_sweep(true, 1_000, 15_000), "at start: at once");
        assert!(gate.may_sweep(true, 4_000, 15_000));
        assert!(
            !gate.may_sweep(false, 7_000, 15_000),
            "database unreachable"
        );
        assert!(!gate.may_sweep(false, 40_000, 15_000));
        assert!(
            !gate.may_sweep(true, 43_000, 15_000),
            "back, but the others have not renewed yet"
        );
        assert!(!gate.may_sweep(true, 57_999, 15_000));
        assert!(
            gate.may_sweep(true, 58_000, 15_000),
            "a lease after the outage"
        );
        assert!(gate.may_sweep(true, 61_000, 15_000));
    }
}
