//! Key lifecycle on real processes: labels and description, listing with filters and
//! pages, disable and enable, and scheduled deletion with a waiting period that can be
//! cancelled, after which every node destroys its share. (The gateway runs with a one-second
//! "day" so that the 7-day minimum passes in seven seconds.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use dkms_testkit::Stack;
use dkms_testkit::dkms_client::{KeyInfo, Method, RawBody};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

async fn call(stack: &Stack, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    stack
        .client
        .raw(method, path, body.map(|b| RawBody::json(&b)), &[])
        .await
        .unwrap()
}

async fn key_of(stack: &Stack, key_id: &str) -> KeyInfo {
    stack.client.get_key(key_id).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_listing_disable_enable_and_scheduled_deletion() {
    let mut stack = Stack::start_with(
        BIN,
        3,
        &[
            ("DKMS_DELETION_DAY_SECS", "1"),
            ("DKMS_REAPER_INTERVAL_SECS", "1"),
        ],
    )
    .await
    .expect("stack");
    let c = stack.client.clone();
    let mut ids = Vec::new();
    for parts in [
        &["node1", "node2"][..],
        &["node2", "node3"][..],
        &["node1", "node3"][..],
    ] {
        let id = c.generate_key(&keygen_request(parts, 2)).await.unwrap();
        let k = c.wait_key(&id, WAIT).await.unwrap();
        assert_eq!(
            (k.status.as_str(), k.state.as_str()),
            ("FINISHED", "ENABLED")
        );
        ids.push(id);
    }
    let (a, b, doomed) = (ids[0].clone(), ids[1].clone(), ids[2].clone());

    // Labels and description.
    let (st, env) = call(
        &stack,
        Method::POST,
        "/api/mappic/dkms/key/update",
        Some(json!({"keyId": a, "labels": {"env": "prod", "team": "payments"}, "description": "hot wallet"})),
    )
    .await;
    assert_eq!(st, 200, "{env}");
    assert_eq!(env["data"]["labels"]["env"], "prod");
    assert_eq!(env["data"]["description"], "hot wallet");
    let (_, env) = call(
        &stack,
        Method::GET,
        "/api/mappic/dkms/key/list?label=env%3Dprod",
        None,
    )
    .await;
    let listed: Vec<&str> = env["data"]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["keyId"].as_str().unwrap())
        .collect();
    assert_eq!(listed, vec![a.as_str()]);

    // Pages of one walk every key, newest first, each once.
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let path = match &token {
            Some(t) => format!("/api/mappic/dkms/key/list?pageSize=1&pageToken={t}"),
            None => "/api/mappic/dkms/key/list?pageSize=1".to_string(),
        };
        let (st, env) = call(&stack, Method::GET, &path, None).await;
        assert_eq!(st, 200, "{env}");
        for k in env["data"]["keys"].as_array().unwrap() {
            seen.push(k["keyId"].as_str().unwrap().to_string());
        }
        match env["data"]["nextPageToken"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, vec![doomed.clone(), b.clone(), a.clone()]);

    // Disable and enable.
    let d = digest("lifecycle");
    let (st, _) = call(
        &stack,
        Method::POST,
        "/api/mappic/dkms/key/disable",
        Some(json!({"keyId": b})),
    )
    .await;
    assert_eq!(st, 200);
    let e = c.request_sign(&b, &hex::encode(d)).await.unwrap_err();
    assert_eq!(e.code(), Some("KEY_DISABLED"), "{e}");
    let (st, env) = call(
        &stack,
        Method::POST,
        "/api/mappic/dkms/key/disable",
        Some(json!({"keyId": b})),
    )
    .await;
    assert_eq!((st, env["errorCode"].as_str()), (409, Some("CONFLICT")));
    let (_, env) = call(
        &stack,
        Method::GET,
        "/api/mappic/dkms/key/list?state=DISABLED",
        None,
    )
    .await;
    assert_eq!(env["data"]["keys"][0]["keyId"], b.as_str());
    call(
        &stack,
        Method::POST,
        "/api/mappic/dkms/key/enable",
        Some(json!({"keyId": b})),
    )
    .await;
    let kb = key_of(&stack, &b).await;
    verify_independently(&kb, &d, &c.sign(&b, &hex::encode(d), WAIT).await.unwrap());

    // Scheduled deletion: 7 to 30 days; cancellable; signing refused meanwhile.
    let (st, env) = call(
        &stack,
        Method::POST,
        "/api/mappic/dkms/key/scheduleDeletion",
        Some(json!({"keyId": b, "pendingWindowDays": 3})),
    )
    .await;
    assert_eq!(
        (st, env["errorCode"].as_str()),
        (400, Some("INVALID_PARAMETER"))
    );
    let (st, env) = call(
        &stack,
        Method::POST,
        "/api/mappic/dkms/key/scheduleDeletion",
        Some(json!({"keyId": b, "pendingWindowDays": 30})),
    )
    .await;
    assert_eq!(st, 200, "{env}");
    assert_eq!(env["data"]["state"], "PENDING_DELETION");
    assert!(env["data"]["deletionAt"].is_string());
    assert_eq!(
        c.request_sign(&b, &hex::encode(d))
            .await
            .unwrap_err()
            .code(),
        Some("KEY_DISABLED")
    );
    let (st, env) = call(
        &stack,
        Method::POST,
        "/api/mappic/dkms/key/cancelDeletion",
        Some(json!({"keyId": b})),
    )
    .await;
    assert_eq!((st, env["data"]["state"].as_str()), (200, Some("DISABLED")));
    call(
        &stack,
        Method::POST,
        "/api/mappic/dkms/key/enable",
        Some(json!({"keyId": b})),
    )
    .await;
    verify_independently(&kb, &d, &c.sign(&b, &hex::encode(d), WAIT).await.unwrap());

    // A deletion that runs its course: every node destroys its share.
    let (st, _) = call(
        &stack,
        Method::POST,
        "/api/mappic/dkms/key/scheduleDeletion",
        Some(json!({"keyId": doomed, "pendingWindowDays": 7})),
    )
    .await;
    assert_eq!(st, 200);
    let started = Instant::now();
    loop {
        let k = key_of(&stack, &doomed).await;
        if k.state == "DELETED" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "deletion never ran: {k:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_secs(6),
        "the waiting period was honoured"
    );
    assert_eq!(
        c.request_sign(&doomed, &hex::encode(d))
            .await
            .unwrap_err()
            .code(),
        Some("KEY_DISABLED")
    );
    let (st, _) = call(
        &stack,
        Method::POST,
        "/api/mappic/dkms/key/cancelDeletion",
        Some(json!({"keyId": doomed})),
    )
    .await;
    assert_eq!(st, 409, "a completed deletion cannot be cancelled");

    // Bad input.
    for (path, want) in [
        ("/api/mappic/dkms/key/list?pageSize=0", "pageSize"),
        ("/api/mappic/dkms/key/list?pageSize=101", "pageSize"),
        ("/api/mappic/dkms/key/list?pageToken=garbage", "pageToken"),
        ("/api/mappic/dkms/key/list?state=GONE", "state"),
        ("/api/mappic/dkms/key/list?status=DONE", "status"),
        ("/api/mappic/dkms/key/list?label=novalue", "label"),
    ] {
        let (st, env) = call(&stack, Method::GET, path, None).await;
        assert_eq!(st, 400, "{path}: {env}");
        assert!(
            env["errorMessage"].as_str().unwrap().contains(want),
            "{path}: {env}"
        );
    }
    let (st, _) = call(
        &stack,
        Method::POST,
        "/api/mappic/dkms/key/update",
        Some(json!({"keyId": "00000000-0000-4000-8000-000000000000", "description": "x"})),
    )
    .await;
    assert_eq!(st, 404);
    let (st, _) = call(
        &stack,
        Method::POST,
        "/api/mappic/dkms/key/update",
        Some(json!({"keyId": a, "labels": {"bad name": "x"}})),
    )
    .await;
    assert_eq!(st, 400);
    let (st, _) = call(
        &stack,
        Method::POST,
        "/api/mappic/dkms/key/update",
        Some(json!({"keyId": a, "description": "x".repeat(1025)})),
    )
    .await;
    assert_eq!(st, 400);

    // The nodes hold shares of the live keys only.
    for t in ["node1", "node2", "node3"] {
        stack.kill_node(t);
    }
    let held = |t: &str| -> Vec<String> {
        let dir = stack.node_dir(t);
        let sealer = std::sync::Arc::new(
            dkms_node::sealer::SoftwareSealer::from_key_file(&dir.join("sealing.key")).unwrap(),
        );
        let store = dkms_node::store::NodeStore::open(&dir.join("node.redb"), sealer).unwrap();
        store
            .list_shares()
            .unwrap()
            .iter()
            .map(|u| u.to_string())
            .collect()
    };
    assert_eq!(held("node1"), vec![a.clone()]);
    let mut n2 = held("node2");
    n2.sort();
    let mut want = vec![a.clone(), b.clone()];
    want.sort();
    assert_eq!(n2, want);
    assert_eq!(held("node3"), vec![b.clone()]);
}
