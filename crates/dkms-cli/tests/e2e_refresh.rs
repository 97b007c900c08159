//! Refresh on real processes: every node gets a new share of the same key, signing goes on
//! under the same public key, a node restored from a pre-refresh backup is refused, and a
//! refresh that cannot complete leaves the key as it was.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use dkms_testkit::Stack;
use std::time::Duration;

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_renews_every_share_under_the_same_public_key() {
    let mut stack = Stack::start(BIN, 3).await.expect("stack");
    let c = stack.client.clone();
    let id = c
        .generate_key(&keygen_request(&["node1", "node2", "node3"], 2))
        .await
        .unwrap();
    let key = c.wait_key(&id, WAIT).await.unwrap();
    assert_eq!((key.status.as_str(), key.generation), ("FINISHED", 0));

    // A backup of node1 as it is before the refresh.
    stack.kill_node("node1");
    let backup = stack.dir.path().join("node1-backup");
    copy_dir(&stack.node_dir("node1"), &backup);
    stack.restart_node("node1").await.unwrap();

    // A refresh with a node down fails and changes nothing.
    stack.kill_node("node3");
    stack
        .wait_disconnected("node3", Duration::from_secs(10))
        .await
        .unwrap();
    let t = c.refresh_key(&id).await.unwrap();
    let task = c.wait_task(&t.instance_id, WAIT).await.unwrap();
    assert_eq!(task.status, "FAILED");
    assert_eq!(task.error_code.as_deref(), Some("NODE_UNAVAILABLE"));
    assert!(task.error_message.unwrap().contains("node3"));
    assert_eq!(c.get_key(&id).await.unwrap().generation, 0);
    let d = digest("before");
    verify_independently(&key, &d, &c.sign(&id, &hex::encode(d), WAIT).await.unwrap());
    stack.restart_node("node3").await.unwrap();

    // The refresh itself; a second one at the same time is refused.
    let t = c.refresh_key(&id).await.unwrap();
    let again = c.refresh_key(&id).await;
    let task = c.wait_task(&t.instance_id, WAIT).await.unwrap();
    assert_eq!(task.status, "FINISHED", "{task:?}");
    if let Err(e) = again {
        assert_eq!(e.code(), Some("CONFLICT"), "{e}");
    }
    let after = c.get_key(&id).await.unwrap();
    assert!(after.generation >= 1);
    assert_eq!(after.public_key, key.public_key, "same public key");
    assert_eq!(after.address, key.address);

    // Every pair signs with the new shares.
    for down in ["node3", "node1", "node2"] {
        stack.kill_node(down);
        stack
            .wait_disconnected(down, Duration::from_secs(10))
            .await
            .unwrap();
        let d = digest(&format!("after, without {down}"));
        let sig = c.sign(&id, &hex::encode(d), WAIT).await.unwrap();
        verify_independently(&key, &d, &sig);
        assert!(!sig.signers.contains(&down.to_string()));
        stack.restart_node(down).await.unwrap();
    }

    // A second refresh builds on the first.
    let t = c.refresh_key(&id).await.unwrap();
    let task = c.wait_task(&t.instance_id, WAIT).await.unwrap();
    assert_eq!(task.status, "FINISHED", "{task:?}");
    assert_eq!(
        c.get_key(&id).await.unwrap().generation,
        after.generation + 1
    );
    let d = digest("after two refreshes");
    verify_independently(&key, &d, &c.sign(&id, &hex::encode(d), WAIT).await.unwrap());

    // node1 restored from the pre-refresh backup holds an old share: it is refused and
    // the others sign without it.
    stack.kill_node("node1");
    std::fs::remove_dir_all(stack.node_dir("node1")).unwrap();
    copy_dir(&backup, &stack.node_dir("node1"));
    stack.restart_node("node1").await.unwrap();
    let d = digest("old share back");
    let sig = c.sign(&id, &hex::encode(d), WAIT).await.unwrap();
    verify_independently(&key, &d, &sig);
    assert_eq!(sig.signers, vec!["node2", "node3"]);
    let log = std::fs::read_to_string(stack.gateway_log()).unwrap();
    assert!(
        log.contains("not the committed generation"),
        "the refusal is explained"
    );
}
