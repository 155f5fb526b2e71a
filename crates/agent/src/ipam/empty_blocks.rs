//! Empty blocks go back to their pool: a block of this node's that has held no address for
//! `empty_block_grace` (the one holding the VTEP excepted) stops being allocated from and its
//! claim is deleted from the store, so that no node keeps blocks it does not use (a fixed
//! address once made a node claim its whole block for as long as it lived).

use std::time::Duration;

use strait_store::{BlockRecord, Kind, Store, StoreError, typed};

use super::Ipam;
use crate::absences::Absences;
use crate::metrics::Metrics;

impl<S: Store> Ipam<S> {
    /// Returns blocks empty for `grace` to their pools, for as long as it runs.
    pub async fn return_empty_blocks(&self, grace: Duration, metrics: &Metrics) {
        let tick = (grace / 2).clamp(Duration::from_secs(1), Duration::from_secs(60));
        let mut empty = Absences::new(grace);
        loop {
            tokio::time::sleep(tick).await;
            let mut now_empty = Vec::new();
            for (name, net) in &self.networks {
                now_empty.extend(
                    net.empty_blocks()
                        .await
                        .into_iter()
                        .map(|b| (name.clone(), b)),
                );
            }
            for (network, block) in empty.overdue(now_empty) {
                let net = &self.networks[&network];
                let Some(name) = net.block_name(block) else {
                    tracing::warn!(%network, %block, "an empty block of no configured pool stays");
                    continue;
                };
                // No claim runs while the block goes: a fixed address in it would otherwise be
                // found "already this node's" just before the block is given away.
                let _no_claims = net.hold_claims().await;
                if !net.withdraw_block(block).await {
                    continue;
                }
                match self.give_back(&name).await {
                    Ok(()) => {
                        tracing::info!(%network, %block, "returned an empty block to its pool");
                        metrics.block_returned();
                    }
                    Err(e) => {
                        // The delete may have gone through all the same: allocate from the block
                        // again only if the store says it is still this node's.
                        let still_ours = self.holds(&name).await.unwrap_or(false);
                        tracing::warn!(%network, %block, error = %e, still_ours,
                            "could not return an empty block");
                        if still_ours {
                            net.restore_block(block).await;
                        }
                        empty.restart(&(network, block));
                    }
                }
            }
        }
    }

    /// Whether the store says the block named `name` is this node's.
    async fn holds(&self, name: &str) -> Result<bool, StoreError> {
        let held = typed::get::<BlockRecord>(&self.store, name).await?;
        Ok(held.is_some_and(|b| b.value.node == self.node))
    }

    /// Deletes this node's claim on the block named `name`, if it is still this node's.
    async fn give_back(&self, name: &str) -> Result<(), StoreError> {
        let Some(held) = typed::get::<BlockRecord>(&self.store, name).await? else {
            return Ok(());
        };
        if held.value.node != self.node {
            return Ok(());
        }
        match self
            .store
            .delete(Kind::IpBlock, name, Some(held.revision))
            .await
        {
            Ok(()) | Err(StoreError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
