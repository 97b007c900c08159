//! The governance part of the store contract (audit log, approvals, quotas), written once
//! and run on every backend against the real servers: SQLite, MariaDB (127.0.0.1:3306) and
//! PostgreSQL (127.0.0.1:5432). A server that cannot be reached fails its test.
//!
//! Two `Store`s on one database stand for two gateways: each has its own pool and its own
//! in-process audit lock, so only the database keeps them apart.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use dkms_audit::{
    AuditEntry, AuditQuery, AuditRecord, Decision, Details, Principal, PrincipalKind, Timestamp,
    key_resource,
};
mod common;

use common::key;
use dkms_store::testdb::TestDb;
use dkms_store::{
    ApprovalOutcome, ApprovalRefused, ApprovalRule, Backend, SignExtras, SignRow, Store,
    StoreError, TaskStatus,
};
use std::collections::BTreeSet;

// ---- fixtures ----

fn sign(id: &str, status: TaskStatus, created_at: i64) -> SignRow {
    SignRow {
        instance_id: id.into(),
        key_id: "gk".into(),
        digest: "ab".repeat(32),
        status,
        signature: None,
        signers: vec![],
        error_code: None,
        error_message: None,
        derivation_path: None,
        created_at,
    }
}

fn extras(required: u32, expires_at: i64) -> SignExtras {
    SignExtras {
        requester: "apiKey:k-123".into(),
        tx: Some(r#"{"chainId":1,"to":"0x00","value":"1000000000000000000"}"#.into()),
        signed_tx: None,
        tx_hash: None,
        approval: Some(ApprovalRule {
            required,
            group: Some("treasury".into()),
            policy: "policy:large-transfers".into(),
            expires_at,
        }),
        quota_claims: r#"[{"scope":"spend:k","bucket":0,"amount":"5"}]"#.into(),
    }
}

/// A varied record, different for every `n`: times that do not grow with seq, principal
/// ids that differ only by a trailing space, non-ASCII text, absent resources, quotes and
/// newlines, policies and details of several sizes.
fn record(n: u64) -> AuditRecord {
    let ids = ["alice", "alice ", "bob", "ünï-用户"];
    let i = n as usize;
    let mut details = Details::new().with("digest", format!("{n:064x}")).unwrap();
    if n.is_multiple_of(2) {
        details = details.with("note", "a \"quote\",\n\\ and ü").unwrap();
    }
    AuditRecord {
        time: Timestamp::from_unix_millis(1_735_689_600_000 + (n as i64 % 37) * 1_000).unwrap(),
        request_id: format!("req-{n}"),
        principal: Principal::new(PrincipalKind::ALL[i % 4], ids[(i / 4) % 4]),
        action: ["sign", "keyGen", "approve"][i % 3].into(),
        resource: match n % 5 {
            0 => None,
            1 => Some(format!("{} ", key_resource("k1"))),
            _ => Some(key_resource(format!("k{}", n % 3))),
        },
        decision: if n.is_multiple_of(4) {
            Decision::Deny
        } else {
            Decision::Allow
        },
        policies: (0..n % 3).map(|p| format!("policy-{p}")).collect(),
        outcome: if n.is_multiple_of(6) {
            "failed: TIMEOUT\nsecond line".into()
        } else {
            "accepted".into()
        },
        details,
    }
}

// ---- audit log ----

async fn append_many(s: &Store, tasks: u64, each: u64, offset: u64) -> Vec<AuditEntry> {
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let s = s.clone();
            tokio::spawn(async move {
                let mut out = Vec::new();
                for i in 0..each {
                    let n = offset + t * each + i;
                    let e = s.append_audit(&record(n)).await.unwrap();
                    assert_eq!(e.record, record(n));
                    out.push(e);
                }
                out
            })
        })
        .collect();
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    all
}

async fn everything(s: &Store) -> Vec<AuditEntry> {
    s.audit_entries(0, usize::MAX).await.unwrap()
}

