//! Shared helpers of the end-to-end tests: the binary under test and an independent
//! signature check (k256 over the PEM public key, libsecp256k1 for verification and
//! address recovery).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use dkms_testkit::Stack;
use dkms_testkit::dkms_client::{KeyGenRequest, KeyInfo, KeyParams, SignInfo};
use k256::pkcs8::DecodePublicKey;
use sha3::{Digest, Keccak256};
use std::process::Command;
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_dkms");

pub fn keygen_request(participants: &[&str], threshold: i64) -> KeyGenRequest {
    KeyGenRequest {
        key_params: KeyParams {
            key_type: "ECDSA_K1".into(),
            length: Some(256),
        },
        service_participants: participants.iter().map(|s| s.to_string()).collect(),
        threshold: Some(threshold),
        total_shares: Some(participants.len() as i64),
        node_group: None,
        exportable: false,
    }
}

/// A digest that differs per call site.
pub fn digest(label: &str) -> [u8; 32] {
    Keccak256::digest(label.as_bytes()).into()
}

pub fn eth_address(uncompressed: &[u8]) -> String {
    let h = Keccak256::digest(&uncompressed[1..]);
    format!("0x{}", hex::encode(&h[12..]))
}

/// Checks a returned signature without any dkms code: k256 verifies (r, s) under the
/// key's PEM, libsecp256k1 verifies it too and recovers the signer's Ethereum address
/// from (r, s, v), which must equal the address the gateway reports.
pub fn verify_independently(key: &KeyInfo, digest: &[u8; 32], sig: &SignInfo) {
    assert_eq!(sig.status, "FINISHED", "signing failed: {sig:?}");
    let raw = hex::decode(sig.sign.as_deref().expect("sign")).expect("hex");
    assert_eq!(raw.len(), 65, "r || s || v");
    assert_eq!(sig.r.as_deref(), Some(hex::encode(&raw[..32]).as_str()));
    assert_eq!(sig.s.as_deref(), Some(hex::encode(&raw[32..64]).as_str()));
    assert_eq!(sig.v, Some(raw[64]));
    assert!(raw[64] <= 1, "v must be a recovery id 0 or 1");

    // k256 over the PEM SubjectPublicKeyInfo.
    let pem = key.public_key.as_deref().expect("publicKey");
    let pk = k256::PublicKey::from_public_key_pem(pem).expect("PEM public key");
    let vk = k256::ecdsa::VerifyingKey::from(&pk);
    let ksig = k256::ecdsa::Signature::from_slice(&raw[..64]).expect("r, s");
    assert!(ksig.normalize_s() == ksig, "signature must be low-S");
    use k256::ecdsa::signature::hazmat::PrehashVerifier;
    vk.verify_prehash(digest, &ksig)
        .expect("k256 verifies the signature");
    let der =
        k256::ecdsa::Signature::from_der(&hex::decode(sig.der.as_deref().expect("der")).unwrap())
            .expect("DER form parses");
    assert_eq!(der, ksig);

    // libsecp256k1 (the C library Bitcoin Core uses): verify and recover.
    let spk = secp256k1::PublicKey::from_slice(
        &hex::decode(key.public_key_hex.as_deref().unwrap()).unwrap(),
    )
    .expect("libsecp256k1 parses the key");
    let msg = secp256k1::Message::from_digest(*digest);
    let csig = secp256k1::ecdsa::Signature::from_compact(&raw[..64]).expect("compact");
    secp256k1::ecdsa::verify(&csig, msg, &spk).expect("libsecp256k1 verifies the signature");
    let recid = secp256k1::ecdsa::RecoveryId::try_from(i32::from(raw[64])).expect("recid");
    let rsig = secp256k1::ecdsa::RecoverableSignature::from_compact(&raw[..64], recid).unwrap();
    let recovered = rsig.recover_ecdsa(msg).expect("recovers a key");
    assert_eq!(recovered, spk, "recovery id points at the key");
    let addr = eth_address(&recovered.serialize_uncompressed());
    assert_eq!(
        Some(addr),
        key.address.as_deref().map(str::to_lowercase),
        "recovered address equals the key's address"
    );
}

pub const WAIT: Duration = Duration::from_secs(240);

/// Runs the `dkms` CLI against `stack` with extra environment variables (a key password,
/// say): (success, stdout, stderr). A key password from the caller's own environment is
/// never inherited, and the stack's token must not show in the output.
pub fn run_cli_env(stack: &Stack, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("DKMS_URL", &stack.url)
        .env("DKMS_TOKEN", &stack.token)
        .env_remove("DKMS_KEY_PASSWORD");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !stdout.contains(&stack.token) && !stderr.contains(&stack.token),
        "the CLI printed the token"
    );
    (out.status.success(), stdout, stderr)
}

/// [`run_cli_env`] with no extra variables.
pub fn run_cli(stack: &Stack, args: &[&str]) -> (bool, String, String) {
    run_cli_env(stack, args, &[])
}

/// [`run_cli`] with stdout parsed as JSON (`Null` when it is not JSON).
pub fn dkms_cli(stack: &Stack, args: &[&str]) -> (bool, serde_json::Value, String) {
    let (ok, stdout, stderr) = run_cli(stack, args);
    let json = serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null);
    (ok, json, stderr)
}

/// Runs the `openssl` command line tool, an implementation independent of dkms; panics
/// with its stderr if it fails. Returns its stdout.
pub fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
