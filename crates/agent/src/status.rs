//! What the agent answers straitctl: the node's state, its attachments, its peers and routes,
//! and leaving the cluster.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use strait_dataplane::Kernel;
use strait_dataplane::reconcile::{Inputs, Pass, Report, reconcile};
use strait_rpc::{
    ConflictInfo, NetworkStatus, NodeStatus, PeerInfo, PodInfo, QuarantinedInfo, Received,
    ReconcileStatus, Request, Response, RouteInfo, StoreInfo, UnreachableInfo, VtepInfo,
};
use strait_store::{Kind, Store, StoreError};

use crate::agent::Agent;
use crate::caller::Caller;
use crate::cluster::blocks_by_node;
use crate::config::StoreConfig;

impl<S: Store> Agent<S> {
    /// Answers one request from the socket, with the namespace descriptor it carried.
    pub async fn handle(
        self: &Arc<Self>,
        request: Request,
        passed: Received,
        caller: Caller<'_>,
    ) -> Response {
        match request {
            Request::Cni(req) => match self.handle_cni(*req, passed, caller).await {
                Ok(json) => Response::CniOk(json),
                Err(e) => Response::CniError(e),
            },
            Request::Status => Response::Status(Box::new(self.status().await)),
            Request::Pods => Response::Pods(self.pods()),
            Request::Peers => Response::Peers(self.peers()),
            Request::Routes => match self.routes().await {
                Ok(routes) => Response::Routes(routes),
                Err(e) => Response::Refused(e),
            },
            Request::Leave => match self.leave().await {
                Ok(()) => Response::Left,
                Err(e) => Response::Refused(e),
            },
        }
    }

