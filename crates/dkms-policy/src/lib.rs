//! # dkms-policy: who may do what with which key
//!
//! The policy engine of the gateway (issue #4), on [Cedar](https://www.cedarpolicy.com)
//! through the `cedar-policy` crate. Pure logic: no I/O, no clock, no database. The
//! gateway loads the stored policies into a [`PolicyStore`], hands it a typed
//! [`Request`] for every API call and enforces the [`Decision`], including its
//! [`Obligation`]s (approvals, rate and spend limits), which it counts itself in SQL.
//!
//! ```
//! use dkms_policy::{Action, KeyAttrs, LimitScope, Obligation, PolicyStore, Principal,
//!                   Request, RequestContext, SignDetails, TxDetails, Window};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let custom = r#"
//!     @id("treasury-tx")
//!     @requires_approvals("2")
//!     @approver_group("treasury")
//!     @spend_limit_wei("1000000000000000000/day")
//!     permit (principal in Dkms::Group::"treasury", action == Dkms::Action::"signTx", resource)
//!     when { context.valueGwei <= 5000000000 };
//! "#;
//! PolicyStore::validate(custom)?; // what the policy API calls before storing it
//! let store = PolicyStore::new(custom)?;
//!
//! let mut context = RequestContext::new(1_710_428_966, "192.0.2.10".parse()?);
//! context.sign = Some(SignDetails { digest: vec![0xab; 32], derivation_path: String::new() });
//! context.tx = Some(TxDetails {
//!     chain_id: 1, to: Some([0x11; 20]), value_wei: 10u128.pow(18),
//!     selector: None, gas_limit: 21_000,
//! });
//! let request = Request {
//!     principal: Principal::user("tina", &[]).in_groups(&["treasury"]),
//!     action: Action::SignTx,
//!     resource: Some(KeyAttrs { id: "k1".into(), key_type: "ECDSA_K1".into(), ..Default::default() }),
//!     context,
//! };
//! let decision = store.evaluate(&request);
//! assert!(decision.allowed);
//! assert_eq!(decision.determining_policies, ["treasury-tx"]);
//! assert_eq!(decision.obligations[0].obligation,
//!            Obligation::RequireApprovals { count: 2, group: Some("treasury".into()) });
//! assert_eq!(decision.obligations[1].obligation,
//!            Obligation::SpendLimit { max_wei: 10u128.pow(18), window: Window::DAY,
//!                                        per: LimitScope::Key });
//! # Ok(()) }
//! ```
//!
//! ## Model
//!
//! The schema is `schema.cedarschema` ([`SCHEMA_TEXT`]), namespace `Dkms`:
//!
//! | entity | parents | attributes |
//! |---|---|---|
//! | `User`, `ApiKey` | `Role`, `Group` | `roles: Set<String>`, `groups: Set<String>` |
//! | `Role`, `Group` | | |
//! | `Key` | `Group` (its `group`, when not empty) | `labels: Set<String>` of `"k=v"`, `group`, `keyType`, `exportable: Bool`, `creator`; the labels again as tags |
//! | `Service` | | the one resource (`Dkms::Service::"dkms"`) of actions not on a key |
//!
//! Actions on a key: `generate`, `import` (the key about to be created, with the
//! attributes asked for), `get`, `update` (labels or description; added beside the
//! issue's list because relabelling a key can move it past a label-based policy),
//! `sign`, `signTx`, `refresh`, `recover`, `backup`, `export`, `delete`, `approve`.
//! Actions on the service: `list`, `managePolicies`, `manageNodes`, `manageGroups`,
//! `manageUsers`, `readAudit`.
//!
//! Context of every action: `now` (unix seconds, from the gateway's injected clock),
//! `hourOfDay` (0–23 UTC) and `dayOfWeek` (0 = Monday … 6 = Sunday, UTC), both derived
//! from `now` by the crate, and `clientIp` (Cedar `ipaddr`; IPv4-mapped IPv6 is turned
//! into IPv4 first). `sign` and `signTx` add `digest` (lowercase hex) and
//! `derivationPath` ("" for the root key). `signTx` adds `chainId`, `to` (lowercase
//! `0x…`, "" for contract creation), `selector` (lowercase `0x` + 8 hex, "" without
//! call data), `gasLimit`, and the value twice:
//!
//! - `valueWei: String`, the exact amount in decimal, for equality and the audit log;
//! - `valueGwei: Long`, for comparisons. Cedar's `Long` is an `i64` (about 9.2 ETH in
//!   wei), and its `decimal` has four fractional digits and the same range, so neither
//!   holds wei. Gwei in an `i64` reach 9.2·10⁹ ETH. The crate rounds **up** and
//!   saturates at `i64::MAX` ([`wei_to_gwei_ceil`]), so `valueGwei <= N` holds exactly
//!   when the value is at most N·10⁹ wei and `valueGwei > N` exactly when it is more:
//!   no amount slips under an upper bound by rounding. (`<` and `>=` count a fraction
//!   of a gwei as a whole one; write limits with `<=` and `>`.)
//!
//! Callers never write Cedar JSON: [`PolicyStore::evaluate`] builds the entities and the
//! context from the [`Request`] and checks the request against the schema.
//!
//! ## Evaluation
//!
//! - Deny by default: without a satisfied `permit` nothing is allowed.
//! - A satisfied `forbid` beats every `permit`.
//! - Fail closed: Cedar skips a policy whose evaluation errors (an overflow, say). For a
//!   `permit` that only withholds a grant, but for a `forbid` it would lift a
//!   prohibition, so the store denies when any forbid errors, naming it in
//!   `determining_policies` and `errors`.
//! - A request that does not fit its action (no key for `sign`, no transaction for
//!   `signTx`, …) is denied, with the reason in `errors`
//!   ([`PolicyStore::try_evaluate`] returns it as a [`RequestError`]).
//!
//! ## Policy texts
//!
//! Every policy needs `@id("…")` (letters, digits, `.` `_` `:` `-`), unique across the
//! built-in and custom policies; decisions and the audit log name policies by it.
//! [`PolicyStore::validate`] parses a text, checks the ids and annotations, and runs
//! Cedar's strict validator against the schema. Its [`PolicyError`] says which policy
//! and what is wrong: a syntax error with line and column, an unknown attribute or
//! action with Cedar's "did you mean", a malformed annotation with the expected form.
//! Templates (`?principal`) are refused.
//!
//! ## Obligations
//!
//! Annotations on a `permit` ask the gateway for more than "allowed". They are checked
//! at validation; any other annotation than these and `@description` is refused, so a
//! misspelt limit cannot silently vanish. They are not allowed on a `forbid`.
//!
//! | annotation | obligation |
//! |---|---|
//! | `@requires_approvals("2")` | [`Obligation::RequireApprovals`]: hold the request for 2 (1–32) approvals |
//! | `@approver_group("treasury")` | … by members of that group (needs `@requires_approvals`) |
//! | `@rate_limit("10/hour")` | [`Obligation::RateLimit`]: at most 10 per window bucket |
//! | `@spend_limit_wei("1000000000000000000/day")` | [`Obligation::SpendLimit`]: at most that many wei (a `u128`) per bucket |
//! | `@limit_per("principal")` | whose usage the policy's limits count: `key` (default: all principals together), `principal` (across keys) or `key,principal` |
//!
//! Windows ([`Window`]) are `second`, `minute`, `hour`, `day`, `week` or a count and a
//! unit (`15m`, `6h`, `2d`, `1w`), up to 366 days; buckets are fixed and aligned to UTC
//! (weeks start on Monday), see [`Window::bucket_start`]. A decision carries the
//! obligations of every determining permit with the policy's id
//! ([`PolicyObligation`]), so the gateway can key its counters by policy. Obligations
//! follow the grants: a request allowed only by a policy without annotations has none,
//! so to limit a role, put the limit on the policy that grants it.
//!
//! ## Built-in roles
//!
//! [`DEFAULT_POLICIES`] (`default.cedar`) grants the roles of [`BuiltinRole`] to
//! principals that are members of `Dkms::Role::"<role>"`:
//!
//! - **`role-admin`** — admins may do everything, including `managePolicies`,
//!   `manageUsers` and `export` (of exportable keys only, see below).
//! - **`role-operator`** — operators run the service and the key lifecycle: `generate`,
//!   `import`, `get`, `list`, `update`, `refresh`, `recover`, `backup`, `delete`,
//!   `manageNodes`, `manageGroups`. They never sign or export, and do not manage users
//!   or policies (that would let them grant themselves more).
//! - **`role-signer`** — `get`, `list`, `sign`, `signTx` on every key. Restrict it by
//!   redefining the role ([`PolicyStore::custom_only`] with an edited copy of the
//!   defaults) or with `forbid` policies.
//! - **`role-approver`** — `get`, `list`, `approve`.
//! - **`role-auditor`** — `get`, `list`, `readAudit`.
//! - **`key-not-exportable`** — `forbid` of `export` unless the key is `exportable`: a
//!   key created non-exportable never leaves the nodes whole, whoever asks.
//!
//! | action | admin | operator | signer | approver | auditor |
//! |---|:-:|:-:|:-:|:-:|:-:|
//! | generate, import, update, refresh, recover, backup, delete | ✓ | ✓ | | | |
//! | get, list | ✓ | ✓ | ✓ | ✓ | ✓ |
//! | sign, signTx | ✓ | | ✓ | | |
//! | export (exportable keys only) | ✓ | | | | |
//! | manageNodes, manageGroups | ✓ | ✓ | | | |
//! | managePolicies, manageUsers | ✓ | | | | |
//! | approve | ✓ | | | ✓ | |
//! | readAudit | ✓ | | | | ✓ |
//!
//! The test `builtin_role_matrix` checks this table cell by cell. Not decided here, and
//! left to the gateway: that an approver is not the requester, and that an approver
//! belongs to the obligation's `group`.

mod error;
mod obligation;
mod request;
mod store;

pub use error::{PolicyError, RequestError, ValidationIssue};
pub use obligation::{
    ANN_APPROVER_GROUP, ANN_DESCRIPTION, ANN_ID, ANN_LIMIT_PER, ANN_RATE_LIMIT,
    ANN_REQUIRES_APPROVALS, ANN_SPEND_LIMIT_WEI, KNOWN_ANNOTATIONS, LimitScope, MAX_APPROVALS,
    MAX_WINDOW_SECS, Obligation, PolicyObligation, Window, WindowError, bucket_start,
    is_valid_name,
};
pub use request::{
    Action, BuiltinRole, KeyAttrs, Principal, PrincipalKind, Request, RequestContext, ResourceKind,
    SignDetails, TxDetails, UnknownAction, canonical_ip, utc_hour_and_weekday, wei_to_gwei_ceil,
};
pub use store::{DEFAULT_POLICIES, Decision, PolicyId, PolicyStore, SCHEMA_TEXT, SERVICE_ID};
