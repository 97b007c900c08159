//! Key import end to end: parse an OpenSSL-made key, split it with the trusted dealer, sign
//! with every quorum, and carry each share to its node sealed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use dkms_mpc::envelope::EncryptionKeypair;
use dkms_mpc::import::{SecretScalar, open_share, parse_private_key_pem, seal_share, split};
use dkms_mpc::local::run_local;
use dkms_mpc::session_id::{SessionKind, session_id};
use dkms_mpc::{
    KeyShare, MpcError, PartyIndex, SessionOutput, ShareParticipant, SignConfig, Signature, sign,
};
use dkms_proto::NodeTag;
use k256::ecdsa::signature::hazmat::PrehashVerifier;
use k256::elliptic_curve::PrimeField;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/import");

fn read(name: &str) -> String {
    std::fs::read_to_string(format!("{FIXTURES}/{name}")).unwrap()
}

fn password() -> Vec<u8> {
    read("password.txt")
        .trim_end_matches('\n')
        .as_bytes()
        .to_vec()
}

fn expected_public() -> [u8; 33] {
    hex::decode(read("secp256k1.pub.txt").trim())
        .unwrap()
        .try_into()
        .unwrap()
}

fn expected_scalar() -> k256::Scalar {
    let bytes: [u8; 32] = hex::decode(read("secp256k1.scalar.txt").trim())
        .unwrap()
        .try_into()
        .unwrap();
    Option::from(k256::Scalar::from_repr(bytes.into())).unwrap()
}

fn keypair(i: u8) -> EncryptionKeypair {
    EncryptionKeypair::from_seed(&[i; 32])
}

fn tag(i: u8) -> NodeTag {
    format!("node{i}").parse().unwrap()
}

fn participants(n: u8) -> Vec<ShareParticipant> {
    (1..=n)
        .map(|i| ShareParticipant {
            tag: tag(i),
            encryption_key: keypair(i).public_key(),
        })
        .collect()
}

fn imported_key() -> SecretScalar {
    parse_private_key_pem(
        &read("secp256k1-pkcs8-scrypt.pem"),
        Some(password().as_slice()),
        dkms_mpc::Curve::Secp256k1,
    )
    .unwrap()
}

