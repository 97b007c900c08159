//! Several gateways on one database (MariaDB or PostgreSQL), every node linked to each:
//! any request may go to any gateway, and a gateway killed with SIGKILL in the middle of
//! key generations and signings leaves every task FINISHED or FAILED with a truthful
//! message within a bounded time while the other gateway serves on.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{BIN, WAIT, digest, keygen_request, verify_independently};
use dkms_testkit::dkms_client::Client;
use dkms_testkit::{Stack, TEST_LEASE_SECS};
use std::time::{Duration, Instant};

const TAGS: [&str; 3] = ["node1", "node2", "node3"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_gateway_serves_any_request() {
    let stack = Stack::start_cluster(BIN, 3, 2, &[]).await.expect("stack");
    let (a, b) = (stack.client_at(0).unwrap(), stack.client_at(1).unwrap());
    for c in [&a, &b] {
        let mut connected = c.health().await.unwrap().connected_nodes;
        connected.sort();
        assert_eq!(connected, TAGS, "every node is linked to every gateway");
    }

    // Generated through one gateway, followed (long-poll) and used through the other.
    let key_id = a.generate_key(&keygen_request(&TAGS, 2)).await.unwrap();
    let key = b.wait_key(&key_id, WAIT).await.unwrap();
    assert_eq!(key.status, "FINISHED", "{key:?}");
    let d = digest("signed through the second gateway");
    let sig = b.sign(&key_id, &hex::encode(d), WAIT).await.unwrap();
    verify_independently(&key, &d, &sig);
    let d2 = digest("signed through the first gateway");
    let sig2 = a.sign(&key_id, &hex::encode(d2), WAIT).await.unwrap();
    verify_independently(&key, &d2, &sig2);

    // One Idempotency-Key sent to both gateways starts one task.
    let idem = dkms_testkit::dkms_client::new_idempotency_key();
    let d3 = hex::encode(digest("idempotent across gateways"));
    let first = a
        .request_sign_idempotent(&key_id, &d3, &idem)
        .await
        .unwrap();
    let second = b
        .request_sign_idempotent(&key_id, &d3, &idem)
        .await
        .unwrap();
    assert_eq!(first, second, "the second gateway returns the first answer");
    let done = b.wait_sign(&first, WAIT).await.unwrap();
    verify_independently(&key, &digest("idempotent across gateways"), &done);
}

/// The terminal state of every task, read through `c`, within `limit`.
async fn settle(c: &Client, keys: &[String], signs: &[String], limit: Duration) {
    let deadline = Instant::now() + limit;
    for k in keys {
        let left = deadline.saturating_duration_since(Instant::now());
        let info = c.wait_key(k, left).await.unwrap();
        assert!(
            info.status == "FINISHED" || info.status == "FAILED",
            "key {k} did not end within {limit:?}: {info:?}"
        );
    }
    for s in signs {
        let left = deadline.saturating_duration_since(Instant::now());
        let info = c.wait_sign(s, left).await.unwrap();
        assert!(
            info.status == "FINISHED" || info.status == "FAILED",
            "signing {s} did not end within {limit:?}: {info:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_mid_flight_ends_its_tasks_truthfully_and_the_other_serves_on() {
    let mut stack = Stack::start_cluster(BIN, 3, 2, &[]).await.expect("stack");
    let (a, b) = (stack.client_at(0).unwrap(), stack.client_at(1).unwrap());
    let k0_id = a.generate_key(&keygen_request(&TAGS, 2)).await.unwrap();
    let k0 = a.wait_key(&k0_id, WAIT).await.unwrap();
    assert_eq!(k0.status, "FINISHED", "{k0:?}");

    // Work in flight on both gateways.
    let mut keys_a = Vec::new();
    let mut signs_a = Vec::new();
    for _ in 0..3 {
        keys_a.push(a.generate_key(&keygen_request(&TAGS, 2)).await.unwrap());
    }
    for i in 0..6 {
        let d = hex::encode(digest(&format!("a{i}")));
        signs_a.push(a.request_sign(&k0_id, &d).await.unwrap());
    }
    let key_b = b.generate_key(&keygen_request(&TAGS, 2)).await.unwrap();
    let mut signs_b = Vec::new();
    for i in 0..4 {
        let d = hex::encode(digest(&format!("b{i}")));
        signs_b.push(b.request_sign(&k0_id, &d).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stack.kill_gateway_at(0);
    let killed = Instant::now();

    // Everything ends, as seen from the survivor, within the lease and a margin.
    let bound = Duration::from_secs(TEST_LEASE_SECS + 30);
    let all_keys: Vec<String> = keys_a.iter().cloned().chain([key_b.clone()]).collect();
    let all_signs: Vec<String> = signs_a.iter().chain(&signs_b).cloned().collect();
    settle(&b, &all_keys, &all_signs, bound).await;
    eprintln!("every task ended {:?} after the kill", killed.elapsed());

    // The dead gateway's unfinished work is FAILED with GATEWAY_LOST and says why; what
    // it finished is real; nothing of it looks usable unless it is.
    let mut lost = 0;
    for k in &keys_a {
        let info = b.get_key(k).await.unwrap();
        match info.status.as_str() {
            "FINISHED" => {
                let d = digest(&format!("after the kill {k}"));
                let sig = b.sign(k, &hex::encode(d), WAIT).await.unwrap();
                verify_independently(&info, &d, &sig);
            }
            _ => {
                assert_eq!(info.error_code.as_deref(), Some("GATEWAY_LOST"), "{info:?}");
                assert!(
                    info.error_message
                        .as_deref()
                        .unwrap()
                        .contains("stopped before the task ended"),
                    "{info:?}"
                );
                assert!(info.public_key.is_none());
                let refused = b
                    .request_sign(k, &hex::encode(digest("x")))
                    .await
                    .unwrap_err();
                assert_eq!(refused.code(), Some("KEY_NOT_READY"));
                lost += 1;
            }
        }
    }
    for (i, s) in signs_a.iter().enumerate() {
        let info = b.get_sign(s).await.unwrap();
        match info.status.as_str() {
            "FINISHED" => verify_independently(&k0, &digest(&format!("a{i}")), &info),
            _ => {
                assert_eq!(info.error_code.as_deref(), Some("GATEWAY_LOST"), "{info:?}");
                lost += 1;
            }
        }
    }
    assert!(
        lost > 0,
        "the kill caught some of the first gateway's tasks mid-flight"
    );

    // The survivor's own tasks were not touched by the other's death.
    let kb = b.get_key(&key_b).await.unwrap();
    assert_eq!(kb.status, "FINISHED", "{kb:?}");
    for (i, s) in signs_b.iter().enumerate() {
        let info = b.get_sign(s).await.unwrap();
        verify_independently(&k0, &digest(&format!("b{i}")), &info);
    }

    // And it serves on: a new key, signatures under old and new keys.
    let k2_id = b.generate_key(&keygen_request(&TAGS, 2)).await.unwrap();
    let k2 = b.wait_key(&k2_id, WAIT).await.unwrap();
    assert_eq!(k2.status, "FINISHED", "{k2:?}");
    for (id, key) in [(&k0_id, &k0), (&k2_id, &k2)] {
        let d = digest(&format!("survivor {id}"));
        let sig = b.sign(id, &hex::encode(d), WAIT).await.unwrap();
        verify_independently(key, &d, &sig);
    }

    // The killed gateway comes back as a new process; its old tasks stay as they ended.
    stack.start_gateway_at(0).await.unwrap();
    let tags: Vec<String> = TAGS.iter().map(|t| t.to_string()).collect();
    stack
        .wait_connected_at(0, &tags, Duration::from_secs(30))
        .await
        .unwrap();
    let a = stack.client_at(0).unwrap();
    for k in &keys_a {
        assert_eq!(
            a.get_key(k).await.unwrap().status,
            b.get_key(k).await.unwrap().status
        );
    }
    let d = digest("back again");
    let sig = a.sign(&k2_id, &hex::encode(d), WAIT).await.unwrap();
    verify_independently(&k2, &d, &sig);
}
