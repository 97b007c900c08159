//! Distributed key generation: DKLs23 DKG (eprint 2023/602, Protocol 9.1, through
//! `dkls23::DkgSession`) plus a key-confirmation round.
//!
//! Network rounds:
//! 1. p2p: our polynomial evaluated at the recipient's index (secret).
//! 2. to everyone: the commitment to our discrete-log proof, the commitment to our chain-code
//!    share; p2p: the commitment to our zero-share seed for the recipient.
//! 3. to everyone: the proof itself and the opened chain-code share; p2p: the opened
//!    zero-share seed and the OT/multiplication setup for the recipient. Sent only once
//!    every round-2 commitment is in, which is what makes them commitments.
//! 4. to everyone: a confirmation hash over the session id, the resulting public key and
//!    every broadcast value from every party. A party that saw different broadcasts (an
//!    equivocating sender) or computed a different key makes the session fail.

use crate::curve::{Curve, DkmsCurve, compress, with_curve};
use crate::error::{MpcError, PartyIndex};
use crate::share::{KeyShare, ShareParticipant, check_parameters};
use crate::wire::{Inbox, decode, encode_secret};
use crate::{Outgoing, Progress, Session, SessionOutput};
use dkls23::DkgSession;
use dkls23::protocols::dkg::{
    BroadcastDerivationPhase2to4, BroadcastDerivationPhase3to4, ProofCommitment,
    TransmitInitMulPhase3to4, TransmitInitZeroSharePhase2to4, TransmitInitZeroSharePhase3to4,
};
use dkls23::protocols::{Parameters, PartiesMessage, Party, PublicKeyPackage};
use dkls23::utilities::hashes::HashOutput;
use dkls23::utilities::proofs::DLogProof;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use zeroize::Zeroize;

const LAST_ROUND: u8 = 4;
const TRANSCRIPT_DOMAIN: &[u8] = b"dkms/keygen-transcript/v1";
const CONFIRM_DOMAIN: &[u8] = b"dkms/keygen-confirm/v1";

/// Parameters of one key generation, as this node checked them.
#[derive(Debug, Clone)]
pub struct KeygenConfig {
    pub key_id: uuid::Uuid,
    /// From [`crate::session_id::session_id`]; every message of the DKG is bound to it.
    pub session_id: [u8; 32],
    pub threshold: u8,
    /// All members in order; party index = position + 1.
    pub participants: Vec<ShareParticipant>,
    pub my_index: PartyIndex,
    pub curve: Curve,
}

/// Starts a key generation for this node. Refuses inconsistent parameters.
pub fn keygen(cfg: KeygenConfig) -> Result<Box<dyn Session>, MpcError> {
    with_curve!(cfg.curve, C => Ok(Box::new(KeygenSession::<C>::new(cfg)?)))
}

#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
struct Round1<C: DkmsCurve> {
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
    derivation: BroadcastDerivationPhase2to4,
    zero: TransmitInitZeroSharePhase2to4,
}

#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
struct Round3<C: DkmsCurve> {
    proof: DLogProof<C>,
    derivation: BroadcastDerivationPhase3to4,
    zero: TransmitInitZeroSharePhase3to4,
    mul: TransmitInitMulPhase3to4<C>,
}

