//! REST bodies of the public API (API.md). Field names are camelCase on the wire.
//!
//! Request bodies keep loosely typed fields (`i64`, `String`) where API.md promises a
//! specific error message for a bad value: the gateway parses them into the domain
//! newtypes itself and says exactly what is wrong.

use serde::{Deserialize, Serialize};

/// Every response body, success or failure.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope<T> {
    pub error_code: String,
    pub error_message: String,
    pub data: Option<T>,
    pub success: bool,
}

impl<T> Envelope<T> {
    pub fn ok(data: T) -> Self {
        Envelope {
            error_code: "200".into(),
            error_message: "success".into(),
            data: Some(data),
            success: true,
        }
    }

    pub fn err(code: crate::ErrorCode, message: impl Into<String>) -> Self {
        Envelope {
            error_code: code.as_str().into(),
            error_message: message.into(),
            data: None,
            success: false,
        }
    }
}

/// `POST /api/mappic/pod/createPod`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatePodRequest {
    pub node_tag: String,
}

/// One node as `GET /api/mappic/pod/list` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodInfo {
    pub node_tag: String,
    /// `PENDING` until the node has joined and proved its identity, then `ACTIVE`.
    pub status: String,
    pub connected: bool,
    /// Hex of the node's Ed25519 identity key, once joined.
    pub signing_key: Option<String>,
    /// Hex of the node's X25519 encryption key, once joined.
    pub encryption_key: Option<String>,
    /// Where the node runs (`pod/setRegion`); empty when not set.
    #[serde(default)]
    pub region: String,
    pub created_at: String,
}

/// `POST /api/mappic/pod/setRegion`: labels where a node runs (empty clears it).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetRegionRequest {
    pub node_tag: String,
    pub region: String,
}

/// `POST /api/mappic/group/create` and `group/update`: a named set of nodes that
/// key/gen can name instead of listing participants.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeGroupRequest {
    pub name: String,
    /// Node tags in the party order keys made from the group get.
    pub members: Vec<String>,
    /// Default threshold (t) of keys made from the group; n is the number of members.
    pub threshold: i64,
    /// Distinct regions the members' shares must span (0 or absent: no requirement).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_regions: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Body of `group/delete`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupNameRequest {
    pub name: String,
}

/// One node group as `group/get`, `group/list`, `group/create` and `group/update` show it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeGroupInfo {
    pub name: String,
    pub members: Vec<String>,
    pub threshold: u8,
    /// The number of members.
    pub total_shares: u8,
    pub min_regions: u8,
    /// The distinct non-empty regions the members are in now, sorted.
    pub regions: Vec<String>,
    pub description: String,
    pub created_at: String,
    pub updated_at: String,
}

/// The join token a deployment hands to a new node (returned by `pod/joinToken`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinTokenResponse {
    pub node_tag: String,
    pub join_token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyParams {
    #[serde(rename = "type")]
    pub key_type: String,
    #[serde(default)]
    pub length: Option<i64>,
}

/// `POST /api/mappic/dkms/key/gen`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyGenRequest {
    pub key_params: KeyParams,
    /// The share holders in party order; leave empty when naming a `node_group`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_participants: Vec<String>,
    /// Required with `service_participants`; with a `node_group`, the group's if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<i64>,
    /// As `threshold`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_shares: Option<i64>,
    /// A node group whose members hold the shares, instead of `service_participants`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_group: Option<String>,
    /// Whether the key may ever be exported whole (`key/export`, break-glass). Fixed at
    /// creation and held by every node in its share; default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exportable: bool,
}

/// `POST /api/mappic/dkms/key/import`: as key/gen plus the key as PEM. The gateway
/// splits it at once and zeroizes the plaintext. No `Debug`: the body holds a secret.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyImportRequest {
    pub key_params: KeyParams,
    pub service_participants: Vec<String>,
    pub threshold: i64,
    pub total_shares: i64,
    /// PEM: encrypted or plain PKCS#8, SEC1 `EC PRIVATE KEY`, or legacy OpenSSL-encrypted SEC1.
    pub private_key: String,
    /// Password of an encrypted PEM.
    #[serde(default)]
    pub password: Option<String>,
    /// As in key/gen; default false.
    #[serde(default)]
    pub exportable: bool,
}

/// One node's share of a key split by the client, sealed to that node (HPKE).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SealedShare {
    pub node_tag: String,
    /// Hex of the HPKE ciphertext (`dkms_mpc::import::seal_share`).
    pub sealed: String,
}

