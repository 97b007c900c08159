//! Shares that leave their node on purpose: break-glass export to a client's X25519 key,
//! backup to a custodian's X25519 key, and the custodian's re-sealing of a backed-up share
//! to a (new) node for a restore.
//!
//! Every blob is sealed with the one HPKE construction of [`crate::import`] (base mode,
//! DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305). Each purpose has its own
//! `info` domain, and the key id, the member's tag and the share generation are bound in
//! it, so a blob of one purpose, key, member or generation does not open as another.
//!
//! Export moves only what the combination needs (the party index and the secret scalar
//! share); combining `threshold` of them by Lagrange interpolation at 0 gives the key,
//! which the caller checks against the key's public key before it uses it. A backup moves
//! the whole stored share, since a restore must give the node a share it can refresh.

use crate::curve::{Curve, DkmsCurve, scalar_bytes, scalar_from_bytes, with_curve};
use crate::envelope::EncryptionKeypair;
use crate::error::{MpcError, PartyIndex};
use crate::import::{SecretScalar, open_base, seal_base};
use crate::share::KeyShare;
use dkms_proto::NodeTag;
use zeroize::{Zeroize, Zeroizing};

/// Why shares could not be combined into the key. Messages carry no secret.
#[derive(Debug, thiserror::Error)]
pub enum CombineError {
    #[error("{got} shares given, {threshold} needed")]
    TooFew { got: usize, threshold: u8 },
    #[error("party {0} appears more than once")]
    Duplicate(PartyIndex),
    #[error("a share is for party 0 or holds an invalid scalar")]
    Invalid,
    #[error(
        "the shares combine to a key whose public key is not the key's: a share is damaged, \
         of another generation, or not of this key"
    )]
    WrongKey,
}

/// What each purpose binds in its `info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A member's scalar share sealed to a client for a break-glass export.
    Export,
    /// A member's stored share sealed to a custodian.
    Backup,
    /// A backed-up share re-sealed by its custodian to the node that restores it.
    Restore,
}

impl Purpose {
    fn domain(self) -> &'static [u8] {
        match self {
            Purpose::Export => b"dkms/export-share/v1",
            Purpose::Backup => b"dkms/backup-share/v1",
            Purpose::Restore => b"dkms/restore-share/v1",
        }
    }
}

/// `domain ‖ key id (16) ‖ u32 BE length ‖ member tag ‖ generation (u32 BE)`.
fn info(purpose: Purpose, key_id: &uuid::Uuid, member: &NodeTag, generation: u32) -> Vec<u8> {
    let domain = purpose.domain();
    let tag = member.as_str().as_bytes();
    let mut out = Vec::with_capacity(domain.len() + 16 + 4 + tag.len() + 4);
    out.extend_from_slice(domain);
    out.extend_from_slice(key_id.as_bytes());
    out.extend_from_slice(&(tag.len() as u32).to_be_bytes());
    out.extend_from_slice(tag);
    out.extend_from_slice(&generation.to_be_bytes());
    out
}

/// Version byte of an export plaintext.
const EXPORT_FORMAT_V1: u8 = 1;
/// `version ‖ party index ‖ threshold ‖ scalar (32, big endian) ‖ public key (33)`.
const EXPORT_PLAINTEXT_LEN: usize = 1 + 1 + 1 + 32 + 33;

fn own_tag(share: &KeyShare) -> Result<NodeTag, MpcError> {
    usize::from(share.my_index())
        .checked_sub(1)
        .and_then(|i| share.participants().get(i))
        .map(|p| p.tag.clone())
        .ok_or_else(|| MpcError::Internal("share's own participant entry missing".into()))
}

/// Seals this node's scalar share of an exportable key to `recipient` (a client's X25519
/// public key). Refuses a share whose key was not created exportable: the node enforces
/// the bit itself, whatever the gateway asks.
pub fn seal_export(
    share: &KeyShare,
    generation: u32,
    recipient: &[u8; 32],
) -> Result<Vec<u8>, MpcError> {
    if !share.exportable() {
        return Err(MpcError::BadParameters(format!(
            "key {} was not created exportable; this node does not export its share",
            share.key_id()
        )));
    }
    if share.needs_refresh() {
        return Err(MpcError::BadParameters(
            "this node's share was rebuilt by a repair and is exported only after the recovery's refresh"
                .into(),
        ));
    }
    let mut plain = Zeroizing::new(Vec::with_capacity(EXPORT_PLAINTEXT_LEN));
    plain.push(EXPORT_FORMAT_V1);
    plain.push(share.my_index());
    plain.push(share.threshold());
    plain.extend_from_slice(share.secret_scalar().as_slice());
    plain.extend_from_slice(&share.public_key());
    let tag = own_tag(share)?;
    seal_base(
        recipient,
        &info(Purpose::Export, &share.key_id(), &tag, generation),
        &plain,
    )
}

