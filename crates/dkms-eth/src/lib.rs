//! Ethereum transactions for `POST /api/mappic/dkms/sign/tx`.
//!
//! The client's JSON request becomes an alloy typed transaction; the nodes sign its signing
//! hash like any other digest; the threshold signature then becomes the raw transaction the
//! client broadcasts. All RLP and hashing is alloy's, so what is signed is exactly what an
//! Ethereum node will check. No I/O and no key material here.

mod error;
mod parse;

use alloy_consensus::{
    SignableTransaction, Transaction, TxEip1559, TxEip2930, TxLegacy, TypedTransaction,
};
use alloy_eips::{eip2718::Encodable2718, eip2930};
use alloy_primitives::{B256, Bytes, Signature, TxKind, U256, hex};
use serde::{Deserialize, Serialize};

pub use error::{SigPart, TxError};
pub use parse::MAX_DATA_LEN;

/// Transaction types the gateway signs. Named after alloy's `TxType`; alloy's `TxKind` is
/// call-or-create, which is `to` here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TxType {
    /// Pre-2718 transaction, always EIP-155 replay-protected here (never chain-less).
    Legacy,
    Eip2930,
    Eip1559,
}

impl TxType {
    pub fn as_str(self) -> &'static str {
        match self {
            TxType::Legacy => "legacy",
            TxType::Eip2930 => "eip2930",
            TxType::Eip1559 => "eip1559",
        }
    }
}

impl std::fmt::Display for TxType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The transaction part of a `sign/tx` body, kept as the client sent it (strings, not parsed
/// values) so the gateway can store it across an approval wait and rebuild the same tx.
/// The chain id is not in here: the gateway takes it from the request and passes it apart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TxRequest {
    #[serde(rename = "type")]
    pub kind: TxType,
    pub nonce: u64,
    /// 0x + 40 hex digits; absent or null creates a contract.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Wei, decimal or 0x-hex.
    pub value: String,
    pub gas_limit: u64,
    /// Legacy and EIP-2930 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gas_price: Option<String>,
    /// EIP-1559 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_fee_per_gas: Option<String>,
    /// EIP-1559 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_priority_fee_per_gas: Option<String>,
    /// 0x-hex call data or init code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// EIP-2930 and EIP-1559 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_list: Option<Vec<AccessListItem>>,
}

/// One EIP-2930 access list entry, in JSON-RPC's shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessListItem {
    pub address: String,
    #[serde(default)]
    pub storage_keys: Vec<String>,
}

/// What a policy or an approver needs to judge the transaction, without decoding it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxSummary {
    pub chain_id: u64,
    pub kind: TxType,
    pub nonce: u64,
    /// `None` for contract creation.
    pub to: Option<[u8; 20]>,
    pub value_wei: u128,
    /// The 4-byte function selector, when the data is long enough to have one.
    pub selector: Option<[u8; 4]>,
    pub gas_limit: u64,
    /// The most the sender can pay per gas: `gasPrice`, or `maxFeePerGas` for EIP-1559. With
    /// `gas_limit` and `value_wei` it bounds what the transaction can spend.
    pub max_fee_per_gas: u128,
}

/// A checked transaction ready to be signed. Only built by [`UnsignedTx::new`], so it always
/// is one of the three supported types, with a chain id.
#[derive(Debug, Clone, PartialEq)]
pub struct UnsignedTx {
    kind: TxType,
    tx: TypedTransaction,
}

/// A signed transaction as it is broadcast (`eth_sendRawTransaction`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTx {
    /// EIP-2718 encoding: the type byte and RLP body, or plain RLP for legacy.
    pub raw: Vec<u8>,
    /// keccak256 of `raw`: the hash block explorers show.
    pub hash: [u8; 32],
}

impl SignedTx {
    pub fn raw_hex(&self) -> String {
        hex::encode_prefixed(&self.raw)
    }