/// `POST /api/mappic/dkms/key/importShares`: client-side import; the gateway never sees
/// the key, only shares sealed to their nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyImportSharesRequest {
    /// Chosen by the client (a UUID), because every share is bound to it.
    pub key_id: String,
    pub key_params: KeyParams,
    pub service_participants: Vec<String>,
    pub threshold: i64,
    pub total_shares: i64,
    /// SEC1 compressed public key of the imported key, hex; every node must confirm it.
    pub public_key_hex: String,
    pub shares: Vec<SealedShare>,
    /// As in key/gen; must match the bit sealed into every share (the nodes check it).
    #[serde(default)]
    pub exportable: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyImportResponse {
    pub instance_id: String,
    pub key_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyGenResponse {
    pub key_id: String,
}

/// `GET /api/mappic/dkms/key/get?keyId=...`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyInfo {
    pub key_id: String,
    pub status: String,
    /// PEM SubjectPublicKeyInfo, null until FINISHED.
    pub public_key: Option<String>,
    /// SEC1 compressed public key as hex, null until FINISHED.
    pub public_key_hex: Option<String>,
    pub error_message: Option<String>,
    pub error_code: Option<String>,
    /// EIP-55 Ethereum address for secp256k1 keys.
    pub address: Option<String>,
    pub key_type: String,
    pub threshold: u8,
    pub total_shares: u8,
    pub service_participants: Vec<String>,
    /// `GENERATED` (distributed key generation) or `IMPORTED`.
    #[serde(default)]
    pub origin: String,
    /// `ENABLED`, `DISABLED`, `PENDING_DELETION`, `DELETING` or `DELETED`.
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub description: String,
    /// When a scheduled deletion destroys the shares (RFC 3339).
    #[serde(default)]
    pub deletion_at: Option<String>,
    /// Share generation: 0 at creation, +1 per committed refresh.
    #[serde(default)]
    pub generation: u32,
    /// The node group the key was made from, if key/gen named one.
    #[serde(default)]
    pub node_group: Option<String>,
    /// Whether the key may be exported whole (fixed at creation).
    #[serde(default)]
    pub exportable: bool,
    pub created_at: String,
}

/// `GET /api/mappic/dkms/key/list`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyList {
    pub keys: Vec<KeyInfo>,
    /// Pass as `pageToken` for the next page; null on the last page.
    pub next_page_token: Option<String>,
}

/// `POST /api/mappic/dkms/key/update`: replaces the labels and/or the description.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyUpdateRequest {
    pub key_id: String,
    #[serde(default)]
    pub labels: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    pub description: Option<String>,
}

/// `GET /api/mappic/dkms/task/get?instanceId=...`: a task on an existing key (refresh).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskInfo {
    pub instance_id: String,
    pub key_id: String,
    /// `REFRESH`, `RECOVER`, `EXPORT`, `BACKUP` or `RESTORE`.
    pub kind: String,
    pub status: String,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub created_at: String,
}

/// Body of `key/enable`, `key/disable`, `key/cancelDeletion` and `key/refresh`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyIdRequest {
    pub key_id: String,
}

/// `POST /api/mappic/dkms/key/recover`: rebuild the share of a member whose share is
/// lost (a wiped node that joined again under its tag, or another node taking its place),
/// or of several members lost at once. Exactly one of `lost_participant` and
/// `lost_participants` is given.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecoverKeyRequest {
    pub key_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost_participant: Option<String>,
    /// The node that receives the rebuilt share; the lost one itself if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_participant: Option<String>,
    /// Several members lost at once, rebuilt in one task (at most
    /// min(threshold − 1, totalShares − threshold) of them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost_participants: Option<Vec<String>>,
    /// With `lost_participants`: the node that takes each one's place, position by
    /// position (the lost tag itself to rebuild it in place); all in place if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_participants: Option<Vec<String>>,
}

/// `POST /api/mappic/dkms/key/export`: break-glass export of an exportable key. Each
/// member seals its share to `recipient_public_key`; the gateway never sees the key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyExportRequest {
    pub key_id: String,
    /// The requester's X25519 public key (32 bytes, hex), made for this export only.
    pub recipient_public_key: String,
}

/// One member's share, sealed (HPKE) to an export recipient or a custodian; hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberSealedShare {
    pub member: String,
    pub sealed: String,
}

/// `GET /api/mappic/dkms/key/export/get?instanceId=...&waitMs=...`: an export task and,
/// once FINISHED, the members' sealed shares (ciphertext: only the requester opens them).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyExportInfo {
    pub instance_id: String,
    pub key_id: String,
    pub status: String,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    /// Share generation the shares are of (bound into each ciphertext).
    pub generation: u32,
    pub threshold: u8,
    /// SEC1 compressed public key, hex: the combined key must match it.
    pub public_key_hex: Option<String>,
    #[serde(default)]
    pub shares: Vec<MemberSealedShare>,
}

