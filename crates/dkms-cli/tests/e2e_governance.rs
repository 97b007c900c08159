//! Who may do what, on real processes: the built-in roles on every route (the
//! authorization matrix), custom Cedar policies (allowlists, value caps, time windows),
//! rate and spend limits under concurrency, approvals (quorum, group, self-approval,
//! rejection, expiry), Ethereum transaction signing checked with an independent RLP
//! decoder and libsecp256k1, the audit log verified and tampered with, and logs that
//! hold no token or password.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use dkms_testkit::Stack;
use dkms_testkit::dkms_client::{
    ApiKeyRequest, Client, DryRunRequest, Method, PolicyPutRequest, RawBody, SignTxRequest,
    UserRequest,
};
use serde_json::{Value, json};
use sha3::{Digest, Keccak256};
use std::collections::BTreeMap;
use std::time::Duration;

const ROLES: [&str; 6] = [
    "admin", "operator", "signer", "approver", "auditor", "guest",
];

/// Whether the gateway's answer was a policy denial.
fn denied(status: u16, body: &Value) -> bool {
    status == 403 && body["errorCode"] == "POLICY_DENIED"
}

async fn api_key(admin: &Client, url: &str, name: &str, roles: &[&str], groups: &[&str]) -> Client {
    let created = admin
        .create_api_key(&ApiKeyRequest {
            name: name.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            expires_in_days: Some(1),
        })
        .await
        .unwrap();
    Client::new(url, created.token.as_deref().expect("token shown once")).unwrap()
}

async fn user(
    admin: &Client,
    url: &str,
    name: &str,
    roles: &[&str],
    groups: &[&str],
) -> (Client, String) {
    let password = format!("pw-{name}-correct-horse");
    admin
        .create_user(&UserRequest {
            username: name.into(),
            password: Some(password.clone()),
            roles: Some(roles.iter().map(|r| r.to_string()).collect()),
            groups: Some(groups.iter().map(|g| g.to_string()).collect()),
            disabled: None,
        })
        .await
        .unwrap();
    let anonymous = Client::new(url, "none").unwrap();
    let session = anonymous.login(name, &password).await.unwrap();
    (Client::new(url, &session.token).unwrap(), session.token)
}

/// An EIP-1559 transaction request as `sign/tx` takes it.
fn tx1559(nonce: u64, to: &str, value_wei: u128) -> Value {
    json!({
        "type": "eip1559", "nonce": nonce, "to": to, "value": value_wei.to_string(),
        "gasLimit": 21000, "maxFeePerGas": "30000000000", "maxPriorityFeePerGas": "1000000000",
    })
}

/// Recovers the sender of a raw signed transaction without any dkms or alloy code: the
/// `rlp` crate decodes it, the signing payload is re-encoded from its fields, keccak
/// hashes it, and libsecp256k1 recovers the public key from (r, s, y).
fn sender_of(raw_hex: &str) -> (String, [u8; 32]) {
    let raw = hex::decode(raw_hex.trim_start_matches("0x")).unwrap();
    let tx_hash: [u8; 32] = Keccak256::digest(&raw).into();
    let (payload, y, r, s) = if raw[0] == 0x02 {
        let list = rlp::Rlp::new(&raw[1..]);
        assert_eq!(list.item_count().unwrap(), 12, "EIP-1559 has 12 fields");
        let mut stream = rlp::RlpStream::new_list(9);
        for i in 0..9 {
            stream.append_raw(list.at(i).unwrap().as_raw(), 1);
        }
        let mut payload = vec![0x02];
        payload.extend_from_slice(&stream.out());
        let y: u8 = list.val_at(9).unwrap();
        (
            payload,
            y,
            list.at(10).unwrap().data().unwrap().to_vec(),
            list.at(11).unwrap().data().unwrap().to_vec(),
        )
    } else {
        let list = rlp::Rlp::new(&raw);
        assert_eq!(list.item_count().unwrap(), 9, "a legacy tx has 9 fields");
        let v: u64 = list.val_at(6).unwrap();
        let chain_id = (v - 35) / 2;
        let mut stream = rlp::RlpStream::new_list(9);
        for i in 0..6 {
            stream.append_raw(list.at(i).unwrap().as_raw(), 1);
        }
        stream.append(&chain_id).append(&0u8).append(&0u8);
        let y = u8::try_from((v - 35) % 2).unwrap();
        (
            stream.out().to_vec(),
            y,
            list.at(7).unwrap().data().unwrap().to_vec(),
            list.at(8).unwrap().data().unwrap().to_vec(),
        )
    };
    let hash: [u8; 32] = Keccak256::digest(&payload).into();
    let mut compact = [0u8; 64];
    compact[32 - r.len()..32].copy_from_slice(&r);
    compact[64 - s.len()..].copy_from_slice(&s);
    let sig = secp256k1::ecdsa::RecoverableSignature::from_compact(
        &compact,
        secp256k1::ecdsa::RecoveryId::try_from(i32::from(y)).unwrap(),
    )
    .unwrap();
    let pk = sig
        .recover_ecdsa(secp256k1::Message::from_digest(hash))
        .unwrap();
    (eth_address(&pk.serialize_uncompressed()), tx_hash)
}

