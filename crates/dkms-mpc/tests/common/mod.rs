//! What the refresh and repair suites share: keygen, signing and checks through the public API.
#![allow(dead_code)]

use dkms_mpc::envelope::EncryptionKeypair;
use dkms_mpc::local::run_local;
use dkms_mpc::session_id::{SessionKind, session_id};
use dkms_mpc::{
    Curve, KeyShare, KeygenConfig, MpcError, PartyIndex, RefreshConfig, Session, SessionOutput,
    ShareParticipant, SignConfig, Signature, keygen, refresh, sign,
};
use dkms_proto::NodeTag;
use k256::ecdsa::signature::hazmat::PrehashVerifier;
use k256::elliptic_curve::PrimeField;
use k256::elliptic_curve::group::GroupEncoding;
use std::time::Instant;

pub fn participants(n: u8) -> Vec<ShareParticipant> {
    (1..=n)
        .map(|i| ShareParticipant {
            tag: format!("node{i}").parse().unwrap(),
            encryption_key: EncryptionKeypair::from_seed(&[i; 32]).public_key(),
        })
        .collect()
}

pub fn tags(ps: &[ShareParticipant]) -> Vec<NodeTag> {
    ps.iter().map(|p| p.tag.clone()).collect()
}

pub fn keys_of(ps: &[ShareParticipant]) -> Vec<[u8; 32]> {
    ps.iter().map(|p| p.encryption_key).collect()
}

pub fn keys(outputs: Vec<SessionOutput>) -> Vec<KeyShare> {
    outputs
        .into_iter()
        .map(|o| match o {
            SessionOutput::Key(k) => k,
            other => panic!("expected a key share, got {other:?}"),
        })
        .collect()
}

pub fn run_keygen(t: u8, n: u8) -> Vec<KeyShare> {
    run_keygen_on(Curve::Secp256k1, t, n)
}

pub fn run_keygen_on(curve: Curve, t: u8, n: u8) -> Vec<KeyShare> {
    let key_id = uuid::Uuid::new_v4();
    let ps = participants(n);
    let sid = session_id(
        &key_id,
        curve.scheme(),
        &SessionKind::Keygen {
            threshold: t,
            participants: &tags(&ps),
            encryption_keys: &ps.iter().map(|p| p.encryption_key).collect::<Vec<_>>(),
        },
        &[0xAB; 32],
    );
    let sessions = (1..=n)
        .map(|i| {
            let cfg = KeygenConfig {
                key_id,
                session_id: sid,
                threshold: t,
                participants: ps.clone(),
                my_index: i,
                curve,
            };
            (i, keygen(cfg).unwrap())
        })
        .collect();
    let started = Instant::now();
    let shares = keys(run_local(sessions).unwrap());
    eprintln!("keygen {t}-of-{n} on {curve}: {:?}", started.elapsed());
    assert!(shares.iter().all(|s| s.curve() == curve));
    shares
}

pub fn refresh_id(share: &KeyShare, nonce: u8) -> [u8; 32] {
    session_id(
        &share.key_id(),
        share.curve().scheme(),
        &SessionKind::Refresh {
            threshold: share.threshold(),
            participants: &tags(share.participants()),
            encryption_keys: &keys_of(share.participants()),
            public_key: &share.public_key(),
        },
        &[nonce; 32],
    )
}

pub fn refresh_sessions(shares: Vec<KeyShare>, nonce: u8) -> Vec<(PartyIndex, Box<dyn Session>)> {
    let sid = refresh_id(&shares[0], nonce);
    shares
        .into_iter()
        .map(|s| {
            let i = s.my_index();
            (i, refresh(s, RefreshConfig { session_id: sid }).unwrap())
        })
        .collect()
}

/// Refreshes all shares (every party of the key) and checks the public parts stay.
pub fn run_refresh(shares: Vec<KeyShare>, nonce: u8) -> Vec<KeyShare> {
    let before: Vec<_> = shares
        .iter()
        .map(|s| {
            (
                s.key_id(),
                s.threshold(),
                s.my_index(),
                s.participants().to_vec(),
                s.public_key(),
            )
        })
        .collect();
    let (t, n) = (shares[0].threshold(), shares.len());
    let started = Instant::now();
    let new = keys(run_local(refresh_sessions(shares, nonce)).unwrap());
    eprintln!(
        "refresh {t}-of-{n}: {:?} total ({:?} per party)",
        started.elapsed(),
        started.elapsed() / n as u32
    );
    for (s, b) in new.iter().zip(&before) {
        assert_eq!(
            (
                s.key_id(),
                s.threshold(),
                s.my_index(),
                s.participants().to_vec(),
                s.public_key()
            ),
            *b
        );
        assert!(!s.needs_refresh());
    }
    new
}

