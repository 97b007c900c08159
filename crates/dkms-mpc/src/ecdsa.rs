//! ECDSA helpers over public data, for the gateway: it checks every signature a session
//! returns before handing it out and presents keys in the usual encodings. secp256k1 goes
//! through k256, P-256 through p256; both are RustCrypto's `ecdsa` underneath.

use crate::curve::Curve;
use crate::error::MpcError;

/// The same functions for each curve crate, whose APIs are identical.
macro_rules! per_curve {
    ($module:ident, $krate:ident, $name:literal) => {
        mod $module {
            use crate::error::MpcError;
            use $krate::ecdsa::signature::hazmat::PrehashVerifier;
            use $krate::ecdsa::{RecoveryId, Signature, VerifyingKey};
            use $krate::pkcs8::{EncodePublicKey, LineEnding};

            pub(super) fn parse_key(public_key_sec1: &[u8]) -> Result<$krate::PublicKey, MpcError> {
                $krate::PublicKey::from_sec1_bytes(public_key_sec1).map_err(|_| {
                    MpcError::Crypto(concat!("not a valid SEC1 ", $name, " public key").into())
                })
            }

            fn parse_rs(rs: &[u8]) -> Result<Signature, MpcError> {
                Signature::from_slice(rs).map_err(|_| {
                    MpcError::Crypto("r or s is zero or not below the group order".into())
                })
            }

            pub(super) fn verify(
                public_key_sec1: &[u8],
                digest: &[u8; 32],
                sig65: &[u8; 65],
            ) -> Result<(), MpcError> {
                let key = VerifyingKey::from(parse_key(public_key_sec1)?);
                let sig = parse_rs(&sig65[..64])?;
                let v = RecoveryId::from_byte(sig65[64]).ok_or_else(|| {
                    MpcError::Crypto(format!("recovery id {} is not 0..=3", sig65[64]))
                })?;
                if sig.normalize_s() != sig {
                    return Err(MpcError::Crypto("signature is not low-S normalized".into()));
                }
                key.verify_prehash(digest, &sig)
                    .map_err(|_| MpcError::Crypto("signature does not verify".into()))?;
                let recovered = VerifyingKey::recover_from_prehash(digest, &sig, v)
                    .map_err(|_| MpcError::Crypto("public key recovery failed".into()))?;
                if recovered != key {
                    return Err(MpcError::Crypto(
                        "recovery id does not recover the signing key".into(),
                    ));
                }
                Ok(())
            }

            pub(super) fn pem(public_key_sec1: &[u8]) -> Result<String, MpcError> {
                parse_key(public_key_sec1)?
                    .to_public_key_pem(LineEnding::LF)
                    .map_err(|e| MpcError::Internal(format!("PEM encoding: {e}")))
            }
        }
    };
}

per_curve!(k1, k256, "secp256k1");
per_curve!(r1, p256, "P-256");

/// Checks a 65-byte `r ‖ s ‖ v` signature over a 32-byte digest: (r, s) verifies under the
/// key, s is in the lower half of the group order, and recovery with v yields the same key.
pub fn verify_signature(
    curve: Curve,
    public_key_sec1: &[u8],
    digest: &[u8; 32],
    sig65: &[u8],
) -> Result<(), MpcError> {
    let sig65: &[u8; 65] = sig65.try_into().map_err(|_| {
        MpcError::Crypto(format!(
            "signature must be 65 bytes (r ‖ s ‖ v), got {}",
            sig65.len()
        ))
    })?;
    match curve {
        Curve::Secp256k1 => k1::verify(public_key_sec1, digest, sig65),
        Curve::P256 => r1::verify(public_key_sec1, digest, sig65),
    }
}

/// SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`), LF line endings.
pub fn public_key_pem(curve: Curve, public_key_sec1: &[u8]) -> Result<String, MpcError> {
    match curve {
        Curve::Secp256k1 => k1::pem(public_key_sec1),
        Curve::P256 => r1::pem(public_key_sec1),
    }
}

/// EIP-55 checksummed Ethereum address (`0x…`) of a secp256k1 key.
pub fn eth_address(public_key_sec1: &[u8]) -> Result<String, MpcError> {
    let key = k1::parse_key(public_key_sec1)?;
    Ok(dkls23::secp256k1::compute_eth_address(key.as_affine()))
}

