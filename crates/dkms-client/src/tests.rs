//! Unit tests against a tiny in-process HTTP/1.1 server that records each request and
//! answers with canned responses.

use super::*;
use serde_json::json;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const TOKEN: &str = "s3cret-token";

#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Recorded {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn query(&self, name: &str) -> Option<String> {
        let url = Url::parse(&format!("http://x{}", self.target)).unwrap();
        url.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    fn path(&self) -> &str {
        self.target.split('?').next().unwrap()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

type Handler = dyn Fn(usize, &Recorded) -> (u16, String) + Send + Sync;

struct TestServer {
    base: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

impl TestServer {
    /// Serves `handler(n, request)` for the n-th request (0-based), one request per connection.
    async fn start(
        handler: impl Fn(usize, &Recorded) -> (u16, String) + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let counter = Arc::new(AtomicUsize::new(0));
        let recorded = requests.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let handler = handler.clone();
                let recorded = recorded.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let Some(req) = read_request(&mut sock).await else {
                        return;
                    };
                    let n = counter.fetch_add(1, Ordering::SeqCst);
                    recorded.lock().unwrap().push(req.clone());
                    let (status, body) = handler(n, &req);
                    let resp = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = sock.write_all(resp.as_bytes()).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        TestServer { base, requests }
    }

    fn client(&self) -> Client {
        Client::new(&self.base, TOKEN).unwrap()
    }

    fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<Recorded> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).ok()?;
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_owned();
    let target = first.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Recorded {
        method,
        target,
        headers,
        body,
    })
}

fn ok(data: serde_json::Value) -> (u16, String) {
    (200, json!(Envelope::ok(data)).to_string())
}

fn err(code: ErrorCode, message: &str) -> (u16, String) {
    (
        code.http_status(),
        json!(Envelope::<()>::err(code, message)).to_string(),
    )
}

fn key_info(status: &str) -> serde_json::Value {
    json!({
        "keyId": "9390321f-0d4d-4f3f-904b-6cb37accb3e6",
        "status": status,
        "publicKey": null,
        "publicKeyHex": null,
        "errorMessage": null,
        "errorCode": null,
        "address": null,
        "keyType": "ECDSA_K1",
        "threshold": 2,
        "totalShares": 3,
        "serviceParticipants": ["a", "b", "c"],
        "createdAt": "2025-01-01T00:00:00Z"
    })
}

fn sign_info(status: &str) -> serde_json::Value {
    json!({
        "instanceId": "b341fec1-0000-4000-8000-000000000000",
        "keyId": "9390321f-0d4d-4f3f-904b-6cb37accb3e6",
        "digestHex": "ab".repeat(32),
        "status": status,
        "sign": if status == "FINISHED" { Some("11".repeat(65)) } else { None },
        "r": null, "s": null, "v": null, "der": null,
        "errorMessage": null, "errorCode": null,
        "signers": ["a", "b"],
        "createdAt": "2025-01-01T00:00:00Z"
    })
}

fn keygen_request() -> KeyGenRequest {
    KeyGenRequest {
        key_params: KeyParams {
            key_type: "ECDSA_K1".into(),
            length: None,
        },
        service_participants: vec!["a".into(), "b".into(), "c".into()],
        threshold: Some(2),
        total_shares: Some(3),
        node_group: None,
        exportable: false,
    }
}

fn group_info() -> serde_json::Value {
    json!({
        "name": "treasury", "members": ["a", "b", "c"], "threshold": 2, "totalShares": 3,
        "minRegions": 2, "regions": ["eu", "us"], "description": "",
        "createdAt": "2025-01-01T00:00:00Z", "updatedAt": "2025-01-01T00:00:00Z"
    })
}

