//! The reconciler: one loop that makes the kernel hold what the cluster and this node's
//! attachments say it needs. Store changes, kernel changes to what we own, nftables changes and a
//! slow timer all wake the same loop; each pass is the node model's
//! [`reconcile`](strait_dataplane::reconcile::reconcile) (desired, read, plan, apply in one
//! batch, then, when woken by something that may have changed them, Strait's nftables tables
//! read back and each replaced whole when it differs). A pass that fails is retried with
//! backoff, never dropped.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use strait_dataplane::model::Actual;
use strait_dataplane::overlay::LocalNode;
use strait_dataplane::reconcile::{Inputs, Pass, PodHost, reconcile};
use strait_dataplane::{Kernel, SystemKernel};
use strait_nft::Nftables;
use tokio::sync::watch;

use crate::attachments::registry::Registry;
use crate::cluster::ClusterCache;
use crate::ipam::network::NETWORK_TABLE;
use crate::membership::{Left, RecordMissing};
use crate::metrics::Metrics;
use crate::wake::{Reason, Reasons, Wake};

/// The slow periodic pass.
const TICK: Duration = Duration::from_secs(30);
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(10);

/// The links whose changes concern the reconciler: our devices and the underlay.
#[derive(Debug, Default)]
pub struct OwnedLinks(RwLock<(HashSet<u32>, Option<u32>)>);

impl OwnedLinks {
    /// One of our devices, or the underlay.
    pub fn contains(&self, index: u32) -> bool {
        self.0.read().expect("not poisoned").0.contains(&index)
    }

    /// One of our devices, whose neighbours and addresses are ours (the underlay's are its
    /// network's, and come and go with its traffic).
    pub fn holds_entries(&self, index: u32) -> bool {
        let links = self.0.read().expect("not poisoned");
        links.0.contains(&index) && links.1 != Some(index)
    }

    pub(crate) fn set(&self, indices: &BTreeSet<u32>, underlay: Option<u32>) {
        *self.0.write().expect("not poisoned") = (indices.iter().copied().collect(), underlay);
    }
}

/// The last pass, for straitctl.
#[derive(Debug, Clone, Default)]
pub struct LastPass {
    pub duration: Duration,
    pub operations: usize,
    pub errors: Vec<String>,
}

/// The loop, changing the node through `K`.
#[derive(Debug)]
pub struct Reconciler<K = SystemKernel> {
    pub(crate) kernel: K,
    pub(crate) local: LocalNode,
    pub(crate) cache: Arc<ClusterCache>,
    /// The attachments whose host sides each pass keeps.
    pub(crate) registry: Arc<Registry>,
    pub(crate) wake: Arc<Wake>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) owned: Arc<OwnedLinks>,
    /// Strait's nftables tables, as they must be.
    pub(crate) nft_tables: Vec<strait_nft::Table>,
    pub(crate) last: Arc<Mutex<Option<LastPass>>>,
    /// Becomes true after the first pass that succeeded.
    pub(crate) ready: watch::Sender<bool>,
    /// Held during a pass, so that leaving never races one.
    pub(crate) overlay_changes: Arc<tokio::sync::Mutex<()>>,
    /// Once set, the loop ends.
    pub(crate) left: Left,
    /// Signalled when the cluster view lacks this node's own record.
    pub(crate) record_missing: RecordMissing,
}

#[derive(Default)]
struct Outcome {
    operations: usize,
    errors: Vec<String>,
    owned: BTreeSet<u32>,
    underlay: Option<u32>,
    nft_repaired: bool,
    /// What the kernel holds after a pass that fully succeeded.
    applied: Option<Actual>,
}

/// Store events that arrive within this of each other are answered by one pass (a node's record
/// and its block's come on two watches).
const SETTLE: Duration = Duration::from_millis(2);

/// One pass, blocking: the node model, its nftables tables included when `nft` holds what they
/// read back as after the last write. `known` is what the kernel holds when nothing but the
/// store changed since the last pass; otherwise the kernel is read.
fn pass(
    kernel: &impl Kernel,
    inputs: &Inputs,
    known: Option<Actual>,
    nft: Option<&Mutex<strait_nft::Written>>,
) -> Outcome {
    let mut out = Outcome::default();
    let mut ruleset = kernel.nftables();
    let mut written = nft.map(|w| w.lock().unwrap_or_else(PoisonError::into_inner));
    let report = match kernel.host() {
        Ok(mut nl) => {
            let check = written
                .as_deref_mut()
                .map(|w| (&mut ruleset as &mut dyn Nftables, w));
            reconcile(&mut nl, inputs, known, Pass::Apply, check)
        }
        Err(e) => Err(e.into()),
    };
    match report {
        Ok(report) => {
            tracing::debug!(
                read_ms = report.read_time.as_secs_f64() * 1e3,
                apply_ms = report.apply_time.as_secs_f64() * 1e3,
                planned = report.planned,
                "pass phases"
            );
            out.operations = report.done;
            out.errors = report.failed;
            out.applied = report.after;
            out.owned = report.owned_links;
            out.underlay = report.underlay_link;
            out.nft_repaired = report.nft_changed;
        }
        Err(e) => {
            out.errors.push(e.to_string());
            // The node model could not be read or applied; its nftables tables are kept all
            // the same.
            if let Some(written) = written.as_deref_mut() {
                match strait_nft::ensure(&mut ruleset, &inputs.nft_tables, written) {
                    Ok(changed) => out.nft_repaired = changed,
                    Err(e) => out.errors.push(e.to_string()),
                }
            }
        }
    }
    out
}