/// One member's opened export share. Secret: zeroized on drop, no `Debug`.
pub struct ExportedShare {
    pub index: PartyIndex,
    pub threshold: u8,
    pub public_key: [u8; 33],
    scalar: Zeroizing<[u8; 32]>,
}

/// Opens the export share `member` sealed for `me` for `key_id` at `generation`.
pub fn open_export(
    me: &EncryptionKeypair,
    key_id: &uuid::Uuid,
    member: &NodeTag,
    generation: u32,
    sealed: &[u8],
) -> Result<ExportedShare, MpcError> {
    let plain = open_base(
        me,
        &info(Purpose::Export, key_id, member, generation),
        sealed,
        "export share",
    )?;
    if plain.len() != EXPORT_PLAINTEXT_LEN || plain[0] != EXPORT_FORMAT_V1 {
        return Err(MpcError::Corrupt(format!(
            "export share of {} bytes or unknown version",
            plain.len()
        )));
    }
    let mut scalar = Zeroizing::new([0u8; 32]);
    scalar.copy_from_slice(&plain[3..35]);
    let mut public_key = [0u8; 33];
    public_key.copy_from_slice(&plain[35..68]);
    Ok(ExportedShare {
        index: plain[1],
        threshold: plain[2],
        public_key,
        scalar,
    })
}

impl ExportedShare {
    /// The scalar share of a stored share (a custodian's opened backup), for [`combine`].
    pub fn from_share(share: &KeyShare) -> ExportedShare {
        ExportedShare {
            index: share.my_index(),
            threshold: share.threshold(),
            public_key: share.public_key(),
            scalar: share.secret_scalar(),
        }
    }
}

/// Combines at least `threshold` shares of the key `public_key` (SEC1 compressed, on
/// `curve`) by Lagrange interpolation at 0 and checks the result against `public_key`: a
/// key is returned only if it is the key.
pub fn combine(
    shares: &[ExportedShare],
    threshold: u8,
    public_key: &[u8; 33],
    curve: Curve,
) -> Result<SecretScalar, CombineError> {
    if shares.len() < usize::from(threshold) || threshold == 0 {
        return Err(CombineError::TooFew {
            got: shares.len(),
            threshold,
        });
    }
    let bytes = with_curve!(curve, C => interpolate::<C>(&shares[..usize::from(threshold)])?);
    let key = SecretScalar::from_be_bytes(curve, &bytes).ok_or(CombineError::WrongKey)?;
    if key.public_key() != *public_key {
        return Err(CombineError::WrongKey);
    }
    Ok(key)
}

/// The secret at 0 of the polynomial through the shares' points.
fn interpolate<C: DkmsCurve>(
    shares: &[ExportedShare],
) -> Result<Zeroizing<[u8; 32]>, CombineError> {
    use k256::elliptic_curve::Field;
    /// Secret scalars, wiped however the interpolation ends.
    struct Wiped<S: Zeroize>(Vec<S>);
    impl<S: Zeroize> Drop for Wiped<S> {
        fn drop(&mut self) {
            self.0.iter_mut().for_each(Zeroize::zeroize);
        }
    }
    let mut xs: Vec<C::Scalar> = Vec::with_capacity(shares.len());
    let mut ys = Wiped(Vec::with_capacity(shares.len()));
    for s in shares {
        if s.index == 0 {
            return Err(CombineError::Invalid);
        }
        let x = C::Scalar::from(u64::from(s.index));
        if xs.contains(&x) {
            return Err(CombineError::Duplicate(s.index));
        }
        xs.push(x);
        ys.0.push(scalar_from_bytes::<C>(&s.scalar).ok_or(CombineError::Invalid)?);
    }
    let mut sum = Wiped(vec![C::Scalar::ZERO]);
    for (i, (xi, yi)) in xs.iter().zip(&ys.0).enumerate() {
        let mut num = C::Scalar::ONE;
        let mut den = C::Scalar::ONE;
        for (j, xj) in xs.iter().enumerate() {
            if i != j {
                num *= xj;
                den *= *xj - xi;
            }
        }
        let inv: Option<C::Scalar> = den.invert().into();
        sum.0[0] += *yi * num * inv.ok_or(CombineError::Invalid)?;
    }
    Ok(scalar_bytes::<C>(&sum.0[0]))
}

