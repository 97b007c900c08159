//! Import of an existing secp256k1 or P-256 private key: parse it from PEM, split it among the
//! key's nodes with the DKLs23 trusted-dealer function (`re_key`), and seal each share to
//! its node.
//!
//! Formats: PKCS#8 (plain, or encrypted with PBES2: PBKDF2 or scrypt, and AES), SEC1
//! (`EC PRIVATE KEY`, plain or with OpenSSL's legacy `Proc-Type`/`DEK-Info` encryption).
//! Every cryptographic step comes from a library: PBES2 from `pkcs8`/`pkcs5`; for the
//! legacy format, OpenSSL's `EVP_BytesToKey` (MD5, one iteration, salt = the first 8 bytes
//! of the IV) with `md-5`, then CBC with PKCS#7 padding from `cbc` over `aes`/`des`.
//! Only the PEM framing (which RFC 7468 parsers refuse when it carries the legacy headers)
//! is parsed here.
//!
//! Splitting puts every share in one process for a moment: that is the point of a trusted
//! dealer. Run it where the key already is (the client, for the CLI/SDK path), then seal
//! each share with [`seal_share`] so that only its node can read it.
//!
//! [`seal_share`] uses HPKE base mode: it keeps a share secret from the relay but does
//! not say who sealed it (the client has no node identity). A relay could therefore hand
//! every node shares of a key of its own choosing; the client must check that the public
//! key the nodes report is the one of the key it imported ([`SecretScalar::public_key`]).

use crate::curve::{Curve, DkmsCurve, compress, scalar_from_bytes, with_curve};
use crate::envelope::{ENCAPPED_KEY_LEN, EncappedKey, EncryptionKeypair, Kem, PublicKey, TAG_LEN};
use crate::error::MpcError;
use crate::share::{KeyShare, ShareParticipant, check_parameters};
use base64ct::{Base64, Encoding};
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockCipherDecrypt, BlockModeDecrypt, KeyInit, KeyIvInit};
use dkls23::protocols::Parameters;
use dkls23::protocols::re_key::re_key;
use dkms_proto::NodeTag;
use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::{Deserializable, OpModeR, OpModeS, Serializable};
use md5::{Digest as _, Md5};
use pkcs8::der::asn1::{AnyRef, OctetStringRef};
use pkcs8::der::{Decode, ErrorKind, Reader, Tag, Tagged};
use pkcs8::pkcs5::{self, pbes2};
use pkcs8::{
    AlgorithmIdentifierRef, EncryptedPrivateKeyInfoRef, ObjectIdentifier, PrivateKeyInfoRef,
};
use sec1::EcPrivateKey;
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

/// Why a private key could not be imported. Every message is safe to show a client: none
/// carries key bytes or the password.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("the private key is encrypted; a password is required")]
    PasswordRequired,
    #[error("wrong password, or the encrypted key is damaged")]
    WrongPassword,
    /// `found`: the curve's name (e.g. `secp384r1 (P-384)`) or OID.
    #[error("the key is on {found}, not {expected} as its type says")]
    WrongCurve { found: String, expected: Curve },
    #[error("the private key is not a valid {0} scalar (zero or out of range)")]
    InvalidScalar(Curve),
    /// Another algorithm (RSA, Ed25519, …) or an encryption this module does not implement.
    #[error("unsupported key format: {0}")]
    Unsupported(String),
    /// Not a key: garbage, truncated PEM, bad base64 or bad DER.
    #[error("malformed private key: {0}")]
    Malformed(String),
}

/// A private key in the range 1..n of its curve, zeroized on drop; no `Debug`, `Clone`
/// or `Serialize`.
pub struct SecretScalar {
    curve: Curve,
    /// Big endian; checked to be a valid nonzero scalar of `curve`.
    bytes: Zeroizing<[u8; 32]>,
    public_key: [u8; 33],
}

impl SecretScalar {
    /// SEC1 compressed public key.
    pub fn public_key(&self) -> [u8; 33] {
        self.public_key
    }

    pub fn curve(&self) -> Curve {
        self.curve
    }

    /// The key as a SEC1 `EC PRIVATE KEY` PEM (named curve, with the public key), as
    /// OpenSSL reads and writes it.
    pub fn to_sec1_pem(&self) -> Result<Zeroizing<String>, ImportError> {
        let failed =
            |e: &dyn std::fmt::Display| ImportError::Malformed(format!("encoding the key: {e}"));
        match self.curve {
            Curve::Secp256k1 => k256::SecretKey::from_slice(&*self.bytes)
                .map_err(|e| failed(&e))?
                .to_sec1_pem(pkcs8::LineEnding::LF),
            Curve::P256 => p256::SecretKey::from_slice(&*self.bytes)
                .map_err(|e| failed(&e))?
                .to_sec1_pem(pkcs8::LineEnding::LF),
        }
        .map_err(|e| failed(&e))
    }

    /// `None` for zero or a value ≥ n.
    pub(crate) fn from_be_bytes(curve: Curve, bytes: &Zeroizing<[u8; 32]>) -> Option<Self> {
        let public_key = with_curve!(curve, C => public_of::<C>(bytes)?);
        Some(SecretScalar {
            curve,
            bytes: bytes.clone(),
            public_key,
        })
    }

    /// Whether `sec1_point` (compressed or uncompressed) is this key's public key.
    fn matches(&self, sec1_point: &[u8]) -> bool {
        match self.curve {
            Curve::Secp256k1 => k256::PublicKey::from_sec1_bytes(sec1_point)
                .is_ok_and(|pk| compress::<k256::Secp256k1>(pk.as_affine()) == self.public_key),
            Curve::P256 => p256::PublicKey::from_sec1_bytes(sec1_point)
                .is_ok_and(|pk| compress::<p256::NistP256>(pk.as_affine()) == self.public_key),
        }
    }

    /// The scalar itself, for the dealer's split.
    fn scalar<C: DkmsCurve>(&self) -> Option<C::Scalar> {
        (self.curve == C::CURVE)
            .then(|| scalar_from_bytes::<C>(&self.bytes))
            .flatten()
    }
}

/// The SEC1 compressed public key of a nonzero scalar below the group order.
fn public_of<C: DkmsCurve>(bytes: &[u8; 32]) -> Option<[u8; 33]> {
    use k256::elliptic_curve::Field;
    use k256::elliptic_curve::group::{Curve as _, Group};
    let mut scalar = scalar_from_bytes::<C>(bytes)?;
    let zero: bool = scalar.is_zero().into();
    let point = (C::ProjectivePoint::generator() * scalar).to_affine();
    scalar.zeroize();
    (!zero).then(|| compress::<C>(&point))
}

/// Largest PEM text accepted: far above any EC key (and above a 16384-bit RSA key, which is
/// refused with a clearer message than "too large").
const MAX_PEM_LEN: usize = 64 * 1024;
/// PBKDF2 iterations accepted in an encrypted PKCS#8 key (OpenSSL writes 2048; OWASP
/// suggests 600 000 for HMAC-SHA256): bounds the work one request can cause.
const MAX_PBKDF2_ITERATIONS: u32 = 10_000_000;
/// scrypt memory (128·N·r bytes) accepted; OpenSSL writes N = 16384, r = 8 (16 MiB).
const MAX_SCRYPT_MEMORY: u64 = 256 * 1024 * 1024;
/// scrypt work (N·r·p) accepted; OpenSSL's default is 2^17.
const MAX_SCRYPT_WORK: u64 = 1 << 23;

const SECP256K1_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.10");
const P256_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");

