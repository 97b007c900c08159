//! `ECDSA_R1` (NIST P-256) keys on real processes: generated, imported from files the
//! `openssl` tool made (through the gateway and through the CLI's local split), signed,
//! refreshed and exported. Every signature is checked by two verifiers that share no code
//! with dkms: the `p256` crate, and OpenSSL's C library through `openssl pkeyutl`. What
//! only secp256k1 has (BIP-32 derivation, Ethereum transactions) is refused with a 400.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use dkms_testkit::Stack;
use dkms_testkit::dkms_client::{
    KeyGenRequest, KeyImportRequest, KeyInfo, KeyParams, Method, RawBody, SignInfo, SignRequest,
};
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::pkcs8::DecodePublicKey;
use std::path::Path;
use std::process::Command;

const T3: [&str; 3] = ["node1", "node2", "node3"];

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The compressed point of a PEM public key, as OpenSSL reads it.
fn openssl_point(pub_pem: &Path) -> String {
    let der = openssl(&[
        "ec",
        "-pubin",
        "-in",
        p(pub_pem),
        "-conv_form",
        "compressed",
        "-outform",
        "DER",
    ]);
    hex::encode(&der[der.len() - 33..])
}

fn r1_params() -> KeyParams {
    KeyParams {
        key_type: "ECDSA_R1".into(),
        length: Some(256),
    }
}

