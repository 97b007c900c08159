//! Proactive refresh: the DKLs23 "complete refresh" (dkls23
//! `Party::refresh_complete_phase1..4`) plus a confirmation round.
//!
//! The complete refresh re-runs the DKG with polynomials whose constant term is zero: every
//! share moves by a correction that sums to zero at 0, so the public key stays, and the
//! zero-share seeds and the OT/multiplication setup between every pair are built again from
//! scratch. Old and new shares are independent: an old share neither combines with new ones
//! (different polynomial) nor signs with them (different session, different OT state).
//! dkls23's faster refresh (`refresh_phase1..4`) derives the new OT state from the old one
//! instead; it is not used because it cannot run with a repaired share, which has no OT
//! state (see [`crate::repair_recipient`]), and because the complete one leaves nothing of
//! the old pairwise state behind.
//!
//! All `n` parties of the key take part. Network rounds:
//! 1. p2p: our zero-constant polynomial evaluated at the recipient's index (secret), and
//!    a tag of the share generation we hold (see below).
//! 2. to everyone: the commitment to our discrete-log proof of our correction; p2p: the
//!    commitment to our zero-share seed for the recipient.
//! 3. to everyone: the proof itself; p2p: the opened zero-share seed and the
//!    OT/multiplication setup for the recipient. Sent only once every round-2 commitment is
//!    in.
//! 4. to everyone: a confirmation hash over the session id, the public key and every
//!    broadcast value of every party.
//!
//! dkls23 binds the seeds and the OT setup to the session id inside the current shares, so
//! a party holding a share of another generation (one that missed, or alone adopted, an
//! earlier refresh) would make phase 4 fail with a misleading blame. Round 1 therefore
//! carries a hash of that id and the session aborts at once, blaming nobody, if they differ.
//!
//! The new share keeps key id, threshold, participants, index and public key. Its dkls23
//! session id is dkls23's chain of (old session id, this refresh's session id, the
//! round-2 proof commitments of this run), so it differs from the old one and from any
//! other run of the same refresh.

use crate::curve::{DkmsCurve, compress, with_curve};
use crate::error::{MpcError, PartyIndex};
use crate::keygen::{check_route, hash_item, pi};
use crate::share::KeyShare;
use crate::wire::{Inbox, decode, encode_secret};
use crate::{Outgoing, Progress, Session, SessionOutput};
use dkls23::protocols::Abort;
use dkls23::protocols::dkg::{
    KeepInitMulPhase3to4, KeepInitZeroSharePhase3to4, ProofCommitment, TransmitInitMulPhase3to4,
    TransmitInitZeroSharePhase2to4, TransmitInitZeroSharePhase3to4,
};
use dkls23::utilities::hashes::HashOutput;
use dkls23::utilities::proofs::DLogProof;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use zeroize::{Zeroize, Zeroizing};

const LAST_ROUND: u8 = 4;
const TRANSCRIPT_DOMAIN: &[u8] = b"dkms/refresh-transcript/v1";
const CONFIRM_DOMAIN: &[u8] = b"dkms/refresh-confirm/v1";
const GENERATION_DOMAIN: &[u8] = b"dkms/share-generation/v1";

type Pi = dkls23::protocols::PartyIndex;

/// Parameters of one refresh. Every party of the key takes part.
#[derive(Debug, Clone)]
pub struct RefreshConfig {
    /// From [`crate::session_id::session_id`] with [`crate::session_id::SessionKind::Refresh`];
    /// every message of the refresh is bound to it.
    pub session_id: [u8; 32],
}

/// Starts a refresh of `share` (which the session owns and drops when it ends). The output
/// is `SessionOutput::Key` with the new share; the caller replaces the stored share with it
/// only after the session is done, and must then erase the old one, backups included: a
/// refresh cannot revoke a share somebody keeps.
pub fn refresh(share: KeyShare, cfg: RefreshConfig) -> Result<Box<dyn Session>, MpcError> {
    with_curve!(share.curve(), C => Ok(Box::new(RefreshSession::<C>::new(share, cfg)?)))
}

#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
struct Round1<C: DkmsCurve> {
    generation: [u8; 32],
    fragment: C::Scalar,
}

