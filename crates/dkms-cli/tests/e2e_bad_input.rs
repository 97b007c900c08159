//! Every kind of bad input gets a clear 4xx in the API envelope, and the service keeps
//! serving: one table, one real gateway.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use dkms_testkit::Stack;
use dkms_testkit::dkms_client::{Client, Method, RawBody};
use serde_json::json;

struct Case {
    name: &'static str,
    method: Method,
    path: String,
    body: Option<RawBody>,
    /// `None`: the stack's admin token; `Some("")`: no token; else that token.
    token: Option<&'static str>,
    status: u16,
    code: &'static str,
    /// A word the message must contain, so it says what was wrong.
    says: &'static str,
}

fn json_body(v: serde_json::Value) -> Option<RawBody> {
    Some(RawBody::json(&v))
}

fn case(
    name: &'static str,
    method: Method,
    path: &str,
    body: Option<RawBody>,
    status: u16,
    code: &'static str,
    says: &'static str,
) -> Case {
    Case {
        name,
        method,
        path: path.to_string(),
        body,
        token: None,
        status,
        code,
        says,
    }
}

const GEN: &str = "/api/mappic/dkms/key/gen";
const SIGN: &str = "/api/mappic/dkms/sign/req";
const POD: &str = "/api/mappic/pod/createPod";