    pub fn hash_hex(&self) -> String {
        hex::encode_prefixed(self.hash)
    }
}

/// secp256k1 group order n, big-endian; byte-wise comparison of equal-length big-endian
/// arrays is numeric comparison, so no big-integer code is needed for the range checks.
const SECP256K1_N: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe,
    0xba, 0xae, 0xdc, 0xe6, 0xaf, 0x48, 0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c, 0xd0, 0x36, 0x41, 0x41,
];
/// floor(n / 2): the largest `s` Ethereum accepts (EIP-2).
const SECP256K1_HALF_N: [u8; 32] = [
    0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0x5d, 0x57, 0x6e, 0x73, 0x57, 0xa4, 0x50, 0x1d, 0xdf, 0xe9, 0x2f, 0x46, 0x68, 0x1b, 0x20, 0xa0,
];

fn required<'a>(
    kind: TxType,
    field: &'static str,
    v: &'a Option<String>,
) -> Result<&'a str, TxError> {
    v.as_deref().ok_or(TxError::Missing { field, kind })
}

fn refuse_if_set(kind: TxType, field: &'static str, present: bool) -> Result<(), TxError> {
    if present {
        Err(TxError::NotAllowed { field, kind })
    } else {
        Ok(())
    }
}

fn access_list(items: Option<&[AccessListItem]>) -> Result<eip2930::AccessList, TxError> {
    let items = items.unwrap_or_default();
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let address = parse::address(&format!("accessList[{i}].address"), &item.address)?;
        let storage_keys = item
            .storage_keys
            .iter()
            .enumerate()
            .map(|(j, k)| parse::storage_key(&format!("accessList[{i}].storageKeys[{j}]"), k))
            .collect::<Result<Vec<_>, _>>()?;
        out.push(eip2930::AccessListItem {
            address,
            storage_keys,
        });
    }
    Ok(eip2930::AccessList(out))
}

impl UnsignedTx {
    /// Checks every field against `req.kind` first (what is missing, what does not belong),
    /// then parses values, so the first error is the most useful one.
    pub fn new(chain_id: u64, req: &TxRequest) -> Result<UnsignedTx, TxError> {
        let kind = req.kind;
        if chain_id == 0 {
            return Err(TxError::ChainIdZero);
        }
        match kind {
            TxType::Legacy | TxType::Eip2930 => {
                required(kind, "gasPrice", &req.gas_price)?;
                refuse_if_set(kind, "maxFeePerGas", req.max_fee_per_gas.is_some())?;
                refuse_if_set(
                    kind,
                    "maxPriorityFeePerGas",
                    req.max_priority_fee_per_gas.is_some(),
                )?;
                if kind == TxType::Legacy {
                    refuse_if_set(kind, "accessList", req.access_list.is_some())?;
                }
            }
            TxType::Eip1559 => {
                refuse_if_set(kind, "gasPrice", req.gas_price.is_some())?;
                required(kind, "maxFeePerGas", &req.max_fee_per_gas)?;
                required(kind, "maxPriorityFeePerGas", &req.max_priority_fee_per_gas)?;
            }
        }
        if req.nonce == u64::MAX {
            return Err(TxError::NonceTooLarge);
        }
        let to = match &req.to {
            Some(s) => TxKind::Call(parse::address("to", s)?),
            None => TxKind::Create,
        };
        let value = U256::from(parse::wei("value", &req.value)?);
        let input = match &req.data {
            Some(s) => parse::data(s)?,
            None => Bytes::new(),
        };
        let (nonce, gas_limit) = (req.nonce, req.gas_limit);

        let tx = match kind {
            TxType::Legacy => TypedTransaction::Legacy(TxLegacy {
                chain_id: Some(chain_id),
                nonce,
                gas_price: parse::wei("gasPrice", required(kind, "gasPrice", &req.gas_price)?)?,
                gas_limit,
                to,
                value,
                input,
            }),
            TxType::Eip2930 => TypedTransaction::Eip2930(TxEip2930 {
                chain_id,
                nonce,
                gas_price: parse::wei("gasPrice", required(kind, "gasPrice", &req.gas_price)?)?,
                gas_limit,
                to,
                value,
                access_list: access_list(req.access_list.as_deref())?,
                input,
            }),
            TxType::Eip1559 => {
                let max_fee_per_gas = parse::wei(
                    "maxFeePerGas",
                    required(kind, "maxFeePerGas", &req.max_fee_per_gas)?,
                )?;
                let max_priority_fee_per_gas = parse::wei(
                    "maxPriorityFeePerGas",
                    required(kind, "maxPriorityFeePerGas", &req.max_priority_fee_per_gas)?,
                )?;
                if max_priority_fee_per_gas > max_fee_per_gas {
                    return Err(TxError::PriorityFeeAboveMaxFee {
                        priority: max_priority_fee_per_gas,
                        max: max_fee_per_gas,
                    });
                }
                TypedTransaction::Eip1559(TxEip1559 {
                    chain_id,
                    nonce,
                    gas_limit,
                    max_fee_per_gas,
                    max_priority_fee_per_gas,
                    to,
                    value,
                    access_list: access_list(req.access_list.as_deref())?,
                    input,
                })
            }
        };
        Ok(UnsignedTx { kind, tx })
    }