impl<C: DkmsCurve> Drop for Round1<C> {
    fn drop(&mut self) {
        self.fragment.zeroize();
    }
}

#[derive(Serialize, Deserialize)]
struct Round2 {
    proof_commitment: HashOutput,
    zero: TransmitInitZeroSharePhase2to4,
}

#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
struct Round3<C: DkmsCurve> {
    proof: DLogProof<C>,
    zero: TransmitInitZeroSharePhase3to4,
    mul: TransmitInitMulPhase3to4<C>,
}

impl<C: DkmsCurve> Drop for Round3<C> {
    fn drop(&mut self) {
        wipe_zero3(&mut self.zero);
        wipe_mul3(&mut self.mul);
    }
}

#[derive(Serialize, Deserialize)]
struct Round4 {
    confirmation: [u8; 32],
}

enum Msg<C: DkmsCurve> {
    R1(Round1<C>),
    R2(Box<Round2>),
    R3(Box<Round3<C>>),
    R4(Round4),
}

fn wipe_zero3(m: &mut TransmitInitZeroSharePhase3to4) {
    m.seed.zeroize();
    m.salt.zeroize();
}

fn wipe_mul3<C: DkmsCurve>(m: &mut TransmitInitMulPhase3to4<C>) {
    m.seed.zeroize();
    m.nonce.zeroize();
}

/// What phases 2 and 3 produced, held until every round-2 commitment is in (the transmit
/// parts) and until phase 4 (the kept parts).
struct Phase3Out<C: DkmsCurve> {
    correction: C::Scalar,
    zero_kept: BTreeMap<Pi, KeepInitZeroSharePhase3to4>,
    mul_kept: BTreeMap<Pi, KeepInitMulPhase3to4<C>>,
    zero: BTreeMap<PartyIndex, TransmitInitZeroSharePhase3to4>,
    mul: BTreeMap<PartyIndex, TransmitInitMulPhase3to4<C>>,
}

impl<C: DkmsCurve> Drop for Phase3Out<C> {
    fn drop(&mut self) {
        self.correction.zeroize();
        for k in self.zero_kept.values_mut() {
            k.seed.zeroize();
        }
        // As dkls23's own DkgSession wipes the same kept values.
        for k in self.mul_kept.values_mut() {
            k.ot_sender.s.zeroize();
            k.ot_receiver.seed.zeroize();
            k.nonce.zeroize();
            k.vec_r.zeroize();
            k.correlation.zeroize();
        }
        self.zero.values_mut().for_each(wipe_zero3);
        self.mul.values_mut().for_each(wipe_mul3);
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    New,
    Awaiting(u8),
    Done,
    Failed,
}

struct RefreshSession<C: DkmsCurve> {
    /// The share being refreshed; dropped (and so zeroized) once phase 4 has used it.
    old: Option<KeyShare>,
    me: PartyIndex,
    n: u8,
    session_id: [u8; 32],
    public_key: [u8; 33],
    generation: [u8; 32],
    inbox: Inbox<Msg<C>>,
    stage: Stage,
    own_fragment: Option<C::Scalar>,
    own_proof: Option<ProofCommitment<C>>,
    phase3: Option<Phase3Out<C>>,
    generations: BTreeMap<PartyIndex, [u8; 32]>,
    received2: BTreeMap<PartyIndex, Round2>,
    result: Option<KeyShare>,
    confirmation: [u8; 32],
}

impl<C: DkmsCurve> Drop for RefreshSession<C> {
    fn drop(&mut self) {
        if let Some(f) = self.own_fragment.as_mut() {
            f.zeroize();
        }
    }
}

/// A public tag of the share generation: parties whose shares come from different runs
/// (keygen, refresh, repair) hold different dkls23 session ids.
fn generation<C: DkmsCurve>(share: &KeyShare) -> Result<[u8; 32], MpcError> {
    let mut h = Sha256::new();
    h.update(GENERATION_DOMAIN);
    h.update(&share.parts::<C>()?.party.session_id);
    Ok(h.finalize().into())
}

fn decode_msg<C: DkmsCurve>(
    me: PartyIndex,
    from: PartyIndex,
    round: u8,
    payload: &[u8],
) -> Result<Msg<C>, String> {
    Ok(match round {
        1 => Msg::R1(decode(payload)?),
        2 => {
            let m: Round2 = decode(payload)?;
            check_route(&m.zero.parties, from, me, "zero-share commitment")?;
            Msg::R2(Box::new(m))
        }
        3 => {
            let m: Round3<C> = decode(payload)?;
            check_route(&m.zero.parties, from, me, "zero-share seed")?;
            check_route(&m.mul.parties, from, me, "multiplication setup")?;
            Msg::R3(Box::new(m))
        }
        4 => Msg::R4(decode(payload)?),
        _ => return Err(format!("no round {round}")),
    })
}

impl<C: DkmsCurve> RefreshSession<C> {
    fn new(share: KeyShare, cfg: RefreshConfig) -> Result<Self, MpcError> {
        let me = share.my_index();
        let n = share.participants().len() as u8;
        let peers = (1..=n).filter(|&i| i != me).collect();
        Ok(RefreshSession {
            me,
            n,
            session_id: cfg.session_id,
            public_key: share.public_key(),
            generation: generation::<C>(&share)?,
            inbox: Inbox::new(me, peers, LAST_ROUND),
            old: Some(share),
            stage: Stage::New,
            own_fragment: None,
            own_proof: None,
            phase3: None,
            generations: BTreeMap::new(),
            received2: BTreeMap::new(),
            result: None,
            confirmation: [0; 32],
        })
    }

