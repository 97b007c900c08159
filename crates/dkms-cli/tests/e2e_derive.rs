//! BIP-32 derivation on real processes: `key/derive` gives the child key an independent
//! BIP-32 implementation computes from the key's public key and chain code, and `sign/req`
//! with a `derivationPath` returns signatures that verify under that child key only.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bip32::{ChildNumber, ExtendedKeyAttrs, ExtendedPublicKey, PublicKey as _};
use common::*;
use dkms_testkit::Stack;
use dkms_testkit::dkms_client::SignRequest;

/// Child public key (compressed) and chain code by the `bip32` crate.
fn bip32_child(public_key: &[u8], chain_code: &[u8], path: &[u32]) -> ([u8; 33], [u8; 32]) {
    let vk = <bip32::secp256k1::ecdsa::VerifyingKey as bip32::PublicKey>::from_bytes(
        public_key.try_into().unwrap(),
    )
    .unwrap();
    let mut xpub = ExtendedPublicKey::new(
        vk,
        ExtendedKeyAttrs {
            depth: 0,
            parent_fingerprint: [0; 4],
            child_number: ChildNumber::new(0, false).unwrap(),
            chain_code: chain_code.try_into().unwrap(),
        },
    );
    for &i in path {
        xpub = xpub
            .derive_child(ChildNumber::new(i, false).unwrap())
            .unwrap();
    }
    (xpub.public_key().to_bytes(), xpub.attrs().chain_code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_keys_match_bip32_and_sign() {
    let stack = Stack::start(BIN, 3).await.expect("stack");
    let c = stack.client.clone();
    let id = c
        .generate_key(&keygen_request(&["node1", "node2", "node3"], 2))
        .await
        .unwrap();
    let key = c.wait_key(&id, WAIT).await.unwrap();
    assert_eq!(key.status, "FINISHED");
    let root = c.derive_key(&id, "m").await.unwrap();
    assert_eq!(Some(&root.public_key_hex), key.public_key_hex.as_ref());
    let pk = hex::decode(&root.public_key_hex).unwrap();
    let cc = hex::decode(&root.chain_code).unwrap();

    for (path, steps) in [
        ("m/44/60/0/0/7", vec![44, 60, 0, 0, 7]),
        ("m/0", vec![0]),
        ("m/2147483647/3", vec![2_147_483_647, 3]),
    ] {
        let (child, child_cc) = bip32_child(&pk, &cc, &steps);
        let got = c.derive_key(&id, path).await.unwrap();
        assert_eq!(got.derivation_path, path);
        assert_eq!(got.public_key_hex, hex::encode(child), "{path}");
        assert_eq!(got.chain_code, hex::encode(child_cc), "{path}");

        let d = digest(&format!("derived {path}"));
        let body = SignRequest {
            digest_hex: hex::encode(d),
            key_id: id.clone(),
            derivation_path: Some(path.to_owned()),
        };
        let instance = c.request_sign_body(&body, None).await.unwrap();
        let sig = c.wait_sign(&instance, WAIT).await.unwrap();
        assert_eq!(sig.derivation_path.as_deref(), Some(path));
        // Checked like any signature, against the child key and its address.
        let mut as_child = key.clone();
        as_child.public_key = Some(got.public_key.clone());
        as_child.public_key_hex = Some(got.public_key_hex.clone());
        as_child.address = got.address.clone();
        verify_independently(&as_child, &d, &sig);
        // ... and not against the parent.
        let raw = hex::decode(sig.sign.as_deref().unwrap()).unwrap();
        let parent = secp256k1::PublicKey::from_slice(&pk).unwrap();
        let csig = secp256k1::ecdsa::Signature::from_compact(&raw[..64]).unwrap();
        let msg = secp256k1::Message::from_digest(d);
        assert!(secp256k1::ecdsa::verify(&csig, msg, &parent).is_err());
    }

    // A plain signature still comes from the key itself.
    let d = digest("root");
    let sig = c.sign(&id, &hex::encode(d), WAIT).await.unwrap();
    assert_eq!(sig.derivation_path, None);
    verify_independently(&key, &d, &sig);

    // Bad paths are refused before anything runs.
    for bad in ["m/0'", "m/1h", "44/60", "m/2147483648", "m/x", "", "m/01"] {
        let body = SignRequest {
            digest_hex: hex::encode(d),
            key_id: id.clone(),
            derivation_path: Some(bad.to_owned()),
        };
        let e = c.request_sign_body(&body, None).await.unwrap_err();
        assert_eq!(e.code(), Some("INVALID_PARAMETER"), "{bad:?}: {e}");
        assert!(e.to_string().contains("derivationPath"), "{bad:?}: {e}");
        let e = c.derive_key(&id, bad).await.unwrap_err();
        assert_eq!(e.code(), Some("INVALID_PARAMETER"), "{bad:?}: {e}");
    }
    let (status, body) = c
        .raw(
            dkms_testkit::dkms_client::Method::GET,
            &format!("/api/mappic/dkms/key/derive?keyId={id}"),
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errorCode"], "INVALID_PARAMETER");
}