/// Checks a P-256 signature without dkms code: the p256 crate verifies (r, s) and the
/// DER form, recovers the key from v; OpenSSL verifies the DER signature over the digest.
fn verify_p256(key: &KeyInfo, digest: &[u8; 32], sig: &SignInfo, dir: &Path) {
    assert_eq!(sig.status, "FINISHED", "signing failed: {sig:?}");
    assert_eq!(key.key_type, "ECDSA_R1");
    let raw = hex::decode(sig.sign.as_deref().unwrap()).unwrap();
    assert_eq!(raw.len(), 65);
    let pem = key.public_key.as_deref().unwrap();
    let vk = p256::ecdsa::VerifyingKey::from_public_key_pem(pem).expect("a P-256 SPKI");
    let rs = p256::ecdsa::Signature::from_slice(&raw[..64]).unwrap();
    vk.verify_prehash(digest, &rs).expect("p256 verifies");
    let der_hex = sig.der.as_deref().unwrap();
    let der = hex::decode(der_hex).unwrap();
    assert_eq!(p256::ecdsa::Signature::from_der(&der).unwrap(), rs);
    let recid = p256::ecdsa::RecoveryId::from_byte(raw[64]).unwrap();
    let recovered = p256::ecdsa::VerifyingKey::recover_from_prehash(digest, &rs, recid).unwrap();
    assert_eq!(recovered, vk, "v recovers the key");

    let pub_path = dir.join(format!("{}.pub.pem", key.key_id));
    std::fs::write(&pub_path, pem).unwrap();
    let (dgst, sigf) = (dir.join("digest.bin"), dir.join("sig.der"));
    std::fs::write(&dgst, digest).unwrap();
    std::fs::write(&sigf, &der).unwrap();
    let out = openssl(&[
        "pkeyutl",
        "-verify",
        "-pubin",
        "-inkey",
        p(&pub_path),
        "-in",
        p(&dgst),
        "-sigfile",
        p(&sigf),
    ]);
    assert!(
        String::from_utf8_lossy(&out).contains("Signature Verified Successfully"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    // The same bytes over another digest fail in OpenSSL too: the check can fail.
    std::fs::write(&dgst, [0x5Au8; 32]).unwrap();
    let bad = Command::new("openssl")
        .args(["pkeyutl", "-verify", "-pubin", "-inkey", p(&pub_path)])
        .args(["-in", p(&dgst), "-sigfile", p(&sigf)])
        .output()
        .unwrap();
    assert!(!bad.status.success());
}

async fn sign_and_check(stack: &Stack, key: &KeyInfo, label: &str) {
    let d = digest(label);
    let sig = stack
        .client
        .sign(&key.key_id, &hex::encode(d), WAIT)
        .await
        .unwrap();
    verify_p256(key, &d, &sig, stack.dir.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p256_keys_generate_sign_refresh_and_export_and_refuse_what_only_k1_has() {
    let stack = Stack::start(BIN, 3).await.expect("stack");
    let c = stack.client.clone();
    let dir = stack.dir.path().to_owned();

    let req = KeyGenRequest {
        key_params: r1_params(),
        exportable: true,
        ..keygen_request(&T3, 2)
    };
    let id = c.generate_key(&req).await.unwrap();
    let key = c.wait_key(&id, WAIT).await.unwrap();
    assert_eq!(key.status, "FINISHED", "{key:?}");
    assert_eq!(key.key_type, "ECDSA_R1");
    assert_eq!(key.address, None, "no Ethereum address for a P-256 key");
    // OpenSSL reads the PEM as a prime256v1 key with the reported point.
    let pub_path = dir.join("gen.pub.pem");
    std::fs::write(&pub_path, key.public_key.as_deref().unwrap()).unwrap();
    let text = String::from_utf8(openssl(&[
        "ec",
        "-pubin",
        "-in",
        p(&pub_path),
        "-text",
        "-noout",
    ]))
    .unwrap();
    assert!(text.contains("prime256v1"), "{text}");
    assert_eq!(Some(openssl_point(&pub_path)), key.public_key_hex);

    for n in 0..3 {
        sign_and_check(&stack, &key, &format!("p256 gen {n}")).await;
    }

    // Refresh: same key, still signs.
    let task = c.refresh_key(&id).await.unwrap();
    let done = c.wait_task(&task.instance_id, WAIT).await.unwrap();
    assert_eq!(done.status, "FINISHED", "{done:?}");
    let after = c.wait_key(&id, WAIT).await.unwrap();
    assert_eq!(after.public_key_hex, key.public_key_hex);
    sign_and_check(&stack, &after, "p256 after refresh").await;

    // What only secp256k1 keys have is refused up front.
    let body = SignRequest {
        digest_hex: hex::encode(digest("derive")),
        key_id: id.clone(),
        derivation_path: Some("m/0/1".into()),
    };
    let e = c.request_sign_body(&body, None).await.unwrap_err();
    assert_eq!(e.code(), Some("INVALID_PARAMETER"), "{e}");
    assert!(e.to_string().contains("ECDSA_K1"), "{e}");
    let e = c.derive_key(&id, "m/0").await.unwrap_err();
    assert_eq!(e.code(), Some("INVALID_PARAMETER"), "{e}");
    let tx = serde_json::json!({
        "keyId": id,
        "chainId": 1,
        "transaction": {
            "type": "eip1559", "nonce": 0, "to": "0x1111111111111111111111111111111111111111",
            "value": "1", "gasLimit": 21000, "maxFeePerGas": "30000000000",
            "maxPriorityFeePerGas": "1000000000",
        }
    });
    let (status, body) = c
        .raw(
            Method::POST,
            "/api/mappic/dkms/sign/tx",
            Some(RawBody::json(&tx)),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errorCode"], "INVALID_PARAMETER", "{body}");
    assert!(
        body["errorMessage"]
            .as_str()
            .unwrap_or_default()
            .contains("ECDSA_K1"),
        "{body}"
    );
    // A length ECDSA_R1 does not have.
    let bad = KeyGenRequest {
        key_params: KeyParams {
            key_type: "ECDSA_R1".into(),
            length: Some(512),
        },
        ..keygen_request(&T3, 2)
    };
    let e = c.generate_key(&bad).await.unwrap_err();
    assert_eq!(e.code(), Some("INVALID_PARAMETER"), "{e}");

    // Break-glass export: the whole key comes out, and OpenSSL derives the same point.
    let out = dir.join("p256.pem");
    let (ok, stdout, stderr) = run_cli(&stack, &["key", "export", &id, "--out", p(&out)]);
    assert!(ok, "{stdout}\n{stderr}");
    let derived_pub = dir.join("p256-derived.pub.pem");
    openssl(&["ec", "-in", p(&out), "-pubout", "-out", p(&derived_pub)]);
    assert_eq!(Some(openssl_point(&derived_pub)), key.public_key_hex);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p256_keys_made_by_openssl_import_through_the_gateway_and_the_cli() {
    let stack = Stack::start(BIN, 3).await.expect("stack");
    let c = stack.client.clone();
    let dir = stack.dir.path().to_owned();
    let sec1 = dir.join("r1.pem");
    let enc = dir.join("r1-pbkdf2.pem");
    let public = dir.join("r1.pub.pem");
    openssl(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        p(&sec1),
    ]);
    openssl(&[
        "pkcs8",
        "-topk8",
        "-v2",
        "aes-256-cbc",
        "-v2prf",
        "hmacWithSHA256",
        "-in",
        p(&sec1),
        "-out",
        p(&enc),
        "-passout",
        "pass:correct horse",
    ]);
    openssl(&["ec", "-in", p(&sec1), "-pubout", "-out", p(&public)]);
    let expected = openssl_point(&public);
    let k1 = dir.join("k1.pem");
    openssl(&[
        "ecparam",
        "-name",
        "secp256k1",
        "-genkey",
        "-noout",
        "-out",
        p(&k1),
    ]);

    let import = |pem: &Path, key_type: &str, password: Option<&str>| KeyImportRequest {
        key_params: KeyParams {
            key_type: key_type.into(),
            length: None,
        },
        service_participants: T3.iter().map(|s| s.to_string()).collect(),
        threshold: 2,
        total_shares: 3,
        private_key: std::fs::read_to_string(pem).unwrap(),
        password: password.map(str::to_owned),
        exportable: false,
    };
    let before = c.list_keys(&[]).await.unwrap();

    // The wrong curve either way is a 400 that names both, and stores nothing.
    let e = c
        .import_key(&import(&enc, "ECDSA_K1", Some("correct horse")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("INVALID_PARAMETER"), "{e}");
    assert!(
        e.to_string().contains("P-256") && e.to_string().contains("secp256k1"),
        "{e}"
    );
    let e = c
        .import_key(&import(&k1, "ECDSA_R1", None))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("INVALID_PARAMETER"), "{e}");
    let e = c
        .import_key(&import(&enc, "ECDSA_R1", Some("wrong")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("INVALID_PARAMETER"), "{e}");
    let (ok, _, stderr) = run_cli(
        &stack,
        &[
            "key",
            "import",
            "--file",
            p(&sec1),
            "--participants",
            "node1,node2,node3",
            "--threshold",
            "2",
            "--wait",
        ],
    );
    assert!(!ok, "a P-256 file imported as the default ECDSA_K1");
    assert!(stderr.contains("P-256"), "{stderr}");
    let after = c.list_keys(&[]).await.unwrap();
    assert_eq!(
        after.keys.len(),
        before.keys.len(),
        "refused imports store nothing"
    );

    // Through the gateway (it splits), from the encrypted PKCS#8 file.
    let resp = c
        .import_key(&import(&enc, "ECDSA_R1", Some("correct horse")))
        .await
        .unwrap();
    let key = c.wait_key(&resp.key_id, WAIT).await.unwrap();
    assert_eq!(key.status, "FINISHED", "{key:?}");
    assert_eq!(key.public_key_hex.as_deref(), Some(expected.as_str()));
    sign_and_check(&stack, &key, "p256 server import").await;

    // Through the CLI (it splits locally; the gateway sees sealed shares only).
    let (ok, stdout, stderr) = run_cli_env(
        &stack,
        &[
            "key",
            "import",
            "--file",
            p(&enc),
            "--type",
            "ECDSA_R1",
            "--participants",
            "node1,node2,node3",
            "--threshold",
            "2",
            "--wait",
        ],
        &[("DKMS_KEY_PASSWORD", "correct horse")],
    );
    assert!(ok, "{stdout}\n{stderr}");
    let key: KeyInfo = serde_json::from_str(&stdout).unwrap();
    assert_eq!(key.status, "FINISHED", "{key:?}");
    assert_eq!(key.key_type, "ECDSA_R1");
    assert_eq!(key.public_key_hex.as_deref(), Some(expected.as_str()));
    sign_and_check(&stack, &key, "p256 client import").await;
}
