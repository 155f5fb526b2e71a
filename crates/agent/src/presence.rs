//! Keeps this node's record in the cluster store while the agent runs. The record can vanish
//! under a live agent: an etcd lease lost in a long partition, or a Node deleted and registered
//! again by its kubelet. Whenever a reconcile pass finds this node missing from the cluster view,
//! the agent puts the record back, unless it has left the cluster. A Kubernetes Node that is
//! gone stays gone (only its kubelet registers it again; the record follows when it does). A
//! node that returns claims its address blocks again: while it was deleted the other nodes may
//! have taken them back, and if one of them now holds a block this node used, the agent stops;
//! started again it takes blocks (and a VTEP) of its own, and stays not ready while pods still
//! hold addresses of the lost block (see [`crate::recovery`]).

use std::sync::Arc;
use std::time::Duration;

use strait_store::{Store, StoreError};

use crate::agent::Agent;

/// The least time between two attempts, however often the record is found missing.
const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// The most time between two attempts while the record cannot be put back.
const MAX_INTERVAL: Duration = Duration::from_secs(10);

impl<S: Store> Agent<S> {
    /// Puts this node's record back whenever the reconciler finds it missing, trying again (1 s,
    /// doubling up to 10 s) until it is back: the event that makes it possible again (a Node
    /// registered anew) may change nothing else, and so wake nothing else.
    pub fn keep_record(self: &Arc<Self>) {
        let agent = Arc::clone(self);
        self.tasks.spawn("record keeper", async move {
            let membership = &agent.membership;
            loop {
                membership.until_record_missing().await;
                let mut pause = MIN_INTERVAL;
                for attempt in 0u32.. {
                    if membership.has_left() {
                        return;
                    }
                    match membership.announce().await {
                        Ok(()) => {
                            tracing::info!("this node's record was missing; put it back");
                            agent.claim_held_blocks().await;
                            break;
                        }
                        Err(StoreError::NotFound { .. }) if attempt == 0 => {
                            tracing::info!(
                                "this node is not registered with the cluster (its Node was \
                                 deleted); its record returns when the node is registered again"
                            )
                        }
                        Err(StoreError::NotFound { .. }) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot put this node's record back; retrying")
                        }
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_INTERVAL);
                }
                tokio::time::sleep(MIN_INTERVAL).await;
            }
        });
    }

    /// Claims this node's blocks again, retrying while the store fails; stops the agent when
    /// another node holds one.
    async fn claim_held_blocks(&self) {
        let mut pause = MIN_INTERVAL;
        let claimed = self
            .ipam
            .claim_held_blocks(|network, e| {
                tracing::warn!(%network, error = %e, "cannot claim this node's blocks again; retrying");
                let wait = pause;
                pause = (pause * 2).min(MAX_INTERVAL);
                tokio::time::sleep(wait)
            })
            .await;
        if let Err(lost) = claimed {
            self.fail(format!(
                "block {} of network {} was taken back while this node was deleted from the \
                 cluster, and node {} holds it now; restart straitd to take new blocks",
                lost.block, lost.network, lost.holder
            ));
        }
    }
}