impl<C: DkmsCurve> Drop for Round3<C> {
    fn drop(&mut self) {
        wipe_zero3(&mut self.zero);
        self.mul.seed.zeroize();
        self.mul.nonce.zeroize();
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

/// What phase 3 produced, held until every round-2 commitment has arrived.
struct Phase3Out<C: DkmsCurve> {
    zero: BTreeMap<PartyIndex, TransmitInitZeroSharePhase3to4>,
    mul: BTreeMap<PartyIndex, TransmitInitMulPhase3to4<C>>,
    derivation: BroadcastDerivationPhase3to4,
}

impl<C: DkmsCurve> Drop for Phase3Out<C> {
    fn drop(&mut self) {
        for m in self.zero.values_mut() {
            wipe_zero3(m);
        }
        for m in self.mul.values_mut() {
            m.seed.zeroize();
            m.nonce.zeroize();
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    New,
    /// Waiting for every peer's message of this round.
    Awaiting(u8),
    Done,
    Failed,
}

struct KeygenSession<C: DkmsCurve> {
    cfg: KeygenConfig,
    n: u8,
    inbox: Inbox<Msg<C>>,
    stage: Stage,
    dkg: Option<DkgSession<C>>,
    own_fragment: Option<C::Scalar>,
    own_proof: Option<ProofCommitment<C>>,
    own_derivation2: Option<BroadcastDerivationPhase2to4>,
    phase3: Option<Phase3Out<C>>,
    received2: BTreeMap<PartyIndex, Round2>,
    result: Option<(Party<C>, PublicKeyPackage<C>)>,
    confirmation: [u8; 32],
}

impl<C: DkmsCurve> Drop for KeygenSession<C> {
    fn drop(&mut self) {
        if let Some(f) = self.own_fragment.as_mut() {
            f.zeroize();
        }
    }
}

pub(crate) fn pi(i: PartyIndex) -> Result<dkls23::protocols::PartyIndex, MpcError> {
    dkls23::protocols::PartyIndex::new(i).map_err(|e| MpcError::Internal(e.to_string()))
}

pub(crate) fn check_route(
    parties: &PartiesMessage,
    from: PartyIndex,
    me: PartyIndex,
    what: &str,
) -> Result<(), String> {
    if parties.sender.as_u8() != from || parties.receiver.as_u8() != me {
        return Err(format!(
            "{what} is labelled {} → {}, but came from {from} to {me}",
            parties.sender, parties.receiver
        ));
    }
    Ok(())
}

impl<C: DkmsCurve> KeygenSession<C> {
    fn new(cfg: KeygenConfig) -> Result<Self, MpcError> {
        check_parameters(cfg.threshold, &cfg.participants).map_err(MpcError::BadParameters)?;
        let n = cfg.participants.len() as u8;
        if cfg.my_index == 0 || cfg.my_index > n {
            return Err(MpcError::BadParameters(format!(
                "my index {} is not in 1..={n}",
                cfg.my_index
            )));
        }
        let parameters = Parameters::new(cfg.threshold, n)
            .map_err(|e| MpcError::BadParameters(e.to_string()))?;
        let dkg = DkgSession::new(parameters, pi(cfg.my_index)?, cfg.session_id.to_vec());
        let peers = (1..=n).filter(|&i| i != cfg.my_index).collect();
        Ok(KeygenSession {
            inbox: Inbox::new(cfg.my_index, peers, LAST_ROUND),
            n,
            cfg,
            stage: Stage::New,
            dkg: Some(dkg),
            own_fragment: None,
            own_proof: None,
            own_derivation2: None,
            phase3: None,
            received2: BTreeMap::new(),
            result: None,
            confirmation: [0; 32],
        })
    }

    fn me(&self) -> PartyIndex {
        self.cfg.my_index
    }

    fn dkg(&mut self) -> Result<&mut DkgSession<C>, MpcError> {
        self.dkg
            .as_mut()
            .ok_or_else(|| MpcError::Internal("DKG state already consumed".into()))
    }
}

/// Decodes a message of `round` from `from` and checks that its labels name the real sender
/// and us (dkls23 would otherwise trust the sender index written inside the message).
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
            if m.derivation.sender_index.as_u8() != from {
                return Err("chain-code commitment names another sender".into());
            }
            Msg::R2(Box::new(m))
        }
        3 => {
            let m: Round3<C> = decode(payload)?;
            check_route(&m.zero.parties, from, me, "zero-share seed")?;
            check_route(&m.mul.parties, from, me, "multiplication setup")?;
            if m.derivation.sender_index.as_u8() != from {
                return Err("chain-code opening names another sender".into());
            }
            Msg::R3(Box::new(m))
        }
        4 => Msg::R4(decode(payload)?),
        _ => return Err(format!("no round {round}")),
    })
}

impl<C: DkmsCurve> KeygenSession<C> {
    /// Round 1 out: p_me(j) for every peer j; p_me(me) stays here.
    fn round1(&mut self) -> Result<Vec<Outgoing>, MpcError> {
        let me = self.me();
        let mut fragments = zeroize::Zeroizing::new(self.dkg()?.phase1());
        if fragments.len() != usize::from(self.n) {
            return Err(MpcError::Internal(
                "phase 1 output has the wrong length".into(),
            ));
        }
        let mut out = Vec::new();
        for j in self.inbox.peers().collect::<Vec<_>>() {
            let msg = Round1::<C> {
                fragment: fragments[usize::from(j) - 1],
            };
            out.push(Outgoing {
                to: j,
                round: 1,
                payload: encode_secret(&[], &msg)?,
            });
        }
        self.own_fragment = Some(fragments[usize::from(me) - 1]);
        fragments.iter_mut().for_each(Zeroize::zeroize);
        Ok(out)
    }

