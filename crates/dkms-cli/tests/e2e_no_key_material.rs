//! The gateway never holds key material: after key generation and signing, its database
//! files and its log contain no secret share and no run of share bytes, raw or in hex.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use dkms_node::sealer::SoftwareSealer;
use dkms_node::store::NodeStore;
use dkms_testkit::Stack;
use std::collections::HashSet;
use std::sync::Arc;

/// Shares are compared in windows of this many bytes.
const WINDOW: usize = 48;

/// The haystack plus every run of hex digits in it, decoded (hex is how a leak into a
/// text log or a TEXT column would look).
fn with_hex_decoded(raw: &[u8]) -> Vec<u8> {
    let mut out = raw.to_vec();
    let mut start = None;
    for (i, b) in raw.iter().chain(std::iter::once(&b' ')).enumerate() {
        if b.is_ascii_hexdigit() {
            start.get_or_insert(i);
        } else if let Some(s) = start.take()
            && i - s >= 64
        {
            let run = &raw[s..i];
            for offset in [0, 1] {
                let even = (run.len() - offset) & !1;
                if let Ok(d) = hex::decode(&run[offset..offset + even]) {
                    out.push(0);
                    out.extend(d);
                }
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_database_and_log_hold_no_share_bytes() {
    let mut stack = Stack::start(BIN, 3).await.expect("stack");
    let c = stack.client.clone();
    let mut keys = Vec::new();
    for (parts, t) in [
        (&["node1", "node2", "node3"][..], 2),
        (&["node2", "node3"][..], 2),
    ] {
        let id = c.generate_key(&keygen_request(parts, t)).await.unwrap();
        let key = c.wait_key(&id, WAIT).await.unwrap();
        assert_eq!(key.status, "FINISHED");
        for i in 0..3 {
            let d = digest(&format!("leak {id} {i}"));
            let sig = c.sign(&id, &hex::encode(d), WAIT).await.unwrap();
            verify_independently(&key, &d, &sig);
        }
        keys.push(key);
    }
    // Stop the nodes so their stores can be opened here, and the gateway so its files are final.
    for t in ["node1", "node2", "node3"] {
        stack.kill_node(t);
    }
    stack.kill_gateway();

    let raw = stack.gateway_artifacts().unwrap();
    let log = std::fs::read(stack.gateway_log()).unwrap();
    assert!(raw.len() > 10_000 && log.len() > 1_000, "nothing to scan");
    let haystack = with_hex_decoded(&raw);

    // Positive control: public data the gateway does keep is found by this scan.
    for key in &keys {
        let pk = hex::decode(key.public_key_hex.as_deref().unwrap()).unwrap();
        assert!(
            contains(&haystack, &pk),
            "the scan must find the public key"
        );
    }

    let mut shares = 0;
    for t in ["node1", "node2", "node3"] {
        let dir = stack.node_dir(t);
        let sealer = Arc::new(SoftwareSealer::from_key_file(&dir.join("sealing.key")).unwrap());
        let store = NodeStore::open(&dir.join("node.redb"), sealer).unwrap();
        for key_id in store.list_shares().unwrap() {
            let bytes = store.get_share(&key_id).unwrap().unwrap();
            let share = dkms_mpc::KeyShare::from_bytes(&bytes).unwrap();
            let secret = share.secret_scalar_for_leak_tests();
            assert!(
                !contains(&haystack, &secret[..]),
                "{t}: secret share found raw"
            );
            let lower = hex::encode(secret.as_slice());
            assert!(
                !contains(&raw, lower.as_bytes()),
                "{t}: secret share found as hex"
            );
            assert!(
                !contains(&raw, lower.to_uppercase().as_bytes()),
                "{t}: secret share found as HEX"
            );
            // No window of the stored share appears anywhere either.
            let windows: HashSet<&[u8]> = bytes.windows(WINDOW).collect();
            let hit = haystack.windows(WINDOW).find(|w| windows.contains(w));
            assert!(
                hit.is_none(),
                "{t}: {WINDOW} share bytes found in the gateway's files"
            );
            // And the node's own sealed store does not hold the share in the clear.
            let on_disk = std::fs::read(dir.join("node.redb")).unwrap();
            assert!(
                !contains(&on_disk, &secret[..]),
                "{t}: share stored unsealed"
            );
            shares += 1;
        }
    }
    assert_eq!(shares, 5, "3 + 2 shares were scanned");
}
