//! End-to-end runs of key generation and signing through the public API.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use dkms_mpc::local::{Delivery, run_local, run_local_with};
use dkms_mpc::session_id::{SessionKind, session_id};
use dkms_mpc::{
    KeyShare, KeygenConfig, MpcError, PartyIndex, Session, SessionOutput, ShareParticipant,
    SignConfig, Signature, ecdsa, envelope::EncryptionKeypair, keygen, sign,
};
use dkms_proto::NodeTag;
use dkms_proto::node::Scheme;
use k256::ecdsa::signature::hazmat::PrehashVerifier;
use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Instant;

fn participants(n: u8) -> Vec<ShareParticipant> {
    (1..=n)
        .map(|i| ShareParticipant {
            tag: format!("node{i}").parse().unwrap(),
            encryption_key: EncryptionKeypair::from_seed(&[i; 32]).public_key(),
        })
        .collect()
}

fn tags(ps: &[ShareParticipant]) -> Vec<NodeTag> {
    ps.iter().map(|p| p.tag.clone()).collect()
}

fn keygen_sessions(key_id: uuid::Uuid, t: u8, n: u8) -> Vec<(PartyIndex, Box<dyn Session>)> {
    let ps = participants(n);
    let sid = session_id(
        &key_id,
        Scheme::Dkls23Secp256k1,
        &SessionKind::Keygen {
            threshold: t,
            participants: &tags(&ps),
            encryption_keys: &ps.iter().map(|p| p.encryption_key).collect::<Vec<_>>(),
        },
        &[0xAB; 32],
    );
    (1..=n)
        .map(|i| {
            let s = keygen(KeygenConfig {
                key_id,
                session_id: sid,
                threshold: t,
                participants: ps.clone(),
                my_index: i,
                curve: dkms_mpc::Curve::Secp256k1,
            })
            .unwrap();
            (i, s)
        })
        .collect()
}

