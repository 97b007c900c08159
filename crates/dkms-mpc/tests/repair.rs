//! Repair end to end: lose a share, rebuild it from `threshold` helpers, refresh, sign.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use dkms_mpc::local::{Delivery, run_local, run_local_with};
use dkms_mpc::session_id::{SessionKind, session_id};
use dkms_mpc::{
    Curve, KeyShare, MpcError, PartyIndex, RepairConfig, RepairPublic, Session, SessionOutput,
    SignConfig, repair_helper, repair_recipient, sign,
};
use dkms_proto::NodeTag;
use std::time::Instant;

fn public_of_key(share: &KeyShare) -> RepairPublic {
    RepairPublic {
        key_id: share.key_id(),
        threshold: share.threshold(),
        participants: share.participants().to_vec(),
        public_key: share.public_key(),
        exportable: share.exportable(),
        curve: share.curve(),
    }
}

fn repair_id(share: &KeyShare, lost: PartyIndex, helpers: &[PartyIndex]) -> [u8; 32] {
    let all = tags(share.participants());
    let helper_tags: Vec<NodeTag> = helpers
        .iter()
        .map(|&h| all[usize::from(h) - 1].clone())
        .collect();
    session_id(
        &share.key_id(),
        share.curve().scheme(),
        &SessionKind::Repair {
            threshold: share.threshold(),
            participants: &all,
            encryption_keys: &keys_of(share.participants()),
            public_key: &share.public_key(),
            lost: &all[usize::from(lost) - 1],
            helpers: &helper_tags,
        },
        &[0xEF; 32],
    )
}

/// Helper sessions from `holders` (shares of the helpers), then the recipient's.
fn repair_sessions(
    holders: Vec<KeyShare>,
    public: RepairPublic,
    lost: PartyIndex,
) -> Vec<(PartyIndex, Box<dyn Session>)> {
    let helpers: Vec<PartyIndex> = holders.iter().map(KeyShare::my_index).collect();
    let cfg = RepairConfig {
        session_id: repair_id(&holders[0], lost, &helpers),
        lost,
        helpers,
    };
    let mut sessions: Vec<(PartyIndex, Box<dyn Session>)> = holders
        .into_iter()
        .map(|s| (s.my_index(), repair_helper(s, cfg.clone()).unwrap()))
        .collect();
    sessions.push((lost, repair_recipient(public, cfg, lost).unwrap()));
    sessions
}

/// Runs a repair; returns the recipient's share after checking the helpers' outputs.
fn run_repair(holders: Vec<KeyShare>, public: RepairPublic, lost: PartyIndex) -> KeyShare {
    let helpers = holders.len();
    let started = Instant::now();
    let mut outputs = run_local(repair_sessions(holders, public, lost)).unwrap();
    eprintln!("repair of party {lost}: {:?}", started.elapsed());
    let Some(SessionOutput::Key(share)) = outputs.pop() else {
        panic!("the recipient got no share");
    };
    assert_eq!(outputs.len(), helpers);
    assert!(outputs.iter().all(|o| matches!(o, SessionOutput::Repaired)));
    share
}