    fn old(&self) -> Result<&KeyShare, MpcError> {
        self.old
            .as_ref()
            .ok_or_else(|| MpcError::Internal("old share already consumed".into()))
    }

    fn abort(&self, a: &Abort) -> MpcError {
        MpcError::from_abort(a, self.me)
    }

    /// Round 1 out: q_me(j) for every peer j (q_me(0) = 0); q_me(me) stays here.
    fn round1(&mut self) -> Result<Vec<Outgoing>, MpcError> {
        let mut fragments =
            Zeroizing::new(self.old()?.parts::<C>()?.party.refresh_complete_phase1());
        if fragments.len() != usize::from(self.n) {
            return Err(MpcError::Internal(
                "phase 1 output has the wrong length".into(),
            ));
        }
        let mut out = Vec::new();
        for j in self.inbox.peers().collect::<Vec<_>>() {
            let msg = Round1::<C> {
                generation: self.generation,
                fragment: fragments[usize::from(j) - 1],
            };
            out.push(Outgoing {
                to: j,
                round: 1,
                payload: encode_secret(&[], &msg)?,
            });
        }
        self.own_fragment = Some(fragments[usize::from(self.me) - 1]);
        fragments.iter_mut().for_each(Zeroize::zeroize);
        Ok(out)
    }

    /// Phases 2 and 3 (phase 3 needs nothing from others); round 2 out.
    fn round2(
        &mut self,
        received: BTreeMap<PartyIndex, Msg<C>>,
    ) -> Result<Vec<Outgoing>, MpcError> {
        let own = self
            .own_fragment
            .take()
            .ok_or_else(|| MpcError::Internal("own fragment missing".into()))?;
        let mut fragments = Zeroizing::new(vec![own]);
        let mut strangers = Vec::new();
        for (j, msg) in received {
            match msg {
                Msg::R1(m) => {
                    if m.generation != self.generation {
                        strangers.push(j);
                    }
                    self.generations.insert(j, m.generation);
                    fragments.push(m.fragment);
                }
                _ => return Err(MpcError::Internal("round mix-up".into())),
            }
        }
        if !strangers.is_empty() {
            return Err(MpcError::Aborted(format!(
                "parties {strangers:?} hold another generation of this key's shares than \
                 party {} (a refresh or repair that not every party adopted)",
                self.me
            )));
        }
        let sid = self.session_id;
        let party = &self.old()?.parts::<C>()?.party;
        let (correction, proof, zero_kept2, zero2) =
            party.refresh_complete_phase2(&sid, &fragments);
        fragments.iter_mut().for_each(Zeroize::zeroize);
        let mut zero_kept2 = zero_kept2;
        let (zero_kept, zero3, mul_kept, mul3) = party.refresh_complete_phase3(&sid, &zero_kept2);
        for k in zero_kept2.values_mut() {
            k.seed.zeroize();
            k.salt.zeroize();
        }
        // Into the wiping holder at once, before anything below can fail.
        let phase3 = Phase3Out {
            correction,
            zero_kept,
            mul_kept,
            zero: zero3
                .into_iter()
                .map(|m| (m.parties.receiver.as_u8(), m))
                .collect(),
            mul: mul3
                .into_iter()
                .map(|m| (m.parties.receiver.as_u8(), m))
                .collect(),
        };

        let mut zero2: BTreeMap<PartyIndex, TransmitInitZeroSharePhase2to4> = zero2
            .into_iter()
            .map(|m| (m.parties.receiver.as_u8(), m))
            .collect();
        let mut out = Vec::new();
        for j in self.inbox.peers().collect::<Vec<_>>() {
            let zero = zero2
                .remove(&j)
                .ok_or_else(|| MpcError::Internal(format!("no zero-share commitment for {j}")))?;
            let msg = Round2 {
                proof_commitment: proof.commitment,
                zero,
            };
            out.push(Outgoing {
                to: j,
                round: 2,
                payload: encode_secret(&[], &msg)?,
            });
        }
        self.own_proof = Some(proof);
        self.phase3 = Some(phase3);
        Ok(out)
    }

