//! BIP-32 non-hardened derivation of child keys, through dkls23's `derivation` module.
//! BIP-32 is defined on secp256k1 only; P-256 keys refuse derivation rather than use a
//! scheme no wallet would reproduce.
//!
//! Every party adds the same public tweak to its share, so `t` derived shares sign for the
//! child public key with the usual protocol and nobody learns more than before. Hardened
//! derivation needs the private key in one place and is not possible here.
//!
//! The chain code comes from the DKG (every party contributes to it) or, for an imported
//! key, from the dealer; it is not secret but, with the public key, it reveals every
//! non-hardened child public key.

use crate::curve::{Curve, compress};
use crate::error::MpcError;
use crate::share::{Body, KeyShare};
use dkls23::protocols::derivation::{DerivData, MAX_CHILD_NUMBER};
use k256::elliptic_curve::sec1::FromSec1Point;

/// The deepest path accepted. BIP-32 allows 255 levels; wallets use five.
pub const MAX_DEPTH: usize = 32;

/// Parses `m/44/60/0/0/7` (non-hardened indices below 2^31). `m` alone is the key itself.
pub fn parse_path(path: &str) -> Result<Vec<u32>, MpcError> {
    let bad = |m: String| Err(MpcError::BadParameters(m));
    let mut parts = path.split('/');
    if parts.next() != Some("m") {
        return bad(format!(
            "derivation path must start with \"m\", got {path:?}"
        ));
    }
    let mut out = Vec::new();
    for p in parts {
        if p.ends_with('\'') || p.ends_with('h') || p.ends_with('H') {
            return bad(format!(
                "hardened step {p:?}: threshold keys derive only non-hardened children"
            ));
        }
        // Digits only: no sign, no spaces, no leading zeros beyond "0".
        if p.is_empty()
            || !p.bytes().all(|b| b.is_ascii_digit())
            || (p.len() > 1 && p.starts_with('0'))
        {
            return bad(format!("derivation path step {p:?} is not an index"));
        }
        match p.parse::<u32>() {
            Ok(i) if i <= MAX_CHILD_NUMBER => out.push(i),
            _ => return bad(format!("derivation path step {p} is not below 2^31")),
        }
    }
    if out.len() > MAX_DEPTH {
        return bad(format!(
            "derivation path has {} steps; at most {MAX_DEPTH}",
            out.len()
        ));
    }
    Ok(out)
}

/// The canonical text of a parsed path.
pub fn format_path(path: &[u32]) -> String {
    let mut s = String::from("m");
    for i in path {
        s.push('/');
        s.push_str(&i.to_string());
    }
    s
}

/// The child public key (SEC1 compressed) at `path` under a key and its chain code, and
/// the child's chain code.
pub fn derive_public_key(
    public_key: &[u8],
    chain_code: &[u8; 32],
    path: &[u32],
) -> Result<([u8; 33], [u8; 32]), MpcError> {
    let pk = k256::AffinePoint::from_sec1_bytes(public_key)
        .map_err(|_| MpcError::BadParameters("the key's public key does not parse".into()))?;
    // Public derivation only: the share field stays zero and is never used.
    let mut data = DerivData::<k256::Secp256k1> {
        depth: 0,
        child_number: 0,
        parent_fingerprint: [0; 4],
        poly_point: k256::Scalar::ZERO,
        pk,
        chain_code: *chain_code,
    };
    for &i in path {
        data = data.derive_child(i).map_err(|e| {
            MpcError::BadParameters(format!("derivation at index {i}: {}", e.description))
        })?;
    }
    Ok((compress::<k256::Secp256k1>(&data.pk), data.chain_code))
}

impl KeyShare {
    /// This party's share of the child key at `path`: the same party, members and
    /// pairwise state, with the tweaked share and the child's public key and package.
    pub fn derive(&self, path: &[u32]) -> Result<KeyShare, MpcError> {
        let Body::Secp256k1(parts) = &self.body else {
            return Err(not_bip32(self.curve()));
        };
        let mut party = parts.party.clone();
        let mut package = parts.package.clone();
        for &i in path {
            let chain_code = *party.chain_code();
            package = package.derive_child(&chain_code, i).map_err(|e| {
                MpcError::BadParameters(format!("derivation at index {i}: {}", e.description))
            })?;
            party = party.derive_child(i, |_| String::new()).map_err(|e| {
                MpcError::BadParameters(format!("derivation at index {i}: {}", e.description))
            })?;
        }
        KeyShare::new(
            self.key_id(),
            self.threshold(),
            self.my_index(),
            self.participants().to_vec(),
            package,
            party,
        )
        .map(|child| child.with_exportable(self.exportable()))
        .map_err(MpcError::Internal)
    }

    /// The key's chain code (public, the same for every member). dkls23 makes one on
    /// every curve; only secp256k1 keys use it, for BIP-32.
    pub fn chain_code(&self) -> [u8; 32] {
        crate::share::with_parts!(&self.body, p => *p.party.chain_code())
    }
}

fn not_bip32(curve: Curve) -> MpcError {
    MpcError::BadParameters(format!(
        "BIP-32 derivation is defined for secp256k1 keys only; this key is on {curve}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_strictly() {
        assert_eq!(parse_path("m").unwrap(), Vec::<u32>::new());
        assert_eq!(parse_path("m/44/60/0/0/7").unwrap(), vec![44, 60, 0, 0, 7]);
        assert_eq!(parse_path("m/2147483647").unwrap(), vec![2_147_483_647]);
        for bad in [
            "",
            "44/60",
            "m/",
            "m//1",
            "m/44'",
            "m/1h",
            "m/-1",
            "m/+1",
            "m/ 1",
            "m/01",
            "m/2147483648",
            "m/a",
            "M/1",
            "m/1/",
        ] {
            assert!(parse_path(bad).is_err(), "{bad:?} must be refused");
        }
        let deep = format!("m{}", "/1".repeat(MAX_DEPTH + 1));
        assert!(parse_path(&deep).is_err());
        assert_eq!(format_path(&parse_path("m/3/0/9").unwrap()), "m/3/0/9");
    }
}
