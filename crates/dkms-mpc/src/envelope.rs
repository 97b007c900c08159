//! The node-to-node envelope: HPKE (RFC 9180) in auth mode with
//! DHKEM(X25519, HKDF-SHA256), HKDF-SHA256 and ChaCha20-Poly1305.
//!
//! Auth mode proves to the recipient that the holder of the sender's X25519 key made the
//! envelope, so the relaying gateway can neither read nor forge protocol messages. The HPKE
//! `info` binds the session id, round, sender and recipient, so an envelope moved to another
//! session, round or pair of nodes does not open. (Replay of the same envelope into the
//! same slot is caught by the session, which refuses a second message per sender and round.)

use crate::error::MpcError;
use dkms_proto::NodeTag;
use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use zeroize::Zeroizing;

pub(crate) type Kem = X25519HkdfSha256;
pub(crate) type PrivateKey = <Kem as hpke::Kem>::PrivateKey;
pub(crate) type PublicKey = <Kem as hpke::Kem>::PublicKey;
pub(crate) type EncappedKey = <Kem as hpke::Kem>::EncappedKey;

const INFO_DOMAIN: &[u8] = b"dkms/envelope/v1";
/// Length of the encapsulated key that starts every envelope.
pub const ENCAPPED_KEY_LEN: usize = 32;
/// Length of the AEAD tag at the end of every envelope.
pub const TAG_LEN: usize = 16;

/// A node's long-term X25519 key pair. The private half zeroizes on drop (x25519-dalek
/// `StaticSecret`) and is never printed: this type has no `Debug`.
pub struct EncryptionKeypair {
    private: PrivateKey,
    public: PublicKey,
}

impl EncryptionKeypair {
    /// Derives the pair from a 32-byte secret seed (RFC 9180 `DeriveKeyPair`), so a node
    /// only has to keep the seed sealed.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let (private, public) = Kem::derive_keypair(seed);
        EncryptionKeypair { private, public }
    }

    pub fn public_key(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(&self.public.to_bytes());
        out
    }

    /// The private half, for the other HPKE users in this crate ([`crate::import`]).
    pub(crate) fn private(&self) -> &PrivateKey {
        &self.private
    }
}

/// Where an envelope belongs; all of it is bound into the HPKE key schedule.
#[derive(Debug, Clone, Copy)]
pub struct EnvelopeContext<'a> {
    pub session_id: &'a [u8; 32],
    pub round: u8,
    pub sender: &'a NodeTag,
    pub recipient: &'a NodeTag,
}

impl EnvelopeContext<'_> {
    fn info(&self) -> Vec<u8> {
        let sender = self.sender.as_str().as_bytes();
        let recipient = self.recipient.as_str().as_bytes();
        let mut info =
            Vec::with_capacity(INFO_DOMAIN.len() + 32 + 1 + 4 + sender.len() + 4 + recipient.len());
        info.extend_from_slice(INFO_DOMAIN);
        info.extend_from_slice(self.session_id);
        info.push(self.round);
        info.extend_from_slice(&(sender.len() as u32).to_be_bytes());
        info.extend_from_slice(sender);
        info.extend_from_slice(&(recipient.len() as u32).to_be_bytes());
        info.extend_from_slice(recipient);
        info
    }
}

/// Encrypts `plaintext` to `recipient_pk`, authenticated as `me`. Output: encapsulated key
/// (32 bytes) ‖ ciphertext ‖ tag (16 bytes).
pub fn seal(
    me: &EncryptionKeypair,
    recipient_pk: &[u8; 32],
    ctx: &EnvelopeContext<'_>,
    plaintext: &[u8],
) -> Result<Vec<u8>, MpcError> {
    let recipient = PublicKey::from_bytes(recipient_pk)
        .map_err(|e| MpcError::Crypto(format!("recipient key: {e}")))?;
    let mode = OpModeS::<Kem>::Auth((me.private.clone(), me.public.clone()));
    let (encapped, ciphertext) = hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, Kem>(
        &mode,
        &recipient,
        &ctx.info(),
        plaintext,
        &[],
    )
    .map_err(|e| MpcError::Crypto(format!("seal: {e}")))?;
    let mut out = Vec::with_capacity(ENCAPPED_KEY_LEN + ciphertext.len());
    out.extend_from_slice(&encapped.to_bytes());
    out.extend_from_slice(&ciphertext);
    Ok(out)
}

