//! What the agent tells straitctl: the node's state and its attachments.

use std::os::fd::OwnedFd;

use strait_rpc::{NetworkStatus, NodeStatus, PodInfo, Request, Response};
use strait_store::Store;

use crate::agent::Agent;
use crate::config::StoreConfig;

impl<S: Store> Agent<S> {
    /// Answers one request from the socket, with the namespace descriptor it carried.
    pub async fn handle(&self, request: Request, netns: Option<OwnedFd>) -> Response {
        match request {
            Request::Cni(req) => match self.handle_cni(*req, netns).await {
                Ok(json) => Response::CniOk(json),
                Err(e) => Response::CniError(e),
            },
            Request::Status => Response::Status(self.status().await),
            Request::Pods => Response::Pods(self.pods()),
        }
    }

    async fn status(&self) -> NodeStatus {
        let mut networks = Vec::new();
        for (name, net) in &self.networks {
            let (blocks, usage) = net.usage().await;
            networks.push(NetworkStatus {
                name: name.clone(),
                pools: net.spec.pools.iter().map(|p| p.pool.cidr).collect(),
                blocks,
                allocated: usage.allocated,
                capacity: usage.capacity,
            });
        }
        NodeStatus {
            node: self.config.node_name.clone(),
            ready: true,
            version: env!("CARGO_PKG_VERSION").to_string(),
            store: match &self.config.store {
                StoreConfig::Embedded { path } => format!("embedded ({})", path.display()),
                StoreConfig::Etcd { endpoints, .. } => format!("etcd ({})", endpoints.join(",")),
            },
            networks,
        }
    }

    fn pods(&self) -> Vec<PodInfo> {
        self.registry
            .all()
            .into_iter()
            .map(|a| PodInfo {
                network: a.key.network,
                container_id: a.key.container_id,
                ifname: a.key.ifname,
                netns: a.netns,
                pod: a.pod.map(|p| format!("{}/{}", p.namespace, p.name)),
                addresses: a.addresses,
                host_veth: a.host_veth,
            })
            .collect()
    }
}
