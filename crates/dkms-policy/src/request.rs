//! The typed request that the gateway hands to [`crate::PolicyStore::evaluate`]. The crate
//! turns it into Cedar entities and context itself, so callers never write Cedar JSON and
//! cannot get a type or a derived field (hour of day, gwei) wrong.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// Who is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrincipalKind {
    /// A person (portal or API login): `Dkms::User`.
    User,
    /// A machine credential: `Dkms::ApiKey`.
    ApiKey,
}

impl PrincipalKind {
    /// The Cedar entity type name.
    pub fn cedar_type(self) -> &'static str {
        match self {
            PrincipalKind::User => "Dkms::User",
            PrincipalKind::ApiKey => "Dkms::ApiKey",
        }
    }
}

/// The principal with the memberships the gateway resolved from its store. Roles and
/// groups become both parents (`principal in Dkms::Role::"signer"`) and attributes
/// (`principal.roles.contains("signer")`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub kind: PrincipalKind,
    pub id: String,
    pub roles: Vec<String>,
    pub groups: Vec<String>,
}

impl Principal {
    /// A user with the given roles and no groups.
    pub fn user(id: impl Into<String>, roles: &[&str]) -> Self {
        Principal {
            kind: PrincipalKind::User,
            id: id.into(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            groups: Vec::new(),
        }
    }

    /// An API key with the given roles and no groups.
    pub fn api_key(id: impl Into<String>, roles: &[&str]) -> Self {
        Principal {
            kind: PrincipalKind::ApiKey,
            ..Principal::user(id, roles)
        }
    }

    /// The same principal, also a member of `groups`.
    #[must_use]
    pub fn in_groups(mut self, groups: &[&str]) -> Self {
        self.groups.extend(groups.iter().map(|g| (*g).to_owned()));
        self
    }
}

/// The roles that the default policy set grants (see the crate docs for what each may do).
/// Custom roles are plain strings in [`Principal::roles`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BuiltinRole {
    Admin,
    Operator,
    Signer,
    Approver,
    Auditor,
}

impl BuiltinRole {
    pub const ALL: [BuiltinRole; 5] = [
        BuiltinRole::Admin,
        BuiltinRole::Operator,
        BuiltinRole::Signer,
        BuiltinRole::Approver,
        BuiltinRole::Auditor,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BuiltinRole::Admin => "admin",
            BuiltinRole::Operator => "operator",
            BuiltinRole::Signer => "signer",
            BuiltinRole::Approver => "approver",
            BuiltinRole::Auditor => "auditor",
        }
    }
}

impl fmt::Display for BuiltinRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the principal wants to do. The Cedar action is `Dkms::Action::"<as_str>"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Generate,
    Import,
    Get,
    List,
    Update,
    Sign,
    SignTx,
    Refresh,
    Recover,
    Backup,
    Export,
    Delete,
    ManagePolicies,
    ManageNodes,
    ManageGroups,
    ManageUsers,
    Approve,
    ReadAudit,
}

/// What an action applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    /// One key (`Dkms::Key`); the request must carry [`KeyAttrs`].
    Key,
    /// The service as a whole (`Dkms::Service::"dkms"`); the request carries no key.
    Service,
}

impl Action {
    pub const ALL: [Action; 18] = [
        Action::Generate,
        Action::Import,
        Action::Get,
        Action::List,
        Action::Update,
        Action::Sign,
        Action::SignTx,
        Action::Refresh,
        Action::Recover,
        Action::Backup,
        Action::Export,
        Action::Delete,
        Action::ManagePolicies,
        Action::ManageNodes,
        Action::ManageGroups,
        Action::ManageUsers,
        Action::Approve,
        Action::ReadAudit,
    ];

    /// The Cedar action id.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Generate => "generate",
            Action::Import => "import",
            Action::Get => "get",
            Action::List => "list",
            Action::Update => "update",
            Action::Sign => "sign",
            Action::SignTx => "signTx",
            Action::Refresh => "refresh",
            Action::Recover => "recover",
            Action::Backup => "backup",
            Action::Export => "export",
            Action::Delete => "delete",
            Action::ManagePolicies => "managePolicies",
            Action::ManageNodes => "manageNodes",
            Action::ManageGroups => "manageGroups",
            Action::ManageUsers => "manageUsers",
            Action::Approve => "approve",
            Action::ReadAudit => "readAudit",
        }
    }

    /// Whether the action targets one key or the whole service (matches the schema).
    pub fn resource_kind(self) -> ResourceKind {
        match self {
            Action::List
            | Action::ManagePolicies
            | Action::ManageNodes
            | Action::ManageGroups
            | Action::ManageUsers
            | Action::ReadAudit => ResourceKind::Service,
            _ => ResourceKind::Key,
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An action name that is not one of [`Action::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown action {0:?}")]
pub struct UnknownAction(pub String);

impl FromStr for Action {
    type Err = UnknownAction;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Action::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| UnknownAction(s.to_owned()))
    }
}

/// The public attributes of a key, as stored by the gateway. For `generate` and
/// `import` these are the attributes the request asks the new key to have.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyAttrs {
    pub id: String,
    pub labels: BTreeMap<String, String>,
    /// The key's group, "" for none. A key in a group is a member of `Dkms::Group::"<group>"`.
    pub group: String,
    /// `ECDSA_K1`, ...
    pub key_type: String,
    /// Whether the key may ever be exported whole (set at creation).
    pub exportable: bool,
    /// Id of the principal that created the key.
    pub creator: String,
}

