//! Encoding of protocol payloads and the per-session inbox that buffers and checks them.

use crate::error::{MpcError, PartyIndex};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, BTreeSet};
use zeroize::Zeroizing;

/// postcard into a buffer sized in advance, so that no reallocation leaves a stray copy of
/// secret bytes in freed memory. `prefix` bytes are written first.
pub(crate) fn encode_secret<T: Serialize>(
    prefix: &[u8],
    value: &T,
) -> Result<Zeroizing<Vec<u8>>, MpcError> {
    let size = postcard::experimental::serialized_size(value)
        .map_err(|e| MpcError::Internal(format!("encoding: {e}")))?;
    let mut buf = Zeroizing::new(vec![0u8; prefix.len() + size]);
    buf[..prefix.len()].copy_from_slice(prefix);
    postcard::to_slice(value, &mut buf[prefix.len()..])
        .map_err(|e| MpcError::Internal(format!("encoding: {e}")))?;
    Ok(buf)
}

/// postcard, refusing trailing bytes (one value has one encoding on the wire).
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let (value, rest) = postcard::take_from_bytes::<T>(bytes).map_err(|e| e.to_string())?;
    if !rest.is_empty() {
        return Err(format!("{} trailing bytes", rest.len()));
    }
    Ok(value)
}

/// Messages received for a session, by round and sender, until the round can run.
///
/// It checks what the transport cannot: the sender belongs to the session, the round
/// exists, and nobody sends twice for one round (a replayed envelope opens fine).
pub(crate) struct Inbox<M> {
    me: PartyIndex,
    peers: BTreeSet<PartyIndex>,
    last_round: u8,
    seen: BTreeSet<(u8, PartyIndex)>,
    pending: BTreeMap<u8, BTreeMap<PartyIndex, M>>,
}

impl<M> Inbox<M> {
    pub(crate) fn new(me: PartyIndex, peers: BTreeSet<PartyIndex>, last_round: u8) -> Self {
        Inbox {
            me,
            peers,
            last_round,
            seen: BTreeSet::new(),
            pending: BTreeMap::new(),
        }
    }

    pub(crate) fn peers(&self) -> impl Iterator<Item = PartyIndex> + '_ {
        self.peers.iter().copied()
    }

    /// Checks and stores one message; `decode` turns the payload into the round's type.
    pub(crate) fn accept(
        &mut self,
        from: PartyIndex,
        round: u8,
        payload: &[u8],
        decode: impl FnOnce(u8, &[u8]) -> Result<M, String>,
    ) -> Result<(), MpcError> {
        if from == self.me {
            return Err(MpcError::BadParameters(format!(
                "message from party {from}, which is this node itself"
            )));
        }
        if !self.peers.contains(&from) {
            return Err(MpcError::BadParameters(format!(
                "party {from} is not a participant of this session"
            )));
        }
        if round == 0 || round > self.last_round {
            return Err(MpcError::misbehaviour(
                from,
                format!(
                    "sent a message for round {round}; this protocol has rounds 1 to {}",
                    self.last_round
                ),
            ));
        }
        if !self.seen.insert((round, from)) {
            return Err(MpcError::misbehaviour(
                from,
                format!("sent a second message for round {round}"),
            ));
        }
        let msg = decode(round, payload).map_err(|e| {
            MpcError::misbehaviour(from, format!("sent an invalid round {round} message: {e}"))
        })?;
        self.pending.entry(round).or_default().insert(from, msg);
        Ok(())
    }

    /// All peers' messages of `round`, once every one of them has arrived.
    pub(crate) fn take_round(&mut self, round: u8) -> Option<BTreeMap<PartyIndex, M>> {
        let complete = self
            .pending
            .get(&round)
            .is_some_and(|m| m.len() == self.peers.len());
        if complete {
            self.pending.remove(&round)
        } else {
            None
        }
    }

    /// Peers whose message for `round` has not arrived yet.
    pub(crate) fn missing(&self, round: u8) -> Vec<PartyIndex> {
        self.peers
            .iter()
            .copied()
            .filter(|p| !self.seen.contains(&(round, *p)))
            .collect()
    }

    /// Drops everything buffered (after a failure).
    pub(crate) fn clear(&mut self) {
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn inbox() -> Inbox<u32> {
        Inbox::new(1, [2, 3].into_iter().collect(), 3)
    }

    fn dec(_: u8, b: &[u8]) -> Result<u32, String> {
        decode::<u32>(b)
    }

    #[test]
    fn buffers_and_refuses() {
        let mut ib = inbox();
        let five = encode_secret(&[], &5u32).unwrap();
        ib.accept(3, 2, &five, dec).unwrap(); // a later round first: buffered
        assert!(ib.take_round(2).is_none());
        assert_eq!(ib.missing(1), vec![2, 3]);
        ib.accept(2, 1, &five, dec).unwrap();
        assert_eq!(ib.missing(1), vec![3]);

        let e = ib.accept(2, 1, &five, dec).unwrap_err();
        assert_eq!(e.culprit(), Some(2), "duplicate");
        assert_eq!(ib.accept(2, 0, &five, dec).unwrap_err().culprit(), Some(2));
        assert_eq!(ib.accept(2, 4, &five, dec).unwrap_err().culprit(), Some(2));
        assert!(matches!(
            ib.accept(4, 1, &five, dec),
            Err(MpcError::BadParameters(_))
        ));
        assert!(matches!(
            ib.accept(1, 1, &five, dec),
            Err(MpcError::BadParameters(_))
        ));
        let mut trailing = five.to_vec();
        trailing.push(0);
        assert_eq!(
            ib.accept(3, 3, &trailing, dec).unwrap_err().culprit(),
            Some(3)
        );

        ib.accept(3, 1, &five, dec).unwrap();
        let r1 = ib.take_round(1).unwrap();
        assert_eq!(r1.into_iter().collect::<Vec<_>>(), vec![(2, 5), (3, 5)]);
    }

    #[test]
    fn encode_with_prefix() {
        let b = encode_secret(&[1], &(7u8, 9u8)).unwrap();
        assert_eq!(b.as_slice(), &[1, 7, 9]);
    }
}