    /// Phases 2 and 3 (phase 3 needs nothing from others); round 2 out.
    fn round2(
        &mut self,
        received: BTreeMap<PartyIndex, Msg<C>>,
    ) -> Result<Vec<Outgoing>, MpcError> {
        let me = self.me();
        let own = self
            .own_fragment
            .take()
            .ok_or_else(|| MpcError::Internal("own fragment missing".into()))?;
        let mut fragments = zeroize::Zeroizing::new(vec![own]);
        for (_, msg) in received {
            match msg {
                Msg::R1(m) => fragments.push(m.fragment),
                _ => return Err(MpcError::Internal("round mix-up".into())),
            }
        }
        let dkg = self.dkg()?;
        let (proof, zero2, derivation2) = dkg
            .phase2(&fragments)
            .map_err(|a| MpcError::from_abort(&a, me))?;
        fragments.iter_mut().for_each(Zeroize::zeroize);
        let (zero3, mul3, derivation3) = dkg.phase3().map_err(|a| MpcError::from_abort(&a, me))?;

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
                derivation: derivation2.clone(),
                zero,
            };
            out.push(Outgoing {
                to: j,
                round: 2,
                payload: encode_secret(&[], &msg)?,
            });
        }
        self.own_proof = Some(proof);
        self.own_derivation2 = Some(derivation2);
        self.phase3 = Some(Phase3Out {
            zero: zero3
                .into_iter()
                .map(|m| (m.parties.receiver.as_u8(), m))
                .collect(),
            mul: mul3
                .into_iter()
                .map(|m| (m.parties.receiver.as_u8(), m))
                .collect(),
            derivation: derivation3,
        });
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
            .as_mut()
            .ok_or_else(|| MpcError::Internal("phase 3 output missing".into()))?;
        let mut out = Vec::new();
        for j in self.inbox.peers().collect::<Vec<_>>() {
            let (Some(zero), Some(mul)) = (phase3.zero.get(&j), phase3.mul.get(&j)) else {
                return Err(MpcError::Internal(format!("no phase 3 output for {j}")));
            };
            let msg = Round3 {
                proof: proof.clone(),
                derivation: phase3.derivation.clone(),
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

    /// Phase 4 and the confirmation (round 4 out).
    fn round4(
        &mut self,
        received: BTreeMap<PartyIndex, Msg<C>>,
    ) -> Result<Vec<Outgoing>, MpcError> {
        let me = self.me();
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
        let own_derivation2 = self
            .own_derivation2
            .take()
            .ok_or_else(|| MpcError::Internal("own chain-code commitment missing".into()))?;
        let phase3 = self
            .phase3
            .take()
            .ok_or_else(|| MpcError::Internal("phase 3 output missing".into()))?;

        let mut proofs = vec![own_proof.clone()];
        let mut zero2 = Vec::new();
        let mut zero3 = Vec::new();
        let mut mul = Vec::new();
        let mut derivation2 = BTreeMap::from([(pi(me)?, own_derivation2.clone())]);
        let mut derivation3 = BTreeMap::from([(pi(me)?, phase3.derivation.clone())]);
        for (&j, r3) in &received3 {
            let r2 = self
                .received2
                .get(&j)
                .ok_or_else(|| MpcError::Internal(format!("round 2 of {j} missing")))?;
            proofs.push(ProofCommitment {
                index: pi(j)?,
                proof: r3.proof.clone(),
                commitment: r2.proof_commitment,
            });
            zero2.push(r2.zero.clone());
            zero3.push(r3.zero.clone());
            mul.push(r3.mul.clone());
            derivation2.insert(pi(j)?, r2.derivation.clone());
            derivation3.insert(pi(j)?, r3.derivation.clone());
        }
        let dkg = self
            .dkg
            .take()
            .ok_or_else(|| MpcError::Internal("DKG state already consumed".into()))?;
        let result = dkg.phase4(
            &proofs,
            &zero2,
            &zero3,
            &mul,
            &derivation2,
            &derivation3,
            |_| String::new(),
        );
        zero3.iter_mut().for_each(wipe_zero3);
        for m in &mut mul {
            m.seed.zeroize();
            m.nonce.zeroize();
        }
        let (party, package) = result.map_err(|a| MpcError::from_abort(&a, me))?;

        // The transcript: every broadcast value of every party, in party order.
        let mut transcript = Sha256::new();
        transcript.update(TRANSCRIPT_DOMAIN);
        for i in 1..=self.n {
            let (commitment, d2, proof, d3) = if i == me {
                (
                    &own_proof.commitment,
                    &own_derivation2,
                    &own_proof.proof,
                    &phase3.derivation,
                )
            } else {
                let (Some(r2), Some(r3)) = (self.received2.get(&i), received3.get(&i)) else {
                    return Err(MpcError::Internal(format!("messages of {i} missing")));
                };
                (
                    &r2.proof_commitment,
                    &r2.derivation,
                    &r3.proof,
                    &r3.derivation,
                )
            };
            hash_item(&mut transcript, commitment)?;
            hash_item(&mut transcript, d2)?;
            hash_item(&mut transcript, proof)?;
            hash_item(&mut transcript, d3)?;
        }
        let transcript: [u8; 32] = transcript.finalize().into();
        let mut confirm = Sha256::new();
        for part in [
            CONFIRM_DOMAIN,
            &self.cfg.session_id,
            &compress::<C>(&party.pk),
            &transcript,
        ] {
            confirm.update((part.len() as u32).to_be_bytes());
            confirm.update(part);
        }
        self.confirmation = confirm.finalize().into();
        self.result = Some((party, package));
        self.received2.clear();

        let msg = Round4 {
            confirmation: self.confirmation,
        };
        let payload = encode_secret(&[], &msg)?;
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
        let (party, package) = self
            .result
            .take()
            .ok_or_else(|| MpcError::Internal("DKG result missing".into()))?;
        let share = KeyShare::new(
            self.cfg.key_id,
            self.cfg.threshold,
            self.cfg.my_index,
            self.cfg.participants.clone(),
            package,
            party,
        )
        .map_err(MpcError::Internal)?;
        Ok(SessionOutput::Key(share))
    }

    /// Runs every round whose messages are all in.
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
        self.dkg = None;
        self.phase3 = None;
        self.result = None;
        self.received2.clear();
        e
    }
}

