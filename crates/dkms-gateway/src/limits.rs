//! Rate and spend limits that policies attach to the requests they allow
//! (`@rate_limit`, `@spend_limit_wei`, `@limit_per`). Each limit is a counter per window
//! bucket in the store, consumed atomically when a signing is admitted, so concurrent
//! requests on any number of gateways never overshoot. A signing that ends FAILED or
//! REJECTED gives its claims back; one that finishes keeps them.

use crate::AppState;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use dkms_policy::{Decision, LimitScope, Obligation};
use dkms_proto::ErrorCode;
use serde::{Deserialize, Serialize};

/// One unit of a counter that a request took, kept with the task to give back.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claim {
    pub scope: String,
    pub bucket: i64,
    /// Decimal (wei amounts exceed what JSON numbers carry exactly).
    pub amount: String,
}

/// Whose usage a counter holds: `rate|<policy>|key:<id>`, `spend|<policy>|apiKey:<id>`, …
fn scope(kind: &str, policy: &str, per: LimitScope, key_id: &str, principal: &str) -> String {
    match per {
        LimitScope::Key => format!("{kind}|{policy}|key:{key_id}"),
        LimitScope::Principal => format!("{kind}|{policy}|{principal}"),
        LimitScope::KeyAndPrincipal => format!("{kind}|{policy}|key:{key_id}|{principal}"),
    }
}

/// Takes what the decision's limits ask of this request (one signing; `value_wei` of a
/// transaction). All or nothing: when one limit is used up, the claims already taken
/// are given back and the answer is `RATE_LIMITED`, naming the policy and the limit.
pub async fn consume(
    state: &AppState,
    principal: &Principal,
    key_id: &str,
    decision: &Decision,
    value_wei: Option<u128>,
) -> ApiResult<Vec<Claim>> {
    let now_secs = state.clock.now_ms().div_euclid(1000);
    let who = principal.label();
    let mut taken: Vec<Claim> = Vec::new();
    for o in &decision.obligations {
        let (kind, amount, max, window, per) = match o.obligation {
            Obligation::RateLimit { max, window, per } => {
                ("rate", 1u128, u128::from(max), window, per)
            }
            Obligation::SpendLimit {
                max_wei,
                window,
                per,
            } => match value_wei {
                Some(v) if v > 0 => ("spend", v, max_wei, window, per),
                _ => continue,
            },
            Obligation::RequireApprovals { .. } => continue,
        };
        let claim = Claim {
            scope: scope(kind, &o.policy, per, key_id, &who),
            bucket: window.bucket_start(now_secs),
            amount: amount.to_string(),
        };
        let ok = match state
            .store
            .consume_quota(&claim.scope, claim.bucket, amount, max)
            .await
        {
            Ok(ok) => ok,
            Err(e) => {
                refund_claims_list(state, &taken).await;
                return Err(e.into());
            }
        };
        if !ok {
            refund_claims_list(state, &taken).await;
            let whose = match per {
                LimitScope::Key => format!("key {key_id}"),
                LimitScope::Principal => principal.display_name(),
                LimitScope::KeyAndPrincipal => {
                    format!("{} on key {key_id}", principal.display_name())
                }
            };
            let next = claim
                .bucket
                .saturating_add(i64::try_from(window.secs()).unwrap_or(i64::MAX));
            let what = if kind == "rate" {
                format!("its limit of {max} signings per {window}")
            } else {
                format!("its limit of {max} wei per {window} (this transaction moves {amount} wei)")
            };
            let mut e = ApiError::new(
                ErrorCode::RateLimited,
                format!(
                    "policy {} allows {whose} {what}, and that is used up until {}",
                    o.policy,
                    crate::api::rfc3339(next.saturating_mul(1000))
                ),
            );
            e.retry_after = u64::try_from(next - now_secs).ok();
            return Err(e);
        }
        taken.push(claim);
    }
    Ok(taken)
}

/// Gives back claims taken by [`consume`].
pub async fn refund_claims_list(state: &AppState, claims: &[Claim]) {
    for c in claims {
        let Ok(amount) = c.amount.parse::<u128>() else {
            continue;
        };
        if let Err(e) = state.store.refund_quota(&c.scope, c.bucket, amount).await {
            tracing::warn!(error = %e, scope = %c.scope, "could not give back a limit claim");
        }
    }
}

/// Gives back what a task claimed. Callers call it once, after the conditional update
/// that moved the task to FAILED or REJECTED succeeded.
pub async fn refund_claims(state: &AppState, instance_id: &str) {
    let extras = match state.store.get_sign_extras(instance_id).await {
        Ok(Some(e)) => e,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(error = %e, "could not read a task's limit claims");
            return;
        }
    };
    match serde_json::from_str::<Vec<Claim>>(&extras.quota_claims) {
        Ok(claims) => refund_claims_list(state, &claims).await,
        Err(e) => tracing::warn!(error = %e, "a task's limit claims are malformed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_separate_kinds_policies_and_whose() {
        let k = scope("rate", "p1", LimitScope::Key, "k1", "user:a");
        assert_eq!(k, "rate|p1|key:k1");
        assert_eq!(
            scope("rate", "p1", LimitScope::Principal, "k1", "user:a"),
            "rate|p1|user:a"
        );
        assert_eq!(
            scope("spend", "p1", LimitScope::KeyAndPrincipal, "k1", "apiKey:x"),
            "spend|p1|key:k1|apiKey:x"
        );
        assert_ne!(k, scope("spend", "p1", LimitScope::Key, "k1", "user:a"));
        assert_ne!(k, scope("rate", "p2", LimitScope::Key, "k1", "user:a"));
    }
}
