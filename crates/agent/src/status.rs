//! What the agent answers straitctl: the node's state, its attachments, its peers and routes
//! (and leaving the cluster, which is [`crate::leave`]).

use std::sync::Arc;

use strait_rpc::{
    ConflictInfo, NetworkStatus, NodeStatus, PeerInfo, PodInfo, QuarantinedInfo, Received,
    ReconcileStatus, Request, Response, RouteInfo, StoreInfo, UnreachableInfo, VtepInfo,
};
use strait_store::Store;

use crate::agent::Agent;
use crate::caller::Caller;
use crate::cluster::blocks_by_node;
use crate::config::StoreConfig;
use crate::error::AgentError;

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
                Err(e) => Response::Refused(e.to_string()),
            },
            Request::Leave => match self.leave().await {
                Ok(()) => Response::Left,
                Err(e) => Response::Refused(e.to_string()),
            },
        }
    }

    async fn status(&self) -> NodeStatus {
        let mut networks = Vec::new();
        for (name, net) in self.ipam.networks() {
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
        let last = self.overlay.last_pass();
        let recovery = self.attachments.recovery();
        NodeStatus {
            node: self.config.node_name.clone(),
            ready: last.as_ref().is_some_and(|p| p.errors.is_empty())
                && recovery.not_ready().is_none(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            store: match &self.config.store {
                StoreConfig::Embedded { path } => StoreInfo::Embedded { path: path.clone() },
                StoreConfig::Etcd { endpoints, .. } => StoreInfo::Etcd {
                    endpoints: endpoints.clone(),
                },
                StoreConfig::Kubernetes { .. } => StoreInfo::Kubernetes,
            },
            address: self.underlay.address(),
            address6: self.underlay.address6.map(|(a, _)| a.into()),
            underlay: self.underlay.device.clone(),
            peers: self.membership.peers(),
            networks,
            reconcile: last.map(|p| ReconcileStatus {
                last_duration_ms: p.duration.as_secs_f64() * 1e3,
                last_operations: p.operations,
                last_errors: p.errors,
            }),
            quarantined: recovery
                .quarantined()
                .into_iter()
                .map(|q| QuarantinedInfo {
                    host_veth: q.veth,
                    network: q.network,
                    addresses: q.addresses,
                })
                .collect(),
            conflicts: recovery
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
        self.attachments
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
        let view = self.membership.view();
        let mut blocks = blocks_by_node(&view);
        let unreachable = self.overlay.local().unreachable(&view);
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
    async fn routes(&self) -> Result<Vec<RouteInfo>, AgentError> {
        let view = self.membership.view();
        let report = self.overlay.dry_run(self.kernel, Arc::clone(&view)).await?;
        let owners = self.overlay.local().block_owners(&view);
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
}