pub(crate) fn hash_item<T: Serialize>(h: &mut Sha256, item: &T) -> Result<(), MpcError> {
    let bytes = postcard::to_stdvec(item).map_err(|e| MpcError::Internal(e.to_string()))?;
    h.update((bytes.len() as u32).to_be_bytes());
    h.update(&bytes);
    Ok(())
}

impl<C: DkmsCurve> Session for KeygenSession<C> {
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
            let me = s.me();
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

    fn sessions(t: u8, n: u8) -> Vec<(PartyIndex, Box<dyn Session>)> {
        let participants: Vec<ShareParticipant> = (1..=n)
            .map(|i| ShareParticipant {
                tag: format!("n{i}").parse().unwrap(),
                encryption_key: [i; 32],
            })
            .collect();
        (1..=n)
            .map(|i| {
                let cfg = KeygenConfig {
                    key_id: uuid::Uuid::nil(),
                    session_id: [9; 32],
                    threshold: t,
                    participants: participants.clone(),
                    my_index: i,
                    curve: Curve::Secp256k1,
                };
                (i, keygen(cfg).unwrap())
            })
            .collect()
    }

    /// Rewrites every round-3 message of `sender` with `change`, keeping it well-formed.
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
        // A chain-code opening that does not match its commitment.
        let err = run_local_with(
            sessions(2, 2),
            rewrite_round3(2, |m| m.derivation.aux_chain_code[0] ^= 1),
        )
        .unwrap_err();
        assert!(err.to_string().contains("chain code"), "{err}");
        assert_eq!(err.culprit(), Some(2), "{err}");

        // A zero-share seed that does not match its commitment.
        let err =
            run_local_with(sessions(2, 2), rewrite_round3(1, |m| m.zero.seed[0] ^= 1)).unwrap_err();
        assert!(err.to_string().contains("zero-share"), "{err}");
        assert_eq!(err.culprit(), Some(1), "{err}");

        // A discrete-log proof that is not the committed one.
        let err = run_local_with(
            sessions(2, 2),
            rewrite_round3(2, |m| m.proof.proofs.swap(0, 1)),
        )
        .unwrap_err();
        assert!(err.to_string().contains("proof verification"), "{err}");
        assert_eq!(err.culprit(), Some(2), "{err}");
    }
}
