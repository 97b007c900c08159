//! Validated newtypes. Requests are parsed into these at the edge so that the rest of
//! the code never handles an unchecked tag, id or digest.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Why a value did not parse; the message is safe to show to a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

/// A name of 1–64 characters of `[A-Za-z0-9_-]`, checked once where it enters; `$what`
/// names it in error messages.
macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub const MAX_LEN: usize = 64;

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = ParseError;

            fn try_from(s: String) -> Result<Self, ParseError> {
                if s.is_empty() || s.len() > Self::MAX_LEN {
                    return Err(ParseError(format!(
                        concat!($what, " must be 1 to {} characters long, got {}"),
                        Self::MAX_LEN,
                        s.chars().count()
                    )));
                }
                if let Some(bad) = s
                    .chars()
                    .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
                {
                    return Err(ParseError(format!(
                        concat!($what, " may contain only letters, digits, '_' and '-', found {:?}"),
                        bad
                    )));
                }
                Ok($name(s))
            }
        }

        impl FromStr for $name {
            type Err = ParseError;
            fn from_str(s: &str) -> Result<Self, ParseError> {
                $name::try_from(s.to_owned())
            }
        }

        impl From<$name> for String {
            fn from(t: $name) -> String {
                t.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// A node's tag: 1–64 characters of `[A-Za-z0-9_-]` (API.md, "Nodes").
    NodeTag,
    "node tag"
);

name_type!(
    /// A node group's name: 1–64 characters of `[A-Za-z0-9_-]`, as node tags.
    GroupName,
    "group name"
);

/// A key id (also the id of the key-generation task): a UUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyId(pub uuid::Uuid);

impl KeyId {
    pub fn new_random() -> Self {
        KeyId(uuid::Uuid::new_v4())
    }
}

impl FromStr for KeyId {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        uuid::Uuid::parse_str(s.trim())
            .map(KeyId)
            .map_err(|_| ParseError(format!("{s:?} is not a valid id (expected a UUID)")))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A 32-byte message digest to be signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest32(pub [u8; 32]);

impl Digest32 {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl FromStr for Digest32 {
    type Err = ParseError;

    /// Accepts 64 hex characters, with or without a `0x` prefix.
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let body = s
            .strip_prefix("0x")
            .or_else(|| s.strip_prefix("0X"))
            .unwrap_or(s);
        if body.len() != 64 {
            return Err(ParseError(format!(
                "digestHex must be 32 bytes as 64 hex characters (optional 0x prefix), got {} characters",
                body.len()
            )));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(body, &mut out)
            .map_err(|_| ParseError("digestHex contains a character that is not hex".into()))?;
        Ok(Digest32(out))
    }
}

/// Key types of API.md. Only the ones a scheme implements are accepted by the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KeyType {
    /// ECDSA on secp256k1.
    #[serde(rename = "ECDSA_K1")]
    EcdsaK1,
    /// ECDSA on NIST P-256 (secp256r1).
    #[serde(rename = "ECDSA_R1")]
    EcdsaR1,
}

impl KeyType {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::EcdsaK1 => "ECDSA_K1",
            KeyType::EcdsaR1 => "ECDSA_R1",
        }
    }

    /// The threshold scheme that runs keys of this type.
    pub fn scheme(self) -> crate::node::Scheme {
        match self {
            KeyType::EcdsaK1 => crate::node::Scheme::Dkls23Secp256k1,
            KeyType::EcdsaR1 => crate::node::Scheme::Dkls23P256,
        }
    }

    /// The scheme's name as the metadata store records it.
    pub fn scheme_name(self) -> &'static str {
        match self {
            KeyType::EcdsaK1 => "DKLS23_SECP256K1",
            KeyType::EcdsaR1 => "DKLS23_P256",
        }
    }
}

impl FromStr for KeyType {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        match s {
            "ECDSA_K1" => Ok(KeyType::EcdsaK1),
            "ECDSA_R1" => Ok(KeyType::EcdsaR1),
            "EDDSA_ED25519" | "SCHNORR_BIP340" => Err(ParseError(format!(
                "key type {s} is not supported yet; supported: ECDSA_K1, ECDSA_R1"
            ))),
            other => Err(ParseError(format!(
                "unknown key type {other:?}; supported: ECDSA_K1, ECDSA_R1"
            ))),
        }
    }
}

