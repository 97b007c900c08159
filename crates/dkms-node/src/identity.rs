//! The node's long-term identity: an Ed25519 signing key (signs the admission proof the
//! gateway checks on every connect) and a seed for its X25519 encryption key (HPKE
//! auth-mode envelopes that authenticate and encrypt node-to-node payloads).
//! Created at first start and kept sealed in the [`NodeStore`].
//!
//! Stored record (secret `node-identity`), format version 1:
//! `0x01 ‖ Ed25519 secret key (32) ‖ X25519 seed (32)`.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use zeroize::Zeroizing;

use crate::store::{NodeStore, StoreError};

/// Name of the secret record holding the identity.
pub const IDENTITY_SECRET_NAME: &str = "node-identity";
const IDENTITY_FORMAT_V1: u8 = 1;
const IDENTITY_RECORD_LEN: usize = 1 + 32 + 32; // version, signing key, X25519 seed

/// The node's identity keys. Both secrets are wiped on drop (`SigningKey` zeroizes itself);
/// deliberately neither `Debug`, `Clone` nor `Serialize`.
pub struct NodeKeys {
    signing: SigningKey,
    encryption_seed: Zeroizing<[u8; 32]>,
}

impl NodeKeys {
    /// Loads the identity from the store or creates it (Ed25519 signing key from 32 random
    /// bytes; a 32-byte random X25519 seed) and stores it sealed.
    ///
    /// Safe against a concurrent first start: the record is written once, and a loser of the
    /// race reads back the winner's keys.
    pub fn load_or_create(store: &NodeStore) -> Result<Self, StoreError> {
        if let Some(record) = store.get_secret(IDENTITY_SECRET_NAME)? {
            return Self::decode(&record);
        }
        let mut record = Zeroizing::new([0u8; IDENTITY_RECORD_LEN]);
        record[0] = IDENTITY_FORMAT_V1;
        getrandom::fill(&mut record[1..]).map_err(|e| StoreError::Random(e.to_string()))?;
        match store.put_secret(IDENTITY_SECRET_NAME, record.as_slice()) {
            Ok(()) => {
                let keys = Self::decode(record.as_slice())?;
                tracing::info!(
                    signing_public = %hex::encode(keys.signing_public()),
                    "created a new node identity"
                );
                Ok(keys)
            }
            Err(StoreError::AlreadyExists) => match store.get_secret(IDENTITY_SECRET_NAME)? {
                Some(record) => Self::decode(&record),
                None => Err(malformed("identity vanished after a concurrent create")),
            },
            Err(e) => Err(e),
        }
    }

    fn decode(record: &[u8]) -> Result<Self, StoreError> {
        let Some((&version, rest)) = record.split_first() else {
            return Err(malformed("empty record"));
        };
        if version != IDENTITY_FORMAT_V1 {
            return Err(StoreError::UnsupportedRecordVersion {
                table: "secrets",
                id: IDENTITY_SECRET_NAME.to_owned(),
                version,
            });
        }
        let Some((signing, seed)) = rest.split_first_chunk::<32>() else {
            return Err(malformed("wrong length"));
        };
        let Ok(seed) = <&[u8; 32]>::try_from(seed) else {
            return Err(malformed("wrong length"));
        };
        let encryption_seed = Zeroizing::new(*seed);
        Ok(Self {
            signing: SigningKey::from_bytes(signing),
            encryption_seed,
        })
    }

