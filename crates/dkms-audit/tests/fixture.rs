//! The checked-in v1 chain must keep verifying, with the same hashes, in every later
//! version of this crate. If this fails, the encoding changed: add a new format version
//! and keep reading v1; do not regenerate the fixture.

#![allow(clippy::unwrap_used)]

use dkms_audit::{
    AuditEntry, AuditRecord, Chain, Decision, Details, Principal, PrincipalKind, Start, Timestamp,
    VerifyOptions, from_json_line, key_resource, to_json_line, verify, verify_json_lines,
};

const FIXTURE: &str = include_str!("fixtures/chain-v1.jsonl");
const HEAD_SEQ: u64 = 3;
const HEAD_HASH: &str = "d45b42e3dbb1ed5088a1b3abc174342c040a522b7316c98824fe4730addc7efd";

const KEY: &str = "0190f5d2-7c1e-7a3b-9d4e-2f6a8b0c1d2e";

/// The records the fixture was made from.
fn records() -> Vec<AuditRecord> {
    let at = |text: &str| Timestamp::parse_rfc3339(text).unwrap();
    vec![
        AuditRecord {
            time: at("2025-03-01T09:30:00.125Z"),
            request_id: "7f1c2a9e-0b44-4d1f-9e51-3c0d6a2b8e10".into(),
            principal: Principal::new(PrincipalKind::ApiKey, "ak-admin"),
            action: "keyGen".into(),
            resource: Some(key_resource(KEY)),
            decision: Decision::Allow,
            policies: vec!["builtin:admin".into()],
            outcome: "accepted".into(),
            details: Details::new()
                .with("keyType", "ECDSA_K1")
                .and_then(|d| d.with("nodes", "node-a,node-b,node-c"))
                .and_then(|d| d.with("threshold", "2"))
                .unwrap(),
        },
        AuditRecord {
            time: at("2025-03-01T09:30:04.900Z"),
            request_id: "c3d4e5f6-1a2b-4c3d-8e9f-0a1b2c3d4e5f".into(),
            principal: Principal::new(PrincipalKind::User, "bob@example.com"),
            action: "sign".into(),
            resource: Some(key_resource(KEY)),
            decision: Decision::Deny,
            policies: vec!["forbid-after-hours".into(), "builtin:operator".into()],
            outcome: "failed: FORBIDDEN".into(),
            details: Details::new()
                .with(
                    "digest",
                    "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                )
                .unwrap(),
        },
        AuditRecord {
            time: at("2025-03-01T09:31:00.000Z"),
            request_id: "00000000-0000-4000-8000-000000000003".into(),
            principal: Principal::new(PrincipalKind::System, "orchestrator"),
            action: "taskFailed".into(),
            resource: None,
            decision: Decision::Allow,
            policies: vec![],
            outcome: "failed: TIMEOUT (no answer from \"node-c\")\tafter 30 s — retried".into(),
            details: Details::new(),
        },
    ]
}

fn parsed() -> Vec<AuditEntry> {
    FIXTURE
        .lines()
        .map(|l| from_json_line(l).unwrap())
        .collect()
}

#[test]
fn the_fixture_verifies_to_its_known_head() {
    let summary = verify(parsed()).unwrap();
    assert_eq!(summary.entries, 3);
    assert_eq!(summary.first_seq, Some(1));
    let head = summary.last.unwrap();
    assert_eq!(head.to_string(), format!("{HEAD_SEQ}:{HEAD_HASH}"));

    // The same, straight from the file text, as `dkms audit verify --file` would do,
    // with the head as the operator's checkpoint.
    let options = VerifyOptions {
        start: Start::Genesis,
        checkpoints: vec![head],
    };
    assert_eq!(
        verify_json_lines(FIXTURE.as_bytes(), &options).unwrap(),
        summary
    );
}

#[test]
fn todays_code_reproduces_the_fixture_byte_for_byte() {
    let mut chain = Chain::new();
    let rebuilt: Vec<AuditEntry> = records()
        .into_iter()
        .map(|r| chain.append(r).unwrap())
        .collect();
    assert_eq!(rebuilt, parsed());
    let text: String = rebuilt.iter().map(|e| to_json_line(e) + "\n").collect();
    assert_eq!(text, FIXTURE);
}

#[test]
fn an_edit_of_the_fixture_is_caught() {
    let edited = FIXTURE.replacen("\"decision\":\"deny\"", "\"decision\":\"allow\"", 1);
    assert_ne!(edited, FIXTURE);
    let err = verify_json_lines(edited.as_bytes(), &VerifyOptions::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "entry 2 was altered: its contents do not match its hash"
    );
}