/// The state of a task (key generation or signing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskStatus {
    Init,
    Processing,
    Finished,
    Failed,
    PendingApproval,
    Rejected,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Init => "INIT",
            TaskStatus::Processing => "PROCESSING",
            TaskStatus::Finished => "FINISHED",
            TaskStatus::Failed => "FAILED",
            TaskStatus::PendingApproval => "PENDING_APPROVAL",
            TaskStatus::Rejected => "REJECTED",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Finished | TaskStatus::Failed | TaskStatus::Rejected
        )
    }
}

impl FromStr for TaskStatus {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        Ok(match s {
            "INIT" => TaskStatus::Init,
            "PROCESSING" => TaskStatus::Processing,
            "FINISHED" => TaskStatus::Finished,
            "FAILED" => TaskStatus::Failed,
            "PENDING_APPROVAL" => TaskStatus::PendingApproval,
            "REJECTED" => TaskStatus::Rejected,
            other => return Err(ParseError(format!("unknown task status {other:?}"))),
        })
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a node runs, as its operator labels it (`eu-west-1`, `dc2.rack4`): 0–64
/// characters of `[A-Za-z0-9_.-]`; empty means not set. Groups count distinct regions to
/// keep a key's shares apart.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Region(String);

impl Region {
    pub const MAX_LEN: usize = 64;

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl TryFrom<String> for Region {
    type Error = ParseError;

    fn try_from(s: String) -> Result<Self, ParseError> {
        if s.len() > Self::MAX_LEN {
            return Err(ParseError(format!(
                "region must be at most {} characters long, got {}",
                Self::MAX_LEN,
                s.chars().count()
            )));
        }
        if let Some(bad) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
        {
            return Err(ParseError(format!(
                "region may contain only letters, digits, '_', '-' and '.', found {bad:?}"
            )));
        }
        Ok(Region(s))
    }
}

impl FromStr for Region {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        Region::try_from(s.to_owned())
    }
}

impl From<Region> for String {
    fn from(r: Region) -> String {
        r.0
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_and_regions() {
        assert!("treasury_2-of-3".parse::<GroupName>().is_ok());
        assert!("x".repeat(64).parse::<GroupName>().is_ok());
        for bad in ["", "a b", "a.b", "a/b", "é"] {
            assert!(bad.parse::<GroupName>().is_err(), "{bad:?}");
        }
        assert!("x".repeat(65).parse::<GroupName>().is_err());
        assert!(serde_json::from_str::<GroupName>("\"no good\"").is_err());

        assert!("".parse::<Region>().unwrap().is_empty());
        assert!("eu-west-1".parse::<Region>().is_ok());
        assert!("dc2.rack_4".parse::<Region>().is_ok());
        assert!("x".repeat(64).parse::<Region>().is_ok());
        for bad in ["eu west", "eu/west", "ü", "a,b"] {
            assert!(bad.parse::<Region>().is_err(), "{bad:?}");
        }
        assert!("x".repeat(65).parse::<Region>().is_err());
    }

    #[test]
    fn node_tags() {
        assert!("mappic234".parse::<NodeTag>().is_ok());
        assert!("a_b-C9".parse::<NodeTag>().is_ok());
        assert!("".parse::<NodeTag>().is_err());
        assert!("a b".parse::<NodeTag>().is_err());
        assert!("a/b".parse::<NodeTag>().is_err());
        assert!("é".parse::<NodeTag>().is_err());
        assert!("x".repeat(64).parse::<NodeTag>().is_ok());
        assert!("x".repeat(65).parse::<NodeTag>().is_err());
        assert!(serde_json::from_str::<NodeTag>("\"bad tag\"").is_err());
    }

    #[test]
    fn digests() {
        let hex64 = "ab".repeat(32);
        assert_eq!("ab".repeat(32).parse::<Digest32>().unwrap().0, [0xab; 32]);
        assert!(format!("0x{hex64}").parse::<Digest32>().is_ok());
        assert!("ab".repeat(31).parse::<Digest32>().is_err());
        assert!("zz".repeat(32).parse::<Digest32>().is_err());
        assert!("ab".repeat(33).parse::<Digest32>().is_err());
    }

    #[test]
    fn key_types() {
        assert_eq!("ECDSA_K1".parse::<KeyType>().unwrap(), KeyType::EcdsaK1);
        assert_eq!("ECDSA_R1".parse::<KeyType>().unwrap(), KeyType::EcdsaR1);
        assert!("EDDSA_ED25519".parse::<KeyType>().is_err());
        assert!("RSA".parse::<KeyType>().is_err());
        assert!("ecdsa_k1".parse::<KeyType>().is_err());
    }
}