/// A custodian of a backup group: a name and an X25519 public key (32 bytes, hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Custodian {
    pub name: String,
    pub public_key: String,
}

/// `POST /api/mappic/dkms/backupGroup/create`: custodians in share order (the custodian at
/// position i holds the backup of the key's member at position i).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupGroupRequest {
    pub name: String,
    pub custodians: Vec<Custodian>,
}

/// A backup group as `backupGroup/get` and `backupGroup/list` show it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupGroupInfo {
    pub name: String,
    pub custodians: Vec<Custodian>,
    pub created_at: String,
}

/// Body of `backupGroup/delete`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupGroupName {
    pub name: String,
}

/// `POST /api/mappic/dkms/key/backup`: every member seals its share to the custodian at
/// its position in `backup_group`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyBackupRequest {
    pub key_id: String,
    pub backup_group: String,
}

/// One member's backed-up share: sealed to `custodian` (hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupShare {
    pub member: String,
    pub custodian: String,
    pub sealed: String,
}

/// `GET /api/mappic/dkms/key/backup/get?keyId=...&backupGroup=...`: the latest backup of a
/// key to a group (what `dkms backup fetch` saves as the bundle).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyBackupInfo {
    pub key_id: String,
    pub backup_group: String,
    /// Share generation of the backup; a restore needs the key still at it.
    pub generation: u32,
    pub threshold: u8,
    pub public_key_hex: Option<String>,
    pub shares: Vec<BackupShare>,
    pub created_at: String,
}

/// `POST /api/mappic/dkms/key/restore`: deliver a share a custodian re-sealed to a node
/// (`dkms backup restore`) in place of `lost_participant`, then refresh every share with
/// that node as a member (as `key/recover` does after its repair).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyRestoreRequest {
    pub key_id: String,
    pub lost_participant: String,
    /// The node the blob was sealed to; the lost one itself (rejoined) if absent.
    #[serde(default)]
    pub new_participant: Option<String>,
    /// The generation the blob is of.
    pub generation: u32,
    /// The re-sealed share, hex.
    pub sealed: String,
}

/// `POST /api/mappic/dkms/key/scheduleDeletion`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleDeletionRequest {
    pub key_id: String,
    /// 7 to 30 days (default 30), as AWS KMS.
    #[serde(default)]
    pub pending_window_days: Option<i64>,
}

/// `POST /api/mappic/dkms/sign/req`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignRequest {
    pub digest_hex: String,
    pub key_id: String,
    /// A BIP-32 non-hardened path (`m/44/60/0/0/7`): the child key at that path signs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derivation_path: Option<String>,
}

/// `GET /api/mappic/dkms/key/derive?keyId=...&path=m/...`: a child key of a key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DerivedKey {
    pub key_id: String,
    /// The path in canonical form.
    pub derivation_path: String,
    /// PEM SubjectPublicKeyInfo of the child key.
    pub public_key: String,
    /// SEC1 compressed child public key, hex.
    pub public_key_hex: String,
    pub address: Option<String>,
    /// The chain code of the child (with `publicKeyHex`, an extended public key), hex.
    pub chain_code: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignRequestResponse {
    pub instance_id: String,
}

/// `GET /api/mappic/dkms/sign/get?instanceId=...`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignInfo {
    pub instance_id: String,
    pub key_id: String,
    pub digest_hex: String,
    pub status: String,
    /// `r ‖ s ‖ v` as hex (65 bytes), null until FINISHED.
    pub sign: Option<String>,
    pub r: Option<String>,
    pub s: Option<String>,
    pub v: Option<u8>,
    /// DER encoding of (r, s) as hex.
    pub der: Option<String>,
    pub error_message: Option<String>,
    pub error_code: Option<String>,
    /// Tags of the nodes that took part in the signing session.
    pub signers: Vec<String>,
    /// The BIP-32 path of the child key that signed, if not the key itself.
    #[serde(default)]
    pub derivation_path: Option<String>,
    /// For `sign/tx`: the raw signed transaction, ready to broadcast (0x hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_tx: Option<String>,
    /// For `sign/tx`: the transaction hash (0x hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_hash: Option<String>,
    pub created_at: String,
}

/// `GET /api/health`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    pub status: String,
    pub version: String,
    pub connected_nodes: Vec<String>,
}

// ---- identity ----

/// `POST /api/mappic/auth/login`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

/// A session token, shown once.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoginResponse {
    pub token: String,
    pub expires_at: String,
    pub username: String,
    pub roles: Vec<String>,
}

