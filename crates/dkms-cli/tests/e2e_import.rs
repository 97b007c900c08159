//! Importing existing keys made by the `openssl` command line tool, through the
//! compatible `key/import` API (the gateway splits) and through `dkms key import` (the
//! client splits, the gateway sees only sealed shares). Imported keys sign under the
//! original public key; bad keys are clear 400s that store nothing; and neither path leaves
//! a trace of the private scalar in the gateway's database or log.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use dkms_testkit::Stack;
use dkms_testkit::dkms_client::{KeyImportRequest, KeyInfo, KeyParams};
use std::path::{Path, PathBuf};

/// One secp256k1 key in every accepted format, with its scalar and compressed public key.
struct Fixture {
    dir: tempfile::TempDir,
    scalar_hex: String,
    public_key_hex: String,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n).to_str().unwrap().to_owned();
        openssl(&[
            "ecparam",
            "-name",
            "secp256k1",
            "-genkey",
            "-noout",
            "-out",
            &p("sec1.pem"),
        ]);
        openssl(&[
            "pkcs8",
            "-topk8",
            "-nocrypt",
            "-in",
            &p("sec1.pem"),
            "-out",
            &p("pkcs8.pem"),
        ]);
        openssl(&[
            "pkcs8",
            "-topk8",
            "-v2",
            "aes-256-cbc",
            "-v2prf",
            "hmacWithSHA256",
            "-in",
            &p("sec1.pem"),
            "-out",
            &p("pbkdf2.pem"),
            "-passout",
            "pass:correct horse",
        ]);
        openssl(&[
            "pkcs8",
            "-topk8",
            "-scrypt",
            "-in",
            &p("sec1.pem"),
            "-out",
            &p("scrypt.pem"),
            "-passout",
            "pass:correct horse",
        ]);
        openssl(&[
            "ec",
            "-in",
            &p("sec1.pem"),
            "-aes256",
            "-out",
            &p("legacy.pem"),
            "-passout",
            "pass:correct horse",
        ]);
        openssl(&[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            &p("p256.pem"),
        ]);
        let text =
            String::from_utf8(openssl(&["ec", "-in", &p("sec1.pem"), "-text", "-noout"])).unwrap();
        let priv_block: String = text
            .split("priv:")
            .nth(1)
            .unwrap()
            .split("pub:")
            .next()
            .unwrap()
            .chars()
            .filter(|c| c.is_ascii_hexdigit())
            .collect();
        // openssl may print a leading 00 byte; the scalar is the last 32 bytes.
        let scalar_hex = priv_block[priv_block.len() - 64..].to_owned();
        let der = openssl(&[
            "ec",
            "-in",
            &p("sec1.pem"),
            "-pubout",
            "-conv_form",
            "compressed",
            "-outform",
            "DER",
        ]);
        let public_key_hex = hex::encode(&der[der.len() - 33..]);
        Fixture {
            dir,
            scalar_hex,
            public_key_hex,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn pem(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap()
    }
}

fn import_request(pem: String, password: Option<&str>) -> KeyImportRequest {
    KeyImportRequest {
        key_params: KeyParams {
            key_type: "ECDSA_K1".into(),
            length: Some(256),
        },
        service_participants: vec!["node1".into(), "node2".into(), "node3".into()],
        threshold: 2,
        total_shares: 3,
        private_key: pem,
        password: password.map(str::to_owned),
        exportable: false,
    }
}

async fn signs_under(stack: &Stack, key: &KeyInfo, label: &str) {
    let d = digest(label);
    let sig = stack
        .client
        .sign(&key.key_id, &hex::encode(d), WAIT)
        .await
        .unwrap();
    verify_independently(key, &d, &sig);
}

