//! Authorization and audit of API requests. Every authenticated request is decided by
//! the Cedar policy set (`dkms-policy`: the built-in roles plus the policies stored
//! through the policy API), and every decision that denies, changes state or uses a key
//! becomes an entry of the hash-chained audit log (`dkms-audit`).
//!
//! Which action a route is, and whether it applies to the service or to one key, is
//! fixed in the route table (`api::routes`); a key route's handler loads the key and
//! calls [`Principal::authorize_key`], which takes the action from the route, so a
//! handler cannot ask about the wrong action. A key route that answers 2xx without
//! having been authorized is turned into an error by the middleware (fail closed).

use crate::AppState;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use dkms_policy::{Action, Decision, KeyAttrs, PolicyStore, Request, RequestContext};
use dkms_proto::ErrorCode;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a gateway trusts its compiled policy set before asking the store whether
/// another gateway changed it. Changes made through this gateway apply at once.
const POLICY_RECHECK: Duration = Duration::from_secs(1);

/// The compiled policy set, rebuilt when the stored policies change.
#[derive(Default)]
pub struct Policies {
    cached: Mutex<Option<Cached>>,
}

struct Cached {
    epoch: i64,
    checked: Instant,
    set: Arc<PolicyStore>,
}

impl Policies {
    /// The current set: the built-in roles and every live stored policy.
    pub async fn current(&self, store: &dkms_store::Store) -> ApiResult<Arc<PolicyStore>> {
        if let Some(set) = self.fresh(None) {
            return Ok(set);
        }
        let epoch = store.policy_epoch().await?;
        if let Some(set) = self.fresh(Some(epoch)) {
            return Ok(set);
        }
        let rows = store.current_policies().await?;
        let set = match PolicyStore::new(&joined(&rows)) {
            Ok(set) => set,
            Err(e) => {
                // Policies are validated when written, so this means a stored set that a
                // newer engine no longer accepts. Failing closed must not lock out the
                // people who can fix it: only the admin grant stays.
                tracing::error!(error = %e, "the stored policy set does not compile; only admins are allowed until it is fixed");
                PolicyStore::custom_only(ADMIN_ONLY).map_err(ApiError::internal)?
            }
        };
        let set = Arc::new(set);
        if let Ok(mut c) = self.cached.lock() {
            *c = Some(Cached {
                epoch,
                checked: Instant::now(),
                set: set.clone(),
            });
        }
        Ok(set)
    }

    /// The cached set if it is recent (`epoch` None) or still of `epoch`.
    fn fresh(&self, epoch: Option<i64>) -> Option<Arc<PolicyStore>> {
        let mut c = self.cached.lock().ok()?;
        let cached = c.as_mut()?;
        match epoch {
            None if cached.checked.elapsed() < POLICY_RECHECK => Some(cached.set.clone()),
            Some(e) if e == cached.epoch => {
                cached.checked = Instant::now();
                Some(cached.set.clone())
            }
            _ => None,
        }
    }

    /// Forgets the compiled set after this gateway wrote a policy.
    pub fn invalidate(&self) {
        if let Ok(mut c) = self.cached.lock() {
            *c = None;
        }
    }
}

/// The admin grant alone, used when the stored set does not compile.
const ADMIN_ONLY: &str = r#"@id("role-admin")
permit (principal in Dkms::Role::"admin", action, resource);"#;

