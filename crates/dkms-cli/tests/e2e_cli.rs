//! The `dkms` client commands against a real stack: every endpoint through the CLI, the
//! signature it prints checked independently.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use dkms_testkit::Stack;
use dkms_testkit::dkms_client::{KeyInfo, SignInfo};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_drives_every_endpoint() {
    let stack = Stack::start(BIN, 3).await.expect("stack");

    let (ok, health, _) = dkms_cli(&stack, &["health"]);
    assert!(ok);
    assert_eq!(health["connectedNodes"].as_array().unwrap().len(), 3);

    let (ok, pods, _) = dkms_cli(&stack, &["pod", "list"]);
    assert!(ok);
    assert_eq!(pods.as_array().unwrap().len(), 3);

    let (ok, tag, _) = dkms_cli(&stack, &["pod", "create", "extra1"]);
    assert!(ok);
    assert_eq!(tag, "extra1");
    let (ok, tok, _) = dkms_cli(&stack, &["pod", "join-token", "extra1"]);
    assert!(ok);
    assert!(tok["joinToken"].as_str().unwrap().starts_with("dkms_"));
    let (ok, _, err) = dkms_cli(&stack, &["pod", "create", "extra1"]);
    assert!(!ok && err.contains("CONFLICT"), "{err}");

    let (ok, key, err) = dkms_cli(
        &stack,
        &[
            "key",
            "gen",
            "--participants",
            "node1,node2,node3",
            "--threshold",
            "2",
            "--wait",
        ],
    );
    assert!(ok, "{err}");
    let key: KeyInfo = serde_json::from_value(key).unwrap();
    assert_eq!(key.status, "FINISHED");
    let (ok, got, _) = dkms_cli(&stack, &["key", "get", &key.key_id]);
    assert!(ok);
    assert_eq!(got["publicKey"], serde_json::json!(key.public_key));

    let d = digest("cli");
    let (ok, sig, err) = dkms_cli(&stack, &["sign", &key.key_id, &hex::encode(d)]);
    assert!(ok, "{err}");
    let sig: SignInfo = serde_json::from_value(sig).unwrap();
    verify_independently(&key, &d, &sig);

    let (ok, started, _) = dkms_cli(&stack, &["sign", &key.key_id, &hex::encode(d), "--no-wait"]);
    assert!(ok);
    let id = started["instanceId"].as_str().unwrap().to_string();
    let (ok, waited, _) = dkms_cli(&stack, &["wait", "sign", &id]);
    assert!(ok);
    let waited: SignInfo = serde_json::from_value(waited).unwrap();
    verify_independently(&key, &d, &waited);

    // Lifecycle commands.
    let (ok, upd, err) = dkms_cli(
        &stack,
        &[
            "key",
            "update",
            &key.key_id,
            "--label",
            "env=test",
            "--description",
            "cli key",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(upd["labels"]["env"], "test");
    let (ok, list, _) = dkms_cli(&stack, &["key", "list", "--label", "env=test"]);
    assert!(ok);
    assert_eq!(list["keys"][0]["keyId"], key.key_id.as_str());
    let (ok, dis, _) = dkms_cli(&stack, &["key", "disable", &key.key_id]);
    assert!(ok && dis["state"] == "DISABLED");
    let (ok, _, err) = dkms_cli(&stack, &["sign", &key.key_id, &hex::encode(d)]);
    assert!(!ok && err.contains("KEY_DISABLED"), "{err}");
    let (ok, sched, _) = dkms_cli(
        &stack,
        &["key", "schedule-deletion", &key.key_id, "--days", "7"],
    );
    assert!(ok && sched["state"] == "PENDING_DELETION", "{sched}");
    let (ok, back, _) = dkms_cli(&stack, &["key", "cancel-deletion", &key.key_id]);
    assert!(ok && back["state"] == "DISABLED");
    let (ok, en, _) = dkms_cli(&stack, &["key", "enable", &key.key_id]);
    assert!(ok && en["state"] == "ENABLED");

    let (ok, _, err) = dkms_cli(&stack, &["sign", &key.key_id, "abcd"]);
    assert!(!ok && err.contains("INVALID_PARAMETER"), "{err}");
    let (ok, _, err) = dkms_cli(
        &stack,
        &["key", "get", "00000000-0000-4000-8000-000000000000"],
    );
    assert!(!ok && err.contains("KEY_NOT_FOUND"), "{err}");
}