fn gen_body(
    participants: serde_json::Value,
    t: serde_json::Value,
    n: serde_json::Value,
) -> Option<RawBody> {
    json_body(json!({"keyParams": {"type": "ECDSA_K1", "length": 512},
        "serviceParticipants": participants, "threshold": t, "totalShares": n}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_clear_4xx_and_the_service_keeps_serving() {
    let stack = Stack::start(BIN, 3).await.expect("stack");
    let c = &stack.client;
    let key_id = c
        .generate_key(&keygen_request(&["node1", "node2"], 2))
        .await
        .unwrap();
    let key = c.wait_key(&key_id, WAIT).await.unwrap();
    assert_eq!(key.status, "FINISHED");
    let unknown = "00000000-0000-4000-8000-000000000000";
    let d64 = "ab".repeat(32);
    let big = format!("{{\"nodeTag\": \"{}\"}}", "a".repeat(70 * 1024));

    let mut cases = vec![
        case(
            "malformed JSON",
            Method::POST,
            GEN,
            Some(RawBody::new("application/json", "{\"keyParams\":")),
            400,
            "INVALID_PARAMETER",
            "malformed JSON",
        ),
        case(
            "not JSON at all",
            Method::POST,
            SIGN,
            Some(RawBody::new("application/json", "digest=ab")),
            400,
            "INVALID_PARAMETER",
            "malformed JSON",
        ),
        case(
            "trailing garbage",
            Method::POST,
            POD,
            Some(RawBody::new("application/json", "{\"nodeTag\":\"x\"} x")),
            400,
            "INVALID_PARAMETER",
            "trailing",
        ),
        case(
            "empty body",
            Method::POST,
            GEN,
            Some(RawBody::new("application/json", "")),
            400,
            "INVALID_PARAMETER",
            "empty",
        ),
        case(
            "wrong content type",
            Method::POST,
            GEN,
            Some(RawBody::new("text/plain", "{}")),
            400,
            "INVALID_PARAMETER",
            "Content-Type",
        ),
        case(
            "no content type",
            Method::POST,
            SIGN,
            Some(RawBody::without_content_type("{}")),
            400,
            "INVALID_PARAMETER",
            "Content-Type",
        ),
        case(
            "form content type",
            Method::POST,
            POD,
            Some(RawBody::new(
                "application/x-www-form-urlencoded",
                "nodeTag=x",
            )),
            400,
            "INVALID_PARAMETER",
            "Content-Type",
        ),
        case(
            "missing fields (gen)",
            Method::POST,
            GEN,
            json_body(json!({})),
            400,
            "INVALID_PARAMETER",
            "keyParams",
        ),
        case(
            "missing threshold",
            Method::POST,
            GEN,
            json_body(
                json!({"keyParams": {"type": "ECDSA_K1"}, "serviceParticipants": ["node1", "node2"], "totalShares": 2}),
            ),
            400,
            "INVALID_PARAMETER",
            "threshold",
        ),
        case(
            "missing digest",
            Method::POST,
            SIGN,
            json_body(json!({"keyId": key_id})),
            400,
            "INVALID_PARAMETER",
            "digestHex",
        ),
        case(
            "missing nodeTag",
            Method::POST,
            POD,
            json_body(json!({})),
            400,
            "INVALID_PARAMETER",
            "nodeTag",
        ),
        case(
            "array body",
            Method::POST,
            GEN,
            json_body(json!([1, 2])),
            400,
            "INVALID_PARAMETER",
            "invalid",
        ),
        case(
            "threshold as string",
            Method::POST,
            GEN,
            gen_body(json!(["node1", "node2"]), json!("two"), json!(2)),
            400,
            "INVALID_PARAMETER",
            "threshold",
        ),
        case(
            "threshold as float",
            Method::POST,
            GEN,
            gen_body(json!(["node1", "node2"]), json!(1.5), json!(2)),
            400,
            "INVALID_PARAMETER",
            "threshold",
        ),
        case(
            "threshold huge",
            Method::POST,
            GEN,
            gen_body(json!(["node1", "node2"]), json!(1e30), json!(2)),
            400,
            "INVALID_PARAMETER",
            "threshold",
        ),
        case(
            "participants not a list",
            Method::POST,
            GEN,
            gen_body(json!("node1,node2"), json!(2), json!(2)),
            400,
            "INVALID_PARAMETER",
            "serviceParticipants",
        ),
        case(
            "participant not a string",
            Method::POST,
            GEN,
            gen_body(json!(["node1", 7]), json!(2), json!(2)),
            400,
            "INVALID_PARAMETER",
            "serviceParticipants",
        ),
        case(
            "digest as number",
            Method::POST,
            SIGN,
            json_body(json!({"keyId": key_id, "digestHex": 12})),
            400,
            "INVALID_PARAMETER",
            "digestHex",
        ),
        case(
            "nodeTag null",
            Method::POST,
            POD,
            json_body(json!({"nodeTag": null})),
            400,
            "INVALID_PARAMETER",
            "nodeTag",
        ),
        case(
            "digest 31 bytes",
            Method::POST,
            SIGN,
            json_body(json!({"keyId": key_id, "digestHex": "ab".repeat(31)})),
            400,
            "INVALID_PARAMETER",
            "32 bytes",
        ),
        case(
            "digest 33 bytes",
            Method::POST,
            SIGN,
            json_body(json!({"keyId": key_id, "digestHex": "ab".repeat(33)})),
            400,
            "INVALID_PARAMETER",
            "32 bytes",
        ),
        case(
            "digest empty",
            Method::POST,
            SIGN,
            json_body(json!({"keyId": key_id, "digestHex": ""})),
            400,
            "INVALID_PARAMETER",
            "32 bytes",
        ),
        case(
            "digest not hex",
            Method::POST,
            SIGN,
            json_body(json!({"keyId": key_id, "digestHex": "zz".repeat(32)})),
            400,
            "INVALID_PARAMETER",
            "hex",
        ),
        case(
            "unknown keyId (sign)",
            Method::POST,
            SIGN,
            json_body(json!({"keyId": unknown, "digestHex": d64})),
            404,
            "KEY_NOT_FOUND",
            unknown,
        ),
        case(
            "malformed keyId (sign)",
            Method::POST,
            SIGN,
            json_body(json!({"keyId": "not-a-key", "digestHex": d64})),
            400,
            "INVALID_PARAMETER",
            "keyId",
        ),
        case(
            "unknown keyId (get)",
            Method::GET,
            &format!("/api/mappic/dkms/key/get?keyId={unknown}"),
            None,
            404,
            "KEY_NOT_FOUND",
            unknown,
        ),
        case(
            "malformed keyId (get)",
            Method::GET,
            "/api/mappic/dkms/key/get?keyId=123",
            None,
            400,
            "INVALID_PARAMETER",
            "keyId",
        ),
        case(
            "missing keyId (get)",
            Method::GET,
            "/api/mappic/dkms/key/get",
            None,
            400,
            "INVALID_PARAMETER",
            "keyId",
        ),
        case(
            "unknown instanceId",
            Method::GET,
            &format!("/api/mappic/dkms/sign/get?instanceId={unknown}"),
            None,
            404,
            "TASK_NOT_FOUND",
            unknown,
        ),
        case(
            "malformed instanceId",
            Method::GET,
            "/api/mappic/dkms/sign/get?instanceId=%00",
            None,
            400,
            "INVALID_PARAMETER",
            "instanceId",
        ),
        case(
            "waitMs too long",
            Method::GET,
            &format!("/api/mappic/dkms/key/get?keyId={key_id}&waitMs=999999"),
            None,
            400,
            "INVALID_PARAMETER",
            "waitMs",
        ),
        case(
            "waitMs not a number",
            Method::GET,
            &format!("/api/mappic/dkms/key/get?keyId={key_id}&waitMs=soon"),
            None,
            400,
            "INVALID_PARAMETER",
            "query",
        ),
        case(
            "unknown key type",
            Method::POST,
            GEN,
            json_body(
                json!({"keyParams": {"type": "RSA_2048"}, "serviceParticipants": ["node1", "node2"], "threshold": 2, "totalShares": 2}),
            ),
            400,
            "INVALID_PARAMETER",
            "RSA_2048",
        ),
        case(
            "unsupported length",
            Method::POST,
            GEN,
            json_body(
                json!({"keyParams": {"type": "ECDSA_K1", "length": 128}, "serviceParticipants": ["node1", "node2"], "threshold": 2, "totalShares": 2}),
            ),
            400,
            "INVALID_PARAMETER",
            "length",
        ),
        case(
            "threshold > totalShares",
            Method::POST,
            GEN,
            gen_body(json!(["node1", "node2"]), json!(3), json!(2)),
            400,
            "INVALID_PARAMETER",
            "greater than totalShares",
        ),
        case(
            "threshold 1",
            Method::POST,
            GEN,
            gen_body(json!(["node1", "node2"]), json!(1), json!(2)),
            400,
            "INVALID_PARAMETER",
            "at least 2",
        ),
        case(
            "threshold 0",
            Method::POST,
            GEN,
            gen_body(json!(["node1", "node2"]), json!(0), json!(2)),
            400,
            "INVALID_PARAMETER",
            "at least 2",
        ),
        case(
            "threshold negative",
            Method::POST,
            GEN,
            gen_body(json!(["node1", "node2"]), json!(-2), json!(2)),
            400,
            "INVALID_PARAMETER",
            "at least 2",
        ),
        case(
            "participants ≠ totalShares",
            Method::POST,
            GEN,
            gen_body(json!(["node1", "node2", "node3"]), json!(2), json!(2)),
            400,
            "INVALID_PARAMETER",
            "totalShares",
        ),
        case(
            "no participants",
            Method::POST,
            GEN,
            gen_body(json!([]), json!(2), json!(0)),
            400,
            "INVALID_PARAMETER",
            "threshold",
        ),
        case(
            "duplicate participants",
            Method::POST,
            GEN,
            gen_body(json!(["node1", "node1"]), json!(2), json!(2)),
            400,
            "INVALID_PARAMETER",
            "more than once",
        ),
        case(
            "unknown node tag (gen)",
            Method::POST,
            GEN,
            gen_body(json!(["node1", "ghost"]), json!(2), json!(2)),
            404,
            "NODE_NOT_FOUND",
            "ghost",
        ),
        case(
            "invalid tag chars (gen)",
            Method::POST,
            GEN,
            gen_body(json!(["node1", "no de"]), json!(2), json!(2)),
            400,
            "INVALID_PARAMETER",
            "serviceParticipants[1]",
        ),
        case(
            "invalid tag chars (pod)",
            Method::POST,
            POD,
            json_body(json!({"nodeTag": "bad/tag"})),
            400,
            "INVALID_PARAMETER",
            "nodeTag",
        ),
        case(
            "empty tag",
            Method::POST,
            POD,
            json_body(json!({"nodeTag": ""})),
            400,
            "INVALID_PARAMETER",
            "nodeTag",
        ),
        case(
            "tag too long",
            Method::POST,
            POD,
            json_body(json!({"nodeTag": "x".repeat(65)})),
            400,
            "INVALID_PARAMETER",
            "64",
        ),
        case(
            "duplicate node tag",
            Method::POST,
            POD,
            json_body(json!({"nodeTag": "node1"})),
            409,
            "CONFLICT",
            "node1",
        ),
        case(
            "oversized body",
            Method::POST,
            POD,
            Some(RawBody::new("application/json", big)),
            400,
            "INVALID_PARAMETER",
            "too large",
        ),
        case(
            "array body for an object",
            Method::POST,
            POD,
            Some(RawBody::new("application/json", "[\"node9\"]")),
            400,
            "INVALID_PARAMETER",
            "JSON object",
        ),
        case(
            "node link without upgrade",
            Method::GET,
            "/api/node/link",
            None,
            400,
            "INVALID_PARAMETER",
            "WebSocket",
        ),
        case(
            "unknown path",
            Method::GET,
            "/api/mappic/dkms/nope",
            None,
            404,
            "NOT_FOUND",
            "endpoint",
        ),
        case(
            "wrong method",
            Method::GET,
            GEN,
            None,
            405,
            "METHOD_NOT_ALLOWED",
            "method",
        ),
    ];
    let mut auth_cases = vec![
        Case {
            token: Some(""),
            ..case(
                "missing token",
                Method::POST,
                GEN,
                gen_body(json!(["node1", "node2"]), json!(2), json!(2)),
                401,
                "UNAUTHENTICATED",
                "Authorization",
            )
        },
        Case {
            token: Some("dkms_0000"),
            ..case(
                "invalid token",
                Method::GET,
                &format!("/api/mappic/dkms/key/get?keyId={key_id}"),
                None,
                401,
                "UNAUTHENTICATED",
                "token",
            )
        },
        Case {
            token: Some(""),
            ..case(
                "missing token (sign)",
                Method::POST,
                SIGN,
                json_body(json!({"keyId": key_id, "digestHex": d64})),
                401,
                "UNAUTHENTICATED",
                "Authorization",
            )
        },
    ];
    cases.append(&mut auth_cases);

    let no_auth = Client::new(&stack.url, "").unwrap();
    let mut failures = Vec::new();
    for case in cases {
        let client = match case.token {
            None => c.clone(),
            Some("") => no_auth.clone(),
            Some(t) => Client::new(&stack.url, t).unwrap(),
        };
        let (status, env) = client
            .raw(case.method.clone(), &case.path, case.body, &[])
            .await
            .unwrap_or_else(|e| panic!("{}: transport/protocol error {e}", case.name));
        let code = env["errorCode"].as_str().unwrap_or("");
        let msg = env["errorMessage"].as_str().unwrap_or("");
        let ok = status == case.status
            && code == case.code
            && env["success"] == json!(false)
            && env["data"].is_null()
            && msg.contains(case.says);
        if !ok {
            failures.push(format!(
                "{}: got {status} {code} {msg:?}, want {} {} containing {:?}",
                case.name, case.status, case.code, case.says
            ));
        }
        assert!(status < 500, "{}: 5xx {env}", case.name);
    }
    assert!(
        failures.is_empty(),
        "failing cases:\n{}",
        failures.join("\n")
    );

    // Still serving: health, a new key and a signature.
    assert_eq!(c.health().await.unwrap().status, "ok");
    let d = digest("after the bad input");
    let sig = c.sign(&key_id, &hex::encode(d), WAIT).await.unwrap();
    verify_independently(&key, &d, &sig);
    let log = std::fs::read_to_string(stack.gateway_log()).unwrap();
    assert!(!log.contains("panicked"), "the gateway panicked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_posts_return_the_first_answer() {
    let stack = Stack::start(BIN, 2).await.expect("stack");
    let c = &stack.client;
    let req = keygen_request(&["node1", "node2"], 2);
    let a = c.generate_key_idempotent(&req, "gen-1").await.unwrap();
    let b = c.generate_key_idempotent(&req, "gen-1").await.unwrap();
    assert_eq!(a, b, "a repeat starts no second task");
    let other = keygen_request(&["node2", "node1"], 2);
    let e = c
        .generate_key_idempotent(&other, "gen-1")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("CONFLICT"));
    let key = c.wait_key(&a, WAIT).await.unwrap();
    assert_eq!(key.status, "FINISHED");
    let d = hex::encode(digest("idem"));
    let s1 = c.request_sign_idempotent(&a, &d, "sign-1").await.unwrap();
    let s2 = c.request_sign_idempotent(&a, &d, "sign-1").await.unwrap();
    assert_eq!(s1, s2);
    let s3 = c.request_sign_idempotent(&a, &d, "sign-2").await.unwrap();
    assert_ne!(s1, s3);
}
