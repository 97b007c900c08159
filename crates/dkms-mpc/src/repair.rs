//! Share repair: rebuilding the share of a party whose share is lost, from `threshold`
//! helpers, through dkls23's `Party::repair_term` and `repair_assemble`.
//!
//! Each helper sends the lost party one term: its share times the Lagrange coefficient
//! that interpolates the key's polynomial at the lost party's index over the helper set,
//! masked with shares of zero from the seeds the helpers share pairwise. Only the sum of all
//! terms means anything: it is the lost party's old share, checked against its verifying
//! share in the key's public package. No helper learns it, and the helpers never exchange
//! messages with each other.
//!
//! What comes back is *hollow*: share, public key, package and chain code are right, but
//! there are no zero-share seeds and no OT/multiplication state, which only a DKG builds. A
//! hollow [`KeyShare`] ([`KeyShare::needs_refresh`]) cannot sign or help another repair;
//! all `n` parties must run [`crate::refresh`] (the complete refresh, which rebuilds that
//! state) right after the repair. The refresh also re-randomizes every share, so whatever
//! the lost share was, it no longer combines with the new ones.
//!
//! Network rounds:
//! 1. recipient → each helper: the request (the public key it expects). Helpers send
//!    nothing before it: no term goes out before the recipient's session is live.
//! 2. helper → recipient: its masked term (secret) and its public key package.
//! 3. recipient → each helper: a confirmation over the session id, the public key, the
//!    rebuilt verifying share and the package. The helper's session ends when it matches.
//!
//! The recipient trusts the package only because every helper sent the same one with the
//! expected public key (all of them together could rebuild the key anyway), and dkls23
//! checks the assembled share against it.
//!
//! Authorizing the recipient is the caller's job: whoever runs the recipient session under
//! the lost party's index gets that party's share. If the old holder still exists, it and
//! the recipient together hold one share too many until the refresh.

use crate::curve::{Curve, DkmsCurve, compress, decompress, with_curve};
use crate::error::{MpcError, PartyIndex};
use crate::keygen::pi;
use crate::share::{KeyShare, ShareParticipant, check_parameters};
use crate::wire::{Inbox, decode, encode_secret};
use crate::{Outgoing, Progress, Session, SessionOutput};
use dkls23::protocols::PublicKeyPackage;
use dkls23::protocols::repair::{RepairError, RepairTerm, repair_assemble};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};

const LAST_ROUND: u8 = 3;
const CONFIRM_DOMAIN: &[u8] = b"dkms/repair-confirm/v1";
const PACKAGE_DOMAIN: &[u8] = b"dkms/public-key-package/v1";

/// Parameters of one repair, the same for the helpers and the recipient.
#[derive(Debug, Clone)]
pub struct RepairConfig {
    /// From [`crate::session_id::session_id`] with [`crate::session_id::SessionKind::Repair`];
    /// the helpers' masks and every message are bound to it.
    pub session_id: [u8; 32],
    /// The party whose share is rebuilt.
    pub lost: PartyIndex,
    /// Exactly `threshold` distinct parties, not `lost`, in any order.
    pub helpers: Vec<PartyIndex>,
}

/// What the recipient (a node without any share of the key) must know. The rest (the
/// verifying shares of the public package, the chain code, the session) comes from the
/// helpers, who must all agree on it.
#[derive(Debug, Clone)]
pub struct RepairPublic {
    pub key_id: uuid::Uuid,
    pub threshold: u8,
    /// All members in order; party index = position + 1.
    pub participants: Vec<ShareParticipant>,
    /// SEC1 compressed public key of the key.
    pub public_key: [u8; 33],
    /// Whether the key is exportable, as fixed at its creation: the helpers check it
    /// against their own shares, so the rebuilt share carries the key's real bit.
    pub exportable: bool,
    pub curve: Curve,
}

/// Starts a helper's part of a repair. Ends with [`SessionOutput::Repaired`] once the
/// recipient confirms that it rebuilt a share matching this helper's public package. The
/// helper's own share is unchanged (the session drops its copy).
pub fn repair_helper(share: KeyShare, cfg: RepairConfig) -> Result<Box<dyn Session>, MpcError> {
    with_curve!(share.curve(), C => Ok(Box::new(HelperSession::<C>::new(share, cfg)?)))
}

