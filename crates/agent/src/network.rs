//! One network's address state on this node: its pools, the blocks this node holds, and the
//! allocator over them. A new block is claimed from the cluster store only when all are full.

use std::net::IpAddr;

use ipnet::IpNet;
use strait_ipam::{Allocator, IpamError, Usage, claim_block, ensure_pool, node_blocks};
use strait_store::Store;
use tokio::sync::Mutex;

use crate::config::Network;
use crate::error::AgentError;

#[derive(Debug)]
pub struct NetworkState {
    pub spec: Network,
    allocator: Mutex<Allocator>,
}

impl NetworkState {
    /// Registers the network's pools in the store and picks up the blocks this node already holds.
    pub async fn load(store: &impl Store, spec: Network, node: &str) -> Result<Self, IpamError> {
        let mut allocator = Allocator::new();
        for pool in &spec.pools {
            ensure_pool(store, pool).await?;
            for block in node_blocks(store, pool, node).await? {
                allocator.add_block(block);
            }
        }
        Ok(NetworkState {
            spec,
            allocator: Mutex::new(allocator),
        })
    }

    /// One address for a pod (as a host prefix), claiming a block if this node's are full.
    pub async fn allocate(&self, store: &impl Store, node: &str) -> Result<IpNet, AgentError> {
        let mut allocator = self.allocator.lock().await;
        if let Some(ip) = allocator.allocate(false) {
            return Ok(IpNet::from(ip));
        }
        for pool in &self.spec.pools {
            match claim_block(store, pool, node).await {
                Ok(block) => {
                    tracing::info!(network = %self.spec.name, pool = %pool.name, %block, "claimed block");
                    allocator.add_block(block);
                    let ip = allocator.allocate(false).expect("a fresh block has room");
                    return Ok(IpNet::from(ip));
                }
                Err(IpamError::PoolExhausted { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(AgentError::Exhausted {
            network: self.spec.name.clone(),
            pools: self
                .spec
                .pools
                .iter()
                .map(|p| p.cidr.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    /// Marks addresses of a restored record taken.
    pub async fn reserve(&self, ip: IpAddr) -> Result<(), IpamError> {
        self.allocator.lock().await.reserve(ip)
    }

    pub async fn release(&self, addresses: &[IpNet]) {
        let mut allocator = self.allocator.lock().await;
        for a in addresses {
            allocator.release(a.addr());
        }
    }

    pub async fn usage(&self) -> (Vec<IpNet>, Usage) {
        let allocator = self.allocator.lock().await;
        (allocator.blocks().collect(), allocator.usage())
    }
}
