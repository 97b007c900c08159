//! Random transactions signed the way the gateway will: the signing hash goes to a signer,
//! (r, s, recovery id) come back, `encode_signed` builds the raw tx. libsecp256k1 must recover
//! the signer from the hash, and alloy's decoder must read back every field we put in.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use alloy_consensus::{Transaction, TxEnvelope};
use alloy_eips::eip2718::Decodable2718;
use alloy_primitives::Address;
use dkms_eth::{AccessListItem, TxRequest, TxType, UnsignedTx};
use k256::ecdsa::SigningKey;
use proptest::prelude::*;

fn hex0x(bytes: &[u8]) -> String {
    format!("0x{}", hex::encode(bytes))
}

/// Addresses in each form a client may send: lower, upper, EIP-55 checksummed.
fn address_text(bytes: [u8; 20], form: u8) -> String {
    match form % 3 {
        0 => hex0x(&bytes),
        1 => format!("0x{}", hex::encode_upper(bytes)),
        _ => Address::from(bytes).to_checksum(None),
    }
}

fn wei_text(v: u128, as_hex: bool) -> String {
    if as_hex {
        format!("{v:#x}")
    } else {
        v.to_string()
    }
}

fn access_list_strategy() -> impl Strategy<Value = Vec<([u8; 20], Vec<[u8; 32]>)>> {
    prop::collection::vec(
        (
            any::<[u8; 20]>(),
            prop::collection::vec(any::<[u8; 32]>(), 0..3),
        ),
        0..3,
    )
}

#[derive(Debug, Clone)]
struct Case {
    chain_id: u64,
    req: TxRequest,
    key: [u8; 32],
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        prop_oneof![
            Just(TxType::Legacy),
            Just(TxType::Eip2930),
            Just(TxType::Eip1559)
        ],
        1..=u64::MAX,
        0..u64::MAX,
        prop::option::of((any::<[u8; 20]>(), any::<u8>())),
        (any::<u128>(), any::<bool>()),
        any::<u64>(),
        (any::<u128>(), any::<u128>(), any::<bool>()),
        prop::option::of(prop::collection::vec(any::<u8>(), 0..300)),
        prop::option::of(access_list_strategy()),
        any::<[u8; 32]>(),
    )
        .prop_map(
            |(
                kind,
                chain_id,
                nonce,
                to,
                (value, value_hex),
                gas_limit,
                (f1, f2, fee_hex),
                data,
                al,
                key,
            )| {
                let (max_fee, prio) = (f1.max(f2), f1.min(f2));
                let access_list = if kind == TxType::Legacy {
                    None
                } else {
                    al.map(|items| {
                        items
                            .into_iter()
                            .map(|(a, keys)| AccessListItem {
                                address: address_text(a, keys.len() as u8),
                                storage_keys: keys.iter().map(|k| hex0x(k)).collect(),
                            })
                            .collect()
                    })
                };
                let (gas_price, max_fee_per_gas, max_priority_fee_per_gas) = match kind {
                    TxType::Eip1559 => (
                        None,
                        Some(wei_text(max_fee, fee_hex)),
                        Some(wei_text(prio, !fee_hex)),
                    ),
                    _ => (Some(wei_text(f1, fee_hex)), None, None),
                };
                Case {
                    chain_id,
                    key,
                    req: TxRequest {
                        kind,
                        nonce,
                        to: to.map(|(a, form)| address_text(a, form)),
                        value: wei_text(value, value_hex),
                        gas_limit,
                        gas_price,
                        max_fee_per_gas,
                        max_priority_fee_per_gas,
                        data: data.map(|d| hex0x(&d)),
                        access_list,
                    },
                }
            },
        )
}

fn parse_u128(s: &str) -> u128 {
    match s.strip_prefix("0x") {
        Some(h) => u128::from_str_radix(h, 16).unwrap(),
        None => s.parse().unwrap(),
    }
}