/// Seals this node's whole stored share to a custodian's X25519 key.
pub fn seal_backup(
    share: &KeyShare,
    generation: u32,
    custodian: &[u8; 32],
) -> Result<Vec<u8>, MpcError> {
    if share.needs_refresh() {
        return Err(MpcError::BadParameters(
            "this node's share was rebuilt by a repair; back it up after the recovery's refresh"
                .into(),
        ));
    }
    let plain = share.to_bytes();
    if plain.is_empty() {
        return Err(MpcError::Internal("share did not encode".into()));
    }
    let tag = own_tag(share)?;
    seal_base(
        custodian,
        &info(Purpose::Backup, &share.key_id(), &tag, generation),
        &plain,
    )
}

/// The custodian's side: opens the backup of `member`'s share of `key_id` at
/// `generation`, and checks that it is that member's share of that key.
pub fn open_backup(
    custodian: &EncryptionKeypair,
    key_id: &uuid::Uuid,
    member: &NodeTag,
    generation: u32,
    sealed: &[u8],
) -> Result<KeyShare, MpcError> {
    open_member_share(
        custodian,
        Purpose::Backup,
        key_id,
        member,
        generation,
        sealed,
    )
}

/// The custodian's side, offline: seals a backed-up share to the node `node_tag` with
/// encryption key `node_key` that will hold it, for `member`'s place at `generation`.
pub fn seal_restore(
    share: &KeyShare,
    generation: u32,
    member: &NodeTag,
    node_key: &[u8; 32],
) -> Result<Vec<u8>, MpcError> {
    let plain = share.to_bytes();
    if plain.is_empty() {
        return Err(MpcError::Internal("share did not encode".into()));
    }
    seal_base(
        node_key,
        &info(Purpose::Restore, &share.key_id(), member, generation),
        &plain,
    )
}

/// The restoring node's side: opens a restore blob for `member`'s place in `key_id` at
/// `generation` and checks that the share inside is that member's share of that key.
pub fn open_restore(
    me: &EncryptionKeypair,
    key_id: &uuid::Uuid,
    member: &NodeTag,
    generation: u32,
    sealed: &[u8],
) -> Result<KeyShare, MpcError> {
    open_member_share(me, Purpose::Restore, key_id, member, generation, sealed)
}

/// Opens a sealed share of `member`'s place in `key_id` at `generation` and checks that
/// the share inside is that member's share of that key.
fn open_member_share(
    me: &EncryptionKeypair,
    purpose: Purpose,
    key_id: &uuid::Uuid,
    member: &NodeTag,
    generation: u32,
    sealed: &[u8],
) -> Result<KeyShare, MpcError> {
    let what = match purpose {
        Purpose::Restore => "restore blob",
        _ => "backup share",
    };
    let plain = open_base(me, &info(purpose, key_id, member, generation), sealed, what)?;
    let share = KeyShare::from_bytes(&plain)?;
    if share.key_id() != *key_id || own_tag(&share)? != *member {
        return Err(MpcError::Corrupt(format!(
            "the {what} holds another key's or member's share"
        )));
    }
    Ok(share)
}

