//! This node's overlay, one service: the node as the node model sees it (its networks, VTEPs and
//! underlay), Strait's nftables tables as they must be, the last reconcile pass, and the lock
//! that whoever changes the overlay holds (a pass, or leaving). The loop itself is
//! [`crate::reconciler`]; `straitctl routes` and leaving run the same node model here.

use std::sync::{Arc, Mutex};

use strait_dataplane::Kernel;
use strait_dataplane::overlay::{ClusterView, LocalNode};
use strait_dataplane::reconcile::{Inputs, Pass, Report, reconcile};
use tokio::sync::{MutexGuard, watch};

use crate::attachments::registry::Registry;
use crate::cluster::ClusterCache;
use crate::error::AgentError;
use crate::membership::{Left, RecordMissing};
use crate::metrics::Metrics;
use crate::reconciler::{LastPass, OwnedLinks, Reconciler};
use crate::tasks::blocking;
use crate::wake::Wake;

#[derive(Debug)]
pub struct Overlay {
    local: LocalNode,
    /// Strait's nftables tables, as they must be.
    nft_tables: Vec<strait_nft::Table>,
    last: Arc<Mutex<Option<LastPass>>>,
    /// Held by whoever changes the node's overlay: a reconcile pass, or leaving.
    changes: Arc<tokio::sync::Mutex<()>>,
}

/// What the reconciler is linked to besides the overlay: the cluster, the attachments whose host
/// sides it keeps, what wakes it, the metrics, and this node's membership.
pub struct ReconcilerLinks {
    pub cluster: Arc<ClusterCache>,
    pub registry: Arc<Registry>,
    pub wake: Arc<Wake>,
    pub owned: Arc<OwnedLinks>,
    pub metrics: Arc<Metrics>,
    pub left: Left,
    pub record_missing: RecordMissing,
}

impl Overlay {
    pub fn new(local: LocalNode, nft_tables: Vec<strait_nft::Table>) -> Overlay {
        Overlay {
            local,
            nft_tables,
            last: Arc::default(),
            changes: Arc::default(),
        }
    }

    /// This node as the overlay sees it.
    pub fn local(&self) -> &LocalNode {
        &self.local
    }

    /// The reconciler for this overlay on `kernel`; `ready` turns true after its first pass
    /// that succeeded.
    pub fn reconciler<K: Kernel>(
        &self,
        kernel: K,
        around: ReconcilerLinks,
        ready: watch::Sender<bool>,
    ) -> Reconciler<K> {
        Reconciler {
            kernel,
            local: self.local.clone(),
            cache: around.cluster,
            registry: around.registry,
            wake: around.wake,
            metrics: around.metrics,
            owned: around.owned,
            nft_tables: self.nft_tables.clone(),
            last: Arc::clone(&self.last),
            ready,
            overlay_changes: Arc::clone(&self.changes),
            left: around.left,
            record_missing: around.record_missing,
        }
    }

    /// The last pass, once one ran.
    pub fn last_pass(&self) -> Option<LastPass> {
        self.last.lock().expect("not poisoned").clone()
    }

    /// Waits for the pass in flight, and lets none run while the guard lives.
    pub async fn exclusive(&self) -> MutexGuard<'_, ()> {
        self.changes.lock().await
    }

    /// What the node model wants in the kernel for `view`, and what the kernel holds (nothing
    /// is changed).
    pub async fn dry_run(
        &self,
        kernel: impl Kernel,
        view: Arc<ClusterView>,
    ) -> Result<Report, AgentError> {
        let inputs = Inputs {
            local: self.local.clone(),
            cluster: view,
            pods: Vec::new(),
            nft_tables: self.nft_tables.clone(),
        };
        run_pass(kernel, inputs, Pass::DryRun).await
    }

    /// Removes the node's overlay and Strait's nftables tables (by name, whether or not they
    /// can be listed); what could not be removed.
    pub async fn remove(&self, kernel: impl Kernel) -> Vec<String> {
        let mut nft = kernel.nftables();
        let mut failed = match run_pass(kernel, Inputs::nothing(&self.local), Pass::Apply).await {
            Ok(report) => report.failed,
            Err(e) => vec![e.to_string()],
        };
        if let Err(e) =
            blocking(move || strait_nft::delete_all(&mut nft).map_err(AgentError::Nft)).await
        {
            failed.push(e.to_string());
        }
        failed
    }
}

/// One pass of the node model, off the async threads.
async fn run_pass(kernel: impl Kernel, inputs: Inputs, pass: Pass) -> Result<Report, AgentError> {
    blocking(move || {
        let mut host = kernel.host().map_err(|e| AgentError::Dataplane(e.into()))?;
        Ok(reconcile(&mut host, &inputs, None, pass, None)?)
    })
    .await
}