/// Starts the recipient's part of a repair: `me` must be `cfg.lost`. Ends with
/// `SessionOutput::Key` holding a hollow share ([`KeyShare::needs_refresh`]): store it,
/// then run [`crate::refresh`] with all parties before signing.
pub fn repair_recipient(
    public: RepairPublic,
    cfg: RepairConfig,
    me: PartyIndex,
) -> Result<Box<dyn Session>, MpcError> {
    with_curve!(public.curve, C => Ok(Box::new(RecipientSession::<C>::new(public, cfg, me)?)))
}

#[derive(Serialize, Deserialize)]
struct Request {
    public_key: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
struct TermMsg<C: DkmsCurve> {
    term: RepairTerm<C>,
    package: PublicKeyPackage<C>,
}

#[derive(Serialize, Deserialize)]
struct Confirm {
    confirmation: [u8; 32],
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    New,
    Awaiting(u8),
    Done,
    Failed,
}

/// Checks the repair parameters against a `threshold`-of-`n` key; returns the helpers in
/// ascending order (as dkls23 wants them).
fn check_config(threshold: u8, n: u8, cfg: &RepairConfig) -> Result<Vec<PartyIndex>, MpcError> {
    let bad = |m: String| Err(MpcError::BadParameters(m));
    if cfg.lost == 0 || cfg.lost > n {
        return bad(format!("lost party {} is not in 1..={n}", cfg.lost));
    }
    if cfg.helpers.len() != usize::from(threshold) {
        return bad(format!(
            "a {threshold}-of-{n} key is repaired by exactly {threshold} helpers, got {}",
            cfg.helpers.len()
        ));
    }
    let mut set = BTreeSet::new();
    for &h in &cfg.helpers {
        if h == 0 || h > n {
            return bad(format!("helper {h} is not a party of this {n}-party key"));
        }
        if h == cfg.lost {
            return bad(format!("party {h} is both lost and a helper"));
        }
        if !set.insert(h) {
            return bad(format!("helper {h} is listed twice"));
        }
    }
    Ok(set.into_iter().collect())
}

fn to_pi(parties: &[PartyIndex]) -> Result<Vec<dkls23::protocols::PartyIndex>, MpcError> {
    parties.iter().map(|&p| pi(p)).collect()
}

fn package_hash<C: DkmsCurve>(package: &PublicKeyPackage<C>) -> Result<[u8; 32], MpcError> {
    let bytes = postcard::to_stdvec(package).map_err(|e| MpcError::Internal(e.to_string()))?;
    let mut h = Sha256::new();
    h.update(PACKAGE_DOMAIN);
    h.update(&bytes);
    Ok(h.finalize().into())
}

/// What the recipient confirms and every helper recomputes from its own share.
fn confirmation<C: DkmsCurve>(
    session_id: &[u8; 32],
    package: &PublicKeyPackage<C>,
    lost: PartyIndex,
) -> Result<[u8; 32], MpcError> {
    let verifying_share = package
        .verifying_share(pi(lost)?)
        .map(compress::<C>)
        .ok_or_else(|| MpcError::Internal(format!("no verifying share for party {lost}")))?;
    let mut h = Sha256::new();
    for part in [
        CONFIRM_DOMAIN,
        session_id,
        &compress::<C>(package.verifying_key()),
        &verifying_share,
        &package_hash(package)?,
    ] {
        h.update((part.len() as u32).to_be_bytes());
        h.update(part);
    }
    Ok(h.finalize().into())
}

fn repair_error(e: &RepairError) -> MpcError {
    match e {
        RepairError::MissingSeed { .. } => MpcError::Corrupt(format!("repair: {e}")),
        RepairError::NotEnoughTerms => MpcError::Internal(format!("repair: {e}")),
        RepairError::InconsistentTerms => MpcError::Aborted(format!(
            "repair: {e} (the helpers hold different session ids or chain codes: shares of \
             different generations)"
        )),
        RepairError::ShareMismatch => MpcError::Aborted(format!(
            "repair: {e}; one of the helpers sent a wrong term (retry with another helper \
             set to find it)"
        )),
        _ => MpcError::BadParameters(format!("repair: {e}")),
    }
}

// ---------------------------------------------------------------------------------------
// Helper

struct HelperSession<C: DkmsCurve> {
    /// Dropped (and so zeroized) once the term is computed.
    share: Option<KeyShare>,
    lost: PartyIndex,
    helpers: Vec<PartyIndex>,
    session_id: [u8; 32],
    public_key: [u8; 33],
    expected: [u8; 32],
    inbox: Inbox<HelperMsg>,
    stage: Stage,
    curve: std::marker::PhantomData<C>,
}

enum HelperMsg {
    Request(Request),
    Confirm(Confirm),
}

impl<C: DkmsCurve> HelperSession<C> {
    fn new(share: KeyShare, cfg: RepairConfig) -> Result<Self, MpcError> {
        let n = share.participants().len() as u8;
        let me = share.my_index();
        let helpers = check_config(share.threshold(), n, &cfg)?;
        if !helpers.contains(&me) {
            return Err(MpcError::BadParameters(format!(
                "the helpers do not include this node (party {me})"
            )));
        }
        if share.needs_refresh() {
            return Err(MpcError::BadParameters(
                "this share was repaired itself and cannot help before the key is refreshed".into(),
            ));
        }
        let expected = confirmation(&cfg.session_id, &share.parts::<C>()?.package, cfg.lost)?;
        Ok(HelperSession {
            lost: cfg.lost,
            helpers,
            session_id: cfg.session_id,
            public_key: share.public_key(),
            expected,
            inbox: Inbox::new(me, BTreeSet::from([cfg.lost]), LAST_ROUND),
            share: Some(share),
            stage: Stage::New,
            curve: std::marker::PhantomData,
        })
    }