/// Opens an envelope made by [`seal`] for `me` by the holder of `sender_pk` in exactly this
/// context; any other sender, recipient, session, round or a modified byte fails.
pub fn open(
    me: &EncryptionKeypair,
    sender_pk: &[u8; 32],
    ctx: &EnvelopeContext<'_>,
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, MpcError> {
    if sealed.len() < ENCAPPED_KEY_LEN + TAG_LEN {
        return Err(MpcError::Crypto(format!(
            "envelope of {} bytes is too short",
            sealed.len()
        )));
    }
    let (encapped, ciphertext) = sealed.split_at(ENCAPPED_KEY_LEN);
    let encapped = EncappedKey::from_bytes(encapped)
        .map_err(|e| MpcError::Crypto(format!("encapsulated key: {e}")))?;
    let sender = PublicKey::from_bytes(sender_pk)
        .map_err(|e| MpcError::Crypto(format!("sender key: {e}")))?;
    let mode = OpModeR::<Kem>::Auth(sender);
    hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, Kem>(
        &mode,
        &me.private,
        &encapped,
        &ctx.info(),
        ciphertext,
        &[],
    )
    .map(Zeroizing::new)
    .map_err(|_| MpcError::Crypto("envelope did not open".into()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    struct Fixture {
        alice: EncryptionKeypair,
        bob: EncryptionKeypair,
        carol: EncryptionKeypair,
        a: NodeTag,
        b: NodeTag,
        sid: [u8; 32],
    }

    fn fixture() -> Fixture {
        Fixture {
            alice: EncryptionKeypair::from_seed(&[1; 32]),
            bob: EncryptionKeypair::from_seed(&[2; 32]),
            carol: EncryptionKeypair::from_seed(&[3; 32]),
            a: "alice".parse().unwrap(),
            b: "bob".parse().unwrap(),
            sid: [7; 32],
        }
    }

    #[test]
    fn derivation_is_deterministic_and_distinct() {
        let f = fixture();
        assert_eq!(
            EncryptionKeypair::from_seed(&[1; 32]).public_key(),
            f.alice.public_key()
        );
        assert_ne!(f.alice.public_key(), f.bob.public_key());
    }

    #[test]
    fn round_trip_and_every_mismatch_fails() {
        let f = fixture();
        let ctx = EnvelopeContext {
            session_id: &f.sid,
            round: 2,
            sender: &f.a,
            recipient: &f.b,
        };
        let msg = b"round two payload";
        let sealed = seal(&f.alice, &f.bob.public_key(), &ctx, msg).unwrap();
        assert_eq!(sealed.len(), ENCAPPED_KEY_LEN + msg.len() + TAG_LEN);
        let opened = open(&f.bob, &f.alice.public_key(), &ctx, &sealed).unwrap();
        assert_eq!(opened.as_slice(), msg);

        // Wrong recipient key.
        assert!(open(&f.carol, &f.alice.public_key(), &ctx, &sealed).is_err());
        // Wrong sender key (Carol claims to be Alice, or Bob expects Carol).
        assert!(open(&f.bob, &f.carol.public_key(), &ctx, &sealed).is_err());
        // Other round.
        let other_round = EnvelopeContext { round: 3, ..ctx };
        assert!(open(&f.bob, &f.alice.public_key(), &other_round, &sealed).is_err());
        // Other session.
        let sid2 = [8; 32];
        let other_session = EnvelopeContext {
            session_id: &sid2,
            ..ctx
        };
        assert!(open(&f.bob, &f.alice.public_key(), &other_session, &sealed).is_err());
        // Swapped sender/recipient tags.
        let swapped = EnvelopeContext {
            sender: &f.b,
            recipient: &f.a,
            ..ctx
        };
        assert!(open(&f.bob, &f.alice.public_key(), &swapped, &sealed).is_err());
        // Every flipped byte.
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert!(
                open(&f.bob, &f.alice.public_key(), &ctx, &bad).is_err(),
                "flip at {i}"
            );
        }
        // Truncations.
        for len in [
            0,
            1,
            ENCAPPED_KEY_LEN,
            ENCAPPED_KEY_LEN + TAG_LEN,
            sealed.len() - 1,
        ] {
            assert!(open(&f.bob, &f.alice.public_key(), &ctx, &sealed[..len]).is_err());
        }
        // Appended byte.
        let mut longer = sealed.clone();
        longer.push(0);
        assert!(open(&f.bob, &f.alice.public_key(), &ctx, &longer).is_err());
    }

    #[test]
    fn low_order_recipient_key_is_refused() {
        let f = fixture();
        let ctx = EnvelopeContext {
            session_id: &f.sid,
            round: 1,
            sender: &f.a,
            recipient: &f.b,
        };
        assert!(seal(&f.alice, &[0u8; 32], &ctx, b"x").is_err());
    }

    #[test]
    fn longest_tags_fit() {
        let f = fixture();
        let long_a: NodeTag = "a".repeat(NodeTag::MAX_LEN).parse().unwrap();
        let long_b: NodeTag = "b".repeat(NodeTag::MAX_LEN).parse().unwrap();
        let ctx = EnvelopeContext {
            session_id: &f.sid,
            round: 255,
            sender: &long_a,
            recipient: &long_b,
        };
        let sealed = seal(&f.alice, &f.bob.public_key(), &ctx, b"x").unwrap();
        assert_eq!(
            open(&f.bob, &f.alice.public_key(), &ctx, &sealed)
                .unwrap()
                .as_slice(),
            b"x"
        );
    }

    #[test]
    fn empty_plaintext_round_trips() {
        let f = fixture();
        let ctx = EnvelopeContext {
            session_id: &f.sid,
            round: 1,
            sender: &f.a,
            recipient: &f.b,
        };
        let sealed = seal(&f.alice, &f.bob.public_key(), &ctx, b"").unwrap();
        assert!(
            open(&f.bob, &f.alice.public_key(), &ctx, &sealed)
                .unwrap()
                .is_empty()
        );
    }
}