fn cli_import(stack: &Stack, file: &Path, password: Option<&str>) -> (bool, String, String) {
    let file = file.to_str().unwrap();
    let args = [
        "key",
        "import",
        "--file",
        file,
        "--participants",
        "node1,node2,node3",
        "--threshold",
        "2",
        "--wait",
    ];
    match password {
        Some(pw) => run_cli_env(stack, &args, &[("DKMS_KEY_PASSWORD", pw)]),
        None => run_cli(stack, &args),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_keys_sign_under_their_original_public_key_and_leave_no_trace() {
    let fx = Fixture::new();
    let mut stack = Stack::start(BIN, 3).await.expect("stack");
    let c = stack.client.clone();
    let mut imported = 0;

    // The compatible API: every format openssl writes.
    for (file, password) in [
        ("sec1.pem", None),
        ("pkcs8.pem", None),
        ("pbkdf2.pem", Some("correct horse")),
        ("scrypt.pem", Some("correct horse")),
        ("legacy.pem", Some("correct horse")),
    ] {
        let resp = c
            .import_key(&import_request(fx.pem(file), password))
            .await
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(resp.instance_id, resp.key_id);
        let key = c.wait_key(&resp.key_id, WAIT).await.unwrap();
        assert_eq!(key.status, "FINISHED", "{file}: {key:?}");
        assert_eq!(key.origin, "IMPORTED");
        assert_eq!(
            key.public_key_hex.as_deref(),
            Some(fx.public_key_hex.as_str()),
            "{file}"
        );
        signs_under(&stack, &key, file).await;
        imported += 1;
    }

    // The client-side path through the CLI: the gateway gets sealed shares only.
    for (file, password) in [("sec1.pem", None), ("scrypt.pem", Some("correct horse"))] {
        let (ok, out, err) = cli_import(&stack, &fx.path(file), password);
        assert!(ok, "{file}: {err}");
        let key: KeyInfo = serde_json::from_str(&out).unwrap();
        assert_eq!(key.status, "FINISHED");
        assert_eq!(
            key.public_key_hex.as_deref(),
            Some(fx.public_key_hex.as_str())
        );
        signs_under(&stack, &key, &format!("cli {file}")).await;
        imported += 1;
    }

    // Bad keys: a clear 400 each, no task, nothing stored.
    let truncated = {
        let pem = fx.pem("pkcs8.pem");
        pem[..pem.len() / 2].to_owned()
    };
    let zero_scalar = {
        // SEC1 ECPrivateKey with a zero scalar, secp256k1 named curve.
        let mut der = hex::decode("302e0201010420").unwrap();
        der.extend([0u8; 32]);
        der.extend(hex::decode("a00706052b8104000a").unwrap());
        use base64::Engine;
        format!(
            "-----BEGIN EC PRIVATE KEY-----\n{}\n-----END EC PRIVATE KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(der)
        )
    };
    for (name, pem, password, says) in [
        (
            "wrong password",
            fx.pem("pbkdf2.pem"),
            Some("Tr0ub4dor&3"),
            "password",
        ),
        ("missing password", fx.pem("legacy.pem"), None, "password"),
        (
            "wrong password (legacy)",
            fx.pem("legacy.pem"),
            Some("Tr0ub4dor&3"),
            "password",
        ),
        ("P-256 key", fx.pem("p256.pem"), None, "secp256k1"),
        ("truncated PEM", truncated, None, "privateKey"),
        ("garbage", "not a key at all".to_owned(), None, "privateKey"),
        ("zero scalar", zero_scalar, None, "scalar"),
    ] {
        let e = c
            .import_key(&import_request(pem, password))
            .await
            .expect_err(name);
        assert_eq!(e.status(), Some(400), "{name}: {e}");
        assert_eq!(e.code(), Some("INVALID_PARAMETER"), "{name}: {e}");
        assert!(e.to_string().contains(says), "{name}: {e}");
        assert!(
            !e.to_string().contains("Tr0ub4dor"),
            "{name}: the password is not echoed"
        );
    }
    let (ok, _, err) = cli_import(&stack, &fx.path("pbkdf2.pem"), Some("Tr0ub4dor&3"));
    assert!(!ok && err.contains("password"), "{err}");

    // No trace of the scalar in the gateway's database or log, in any spelling.
    for t in ["node1", "node2", "node3"] {
        stack.kill_node(t);
    }
    stack.kill_gateway();
    let haystack = stack.gateway_artifacts().unwrap();
    let haystack_lower = String::from_utf8_lossy(&haystack).to_lowercase();
    assert!(
        haystack_lower.contains(&fx.public_key_hex),
        "positive control"
    );
    assert!(
        !haystack_lower.contains(&fx.scalar_hex),
        "scalar found as hex"
    );
    let scalar = hex::decode(&fx.scalar_hex).unwrap();
    assert!(
        !haystack.windows(32).any(|w| w == scalar.as_slice()),
        "scalar found raw"
    );
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&scalar);
    assert!(
        !String::from_utf8_lossy(&haystack).contains(&b64[..40]),
        "scalar found as base64"
    );
    for f in ["sec1.pem", "pkcs8.pem"] {
        let pem = fx.pem(f);
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        assert!(
            !String::from_utf8_lossy(&haystack).contains(&body[..48]),
            "{f} body found"
        );
    }

    // Each node holds exactly one share per successful import, and nothing from the
    // refused ones.
    for t in ["node1", "node2", "node3"] {
        let dir = stack.node_dir(t);
        let sealer = std::sync::Arc::new(
            dkms_node::sealer::SoftwareSealer::from_key_file(&dir.join("sealing.key")).unwrap(),
        );
        let store = dkms_node::store::NodeStore::open(&dir.join("node.redb"), sealer).unwrap();
        assert_eq!(store.list_shares().unwrap().len(), imported, "{t}");
    }
}