    fn decode_msg(&self, round: u8, payload: &[u8]) -> Result<HelperMsg, String> {
        match round {
            1 => Ok(HelperMsg::Request(decode(payload)?)),
            3 => Ok(HelperMsg::Confirm(decode(payload)?)),
            _ => Err(format!("the recipient sends no round {round} message")),
        }
    }

    /// The request is in: our term (round 2 out).
    fn term(
        &mut self,
        received: BTreeMap<PartyIndex, HelperMsg>,
    ) -> Result<Vec<Outgoing>, MpcError> {
        for (_, msg) in received {
            match msg {
                HelperMsg::Request(r) if r.public_key == self.public_key => {}
                HelperMsg::Request(_) => {
                    return Err(MpcError::misbehaviour(
                        self.lost,
                        "asked for a repair of another public key",
                    ));
                }
                HelperMsg::Confirm(_) => return Err(MpcError::Internal("round mix-up".into())),
            }
        }
        let share = self
            .share
            .take()
            .ok_or_else(|| MpcError::Internal("share already consumed".into()))?;
        let parts = share.parts::<C>()?;
        let term = parts
            .party
            .repair_term(&to_pi(&self.helpers)?, pi(self.lost)?, &self.session_id)
            .map_err(|e| repair_error(&e))?;
        let msg = TermMsg {
            term,
            package: parts.package.clone(),
        };
        drop(share);
        Ok(vec![Outgoing {
            to: self.lost,
            round: 2,
            payload: encode_secret(&[], &msg)?,
        }])
    }

    fn finish(
        &mut self,
        received: BTreeMap<PartyIndex, HelperMsg>,
    ) -> Result<SessionOutput, MpcError> {
        for (_, msg) in received {
            match msg {
                HelperMsg::Confirm(c) if c.confirmation == self.expected => {}
                HelperMsg::Confirm(_) => {
                    return Err(MpcError::misbehaviour(
                        self.lost,
                        "confirmed a different share or public key package",
                    ));
                }
                HelperMsg::Request(_) => return Err(MpcError::Internal("round mix-up".into())),
            }
        }
        Ok(SessionOutput::Repaired)
    }

    fn advance(&mut self) -> Result<Progress, MpcError> {
        let mut out = Vec::new();
        while let Stage::Awaiting(round) = self.stage {
            let Some(received) = self.inbox.take_round(round) else {
                break;
            };
            if round == 1 {
                out.extend(self.term(received)?);
                self.stage = Stage::Awaiting(3);
            } else {
                let output = self.finish(received)?;
                self.stage = Stage::Done;
                return Ok(Progress::Done {
                    output,
                    outgoing: out,
                });
            }
        }
        Ok(Progress::Continue(out))
    }
}

impl<C: DkmsCurve> Session for HelperSession<C> {
    fn start(&mut self) -> Result<Vec<Outgoing>, MpcError> {
        if self.stage != Stage::New {
            return Err(MpcError::Internal("session already started".into()));
        }
        let run = |s: &mut Self| -> Result<Vec<Outgoing>, MpcError> {
            s.stage = Stage::Awaiting(1);
            match s.advance()? {
                Progress::Continue(out) => Ok(out),
                Progress::Done { .. } => Err(MpcError::Internal("finished before sending".into())),
            }
        };
        crate::guarded(self, run).map_err(|e| self.fail(e))
    }

