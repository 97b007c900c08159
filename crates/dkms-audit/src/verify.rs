//! Checking a run of entries: every hash, every link, contiguous numbering, and the
//! operator's checkpoints.

use crate::chain::{Anchor, AuditEntry};
use crate::encoding::GENESIS_PREV_HASH;
use std::collections::VecDeque;

/// Where the entries handed to the verifier must begin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Start {
    /// At entry 1 with an all-zero `prev_hash`: a whole log, so a cut head is detected.
    #[default]
    Genesis,
    /// Right after a trusted checkpoint: the first entry must be `seq + 1` and link to its
    /// hash. For verifying only what was appended since the last check.
    After(Anchor),
    /// Wherever the first entry says. Only the run's internal consistency (and any
    /// checkpoints inside it) is checked; a cut head is not detectable this way.
    Unanchored,
}

/// How to verify.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyOptions {
    pub start: Start,
    /// Entries that must be present with exactly these hashes. A checkpoint beyond the
    /// last entry means the tail was cut; one with another hash means history was
    /// rewritten (even if every link in the rewritten log is consistent).
    pub checkpoints: Vec<Anchor>,
}

/// What a successful verification saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// How many entries were checked.
    pub entries: u64,
    pub first_seq: Option<u64>,
    /// The newest entry checked or, with none, the [`Start::After`] anchor: the value to
    /// save as the next checkpoint.
    pub last: Option<Anchor>,
}

/// What is wrong with a log. Each names the entry where the problem shows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("entry {seq} was altered: its contents do not match its hash")]
    Altered { seq: u64 },
    #[error(
        "entry {seq} does not link to the entry before it: its prev_hash differs \
         (an earlier entry was replaced or removed)"
    )]
    BrokenLink { seq: u64 },
    #[error("entry {seq} is missing: the log jumps to entry {next_present}")]
    Missing { seq: u64, next_present: u64 },
    #[error("entry {seq} is out of order: entry {found_first} comes before it")]
    Reordered { seq: u64, found_first: u64 },
    #[error("entry {seq} appears twice")]
    Duplicate { seq: u64 },
    #[error("entry {seq} is out of order: it comes after entry {after}")]
    OutOfOrder { seq: u64, after: u64 },
    #[error(
        "the log starts at entry {found_first} instead of entry {expected_first}: \
         entries before it were removed"
    )]
    TruncatedHead {
        expected_first: u64,
        found_first: u64,
    },
    #[error("the log starts at entry {found_first}, but entry {expected_first} must come first")]
    UnexpectedStart {
        expected_first: u64,
        found_first: u64,
    },
    #[error("checkpoint entry {checkpoint} is missing: {}; the tail was removed", ends(*.ends_at))]
    TruncatedTail {
        checkpoint: u64,
        ends_at: Option<u64>,
    },
    #[error("entry {seq} differs from its checkpoint: the history up to it was rewritten")]
    CheckpointMismatch { seq: u64 },
    #[error(
        "checkpoint entry {checkpoint} lies before the verified range, which starts at entry {first}"
    )]
    CheckpointNotCovered { checkpoint: u64, first: u64 },
}

fn ends(ends_at: Option<u64>) -> String {
    match ends_at {
        Some(seq) => format!("the log ends at entry {seq}"),
        None => "the log is empty".to_owned(),
    }
}

/// Verifies a whole log from entry 1.
pub fn verify(entries: impl IntoIterator<Item = AuditEntry>) -> Result<Summary, ChainError> {
    verify_with(entries, &VerifyOptions::default())
}

pub fn verify_with(
    entries: impl IntoIterator<Item = AuditEntry>,
    options: &VerifyOptions,
) -> Result<Summary, ChainError> {
    let mut verifier = Verifier::new(options);
    for entry in entries {
        verifier.push(&entry)?;
    }
    verifier.finish()
}

/// A gap seen but not yet judged: whether the wanted entry follows decides between
/// "reordered" and "missing".
#[derive(Debug, Clone, Copy)]
struct Gap {
    want: u64,
    found: u64,
    at_head: bool,
}

impl Gap {
    fn missing(self) -> ChainError {
        if self.at_head {
            ChainError::TruncatedHead {
                expected_first: self.want,
                found_first: self.found,
            }
        } else {
            ChainError::Missing {
                seq: self.want,
                next_present: self.found,
            }
        }
    }
}

