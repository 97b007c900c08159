//! Threshold signing: DKLs23 Protocol 3.6 through `Party::sign_phase1..4`.
//!
//! Network rounds (all p2p among the signers):
//! 1. commitments and the OT-extension message of each pairwise multiplication,
//! 2. the multiplication replies, instance points and consistency values,
//! 3. the shares (u, w) of the signature, sent to every other signer.
//!
//! The signature is low-S normalized and checked against the key's public key with the
//! curve's RustCrypto ECDSA verifier (k256 or p256) before the session reports it.

use crate::curve::{DkmsCurve, with_curve};
use crate::error::{MpcError, PartyIndex};
use crate::share::KeyShare;
use crate::wire::{Inbox, decode, encode_secret};
use crate::{Outgoing, Progress, Session, SessionOutput, Signature};
use dkls23::protocols::PartyIndex as Pi;
use dkls23::protocols::signing::{
    Broadcast3to4, KeepPhase1to2, KeepPhase2to3, SignData, TransmitPhase1to2, TransmitPhase2to3,
    UniqueKeep1to2, UniqueKeep2to3,
};
use std::collections::{BTreeMap, BTreeSet};

const LAST_ROUND: u8 = 3;

/// Parameters of one signing session.
#[derive(Debug, Clone)]
pub struct SignConfig {
    /// From [`crate::session_id::session_id`]; every message is bound to it.
    pub session_id: [u8; 32],
    /// Exactly `threshold` distinct party indices of the key, including this node's.
    pub signers: Vec<PartyIndex>,
    /// The 32-byte digest to sign (ECDSA prehash).
    pub digest: [u8; 32],
}

/// Starts a signing session with `share` (which the session owns and drops at the end).
pub fn sign(share: KeyShare, cfg: SignConfig) -> Result<Box<dyn Session>, MpcError> {
    with_curve!(share.curve(), C => Ok(Box::new(SignSession::<C>::new(share, cfg)?)))
}

enum Msg<C: DkmsCurve> {
    R1(Box<TransmitPhase1to2>),
    R2(Box<TransmitPhase2to3<C>>),
    R3(Broadcast3to4<C>),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    New,
    Awaiting(u8),
    Done,
    Failed,
}

type Kept1<C> = (UniqueKeep1to2<C>, BTreeMap<Pi, KeepPhase1to2<C>>);
type Kept2<C> = (UniqueKeep2to3<C>, BTreeMap<Pi, KeepPhase2to3<C>>);

struct SignSession<C: DkmsCurve> {
    share: KeyShare,
    data: SignData,
    digest: [u8; 32],
    inbox: Inbox<Msg<C>>,
    stage: Stage,
    kept1: Option<Kept1<C>>,
    kept2: Option<Kept2<C>>,
    x_coord: Option<String>,
    own_broadcast: Option<Broadcast3to4<C>>,
}

fn decode_msg<C: DkmsCurve>(
    me: PartyIndex,
    from: PartyIndex,
    round: u8,
    payload: &[u8],
) -> Result<Msg<C>, String> {
    let route = |sender: Pi, receiver: Pi| {
        if sender.as_u8() != from || receiver.as_u8() != me {
            Err(format!(
                "message is labelled {sender} → {receiver}, but came from {from} to {me}"
            ))
        } else {
            Ok(())
        }
    };
    Ok(match round {
        1 => {
            let m: TransmitPhase1to2 = decode(payload)?;
            route(m.parties.sender, m.parties.receiver)?;
            Msg::R1(Box::new(m))
        }
        2 => {
            let m: TransmitPhase2to3<C> = decode(payload)?;
            route(m.parties.sender, m.parties.receiver)?;
            Msg::R2(Box::new(m))
        }
        3 => Msg::R3(decode(payload)?),
        _ => return Err(format!("no round {round}")),
    })
}

