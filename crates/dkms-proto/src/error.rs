//! Stable error codes of the public API (API.md, "Envelope").

use serde::{Deserialize, Serialize};

/// A stable, machine-readable error code. Clients match on these strings, so a variant's
/// spelling never changes once released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    InvalidParameter,
    Unauthenticated,
    Forbidden,
    PolicyDenied,
    KeyNotFound,
    TaskNotFound,
    NodeNotFound,
    NodeUnavailable,
    /// No node group by that name.
    GroupNotFound,
    NotFound,
    MethodNotAllowed,
    Conflict,
    KeyNotReady,
    KeyDisabled,
    ProtocolFailed,
    Timeout,
    Overloaded,
    /// The gateway that ran a task stopped (its heartbeat lapsed) before the task ended.
    /// Only ever the error of a FAILED task; the request can be sent again.
    GatewayLost,
    /// A policy's rate or spend limit is used up for the current window.
    RateLimited,
    /// No such user, API key or policy.
    PrincipalNotFound,
    PolicyNotFound,
    Internal,
}

impl ErrorCode {
    /// The HTTP status that goes with the code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidParameter => 400,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::Forbidden | ErrorCode::PolicyDenied => 403,
            ErrorCode::KeyNotFound
            | ErrorCode::TaskNotFound
            | ErrorCode::NodeNotFound
            | ErrorCode::GroupNotFound
            | ErrorCode::NotFound => 404,
            ErrorCode::PrincipalNotFound | ErrorCode::PolicyNotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::RateLimited => 429,
            ErrorCode::Conflict | ErrorCode::KeyNotReady | ErrorCode::KeyDisabled => 409,
            ErrorCode::NodeUnavailable | ErrorCode::Overloaded | ErrorCode::GatewayLost => 503,
            ErrorCode::Timeout => 504,
            ErrorCode::ProtocolFailed | ErrorCode::Internal => 500,
        }
    }

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidParameter => "INVALID_PARAMETER",
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::PolicyDenied => "POLICY_DENIED",
            ErrorCode::KeyNotFound => "KEY_NOT_FOUND",
            ErrorCode::TaskNotFound => "TASK_NOT_FOUND",
            ErrorCode::NodeNotFound => "NODE_NOT_FOUND",
            ErrorCode::NodeUnavailable => "NODE_UNAVAILABLE",
            ErrorCode::GroupNotFound => "GROUP_NOT_FOUND",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::KeyNotReady => "KEY_NOT_READY",
            ErrorCode::KeyDisabled => "KEY_DISABLED",
            ErrorCode::ProtocolFailed => "PROTOCOL_FAILED",
            ErrorCode::Timeout => "TIMEOUT",
            ErrorCode::Overloaded => "OVERLOADED",
            ErrorCode::GatewayLost => "GATEWAY_LOST",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::PrincipalNotFound => "PRINCIPAL_NOT_FOUND",
            ErrorCode::PolicyNotFound => "POLICY_NOT_FOUND",
            ErrorCode::Internal => "INTERNAL",
        }
    }

    /// Parses the wire spelling back; unknown codes give `None`.
    pub fn parse(s: &str) -> Option<ErrorCode> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_spelling_round_trips() {
        for code in [
            ErrorCode::InvalidParameter,
            ErrorCode::NodeUnavailable,
            ErrorCode::KeyNotFound,
            ErrorCode::RateLimited,
            ErrorCode::GatewayLost,
            ErrorCode::PrincipalNotFound,
            ErrorCode::PolicyNotFound,
            ErrorCode::Internal,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        }
        assert_eq!(ErrorCode::parse("NOPE"), None);
    }
}
