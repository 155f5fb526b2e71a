//! Keeps this node's record in the cluster store while the agent runs. The record can vanish
//! under a live agent: an etcd lease lost in a long partition, or a Node deleted and registered
//! again by its kubelet. Whenever a reconcile pass finds this node missing from the cluster view,
//! the agent puts the record back, unless it has left the cluster. A Kubernetes Node that is
//! gone stays gone (only its kubelet registers it again; the record follows when it does).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use strait_store::{Store, StoreError};

use crate::agent::{Agent, StartError};

/// The least time between two attempts, however often the record is found missing.
const MIN_INTERVAL: Duration = Duration::from_secs(1);

impl<S: Store> Agent<S> {
    /// Puts this node's record back whenever the reconciler finds it missing.
    pub fn keep_record(self: &Arc<Self>) {
        let agent = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                agent.record_missing.notified().await;
                if agent.left.load(Ordering::SeqCst) {
                    return;
                }
                match agent.announce().await {
                    Ok(()) => tracing::info!("this node's record was missing; put it back"),
                    Err(StartError::Announce(StoreError::NotFound { .. })) => tracing::info!(
                        "this node is not registered with the cluster (its Node was deleted); \
                         its record returns when the node is registered again"
                    ),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot put this node's record back; retrying on the next pass")
                    }
                }
                tokio::time::sleep(MIN_INTERVAL).await;
            }
        });
    }
}
