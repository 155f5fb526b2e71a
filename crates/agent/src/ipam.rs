//! IPAM on this node, one service: its networks' pools and blocks (see [`crate::ipam::network`]) and
//! the cluster store that says which node holds which block. It hands out and frees pods'
//! addresses, claims this node's blocks again after its record vanished, returns empty blocks
//! to their pools ([`empty_blocks`]) and deletes the blocks of nodes that are gone. Nothing else
//! in the agent writes blocks.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use strait_ipam::IpamError;
use strait_store::{BlockRecord, Kind, Store, StoreError, typed};

use crate::config::Network;
use crate::error::AgentError;
use network::NetworkState;

pub mod empty_blocks;
pub mod network;

/// This node's networks and their blocks in the store `S`.
#[derive(Debug)]
pub struct Ipam<S> {
    store: S,
    node: String,
    networks: BTreeMap<String, NetworkState>,
}

/// A block of this node's that another node holds now.
#[derive(Debug)]
pub struct BlockLost {
    pub network: String,
    pub block: IpNet,
    pub holder: String,
}

impl<S: Store> Ipam<S> {
    /// Registers the networks' pools in the store and picks up the blocks `node` holds.
    pub async fn load(
        store: S,
        node: &str,
        specs: &[Network],
        underlay_mtu: u32,
    ) -> Result<Ipam<S>, AgentError> {
        let mut networks = BTreeMap::new();
        for spec in specs {
            let state = NetworkState::load(&store, spec.clone(), node, underlay_mtu)
                .await
                .map_err(|e| AgentError::Network {
                    network: spec.name.clone(),
                    source: Box::new(e),
                })?;
            networks.insert(spec.name.clone(), state);
        }
        Ok(Ipam {
            store,
            node: node.to_string(),
            networks,
        })
    }

    /// The network called `name`, or why there is none.
    pub fn network(&self, name: &str) -> Result<&NetworkState, AgentError> {
        self.networks
            .get(name)
            .ok_or_else(|| AgentError::UnknownNetwork {
                name: name.to_string(),
                known: self.networks.keys().cloned().collect::<Vec<_>>().join(", "),
            })
    }

    /// The networks, by name.
    pub fn networks(&self) -> impl Iterator<Item = (&String, &NetworkState)> {
        self.networks.iter()
    }

    /// The network with a pool that holds `ip`.
    pub fn network_holding(&self, ip: &IpAddr) -> Option<&NetworkState> {
        self.networks
            .values()
            .find(|n| n.spec.pools.iter().any(|p| p.pool.cidr.contains(ip)))
    }

    /// A pod's addresses in `net` (see [`NetworkState::allocate`]).
    pub async fn allocate(
        &self,
        net: &NetworkState,
        pool: Option<&str>,
        given: Option<IpNet>,
        may_draw_from: impl Fn(&str) -> bool,
    ) -> Result<Vec<IpNet>, AgentError> {
        net.allocate(&self.store, &self.node, pool, given, may_draw_from)
            .await
    }

    /// The address `ip` in `net`, as a pod asked for it or a restart takes it back.
    pub async fn allocate_fixed(
        &self,
        net: &NetworkState,
        ip: IpAddr,
    ) -> Result<IpNet, AgentError> {
        net.allocate_fixed(&self.store, &self.node, ip).await
    }

    /// Whether `net` could give a pod its addresses now; why not, otherwise.
    pub async fn can_allocate(&self, net: &NetworkState) -> Result<(), String> {
        net.can_allocate(&self.store).await
    }

    /// Frees `addresses` in the network called `network`; whether it is still configured (an
    /// address of a network no longer configured has nothing to be freed in).
    pub async fn release(&self, network: &str, addresses: &[IpNet]) -> bool {
        let Some(net) = self.networks.get(network) else {
            return false;
        };
        net.release(addresses).await;
        true
    }

    /// Claims again every block this node allocates from, trying again while the store fails
    /// (`on_retry` says why and waits); a block another node holds now ends it.
    pub async fn claim_held_blocks<F: Future<Output = ()>>(
        &self,
        mut on_retry: impl FnMut(&str, IpamError) -> F,
    ) -> Result<(), BlockLost> {
        for (name, network) in &self.networks {
            loop {
                match network.claim_held(&self.store, &self.node).await {
                    Ok(()) => break,
                    Err(IpamError::BlockHeld { block, node }) => {
                        return Err(BlockLost {
                            network: name.clone(),
                            block,
                            holder: node,
                        });
                    }
                    Err(e) => on_retry(name, e).await,
                }
            }
        }
        Ok(())
    }

    /// Deletes the blocks `node` holds, each only if unchanged since listed; returns those this
    /// call deleted (another agent, or the node itself, may get to some first).
    pub async fn delete_blocks_of(&self, node: &str) -> Result<Vec<IpNet>, StoreError> {
        let mut deleted = Vec::new();
        let blocks = typed::list::<BlockRecord>(&self.store).await?;
        for block in blocks.into_iter().filter(|b| b.value.node == node) {
            match self
                .store
                .delete(Kind::IpBlock, &block.name, Some(block.revision))
                .await
            {
                Ok(()) => deleted.push(block.value.cidr),
                Err(StoreError::NotFound { .. } | StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(deleted)
    }
}
