//! One network's state on this node: its pools, the blocks this node holds, the allocator over
//! them, the pods' MTU, and the node's VXLAN tunnel endpoint. A new block is claimed from the
//! cluster store only when all are full (or, for the VTEP, when the node holds none yet). The
//! allocator's lock is never held across a store call: a stalled store delays only the requests
//! that need a new block, never a DEL, a status or the metrics.

use std::net::IpAddr;

use ipnet::IpNet;
use strait_dataplane::model::Table;
use strait_dataplane::overlay::{LocalPool, Mode, Vtep, family_name};
use strait_dataplane::vtep_mac;
use strait_ipam::{
    Allocator, IpamError, Usage, claim_block, claim_block_of, ensure_pool, has_free_block,
    node_blocks,
};
use strait_store::Store;
use tokio::sync::Mutex;

use crate::config::{Network, NetworkPool};
use crate::error::AgentError;

/// The routing table that holds a network's routes on the node: the main table, for every
/// network, until networks get tables of their own.
pub const NETWORK_TABLE: Table = Table::MAIN;

#[derive(Debug)]
pub struct NetworkState {
    pub spec: Network,
    /// The pods' MTU.
    pub mtu: u32,
    /// This node's VTEP, when a pool of the network uses VXLAN.
    pub vtep: Option<Vtep>,
    /// The VTEP's addresses, one per family with a VXLAN pool, IPv4's first.
    pub vtep_addresses: Vec<IpAddr>,
    allocator: Mutex<Allocator>,
    /// Held while claiming a block from the store, so that requests needing one wait for the
    /// claim in flight instead of each claiming another.
    claiming: Mutex<()>,
}

