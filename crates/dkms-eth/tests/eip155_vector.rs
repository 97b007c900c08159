//! The worked example of EIP-155, end to end through the public API.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use dkms_eth::{TxRequest, TxType, UnsignedTx};
use k256::ecdsa::SigningKey;

const SIGNING_HASH: &str = "daf5a779ae972f972197303d7b574746c7ef83eadac0f2791ad23db92e4c8e53";
const SIGNED_TX: &str = "f86c098504a817c800825208943535353535353535353535353535353535353535880de0b6b3a76400008025a028ef61340bd939bc2195fe537567866003e1a15d3c71ff63e1590620aa636276a067cbe9d8997f761aecb703304b3800ccf555c9f3dc64214b297fb1966a3b6d83";

fn eip155_request() -> TxRequest {
    serde_json::from_value(serde_json::json!({
        "type": "legacy",
        "nonce": 9,
        "to": "0x3535353535353535353535353535353535353535",
        "value": "1000000000000000000",
        "gasLimit": 21000,
        "gasPrice": "20000000000",
    }))
    .unwrap()
}

#[test]
fn eip155_example_hash_and_raw_tx() {
    let req = eip155_request();
    assert_eq!(req.kind, TxType::Legacy);
    let tx = UnsignedTx::new(1, &req).unwrap();
    assert_eq!(hex::encode(tx.signing_hash()), SIGNING_HASH);

    let key = SigningKey::from_slice(&[0x46; 32]).unwrap();
    let (r, s, recid) = common::sign(&key, &tx.signing_hash());
    // The EIP gives v = 37 = 1 * 2 + 35 + 0.
    assert_eq!(recid, 0);
    let signed = tx.encode_signed(&r, &s, recid).unwrap();
    assert_eq!(hex::encode(&signed.raw), SIGNED_TX);
    assert_eq!(signed.raw_hex(), format!("0x{SIGNED_TX}"));
    assert_eq!(signed.hash, common::keccak(&signed.raw));
    assert_eq!(signed.hash_hex(), format!("0x{}", hex::encode(signed.hash)));
}

#[test]
fn eip155_example_values_given_as_hex() {
    let mut req = eip155_request();
    req.value = "0xde0b6b3a7640000".into();
    req.gas_price = Some("0x4a817c800".into());
    let tx = UnsignedTx::new(1, &req).unwrap();
    assert_eq!(hex::encode(tx.signing_hash()), SIGNING_HASH);
}

#[test]
fn eip155_example_recovers_to_the_key() {
    let tx = UnsignedTx::new(1, &eip155_request()).unwrap();
    let key = SigningKey::from_slice(&[0x46; 32]).unwrap();
    let hash = tx.signing_hash();
    let (r, s, recid) = common::sign(&key, &hash);
    assert_eq!(
        common::recover_secp256k1(&hash, &r, &s, recid),
        common::k256_address(&key)
    );
    // The well-known address of the 0x46.. key.
    assert_eq!(
        hex::encode(common::k256_address(&key)),
        "9d8a62f656a8d1615c1294fd71e9cfb3e4855a4f"
    );
}

#[test]
fn chain_id_changes_the_signing_hash() {
    let req = eip155_request();
    let a = UnsignedTx::new(1, &req).unwrap().signing_hash();
    let b = UnsignedTx::new(5, &req).unwrap().signing_hash();
    assert_ne!(a, b);
}
