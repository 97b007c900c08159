//! The same protocols on NIST P-256 (`ECDSA_R1`): keygen, signing, refresh, stored form,
//! dealer import and export. Every signature is checked with the `p256` crate's verifier,
//! which shares no code with the sessions' own check beyond RustCrypto's `ecdsa`; and
//! against secp256k1, where it must fail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use dkms_mpc::export::{combine, new_recipient, open_export, seal_export};
use dkms_mpc::import::{parse_private_key_pem, split};
use dkms_mpc::{Curve, KeyShare, SHARE_FORMAT_V2, SHARE_FORMAT_V3};

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/import/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

#[test]
fn p256_keygen_signs_with_every_signer_set_and_p256_verifies() {
    let shares = run_keygen_on(Curve::P256, 2, 3);
    let pk = shares[0].public_key();
    assert!(
        p256::PublicKey::from_sec1_bytes(&pk).is_ok(),
        "a P-256 point"
    );
    for (n, signers) in [[1u8, 2], [1, 3], [2, 3]].iter().enumerate() {
        let digest = [n as u8 + 0x30; 32];
        let sigs = try_sign(copies(&shares), signers, digest).unwrap();
        assert!(sigs.iter().all(|s| *s == sigs[0]));
        assert!(verifies_p256(&pk, &digest, &sigs[0]), "{signers:?}");
        // The gateway's check agrees, and the same bytes are no secp256k1 signature.
        dkms_mpc::ecdsa::verify_signature(Curve::P256, &pk, &digest, &sigs[0].to_bytes()).unwrap();
        assert!(
            dkms_mpc::ecdsa::verify_signature(Curve::Secp256k1, &pk, &digest, &sigs[0].to_bytes())
                .is_err()
        );
        // Another digest does not verify.
        assert!(!verifies_p256(&pk, &[0xEE; 32], &sigs[0]));
    }
}

#[test]
fn p256_shares_are_stored_as_format_3_and_read_back() {
    let shares = run_keygen_on(Curve::P256, 2, 2);
    let bytes = shares[0].to_bytes();
    assert_eq!(bytes[0], SHARE_FORMAT_V3);
    let back = KeyShare::from_bytes(&bytes).unwrap();
    assert_eq!(back.curve(), Curve::P256);
    assert_eq!(back.public_key(), shares[0].public_key());
    assert_eq!(
        *back.secret_scalar_for_leak_tests(),
        *shares[0].secret_scalar_for_leak_tests()
    );
    // secp256k1 shares keep the format every release reads.
    let k1 = run_keygen_on(Curve::Secp256k1, 2, 2);
    assert_eq!(k1[0].to_bytes()[0], SHARE_FORMAT_V2);
    // A P-256 body under the secp256k1 curve tag is refused as corrupt, not misread.
    let mut relabelled = bytes.to_vec();
    relabelled[1] = 1;
    assert!(KeyShare::from_bytes(&relabelled).is_err());
    relabelled[1] = 9;
    assert!(KeyShare::from_bytes(&relabelled).is_err());
    // A P-256 share cannot be derived (BIP-32 is secp256k1's).
    let err = shares[0].derive(&[1]).err().unwrap();
    assert!(err.to_string().contains("secp256k1"), "{err}");
}

#[test]
fn p256_refresh_keeps_the_key_and_old_shares_stop_signing_with_new_ones() {
    let shares = run_keygen_on(Curve::P256, 2, 3);
    let pk = shares[0].public_key();
    let old = copies(&shares);
    let new = run_refresh(shares, 7);
    assert!(
        new.iter()
            .all(|s| s.curve() == Curve::P256 && s.public_key() == pk)
    );
    sign_and_verify(copies(&new), &[1, 3], [0x42; 32]);
    // An old share with a new one: the session refuses (other generation).
    assert!(try_sign(vec![copy(&old[0]), copy(&new[1])], &[1, 2], [0x43; 32]).is_err());
}

#[test]
fn a_p256_key_imported_from_openssl_splits_signs_and_exports_back() {
    let pem = fixture("p256-pkcs8-pbkdf2.pem");
    let password = fixture("password.txt");
    let key = parse_private_key_pem(&pem, Some(password.trim().as_bytes()), Curve::P256).unwrap();
    let expected_pub = hex::decode(fixture("p256.pub.txt").trim()).unwrap();
    assert_eq!(key.public_key().as_slice(), expected_pub.as_slice());

    let ps = participants(3);
    let shares = split(&key, uuid::Uuid::new_v4(), 2, ps).unwrap();
    assert!(shares.iter().all(|s| s.curve() == Curve::P256));
    assert_eq!(shares[0].public_key(), key.public_key());
    sign_and_verify(copies(&shares), &[2, 3], [0x44; 32]);

    // Break-glass export: two sealed scalar shares combine to the very key.
    let shares: Vec<KeyShare> = shares
        .into_iter()
        .map(|s| s.with_exportable(true))
        .collect();
    let (_, client) = new_recipient().unwrap();
    let opened: Vec<_> = shares[..2]
        .iter()
        .map(|s| {
            let tag = s.participants()[usize::from(s.my_index()) - 1].tag.clone();
            let sealed = seal_export(s, 0, &client.public_key()).unwrap();
            open_export(&client, &s.key_id(), &tag, 0, &sealed).unwrap()
        })
        .collect();
    let back = combine(&opened, 2, &key.public_key(), Curve::P256).unwrap();
    assert_eq!(back.public_key(), key.public_key());
    // Combined on the wrong curve, the result is refused rather than returned.
    assert!(combine(&opened, 2, &key.public_key(), Curve::Secp256k1).is_err());
    let written = back.to_sec1_pem().unwrap();
    assert!(written.contains("BEGIN EC PRIVATE KEY"));
    let again = parse_private_key_pem(&written, None, Curve::P256).unwrap();
    assert_eq!(again.public_key(), key.public_key());
}