    /// The 32-byte digest the nodes sign: keccak256 of the EIP-155 / EIP-2718 signing payload.
    pub fn signing_hash(&self) -> [u8; 32] {
        self.tx.signature_hash().0
    }

    pub fn summary(&self) -> TxSummary {
        let tx = &self.tx;
        let input = tx.input();
        // `new` always sets a chain id and stores a u128 value, so the fallbacks are unused.
        TxSummary {
            chain_id: tx.chain_id().unwrap_or_default(),
            kind: self.kind,
            nonce: tx.nonce(),
            to: tx.to().map(|a| a.into_array()),
            value_wei: u128::try_from(tx.value()).unwrap_or(u128::MAX),
            selector: input.get(..4).and_then(|s| <[u8; 4]>::try_from(s).ok()),
            gas_limit: tx.gas_limit(),
            max_fee_per_gas: tx.max_fee_per_gas(),
        }
    }

    /// Attaches a signature over [`Self::signing_hash`]. `r` and `s` are big-endian; `s` must
    /// already be low-S and `recovery_id` the y-parity (0 or 1), as the signing session
    /// returns them. The signature is not verified here: the gateway has already checked it
    /// against the key.
    pub fn encode_signed(
        &self,
        r: &[u8; 32],
        s: &[u8; 32],
        recovery_id: u8,
    ) -> Result<SignedTx, TxError> {
        let y_parity = match recovery_id {
            0 => false,
            1 => true,
            other => return Err(TxError::InvalidRecoveryId(other)),
        };
        if *r == [0; 32] || *r >= SECP256K1_N {
            return Err(TxError::InvalidSignature(SigPart::R));
        }
        if *s == [0; 32] || *s > SECP256K1_HALF_N {
            return Err(TxError::InvalidSignature(SigPart::S));
        }
        let sig = Signature::from_scalars_and_parity(B256::from(*r), B256::from(*s), y_parity);
        let envelope = self.tx.clone().into_envelope(sig);
        Ok(SignedTx {
            raw: envelope.encoded_2718(),
            hash: envelope.tx_hash().0,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use alloy_eips::eip2718::Decodable2718;

    fn req(kind: TxType) -> TxRequest {
        TxRequest {
            kind,
            nonce: 7,
            to: Some("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed".into()),
            value: "0x2386f26fc10000".into(),
            gas_limit: 60_000,
            gas_price: None,
            max_fee_per_gas: None,
            max_priority_fee_per_gas: None,
            data: Some("0xa9059cbb00".into()),
            access_list: None,
        }
    }

    /// EIP-155's "signing data": the exact payload alloy hashes for a legacy tx.
    #[test]
    fn eip155_signing_payload() {
        let r = TxRequest {
            kind: TxType::Legacy,
            nonce: 9,
            to: Some(format!("0x{}", "35".repeat(20))),
            value: "1000000000000000000".into(),
            gas_limit: 21_000,
            gas_price: Some("20000000000".into()),
            max_fee_per_gas: None,
            max_priority_fee_per_gas: None,
            data: None,
            access_list: None,
        };
        let tx = UnsignedTx::new(1, &r).unwrap();
        assert_eq!(
            hex::encode(tx.tx.encoded_for_signing()),
            "ec098504a817c800825208943535353535353535353535353535353535353535880de0b6b3a764000080018080"
        );
    }

    #[test]
    fn curve_constants() {
        // n/2 rounded down, checked with the arithmetic the constants let us avoid elsewhere.
        let n = U256::from_be_bytes(SECP256K1_N);
        assert_eq!(U256::from_be_bytes(SECP256K1_HALF_N), n >> 1);
    }

    /// The decoded raw tx carries exactly the unsigned tx that was hashed: nothing is lost or
    /// altered between `signing_hash` and `encode_signed`.
    #[test]
    fn raw_decodes_to_the_signed_tx() {
        let mut r2930 = req(TxType::Eip2930);
        r2930.gas_price = Some("1000".into());
        r2930.access_list = Some(vec![AccessListItem {
            address: "0x0000000000000000000000000000000000000001".into(),
            storage_keys: vec![format!("0x{}", "11".repeat(32))],
        }]);
        let mut r1559 = req(TxType::Eip1559);
        r1559.max_fee_per_gas = Some("30000000000".into());
        r1559.max_priority_fee_per_gas = Some("1".into());
        let mut rlegacy = req(TxType::Legacy);
        rlegacy.gas_price = Some("20000000000".into());
        rlegacy.to = None;

        for (r, ty) in [(rlegacy, 0u8), (r2930, 1), (r1559, 2)] {
            let tx = UnsignedTx::new(5, &r).unwrap();
            let signed = tx.encode_signed(&[1; 32], &[2; 32], 1).unwrap();
            if ty > 0 {
                assert_eq!(signed.raw[0], ty);
            }
            let env = alloy_consensus::TxEnvelope::decode_2718(&mut signed.raw.as_slice()).unwrap();
            assert_eq!(env.tx_hash().0, signed.hash);
            let (back, sig) = {
                let s = env.into_signed();
                let sig = *s.signature();
                (s.strip_signature(), sig)
            };
            assert_eq!(back, tx.tx);
            assert_eq!(sig.r(), U256::from_be_bytes([1; 32]));
            assert_eq!(sig.s(), U256::from_be_bytes([2; 32]));
            assert!(sig.v());
        }
    }

    #[test]
    fn summary_fields() {
        let mut r = req(TxType::Eip1559);
        r.max_fee_per_gas = Some("100".into());
        r.max_priority_fee_per_gas = Some("2".into());
        let s = UnsignedTx::new(10, &r).unwrap().summary();
        assert_eq!(s.chain_id, 10);
        assert_eq!(s.kind, TxType::Eip1559);
        assert_eq!(s.nonce, 7);
        assert_eq!(s.value_wei, 10_000_000_000_000_000);
        assert_eq!(s.selector, Some([0xa9, 0x05, 0x9c, 0xbb]));
        assert_eq!(s.gas_limit, 60_000);
        assert_eq!(s.max_fee_per_gas, 100);
        assert_eq!(s.to.unwrap()[..2], [0x5a, 0xae]);

        r.data = Some("0xa9059c".into());
        r.to = None;
        let s = UnsignedTx::new(10, &r).unwrap().summary();
        assert_eq!((s.selector, s.to), (None, None));
    }
}
