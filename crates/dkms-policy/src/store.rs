//! The policy store: parses and validates policy texts, and evaluates typed requests.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use cedar_policy::{
    ActionConstraint, Authorizer, Context, Effect, Entities, Entity, EntityId, EntityTypeName,
    EntityUid, RestrictedExpression, Schema, ValidationMode, Validator,
};

use crate::error::{PolicyError, RequestError, ValidationIssue};
use crate::obligation::{
    ANN_ID, Obligation, PolicyObligation, is_valid_name, obligations_from_annotations,
};
use crate::request::{
    Action, KeyAttrs, Principal, Request, RequestContext, ResourceKind, canonical_ip,
    utc_hour_and_weekday, wei_to_gwei_ceil,
};

/// The Cedar schema (Cedar schema syntax) every policy is validated against.
pub const SCHEMA_TEXT: &str = include_str!("../schema.cedarschema");

/// The built-in role grants; see the crate docs.
pub const DEFAULT_POLICIES: &str = include_str!("../default.cedar");

/// Id of the single `Dkms::Service` entity.
pub const SERVICE_ID: &str = "dkms";

/// Parsed once: the schema is constant and parsing it costs about a millisecond.
static SCHEMA: LazyLock<Result<Schema, String>> =
    LazyLock::new(|| Schema::from_str(SCHEMA_TEXT).map_err(|e| e.to_string()));

fn schema() -> Result<&'static Schema, PolicyError> {
    SCHEMA.as_ref().map_err(|e| PolicyError::Schema(e.clone()))
}

/// A policy's id, from its `@id("...")` annotation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyId(String);

impl PolicyId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PolicyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<PolicyId> for String {
    fn from(id: PolicyId) -> String {
        id.0
    }
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    pub allowed: bool,
    /// Ids of the policies that decided: the satisfied permits when allowed, the
    /// satisfied (or failed) forbids when a forbid denied, empty when nothing permitted.
    pub determining_policies: Vec<String>,
    /// Policies that failed to evaluate, and request problems. For the log, not a client.
    pub errors: Vec<String>,
    /// What the gateway must enforce before carrying out an allowed request; empty when
    /// denied. Collected from every determining permit.
    pub obligations: Vec<PolicyObligation>,
}

impl Decision {
    fn deny(error: String) -> Self {
        Decision {
            errors: vec![error],
            ..Decision::default()
        }
    }
}

/// Whether a policy's action scope is `sign` and/or `signTx` and nothing else.
fn only_signing(scope: &cedar_policy::ActionConstraint) -> bool {
    let signing = |uid: &cedar_policy::EntityUid| {
        uid.type_name().to_string() == "Dkms::Action"
            && matches!(uid.id().unescaped(), "sign" | "signTx")
    };
    match scope {
        cedar_policy::ActionConstraint::Any => false,
        cedar_policy::ActionConstraint::Eq(uid) => signing(uid),
        cedar_policy::ActionConstraint::In(uids) => !uids.is_empty() && uids.iter().all(signing),
    }
}

/// Policies parsed, renamed to their `@id`s, with their obligations.
#[derive(Default)]
struct Compiled {
    set: cedar_policy::PolicySet,
    ids: Vec<String>,
    obligations: HashMap<String, Vec<Obligation>>,
    forbids: HashSet<String>,
}

impl Compiled {
    /// Adds every policy of `text`; returns the ids added, in text order.
    fn add_text(&mut self, text: &str) -> Result<Vec<PolicyId>, PolicyError> {
        let parsed = cedar_policy::PolicySet::from_str(text).map_err(|e| syntax_error(text, &e))?;
        if let Some(t) = parsed.templates().next() {
            let id = t.annotation(ANN_ID).unwrap_or(t.id().as_ref()).to_owned();
            return Err(PolicyError::Template { id });
        }
        let mut added = Vec::new();
        for (index, policy) in parsed.policies().enumerate() {
            let Some(id) = policy.annotation(ANN_ID) else {
                return Err(PolicyError::MissingId {
                    index: index + 1,
                    excerpt: excerpt(&policy.to_string()),
                });
            };
            if !is_valid_id(id) {
                return Err(PolicyError::BadId { id: id.to_owned() });
            }
            if self.obligations.contains_key(id) {
                return Err(PolicyError::DuplicateId { id: id.to_owned() });
            }
            let is_permit = policy.effect() == Effect::Permit;
            let obligations = obligations_from_annotations(policy.annotations(), is_permit)
                .map_err(|p| PolicyError::Annotation {
                    policy: id.to_owned(),
                    annotation: p.annotation,
                    value: p.value,
                    reason: p.reason,
                })?;
            if !obligations.is_empty() && !only_signing(&policy.action_constraint()) {
                return Err(PolicyError::ObligationScope {
                    policy: id.to_owned(),
                });
            }
            self.set
                .add(policy.new_id(cedar_policy::PolicyId::new(id)))
                .map_err(|_| PolicyError::DuplicateId { id: id.to_owned() })?;
            if !is_permit {
                self.forbids.insert(id.to_owned());
            }
            self.obligations.insert(id.to_owned(), obligations);
            self.ids.push(id.to_owned());
            added.push(PolicyId(id.to_owned()));
        }
        Ok(added)
    }

