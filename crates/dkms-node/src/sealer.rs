//! Sealing of everything a node persists.
//!
//! A node never writes a secret to disk in the clear: the store hands every value to a
//! [`Sealer`], which encrypts it under a key kept out of the store file. The
//! [`SoftwareSealer`] keeps that key in a file (its path is configurable: in production put
//! it on a separate secret mount, not beside the store) or derives it from a passphrase; it
//! offers no hardware protection (a TEE sealer can implement the same trait later).
//!
//! Sealed format, version 1: `0x01 ‖ nonce (24 random bytes) ‖ XChaCha20-Poly1305
//! ciphertext ‖ tag (16 bytes)`, with the caller's `aad` as associated data. A 24-byte random
//! nonce is safe to draw at random for any realistic number of records.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{KeyInit, Tag, XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

/// Version byte of the sealed format produced by [`SoftwareSealer`].
pub const SEALED_FORMAT_V1: u8 = 1;
/// Length of the XChaCha20 nonce.
const NONCE_LEN: usize = 24;
/// Length of the Poly1305 tag.
const TAG_LEN: usize = 16;
/// Length of a sealing key (and of a key file).
pub const KEY_LEN: usize = 32;
/// Length of the Argon2id salt.
pub const SALT_LEN: usize = 16;

/// Encrypts and authenticates what a node persists.
pub trait Sealer: Send + Sync {
    /// Encrypts `plaintext` bound to `aad` (the record's kind, id and format version).
    fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError>;
    /// Decrypts what [`Sealer::seal`] produced for the same `aad`; any change to the sealed
    /// bytes or the `aad`, or a different key, gives an error rather than garbage.
    fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError>;
    /// Human-readable description for logs, e.g. "software (key file), no hardware protection".
    fn describe(&self) -> String;
}

/// Why sealing, opening or loading a sealing key failed. No variant carries key bytes.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error("key file {path} must hold exactly {KEY_LEN} bytes, found {len}")]
    KeyFileLength { path: PathBuf, len: u64 },
    #[error(
        "{path} has mode {mode:03o}: a sealing key file must not be accessible by group or \
         others (run `chmod 600` on it)"
    )]
    InsecurePermissions { path: PathBuf, mode: u32 },
    #[error("passphrase salt file {path} is malformed: {reason}")]
    MalformedSaltFile { path: PathBuf, reason: &'static str },
    #[error(
        "wrong passphrase: it does not open the check value stored in {path} (the file was \
         created with a different passphrase)"
    )]
    WrongPassphrase { path: PathBuf },
    #[error("the passphrase is empty")]
    EmptyPassphrase,
    #[error("invalid key-derivation parameters: {0}")]
    KdfParams(String),
    #[error("key derivation failed: {0}")]
    Kdf(String),
    #[error("the operating system random number generator failed: {0}")]
    Random(String),
    #[error("encryption failed")]
    Encrypt,
    #[error("sealed data could not be opened: wrong key, or the data or its binding was altered")]
    Decrypt,
    #[error("sealed data is malformed: {0}")]
    Malformed(&'static str),
    #[error("sealed data has unsupported format version {0}")]
    UnsupportedVersion(u8),
}

/// Argon2id cost parameters for [`SoftwareSealer::from_passphrase`].
///
/// The defaults (64 MiB, 3 passes, 1 lane) follow the OWASP guidance for Argon2id. Lower values
/// are accepted so that tests run fast; they are recorded in the salt file at creation, so a
/// later change of defaults does not lock an existing node out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory cost in KiB.
    pub m_cost_kib: u32,
    /// Number of passes.
    pub t_cost: u32,
    /// Degree of parallelism (lanes).
    pub p_cost: u32,
}

impl Default for KdfParams {
    fn default() -> Self {
        Self {
            m_cost_kib: 64 * 1024,
            t_cost: 3,
            p_cost: 1,
        }
    }
}

impl KdfParams {
    /// Cheap parameters for tests only: they give a passphrase almost no protection.
    pub fn insecure_for_tests() -> Self {
        Self {
            m_cost_kib: 64,
            t_cost: 1,
            p_cost: 1,
        }
    }
}

/// Where the sealing key came from, for [`Sealer::describe`].
#[derive(Debug, Clone, Copy)]
enum KeySource {
    KeyFile,
    Passphrase,
}

