//! A node's share of one key and its stored format.

use crate::curve::{Curve, DkmsCurve, compress, scalar_bytes, with_curve};
use crate::error::{MpcError, PartyIndex};
use crate::wire::{decode, encode_secret};
use dkls23::protocols::{Party, PublicKeyPackage};
use dkms_proto::NodeTag;
use k256::elliptic_curve::CurveAffine;
use k256::elliptic_curve::group::{Curve as _, Group};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use zeroize::Zeroizing;

/// Version byte that starts every stored share. Readers keep accepting every older version.
pub const SHARE_FORMAT_V1: u8 = 1;
/// Version 2: version 1 plus the `exportable` bit fixed when the key was created. A
/// version 1 share reads as not exportable.
pub const SHARE_FORMAT_V2: u8 = 2;
/// Version 3: a curve byte, then version 2's body on that curve. Versions 1 and 2 are
/// secp256k1. secp256k1 shares are still written as version 2, which every release reads.
pub const SHARE_FORMAT_V3: u8 = 3;

/// A member of a key: its node tag and the X25519 key its envelopes are sealed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareParticipant {
    pub tag: NodeTag,
    pub encryption_key: [u8; 32],
}

/// This node's share of a threshold key. Secret: no `Debug`, no `Serialize`, not `Clone`;
/// the dkls23 party inside zeroizes itself on drop. The only way out is [`KeyShare::to_bytes`],
/// which the node seals before it stores it.
pub struct KeyShare {
    key_id: uuid::Uuid,
    threshold: u8,
    my_index: PartyIndex,
    participants: Vec<ShareParticipant>,
    public_key: [u8; 33],
    /// Whether the key may leave the nodes whole (break-glass export). Set once, when the
    /// key is created on this node; refresh, repair and derivation carry it over.
    exportable: bool,
    pub(crate) body: Body,
}

/// The curve-specific part of a share.
pub(crate) enum Body {
    Secp256k1(Parts<k256::Secp256k1>),
    P256(Parts<p256::NistP256>),
}

/// dkls23's state of one party: the key's public package and the party's secret side.
pub(crate) struct Parts<C: DkmsCurve> {
    pub(crate) package: PublicKeyPackage<C>,
    pub(crate) party: Party<C>,
}

impl<C: DkmsCurve> Parts<C> {
    fn verifying_share(&self, idx: dkls23::protocols::PartyIndex) -> Option<[u8; 33]> {
        self.package.verifying_share(idx).map(compress::<C>)
    }

    fn secret(&self) -> Zeroizing<[u8; 32]> {
        scalar_bytes::<C>(&self.party.poly_point)
    }
}

/// Runs `$e` with `$p` bound to the share's [`Parts`], whatever its curve.
macro_rules! with_parts {
    ($body:expr, $p:ident => $e:expr) => {
        match $body {
            $crate::share::Body::Secp256k1($p) => $e,
            $crate::share::Body::P256($p) => $e,
        }
    };
}
pub(crate) use with_parts;

/// Version 2 as written: version 1's fields in the same order, then `exportable`.
/// Postcard encoding. Never change: add a V3.
#[derive(Serialize)]
#[serde(bound = "")]
struct StoredV2Ref<'a, C: DkmsCurve> {
    key_id: [u8; 16],
    threshold: u8,
    my_index: u8,
    participants: Vec<StoredParticipant>,
    public_key: Vec<u8>,
    package: &'a PublicKeyPackage<C>,
    party: &'a Party<C>,
    exportable: bool,
}

#[derive(Deserialize)]
#[serde(bound = "")]
struct StoredV2<C: DkmsCurve> {
    key_id: [u8; 16],
    threshold: u8,
    my_index: u8,
    participants: Vec<StoredParticipant>,
    public_key: Vec<u8>,
    package: PublicKeyPackage<C>,
    party: Party<C>,
    exportable: bool,
}

/// Version 1, read only.
#[derive(Deserialize)]
struct StoredV1 {
    key_id: [u8; 16],
    threshold: u8,
    my_index: u8,
    participants: Vec<StoredParticipant>,
    public_key: Vec<u8>,
    package: PublicKeyPackage<k256::Secp256k1>,
    party: Party<k256::Secp256k1>,
}

