//! Recovery of lost shares on real processes: a node's data directory is deleted for real,
//! the node joins again with a new identity and gets a new share of each key from the
//! others; another node can take a lost member's place; bad requests change nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use dkms_testkit::Stack;
use std::time::Duration;

const T3: [&str; 3] = ["node1", "node2", "node3"];

/// Signs `label` and checks the signature independently and that `must_sign` took part.
async fn sign_with(stack: &Stack, key_id: &str, label: &str, must_sign: &str) {
    let c = &stack.client;
    let key = c.get_key(key_id).await.unwrap();
    let d = digest(label);
    let sig = c.sign(key_id, &hex::encode(d), WAIT).await.unwrap();
    verify_independently(&key, &d, &sig);
    assert!(
        sig.signers.iter().any(|s| s == must_sign),
        "{must_sign} should have signed: {sig:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_rejoins_and_recovers_its_share() {
    let mut stack = Stack::start(BIN, 3).await.expect("stack");
    let c = stack.client.clone();
    let id = c.generate_key(&keygen_request(&T3, 2)).await.unwrap();
    let key = c.wait_key(&id, WAIT).await.unwrap();
    assert_eq!(key.status, "FINISHED");
    let before = key.public_key.clone();

    // The machine of node3 is lost: its data directory, identity and shares are gone.
    stack.wipe_and_rejoin_node("node3").await.unwrap();
    let pods = c.list_pods().await.unwrap();
    assert!(
        pods.iter().any(|p| p.node_tag == "node3" && p.connected),
        "{pods:?}"
    );
    // The other two keep signing meanwhile, whichever subset the gateway tries first.
    for i in 0..3 {
        let d = digest(&format!("while node3 is empty {i}"));
        let sig = c.sign(&id, &hex::encode(d), WAIT).await.unwrap();
        verify_independently(&key, &d, &sig);
        assert!(!sig.signers.contains(&"node3".to_owned()), "{sig:?}");
    }

    let t = c.recover_key(&id, "node3", None).await.unwrap();
    let task = c.wait_task(&t.instance_id, WAIT).await.unwrap();
    assert_eq!(
        (task.status.as_str(), task.kind.as_str()),
        ("FINISHED", "RECOVER"),
        "{task:?}"
    );
    let after = c.get_key(&id).await.unwrap();
    assert_eq!(after.public_key, before, "same key");
    assert_eq!(
        after.generation, 1,
        "the recovery's refresh is a new generation"
    );
    assert_eq!(after.service_participants, T3);

    // node3's new share signs: with node1 gone, only node2 + node3 can.
    stack.kill_node("node1");
    stack
        .wait_disconnected("node1", Duration::from_secs(10))
        .await
        .unwrap();
    sign_with(&stack, &id, "node3 signs again", "node3").await;
    stack.restart_node("node1").await.unwrap();
    stack.kill_node("node2");
    stack
        .wait_disconnected("node2", Duration::from_secs(10))
        .await
        .unwrap();
    sign_with(&stack, &id, "node1 and node3", "node3").await;
    stack.restart_node("node2").await.unwrap();

    // node3 takes part in new keys with its new identity (its peers re-pinned it).
    let id2 = c.generate_key(&keygen_request(&T3, 3)).await.unwrap();
    let k2 = c.wait_key(&id2, WAIT).await.unwrap();
    assert_eq!(k2.status, "FINISHED", "{k2:?}");
    sign_with(&stack, &id2, "new key after recovery", "node3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_node_takes_a_lost_members_place_and_bad_requests_change_nothing() {
    let mut stack = Stack::start(BIN, 3).await.expect("stack");
    let c = stack.client.clone();
    let id = c.generate_key(&keygen_request(&T3, 2)).await.unwrap();
    let key = c.wait_key(&id, WAIT).await.unwrap();
    assert_eq!(key.status, "FINISHED");
    stack.add_node("node4").await.unwrap();
    stack
        .wait_connected(&["node4".to_owned()], Duration::from_secs(30))
        .await
        .unwrap();

    // Refused at once, with the field named.
    let bad = [
        (c.recover_key(&id, "node9", None).await, "INVALID_PARAMETER"),
        (
            c.recover_key(&id, "node1", Some("node2")).await,
            "INVALID_PARAMETER",
        ),
        (
            c.recover_key(&id, "node1", Some("nobody")).await,
            "NODE_NOT_FOUND",
        ),
        (c.recover_key(&id, "no/de", None).await, "INVALID_PARAMETER"),
        (
            c.recover_key("not-a-uuid", "node1", None).await,
            "INVALID_PARAMETER",
        ),
        (
            c.recover_key(&uuid::Uuid::new_v4().to_string(), "node1", None)
                .await,
            "KEY_NOT_FOUND",
        ),
    ];
    for (i, (r, code)) in bad.into_iter().enumerate() {
        let e = r.expect_err("refused");
        assert_eq!(e.code(), Some(code), "case {i}: {e}");
    }

    // node2 has not lost anything: "recovering" it onto itself fails and changes nothing.
    let t = c.recover_key(&id, "node2", None).await.unwrap();
    let task = c.wait_task(&t.instance_id, WAIT).await.unwrap();
    assert_eq!(task.status, "FAILED", "{task:?}");
    assert!(
        task.error_message
            .as_deref()
            .unwrap()
            .contains("holds a usable share"),
        "{task:?}"
    );
    assert_eq!(c.get_key(&id).await.unwrap().generation, 0);
    let d = digest("after a refused recovery");
    verify_independently(&key, &d, &c.sign(&id, &hex::encode(d), WAIT).await.unwrap());

    // node1's machine is gone for good; node4 takes its place.
    stack.kill_node("node1");
    stack
        .wait_disconnected("node1", Duration::from_secs(10))
        .await
        .unwrap();
    let t = c.recover_key(&id, "node1", Some("node4")).await.unwrap();
    let task = c.wait_task(&t.instance_id, WAIT).await.unwrap();
    assert_eq!(task.status, "FINISHED", "{task:?}");
    let after = c.get_key(&id).await.unwrap();
    assert_eq!(after.public_key, key.public_key);
    assert_eq!(after.service_participants, ["node4", "node2", "node3"]);
    stack.kill_node("node2");
    stack
        .wait_disconnected("node2", Duration::from_secs(10))
        .await
        .unwrap();
    sign_with(&stack, &id, "node4 signs in node1's place", "node4").await;
}

/// Two members of a 3-of-5 key lose their data at once: one machine comes back empty
/// under its tag, the other is gone and a new node takes its place. One `key recover`
/// with both rebuilds them; the two rebuilt members then sign together with one
/// survivor. Asking for three (which would let rebuilt shares alone reach t = 3) is
/// refused and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_lost_at_once_are_recovered_in_one_task() {
    const T5: [&str; 5] = ["node1", "node2", "node3", "node4", "node5"];
    let mut stack = Stack::start(BIN, 5).await.expect("stack");
    let c = stack.client.clone();
    let id = c.generate_key(&keygen_request(&T5, 3)).await.unwrap();
    let key = c.wait_key(&id, WAIT).await.unwrap();
    assert_eq!(key.status, "FINISHED", "{key:?}");
    let d = digest("before the loss");
    verify_independently(&key, &d, &c.sign(&id, &hex::encode(d), WAIT).await.unwrap());
    stack.add_node("node6").await.unwrap();

    // node4's machine comes back empty under its tag; node5's is gone for good.
    stack.wipe_and_rejoin_node("node4").await.unwrap();
    stack.kill_node("node5");
    let dir5 = stack.node_dir("node5");
    std::fs::remove_dir_all(&dir5).unwrap();
    assert!(!dir5.exists());
    stack
        .wait_connected(&["node6".to_owned()], Duration::from_secs(30))
        .await
        .unwrap();

    // Refused at once, before anything runs.
    let lost = |l: &[&'static str], n: Option<&'static [&'static str]>| {
        let c = c.clone();
        let id = id.clone();
        let l = l.to_vec();
        async move { c.recover_keys(&id, &l, n).await }
    };
    let bad = [
        (lost(&["node4", "node5", "node1"], None).await, "at most 2"),
        (lost(&[], None).await, "empty"),
        (lost(&["node4", "node4"], None).await, "named twice"),
        (lost(&["node4", "node9"], None).await, "not a participant"),
        (
            lost(&["node4", "node5"], Some(&["node4", "node1"])).await,
            "already holds a share",
        ),
        (
            lost(&["node4", "node5"], Some(&["node6", "node6"])).await,
            "two lost members",
        ),
        (
            lost(&["node4", "node5"], Some(&["node6"])).await,
            "1 entries for 2",
        ),
    ];
    for (i, (r, words)) in bad.into_iter().enumerate() {
        let e = r.expect_err("refused");
        assert_eq!(e.code(), Some("INVALID_PARAMETER"), "case {i}: {e}");
        assert!(e.to_string().contains(words), "case {i}: {e}");
    }
    // The CLI says why three are too many, and nothing changed: the three survivors sign.
    let (ok, _, err) = dkms_cli(
        &stack,
        &[
            "key", "recover", &id, "--lost", "node4", "--lost", "node5", "--lost", "node1",
        ],
    );
    assert!(!ok && err.contains("INVALID_PARAMETER"), "{err}");
    assert!(err.contains("can never make the key"), "{err}");
    let unchanged = c.get_key(&id).await.unwrap();
    assert_eq!(
        (unchanged.generation, unchanged.service_participants.clone()),
        (0, T5.map(String::from).to_vec())
    );
    let d = digest("three survivors");
    let sig = c.sign(&id, &hex::encode(d), WAIT).await.unwrap();
    verify_independently(&key, &d, &sig);

    // Both at once through the CLI: node4 rebuilt in place, node5's share onto node6.
    let (ok, task, err) = dkms_cli(
        &stack,
        &[
            "key",
            "recover",
            &id,
            "--lost",
            "node4",
            "--new-participant",
            "node4",
            "--lost",
            "node5",
            "--new-participant",
            "node6",
        ],
    );
    assert!(ok, "{err} {task}");
    assert_eq!(
        (task["status"].as_str(), task["kind"].as_str()),
        (Some("FINISHED"), Some("RECOVER")),
        "{task}"
    );
    let after = c.get_key(&id).await.unwrap();
    assert_eq!(after.public_key, key.public_key, "same key");
    assert_eq!(after.generation, 1, "one refresh for both");
    assert_eq!(
        after.service_participants,
        ["node1", "node2", "node3", "node4", "node6"]
    );

    // Only node1, node4 and node6 are left: both rebuilt members must sign.
    for gone in ["node2", "node3"] {
        stack.kill_node(gone);
        stack
            .wait_disconnected(gone, Duration::from_secs(10))
            .await
            .unwrap();
    }
    let d = digest("two rebuilt members sign");
    let sig = c.sign(&id, &hex::encode(d), WAIT).await.unwrap();
    verify_independently(&after, &d, &sig);
    let mut signers = sig.signers.clone();
    signers.sort();
    assert_eq!(signers, ["node1", "node4", "node6"], "{sig:?}");
}