/// Streaming form of [`verify_with`], for logs read page by page from a store. Feed the
/// entries in order of position, then call [`Verifier::finish`]; the first error sticks.
#[derive(Debug, Clone)]
pub struct Verifier {
    /// The entry the next one must link to; `None` only before an unanchored start.
    prev: Option<Anchor>,
    /// Not yet reached, ascending.
    checkpoints: VecDeque<Anchor>,
    entries: u64,
    first_seq: Option<u64>,
    gap: Option<Gap>,
    failed: Option<ChainError>,
}

impl Verifier {
    pub fn new(options: &VerifyOptions) -> Self {
        let mut checkpoints = options.checkpoints.clone();
        checkpoints.sort();
        let mut verifier = Self {
            prev: match options.start {
                Start::Genesis => Some(Anchor {
                    seq: 0,
                    hash: GENESIS_PREV_HASH,
                }),
                Start::After(anchor) => Some(anchor),
                Start::Unanchored => None,
            },
            checkpoints: checkpoints.into(),
            entries: 0,
            first_seq: None,
            gap: None,
            failed: None,
        };
        // A checkpoint at or before the starting point is judged now: the start anchor
        // itself can satisfy one; nothing earlier can, and there is no entry 0.
        if verifier.checkpoints.front().is_some_and(|cp| cp.seq == 0) {
            verifier.failed = Some(ChainError::CheckpointNotCovered {
                checkpoint: 0,
                first: 1,
            });
        } else if let Some(start) = verifier.prev {
            verifier.failed = verifier.pass_checkpoints(start, start.seq.max(1)).err();
        }
        verifier
    }