    /// Strict validation against the schema; every issue of every policy is reported.
    fn validate(&self, schema: &Schema) -> Result<(), PolicyError> {
        let result = Validator::new(schema.clone()).validate(&self.set, ValidationMode::Strict);
        if result.validation_passed() {
            return Ok(());
        }
        let mut issues: Vec<ValidationIssue> = result
            .validation_errors()
            .map(|e| {
                let policy = e.policy_id().to_string();
                let message = with_help(e);
                // Cedar starts with "for policy `id`, "; the issue names the policy already.
                let message = message
                    .strip_prefix(&format!("for policy `{policy}`, "))
                    .map(str::to_owned)
                    .unwrap_or(message);
                ValidationIssue { policy, message }
            })
            .collect();
        // The validator reports in hash order; sort so the same text gives the same error.
        issues.sort_by(|a, b| (&a.policy, &a.message).cmp(&(&b.policy, &b.message)));
        issues.dedup();
        Err(PolicyError::Invalid { issues })
    }
}

fn is_valid_id(id: &str) -> bool {
    is_valid_name(id)
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'))
}

/// The first line of a policy, shortened, to point at it when it has no id.
fn excerpt(policy: &str) -> String {
    let line = policy
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    if line.chars().count() > 60 {
        format!("{}...", line.chars().take(60).collect::<String>())
    } else {
        line.to_owned()
    }
}

/// The message of a diagnostic, with Cedar's hint ("did you mean ...") when it has one.
fn with_help(d: &dyn miette::Diagnostic) -> String {
    match d.help() {
        Some(help) => format!("{d} ({help})"),
        None => d.to_string(),
    }
}

fn syntax_error(text: &str, errors: &cedar_policy::ParseErrors) -> PolicyError {
    let first: &dyn miette::Diagnostic = match errors.iter().next() {
        Some(e) => e,
        None => errors,
    };
    let offset = first
        .labels()
        .and_then(|mut l| l.next())
        .map(|l| l.offset())
        .unwrap_or(0);
    let (line, column) = line_and_column(text, offset);
    PolicyError::Syntax {
        line,
        column,
        message: with_help(first),
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    (line, before[line_start..].chars().count() + 1)
}

/// Entity type names, parsed once.
struct Types {
    user: EntityTypeName,
    api_key: EntityTypeName,
    role: EntityTypeName,
    group: EntityTypeName,
    key: EntityTypeName,
    service: EntityUid,
}

impl Types {
    fn new() -> Result<Self, PolicyError> {
        let name = |n: &str| {
            EntityTypeName::from_str(n).map_err(|e| PolicyError::Schema(format!("{n}: {e}")))
        };
        Ok(Types {
            user: name("Dkms::User")?,
            api_key: name("Dkms::ApiKey")?,
            role: name("Dkms::Role")?,
            group: name("Dkms::Group")?,
            key: name("Dkms::Key")?,
            service: EntityUid::from_type_name_and_id(
                name("Dkms::Service")?,
                EntityId::new(SERVICE_ID),
            ),
        })
    }
}

/// A validated policy set (built-in plus custom) ready to answer requests. Build one
/// whenever the stored policies change; it is immutable and can be shared across
/// threads behind an `Arc`.
pub struct PolicyStore {
    schema: &'static Schema,
    /// The policies whose action scope can match each action, indexed by
    /// `Action::index`. Cedar tries every policy of the set it is given; a policy whose
    /// scope excludes the action can never apply, so leaving it out changes no decision
    /// and cuts the work several times over.
    by_action: Vec<cedar_policy::PolicySet>,
    ids: Vec<String>,
    position: HashMap<String, usize>,
    obligations: HashMap<String, Vec<Obligation>>,
    forbids: HashSet<String>,
    authorizer: Authorizer,
    actions: Vec<EntityUid>,
    types: Types,
}

impl fmt::Debug for PolicyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyStore")
            .field("policies", &self.ids)
            .finish_non_exhaustive()
    }
}

