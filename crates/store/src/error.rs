//! The store's errors. `Unavailable` is the transient one: callers retry it.

use std::io;

use crate::records::Kind;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{kind} {name} already exists")]
    AlreadyExists { kind: Kind, name: String },
    #[error("{kind} {name} does not exist")]
    NotFound { kind: Kind, name: String },
    #[error("{kind} {name} changed (revision {actual:?}, expected {expected})")]
    Conflict {
        kind: Kind,
        name: String,
        expected: u64,
        actual: Option<u64>,
    },
    #[error("{name:?} is not a valid object name: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("{what} holds something unreadable: {reason}")]
    Corrupt { what: String, reason: String },
    #[error("the cluster store refused {kind} {name}: {reason}")]
    Rejected {
        kind: Kind,
        name: String,
        reason: String,
    },
    #[error("the cluster store is unavailable: {0}")]
    Unavailable(String),
    #[error("the cluster store denied straitd access: {0}")]
    Denied(String),
    #[error("the cluster store: {0}")]
    Io(#[from] io::Error),
}