#[test]
fn two_of_three_lose_three_repair_refresh_every_pair_signs() {
    let shares = run_keygen(2, 3);
    let lost_scalar = scalar(&shares[2]);
    let stored_verifying_share = shares[0].verifying_share(3).unwrap();
    let public = public_of_key(&shares[0]);
    let mut shares = shares;
    drop(shares.pop()); // party 3's disk is gone

    let repaired = run_repair(copies(&shares), public, 3);
    assert_eq!(repaired.my_index(), 3);
    assert_eq!(repaired.key_id(), shares[0].key_id());
    assert_eq!(repaired.public_key(), shares[0].public_key());
    assert_eq!(repaired.participants(), shares[0].participants());
    assert!(repaired.needs_refresh());
    // The rebuilt share is the lost one, and matches the stored public package.
    assert_eq!(scalar(&repaired), lost_scalar);
    assert_eq!(repaired.verifying_share(3).unwrap(), stored_verifying_share);
    assert_eq!(public_of(&scalar(&repaired)), stored_verifying_share);
    for i in 1..=3 {
        assert_eq!(repaired.verifying_share(i), shares[0].verifying_share(i));
    }

    // A hollow share survives storage, but neither signs nor helps another repair.
    let repaired = copy(&repaired);
    assert!(repaired.needs_refresh());
    let r = sign(
        copy(&repaired),
        SignConfig {
            session_id: [1; 32],
            signers: vec![1, 3],
            digest: [2; 32],
        },
    );
    assert!(
        matches!(r, Err(MpcError::BadParameters(_))),
        "{r:?}",
        r = r.err()
    );
    let r = repair_helper(
        copy(&repaired),
        RepairConfig {
            session_id: [1; 32],
            lost: 1,
            helpers: vec![2, 3],
        },
    );
    assert!(matches!(r, Err(MpcError::BadParameters(_))));

    // The refresh gives party 3 a complete share; then every pair signs.
    shares.push(repaired);
    let refreshed = run_refresh(shares, 1);
    assert!(refreshed.iter().all(|s| !s.needs_refresh()));
    assert_ne!(scalar(&refreshed[2]), lost_scalar);
    for (k, signers) in [[1u8, 2], [1, 3], [2, 3]].iter().enumerate() {
        sign_and_verify(copies(&refreshed), signers, [k as u8 + 0x30; 32]);
    }

    // After the refresh, the refreshed package lets a later repair work again.
    let public = public_of_key(&refreshed[0]);
    let lost_again = scalar(&refreshed[0]);
    let again = run_repair(copies(&refreshed[1..]), public, 1);
    assert_eq!(scalar(&again), lost_again);
}

#[test]
fn three_of_five_repair_then_refresh_and_sign() {
    let shares = run_keygen(3, 5);
    let lost_scalar = scalar(&shares[1]);
    let public = public_of_key(&shares[0]);
    let helpers: Vec<KeyShare> = [0usize, 3, 4].iter().map(|&k| copy(&shares[k])).collect();
    let repaired = run_repair(helpers, public, 2);
    assert_eq!(scalar(&repaired), lost_scalar);
    let mut all: Vec<KeyShare> = shares
        .iter()
        .filter(|s| s.my_index() != 2)
        .map(copy)
        .collect();
    all.insert(1, repaired);
    let refreshed = run_refresh(all, 1);
    sign_and_verify(refreshed, &[2, 3, 5], [0x55; 32]);
}

#[test]
fn bad_repair_configs_are_refused() {
    let shares = run_keygen(2, 3);
    let cfg = |lost, helpers: &[PartyIndex]| RepairConfig {
        session_id: [3; 32],
        lost,
        helpers: helpers.to_vec(),
    };
    let helper_cases: [(PartyIndex, &[PartyIndex]); 7] = [
        (3, &[1]),
        (3, &[1, 2, 3]),
        (3, &[1, 3]),
        (3, &[1, 1]),
        (4, &[1, 2]),
        (0, &[1, 2]),
        (1, &[2, 3]), // party 1's own share is not among the helpers
    ];
    for (lost, helpers) in helper_cases {
        let r = repair_helper(copy(&shares[0]), cfg(lost, helpers));
        assert!(
            matches!(r, Err(MpcError::BadParameters(_))),
            "{lost} {helpers:?} accepted"
        );
    }
    // Helpers in any order are fine.
    assert!(repair_helper(copy(&shares[1]), cfg(3, &[2, 1])).is_ok());

    let public = public_of_key(&shares[0]);
    assert!(repair_recipient(public.clone(), cfg(3, &[1, 2]), 3).is_ok());
    for (lost, helpers, me) in [(3, &[1u8, 2][..], 2u8), (3, &[1], 3), (3, &[3, 1], 3)] {
        let r = repair_recipient(public.clone(), cfg(lost, helpers), me);
        assert!(matches!(r, Err(MpcError::BadParameters(_))));
    }
    let mut bad_key = public.clone();
    bad_key.public_key[0] = 9;
    assert!(matches!(
        repair_recipient(bad_key, cfg(3, &[1, 2]), 3),
        Err(MpcError::BadParameters(_))
    ));
}

