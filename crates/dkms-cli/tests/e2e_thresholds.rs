//! Threshold keys of every supported shape, generated and used across real node
//! processes; every signature checked without dkms code. In a file of its own: the 5-of-9
//! generation keeps nine processes busy, and other end-to-end tests should not share the
//! two cores with it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use dkms_testkit::Stack;

async fn gen_and_sign(stack: &Stack, participants: &[&str], t: i64, rounds: usize) {
    let c = &stack.client;
    let key_id = c
        .generate_key(&keygen_request(participants, t))
        .await
        .expect("key/gen accepted");
    let key = c.wait_key(&key_id, WAIT).await.expect("key finished");
    assert_eq!(
        key.status,
        "FINISHED",
        "{t}-of-{}: {key:?}",
        participants.len()
    );
    assert_eq!(key.threshold as i64, t);
    assert_eq!(key.total_shares as usize, participants.len());
    assert!(
        key.public_key
            .as_deref()
            .unwrap()
            .starts_with("-----BEGIN PUBLIC KEY-----")
    );
    for i in 0..rounds {
        let d = digest(&format!("{key_id}/{i}"));
        let sig = c
            .sign(&key_id, &hex::encode(d), WAIT)
            .await
            .expect("signing answered");
        verify_independently(&key, &d, &sig);
        assert_eq!(sig.signers.len() as i64, t, "exactly t nodes sign");
    }
    // The same digest with 0x prefix is accepted too.
    let d = digest("prefixed");
    let sig = c
        .sign(&key_id, &format!("0x{}", hex::encode(d)), WAIT)
        .await
        .unwrap();
    verify_independently(&key, &d, &sig);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threshold_keys_generate_and_sign() {
    let stack = Stack::start(BIN, 9).await.expect("stack");
    gen_and_sign(&stack, &["node1", "node2"], 2, 3).await;
    gen_and_sign(&stack, &["node1", "node2", "node3"], 2, 2).await;
    gen_and_sign(&stack, &["node3", "node4", "node5", "node6", "node7"], 3, 2).await;
    gen_and_sign(
        &stack,
        &[
            "node1", "node2", "node3", "node4", "node5", "node6", "node7",
        ],
        5,
        2,
    )
    .await;
    gen_and_sign(
        &stack,
        &[
            "node1", "node2", "node3", "node4", "node5", "node6", "node7", "node8", "node9",
        ],
        5,
        1,
    )
    .await;
}