fn parse_hex(s: &str) -> Vec<u8> {
    hex::decode(s.strip_prefix("0x").unwrap()).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn signed_tx_recovers_and_round_trips(case in case_strategy()) {
        // Keys outside [1, n-1] are not keys; skip them rather than bias the strategy.
        let Ok(key) = SigningKey::from_slice(&case.key) else { return Ok(()); };
        let req = &case.req;
        let tx = UnsignedTx::new(case.chain_id, req).unwrap();
        let hash = tx.signing_hash();

        let (r, s, recid) = common::sign(&key, &hash);
        let signed = tx.encode_signed(&r, &s, recid).unwrap();

        // Independent recovery: libsecp256k1 + keccak, not alloy.
        prop_assert_eq!(common::recover_secp256k1(&hash, &r, &s, recid), common::k256_address(&key));
        prop_assert_eq!(signed.hash, common::keccak(&signed.raw));

        // Alloy's decoder reads back what the client asked for.
        let env = TxEnvelope::decode_2718_exact(&signed.raw).unwrap();
        let type_byte = match req.kind { TxType::Legacy => 0u8, TxType::Eip2930 => 1, TxType::Eip1559 => 2 };
        prop_assert_eq!(alloy_eips::Typed2718::ty(&env), type_byte);
        if type_byte > 0 {
            prop_assert_eq!(signed.raw[0], type_byte);
        }
        prop_assert_eq!(env.tx_hash().0, signed.hash);
        prop_assert_eq!(env.signature_hash().0, hash);
        prop_assert_eq!(env.chain_id(), Some(case.chain_id));
        prop_assert_eq!(env.nonce(), req.nonce);
        prop_assert_eq!(env.gas_limit(), req.gas_limit);
        let want_to = req.to.as_deref().map(|t| <[u8; 20]>::try_from(parse_hex(t)).unwrap());
        prop_assert_eq!(env.to().map(|a| a.into_array()), want_to);
        prop_assert_eq!(env.value(), alloy_primitives::U256::from(parse_u128(&req.value)));
        prop_assert_eq!(env.input().to_vec(), req.data.as_deref().map(parse_hex).unwrap_or_default());
        match req.kind {
            TxType::Eip1559 => {
                prop_assert_eq!(env.max_fee_per_gas(), parse_u128(req.max_fee_per_gas.as_deref().unwrap()));
                prop_assert_eq!(env.max_priority_fee_per_gas(), Some(parse_u128(req.max_priority_fee_per_gas.as_deref().unwrap())));
                prop_assert_eq!(env.gas_price(), None);
            }
            _ => prop_assert_eq!(env.gas_price(), Some(parse_u128(req.gas_price.as_deref().unwrap()))),
        }
        let got_al: Vec<(Vec<u8>, Vec<Vec<u8>>)> = env
            .access_list()
            .map(|al| al.iter().map(|i| (i.address.to_vec(), i.storage_keys.iter().map(|k| k.to_vec()).collect())).collect())
            .unwrap_or_default();
        let want_al: Vec<(Vec<u8>, Vec<Vec<u8>>)> = req
            .access_list
            .iter()
            .flatten()
            .map(|i| (parse_hex(&i.address), i.storage_keys.iter().map(|k| parse_hex(k)).collect()))
            .collect();
        prop_assert_eq!(got_al, want_al);
        let sig = env.signature();
        prop_assert_eq!(sig.r().to_be_bytes::<32>(), r);
        prop_assert_eq!(sig.s().to_be_bytes::<32>(), s);
        prop_assert_eq!(sig.v(), recid == 1);

        // The summary agrees with the transaction.
        let sum = tx.summary();
        prop_assert_eq!(sum.chain_id, case.chain_id);
        prop_assert_eq!(sum.kind, req.kind);
        prop_assert_eq!(sum.to, want_to);
        prop_assert_eq!(sum.value_wei, parse_u128(&req.value));
        let data = req.data.as_deref().map(parse_hex).unwrap_or_default();
        prop_assert_eq!(sum.selector, data.get(..4).map(|s| <[u8; 4]>::try_from(s).unwrap()));
    }

    /// The stored request (JSON) rebuilds the same transaction after an approval wait.
    #[test]
    fn request_survives_json_storage(case in case_strategy()) {
        let json = serde_json::to_string(&case.req).unwrap();
        let back: TxRequest = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(&back, &case.req);
        prop_assert_eq!(
            UnsignedTx::new(case.chain_id, &back).unwrap().signing_hash(),
            UnsignedTx::new(case.chain_id, &case.req).unwrap().signing_hash()
        );
    }

    /// Arbitrary strings in every field: errors, never a panic.
    #[test]
    fn arbitrary_strings_never_panic(
        chain_id in any::<u64>(),
        kind in prop_oneof![Just(TxType::Legacy), Just(TxType::Eip2930), Just(TxType::Eip1559)],
        to in prop::option::of(".{0,50}"),
        value in ".{0,45}",
        fees in (prop::option::of(".{0,40}"), prop::option::of(".{0,40}"), prop::option::of(".{0,40}")),
        data in prop::option::of("(0x)?[0-9a-fA-Fg ]{0,20}"),
        al_addr in ".{0,44}",
        al_key in ".{0,70}",
        r in any::<[u8; 32]>(), s in any::<[u8; 32]>(), recid in any::<u8>(),
    ) {
        let req = TxRequest {
            kind, nonce: 1, to, value, gas_limit: 21000,
            gas_price: fees.0, max_fee_per_gas: fees.1, max_priority_fee_per_gas: fees.2,
            data,
            access_list: Some(vec![AccessListItem { address: al_addr, storage_keys: vec![al_key] }]),
        };
        if let Ok(tx) = UnsignedTx::new(chain_id, &req) {
            let _ = tx.summary();
            let _ = tx.encode_signed(&r, &s, recid);
        }
    }
}