fn curve_oid(curve: Curve) -> ObjectIdentifier {
    match curve {
        Curve::Secp256k1 => SECP256K1_OID,
        Curve::P256 => P256_OID,
    }
}
const EC_PUBLIC_KEY_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");

/// Accepts: encrypted PKCS#8 (`ENCRYPTED PRIVATE KEY`, PBES2 with PBKDF2 or scrypt and
/// AES), plain PKCS#8 (`PRIVATE KEY`), SEC1 (`EC PRIVATE KEY`), and SEC1 with OpenSSL's
/// legacy PEM encryption (`Proc-Type: 4,ENCRYPTED` and `DEK-Info:` AES-128/192/256-CBC or
/// DES-EDE3-CBC, as `openssl ec -aes256` writes). Text around the PEM blocks (RFC 7468
/// §2), an `EC PARAMETERS` block (as `openssl ecparam -genkey` writes) and other blocks
/// that hold no private key (a certificate, a public key) are ignored.
///
/// The curve must be `curve` (its named-curve OID, 1.3.132.0.10 for secp256k1 or
/// 1.2.840.10045.3.1.7 for P-256, wherever the file names a curve). A key that names no
/// curve is taken as on `curve` only if its public key, when present, is the public key of
/// its scalar there. A public key in the file must match the private key. A password
/// given for an unencrypted key is ignored.
pub fn parse_private_key_pem(
    pem: &str,
    password: Option<&[u8]>,
    curve: Curve,
) -> Result<SecretScalar, ImportError> {
    if pem.len() > MAX_PEM_LEN {
        return Err(ImportError::Malformed(format!(
            "{} bytes of PEM is more than any private key needs",
            pem.len()
        )));
    }
    let blocks = pem_blocks(pem)?;
    if blocks.is_empty() {
        return Err(ImportError::Malformed("no PEM block found".into()));
    }
    let mut named_curves = Vec::new();
    let mut key: Option<&PemBlock> = None;
    for block in &blocks {
        match block.label.as_str() {
            "EC PARAMETERS" => named_curves.push(ec_parameters_block(&block.der)?),
            "EC PRIVATE KEY" | "PRIVATE KEY" | "ENCRYPTED PRIVATE KEY" => {
                if key.is_some() {
                    return Err(ImportError::Malformed(
                        "the PEM holds more than one private key".into(),
                    ));
                }
                key = Some(block);
            }
            "RSA PRIVATE KEY" => return Err(unsupported_label("an RSA key")),
            "DSA PRIVATE KEY" => return Err(unsupported_label("a DSA key")),
            "OPENSSH PRIVATE KEY" => {
                return Err(ImportError::Unsupported(
                    "an OpenSSH private key (convert it to PKCS#8 with `ssh-keygen -p -m PKCS8`)"
                        .into(),
                ));
            }
            label if label.ends_with("PRIVATE KEY") => {
                return Err(ImportError::Unsupported(format!(
                    "a \"{}\" PEM block",
                    shown(label)
                )));
            }
            _ => {}
        }
    }
    let Some(block) = key else {
        let labels: Vec<String> = blocks.iter().map(|b| shown(&b.label)).collect();
        return Err(ImportError::Unsupported(format!(
            "no private key in the PEM (it holds {})",
            labels.join(", ")
        )));
    };
    let curves = Curves::new(named_curves, curve);

    match (block.label.as_str(), block.headers.is_empty()) {
        ("ENCRYPTED PRIVATE KEY", true) => {
            let plain = decrypt_pkcs8(&block.der, password)?;
            // Bytes that fail to parse after decryption are almost always a wrong password
            // that happened to leave valid padding (about 1 in 256 for CBC).
            from_pkcs8(&plain, curves).map_err(garbled_means_wrong_password)
        }
        ("PRIVATE KEY", true) => from_pkcs8(&block.der, curves),
        ("EC PRIVATE KEY", true) => from_sec1(&block.der, curves),
        (label, false) if label != "ENCRYPTED PRIVATE KEY" => {
            let plain = decrypt_legacy(block, password)?;
            if label == "PRIVATE KEY" {
                from_pkcs8(&plain, curves)
            } else {
                from_sec1(&plain, curves)
            }
            .map_err(garbled_means_wrong_password)
        }
        _ => Err(ImportError::Malformed(
            "unexpected PEM headers in an ENCRYPTED PRIVATE KEY block".into(),
        )),
    }
}

fn unsupported_label(what: &str) -> ImportError {
    ImportError::Unsupported(format!(
        "{what}; only secp256k1 and P-256 EC keys can be imported"
    ))
}

fn garbled_means_wrong_password(e: ImportError) -> ImportError {
    match e {
        ImportError::Malformed(_) => ImportError::WrongPassword,
        other => other,
    }
}

// ---------------------------------------------------------------------------------------
// PEM framing (RFC 7468, plus the RFC 1421 headers that OpenSSL's legacy encryption uses)

struct PemBlock {
    label: String,
    headers: Vec<(String, String)>,
    der: Zeroizing<Vec<u8>>,
}

fn begin_label(line: &str) -> Option<&str> {
    line.strip_prefix("-----BEGIN ")?.strip_suffix("-----")
}

fn end_label(line: &str) -> Option<&str> {
    line.strip_prefix("-----END ")?.strip_suffix("-----")
}

/// A label for an error message: printable ASCII, at most 40 characters.
fn shown(label: &str) -> String {
    let clean: String = label
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(40)
        .collect();
    if clean.len() < label.len() {
        format!("{clean}…")
    } else {
        clean
    }
}

fn pem_blocks(text: &str) -> Result<Vec<PemBlock>, ImportError> {
    let mut blocks = Vec::new();
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        // Anything outside BEGIN/END is explanatory text (RFC 7468 §2).
        let Some(label) = begin_label(line) else {
            continue;
        };
        let label = label.to_owned();
        let mut headers = Vec::new();
        // Sized up front so that no reallocation leaves base64 of a key in freed memory.
        let mut base64 = Zeroizing::new(String::with_capacity(text.len()));
        let mut ended = false;
        for line in lines.by_ref() {
            if let Some(end) = end_label(line) {
                if end != label {
                    return Err(ImportError::Malformed(format!(
                        "the PEM block BEGIN {} ends with END {}",
                        shown(&label),
                        shown(end)
                    )));
                }
                ended = true;
                break;
            }
            if begin_label(line).is_some() {
                break;
            }
            if line.is_empty() {
                continue;
            }
            // Headers come before the base64, which never contains ':'.
            if base64.is_empty()
                && let Some((name, value)) = line.split_once(':')
            {
                headers.push((name.trim().to_owned(), value.trim().to_owned()));
                continue;
            }
            base64.push_str(line);
        }
        if !ended {
            return Err(ImportError::Malformed(format!(
                "truncated PEM: the {} block has no END line",
                shown(&label)
            )));
        }
        let mut der = Zeroizing::new(vec![0u8; base64.len() / 4 * 3 + 3]);
        let len = Base64::decode(base64.as_bytes(), &mut der)
            .map_err(|_| {
                ImportError::Malformed(format!(
                    "the {} block is not valid base64 (truncated or altered?)",
                    shown(&label)
                ))
            })?
            .len();
        der.truncate(len);
        blocks.push(PemBlock {
            label,
            headers,
            der,
        });
    }
    Ok(blocks)
}

// ---------------------------------------------------------------------------------------
// Curves

/// The curves a file names; checked once the key itself is parsed.
struct Curves {
    named: Vec<ObjectIdentifier>,
    expected: Curve,
}