#[tokio::test]
async fn node_groups_and_regions() {
    let srv = TestServer::start(|n, _| match n {
        0 => ok(json!({
            "nodeTag": "a", "status": "ACTIVE", "connected": true, "signingKey": null,
            "encryptionKey": null, "region": "eu", "createdAt": "2025-01-01T00:00:00Z"
        })),
        3 => ok(json!([group_info()])),
        5 => ok(json!("treasury")),
        6 => ok(json!({"keyId": "k-1"})),
        _ => ok(group_info()),
    })
    .await;
    let c = srv.client();
    assert_eq!(c.set_region("a", "eu").await.unwrap().region, "eu");
    let req = NodeGroupRequest {
        name: "treasury".into(),
        members: vec!["a".into(), "b".into(), "c".into()],
        threshold: 2,
        min_regions: Some(2),
        description: None,
    };
    assert_eq!(c.create_group(&req).await.unwrap().regions, ["eu", "us"]);
    assert_eq!(c.get_group("treasury").await.unwrap().total_shares, 3);
    assert_eq!(c.list_groups().await.unwrap().len(), 1);
    assert_eq!(c.update_group(&req).await.unwrap().min_regions, 2);
    assert_eq!(c.delete_group("treasury").await.unwrap(), "treasury");
    let by_group = KeyGenRequest {
        service_participants: Vec::new(),
        threshold: None,
        total_shares: None,
        node_group: Some("treasury".into()),
        exportable: false,
        ..keygen_request()
    };
    c.generate_key(&by_group).await.unwrap();
    let reqs = srv.requests();
    let seen: Vec<(&str, &str)> = reqs.iter().map(|r| (r.method.as_str(), r.path())).collect();
    assert_eq!(
        seen,
        [
            ("POST", "/api/mappic/pod/setRegion"),
            ("POST", "/api/mappic/group/create"),
            ("GET", "/api/mappic/group/get"),
            ("GET", "/api/mappic/group/list"),
            ("POST", "/api/mappic/group/update"),
            ("POST", "/api/mappic/group/delete"),
            ("POST", "/api/mappic/dkms/key/gen"),
        ]
    );
    assert_eq!(reqs[0].json(), json!({"nodeTag": "a", "region": "eu"}));
    assert_eq!(
        reqs[1].json(),
        json!({"name": "treasury", "members": ["a", "b", "c"], "threshold": 2, "minRegions": 2})
    );
    assert_eq!(reqs[2].query("name").as_deref(), Some("treasury"));
    assert_eq!(reqs[5].json(), json!({"name": "treasury"}));
    // Only the fields a group request uses go on the wire.
    assert_eq!(
        reqs[6].json(),
        json!({"keyParams": {"type": "ECDSA_K1", "length": null}, "nodeGroup": "treasury"})
    );
}

#[tokio::test]
async fn health_is_sent_without_credentials() {
    let srv = TestServer::start(|_, _| {
        ok(json!({"status": "ok", "version": "0.1.0", "connectedNodes": ["a"]}))
    })
    .await;
    let health = srv.client().health().await.unwrap();
    assert_eq!(health.status, "ok");
    assert_eq!(health.connected_nodes, vec!["a".to_string()]);
    let reqs = srv.requests();
    assert_eq!(reqs[0].method, "GET");
    assert_eq!(reqs[0].target, "/api/health");
    assert_eq!(reqs[0].header("authorization"), None);
}

#[tokio::test]
async fn create_pod_posts_json_with_bearer_token() {
    let srv = TestServer::start(|_, _| ok(json!("mappic234"))).await;
    let tag = srv.client().create_pod("mappic234").await.unwrap();
    assert_eq!(tag, "mappic234");
    let req = &srv.requests()[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.target, "/api/mappic/pod/createPod");
    assert_eq!(req.header("authorization"), Some("Bearer s3cret-token"));
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(req.header(IDEMPOTENCY_KEY_HEADER), None);
    assert_eq!(req.json(), json!({"nodeTag": "mappic234"}));
}