/// Every role against one call per action. "Allowed" means the answer was not a policy
/// denial: the call may still fail later for its own reasons (a missing node, a key in
/// the wrong state), which shows the request got past authorization.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_gets_exactly_its_documented_actions() {
    let stack = Stack::start(BIN, 2).await.expect("stack");
    let admin = stack.client.clone();
    let key_id = admin
        .generate_key(&keygen_request(&["node1", "node2"], 2))
        .await
        .unwrap();
    assert_eq!(
        admin.wait_key(&key_id, WAIT).await.unwrap().status,
        "FINISHED"
    );
    let sign_task = admin
        .request_sign(&key_id, &hex::encode(digest("matrix")))
        .await
        .unwrap();
    let pem = {
        use k256::pkcs8::EncodePrivateKey;
        let sk = k256::SecretKey::from_slice(&[7u8; 32]).unwrap();
        sk.to_pkcs8_pem(Default::default()).unwrap().to_string()
    };
    let ghost_gen = json!({"keyParams": {"type": "ECDSA_K1"}, "serviceParticipants": ["ghost1", "ghost2"], "threshold": 2, "totalShares": 2});
    let mut ghost_import = ghost_gen.clone();
    ghost_import["privateKey"] = json!(pem);
    // An exportable key, so that the built-in key-not-exportable forbid does not hide
    // who may export.
    let exportable = admin
        .import_key(&dkms_testkit::dkms_client::KeyImportRequest {
            key_params: dkms_testkit::dkms_client::KeyParams {
                key_type: "ECDSA_K1".into(),
                length: None,
            },
            service_participants: vec!["node1".into(), "node2".into()],
            threshold: 2,
            total_shares: 2,
            private_key: pem.clone(),
            password: None,
            exportable: true,
        })
        .await
        .unwrap()
        .key_id;
    assert_eq!(
        admin.wait_key(&exportable, WAIT).await.unwrap().status,
        "FINISHED"
    );
    // (action, method, path, body) — one representative call per Cedar action.
    let calls: Vec<(&str, Method, String, Option<Value>)> = vec![
        (
            "generate",
            Method::POST,
            "/api/mappic/dkms/key/gen".into(),
            Some(ghost_gen),
        ),
        (
            "import",
            Method::POST,
            "/api/mappic/dkms/key/import".into(),
            Some(ghost_import),
        ),
        (
            "get",
            Method::GET,
            format!("/api/mappic/dkms/key/get?keyId={key_id}"),
            None,
        ),
        (
            "get",
            Method::GET,
            format!("/api/mappic/dkms/sign/get?instanceId={sign_task}"),
            None,
        ),
        (
            "get",
            Method::GET,
            format!("/api/mappic/dkms/key/derive?keyId={key_id}&path=m/1"),
            None,
        ),
        (
            "list",
            Method::GET,
            "/api/mappic/dkms/key/list".into(),
            None,
        ),
        ("list", Method::GET, "/api/mappic/pod/list".into(), None),
        (
            "list",
            Method::GET,
            "/api/mappic/dkms/approval/list".into(),
            None,
        ),
        (
            "update",
            Method::POST,
            "/api/mappic/dkms/key/update".into(),
            Some(json!({"keyId": key_id, "description": "matrix"})),
        ),
        (
            "update",
            Method::POST,
            "/api/mappic/dkms/key/enable".into(),
            Some(json!({"keyId": key_id})),
        ),
        (
            "sign",
            Method::POST,
            "/api/mappic/dkms/sign/req".into(),
            Some(json!({"keyId": key_id, "digestHex": hex::encode(digest("matrix-sign"))})),
        ),
        (
            "signTx",
            Method::POST,
            "/api/mappic/dkms/sign/tx".into(),
            Some(
                json!({"keyId": key_id, "chainId": 1, "transaction": tx1559(0, "0x1111111111111111111111111111111111111111", 1)}),
            ),
        ),
        (
            "refresh",
            Method::POST,
            "/api/mappic/dkms/key/refresh".into(),
            Some(json!({"keyId": key_id})),
        ),
        (
            "recover",
            Method::POST,
            "/api/mappic/dkms/key/recover".into(),
            Some(json!({"keyId": key_id, "lostParticipant": "ghost"})),
        ),
        (
            "delete",
            Method::POST,
            "/api/mappic/dkms/key/cancelDeletion".into(),
            Some(json!({"keyId": key_id})),
        ),
        (
            "backup",
            Method::POST,
            "/api/mappic/dkms/key/backup".into(),
            Some(json!({"keyId": key_id, "backupGroup": "nosuch"})),
        ),
        (
            "export",
            Method::POST,
            "/api/mappic/dkms/key/export".into(),
            Some(json!({"keyId": exportable, "recipientPublicKey": "11".repeat(32)})),
        ),
        (
            "manageNodes",
            Method::POST,
            "/api/mappic/pod/createPod".into(),
            Some(json!({"nodeTag": "node1"})),
        ),
        (
            "manageGroups",
            Method::POST,
            "/api/mappic/group/delete".into(),
            Some(json!({"name": "nosuch"})),
        ),
        (
            "manageUsers",
            Method::GET,
            "/api/mappic/user/list".into(),
            None,
        ),
        (
            "manageUsers",
            Method::GET,
            "/api/mappic/apikey/list".into(),
            None,
        ),
        (
            "managePolicies",
            Method::POST,
            "/api/mappic/policy/put".into(),
            Some(json!({"name": "p", "text": "not cedar"})),
        ),
        (
            "approve",
            Method::POST,
            "/api/mappic/dkms/approval/approve".into(),
            Some(json!({"instanceId": sign_task})),
        ),
        (
            "readAudit",
            Method::GET,
            "/api/mappic/audit/head".into(),
            None,
        ),
        (
            "readAudit",
            Method::GET,
            "/api/mappic/policy/list".into(),
            None,
        ),
    ];
    // The documented matrix (dkms-policy's built-in roles).
    let grants: BTreeMap<&str, &[&str]> = BTreeMap::from([
        (
            "admin",
            &[
                "generate",
                "import",
                "get",
                "list",
                "update",
                "sign",
                "signTx",
                "refresh",
                "recover",
                "delete",
                "backup",
                "export",
                "manageNodes",
                "manageGroups",
                "manageUsers",
                "managePolicies",
                "approve",
                "readAudit",
            ][..],
        ),
        (
            "operator",
            &[
                "generate",
                "import",
                "get",
                "list",
                "update",
                "refresh",
                "recover",
                "delete",
                "backup",
                "manageNodes",
                "manageGroups",
            ][..],
        ),
        ("signer", &["get", "list", "sign", "signTx"][..]),
        ("approver", &["get", "list", "approve"][..]),
        ("auditor", &["get", "list", "readAudit"][..]),
        ("guest", &[][..]),
    ]);
    let mut wrong = Vec::new();
    for role in ROLES {
        let client = api_key(&admin, &stack.url, &format!("matrix-{role}"), &[role], &[]).await;
        for (action, method, path, body) in &calls {
            let (status, resp) = client
                .raw(method.clone(), path, body.as_ref().map(RawBody::json), &[])
                .await
                .unwrap();
            assert_ne!(status, 500, "{role} {path}: {resp}");
            let expect_allowed = grants[role].contains(action);
            if denied(status, &resp) == expect_allowed {
                wrong.push(format!("{role} {action} {path}: HTTP {status} {resp}"));
            }
            if denied(status, &resp) {
                let msg = resp["errorMessage"].as_str().unwrap_or_default();
                assert!(msg.contains(action), "the denial names the action: {msg}");
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "cells that differ from the documented matrix:\n{}",
        wrong.join("\n")
    );

    // No token at all, a made-up one, a revoked one: 401 before any policy.
    let keys = admin.list_api_keys().await.unwrap();
    let signer = keys.iter().find(|k| k.name == "matrix-signer").unwrap();
    admin.revoke_api_key(&signer.id).await.unwrap();
    let err = admin.revoke_api_key(&signer.id).await.unwrap_err();
    assert_eq!(err.code(), Some("CONFLICT"));
    for token in ["dkms_00", "Bearer"] {
        let c = Client::new(&stack.url, token).unwrap();
        let e = c.list_keys(&[]).await.unwrap_err();
        assert_eq!(e.status(), Some(401), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_limits_approvals_transactions_and_the_audit_log() {
    let stack = Stack::start_with(
        BIN,
        2,
        &[
            ("DKMS_APPROVAL_TTL_SECS", "6"),
            ("DKMS_REAPER_INTERVAL_SECS", "1"),
        ],
    )
    .await
    .expect("stack");
    let admin = stack.client.clone();
    let url = stack.url.clone();
    let key_id = admin
        .generate_key(&keygen_request(&["node1", "node2"], 2))
        .await
        .unwrap();
    let key = admin.wait_key(&key_id, WAIT).await.unwrap();
    let key_address = key.address.clone().unwrap().to_lowercase();
    let mut secrets = vec![stack.token.clone()];

    // Policies: treasurers sign transactions to two addresses, up to 1 ETH each without
    // approval and 3 ETH per day on the key; above 1 ETH only with two approvals from
    // group treasury. Bots may sign 5 digests per hour each, never in one chosen hour.
    let allow = "0x1111111111111111111111111111111111111111";
    let other = "0x2222222222222222222222222222222222222222";
    let treasury = r#"
@id("treasury-small")
@spend_limit_wei("3000000000000000000/day")
permit (principal in Dkms::Role::"treasurer", action == Dkms::Action::"signTx", resource)
when { ["0x1111111111111111111111111111111111111111", "0x2222222222222222222222222222222222222222"].contains(context.to)
       && context.valueGwei <= 1000000000 };

@id("treasury-large")
@requires_approvals("2")
@approver_group("treasury")
permit (principal in Dkms::Role::"treasurer", action == Dkms::Action::"signTx", resource)
when { context.to == "0x1111111111111111111111111111111111111111" && context.valueGwei > 1000000000 };
"#;
    let put = |name: &str, text: &str, v: Option<i64>| PolicyPutRequest {
        name: name.into(),
        text: text.into(),
        description: String::new(),
        expected_version: v,
    };
    let p = admin
        .put_policy(&put("treasury", treasury, None))
        .await
        .unwrap();
    assert_eq!((p.version, p.policy_ids.len()), (1, 2));
    // Bad policies are refused with the reason; nothing is stored.
    for (text, needle) in [
        ("permit (principal, action, resource);", "@id"),
        (
            "@id(\"x\") permit (principal, action == Dkms::Action::\"fly\", resource);",
            "fly",
        ),
        (
            "@id(\"x\") permit (principal, action, resource) when { context.nope == 1 };",
            "nope",
        ),
        (
            "@id(\"treasury-small\") permit (principal, action, resource);",
            "treasury-small",
        ),
        (
            "@id(\"x\") @rate_limit(\"ten/hour\") permit (principal, action, resource);",
            "rate_limit",
        ),
    ] {
        let e = admin.put_policy(&put("bad", text, None)).await.unwrap_err();
        assert_eq!(e.code(), Some("INVALID_PARAMETER"), "{text}: {e}");
        assert!(e.to_string().contains(needle), "{text}: {e}");
    }
    assert_eq!(
        admin.get_policy("bad", None).await.unwrap_err().code(),
        Some("POLICY_NOT_FOUND")
    );
    // Versions: an update must name the version it replaces.
    let e = admin
        .put_policy(&put("treasury", treasury, None))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("CONFLICT"));
    let e = admin
        .put_policy(&put("treasury", treasury, Some(7)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("CONFLICT"));
    assert_eq!(
        admin
            .put_policy(&put("treasury", treasury, Some(1)))
            .await
            .unwrap()
            .version,
        2
    );
    assert_eq!(admin.policy_history("treasury").await.unwrap().len(), 2);

    let (tina, t1) = user(
        &admin,
        &url,
        "tina",
        &["treasurer", "approver"],
        &["treasury"],
    )
    .await;
    let (ann, t2) = user(&admin, &url, "ann", &["approver"], &["treasury"]).await;
    let (bob, t3) = user(&admin, &url, "bob", &["approver"], &["ops"]).await;
    let (carl, t4) = user(&admin, &url, "carl", &["approver"], &["treasury"]).await;
    secrets.extend([t1, t2, t3, t4]);
    assert_eq!(
        tina.whoami().await.unwrap().roles,
        ["treasurer", "approver"]
    );

    // Dry run: which policy would decide.
    let dry = admin
        .dry_run(&DryRunRequest {
            principal: Some("user:tina".into()),
            roles: None,
            groups: None,
            action: "signTx".into(),
            key_id: Some(key_id.clone()),
            digest_hex: None,
            derivation_path: None,
            chain_id: Some(1),
            transaction: Some(tx1559(0, other, 5 * 10u128.pow(18))),
            candidate: None,
        })
        .await
        .unwrap();
    assert!(
        !dry.allowed,
        "5 ETH to the second address has no permit: {dry:?}"
    );
    let dry = admin
        .dry_run(&DryRunRequest {
            transaction: Some(tx1559(0, allow, 5 * 10u128.pow(18))),
            chain_id: Some(1),
            principal: Some("user:tina".into()),
            roles: None,
            groups: None,
            action: "signTx".into(),
            key_id: Some(key_id.clone()),
            digest_hex: None,
            derivation_path: None,
            candidate: None,
        })
        .await
        .unwrap();
    assert!(
        dry.allowed && dry.determining_policies == ["treasury-large"],
        "{dry:?}"
    );
    assert!(dry.obligations[0].contains("2 approval"), "{dry:?}");

    // Allowlist and value cap: denied outside them, with the reason.
    let send = |to: &str, value: u128, nonce: u64| SignTxRequest {
        key_id: key_id.clone(),
        chain_id: 1,
        transaction: tx1559(nonce, to, value),
        derivation_path: None,
    };
    let e = tina
        .request_sign_tx(&send("0x3333333333333333333333333333333333333333", 1, 0))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("POLICY_DENIED"), "{e}");
    let e = tina
        .request_sign_tx(&send(other, 2 * 10u128.pow(18), 0))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("POLICY_DENIED"), "{e}");
    // Treasurers may not sign raw digests: only transactions.
    let e = tina
        .request_sign(&key_id, &hex::encode(digest("raw")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("POLICY_DENIED"));

    // A small transaction signs at once; the sender recovers to the key's address.
    let id = tina
        .request_sign_tx(&send(allow, 10u128.pow(18), 0))
        .await
        .unwrap();
    let done = tina.wait_sign(&id, WAIT).await.unwrap();
    assert_eq!(done.status, "FINISHED", "{done:?}");
    let (sender, hash) = sender_of(done.signed_tx.as_deref().unwrap());
    assert_eq!(sender, key_address);
    assert_eq!(
        done.tx_hash.as_deref().unwrap(),
        format!("0x{}", hex::encode(hash))
    );
    // A legacy (EIP-155) one too.
    let legacy = SignTxRequest {
        key_id: key_id.clone(),
        chain_id: 5,
        transaction: json!({"type": "legacy", "nonce": 1, "to": other, "value": "1000", "gasLimit": 21000, "gasPrice": "20000000000"}),
        derivation_path: None,
    };
    let id = tina.request_sign_tx(&legacy).await.unwrap();
    let done = tina.wait_sign(&id, WAIT).await.unwrap();
    assert_eq!(sender_of(done.signed_tx.as_deref().unwrap()).0, key_address);

    // Spend limit: 3 ETH a day on the key. 1 + 1000 wei are spent; one more ETH fits,
    // the next does not, and the error says which policy and when it resets.
    tina.request_sign_tx(&send(allow, 10u128.pow(18), 2))
        .await
        .unwrap();
    let e = tina
        .request_sign_tx(&send(allow, 10u128.pow(18), 3))
        .await
        .unwrap_err();
    assert_eq!(
        (e.status(), e.code()),
        (Some(429), Some("RATE_LIMITED")),
        "{e}"
    );
    assert!(e.to_string().contains("treasury-small"), "{e}");

    // Approvals: a large transfer waits for two approvers from group treasury.
    let big = tina
        .request_sign_tx(&send(allow, 2 * 10u128.pow(18), 4))
        .await
        .unwrap();
    assert_eq!(
        tina.get_sign(&big).await.unwrap().status,
        "PENDING_APPROVAL"
    );
    let pending = ann.list_approvals().await.unwrap();
    assert!(
        pending
            .iter()
            .any(|p| p.instance_id == big && p.required == 2 && p.requester == "user:tina")
    );
    let e = tina.vote(&big, true, "mine").await.unwrap_err();
    assert_eq!(e.code(), Some("FORBIDDEN"), "self-approval: {e}");
    let e = bob.vote(&big, true, "").await.unwrap_err();
    assert_eq!(e.code(), Some("FORBIDDEN"), "outside the group: {e}");
    let e = tina.vote(&big, true, "").await.unwrap_err();
    assert_eq!(e.code(), Some("FORBIDDEN"));
    let a = ann.vote(&big, true, "ok").await.unwrap();
    assert_eq!((a.status.as_str(), a.votes.len()), ("PENDING_APPROVAL", 1));
    assert_eq!(
        ann.vote(&big, true, "again").await.unwrap_err().code(),
        Some("CONFLICT")
    );
    carl.vote(&big, true, "ok").await.unwrap();
    let done = tina.wait_sign(&big, WAIT).await.unwrap();
    assert_eq!(done.status, "FINISHED", "{done:?}");
    assert_eq!(sender_of(done.signed_tx.as_deref().unwrap()).0, key_address);

    // A held signing whose key is disabled meanwhile fails when released.
    let held = tina
        .request_sign_tx(&send(allow, 2 * 10u128.pow(18), 7))
        .await
        .unwrap();
    admin
        .key_state(dkms_testkit::dkms_client::KeyAction::Disable, &key_id)
        .await
        .unwrap();
    ann.vote(&held, true, "").await.unwrap();
    carl.vote(&held, true, "").await.unwrap();
    let r = tina.wait_sign(&held, WAIT).await.unwrap();
    assert_eq!(
        (r.status.as_str(), r.error_code.as_deref()),
        ("FAILED", Some("KEY_DISABLED"))
    );
    assert!(r.signed_tx.is_none());
    admin
        .key_state(dkms_testkit::dkms_client::KeyAction::Enable, &key_id)
        .await
        .unwrap();

    // A rejection ends it as REJECTED; an unanswered one expires (TTL 6 s here).
    let rejected = tina
        .request_sign_tx(&send(allow, 2 * 10u128.pow(18), 5))
        .await
        .unwrap();
    ann.vote(&rejected, false, "no").await.unwrap();
    let r = tina.get_sign(&rejected).await.unwrap();
    assert_eq!(
        (r.status.as_str(), r.error_code.as_deref()),
        ("REJECTED", Some("REJECTED"))
    );
    let expiring = tina
        .request_sign_tx(&send(allow, 2 * 10u128.pow(18), 6))
        .await
        .unwrap();
    let r = tina
        .wait_sign(&expiring, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        (r.status.as_str(), r.error_code.as_deref()),
        ("REJECTED", Some("APPROVAL_EXPIRED"))
    );
    assert_eq!(
        carl.vote(&expiring, true, "").await.unwrap_err().code(),
        Some("CONFLICT")
    );

    // Rate limit under 32 concurrent requests: exactly 5 admitted, per principal.
    let bot_policy = r#"
@id("bot-sign")
@rate_limit("5/hour")
@limit_per("principal")
permit (principal in Dkms::Role::"bot", action == Dkms::Action::"sign", resource);
"#;
    admin
        .put_policy(&put("bots", bot_policy, None))
        .await
        .unwrap();
    let bot = api_key(&admin, &url, "bot", &["bot"], &[]).await;
    let mut tasks = Vec::new();
    for i in 0..32 {
        let bot = bot.clone();
        let key_id = key_id.clone();
        tasks.push(tokio::spawn(async move {
            bot.request_sign(&key_id, &hex::encode(digest(&format!("bot-{i}"))))
                .await
        }));
    }
    let (mut ok, mut limited) = (Vec::new(), 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(id) => ok.push(id),
            Err(e) if e.code() == Some("RATE_LIMITED") => limited += 1,
            Err(e) => panic!("unexpected: {e}"),
        }
    }
    assert_eq!((ok.len(), limited), (5, 27));
    for id in &ok {
        let s = admin.wait_sign(id, WAIT).await.unwrap();
        verify_independently(
            &key,
            &hex::decode(&s.digest_hex).unwrap().try_into().unwrap(),
            &s,
        );
    }

    // Time window: a forbid for the current UTC hour stops the bot; one for another
    // hour does not. (Retried once if the hour turns during the check.)
    for _ in 0..2 {
        let hour = (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            / 3600)
            % 24;
        let forbid = |h: u64| {
            format!(
                "@id(\"bots-quiet\")\nforbid (principal in Dkms::Role::\"bot\", action, resource) when {{ context.hourOfDay == {h} }};"
            )
        };
        let v = admin
            .put_policy(&put("quiet", &forbid(hour), None))
            .await
            .unwrap()
            .version;
        let during = bot
            .request_sign(&key_id, &hex::encode(digest("quiet")))
            .await;
        admin
            .put_policy(&put("quiet", &forbid((hour + 12) % 24), Some(v)))
            .await
            .unwrap();
        let outside = bot
            .request_sign(&key_id, &hex::encode(digest("loud")))
            .await;
        admin.delete_policy("quiet", Some(v + 1)).await.unwrap();
        let now_hour = (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            / 3600)
            % 24;
        if now_hour != hour {
            continue;
        }
        let e = during.unwrap_err();
        assert_eq!(e.code(), Some("POLICY_DENIED"), "{e}");
        assert!(e.to_string().contains("bots-quiet"), "{e}");
        // Not the forbid this time: the bot's hourly rate limit is used up.
        let e2 = outside.unwrap_err();
        assert_eq!(e2.code(), Some("RATE_LIMITED"), "{e2}");
        break;
    }

    // Login throttling: five wrong passwords lock the account, even for the right one.
    let anon = Client::new(&url, "none").unwrap();
    for _ in 0..5 {
        assert_eq!(
            anon.login("carl", "wrong-password-123")
                .await
                .unwrap_err()
                .status(),
            Some(401)
        );
    }
    let e = anon
        .login("carl", "pw-carl-correct-horse")
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(401));
    assert!(
        admin
            .list_users()
            .await
            .unwrap()
            .iter()
            .any(|u| u.username == "carl" && u.locked_until.is_some())
    );
    // Logout ends the session.
    assert!(ann.logout().await.unwrap());
    assert_eq!(ann.whoami().await.unwrap_err().status(), Some(401));

    // The audit log: denials, changes and key uses are there, and the chain verifies.
    let page = admin
        .audit_query(&[
            ("principal", "user:tina"),
            ("decision", "deny"),
            ("limit", "100"),
        ])
        .await
        .unwrap();
    // Two transactions outside the policy, one raw digest. (Her refused self-approval
    // was allowed by policy and refused by the rule after it: outcome FORBIDDEN, allow.)
    assert_eq!(page.entries.len(), 3, "tina's denials: {page:?}");
    assert!(page.entries.iter().all(|e| e["outcome"] == "POLICY_DENIED"));
    let forbidden = admin
        .audit_query(&[("principal", "user:tina"), ("action", "approval.approve")])
        .await
        .unwrap();
    assert!(
        forbidden
            .entries
            .iter()
            .all(|e| e["outcome"] == "FORBIDDEN"),
        "{forbidden:?}"
    );
    assert_eq!(forbidden.entries.len(), 2);
    // Times in any RFC 3339 form filter the log.
    let since = admin
        .audit_query(&[
            ("from", "2020-01-01T00:00:00Z"),
            ("to", "2999-01-01T00:00:00+02:00"),
            ("limit", "5"),
        ])
        .await
        .unwrap();
    assert_eq!(since.entries.len(), 5);
    assert!(since.next_after_seq.is_some());
    let none = admin
        .audit_query(&[("to", "2020-01-01T00:00:00Z")])
        .await
        .unwrap();
    assert!(none.entries.is_empty());
    let e = admin
        .audit_query(&[("from", "yesterday")])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("INVALID_PARAMETER"));
    let keyed = admin
        .audit_query(&[("keyId", key_id.as_str()), ("action", "sign.tx")])
        .await
        .unwrap();
    assert!(
        keyed
            .entries
            .iter()
            .any(|e| e["policies"] == json!(["treasury-large"])),
        "{keyed:?}"
    );
    let lines = admin.audit_export(0).await.unwrap();
    let head = admin.audit_head().await.unwrap();
    // The export was taken before the head was read, so the head is at or after its end;
    // both start at entry 1 and have no gaps.
    let summary = dkms_audit::verify_json_lines(lines.as_bytes(), &Default::default()).unwrap();
    assert_eq!(summary.first_seq, Some(1));
    assert!(
        summary.entries > 20 && summary.entries <= head.seq,
        "{summary:?} {head:?}"
    );
    for needle in [
        "auth.login",
        "policy.put",
        "user.create",
        "apikey.create",
        "sign.end",
        "approval.approve",
        "approval.reject",
    ] {
        assert!(
            lines.contains(&format!("\"action\":\"{needle}\"")),
            "no {needle} entry"
        );
    }

    // Tampering: an edited, a removed and a swapped entry each fail verification.
    let all: Vec<&str> = lines.lines().collect();
    let edited = lines.replacen("\"outcome\":\"POLICY_DENIED\"", "\"outcome\":\"ok\"", 1);
    let removed = all
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3)
        .map(|(_, l)| *l)
        .collect::<Vec<_>>()
        .join("\n");
    let mut swapped = all.clone();
    swapped.swap(2, 3);
    for (what, text) in [
        ("edited", edited),
        ("removed", removed),
        ("swapped", swapped.join("\n")),
    ] {
        assert!(
            dkms_audit::verify_json_lines(text.as_bytes(), &Default::default()).is_err(),
            "{what} entry not detected"
        );
    }

    // No token, session token or password anywhere in the gateway's log or database.
    let artifacts = String::from_utf8_lossy(&stack.gateway_artifacts().unwrap()).into_owned();
    for s in &secrets {
        assert!(
            !artifacts.contains(s.as_str()),
            "a token leaked into the logs or database"
        );
    }
    for name in ["tina", "ann", "bob", "carl"] {
        let pw = format!("pw-{name}-correct-horse");
        assert!(!artifacts.contains(&pw), "{name}'s password leaked");
    }
}