async fn audit_chain_under_concurrency(s: &Store, other_gateway: &Store) {
    assert_eq!(s.audit_head().await.unwrap(), None);
    assert!(everything(s).await.is_empty());

    // 200 appends from 8 tasks of one gateway.
    let mut appended = append_many(s, 8, 25, 0).await;
    appended.sort_by_key(|e| e.seq);
    let stored = everything(s).await;
    assert_eq!(
        stored.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=200).collect::<Vec<_>>()
    );
    assert_eq!(stored, appended, "entries read back exactly as appended");
    let summary = dkms_audit::verify(stored.clone()).unwrap();
    assert_eq!(summary.entries, 200);
    assert_eq!(s.audit_head().await.unwrap(), summary.last);

    // Two gateways (two pools, two in-process locks) appending at once.
    let (a, b) = tokio::join!(
        append_many(s, 4, 10, 1000),
        append_many(other_gateway, 4, 10, 2000)
    );
    assert_eq!(a.len() + b.len(), 80);
    let stored = everything(s).await;
    assert_eq!(
        stored.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=280).collect::<Vec<_>>()
    );
    let summary = dkms_audit::verify(stored.clone()).unwrap();
    assert_eq!(summary.entries, 280);
    assert_eq!(other_gateway.audit_head().await.unwrap(), summary.last);
    for e in a.iter().chain(&b) {
        assert_eq!(&stored[e.seq as usize - 1], e);
    }

    // Export pages by seq.
    let mut paged = Vec::new();
    let mut after = 0;
    loop {
        let page = s.audit_entries(after, 64).await.unwrap();
        match page.last() {
            Some(last) => after = last.seq,
            None => break,
        }
        paged.extend(page);
    }
    assert_eq!(paged, stored);
    assert!(s.audit_entries(280, 10).await.unwrap().is_empty());
    assert!(s.audit_entries(u64::MAX, 10).await.unwrap().is_empty());
}

async fn audit_queries_match_the_reference(s: &Store) {
    let all = everything(s).await;
    let at = |offset: i64| Some(Timestamp::from_unix_millis(1_735_689_600_000 + offset).unwrap());
    let q = AuditQuery::default;
    let mut queries = vec![
        q(),
        AuditQuery {
            limit: Some(0),
            ..q()
        },
        AuditQuery {
            limit: Some(7),
            ..q()
        },
        AuditQuery {
            limit: Some(280),
            ..q()
        },
        AuditQuery {
            limit: Some(5000),
            ..q()
        },
        AuditQuery {
            after_seq: Some(150),
            ..q()
        },
        AuditQuery {
            after_seq: Some(u64::MAX),
            ..q()
        },
        AuditQuery {
            from: at(5_000),
            to: at(9_000),
            limit: Some(1000),
            ..q()
        },
        AuditQuery {
            from: at(36_000),
            ..q()
        },
        AuditQuery {
            to: at(1_000),
            ..q()
        },
        AuditQuery {
            principal_id: Some("alice".into()),
            limit: Some(1000),
            ..q()
        },
        AuditQuery {
            principal_id: Some("alice ".into()),
            limit: Some(1000),
            ..q()
        },
        AuditQuery {
            principal_id: Some("ünï-用户".into()),
            ..q()
        },
        AuditQuery {
            principal_id: Some("nobody".into()),
            ..q()
        },
        AuditQuery {
            resource: Some(key_resource("k1")),
            limit: Some(1000),
            ..q()
        },
        AuditQuery {
            resource: Some(format!("{} ", key_resource("k1"))),
            ..q()
        },
        AuditQuery {
            resource: Some("key:".into()),
            ..q()
        },
        AuditQuery {
            action: Some("approve".into()),
            limit: Some(1000),
            ..q()
        },
        AuditQuery {
            decision: Some(Decision::Deny),
            ..q()
        },
        AuditQuery {
            principal_kind: Some(PrincipalKind::User),
            principal_id: Some("alice ".into()),
            ..q()
        },
        AuditQuery {
            principal_kind: Some(PrincipalKind::Node),
            action: Some("sign".into()),
            decision: Some(Decision::Allow),
            from: at(10_000),
            after_seq: Some(40),
            limit: Some(3),
            ..q()
        },
    ];
    for kind in PrincipalKind::ALL {
        queries.push(AuditQuery {
            principal_kind: Some(kind),
            limit: Some(1000),
            ..q()
        });
    }
    for query in &queries {
        let page = s.query_audit(query).await.unwrap();
        let effective = AuditQuery {
            limit: Some(query.limit.unwrap_or(100).min(1000)),
            ..query.clone()
        };
        assert_eq!(page, effective.select(all.clone()), "{query:?}");
    }
    assert_eq!(s.query_audit(&q()).await.unwrap().entries.len(), 100);
    assert_eq!(s.query_audit(&q()).await.unwrap().next_cursor, Some(100));

    // Following the cursor gives every match exactly once.
    let mut query = AuditQuery {
        principal_id: Some("alice".into()),
        action: Some("sign".into()),
        limit: Some(4),
        ..q()
    };
    let want: Vec<_> = all.iter().filter(|e| query.matches(e)).cloned().collect();
    assert!(want.len() > 8);
    let mut got = Vec::new();
    loop {
        let page = s.query_audit(&query).await.unwrap();
        got.extend(page.entries);
        match page.next_cursor {
            Some(c) => query.after_seq = Some(c),
            None => break,
        }
    }
    assert_eq!(got, want);
}