#[derive(Serialize, Deserialize)]
struct StoredParticipant {
    tag: String,
    encryption_key: [u8; 32],
}

impl From<dkms_proto::node::Peer> for ShareParticipant {
    fn from(peer: dkms_proto::node::Peer) -> Self {
        ShareParticipant {
            tag: peer.tag,
            encryption_key: peer.encryption_key,
        }
    }
}

/// A party as `repair_assemble` builds it: share, key and derivation data, but no
/// zero-share seeds and no multiplication state.
fn is_hollow<C: DkmsCurve>(party: &Party<C>) -> bool {
    party.mul_senders.is_empty()
        && party.mul_receivers.is_empty()
        && party.zero_share.seeds.is_empty()
}

/// Checks the public parameters of a key: 2 ≤ threshold ≤ n ≤ 255 and distinct tags.
pub(crate) fn check_parameters(
    threshold: u8,
    participants: &[ShareParticipant],
) -> Result<(), String> {
    let n = participants.len();
    if !(2..=usize::from(u8::MAX)).contains(&n) {
        return Err(format!("a key needs 2 to 255 participants, got {n}"));
    }
    if threshold < 2 || usize::from(threshold) > n {
        return Err(format!(
            "threshold must be between 2 and the participant count {n}, got {threshold}"
        ));
    }
    let mut tags = BTreeSet::new();
    for p in participants {
        if !tags.insert(p.tag.as_str()) {
            return Err(format!("participant {} is listed twice", p.tag));
        }
    }
    Ok(())
}

impl KeyShare {
    /// Builds a share and checks that it hangs together (see [`KeyShare::from_bytes`]).
    pub(crate) fn new<C: DkmsCurve>(
        key_id: uuid::Uuid,
        threshold: u8,
        my_index: PartyIndex,
        participants: Vec<ShareParticipant>,
        package: PublicKeyPackage<C>,
        party: Party<C>,
    ) -> Result<Self, String> {
        let public_key = compress::<C>(&party.pk);
        let share = KeyShare {
            key_id,
            threshold,
            my_index,
            participants,
            public_key,
            exportable: false,
            body: C::wrap(Parts { package, party }),
        };
        share.validate()?;
        Ok(share)
    }

    /// The curve of the key.
    pub fn curve(&self) -> Curve {
        match self.body {
            Body::Secp256k1(_) => Curve::Secp256k1,
            Body::P256(_) => Curve::P256,
        }
    }

    /// The dkls23 state, for a session that runs on curve `C`.
    pub(crate) fn parts<C: DkmsCurve>(&self) -> Result<&Parts<C>, MpcError> {
        C::parts(&self.body).ok_or_else(|| {
            MpcError::BadParameters(format!(
                "the share is on {}, the session on {}",
                self.curve(),
                C::CURVE
            ))
        })
    }

    /// Whether the key may be exported whole (fixed at creation; see [`KeyShare::with_exportable`]).
    pub fn exportable(&self) -> bool {
        self.exportable
    }

    /// Marks a share just created (keygen, import split) as exportable or not. Shares
    /// made from an existing share (refresh, repair, derivation) inherit the bit instead.
    pub fn with_exportable(mut self, exportable: bool) -> Self {
        self.exportable = exportable;
        self
    }

    pub fn key_id(&self) -> uuid::Uuid {
        self.key_id
    }

    pub fn threshold(&self) -> u8 {
        self.threshold
    }

    pub fn my_index(&self) -> PartyIndex {
        self.my_index
    }

    /// The key's members in order: party index = position + 1.
    pub fn participants(&self) -> &[ShareParticipant] {
        &self.participants
    }

    /// SEC1 compressed public key of the whole key.
    pub fn public_key(&self) -> [u8; 33] {
        self.public_key
    }

