//! Session ids. Every node derives the id itself from the parameters it was given, so a
//! node that was told something different from its peers computes a different id and the
//! protocol (which binds every message to the id) fails instead of running on mixed inputs.

use dkms_proto::NodeTag;
use dkms_proto::node::Scheme;
use sha2::{Digest, Sha256};

const DOMAIN: &[u8] = b"dkms/session-id/v1";

/// What the session is for, with every parameter the parties must agree on.
#[derive(Debug, Clone, Copy)]
pub enum SessionKind<'a> {
    /// `encryption_keys[i]` is the X25519 key announced for `participants[i]`: binding
    /// them means parties given different keys for a peer cannot run the DKG together.
    Keygen {
        threshold: u8,
        participants: &'a [NodeTag],
        encryption_keys: &'a [[u8; 32]],
    },
    /// `derivation_path` is the BIP-32 path of the child key that signs (empty: the key).
    Sign {
        threshold: u8,
        participants: &'a [NodeTag],
        signers: &'a [NodeTag],
        digest: &'a [u8; 32],
        derivation_path: &'a [u32],
    },
    /// A complete refresh of every party's share of the key with this public key. The
    /// members and their keys are the ones the new shares will carry: after a repair, a
    /// replaced member's new tag or key takes the lost one's place.
    Refresh {
        threshold: u8,
        participants: &'a [NodeTag],
        encryption_keys: &'a [[u8; 32]],
        public_key: &'a [u8; 33],
    },
    /// Rebuilding the share of the member `lost` from the shares of `helpers` (exactly
    /// `threshold` parties, in ascending party order, without `lost`). `participants` and
    /// `encryption_keys` are the members after the repair: the recipient (a wiped node with
    /// a new identity, or another node) in `lost`'s position.
    Repair {
        threshold: u8,
        participants: &'a [NodeTag],
        encryption_keys: &'a [[u8; 32]],
        public_key: &'a [u8; 33],
        lost: &'a NodeTag,
        helpers: &'a [NodeTag],
    },
}

/// SHA-256 over the domain separator and every field, each length-prefixed (u32 big
/// endian) and lists count-prefixed, so no two parameter sets share an encoding.
pub fn session_id(
    key_id: &uuid::Uuid,
    scheme: Scheme,
    kind: &SessionKind<'_>,
    nonce: &[u8; 32],
) -> [u8; 32] {
    let mut h = Hasher(Sha256::new());
    h.field(DOMAIN);
    match kind {
        SessionKind::Keygen {
            threshold,
            participants,
            encryption_keys,
        } => {
            h.field(b"keygen");
            h.field(key_id.as_bytes());
            h.field(scheme_tag(scheme));
            h.field(&[*threshold]);
            h.tags(participants);
            h.keys(encryption_keys);
        }
        SessionKind::Sign {
            threshold,
            participants,
            signers,
            digest,
            derivation_path,
        } => {
            h.field(b"sign");
            h.field(key_id.as_bytes());
            h.field(scheme_tag(scheme));
            h.field(&[*threshold]);
            h.tags(participants);
            h.tags(signers);
            h.field(digest.as_slice());
            h.0.update((derivation_path.len() as u32).to_be_bytes());
            for i in derivation_path.iter() {
                h.field(&i.to_be_bytes());
            }
        }
        SessionKind::Refresh {
            threshold,
            participants,
            encryption_keys,
            public_key,
        } => {
            h.field(b"refresh");
            h.field(key_id.as_bytes());
            h.field(scheme_tag(scheme));
            h.field(&[*threshold]);
            h.tags(participants);
            h.keys(encryption_keys);
            h.field(public_key.as_slice());
        }
        SessionKind::Repair {
            threshold,
            participants,
            encryption_keys,
            public_key,
            lost,
            helpers,
        } => {
            h.field(b"repair");
            h.field(key_id.as_bytes());
            h.field(scheme_tag(scheme));
            h.field(&[*threshold]);
            h.tags(participants);
            h.keys(encryption_keys);
            h.field(public_key.as_slice());
            h.field(lost.as_str().as_bytes());
            h.tags(helpers);
        }
    }
    h.field(nonce);
    h.0.finalize().into()
}

/// A stable name per scheme; the exhaustive match makes a new scheme pick one.
fn scheme_tag(scheme: Scheme) -> &'static [u8] {
    match scheme {
        Scheme::Dkls23Secp256k1 => b"dkls23-secp256k1",
        Scheme::Dkls23P256 => b"dkls23-p256",
    }
}

struct Hasher(Sha256);

impl Hasher {
    fn keys(&mut self, keys: &[[u8; 32]]) {
        self.0.update((keys.len() as u32).to_be_bytes());
        for k in keys {
            self.field(k);
        }
    }

    fn field(&mut self, bytes: &[u8]) {
        self.0.update((bytes.len() as u32).to_be_bytes());
        self.0.update(bytes);
    }

