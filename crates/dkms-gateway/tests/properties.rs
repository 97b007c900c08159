//! Property tests of the REST request parsers (the fuzzing of issue #5, run in CI): arbitrary
//! bodies give a parsed request or an INVALID_PARAMETER error, never a panic, for every
//! request body the API takes; and the parsers behind them (transactions, derivation
//! paths, policy documents, audit times) refuse what they cannot read without panicking.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use dkms_gateway::extract::parse_json;
use dkms_proto::ErrorCode;
use dkms_proto::api::{
    ApiKeyRequest, ApprovalRequest, CreatePodRequest, DryRunRequest, GroupNameRequest, IdRequest,
    KeyGenRequest, KeyIdRequest, KeyImportRequest, KeyImportSharesRequest, KeyUpdateRequest,
    LoginRequest, NodeGroupRequest, PolicyDeleteRequest, PolicyPutRequest, RecoverKeyRequest,
    ScheduleDeletionRequest, SetRegionRequest, SignRequest, SignTxRequest, UserRequest,
    UsernameRequest,
};
use proptest::prelude::*;

fn check<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Err(e) = parse_json::<T>(bytes) {
        prop_assert_eq!(e.code, ErrorCode::InvalidParameter);
        prop_assert!(!e.message.is_empty());
    }
    Ok(())
}

/// Every request body of the API, and what the handlers parse out of them next.
fn check_all(bytes: &[u8]) -> Result<(), TestCaseError> {
    check::<KeyGenRequest>(bytes)?;
    check::<SignRequest>(bytes)?;
    check::<CreatePodRequest>(bytes)?;
    check::<KeyImportSharesRequest>(bytes)?;
    check::<KeyImportRequest>(bytes)?;
    check::<SetRegionRequest>(bytes)?;
    check::<NodeGroupRequest>(bytes)?;
    check::<GroupNameRequest>(bytes)?;
    check::<KeyUpdateRequest>(bytes)?;
    check::<KeyIdRequest>(bytes)?;
    check::<RecoverKeyRequest>(bytes)?;
    check::<ScheduleDeletionRequest>(bytes)?;
    check::<LoginRequest>(bytes)?;
    check::<UserRequest>(bytes)?;
    check::<UsernameRequest>(bytes)?;
    check::<ApiKeyRequest>(bytes)?;
    check::<IdRequest>(bytes)?;
    check::<PolicyPutRequest>(bytes)?;
    check::<PolicyDeleteRequest>(bytes)?;
    check::<DryRunRequest>(bytes)?;
    check::<ApprovalRequest>(bytes)?;
    check::<SignTxRequest>(bytes)?;
    if let Ok(req) = parse_json::<SignTxRequest>(bytes) {
        check_tx(req.chain_id, req.transaction);
        if let Some(path) = req.derivation_path {
            let _ = dkms_mpc::derive::parse_path(&path);
        }
    }
    if let Ok(req) = parse_json::<SignRequest>(bytes)
        && let Some(path) = req.derivation_path
    {
        let _ = dkms_mpc::derive::parse_path(&path);
    }
    Ok(())
}

/// The transaction of `sign/tx`: decoded, then encoded for signing, or refused.
fn check_tx(chain_id: u64, transaction: serde_json::Value) {
    if let Ok(tx) = serde_json::from_value::<dkms_eth::TxRequest>(transaction)
        && let Ok(unsigned) = dkms_eth::UnsignedTx::new(chain_id, &tx)
    {
        let _ = unsigned.signing_hash();
        let _ = unsigned.summary();
    }
}