    /// Every commitment is in: open ours (round 3 out).
    fn round3(
        &mut self,
        received: BTreeMap<PartyIndex, Msg<C>>,
    ) -> Result<Vec<Outgoing>, MpcError> {
        for (j, msg) in received {
            match msg {
                Msg::R2(m) => {
                    self.received2.insert(j, *m);
                }
                _ => return Err(MpcError::Internal("round mix-up".into())),
            }
        }
        let proof = self
            .own_proof
            .as_ref()
            .ok_or_else(|| MpcError::Internal("own proof missing".into()))?
            .proof
            .clone();
        let phase3 = self
            .phase3
            .as_ref()
            .ok_or_else(|| MpcError::Internal("phase 3 output missing".into()))?;
        let mut out = Vec::new();
        for j in self.inbox.peers() {
            let (Some(zero), Some(mul)) = (phase3.zero.get(&j), phase3.mul.get(&j)) else {
                return Err(MpcError::Internal(format!("no phase 3 output for {j}")));
            };
            let msg = Round3 {
                proof: proof.clone(),
                zero: zero.clone(),
                mul: mul.clone(),
            };
            out.push(Outgoing {
                to: j,
                round: 3,
                payload: encode_secret(&[], &msg)?,
            });
        }
        Ok(out)
    }

