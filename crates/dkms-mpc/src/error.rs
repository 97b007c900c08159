//! Errors of the protocol engine. Every message is safe to log: none carries secret bytes.

use dkls23::protocols::{Abort, AbortKind, AbortReason};

/// A party's 1-based index: its position in the key's participant list plus one.
pub type PartyIndex = u8;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MpcError {
    /// The parameters this node was given are not acceptable (refused before or without
    /// blaming any other party).
    #[error("bad parameters: {0}")]
    BadParameters(String),
    /// Another party provably sent something wrong. `ban` is set when the protocol demands
    /// that this party never again take part with us (DKLs23 OT consistency failures).
    #[error("party {party} misbehaved: {reason}")]
    Misbehaviour {
        party: PartyIndex,
        reason: String,
        ban: bool,
    },
    /// The protocol failed in a way that cannot be pinned on a single party
    /// (e.g. the final signature does not verify).
    #[error("protocol aborted: {0}")]
    Aborted(String),
    /// A stored key share could not be decoded or is inconsistent.
    #[error("corrupt key share: {0}")]
    Corrupt(String),
    /// A cryptographic operation failed (an envelope did not open, a key did not parse).
    #[error("cryptographic failure: {0}")]
    Crypto(String),
    /// A bug or a misuse of the API by the caller.
    #[error("internal error: {0}")]
    Internal(String),
}

impl MpcError {
    /// The party to blame, if the failure is provably theirs.
    pub fn culprit(&self) -> Option<PartyIndex> {
        match self {
            MpcError::Misbehaviour { party, .. } => Some(*party),
            _ => None,
        }
    }

    /// Whether the protocol requires us to refuse this culprit from now on.
    pub fn requires_ban(&self) -> bool {
        matches!(self, MpcError::Misbehaviour { ban: true, .. })
    }

    pub(crate) fn misbehaviour(party: PartyIndex, reason: impl Into<String>) -> Self {
        MpcError::Misbehaviour {
            party,
            reason: reason.into(),
            ban: false,
        }
    }

    /// Maps a dkls23 abort seen by party `me` to our error, naming the culprit when the
    /// abort reason names one other than ourselves.
    pub(crate) fn from_abort(abort: &Abort, me: PartyIndex) -> Self {
        let reason = abort.description();
        if let AbortKind::BanCounterparty(party) = abort.kind {
            return MpcError::Misbehaviour {
                party: party.as_u8(),
                reason,
                ban: true,
            };
        }
        let blamed = match &abort.reason {
            AbortReason::UnexpectedSender { sender } | AbortReason::DuplicateSender { sender } => {
                Some(*sender)
            }
            AbortReason::MissingMessageFromParty { party }
            | AbortReason::MissingCommittedPoint { party }
            | AbortReason::ChainCodeCommitmentFailed { party } => Some(*party),
            AbortReason::SessionBindingMismatch { counterparty }
            | AbortReason::ProofVerificationFailed { counterparty }
            | AbortReason::CommitmentMismatch { counterparty }
            | AbortReason::TrivialInstancePoint { counterparty }
            | AbortReason::OtConsistencyCheckFailed { counterparty }
            | AbortReason::MultiplicationVerificationFailed { counterparty, .. }
            | AbortReason::GammaUInconsistency { counterparty }
            | AbortReason::ZeroShareDecommitFailed { counterparty } => Some(*counterparty),
            // Our own state or our own call is wrong: nobody else is to blame.
            AbortReason::InvalidLocalState { .. } | AbortReason::MissingMulState { .. } => {
                return MpcError::Corrupt(reason);
            }
            AbortReason::InvalidPartyIndex { .. }
            | AbortReason::WrongCounterpartyCount { .. }
            | AbortReason::DuplicateCounterparty { .. }
            | AbortReason::SelfInCounterparties => return MpcError::BadParameters(reason),
            AbortReason::PhaseCalledOutOfOrder { .. } => return MpcError::Internal(reason),
            _ => None,
        };
        match blamed {
            Some(party) if party.as_u8() != me => MpcError::Misbehaviour {
                party: party.as_u8(),
                reason,
                ban: false,
            },
            // An abort blaming ourselves means our own computation went wrong.
            Some(_) => MpcError::Internal(reason),
            None => MpcError::Aborted(reason),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use dkls23::protocols::PartyIndex as Pi;

    #[test]
    fn aborts_name_the_culprit() {
        let me = Pi::new(1).unwrap();
        let two = Pi::new(2).unwrap();
        let e = MpcError::from_abort(
            &Abort::recoverable(me, AbortReason::CommitmentMismatch { counterparty: two }),
            1,
        );
        assert_eq!(e.culprit(), Some(2));
        assert!(!e.requires_ban());

        let e = MpcError::from_abort(
            &Abort::ban(
                me,
                two,
                AbortReason::GammaUInconsistency { counterparty: two },
            ),
            1,
        );
        assert_eq!(e.culprit(), Some(2));
        assert!(e.requires_ban());

        let e = MpcError::from_abort(
            &Abort::recoverable(me, AbortReason::SignatureVerificationFailed),
            1,
        );
        assert!(matches!(e, MpcError::Aborted(_)));

        let e = MpcError::from_abort(
            &Abort::recoverable(
                me,
                AbortReason::ProofVerificationFailed { counterparty: me },
            ),
            1,
        );
        assert!(matches!(e, MpcError::Internal(_)));
    }
}