#[tokio::test]
async fn base_url_prefix_and_trailing_slash_are_kept() {
    let srv = TestServer::start(|_, _| ok(json!([]))).await;
    let client = Client::new(&format!("{}/prefix/", srv.base), TOKEN).unwrap();
    assert!(client.list_pods().await.unwrap().is_empty());
    assert_eq!(srv.requests()[0].target, "/prefix/api/mappic/pod/list");
}

#[tokio::test]
async fn list_pods_decodes() {
    let srv = TestServer::start(|_, _| {
        ok(json!([{
            "nodeTag": "a", "status": "ACTIVE", "connected": true,
            "signingKey": "00", "encryptionKey": null, "createdAt": "2025-01-01T00:00:00Z"
        }]))
    })
    .await;
    let pods = srv.client().list_pods().await.unwrap();
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0].node_tag, "a");
    assert!(pods[0].connected);
    assert_eq!(srv.requests()[0].method, "GET");
}

#[tokio::test]
async fn generate_key_and_idempotency_header() {
    let srv = TestServer::start(|_, _| ok(json!({"keyId": "k-1"}))).await;
    let client = srv.client();
    assert_eq!(client.generate_key(&keygen_request()).await.unwrap(), "k-1");
    assert_eq!(
        client
            .generate_key_idempotent(&keygen_request(), "idem-42")
            .await
            .unwrap(),
        "k-1"
    );
    let reqs = srv.requests();
    assert_eq!(reqs[0].target, "/api/mappic/dkms/key/gen");
    assert_eq!(
        reqs[0].json(),
        json!({
            "keyParams": {"type": "ECDSA_K1", "length": null},
            "serviceParticipants": ["a", "b", "c"],
            "threshold": 2,
            "totalShares": 3
        })
    );
    assert_eq!(reqs[0].header(IDEMPOTENCY_KEY_HEADER), None);
    assert_eq!(reqs[1].header(IDEMPOTENCY_KEY_HEADER), Some("idem-42"));
}

#[tokio::test]
async fn request_sign_and_get_sign() {
    let srv = TestServer::start(|n, _| match n {
        0 => ok(json!({"instanceId": "i-1"})),
        _ => ok(sign_info("FINISHED")),
    })
    .await;
    let client = srv.client();
    let digest = "ab".repeat(32);
    let id = client
        .request_sign_idempotent("key 1", &digest, "idem-1")
        .await
        .unwrap();
    assert_eq!(id, "i-1");
    let info = client.get_sign("i-1").await.unwrap();
    assert_eq!(info.status, "FINISHED");
    assert_eq!(info.sign.unwrap().len(), 130);
    let reqs = srv.requests();
    assert_eq!(reqs[0].target, "/api/mappic/dkms/sign/req");
    assert_eq!(
        reqs[0].json(),
        json!({"digestHex": digest, "keyId": "key 1"})
    );
    assert_eq!(reqs[0].header(IDEMPOTENCY_KEY_HEADER), Some("idem-1"));
    assert_eq!(reqs[1].path(), "/api/mappic/dkms/sign/get");
    assert_eq!(reqs[1].query("instanceId").as_deref(), Some("i-1"));
    assert_eq!(reqs[1].query("waitMs"), None);
}

#[tokio::test]
async fn query_values_are_percent_encoded() {
    let srv = TestServer::start(|_, _| ok(key_info("INIT"))).await;
    srv.client().get_key("a&b=c d/é").await.unwrap();
    let req = &srv.requests()[0];
    assert_eq!(req.path(), "/api/mappic/dkms/key/get");
    assert_eq!(req.query("keyId").as_deref(), Some("a&b=c d/é"));
    assert!(!req.target.contains(' '));
}

