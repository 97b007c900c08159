//! Messages on the node link: the one long-lived WebSocket a node dials out to the
//! gateway. Frames are binary, encoded with postcard (see [`encode`] / [`decode`]).
//!
//! The gateway only relays: every `payload` between two nodes is an HPKE ciphertext that
//! only the recipient can open and only the named sender can have made.

use crate::domain::NodeTag;
use serde::{Deserialize, Serialize};

/// Version of the link protocol; a node and a gateway of different versions refuse each other.
pub const LINK_VERSION: u16 = 4;

/// Largest frame either side accepts (DKG rounds carry OT setup of a few hundred KB).
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// Routing handle of one protocol session, chosen by the gateway.
pub type SessionRef = u64;

/// Domain separator of the identity proof a node signs when it connects.
pub const HELLO_CONTEXT: &[u8] = b"dkms/node-hello/v1";

/// A node's public identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeIdentity {
    /// Ed25519 verifying key.
    pub signing_key: [u8; 32],
    /// X25519 public key (HPKE recipient and sender-authentication key).
    pub encryption_key: [u8; 32],
}

/// A participant of a session as the gateway announces it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    pub tag: NodeTag,
    pub encryption_key: [u8; 32],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scheme {
    /// DKLs23 threshold ECDSA on secp256k1.
    Dkls23Secp256k1,
    /// DKLs23 threshold ECDSA on NIST P-256.
    Dkls23P256,
}

/// A member of a key that takes a lost member's place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replacement {
    pub lost: NodeTag,
    pub member: Peer,
}

/// How many members of a `threshold`-of-`members` key may be rebuilt from one share
/// generation (one recovery): at most `members - threshold`, so that `threshold` members
/// that lost nothing are left to help, and at most `threshold - 1`, so that the rebuilt
/// shares alone never reach the threshold. Each repair hands its recipient a real share
/// of the generation; a gateway that steered every rebuilt share to nodes it controls
/// must still hold fewer than `threshold` of them. 0 when the key cannot spare a member
/// (`threshold == members`). Nodes compute it from their own share, never from the
/// gateway's word.
pub fn max_lost_at_once(threshold: usize, members: usize) -> usize {
    members
        .saturating_sub(threshold)
        .min(threshold.saturating_sub(1))
}

/// What a session is for. Every node checks these parameters itself before it takes part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operation {
    /// Distributed key generation among `participants`, in this order (party index = position + 1).
    Keygen {
        threshold: u8,
        participants: Vec<Peer>,
        /// Whether the key may ever be exported whole; stored in every share, fixed for
        /// the key's life.
        exportable: bool,
    },
    /// Signing of `digest` by exactly `threshold` of the key's participants, with the
    /// shares of `generation` (0 at creation, +1 per committed refresh).
    /// With a `derivation_path`, the BIP-32 child key at that path signs.
    Sign {
        signers: Vec<NodeTag>,
        digest: [u8; 32],
        generation: u32,
        derivation_path: Vec<u32>,
    },
    /// Refreshing every participant's share (same public key, new shares). The result is
    /// staged as `generation`; it becomes live only once the gateway commits it. After the
    /// repairs of a recovery, `replacements` puts each recipient in its lost member's
    /// place in every share (empty for a plain refresh).
    Refresh {
        generation: u32,
        replacements: Vec<Replacement>,
    },
    /// Rebuilding the share of the member `replacement.lost` (a node whose data is gone)
    /// on `replacement.member`, from the shares of exactly `threshold` `helpers` at
    /// `generation`. The recipient gets a share that cannot sign until the refresh that
    /// must follow.
    Repair {
        generation: u32,
        threshold: u8,
        /// SEC1 compressed public key of the key.
        public_key: Vec<u8>,
        /// The members in order (party index = position + 1) after the recovery: each
        /// replacement (this one and `also_replaced`) in its lost member's place.
        participants: Vec<Peer>,
        replacement: Replacement,
        /// The other members the same recovery replaces (rebuilt by their own repairs,
        /// before or after this one): helpers accept their new holders in `participants`
        /// where their shares still name the lost members. Empty for one lost member.
        also_replaced: Vec<Replacement>,
        helpers: Vec<NodeTag>,
        /// The key's exportable bit: helpers refuse a repair that announces another one
        /// than their shares hold, so the rebuilt share carries the real bit.
        exportable: bool,
    },
    /// The gateway committed `generation`: make the staged share the live one.
    Promote { generation: u32 },
    /// Storing this node's share of an imported key, split by a trusted dealer (the
    /// gateway or the importing client) and sealed to this node's encryption key.
    Import {
        threshold: u8,
        participants: Vec<Peer>,
        sealed_share: Vec<u8>,
        /// Must equal the bit the dealer sealed into the share.
        exportable: bool,
    },
    /// Destroying this node's share of a key whose scheduled deletion is due.
    Delete,
    /// Break-glass export: seal this node's scalar share of `generation` to the client's
    /// X25519 key `recipient`. A node refuses unless its share was created exportable.
    Export {
        generation: u32,
        recipient: [u8; 32],
    },
    /// Backup: seal this node's whole share of `generation` to its custodian's X25519 key.
    Backup {
        generation: u32,
        custodian: [u8; 32],
    },
    /// Restore, in place of a recovery's repair: store the share a custodian re-sealed to
    /// this node (`replacement.member`) for the place of `replacement.lost`. The share
    /// must be of `generation` and list the same key as announced; the refresh that follows
    /// (with the same replacement) makes every share list this node.
    Restore {
        generation: u32,
        threshold: u8,
        /// SEC1 compressed public key of the key.
        public_key: Vec<u8>,
        /// The members in order after the restore: this node in the lost member's place.
        participants: Vec<Peer>,
        replacement: Replacement,
        sealed_share: Vec<u8>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionStart {
    pub session: SessionRef,
    pub key_id: uuid::Uuid,
    pub scheme: Scheme,
    pub operation: Operation,
    /// Fresh randomness from the gateway, mixed into the session id.
    pub nonce: [u8; 32],
}

/// Gateway → node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ToNode {
    /// First frame after connecting; the node answers with [`FromNode::Hello`].
    Challenge {
        link_version: u16,
        nonce: [u8; 32],
    },
    /// The node is admitted; sessions may start.
    Welcome,
    /// The gateway refuses the node; the connection closes after this frame.
    Refused {
        reason: String,
    },
    Start(SessionStart),
    /// A relayed protocol message from another node of the session.
    Deliver {
        session: SessionRef,
        from: NodeTag,
        round: u8,
        payload: Vec<u8>,
    },
    /// The gateway gave up on a session (deadline, another party failed); drop its state.
    Abort {
        session: SessionRef,
        reason: String,
    },
}