/// Transaction-looking JSON: the fields `sign/tx` reads, with values of any shape.
fn txish() -> impl Strategy<Value = serde_json::Value> {
    let key = prop_oneof![
        Just("type"),
        Just("nonce"),
        Just("to"),
        Just("value"),
        Just("gasLimit"),
        Just("gasPrice"),
        Just("maxFeePerGas"),
        Just("maxPriorityFeePerGas"),
        Just("data"),
        Just("accessList"),
    ];
    let value = prop_oneof![
        Just(serde_json::Value::Null),
        prop_oneof![Just("legacy"), Just("eip2930"), Just("eip1559")]
            .prop_map(|s| serde_json::Value::String(s.into())),
        "0x[0-9a-fA-F]{0,70}".prop_map(serde_json::Value::String),
        "[0-9]{0,45}".prop_map(serde_json::Value::String),
        any::<u64>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        "\\PC{0,20}".prop_map(serde_json::Value::String),
        proptest::collection::vec(
            ("0x[0-9a-f]{0,42}", proptest::collection::vec("0x[0-9a-f]{0,66}", 0..3)),
            0..3
        )
        .prop_map(|entries| {
            serde_json::Value::Array(
                entries
                    .into_iter()
                    .map(|(address, keys)| serde_json::json!({"address": address, "storageKeys": keys}))
                    .collect(),
            )
        }),
    ];
    proptest::collection::btree_map(key, value, 0..10).prop_map(|m| {
        serde_json::Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    })
}

/// JSON-looking text: objects with the API's field names and values of any type.
fn jsonish() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("keyParams"),
        Just("type"),
        Just("length"),
        Just("serviceParticipants"),
        Just("threshold"),
        Just("totalShares"),
        Just("digestHex"),
        Just("keyId"),
        Just("nodeTag"),
        Just("shares"),
        Just("privateKey"),
        Just("password"),
        Just("name"),
        Just("members"),
        Just("minRegions"),
        Just("region"),
        Just("labels"),
        Just("description"),
        Just("derivationPath"),
        Just("chainId"),
        Just("transaction"),
        Just("username"),
        Just("roles"),
        Just("groups"),
        Just("expiresInDays"),
        Just("document"),
        Just("version"),
        Just("action"),
        Just("principal"),
        Just("instanceId"),
        Just("comment"),
        Just("lostParticipant"),
        Just("newParticipant"),
        Just("pendingWindowInDays"),
        Just("id"),
        Just("x"),
    ];
    let value = prop_oneof![
        Just("null".to_string()),
        Just("true".to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        "\\PC{0,20}".prop_map(|s| format!("{s:?}")),
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just("[\"a\",1]".to_string()),
        "m(/[0-9]{1,11}'?){0,5}".prop_map(|s| format!("{s:?}")),
    ];
    proptest::collection::vec((key, value), 0..6).prop_map(|kv| {
        let body: Vec<String> = kv
            .into_iter()
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect();
        format!("{{{}}}", body.join(","))
    })
}

proptest! {
    // Cheap cases: many of them, so the CI run explores more than the default 256.
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        check_all(&bytes)?;
    }

    #[test]
    fn json_shaped_bodies_never_panic(body in jsonish()) {
        check_all(body.as_bytes())?;
    }

    #[test]
    fn transactions_never_panic(chain_id in any::<u64>(), tx in txish()) {
        let body = serde_json::json!({"keyId": "k", "chainId": chain_id, "transaction": tx});
        check_all(body.to_string().as_bytes())?;
    }

    #[test]
    fn derivation_paths_never_panic(path in "(m|M)?(/[0-9]{0,11}'?){0,40}|\\PC{0,60}") {
        if let Ok(steps) = dkms_mpc::derive::parse_path(&path) {
            prop_assert!(steps.len() <= 32);
            prop_assert!(steps.iter().all(|i| *i < 1 << 31), "non-hardened only");
        }
    }

    #[test]
    fn policy_documents_never_panic(text in "(permit|forbid|@id|\\(|\\)|\\{|\\}|;|==|principal|action|resource|when|unless|context|\"[a-z]{0,5}\"|[ \n]|\\PC){0,60}") {
        let _ = dkms_policy::PolicyStore::validate(&text);
    }
}
