//! This node's membership in the cluster, one service: its record in the cluster store (what
//! its peers read: addresses and VTEPs), the cluster as the watches last saw it, the pods the
//! Kubernetes API binds to it, and whether it still takes pods or has left. Keeping the record
//! while the agent runs is [`crate::presence`]; taking back the blocks of nodes that are gone,
//! [`crate::reclaim`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use strait_dataplane::overlay::ClusterView;
use strait_store::{Kind, NodeRecord, Store, StoreError};
use tokio::sync::{Notify, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::cluster::{ClusterCache, spawn_watches};
use crate::error::AgentError;
use crate::pods::Pods;
use crate::tasks::Tasks;
use crate::wake::Wake;

#[derive(Debug)]
pub struct Membership<S> {
    store: S,
    node: String,
    /// What this node announces.
    record: NodeRecord,
    cluster: Arc<ClusterCache>,
    /// The pods on this node, when the cluster is Kubernetes.
    pods: Option<Arc<Pods>>,
    /// Signalled by the reconciler when this node's record is missing from the cluster view.
    record_missing: RecordMissing,
    /// Set once the node has left the cluster: the reconciler stops, the agent exits.
    left: Left,
    /// Held (shared) by every ADD; leaving holds it alone, so no ADD runs while the node leaves
    /// and none after.
    admission: RwLock<()>,
}

impl<S: Store> Membership<S> {
    pub fn new(store: S, node: &str, record: NodeRecord) -> Membership<S> {
        Membership {
            store,
            node: node.to_string(),
            record,
            cluster: Arc::default(),
            pods: None,
            record_missing: RecordMissing::default(),
            left: Left::default(),
            admission: RwLock::default(),
        }
    }

    /// Writes this node's record for its peers; it lives as long as the agent.
    pub async fn announce(&self) -> Result<(), StoreError> {
        let value = serde_json::to_value(&self.record).expect("records serialize");
        self.store.put_live(Kind::Node, &self.node, value).await?;
        Ok(())
    }

    /// Deletes this node's record (gone already is fine).
    pub async fn withdraw(&self) -> Result<(), StoreError> {
        match self.store.delete(Kind::Node, &self.node, None).await {
            Ok(()) | Err(StoreError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// The cluster as last seen, kept current by the watches.
    pub fn cluster(&self) -> &Arc<ClusterCache> {
        &self.cluster
    }

    /// Keeps the cluster view current from the store's watches, waking `wake` on changes.
    pub fn watch(&self, tasks: &Arc<Tasks>, wake: &Arc<Wake>) {
        spawn_watches(tasks, &self.store, &self.cluster, wake);
    }

    pub fn view(&self) -> Arc<ClusterView> {
        self.cluster.snapshot()
    }

    /// How many other nodes the cluster view holds.
    pub fn peers(&self) -> usize {
        self.view()
            .nodes
            .keys()
            .filter(|n| **n != self.node)
            .count()
    }

    pub fn pods(&self) -> Option<&Arc<Pods>> {
        self.pods.as_ref()
    }

    pub fn set_pods(&mut self, pods: Pods) {
        self.pods = Some(Arc::new(pods));
    }

    /// Where to say that this node's record is missing (the reconciler sees it first).
    pub fn record_missing(&self) -> RecordMissing {
        self.record_missing.clone()
    }

    /// Completes when this node's record is next found missing.
    pub async fn until_record_missing(&self) {
        self.record_missing.0.notified().await
    }

    /// Whether the node has left, for those who only need to know (the reconciler stops).
    pub fn left(&self) -> Left {
        self.left.clone()
    }

    pub fn has_left(&self) -> bool {
        self.left.is_set()
    }

    /// Lets one ADD in, for as long as the guard lives; refused once the node has left.
    pub async fn admit(&self) -> Result<RwLockReadGuard<'_, ()>, AgentError> {
        let admitted = self.admission.read().await;
        if self.has_left() {
            return Err(AgentError::NotReady {
                reason: "this node has left the cluster".into(),
            });
        }
        Ok(admitted)
    }

    /// Waits for the ADDs in flight, and lets none in while the guard lives.
    pub async fn close_admission(&self) -> RwLockWriteGuard<'_, ()> {
        self.admission.write().await
    }

    /// The node has left the cluster: no ADD is admitted any more.
    pub fn mark_left(&self) {
        self.left.0.store(true, Ordering::SeqCst);
    }
}

/// Whether the node has left the cluster; only [`Membership`] sets it.
#[derive(Debug, Clone, Default)]
pub struct Left(Arc<AtomicBool>);

impl Left {
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Sets it without a membership, for unit tests.
    #[cfg(test)]
    pub(crate) fn set_for_test(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Says that this node's record is missing from the cluster view; [`Membership`] puts it back.
#[derive(Debug, Clone, Default)]
pub struct RecordMissing(Arc<Notify>);

impl RecordMissing {
    pub fn report(&self) {
        self.0.notify_one();
    }
}