impl Curves {
    fn new(named: Vec<ObjectIdentifier>, expected: Curve) -> Self {
        Curves { named, expected }
    }

    fn add(&mut self, oid: ObjectIdentifier) {
        self.named.push(oid);
    }

    /// Err if any named curve is not the expected one; Ok(true) if at least one names it.
    fn check(&self) -> Result<bool, ImportError> {
        let expected = curve_oid(self.expected);
        if let Some(other) = self.named.iter().find(|&&oid| oid != expected) {
            return Err(ImportError::WrongCurve {
                found: curve_name(*other),
                expected: self.expected,
            });
        }
        Ok(!self.named.is_empty())
    }
}

fn curve_name(oid: ObjectIdentifier) -> String {
    let name = match oid.to_string().as_str() {
        "1.3.132.0.10" => "secp256k1",
        "1.2.840.10045.3.1.7" => "prime256v1 (P-256)",
        "1.3.132.0.34" => "secp384r1 (P-384)",
        "1.3.132.0.35" => "secp521r1 (P-521)",
        "1.3.132.0.33" => "secp224r1 (P-224)",
        "1.2.840.10045.3.1.1" => "prime192v1 (P-192)",
        "1.3.36.3.3.2.8.1.1.7" => "brainpoolP256r1",
        "1.3.36.3.3.2.8.1.1.11" => "brainpoolP384r1",
        "1.3.36.3.3.2.8.1.1.13" => "brainpoolP512r1",
        "1.2.156.10197.1.301" => "SM2",
        other => return format!("the curve with OID {other}"),
    };
    name.to_owned()
}

fn explicit_parameters() -> ImportError {
    ImportError::Unsupported(
        "explicit curve parameters (write the key with a named curve, e.g. \
         `openssl ec -param_enc named_curve`)"
            .into(),
    )
}

/// An `EC PARAMETERS` block: a named-curve OID (or explicit parameters, refused).
fn ec_parameters_block(der: &[u8]) -> Result<ObjectIdentifier, ImportError> {
    let any = AnyRef::from_der(der)
        .map_err(|e| ImportError::Malformed(format!("EC PARAMETERS block: {e}")))?;
    named_curve(any, "EC PARAMETERS block")
}

fn named_curve(any: AnyRef<'_>, what: &str) -> Result<ObjectIdentifier, ImportError> {
    match any.tag() {
        Tag::ObjectIdentifier => any
            .decode_as::<ObjectIdentifier>()
            .map_err(|e| ImportError::Malformed(format!("{what}: {e}"))),
        Tag::Sequence => Err(explicit_parameters()),
        other => Err(ImportError::Malformed(format!(
            "{what}: curve parameters of type {other}"
        ))),
    }
}

// ---------------------------------------------------------------------------------------
// Key structures

/// PKCS#8 `PrivateKeyInfo` (v1 or v2) holding an EC key.
fn from_pkcs8(der: &[u8], mut curves: Curves) -> Result<SecretScalar, ImportError> {
    let info = PrivateKeyInfoRef::from_der(der)
        .map_err(|e| ImportError::Malformed(format!("PKCS#8: {e}")))?;
    if info.algorithm.oid != EC_PUBLIC_KEY_OID {
        return Err(unsupported_label(&algorithm_name(info.algorithm.oid)));
    }
    match info.algorithm.parameters {
        Some(p) if !p.is_null() => curves.add(named_curve(p, "PKCS#8 algorithm parameters")?),
        _ => {}
    }
    let public_key = match info.public_key {
        Some(bits) => Some(bits.as_bytes().ok_or_else(|| {
            ImportError::Malformed("PKCS#8 public key is not a whole number of bytes".into())
        })?),
        None => None,
    };
    from_sec1_with(info.private_key.as_bytes(), curves, public_key)
}

/// SEC1 `ECPrivateKey`.
fn from_sec1(der: &[u8], curves: Curves) -> Result<SecretScalar, ImportError> {
    from_sec1_with(der, curves, None)
}

fn from_sec1_with(
    der: &[u8],
    mut curves: Curves,
    outer_public_key: Option<&[u8]>,
) -> Result<SecretScalar, ImportError> {
    let key = EcPrivateKey::from_der(der).map_err(|e| match e.kind() {
        // Explicit parameters are a SEQUENCE where the named-curve OID belongs.
        ErrorKind::TagUnexpected {
            expected: Some(Tag::ObjectIdentifier),
            actual: Tag::Sequence,
        } => explicit_parameters(),
        _ => ImportError::Malformed(format!("SEC1 EC private key: {e}")),
    })?;
    if let Some(params) = key.parameters {
        match params.named_curve() {
            Some(oid) => curves.add(oid),
            None => return Err(explicit_parameters()),
        }
    }
    let named = curves.check()?;
    let public_keys: Vec<&[u8]> = key.public_key.into_iter().chain(outer_public_key).collect();

    let curve = curves.expected;
    let scalar = scalar_bytes(key.private_key).and_then(|b| SecretScalar::from_be_bytes(curve, &b));
    let Some(scalar) = scalar else {
        // Without a named curve, a public key that is no point of any valid scalar on the
        // expected curve says the key is from another curve.
        if !named && !public_keys.is_empty() {
            return Err(unnamed_curve(curve));
        }
        return Err(ImportError::InvalidScalar(curve));
    };
    for pk in public_keys {
        if !scalar.matches(pk) {
            return Err(if named {
                ImportError::Malformed("the public key in the file is not the private key's".into())
            } else {
                unnamed_curve(curve)
            });
        }
    }
    Ok(scalar)
}

fn unnamed_curve(expected: Curve) -> ImportError {
    ImportError::WrongCurve {
        found: "an unnamed curve (the key names no curve and its public key does not fit)".into(),
        expected,
    }
}

/// The SEC1 private-key octets as 32 big-endian bytes. Shorter values (leading zeros
/// dropped by some encoders) are padded; longer ones only if the excess is zero.
fn scalar_bytes(octets: &[u8]) -> Option<Zeroizing<[u8; 32]>> {
    let skip = octets.len().saturating_sub(32);
    let (excess, value) = octets.split_at(skip);
    if excess.iter().any(|&b| b != 0) {
        return None;
    }
    let mut out = Zeroizing::new([0u8; 32]);
    out[32 - value.len()..].copy_from_slice(value);
    Some(out)
}

fn algorithm_name(oid: ObjectIdentifier) -> String {
    let name = match oid.to_string().as_str() {
        "1.2.840.113549.1.1.1" => "an RSA key",
        "1.2.840.113549.1.1.10" => "an RSA-PSS key",
        "1.2.840.10040.4.1" => "a DSA key",
        "1.2.840.113549.1.3.1" | "1.2.840.10046.2.1" => "a Diffie-Hellman key",
        "1.3.101.110" => "an X25519 key",
        "1.3.101.111" => "an X448 key",
        "1.3.101.112" => "an Ed25519 key",
        "1.3.101.113" => "an Ed448 key",
        other => return format!("a key of algorithm {other}"),
    };
    name.to_owned()
}

// ---------------------------------------------------------------------------------------
// Encrypted PKCS#8 (PBES2)