    /// Phase 4, the refreshed public package, and the confirmation (round 4 out).
    fn round4(
        &mut self,
        received: BTreeMap<PartyIndex, Msg<C>>,
    ) -> Result<Vec<Outgoing>, MpcError> {
        let me = self.me;
        let mut received3 = BTreeMap::new();
        for (j, msg) in received {
            match msg {
                Msg::R3(m) => {
                    received3.insert(j, m);
                }
                _ => return Err(MpcError::Internal("round mix-up".into())),
            }
        }
        let own_proof = self
            .own_proof
            .take()
            .ok_or_else(|| MpcError::Internal("own proof missing".into()))?;
        let phase3 = self
            .phase3
            .take()
            .ok_or_else(|| MpcError::Internal("phase 3 output missing".into()))?;

        let mut proofs = vec![own_proof.clone()];
        let mut zero2 = Vec::new();
        let mut zero3 = Vec::new();
        let mut mul = Vec::new();
        for (&j, r3) in &received3 {
            let r2 = self
                .received2
                .get(&j)
                .ok_or_else(|| MpcError::Internal(format!("round 2 of {j} missing")))?;
            // The index is the authenticated sender's, never a label inside a message.
            proofs.push(ProofCommitment {
                index: pi(j)?,
                proof: r3.proof.clone(),
                commitment: r2.proof_commitment,
            });
            zero2.push(r2.zero.clone());
            zero3.push(r3.zero.clone());
            mul.push(r3.mul.clone());
        }
        let old = self
            .old
            .take()
            .ok_or_else(|| MpcError::Internal("old share already consumed".into()))?;
        let parts = old.parts::<C>()?;
        let result = parts.party.refresh_complete_phase4(
            &self.session_id,
            &phase3.correction,
            &proofs,
            &phase3.zero_kept,
            &zero2,
            &zero3,
            &phase3.mul_kept,
            &mul,
        );
        zero3.iter_mut().for_each(wipe_zero3);
        mul.iter_mut().for_each(wipe_mul3);
        drop(phase3);
        let party = result.map_err(|a| self.abort(&a))?;
        // Each verifying share moves by its party's committed correction, as in phase 4.
        let package = parts
            .package
            .refresh(&self.session_id, &proofs)
            .map_err(|reason| self.abort(&Abort::recoverable(party.party_index, reason)))?;
        if compress::<C>(&party.pk) != self.public_key {
            return Err(MpcError::Internal(
                "the refresh changed the public key".into(),
            ));
        }
        let share = KeyShare::new(
            old.key_id(),
            old.threshold(),
            me,
            old.participants().to_vec(),
            package,
            party,
        )
        .map_err(MpcError::Internal)?
        .with_exportable(old.exportable());
        drop(old);

        // The transcript: every broadcast value of every party, in party order.
        let mut transcript = Sha256::new();
        transcript.update(TRANSCRIPT_DOMAIN);
        for i in 1..=self.n {
            let (generation, commitment, proof) = if i == me {
                (&self.generation, &own_proof.commitment, &own_proof.proof)
            } else {
                let (Some(g), Some(r2), Some(r3)) = (
                    self.generations.get(&i),
                    self.received2.get(&i),
                    received3.get(&i),
                ) else {
                    return Err(MpcError::Internal(format!("messages of {i} missing")));
                };
                (g, &r2.proof_commitment, &r3.proof)
            };
            hash_item(&mut transcript, generation)?;
            hash_item(&mut transcript, commitment)?;
            hash_item(&mut transcript, proof)?;
        }
        let transcript: [u8; 32] = transcript.finalize().into();
        let mut confirm = Sha256::new();
        for part in [
            CONFIRM_DOMAIN,
            &self.session_id,
            &share.public_key(),
            &transcript,
        ] {
            confirm.update((part.len() as u32).to_be_bytes());
            confirm.update(part);
        }
        self.confirmation = confirm.finalize().into();
        self.result = Some(share);
        self.received2.clear();

        let payload = encode_secret(
            &[],
            &Round4 {
                confirmation: self.confirmation,
            },
        )?;
        Ok(self
            .inbox
            .peers()
            .map(|j| Outgoing {
                to: j,
                round: 4,
                payload: payload.clone(),
            })
            .collect())
    }

    fn finish(
        &mut self,
        received: BTreeMap<PartyIndex, Msg<C>>,
    ) -> Result<SessionOutput, MpcError> {
        for (j, msg) in received {
            match msg {
                Msg::R4(m) if m.confirmation == self.confirmation => {}
                Msg::R4(_) => {
                    return Err(MpcError::misbehaviour(
                        j,
                        "confirmed a different key or transcript (it or another party \
                         sent inconsistent broadcasts)",
                    ));
                }
                _ => return Err(MpcError::Internal("round mix-up".into())),
            }
        }
        let share = self
            .result
            .take()
            .ok_or_else(|| MpcError::Internal("refresh result missing".into()))?;
        Ok(SessionOutput::Key(share))
    }

    fn advance(&mut self) -> Result<Progress, MpcError> {
        let mut out = Vec::new();
        while let Stage::Awaiting(round) = self.stage {
            let Some(received) = self.inbox.take_round(round) else {
                break;
            };
            match round {
                1 => out.extend(self.round2(received)?),
                2 => out.extend(self.round3(received)?),
                3 => out.extend(self.round4(received)?),
                _ => {
                    let output = self.finish(received)?;
                    self.stage = Stage::Done;
                    return Ok(Progress::Done {
                        output,
                        outgoing: out,
                    });
                }
            }
            self.stage = Stage::Awaiting(round + 1);
        }
        Ok(Progress::Continue(out))
    }

