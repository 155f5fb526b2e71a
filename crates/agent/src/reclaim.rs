//! Address blocks of nodes that are gone for good. Deleting a Node from the Kubernetes API (a
//! machine retired, an instance terminated) deletes its pods but not the blocks it claimed:
//! without this they would stay held for ever. Every agent looks for blocks whose node has no
//! record; once the API confirms, after a grace period, that the Node and every pod bound to it
//! are gone, it deletes them. Each delete is conditional on the block's revision, so of all the
//! agents trying one succeeds, and a block claimed again meanwhile is left alone. A node that is
//! registered again while its agent still runs claims its blocks back (see `presence`).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use strait_store::Store;

use crate::absences::Absences;
use crate::agent::Agent;
use crate::pods::Pods;

impl<S: Store> Agent<S> {
    /// Takes back the blocks of nodes deleted from the API, when the cluster is Kubernetes;
    /// otherwise does nothing.
    pub fn start_block_reclaim(self: &Arc<Self>) {
        let Some(pods) = self.membership.pods().cloned() else {
            return;
        };
        let agent = Arc::clone(self);
        self.tasks.spawn(
            "block reclaim",
            async move { agent.reclaim_blocks(&pods).await },
        );
    }

    async fn reclaim_blocks(&self, pods: &Pods) {
        let grace = pods.node_grace;
        let tick = (grace / 2).max(Duration::from_secs(1));
        let mut absences = Absences::new(grace);
        loop {
            tokio::time::sleep(tick).await;
            if !self.membership.cluster().is_synced() {
                continue;
            }
            let view = self.membership.view();
            let me = self.membership.node();
            let absent: BTreeSet<&String> = view
                .blocks
                .values()
                .filter(|node| node.as_str() != me && !view.nodes.contains_key(*node))
                .collect();
            for node in absences.overdue(absent.into_iter().cloned()) {
                match pods.node_gone(&node).await {
                    Ok(true) => match self.ipam.delete_blocks_of(&node).await {
                        Ok(taken) => {
                            for block in taken {
                                self.metrics.block_reclaimed();
                                tracing::info!(%node, %block, "took back the block of a node deleted from the cluster");
                            }
                        }
                        Err(e) => {
                            tracing::warn!(%node, error = %e, "cannot take back the blocks of a deleted node; trying again later")
                        }
                    },
                    // Registered but its agent is not running, or pods still bound to it: ask
                    // again after another grace period.
                    Ok(false) => absences.restart(&node),
                    Err(e) => {
                        tracing::warn!(%node, error = %e, "cannot tell whether a node is gone; asking again later")
                    }
                }
            }
        }
    }
}