    fn receive(
        &mut self,
        from: PartyIndex,
        round: u8,
        payload: &[u8],
    ) -> Result<Progress, MpcError> {
        match self.stage {
            Stage::Done => return Err(MpcError::Internal("session already finished".into())),
            Stage::Failed => return Err(MpcError::Internal("session already failed".into())),
            _ => {}
        }
        let run = |s: &mut Self| -> Result<Progress, MpcError> {
            let msg = s.decode_msg(round, payload);
            s.inbox.accept(from, round, payload, |_, _| msg)?;
            if s.stage == Stage::New {
                return Ok(Progress::Continue(Vec::new()));
            }
            s.advance()
        };
        crate::guarded(self, run).map_err(|e| self.fail(e))
    }

    fn waiting_for(&self) -> Vec<PartyIndex> {
        match self.stage {
            Stage::New => self.inbox.missing(1),
            Stage::Awaiting(r) => self.inbox.missing(r),
            Stage::Done | Stage::Failed => Vec::new(),
        }
    }
}

impl<C: DkmsCurve> HelperSession<C> {
    fn fail(&mut self, e: MpcError) -> MpcError {
        self.stage = Stage::Failed;
        self.inbox.clear();
        self.share = None;
        e
    }
}

// ---------------------------------------------------------------------------------------
// Recipient

struct RecipientSession<C: DkmsCurve> {
    public: RepairPublic,
    me: PartyIndex,
    session_id: [u8; 32],
    inbox: Inbox<TermMsg<C>>,
    stage: Stage,
}

impl<C: DkmsCurve> RecipientSession<C> {
    fn new(public: RepairPublic, cfg: RepairConfig, me: PartyIndex) -> Result<Self, MpcError> {
        check_parameters(public.threshold, &public.participants)
            .map_err(MpcError::BadParameters)?;
        let n = public.participants.len() as u8;
        let helpers = check_config(public.threshold, n, &cfg)?;
        if me != cfg.lost {
            return Err(MpcError::BadParameters(format!(
                "this node is party {me}, but the repair is for party {}",
                cfg.lost
            )));
        }
        if public.curve != C::CURVE {
            return Err(MpcError::Internal("repair started on another curve".into()));
        }
        decompress::<C>(&public.public_key).ok_or_else(|| {
            MpcError::BadParameters(format!("the public key is no {} point", C::CURVE))
        })?;
        Ok(RecipientSession {
            public,
            me,
            session_id: cfg.session_id,
            inbox: Inbox::new(me, helpers.into_iter().collect(), LAST_ROUND),
            stage: Stage::New,
        })
    }

    fn decode_msg(
        &self,
        from: PartyIndex,
        round: u8,
        payload: &[u8],
    ) -> Result<TermMsg<C>, String> {
        if round != 2 {
            return Err(format!("a helper sends no round {round} message"));
        }
        let m: TermMsg<C> = decode(payload)?;
        if m.term.helper.as_u8() != from || m.term.target.as_u8() != self.me {
            return Err(format!(
                "term is labelled {} → {}, but came from {from} to {}",
                m.term.helper, m.term.target, self.me
            ));
        }
        if compress::<C>(&m.term.public_key) != self.public.public_key
            || compress::<C>(m.package.verifying_key()) != self.public.public_key
        {
            return Err("term or package for another public key".into());
        }
        let n = self.public.participants.len() as u8;
        if m.package.threshold() != self.public.threshold || m.package.share_count() != n {
            return Err(format!(
                "package is {}-of-{}, the key {}-of-{n}",
                m.package.threshold(),
                m.package.share_count(),
                self.public.threshold
            ));
        }
        Ok(m)
    }

    fn request(&self) -> Result<Vec<Outgoing>, MpcError> {
        let payload = encode_secret(
            &[],
            &Request {
                public_key: self.public.public_key.to_vec(),
            },
        )?;
        Ok(self
            .inbox
            .peers()
            .map(|to| Outgoing {
                to,
                round: 1,
                payload: payload.clone(),
            })
            .collect())
    }