    pub fn push(&mut self, entry: &AuditEntry) -> Result<(), ChainError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let result = self.step(entry);
        if let Err(err) = &result {
            self.failed = Some(err.clone());
        }
        result
    }

    pub fn finish(self) -> Result<Summary, ChainError> {
        if let Some(err) = self.failed {
            return Err(err);
        }
        if let Some(gap) = self.gap {
            return Err(gap.missing());
        }
        if let Some(cp) = self.checkpoints.front() {
            return Err(ChainError::TruncatedTail {
                checkpoint: cp.seq,
                ends_at: self.prev.map(|a| a.seq).filter(|&s| s > 0),
            });
        }
        Ok(Summary {
            entries: self.entries,
            first_seq: self.first_seq,
            last: self.prev.filter(|a| a.seq > 0),
        })
    }

    fn step(&mut self, entry: &AuditEntry) -> Result<(), ChainError> {
        if let Some(gap) = self.gap.take() {
            return Err(if entry.seq == gap.want {
                ChainError::Reordered {
                    seq: gap.want,
                    found_first: gap.found,
                }
            } else {
                gap.missing()
            });
        }
        let at_head = self.entries == 0;
        let expected_prev_hash = match self.prev {
            Some(prev) => {
                if entry.seq <= prev.seq {
                    return Err(if at_head {
                        ChainError::UnexpectedStart {
                            expected_first: prev.seq + 1,
                            found_first: entry.seq,
                        }
                    } else if entry.seq == prev.seq {
                        ChainError::Duplicate { seq: entry.seq }
                    } else {
                        ChainError::OutOfOrder {
                            seq: entry.seq,
                            after: prev.seq,
                        }
                    });
                }
                if entry.seq - prev.seq > 1 {
                    // Judged on the next entry (or at the end).
                    self.gap = Some(Gap {
                        want: prev.seq + 1,
                        found: entry.seq,
                        at_head,
                    });
                    return Ok(());
                }
                Some(prev.hash)
            }
            None if entry.seq == 0 => {
                return Err(ChainError::UnexpectedStart {
                    expected_first: 1,
                    found_first: 0,
                });
            }
            None if entry.seq == 1 => Some(GENESIS_PREV_HASH),
            None => None,
        };
        if entry.computed_hash() != entry.hash {
            return Err(ChainError::Altered { seq: entry.seq });
        }
        if expected_prev_hash.is_some_and(|h| h != entry.prev_hash) {
            return Err(ChainError::BrokenLink { seq: entry.seq });
        }
        let first = *self.first_seq.get_or_insert(entry.seq);
        self.pass_checkpoints(entry.anchor(), first)?;
        self.prev = Some(entry.anchor());
        self.entries += 1;
        Ok(())
    }

    /// Consumes the checkpoints up to `reached`, which must match it exactly.
    fn pass_checkpoints(&mut self, reached: Anchor, first: u64) -> Result<(), ChainError> {
        while let Some(&cp) = self.checkpoints.front() {
            if cp.seq > reached.seq {
                break;
            }
            if cp.seq < reached.seq {
                // Only possible before the first entry: later entries are contiguous.
                return Err(ChainError::CheckpointNotCovered {
                    checkpoint: cp.seq,
                    first,
                });
            }
            if cp.hash != reached.hash {
                return Err(ChainError::CheckpointMismatch { seq: cp.seq });
            }
            self.checkpoints.pop_front();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::Chain;
    use crate::encoding::entry_hash;
    use crate::test_support::{chain_of, record};
    use proptest::prelude::*;

    fn anchor(entries: &[AuditEntry], seq: u64) -> Anchor {
        entries[usize::try_from(seq).unwrap() - 1].anchor()
    }

    #[test]
    fn a_thousand_entries_verify() {
        let entries = chain_of(1000);
        let summary = verify(entries.clone()).unwrap();
        assert_eq!(
            summary,
            Summary {
                entries: 1000,
                first_seq: Some(1),
                last: Some(anchor(&entries, 1000)),
            }
        );
    }

    #[test]
    fn an_empty_log_verifies() {
        assert_eq!(
            verify(Vec::new()),
            Ok(Summary {
                entries: 0,
                first_seq: None,
                last: None
            })
        );
    }

    #[test]
    fn an_edited_field_is_named_by_seq() {
        let entries = chain_of(20);
        for k in [0usize, 7, 19] {
            let mut e = entries.clone();
            e[k].record.outcome.push('!');
            assert_eq!(verify(e), Err(ChainError::Altered { seq: k as u64 + 1 }));
        }
        let mut e = entries.clone();
        e[4].record
            .details
            .as_map_mut()
            .insert("note".into(), "x".into());
        assert_eq!(verify(e), Err(ChainError::Altered { seq: 5 }));
        let mut e = entries.clone();
        e[4].hash[0] ^= 1;
        assert_eq!(verify(e), Err(ChainError::Altered { seq: 5 }));
        let mut e = entries;
        e[4].prev_hash[31] ^= 0x80;
        assert_eq!(verify(e), Err(ChainError::Altered { seq: 5 }));
    }

    #[test]
    fn an_entry_rehashed_after_editing_breaks_the_next_link() {
        let mut e = chain_of(10);
        e[4].record.action = "forged".into();
        e[4].hash = e[4].computed_hash();
        assert_eq!(verify(e), Err(ChainError::BrokenLink { seq: 6 }));
    }

    #[test]
    fn a_removed_entry_is_named_by_seq() {
        let entries = chain_of(10);
        let mut e = entries.clone();
        e.remove(4);
        assert_eq!(
            verify(e),
            Err(ChainError::Missing {
                seq: 5,
                next_present: 6
            })
        );
        let mut e = entries.clone();
        e.drain(3..6);
        let err = verify(e).unwrap_err();
        assert_eq!(
            err,
            ChainError::Missing {
                seq: 4,
                next_present: 7
            }
        );
        assert_eq!(
            err.to_string(),
            "entry 4 is missing: the log jumps to entry 7"
        );
        // Removed and renumbered: the numbers are contiguous but the link is not.
        let mut e = entries;
        e.remove(4);
        for (i, entry) in e.iter_mut().enumerate().skip(4) {
            entry.seq = i as u64 + 1;
            entry.hash = entry.computed_hash();
        }
        assert_eq!(verify(e), Err(ChainError::BrokenLink { seq: 5 }));
    }

    #[test]
    fn swapped_entries_are_named_by_seq() {
        let entries = chain_of(10);
        for k in [0usize, 4, 8] {
            let mut e = entries.clone();
            e.swap(k, k + 1);
            assert_eq!(
                verify(e),
                Err(ChainError::Reordered {
                    seq: k as u64 + 1,
                    found_first: k as u64 + 2
                })
            );
        }
        let mut e = entries;
        e.swap(2, 6);
        assert_eq!(
            verify(e),
            Err(ChainError::Missing {
                seq: 3,
                next_present: 7
            })
        );
    }

    #[test]
    fn a_duplicate_is_named_by_seq() {
        let mut e = chain_of(10);
        e.insert(5, e[4].clone());
        assert_eq!(verify(e), Err(ChainError::Duplicate { seq: 5 }));
        let mut e = chain_of(10);
        e.insert(7, e[2].clone());
        assert_eq!(verify(e), Err(ChainError::OutOfOrder { seq: 3, after: 7 }));
    }

    #[test]
    fn a_removed_head_is_detected() {
        let entries = chain_of(10);
        let mut e = entries.clone();
        e.remove(0);
        assert_eq!(
            verify(e),
            Err(ChainError::TruncatedHead {
                expected_first: 1,
                found_first: 2
            })
        );
        // After a checkpoint, the head is the entry after it.
        let options = VerifyOptions {
            start: Start::After(anchor(&entries, 3)),
            checkpoints: vec![],
        };
        assert_eq!(
            verify_with(entries[3..].to_vec(), &options).map(|s| s.entries),
            Ok(7)
        );
        assert_eq!(
            verify_with(entries[4..].to_vec(), &options),
            Err(ChainError::TruncatedHead {
                expected_first: 4,
                found_first: 5
            })
        );
        assert_eq!(
            verify_with(entries[2..].to_vec(), &options),
            Err(ChainError::UnexpectedStart {
                expected_first: 4,
                found_first: 3
            })
        );
        // A head re-rooted at seq 1 without the zero prev_hash is refused, anchored or not.
        let mut e = entries.clone();
        e[0].prev_hash = [9; 32];
        e[0].hash = e[0].computed_hash();
        assert_eq!(verify(e.clone()), Err(ChainError::BrokenLink { seq: 1 }));
        let unanchored = VerifyOptions {
            start: Start::Unanchored,
            checkpoints: vec![],
        };
        assert_eq!(
            verify_with(e, &unanchored),
            Err(ChainError::BrokenLink { seq: 1 })
        );
    }

    #[test]
    fn after_an_anchor_the_first_link_is_checked() {
        let entries = chain_of(10);
        let mut wrong = anchor(&entries, 3);
        wrong.hash[0] ^= 1;
        let options = VerifyOptions {
            start: Start::After(wrong),
            checkpoints: vec![],
        };
        assert_eq!(
            verify_with(entries[3..].to_vec(), &options),
            Err(ChainError::BrokenLink { seq: 4 })
        );
    }

    #[test]
    fn a_removed_tail_is_detected_against_a_checkpoint() {
        let entries = chain_of(10);
        let options = VerifyOptions {
            start: Start::Genesis,
            checkpoints: vec![anchor(&entries, 10)],
        };
        assert_eq!(
            verify_with(entries.clone(), &options).map(|s| s.last),
            Ok(Some(anchor(&entries, 10)))
        );
        let err = verify_with(entries[..8].to_vec(), &options).unwrap_err();
        assert_eq!(
            err,
            ChainError::TruncatedTail {
                checkpoint: 10,
                ends_at: Some(8)
            }
        );
        assert_eq!(
            err.to_string(),
            "checkpoint entry 10 is missing: the log ends at entry 8; the tail was removed"
        );
        assert_eq!(
            verify_with(Vec::new(), &options),
            Err(ChainError::TruncatedTail {
                checkpoint: 10,
                ends_at: None
            })
        );
        // The log may have grown past a checkpoint.
        let mut longer = entries.clone();
        let mut chain = Chain::resume(Some(anchor(&entries, 10))).unwrap();
        longer.push(chain.append(record(11)).unwrap());
        assert_eq!(verify_with(longer, &options).map(|s| s.entries), Ok(11));
    }

    #[test]
    fn a_rewritten_history_is_caught_by_a_checkpoint() {
        let entries = chain_of(10);
        let checkpoint = anchor(&entries, 6);
        // Rewrite entry 3 and re-link everything after it: internally consistent.
        let mut forged = entries[..2].to_vec();
        let mut chain = Chain::resume(Some(anchor(&entries, 2))).unwrap();
        for (i, e) in entries.iter().enumerate().skip(2) {
            let mut r = e.record.clone();
            if i == 2 {
                r.outcome = "finished".into();
            }
            forged.push(chain.append(r).unwrap());
        }
        assert!(verify(forged.clone()).is_ok());
        let options = VerifyOptions {
            start: Start::Genesis,
            checkpoints: vec![checkpoint],
        };
        assert_eq!(
            verify_with(forged, &options),
            Err(ChainError::CheckpointMismatch { seq: 6 })
        );
    }

    #[test]
    fn checkpoints_outside_the_range() {
        let entries = chain_of(10);
        let unanchored = VerifyOptions {
            start: Start::Unanchored,
            checkpoints: vec![anchor(&entries, 2)],
        };
        assert_eq!(
            verify_with(entries[4..].to_vec(), &unanchored),
            Err(ChainError::CheckpointNotCovered {
                checkpoint: 2,
                first: 5
            })
        );
        let after = VerifyOptions {
            start: Start::After(anchor(&entries, 4)),
            checkpoints: vec![anchor(&entries, 4), anchor(&entries, 8)],
        };
        assert_eq!(
            verify_with(entries[4..].to_vec(), &after).map(|s| s.entries),
            Ok(6)
        );
        let before = VerifyOptions {
            start: Start::After(anchor(&entries, 4)),
            checkpoints: vec![anchor(&entries, 3)],
        };
        assert_eq!(
            verify_with(entries[4..].to_vec(), &before),
            Err(ChainError::CheckpointNotCovered {
                checkpoint: 3,
                first: 4
            })
        );
        let zero = VerifyOptions {
            start: Start::Genesis,
            checkpoints: vec![Anchor {
                seq: 0,
                hash: [0; 32],
            }],
        };
        assert_eq!(
            verify_with(entries, &zero),
            Err(ChainError::CheckpointNotCovered {
                checkpoint: 0,
                first: 1
            })
        );
    }

    #[test]
    fn unanchored_runs_check_internal_consistency_only() {
        let entries = chain_of(10);
        let options = VerifyOptions {
            start: Start::Unanchored,
            checkpoints: vec![],
        };
        assert_eq!(
            verify_with(entries[3..7].to_vec(), &options),
            Ok(Summary {
                entries: 4,
                first_seq: Some(4),
                last: Some(anchor(&entries, 7)),
            })
        );
        let mut e = entries[3..7].to_vec();
        e.remove(1);
        assert_eq!(
            verify_with(e, &options),
            Err(ChainError::Missing {
                seq: 5,
                next_present: 6
            })
        );
        let mut e = entries[3..7].to_vec();
        e[0].seq = 0;
        assert_eq!(
            verify_with(e, &options),
            Err(ChainError::UnexpectedStart {
                expected_first: 1,
                found_first: 0
            })
        );
    }

    #[test]
    fn a_gap_at_the_very_end_is_reported() {
        let entries = chain_of(5);
        let mut e = entries.clone();
        e[4].seq = 9;
        assert_eq!(
            verify(e),
            Err(ChainError::Missing {
                seq: 5,
                next_present: 9
            })
        );
    }

    #[test]
    fn the_first_error_sticks() {
        let mut e = chain_of(5);
        e[1].record.action.push('x');
        let mut v = Verifier::new(&VerifyOptions::default());
        assert!(v.push(&e[0]).is_ok());
        assert_eq!(v.push(&e[1]), Err(ChainError::Altered { seq: 2 }));
        assert_eq!(v.push(&e[2]), Err(ChainError::Altered { seq: 2 }));
        assert_eq!(v.finish(), Err(ChainError::Altered { seq: 2 }));
    }

    #[test]
    fn the_largest_seq_does_not_overflow() {
        let before = Anchor {
            seq: u64::MAX - 1,
            hash: [3; 32],
        };
        let mut chain = Chain::resume(Some(before)).unwrap();
        let last = chain.append(record(1)).unwrap();
        let options = VerifyOptions {
            start: Start::After(before),
            checkpoints: vec![],
        };
        assert_eq!(
            verify_with(vec![last.clone(), last.clone()], &options),
            Err(ChainError::Duplicate { seq: u64::MAX })
        );
        let mut wrapped = last.clone();
        wrapped.seq = 0;
        wrapped.hash = entry_hash(0, &last.hash, &wrapped.record);
        assert_eq!(
            verify_with(vec![last, wrapped], &options),
            Err(ChainError::OutOfOrder {
                seq: 0,
                after: u64::MAX
            })
        );
    }

    /// One field of one entry, as the mutation test sees it.
    #[derive(Debug, Clone, Copy)]
    enum Field {
        Seq,
        PrevHash,
        Hash,
        Time,
        RequestId,
        PrincipalKind,
        PrincipalId,
        Action,
        Resource,
        Decision,
        Policy,
        Outcome,
        DetailKey,
        DetailValue,
    }

    fn field() -> impl Strategy<Value = Field> {
        prop_oneof![
            Just(Field::Seq),
            Just(Field::PrevHash),
            Just(Field::Hash),
            Just(Field::Time),
            Just(Field::RequestId),
            Just(Field::PrincipalKind),
            Just(Field::PrincipalId),
            Just(Field::Action),
            Just(Field::Resource),
            Just(Field::Decision),
            Just(Field::Policy),
            Just(Field::Outcome),
            Just(Field::DetailKey),
            Just(Field::DetailValue),
        ]
    }

    /// Flips bits of one byte of `bytes` (appending a byte to an empty string instead),
    /// keeping ASCII text ASCII.
    fn flip_ascii(text: &mut String, at: usize, mask: u8) {
        let mut bytes = std::mem::take(text).into_bytes();
        if bytes.is_empty() {
            bytes.push(b'a');
        } else {
            let i = at % bytes.len();
            bytes[i] ^= mask & 0x7f;
        }
        *text = String::from_utf8(bytes).unwrap();
    }

    fn flip(bytes: &mut [u8], at: usize, mask: u8) {
        let i = at % bytes.len();
        bytes[i] ^= mask;
    }

    /// Changes exactly one byte of the chosen field (or, for enums and optional values,
    /// its one-byte tag), so the entry really differs.
    fn mutate(entry: &mut AuditEntry, field: Field, at: usize, mask: u8) {
        let r = &mut entry.record;
        match field {
            Field::Seq => {
                let mut b = entry.seq.to_be_bytes();
                flip(&mut b, at, mask);
                entry.seq = u64::from_be_bytes(b);
            }
            Field::PrevHash => flip(&mut entry.prev_hash, at, mask),
            Field::Hash => flip(&mut entry.hash, at, mask),
            Field::Time => {
                // Low bytes only, so the result stays a valid timestamp.
                let millis = r.time.unix_millis() ^ (i64::from(mask) << (8 * (at % 4)));
                r.time = crate::Timestamp::from_unix_millis(millis).unwrap();
            }
            Field::RequestId => flip_ascii(&mut r.request_id, at, mask),
            Field::PrincipalKind => {
                let kinds = crate::PrincipalKind::ALL;
                let i = kinds.iter().position(|k| *k == r.principal.kind).unwrap();
                r.principal.kind = kinds[(i + 1 + at % 3) % kinds.len()];
            }
            Field::PrincipalId => flip_ascii(&mut r.principal.id, at, mask),
            Field::Action => flip_ascii(&mut r.action, at, mask),
            Field::Resource => match &mut r.resource {
                Some(text) if at.is_multiple_of(2) => flip_ascii(text, at / 2, mask),
                Some(_) => r.resource = None,
                None => r.resource = Some(String::new()),
            },
            Field::Decision => {
                r.decision = match r.decision {
                    crate::Decision::Allow => crate::Decision::Deny,
                    crate::Decision::Deny => crate::Decision::Allow,
                }
            }
            Field::Policy => match r.policies.len() {
                0 => r.policies.push(String::new()),
                n => flip_ascii(&mut r.policies[at % n], at / n, mask),
            },
            Field::Outcome => flip_ascii(&mut r.outcome, at, mask),
            Field::DetailKey | Field::DetailValue => {
                let map = r.details.as_map_mut();
                let Some(key) = map.keys().nth(at % map.len().max(1)).cloned() else {
                    map.insert("added".into(), String::new());
                    return;
                };
                let mut value = map.remove(&key).unwrap();
                let mut key = key;
                if matches!(field, Field::DetailKey) {
                    flip_ascii(&mut key, at / 3, mask);
                    if map.contains_key(&key) {
                        // Collided with another key: the map shrank, which is also a change.
                        return;
                    }
                } else {
                    flip_ascii(&mut value, at / 3, mask);
                }
                map.insert(key, value);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn any_single_byte_mutation_is_detected(
            records in prop::collection::vec(crate::test_support::arb_record(), 1..8),
            pick in any::<prop::sample::Index>(),
            field in field(),
            at in any::<usize>(),
            mask in 1u8..=0x7f,
        ) {
            let mut chain = Chain::new();
            let entries: Vec<_> = records
                .into_iter()
                .map(|r| chain.append(r).unwrap())
                .collect();
            prop_assert!(verify(entries.clone()).is_ok());
            let k = pick.index(entries.len());
            let mut tampered = entries.clone();
            mutate(&mut tampered[k], field, at, mask);
            prop_assert_ne!(&tampered[k], &entries[k]);
            // No checkpoint needed: one changed byte never yields a consistent entry.
            prop_assert!(verify(tampered).is_err());
        }
    }
}
