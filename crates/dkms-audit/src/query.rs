//! Filtering the log by time, principal, resource and action, with cursor paging.
//!
//! The SQL store translates an [`AuditQuery`] into a `WHERE` clause; [`AuditQuery::matches`]
//! is the reference meaning of that clause, used by the embedded path and by tests.

use crate::chain::AuditEntry;
use crate::record::{Decision, PrincipalKind};
use crate::timestamp::Timestamp;
use std::fmt::Display;

/// The resource string of a key, so every caller spells it the same way.
pub fn key_resource(key_id: impl Display) -> String {
    format!("key:{key_id}")
}

/// Every set field must match; an empty query matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Inclusive.
    pub from: Option<Timestamp>,
    /// Exclusive, so consecutive windows neither overlap nor leave gaps.
    pub to: Option<Timestamp>,
    pub principal_kind: Option<PrincipalKind>,
    pub principal_id: Option<String>,
    /// Exact match, e.g. [`key_resource`]`(id)`.
    pub resource: Option<String>,
    pub action: Option<String>,
    pub decision: Option<Decision>,
    /// Cursor: only entries after this seq. Paging by seq, not by offset, stays correct
    /// while the log grows.
    pub after_seq: Option<u64>,
    pub limit: Option<usize>,
}

/// One page of results, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub entries: Vec<AuditEntry>,
    /// Set when more matching entries follow: pass it as the next `after_seq`.
    pub next_cursor: Option<u64>,
}

impl AuditQuery {
    /// Ignores `limit`, which applies to a sequence, not an entry.
    pub fn matches(&self, entry: &AuditEntry) -> bool {
        let r = &entry.record;
        self.after_seq.is_none_or(|after| entry.seq > after)
            && self.from.is_none_or(|from| r.time >= from)
            && self.to.is_none_or(|to| r.time < to)
            && self.principal_kind.is_none_or(|k| r.principal.kind == k)
            && self
                .principal_id
                .as_ref()
                .is_none_or(|id| &r.principal.id == id)
            && self
                .resource
                .as_ref()
                .is_none_or(|res| r.resource.as_ref() == Some(res))
            && self.action.as_ref().is_none_or(|a| &r.action == a)
            && self.decision.is_none_or(|d| r.decision == d)
    }

    /// Applies the query to entries in ascending seq order.
    pub fn select(&self, entries: impl IntoIterator<Item = AuditEntry>) -> Page {
        let limit = self.limit.unwrap_or(usize::MAX);
        let mut matching = entries.into_iter().filter(|e| self.matches(e));
        let page: Vec<_> = matching.by_ref().take(limit).collect();
        let next_cursor = match (page.last(), matching.next()) {
            (Some(last), Some(_)) => Some(last.seq),
            _ => None,
        };
        Page {
            entries: page,
            next_cursor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::Chain;
    use crate::record::{AuditRecord, Details, Principal};

    fn at(millis: i64) -> Timestamp {
        Timestamp::from_unix_millis(millis).unwrap()
    }

    /// Ten entries at t = 0, 10, ..., 90 ms; alternating principals; keys k0..k2 in turn;
    /// every third one a denied `sign`.
    fn log() -> Vec<AuditEntry> {
        let mut chain = Chain::new();
        (0..10)
            .map(|i| {
                let record = AuditRecord {
                    time: at(i * 10),
                    request_id: format!("req-{i}"),
                    principal: if i % 2 == 0 {
                        Principal::new(PrincipalKind::ApiKey, "alice")
                    } else {
                        Principal::new(PrincipalKind::User, "bob")
                    },
                    action: if i % 3 == 0 { "sign" } else { "keyGen" }.into(),
                    resource: Some(key_resource(format!("k{}", i % 3))),
                    decision: if i % 3 == 0 {
                        Decision::Deny
                    } else {
                        Decision::Allow
                    },
                    policies: vec!["builtin:admin".into()],
                    outcome: "accepted".into(),
                    details: Details::new(),
                };
                chain.append(record).unwrap()
            })
            .collect()
    }

    fn seqs(query: &AuditQuery) -> Vec<u64> {
        log()
            .into_iter()
            .filter(|e| query.matches(e))
            .map(|e| e.seq)
            .collect()
    }

    #[test]
    fn an_empty_query_matches_all() {
        assert_eq!(seqs(&AuditQuery::default()).len(), 10);
    }

    #[test]
    fn time_window_is_half_open() {
        let q = AuditQuery {
            from: Some(at(20)),
            to: Some(at(50)),
            ..AuditQuery::default()
        };
        assert_eq!(seqs(&q), [3, 4, 5]);
    }

    #[test]
    fn by_principal() {
        let q = AuditQuery {
            principal_id: Some("bob".into()),
            ..AuditQuery::default()
        };
        assert_eq!(seqs(&q), [2, 4, 6, 8, 10]);
        let q = AuditQuery {
            principal_kind: Some(PrincipalKind::ApiKey),
            principal_id: Some("bob".into()),
            ..AuditQuery::default()
        };
        assert!(seqs(&q).is_empty());
    }

    #[test]
    fn by_key_action_and_decision() {
        let q = AuditQuery {
            resource: Some(key_resource("k1")),
            ..AuditQuery::default()
        };
        assert_eq!(seqs(&q), [2, 5, 8]);
        let q = AuditQuery {
            action: Some("sign".into()),
            ..AuditQuery::default()
        };
        assert_eq!(seqs(&q), [1, 4, 7, 10]);
        let q = AuditQuery {
            decision: Some(Decision::Deny),
            resource: Some(key_resource("k0")),
            from: Some(at(1)),
            ..AuditQuery::default()
        };
        assert_eq!(seqs(&q), [4, 7, 10]);
        let q = AuditQuery {
            resource: Some("key:".into()),
            ..AuditQuery::default()
        };
        assert!(seqs(&q).is_empty(), "resource is an exact match");
    }

    #[test]
    fn pages_follow_the_cursor_to_the_end() {
        let mut q = AuditQuery {
            principal_id: Some("alice".into()),
            limit: Some(2),
            ..AuditQuery::default()
        };
        let mut seen = Vec::new();
        let mut pages = 0;
        loop {
            let page = q.select(log());
            pages += 1;
            seen.extend(page.entries.iter().map(|e| e.seq));
            match page.next_cursor {
                Some(cursor) => q.after_seq = Some(cursor),
                None => break,
            }
        }
        assert_eq!(seen, [1, 3, 5, 7, 9]);
        assert_eq!(pages, 3);
    }

    #[test]
    fn an_exactly_full_page_has_no_cursor() {
        let q = AuditQuery {
            action: Some("sign".into()),
            limit: Some(4),
            ..AuditQuery::default()
        };
        let page = q.select(log());
        assert_eq!(page.entries.len(), 4);
        assert_eq!(page.next_cursor, None);
        let q = AuditQuery {
            limit: Some(0),
            ..AuditQuery::default()
        };
        assert_eq!(
            q.select(log()),
            Page {
                entries: vec![],
                next_cursor: None
            }
        );
    }
}