#[test]
fn wrong_terms_and_confirmations_are_caught() {
    let shares = run_keygen(2, 3);
    let public = public_of_key(&shares[0]);
    let holders = || copies(&shares[..2]);

    // A term that does not add up: the recipient aborts (which helper lied is unknown).
    let err = run_local_with(
        repair_sessions(holders(), public.clone(), 3),
        |from, msg| {
            if from == 2 && msg.round == 2 {
                // helper, target, then the term scalar.
                msg.payload[10] ^= 1;
            }
            Delivery::Deliver
        },
    )
    .expect_err("a wrong term must fail");
    eprintln!("wrong term: {err}");
    assert!(matches!(err, MpcError::Aborted(_)), "{err}");

    // A term the recipient was not asked for a repair of another key: refused, blamed.
    let mut other = public.clone();
    other.public_key = run_keygen(2, 3)[0].public_key();
    let err = run_local(repair_sessions(holders(), other, 3)).expect_err("other key");
    eprintln!("other key: {err}");
    assert!(err.culprit().is_some(), "{err}");

    // A wrong confirmation from the recipient: the helper blames it.
    let err = run_local_with(
        repair_sessions(holders(), public.clone(), 3),
        |from, msg| {
            if from == 3 && msg.round == 3 && msg.to == 1 {
                msg.payload[5] ^= 1;
            }
            Delivery::Deliver
        },
    )
    .expect_err("a wrong confirmation must fail");
    assert_eq!(err.culprit(), Some(3), "{err}");

    // A silent helper stalls the recipient, which names it.
    let err = run_local_with(repair_sessions(holders(), public, 3), |from, msg| {
        if from == 1 && msg.round == 2 {
            Delivery::Drop
        } else {
            Delivery::Deliver
        }
    })
    .expect_err("must stall");
    assert!(err.to_string().contains("stalled"), "{err}");
}

/// The exportable bit fixed at creation is carried by a repair (from the announced public
/// data, which the helpers check), a refresh and a derivation.
#[test]
fn the_exportable_bit_survives_repair_refresh_and_derivation() {
    let mut shares: Vec<KeyShare> = run_keygen(2, 3)
        .into_iter()
        .map(|s| s.with_exportable(true))
        .collect();
    let public = public_of_key(&shares[0]);
    assert!(public.exportable);
    drop(shares.pop());
    let repaired = run_repair(copies(&shares), public, 3);
    assert!(repaired.exportable());
    shares.push(repaired);
    let refreshed = run_refresh(shares, 1);
    assert!(refreshed.iter().all(KeyShare::exportable));
    assert!(refreshed[0].derive(&[7]).unwrap().exportable());
    assert!(
        !run_keygen(2, 2)[0].exportable(),
        "not exportable by default"
    );
}

#[test]
fn a_p256_key_loses_a_member_is_repaired_refreshed_and_signs() {
    let mut shares = run_keygen_on(Curve::P256, 2, 3);
    let public = public_of_key(&shares[0]);
    assert_eq!(public.curve, Curve::P256);
    drop(shares.remove(1)); // party 2's disk is gone
    let repaired = run_repair(copies(&shares), public, 2);
    assert_eq!(repaired.curve(), Curve::P256);
    assert!(repaired.needs_refresh());
    let third = shares.pop().unwrap();
    let first = shares.pop().unwrap();
    let refreshed = run_refresh(vec![first, repaired, third], 9);
    sign_and_verify(copies(&refreshed), &[1, 2], [0x61; 32]);
    sign_and_verify(refreshed, &[2, 3], [0x62; 32]);
}