    async fn status(&self) -> NodeStatus {
        let mut networks = Vec::new();
        for (name, net) in &self.networks {
            let (blocks, usage) = net.usage().await;
            networks.push(NetworkStatus {
                name: name.clone(),
                vni: net.spec.vni,
                vtep: net.vtep_ip(),
                pools: net.spec.pools.iter().map(|p| p.pool.cidr).collect(),
                blocks,
                allocated: usage.allocated,
                capacity: usage.capacity,
            });
        }
        let view = self.cluster.snapshot();
        let last = self.last_pass.lock().expect("not poisoned").clone();
        NodeStatus {
            node: self.config.node_name.clone(),
            ready: last.as_ref().is_some_and(|p| p.errors.is_empty())
                && self.recovery.not_ready().is_none(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            store: match &self.config.store {
                StoreConfig::Embedded { path } => StoreInfo::Embedded { path: path.clone() },
                StoreConfig::Etcd { endpoints, .. } => StoreInfo::Etcd {
                    endpoints: endpoints.clone(),
                },
                StoreConfig::Kubernetes { .. } => StoreInfo::Kubernetes,
            },
            address: self.underlay.address.into(),
            address6: self.underlay.address6.map(|(a, _)| a.into()),
            underlay: self.underlay.device.clone(),
            peers: view
                .nodes
                .keys()
                .filter(|n| **n != self.config.node_name)
                .count(),
            networks,
            reconcile: last.map(|p| ReconcileStatus {
                last_duration_ms: p.duration.as_secs_f64() * 1e3,
                last_operations: p.operations,
                last_errors: p.errors,
            }),
            quarantined: self
                .recovery
                .quarantined()
                .into_iter()
                .map(|q| QuarantinedInfo {
                    host_veth: q.veth,
                    network: q.network,
                    addresses: q.addresses,
                })
                .collect(),
            conflicts: self
                .recovery
                .conflicts()
                .into_iter()
                .map(|c| ConflictInfo {
                    host_veth: c.veth,
                    address: c.address,
                    holder: c.holder,
                    reason: c.reason,
                })
                .collect(),
        }
    }

    fn pods(&self) -> Vec<PodInfo> {
        self.registry
            .all()
            .into_iter()
            .map(|a| PodInfo {
                network: a.network().to_string(),
                container_id: a.key.container_id,
                ifname: a.key.ifname,
                netns: a.netns,
                pod: a.pod.map(|p| format!("{}/{}", p.namespace, p.name)),
                addresses: a.addresses,
                host_veth: a.host_veth,
                releasing: a.releasing,
            })
            .collect()
    }

    fn peers(&self) -> Vec<PeerInfo> {
        let view = self.cluster.snapshot();
        let mut blocks = blocks_by_node(&view);
        let unreachable = self.local_node().unreachable(&view);
        view.nodes
            .iter()
            .filter(|(name, _)| **name != self.config.node_name)
            .map(|(name, peer)| PeerInfo {
                name: name.clone(),
                address: peer.address,
                address6: peer.address6,
                vteps: peer
                    .vteps
                    .iter()
                    .map(|(network, v)| VtepInfo {
                        network: network.to_string(),
                        ip: v.ip,
                        mac: v.mac.to_string(),
                    })
                    .collect(),
                blocks: blocks.remove(name).unwrap_or_default(),
                unreachable: unreachable
                    .iter()
                    .filter(|u| u.node == *name)
                    .map(|u| UnreachableInfo {
                        network: u.network.to_string(),
                        block: u.block,
                        reason: u.why.to_string(),
                    })
                    .collect(),
            })
            .collect()
    }

    /// The routes this node must hold to reach other nodes' blocks, each checked in the kernel
    /// (a pass of the node model that does not apply).
    async fn routes(&self) -> Result<Vec<RouteInfo>, String> {
        let view = self.cluster.snapshot();
        let local = self.local_node();
        let inputs = Inputs {
            local: local.clone(),
            cluster: Arc::clone(&view),
            pods: Vec::new(),
        };
        let report = run_pass(self.kernel, inputs, Pass::DryRun).await?;
        let owners = local.block_owners(&view);
        Ok(report
            .desired
            .routes
            .iter()
            .map(|r| RouteInfo {
                dst: r.dst,
                table: r.table.0,
                via: r.hop.gateway,
                device: r.hop.device.to_string(),
                node: owners
                    .get(&(r.table, r.dst))
                    .copied()
                    .unwrap_or_default()
                    .to_string(),
                programmed: report.actual.routes.contains(r),
            })
            .collect())
    }

    /// Leaves the cluster: gives up this node's blocks and record, removes its overlay, its
    /// nftables tables and its conflist, and stops. Refused while pods are attached.
    async fn leave(&self) -> Result<(), String> {
        // No ADD is in flight from here on, and none starts.
        let _no_adds = self.admission.write().await;
        let attached = self.registry.all().len();
        if attached > 0 {
            return Err(format!(
                "{attached} pod attachment(s) remain on this node: delete them (or let the runtime run CNI GC) first"
            ));
        }
        let quarantined = self.recovery.quarantined().len();
        if quarantined > 0 {
            return Err(format!(
                "{quarantined} host veth(s) without a record still carry pod addresses (straitctl \
                 status lists them): delete their pods (or let the runtime run CNI GC) first"
            ));
        }
        let _exclusive = self.overlay_changes.lock().await;
        self.tasks.wind_down();
        self.left.store(true, Ordering::SeqCst);
        let me = &self.config.node_name;
        self.delete_blocks_of(me).await.map_err(|e| e.to_string())?;
        match self.store.delete(Kind::Node, me, None).await {
            Ok(()) | Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e.to_string()),
        }
        let mut failed = run_pass(
            self.kernel,
            Inputs::nothing(&self.local_node()),
            Pass::Apply,
        )
        .await?
        .failed;
        if let Err(e) = strait_nft::delete() {
            failed.push(e.to_string());
        }
        for e in failed {
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

/// One pass of the node model, off the async threads.
async fn run_pass(kernel: impl Kernel, inputs: Inputs, pass: Pass) -> Result<Report, String> {
    tokio::task::spawn_blocking(move || {
        let mut nl = kernel.host().map_err(|e| e.to_string())?;
        reconcile(&mut nl, &inputs, None, pass).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}