#[tokio::test]
async fn api_errors_carry_status_code_and_message() {
    let srv = TestServer::start(|_, _| err(ErrorCode::Conflict, "node tag a is taken")).await;
    let e = srv.client().create_pod("a").await.unwrap_err();
    assert_eq!(
        e,
        ClientError::Api {
            status: 409,
            code: "CONFLICT".into(),
            message: "node tag a is taken".into()
        }
    );
    assert_eq!(e.code(), Some("CONFLICT"));
    assert_eq!(e.error_code(), Some(ErrorCode::Conflict));
    assert_eq!(e.status(), Some(409));
    assert_eq!(e.to_string(), "CONFLICT (HTTP 409): node tag a is taken");
}

#[tokio::test]
async fn unknown_error_codes_are_kept_verbatim() {
    let srv = TestServer::start(|_, _| {
        (
            418,
            r#"{"errorCode":"SOMETHING_NEW","errorMessage":"m","data":null,"success":false}"#
                .into(),
        )
    })
    .await;
    let e = srv.client().get_key("k").await.unwrap_err();
    assert_eq!(e.code(), Some("SOMETHING_NEW"));
    assert_eq!(e.error_code(), None);
    assert_eq!(e.status(), Some(418));
}

#[tokio::test]
async fn a_body_that_is_not_the_envelope_is_a_protocol_error() {
    let srv = TestServer::start(|n, _| match n {
        0 => (502, "Bad Gateway".into()),
        1 => (200, r#"{"keyId":"k"}"#.into()),
        2 => (200, String::new()),
        // success but `data` has the wrong shape
        3 => ok(json!({"nope": 1})),
        // success with a failure status
        _ => (500, json!(Envelope::ok("x")).to_string()),
    })
    .await;
    let client = srv.client();
    for _ in 0..5 {
        let e = client.generate_key(&keygen_request()).await.unwrap_err();
        assert!(matches!(e, ClientError::Protocol(_)), "{e:?}");
    }
    let e = client.generate_key(&keygen_request()).await;
    assert!(matches!(e, Err(ClientError::Protocol(m)) if m.contains("HTTP 500")));
}

#[tokio::test]
async fn protocol_error_quotes_the_status_and_body() {
    let srv = TestServer::start(|_, _| (502, "Bad Gateway".into())).await;
    match srv.client().list_pods().await {
        Err(ClientError::Protocol(m)) => {
            assert!(m.contains("502"), "{m}");
            assert!(m.contains("Bad Gateway"), "{m}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn connection_refused_is_a_transport_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = Client::new(&format!("http://{addr}"), TOKEN).unwrap();
    let e = client.health().await.unwrap_err();
    match e {
        ClientError::Transport(m) => assert!(!m.contains(TOKEN), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn wait_key_long_polls_until_terminal() {
    let srv = TestServer::start(|n, _| match n {
        0 => ok(key_info("INIT")),
        1 => ok(key_info("PROCESSING")),
        _ => ok(key_info("FINISHED")),
    })
    .await;
    let info = srv
        .client()
        .wait_key("k-1", Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(info.status, "FINISHED");
    let reqs = srv.requests();
    assert_eq!(reqs.len(), 3);
    for req in &reqs {
        assert_eq!(req.path(), "/api/mappic/dkms/key/get");
        assert_eq!(req.query("keyId").as_deref(), Some("k-1"));
        let wait: u64 = req.query("waitMs").unwrap().parse().unwrap();
        assert!(wait <= MAX_WAIT_MS && wait > 0, "{wait}");
        assert_eq!(req.header("authorization"), Some("Bearer s3cret-token"));
    }
    assert_eq!(reqs[0].query("waitMs").as_deref(), Some("30000"));
}

#[tokio::test]
async fn wait_returns_failed_and_rejected_as_terminal() {
    let srv = TestServer::start(|n, _| match n {
        0 => ok(key_info("FAILED")),
        _ => ok(sign_info("REJECTED")),
    })
    .await;
    let client = srv.client();
    let key = client.wait_key("k", Duration::from_secs(5)).await.unwrap();
    assert_eq!(key.status, "FAILED");
    let sig = client.wait_sign("i", Duration::from_secs(5)).await.unwrap();
    assert_eq!(sig.status, "REJECTED");
    assert_eq!(srv.requests().len(), 2);
}

#[tokio::test]
async fn wait_sign_times_out_and_asks_for_no_more_than_remains() {
    let srv = TestServer::start(|_, _| ok(sign_info("PENDING_APPROVAL"))).await;
    let started = std::time::Instant::now();
    let e = srv
        .client()
        .wait_sign("i-1", Duration::from_millis(700))
        .await
        .unwrap_err();
    assert_eq!(e, ClientError::Timeout);
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(700), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    let reqs = srv.requests();
    // The server ignores waitMs and answers at once, so the client paces itself.
    assert!(reqs.len() >= 2 && reqs.len() <= 6, "{}", reqs.len());
    let waits: Vec<u64> = reqs
        .iter()
        .map(|r| r.query("waitMs").unwrap().parse().unwrap())
        .collect();
    assert!(waits[0] <= 700, "{waits:?}");
    assert!(waits.windows(2).all(|w| w[1] <= w[0]), "{waits:?}");
    assert_eq!(*waits.last().unwrap(), 0, "{waits:?}");
}

#[tokio::test]
async fn wait_with_zero_timeout_checks_once() {
    let srv = TestServer::start(|_, _| ok(key_info("PROCESSING"))).await;
    let e = srv
        .client()
        .wait_key("k", Duration::ZERO)
        .await
        .unwrap_err();
    assert_eq!(e, ClientError::Timeout);
    let reqs = srv.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].query("waitMs").as_deref(), Some("0"));
}

#[tokio::test]
async fn wait_stops_on_an_api_error() {
    let srv = TestServer::start(|_, _| err(ErrorCode::TaskNotFound, "no such task")).await;
    let e = srv
        .client()
        .wait_sign("nope", Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(e.error_code(), Some(ErrorCode::TaskNotFound));
    assert_eq!(srv.requests().len(), 1);
}

#[tokio::test]
async fn sign_requests_then_waits() {
    let srv = TestServer::start(|n, _| match n {
        0 => ok(json!({"instanceId": "i-9"})),
        1 => ok(sign_info("PROCESSING")),
        _ => ok(sign_info("FINISHED")),
    })
    .await;
    let info = srv
        .client()
        .sign("k-1", &"cd".repeat(32), Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(info.status, "FINISHED");
    let reqs = srv.requests();
    assert_eq!(reqs.len(), 3);
    assert_eq!(reqs[0].method, "POST");
    assert_eq!(reqs[1].query("instanceId").as_deref(), Some("i-9"));
    assert!(reqs[1].query("waitMs").is_some());
}

#[tokio::test]
async fn raw_sends_exact_bytes_and_returns_status_and_body() {
    let srv = TestServer::start(|_, _| err(ErrorCode::InvalidParameter, "malformed JSON")).await;
    let client = srv.client();
    let (status, body) = client
        .raw(
            Method::POST,
            "/api/mappic/dkms/key/gen",
            Some(RawBody::new("text/plain", b"{not json".to_vec())),
            &[("X-Test", "1")],
        )
        .await
        .unwrap();
    assert_eq!(status, 400);
    assert_eq!(body["errorCode"], "INVALID_PARAMETER");
    assert_eq!(body["success"], false);
    let req = &srv.requests()[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.body, b"{not json");
    assert_eq!(req.header("content-type"), Some("text/plain"));
    assert_eq!(req.header("x-test"), Some("1"));
    assert_eq!(req.header("authorization"), Some("Bearer s3cret-token"));
}

#[tokio::test]
async fn raw_headers_replace_defaults_and_bodies_can_omit_content_type() {
    let srv = TestServer::start(|_, _| ok(json!(null))).await;
    let client = srv.client();
    client
        .raw(
            Method::PUT,
            "/api/mappic/pod/list?x=1",
            Some(RawBody::without_content_type(vec![1, 2, 3])),
            &[("Authorization", "Bearer other")],
        )
        .await
        .unwrap();
    client
        .raw(
            Method::POST,
            "api/x",
            Some(RawBody::json(&json!({"a": 1}))),
            &[],
        )
        .await
        .unwrap();
    let reqs = srv.requests();
    assert_eq!(reqs[0].method, "PUT");
    assert_eq!(reqs[0].target, "/api/mappic/pod/list?x=1");
    assert_eq!(reqs[0].header("authorization"), Some("Bearer other"));
    assert_eq!(reqs[0].header("content-type"), None);
    assert_eq!(reqs[0].body, vec![1, 2, 3]);
    assert_eq!(reqs[1].target, "/api/x");
    assert_eq!(reqs[1].header("content-type"), Some("application/json"));
    assert_eq!(reqs[1].json(), json!({"a": 1}));
}

#[tokio::test]
async fn raw_non_json_body_is_a_protocol_error() {
    let srv = TestServer::start(|_, _| (405, String::new())).await;
    let e = srv
        .client()
        .raw(Method::DELETE, "/api/health", None, &[])
        .await
        .unwrap_err();
    assert!(
        matches!(e, ClientError::Protocol(ref m) if m.contains("405")),
        "{e:?}"
    );
}

#[tokio::test]
async fn raw_rejects_bad_header_names() {
    let client = Client::new("http://127.0.0.1:1", TOKEN).unwrap();
    let e = client
        .raw(Method::GET, "/", None, &[("bad header", "v")])
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::InvalidInput(_)));
}

#[tokio::test]
async fn empty_token_sends_no_authorization() {
    let srv = TestServer::start(|_, _| err(ErrorCode::Unauthenticated, "missing token")).await;
    let client = Client::new(&srv.base, "").unwrap();
    let e = client.list_pods().await.unwrap_err();
    assert_eq!(e.error_code(), Some(ErrorCode::Unauthenticated));
    assert_eq!(e.status(), Some(401));
    assert_eq!(srv.requests()[0].header("authorization"), None);
}

#[test]
fn debug_output_hides_the_token() {
    let client = Client::new("http://127.0.0.1:8889", TOKEN).unwrap();
    let dbg = format!("{client:?}");
    assert!(!dbg.contains(TOKEN), "{dbg}");
    assert!(dbg.contains("redacted"), "{dbg}");
    assert!(dbg.contains("http://127.0.0.1:8889"), "{dbg}");
}

#[test]
fn new_checks_url_and_token() {
    assert!(Client::new("http://127.0.0.1:8889/", TOKEN).is_ok());
    assert_eq!(
        Client::new("http://h:1/", TOKEN).unwrap().base_url(),
        "http://h:1"
    );
    for bad in [
        "",
        "127.0.0.1:8889",
        "ftp://h",
        "http://h/?q=1",
        "not a url",
    ] {
        assert!(
            matches!(Client::new(bad, TOKEN), Err(ClientError::InvalidInput(_))),
            "{bad}"
        );
    }
    let e = Client::new("http://h", "tok\nen").unwrap_err();
    assert!(
        matches!(e, ClientError::InvalidInput(ref m) if !m.contains("tok\nen")),
        "{e:?}"
    );
    // A token read from a file keeps its trailing newline; it is trimmed.
    assert!(Client::new("http://h", "token\n").is_ok());
}

#[test]
fn idempotency_keys_are_unique() {
    assert_ne!(new_idempotency_key(), new_idempotency_key());
}

#[test]
fn terminal_statuses() {
    for s in ["FINISHED", "FAILED", "REJECTED"] {
        assert!(is_terminal(s));
    }
    for s in [
        "INIT",
        "PROCESSING",
        "PENDING_APPROVAL",
        "SOMETHING_NEW",
        "",
    ] {
        assert!(!is_terminal(s));
    }
}