    fn tags(&mut self, tags: &[NodeTag]) {
        self.0.update((tags.len() as u32).to_be_bytes());
        for tag in tags {
            self.field(tag.as_str().as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn tags(names: &[&str]) -> Vec<NodeTag> {
        names.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn every_field_changes_the_id() {
        let key = uuid::Uuid::from_u128(7);
        let other_key = uuid::Uuid::from_u128(8);
        let nonce = [1u8; 32];
        let p = tags(&["a", "b", "c"]);
        let p_swapped = tags(&["b", "a", "c"]);
        let p_merged = tags(&["ab", "c"]);
        let s = tags(&["a", "b"]);
        let s2 = tags(&["a", "c"]);
        let d = [9u8; 32];
        let d2 = [10u8; 32];
        let scheme = Scheme::Dkls23Secp256k1;
        let keys = [[1u8; 32], [2u8; 32], [3u8; 32]];
        let mut other_keys = keys;
        other_keys[1] = [4u8; 32];
        let kg = |t, parts: &[NodeTag]| {
            session_id(
                &key,
                scheme,
                &SessionKind::Keygen {
                    threshold: t,
                    participants: parts,
                    encryption_keys: &keys[..parts.len()],
                },
                &nonce,
            )
        };
        let sg = |parts: &[NodeTag], signers: &[NodeTag], digest: &[u8; 32]| {
            session_id(
                &key,
                scheme,
                &SessionKind::Sign {
                    threshold: 2,
                    participants: parts,
                    signers,
                    digest,
                    derivation_path: &[],
                },
                &nonce,
            )
        };
        let pk = [2u8; 33];
        let mut pk2 = pk;
        pk2[32] = 3;
        let rf = |t, parts: &[NodeTag], public_key: &[u8; 33]| {
            session_id(
                &key,
                scheme,
                &SessionKind::Refresh {
                    threshold: t,
                    participants: parts,
                    encryption_keys: &keys[..parts.len()],
                    public_key,
                },
                &nonce,
            )
        };
        let rp = |parts: &[NodeTag], public_key: &[u8; 33], lost: &str, helpers: &[NodeTag]| {
            session_id(
                &key,
                scheme,
                &SessionKind::Repair {
                    threshold: 2,
                    participants: parts,
                    encryption_keys: &keys[..parts.len()],
                    public_key,
                    lost: &lost.parse().unwrap(),
                    helpers,
                },
                &nonce,
            )
        };
        let h_ab = tags(&["a", "b"]);
        let h_ba = tags(&["b", "a"]);
        let h_ac = tags(&["a", "c"]);
        let base = kg(2, &p);
        assert_eq!(base, kg(2, &p), "deterministic");
        let variants = [
            kg(3, &p),
            kg(2, &p_swapped),
            kg(2, &p_merged),
            session_id(
                &other_key,
                scheme,
                &SessionKind::Keygen {
                    threshold: 2,
                    participants: &p,
                    encryption_keys: &keys,
                },
                &nonce,
            ),
            session_id(
                &key,
                scheme,
                &SessionKind::Keygen {
                    threshold: 2,
                    participants: &p,
                    encryption_keys: &keys,
                },
                &[2u8; 32],
            ),
            session_id(
                &key,
                scheme,
                &SessionKind::Keygen {
                    threshold: 2,
                    participants: &p,
                    encryption_keys: &other_keys,
                },
                &nonce,
            ),
            sg(&p, &s, &d),
            session_id(
                &key,
                scheme,
                &SessionKind::Sign {
                    threshold: 2,
                    participants: &p,
                    signers: &s,
                    digest: &d,
                    derivation_path: &[0],
                },
                &nonce,
            ),
            session_id(
                &key,
                scheme,
                &SessionKind::Sign {
                    threshold: 2,
                    participants: &p,
                    signers: &s,
                    digest: &d,
                    derivation_path: &[0, 0],
                },
                &nonce,
            ),
            sg(&p, &s2, &d),
            sg(&p, &s, &d2),
            sg(&p_swapped, &s, &d),
            rf(2, &p, &pk),
            rf(3, &p, &pk),
            rf(2, &p_swapped, &pk),
            rf(2, &p, &pk2),
            session_id(
                &other_key,
                scheme,
                &SessionKind::Refresh {
                    threshold: 2,
                    participants: &p,
                    encryption_keys: &keys,
                    public_key: &pk,
                },
                &nonce,
            ),
            session_id(
                &key,
                scheme,
                &SessionKind::Refresh {
                    threshold: 2,
                    participants: &p,
                    encryption_keys: &other_keys,
                    public_key: &pk,
                },
                &nonce,
            ),
            session_id(
                &key,
                scheme,
                &SessionKind::Repair {
                    threshold: 2,
                    participants: &p,
                    encryption_keys: &other_keys,
                    public_key: &pk,
                    lost: &p[2],
                    helpers: &h_ab,
                },
                &nonce,
            ),
            rp(&p, &pk, "c", &h_ab),
            rp(&p, &pk2, "c", &h_ab),
            rp(&p, &pk, "c", &h_ba),
            rp(&p, &pk, "b", &h_ac),
            rp(&p, &pk, "a", &h_ab),
            rp(&p_swapped, &pk, "c", &h_ab),
        ];
        let mut all = vec![base];
        for v in variants {
            assert!(!all.contains(&v), "collision");
            all.push(v);
        }
    }
}