/// The stored policies as one text, in name order (the order `current_policies` gives).
pub fn joined(rows: &[dkms_store::PolicyRow]) -> String {
    rows.iter()
        .map(|r| r.text.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

/// What a request did, filled in while it runs and written to the audit log when it
/// ends (by the authentication middleware).
#[derive(Debug, Default)]
pub struct AuditDraft {
    /// The key the request was about, once known.
    pub key_id: Option<String>,
    /// Allowed or not, and by which policies.
    pub decision: Option<(bool, Vec<String>)>,
    /// Non-secret facts worth keeping: the task id created, the digest signed, …
    pub details: BTreeMap<String, String>,
}

/// Shared between the middleware and the handler of one request.
#[derive(Debug, Clone, Default)]
pub struct AuditSlot(Arc<Mutex<AuditDraft>>);

impl AuditSlot {
    pub fn with<R>(&self, f: impl FnOnce(&mut AuditDraft) -> R) -> Option<R> {
        self.0.lock().ok().map(|mut d| f(&mut d))
    }

    pub fn take(&self) -> AuditDraft {
        self.with(std::mem::take).unwrap_or_default()
    }
}

/// What a route needs before its handler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No bearer token (health, the OpenAPI document, login, the node link with its
    /// in-band proof).
    Public,
    /// Any valid token; no policy (logout, "who am I").
    Authenticated,
    /// An action on the service as a whole, decided before the handler runs.
    Service(Action),
    /// An action on one key, decided by the handler once it has loaded the key.
    Key(Action),
}

impl Principal {
    /// Decides the route's key action on `key`; `context` adds what is being signed.
    /// Denied: a `POLICY_DENIED` error naming the policies that denied.
    pub async fn authorize_key(
        &self,
        state: &AppState,
        key: KeyAttrs,
        context: impl FnOnce(&mut RequestContext),
    ) -> ApiResult<Decision> {
        let Access::Key(action) = self.access else {
            return Err(ApiError::internal(format!(
                "authorize_key called on a route whose access is {:?}",
                self.access
            )));
        };
        self.audit.with(|d| d.key_id = Some(key.id.clone()));
        self.decide(state, action, Some(key), context).await
    }

    /// Decides `action` on the service (the middleware does this for service routes).
    pub async fn authorize_service(&self, state: &AppState, action: Action) -> ApiResult<Decision> {
        self.decide(state, action, None, |_| {}).await
    }

    async fn decide(
        &self,
        state: &AppState,
        action: Action,
        resource: Option<KeyAttrs>,
        context: impl FnOnce(&mut RequestContext),
    ) -> ApiResult<Decision> {
        let set = state.policies.current(&state.store).await?;
        let mut ctx = RequestContext::new(state.clock.now_ms().div_euclid(1000), self.client_ip);
        context(&mut ctx);
        let target = match &resource {
            Some(k) => format!("key {}", k.id),
            None => "the service".to_owned(),
        };
        let request = Request {
            principal: self.policy_principal(),
            action,
            resource,
            context: ctx,
        };
        let decision = set.evaluate(&request);
        for e in &decision.errors {
            tracing::warn!(error = %e, action = %action, "policy evaluation problem");
        }
        // Approvals and limits are enforced on signings only; a policy that attaches them
        // to another action must not be taken as a plain grant.
        let unenforceable =
            !matches!(action, Action::Sign | Action::SignTx) && !decision.obligations.is_empty();
        self.audit.with(|d| {
            d.decision = Some((
                decision.allowed && !unenforceable,
                decision.determining_policies.clone(),
            ));
        });
        if decision.allowed && unenforceable {
            return Err(ApiError::new(
                ErrorCode::PolicyDenied,
                format!(
                    "policy {} attaches approvals or limits to {action}, which only sign and signTx support; the request is refused until the policy is fixed",
                    decision.determining_policies.join(", ")
                ),
            ));
        }
        if decision.allowed {
            return Ok(decision);
        }
        let message = if decision.determining_policies.is_empty() {
            format!(
                "no policy permits {} to {action} {target}",
                self.display_name()
            )
        } else {
            format!(
                "{} may not {action} {target}: denied by policy {}",
                self.display_name(),
                decision.determining_policies.join(", ")
            )
        };
        Err(ApiError::new(ErrorCode::PolicyDenied, message))
    }
}

/// The policy view of a stored key.
pub async fn key_attrs(state: &AppState, key: &dkms_store::KeyRow) -> ApiResult<KeyAttrs> {
    Ok(KeyAttrs {
        id: key.key_id.clone(),
        labels: state.store.get_labels(&key.key_id).await?,
        group: key.node_group.clone().unwrap_or_default(),
        key_type: key.key_type.clone(),
        exportable: key.exportable,
        creator: key.created_by.clone(),
    })
}

/// One audit entry as the gateway writes it: after a request (the guard, login) or at
/// the end of a task (the gateway itself). [`record`] stamps the time and appends it.
pub struct Entry<'a> {
    pub request_id: &'a str,
    pub principal: dkms_audit::Principal,
    pub action: &'a str,
    pub key_id: Option<&'a str>,
    pub allowed: bool,
    pub policies: Vec<String>,
    pub outcome: &'a str,
    pub details: Vec<(String, String)>,
}

/// Writes an audit entry; a failure is logged (the request already happened).
pub async fn record(state: &AppState, e: Entry<'_>) {
    let mut details = dkms_audit::Details::new();
    for (k, v) in e.details {
        if let Err(err) = details.insert(k, v) {
            tracing::error!(error = %err, "an audit detail was refused");
        }
    }
    let time = match dkms_audit::Timestamp::from_unix_millis(state.clock.now_ms()) {
        Ok(t) => t,
        Err(err) => {
            tracing::error!(error = %err, "the clock is out of the audit log's range");
            return;
        }
    };
    let record = dkms_audit::AuditRecord {
        time,
        request_id: e.request_id.to_owned(),
        principal: e.principal,
        action: e.action.to_owned(),
        resource: e.key_id.map(dkms_audit::key_resource),
        decision: if e.allowed {
            dkms_audit::Decision::Allow
        } else {
            dkms_audit::Decision::Deny
        },
        policies: e.policies,
        outcome: e.outcome.to_owned(),
        details,
    };
    if let Err(err) = state.store.append_audit(&record).await {
        tracing::error!(error = %err, action = %record.action, "could not write the audit entry");
    }
}

/// Records a task's end in the audit log, as the gateway itself.
pub async fn task_outcome(
    state: &AppState,
    action: &str,
    key_id: &str,
    instance_id: &str,
    outcome: &str,
) {
    let entry = Entry {
        request_id: "",
        principal: dkms_audit::Principal::new(dkms_audit::PrincipalKind::System, "gateway"),
        action,
        key_id: Some(key_id),
        allowed: true,
        policies: Vec::new(),
        outcome,
        details: vec![("instanceId".into(), instance_id.into())],
    };
    record(state, entry).await;
}