    /// Every term is in: assemble, check, confirm (round 3 out).
    fn assemble(
        &mut self,
        received: BTreeMap<PartyIndex, TermMsg<C>>,
    ) -> Result<Progress, MpcError> {
        let mut packages = BTreeMap::new();
        let mut terms = Vec::with_capacity(received.len());
        let mut package = None;
        for (j, m) in received {
            packages.insert(j, package_hash(&m.package)?);
            package.get_or_insert(m.package);
            terms.push(m.term);
        }
        let package = package.ok_or_else(|| MpcError::Internal("no terms".into()))?;
        let first = package_hash(&package)?;
        let differing: Vec<PartyIndex> = packages
            .iter()
            .filter(|(_, h)| **h != first)
            .map(|(j, _)| *j)
            .collect();
        if !differing.is_empty() {
            return Err(MpcError::Aborted(format!(
                "helpers disagree on the key's public package (helpers {differing:?} differ \
                 from helper {}): shares of different generations",
                packages.keys().next().copied().unwrap_or_default()
            )));
        }
        let party = repair_assemble(&package, pi(self.me)?, &terms, |_| String::new())
            .map_err(|e| repair_error(&e))?;
        drop(terms);
        let confirmation = confirmation(&self.session_id, &package, self.me)?;
        let share = KeyShare::new(
            self.public.key_id,
            self.public.threshold,
            self.me,
            self.public.participants.clone(),
            package,
            party,
        )
        .map_err(MpcError::Internal)?
        .with_exportable(self.public.exportable);
        let payload = encode_secret(&[], &Confirm { confirmation })?;
        let outgoing = self
            .inbox
            .peers()
            .map(|to| Outgoing {
                to,
                round: 3,
                payload: payload.clone(),
            })
            .collect();
        Ok(Progress::Done {
            output: SessionOutput::Key(share),
            outgoing,
        })
    }

    fn advance(&mut self) -> Result<Progress, MpcError> {
        if self.stage == Stage::Awaiting(2)
            && let Some(received) = self.inbox.take_round(2)
        {
            let done = self.assemble(received)?;
            self.stage = Stage::Done;
            return Ok(done);
        }
        Ok(Progress::Continue(Vec::new()))
    }

    fn fail(&mut self, e: MpcError) -> MpcError {
        self.stage = Stage::Failed;
        self.inbox.clear();
        e
    }
}

impl<C: DkmsCurve> Session for RecipientSession<C> {
    fn start(&mut self) -> Result<Vec<Outgoing>, MpcError> {
        if self.stage != Stage::New {
            return Err(MpcError::Internal("session already started".into()));
        }
        let run = |s: &mut Self| -> Result<Vec<Outgoing>, MpcError> {
            let out = s.request()?;
            s.stage = Stage::Awaiting(2);
            // Helpers answer only the request, so no term can be here yet; one that is
            // came unasked and waits for the others like any other.
            match s.advance()? {
                Progress::Continue(_) => Ok(out),
                Progress::Done { .. } => Err(MpcError::Internal(
                    "terms arrived before the request was sent".into(),
                )),
            }
        };
        crate::guarded(self, run).map_err(|e| self.fail(e))
    }

    fn receive(
        &mut self,
        from: PartyIndex,
        round: u8,
        payload: &[u8],
    ) -> Result<Progress, MpcError> {
        match self.stage {
            Stage::Done => return Err(MpcError::Internal("session already finished".into())),
            Stage::Failed => return Err(MpcError::Internal("session already failed".into())),
            _ => {}
        }
        let run = |s: &mut Self| -> Result<Progress, MpcError> {
            let msg = s.decode_msg(from, round, payload);
            s.inbox.accept(from, round, payload, |_, _| msg)?;
            if s.stage == Stage::New {
                return Ok(Progress::Continue(Vec::new()));
            }
            s.advance()
        };
        crate::guarded(self, run).map_err(|e| self.fail(e))
    }

    fn waiting_for(&self) -> Vec<PartyIndex> {
        match self.stage {
            Stage::New | Stage::Awaiting(_) => self.inbox.missing(2),
            Stage::Done | Stage::Failed => Vec::new(),
        }
    }
}