fn run_keygen(t: u8, n: u8) -> Vec<KeyShare> {
    let key_id = uuid::Uuid::new_v4();
    let started = Instant::now();
    let outputs = run_local(keygen_sessions(key_id, t, n)).unwrap();
    eprintln!(
        "keygen {t}-of-{n}: {:?} total ({:?} per party)",
        started.elapsed(),
        started.elapsed() / u32::from(n)
    );
    let shares: Vec<KeyShare> = outputs
        .into_iter()
        .map(|o| match o {
            SessionOutput::Key(k) => k,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    for (i, s) in shares.iter().enumerate() {
        assert_eq!(s.my_index(), i as u8 + 1);
        assert_eq!(s.threshold(), t);
        assert_eq!(s.key_id(), key_id);
        assert_eq!(s.participants(), participants(n).as_slice());
        assert_eq!(s.public_key(), shares[0].public_key());
    }
    shares
}

/// Shares of one key per (t, n), generated once per test binary and kept as stored bytes.
fn cached_shares(t: u8, n: u8) -> Vec<KeyShare> {
    static C22: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    static C23: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    static C35: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    let cell = match (t, n) {
        (2, 2) => &C22,
        (2, 3) => &C23,
        (3, 5) => &C35,
        _ => panic!("no cache for {t}-of-{n}"),
    };
    cell.get_or_init(|| {
        run_keygen(t, n)
            .iter()
            .map(|s| s.to_bytes().to_vec())
            .collect()
    })
    .iter()
    .map(|b| KeyShare::from_bytes(b).unwrap())
    .collect()
}

fn sign_id(share: &KeyShare, signers: &[PartyIndex], digest: &[u8; 32]) -> [u8; 32] {
    let all = tags(share.participants());
    let signer_tags: Vec<NodeTag> = signers
        .iter()
        .map(|&i| all[usize::from(i) - 1].clone())
        .collect();
    session_id(
        &share.key_id(),
        Scheme::Dkls23Secp256k1,
        &SessionKind::Sign {
            threshold: share.threshold(),
            participants: &all,
            signers: &signer_tags,
            digest,
            derivation_path: &[],
        },
        &[0xCD; 32],
    )
}

fn sign_sessions(
    shares: Vec<KeyShare>,
    signers: &[PartyIndex],
    digest: [u8; 32],
) -> Vec<(PartyIndex, Box<dyn Session>)> {
    let sid = sign_id(&shares[0], signers, &digest);
    shares
        .into_iter()
        .filter(|s| signers.contains(&s.my_index()))
        .map(|s| {
            let i = s.my_index();
            let cfg = SignConfig {
                session_id: sid,
                signers: signers.to_vec(),
                digest,
            };
            (i, sign(s, cfg).unwrap())
        })
        .collect()
}

fn run_sign(shares: Vec<KeyShare>, signers: &[PartyIndex], digest: [u8; 32]) -> Signature {
    let started = Instant::now();
    let outputs = run_local(sign_sessions(shares, signers, digest)).unwrap();
    eprintln!(
        "sign with {signers:?}: {:?} total ({:?} per party)",
        started.elapsed(),
        started.elapsed() / signers.len() as u32
    );
    let sigs: Vec<Signature> = outputs
        .into_iter()
        .map(|o| match o {
            SessionOutput::Signature(s) => s,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(sigs.len(), signers.len());
    assert!(sigs.iter().all(|s| *s == sigs[0]), "all signers agree");
    sigs[0]
}

/// Checks with k256 alone: verifies, low-S, v recovers the key; then the gateway helper.
fn check_signature(public_key: &[u8; 33], digest: &[u8; 32], sig: &Signature) {
    let vk = k256::ecdsa::VerifyingKey::from_sec1_bytes(public_key).unwrap();
    let parsed = k256::ecdsa::Signature::from_scalars(sig.r, sig.s).unwrap();
    assert_eq!(parsed.normalize_s(), parsed, "low-S");
    vk.verify_prehash(digest, &parsed).unwrap();
    assert!(sig.v <= 1);
    let recovered = k256::ecdsa::VerifyingKey::recover_from_prehash(
        digest,
        &parsed,
        k256::ecdsa::RecoveryId::from_byte(sig.v).unwrap(),
    )
    .unwrap();
    assert_eq!(recovered, vk);
    ecdsa::verify_signature(
        dkms_mpc::Curve::Secp256k1,
        public_key,
        digest,
        &sig.to_bytes(),
    )
    .unwrap();
}

#[test]
fn two_of_two_keygen_sign_and_eth_recovery() {
    let shares = cached_shares(2, 2);
    let pk = shares[0].public_key();
    let digest = [0x11; 32];
    let sig = run_sign(shares, &[2, 1], digest);
    check_signature(&pk, &digest, &sig);

    // The Ethereum address recovered from (r, s, v) is the key's address.
    let parsed = k256::ecdsa::Signature::from_scalars(sig.r, sig.s).unwrap();
    let recovered = k256::ecdsa::VerifyingKey::recover_from_prehash(
        &digest,
        &parsed,
        k256::ecdsa::RecoveryId::from_byte(sig.v).unwrap(),
    )
    .unwrap();
    let recovered_sec1 = recovered.to_sec1_point(false);
    assert_eq!(
        ecdsa::eth_address(recovered_sec1.as_bytes()).unwrap(),
        ecdsa::eth_address(&pk).unwrap()
    );
    // And the DER form parses back to the same (r, s).
    let der = ecdsa::signature_der(&sig.to_bytes()).unwrap();
    assert_eq!(k256::ecdsa::Signature::from_der(&der).unwrap(), parsed);
    assert!(
        ecdsa::public_key_pem(dkms_mpc::Curve::Secp256k1, &pk)
            .unwrap()
            .contains("BEGIN PUBLIC KEY")
    );
}

#[test]
fn two_of_three_every_pair_signs() {
    for signers in [[1u8, 2], [1, 3], [2, 3], [3, 1]] {
        let shares = cached_shares(2, 3);
        let pk = shares[0].public_key();
        let digest = [signers[0] * 16 + signers[1]; 32];
        let sig = run_sign(shares, &signers, digest);
        check_signature(&pk, &digest, &sig);
    }
}

#[test]
fn three_of_five_keygen_and_sign() {
    let shares = cached_shares(3, 5);
    let pk = shares[0].public_key();
    for signers in [[1u8, 2, 3], [5, 2, 4]] {
        let digest = [signers[0]; 32];
        let sig = run_sign(cached_shares(3, 5), &signers, digest);
        check_signature(&pk, &digest, &sig);
    }
    drop(shares);
}

#[test]
fn stored_share_round_trips_and_refuses_damage() {
    let shares = cached_shares(2, 2);
    let bytes = shares[0].to_bytes();
    assert_eq!(bytes[0], dkms_mpc::SHARE_FORMAT_V2);
    let back = KeyShare::from_bytes(&bytes).unwrap();
    assert_eq!(back.to_bytes().as_slice(), bytes.as_slice());
    assert_eq!(back.public_key(), shares[0].public_key());

    let corrupt = |b: &[u8]| matches!(KeyShare::from_bytes(b), Err(MpcError::Corrupt(_)));
    assert!(corrupt(&[]));
    let mut v3 = bytes.to_vec();
    v3[0] = 3;
    assert!(corrupt(&v3), "an unknown version");
    // A version 2 body is not a version 1 share (the exportable byte is left over).
    let mut as_v1 = bytes.to_vec();
    as_v1[0] = dkms_mpc::SHARE_FORMAT_V1;
    assert!(corrupt(&as_v1));
    assert!(corrupt(&bytes[..bytes.len() - 1]));
    let mut trailing = bytes.to_vec();
    trailing.push(0);
    assert!(corrupt(&trailing));
    // my_index is the fourth field (after 16 key-id bytes and the threshold).
    let mut other_index = bytes.to_vec();
    assert_eq!(other_index[1 + 16 + 1], 1);
    other_index[1 + 16 + 1] = 2;
    assert!(corrupt(&other_index));
    let mut other_threshold = bytes.to_vec();
    other_threshold[1 + 16] = 3;
    assert!(corrupt(&other_threshold));
    // A flipped byte in the public key (after the participant list) is caught.
    let pk = shares[0].public_key();
    let at = bytes
        .windows(33)
        .position(|w| w == pk.as_slice())
        .expect("public key stored");
    let mut other_pk = bytes.to_vec();
    other_pk[at + 5] ^= 1;
    assert!(corrupt(&other_pk));

    // Signing with the reloaded shares works.
    let reloaded: Vec<KeyShare> = shares
        .iter()
        .map(|s| KeyShare::from_bytes(&s.to_bytes()).unwrap())
        .collect();
    let digest = [0x22; 32];
    let sig = run_sign(reloaded, &[1, 2], digest);
    check_signature(&pk, &digest, &sig);
}

#[test]
fn bad_sign_configs_are_refused() {
    let shares = cached_shares(2, 3);
    let sid = [1; 32];
    let digest = [2; 32];
    let cases: [&[u8]; 6] = [&[2, 3], &[1], &[1, 2, 3], &[1, 1], &[1, 4], &[0, 1]];
    for signers in cases {
        let share = KeyShare::from_bytes(&shares[0].to_bytes()).unwrap();
        let r = sign(
            share,
            SignConfig {
                session_id: sid,
                signers: signers.to_vec(),
                digest,
            },
        );
        assert!(
            matches!(r, Err(MpcError::BadParameters(_))),
            "{signers:?} accepted"
        );
    }
}

#[test]
fn bad_keygen_configs_are_refused() {
    let ps = participants(3);
    let ok = KeygenConfig {
        key_id: uuid::Uuid::nil(),
        session_id: [0; 32],
        threshold: 2,
        participants: ps.clone(),
        my_index: 1,
        curve: dkms_mpc::Curve::Secp256k1,
    };
    assert!(keygen(ok.clone()).is_ok());
    let mut dup = ps.clone();
    dup[2].tag = dup[0].tag.clone();
    for cfg in [
        KeygenConfig {
            threshold: 1,
            ..ok.clone()
        },
        KeygenConfig {
            threshold: 4,
            ..ok.clone()
        },
        KeygenConfig {
            my_index: 0,
            ..ok.clone()
        },
        KeygenConfig {
            my_index: 4,
            ..ok.clone()
        },
        KeygenConfig {
            participants: ps[..1].to_vec(),
            threshold: 1,
            ..ok.clone()
        },
        KeygenConfig {
            participants: dup,
            ..ok.clone()
        },
    ] {
        assert!(matches!(keygen(cfg), Err(MpcError::BadParameters(_))));
    }
}

/// Flips one byte of every message `sender` sends in `round`.
fn tamper(
    sender: PartyIndex,
    round: u8,
) -> impl FnMut(PartyIndex, &mut dkms_mpc::Outgoing) -> Delivery {
    move |from, msg| {
        if from == sender && msg.round == round {
            let mid = msg.payload.len() / 2;
            msg.payload[mid] ^= 0x40;
        }
        Delivery::Deliver
    }
}

#[test]
fn tampered_sign_messages_name_the_sender() {
    for round in [1u8, 2] {
        let shares = cached_shares(2, 3);
        let err = run_local_with(sign_sessions(shares, &[1, 3], [5; 32]), tamper(3, round))
            .expect_err("tampering must fail");
        eprintln!("sign tamper round {round}: {err}");
        assert_eq!(err.culprit(), Some(3), "round {round}: {err}");
    }
}

#[test]
fn tampered_keygen_message_names_the_sender() {
    let err = run_local_with(keygen_sessions(uuid::Uuid::new_v4(), 2, 2), tamper(2, 3))
        .expect_err("tampering must fail");
    eprintln!("keygen tamper: {err}");
    assert_eq!(err.culprit(), Some(2), "{err}");
}

#[test]
fn equivocated_confirmation_is_caught() {
    let err = run_local_with(keygen_sessions(uuid::Uuid::new_v4(), 2, 2), tamper(1, 4))
        .expect_err("a wrong confirmation must fail");
    eprintln!("confirmation tamper: {err}");
    assert_eq!(err.culprit(), Some(1), "{err}");
}

#[test]
fn silent_party_stalls_and_is_named() {
    let shares = cached_shares(2, 3);
    let err = run_local_with(sign_sessions(shares, &[1, 2], [6; 32]), |from, msg| {
        if from == 2 && msg.round == 2 {
            Delivery::Drop
        } else {
            Delivery::Deliver
        }
    })
    .expect_err("must stall");
    assert!(err.to_string().contains("waiting for [2]"), "{err}");
}

#[test]
fn session_refuses_strangers_duplicates_and_garbage() {
    let shares = cached_shares(2, 3);
    let mut sessions = sign_sessions(shares, &[1, 2], [7; 32]);
    let (_, mut s2) = sessions.pop().unwrap();
    let (_, mut s1) = sessions.pop().unwrap();
    assert_eq!(s1.waiting_for(), vec![2]);
    let from2 = s2.start().unwrap();
    assert_eq!(from2.len(), 1);
    assert_eq!((from2[0].to, from2[0].round), (1, 1));
    let payload = from2[0].payload.clone();

    // Input before start is buffered; start then runs round 2 at once.
    assert!(matches!(
        s1.receive(2, 1, &payload).unwrap(),
        dkms_mpc::Progress::Continue(v) if v.is_empty()
    ));
    let out = s1.start().unwrap();
    let rounds: Vec<u8> = out.iter().map(|m| m.round).collect();
    assert_eq!(rounds, vec![1, 2]);
    assert_eq!(s1.waiting_for(), vec![2]);

    let err = s1.receive(2, 1, &payload).unwrap_err();
    assert_eq!(err.culprit(), Some(2), "duplicate: {err}");
    // The session is over after an error.
    assert!(s1.receive(2, 2, &payload).is_err());
    assert!(s1.waiting_for().is_empty());

    let fresh = || {
        let shares = cached_shares(2, 3);
        let mut sessions = sign_sessions(shares, &[1, 2], [7; 32]);
        sessions.truncate(1);
        let (_, mut s) = sessions.pop().unwrap();
        s.start().unwrap();
        s
    };
    assert!(matches!(
        fresh().receive(3, 1, &payload),
        Err(MpcError::BadParameters(_))
    ));
    assert!(matches!(
        fresh().receive(1, 1, &payload),
        Err(MpcError::BadParameters(_))
    ));
    assert_eq!(
        fresh().receive(2, 0, &payload).unwrap_err().culprit(),
        Some(2)
    );
    assert_eq!(
        fresh().receive(2, 4, &payload).unwrap_err().culprit(),
        Some(2)
    );
    assert_eq!(
        fresh().receive(2, 1, b"junk").unwrap_err().culprit(),
        Some(2)
    );
    // A round-1 payload presented as round 3 does not decode.
    assert_eq!(
        fresh().receive(2, 3, &payload).unwrap_err().culprit(),
        Some(2)
    );
}

#[test]
fn keygen_refuses_misaddressed_round_messages() {
    // A relay that hands party 2 the round-2 message party 1 addressed to party 3 (valid
    // envelope aside) is caught by the sender/receiver labels inside the message.
    let mut sessions = keygen_sessions(uuid::Uuid::new_v4(), 2, 3);
    let mut out: BTreeMap<PartyIndex, Vec<dkms_mpc::Outgoing>> = BTreeMap::new();
    for (i, s) in &mut sessions {
        out.insert(*i, s.start().unwrap());
    }
    // Deliver all round-1 messages to party 1 only; it answers with round 2.
    let mut r2_from_1 = Vec::new();
    for from in [2u8, 3] {
        for m in out[&from].iter().filter(|m| m.to == 1) {
            if let dkms_mpc::Progress::Continue(v) =
                sessions[0].1.receive(from, 1, &m.payload).unwrap()
            {
                r2_from_1.extend(v);
            }
        }
    }
    let for_3 = r2_from_1
        .iter()
        .find(|m| m.to == 3 && m.round == 2)
        .unwrap();
    // Party 2 gets the message meant for 3.
    let err = sessions[1].1.receive(1, 2, &for_3.payload).unwrap_err();
    assert_eq!(err.culprit(), Some(1), "{err}");
}

const FIXTURE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

/// Regenerates the stored-share fixtures. Run by hand only when adding a new format
/// version (`cargo test -p dkms-mpc -- --ignored write_share_fixtures`); never overwrite
/// the files of an existing version.
#[test]
#[ignore]
fn write_share_fixtures() {
    let shares = run_keygen(2, 2);
    std::fs::create_dir_all(FIXTURE_DIR).unwrap();
    for s in &shares {
        let path = format!("{FIXTURE_DIR}/share-v1-2of2-p{}.bin", s.my_index());
        assert!(!std::path::Path::new(&path).exists(), "{path} exists");
        std::fs::write(&path, s.to_bytes().as_slice()).unwrap();
    }
    std::fs::write(
        format!("{FIXTURE_DIR}/share-v1-2of2-p1.txt"),
        format!("{}\n", hex::encode(shares[0].public_key())),
    )
    .unwrap();
}

/// Writes the version 2 fixtures (an exportable key). Run by hand once, as above.
#[test]
#[ignore]
fn write_share_fixtures_v2() {
    let shares = run_keygen(2, 2);
    for s in shares {
        let index = s.my_index();
        let s = s.with_exportable(true);
        let path = format!("{FIXTURE_DIR}/share-v2-2of2-p{index}.bin");
        assert!(!std::path::Path::new(&path).exists(), "{path} exists");
        std::fs::write(&path, s.to_bytes().as_slice()).unwrap();
        if index == 1 {
            std::fs::write(
                format!("{FIXTURE_DIR}/share-v2-2of2-p1.txt"),
                format!("{}\n", hex::encode(s.public_key())),
            )
            .unwrap();
        }
    }
}

/// Shares stored by format version 2 keep their exportable bit and sign.
#[test]
fn share_fixture_v2_still_reads_and_signs() {
    let read = |p: u8| std::fs::read(format!("{FIXTURE_DIR}/share-v2-2of2-p{p}.bin")).unwrap();
    let expected_pk =
        std::fs::read_to_string(format!("{FIXTURE_DIR}/share-v2-2of2-p1.txt")).unwrap();
    let b1 = read(1);
    assert_eq!(b1[0], dkms_mpc::SHARE_FORMAT_V2);
    let p1 = KeyShare::from_bytes(&b1).unwrap();
    assert_eq!(hex::encode(p1.public_key()), expected_pk.trim());
    assert!(p1.exportable());
    let p2 = KeyShare::from_bytes(&read(2)).unwrap();
    assert!(p2.exportable());
    let pk = p1.public_key();
    let digest = [0x44; 32];
    let sig = run_sign(vec![p1, p2], &[1, 2], digest);
    check_signature(&pk, &digest, &sig);
}

/// Shares stored by format version 1 stay readable and usable.
#[test]
fn share_fixture_v1_still_reads_and_signs() {
    let read = |p: u8| std::fs::read(format!("{FIXTURE_DIR}/share-v1-2of2-p{p}.bin")).unwrap();
    let expected_pk =
        std::fs::read_to_string(format!("{FIXTURE_DIR}/share-v1-2of2-p1.txt")).unwrap();
    let p1 = KeyShare::from_bytes(&read(1)).unwrap();
    assert_eq!(hex::encode(p1.public_key()), expected_pk.trim());
    assert!(
        !p1.exportable(),
        "shares from before the bit are not exportable"
    );
    assert_eq!((p1.my_index(), p1.threshold()), (1, 2));
    assert_eq!(p1.participants(), participants(2).as_slice());
    let p2 = KeyShare::from_bytes(&read(2)).unwrap();
    assert_eq!(p2.public_key(), p1.public_key());
    let pk = p1.public_key();
    let digest = [0x33; 32];
    let sig = run_sign(vec![p1, p2], &[1, 2], digest);
    check_signature(&pk, &digest, &sig);
}