/// Node → gateway.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum FromNode {
    /// Identity proof: `signature` is Ed25519 over
    /// `HELLO_CONTEXT ‖ nonce ‖ tag ‖ signing_key ‖ encryption_key`.
    Hello {
        link_version: u16,
        tag: NodeTag,
        identity: NodeIdentity,
        /// One-time token from `createPod`, only on the first join.
        join_token: Option<String>,
        signature: Vec<u8>,
    },
    /// A protocol message for another node of the session (HPKE ciphertext).
    Send {
        session: SessionRef,
        to: NodeTag,
        round: u8,
        payload: Vec<u8>,
    },
    Done {
        session: SessionRef,
        outcome: Outcome,
    },
    Failed {
        session: SessionRef,
        failure: SessionFailure,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The share is stored; the key's SEC1 compressed public key and BIP-32 chain code.
    KeyGenerated {
        public_key: Vec<u8>,
        chain_code: [u8; 32],
    },
    /// `r ‖ s ‖ v`, low-S normalized.
    Signed { signature: Vec<u8> },
    /// The share is gone from this node (or was never there).
    Deleted,
    /// The live share is now of this generation.
    Promoted { generation: u32 },
    /// A repair ended: the recipient holds a share to be refreshed, a helper has given its term.
    Repaired,
    /// An export or backup: this node's share, sealed to the recipient the operation named.
    Sealed { sealed: Vec<u8> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureKind {
    /// The session parameters were refused by this node.
    BadParameters,
    /// The key is not held by this node.
    UnknownKey,
    /// Another party misbehaved (named in `culprit`).
    Misbehaviour,
    /// Local failure (storage, bug).
    Internal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionFailure {
    pub kind: FailureKind,
    pub culprit: Option<NodeTag>,
    /// Safe to show to an operator: never contains secret material.
    pub message: String,
}

/// The bytes a node signs to prove its identity on connect.
pub fn hello_transcript(nonce: &[u8; 32], tag: &NodeTag, identity: &NodeIdentity) -> Vec<u8> {
    let mut out = Vec::with_capacity(HELLO_CONTEXT.len() + 32 + tag.as_str().len() + 64 + 1);
    out.extend_from_slice(HELLO_CONTEXT);
    out.extend_from_slice(nonce);
    out.push(tag.as_str().len() as u8);
    out.extend_from_slice(tag.as_str().as_bytes());
    out.extend_from_slice(&identity.signing_key);
    out.extend_from_slice(&identity.encryption_key);
    out
}

#[derive(Debug, thiserror::Error)]
#[error("malformed node link frame: {0}")]
pub struct FrameError(pub String);

/// Encodes a link frame.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    // Encoding our own enums into a Vec cannot fail.
    postcard::to_stdvec(msg).unwrap_or_default()
}

/// Decodes a link frame, refusing oversized frames and trailing bytes.
pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, FrameError> {
    if bytes.len() > MAX_FRAME_BYTES {
        return Err(FrameError(format!(
            "{} bytes is over the limit",
            bytes.len()
        )));
    }
    let (msg, rest) =
        postcard::take_from_bytes::<T>(bytes).map_err(|e| FrameError(e.to_string()))?;
    if !rest.is_empty() {
        return Err(FrameError(format!("{} trailing bytes", rest.len())));
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_rebuilt_at_once_leave_t_helpers_and_stay_below_t() {
        // (threshold, members) → most members one recovery may rebuild.
        for (t, n, max) in [
            (2, 2, 0),
            (2, 3, 1),
            (2, 4, 1),
            (3, 3, 0),
            (3, 4, 1),
            (3, 5, 2),
            (4, 5, 1),
            (5, 9, 4),
            (5, 12, 4),
        ] {
            assert_eq!(max_lost_at_once(t, n), max, "{t}-of-{n}");
            assert!(max < t && n - max >= t, "{t}-of-{n}");
        }
        assert_eq!(max_lost_at_once(0, 0), 0);
    }

    #[test]
    fn frames_round_trip_and_garbage_is_refused() {
        let msg = FromNode::Send {
            session: 7,
            to: "node2".parse().unwrap(),
            round: 2,
            payload: vec![1, 2, 3],
        };
        let bytes = encode(&msg);
        match decode::<FromNode>(&bytes).unwrap() {
            FromNode::Send { session, round, .. } => assert_eq!((session, round), (7, 2)),
            other => panic!("unexpected {other:?}"),
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(decode::<FromNode>(&trailing).is_err());
        assert!(decode::<FromNode>(&[0xff, 0xff, 0xff]).is_err());
        // A tag that breaks the tag rules does not decode.
        let bad = encode(&(2u32, 7u64, "bad tag".to_string(), 2u8, vec![1u8]));
        assert!(decode::<FromNode>(&bad).is_err());
    }
}