/// Claims the first free block of the first of `pools` that has one.
async fn claim_from(
    store: &impl Store,
    pools: impl Iterator<Item = &NetworkPool>,
    node: &str,
    network: &Network,
) -> Result<IpNet, AgentError> {
    for p in pools {
        tracing::info!(network = %network.name, pool = %p.pool.name, "claiming a block");
        match claim_block(store, &p.pool, node).await {
            Ok(block) => {
                tracing::info!(network = %network.name, pool = %p.pool.name, %block, "claimed block");
                return Ok(block);
            }
            Err(IpamError::PoolExhausted { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(AgentError::Exhausted {
        network: network.name.clone(),
        pools: network
            .pools
            .iter()
            .map(|p| p.pool.cidr.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

impl NetworkState {
    /// Registers the network's pools in the store, picks up the blocks this node holds, and
    /// settles the VTEP.
    pub(super) async fn load(
        store: &impl Store,
        spec: Network,
        node: &str,
        underlay_mtu: u32,
    ) -> Result<Self, AgentError> {
        let mut allocator = Allocator::new();
        let mut vxlan_blocks = Vec::new();
        for p in &spec.pools {
            ensure_pool(store, &p.pool).await?;
            for block in node_blocks(store, &p.pool, node).await? {
                allocator.add_block(block);
                if p.mode == Mode::Vxlan {
                    vxlan_blocks.push(block);
                }
            }
        }
        // Per family with a VXLAN pool, the device holds the first address (never given to a
        // pod) of the node's lowest block of such a pool, claimed now if there is none: peers
        // route IPv4 blocks through the IPv4 one, and the node's own packets to other nodes'
        // pods leave from them. IPv6 blocks are routed through the device's link-local address.
        let mut vtep_addresses = Vec::new();
        for ipv6 in [false, true] {
            let vxlan =
                |p: &&NetworkPool| p.mode == Mode::Vxlan && p.pool.cidr.addr().is_ipv6() == ipv6;
            if !spec.pools.iter().any(|p| vxlan(&p)) {
                continue;
            }
            let lowest = vxlan_blocks
                .iter()
                .filter(|b| b.addr().is_ipv6() == ipv6)
                .min()
                .copied();
            let block = match lowest {
                Some(block) => block,
                None => {
                    let block =
                        claim_from(store, spec.pools.iter().filter(vxlan), node, &spec).await?;
                    allocator.add_block(block);
                    block
                }
            };
            vtep_addresses.push(block.network());
        }
        let vtep = vtep_addresses.first().map(|ip| Vtep {
            ip: *ip,
            mac: vtep_mac(node, &spec.name),
        });
        Ok(NetworkState {
            mtu: spec.effective_mtu(underlay_mtu),
            vtep,
            vtep_addresses,
            spec,
            allocator: Mutex::new(allocator),
            claiming: Mutex::new(()),
        })
    }

    /// The address families of the network's pools (`ipv6` flags), IPv4 first.
    pub fn families(&self) -> Vec<bool> {
        strait_dataplane::families(self.spec.pools.iter().map(|p| p.pool.cidr.addr()))
    }

    /// A pod's addresses (as host prefixes), one of each family the network has, IPv4 first:
    /// `given` (a fixed address already reserved) for its family, from `pool` when one is named
    /// for its family, else from the family's pools that `may_draw_from` allows (none allowed:
    /// refused). If one family fails, the addresses of the others (`given` included) are
    /// released.
    pub(super) async fn allocate(
        &self,
        store: &impl Store,
        node: &str,
        pool: Option<&str>,
        given: Option<IpNet>,
        may_draw_from: impl Fn(&str) -> bool,
    ) -> Result<Vec<IpNet>, AgentError> {
        let mut out: Vec<IpNet> = given.into_iter().collect();
        for ipv6 in self.families() {
            if given.is_some_and(|g| g.addr().is_ipv6() == ipv6) {
                continue;
            }
            let one = match self.pools_for(ipv6, pool, given.is_some(), &may_draw_from) {
                Ok(pools) => self.allocate_from(store, node, ipv6, pools).await,
                Err(e) => Err(e),
            };
            match one {
                Ok(a) => out.push(a),
                Err(e) => {
                    self.release(&out).await;
                    return Err(e);
                }
            }
        }
        out.sort_by_key(|a| a.addr().is_ipv6());
        Ok(out)
    }

    /// The pools a family's address may come from: `named` if it is of that family, else those
    /// `may_draw_from` allows. A named pool this network does not have is refused, unless the
    /// pod has a fixed address (which decides its pool).
    fn pools_for(
        &self,
        ipv6: bool,
        named: Option<&str>,
        fixed: bool,
        may_draw_from: &impl Fn(&str) -> bool,
    ) -> Result<Vec<&NetworkPool>, AgentError> {
        let of_family = |p: &&NetworkPool| p.pool.cidr.addr().is_ipv6() == ipv6;
        match named.map(|name| self.spec.pools.iter().find(|p| p.pool.name == name)) {
            Some(Some(p)) if of_family(&p) => return Ok(vec![p]),
            Some(None) if !fixed => {
                return Err(AgentError::UnknownPool {
                    network: self.spec.name.clone(),
                    pool: named.unwrap_or_default().to_string(),
                    known: self
                        .spec
                        .pools
                        .iter()
                        .map(|p| p.pool.name.clone())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            _ => {}
        }
        let pools: Vec<&NetworkPool> = self
            .spec
            .pools
            .iter()
            .filter(of_family)
            .filter(|p| may_draw_from(&p.pool.name))
            .collect();
        if pools.is_empty() {
            return Err(AgentError::NotAllowed {
                reason: format!(
                    "the pod's namespace may use none of network {}'s {} pools ({}); the \
                     cluster admin lists the pools it may use in the namespace's {} annotation",
                    self.spec.name,
                    family_name(ipv6),
                    self.spec
                        .pools
                        .iter()
                        .filter(of_family)
                        .map(|p| p.pool.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    crate::tenancy::ALLOWED_POOLS,
                ),
            });
        }
        Ok(pools)
    }

    /// One address of a family from `pools` (of that family), claiming a block if this node's
    /// are full.
    async fn allocate_from(
        &self,
        store: &impl Store,
        node: &str,
        ipv6: bool,
        pools: Vec<&NetworkPool>,
    ) -> Result<IpNet, AgentError> {
        // Only the blocks of these pools: the node may hold blocks of pools the pod may not use.
        let cidrs: Vec<IpNet> = pools.iter().map(|p| p.pool.cidr).collect();
        let within = Some(cidrs.as_slice());
        if let Some(ip) = self.allocator.lock().await.allocate_within(ipv6, within) {
            return Ok(IpNet::from(ip));
        }
        let _one_claim = self.claiming.lock().await;
        // The claim that was in flight may have made room.
        if let Some(ip) = self.allocator.lock().await.allocate_within(ipv6, within) {
            return Ok(IpNet::from(ip));
        }
        let block = claim_from(store, pools.into_iter(), node, &self.spec).await?;
        let mut allocator = self.allocator.lock().await;
        allocator.add_block(block);
        allocator
            .allocate_within(ipv6, within)
            .map(IpNet::from)
            .ok_or_else(|| AgentError::Exhausted {
                network: self.spec.name.clone(),
                pools: format!("{block}, claimed just now, is already full"),
            })
    }

    /// The address a pod asked for: it must be in one of the network's pools, free, and in a
    /// block this node holds or can claim.
    pub(super) async fn allocate_fixed(
        &self,
        store: &impl Store,
        node: &str,
        ip: IpAddr,
    ) -> Result<IpNet, AgentError> {
        let unavailable = |reason: String| AgentError::AddressUnavailable {
            address: ip,
            reason,
        };
        let pool = self
            .spec
            .pools
            .iter()
            .find(|p| p.pool.cidr.contains(&ip))
            .ok_or_else(|| AgentError::AddressInvalid {
                address: ip.to_string(),
                reason: format!(
                    "it is in none of network {}'s pools ({})",
                    self.spec.name,
                    self.spec
                        .pools
                        .iter()
                        .map(|p| p.pool.cidr.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })?;
        let taken = || {
            unavailable(
                "another pod on this node has it (or it is its block's reserved first address)"
                    .into(),
            )
        };
        match self.allocator.lock().await.reserve(ip) {
            Ok(()) => return Ok(IpNet::from(ip)),
            Err(IpamError::AlreadyAllocated { .. }) => return Err(taken()),
            Err(IpamError::NotInOwnedBlock { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let _one_claim = self.claiming.lock().await;
        let claimed = match self.allocator.lock().await.reserve(ip) {
            // A claim in flight brought the block in.
            Ok(()) => return Ok(IpNet::from(ip)),
            Err(IpamError::AlreadyAllocated { .. }) => return Err(taken()),
            Err(_) => claim_block_of(store, &pool.pool, node, ip).await,
        };
        let block = match claimed {
            Ok(block) => block,
            Err(IpamError::BlockHeld {
                block,
                node: holder,
            }) => {
                return Err(unavailable(format!(
                    "its block {block} belongs to node {holder}: a pod with this address must run there"
                )));
            }
            Err(e) => return Err(e.into()),
        };
        let mut allocator = self.allocator.lock().await;
        allocator.add_block(block);
        allocator
            .reserve(ip)
            .map(|()| IpNet::from(ip))
            .map_err(|e| match e {
                IpamError::AlreadyAllocated { .. } => taken(),
                e => e.into(),
            })
    }

    /// Claims again every block this node allocates from, for a node whose blocks may have been
    /// taken back while it was deleted from the cluster. Another node holding one of them is
    /// [`IpamError::BlockHeld`]: this node can no longer use it.
    pub(super) async fn claim_held(&self, store: &impl Store, node: &str) -> Result<(), IpamError> {
        let blocks: Vec<IpNet> = self.allocator.lock().await.blocks().collect();
        for block in blocks {
            for p in self.spec.pools.iter().filter(|p| p.pool.holds_block(block)) {
                claim_block_of(store, &p.pool, node, block.network()).await?;
            }
        }
        Ok(())
    }

    /// Whether a pod could get an address now: for each family of the network, this node's
    /// blocks have room or a pool has a free block; why not, otherwise.
    pub(super) async fn can_allocate(&self, store: &impl Store) -> Result<(), String> {
        for ipv6 in self.families() {
            let usage = self.allocator.lock().await.usage_of(ipv6);
            if usage.allocated < usage.capacity {
                continue;
            }
            let mut free = false;
            for p in self
                .spec
                .pools
                .iter()
                .filter(|p| p.pool.cidr.addr().is_ipv6() == ipv6)
            {
                match has_free_block(store, &p.pool).await {
                    Ok(true) => {
                        free = true;
                        break;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        return Err(format!(
                            "network {}: this node's {} blocks are full and the cluster store \
                             cannot say whether a block is free: {e}",
                            self.spec.name,
                            family_name(ipv6)
                        ));
                    }
                }
            }
            if !free {
                return Err(format!(
                    "network {}: this node's {} blocks are full and every block of its {} \
                     pools is taken",
                    self.spec.name,
                    family_name(ipv6),
                    family_name(ipv6)
                ));
            }
        }
        Ok(())
    }

    /// Per family of the network (`ipv6` flag), the usage of this node's blocks.
    pub async fn usage_by_family(&self) -> Vec<(bool, Usage)> {
        let allocator = self.allocator.lock().await;
        self.families()
            .into_iter()
            .map(|ipv6| (ipv6, allocator.usage_of(ipv6)))
            .collect()
    }

    /// The blocks of this node's that hold no allocated address, except the VTEP's.
    pub(super) async fn empty_blocks(&self) -> Vec<IpNet> {
        let mut empty = self.allocator.lock().await.empty_blocks();
        empty.retain(|b| !self.vtep_addresses.iter().any(|ip| b.contains(ip)));
        empty
    }

    /// The store's name for `block`, one of the blocks of the network's pools.
    pub(super) fn block_name(&self, block: IpNet) -> Option<String> {
        self.spec
            .pools
            .iter()
            .find(|p| p.pool.holds_block(block))
            .map(|p| p.pool.block_name(block))
    }

    /// Holds off block claims (for the time a block is being given back, so that no request
    /// takes it as still this node's meanwhile).
    pub(super) async fn hold_claims(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.claiming.lock().await
    }

    /// Stops allocating from `block` if it is still empty; whether it did.
    pub(super) async fn withdraw_block(&self, block: IpNet) -> bool {
        self.allocator.lock().await.remove_empty(block)
    }

    /// Allocates from `block` again (giving it back failed).
    pub(super) async fn restore_block(&self, block: IpNet) {
        self.allocator.lock().await.add_block(block);
    }

    pub(super) async fn release(&self, addresses: &[IpNet]) {
        let mut allocator = self.allocator.lock().await;
        for a in addresses {
            allocator.release(a.addr());
        }
    }

    pub async fn usage(&self) -> (Vec<IpNet>, Usage) {
        let allocator = self.allocator.lock().await;
        (allocator.blocks().collect(), allocator.usage())
    }

    /// The pools, as the overlay needs them.
    pub fn local_pools(&self) -> Vec<LocalPool> {
        self.spec
            .pools
            .iter()
            .map(|p| LocalPool {
                name: p.pool.name.clone(),
                cidr: p.pool.cidr,
                mode: p.mode,
            })
            .collect()
    }

    pub fn vtep_ip(&self) -> Option<IpAddr> {
        self.vtep.map(|v| v.ip)
    }
}

#[cfg(test)]
mod tests {
    use strait_ipam::Pool;
    use strait_store::EmbeddedStore;

    use super::*;

    fn pool(name: &str, cidr: &str, block_prefix: u8) -> NetworkPool {
        NetworkPool {
            pool: Pool::new(name, cidr.parse().unwrap(), block_prefix).unwrap(),
            mode: Mode::Vxlan,
            fixed_addresses: true,
        }
    }

    fn network(pools: Vec<NetworkPool>) -> Network {
        Network {
            name: "n".into(),
            pools,
            mtu: None,
            vni: 4096,
            snat: true,
            snat6: true,
            vxlan_overhead: 50,
        }
    }

    #[tokio::test]
    async fn a_pod_gets_one_address_per_family_and_a_failed_family_frees_the_others() {
        let dir = std::env::temp_dir().join(format!("strait-net-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = EmbeddedStore::open(&dir).unwrap();
        // An IPv6 pool of one block of 4 addresses: the first is the VTEP's, three for pods.
        let spec = network(vec![
            pool("n-v4", "10.1.0.0/24", 26),
            pool("n-v6", "fd00:1::/126", 126),
        ]);
        let net = NetworkState::load(&store, spec, "node", 1500)
            .await
            .unwrap();
        assert_eq!(
            net.vtep_addresses,
            [
                "10.1.0.0".parse::<IpAddr>().unwrap(),
                "fd00:1::".parse().unwrap()
            ]
        );
        let any = |_: &str| true;
        let first = net.allocate(&store, "node", None, None, any).await.unwrap();
        assert_eq!(
            first,
            [
                "10.1.0.1/32".parse().unwrap(),
                "fd00:1::1/128".parse().unwrap()
            ]
        );
        // A fixed IPv4 address: the IPv6 one is allocated beside it; a pool name the network
        // does not have is no matter then (the address decides its pool).
        let given = net
            .allocate_fixed(&store, "node", "10.1.0.9".parse().unwrap())
            .await
            .unwrap();
        let second = net
            .allocate(&store, "node", Some("elsewhere"), Some(given), any)
            .await
            .unwrap();
        assert_eq!(
            second,
            [
                "10.1.0.9/32".parse().unwrap(),
                "fd00:1::2/128".parse().unwrap()
            ]
        );
        let third = net.allocate(&store, "node", None, None, any).await.unwrap();
        assert_eq!(third[1], "fd00:1::3/128".parse().unwrap());
        // IPv6 is exhausted: the IPv4 address allocated for the pod goes back.
        let before = net.usage_by_family().await;
        let err = net
            .allocate(&store, "node", None, None, any)
            .await
            .unwrap_err();
        assert!(matches!(err, AgentError::Exhausted { .. }), "{err}");
        assert_eq!(net.usage_by_family().await, before);
        assert!(net.can_allocate(&store).await.unwrap_err().contains("IPv6"));
        let unknown = net.allocate(&store, "node", Some("nope"), None, any).await;
        assert!(matches!(unknown, Err(AgentError::UnknownPool { .. })));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn the_other_family_comes_only_from_pools_the_namespace_may_use() {
        let dir = std::env::temp_dir().join(format!("strait-net-ns-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = EmbeddedStore::open(&dir).unwrap();
        let spec = network(vec![
            pool("a-v4", "10.1.0.0/24", 26),
            pool("b-v4", "10.2.0.0/24", 26),
            pool("a-v6", "fd00:a::/120", 122),
            pool("b-v6", "fd00:b::/120", 122),
        ]);
        let net = NetworkState::load(&store, spec, "node", 1500)
            .await
            .unwrap();
        let team_a = |p: &str| p.starts_with("a-");
        // The namespace's pool is IPv4: the IPv6 address comes from team A's IPv6 pool.
        for _ in 0..70 {
            let got = net
                .allocate(&store, "node", Some("a-v4"), None, team_a)
                .await
                .unwrap();
            let pools = ["10.1.0.0/24", "fd00:a::/120"].map(|c| c.parse::<IpNet>().unwrap());
            assert!(
                pools[0].contains(&got[0]) && pools[1].contains(&got[1]),
                "{got:?}"
            );
        }
        // The pod names team A's IPv6 pool: its IPv4 address comes from team A's IPv4 pool.
        let got = net
            .allocate(&store, "node", Some("a-v6"), None, team_a)
            .await
            .unwrap();
        assert!(
            "10.1.0.0/24".parse::<IpNet>().unwrap().contains(&got[0]),
            "{got:?}"
        );
        assert!(
            "fd00:a::/120".parse::<IpNet>().unwrap().contains(&got[1]),
            "{got:?}"
        );
        // A namespace allowed no IPv6 pool: refused, and its IPv4 address freed.
        let before = net.usage_by_family().await;
        let only_v4 = |p: &str| p == "a-v4";
        let refused = net
            .allocate(&store, "node", Some("a-v4"), None, only_v4)
            .await
            .unwrap_err();
        assert!(
            matches!(&refused, AgentError::NotAllowed { reason } if reason.contains("IPv6 pools (a-v6, b-v6)")),
            "{refused}"
        );
        assert_eq!(net.usage_by_family().await, before);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn blocks_the_node_holds_of_other_pools_stay_out_of_reach() {
        let dir = std::env::temp_dir().join(format!("strait-net-held-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = EmbeddedStore::open(&dir).unwrap();
        // The VTEP's blocks come from the first pool of each family: b-v4 and b-v6, which the
        // namespace below may not use, though the node holds them with room to spare.
        let spec = network(vec![
            pool("b-v4", "10.2.0.0/24", 26),
            pool("a-v4", "10.1.0.0/24", 26),
            pool("b-v6", "fd00:b::/120", 122),
            pool("a-v6", "fd00:a::/120", 122),
            pool("c-v6", "fd00:c::/120", 122),
        ]);
        let net = NetworkState::load(&store, spec, "node", 1500)
            .await
            .unwrap();
        let allowed = |p: &str| ["a-v4", "a-v6", "c-v6"].contains(&p);
        let b: [IpNet; 2] = [
            "10.2.0.0/24".parse().unwrap(),
            "fd00:b::/120".parse().unwrap(),
        ];
        for _ in 0..20 {
            let got = net
                .allocate(&store, "node", Some("a-v4"), None, allowed)
                .await
                .unwrap();
            assert!(
                got.iter().all(|a| b.iter().all(|pool| !pool.contains(a))),
                "{got:?}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
