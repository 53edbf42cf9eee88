//! Definitions in RabbitMQ's JSON format: exporting what the broker holds
//! and importing a document, whole broker or one vhost.
//!
//! | file | owns |
//! |---|---|
//! | `export` | the broker's state as a document, with RabbitMQ's field names and types |
//! | `parse` | a document's shape: every field's type, read into a [`Plan`](parse::Plan) with each item's location |
//! | `check` | the plan against itself and the broker: patterns, hashes, policies, exchange types, queue arguments, bindings' ends, conflicts with what exists |
//! | `import` | the import itself: parse, check, then apply in RabbitMQ's order |
//!
//! An import is all-or-nothing: nothing changes until the whole document
//! has been parsed and checked, and the first fault is reported with its
//! location (`queues[3].arguments`). Imports run one at a time; a client
//! that changes the topology between the check and the apply (declaring an
//! inequivalent queue of the same name, say) can still make the apply stop
//! part-way, which is reported like any fault.

mod check;
mod export;
mod import;
mod parse;

use serde::Serialize;

/// What kind of fault stopped an import, for the HTTP status it maps to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub enum DefinitionsErrorKind {
    /// The document is malformed or asks for something invalid (400).
    Invalid,
    /// It contradicts what the broker holds: an inequivalent queue or
    /// exchange of the same name (400, as RabbitMQ's 406 on a declare).
    Conflict,
    /// The vhost a per-vhost import names does not exist (404).
    NotFound,
    /// The broker could not carry it out, e.g. a storage failure (500).
    Internal,
}

/// Why a definitions document was refused: where in it (`users[0].password_hash`,
/// `queues[3]`), and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {reason}")]
pub struct DefinitionsError {
    pub location: String,
    pub reason: String,
    pub kind: DefinitionsErrorKind,
}

impl DefinitionsError {
    pub(crate) fn invalid(location: impl Into<String>, reason: impl Into<String>) -> Self {
        DefinitionsError {
            location: location.into(),
            reason: reason.into(),
            kind: DefinitionsErrorKind::Invalid,
        }
    }

    pub(crate) fn conflict(location: impl Into<String>, reason: impl Into<String>) -> Self {
        DefinitionsError {
            location: location.into(),
            reason: reason.into(),
            kind: DefinitionsErrorKind::Conflict,
        }
    }

    pub(crate) fn internal(location: impl Into<String>, reason: impl Into<String>) -> Self {
        DefinitionsError {
            location: location.into(),
            reason: reason.into(),
            kind: DefinitionsErrorKind::Internal,
        }
    }
}

/// What an import did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ImportSummary {
    /// Entities created or updated, per section.
    pub vhosts: usize,
    pub users: usize,
    pub permissions: usize,
    pub topic_permissions: usize,
    pub vhost_limits: usize,
    pub parameters: usize,
    pub global_parameters: usize,
    pub policies: usize,
    pub operator_policies: usize,
    pub exchanges: usize,
    pub queues: usize,
    pub bindings: usize,
    /// Exchanges, queues and bindings that already existed, equivalent,
    /// and were left as they are.
    pub unchanged: usize,
    /// Items passed over, each with its location and why (names starting
    /// with `amq.`, which RabbitMQ skips too).
    pub skipped: Vec<String>,
}
