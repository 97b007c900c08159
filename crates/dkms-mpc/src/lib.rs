//! Threshold signature schemes as sans-IO state machines, session ids, and the envelope
//! that protects node-to-node messages.
//!
//! A [`Session`] takes messages in and gives messages out; the node moves them over its
//! link (sealed with [`envelope`]) and runs the CPU-heavy calls on a blocking thread. The
//! same sessions run in one process through [`local::run_local`] in tests and benchmarks.
//!
//! Randomness comes from the operating system inside dkls23 (`rand::rng()`) and HPKE
//! (`getrandom`); neither crate lets a caller inject an RNG.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod curve;
pub mod derive;
pub mod ecdsa;
pub mod envelope;
mod error;
pub mod export;
pub mod import;
mod keygen;
pub mod local;
mod refresh;
mod repair;
pub mod session_id;
mod share;
mod sign;
mod wire;

pub use curve::Curve;
pub use error::{MpcError, PartyIndex};
pub use keygen::{KeygenConfig, keygen};
pub use refresh::{RefreshConfig, refresh};
pub use repair::{RepairConfig, RepairPublic, repair_helper, repair_recipient};
pub use share::{KeyShare, SHARE_FORMAT_V1, SHARE_FORMAT_V2, SHARE_FORMAT_V3, ShareParticipant};
pub use sign::{SignConfig, sign};

use std::fmt;
use zeroize::Zeroizing;

/// One protocol message for party `to`. The payload is plaintext (possibly secret): the
/// caller seals it with [`envelope::seal`] for `to` under (session id, `round`).
pub struct Outgoing {
    pub to: PartyIndex,
    pub round: u8,
    pub payload: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outgoing")
            .field("to", &self.to)
            .field("round", &self.round)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

/// What a session did with a message.
// Done is large but happens once per session; boxing would only complicate matching.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Progress {
    /// Messages to send; an empty list means the session waits for more input.
    Continue(Vec<Outgoing>),
    /// The session is over. `outgoing` holds this party's own last messages when the peers'
    /// last-round messages all arrived before it could send its own (they are out of order
    /// on the wire): send them, or the peers never finish.
    Done {
        output: SessionOutput,
        outgoing: Vec<Outgoing>,
    },
}

/// The result of a session.
// The share is moved once per session; a Box would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum SessionOutput {
    /// From keygen, refresh, and the recipient of a repair.
    Key(KeyShare),
    Signature(Signature),
    /// A repair helper's part is done: the recipient confirmed the rebuilt share. The
    /// helper's own share is unchanged.
    Repaired,
}

impl fmt::Debug for SessionOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Public parts only: the share itself is never printed.
            SessionOutput::Key(share) => f
                .debug_struct("Key")
                .field("key_id", &share.key_id())
                .field("my_index", &share.my_index())
                .field("public_key", &hex::encode(share.public_key()))
                .finish_non_exhaustive(),
            SessionOutput::Signature(sig) => f.debug_tuple("Signature").field(sig).finish(),
            SessionOutput::Repaired => f.write_str("Repaired"),
        }
    }
}

/// An ECDSA signature, low-S normalized. `v` is the recovery id: 0 or 1 (2 or 3 only if
/// R's x-coordinate exceeded the group order, probability about 2^-128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signature {
    pub r: [u8; 32],
    pub s: [u8; 32],
    pub v: u8,
}

impl Signature {
    /// `r ‖ s ‖ v`.
    pub fn to_bytes(&self) -> [u8; 65] {
        let mut out = [0u8; 65];
        out[..32].copy_from_slice(&self.r);
        out[32..64].copy_from_slice(&self.s);
        out[64] = self.v;
        out
    }
}

/// A protocol run as seen by one party.
///
/// Messages may arrive in any order, also for rounds ahead of the current one (they are
/// buffered) and before [`Session::start`]. Any error ends the session: later calls fail.
pub trait Session: Send {
    /// Our first-round messages (plus later ones, if buffered input already allows).
    fn start(&mut self) -> Result<Vec<Outgoing>, MpcError>;
    /// One message from party `from` (already authenticated by the envelope) for `round`.
    fn receive(
        &mut self,
        from: PartyIndex,
        round: u8,
        payload: &[u8],
    ) -> Result<Progress, MpcError>;
    /// Parties whose message for the current round has not arrived (for deadline reports).
    fn waiting_for(&self) -> Vec<PartyIndex>;
}

/// Runs one protocol step, turning a panic inside the protocol library (reachable, if at
/// all, only through input we failed to reject) into an error instead of unwinding into
/// the caller's thread.
pub(crate) fn guarded<S, T>(
    state: &mut S,
    step: impl FnOnce(&mut S) -> Result<T, MpcError>,
) -> Result<T, MpcError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| step(state)))
        .unwrap_or_else(|_| Err(MpcError::Internal("the protocol library panicked".into())))
}