fn encryption_name(oid: ObjectIdentifier) -> String {
    let s = oid.to_string();
    let name = match s.as_str() {
        "1.2.840.113549.3.7" => "DES-EDE3-CBC",
        "1.3.14.3.2.7" => "DES-CBC",
        "1.2.840.113549.2.7" => "PBKDF2 with HMAC-SHA1",
        "1.2.840.113549.1.5.3" => "PBES1 (pbeWithMD5AndDES-CBC)",
        "1.2.840.113549.1.5.10" => "PBES1 (pbeWithSHA1AndDES-CBC)",
        _ if s.starts_with("1.2.840.113549.1.12.1.") => "PKCS#12 password-based encryption",
        _ => return format!("the encryption algorithm {s}"),
    };
    name.to_owned()
}

fn unsupported_encryption(oid: ObjectIdentifier) -> ImportError {
    ImportError::Unsupported(format!(
        "{} (re-encrypt the key with `openssl pkcs8 -topk8 -v2 aes-256-cbc`)",
        encryption_name(oid)
    ))
}

fn decrypt_pkcs8(der: &[u8], password: Option<&[u8]>) -> Result<Zeroizing<Vec<u8>>, ImportError> {
    // The scheme's OID first, so that a scheme the decoder does not know (PBES1, PKCS#12)
    // is reported by name rather than as a decoding error.
    if let Some(oid) = encryption_scheme_oid(der)
        && oid != pbes2::PBES2_OID
    {
        return Err(unsupported_encryption(oid));
    }
    let info = EncryptedPrivateKeyInfoRef::from_der(der).map_err(|e| match e.kind() {
        ErrorKind::OidUnknown { oid } => unsupported_encryption(oid),
        _ => ImportError::Malformed(format!("encrypted PKCS#8: {e}")),
    })?;
    let params = match &info.encryption_algorithm {
        pkcs5::EncryptionScheme::Pbes2(params) => params,
        other => return Err(unsupported_encryption(other.oid())),
    };
    check_kdf(&params.kdf)?;
    let ciphertext = info.encrypted_data.as_bytes();
    let is_cbc = matches!(
        params.encryption,
        pbes2::EncryptionScheme::Aes128Cbc { .. }
            | pbes2::EncryptionScheme::Aes192Cbc { .. }
            | pbes2::EncryptionScheme::Aes256Cbc { .. }
    );
    if ciphertext.is_empty() || (is_cbc && !ciphertext.len().is_multiple_of(16)) {
        return Err(ImportError::Malformed(format!(
            "encrypted key of {} bytes is truncated",
            ciphertext.len()
        )));
    }
    let password = password.ok_or(ImportError::PasswordRequired)?;
    let mut buf = Zeroizing::new(ciphertext.to_vec());
    let len = params
        .decrypt_in_place(password, &mut buf)
        .map_err(|e| match e {
            pkcs5::Error::DecryptFailed => ImportError::WrongPassword,
            pkcs5::Error::UnsupportedAlgorithm { oid } => unsupported_encryption(oid),
            pkcs5::Error::AlgorithmParametersInvalid { oid } => {
                ImportError::Malformed(format!("invalid parameters for {}", encryption_name(oid)))
            }
            other => ImportError::Malformed(format!("encrypted PKCS#8: {other}")),
        })?
        .len();
    buf.truncate(len);
    Ok(buf)
}

/// The `encryptionAlgorithm` OID of an `EncryptedPrivateKeyInfo`, if it has that shape.
fn encryption_scheme_oid(der: &[u8]) -> Option<ObjectIdentifier> {
    AnyRef::from_der(der)
        .ok()?
        .sequence(|reader| {
            let algorithm: AlgorithmIdentifierRef<'_> = reader.decode()?;
            let _data: &OctetStringRef = reader.decode()?;
            Ok::<_, pkcs8::der::Error>(algorithm.oid)
        })
        .ok()
}

/// Refuses, before asking for the password, a PRF this build lacks and key-derivation
/// parameters that would cost more than any real key file asks for.
fn check_kdf(kdf: &pbes2::Kdf) -> Result<(), ImportError> {
    match kdf {
        pbes2::Kdf::Pbkdf2(p) if p.prf == pbes2::Pbkdf2Prf::HmacWithSha1 => {
            Err(unsupported_encryption(pbes2::HMAC_WITH_SHA1_OID))
        }
        pbes2::Kdf::Pbkdf2(p) if p.iteration_count > MAX_PBKDF2_ITERATIONS => {
            Err(ImportError::Unsupported(format!(
                "PBKDF2 with {} iterations (at most {MAX_PBKDF2_ITERATIONS} are accepted)",
                p.iteration_count
            )))
        }
        pbes2::Kdf::Scrypt(p) => {
            let n = p.cost_parameter;
            let r = u64::from(p.block_size);
            let par = u64::from(p.parallelization);
            let memory = n.saturating_mul(r).saturating_mul(128);
            let work = n.saturating_mul(r).saturating_mul(par);
            if memory > MAX_SCRYPT_MEMORY || work > MAX_SCRYPT_WORK {
                return Err(ImportError::Unsupported(format!(
                    "scrypt with N={n}, r={r}, p={par} (more memory or work than accepted)"
                )));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------
// Legacy OpenSSL PEM encryption

/// A cipher of OpenSSL's legacy PEM encryption (all in CBC mode).
#[derive(Clone, Copy)]
enum LegacyCipher {
    Aes128,
    Aes192,
    Aes256,
    DesEde3,
}

impl LegacyCipher {
    fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_uppercase().as_str() {
            "AES-128-CBC" => Some(LegacyCipher::Aes128),
            "AES-192-CBC" => Some(LegacyCipher::Aes192),
            "AES-256-CBC" => Some(LegacyCipher::Aes256),
            "DES-EDE3-CBC" => Some(LegacyCipher::DesEde3),
            _ => None,
        }
    }

    fn key_len(self) -> usize {
        match self {
            LegacyCipher::Aes128 => 16,
            LegacyCipher::Aes192 | LegacyCipher::DesEde3 => 24,
            LegacyCipher::Aes256 => 32,
        }
    }

    fn block_len(self) -> usize {
        match self {
            LegacyCipher::DesEde3 => 8,
            _ => 16,
        }
    }
}

fn header<'a>(block: &'a PemBlock, name: &str) -> Option<&'a str> {
    block
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn decrypt_legacy(
    block: &PemBlock,
    password: Option<&[u8]>,
) -> Result<Zeroizing<Vec<u8>>, ImportError> {
    let proc_type = header(block, "Proc-Type").map(|v| v.replace(' ', ""));
    if proc_type.as_deref() != Some("4,ENCRYPTED") {
        return Err(ImportError::Malformed(format!(
            "unexpected PEM headers in the {} block",
            shown(&block.label)
        )));
    }
    let dek_info = header(block, "DEK-Info")
        .ok_or_else(|| ImportError::Malformed("encrypted PEM without a DEK-Info header".into()))?;
    let (name, iv_hex) = dek_info
        .split_once(',')
        .ok_or_else(|| ImportError::Malformed("DEK-Info header without an IV".into()))?;
    let name = name.trim();
    let cipher = LegacyCipher::parse(name).ok_or_else(|| {
        // Named only if it looks like a cipher name: the header is the file's text.
        let looks_like_a_name = name.len() <= 32
            && !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        let shown = if looks_like_a_name {
            name
        } else {
            "an unrecognised cipher"
        };
        ImportError::Unsupported(format!(
            "legacy PEM encryption with {shown} (use AES-128/192/256-CBC or DES-EDE3-CBC, or \
             convert the key to PKCS#8)"
        ))
    })?;
    let iv = hex::decode(iv_hex.trim())
        .map_err(|_| ImportError::Malformed("DEK-Info IV is not hex".into()))?;
    if iv.len() != cipher.block_len() {
        return Err(ImportError::Malformed(format!(
            "DEK-Info IV of {} bytes, expected {}",
            iv.len(),
            cipher.block_len()
        )));
    }
    if block.der.is_empty() || !block.der.len().is_multiple_of(cipher.block_len()) {
        return Err(ImportError::Malformed(format!(
            "encrypted key of {} bytes is truncated",
            block.der.len()
        )));
    }
    let password = password.ok_or(ImportError::PasswordRequired)?;
    let mut salt = [0u8; 8];
    salt.copy_from_slice(&iv[..8]);
    let key = evp_bytes_to_key_md5(password, &salt, cipher.key_len());
    let mut buf = Zeroizing::new(block.der.to_vec());
    let len = match cipher {
        LegacyCipher::Aes128 => cbc_decrypt::<aes::Aes128Dec>(&key, &iv, &mut buf),
        LegacyCipher::Aes192 => cbc_decrypt::<aes::Aes192Dec>(&key, &iv, &mut buf),
        LegacyCipher::Aes256 => cbc_decrypt::<aes::Aes256Dec>(&key, &iv, &mut buf),
        LegacyCipher::DesEde3 => cbc_decrypt::<des::TdesEde3>(&key, &iv, &mut buf),
    }?;
    buf.truncate(len);
    Ok(buf)
}

/// CBC decryption and PKCS#7 unpadding in place; returns the plaintext length.
fn cbc_decrypt<C: BlockCipherDecrypt + KeyInit>(
    key: &[u8],
    iv: &[u8],
    buf: &mut [u8],
) -> Result<usize, ImportError> {
    let decryptor = cbc::Decryptor::<C>::new_from_slices(key, iv)
        .map_err(|_| ImportError::Malformed("key or IV length does not fit the cipher".into()))?;
    decryptor
        .decrypt_padded::<Pkcs7>(buf)
        .map(<[u8]>::len)
        .map_err(|_| ImportError::WrongPassword)
}

/// OpenSSL's `EVP_BytesToKey` with MD5 and one iteration, as its legacy PEM encryption
/// uses it: D_1 = MD5(password ‖ salt), D_i = MD5(D_{i-1} ‖ password ‖ salt), key = the
/// first `len` bytes of D_1 ‖ D_2 ‖ …
fn evp_bytes_to_key_md5(password: &[u8], salt: &[u8; 8], len: usize) -> Zeroizing<Vec<u8>> {
    let mut key = Zeroizing::new(Vec::with_capacity(len + 16));
    let mut block = md5::digest::Output::<Md5>::default();
    while key.len() < len {
        let mut md5 = Md5::new();
        if !key.is_empty() {
            md5.update(block.as_slice());
        }
        md5.update(password);
        md5.update(salt);
        md5.finalize_into(&mut block);
        key.extend_from_slice(&block);
    }
    block.as_mut_slice().zeroize();
    key.truncate(len);
    key
}

// ---------------------------------------------------------------------------------------
// Split and transport

const SESSION_DOMAIN: &[u8] = b"dkms/import-session/v1";
const SHARE_INFO_DOMAIN: &[u8] = b"dkms/import-share/v1";

/// The id the parties of an imported key keep as their DKG session id (signing binds its
/// sub-protocols to it): the key's parameters and a fresh nonce.
fn import_session_id(
    key_id: &uuid::Uuid,
    threshold: u8,
    participants: &[ShareParticipant],
) -> Result<[u8; 32], MpcError> {
    let mut nonce = [0u8; 32];
    getrandom::fill(&mut nonce).map_err(|e| MpcError::Internal(format!("randomness: {e}")))?;
    let mut h = Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u32).to_be_bytes());
        h.update(bytes);
    };
    field(SESSION_DOMAIN);
    field(key_id.as_bytes());
    field(&[threshold]);
    field(&(participants.len() as u32).to_be_bytes());
    for p in participants {
        field(p.tag.as_str().as_bytes());
        field(&p.encryption_key);
    }
    field(&nonce);
    Ok(h.finalize().into())
}

