//! BIP-32 derivation of threshold keys: the derived shares sign under the child public key,
//! and that child key equals what an independent BIP-32 implementation (the `bip32` crate)
//! derives from the key's public key and chain code.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bip32::{ChildNumber, ExtendedKeyAttrs, ExtendedPublicKey, PublicKey as _};
use common::*;
use dkms_mpc::derive::{derive_public_key, parse_path};

fn independent(public_key: &[u8; 33], chain_code: [u8; 32], path: &[u32]) -> [u8; 33] {
    let vk = <bip32::secp256k1::ecdsa::VerifyingKey as bip32::PublicKey>::from_bytes(*public_key)
        .unwrap();
    let mut xpub = ExtendedPublicKey::new(
        vk,
        ExtendedKeyAttrs {
            depth: 0,
            parent_fingerprint: [0; 4],
            child_number: ChildNumber::new(0, false).unwrap(),
            chain_code,
        },
    );
    for &i in path {
        xpub = xpub
            .derive_child(ChildNumber::new(i, false).unwrap())
            .unwrap();
    }
    xpub.public_key().to_bytes()
}

#[test]
fn derived_shares_sign_for_the_child_key_bip32_derives() {
    let shares = run_keygen(2, 3);
    let pk = shares[0].public_key();
    let cc = shares[0].chain_code();
    assert!(
        shares.iter().all(|s| s.chain_code() == cc),
        "one chain code per key"
    );
    for text in ["m/0", "m/44/60/0/0/7", "m/2147483647/1"] {
        let path = parse_path(text).unwrap();
        let (child, _) = derive_public_key(&pk, &cc, &path).unwrap();
        assert_eq!(child, independent(&pk, cc, &path), "{text}");
        assert_ne!(child, pk);
        let derived: Vec<_> = shares.iter().map(|s| s.derive(&path).unwrap()).collect();
        assert!(derived.iter().all(|d| d.public_key() == child));
        let digest = [0x5a; 32];
        let sigs = try_sign(derived, &[1, 3], digest).unwrap();
        assert!(
            verifies(&child, &digest, &sigs[0]),
            "{text}: child key verifies"
        );
        assert!(
            !verifies(&pk, &digest, &sigs[0]),
            "{text}: the parent key does not"
        );
    }
    // The empty path is the key itself.
    assert_eq!(derive_public_key(&pk, &cc, &[]).unwrap().0, pk);
}

#[test]
fn a_refresh_keeps_the_chain_code() {
    let shares = run_keygen(2, 2);
    let cc = shares[0].chain_code();
    let refreshed = run_refresh(shares, 9);
    assert!(refreshed.iter().all(|s| s.chain_code() == cc));
}