/// Software sealer: XChaCha20-Poly1305 under a 32-byte key held in process memory.
///
/// The cipher (built with the `zeroize` feature) wipes its key copy on drop, and every
/// intermediate key buffer here is [`Zeroizing`]. No `Debug` shows the key.
pub struct SoftwareSealer {
    cipher: XChaCha20Poly1305,
    source: KeySource,
}

impl fmt::Debug for SoftwareSealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SoftwareSealer")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl SoftwareSealer {
    fn from_key(key: &Zeroizing<[u8; KEY_LEN]>, source: KeySource) -> Result<Self, SealError> {
        // `new_from_slice` borrows the key rather than copying it to a temporary.
        let cipher = XChaCha20Poly1305::new_from_slice(key.as_slice())
            .map_err(|_| SealError::Malformed("sealing key has the wrong length"))?;
        Ok(Self { cipher, source })
    }

    /// A sealer over a fixed key, for format fixtures in tests.
    #[cfg(test)]
    pub(crate) fn from_raw_key_for_tests(key: [u8; KEY_LEN]) -> Self {
        Self {
            cipher: XChaCha20Poly1305::new(&key.into()),
            source: KeySource::KeyFile,
        }
    }

    /// Loads the 32-byte key file at `path`, or creates it (mode 0600) if absent.
    ///
    /// Creation writes a temporary file (`create_new`, 0600), syncs it and links it into
    /// place, so a crash never leaves a partial key file and a concurrent creator never has its
    /// key replaced. An existing file of the wrong length, or one accessible by group or
    /// others, is refused rather than repaired.
    pub fn from_key_file(path: &Path) -> Result<Self, SealError> {
        match read_key_file(path) {
            Ok(key) => Self::from_key(&key, KeySource::KeyFile),
            Err(SealError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                let mut key = Zeroizing::new([0u8; KEY_LEN]);
                fill_random(key.as_mut_slice())?;
                match write_new_file_atomically(path, key.as_slice()) {
                    Ok(()) => {
                        tracing::info!(path = %path.display(), "created a new sealing key file");
                        Self::from_key(&key, KeySource::KeyFile)
                    }
                    // Someone else created it between our read and our link: use theirs.
                    Err(SealError::Io { source, .. })
                        if source.kind() == io::ErrorKind::AlreadyExists =>
                    {
                        let key = read_key_file(path)?;
                        Self::from_key(&key, KeySource::KeyFile)
                    }
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Derives the sealing key from `passphrase` with Argon2id.
    ///
    /// `salt_path` holds the 16-byte random salt, the Argon2id parameters it was created with
    /// and a check value sealed under the derived key; it is created (with `params`) if absent.
    /// When it exists, its recorded parameters are used and `params` is ignored. A wrong
    /// passphrase fails here with [`SealError::WrongPassphrase`], not later on the first record.
    ///
    /// Salt file format, version 1: `0x01 ‖ salt (16) ‖ m_cost_kib ‖ t_cost ‖ p_cost (u32 big
    /// endian each) ‖ check value (sealed format v1)`.
    pub fn from_passphrase(
        passphrase: &Zeroizing<String>,
        salt_path: &Path,
        params: KdfParams,
    ) -> Result<Self, SealError> {
        if passphrase.is_empty() {
            return Err(SealError::EmptyPassphrase);
        }
        match fs::read(salt_path) {
            Ok(bytes) => Self::from_salt_file_bytes(passphrase, salt_path, &bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mut salt = [0u8; SALT_LEN];
                fill_random(&mut salt)?;
                let key = derive_key(passphrase, &salt, params)?;
                let sealer = Self::from_key(&key, KeySource::Passphrase)?;
                let check = sealer.seal(&check_aad(&salt, params), PASSPHRASE_CHECK_PLAINTEXT)?;
                let mut file = Vec::with_capacity(SALT_FILE_HEADER_LEN + check.len());
                file.push(SALT_FILE_V1);
                file.extend_from_slice(&salt);
                file.extend_from_slice(&params.m_cost_kib.to_be_bytes());
                file.extend_from_slice(&params.t_cost.to_be_bytes());
                file.extend_from_slice(&params.p_cost.to_be_bytes());
                file.extend_from_slice(&check);
                match write_new_file_atomically(salt_path, &file) {
                    Ok(()) => {
                        tracing::info!(path = %salt_path.display(), "created a new passphrase salt file");
                        Ok(sealer)
                    }
                    Err(SealError::Io { source, .. })
                        if source.kind() == io::ErrorKind::AlreadyExists =>
                    {
                        let bytes = fs::read(salt_path).map_err(|source| SealError::Io {
                            action: "reading",
                            path: salt_path.to_path_buf(),
                            source,
                        })?;
                        Self::from_salt_file_bytes(passphrase, salt_path, &bytes)
                    }
                    Err(e) => Err(e),
                }
            }
            Err(source) => Err(SealError::Io {
                action: "reading",
                path: salt_path.to_path_buf(),
                source,
            }),
        }
    }

    fn from_salt_file_bytes(
        passphrase: &Zeroizing<String>,
        path: &Path,
        bytes: &[u8],
    ) -> Result<Self, SealError> {
        let malformed = |reason| SealError::MalformedSaltFile {
            path: path.to_path_buf(),
            reason,
        };
        let (&version, rest) = bytes.split_first().ok_or(malformed("empty file"))?;
        if version != SALT_FILE_V1 {
            return Err(malformed("unsupported format version"));
        }
        let (salt, rest) = rest
            .split_first_chunk::<SALT_LEN>()
            .ok_or(malformed("too short"))?;
        let (m, rest) = rest
            .split_first_chunk::<4>()
            .ok_or(malformed("too short"))?;
        let (t, rest) = rest
            .split_first_chunk::<4>()
            .ok_or(malformed("too short"))?;
        let (p, check) = rest
            .split_first_chunk::<4>()
            .ok_or(malformed("too short"))?;
        let params = KdfParams {
            m_cost_kib: u32::from_be_bytes(*m),
            t_cost: u32::from_be_bytes(*t),
            p_cost: u32::from_be_bytes(*p),
        };
        // The file is not authenticated until the check value opens: bound the work it can ask for.
        if params.m_cost_kib > MAX_M_COST_KIB
            || params.t_cost > MAX_T_COST
            || params.p_cost > MAX_P_COST
        {
            return Err(malformed("implausibly large key-derivation parameters"));
        }
        let key = derive_key(passphrase, salt, params)?;
        let sealer = Self::from_key(&key, KeySource::Passphrase)?;
        match sealer.open(&check_aad(salt, params), check) {
            Ok(opened) if opened.as_slice() == PASSPHRASE_CHECK_PLAINTEXT => Ok(sealer),
            Ok(_) | Err(SealError::Decrypt) => Err(SealError::WrongPassphrase {
                path: path.to_path_buf(),
            }),
            Err(SealError::Malformed(reason)) => Err(malformed(reason)),
            Err(_) => Err(malformed("check value is unreadable")),
        }
    }
}

impl Sealer for SoftwareSealer {
    fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce)?;
        let nonce = XNonce::from(nonce);
        let header_len = 1 + NONCE_LEN;
        // The plaintext is copied straight into the output and encrypted in place there, so no
        // other plaintext copy is left behind in freed memory.
        let mut out = Vec::with_capacity(header_len + plaintext.len() + TAG_LEN);
        out.push(SEALED_FORMAT_V1);
        out.extend_from_slice(nonce.as_slice());
        out.extend_from_slice(plaintext);
        let tag = self
            .cipher
            .encrypt_inout_detached(&nonce, aad, out[header_len..].as_mut().into())
            .map_err(|_| SealError::Encrypt)?;
        out.extend_from_slice(tag.as_slice());
        Ok(out)
    }

    fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let (&version, rest) = sealed.split_first().ok_or(SealError::Malformed("empty"))?;
        if version != SEALED_FORMAT_V1 {
            return Err(SealError::UnsupportedVersion(version));
        }
        let (nonce, rest) = rest
            .split_first_chunk::<NONCE_LEN>()
            .ok_or(SealError::Malformed("too short for a nonce"))?;
        let (ciphertext, tag) = rest
            .split_last_chunk::<TAG_LEN>()
            .ok_or(SealError::Malformed("too short for a tag"))?;
        let nonce = XNonce::from(*nonce);
        let tag = Tag::from(*tag);
        let mut buf = Zeroizing::new(ciphertext.to_vec());
        self.cipher
            .decrypt_inout_detached(&nonce, aad, buf.as_mut_slice().into(), &tag)
            .map_err(|_| SealError::Decrypt)?;
        Ok(buf)
    }

    fn describe(&self) -> String {
        match self.source {
            KeySource::KeyFile => "software (key file), no hardware protection".to_owned(),
            KeySource::Passphrase => {
                "software (passphrase, Argon2id), no hardware protection".to_owned()
            }
        }
    }
}

