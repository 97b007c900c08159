//! Each bad request is refused with its own error, and the message names the field.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use dkms_eth::{MAX_DATA_LEN, SigPart, TxError, TxRequest, TxType, UnsignedTx};
use serde_json::{Value, json};

const TO: &str = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";

fn base_1559() -> Value {
    json!({
        "type": "eip1559", "nonce": 1, "to": TO, "value": "1", "gasLimit": 21000,
        "maxFeePerGas": "30000000000", "maxPriorityFeePerGas": "1000000000",
    })
}

fn base_legacy() -> Value {
    json!({
        "type": "legacy", "nonce": 1, "to": TO, "value": "1", "gasLimit": 21000,
        "gasPrice": "20000000000",
    })
}

fn with(mut v: Value, key: &str, val: Value) -> Value {
    v.as_object_mut().unwrap().insert(key.into(), val);
    v
}

fn without(mut v: Value, key: &str) -> Value {
    v.as_object_mut().unwrap().remove(key);
    v
}

fn build(chain_id: u64, v: Value) -> Result<UnsignedTx, TxError> {
    let req: TxRequest = serde_json::from_value(v).unwrap();
    UnsignedTx::new(chain_id, &req)
}

fn field(f: &str) -> String {
    f.to_owned()
}

#[test]
fn bases_are_valid() {
    build(1, base_1559()).unwrap();
    build(1, base_legacy()).unwrap();
    build(1, with(base_legacy(), "type", json!("eip2930"))).unwrap();
    build(1, with(base_1559(), "to", Value::Null)).unwrap();
    build(1, without(base_1559(), "to")).unwrap();
    // Priority fee equal to the max fee is allowed.
    build(
        1,
        with(base_1559(), "maxPriorityFeePerGas", json!("30000000000")),
    )
    .unwrap();
}

