//! ECDSA/secp256k1 helpers over public data, for the gateway: it checks every signature a
//! session returns before handing it out and presents keys in the usual encodings.

use crate::error::MpcError;
use k256::ecdsa::signature::hazmat::PrehashVerifier;
use k256::ecdsa::{RecoveryId, Signature, VerifyingKey};
use k256::pkcs8::{EncodePublicKey, LineEnding};

fn parse_key(public_key_sec1: &[u8]) -> Result<k256::PublicKey, MpcError> {
    k256::PublicKey::from_sec1_bytes(public_key_sec1)
        .map_err(|_| MpcError::Crypto("not a valid SEC1 secp256k1 public key".into()))
}

/// Splits `r ‖ s ‖ v` (65 bytes) into a signature and a recovery id.
fn parse_sig65(sig65: &[u8]) -> Result<(Signature, RecoveryId), MpcError> {
    if sig65.len() != 65 {
        return Err(MpcError::Crypto(format!(
            "signature must be 65 bytes (r ‖ s ‖ v), got {}",
            sig65.len()
        )));
    }
    let sig = Signature::from_slice(&sig65[..64])
        .map_err(|_| MpcError::Crypto("r or s is zero or not below the group order".into()))?;
    let v = RecoveryId::from_byte(sig65[64])
        .ok_or_else(|| MpcError::Crypto(format!("recovery id {} is not 0..=3", sig65[64])))?;
    Ok((sig, v))
}

/// Checks a 65-byte `r ‖ s ‖ v` signature over a 32-byte digest: (r, s) verifies under the
/// key, s is in the lower half of the group order, and recovery with v yields the same key.
pub fn verify_signature(
    public_key_sec1: &[u8],
    digest: &[u8; 32],
    sig65: &[u8],
) -> Result<(), MpcError> {
    let key = VerifyingKey::from(parse_key(public_key_sec1)?);
    let (sig, v) = parse_sig65(sig65)?;
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

/// SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`), LF line endings.
pub fn public_key_pem(public_key_sec1: &[u8]) -> Result<String, MpcError> {
    parse_key(public_key_sec1)?
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| MpcError::Internal(format!("PEM encoding: {e}")))
}

/// EIP-55 checksummed Ethereum address (`0x…`).
pub fn eth_address(public_key_sec1: &[u8]) -> Result<String, MpcError> {
    let key = parse_key(public_key_sec1)?;
    Ok(dkls23::secp256k1::compute_eth_address(key.as_affine()))
}

/// ASN.1 DER `ECDSA-Sig-Value` of the (r, s) part of a 64- or 65-byte signature.
pub fn signature_der(sig65: &[u8]) -> Result<Vec<u8>, MpcError> {
    let rs = match sig65.len() {
        64 | 65 => &sig65[..64],
        n => {
            return Err(MpcError::Crypto(format!(
                "signature must be 64 or 65 bytes, got {n}"
            )));
        }
    };
    let sig = Signature::from_slice(rs)
        .map_err(|_| MpcError::Crypto("r or s is zero or not below the group order".into()))?;
    Ok(sig.to_der().as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use k256::ecdsa::SigningKey;

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
        verify_signature(&pk, &digest, &sig).unwrap();

        // Uncompressed key works too.
        let unc = sk.verifying_key().to_sec1_point(false).as_bytes().to_vec();
        verify_signature(&unc, &digest, &sig).unwrap();

        // Other digest.
        assert!(verify_signature(&pk, &[8u8; 32], &sig).is_err());
        // Wrong recovery id.
        let mut bad_v = sig;
        bad_v[64] ^= 1;
        assert!(verify_signature(&pk, &digest, &bad_v).is_err());
        bad_v[64] = 4;
        assert!(verify_signature(&pk, &digest, &bad_v).is_err());
        // High-S twin of a valid signature.
        let parsed = Signature::from_slice(&sig[..64]).unwrap();
        let (r, s) = parsed.split_scalars();
        let high = Signature::from_scalars(r.to_bytes(), (-*s).to_bytes()).unwrap();
        let mut high_sig = [0u8; 65];
        high_sig[..64].copy_from_slice(&high.to_bytes());
        high_sig[64] = sig[64] ^ 1;
        assert!(verify_signature(&pk, &digest, &high_sig).is_err());
        // Lengths and garbage.
        assert!(verify_signature(&pk, &digest, &sig[..64]).is_err());
        assert!(verify_signature(&pk, &digest, &[0u8; 65]).is_err());
        assert!(verify_signature(&[2u8; 33], &digest, &sig).is_err());
        // Another key.
        let other = SigningKey::from_slice(&[0x43; 32]).unwrap();
        let other_pk = other
            .verifying_key()
            .to_sec1_point(true)
            .as_bytes()
            .to_vec();
        assert!(verify_signature(&other_pk, &digest, &sig).is_err());
    }

    #[test]
    fn encodings() {
        let (sk, pk) = keypair();
        let pem = public_key_pem(&pk).unwrap();
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
}
