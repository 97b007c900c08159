//! The canonical bytes an entry's hash covers (format v1, specified in the crate docs).
//!
//! Hand-written rather than derived from serde so the bytes cannot shift with a library's
//! map order, escaping or number formatting.

use crate::record::{AuditRecord, Decision};
use sha2::{Digest, Sha256};

/// The version byte of the encoding below.
pub const FORMAT_VERSION: u8 = 1;

/// Leads every encoding so an audit hash can never be mistaken for another dkms hash.
pub const DOMAIN_TAG: &[u8; 16] = b"dkms-audit-entry";

/// The `prev_hash` of entry 1.
pub const GENESIS_PREV_HASH: [u8; 32] = [0; 32];

/// The exact bytes hashed for entry `seq` (format v1).
pub fn canonical_encoding(seq: u64, prev_hash: &[u8; 32], record: &AuditRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(DOMAIN_TAG);
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(prev_hash);
    out.extend_from_slice(&record.time.unix_millis().to_be_bytes());
    put_str(&mut out, &record.request_id);
    put_str(&mut out, record.principal.kind.as_str());
    put_str(&mut out, &record.principal.id);
    put_str(&mut out, &record.action);
    match &record.resource {
        None => out.push(0),
        Some(resource) => {
            out.push(1);
            put_str(&mut out, resource);
        }
    }
    out.push(match record.decision {
        Decision::Deny => 0,
        Decision::Allow => 1,
    });
    put_len(&mut out, record.policies.len());
    for policy in &record.policies {
        put_str(&mut out, policy);
    }
    put_str(&mut out, &record.outcome);
    put_len(&mut out, record.details.len());
    for (key, value) in record.details.iter() {
        put_str(&mut out, key);
        put_str(&mut out, value);
    }
    out
}

/// SHA-256 of [`canonical_encoding`].
pub fn entry_hash(seq: u64, prev_hash: &[u8; 32], record: &AuditRecord) -> [u8; 32] {
    Sha256::digest(canonical_encoding(seq, prev_hash, record)).into()
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(&(len as u64).to_be_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_len(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Details, Principal, PrincipalKind};
    use crate::timestamp::Timestamp;

    fn record() -> AuditRecord {
        AuditRecord {
            time: Timestamp::from_unix_millis(0x0102).unwrap(),
            request_id: "r".to_owned(),
            principal: Principal::new(PrincipalKind::Node, "n"),
            action: "a".to_owned(),
            resource: Some("k".to_owned()),
            decision: Decision::Allow,
            policies: vec!["p".to_owned(), "q".to_owned()],
            outcome: "o".to_owned(),
            details: Details::new().with("d", "v").unwrap(),
        }
    }

    /// Pins the layout byte for byte; if this fails, the format changed and needs a new
    /// version number, not a new expectation.
    #[test]
    fn layout_is_pinned() {
        fn s(out: &mut Vec<u8>, text: &str) {
            out.extend_from_slice(&(text.len() as u64).to_be_bytes());
            out.extend_from_slice(text.as_bytes());
        }
        let mut want = b"dkms-audit-entry".to_vec();
        want.push(1);
        want.extend_from_slice(&7u64.to_be_bytes());
        want.extend_from_slice(&[0xAA; 32]);
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 1, 2]);
        s(&mut want, "r");
        s(&mut want, "node");
        s(&mut want, "n");
        s(&mut want, "a");
        want.push(1);
        s(&mut want, "k");
        want.push(1);
        want.extend_from_slice(&2u64.to_be_bytes());
        s(&mut want, "p");
        s(&mut want, "q");
        s(&mut want, "o");
        want.extend_from_slice(&1u64.to_be_bytes());
        s(&mut want, "d");
        s(&mut want, "v");
        assert_eq!(canonical_encoding(7, &[0xAA; 32], &record()), want);
    }

    #[test]
    fn absent_resource_and_deny_have_their_own_bytes() {
        let mut r = record();
        r.resource = None;
        r.decision = Decision::Deny;
        let bytes = canonical_encoding(1, &GENESIS_PREV_HASH, &r);
        // After tag, version, seq, prev, time and four strings of one byte each...
        let at = 16 + 1 + 8 + 32 + 8 + 9 + (8 + 4) + 9 + 9;
        assert_eq!(&bytes[at..at + 2], &[0, 0]);
    }

    /// Length prefixes keep field boundaries unambiguous: moving a character between two
    /// neighbouring fields changes the hash.
    #[test]
    fn shifting_text_between_fields_changes_the_hash() {
        let mut a = record();
        a.request_id = "ab".to_owned();
        a.principal.id = "c".to_owned();
        let mut b = record();
        b.request_id = "a".to_owned();
        b.principal.id = "bc".to_owned();
        assert_ne!(entry_hash(1, &[0; 32], &a), entry_hash(1, &[0; 32], &b));

        let mut c = record();
        c.policies = vec!["pq".to_owned()];
        let mut d = record();
        d.policies = vec!["p".to_owned(), "q".to_owned()];
        assert_ne!(entry_hash(1, &[0; 32], &c), entry_hash(1, &[0; 32], &d));

        let mut e = record();
        e.resource = None;
        let mut f = record();
        f.resource = Some(String::new());
        assert_ne!(entry_hash(1, &[0; 32], &e), entry_hash(1, &[0; 32], &f));
    }
}
