//! Break-glass export and share-group backup/restore on real processes, driven through
//! the `dkms` CLI as an operator would: an exportable key comes out whole and `openssl`
//! reads it; a non-exportable key does not; a key backed up to three custodians survives
//! the real loss of a node's data directory, restored from one custodian's blob, and signs
//! again; one custodian alone does not hold the key; bad inputs are refused clearly.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use dkms_testkit::Stack;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

const T3: [&str; 3] = ["node1", "node2", "node3"];

fn cli_ok(stack: &Stack, args: &[&str]) -> serde_json::Value {
    let (ok, out, err) = run_cli(stack, args);
    assert!(ok, "dkms {args:?} failed:\n{out}\n{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The SEC1 public key of a PEM SubjectPublicKeyInfo.
fn spki_point(pem: &str) -> k256::PublicKey {
    use k256::pkcs8::DecodePublicKey;
    k256::PublicKey::from_public_key_pem(pem).unwrap()
}

async fn exportable_key(stack: &Stack, exportable: bool) -> dkms_testkit::dkms_client::KeyInfo {
    let c = &stack.client;
    let req = dkms_testkit::dkms_client::KeyGenRequest {
        exportable,
        ..keygen_request(&T3, 2)
    };
    let id = c.generate_key(&req).await.unwrap();
    let key = c.wait_key(&id, WAIT).await.unwrap();
    assert_eq!(key.status, "FINISHED", "{key:?}");
    assert_eq!(key.exportable, exportable);
    key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exportable_key_comes_out_whole_and_a_non_exportable_one_never_does() {
    let stack = Stack::start(BIN, 3).await.expect("stack");
    let c = stack.client.clone();
    let dir = stack.dir.path().to_owned();
    let key = exportable_key(&stack, true).await;

    let pem_path = dir.join("key.pem");
    let out = cli_ok(
        &stack,
        &["key", "export", &key.key_id, "--out", p(&pem_path)],
    );
    assert_eq!(out["publicKeyHex"], key.public_key_hex.clone().unwrap());
    let mode = std::fs::metadata(&pem_path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the key file is the owner's only");

    // An independent parser: openssl reads the private key and derives its public key,
    // which is the key's.
    let public = openssl(&["ec", "-in", p(&pem_path), "-pubout"]);
    let derived = spki_point(&String::from_utf8(public).unwrap());
    assert_eq!(derived, spki_point(key.public_key.as_deref().unwrap()));

    // The exported key signs what the key's PEM verifies, and the key still signs too.
    let pem = std::fs::read_to_string(&pem_path).unwrap();
    use k256::pkcs8::DecodePrivateKey;
    let sk = k256::SecretKey::from_sec1_pem(&pem)
        .or_else(|_| k256::SecretKey::from_pkcs8_pem(&pem))
        .unwrap();
    assert_eq!(sk.public_key(), derived);
    let d = digest("after the export");
    verify_independently(
        &key,
        &d,
        &c.sign(&key.key_id, &hex::encode(d), WAIT).await.unwrap(),
    );

    // Imported keys carry the bit too, client-side (sealed into each share) and
    // server-side: what comes out is the very key that went in.
    let original = dir.join("original.pem");
    openssl(&[
        "ecparam",
        "-name",
        "secp256k1",
        "-genkey",
        "-noout",
        "-out",
        p(&original),
    ]);
    let imported = cli_ok(
        &stack,
        &[
            "key",
            "import",
            "--file",
            p(&original),
            "--participants",
            "node1,node2,node3",
            "--threshold",
            "2",
            "--exportable",
            "--wait",
        ],
    );
    let imported_id = imported["keyId"].as_str().unwrap().to_owned();
    assert_eq!(imported["exportable"], true, "{imported}");
    let server_side = c
        .import_key(&dkms_testkit::dkms_client::KeyImportRequest {
            key_params: dkms_testkit::dkms_client::KeyParams {
                key_type: "ECDSA_K1".into(),
                length: None,
            },
            service_participants: T3.iter().map(|s| s.to_string()).collect(),
            threshold: 2,
            total_shares: 3,
            private_key: std::fs::read_to_string(&original).unwrap(),
            password: None,
            exportable: true,
        })
        .await
        .unwrap();
    let server_key = c.wait_key(&server_side.key_id, WAIT).await.unwrap();
    assert_eq!(server_key.status, "FINISHED", "{server_key:?}");
    let original_key =
        k256::SecretKey::from_sec1_pem(&std::fs::read_to_string(&original).unwrap()).unwrap();
    for (i, id) in [imported_id, server_side.key_id].iter().enumerate() {
        let out_path = dir.join(format!("imported-{i}.pem"));
        cli_ok(&stack, &["key", "export", id, "--out", p(&out_path)]);
        let back =
            k256::SecretKey::from_sec1_pem(&std::fs::read_to_string(&out_path).unwrap()).unwrap();
        assert_eq!(back.to_bytes(), original_key.to_bytes(), "the same scalar");
    }

    // Never overwrites a file.
    let (ok, _, err) = run_cli(
        &stack,
        &["key", "export", &key.key_id, "--out", p(&pem_path)],
    );
    assert!(!ok && err.contains("exists"), "{err}");

    // A non-exportable key: refused at once, with the reason, and no task or file.
    let locked = exportable_key(&stack, false).await;
    let e = c
        .export_key(&locked.key_id, &"11".repeat(32))
        .await
        .expect_err("refused");
    assert_eq!(e.code(), Some("POLICY_DENIED"), "{e}");
    assert!(e.to_string().contains("key-not-exportable"), "{e}");
    let locked_path = dir.join("locked.pem");
    let (ok, _, err) = run_cli(
        &stack,
        &["key", "export", &locked.key_id, "--out", p(&locked_path)],
    );
    assert!(!ok && err.contains("POLICY_DENIED"), "{err}");
    assert!(!locked_path.exists());

    // Bad requests: each a 4xx with the field named.
    let bad = [
        (c.export_key(&key.key_id, "abcd").await, "INVALID_PARAMETER"),
        (
            c.export_key(&key.key_id, &"00".repeat(32)).await,
            "INVALID_PARAMETER",
        ),
        (
            c.export_key(&uuid::Uuid::new_v4().to_string(), &"11".repeat(32))
                .await,
            "KEY_NOT_FOUND",
        ),
        (
            c.export_key("nope", &"11".repeat(32)).await,
            "INVALID_PARAMETER",
        ),
    ];
    for (i, (r, code)) in bad.into_iter().enumerate() {
        let e = r.expect_err("refused");
        assert_eq!(e.code(), Some(code), "case {i}: {e}");
    }
    let e = c
        .wait_export(&uuid::Uuid::new_v4().to_string(), Duration::from_secs(1))
        .await
        .expect_err("unknown task");
    assert_eq!(e.code(), Some("TASK_NOT_FOUND"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_is_restored_from_its_custodians_backup_and_signs_again() {
    let mut stack = Stack::start(BIN, 3).await.expect("stack");
    let c = stack.client.clone();
    let dir = stack.dir.path().to_owned();
    let key = exportable_key(&stack, false).await;
    let key_id = key.key_id.clone();

    // Three custodians each make a key pair on their own machine.
    let mut custodians = Vec::new();
    for name in ["alice", "bob", "carol"] {
        let file = dir.join(format!("{name}.key"));
        let out = cli_ok(&stack, &["backup", "keygen", "--out", p(&file)]);
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        custodians.push((name, file, out["publicKey"].as_str().unwrap().to_owned()));
    }
    let args: Vec<String> = custodians
        .iter()
        .map(|(n, _, k)| format!("{n}={k}"))
        .collect();
    let mut create = vec!["backup", "group", "create", "vault"];
    for a in &args {
        create.extend(["--custodian", a.as_str()]);
    }
    let group = cli_ok(&stack, &create);
    assert_eq!(group["custodians"].as_array().unwrap().len(), 3);

    // Bad requests on groups and backups: each a 4xx.
    let dup = dkms_testkit::dkms_client::BackupGroupRequest {
        name: "dup".into(),
        custodians: vec![
            dkms_testkit::dkms_client::Custodian {
                name: "a".into(),
                public_key: custodians[0].2.clone(),
            },
            dkms_testkit::dkms_client::Custodian {
                name: "b".into(),
                public_key: custodians[0].2.clone(),
            },
        ],
    };
    let e = c.create_backup_group(&dup).await.expect_err("refused");
    assert_eq!(e.code(), Some("INVALID_PARAMETER"), "{e}");
    let e = c.backup_key(&key_id, "nowhere").await.expect_err("refused");
    assert_eq!(e.code(), Some("GROUP_NOT_FOUND"), "{e}");
    let e = c
        .get_key_backup(&key_id, "vault")
        .await
        .expect_err("none yet");
    assert_eq!(e.code(), Some("NOT_FOUND"), "{e}");

    // Back up, fetch the bundle.
    cli_ok(&stack, &["key", "backup", &key_id, "--group", "vault"]);
    let bundle = dir.join("bundle.json");
    let fetched = cli_ok(
        &stack,
        &[
            "backup",
            "fetch",
            "--key-id",
            &key_id,
            "--group",
            "vault",
            "--out",
            p(&bundle),
        ],
    );
    assert_eq!(fetched["generation"], 0);
    let info: dkms_testkit::dkms_client::KeyBackupInfo =
        serde_json::from_slice(&std::fs::read(&bundle).unwrap()).unwrap();
    assert_eq!(info.shares.len(), 3);
    let e = c.delete_backup_group("vault").await.expect_err("in use");
    assert_eq!(e.code(), Some("CONFLICT"), "{e}");

    // No single custodian holds the key; two of them do.
    let key_uuid: uuid::Uuid = key_id.parse().unwrap();
    let pk: [u8; 33] = hex::decode(key.public_key_hex.as_deref().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let opened: Vec<dkms_mpc::export::ExportedShare> = custodians
        .iter()
        .zip(&info.shares)
        .take(2)
        .map(|((_, file, _), s)| {
            let seed: [u8; 32] = hex::decode(std::fs::read_to_string(file).unwrap().trim())
                .unwrap()
                .try_into()
                .unwrap();
            let me = dkms_mpc::envelope::EncryptionKeypair::from_seed(&seed);
            let share = dkms_mpc::export::open_backup(
                &me,
                &key_uuid,
                &s.member.parse().unwrap(),
                0,
                &hex::decode(&s.sealed).unwrap(),
            )
            .unwrap();
            dkms_mpc::export::ExportedShare::from_share(&share)
        })
        .collect();
    assert!(dkms_mpc::export::combine(&opened[..1], 2, &pk, dkms_mpc::Curve::Secp256k1).is_err());
    assert!(dkms_mpc::export::combine(&opened[..1], 1, &pk, dkms_mpc::Curve::Secp256k1).is_err());
    let whole = dkms_mpc::export::combine(&opened, 2, &pk, dkms_mpc::Curve::Secp256k1).unwrap();
    assert_eq!(whole.public_key(), pk);

    // node3's machine is lost for real: data directory, identity and shares.
    stack.wipe_and_rejoin_node("node3").await.unwrap();
    let pods = c.list_pods().await.unwrap();
    let node3 = pods.iter().find(|p| p.node_tag == "node3").unwrap();
    let node_key = node3.encryption_key.clone().unwrap();

    // The custodian of node3's share (carol) works offline; wrong inputs are refused.
    let blob = dir.join("blob.json");
    let restore = |custodian: &Path, member: &str, out: &Path| {
        run_cli(
            &stack,
            &[
                "backup",
                "restore",
                "--custodian-key",
                p(custodian),
                "--bundle",
                p(&bundle),
                "--member",
                member,
                "--node-key",
                &node_key,
                "--out",
                p(out),
            ],
        )
    };
    let (ok, _, err) = restore(&custodians[0].1, "node3", &dir.join("x.json"));
    assert!(!ok && err.contains("custodian \"carol\""), "{err}");
    let (ok, _, err) = restore(&custodians[2].1, "node9", &dir.join("y.json"));
    assert!(!ok && err.contains("not in the bundle"), "{err}");
    let (ok, out, err) = restore(&custodians[2].1, "node3", &blob);
    assert!(ok, "{out}\n{err}");

    // Garbage blobs: not hex, too short, or hex that does not open on the node.
    let good: dkms_testkit::dkms_client::KeyRestoreRequest =
        serde_json::from_slice(&std::fs::read(&blob).unwrap()).unwrap();
    let with = |sealed: &str| dkms_testkit::dkms_client::KeyRestoreRequest {
        sealed: sealed.to_owned(),
        ..good.clone()
    };
    for bad in [with("zz"), with("abcd")] {
        let e = c.restore_key(&bad).await.expect_err("refused");
        assert_eq!(e.code(), Some("INVALID_PARAMETER"), "{e}");
    }
    let e = c
        .restore_key(&dkms_testkit::dkms_client::KeyRestoreRequest {
            lost_participant: "node9".into(),
            ..good.clone()
        })
        .await
        .expect_err("not a member");
    assert_eq!(e.code(), Some("INVALID_PARAMETER"), "{e}");
    let t = c.restore_key(&with(&"5a".repeat(400))).await.unwrap();
    let task = c.wait_task(&t.instance_id, WAIT).await.unwrap();
    assert_eq!(task.status, "FAILED", "{task:?}");
    assert_eq!(
        task.error_code.as_deref(),
        Some("INVALID_PARAMETER"),
        "{task:?}"
    );
    assert!(
        task.error_message
            .as_deref()
            .unwrap()
            .contains("does not open"),
        "{task:?}"
    );
    assert_eq!(c.get_key(&key_id).await.unwrap().generation, 0);

    // The restore: node3 gets its share back, every share is refreshed.
    let (ok, out, err) = run_cli(&stack, &["key", "restore", "--blob", p(&blob)]);
    assert!(ok, "{out}\n{err}");
    let task: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(task["kind"], "RESTORE");
    let after = c.get_key(&key_id).await.unwrap();
    assert_eq!(after.public_key, key.public_key, "same key");
    assert_eq!(after.generation, 1);

    // node3 signs: with node1 down only node2 + node3 can.
    stack.kill_node("node1");
    stack
        .wait_disconnected("node1", Duration::from_secs(10))
        .await
        .unwrap();
    let d = digest("restored node3 signs");
    let sig = c.sign(&key_id, &hex::encode(d), WAIT).await.unwrap();
    verify_independently(&after, &d, &sig);
    assert!(sig.signers.iter().any(|s| s == "node3"), "{sig:?}");
    stack.restart_node("node1").await.unwrap();
    stack
        .wait_connected(&["node1".to_owned()], Duration::from_secs(30))
        .await
        .unwrap();

    // The old backup is of generation 0: refused now, with what to do.
    let e = c.restore_key(&good).await.expect_err("stale");
    assert_eq!(e.code(), Some("CONFLICT"), "{e}");
    assert!(e.to_string().contains("take a new backup"), "{e}");
    // A new backup is of the new generation.
    cli_ok(&stack, &["key", "backup", &key_id, "--group", "vault"]);
    assert_eq!(
        c.get_key_backup(&key_id, "vault").await.unwrap().generation,
        1
    );
}