/// `GET /api/mappic/auth/whoami`: the caller as the policy engine sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WhoAmI {
    /// `user` or `apiKey`.
    pub kind: String,
    /// The username, or the API key's id.
    pub id: String,
    pub name: String,
    pub roles: Vec<String>,
    pub groups: Vec<String>,
}

/// `POST /api/mappic/user/create`; `user/update` takes the same fields, all but
/// `username` optional.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserRequest {
    pub username: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
}

/// `POST /api/mappic/user/delete`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsernameRequest {
    pub username: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserInfo {
    pub username: String,
    pub roles: Vec<String>,
    pub groups: Vec<String>,
    pub disabled: bool,
    /// Set while too many failed logins lock the account.
    pub locked_until: Option<String>,
    pub created_at: String,
}

/// `POST /api/mappic/apikey/create`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyRequest {
    pub name: String,
    pub roles: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    /// 1 to 3650 days; absent: the key does not expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_days: Option<i64>,
}

/// An API key as listed; `token` only in the answer to `apikey/create`, once.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyInfo {
    pub id: String,
    pub name: String,
    pub roles: Vec<String>,
    pub groups: Vec<String>,
    pub owner: Option<String>,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub last_used_at: Option<String>,
    pub revoked: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// `POST /api/mappic/apikey/revoke`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdRequest {
    pub id: String,
}

// ---- policies ----

/// `POST /api/mappic/policy/put`: creates (no `expectedVersion`) or replaces (the
/// version being replaced) a named policy document of one or more Cedar policies.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyPutRequest {
    pub name: String,
    pub text: String,
    #[serde(default)]
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_version: Option<i64>,
}

/// `POST /api/mappic/policy/delete`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyDeleteRequest {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_version: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyInfo {
    pub name: String,
    pub version: i64,
    pub text: String,
    pub description: String,
    /// The `@id`s of the Cedar policies in the text.
    pub policy_ids: Vec<String>,
    pub created_by: String,
    pub created_at: String,
    pub deleted: bool,
    /// True for the built-in role policies, which cannot be changed.
    #[serde(default)]
    pub builtin: bool,
}

/// `POST /api/mappic/policy/dryRun`: would this request be allowed, and by which policy?
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DryRunRequest {
    /// `user:<username>` or `apiKey:<id>` of an existing principal; or give `roles` and
    /// `groups` for a hypothetical one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<String>>,
    /// A Cedar action id: `sign`, `signTx`, `generate`, `managePolicies`, …
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest_hex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derivation_path: Option<String>,
    /// For `signTx`: the chain id and transaction, as `sign/tx` takes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction: Option<serde_json::Value>,
    /// A candidate policy document to evaluate as if it were stored (under `name`,
    /// replacing a stored one of that name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<PolicyPutRequest>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DryRunResponse {
    pub allowed: bool,
    pub determining_policies: Vec<String>,
    /// Approvals, rate and spend limits the request would be held to, in words.
    pub obligations: Vec<String>,
    pub errors: Vec<String>,
}

// ---- transaction signing and approvals ----

/// `POST /api/mappic/dkms/sign/tx`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignTxRequest {
    pub key_id: String,
    pub chain_id: u64,
    /// The unsigned transaction (see the OpenAPI document for its fields).
    pub transaction: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derivation_path: Option<String>,
}

/// `POST /api/mappic/dkms/approval/approve` and `…/reject`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalRequest {
    pub instance_id: String,
    #[serde(default)]
    pub comment: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalVote {
    pub approver: String,
    pub approve: bool,
    pub comment: String,
    pub created_at: String,
}

/// A signing that waits for approvals, or what an approval did to it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalInfo {
    pub instance_id: String,
    pub key_id: String,
    pub status: String,
    pub requester: String,
    pub digest_hex: String,
    /// The unsigned transaction of a `sign/tx`, as requested.
    pub transaction: Option<serde_json::Value>,
    pub chain_id: Option<u64>,
    pub required: u32,
    pub approver_group: Option<String>,
    pub policy: String,
    pub expires_at: String,
    pub votes: Vec<ApprovalVote>,
}

// ---- audit ----

/// `GET /api/mappic/audit/query`: one page of entries (JSON lines objects).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditPage {
    pub entries: Vec<serde_json::Value>,
    /// Pass as `afterSeq` for the next page; absent on the last.
    pub next_after_seq: Option<u64>,
}

/// `GET /api/mappic/audit/head`: the newest entry, to save as a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditHead {
    pub seq: u64,
    pub hash: String,
    /// `seq:hash`, the form `dkms audit verify --anchor` takes.
    pub anchor: String,
}
