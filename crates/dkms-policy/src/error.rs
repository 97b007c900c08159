//! Typed errors. Policy errors name the policy and say what is wrong, because an admin
//! reads them when a policy is refused; request errors mean the gateway built a request
//! that does not fit the action, which is a bug in the caller.

use std::fmt;

/// A policy text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The text is not Cedar. Line and column are 1-based, in the submitted text.
    #[error("syntax error at line {line}, column {column}: {message}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    /// A policy lacks `@id("...")`. `index` counts policies in the text from 1.
    #[error(
        "policy #{index} (`{excerpt}`) has no @id(\"...\") annotation; every policy needs a unique id"
    )]
    MissingId { index: usize, excerpt: String },
    /// The `@id` is empty, too long or has characters outside `[A-Za-z0-9._:-]`.
    #[error("policy id {id:?} is not valid: use 1 to 128 letters, digits, '.', '_', ':' or '-'")]
    BadId { id: String },
    /// Two policies (possibly one custom and one built-in) share an id.
    #[error("policy id {id:?} is used more than once (built-in ids: role-*, key-not-exportable)")]
    DuplicateId { id: String },
    /// The text holds a template (`?principal` / `?resource`); the store takes only
    /// static policies.
    #[error("policy {id:?} is a template (it uses ?principal or ?resource); write a static policy")]
    Template { id: String },
    /// An annotation is unknown or its value is malformed.
    #[error("policy {policy:?}: bad @{annotation}(\"{value}\"): {reason}")]
    Annotation {
        policy: String,
        annotation: String,
        value: String,
        reason: String,
    },
    /// A permit with approvals or limits whose scope reaches beyond signing: the gateway
    /// enforces them only on `sign` and `signTx`, so elsewhere they would be empty words.
    #[error(
        "policy {policy:?}: approvals and limits apply only to signing; scope it with \
         `action == Dkms::Action::\"sign\"`, `action == Dkms::Action::\"signTx\"` or \
         `action in [Dkms::Action::\"sign\", Dkms::Action::\"signTx\"]`"
    )]
    ObligationScope { policy: String },
    /// The policies parse but do not fit the schema (strict validation).
    #[error("{}", Issues(.issues))]
    Invalid { issues: Vec<ValidationIssue> },
    /// The schema embedded in the crate does not parse: a bug in this crate.
    #[error("the built-in schema is invalid: {0}")]
    Schema(String),
}

/// One problem the schema validator found in one policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationIssue {
    pub policy: String,
    pub message: String,
}

impl fmt::Display for ValidationIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "policy {:?}: {}", self.policy, self.message)
    }
}

/// The message shows this many issues; `PolicyError::Invalid::issues` has them all. An
/// attribute missing from the context of 17 actions is one mistake, not 17.
const SHOWN_ISSUES: usize = 5;

struct Issues<'a>(&'a [ValidationIssue]);

impl fmt::Display for Issues<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("policy does not match the schema: ")?;
        for (i, issue) in self.0.iter().take(SHOWN_ISSUES).enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{issue}")?;
        }
        if self.0.len() > SHOWN_ISSUES {
            write!(f, "; and {} more", self.0.len() - SHOWN_ISSUES)?;
        }
        Ok(())
    }
}

/// A request that does not fit its action; [`crate::PolicyStore::evaluate`] denies it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("action {action} acts on a key but the request names none")]
    MissingKey { action: &'static str },
    #[error("action {action} acts on the service, not on a key, but the request names a key")]
    UnexpectedKey { action: &'static str },
    #[error("action {action} needs signing details (digest, derivation path)")]
    MissingSignDetails { action: &'static str },
    #[error("action {action} takes no signing details")]
    UnexpectedSignDetails { action: &'static str },
    #[error("action signTx needs the decoded transaction")]
    MissingTxDetails,
    #[error("action {action} takes no transaction details")]
    UnexpectedTxDetails { action: &'static str },
    #[error("{field} = {value} does not fit a Cedar Long (i64)")]
    OutOfRange { field: &'static str, value: String },
    /// Cedar refused the entities or the context: a mismatch between this crate's
    /// conversion and the schema, i.e. a bug here.
    #[error("could not build the Cedar request: {0}")]
    Cedar(String),
}
