//! Misbehaving nodes (a build with the `test-misbehave` feature): a node that falls
//! silent, sends garbage or tampers with a protocol message. The session aborts within
//! its deadline, the error names the culprit, and signing a t < n key is retried once with
//! another live subset that leaves the culprit out.
#![cfg(feature = "test-misbehave")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use dkms_testkit::Stack;
use std::time::{Duration, Instant};

async fn stack_with_key() -> (Stack, String, dkms_testkit::dkms_client::KeyInfo) {
    let stack = Stack::start_with(BIN, 3, &[("DKMS_SIGN_TIMEOUT_SECS", "4")])
        .await
        .expect("stack");
    let c = stack.client.clone();
    let id = c
        .generate_key(&keygen_request(&["node1", "node2", "node3"], 2))
        .await
        .unwrap();
    let key = c.wait_key(&id, WAIT).await.unwrap();
    assert_eq!(key.status, "FINISHED");
    (stack, id, key)
}

async fn retried_without(fault: &str, named: &str) {
    let (mut stack, id, key) = stack_with_key().await;
    // node1 is first in the key's list, so the first attempt picks it with node2.
    stack
        .restart_node_with("node1", &[("DKMS_TEST_MISBEHAVE", fault)])
        .await
        .unwrap();
    let c = stack.client.clone();
    let d = digest(fault);
    let started = Instant::now();
    let sig = c.sign(&id, &hex::encode(d), WAIT).await.unwrap();
    verify_independently(&key, &d, &sig);
    assert_eq!(
        sig.signers,
        vec!["node2", "node3"],
        "{fault}: retried without node1"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{fault}: bounded by the deadline"
    );
    let log = std::fs::read_to_string(stack.gateway_log()).unwrap();
    let attempt = log
        .lines()
        .find(|l| l.contains("signing session failed"))
        .unwrap_or_else(|| panic!("{fault}: the failed attempt is logged"));
    assert!(attempt.contains(named), "{fault}: culprit named: {attempt}");
    // With node3 gone as well, no honest pair is left: the task fails naming node1.
    stack.kill_node("node3");
    stack
        .wait_disconnected("node3", Duration::from_secs(10))
        .await
        .unwrap();
    let failed = c
        .sign(&id, &hex::encode(digest("no pair")), WAIT)
        .await
        .unwrap();
    assert_eq!(failed.status, "FAILED");
    let msg = failed.error_message.unwrap();
    assert!(msg.contains("node1"), "{fault}: {msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_sending_garbage_is_named_and_left_out() {
    retried_without("garbage", "blames node node1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_tampering_with_a_message_is_named_and_left_out() {
    retried_without("tamper", "blames node node1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_node_is_named_after_the_deadline_and_left_out() {
    retried_without("silent", "stalled waiting for messages from: node1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_node_bans_a_peer_caught_tampering() {
    let (mut stack, id, key) = stack_with_key().await;
    stack
        .restart_node_with("node1", &[("DKMS_TEST_MISBEHAVE", "tamper")])
        .await
        .unwrap();
    let c = stack.client.clone();
    let d = digest("first");
    verify_independently(&key, &d, &c.sign(&id, &hex::encode(d), WAIT).await.unwrap());
    // node1 behaves again, but node2 no longer runs sessions with it.
    stack.restart_node("node1").await.unwrap();
    let d = digest("second");
    let sig = c.sign(&id, &hex::encode(d), WAIT).await.unwrap();
    verify_independently(&key, &d, &sig);
    let node2_log = std::fs::read_to_string(stack.node_dir("node2").join("node.log")).unwrap();
    // Flipped bits in the OT extension fail dkls23's consistency check, which requires a
    // permanent ban: node2 records it and refuses node1 from then on.
    assert!(node2_log.contains("peer banned"), "node2 banned node1");
    assert!(
        node2_log.contains("is banned on this node"),
        "and refused it later"
    );
    assert_eq!(
        sig.signers,
        vec!["node2", "node3"],
        "signing went on without node1"
    );
}
