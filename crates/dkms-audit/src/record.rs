//! What a caller records: who did what to which resource, what policy decided, how it ended.

use crate::timestamp::Timestamp;
use std::collections::BTreeMap;

/// Substrings that make a details key look secret-bearing (compared case-insensitively).
pub const SECRET_KEY_MARKERS: [&str; 7] = [
    "password", "token", "secret", "share", "private", "mnemonic", "seed",
];

/// What kind of caller acted. Its name, not a number, is hashed, so a kind added later
/// cannot collide with an old one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PrincipalKind {
    /// A bearer API key (the id is the key's id, never the token).
    ApiKey,
    /// A signed-in portal user.
    User,
    /// A node, acting over its link.
    Node,
    /// The gateway itself, e.g. the orchestrator failing a task after a restart.
    System,
}

impl PrincipalKind {
    pub const ALL: [PrincipalKind; 4] = [Self::ApiKey, Self::User, Self::Node, Self::System];

    /// The stable name used in the hash and in JSON lines.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ApiKey => "apiKey",
            Self::User => "user",
            Self::Node => "node",
            Self::System => "system",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// Who acted.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Principal {
    pub kind: PrincipalKind,
    pub id: String,
}

impl Principal {
    pub fn new(kind: PrincipalKind, id: impl Into<String>) -> Self {
        Self {
            kind,
            id: id.into(),
        }
    }
}

/// What the policy engine said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Decision {
    Allow,
    Deny,
}

impl Decision {
    /// The stable name used in JSON lines.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "allow" => Some(Self::Allow),
            "deny" => Some(Self::Deny),
            _ => None,
        }
    }
}

/// Why a details key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DetailsError {
    #[error(
        "audit details key {key:?} looks secret-bearing (contains {marker:?}); never log secrets"
    )]
    SecretLikeKey { key: String, marker: &'static str },
    #[error("audit details keys must not be empty")]
    EmptyKey,
}

/// Small non-secret facts about an event (a digest, a chain id, a participant list).
///
/// Every insertion passes a guard that refuses keys which look secret-bearing
/// ([`SECRET_KEY_MARKERS`]), so `details.insert("share", ..)` fails loudly in a test
/// instead of leaking in production. This is a seatbelt, not the defence: the defence is
/// that secrets live in types with no `Display`/`Serialize`, so they cannot be turned into
/// the strings this map holds. The guard looks at keys only; a caller that puts a secret
/// under an innocent key is not caught.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Details(BTreeMap<String, String>);

impl Details {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(
        &mut self,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<(), DetailsError> {
        let key = key.into();
        check_key(&key)?;
        self.0.insert(key, value.into());
        Ok(())
    }

    /// Builder form of [`Details::insert`].
    pub fn with(
        mut self,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<Self, DetailsError> {
        self.insert(key, value)?;
        Ok(self)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// In ascending byte order of key, which is the order the hash uses.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Reading back a stored log must not depend on today's guard list (a marker added
    /// later would make old, honest entries unreadable), so import skips the guard.
    pub(crate) fn from_stored(map: BTreeMap<String, String>) -> Self {
        Self(map)
    }

    #[cfg(test)]
    pub(crate) fn as_map_mut(&mut self) -> &mut BTreeMap<String, String> {
        &mut self.0
    }
}

impl TryFrom<BTreeMap<String, String>> for Details {
    type Error = DetailsError;

    fn try_from(map: BTreeMap<String, String>) -> Result<Self, Self::Error> {
        map.keys().try_for_each(|k| check_key(k))?;
        Ok(Self(map))
    }
}

fn check_key(key: &str) -> Result<(), DetailsError> {
    if key.is_empty() {
        return Err(DetailsError::EmptyKey);
    }
    let lower = key.to_lowercase();
    match SECRET_KEY_MARKERS.into_iter().find(|m| lower.contains(m)) {
        Some(marker) => Err(DetailsError::SecretLikeKey {
            key: key.to_owned(),
            marker,
        }),
        None => Ok(()),
    }
}

/// One event as the caller supplies it; the chain adds sequence number and hashes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AuditRecord {
    pub time: Timestamp,
    /// The request id the gateway put on the response and its log lines, to correlate.
    pub request_id: String,
    pub principal: Principal,
    /// The API action, e.g. `keyGen`, `sign`, `createPod`, `taskFinished`.
    pub action: String,
    /// What was acted on, e.g. `key:<uuid>` (see [`crate::key_resource`]).
    pub resource: Option<String>,
    pub decision: Decision,
    /// The policies that determined the decision, in the order the engine gave them.
    pub policies: Vec<String>,
    /// E.g. `accepted`, `finished`, `failed: CODE`.
    pub outcome: String,
    pub details: Details,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_like_keys_are_refused_in_any_case() {
        for key in [
            "password",
            "adminPassword",
            "TOKEN",
            "joinToken",
            "client_secret",
            "keyShare",
            "SHARES",
            "privateKey",
            "Mnemonic",
            "seedPhrase",
        ] {
            let err = Details::new().with(key, "x").unwrap_err();
            assert!(
                matches!(&err, DetailsError::SecretLikeKey { key: k, .. } if k == key),
                "{key}: {err}"
            );
            assert!(err.to_string().contains(key));
        }
    }

    #[test]
    fn try_from_map_applies_the_guard() {
        let mut map = BTreeMap::new();
        map.insert("digest".to_owned(), "00".to_owned());
        assert!(Details::try_from(map.clone()).is_ok());
        map.insert("Seed".to_owned(), "x".to_owned());
        assert_eq!(
            Details::try_from(map),
            Err(DetailsError::SecretLikeKey {
                key: "Seed".to_owned(),
                marker: "seed"
            })
        );
    }

    #[test]
    fn innocent_keys_pass_and_empty_keys_do_not() {
        let d = Details::new()
            .with("digest", "ab")
            .and_then(|d| d.with("chainId", "1"))
            .and_then(|d| d.with("participants", "a,b"))
            .unwrap();
        assert_eq!(d.len(), 2 + 1);
        assert_eq!(d.get("digest"), Some("ab"));
        assert_eq!(
            d.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            ["chainId", "digest", "participants"]
        );
        assert_eq!(Details::new().with("", "x"), Err(DetailsError::EmptyKey));
    }

    #[test]
    fn names_round_trip() {
        for kind in PrincipalKind::ALL {
            assert_eq!(PrincipalKind::from_name(kind.as_str()), Some(kind));
        }
        assert_eq!(PrincipalKind::from_name("admin"), None);
        for d in [Decision::Allow, Decision::Deny] {
            assert_eq!(Decision::from_name(d.as_str()), Some(d));
        }
        assert_eq!(Decision::from_name("Allow"), None);
    }
}