    /// Whether this share came out of a repair and still lacks the pairwise state
    /// (zero-share seeds, OT/multiplication setup) that signing needs. Such a share is
    /// only good for [`crate::refresh`], which every party of the key runs and which gives
    /// this party a complete share. It cannot sign or help another repair until then.
    /// Puts `member` in the place of party `index` (a replaced node, after a repair). The
    /// share itself is unchanged; the refresh that must follow carries the new member list.
    pub fn replace_participant(
        &mut self,
        index: PartyIndex,
        member: ShareParticipant,
    ) -> Result<(), MpcError> {
        let mut next = self.participants.clone();
        let slot = usize::from(index)
            .checked_sub(1)
            .and_then(|i| next.get_mut(i))
            .ok_or_else(|| {
                MpcError::BadParameters(format!("party {index} is not a member of this key"))
            })?;
        *slot = member;
        check_parameters(self.threshold, &next).map_err(MpcError::BadParameters)?;
        self.participants = next;
        Ok(())
    }

    pub fn needs_refresh(&self) -> bool {
        with_parts!(&self.body, p => is_hollow(&p.party))
    }

    /// SEC1 compressed verifying share of `party` (its secret share times the generator),
    /// from the key's public package. Public data.
    pub fn verifying_share(&self, party: PartyIndex) -> Option<[u8; 33]> {
        let idx = dkls23::protocols::PartyIndex::new(party).ok()?;
        with_parts!(&self.body, p => p.verifying_share(idx))
    }

    /// The secret scalar share (big endian), for the break-glass export and backup paths
    /// in [`crate::export`], which seal it at once.
    pub(crate) fn secret_scalar(&self) -> Zeroizing<[u8; 32]> {
        self.secret_scalar_for_leak_tests()
    }

    /// The secret scalar share, for leak-scanning tests only: a test searches logs and
    /// databases for these bytes. Never call this from production code.
    #[doc(hidden)]
    pub fn secret_scalar_for_leak_tests(&self) -> Zeroizing<[u8; 32]> {
        with_parts!(&self.body, p => p.secret())
    }

