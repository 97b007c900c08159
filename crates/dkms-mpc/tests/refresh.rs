//! Refresh end to end: same key, new shares, old and new shares do not mix.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use dkms_mpc::local::{Delivery, run_local, run_local_with};
use dkms_mpc::{KeyShare, MpcError, PartyIndex, RefreshConfig, refresh};

/// Every `k`-subset of 1..=n, in order.
fn subsets(n: u8, k: u8) -> Vec<Vec<PartyIndex>> {
    let mut out = Vec::new();
    for mask in 0u32..(1 << n) {
        if mask.count_ones() == u32::from(k) {
            out.push((1..=n).filter(|i| mask & (1 << (i - 1)) != 0).collect());
        }
    }
    out
}

fn check_refresh(t: u8, n: u8, signing_sets: &[Vec<PartyIndex>]) {
    let old = run_keygen(t, n);
    let pk = old[0].public_key();
    let new = run_refresh(copies(&old), 1);

    for (o, s) in old.iter().zip(&new) {
        assert_ne!(
            scalar(o),
            scalar(s),
            "party {} kept its share",
            s.my_index()
        );
        // Each verifying share moved with its party's secret.
        let i = s.my_index();
        assert_eq!(s.verifying_share(i).unwrap(), public_of(&scalar(s)));
        assert_ne!(s.verifying_share(i), o.verifying_share(i));
        // The stored form round-trips.
        let bytes = s.to_bytes();
        let back = KeyShare::from_bytes(&bytes).unwrap();
        assert_eq!(back.to_bytes().as_slice(), bytes.as_slice());
        assert_eq!(scalar(&back), scalar(s));
    }
    // Every party's package is the same after the refresh.
    for s in &new {
        for i in 1..=n {
            assert_eq!(s.verifying_share(i), new[0].verifying_share(i));
        }
    }

    // t new shares combine to the key; the old share of party 1 with t-1 new ones does not.
    let firsts: Vec<usize> = (0..usize::from(t)).collect();
    let all_new: Vec<_> = firsts
        .iter()
        .map(|&k| (new[k].my_index(), scalar(&new[k])))
        .collect();
    assert_eq!(combine(&all_new), pk);
    let all_old: Vec<_> = firsts
        .iter()
        .map(|&k| (old[k].my_index(), scalar(&old[k])))
        .collect();
    assert_eq!(combine(&all_old), pk, "sanity: the old shares combined");
    let mut mixed = all_new.clone();
    mixed[0] = (old[0].my_index(), scalar(&old[0]));
    assert_ne!(combine(&mixed), pk, "old share 1 combined with new shares");

    for (k, signers) in signing_sets.iter().enumerate() {
        sign_and_verify(copies(&new), signers, [k as u8 + 1; 32]);
    }
}

#[test]
fn two_of_three_refresh_then_every_pair_signs() {
    check_refresh(2, 3, &subsets(3, 2));
}

#[test]
fn three_of_five_refresh_then_sign() {
    check_refresh(3, 5, &[vec![1, 2, 3], vec![3, 4, 5], vec![1, 3, 5]]);
}

#[test]
fn old_share_never_signs_with_new_ones() {
    let old = run_keygen(2, 3);
    let pk = old[0].public_key();
    let new = run_refresh(copies(&old), 1);
    for (old_party, new_party) in [(1u8, 2u8), (2, 1), (3, 1)] {
        let digest = [old_party * 16 + new_party; 32];
        let shares = vec![
            copy(&old[usize::from(old_party) - 1]),
            copy(&new[usize::from(new_party) - 1]),
        ];
        match try_sign(shares, &[old_party, new_party], digest) {
            Err(e) => eprintln!("old {old_party} + new {new_party}: {e}"),
            Ok(sigs) => {
                for sig in sigs {
                    assert!(
                        !verifies(&pk, &digest, &sig),
                        "old share {old_party} and new share {new_party} made a valid signature"
                    );
                }
            }
        }
    }
}

#[test]
fn refresh_twice_and_mixed_generations() {
    // Two refreshes in a row: each generation signs, the first does not mix with the second.
    let first = run_refresh(run_keygen(2, 3), 1);
    let second = run_refresh(copies(&first), 2);
    sign_and_verify(copies(&second), &[1, 3], [9; 32]);
    let mixed = vec![copy(&first[0]), copy(&second[2])];
    let pk = first[0].public_key();
    match try_sign(mixed, &[1, 3], [10; 32]) {
        Err(_) => {}
        Ok(sigs) => assert!(sigs.iter().all(|s| !verifies(&pk, &[10; 32], s))),
    }

    // A refresh with one party holding the previous generation aborts without blame.
    let shares = vec![copy(&second[0]), copy(&first[1]), copy(&second[2])];
    let err = run_local(refresh_sessions(shares, 3)).unwrap_err();
    assert!(matches!(err, MpcError::Aborted(_)), "{err}");
    assert_eq!(err.culprit(), None);
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
fn tampering_and_silence_are_attributed() {
    let base = run_keygen(2, 2);
    for (sender, round) in [(2u8, 3u8), (1, 4)] {
        let err = run_local_with(refresh_sessions(copies(&base), 1), tamper(sender, round))
            .expect_err("tampering must fail");
        eprintln!("refresh tamper {sender}/{round}: {err}");
        assert_eq!(err.culprit(), Some(sender), "{err}");
    }
    let err = run_local_with(refresh_sessions(copies(&base), 1), |from, msg| {
        if from == 2 && msg.round == 2 {
            Delivery::Drop
        } else {
            Delivery::Deliver
        }
    })
    .expect_err("must stall");
    assert!(err.to_string().contains("[2]"), "{err}");

    // Different session ids (parties told different things) never complete.
    let mut sessions = refresh_sessions(copies(&base[..1]), 1);
    let other = copy(&base[1]);
    sessions.push((
        2,
        refresh(
            other,
            RefreshConfig {
                session_id: refresh_id(&base[0], 2),
            },
        )
        .unwrap(),
    ));
    assert!(run_local(sessions).is_err());
}