#[test]
fn table_of_bad_requests() {
    use TxError::*;
    let long_data = format!("0x{}", "00".repeat(MAX_DATA_LEN + 1));
    let key31 = format!("0x{}", "11".repeat(31));
    let cases: Vec<(&str, u64, Value, TxError)> = vec![
        ("chain id 0", 0, base_1559(), ChainIdZero),
        (
            "nonce 2^64-1",
            1,
            with(base_1559(), "nonce", json!(u64::MAX)),
            NonceTooLarge,
        ),
        (
            "missing maxFeePerGas",
            1,
            without(base_1559(), "maxFeePerGas"),
            Missing {
                field: "maxFeePerGas",
                kind: TxType::Eip1559,
            },
        ),
        (
            "missing maxPriorityFeePerGas",
            1,
            without(base_1559(), "maxPriorityFeePerGas"),
            Missing {
                field: "maxPriorityFeePerGas",
                kind: TxType::Eip1559,
            },
        ),
        (
            "null maxFeePerGas",
            1,
            with(base_1559(), "maxFeePerGas", Value::Null),
            Missing {
                field: "maxFeePerGas",
                kind: TxType::Eip1559,
            },
        ),
        (
            "missing gasPrice",
            1,
            without(base_legacy(), "gasPrice"),
            Missing {
                field: "gasPrice",
                kind: TxType::Legacy,
            },
        ),
        (
            "gasPrice on eip1559",
            1,
            with(base_1559(), "gasPrice", json!("1")),
            NotAllowed {
                field: "gasPrice",
                kind: TxType::Eip1559,
            },
        ),
        (
            "maxFeePerGas on legacy",
            1,
            with(base_legacy(), "maxFeePerGas", json!("1")),
            NotAllowed {
                field: "maxFeePerGas",
                kind: TxType::Legacy,
            },
        ),
        (
            "maxPriorityFeePerGas on eip2930",
            1,
            with(
                with(base_legacy(), "type", json!("eip2930")),
                "maxPriorityFeePerGas",
                json!("1"),
            ),
            NotAllowed {
                field: "maxPriorityFeePerGas",
                kind: TxType::Eip2930,
            },
        ),
        (
            "accessList on legacy",
            1,
            with(base_legacy(), "accessList", json!([])),
            NotAllowed {
                field: "accessList",
                kind: TxType::Legacy,
            },
        ),
        (
            "priority above max fee",
            1,
            with(base_1559(), "maxPriorityFeePerGas", json!("30000000001")),
            PriorityFeeAboveMaxFee {
                priority: 30_000_000_001,
                max: 30_000_000_000,
            },
        ),
        (
            "value too large (decimal)",
            1,
            with(
                base_1559(),
                "value",
                json!("340282366920938463463374607431768211456"),
            ),
            NumberTooLarge { field: "value" },
        ),
        (
            "value too large (hex)",
            1,
            with(
                base_1559(),
                "value",
                json!(format!("0x1{}", "0".repeat(32))),
            ),
            NumberTooLarge { field: "value" },
        ),
        (
            "value negative",
            1,
            with(base_1559(), "value", json!("-1")),
            InvalidNumber { field: "value" },
        ),
        (
            "value in ether",
            1,
            with(base_1559(), "value", json!("1.5")),
            InvalidNumber { field: "value" },
        ),
        (
            "value empty",
            1,
            with(base_1559(), "value", json!("")),
            InvalidNumber { field: "value" },
        ),
        (
            "value bare 0x",
            1,
            with(base_1559(), "value", json!("0x")),
            InvalidNumber { field: "value" },
        ),
        (
            "gasPrice bad hex",
            1,
            with(base_legacy(), "gasPrice", json!("0x12z")),
            InvalidNumber { field: "gasPrice" },
        ),
        (
            "maxFeePerGas too large",
            1,
            with(base_1559(), "maxFeePerGas", json!("1e40")),
            InvalidNumber {
                field: "maxFeePerGas",
            },
        ),
        (
            "to without 0x",
            1,
            with(base_1559(), "to", json!(&TO[2..])),
            MissingHexPrefix { field: field("to") },
        ),
        (
            "to bad hex",
            1,
            with(
                base_1559(),
                "to",
                json!("0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaeZ"),
            ),
            InvalidHexChar {
                field: field("to"),
                position: 41,
            },
        ),
        (
            "to too short",
            1,
            with(
                base_1559(),
                "to",
                json!("0x5aaeb6053f3e94c9b9a09f33669435e7ef1bea"),
            ),
            WrongLength {
                field: field("to"),
                expected: 20,
                got: 38,
            },
        ),
        (
            "to odd length",
            1,
            with(
                base_1559(),
                "to",
                json!("0x5aaeb6053f3e94c9b9a09f33669435e7ef1beae"),
            ),
            WrongLength {
                field: field("to"),
                expected: 20,
                got: 39,
            },
        ),
        (
            "to bad checksum",
            1,
            with(
                base_1559(),
                "to",
                json!("0x5AAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"),
            ),
            BadChecksum { field: field("to") },
        ),
        (
            "data odd length",
            1,
            with(base_1559(), "data", json!("0xabc")),
            OddHexLength {
                field: field("data"),
            },
        ),
        (
            "data without 0x",
            1,
            with(base_1559(), "data", json!("abcd")),
            MissingHexPrefix {
                field: field("data"),
            },
        ),
        (
            "data bad hex",
            1,
            with(base_1559(), "data", json!("0xab cd")),
            InvalidHexChar {
                field: field("data"),
                position: 4,
            },
        ),
        (
            "data too long",
            1,
            with(base_1559(), "data", json!(long_data)),
            DataTooLong {
                len: MAX_DATA_LEN + 1,
                max: MAX_DATA_LEN,
            },
        ),
        (
            "access list address checksum",
            1,
            with(
                base_1559(),
                "accessList",
                json!([{"address": "0x5AAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "storageKeys": []}]),
            ),
            BadChecksum {
                field: field("accessList[0].address"),
            },
        ),
        (
            "access list short storage key",
            1,
            with(
                base_1559(),
                "accessList",
                json!([
                    {"address": TO, "storageKeys": []},
                    {"address": TO, "storageKeys": [format!("0x{}", "00".repeat(32)), key31]},
                ]),
            ),
            WrongLength {
                field: field("accessList[1].storageKeys[1]"),
                expected: 32,
                got: 62,
            },
        ),
    ];
    for (name, chain_id, body, want) in cases {
        let got = build(chain_id, body).err();
        assert_eq!(got.as_ref(), Some(&want), "case {name:?}");
    }
}

#[test]
fn messages_name_the_field_and_the_fix() {
    let msg = |c, v| build(c, v).err().unwrap().to_string();
    assert_eq!(msg(0, base_1559()), "chainId must be 1 or greater");
    assert_eq!(
        msg(1, with(base_1559(), "gasPrice", json!("1"))),
        "gasPrice is not allowed in a eip1559 transaction; use maxFeePerGas and maxPriorityFeePerGas"
    );
    assert_eq!(
        msg(1, without(base_1559(), "maxFeePerGas")),
        "maxFeePerGas is required for a eip1559 transaction"
    );
    assert_eq!(
        msg(
            1,
            with(
                base_1559(),
                "value",
                json!("340282366920938463463374607431768211456")
            )
        ),
        "value is larger than 2^128-1 wei, which is not supported"
    );
    assert_eq!(
        msg(1, with(base_1559(), "to", json!("0x5aaeb6"))),
        "to must be 20 bytes (0x and 40 hex digits), got 6 hex digits"
    );
    assert!(
        msg(
            1,
            with(
                base_1559(),
                "to",
                json!("0x5AAeb6053F3E94C9b9A09f33669435E7Ef1BeAed")
            )
        )
        .contains("EIP-55 checksum is wrong")
    );
}

/// Shape errors are serde's: the gateway reports them as its other JSON errors.
#[test]
fn unknown_fields_and_types_are_refused_by_serde() {
    let err = |v: Value| {
        serde_json::from_value::<TxRequest>(v)
            .unwrap_err()
            .to_string()
    };
    assert!(err(with(base_1559(), "gasprice", json!("1"))).contains("unknown field `gasprice`"));
    assert!(err(with(base_1559(), "chainId", json!(1))).contains("unknown field `chainId`"));
    assert!(err(with(base_1559(), "type", json!("eip4844"))).contains("unknown variant `eip4844`"));
    assert!(err(with(base_1559(), "type", json!("EIP1559"))).contains("unknown variant"));
    assert!(err(without(base_1559(), "value")).contains("missing field `value`"));
    assert!(err(with(base_1559(), "value", json!(1))).contains("invalid type"));
    assert!(err(with(base_1559(), "nonce", json!(-1))).contains("invalid value"));
    let al = json!([{"address": TO, "storageKeys": [], "extra": 1}]);
    assert!(err(with(base_1559(), "accessList", al)).contains("unknown field `extra`"));
}

#[test]
fn bad_signatures_are_refused() {
    let tx = build(1, base_1559()).unwrap();
    let one = {
        let mut b = [0u8; 32];
        b[31] = 1;
        b
    };
    let n: [u8; 32] =
        hex::decode("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141")
            .unwrap()
            .try_into()
            .unwrap();
    let half_n: [u8; 32] =
        hex::decode("7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0")
            .unwrap()
            .try_into()
            .unwrap();
    let mut half_n_plus_1 = half_n;
    half_n_plus_1[31] += 1;
    let mut n_minus_1 = n;
    n_minus_1[31] -= 1;

    assert_eq!(
        tx.encode_signed(&one, &one, 2),
        Err(TxError::InvalidRecoveryId(2))
    );
    assert_eq!(
        tx.encode_signed(&one, &one, 27),
        Err(TxError::InvalidRecoveryId(27))
    );
    assert_eq!(
        tx.encode_signed(&[0; 32], &one, 0),
        Err(TxError::InvalidSignature(SigPart::R))
    );
    assert_eq!(
        tx.encode_signed(&n, &one, 0),
        Err(TxError::InvalidSignature(SigPart::R))
    );
    assert_eq!(
        tx.encode_signed(&one, &[0; 32], 0),
        Err(TxError::InvalidSignature(SigPart::S))
    );
    assert_eq!(
        tx.encode_signed(&one, &half_n_plus_1, 0),
        Err(TxError::InvalidSignature(SigPart::S))
    );
    // The boundaries themselves are fine.
    tx.encode_signed(&n_minus_1, &half_n, 1).unwrap();
    tx.encode_signed(&one, &one, 0).unwrap();
}