/// Trusted-dealer split (dkls23 `re_key`) of an imported key: one [`KeyShare`] per
/// participant, in order (party index = position + 1), each a full DKLs23 party ready to
/// sign, with the given key id, threshold and participants. The polynomial lives in a
/// zeroizing buffer inside `re_key` and the dkls23 parties zeroize themselves on drop.
/// The BIP-32 chain code is random (`re_key` with `None`).
pub fn split(
    secret: &SecretScalar,
    key_id: uuid::Uuid,
    threshold: u8,
    participants: Vec<ShareParticipant>,
) -> Result<Vec<KeyShare>, MpcError> {
    check_parameters(threshold, &participants).map_err(MpcError::BadParameters)?;
    let n = participants.len() as u8;
    let parameters =
        Parameters::new(threshold, n).map_err(|e| MpcError::BadParameters(e.to_string()))?;
    let session_id = import_session_id(&key_id, threshold, &participants)?;
    with_curve!(secret.curve, C => {
        split_on::<C>(secret, key_id, threshold, participants, &parameters, &session_id)
    })
}

fn split_on<C: DkmsCurve>(
    secret: &SecretScalar,
    key_id: uuid::Uuid,
    threshold: u8,
    participants: Vec<ShareParticipant>,
    parameters: &Parameters,
    session_id: &[u8; 32],
) -> Result<Vec<KeyShare>, MpcError> {
    let mut scalar = secret
        .scalar::<C>()
        .ok_or_else(|| MpcError::Internal("the key's scalar does not parse".into()))?;
    let split = crate::guarded(&mut (), |_| {
        Ok(re_key::<C>(parameters, session_id, &scalar, None, |_| {
            String::new()
        }))
    });
    scalar.zeroize();
    let (parties, package) = split?;
    if compress::<C>(package.verifying_key()) != secret.public_key {
        return Err(MpcError::Internal(
            "the split key's public key is not the imported key's".into(),
        ));
    }
    let mut shares = Vec::with_capacity(parties.len());
    for (position, party) in parties.into_iter().enumerate() {
        let index = party.party_index.as_u8();
        if usize::from(index) != position + 1 {
            return Err(MpcError::Internal(format!(
                "re_key returned party {index} at position {position}"
            )));
        }
        let share = KeyShare::new(
            key_id,
            threshold,
            index,
            participants.clone(),
            package.clone(),
            party,
        )
        .map_err(MpcError::Internal)?;
        shares.push(share);
    }
    if shares.len() != participants.len() {
        return Err(MpcError::Internal(format!(
            "re_key returned {} parties for {} participants",
            shares.len(),
            participants.len()
        )));
    }
    Ok(shares)
}

/// `"dkms/import-share/v1" ‖ key id (16 bytes) ‖ u32 BE length ‖ recipient tag`.
fn share_info(key_id: &uuid::Uuid, recipient: &NodeTag) -> Vec<u8> {
    let tag = recipient.as_str().as_bytes();
    let mut info = Vec::with_capacity(SHARE_INFO_DOMAIN.len() + 16 + 4 + tag.len());
    info.extend_from_slice(SHARE_INFO_DOMAIN);
    info.extend_from_slice(key_id.as_bytes());
    info.extend_from_slice(&(tag.len() as u32).to_be_bytes());
    info.extend_from_slice(tag);
    info
}