fn sign_with(shares: &[Vec<u8>], signers: &[PartyIndex], digest: [u8; 32]) -> Signature {
    let first = KeyShare::from_bytes(&shares[0]).unwrap();
    let all: Vec<NodeTag> = first.participants().iter().map(|p| p.tag.clone()).collect();
    let signer_tags: Vec<NodeTag> = signers
        .iter()
        .map(|&i| all[usize::from(i) - 1].clone())
        .collect();
    let sid = session_id(
        &first.key_id(),
        first.curve().scheme(),
        &SessionKind::Sign {
            threshold: first.threshold(),
            participants: &all,
            signers: &signer_tags,
            digest: &digest,
            derivation_path: &[],
        },
        &[0x5A; 32],
    );
    let sessions = signers
        .iter()
        .map(|&i| {
            let share = KeyShare::from_bytes(&shares[usize::from(i) - 1]).unwrap();
            let cfg = SignConfig {
                session_id: sid,
                signers: signers.to_vec(),
                digest,
            };
            (i, sign(share, cfg).unwrap())
        })
        .collect();
    let outputs = run_local(sessions).unwrap();
    let sigs: Vec<Signature> = outputs
        .into_iter()
        .map(|o| match o {
            SessionOutput::Signature(s) => s,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert!(sigs.iter().all(|s| *s == sigs[0]));
    sigs[0]
}

/// Verified with k256 alone, against the public key OpenSSL derived from the key file.
fn check_signature(digest: &[u8; 32], sig: &Signature) {
    let vk = k256::ecdsa::VerifyingKey::from_sec1_bytes(&expected_public()).unwrap();
    let parsed = k256::ecdsa::Signature::from_scalars(sig.r, sig.s).unwrap();
    vk.verify_prehash(digest, &parsed).unwrap();
    // And against k256's own reading of the plain SEC1 file.
    let sk = k256::SecretKey::from_sec1_pem(&read("secp256k1-sec1.pem")).unwrap();
    k256::ecdsa::VerifyingKey::from(sk.public_key())
        .verify_prehash(digest, &parsed)
        .unwrap();
}

/// Lagrange interpolation at 0 of the secret shares of `signers`.
fn interpolate(shares: &[Vec<u8>], signers: &[PartyIndex]) -> k256::Scalar {
    let mut secret = k256::Scalar::ZERO;
    for &i in signers {
        let share = KeyShare::from_bytes(&shares[usize::from(i) - 1]).unwrap();
        let bytes = share.secret_scalar_for_leak_tests();
        let y = Option::<k256::Scalar>::from(k256::Scalar::from_repr((*bytes).into())).unwrap();
        let xi = k256::Scalar::from(u64::from(i));
        let mut lambda = k256::Scalar::ONE;
        for &j in signers.iter().filter(|&&j| j != i) {
            let xj = k256::Scalar::from(u64::from(j));
            lambda *= xj * Option::<k256::Scalar>::from((xj - xi).invert()).unwrap();
        }
        secret += y * lambda;
    }
    secret
}

fn subsets(n: u8, t: usize) -> Vec<Vec<PartyIndex>> {
    let mut out = Vec::new();
    for mask in 0u32..(1 << n) {
        if mask.count_ones() as usize == t {
            out.push((1..=n).filter(|i| mask & (1 << (i - 1)) != 0).collect());
        }
    }
    out
}

fn split_and_check(t: u8, n: u8) -> (uuid::Uuid, Vec<Vec<u8>>) {
    let key = imported_key();
    assert_eq!(key.public_key(), expected_public());
    let key_id = uuid::Uuid::new_v4();
    let shares = split(&key, key_id, t, participants(n)).unwrap();
    assert_eq!(shares.len(), usize::from(n));
    for (position, share) in shares.iter().enumerate() {
        assert_eq!(usize::from(share.my_index()), position + 1);
        assert_eq!(share.key_id(), key_id);
        assert_eq!(share.threshold(), t);
        assert_eq!(share.participants(), participants(n).as_slice());
        assert_eq!(share.public_key(), expected_public());
    }
    let bytes: Vec<Vec<u8>> = shares.iter().map(|s| s.to_bytes().to_vec()).collect();
    (key_id, bytes)
}

#[test]
fn two_of_three_every_pair_signs() {
    let (_, shares) = split_and_check(2, 3);
    for signers in subsets(3, 2) {
        assert_eq!(interpolate(&shares, &signers), expected_scalar());
        let digest = [signers[0] * 16 + signers[1]; 32];
        let sig = sign_with(&shares, &signers, digest);
        check_signature(&digest, &sig);
    }
    // Fewer than t shares interpolate to something else.
    assert_ne!(interpolate(&shares, &[1]), expected_scalar());
}

#[test]
fn three_of_five_every_triple_signs() {
    let (_, shares) = split_and_check(3, 5);
    for signers in subsets(5, 3) {
        assert_eq!(interpolate(&shares, &signers), expected_scalar());
        let digest = [signers.iter().sum::<u8>(); 32];
        let sig = sign_with(&shares, &signers, digest);
        check_signature(&digest, &sig);
    }
    assert_ne!(interpolate(&shares, &[1, 2]), expected_scalar());
}

#[test]
fn every_format_splits_to_the_same_public_key() {
    for (name, pw) in [
        ("secp256k1-sec1.pem", None),
        ("secp256k1-sec1-ecparams.pem", None),
        ("secp256k1-pkcs8.pem", None),
        ("secp256k1-pkcs8-pbkdf2.pem", Some(password())),
        ("secp256k1-legacy-des3.pem", Some(password())),
    ] {
        let key =
            parse_private_key_pem(&read(name), pw.as_deref(), dkms_mpc::Curve::Secp256k1).unwrap();
        let shares = split(&key, uuid::Uuid::nil(), 2, participants(2)).unwrap();
        assert!(
            shares.iter().all(|s| s.public_key() == expected_public()),
            "{name}"
        );
    }
}

#[test]
fn two_splits_of_one_key_are_unrelated_sharings() {
    let key = imported_key();
    let a = split(&key, uuid::Uuid::nil(), 2, participants(3)).unwrap();
    let b = split(&key, uuid::Uuid::nil(), 2, participants(3)).unwrap();
    assert_eq!(a[0].public_key(), b[0].public_key());
    assert_ne!(
        *a[0].secret_scalar_for_leak_tests(),
        *b[0].secret_scalar_for_leak_tests()
    );
}

#[test]
fn bad_split_parameters_are_refused() {
    let key = imported_key();
    let bad = |t: u8, ps: Vec<ShareParticipant>| {
        matches!(
            split(&key, uuid::Uuid::nil(), t, ps),
            Err(MpcError::BadParameters(_))
        )
    };
    assert!(bad(1, participants(3)));
    assert!(bad(4, participants(3)));
    assert!(bad(2, participants(1)));
    assert!(bad(2, Vec::new()));
    let mut twice = participants(3);
    twice[2].tag = tag(1);
    assert!(bad(2, twice));
}

#[test]
fn sealed_shares_open_only_at_their_node() {
    let (key_id, stored) = split_and_check(2, 3);
    let shares: Vec<KeyShare> = stored
        .iter()
        .map(|b| KeyShare::from_bytes(b).unwrap())
        .collect();
    let sealed: Vec<Vec<u8>> = shares.iter().map(|s| seal_share(s).unwrap()).collect();
    for (k, s) in sealed.iter().enumerate() {
        let i = k as u8 + 1;
        // Round trip: the node gets exactly the share that was sealed.
        let opened = open_share(&keypair(i), &tag(i), &key_id, s).unwrap();
        assert_eq!(opened.to_bytes().as_slice(), stored[k].as_slice());
        assert_eq!(opened.my_index(), i);
        // Sealing is randomized.
        assert_ne!(&seal_share(&shares[k]).unwrap(), s);

        let other = i % 3 + 1;
        // Another node's key pair, or this node's key pair under another tag.
        assert!(open_share(&keypair(other), &tag(other), &key_id, s).is_err());
        assert!(open_share(&keypair(other), &tag(i), &key_id, s).is_err());
        assert!(open_share(&keypair(i), &tag(other), &key_id, s).is_err());
        // Another key id.
        assert!(open_share(&keypair(i), &tag(i), &uuid::Uuid::new_v4(), s).is_err());
    }

    let s = &sealed[0];
    let open = |b: &[u8]| open_share(&keypair(1), &tag(1), &key_id, b);
    // Flipped bits in the encapsulated key, the ciphertext and the tag.
    for at in [0, 31, 32, 33, s.len() / 2, s.len() - 17, s.len() - 1] {
        let mut bad = s.clone();
        bad[at] ^= 0x01;
        assert!(
            matches!(open(&bad), Err(MpcError::Crypto(_))),
            "flip at {at}"
        );
    }
    // Truncated, extended, empty.
    for bad in [&s[..s.len() - 1], &s[..48], &s[..47], &[][..]] {
        assert!(matches!(open(bad), Err(MpcError::Crypto(_))));
    }
    let mut longer = s.clone();
    longer.push(0);
    assert!(matches!(open(&longer), Err(MpcError::Crypto(_))));
}

#[test]
fn a_share_opens_only_with_the_key_its_participant_list_names() {
    // Node 1 is listed with node 9's encryption key: the share is sealed to that key, so
    // node 1's own key pair cannot open it, and the holder of the listed key can.
    let key = imported_key();
    let mut ps = participants(2);
    ps[0].encryption_key = keypair(9).public_key();
    let key_id = uuid::Uuid::nil();
    let shares = split(&key, key_id, 2, ps).unwrap();
    let sealed = seal_share(&shares[0]).unwrap();
    assert!(open_share(&keypair(1), &tag(1), &key_id, &sealed).is_err());
    assert!(open_share(&keypair(9), &tag(1), &key_id, &sealed).is_ok());
}