/// Facts about the request that the gateway establishes (never taken from the client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestContext {
    /// Unix seconds, from the gateway's injected clock. `hourOfDay` and `dayOfWeek` are
    /// derived from it in UTC.
    pub now: i64,
    pub client_ip: IpAddr,
    /// Required for `sign` and `signTx`, refused for other actions.
    pub sign: Option<SignDetails>,
    /// Required for `signTx`, refused for other actions.
    pub tx: Option<TxDetails>,
}

impl RequestContext {
    /// A context with no signing details.
    pub fn new(now: i64, client_ip: IpAddr) -> Self {
        RequestContext {
            now,
            client_ip,
            sign: None,
            tx: None,
        }
    }
}

/// What is being signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignDetails {
    /// The digest; policies see it as lowercase hex without `0x`.
    pub digest: Vec<u8>,
    /// BIP-32 derivation path such as `m/0/1`, "" for the root key.
    pub derivation_path: String,
}

/// The decoded EVM transaction behind a `signTx` digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxDetails {
    pub chain_id: u64,
    /// Recipient; `None` for contract creation (policies see "").
    pub to: Option<[u8; 20]>,
    pub value_wei: u128,
    /// First four bytes of the call data; `None` when there is none (policies see "").
    pub selector: Option<[u8; 4]>,
    pub gas_limit: u64,
}

/// One authorization question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub principal: Principal,
    pub action: Action,
    /// The key acted on; `Some` exactly when `action.resource_kind()` is `Key`.
    pub resource: Option<KeyAttrs>,
    pub context: RequestContext,
}

/// Gwei are 10^9 wei.
const WEI_PER_GWEI: u128 = 1_000_000_000;

/// Cedar's Long is an i64 and cannot hold wei amounts (1 ETH = 10^18 wei, i64 tops out
/// near 9.2 ETH). Policies compare `valueGwei` instead; it is rounded **up** and saturates
/// at `i64::MAX`, so `context.valueGwei <= N` holds exactly when the value is at most
/// N gwei and an upper bound can never be slipped under by rounding. The exact amount is
/// still in `valueWei` (a decimal string) for equality checks and for the audit log.
pub fn wei_to_gwei_ceil(wei: u128) -> i64 {
    let gwei = wei.div_ceil(WEI_PER_GWEI);
    i64::try_from(gwei).unwrap_or(i64::MAX)
}

/// Hour of the day (0..23) and day of the week (0 = Monday .. 6 = Sunday), UTC.
pub fn utc_hour_and_weekday(now: i64) -> (i64, i64) {
    let hour = now.rem_euclid(86_400) / 3_600;
    // 1970-01-01 was a Thursday (3 when Monday is 0).
    let weekday = (now.div_euclid(86_400) + 3).rem_euclid(7);
    (hour, weekday)
}

/// The address form policies compare against: IPv4-mapped IPv6 (`::ffff:a.b.c.d`) becomes
/// plain IPv4, so an IPv4 range in a policy matches a dual-stack listener's clients.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gwei_rounds_up_and_saturates() {
        assert_eq!(wei_to_gwei_ceil(0), 0);
        assert_eq!(wei_to_gwei_ceil(1), 1);
        assert_eq!(wei_to_gwei_ceil(999_999_999), 1);
        assert_eq!(wei_to_gwei_ceil(1_000_000_000), 1);
        assert_eq!(wei_to_gwei_ceil(1_000_000_001), 2);
        assert_eq!(
            wei_to_gwei_ceil(1_000_000_000_000_000_000),
            1_000_000_000,
            "1 ETH"
        );
        assert_eq!(wei_to_gwei_ceil(u128::MAX), i64::MAX);
        let edge = u128::try_from(i64::MAX).unwrap() * WEI_PER_GWEI;
        assert_eq!(wei_to_gwei_ceil(edge), i64::MAX);
        assert_eq!(wei_to_gwei_ceil(edge + 1), i64::MAX);
    }

    #[test]
    fn hour_and_weekday_are_utc() {
        assert_eq!(utc_hour_and_weekday(0), (0, 3)); // Thu 1970-01-01 00:00
        assert_eq!(utc_hour_and_weekday(1_710_428_966), (15, 3)); // Thu 2024-03-14 15:09
        assert_eq!(utc_hour_and_weekday(1_710_115_200), (0, 0)); // Mon 2024-03-11 00:00
        assert_eq!(utc_hour_and_weekday(1_710_115_199), (23, 6)); // Sun 23:59:59
        assert_eq!(utc_hour_and_weekday(-1), (23, 2)); // Wed 1969-12-31 23:59:59
    }

    #[test]
    fn actions_round_trip_and_have_a_resource_kind() {
        for a in Action::ALL {
            assert_eq!(a.as_str().parse::<Action>(), Ok(a));
            assert_eq!(Action::ALL[a.index()], a);
        }
        assert_eq!(
            "frobnicate".parse::<Action>(),
            Err(UnknownAction("frobnicate".into()))
        );
        assert_eq!(Action::Sign.resource_kind(), ResourceKind::Key);
        assert_eq!(Action::Generate.resource_kind(), ResourceKind::Key);
        assert_eq!(Action::List.resource_kind(), ResourceKind::Service);
        assert_eq!(Action::ReadAudit.resource_kind(), ResourceKind::Service);
    }

    #[test]
    fn mapped_ipv4_becomes_ipv4() {
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(canonical_ip(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(canonical_ip(v6), v6);
    }
}
