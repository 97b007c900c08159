//! Entries and the builder that links them.

use crate::encoding::{GENESIS_PREV_HASH, entry_hash};
use crate::record::AuditRecord;
use std::fmt;
use std::str::FromStr;

/// A record as stored: numbered and linked to the entry before it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AuditEntry {
    /// 1 for the first entry, then contiguous.
    pub seq: u64,
    /// `hash` of entry `seq - 1`; all zeros for entry 1.
    pub prev_hash: [u8; 32],
    /// SHA-256 of the v1 canonical encoding of (`seq`, `prev_hash`, `record`).
    pub hash: [u8; 32],
    pub record: AuditRecord,
}

impl AuditEntry {
    /// The hash the contents call for; differs from `hash` when the entry was edited.
    pub fn computed_hash(&self) -> [u8; 32] {
        entry_hash(self.seq, &self.prev_hash, &self.record)
    }

    pub fn anchor(&self) -> Anchor {
        Anchor {
            seq: self.seq,
            hash: self.hash,
        }
    }
}

/// A checkpoint: the sequence number and hash of one entry, saved somewhere the log's
/// writer cannot reach, so that later verification can tell the history before it was
/// not rewritten and the log was not cut short.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Anchor {
    pub seq: u64,
    pub hash: [u8; 32],
}

impl From<(u64, [u8; 32])> for Anchor {
    fn from((seq, hash): (u64, [u8; 32])) -> Self {
        Self { seq, hash }
    }
}

/// Spelled `<seq>:<64 hex digits>`, the form an operator copies into a command line.
impl fmt::Display for Anchor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.seq, hex::encode(self.hash))
    }
}

/// Why an anchor's text form was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a checkpoint is written <seq>:<64 lowercase hex digits>, with seq at least 1")]
pub struct AnchorParseError;

impl FromStr for Anchor {
    type Err = AnchorParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (seq, hash) = s.split_once(':').ok_or(AnchorParseError)?;
        let seq = seq
            .parse::<u64>()
            .ok()
            .filter(|&n| n >= 1 && seq.bytes().all(|b| b.is_ascii_digit()))
            .ok_or(AnchorParseError)?;
        let hash = parse_hash(hash).ok_or(AnchorParseError)?;
        Ok(Self { seq, hash })
    }
}

/// 64 lowercase hex digits, the only spelling this crate writes.
pub(crate) fn parse_hash(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

/// Why the chain cannot take another entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    #[error("cannot resume after entry 0: sequence numbers start at 1")]
    ZeroSeq,
    #[error("the chain has used every sequence number")]
    Exhausted,
}

/// Numbers and links records. Pure: the caller loads the last entry's anchor from its
/// store, resumes, appends, and writes the entry in the same transaction, so that two
/// gateways cannot both append the same `seq` (a unique index on `seq` is the backstop).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    last: Option<Anchor>,
}

impl Chain {
    /// An empty log; the first entry will be seq 1 with an all-zero `prev_hash`.
    pub fn new() -> Self {
        Self { last: None }
    }

    /// Continues after `last`, the newest stored entry (`None` for an empty log).
    pub fn resume(last: Option<Anchor>) -> Result<Self, AppendError> {
        match last {
            Some(a) if a.seq == 0 => Err(AppendError::ZeroSeq),
            _ => Ok(Self { last }),
        }
    }

    /// The newest entry appended or resumed from.
    pub fn last(&self) -> Option<Anchor> {
        self.last
    }

    pub fn append(&mut self, record: AuditRecord) -> Result<AuditEntry, AppendError> {
        let (seq, prev_hash) = match self.last {
            None => (1, GENESIS_PREV_HASH),
            Some(last) => (
                last.seq.checked_add(1).ok_or(AppendError::Exhausted)?,
                last.hash,
            ),
        };
        let hash = entry_hash(seq, &prev_hash, &record);
        self.last = Some(Anchor { seq, hash });
        Ok(AuditEntry {
            seq,
            prev_hash,
            hash,
            record,
        })
    }
}

impl Default for Chain {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::record;

    #[test]
    fn appends_number_and_link() {
        let mut chain = Chain::new();
        let a = chain.append(record(1)).unwrap();
        let b = chain.append(record(2)).unwrap();
        assert_eq!((a.seq, a.prev_hash), (1, [0; 32]));
        assert_eq!((b.seq, b.prev_hash), (2, a.hash));
        assert_eq!(a.hash, a.computed_hash());
        assert_eq!(chain.last(), Some(b.anchor()));
    }

    #[test]
    fn resume_continues_where_the_store_left_off() {
        let mut whole = Chain::new();
        let first = whole.append(record(1)).unwrap();
        let second = whole.append(record(2)).unwrap();
        let mut resumed = Chain::resume(Some(first.anchor())).unwrap();
        assert_eq!(resumed.append(record(2)).unwrap(), second);
        assert_eq!(Chain::resume(None).unwrap(), Chain::new());
    }

    #[test]
    fn resume_refuses_seq_zero_and_append_refuses_overflow() {
        assert_eq!(
            Chain::resume(Some(Anchor {
                seq: 0,
                hash: [0; 32]
            })),
            Err(AppendError::ZeroSeq)
        );
        let mut full = Chain::resume(Some(Anchor {
            seq: u64::MAX,
            hash: [1; 32],
        }))
        .unwrap();
        assert_eq!(full.append(record(1)), Err(AppendError::Exhausted));
    }

    #[test]
    fn anchor_text_round_trips_and_is_strict() {
        let a = Anchor {
            seq: 42,
            hash: [0xab; 32],
        };
        let text = a.to_string();
        assert_eq!(text, format!("42:{}", "ab".repeat(32)));
        assert_eq!(text.parse::<Anchor>(), Ok(a));
        for bad in [
            "42".to_owned(),
            format!("0:{}", "ab".repeat(32)),
            format!("+42:{}", "ab".repeat(32)),
            format!("42:{}", "AB".repeat(32)),
            format!("42:{}", "ab".repeat(31)),
            format!("42:{}0", "ab".repeat(32)),
        ] {
            assert_eq!(bad.parse::<Anchor>(), Err(AnchorParseError), "{bad}");
        }
    }
}