const SALT_FILE_V1: u8 = 1;
/// Upper bounds accepted from a salt file: 4 GiB, 64 passes, 64 lanes.
const MAX_M_COST_KIB: u32 = 4 * 1024 * 1024;
const MAX_T_COST: u32 = 64;
const MAX_P_COST: u32 = 64;
const SALT_FILE_HEADER_LEN: usize = 1 + SALT_LEN + 12;
const PASSPHRASE_CHECK_PLAINTEXT: &[u8] = b"dkms passphrase check";

/// The check value is bound to the salt and parameters it was made with.
fn check_aad(salt: &[u8; SALT_LEN], params: KdfParams) -> Vec<u8> {
    let mut aad = b"dkms/passphrase-check/v1".to_vec();
    aad.extend_from_slice(salt);
    aad.extend_from_slice(&params.m_cost_kib.to_be_bytes());
    aad.extend_from_slice(&params.t_cost.to_be_bytes());
    aad.extend_from_slice(&params.p_cost.to_be_bytes());
    aad
}

fn derive_key(
    passphrase: &Zeroizing<String>,
    salt: &[u8; SALT_LEN],
    params: KdfParams,
) -> Result<Zeroizing<[u8; KEY_LEN]>, SealError> {
    let argon_params = argon2::Params::new(
        params.m_cost_kib,
        params.t_cost,
        params.p_cost,
        Some(KEY_LEN),
    )
    .map_err(|e| SealError::KdfParams(e.to_string()))?;
    let argon = argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        argon_params,
    );
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    argon
        .hash_password_into(passphrase.as_bytes(), salt, key.as_mut_slice())
        .map_err(|e| SealError::Kdf(e.to_string()))?;
    Ok(key)
}

