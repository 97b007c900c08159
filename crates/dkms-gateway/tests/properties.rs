//! Property tests of the REST request parser: arbitrary bodies give a parsed request or an
//! INVALID_PARAMETER error, never a panic.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use dkms_gateway::extract::parse_json;
use dkms_proto::ErrorCode;
use dkms_proto::api::{CreatePodRequest, KeyGenRequest, KeyImportSharesRequest, SignRequest};
use proptest::prelude::*;

fn check<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Err(e) = parse_json::<T>(bytes) {
        prop_assert_eq!(e.code, ErrorCode::InvalidParameter);
        prop_assert!(!e.message.is_empty());
    }
    Ok(())
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
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        check::<KeyGenRequest>(&bytes)?;
        check::<SignRequest>(&bytes)?;
        check::<CreatePodRequest>(&bytes)?;
        check::<KeyImportSharesRequest>(&bytes)?;
    }

    #[test]
    fn json_shaped_bodies_never_panic(body in jsonish()) {
        check::<KeyGenRequest>(body.as_bytes())?;
        check::<SignRequest>(body.as_bytes())?;
        check::<CreatePodRequest>(body.as_bytes())?;
        check::<KeyImportSharesRequest>(body.as_bytes())?;
    }
}