/// A fresh X25519 key pair for a client or custodian: a random seed through RFC 9180
/// `DeriveKeyPair`. Returns the seed (the private key to keep) and the pair.
pub fn new_recipient() -> Result<(Zeroizing<[u8; 32]>, EncryptionKeypair), MpcError> {
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut_slice())
        .map_err(|e| MpcError::Internal(format!("randomness: {e}")))?;
    let pair = EncryptionKeypair::from_seed(&seed);
    Ok((seed, pair))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ShareParticipant;
    use crate::import::split;

    fn participants(n: u8) -> Vec<(ShareParticipant, EncryptionKeypair)> {
        (1..=n)
            .map(|i| {
                let pair = EncryptionKeypair::from_seed(&[i; 32]);
                (
                    ShareParticipant {
                        tag: format!("node{i}").parse().unwrap(),
                        encryption_key: pair.public_key(),
                    },
                    pair,
                )
            })
            .collect()
    }

    fn key() -> SecretScalar {
        SecretScalar::from_be_bytes(Curve::Secp256k1, &Zeroizing::new([7u8; 32])).unwrap()
    }

    fn shares(n: u8, t: u8, exportable: bool) -> Vec<KeyShare> {
        let ps = participants(n).into_iter().map(|(p, _)| p).collect();
        split(&key(), uuid::Uuid::from_u128(5), t, ps)
            .unwrap()
            .into_iter()
            .map(|s| s.with_exportable(exportable))
            .collect()
    }

    #[test]
    fn a_non_exportable_share_is_refused_by_its_node() {
        let (_, client) = new_recipient().unwrap();
        let s = shares(3, 2, false);
        let err = seal_export(&s[0], 0, &client.public_key()).unwrap_err();
        assert!(err.to_string().contains("not created exportable"), "{err}");
        // The bit survives the stored form.
        let back = KeyShare::from_bytes(&s[0].to_bytes()).unwrap();
        assert!(!back.exportable());
        let e = shares(3, 2, true);
        assert!(KeyShare::from_bytes(&e[0].to_bytes()).unwrap().exportable());
    }

    #[test]
    fn threshold_export_shares_combine_to_the_key_and_fewer_do_not() {
        let (_, client) = new_recipient().unwrap();
        let s = shares(3, 2, true);
        let pk = s[0].public_key();
        let id = s[0].key_id();
        let opened: Vec<ExportedShare> = s
            .iter()
            .map(|sh| {
                let tag = own_tag(sh).unwrap();
                let sealed = seal_export(sh, 4, &client.public_key()).unwrap();
                open_export(&client, &id, &tag, 4, &sealed).unwrap()
            })
            .collect();
        let k = combine(&opened[1..], 2, &pk, Curve::Secp256k1).unwrap();
        assert_eq!(k.public_key(), key().public_key());
        // One share alone is refused; a single share "as if" the threshold were 1 is not
        // the key either.
        assert!(matches!(
            combine(&opened[..1], 2, &pk, Curve::Secp256k1),
            Err(CombineError::TooFew { .. })
        ));
        assert!(matches!(
            combine(&opened[..1], 1, &pk, Curve::Secp256k1),
            Err(CombineError::WrongKey)
        ));
    }

    #[test]
    fn blobs_do_not_open_under_another_purpose_member_or_generation() {
        let (_, client) = new_recipient().unwrap();
        let s = shares(2, 2, true);
        let id = s[0].key_id();
        let tag = own_tag(&s[0]).unwrap();
        let other: NodeTag = "node2".parse().unwrap();
        let exported = seal_export(&s[0], 1, &client.public_key()).unwrap();
        assert!(open_export(&client, &id, &tag, 2, &exported).is_err());
        assert!(open_export(&client, &id, &other, 1, &exported).is_err());
        assert!(open_backup(&client, &id, &tag, 1, &exported).is_err());
        let backup = seal_backup(&s[0], 1, &client.public_key()).unwrap();
        assert!(open_export(&client, &id, &tag, 1, &backup).is_err());
        assert!(open_restore(&client, &id, &tag, 1, &backup).is_err());
        let opened = open_backup(&client, &id, &tag, 1, &backup).unwrap();
        assert_eq!(opened.public_key(), s[0].public_key());
        let node = EncryptionKeypair::from_seed(&[9; 32]);
        let blob = seal_restore(&opened, 1, &tag, &node.public_key()).unwrap();
        assert!(open_restore(&client, &id, &tag, 1, &blob).is_err());
        assert!(open_restore(&node, &id, &other, 1, &blob).is_err());
        assert!(open_restore(&node, &id, &tag, 0, &blob).is_err());
        let restored = open_restore(&node, &id, &tag, 1, &blob).unwrap();
        assert_eq!(restored.my_index(), 1);
        assert!(open_restore(&node, &id, &tag, 1, b"garbage").is_err());
    }
}