/// Seals one share to its node (the share's own participant entry) for transport through
/// the gateway: HPKE (RFC 9180) base mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
/// ChaCha20-Poly1305, with the key id and the recipient's tag bound in `info`. Output:
/// encapsulated key (32 bytes) ‖ ciphertext ‖ tag (16 bytes).
pub fn seal_share(share: &KeyShare) -> Result<Vec<u8>, MpcError> {
    let me = usize::from(share.my_index())
        .checked_sub(1)
        .and_then(|i| share.participants().get(i))
        .ok_or_else(|| MpcError::Internal("share's own participant entry missing".into()))?;
    let plaintext = share.to_bytes();
    if plaintext.is_empty() {
        return Err(MpcError::Internal("share did not encode".into()));
    }
    seal_base(
        &me.encryption_key,
        &share_info(&share.key_id(), &me.tag),
        &plaintext,
    )
}

/// HPKE (RFC 9180) base mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305:
/// the one construction every share transport of this crate uses (import, export, backup,
/// restore), each with its own domain-separated `info`. Output: encapsulated key (32
/// bytes) ‖ ciphertext ‖ tag (16 bytes).
pub(crate) fn seal_base(
    recipient: &[u8; 32],
    info: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, MpcError> {
    let recipient = PublicKey::from_bytes(recipient)
        .map_err(|e| MpcError::Crypto(format!("recipient key: {e}")))?;
    let (encapped, ciphertext) = hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, Kem>(
        &OpModeS::Base,
        &recipient,
        info,
        plaintext,
        &[],
    )
    .map_err(|e| MpcError::Crypto(format!("seal: {e}")))?;
    let mut out = Vec::with_capacity(ENCAPPED_KEY_LEN + ciphertext.len());
    out.extend_from_slice(&encapped.to_bytes());
    out.extend_from_slice(&ciphertext);
    Ok(out)
}

/// Opens what [`seal_base`] sealed to `me` under `info`. `what` names the blob in errors.
pub(crate) fn open_base(
    me: &EncryptionKeypair,
    info: &[u8],
    sealed: &[u8],
    what: &str,
) -> Result<Zeroizing<Vec<u8>>, MpcError> {
    if sealed.len() < ENCAPPED_KEY_LEN + TAG_LEN {
        return Err(MpcError::Crypto(format!(
            "{what} of {} bytes is too short",
            sealed.len()
        )));
    }
    let (encapped, ciphertext) = sealed.split_at(ENCAPPED_KEY_LEN);
    let encapped = EncappedKey::from_bytes(encapped)
        .map_err(|e| MpcError::Crypto(format!("encapsulated key: {e}")))?;
    hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, Kem>(
        &OpModeR::Base,
        me.private(),
        &encapped,
        info,
        ciphertext,
        &[],
    )
    .map(Zeroizing::new)
    .map_err(|_| MpcError::Crypto(format!("{what} did not open")))
}

/// Opens a sealed share of `key_id` for this node and checks that it is this node's.
pub fn open_share(
    me: &EncryptionKeypair,
    my_tag: &NodeTag,
    key_id: &uuid::Uuid,
    sealed: &[u8],
) -> Result<KeyShare, MpcError> {
    let plaintext = open_base(me, &share_info(key_id, my_tag), sealed, "sealed share")?;
    let share = KeyShare::from_bytes(&plaintext)?;
    if share.key_id() != *key_id {
        return Err(MpcError::Corrupt(format!(
            "share is for key {}, not {key_id}",
            share.key_id()
        )));
    }
    let mine = usize::from(share.my_index())
        .checked_sub(1)
        .and_then(|i| share.participants().get(i))
        .ok_or_else(|| MpcError::Corrupt("share's own participant entry missing".into()))?;
    if mine.tag != *my_tag {
        return Err(MpcError::Corrupt(format!(
            "share belongs to {}, not {my_tag}",
            mine.tag
        )));
    }
    if mine.encryption_key != me.public_key() {
        return Err(MpcError::Corrupt(
            "share names another encryption key for this node".into(),
        ));
    }
    Ok(share)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pkcs8::der::Encode;

    macro_rules! fixture {
        ($name:literal) => {
            include_str!(concat!("../tests/fixtures/import/", $name))
        };
    }

    const SCALAR_HEX: &str = fixture!("secp256k1.scalar.txt");
    const PUB_HEX: &str = fixture!("secp256k1.pub.txt");
    const PASSWORD_FILE: &str = fixture!("password.txt");

    fn password() -> &'static [u8] {
        PASSWORD_FILE.trim_end_matches('\n').as_bytes()
    }

    fn expected_scalar() -> [u8; 32] {
        hex::decode(SCALAR_HEX.trim()).unwrap().try_into().unwrap()
    }

    fn expected_public() -> [u8; 33] {
        hex::decode(PUB_HEX.trim()).unwrap().try_into().unwrap()
    }

    fn scalar_of(s: &SecretScalar) -> [u8; 32] {
        *s.bytes
    }

    const PLAIN: &[(&str, &str)] = &[
        ("sec1", fixture!("secp256k1-sec1.pem")),
        ("sec1+ecparams", fixture!("secp256k1-sec1-ecparams.pem")),
        ("pkcs8", fixture!("secp256k1-pkcs8.pem")),
    ];

    const ENCRYPTED: &[(&str, &str)] = &[
        ("pkcs8 pbkdf2", fixture!("secp256k1-pkcs8-pbkdf2.pem")),
        ("pkcs8 scrypt", fixture!("secp256k1-pkcs8-scrypt.pem")),
        ("legacy aes256", fixture!("secp256k1-legacy-aes256.pem")),
        ("legacy aes192", fixture!("secp256k1-legacy-aes192.pem")),
        ("legacy aes128", fixture!("secp256k1-legacy-aes128.pem")),
        ("legacy des3", fixture!("secp256k1-legacy-des3.pem")),
    ];

    fn check_is_fixture_key(name: &str, s: &SecretScalar) {
        assert_eq!(scalar_of(s), expected_scalar(), "{name}");
        assert_eq!(s.public_key(), expected_public(), "{name}");
    }

    /// Every error the parser returned in these tests, to check what their texts reveal.
    fn err(pem: &str, password: Option<&[u8]>) -> ImportError {
        match parse_private_key_pem(pem, password, Curve::Secp256k1) {
            Ok(_) => panic!("accepted"),
            Err(e) => e,
        }
    }

    #[test]
    fn every_format_yields_the_same_key() {
        for (name, pem) in PLAIN {
            check_is_fixture_key(
                name,
                &parse_private_key_pem(pem, None, Curve::Secp256k1).unwrap(),
            );
            // A password for an unencrypted key is ignored.
            check_is_fixture_key(
                name,
                &parse_private_key_pem(pem, Some(b"whatever"), Curve::Secp256k1).unwrap(),
            );
        }
        for (name, pem) in ENCRYPTED {
            check_is_fixture_key(
                name,
                &parse_private_key_pem(pem, Some(password()), Curve::Secp256k1).unwrap(),
            );
        }
    }

    #[test]
    fn surrounding_text_whitespace_and_crlf_are_fine() {
        let pem = fixture!("secp256k1-sec1-ecparams.pem");
        let padded = format!("\n\n   \t{pem}\n\n  \n");
        check_is_fixture_key(
            "padded",
            &parse_private_key_pem(&padded, None, Curve::Secp256k1).unwrap(),
        );
        let crlf = pem.replace('\n', "\r\n");
        check_is_fixture_key(
            "crlf",
            &parse_private_key_pem(&crlf, None, Curve::Secp256k1).unwrap(),
        );
        let explained = format!("Bag Attributes\n    localKeyID: 01 02\n{pem}trailing words\n");
        check_is_fixture_key(
            "text",
            &parse_private_key_pem(&explained, None, Curve::Secp256k1).unwrap(),
        );
        let legacy = fixture!("secp256k1-legacy-aes256.pem").replace('\n', "\r\n");
        check_is_fixture_key(
            "legacy crlf",
            &parse_private_key_pem(&legacy, Some(password()), Curve::Secp256k1).unwrap(),
        );
        // A certificate or public key next to the private key is ignored.
        let public = "-----BEGIN PUBLIC KEY-----\nMAA=\n-----END PUBLIC KEY-----\n";
        let with_public = format!("{public}{}", fixture!("secp256k1-pkcs8.pem"));
        check_is_fixture_key(
            "with public",
            &parse_private_key_pem(&with_public, None, Curve::Secp256k1).unwrap(),
        );
    }

    #[test]
    fn wrong_or_missing_password() {
        for (name, pem) in ENCRYPTED {
            assert!(
                matches!(err(pem, None), ImportError::PasswordRequired),
                "{name}"
            );
            for wrong in [&b"wrong password"[..], b"", &password()[1..]] {
                assert!(
                    matches!(err(pem, Some(wrong)), ImportError::WrongPassword),
                    "{name}: {}",
                    err(pem, Some(wrong))
                );
            }
        }
    }

    #[test]
    fn other_curves_and_algorithms_are_refused() {
        for pem in [fixture!("p256-sec1.pem"), fixture!("p256-pkcs8.pem")] {
            match err(pem, None) {
                ImportError::WrongCurve { found, expected } => {
                    assert_eq!(found, "prime256v1 (P-256)");
                    assert_eq!(expected, Curve::Secp256k1);
                }
                e => panic!("{e}"),
            }
        }
        for pem in [fixture!("rsa-pkcs8.pem"), fixture!("rsa-traditional.pem")] {
            match err(pem, None) {
                ImportError::Unsupported(m) => assert!(m.contains("RSA"), "{m}"),
                e => panic!("{e}"),
            }
        }
        match err(fixture!("ed25519-pkcs8.pem"), None) {
            ImportError::Unsupported(m) => assert!(m.contains("Ed25519"), "{m}"),
            e => panic!("{e}"),
        }
        match err(fixture!("secp256k1-explicit-params.pem"), None) {
            ImportError::Unsupported(m) => assert!(m.contains("explicit"), "{m}"),
            e => panic!("{e}"),
        }
        // An EC PARAMETERS block that names another curve.
        let p256_params =
            "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n";
        let mixed = format!("{p256_params}{}", fixture!("secp256k1-sec1.pem"));
        assert!(matches!(err(&mixed, None), ImportError::WrongCurve { .. }));
        // Only a public key.
        let public = "-----BEGIN PUBLIC KEY-----\nMAA=\n-----END PUBLIC KEY-----\n";
        assert!(matches!(err(public, None), ImportError::Unsupported(_)));
    }

    #[test]
    fn unsupported_encryptions_are_named() {
        for (pem, what) in [
            (fixture!("secp256k1-pkcs8-des3.pem"), "DES-EDE3-CBC"),
            (fixture!("secp256k1-pkcs8-sha1prf.pem"), "HMAC-SHA1"),
            (fixture!("secp256k1-pkcs8-pbes1.pem"), "PKCS#12"),
        ] {
            // Refused as unsupported with or without a password (no point asking for one).
            for pw in [None, Some(password())] {
                match err(pem, pw) {
                    ImportError::Unsupported(m) => assert!(m.contains(what), "{m}"),
                    e => panic!("{what}: {e}"),
                }
            }
        }
        let legacy = fixture!("secp256k1-legacy-aes256.pem").replace("AES-256-CBC", "DES-CBC");
        match err(&legacy, Some(password())) {
            ImportError::Unsupported(m) => assert!(m.contains("DES-CBC"), "{m}"),
            e => panic!("{e}"),
        }
    }

    #[test]
    fn p256_keys_import_as_ecdsa_r1_in_every_format() {
        let scalar: [u8; 32] = hex::decode(fixture!("p256.scalar.txt").trim())
            .unwrap()
            .try_into()
            .unwrap();
        let public: [u8; 33] = hex::decode(fixture!("p256.pub.txt").trim())
            .unwrap()
            .try_into()
            .unwrap();
        for (pem, pw) in [
            (fixture!("p256-sec1.pem"), None),
            (fixture!("p256-pkcs8.pem"), None),
            (fixture!("p256-pkcs8-pbkdf2.pem"), Some(password())),
            (fixture!("p256-legacy-aes256.pem"), Some(password())),
        ] {
            let key = parse_private_key_pem(pem, pw, Curve::P256).unwrap();
            assert_eq!(key.curve(), Curve::P256);
            assert_eq!(scalar_of(&key), scalar);
            assert_eq!(key.public_key(), public);
        }
        // A secp256k1 key is refused where the type says ECDSA_R1, naming both curves.
        match parse_private_key_pem(fixture!("secp256k1-sec1.pem"), None, Curve::P256) {
            Err(e @ ImportError::WrongCurve { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains("secp256k1") && text.contains("P-256"),
                    "{text}"
                );
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("accepted a secp256k1 key as P-256"),
        }
        // The P-256 key re-encodes as OpenSSL writes it.
        let key = parse_private_key_pem(fixture!("p256-pkcs8.pem"), None, Curve::P256).unwrap();
        let again = parse_private_key_pem(&key.to_sec1_pem().unwrap(), None, Curve::P256).unwrap();
        assert_eq!(scalar_of(&again), scalar);
    }

    #[test]
    fn invalid_scalars_are_refused() {
        for pem in [
            fixture!("scalar-zero.pem"),
            fixture!("scalar-order.pem"),
            fixture!("scalar-max.pem"),
        ] {
            assert!(matches!(
                err(pem, None),
                ImportError::InvalidScalar(Curve::Secp256k1)
            ));
        }
        assert!(scalar_bytes(&[0u8; 33]).is_some());
        assert!(scalar_bytes(&[1u8; 33]).is_none());
        assert_eq!(scalar_bytes(&[7]).unwrap()[31], 7);
    }

    #[test]
    fn malformed_input_is_refused() {
        let mut cases: Vec<String> = vec![
            String::new(),
            "   \n".into(),
            "garbage".into(),
            "\u{0}\u{1}binary\u{ff}".into(),
            "-----BEGIN EC PRIVATE KEY-----\n-----END EC PRIVATE KEY-----\n".into(),
            "-----BEGIN EC PRIVATE KEY-----\n!!!!\n-----END EC PRIVATE KEY-----\n".into(),
            "-----BEGIN EC PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n".into(),
            format!(
                "{}{}",
                fixture!("secp256k1-sec1.pem"),
                fixture!("secp256k1-pkcs8.pem")
            ),
            "x".repeat(MAX_PEM_LEN + 1),
        ];
        for (_, pem) in PLAIN.iter().chain(ENCRYPTED) {
            // Cut in the middle: no END line.
            cases.push(pem[..pem.len() / 2].to_owned());
        }
        for (_, pem) in PLAIN {
            // A base64 line dropped: bad base64 or bad DER.
            let lines: Vec<&str> = pem.lines().collect();
            let mut shortened = lines.clone();
            shortened.remove(lines.len() - 2);
            cases.push(shortened.join("\n"));
        }
        for (name, pem) in ENCRYPTED {
            // The last base64 line cut short: bad base64 or a ciphertext that is not a
            // whole number of blocks.
            let lines: Vec<&str> = pem.lines().collect();
            let mut shortened: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
            let last = lines.len() - 2;
            shortened[last] = lines[last][..lines[last].len().saturating_sub(4)].to_owned();
            let pem = shortened.join("\n");
            assert!(
                matches!(err(&pem, Some(password())), ImportError::Malformed(_)),
                "{name}: {}",
                err(&pem, Some(password()))
            );
        }
        for (_, pem) in ENCRYPTED {
            // A dropped line of whole cipher blocks leaves valid CBC padding and garbage
            // inside: indistinguishable from a wrong password.
            let lines: Vec<&str> = pem.lines().collect();
            let mut shortened = lines.clone();
            shortened.remove(lines.len() / 2);
            assert!(matches!(
                err(&shortened.join("\n"), Some(password())),
                ImportError::Malformed(_) | ImportError::WrongPassword
            ));
        }
        for pem in &cases {
            assert!(
                matches!(err(pem, Some(password())), ImportError::Malformed(_)),
                "{:?}: {}",
                &pem[..pem.len().min(80)],
                err(pem, Some(password()))
            );
        }
        // One changed base64 character of a plaintext key: bad DER or a public key that
        // does not match.
        let pem = fixture!("secp256k1-sec1.pem");
        let altered = pem.replacen("MHQCAQEE", "MHQCAQEF", 1);
        assert_ne!(altered, pem);
        assert!(matches!(err(&altered, None), ImportError::Malformed(_)));
    }

    fn sec1_pem(scalar: &[u8], curve: Option<&str>, public: Option<&[u8]>) -> String {
        let key = EcPrivateKey {
            private_key: scalar,
            parameters: curve.map(|c| sec1::EcParameters::NamedCurve(c.parse().unwrap())),
            public_key: public,
        };
        let der = key.to_der().unwrap();
        format!(
            "-----BEGIN EC PRIVATE KEY-----\n{}\n-----END EC PRIVATE KEY-----\n",
            Base64::encode_string(&der)
        )
    }

    #[test]
    fn keys_without_a_curve_are_judged_by_their_public_key() {
        let scalar = expected_scalar();
        let public = expected_public();
        use k256::elliptic_curve::sec1::ToSec1Point;
        let uncompressed = k256::PublicKey::from_sec1_bytes(&public)
            .unwrap()
            .to_sec1_point(false);
        // No curve, matching public key (either form), or no public key at all.
        for pk in [Some(&public[..]), Some(uncompressed.as_bytes()), None] {
            let pem = sec1_pem(&scalar, None, pk);
            check_is_fixture_key(
                "no curve",
                &parse_private_key_pem(&pem, None, Curve::Secp256k1).unwrap(),
            );
        }
        // No curve, and a public key that is not this scalar's secp256k1 point.
        let mut other = public;
        other[0] ^= 1; // 02 <-> 03: the negated point
        let pem = sec1_pem(&scalar, None, Some(&other));
        assert!(matches!(err(&pem, None), ImportError::WrongCurve { .. }));
        // The same with secp256k1 named: a damaged file.
        let pem = sec1_pem(&scalar, Some("1.3.132.0.10"), Some(&other));
        assert!(matches!(err(&pem, None), ImportError::Malformed(_)));
        // No curve, an invalid scalar and a public key: another curve.
        let pem = sec1_pem(&[0xff; 32], None, Some(&public));
        assert!(matches!(err(&pem, None), ImportError::WrongCurve { .. }));
        // A short scalar encoding is padded.
        let pem = sec1_pem(&[0x05], Some("1.3.132.0.10"), None);
        let s = parse_private_key_pem(&pem, None, Curve::Secp256k1).unwrap();
        assert_eq!(scalar_of(&s)[31], 5);
    }

    #[test]
    fn evp_bytes_to_key_matches_openssl() {
        // openssl enc -aes-256-cbc -md md5 -S 0102030405060708 -pass pass:password -P
        let salt = [1, 2, 3, 4, 5, 6, 7, 8];
        let key = evp_bytes_to_key_md5(b"password", &salt, 32);
        assert_eq!(
            hex::encode_upper(key.as_slice()),
            "E7B0971E52CA5CC8D0539FB3412F6316F7BA2E6EE293D9F3457B99436B51CE02"
        );
        let key = evp_bytes_to_key_md5(b"password", &salt, 24);
        assert_eq!(
            hex::encode_upper(key.as_slice()),
            "E7B0971E52CA5CC8D0539FB3412F6316F7BA2E6EE293D9F3"
        );
    }

    #[test]
    fn kdf_costs_are_bounded() {
        let salt = [0u8; 16];
        let ok = pbes2::Pbkdf2Params::hmac_sha256(600_000, &salt).unwrap();
        assert!(check_kdf(&pbes2::Kdf::Pbkdf2(ok)).is_ok());
        let slow = pbes2::Pbkdf2Params::hmac_sha256(MAX_PBKDF2_ITERATIONS + 1, &salt).unwrap();
        assert!(matches!(
            check_kdf(&pbes2::Kdf::Pbkdf2(slow)),
            Err(ImportError::Unsupported(_))
        ));
        let scrypt = |n: u64, r: u16, p: u16| pbes2::ScryptParams {
            salt: salt.as_slice().try_into().unwrap(),
            cost_parameter: n,
            block_size: r,
            parallelization: p,
            key_length: None,
        };
        assert!(check_kdf(&pbes2::Kdf::Scrypt(scrypt(1 << 14, 8, 1))).is_ok());
        for too_much in [
            scrypt(1 << 20, 8, 1),
            scrypt(1 << 14, 8, 65),
            scrypt(u64::MAX, 8, 1),
        ] {
            assert!(matches!(
                check_kdf(&pbes2::Kdf::Scrypt(too_much)),
                Err(ImportError::Unsupported(_))
            ));
        }
    }

    #[test]
    fn error_texts_reveal_neither_password_nor_key() {
        let pw = std::str::from_utf8(password()).unwrap();
        let scalar_hex = SCALAR_HEX.trim();
        let mut errors = Vec::new();
        for (_, pem) in ENCRYPTED {
            errors.push(err(pem, None));
            errors.push(err(pem, Some(b"not it")));
            errors.push(err(&pem[..pem.len() / 2], Some(password())));
        }
        for pem in [
            fixture!("p256-sec1.pem"),
            fixture!("rsa-pkcs8.pem"),
            fixture!("scalar-order.pem"),
            fixture!("secp256k1-explicit-params.pem"),
        ] {
            errors.push(err(pem, Some(password())));
        }
        let legacy = fixture!("secp256k1-legacy-aes256.pem").replace("AES-256-CBC", pw);
        errors.push(err(&legacy, Some(password())));
        for e in &errors {
            let text = format!("{e} {e:?}");
            assert!(!text.contains(pw), "{text}");
            assert!(!text.to_lowercase().contains(scalar_hex), "{text}");
            assert!(!text.contains("dkms import"), "{text}");
        }
    }

    #[test]
    fn share_info_is_unambiguous() {
        let id = uuid::Uuid::from_u128(1);
        let a: NodeTag = "a".parse().unwrap();
        let ab: NodeTag = "ab".parse().unwrap();
        assert_ne!(share_info(&id, &a), share_info(&id, &ab));
        assert_ne!(
            share_info(&id, &a),
            share_info(&uuid::Uuid::from_u128(2), &a)
        );
        let info = share_info(&id, &ab);
        assert!(info.starts_with(b"dkms/import-share/v1"));
        assert!(info.ends_with(&[0, 0, 0, 2, b'a', b'b']));
    }
}