    /// The Ed25519 public key peers and the gateway pin and verify against.
    pub fn signing_public(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    /// Signs `message` with the node's Ed25519 key (RFC 8032, deterministic).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }

    /// Seed from which dkms_mpc::envelope::EncryptionKeypair is derived by the caller.
    pub fn encryption_seed(&self) -> &Zeroizing<[u8; 32]> {
        &self.encryption_seed
    }
}

fn malformed(reason: &'static str) -> StoreError {
    StoreError::Malformed {
        table: "secrets",
        id: IDENTITY_SECRET_NAME.to_owned(),
        reason,
    }
}

/// Verifies a node's Ed25519 signature. Strict verification: rejects small-order keys and
/// non-canonical signatures, so a signature cannot be mauled into a second valid one.
pub fn verify_node_signature(public: &[u8; 32], message: &[u8], signature: &[u8]) -> bool {
    let Ok(key) = VerifyingKey::from_bytes(public) else {
        return false;
    };
    let Ok(signature) = Signature::from_slice(signature) else {
        return false;
    };
    key.verify_strict(message, &signature).is_ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::sealer::{Sealer, SoftwareSealer};

    fn open_store(dir: &tempfile::TempDir) -> NodeStore {
        let sealer: Arc<dyn Sealer> =
            Arc::new(SoftwareSealer::from_key_file(&dir.path().join("seal.key")).unwrap());
        NodeStore::open(&dir.path().join("node.redb"), sealer).unwrap()
    }

    #[test]
    fn load_or_create_twice_yields_the_same_keys() {
        let dir = tempfile::tempdir().unwrap();
        let (public, seed, sig) = {
            let store = open_store(&dir);
            let a = NodeKeys::load_or_create(&store).unwrap();
            let b = NodeKeys::load_or_create(&store).unwrap();
            assert_eq!(a.signing_public(), b.signing_public());
            assert_eq!(**a.encryption_seed(), **b.encryption_seed());
            (a.signing_public(), **a.encryption_seed(), a.sign(b"m"))
        };
        // And across a restart.
        let store = open_store(&dir);
        let c = NodeKeys::load_or_create(&store).unwrap();
        assert_eq!(c.signing_public(), public);
        assert_eq!(**c.encryption_seed(), seed);
        assert_eq!(c.sign(b"m"), sig);
        // The two secrets are independent draws.
        assert_ne!(seed, [0u8; 32]);
        assert_ne!(c.signing.to_bytes(), seed);
    }

    #[test]
    fn different_nodes_get_different_identities() {
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = NodeKeys::load_or_create(&open_store(&d1)).unwrap();
        let b = NodeKeys::load_or_create(&open_store(&d2)).unwrap();
        assert_ne!(a.signing_public(), b.signing_public());
        assert_ne!(**a.encryption_seed(), **b.encryption_seed());
    }

    #[test]
    fn signature_verifies_and_tampering_fails() {
        let dir = tempfile::tempdir().unwrap();
        let keys = NodeKeys::load_or_create(&open_store(&dir)).unwrap();
        let public = keys.signing_public();
        let msg = b"admission challenge 42";
        let sig = keys.sign(msg);
        assert!(verify_node_signature(&public, msg, &sig));
        assert!(!verify_node_signature(
            &public,
            b"admission challenge 43",
            &sig
        ));
        let mut bad = sig;
        bad[10] ^= 1;
        assert!(!verify_node_signature(&public, msg, &bad));
        assert!(!verify_node_signature(&public, msg, &sig[..63]));
        let mut other = public;
        other[0] ^= 1;
        assert!(!verify_node_signature(&other, msg, &sig));
    }

    #[test]
    fn rfc8032_test_vector_1() {
        // RFC 8032 section 7.1, TEST 1 (empty message).
        let secret: [u8; 32] =
            hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
                .unwrap()
                .try_into()
                .unwrap();
        let mut record = vec![IDENTITY_FORMAT_V1];
        record.extend_from_slice(&secret);
        record.extend_from_slice(&[0; 32]);
        let keys = NodeKeys::decode(&record).unwrap();
        assert_eq!(
            hex::encode(keys.signing_public()),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
        assert_eq!(
            hex::encode(keys.sign(b"")),
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155\
             5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        );
    }

    #[test]
    fn malformed_identity_record_is_an_error() {
        assert!(matches!(
            NodeKeys::decode(&[]),
            Err(StoreError::Malformed { .. })
        ));
        assert!(matches!(
            NodeKeys::decode(&[1; 64]),
            Err(StoreError::Malformed { .. })
        ));
        assert!(matches!(
            NodeKeys::decode(&[1; 66]),
            Err(StoreError::Malformed { .. })
        ));
        assert!(matches!(
            NodeKeys::decode(&[2; 65]),
            Err(StoreError::UnsupportedRecordVersion { version: 2, .. })
        ));
    }
}
