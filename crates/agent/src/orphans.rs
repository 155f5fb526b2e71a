//! Attachments whose pod the Kubernetes API no longer has. A node that crashed, or a runtime
//! that lost track of a sandbox, never sends their CNI DEL; without this their addresses would
//! leak. An attachment is released, as a DEL would, once its pod has been missing from the
//! node's pods for a grace period (a static pod's mirror can lag its sandbox) and a direct read
//! of the API confirms it is gone.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use strait_store::Store;

use crate::absences::Absences;
use crate::agent::Agent;
use crate::attachments::registry::{Attachment, AttachmentKey};
use crate::pods::Pods;

impl<S: Store> Agent<S> {
    /// Watches this node's pods and releases the attachments of pods that are gone, when the
    /// cluster is Kubernetes; otherwise does nothing.
    pub fn start_orphan_sweep(self: &Arc<Self>) {
        let Some(pods) = self.membership.pods().cloned() else {
            return;
        };
        let watched = Arc::clone(&pods);
        self.tasks
            .spawn("pod watch", async move { watched.watch().await });
        let agent = Arc::clone(self);
        self.tasks.spawn(
            "orphan sweep",
            async move { agent.sweep_orphans(&pods).await },
        );
    }

    async fn sweep_orphans(&self, pods: &Pods) {
        let grace = pods.orphan_grace;
        let tick = (grace / 2).max(Duration::from_secs(1));
        let mut absences = Absences::new(grace);
        loop {
            tokio::select! {
                () = pods.changed() => {}
                () = tokio::time::sleep(tick) => {}
            }
            let Some(live) = pods.live() else {
                continue;
            };
            let orphans: HashMap<AttachmentKey, Attachment> = self
                .attachments
                .all()
                .into_iter()
                .filter(|a| a.pod.as_ref().is_some_and(|p| !live.contains(p)))
                .map(|a| (a.key.clone(), a))
                .collect();
            for key in absences.overdue(orphans.keys().cloned()) {
                let a = &orphans[&key];
                let Some(pod) = a.pod.as_ref() else { continue };
                match pods.gone(pod).await {
                    Ok(true) => self.release_orphan(a).await,
                    Ok(false) => absences.restart(&key),
                    Err(e) => {
                        tracing::warn!(pod = %format!("{}/{}", pod.namespace, pod.name), error = %e,
                            "cannot tell whether a pod is gone; asking again later");
                    }
                }
            }
        }
    }

    async fn release_orphan(&self, a: &Attachment) {
        let _one_at_a_time = self.attachments.lock(&a.key).await;
        if self.attachments.get(&a.key).as_ref() != Some(a) {
            return; // a DEL or a new ADD came first
        }
        let pod = a
            .pod
            .as_ref()
            .map(|p| format!("{}/{}", p.namespace, p.name));
        match self.release(&a.key).await {
            Ok(()) => {
                self.metrics.orphan_released();
                tracing::info!(pod, container_id = %a.key.container_id,
                    addresses = ?a.addresses, "released the attachment of a pod that is gone");
            }
            Err(e) => tracing::warn!(pod, container_id = %a.key.container_id, error = %e,
                "cannot release the attachment of a pod that is gone; trying again later"),
        }
    }
}