    fn fail(&mut self, e: MpcError) -> MpcError {
        self.stage = Stage::Failed;
        self.inbox.clear();
        self.old = None;
        self.phase3 = None;
        self.result = None;
        self.received2.clear();
        e
    }
}

impl<C: DkmsCurve> Session for RefreshSession<C> {
    fn start(&mut self) -> Result<Vec<Outgoing>, MpcError> {
        if self.stage != Stage::New {
            return Err(MpcError::Internal("session already started".into()));
        }
        let run = |s: &mut Self| -> Result<Vec<Outgoing>, MpcError> {
            let mut out = s.round1()?;
            s.stage = Stage::Awaiting(1);
            match s.advance()? {
                Progress::Continue(more) => out.extend(more),
                Progress::Done { .. } => {
                    return Err(MpcError::Internal("finished before sending".into()));
                }
            }
            Ok(out)
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
            let me = s.me;
            s.inbox
                .accept(from, round, payload, |r, p| decode_msg(me, from, r, p))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::{Delivery, run_local_with};
    use crate::{KeygenConfig, ShareParticipant, keygen};

    fn shares(t: u8, n: u8) -> Vec<KeyShare> {
        let participants: Vec<ShareParticipant> = (1..=n)
            .map(|i| ShareParticipant {
                tag: format!("n{i}").parse().unwrap(),
                encryption_key: [i; 32],
            })
            .collect();
        let sessions = (1..=n)
            .map(|i| {
                let cfg = KeygenConfig {
                    key_id: uuid::Uuid::nil(),
                    session_id: [9; 32],
                    threshold: t,
                    participants: participants.clone(),
                    my_index: i,
                    curve: crate::Curve::Secp256k1,
                };
                (i, keygen(cfg).unwrap())
            })
            .collect();
        crate::local::run_local(sessions)
            .unwrap()
            .into_iter()
            .map(|o| match o {
                SessionOutput::Key(k) => k,
                SessionOutput::Signature(_) | SessionOutput::Repaired => panic!("not a key"),
            })
            .collect()
    }

    fn sessions(shares: Vec<KeyShare>) -> Vec<(PartyIndex, Box<dyn Session>)> {
        shares
            .into_iter()
            .map(|s| {
                let i = s.my_index();
                (
                    i,
                    refresh(
                        s,
                        RefreshConfig {
                            session_id: [7; 32],
                        },
                    )
                    .unwrap(),
                )
            })
            .collect()
    }

    fn rewrite_round3(
        sender: PartyIndex,
        change: impl Fn(&mut Round3<k256::Secp256k1>),
    ) -> impl FnMut(PartyIndex, &mut Outgoing) -> Delivery {
        move |from, msg| {
            if from == sender && msg.round == 3 {
                let mut m: Round3<k256::Secp256k1> = decode(&msg.payload).unwrap();
                change(&mut m);
                msg.payload = encode_secret(&[], &m).unwrap();
            }
            Delivery::Deliver
        }
    }

    #[test]
    fn semantic_tampering_is_attributed() {
        let base = shares(2, 2);
        let bytes: Vec<_> = base.iter().map(|s| s.to_bytes()).collect();
        let fresh = || {
            bytes
                .iter()
                .map(|b| KeyShare::from_bytes(b).unwrap())
                .collect::<Vec<_>>()
        };

        let err = run_local_with(
            sessions(fresh()),
            rewrite_round3(1, |m| m.zero.seed[0] ^= 1),
        )
        .unwrap_err();
        assert!(err.to_string().contains("zero-share"), "{err}");
        assert_eq!(err.culprit(), Some(1), "{err}");

        let err = run_local_with(
            sessions(fresh()),
            rewrite_round3(2, |m| m.proof.proofs.swap(0, 1)),
        )
        .unwrap_err();
        assert!(err.to_string().contains("proof verification"), "{err}");
        assert_eq!(err.culprit(), Some(2), "{err}");

        // A party whose share is of another generation is refused before any secret moves
        // past round 1, and nobody is blamed.
        let mut mixed = fresh();
        match &mut mixed[1].body {
            crate::share::Body::Secp256k1(p) => p.party.session_id.push(0),
            crate::share::Body::P256(_) => unreachable!("made on secp256k1"),
        }
        let err = run_local_with(sessions(mixed), |_, _| Delivery::Deliver).unwrap_err();
        assert!(matches!(err, MpcError::Aborted(_)), "{err}");
        assert!(err.to_string().contains("generation"), "{err}");
    }
}
