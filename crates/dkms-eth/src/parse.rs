//! Strings from the client's JSON into alloy values, each failure naming its field.

use alloy_primitives::{Address, B256, Bytes, hex};

use crate::TxError;

/// Largest call data accepted: far above real calls and contract deployments (EIP-3860 caps
/// init code at 48 KiB), small enough that one request cannot hold much memory.
pub const MAX_DATA_LEN: usize = 128 * 1024;

/// The hex digits after a mandatory `0x`, all checked to be hex digits.
fn hex_digits<'a>(field: &str, s: &'a str) -> Result<&'a str, TxError> {
    let digits = s
        .strip_prefix("0x")
        .ok_or_else(|| TxError::MissingHexPrefix {
            field: field.to_owned(),
        })?;
    if let Some(i) = digits.bytes().position(|b| !b.is_ascii_hexdigit()) {
        return Err(TxError::InvalidHexChar {
            field: field.to_owned(),
            position: i + 2,
        });
    }
    Ok(digits)
}

/// Exactly `N` bytes of 0x-hex.
fn fixed<const N: usize>(field: &str, s: &str) -> Result<[u8; N], TxError> {
    let digits = hex_digits(field, s)?;
    if digits.len() != 2 * N {
        return Err(TxError::WrongLength {
            field: field.to_owned(),
            expected: N,
            got: digits.len(),
        });
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(digits, &mut out).map_err(|_| TxError::OddHexLength {
        field: field.to_owned(),
    })?;
    Ok(out)
}

/// A 20-byte address; when the client used mixed case it claimed an EIP-55 checksum, so the
/// checksum is enforced to catch a mistyped address before value is sent to it.
pub fn address(field: &str, s: &str) -> Result<Address, TxError> {
    let bytes = fixed::<20>(field, s)?;
    let digits = s.strip_prefix("0x").unwrap_or(s);
    let has_upper = digits.bytes().any(|b| b.is_ascii_uppercase());
    let has_lower = digits.bytes().any(|b| b.is_ascii_lowercase());
    if has_upper && has_lower && Address::parse_checksummed(s, None).is_err() {
        return Err(TxError::BadChecksum {
            field: field.to_owned(),
        });
    }
    Ok(Address::from(bytes))
}

pub fn storage_key(field: &str, s: &str) -> Result<B256, TxError> {
    fixed::<32>(field, s).map(B256::from)
}

/// Call data: `0x` alone is empty data.
pub fn data(s: &str) -> Result<Bytes, TxError> {
    const FIELD: &str = "data";
    let digits = hex_digits(FIELD, s)?;
    if digits.len() % 2 != 0 {
        return Err(TxError::OddHexLength {
            field: FIELD.to_owned(),
        });
    }
    if digits.len() / 2 > MAX_DATA_LEN {
        return Err(TxError::DataTooLong {
            len: digits.len() / 2,
            max: MAX_DATA_LEN,
        });
    }
    hex::decode(digits)
        .map(Bytes::from)
        .map_err(|_| TxError::OddHexLength {
            field: FIELD.to_owned(),
        })
}

/// An amount of wei as JSON clients write it: decimal, or 0x-hex as in JSON-RPC quantities.
/// Sign characters and whitespace are refused, which `from_str_radix` alone would not do.
pub fn wei(field: &'static str, s: &str) -> Result<u128, TxError> {
    let (digits, radix) = match s.strip_prefix("0x") {
        Some(h) => (h, 16),
        None => (s, 10),
    };
    let well_formed = !digits.is_empty()
        && digits.bytes().all(|b| {
            if radix == 16 {
                b.is_ascii_hexdigit()
            } else {
                b.is_ascii_digit()
            }
        });
    if !well_formed {
        return Err(TxError::InvalidNumber { field });
    }
    // Only overflow is left once the digits are known good.
    u128::from_str_radix(digits, radix).map_err(|_| TxError::NumberTooLarge { field })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn wei_forms() {
        assert_eq!(wei("value", "0").unwrap(), 0);
        assert_eq!(wei("value", "0x0").unwrap(), 0);
        assert_eq!(wei("value", "0x00ff").unwrap(), 255);
        assert_eq!(wei("value", "1000000000000000000").unwrap(), 10u128.pow(18));
        assert_eq!(
            wei("value", "340282366920938463463374607431768211455").unwrap(),
            u128::MAX
        );
        assert_eq!(
            wei("value", &format!("0x{}", "f".repeat(32))).unwrap(),
            u128::MAX
        );
        for bad in [
            "", "0x", "+1", "-1", " 1", "1 ", "1e18", "0X10", "0xg", "1_000",
        ] {
            assert_eq!(
                wei("value", bad),
                Err(TxError::InvalidNumber { field: "value" }),
                "{bad:?}"
            );
        }
        for big in [
            "340282366920938463463374607431768211456".to_owned(),
            format!("0x1{}", "0".repeat(32)),
        ] {
            assert_eq!(
                wei("value", &big),
                Err(TxError::NumberTooLarge { field: "value" })
            );
        }
        // Leading zeros do not overflow.
        assert_eq!(wei("value", &format!("0x{}1", "0".repeat(200))).unwrap(), 1);
    }

    #[test]
    fn address_case_rules() {
        // EIP-55's own examples.
        let good = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
        let a = address("to", good).unwrap();
        assert_eq!(a, address("to", &good.to_lowercase()).unwrap());
        let upper = format!("0x{}", good[2..].to_uppercase());
        assert_eq!(a, address("to", &upper).unwrap());
        let flipped = good.replacen("aAeb", "aaEb", 1);
        assert_eq!(
            address("to", &flipped),
            Err(TxError::BadChecksum { field: "to".into() })
        );
    }

    #[test]
    fn hex_errors_point_at_the_problem() {
        assert_eq!(
            address("to", "5aaeb6053f3e94c9b9a09f33669435e7ef1beaed"),
            Err(TxError::MissingHexPrefix { field: "to".into() })
        );
        assert_eq!(
            address("to", "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaez"),
            Err(TxError::InvalidHexChar {
                field: "to".into(),
                position: 41
            })
        );
        assert_eq!(
            address("to", "0x5aaeb6"),
            Err(TxError::WrongLength {
                field: "to".into(),
                expected: 20,
                got: 6
            })
        );
        assert_eq!(
            data("0xabc"),
            Err(TxError::OddHexLength {
                field: "data".into()
            })
        );
        assert_eq!(data("0x").unwrap().len(), 0);
        // Non-ASCII must not split a char boundary or panic.
        assert!(matches!(
            address("to", "0xé5aaeb6053f3e94c9b9a09f33669435e7ef1bea"),
            Err(TxError::InvalidHexChar { position: 2, .. })
        ));
    }

    #[test]
    fn data_limit() {
        let max = format!("0x{}", "ab".repeat(MAX_DATA_LEN));
        assert_eq!(data(&max).unwrap().len(), MAX_DATA_LEN);
        let over = format!("0x{}", "ab".repeat(MAX_DATA_LEN + 1));
        assert_eq!(
            data(&over),
            Err(TxError::DataTooLong {
                len: MAX_DATA_LEN + 1,
                max: MAX_DATA_LEN
            })
        );
    }
}
