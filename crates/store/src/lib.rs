//! Cluster state: the [`Store`] interface every backend implements (get, list, create-if-absent,
//! update-if-revision, delete, live records, watch), the typed records kept in it, and the
//! embedded backend for a single machine. Records are plain JSON values at the interface;
//! [`typed`] adds the types.

#[cfg(any(test, feature = "contract"))]
pub mod contract;
mod embedded;
mod error;
mod etcd;
pub mod file;
mod kube;
mod records;
pub mod typed;

use std::future::Future;

pub use embedded::EmbeddedStore;
pub use error::StoreError;
pub use etcd::{EtcdStore, key as etcd_key};
pub use kube::{GROUP as KUBE_GROUP, KubeStore, VERSION as KUBE_VERSION};
pub use records::{BlockRecord, Kind, NodeRecord, PoolRecord, Record, Vtep, validate_name};

/// A value as stored, with the store-wide revision of its last change.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    pub name: String,
    pub revision: u64,
    pub value: T,
}

/// What a watch reports, informer-style: first (and after any gap the backend could not bridge)
/// a `Reset` with everything of the kind, then each change.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent {
    Reset(Vec<Versioned<serde_json::Value>>),
    Put(Versioned<serde_json::Value>),
    Delete(String),
}

/// The receiving end of a watch. The backend reconnects by itself; the watch ends when this is
/// dropped.
pub type Watch = tokio::sync::mpsc::Receiver<WatchEvent>;

/// The operations every cluster-store backend provides. Writes are atomic per object:
/// [`Store::create`] fails if the name exists, [`Store::update`] and [`Store::delete`] fail if the
/// object changed since `revision`. That is all IPAM needs to never hand out a block twice.
pub trait Store: Clone + Send + Sync + 'static {
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

    /// Writes `name` (creating or replacing it) for as long as this store handle lives: etcd
    /// binds it to a lease the handle keeps alive, so it vanishes some seconds after the agent
    /// dies; the embedded store keeps it until it is deleted.
    fn put_live(
        &self,
        kind: Kind,
        name: &str,
        value: serde_json::Value,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Watches every object of `kind`.
    fn watch(&self, kind: Kind) -> impl Future<Output = Result<Watch, StoreError>> + Send;

    /// Deletes `name` (if its revision is still `revision`, when given). Deleting what is not
    /// there is [`StoreError::NotFound`].
    fn delete(
        &self,
        kind: Kind,
        name: &str,
        revision: Option<u64>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}