impl<C: DkmsCurve> SignSession<C> {
    fn new(share: KeyShare, cfg: SignConfig) -> Result<Self, MpcError> {
        let me = share.my_index();
        let n = share.participants().len();
        let t = usize::from(share.threshold());
        share.parts::<C>()?;
        if share.needs_refresh() {
            return Err(MpcError::BadParameters(
                "this share was repaired and cannot sign before the key is refreshed".into(),
            ));
        }
        if cfg.signers.len() != t {
            return Err(MpcError::BadParameters(format!(
                "a {t}-of-{n} key needs exactly {t} signers, got {}",
                cfg.signers.len()
            )));
        }
        let mut set = BTreeSet::new();
        for &s in &cfg.signers {
            if s == 0 || usize::from(s) > n {
                return Err(MpcError::BadParameters(format!(
                    "signer {s} is not a party of this {n}-party key"
                )));
            }
            if !set.insert(s) {
                return Err(MpcError::BadParameters(format!(
                    "signer {s} is listed twice"
                )));
            }
        }
        if !set.contains(&me) {
            return Err(MpcError::BadParameters(format!(
                "the signers do not include this node (party {me})"
            )));
        }
        let peers: BTreeSet<PartyIndex> = set.iter().copied().filter(|&s| s != me).collect();
        let counterparties = peers
            .iter()
            .map(|&p| Pi::new(p).map_err(|e| MpcError::Internal(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SignSession {
            data: SignData {
                sign_id: cfg.session_id.to_vec(),
                counterparties,
                message_hash: cfg.digest,
            },
            digest: cfg.digest,
            inbox: Inbox::new(me, peers, LAST_ROUND),
            share,
            stage: Stage::New,
            kept1: None,
            kept2: None,
            x_coord: None,
            own_broadcast: None,
        })
    }

    fn me(&self) -> PartyIndex {
        self.share.my_index()
    }

    fn abort(&self, a: &dkls23::protocols::Abort) -> MpcError {
        MpcError::from_abort(a, self.me())
    }

    fn round1(&mut self) -> Result<Vec<Outgoing>, MpcError> {
        let (unique, kept, transmit) = self
            .share
            .parts::<C>()?
            .party
            .sign_phase1(&self.data)
            .map_err(|a| self.abort(&a))?;
        self.kept1 = Some((unique, kept));
        transmit
            .iter()
            .map(|m| {
                Ok(Outgoing {
                    to: m.parties.receiver.as_u8(),
                    round: 1,
                    payload: encode_secret(&[], m)?,
                })
            })
            .collect()
    }

    fn round2(
        &mut self,
        received: BTreeMap<PartyIndex, Msg<C>>,
    ) -> Result<Vec<Outgoing>, MpcError> {
        let mut msgs = Vec::with_capacity(received.len());
        for (_, m) in received {
            match m {
                Msg::R1(m) => msgs.push(*m),
                _ => return Err(MpcError::Internal("round mix-up".into())),
            }
        }
        let (unique, kept) = self
            .kept1
            .take()
            .ok_or_else(|| MpcError::Internal("phase 1 state missing".into()))?;
        let (unique, kept, transmit) = self
            .share
            .parts::<C>()?
            .party
            .sign_phase2(&self.data, unique, kept, &msgs)
            .map_err(|a| self.abort(&a))?;
        self.kept2 = Some((unique, kept));
        transmit
            .iter()
            .map(|m| {
                Ok(Outgoing {
                    to: m.parties.receiver.as_u8(),
                    round: 2,
                    payload: encode_secret(&[], m)?,
                })
            })
            .collect()
    }

    fn round3(
        &mut self,
        received: BTreeMap<PartyIndex, Msg<C>>,
    ) -> Result<Vec<Outgoing>, MpcError> {
        let mut msgs = Vec::with_capacity(received.len());
        for (_, m) in received {
            match m {
                Msg::R2(m) => msgs.push(*m),
                _ => return Err(MpcError::Internal("round mix-up".into())),
            }
        }
        let (unique, kept) = self
            .kept2
            .take()
            .ok_or_else(|| MpcError::Internal("phase 2 state missing".into()))?;
        let (x_coord, broadcast) = self
            .share
            .parts::<C>()?
            .party
            .sign_phase3(&self.data, unique, kept, &msgs)
            .map_err(|a| self.abort(&a))?;
        let payload = encode_secret(&[], &broadcast)?;
        self.x_coord = Some(x_coord);
        self.own_broadcast = Some(broadcast);
        Ok(self
            .inbox
            .peers()
            .map(|to| Outgoing {
                to,
                round: 3,
                payload: payload.clone(),
            })
            .collect())
    }

    fn finish(
        &mut self,
        received: BTreeMap<PartyIndex, Msg<C>>,
    ) -> Result<SessionOutput, MpcError> {
        let own = self
            .own_broadcast
            .take()
            .ok_or_else(|| MpcError::Internal("own broadcast missing".into()))?;
        let mut msgs = vec![own];
        for (_, m) in received {
            match m {
                Msg::R3(m) => msgs.push(m),
                _ => return Err(MpcError::Internal("round mix-up".into())),
            }
        }
        let x_coord = self
            .x_coord
            .take()
            .ok_or_else(|| MpcError::Internal("phase 3 result missing".into()))?;
        let (s_hex, v) = self
            .share
            .parts::<C>()?
            .party
            .sign_phase4(&self.data, &x_coord, &msgs, true)
            .map_err(|a| self.abort(&a))?;
        let mut r = [0u8; 32];
        let mut s = [0u8; 32];
        hex::decode_to_slice(&x_coord, &mut r)
            .and_then(|()| hex::decode_to_slice(&s_hex, &mut s))
            .map_err(|e| MpcError::Internal(format!("signature encoding: {e}")))?;
        let signature = Signature { r, s, v };
        self.check(&signature)?;
        Ok(SessionOutput::Signature(signature))
    }

    /// Independent check with the curve's RustCrypto verifier: verifies, low-S, and v
    /// recovers our key.
    fn check(&self, sig: &Signature) -> Result<(), MpcError> {
        crate::ecdsa::verify_signature(
            C::CURVE,
            &self.share.public_key(),
            &self.digest,
            &sig.to_bytes(),
        )
        .map_err(|e| MpcError::Aborted(format!("the assembled signature fails its check: {e}")))
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
        self.kept1 = None;
        self.kept2 = None;
        self.own_broadcast = None;
        e
    }
}

impl<C: DkmsCurve> Session for SignSession<C> {
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
