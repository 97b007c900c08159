//! Test helpers: a k256 signer standing in for the nodes, and an independent check of the
//! result through libsecp256k1, so no test trusts alloy to verify what alloy encoded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use k256::ecdsa::SigningKey;
use sha3::{Digest, Keccak256};

pub fn keccak(data: &[u8]) -> [u8; 32] {
    Keccak256::digest(data).into()
}

/// Address of an uncompressed SEC1 key (0x04 || x || y).
fn address_of_uncompressed(point: &[u8]) -> [u8; 20] {
    assert_eq!(point.len(), 65);
    assert_eq!(point[0], 4);
    let h = keccak(&point[1..]);
    h[12..].try_into().unwrap()
}

pub fn k256_address(key: &SigningKey) -> [u8; 20] {
    let point = key.verifying_key().to_sec1_point(false);
    address_of_uncompressed(point.as_bytes())
}

/// Signs a prehash as the threshold session would hand it over: (r, s low-S, recovery id).
pub fn sign(key: &SigningKey, hash: &[u8; 32]) -> ([u8; 32], [u8; 32], u8) {
    let (sig, recid) = key.sign_prehash_recoverable(hash);
    let (r, s) = sig.split_bytes();
    (r.into(), s.into(), recid.to_byte())
}

/// Sender recovered by libsecp256k1 from the signing hash and (r, s, recovery id).
pub fn recover_secp256k1(hash: &[u8; 32], r: &[u8; 32], s: &[u8; 32], recid: u8) -> [u8; 20] {
    use secp256k1::ecdsa::{RecoverableSignature, RecoveryId};
    let mut compact = [0u8; 64];
    compact[..32].copy_from_slice(r);
    compact[32..].copy_from_slice(s);
    let id = RecoveryId::try_from(i32::from(recid)).unwrap();
    let sig = RecoverableSignature::from_compact(&compact, id).unwrap();
    let pk = sig.recover(secp256k1::Message::from_digest(*hash)).unwrap();
    address_of_uncompressed(&pk.serialize_uncompressed())
}