    /// The stored form: [`SHARE_FORMAT_V2`] (secp256k1) or [`SHARE_FORMAT_V3`] and the
    /// curve byte, then postcard. Contains the secret share.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        match &self.body {
            Body::Secp256k1(p) => self.encode(&[SHARE_FORMAT_V2], p),
            Body::P256(p) => self.encode(&[SHARE_FORMAT_V3, Curve::P256.tag()], p),
        }
    }

    fn encode<C: DkmsCurve>(&self, header: &[u8], parts: &Parts<C>) -> Zeroizing<Vec<u8>> {
        let stored = StoredV2Ref {
            key_id: *self.key_id.as_bytes(),
            threshold: self.threshold,
            my_index: self.my_index,
            participants: self
                .participants
                .iter()
                .map(|p| StoredParticipant {
                    tag: p.tag.as_str().to_owned(),
                    encryption_key: p.encryption_key,
                })
                .collect(),
            public_key: self.public_key.to_vec(),
            package: &parts.package,
            party: &parts.party,
            exportable: self.exportable,
        };
        // Serializing plain structs into a buffer of the computed size cannot fail; if it
        // ever did, an empty result fails loudly in from_bytes rather than storing garbage.
        encode_secret(header, &stored).unwrap_or_default()
    }

    /// Reads a stored share and refuses it unless every part agrees: version, parameters,
    /// participant count, our index, the public key (stored, in the party, in the package)
    /// and our secret share against our public verifying share.
    pub fn from_bytes(bytes: &[u8]) -> Result<KeyShare, MpcError> {
        let (&version, body) = bytes
            .split_first()
            .ok_or_else(|| MpcError::Corrupt("empty".into()))?;
        match version {
            SHARE_FORMAT_V1 => {
                let v1: StoredV1 = decode(body).map_err(MpcError::Corrupt)?;
                Self::from_stored(StoredV2 {
                    key_id: v1.key_id,
                    threshold: v1.threshold,
                    my_index: v1.my_index,
                    participants: v1.participants,
                    public_key: v1.public_key,
                    package: v1.package,
                    party: v1.party,
                    // Keys stored before the bit existed were never marked exportable.
                    exportable: false,
                })
            }
            SHARE_FORMAT_V2 => {
                Self::from_stored::<k256::Secp256k1>(decode(body).map_err(MpcError::Corrupt)?)
            }
            SHARE_FORMAT_V3 => {
                let (&tag, body) = body
                    .split_first()
                    .ok_or_else(|| MpcError::Corrupt("no curve byte".into()))?;
                with_curve!(Curve::from_tag(tag)?, C => {
                    Self::from_stored::<C>(decode(body).map_err(MpcError::Corrupt)?)
                })
            }
            other => Err(MpcError::Corrupt(format!(
                "unknown share format version {other}"
            ))),
        }
    }

    fn from_stored<C: DkmsCurve>(stored: StoredV2<C>) -> Result<KeyShare, MpcError> {
        let mut participants = Vec::with_capacity(stored.participants.len());
        for p in &stored.participants {
            let tag = p
                .tag
                .parse::<NodeTag>()
                .map_err(|e| MpcError::Corrupt(format!("participant tag {:?}: {e}", p.tag)))?;
            participants.push(ShareParticipant {
                tag,
                encryption_key: p.encryption_key,
            });
        }
        let public_key: [u8; 33] = stored.public_key.as_slice().try_into().map_err(|_| {
            MpcError::Corrupt(format!(
                "public key of {} bytes, expected 33",
                stored.public_key.len()
            ))
        })?;
        let share = KeyShare {
            key_id: uuid::Uuid::from_bytes(stored.key_id),
            threshold: stored.threshold,
            my_index: stored.my_index,
            participants,
            public_key,
            exportable: stored.exportable,
            body: C::wrap(Parts {
                package: stored.package,
                party: stored.party,
            }),
        };
        share.validate().map_err(MpcError::Corrupt)?;
        Ok(share)
    }

    fn validate(&self) -> Result<(), String> {
        with_parts!(&self.body, p => self.validate_parts(p))
    }

    fn validate_parts<C: DkmsCurve>(&self, parts: &Parts<C>) -> Result<(), String> {
        let Parts { package, party } = parts;
        check_parameters(self.threshold, &self.participants)?;
        let n = self.participants.len() as u8;
        let params = &party.parameters;
        if params.threshold != self.threshold || params.share_count != n {
            return Err(format!(
                "share is {}-of-{} but the key is {}-of-{n}",
                params.threshold, params.share_count, self.threshold
            ));
        }
        if package.threshold() != self.threshold || package.share_count() != n {
            return Err("public key package parameters differ from the key's".into());
        }
        if self.my_index == 0 || self.my_index > n {
            return Err(format!("party index {} is not in 1..={n}", self.my_index));
        }
        if party.party_index.as_u8() != self.my_index {
            return Err(format!(
                "share belongs to party {}, not {}",
                party.party_index, self.my_index
            ));
        }
        if party.pk == C::AffinePoint::identity() {
            return Err("public key is the identity".into());
        }
        if compress::<C>(&party.pk) != self.public_key
            || compress::<C>(package.verifying_key()) != self.public_key
        {
            return Err("public key differs between the share's parts".into());
        }
        // A repaired share is hollow: no pairwise state at all (not a partial one), which
        // only a complete refresh fills in.
        let hollow = is_hollow(party);
        for i in 1..=n {
            let idx = dkls23::protocols::PartyIndex::new(i).map_err(|e| e.to_string())?;
            if package.verifying_share(idx).is_none() {
                return Err(format!("no verifying share for party {i}"));
            }
            if !hollow
                && i != self.my_index
                && (!party.mul_senders.contains_key(&idx)
                    || !party.mul_receivers.contains_key(&idx))
            {
                return Err(format!("no multiplication state for party {i}"));
            }
        }
        if !hollow
            && (party.mul_senders.len() != usize::from(n) - 1
                || party.mul_receivers.len() != usize::from(n) - 1)
        {
            return Err("multiplication state for parties outside the key".into());
        }
        let mine = (C::ProjectivePoint::generator() * party.poly_point).to_affine();
        if !package.verify_share(party.party_index, &mine) {
            return Err("secret share does not match this party's verifying share".into());
        }
        Ok(())
    }
}
