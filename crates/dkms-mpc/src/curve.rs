//! The curves a key can live on. One protocol implementation serves all of them: the
//! sessions are generic over [`DkmsCurve`], and [`Curve`] picks the instance at run time
//! (from the stored share, or from the session's scheme for a key not yet held).

use crate::error::MpcError;
use crate::share::{Body, Parts};
use dkls23::curve::DklsCurve;
use dkms_proto::node::Scheme;
use k256::elliptic_curve::CurveArithmetic;
use k256::elliptic_curve::group::GroupEncoding;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use zeroize::Zeroize;

/// The curve of a key, fixed when the key is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Curve {
    /// secp256k1 (`ECDSA_K1`): Ethereum, Bitcoin and most chains.
    Secp256k1,
    /// NIST P-256 / secp256r1 (`ECDSA_R1`): WebAuthn, HSM-backed systems, NEO, Sui.
    P256,
}

impl Curve {
    /// The session scheme that runs DKLs23 on this curve.
    pub fn scheme(self) -> Scheme {
        match self {
            Curve::Secp256k1 => Scheme::Dkls23Secp256k1,
            Curve::P256 => Scheme::Dkls23P256,
        }
    }

    pub fn of_scheme(scheme: Scheme) -> Curve {
        match scheme {
            Scheme::Dkls23Secp256k1 => Curve::Secp256k1,
            Scheme::Dkls23P256 => Curve::P256,
        }
    }

    /// The curve of an API key type.
    pub fn of_key_type(key_type: dkms_proto::KeyType) -> Curve {
        Curve::of_scheme(key_type.scheme())
    }

    /// The curve of a key type as the metadata store records it (`ECDSA_K1`, `ECDSA_R1`).
    pub fn of_key_type_name(name: &str) -> Result<Curve, MpcError> {
        name.parse::<dkms_proto::KeyType>()
            .map(Curve::of_key_type)
            .map_err(|e| MpcError::BadParameters(e.0))
    }

    /// The name OpenSSL and SEC 2 use.
    pub fn name(self) -> &'static str {
        match self {
            Curve::Secp256k1 => "secp256k1",
            Curve::P256 => "P-256 (prime256v1)",
        }
    }

    /// The byte that names the curve in the stored share (format 3).
    pub(crate) fn tag(self) -> u8 {
        match self {
            Curve::Secp256k1 => 1,
            Curve::P256 => 2,
        }
    }

    pub(crate) fn from_tag(tag: u8) -> Result<Curve, MpcError> {
        match tag {
            1 => Ok(Curve::Secp256k1),
            2 => Ok(Curve::P256),
            other => Err(MpcError::Corrupt(format!("unknown curve tag {other}"))),
        }
    }
}

impl fmt::Display for Curve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the sessions need of a curve beyond dkls23's own bounds: serde for points and
/// scalars (they travel in messages and stored shares), zeroizing scalars, and a way in
/// and out of a share's [`Body`].
pub(crate) trait DkmsCurve:
    DklsCurve
    + CurveArithmetic<
        AffinePoint: Serialize + DeserializeOwned + Send + Sync,
        Scalar: Serialize + DeserializeOwned + Zeroize + Send + Sync,
        ProjectivePoint: Send + Sync,
    >
{
    const CURVE: Curve;
    fn wrap(parts: Parts<Self>) -> Body;
    fn parts(body: &Body) -> Option<&Parts<Self>>;
}

impl DkmsCurve for k256::Secp256k1 {
    const CURVE: Curve = Curve::Secp256k1;
    fn wrap(parts: Parts<Self>) -> Body {
        Body::Secp256k1(parts)
    }
    fn parts(body: &Body) -> Option<&Parts<Self>> {
        match body {
            Body::Secp256k1(p) => Some(p),
            Body::P256(_) => None,
        }
    }
}

impl DkmsCurve for p256::NistP256 {
    const CURVE: Curve = Curve::P256;
    fn wrap(parts: Parts<Self>) -> Body {
        Body::P256(parts)
    }
    fn parts(body: &Body) -> Option<&Parts<Self>> {
        match body {
            Body::P256(p) => Some(p),
            Body::Secp256k1(_) => None,
        }
    }
}

/// Runs `$body` with `$C` bound to the curve type of `$curve`.
macro_rules! with_curve {
    ($curve:expr, $C:ident => $body:expr) => {
        match $curve {
            $crate::curve::Curve::Secp256k1 => {
                type $C = k256::Secp256k1;
                $body
            }
            $crate::curve::Curve::P256 => {
                type $C = p256::NistP256;
                $body
            }
        }
    };
}
pub(crate) use with_curve;

/// SEC1 compressed encoding of a point (33 bytes on both curves).
pub(crate) fn compress<C: DkmsCurve>(point: &C::AffinePoint) -> [u8; 33] {
    let repr = point.to_bytes();
    let mut out = [0u8; 33];
    // Both curves encode compressed points in 33 bytes; a mismatch leaves zeros, which no
    // check downstream accepts as a key.
    if repr.as_ref().len() == out.len() {
        out.copy_from_slice(repr.as_ref());
    }
    out
}

/// A scalar as 32 big-endian bytes.
pub(crate) fn scalar_bytes<C: DkmsCurve>(scalar: &C::Scalar) -> zeroize::Zeroizing<[u8; 32]> {
    use k256::elliptic_curve::PrimeField;
    let mut out = zeroize::Zeroizing::new([0u8; 32]);
    let mut repr = scalar.to_repr();
    let bytes: &mut [u8] = repr.as_mut();
    if bytes.len() == 32 {
        out.copy_from_slice(bytes);
    }
    bytes.zeroize();
    out
}

/// Parses 32 big-endian bytes as a scalar below the group order.
pub(crate) fn scalar_from_bytes<C: DkmsCurve>(bytes: &[u8; 32]) -> Option<C::Scalar> {
    use k256::elliptic_curve::PrimeField;
    let mut repr = <C::Scalar as PrimeField>::Repr::default();
    let slot: &mut [u8] = repr.as_mut();
    if slot.len() != 32 {
        return None;
    }
    slot.copy_from_slice(bytes);
    let out = Option::from(C::Scalar::from_repr(repr));
    let slot: &mut [u8] = repr.as_mut();
    slot.zeroize();
    out
}

/// Parses a SEC1 compressed point; `None` unless it is on the curve.
pub(crate) fn decompress<C: DkmsCurve>(bytes: &[u8]) -> Option<C::AffinePoint> {
    let mut repr = <C::AffinePoint as GroupEncoding>::Repr::default();
    let slot: &mut [u8] = repr.as_mut();
    if slot.len() != bytes.len() {
        return None;
    }
    slot.copy_from_slice(bytes);
    Option::from(C::AffinePoint::from_bytes(&repr))
}
