//! Cluster state: the [`Store`] interface every backend implements (get, list, create-if-absent,
//! update-if-revision, delete), the typed records kept in it, and the embedded backend for a
//! single machine. Records are plain JSON values at the interface; [`typed`] adds the types.

#[cfg(any(test, feature = "contract"))]
pub mod contract;
mod embedded;
mod error;
pub mod file;
mod records;
pub mod typed;

use std::future::Future;

pub use embedded::EmbeddedStore;
pub use error::StoreError;
pub use records::{BlockRecord, Kind, PoolRecord, Record, validate_name};

/// A value as stored, with the store-wide revision of its last change.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    pub name: String,
    pub revision: u64,
    pub value: T,
}

/// The operations every cluster-store backend provides. Writes are atomic per object:
/// [`Store::create`] fails if the name exists, [`Store::update`] and [`Store::delete`] fail if the
/// object changed since `revision`. That is all IPAM needs to never hand out a block twice.
pub trait Store: Send + Sync {
    fn get(
        &self,
        kind: Kind,
        name: &str,
    ) -> impl Future<Output = Result<Option<Versioned<serde_json::Value>>, StoreError>> + Send;

    fn list(
        &self,
        kind: Kind,
    ) -> impl Future<Output = Result<Vec<Versioned<serde_json::Value>>, StoreError>> + Send;

    /// Creates `name`; [`StoreError::AlreadyExists`] if it exists. Returns the new revision.
    fn create(
        &self,
        kind: Kind,
        name: &str,
        value: serde_json::Value,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Replaces `name` if its revision is still `revision`; [`StoreError::Conflict`] otherwise.
    fn update(
        &self,
        kind: Kind,
        name: &str,
        value: serde_json::Value,
        revision: u64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Deletes `name` (if its revision is still `revision`, when given). Deleting what is not
    /// there is [`StoreError::NotFound`].
    fn delete(
        &self,
        kind: Kind,
        name: &str,
        revision: Option<u64>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}