fn fill_random(buf: &mut [u8]) -> Result<(), SealError> {
    getrandom::fill(buf).map_err(|e| SealError::Random(e.to_string()))
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SealError {
    move |source| SealError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

fn read_key_file(path: &Path) -> Result<Zeroizing<[u8; KEY_LEN]>, SealError> {
    let mut file = File::open(path).map_err(io_err("opening", path))?;
    let meta = file
        .metadata()
        .map_err(io_err("reading metadata of", path))?;
    if !meta.is_file() {
        return Err(SealError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    check_private_mode(path, &meta)?;
    if meta.len() != KEY_LEN as u64 {
        return Err(SealError::KeyFileLength {
            path: path.to_path_buf(),
            len: meta.len(),
        });
    }
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    file.read_exact(key.as_mut_slice())
        .map_err(io_err("reading", path))?;
    // The file could have grown between the metadata call and the read.
    let mut extra = [0u8; 1];
    if file.read(&mut extra).map_err(io_err("reading", path))? != 0 {
        return Err(SealError::KeyFileLength {
            path: path.to_path_buf(),
            len: meta.len().saturating_add(1),
        });
    }
    Ok(key)
}

#[cfg(unix)]
fn check_private_mode(path: &Path, meta: &fs::Metadata) -> Result<(), SealError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SealError::InsecurePermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private_mode(_path: &Path, _meta: &fs::Metadata) -> Result<(), SealError> {
    Ok(())
}

/// Opens a brand-new file readable and writable by the owner only.
fn create_private_file(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// Writes `contents` to a new file at `path` (mode 0600), all or nothing.
///
/// The bytes go to a fresh temporary file beside `path`, which is synced and then hard-linked
/// to `path`. Unlike a rename, the link fails with `AlreadyExists` instead of replacing a file
/// that appeared meanwhile, so an existing key is never overwritten.
fn write_new_file_atomically(path: &Path, contents: &[u8]) -> Result<(), SealError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or(SealError::NotAFile {
            path: path.to_path_buf(),
        })?
        .to_string_lossy()
        .into_owned();
    let mut suffix = [0u8; 8];
    fill_random(&mut suffix)?;
    let tmp = dir.join(format!(".{file_name}.tmp-{}", hex::encode(suffix)));

    let result = write_and_link(&tmp, path, contents);
    // The temporary name is ours alone; remove it whether or not the link succeeded.
    let _ = fs::remove_file(&tmp);
    if result.is_ok() {
        sync_dir(&dir);
    }
    result
}

fn write_and_link(tmp: &Path, path: &Path, contents: &[u8]) -> Result<(), SealError> {
    let mut file = create_private_file(tmp).map_err(io_err("creating", tmp))?;
    file.write_all(contents).map_err(io_err("writing", tmp))?;
    file.sync_all().map_err(io_err("syncing", tmp))?;
    drop(file);
    fs::hard_link(tmp, path).map_err(io_err("creating", path))
}

/// Makes the new directory entry durable; best effort, since not every platform allows it.
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn key_file_sealer(dir: &tempfile::TempDir) -> SoftwareSealer {
        SoftwareSealer::from_key_file(&dir.path().join("seal.key")).unwrap()
    }

    #[test]
    fn seal_open_round_trip_and_format() {
        let dir = tempfile::tempdir().unwrap();
        let s = key_file_sealer(&dir);
        let sealed = s.seal(b"aad", b"hello").unwrap();
        assert_eq!(sealed.len(), 1 + NONCE_LEN + 5 + TAG_LEN);
        assert_eq!(sealed[0], SEALED_FORMAT_V1);
        assert_eq!(s.open(b"aad", &sealed).unwrap().as_slice(), b"hello");
        // Fresh nonce every time.
        assert_ne!(s.seal(b"aad", b"hello").unwrap(), sealed);
        // Empty plaintext works too.
        let empty = s.seal(b"", b"").unwrap();
        assert!(s.open(b"", &empty).unwrap().is_empty());
    }

    #[test]
    fn open_rejects_wrong_aad_tampering_and_bad_format() {
        let dir = tempfile::tempdir().unwrap();
        let s = key_file_sealer(&dir);
        let sealed = s.seal(b"aad", b"secret").unwrap();
        assert!(matches!(s.open(b"aax", &sealed), Err(SealError::Decrypt)));
        for i in 1..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 1;
            assert!(
                matches!(s.open(b"aad", &t), Err(SealError::Decrypt)),
                "byte {i}"
            );
        }
        let mut v = sealed.clone();
        v[0] = 2;
        assert!(matches!(
            s.open(b"aad", &v),
            Err(SealError::UnsupportedVersion(2))
        ));
        assert!(matches!(s.open(b"aad", &[]), Err(SealError::Malformed(_))));
        assert!(matches!(
            s.open(b"aad", &sealed[..1 + NONCE_LEN + TAG_LEN - 1]),
            Err(SealError::Malformed(_))
        ));
    }

    #[test]
    fn key_file_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seal.key");
        let a = SoftwareSealer::from_key_file(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), KEY_LEN as u64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        let b = SoftwareSealer::from_key_file(&path).unwrap();
        let sealed = a.seal(b"x", b"data").unwrap();
        assert_eq!(b.open(b"x", &sealed).unwrap().as_slice(), b"data");
        assert!(a.describe().contains("no hardware protection"));
        // Debug shows no key material.
        assert!(!format!("{a:?}").contains("key:"));

        // A different key file gives a sealer that cannot open it.
        let other = SoftwareSealer::from_key_file(&dir.path().join("other.key")).unwrap();
        assert!(matches!(other.open(b"x", &sealed), Err(SealError::Decrypt)));
    }

    #[test]
    fn key_file_of_wrong_length_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seal.key");
        let mut f = create_private_file(&path).unwrap();
        f.write_all(&[7u8; 31]).unwrap();
        drop(f);
        let err = SoftwareSealer::from_key_file(&path).unwrap_err();
        assert!(
            matches!(err, SealError::KeyFileLength { len: 31, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("exactly 32 bytes"));
    }

    #[cfg(unix)]
    #[test]
    fn key_file_readable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seal.key");
        let key = [9u8; KEY_LEN];
        fs::write(&path, key).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = SoftwareSealer::from_key_file(&path).unwrap_err();
        assert!(matches!(
            err,
            SealError::InsecurePermissions { mode: 0o644, .. }
        ));
        let msg = err.to_string();
        assert!(msg.contains("chmod 600"), "{msg}");
        // The error text never carries key bytes.
        assert!(!msg.contains(&hex::encode(key)));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(SoftwareSealer::from_key_file(&path).is_err());
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(SoftwareSealer::from_key_file(&path).is_ok());
    }

    #[test]
    fn passphrase_sealer_detects_wrong_passphrase_at_startup() {
        let dir = tempfile::tempdir().unwrap();
        let salt = dir.path().join("kdf.salt");
        let pass = Zeroizing::new("correct horse".to_owned());
        let params = KdfParams::insecure_for_tests();
        let a = SoftwareSealer::from_passphrase(&pass, &salt, params).unwrap();
        assert!(a.describe().contains("Argon2id"));
        let file = fs::read(&salt).unwrap();
        assert_eq!(file[0], SALT_FILE_V1);
        assert!(file.len() > SALT_FILE_HEADER_LEN);

        // Same passphrase, even with other params requested: the recorded ones are used.
        let b = SoftwareSealer::from_passphrase(&pass, &salt, KdfParams::default()).unwrap();
        let sealed = a.seal(b"r", b"v").unwrap();
        assert_eq!(b.open(b"r", &sealed).unwrap().as_slice(), b"v");

        let wrong = Zeroizing::new("battery staple".to_owned());
        let err = SoftwareSealer::from_passphrase(&wrong, &salt, params).unwrap_err();
        assert!(matches!(err, SealError::WrongPassphrase { .. }), "{err}");
        assert!(err.to_string().contains("wrong passphrase"));

        let empty = Zeroizing::new(String::new());
        assert!(matches!(
            SoftwareSealer::from_passphrase(&empty, &salt, params),
            Err(SealError::EmptyPassphrase)
        ));
    }

    #[test]
    fn passphrase_salt_file_tampering_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let salt = dir.path().join("kdf.salt");
        let pass = Zeroizing::new("pw".to_owned());
        let params = KdfParams::insecure_for_tests();
        SoftwareSealer::from_passphrase(&pass, &salt, params).unwrap();
        let orig = fs::read(&salt).unwrap();

        // A changed salt derives another key: reported as a wrong passphrase, not garbage.
        let mut t = orig.clone();
        t[1] ^= 1;
        fs::write(&salt, &t).unwrap();
        assert!(matches!(
            SoftwareSealer::from_passphrase(&pass, &salt, params),
            Err(SealError::WrongPassphrase { .. })
        ));
        // Parameters an attacker might plant to exhaust memory are refused before any work.
        let mut t = orig.clone();
        t[1 + SALT_LEN..1 + SALT_LEN + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        fs::write(&salt, &t).unwrap();
        assert!(matches!(
            SoftwareSealer::from_passphrase(&pass, &salt, params),
            Err(SealError::MalformedSaltFile { .. })
        ));
        // Truncated file.
        fs::write(&salt, &orig[..10]).unwrap();
        assert!(matches!(
            SoftwareSealer::from_passphrase(&pass, &salt, params),
            Err(SealError::MalformedSaltFile { .. })
        ));
    }

    /// Sealed format v1 under key `[0x42; 32]`, aad `dkms/fixture`.
    const SEALED_V1_FIXTURE: &str = "01737cc197fdaf70ad956d89d85620a96857255750ce119ec0ca5371\
        be6f7b0fd146401189fb8881aa0c179ede539dac57c5da15c2f0ceb245d52bcaed08ca494e";
    /// Salt file format v1 for passphrase `fixture passphrase`, test KDF parameters.
    const SALT_FILE_V1_FIXTURE: &str = "01be6a223fb1e859cfcf1241e37465cdb400000040000000010000\
        000101fa3452c312c27845c6080076f73dc223a89e345162ffcac2698f025493c44e501c2093453a4ad0d8a4f5\
        e2061f07b747dbced700a2aca43f4eb851d23e";

    #[test]
    fn sealed_v1_fixture_still_opens() {
        let s = SoftwareSealer::from_raw_key_for_tests([0x42; KEY_LEN]);
        let sealed = hex::decode(SEALED_V1_FIXTURE).unwrap();
        assert_eq!(
            s.open(b"dkms/fixture", &sealed).unwrap().as_slice(),
            b"sealed format v1 fixture"
        );
    }

    #[test]
    fn salt_file_v1_fixture_still_derives_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kdf.salt");
        fs::write(&path, hex::decode(SALT_FILE_V1_FIXTURE).unwrap()).unwrap();
        let pass = Zeroizing::new("fixture passphrase".to_owned());
        // The recorded (test) parameters are used, not the defaults passed here.
        assert!(SoftwareSealer::from_passphrase(&pass, &path, KdfParams::default()).is_ok());
        let wrong = Zeroizing::new("other".to_owned());
        assert!(matches!(
            SoftwareSealer::from_passphrase(&wrong, &path, KdfParams::default()),
            Err(SealError::WrongPassphrase { .. })
        ));
    }

    #[test]
    fn default_kdf_params_are_argon2id_recommended() {
        let p = KdfParams::default();
        assert_eq!((p.m_cost_kib, p.t_cost, p.p_cost), (65536, 3, 1));
    }
}
