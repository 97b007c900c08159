//! The tamper-evident audit log of dkms: what an entry holds, how entries are chained,
//! how a log is verified, exported and queried. Pure: the gateway stores the rows and
//! calls in here; nothing in this crate touches a database, a socket or the clock.
//!
//! Every state change and every key use becomes an [`AuditRecord`] (time, principal,
//! action, resource, decision and deciding policies, outcome, request id, and a few
//! non-secret [`Details`]). A [`Chain`] numbers it and links it to the entry before
//! with a hash, giving an [`AuditEntry`]. [`verify`] then detects an edited, removed,
//! reordered or duplicated entry and a cut head; a cut tail, or a history rewritten
//! from some point on, is detected against a checkpoint ([`Anchor`]) the operator
//! saved elsewhere, because whoever can write the log can also re-hash all of it.
//!
//! Never a secret: records hold identifiers, digests and outcomes only. [`Details`]
//! refuses keys that look secret-bearing, as a seatbelt (see its docs).
//!
//! # Format v1
//!
//! Entry `seq` (1, 2, 3, ... without gaps) has `prev_hash` = the `hash` of entry
//! `seq - 1`, or 32 zero bytes for entry 1, and
//! `hash = SHA-256(canonical encoding)`, where the canonical encoding is the
//! concatenation of:
//!
//! | bytes | content |
//! |---|---|
//! | 16 | ASCII `dkms-audit-entry` (domain separation) |
//! | 1 | format version, `0x01` |
//! | 8 | `seq`, u64 big-endian |
//! | 32 | `prev_hash` |
//! | 8 | time, i64 big-endian milliseconds since 1970-01-01T00:00:00Z |
//! | str | request id |
//! | str | principal kind name: `apiKey`, `user`, `node` or `system` |
//! | str | principal id |
//! | str | action |
//! | 1 (+ str) | resource: `0x00` if absent; `0x01` followed by the str if present |
//! | 1 | decision: `0x00` deny, `0x01` allow |
//! | 8 + n × str | policies: count as u64 big-endian, then each, in the given order |
//! | str | outcome |
//! | 8 + n × (str, str) | details: count as u64 big-endian, then key and value of each pair in ascending byte order of key |
//!
//! where *str* is the byte length as u64 big-endian followed by the UTF-8 bytes. Every
//! field has a fixed size or a length prefix, so two different records never encode to
//! the same bytes. serde_json output is deliberately not what is hashed: its map order
//! and escaping are not a canonical form.
//!
//! A JSON line ([`to_json_line`]) carries the same fields under stable camelCase names
//! (`version`, `seq`, `prevHash`, `hash`, `time`, `requestId`, `principal {kind, id}`,
//! `action`, `resource`, `decision`, `policies`, `outcome`, `details`), hashes as
//! lowercase hex and the time as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
//! `tests/fixtures/chain-v1.jsonl` is a v1 chain that every later version must still
//! verify; a change to the encoding is a new version, never an edit of this one.

mod chain;
mod encoding;
mod jsonl;
mod query;
mod record;
mod timestamp;
mod verify;

pub use chain::{Anchor, AnchorParseError, AppendError, AuditEntry, Chain};
pub use encoding::{DOMAIN_TAG, FORMAT_VERSION, GENESIS_PREV_HASH, canonical_encoding, entry_hash};
pub use jsonl::{JsonLineError, JsonLinesError, from_json_line, to_json_line, verify_json_lines};
pub use query::{AuditQuery, Page, key_resource};
pub use record::{
    AuditRecord, Decision, Details, DetailsError, Principal, PrincipalKind, SECRET_KEY_MARKERS,
};
pub use timestamp::{TimeError, Timestamp};
pub use verify::{ChainError, Start, Summary, Verifier, VerifyOptions, verify, verify_with};

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use proptest::prelude::*;

    /// A plausible record, different for every `n`.
    pub fn record(n: u64) -> AuditRecord {
        let kinds = PrincipalKind::ALL;
        AuditRecord {
            time: Timestamp::from_unix_millis(1_735_689_600_000 + n as i64 * 1_250).unwrap(),
            request_id: format!("req-{n:08}"),
            principal: Principal::new(kinds[n as usize % kinds.len()], format!("p{}", n % 7)),
            action: ["keyGen", "sign", "createPod"][n as usize % 3].to_owned(),
            resource: (!n.is_multiple_of(5)).then(|| key_resource(format!("{n:032x}"))),
            decision: if n.is_multiple_of(4) {
                Decision::Deny
            } else {
                Decision::Allow
            },
            policies: (0..n % 3).map(|i| format!("policy-{i}")).collect(),
            outcome: if n.is_multiple_of(6) {
                "failed: TIMEOUT".to_owned()
            } else {
                "accepted".to_owned()
            },
            details: Details::new().with("digest", format!("{n:064x}")).unwrap(),
        }
    }

    pub fn chain_of(n: u64) -> Vec<AuditEntry> {
        let mut chain = Chain::new();
        (1..=n).map(|i| chain.append(record(i)).unwrap()).collect()
    }

    fn ascii() -> impl Strategy<Value = String> {
        "[ -~]{0,12}"
    }

    /// Any record whose text is printable ASCII (so byte flips stay valid UTF-8) and whose
    /// time leaves room to flip low bits.
    pub fn arb_record() -> impl Strategy<Value = AuditRecord> {
        (
            0i64..4_102_444_800_000,
            ascii(),
            prop::sample::select(PrincipalKind::ALL.to_vec()),
            ascii(),
            ascii(),
            prop::option::of(ascii()),
            any::<bool>(),
            prop::collection::vec(ascii(), 0..3),
            ascii(),
            prop::collection::btree_map("[a-z]{1,6}", ascii(), 0..3),
        )
            .prop_map(
                |(time, request_id, kind, id, action, resource, allow, policies, outcome, d)| {
                    AuditRecord {
                        time: Timestamp::from_unix_millis(time).unwrap(),
                        request_id,
                        principal: Principal::new(kind, id),
                        action,
                        resource,
                        decision: if allow {
                            Decision::Allow
                        } else {
                            Decision::Deny
                        },
                        policies,
                        outcome,
                        // Random keys may hit the guard ("seed"); the hash does not care.
                        details: Details::from_stored(d),
                    }
                },
            )
    }
}