async fn audit_refuses_what_a_backend_cannot_store(s: &Store) {
    let head = s.audit_head().await.unwrap();
    let mut long = record(1);
    long.principal.id = "x".repeat(dkms_store::AUDIT_PRINCIPAL_ID_MAX + 1);
    assert!(matches!(
        s.append_audit(&long).await,
        Err(StoreError::Db(_))
    ));
    let mut nul = record(2);
    nul.outcome = "ok\0".into();
    assert!(matches!(s.append_audit(&nul).await, Err(StoreError::Db(_))));
    assert_eq!(s.audit_head().await.unwrap(), head);
    // The widest allowed values fit on every backend.
    let mut wide = record(3);
    wide.principal.id = "é".repeat(dkms_store::AUDIT_PRINCIPAL_ID_MAX);
    wide.action = "a".repeat(dkms_store::AUDIT_ACTION_MAX);
    wide.resource = Some("r".repeat(dkms_store::AUDIT_RESOURCE_MAX));
    let e = s.append_audit(&wide).await.unwrap();
    assert_eq!(s.audit_entries(e.seq - 1, 1).await.unwrap(), vec![e]);
    dkms_audit::verify(everything(s).await).unwrap();
}

// ---- sign extras and approvals ----

async fn sign_extras_round_trip(s: &Store) {
    s.insert_key(&key("gk")).await.unwrap();
    let pending = sign("x-pending", TaskStatus::PendingApproval, 10);
    s.insert_sign_with(&pending, &extras(2, 1_000))
        .await
        .unwrap();
    assert_eq!(s.get_sign("x-pending").await.unwrap().unwrap(), pending);
    assert_eq!(
        s.get_sign_extras("x-pending").await.unwrap().unwrap(),
        extras(2, 1_000)
    );

    let plain = SignExtras {
        requester: "user:u-1".into(),
        tx: None,
        signed_tx: None,
        tx_hash: None,
        approval: None,
        quota_claims: "[]".into(),
    };
    s.insert_sign_with(&sign("x-plain", TaskStatus::Init, 11), &plain)
        .await
        .unwrap();
    assert_eq!(s.get_sign_extras("x-plain").await.unwrap().unwrap(), plain);
    assert_eq!(s.get_sign_extras("nope").await.unwrap(), None);

    // Both rows or neither.
    assert!(matches!(
        s.insert_sign_with(&sign("x-plain", TaskStatus::Init, 12), &extras(1, 5))
            .await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(s.get_sign_extras("x-plain").await.unwrap().unwrap(), plain);
    let mut no_key = sign("x-nokey", TaskStatus::Init, 12);
    no_key.key_id = "no-such-key".into();
    assert!(s.insert_sign_with(&no_key, &plain).await.is_err());
    assert!(s.get_sign_extras("x-nokey").await.unwrap().is_none());
    assert!(matches!(
        s.insert_sign_with(&sign("x-bad", TaskStatus::PendingApproval, 12), &plain)
            .await,
        Err(StoreError::Db(_))
    ));
    assert!(matches!(
        s.insert_sign_with(
            &sign("x-bad", TaskStatus::PendingApproval, 12),
            &extras(0, 5)
        )
        .await,
        Err(StoreError::Db(_))
    ));
    assert!(s.get_sign("x-bad").await.unwrap().is_none());

    // The signed transaction is written once.
    assert!(
        s.set_signed_tx("x-plain", "0x02f8", "0xabcd")
            .await
            .unwrap()
    );
    assert!(
        !s.set_signed_tx("x-plain", "0xother", "0xother")
            .await
            .unwrap()
    );
    assert!(!s.set_signed_tx("nope", "0x02f8", "0xabcd").await.unwrap());
    let got = s.get_sign_extras("x-plain").await.unwrap().unwrap();
    assert_eq!(got.signed_tx.as_deref(), Some("0x02f8"));
    assert_eq!(got.tx_hash.as_deref(), Some("0xabcd"));
}

fn refused(r: Result<ApprovalOutcome, StoreError>) -> ApprovalRefused {
    match r {
        Err(StoreError::ApprovalRefused(why)) => why,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn concurrent_approvals_release_once(s: &Store) {
    s.insert_sign_with(
        &sign("a-3of8", TaskStatus::PendingApproval, 20),
        &extras(3, 1_000),
    )
    .await
    .unwrap();
    let votes: Vec<_> = (0..8)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                let who = format!("user:approver-{i}");
                let r = s.record_approval("a-3of8", &who, true, "ok", 100).await;
                (who, r)
            })
        })
        .collect();
    let mut taken = Vec::new();
    let mut refusals = 0;
    for v in votes {
        let (who, r) = v.await.unwrap();
        match r {
            Ok(o) => taken.push((who, o)),
            Err(e) => {
                assert_eq!(
                    refused(Err(e)),
                    ApprovalRefused::NotPending {
                        instance_id: "a-3of8".into(),
                        status: TaskStatus::Init
                    }
                );
                refusals += 1;
            }
        }
    }
    assert_eq!((taken.len(), refusals), (3, 5));
    assert_eq!(taken.iter().filter(|(_, o)| o.released).count(), 1);
    let mut counts: Vec<u32> = taken.iter().map(|(_, o)| o.approvals).collect();
    counts.sort_unstable();
    assert_eq!(counts, [1, 2, 3]);
    for (_, o) in &taken {
        assert_eq!(o.required, 3);
        assert!(!o.rejected);
        assert_eq!(o.released, o.approvals == 3);
    }
    assert_eq!(
        s.get_sign("a-3of8").await.unwrap().unwrap().status,
        TaskStatus::Init
    );
    let recorded: BTreeSet<String> = s
        .list_approvals("a-3of8")
        .await
        .unwrap()
        .into_iter()
        .map(|a| {
            assert!(a.approve);
            assert_eq!(a.comment, "ok");
            a.approver
        })
        .collect();
    let accepted: BTreeSet<String> = taken.into_iter().map(|(who, _)| who).collect();
    assert_eq!(
        recorded, accepted,
        "exactly the accepted votes are recorded"
    );

    // The same approver twice, at once: one vote counts.
    s.insert_sign_with(
        &sign("a-dup", TaskStatus::PendingApproval, 21),
        &extras(5, 1_000),
    )
    .await
    .unwrap();
    let (a, b) = tokio::join!(
        s.record_approval("a-dup", "user:twice", true, "", 100),
        s.record_approval("a-dup", "user:twice", true, "", 100)
    );
    let (ok, dup) = if a.is_ok() { (a, b) } else { (b, a) };
    assert_eq!(
        ok.unwrap(),
        ApprovalOutcome {
            approvals: 1,
            required: 5,
            released: false,
            rejected: false
        }
    );
    assert!(matches!(dup, Err(StoreError::Conflict)), "{dup:?}");
    assert!(matches!(
        s.record_approval("a-dup", "user:twice", false, "changed my mind", 101)
            .await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(s.list_approvals("a-dup").await.unwrap().len(), 1);
}

async fn rejections_and_refusals(s: &Store) {
    s.insert_sign_with(
        &sign("r-1", TaskStatus::PendingApproval, 30),
        &extras(2, 1_000),
    )
    .await
    .unwrap();
    s.record_approval("r-1", "user:yes", true, "", 100)
        .await
        .unwrap();
    let o = s
        .record_approval("r-1", "user:no", false, "not this one", 101)
        .await
        .unwrap();
    assert_eq!(
        o,
        ApprovalOutcome {
            approvals: 1,
            required: 2,
            released: false,
            rejected: true
        }
    );
    let t = s.get_sign("r-1").await.unwrap().unwrap();
    assert_eq!(t.status, TaskStatus::Rejected);
    assert_eq!(t.error_code.as_deref(), Some(dkms_store::ERROR_REJECTED));
    assert!(t.error_message.unwrap().contains("user:no"));
    assert_eq!(
        refused(s.record_approval("r-1", "user:late", true, "", 102).await),
        ApprovalRefused::NotPending {
            instance_id: "r-1".into(),
            status: TaskStatus::Rejected
        }
    );
    let votes = s.list_approvals("r-1").await.unwrap();
    assert_eq!(
        votes
            .iter()
            .map(|v| (v.approver.as_str(), v.approve, v.created_at))
            .collect::<Vec<_>>(),
        [("user:yes", true, 100), ("user:no", false, 101)]
    );
    assert_eq!(votes[1].comment, "not this one");

    // The window is open until just before expires_at.
    s.insert_sign_with(
        &sign("r-exp", TaskStatus::PendingApproval, 31),
        &extras(2, 500),
    )
    .await
    .unwrap();
    assert_eq!(
        refused(s.record_approval("r-exp", "user:a", true, "", 500).await),
        ApprovalRefused::Expired {
            instance_id: "r-exp".into(),
            expires_at: 500
        }
    );
    assert!(s.list_approvals("r-exp").await.unwrap().is_empty());
    s.record_approval("r-exp", "user:a", true, "", 499)
        .await
        .unwrap();

    assert_eq!(
        refused(s.record_approval("nope", "user:a", true, "", 1).await),
        ApprovalRefused::UnknownTask("nope".into())
    );
    assert_eq!(
        refused(s.record_approval("x-plain", "user:a", true, "", 1).await),
        ApprovalRefused::NotPending {
            instance_id: "x-plain".into(),
            status: TaskStatus::Init
        }
    );
    assert!(matches!(
        s.record_approval(
            "r-exp",
            &"u".repeat(dkms_store::APPROVER_MAX + 1),
            true,
            "",
            1
        )
        .await,
        Err(StoreError::Db(_))
    ));
}

async fn pending_listing_sweeps_and_expiry(s: &Store, other_gateway: &Store) {
    // Pending now: x-pending (10, expires 1000), a-dup (21, 1000), r-exp (31, 500).
    for (id, at, expires) in [("e-1", 40, 200), ("e-2", 41, 200), ("e-3", 42, 5_000)] {
        s.insert_sign_with(
            &sign(id, TaskStatus::PendingApproval, at),
            &extras(1, expires),
        )
        .await
        .unwrap();
    }
    let ids = |v: Vec<(SignRow, SignExtras)>| -> Vec<String> {
        v.into_iter()
            .map(|(row, x)| {
                assert_eq!(row.status, TaskStatus::PendingApproval);
                assert!(x.approval.is_some());
                row.instance_id
            })
            .collect()
    };
    let all = ids(s.list_pending_approvals(100).await.unwrap());
    assert_eq!(all, ["x-pending", "a-dup", "r-exp", "e-1", "e-2", "e-3"]);
    assert_eq!(
        ids(s.list_pending_approvals(2).await.unwrap()),
        ["x-pending", "a-dup"]
    );
    let (first, _) = s
        .list_pending_approvals(1)
        .await
        .unwrap()
        .into_iter()
        .next()
        .unwrap();
    assert_eq!(first, sign("x-pending", TaskStatus::PendingApproval, 10));

    // The sweep of a stopped gateway's tasks leaves tasks that wait for people alone.
    s.insert_sign(&sign("sw-running", TaskStatus::Processing, 43))
        .await
        .unwrap();
    other_gateway.heartbeat(1000).await.unwrap();
    let swept = other_gateway
        .fail_orphaned(500, "GATEWAY_LOST", |_| "stopped".into(), 150)
        .await
        .unwrap();
    assert_eq!(
        swept.signs.len(),
        3,
        "x-plain and a-3of8 (INIT), sw-running (PROCESSING)"
    );
    assert_eq!(
        ids(s.list_pending_approvals(100).await.unwrap()),
        all,
        "no pending approval was failed"
    );
    assert_eq!(
        s.get_sign("a-3of8").await.unwrap().unwrap().status,
        TaskStatus::Failed
    );

    // Two sweepers at once expire each task once.
    let (a, b) = tokio::join!(s.expire_approvals(600), other_gateway.expire_approvals(600));
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut both: Vec<String> = a.iter().chain(&b).cloned().collect();
    both.sort();
    assert_eq!(both, ["e-1", "e-2", "r-exp"]);
    for id in &both {
        let t = s.get_sign(id).await.unwrap().unwrap();
        assert_eq!(t.status, TaskStatus::Rejected);
        assert_eq!(
            t.error_code.as_deref(),
            Some(dkms_store::ERROR_APPROVAL_EXPIRED)
        );
    }
    assert!(s.expire_approvals(600).await.unwrap().is_empty());
    assert_eq!(
        ids(s.list_pending_approvals(100).await.unwrap()),
        ["x-pending", "a-dup", "e-3"]
    );
    // A task still pending keeps taking votes after both sweeps.
    let o = s
        .record_approval("e-3", "user:a", true, "", 700)
        .await
        .unwrap();
    assert!(o.released);
}

// ---- quotas ----

async fn quotas_never_overshoot(s: &Store, other_gateway: &Store) {
    let consumers: Vec<_> = (0..32)
        .map(|i| {
            let s = if i % 2 == 0 { s } else { other_gateway }.clone();
            tokio::spawn(async move { s.consume_quota("rate:k1", 60_000, 1, 10).await.unwrap() })
        })
        .collect();
    let mut granted = 0;
    for c in consumers {
        granted += u32::from(c.await.unwrap());
    }
    assert_eq!(granted, 10);
    assert_eq!(s.quota_used("rate:k1", 60_000).await.unwrap(), 10);
    assert!(!s.consume_quota("rate:k1", 60_000, 1, 10).await.unwrap());
    assert!(s.consume_quota("rate:k1", 60_000, 0, 10).await.unwrap());
    assert!(!s.consume_quota("rate:k1", 60_000, 0, 9).await.unwrap());
    // Buckets and scopes are independent.
    assert!(s.consume_quota("rate:k1", 120_000, 1, 10).await.unwrap());
    assert!(s.consume_quota("rate:k2", 60_000, 1, 10).await.unwrap());

    // Amounts where f64 would round: 2^126 - 1 four times fits under 2^128 - 1 exactly,
    // a fifth does not.
    let amount = (1u128 << 126) - 1;
    let consumers: Vec<_> = (0..8)
        .map(|i| {
            let s = if i % 2 == 0 { s } else { other_gateway }.clone();
            tokio::spawn(async move {
                s.consume_quota("spend:wei", 0, amount, u128::MAX)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut granted = 0;
    for c in consumers {
        granted += u32::from(c.await.unwrap());
    }
    assert_eq!(granted, 4);
    assert_eq!(s.quota_used("spend:wei", 0).await.unwrap(), 4 * amount);
    assert!(s.consume_quota("spend:wei", 0, 3, u128::MAX).await.unwrap());
    assert_eq!(s.quota_used("spend:wei", 0).await.unwrap(), u128::MAX);
    assert!(!s.consume_quota("spend:wei", 0, 1, u128::MAX).await.unwrap());
}

async fn quotas_hold_u128(s: &Store) {
    let half = 1u128 << 127;
    assert!(
        s.consume_quota("spend:big", 0, half, u128::MAX)
            .await
            .unwrap()
    );
    assert!(
        !s.consume_quota("spend:big", 0, half, u128::MAX)
            .await
            .unwrap()
    );
    assert_eq!(s.quota_used("spend:big", 0).await.unwrap(), half);
    assert!(
        s.consume_quota("spend:big", 0, half - 1, u128::MAX)
            .await
            .unwrap()
    );
    assert_eq!(s.quota_used("spend:big", 0).await.unwrap(), u128::MAX);
    s.refund_quota("spend:big", 0, 1).await.unwrap();
    assert_eq!(s.quota_used("spend:big", 0).await.unwrap(), u128::MAX - 1);
    assert!(!s.consume_quota("spend:big", 0, 2, u128::MAX).await.unwrap());
    assert!(s.consume_quota("spend:big", 0, 1, u128::MAX).await.unwrap());
    // A limit just below the usage refuses even the smallest amount.
    assert!(
        !s.consume_quota("spend:big", 0, 1, u128::MAX - 1)
            .await
            .unwrap()
    );

    // Refunds never go below zero, and need a record.
    s.refund_quota("spend:big", 0, half + 7).await.unwrap();
    assert_eq!(s.quota_used("spend:big", 0).await.unwrap(), half - 8);
    s.refund_quota("spend:big", 0, u128::MAX).await.unwrap();
    assert_eq!(s.quota_used("spend:big", 0).await.unwrap(), 0);
    s.refund_quota("spend:none", 0, 5).await.unwrap();
    assert_eq!(s.quota_used("spend:none", 0).await.unwrap(), 0);

    // An amount over the limit changes nothing.
    assert!(!s.consume_quota("spend:over", 0, 11, 10).await.unwrap());
    assert_eq!(s.quota_used("spend:over", 0).await.unwrap(), 0);
    assert!(matches!(
        s.consume_quota(&"s".repeat(dkms_store::QUOTA_SCOPE_MAX + 1), 0, 1, 10)
            .await,
        Err(StoreError::Db(_))
    ));

    // Purging drops whole buckets that started before the cut.
    for bucket in [1_000, 2_000, 3_000] {
        assert!(s.consume_quota("purge", bucket, 1, 10).await.unwrap());
    }
    // Before 2_000: purge/1_000, spend:wei/0 and spend:big/0.
    assert_eq!(s.purge_quota(2_000).await.unwrap(), 3);
    assert_eq!(s.quota_used("purge", 1_000).await.unwrap(), 0);
    assert_eq!(s.quota_used("purge", 2_000).await.unwrap(), 1);
    assert_eq!(s.purge_quota(2_000).await.unwrap(), 0);
    // rate:k1 (two buckets), rate:k2, purge/2_000 and purge/3_000.
    assert_eq!(s.purge_quota(i64::MAX).await.unwrap(), 5);
}

async fn governance(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::create(backend, dir.path()).await.unwrap();
    let s = Store::connect(&db.url).await.unwrap();
    let other_gateway = Store::connect(&db.url).await.unwrap();
    audit_chain_under_concurrency(&s, &other_gateway).await;
    audit_queries_match_the_reference(&s).await;
    audit_refuses_what_a_backend_cannot_store(&s).await;
    sign_extras_round_trip(&s).await;
    concurrent_approvals_release_once(&s).await;
    rejections_and_refusals(&s).await;
    pending_listing_sweeps_and_expiry(&s, &other_gateway).await;
    quotas_never_overshoot(&s, &other_gateway).await;
    quotas_hold_u128(&s).await;
    drop(s);
    drop(other_gateway);
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_governance_contract() {
    governance(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mysql_governance_contract() {
    governance(Backend::MySql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_governance_contract() {
    governance(Backend::Postgres).await;
}