impl PolicyStore {
    /// The default policies plus `custom` (Cedar text, every policy with an `@id`).
    pub fn new(custom: &str) -> Result<Self, PolicyError> {
        Self::from_texts(&[DEFAULT_POLICIES, custom])
    }

    /// Only `text`, without the built-in roles: for deployments that redefine them
    /// (start from a copy of [`DEFAULT_POLICIES`]).
    pub fn custom_only(text: &str) -> Result<Self, PolicyError> {
        Self::from_texts(&[text])
    }

    /// Parses and validates `text` as custom policies beside the defaults, as
    /// [`PolicyStore::new`] would, and returns their ids in text order. For the policy
    /// API: call it before storing a policy.
    pub fn validate(text: &str) -> Result<Vec<PolicyId>, PolicyError> {
        let schema = schema()?;
        let mut compiled = Compiled::default();
        compiled.add_text(DEFAULT_POLICIES)?;
        let ids = compiled.add_text(text)?;
        compiled.validate(schema)?;
        Ok(ids)
    }

    fn from_texts(texts: &[&str]) -> Result<Self, PolicyError> {
        let schema = schema()?;
        let mut compiled = Compiled::default();
        for text in texts {
            compiled.add_text(text)?;
        }
        compiled.validate(schema)?;
        let types = Types::new()?;
        let action_type = EntityTypeName::from_str("Dkms::Action")
            .map_err(|e| PolicyError::Schema(e.to_string()))?;
        let actions = Action::ALL
            .iter()
            .map(|a| {
                EntityUid::from_type_name_and_id(action_type.clone(), EntityId::new(a.as_str()))
            })
            .collect();
        let by_action = partition_by_action(&compiled.set)?;
        let position = compiled
            .ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), i))
            .collect();
        Ok(PolicyStore {
            schema,
            by_action,
            ids: compiled.ids,
            position,
            obligations: compiled.obligations,
            forbids: compiled.forbids,
            authorizer: Authorizer::new(),
            actions,
            types,
        })
    }

    /// Ids of all policies, built-in first, in text order.
    pub fn policy_ids(&self) -> &[String] {
        &self.ids
    }

    /// The obligations a policy carries (empty for a policy without any).
    pub fn obligations_of(&self, policy: &str) -> Option<&[Obligation]> {
        self.obligations.get(policy).map(Vec::as_slice)
    }

    /// Decides a request. Deny by default; a forbid beats any permit; a forbid that
    /// fails to evaluate denies too (fail closed), unlike plain Cedar, which skips
    /// policies that error. A request that does not fit its action is denied with the
    /// reason in `errors`.
    pub fn evaluate(&self, request: &Request) -> Decision {
        match self.try_evaluate(request) {
            Ok(d) => d,
            Err(e) => Decision::deny(e.to_string()),
        }
    }

    /// Like [`PolicyStore::evaluate`], but a malformed request is an error, not a deny.
    pub fn try_evaluate(&self, request: &Request) -> Result<Decision, RequestError> {
        let (cedar_request, entities) = self.to_cedar(request)?;
        let policies = self
            .by_action
            .get(request.action.index())
            .ok_or_else(|| RequestError::Cedar(format!("no policies for {}", request.action)))?;
        let response = self
            .authorizer
            .is_authorized(&cedar_request, policies, &entities);
        let diagnostics = response.diagnostics();

        let mut errors = Vec::new();
        let mut failed_forbids = Vec::new();
        for e in diagnostics.errors() {
            let cedar_policy::AuthorizationError::PolicyEvaluationError(pe) = e;
            let id: &str = pe.policy_id().as_ref();
            if self.forbids.contains(id) {
                failed_forbids.push(id.to_owned());
            }
            errors.push(e.to_string());
        }
        let mut determining: Vec<String> = diagnostics.reason().map(|p| p.to_string()).collect();
        let mut allowed = response.decision() == cedar_policy::Decision::Allow;
        if !failed_forbids.is_empty() {
            if allowed {
                errors.push(format!(
                    "denied because forbid policies failed to evaluate: {}",
                    failed_forbids.join(", ")
                ));
                determining.clear();
            }
            allowed = false;
            determining.extend(failed_forbids);
        }
        determining.sort_by_key(|id| self.position.get(id).copied().unwrap_or(usize::MAX));
        determining.dedup();

        let obligations = if allowed {
            determining
                .iter()
                .flat_map(|id| {
                    self.obligations
                        .get(id)
                        .into_iter()
                        .flatten()
                        .map(|o| PolicyObligation {
                            policy: id.clone(),
                            obligation: o.clone(),
                        })
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok(Decision {
            allowed,
            determining_policies: determining,
            errors,
            obligations,
        })
    }

    /// Builds the Cedar request (checked against the schema) and the entities.
    fn to_cedar(
        &self,
        request: &Request,
    ) -> Result<(cedar_policy::Request, Entities), RequestError> {
        let action = request.action;
        let principal = self.principal_entity(&request.principal)?;
        let principal_uid = principal.uid();
        let (resource_uid, resource) = match (action.resource_kind(), &request.resource) {
            (ResourceKind::Key, Some(key)) => {
                let e = self.key_entity(key)?;
                (e.uid(), Some(e))
            }
            (ResourceKind::Key, None) => {
                return Err(RequestError::MissingKey {
                    action: action.as_str(),
                });
            }
            (ResourceKind::Service, None) => (self.types.service.clone(), None),
            (ResourceKind::Service, Some(_)) => {
                return Err(RequestError::UnexpectedKey {
                    action: action.as_str(),
                });
            }
        };
        let context = build_context(action, &request.context)?;
        let action_uid = self
            .actions
            .get(action.index())
            .cloned()
            .ok_or_else(|| RequestError::Cedar(format!("no entity for action {action}")))?;
        let cedar_request = cedar_policy::Request::new(
            principal_uid,
            action_uid,
            resource_uid,
            context,
            Some(self.schema),
        )
        .map_err(|e| RequestError::Cedar(e.to_string()))?;
        let entities = Entities::from_entities(std::iter::once(principal).chain(resource), None)
            .map_err(|e| RequestError::Cedar(e.to_string()))?;
        Ok((cedar_request, entities))
    }

    fn principal_entity(&self, p: &Principal) -> Result<Entity, RequestError> {
        let ty = match p.kind {
            crate::PrincipalKind::User => &self.types.user,
            crate::PrincipalKind::ApiKey => &self.types.api_key,
        };
        let uid = EntityUid::from_type_name_and_id(ty.clone(), EntityId::new(&p.id));
        let parents = p
            .roles
            .iter()
            .map(|r| EntityUid::from_type_name_and_id(self.types.role.clone(), EntityId::new(r)))
            .chain(p.groups.iter().map(|g| {
                EntityUid::from_type_name_and_id(self.types.group.clone(), EntityId::new(g))
            }));
        let attrs = [
            ("roles".to_owned(), string_set(&p.roles)),
            ("groups".to_owned(), string_set(&p.groups)),
        ];
        Entity::new_with_tags(uid, attrs, parents, [])
            .map_err(|e| RequestError::Cedar(e.to_string()))
    }

    fn key_entity(&self, key: &KeyAttrs) -> Result<Entity, RequestError> {
        let uid = EntityUid::from_type_name_and_id(self.types.key.clone(), EntityId::new(&key.id));
        let labels = RestrictedExpression::new_set(
            key.labels
                .iter()
                .map(|(k, v)| RestrictedExpression::new_string(format!("{k}={v}"))),
        );
        let attrs = [
            ("labels".to_owned(), labels),
            ("group".to_owned(), string(&key.group)),
            ("keyType".to_owned(), string(&key.key_type)),
            (
                "exportable".to_owned(),
                RestrictedExpression::new_bool(key.exportable),
            ),
            ("creator".to_owned(), string(&key.creator)),
        ];
        let parents = (!key.group.is_empty()).then(|| {
            EntityUid::from_type_name_and_id(self.types.group.clone(), EntityId::new(&key.group))
        });
        let tags = key.labels.iter().map(|(k, v)| (k.clone(), string(v)));
        Entity::new_with_tags(uid, attrs, parents, tags)
            .map_err(|e| RequestError::Cedar(e.to_string()))
    }
}

/// Splits the set by the actions each policy's scope names (see `PolicyStore::by_action`).
/// A scope naming something that is not a known action (validation refuses that) puts
/// the policy in every set, so a forbid is never lost.
fn partition_by_action(
    set: &cedar_policy::PolicySet,
) -> Result<Vec<cedar_policy::PolicySet>, PolicyError> {
    let mut by_action: Vec<cedar_policy::PolicySet> = Action::ALL
        .iter()
        .map(|_| cedar_policy::PolicySet::new())
        .collect();
    let action_of = |uid: &EntityUid| Action::from_str(uid.id().unescaped()).ok();
    for policy in set.policies() {
        let named = match policy.action_constraint() {
            ActionConstraint::Any => None,
            ActionConstraint::Eq(uid) => action_of(&uid).map(|a| vec![a]),
            ActionConstraint::In(uids) => uids.iter().map(action_of).collect(),
        };
        let targets = named.unwrap_or_else(|| Action::ALL.to_vec());
        for action in targets {
            if let Some(actions_set) = by_action.get_mut(action.index()) {
                actions_set
                    .add(policy.clone())
                    .map_err(|_| PolicyError::DuplicateId {
                        id: policy.id().to_string(),
                    })?;
            }
        }
    }
    Ok(by_action)
}

fn string(s: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(s.to_owned())
}

fn string_set(items: &[String]) -> RestrictedExpression {
    RestrictedExpression::new_set(items.iter().map(|s| string(s)))
}

fn long(field: &'static str, value: u64) -> Result<RestrictedExpression, RequestError> {
    i64::try_from(value)
        .map(RestrictedExpression::new_long)
        .map_err(|_| RequestError::OutOfRange {
            field,
            value: value.to_string(),
        })
}

/// The context record of the action's schema type (`Env`, `SignEnv` or `SignTxEnv`).
fn build_context(action: Action, ctx: &RequestContext) -> Result<Context, RequestError> {
    let name = action.as_str();
    let (hour, weekday) = utc_hour_and_weekday(ctx.now);
    let mut pairs: Vec<(String, RestrictedExpression)> = vec![
        ("now".into(), RestrictedExpression::new_long(ctx.now)),
        ("hourOfDay".into(), RestrictedExpression::new_long(hour)),
        ("dayOfWeek".into(), RestrictedExpression::new_long(weekday)),
        (
            "clientIp".into(),
            RestrictedExpression::new_ip(canonical_ip(ctx.client_ip).to_string()),
        ),
    ];
    let wants_sign = matches!(action, Action::Sign | Action::SignTx);
    match (&ctx.sign, wants_sign) {
        (Some(sign), true) => {
            pairs.push(("digest".into(), string(&hex::encode(&sign.digest))));
            pairs.push(("derivationPath".into(), string(&sign.derivation_path)));
        }
        (None, true) => return Err(RequestError::MissingSignDetails { action: name }),
        (Some(_), false) => return Err(RequestError::UnexpectedSignDetails { action: name }),
        (None, false) => {}
    }
    match (&ctx.tx, action == Action::SignTx) {
        (Some(tx), true) => {
            let to = tx
                .to
                .map(|a| format!("0x{}", hex::encode(a)))
                .unwrap_or_default();
            let selector = tx
                .selector
                .map(|s| format!("0x{}", hex::encode(s)))
                .unwrap_or_default();
            pairs.push(("chainId".into(), long("chainId", tx.chain_id)?));
            pairs.push(("to".into(), string(&to)));
            pairs.push(("valueWei".into(), string(&tx.value_wei.to_string())));
            pairs.push((
                "valueGwei".into(),
                RestrictedExpression::new_long(wei_to_gwei_ceil(tx.value_wei)),
            ));
            pairs.push(("selector".into(), string(&selector)));
            pairs.push(("gasLimit".into(), long("gasLimit", tx.gas_limit)?));
        }
        (None, true) => return Err(RequestError::MissingTxDetails),
        (Some(_), false) => return Err(RequestError::UnexpectedTxDetails { action: name }),
        (None, false) => {}
    }
    Context::from_pairs(pairs).map_err(|e| RequestError::Cedar(e.to_string()))
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