pub fn sign_sessions(
    shares: Vec<KeyShare>,
    signers: &[PartyIndex],
    digest: [u8; 32],
) -> Vec<(PartyIndex, Box<dyn Session>)> {
    let all = tags(shares[0].participants());
    let signer_tags: Vec<NodeTag> = signers
        .iter()
        .map(|&i| all[usize::from(i) - 1].clone())
        .collect();
    let sid = session_id(
        &shares[0].key_id(),
        shares[0].curve().scheme(),
        &SessionKind::Sign {
            threshold: shares[0].threshold(),
            participants: &all,
            signers: &signer_tags,
            digest: &digest,
            derivation_path: &[],
        },
        &[0xCD; 32],
    );
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

/// Signs with `signers` and returns every signer's signature, or the first error.
pub fn try_sign(
    shares: Vec<KeyShare>,
    signers: &[PartyIndex],
    digest: [u8; 32],
) -> Result<Vec<Signature>, MpcError> {
    let started = Instant::now();
    let outputs = run_local(sign_sessions(shares, signers, digest))?;
    eprintln!("sign with {signers:?}: {:?}", started.elapsed());
    Ok(outputs
        .into_iter()
        .map(|o| match o {
            SessionOutput::Signature(s) => s,
            other => panic!("expected a signature, got {other:?}"),
        })
        .collect())
}

/// Whether `sig` is a valid signature of `digest` under `public_key`, by k256 alone.
pub fn verifies(public_key: &[u8; 33], digest: &[u8; 32], sig: &Signature) -> bool {
    let vk = k256::ecdsa::VerifyingKey::from_sec1_bytes(public_key).unwrap();
    let Ok(parsed) = k256::ecdsa::Signature::from_scalars(sig.r, sig.s) else {
        return false;
    };
    vk.verify_prehash(digest, &parsed).is_ok()
}

/// The same for a P-256 key, by p256 alone.
pub fn verifies_p256(public_key: &[u8; 33], digest: &[u8; 32], sig: &Signature) -> bool {
    let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(public_key).unwrap();
    let Ok(parsed) = p256::ecdsa::Signature::from_scalars(sig.r, sig.s) else {
        return false;
    };
    vk.verify_prehash(digest, &parsed).is_ok()
}

/// Verifies with the independent verifier of the key's curve.
pub fn verifies_on(
    curve: Curve,
    public_key: &[u8; 33],
    digest: &[u8; 32],
    sig: &Signature,
) -> bool {
    match curve {
        Curve::Secp256k1 => verifies(public_key, digest, sig),
        Curve::P256 => verifies_p256(public_key, digest, sig),
    }
}

pub fn sign_and_verify(shares: Vec<KeyShare>, signers: &[PartyIndex], digest: [u8; 32]) {
    let pk = shares[0].public_key();
    let curve = shares[0].curve();
    let sigs = try_sign(shares, signers, digest).unwrap();
    assert_eq!(sigs.len(), signers.len());
    assert!(sigs.iter().all(|s| *s == sigs[0]), "all signers agree");
    assert!(
        verifies_on(curve, &pk, &digest, &sigs[0]),
        "signature verifies"
    );
}

/// A copy through the stored form (KeyShare is deliberately not Clone).
pub fn copy(share: &KeyShare) -> KeyShare {
    KeyShare::from_bytes(&share.to_bytes()).unwrap()
}

pub fn copies(shares: &[KeyShare]) -> Vec<KeyShare> {
    shares.iter().map(copy).collect()
}

pub fn scalar(share: &KeyShare) -> k256::Scalar {
    let bytes = share.secret_scalar_for_leak_tests();
    Option::from(k256::Scalar::from_repr((*bytes).into())).unwrap()
}

/// Σ λ_i(0)·s_i over the given (index, secret share) points, as a compressed point G·x.
pub fn combine(points: &[(PartyIndex, k256::Scalar)]) -> [u8; 33] {
    let mut secret = k256::Scalar::ZERO;
    for &(i, s) in points {
        let xi = k256::Scalar::from(u64::from(i));
        let mut num = k256::Scalar::ONE;
        let mut den = k256::Scalar::ONE;
        for &(j, _) in points {
            if j != i {
                let xj = k256::Scalar::from(u64::from(j));
                num *= xj;
                den *= xj - xi;
            }
        }
        secret += s * num * Option::<k256::Scalar>::from(den.invert()).unwrap();
    }
    let point = (k256::ProjectivePoint::GENERATOR * secret).to_affine();
    let mut out = [0u8; 33];
    out.copy_from_slice(&point.to_bytes());
    out
}

/// G·s as SEC1 compressed.
pub fn public_of(s: &k256::Scalar) -> [u8; 33] {
    let mut out = [0u8; 33];
    out.copy_from_slice(
        &(k256::ProjectivePoint::GENERATOR * s)
            .to_affine()
            .to_bytes(),
    );
    out
}