/// ASN.1 DER `ECDSA-Sig-Value` of the (r, s) part of a 64- or 65-byte signature. The
/// encoding is the same on both curves; r and s are checked against secp256k1's group
/// order, the larger of the two, so every valid signature of either curve encodes.
pub fn signature_der(sig65: &[u8]) -> Result<Vec<u8>, MpcError> {
    let rs = match sig65.len() {
        64 | 65 => &sig65[..64],
        n => {
            return Err(MpcError::Crypto(format!(
                "signature must be 64 or 65 bytes, got {n}"
            )));
        }
    };
    let sig = k256::ecdsa::Signature::from_slice(rs)
        .map_err(|_| MpcError::Crypto("r or s is zero or not below the group order".into()))?;
    Ok(sig.to_der().as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use k256::ecdsa::{Signature, SigningKey};

    fn keypair() -> (SigningKey, Vec<u8>) {
        let sk = SigningKey::from_slice(&[0x42; 32]).unwrap();
        let pk = sk.verifying_key().to_sec1_point(true).as_bytes().to_vec();
        (sk, pk)
    }

    fn sign(sk: &SigningKey, digest: &[u8; 32]) -> [u8; 65] {
        let (sig, v) = sk.sign_prehash_recoverable(digest);
        let mut out = [0u8; 65];
        out[..64].copy_from_slice(&sig.to_bytes());
        out[64] = v.to_byte();
        out
    }

    #[test]
    fn verifies_good_and_refuses_bad_signatures() {
        let (sk, pk) = keypair();
        let digest = [7u8; 32];
        let sig = sign(&sk, &digest);
        verify_signature(Curve::Secp256k1, &pk, &digest, &sig).unwrap();

        // Uncompressed key works too.
        let unc = sk.verifying_key().to_sec1_point(false).as_bytes().to_vec();
        verify_signature(Curve::Secp256k1, &unc, &digest, &sig).unwrap();

        // Other digest.
        assert!(verify_signature(Curve::Secp256k1, &pk, &[8u8; 32], &sig).is_err());
        // Wrong recovery id.
        let mut bad_v = sig;
        bad_v[64] ^= 1;
        assert!(verify_signature(Curve::Secp256k1, &pk, &digest, &bad_v).is_err());
        bad_v[64] = 4;
        assert!(verify_signature(Curve::Secp256k1, &pk, &digest, &bad_v).is_err());
        // High-S twin of a valid signature.
        let parsed = Signature::from_slice(&sig[..64]).unwrap();
        let (r, s) = parsed.split_scalars();
        let high = Signature::from_scalars(r.to_bytes(), (-*s).to_bytes()).unwrap();
        let mut high_sig = [0u8; 65];
        high_sig[..64].copy_from_slice(&high.to_bytes());
        high_sig[64] = sig[64] ^ 1;
        assert!(verify_signature(Curve::Secp256k1, &pk, &digest, &high_sig).is_err());
        // Lengths and garbage.
        assert!(verify_signature(Curve::Secp256k1, &pk, &digest, &sig[..64]).is_err());
        assert!(verify_signature(Curve::Secp256k1, &pk, &digest, &[0u8; 65]).is_err());
        assert!(verify_signature(Curve::Secp256k1, &[2u8; 33], &digest, &sig).is_err());
        // Another key.
        let other = SigningKey::from_slice(&[0x43; 32]).unwrap();
        let other_pk = other
            .verifying_key()
            .to_sec1_point(true)
            .as_bytes()
            .to_vec();
        assert!(verify_signature(Curve::Secp256k1, &other_pk, &digest, &sig).is_err());
    }

    #[test]
    fn encodings() {
        let (sk, pk) = keypair();
        let pem = public_key_pem(Curve::Secp256k1, &pk).unwrap();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        use k256::pkcs8::DecodePublicKey;
        let back = k256::PublicKey::from_public_key_pem(&pem).unwrap();
        assert_eq!(back.to_sec1_bytes().as_ref(), pk.as_slice());

        let addr = eth_address(&pk).unwrap();
        assert!(addr.starts_with("0x") && addr.len() == 42);
        assert_ne!(addr.to_lowercase(), addr, "EIP-55 mixes case");

        let digest = [7u8; 32];
        let sig = sign(&sk, &digest);
        let der = signature_der(&sig).unwrap();
        let parsed = Signature::from_der(&der).unwrap();
        assert_eq!(parsed.to_bytes().as_slice(), &sig[..64]);
        assert_eq!(signature_der(&sig[..64]).unwrap(), der);
        assert!(signature_der(&sig[..10]).is_err());
    }

    #[test]
    fn known_eth_address() {
        // Private key 1: the generator's well-known address.
        let sk = SigningKey::from_slice(&{
            let mut b = [0u8; 32];
            b[31] = 1;
            b
        })
        .unwrap();
        let pk = sk.verifying_key().to_sec1_point(true).as_bytes().to_vec();
        assert_eq!(
            eth_address(&pk).unwrap(),
            "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf"
        );
    }

    #[test]
    fn p256_signatures_verify_and_encode() {
        use p256::ecdsa::SigningKey;
        let sk = SigningKey::from_slice(&[0x42; 32]).unwrap();
        let pk = sk.verifying_key().to_sec1_point(true).as_bytes().to_vec();
        let digest = [9u8; 32];
        let (sig, _) = sk.sign_prehash_recoverable(&digest);
        let sig = sig.normalize_s();
        let recid = (0..4u8)
            .find(|&v| {
                let mut s65 = [0u8; 65];
                s65[..64].copy_from_slice(&sig.to_bytes());
                s65[64] = v;
                verify_signature(Curve::P256, &pk, &digest, &s65).is_ok()
            })
            .unwrap();
        let mut s65 = [0u8; 65];
        s65[..64].copy_from_slice(&sig.to_bytes());
        s65[64] = recid;
        // The same bytes are no secp256k1 signature of this key: the curve matters.
        assert!(verify_signature(Curve::Secp256k1, &pk, &digest, &s65).is_err());
        assert!(verify_signature(Curve::P256, &pk, &[8u8; 32], &s65).is_err());
        let pem = public_key_pem(Curve::P256, &pk).unwrap();
        use p256::pkcs8::DecodePublicKey;
        let back = p256::PublicKey::from_public_key_pem(&pem).unwrap();
        assert_eq!(back, p256::PublicKey::from_sec1_bytes(&pk).unwrap());
        let der = signature_der(&s65).unwrap();
        assert_eq!(
            p256::ecdsa::Signature::from_der(&der)
                .unwrap()
                .to_bytes()
                .as_slice(),
            &s65[..64]
        );
    }
}
