//! Property tests of the private-key parser (untrusted input of key/import): arbitrary
//! text, and real PEM files with bytes changed, removed or cut, give a key or an error,
//! never a panic.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use dkms_mpc::import::parse_private_key_pem;
use proptest::prelude::*;

const FIXTURES: &[&str] = &[
    include_str!("fixtures/import/p256-sec1.pem"),
    include_str!("fixtures/import/p256-pkcs8.pem"),
    include_str!("fixtures/import/ed25519-pkcs8.pem"),
];

fn all_fixtures() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/import");
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|x| x == "pem"))
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    v.extend(FIXTURES.iter().map(|s| s.to_string()));
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn arbitrary_text_never_panics(s in "\\PC{0,400}", pw in proptest::option::of("\\PC{0,12}")) {
        let _ = parse_private_key_pem(&s, pw.as_deref().map(str::as_bytes), dkms_mpc::Curve::Secp256k1);
    }

    #[test]
    fn damaged_pem_files_never_panic(
        pick in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<bool>(),
    ) {
        let files = all_fixtures();
        prop_assume!(!files.is_empty());
        let mut bytes = files[pick.index(files.len())].clone().into_bytes();
        let i = at.index(bytes.len().max(1)).min(bytes.len().saturating_sub(1));
        if cut {
            bytes.truncate(i);
        } else if !bytes.is_empty() {
            bytes[i] = byte;
        }
        let text = String::from_utf8_lossy(&bytes);
        let _ = parse_private_key_pem(&text, Some(b"dkms import test passphrase"), dkms_mpc::Curve::Secp256k1);
        let _ = parse_private_key_pem(&text, None, dkms_mpc::Curve::Secp256k1);
        let _ = parse_private_key_pem(&text, None, dkms_mpc::Curve::P256);
    }
}
