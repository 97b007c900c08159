use crate::TxType;

/// Why a transaction request or a signature was refused.
///
/// Every message names the JSON field (as the client spelled it, e.g. `accessList[0].address`)
/// and says what to change, because the gateway returns it as the text of an HTTP 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TxError {
    #[error("chainId must be 1 or greater")]
    ChainIdZero,

    #[error("nonce must be less than 2^64-1 (EIP-2681)")]
    NonceTooLarge,

    #[error("{field} is required for a {kind} transaction")]
    Missing { field: &'static str, kind: TxType },

    #[error("{field} is not allowed in a {kind} transaction{}", hint_for(field, *kind))]
    NotAllowed { field: &'static str, kind: TxType },

    #[error("{field} must be a hex string starting with 0x")]
    MissingHexPrefix { field: String },

    #[error("{field} has a character that is not a hex digit at position {position}")]
    InvalidHexChar { field: String, position: usize },

    #[error("{field} has an odd number of hex digits; every byte needs two")]
    OddHexLength { field: String },

    #[error(
        "{field} must be {expected} bytes (0x and {} hex digits), got {got} hex digits",
        expected * 2
    )]
    WrongLength {
        field: String,
        expected: usize,
        got: usize,
    },

    #[error(
        "{field} mixes upper and lower case but its EIP-55 checksum is wrong; \
         check the address, or send it all in lower case"
    )]
    BadChecksum { field: String },

    #[error("{field} must be a whole number of wei, in decimal digits or 0x-prefixed hex")]
    InvalidNumber { field: &'static str },

    #[error("{field} is larger than 2^128-1 wei, which is not supported")]
    NumberTooLarge { field: &'static str },

    #[error("maxPriorityFeePerGas ({priority} wei) must not be more than maxFeePerGas ({max} wei)")]
    PriorityFeeAboveMaxFee { priority: u128, max: u128 },

    #[error("data is {len} bytes; at most {max} bytes are allowed")]
    DataTooLong { len: usize, max: usize },

    #[error("recovery id must be 0 or 1, got {0}")]
    InvalidRecoveryId(u8),

    #[error("signature {0} is not a valid secp256k1 scalar for an Ethereum transaction")]
    InvalidSignature(SigPart),
}

/// Which half of an ECDSA signature was refused by [`crate::UnsignedTx::encode_signed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigPart {
    /// `r` must be in `[1, n-1]`.
    R,
    /// `s` must be in `[1, n/2]`: Ethereum refuses high-S signatures (EIP-2).
    S,
}

impl std::fmt::Display for SigPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SigPart::R => "r (must be in 1..n-1)",
            SigPart::S => "s (must be in 1..n/2, low-S)",
        })
    }
}

/// Points a client that mixed up fee models at the field it should have sent.
fn hint_for(field: &str, kind: TxType) -> &'static str {
    match (field, kind) {
        ("gasPrice", TxType::Eip1559) => "; use maxFeePerGas and maxPriorityFeePerGas",
        ("maxFeePerGas" | "maxPriorityFeePerGas", TxType::Legacy | TxType::Eip2930) => {
            "; use gasPrice, or type eip1559"
        }
        ("accessList", TxType::Legacy) => "; use type eip2930 or eip1559",
        _ => "",
    }
}
