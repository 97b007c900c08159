//! Property tests of the parsers of untrusted input in dkms-proto: whatever the bytes, the
//! node-link decoder and the newtype parsers answer with a value or an error, never a panic,
//! and what is encoded decodes back.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use dkms_proto::node::{self, FromNode, ToNode};
use dkms_proto::{Digest32, KeyId, KeyType, NodeTag};
use proptest::prelude::*;

proptest! {
    #[test]
    fn link_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = node::decode::<FromNode>(&bytes);
        let _ = node::decode::<ToNode>(&bytes);
    }

    #[test]
    fn relayed_messages_round_trip(
        session in any::<u64>(),
        round in any::<u8>(),
        tag in "[A-Za-z0-9_-]{1,64}",
        payload in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let msg = FromNode::Send { session, to: tag.parse().unwrap(), round, payload: payload.clone() };
        let bytes = node::encode(&msg);
        match node::decode::<FromNode>(&bytes).unwrap() {
            FromNode::Send { session: s, to, round: r, payload: p } => {
                prop_assert_eq!((s, r, p), (session, round, payload));
                prop_assert_eq!(to.as_str(), tag.as_str());
            }
            other => prop_assert!(false, "decoded {:?}", other),
        }
        // One flipped or dropped byte never panics the decoder.
        let mut cut = bytes.clone();
        cut.pop();
        let _ = node::decode::<FromNode>(&cut);
    }

    #[test]
    fn newtype_parsers_never_panic(s in "\\PC{0,100}") {
        let _ = s.parse::<NodeTag>();
        let _ = s.parse::<Digest32>();
        let _ = s.parse::<KeyId>();
        let _ = s.parse::<KeyType>();
    }

    #[test]
    fn node_tags_accept_exactly_the_documented_alphabet(s in "[ -~]{0,70}") {
        let ok = !s.is_empty() && s.len() <= 64
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        prop_assert_eq!(s.parse::<NodeTag>().is_ok(), ok);
    }
}
