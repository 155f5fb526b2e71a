//! Leaving the cluster (`straitctl leave`): with no pod left on the node, no ADD admitted and
//! no pass running, the node gives up its blocks and its record, removes its overlay, its
//! nftables tables and its conflist, and the agent stops. It touches every service, in that
//! order, so it lives beside them rather than in one.

use strait_dataplane::Kernel;
use strait_store::Store;

use crate::agent::Agent;
use crate::error::AgentError;

impl<S: Store, K: Kernel> Agent<S, K> {
    /// Leaves the cluster: gives up this node's blocks and record, removes its overlay, its
    /// nftables tables and its conflist, and stops. Refused while pods are attached.
    pub(crate) async fn leave(&self) -> Result<(), AgentError> {
        // No ADD is in flight from here on, and none starts.
        let _no_adds = self.membership.close_admission().await;
        let attached = self.attachments.all().len();
        if attached > 0 {
            return Err(AgentError::Refused {
                reason: format!(
                    "{attached} pod attachment(s) remain on this node: delete them (or let the \
                     runtime run CNI GC) first"
                ),
            });
        }
        let quarantined = self.attachments.recovery().quarantined().len();
        if quarantined > 0 {
            return Err(AgentError::Refused {
                reason: format!(
                    "{quarantined} host veth(s) without a record still carry pod addresses \
                     (straitctl status lists them): delete their pods (or let the runtime run CNI \
                     GC) first"
                ),
            });
        }
        let _exclusive = self.overlay.exclusive().await;
        self.tasks.wind_down();
        self.membership.mark_left();
        let me = self.membership.node();
        self.ipam
            .delete_blocks_of(me)
            .await
            .map_err(AgentError::Store)?;
        self.membership
            .withdraw()
            .await
            .map_err(AgentError::Store)?;
        for e in self.overlay.remove(self.kernel.clone()).await {
            tracing::warn!(error = %e, "could not remove part of the overlay while leaving");
        }
        if let Err(e) = crate::conflist::remove(&self.config) {
            tracing::warn!(error = %e, "could not remove the CNI configuration");
        }
        tracing::info!(node = %me, "left the cluster");
        self.stop.stop();
        Ok(())
    }
}
