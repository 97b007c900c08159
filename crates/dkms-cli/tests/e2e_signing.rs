//! End to end on real processes: a `dkms gateway` and `dkms node` processes on loopback
//! generate threshold keys and sign; every signature is checked without dkms code.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use dkms_testkit::Stack;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_of_three_key_signs_with_one_node_down() {
    let mut stack = Stack::start(BIN, 3).await.expect("stack");
    let c = stack.client.clone();
    let key_id = c
        .generate_key(&keygen_request(&["node1", "node2", "node3"], 2))
        .await
        .unwrap();
    let key = c.wait_key(&key_id, WAIT).await.unwrap();
    assert_eq!(key.status, "FINISHED");

    // One node down: the other two sign.
    stack.kill_node("node1");
    stack
        .wait_disconnected("node1", Duration::from_secs(10))
        .await
        .unwrap();
    let d = digest("one down");
    let sig = c.sign(&key_id, &hex::encode(d), WAIT).await.unwrap();
    verify_independently(&key, &d, &sig);
    assert_eq!(sig.signers, vec!["node2", "node3"]);

    // Two down: the task ends FAILED with NODE_UNAVAILABLE naming both, not stuck.
    stack.kill_node("node3");
    stack
        .wait_disconnected("node3", Duration::from_secs(10))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let sig = c
        .sign(&key_id, &hex::encode(digest("two down")), WAIT)
        .await
        .unwrap();
    assert_eq!(sig.status, "FAILED");
    assert_eq!(sig.error_code.as_deref(), Some("NODE_UNAVAILABLE"));
    let msg = sig.error_message.unwrap();
    assert!(msg.contains("node1") && msg.contains("node3"), "{msg}");
    assert!(!msg.contains("node2"), "node2 is up: {msg}");
    assert!(sig.sign.is_none());
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "fails promptly"
    );

    // Restarted nodes come back with their shares: the key is still usable.
    stack.restart_node("node1").await.unwrap();
    let d = digest("back");
    let sig = c.sign(&key_id, &hex::encode(d), WAIT).await.unwrap();
    verify_independently(&key, &d, &sig);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_signing_fails_the_task_truthfully_and_a_retry_uses_others() {
    let mut stack = Stack::start(BIN, 2).await.expect("stack");
    let c = stack.client.clone();
    let key_id = c
        .generate_key(&keygen_request(&["node1", "node2"], 2))
        .await
        .unwrap();
    let key = c.wait_key(&key_id, WAIT).await.unwrap();
    assert_eq!(key.status, "FINISHED");
    // Fire a burst of signings and kill a node while they run: each task must end,
    // FINISHED with a valid signature or FAILED with a message, none left running.
    let mut ids = Vec::new();
    for i in 0..20 {
        let d = digest(&format!("burst {i}"));
        ids.push((d, c.request_sign(&key_id, &hex::encode(d)).await.unwrap()));
    }
    stack.kill_node("node2");
    let mut finished = 0;
    for (d, id) in ids {
        let s = c.wait_sign(&id, Duration::from_secs(60)).await.unwrap();
        match s.status.as_str() {
            "FINISHED" => {
                verify_independently(&key, &d, &s);
                finished += 1;
            }
            "FAILED" => {
                assert!(s.error_message.is_some() && s.error_code.is_some(), "{s:?}");
            }
            other => panic!("task left {other}: {s:?}"),
        }
    }
    eprintln!("{finished} of 20 finished before the kill");
    stack.restart_node("node2").await.unwrap();
    let d = digest("after restart");
    let sig = c.sign(&key_id, &hex::encode(d), WAIT).await.unwrap();
    verify_independently(&key, &d, &sig);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_mid_keygen_leaves_a_truthful_task_and_usable_keys() {
    let mut stack = Stack::start(BIN, 3).await.expect("stack");
    let c = stack.client.clone();
    let good = c
        .generate_key(&keygen_request(&["node1", "node2"], 2))
        .await
        .unwrap();
    let good_key = c.wait_key(&good, WAIT).await.unwrap();
    assert_eq!(good_key.status, "FINISHED");

    let doomed = c
        .generate_key(&keygen_request(&["node1", "node2", "node3"], 3))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stack.kill_gateway();
    stack.start_gateway().await.unwrap();
    stack
        .wait_connected(
            &["node1".into(), "node2".into(), "node3".into()],
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    let c = stack.client.clone();
    // The restarted gateway ends the dead process's task once that one's lease lapsed.
    let k = c.wait_key(&doomed, WAIT).await.unwrap();
    assert_eq!(k.status, "FAILED", "{k:?}");
    assert_eq!(k.error_code.as_deref(), Some("GATEWAY_LOST"), "{k:?}");
    assert!(
        k.error_message
            .unwrap()
            .contains("stopped before the task ended")
    );
    assert!(k.public_key.is_none());
    let refused = c
        .request_sign(&doomed, &hex::encode(digest("x")))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some("KEY_NOT_READY"));

    // The finished key still signs after the restart.
    let d = digest("after gateway restart");
    let sig = c.sign(&good, &hex::encode(d), WAIT).await.unwrap();
    verify_independently(&good_key, &d, &sig);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_keygen_fails_the_key_and_leaves_no_share_behind() {
    let mut stack = Stack::start(BIN, 3).await.expect("stack");
    let c = stack.client.clone();
    let good = c
        .generate_key(&keygen_request(&["node1", "node2", "node3"], 2))
        .await
        .unwrap();
    let good_key = c.wait_key(&good, WAIT).await.unwrap();
    assert_eq!(good_key.status, "FINISHED");

    let doomed = c
        .generate_key(&keygen_request(&["node1", "node2", "node3"], 3))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    stack.kill_node("node3");
    let started = std::time::Instant::now();
    let k = c.wait_key(&doomed, WAIT).await.unwrap();
    assert_eq!(k.status, "FAILED", "{k:?}");
    assert_eq!(k.error_code.as_deref(), Some("NODE_UNAVAILABLE"));
    assert!(
        k.error_message.as_deref().unwrap().contains("node3"),
        "{k:?}"
    );
    assert!(k.public_key.is_none() && k.address.is_none());
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "fails promptly"
    );

    // No node holds a share of the failed key; every node still holds the good one.
    for t in ["node1", "node2"] {
        stack.kill_node(t);
    }
    for t in ["node1", "node2", "node3"] {
        let dir = stack.node_dir(t);
        let sealer = std::sync::Arc::new(
            dkms_node::sealer::SoftwareSealer::from_key_file(&dir.join("sealing.key")).unwrap(),
        );
        let store = dkms_node::store::NodeStore::open(&dir.join("node.redb"), sealer).unwrap();
        let held: Vec<String> = store
            .list_shares()
            .unwrap()
            .iter()
            .map(|u| u.to_string())
            .collect();
        assert!(
            !held.contains(&doomed),
            "{t} kept a share of the failed key"
        );
        assert!(held.contains(&good), "{t} lost the good key");
    }

    for t in ["node1", "node2", "node3"] {
        stack.restart_node(t).await.unwrap();
    }
    let d = digest("after a failed keygen");
    let sig = c.sign(&good, &hex::encode(d), WAIT).await.unwrap();
    verify_independently(&good_key, &d, &sig);
    let again = c
        .generate_key(&keygen_request(&["node1", "node2", "node3"], 3))
        .await
        .unwrap();
    let again = c.wait_key(&again, WAIT).await.unwrap();
    assert_eq!(again.status, "FINISHED", "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_its_task_capacity_the_gateway_answers_503_with_retry_after() {
    let stack = Stack::start_with(BIN, 3, &[("DKMS_MAX_OPEN_TASKS", "1")])
        .await
        .expect("stack");
    let c = stack.client.clone();
    let first = c
        .generate_key(&keygen_request(&["node1", "node2", "node3"], 3))
        .await
        .unwrap();
    // While the first generation holds the only slot, more work is refused, not queued.
    let body = serde_json::to_vec(&keygen_request(&["node1", "node2"], 2)).unwrap();
    let resp = reqwest_like_post(&stack, "/api/mappic/dkms/key/gen", body).await;
    assert_eq!(resp.0, 503, "{:?}", resp.2);
    assert_eq!(resp.2["errorCode"], "OVERLOADED");
    assert_eq!(resp.1.as_deref(), Some("1"), "Retry-After");
    assert_eq!(c.wait_key(&first, WAIT).await.unwrap().status, "FINISHED");
    // The slot is free again once the task ended.
    let second = c
        .generate_key(&keygen_request(&["node1", "node2"], 2))
        .await
        .unwrap();
    assert_eq!(c.wait_key(&second, WAIT).await.unwrap().status, "FINISHED");
}

/// A POST over a plain TCP connection, returning the status, the Retry-After header and
/// the JSON body (the SDK does not expose headers).
async fn reqwest_like_post(
    stack: &Stack,
    path: &str,
    body: Vec<u8>,
) -> (u16, Option<String>, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = stack.url.trim_start_matches("http://").to_string();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        stack.token,
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&body).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let retry = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("retry-after:"))
        .map(|l| l.split(':').nth(1).unwrap().trim().to_string());
    let json = serde_json::from_str(body.trim()).unwrap_or(serde_json::Value::Null);
    (status, retry, json)
}