impl<K: Kernel> Reconciler<K> {
    /// The host sides to keep: every attachment's but those being released.
    fn pods(&self) -> Vec<PodHost> {
        self.registry
            .all()
            .into_iter()
            .filter(|a| !a.releasing)
            .map(|a| PodHost {
                veth: a.host_veth,
                table: NETWORK_TABLE,
                addresses: a.addresses,
                mac: a.pod_mac,
            })
            .collect()
    }

    pub async fn run(self) {
        let mut retry: Option<Duration> = None;
        let mut applied: Option<Actual> = None;
        let mut started_up = false;
        let mut last_unreachable = Vec::new();
        let mut nft_pending = false;
        let nft_written = Arc::new(Mutex::new(strait_nft::Written::default()));
        loop {
            // The first pass runs at once; later ones wait for a reason, a retry or the tick.
            let mut woke = if started_up {
                self.wake.wait(retry.unwrap_or(TICK)).await
            } else {
                started_up = true;
                Reasons::default()
            };
            if woke.has(Reason::Store) {
                tokio::time::sleep(SETTLE).await;
                woke = woke.with(self.wake.take());
            }
            if !self.cache.is_synced() {
                // The store's first listing wakes us when it lands.
                continue;
            }
            let _exclusive = self.overlay_changes.lock().await;
            if self.left.is_set() {
                return;
            }
            let first = !*self.ready.borrow();
            // Only the store changed: the kernel holds what the last pass left there.
            let known = if woke.store_only() {
                applied.take()
            } else {
                None
            };
            // The tables are read when something may have changed them, and after a pass that
            // checked them failed (a store event may come before the retry).
            let check_nft =
                first || nft_pending || woke.has(Reason::Nft) || woke.has(Reason::Timer);
            let view = self.cache.snapshot();
            if !view.nodes.contains_key(&self.local.name) {
                self.record_missing.report();
            }
            let peers = view.nodes.keys().filter(|n| **n != self.local.name).count();
            let unreachable = self.local.unreachable(&view);
            if unreachable != last_unreachable {
                for u in &unreachable {
                    tracing::warn!(node = %u.node, network = %u.network, block = %u.block,
                        reason = %u.why, "cannot route another node's block");
                }
                self.metrics.set_unreachable_blocks(unreachable.len());
                last_unreachable = unreachable;
            }
            let inputs = Inputs {
                local: self.local.clone(),
                cluster: view,
                pods: self.pods(),
                nft_tables: self.nft_tables.clone(),
            };
            let written = Arc::clone(&nft_written);
            let started = Instant::now();
            let kernel = self.kernel.clone();
            let outcome = tokio::task::spawn_blocking(move || {
                pass(&kernel, &inputs, known, check_nft.then_some(&*written))
            })
            .await;
            let elapsed = started.elapsed();
            let outcome = match outcome {
                Ok(o) => o,
                Err(e) => Outcome {
                    errors: vec![format!("the pass panicked: {e}")],
                    ..Outcome::default()
                },
            };
            applied = outcome.applied.clone();
            if !outcome.owned.is_empty() {
                self.owned.set(&outcome.owned, outcome.underlay);
            }
            let ok = outcome.errors.is_empty();
            if check_nft {
                nft_pending = !ok;
            }
            let repaired = !first
                && (outcome.nft_repaired || (woke.has(Reason::Kernel) && outcome.operations > 0));
            self.metrics
                .pass(ok, elapsed.as_secs_f64(), outcome.operations, repaired);
            self.metrics.set_peers(peers);
            if outcome.operations > 0 || !ok {
                tracing::info!(
                    operations = outcome.operations,
                    errors = outcome.errors.len(),
                    peers,
                    elapsed_ms = elapsed.as_secs_f64() * 1e3,
                    repaired_drift = repaired,
                    "reconciled"
                );
            }
            for e in &outcome.errors {
                tracing::warn!(error = %e, "reconcile operation failed; retrying");
            }
            *self.last.lock().expect("not poisoned") = Some(LastPass {
                duration: elapsed,
                operations: outcome.operations,
                errors: outcome.errors,
            });
            if ok {
                retry = None;
                self.ready.send_replace(true);
            } else {
                retry = Some(retry.map_or(RETRY_MIN, |r| (r * 2).min(RETRY_MAX)));
            }
        }
    }
}

#[cfg(test)]
mod tests;
