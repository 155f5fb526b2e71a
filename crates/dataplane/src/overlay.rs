//! Node-to-node networking as pure data: what this node must hold to reach the other nodes'
//! pods, added to the node model by [`contribute`] from this node's settings and the cluster
//! view. A block belongs to a network through the pool it was cut from, so two networks may use
//! the same ranges:
//!
//! - per network with a VXLAN pool, one device `strait.<vni>` (`nolearning`, port 4789, `local` =
//!   this node's address of the underlay family VXLAN runs over, IPv4 by default; MTU =
//!   underlay − 50 over IPv4, − 70 over IPv6) holding this node's VTEP address as a /32;
//! - per remote node and such network: an FDB entry `VTEP_MAC dst NODE_ADDRESS` (of that
//!   family; a peer without one is not reached) and a neighbour `VTEP_IP lladdr VTEP_MAC`, both
//!   permanent;
//! - per remote node, a nexthop object (a [`Hop`]): `via VTEP_IP dev strait.<vni> onlink` for
//!   VXLAN pools, `via NODE_ADDRESS dev UNDERLAY` for routed pools;
//! - per remote block, a route in its network's table through its node's hop, tagged with
//!   Strait's protocol.
//!
//! Routes through a shared nexthop object are several times cheaper for the kernel to build than
//! routes that each carry their own gateway, and a peer's routes go with its nexthop.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use strait_netlink::MacAddr;

use crate::model::{
    Desired, Family, Fdb, Hop, LinkKind, LinkSpec, Neigh, NetId, PeerRoute, Rule, Table,
};
use crate::naming::link_local;

/// How a pool's blocks reach other nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Encapsulated in VXLAN: works across any underlay that carries UDP.
    #[default]
    Vxlan,
    /// Plain routes via the node's address: no overhead, nodes on one L2 segment only.
    Routed,
}

pub const VXLAN_PORT: u16 = 4789;
/// IPv4 + UDP + VXLAN + inner Ethernet headers.
pub const VXLAN_OVERHEAD: u32 = 50;
/// The same over an IPv6 underlay (its header is 20 bytes longer).
pub const VXLAN6_OVERHEAD: u32 = 70;

/// What VXLAN takes from the underlay's MTU, over an IPv6 underlay or an IPv4 one.
pub fn vxlan_overhead(over_ipv6: bool) -> u32 {
    if over_ipv6 {
        VXLAN6_OVERHEAD
    } else {
        VXLAN_OVERHEAD
    }
}

/// The VXLAN device name of a network: `strait.<vni>` (at most 15 characters).
pub fn device_name(vni: u32) -> String {
    format!("strait.{vni}")
}

/// Is `name` one of Strait's VXLAN devices?
pub fn is_device(name: &str) -> bool {
    name.strip_prefix("strait.")
        .is_some_and(|vni| !vni.is_empty() && vni.bytes().all(|b| b.is_ascii_digit()))
}

/// A VXLAN tunnel endpoint: the device's MAC, and its first address (IPv4 when the network
/// has IPv4 pools), through which peers route IPv4 blocks. IPv6 blocks are routed through the
/// device's link-local address, which follows from its MAC ([`link_local`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Vtep {
    pub ip: IpAddr,
    pub mac: MacAddr,
}

impl Vtep {
    /// The IPv6 next hop of blocks behind this endpoint.
    pub fn link_local(&self) -> IpAddr {
        IpAddr::V6(link_local(self.mac))
    }
}

/// This node, as the reconciler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalNode {
    pub name: String,
    /// Its IPv4 underlay address, if it has one.
    pub address4: Option<Ipv4Addr>,
    /// Its IPv6 underlay address, if it has one (a node has one or both).
    pub address6: Option<Ipv6Addr>,
    /// VXLAN runs over the IPv6 underlay (else the IPv4 one).
    pub vxlan_over_ipv6: bool,
    /// The underlay device (holding its addresses).
    pub underlay: String,
    pub networks: Vec<LocalNetwork>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalNetwork {
    pub id: NetId,
    pub vni: u32,
    /// The VXLAN device's MTU.
    pub mtu: u32,
    /// This node's VTEP, when a pool of the network uses VXLAN.
    pub vtep: Option<Vtep>,
    /// The VTEP's addresses on this node, one per family with a VXLAN pool: the source of the
    /// node's own packets to other nodes' pods.
    pub vtep_addresses: Vec<IpAddr>,
    /// The routing table that holds the network's routes.
    pub table: Table,
    pub pools: Vec<LocalPool>,
}

/// One of a network's address pools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalPool {
    pub name: String,
    pub cidr: IpNet,
    pub mode: Mode,
}

/// Another node, as the cluster store describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub address: IpAddr,
    /// Its IPv6 underlay address, if it has one besides `address`.
    pub address6: Option<IpAddr>,
    /// It runs VXLAN over its IPv6 underlay address (else its IPv4 one).
    pub vxlan_over_ipv6: bool,
    /// Per network, its VTEP.
    pub vteps: BTreeMap<NetId, Vtep>,
}

/// A block of addresses: which pool it was cut from, and its range. Two pools (of two
/// networks) may cut the same range.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockKey {
    pub pool: String,
    pub cidr: IpNet,
}

/// What the cluster store says about every node and block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterView {
    pub nodes: BTreeMap<String, Peer>,
    /// Block → the node holding it.
    pub blocks: BTreeMap<BlockKey, String>,
}

/// The mode of `block` in `network`, if the block was cut from one of its pools.
fn mode_of(network: &LocalNetwork, block: &BlockKey) -> Option<Mode> {
    network
        .pools
        .iter()
        .find(|p| p.name == block.pool && p.cidr.contains(&block.cidr))
        .map(|p| p.mode)
}

impl LocalNetwork {
    /// Whether the network has an IPv6 pool that crosses nodes over VXLAN.
    fn has_ipv6_vxlan(&self) -> bool {
        self.vxlan_families().any(|f| f == Family::V6)
    }

    /// The families of the network's pools that cross nodes over VXLAN.
    fn vxlan_families(&self) -> impl Iterator<Item = Family> + '_ {
        Family::BOTH.into_iter().filter(|family| {
            self.pools
                .iter()
                .any(|p| p.mode == Mode::Vxlan && Family::of(p.cidr.addr()) == *family)
        })
    }
}

impl LocalNode {
    /// The node holding each block this node routes to, by the route's table and destination.
    pub fn block_owners<'a>(&self, cluster: &'a ClusterView) -> BTreeMap<(Table, IpNet), &'a str> {
        let mut out = BTreeMap::new();
        for network in &self.networks {
            for (block, node) in &cluster.blocks {
                if mode_of(network, block).is_some() {
                    out.insert((network.table, block.cidr), node.as_str());
                }
            }
        }
        out
    }
}

/// Why this node cannot route one of a peer's blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreachable {
    /// A routed block of this family, and the peer announces no underlay address of it.
    NoRoutedAddress { ipv6: bool },
    /// The peer announces no underlay address of the family VXLAN runs over.
    PeerWithout { ipv6: bool },
    /// This node has no underlay address of the family VXLAN runs over.
    NodeWithout { ipv6: bool },
    /// The peer runs VXLAN over the other underlay family (`vxlan_underlay` differs).
    OtherVxlanFamily,
    /// The peer announces no VTEP (or none of the block's family) for the network.
    NoVtep,
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unreachable::NoRoutedAddress { ipv6 } => {
                let family = family_name(*ipv6);
                write!(
                    f,
                    "the block is routed through the node's {family} underlay address, which it \
                     does not announce (no global {family} address on its underlay, or an older \
                     agent)"
                )
            }
            Unreachable::PeerWithout { ipv6 } => write!(
                f,
                "VXLAN runs over {0} (vxlan_underlay) and the node announces no {0} underlay \
                 address",
                family_name(*ipv6)
            ),
            Unreachable::NodeWithout { ipv6 } => write!(
                f,
                "VXLAN runs over {0} (vxlan_underlay) and this node has no {0} underlay address",
                family_name(*ipv6)
            ),
            Unreachable::OtherVxlanFamily => f.write_str(
                "the node runs VXLAN over the other underlay family (vxlan_underlay differs \
                 between the two nodes; every node of a cluster must have the same)",
            ),
            Unreachable::NoVtep => {
                f.write_str("the node announces no VXLAN endpoint for the block's network")
            }
        }
    }
}

/// "IPv4" or "IPv6".
pub fn family_name(ipv6: bool) -> &'static str {
    if ipv6 { "IPv6" } else { "IPv4" }
}

/// One of a peer's blocks that this node cannot route, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreachableBlock {
    pub node: String,
    pub network: NetId,
    pub block: IpNet,
    pub why: Unreachable,
}

impl LocalNode {
    /// VXLAN's outer address of a node with these underlay addresses: of the family VXLAN runs
    /// over.
    fn outer(&self, v4: Option<IpAddr>, v6: Option<IpAddr>) -> Option<IpAddr> {
        match self.vxlan_over_ipv6 {
            true => v6,
            false => v4,
        }
    }

    /// This node's VXLAN source address.
    fn vxlan_source(&self) -> Option<IpAddr> {
        self.outer(self.address4.map(Into::into), self.address6.map(Into::into))
    }

    /// Where this node's VXLAN packets to `peer` go, or why they cannot.
    fn vxlan_destination(&self, peer: &Peer) -> Result<IpAddr, Unreachable> {
        let ipv6 = self.vxlan_over_ipv6;
        if peer.vxlan_over_ipv6 != ipv6 {
            return Err(Unreachable::OtherVxlanFamily);
        }
        if self.vxlan_source().is_none() {
            return Err(Unreachable::NodeWithout { ipv6 });
        }
        // A node without IPv4 announces its IPv6 address as its address.
        let v4 = Some(peer.address).filter(IpAddr::is_ipv4);
        self.outer(v4, peer.address6)
            .ok_or(Unreachable::PeerWithout { ipv6 })
    }

    /// The next hop of `peer`'s `block` in `network`: `None` when the block is not one of the
    /// network's pools, else the hop or why there is none. VXLAN: IPv6 through the peer
    /// device's link-local address (a gateway on the link by definition), IPv4 through its
    /// VTEP address, declared on the link. Routed: through the peer's underlay address of the
    /// block's family.
    fn hop(
        &self,
        network: &LocalNetwork,
        block: &BlockKey,
        peer: &Peer,
    ) -> Option<Result<Hop, Unreachable>> {
        let ipv6 = block.cidr.addr().is_ipv6();
        Some(match mode_of(network, block)? {
            Mode::Vxlan => {
                let device: Arc<str> = device_name(network.vni).into();
                self.vxlan_destination(peer)
                    .and_then(|_| match peer.vteps.get(&network.id) {
                        Some(v) if ipv6 => Ok(Hop {
                            device,
                            gateway: v.link_local(),
                            onlink: false,
                        }),
                        Some(v) if v.ip.is_ipv4() => Ok(Hop {
                            device,
                            gateway: v.ip,
                            onlink: true,
                        }),
                        _ => Err(Unreachable::NoVtep),
                    })
            }
            Mode::Routed => [Some(peer.address), peer.address6]
                .into_iter()
                .flatten()
                .find(|a| a.is_ipv6() == ipv6)
                .map(|gateway| Hop {
                    device: self.underlay.as_str().into(),
                    gateway,
                    onlink: false,
                })
                .ok_or(Unreachable::NoRoutedAddress { ipv6 }),
        })
    }

    /// Each network's blocks held by other nodes, with their hop or why there is none.
    fn peer_blocks<'a>(
        &'a self,
        cluster: &'a ClusterView,
    ) -> impl Iterator<
        Item = (
            &'a LocalNetwork,
            &'a BlockKey,
            &'a str,
            Result<Hop, Unreachable>,
        ),
    > {
        self.networks.iter().flat_map(move |network| {
            cluster.blocks.iter().filter_map(move |(block, owner)| {
                let peer = cluster.nodes.get(owner).filter(|_| *owner != self.name)?;
                let hop = self.hop(network, block, peer)?;
                Some((network, block, owner.as_str(), hop))
            })
        })
    }

    /// Other nodes' blocks this node cannot route, and why.
    pub fn unreachable(&self, cluster: &ClusterView) -> Vec<UnreachableBlock> {
        self.peer_blocks(cluster)
            .filter_map(|(network, block, node, hop)| {
                hop.err().map(|why| UnreachableBlock {
                    node: node.to_string(),
                    network: network.id.clone(),
                    block: block.cidr,
                    why,
                })
            })
            .collect()
    }
}

/// Adds to `out` what this node must hold to reach the other nodes' pods, from its own
/// settings and the cluster view.
pub fn contribute(local: &LocalNode, cluster: &ClusterView, out: &mut Desired) {
    let source = local.vxlan_source();
    for network in &local.networks {
        let name = device_name(network.vni);
        let device: Arc<str> = name.as_str().into();
        let (Some(vtep), Some(source)) = (network.vtep, source) else {
            continue;
        };
        let ipv6 = network.has_ipv6_vxlan();
        let mut addresses: Vec<IpNet> = network
            .vtep_addresses
            .iter()
            .copied()
            .map(IpNet::from)
            .collect();
        if ipv6 {
            addresses.push(IpNet::new(vtep.link_local(), 64).expect("a /64 fits IPv6"));
        }
        out.links.insert(
            name.clone(),
            LinkSpec {
                kind: LinkKind::Vxlan {
                    vni: network.vni,
                    local: source,
                    underlay: local.underlay.clone(),
                },
                mac: vtep.mac,
                mtu: network.mtu,
                addresses,
            },
        );
        // What peers send a network with a table of its own is looked up there.
        if network.table != Table::MAIN {
            out.rules.extend(
                network
                    .vxlan_families()
                    .map(|family| Rule::arriving_on(family, &device, network.table)),
            );
        }
        for (name, peer) in &cluster.nodes {
            if *name == local.name {
                continue;
            }
            let (Some(theirs), Ok(dst)) =
                (peer.vteps.get(&network.id), local.vxlan_destination(peer))
            else {
                continue;
            };
            out.fdb.insert(Fdb {
                device: Arc::clone(&device),
                mac: theirs.mac,
                dst,
            });
            let ips = [
                theirs.ip.is_ipv4().then_some(theirs.ip),
                ipv6.then(|| theirs.link_local()),
            ];
            for ip in ips.into_iter().flatten() {
                out.neighbours.insert(Neigh {
                    device: Arc::clone(&device),
                    ip,
                    mac: theirs.mac,
                });
            }
        }
    }
    for (network, block, _, hop) in local.peer_blocks(cluster) {
        if let Ok(hop) = hop {
            out.hops.insert(hop.clone());
            out.routes.insert(PeerRoute {
                table: network.table,
                dst: block.cidr,
                hop,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::model::{Actual, Op, plan};

    fn desired(local: &LocalNode, cluster: &ClusterView) -> Desired {
        let mut out = Desired::default();
        contribute(local, cluster, &mut out);
        out
    }

    fn block(pool: &str, cidr: &str) -> BlockKey {
        BlockKey {
            pool: pool.into(),
            cidr: cidr.parse().unwrap(),
        }
    }

    fn mac(n: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, n])
    }

    fn local(mode: Mode) -> LocalNode {
        LocalNode {
            name: "a".into(),
            address4: Some(Ipv4Addr::new(192, 168, 0, 1)),
            address6: None,
            vxlan_over_ipv6: false,
            underlay: "eth0".into(),
            networks: vec![LocalNetwork {
                id: NetId::new("pods"),
                vni: 4096,
                mtu: 1450,
                vtep: (mode == Mode::Vxlan).then_some(Vtep {
                    ip: IpAddr::V4(Ipv4Addr::new(10, 244, 0, 0)),
                    mac: mac(1),
                }),
                vtep_addresses: match mode {
                    Mode::Vxlan => vec![IpAddr::V4(Ipv4Addr::new(10, 244, 0, 0))],
                    Mode::Routed => vec![],
                },
                table: Table::MAIN,
                pools: vec![LocalPool {
                    name: "default".into(),
                    cidr: "10.244.0.0/16".parse().unwrap(),
                    mode,
                }],
            }],
        }
    }

    fn cluster() -> ClusterView {
        let node = |i: u8| Peer {
            address: IpAddr::V4(Ipv4Addr::new(192, 168, 0, i)),
            address6: None,
            vxlan_over_ipv6: false,
            vteps: BTreeMap::from([(
                NetId::new("pods"),
                Vtep {
                    ip: IpAddr::V4(Ipv4Addr::new(10, 244, 0, (i - 1) * 64)),
                    mac: mac(i),
                },
            )]),
        };
        ClusterView {
            nodes: BTreeMap::from([("a".into(), node(1)), ("b".into(), node(2))]),
            blocks: BTreeMap::from([
                (block("default", "10.244.0.0/26"), "a".to_string()),
                (block("default", "10.244.0.64/26"), "b".to_string()),
                // A block of a node that has left: no route.
                (block("default", "10.244.0.128/26"), "gone".to_string()),
                // A block of another network's pool: not ours to route.
                (block("other", "10.99.0.0/26"), "b".to_string()),
                // The same range as one of ours, cut from another network's pool.
                (block("other", "10.244.0.192/26"), "b".to_string()),
            ]),
        }
    }

    fn vxlan_hop() -> Hop {
        Hop {
            device: "strait.4096".into(),
            gateway: "10.244.0.64".parse().unwrap(),
            onlink: true,
        }
    }

    fn ids(d: &Desired) -> BTreeMap<Hop, u32> {
        d.hops.iter().cloned().zip(100..).collect()
    }

    #[test]
    fn vxlan_desires_a_device_and_per_peer_entries_hops_and_routes() {
        let (l, c) = (local(Mode::Vxlan), cluster());
        let d = desired(&l, &c);
        let dev = &d.links["strait.4096"];
        assert_eq!(
            (&dev.kind, dev.mtu),
            (
                &LinkKind::Vxlan {
                    vni: 4096,
                    local: l.address4.unwrap().into(),
                    underlay: "eth0".into()
                },
                1450
            )
        );
        assert_eq!(dev.addresses, ["10.244.0.0/32".parse().unwrap()]);
        assert_eq!(
            d.fdb,
            BTreeSet::from([Fdb {
                device: "strait.4096".into(),
                mac: mac(2),
                dst: "192.168.0.2".parse().unwrap()
            }])
        );
        assert_eq!(
            d.neighbours,
            BTreeSet::from([Neigh {
                device: "strait.4096".into(),
                ip: "10.244.0.64".parse().unwrap(),
                mac: mac(2)
            }])
        );
        assert_eq!(d.hops, BTreeSet::from([vxlan_hop()]));
        assert_eq!(
            d.routes,
            BTreeSet::from([PeerRoute {
                table: Table::MAIN,
                dst: "10.244.0.64/26".parse().unwrap(),
                hop: vxlan_hop()
            }])
        );
    }

    /// The VXLAN node with an IPv6 pool beside its IPv4 one, and a peer holding a block of each.
    fn dual_stack() -> (LocalNode, ClusterView) {
        let mut l = local(Mode::Vxlan);
        let n = &mut l.networks[0];
        n.pools.push(LocalPool {
            name: "default6".into(),
            cidr: "fd00::/56".parse().unwrap(),
            mode: Mode::Vxlan,
        });
        n.vtep_addresses.push("fd00::".parse().unwrap());
        let mut c = cluster();
        c.blocks
            .insert(block("default6", "fd00::40/122"), "b".into());
        (l, c)
    }

    #[test]
    fn over_an_ipv6_underlay_vxlan_runs_between_the_nodes_ipv6_addresses() {
        let (mut l, mut c) = dual_stack();
        l.vxlan_over_ipv6 = true;
        l.address6 = Some("fd00:fab::1".parse().unwrap());
        // Node "b" has an IPv6 underlay address; node "c" has none, and cannot be reached.
        c.nodes.values_mut().for_each(|p| p.vxlan_over_ipv6 = true);
        c.nodes.get_mut("b").unwrap().address6 = Some("fd00:fab::2".parse().unwrap());
        let mut third = c.nodes["b"].clone();
        third.address = "192.168.0.3".parse().unwrap();
        third.address6 = None;
        third.vteps.values_mut().for_each(|v| v.mac = mac(3));
        c.nodes.insert("c".into(), third);
        c.blocks
            .insert(block("default", "10.244.1.0/26"), "c".into());
        let d = desired(&l, &c);
        let LinkKind::Vxlan { local, .. } = d.links["strait.4096"].kind;
        assert_eq!(local, "fd00:fab::1".parse::<IpAddr>().unwrap());
        let dsts: Vec<IpAddr> = d.fdb.iter().map(|f| f.dst).collect();
        assert_eq!(dsts, ["fd00:fab::2".parse::<IpAddr>().unwrap()]);
        assert!(d.neighbours.iter().all(|n| n.mac == mac(2)));
        let routes: Vec<String> = d.routes.iter().map(|r| r.dst.to_string()).collect();
        assert_eq!(routes, ["10.244.0.64/26", "fd00::40/122"]);
        let why: Vec<(String, Unreachable)> = l
            .unreachable(&c)
            .into_iter()
            .map(|u| (format!("{} {}", u.node, u.block), u.why))
            .collect();
        assert_eq!(
            why,
            [(
                "c 10.244.1.0/26".to_string(),
                Unreachable::PeerWithout { ipv6: true }
            )]
        );
        // A node still running VXLAN over IPv4 is not sent anything, and is reported.
        let mut mixed = c.clone();
        mixed.nodes.get_mut("b").unwrap().vxlan_over_ipv6 = false;
        assert!(desired(&l, &mixed).fdb.is_empty());
        assert!(
            l.unreachable(&mixed)
                .iter()
                .any(|u| u.node == "b" && u.why == Unreachable::OtherVxlanFamily)
        );

        // Without an IPv6 address of its own, the node builds no device at all, and says so.
        l.address6 = None;
        let d = desired(&l, &c);
        assert!(d.links.is_empty() && d.routes.is_empty() && d.fdb.is_empty());
        assert!(
            l.unreachable(&c)
                .iter()
                .all(|u| u.why == Unreachable::NodeWithout { ipv6: true })
        );
        assert_eq!(l.unreachable(&c).len(), 3);
    }

    #[test]
    fn a_node_with_an_ipv6_underlay_alone_is_reached_over_ipv6_and_never_over_ipv4() {
        let (mut l, mut c) = dual_stack();
        l.vxlan_over_ipv6 = true;
        l.address6 = Some("fd00:fab::1".parse().unwrap());
        // Node "b" has IPv6 alone: it announces that address as its address, and as address6.
        let v6: IpAddr = "fd00:fab::2".parse().unwrap();
        let b = c.nodes.get_mut("b").unwrap();
        (b.address, b.address6, b.vxlan_over_ipv6) = (v6, Some(v6), true);
        let d = desired(&l, &c);
        let dsts: Vec<IpAddr> = d.fdb.iter().map(|f| f.dst).collect();
        assert_eq!(dsts, [v6]);
        assert!(l.unreachable(&c).is_empty());
        // This node without IPv4 of its own: the same.
        l.address4 = None;
        assert_eq!(desired(&l, &c), d);

        // A node running VXLAN over IPv4 never sends it to such a peer's IPv6 address (were the
        // peer to claim IPv4 VXLAN, it has no IPv4 address to receive it).
        let mut over_v4 = c.clone();
        over_v4.nodes.get_mut("b").unwrap().vxlan_over_ipv6 = false;
        let mut l4 = l.clone();
        (l4.vxlan_over_ipv6, l4.address4) = (false, Some(Ipv4Addr::new(192, 168, 0, 1)));
        assert!(desired(&l4, &over_v4).fdb.is_empty());
        assert!(
            l4.unreachable(&over_v4)
                .iter()
                .all(|u| u.why == Unreachable::PeerWithout { ipv6: false })
        );
        // Nor does a node without IPv4 run VXLAN over IPv4.
        l4.address4 = None;
        assert!(desired(&l4, &over_v4).links.is_empty());
        assert!(
            l4.unreachable(&over_v4)
                .iter()
                .all(|u| u.why == Unreachable::NodeWithout { ipv6: false })
        );

        // A routed IPv4 block of a peer without IPv4 has no next hop; its IPv6 block has one.
        let mut routed = l.clone();
        for n in &mut routed.networks {
            n.pools.iter_mut().for_each(|p| p.mode = Mode::Routed);
        }
        let why: Vec<(String, Unreachable)> = routed
            .unreachable(&c)
            .into_iter()
            .map(|u| (u.block.to_string(), u.why))
            .collect();
        assert_eq!(
            why,
            [(
                "10.244.0.64/26".to_string(),
                Unreachable::NoRoutedAddress { ipv6: false }
            )]
        );
        let hops: Vec<IpAddr> = desired(&routed, &c)
            .hops
            .iter()
            .map(|h| h.gateway)
            .collect();
        assert_eq!(hops, [v6]);
    }

    #[test]
    fn a_routed_block_of_a_family_its_node_has_no_address_of_is_reported_unreachable() {
        let l = local(Mode::Routed);
        let mut c = cluster();
        c.blocks
            .insert(block("default", "10.244.0.64/26"), "b".into());
        let mut l6 = l.clone();
        l6.networks[0].pools[0].cidr = "fd00::/56".parse().unwrap();
        c.blocks
            .insert(block("default", "fd00::40/122"), "b".into());
        let unreachable = l6.unreachable(&c);
        assert_eq!(unreachable.len(), 1, "{unreachable:?}");
        assert_eq!(
            unreachable[0].why,
            Unreachable::NoRoutedAddress { ipv6: true }
        );
        assert!(
            unreachable[0]
                .why
                .to_string()
                .contains("IPv6 underlay address")
        );
        assert!(l.unreachable(&c).is_empty());
    }

    #[test]
    fn ipv6_blocks_cross_vxlan_through_the_peer_devices_link_local_address() {
        let (l, c) = dual_stack();
        let d = desired(&l, &c);
        let dev = &d.links["strait.4096"];
        let peer_link_local: IpAddr = link_local(mac(2)).into();
        assert_eq!(
            dev.addresses,
            [
                "10.244.0.0/32".parse().unwrap(),
                "fd00::/128".parse().unwrap(),
                IpNet::new(link_local(mac(1)).into(), 64).unwrap(),
            ]
        );
        // One FDB entry per peer carries both families; a neighbour per family.
        assert_eq!(d.fdb.len(), 1);
        assert_eq!(
            d.neighbours
                .iter()
                .map(|n| (n.ip, n.mac))
                .collect::<Vec<_>>(),
            [
                ("10.244.0.64".parse().unwrap(), mac(2)),
                (peer_link_local, mac(2))
            ]
        );
        let hop6 = Hop {
            device: "strait.4096".into(),
            gateway: peer_link_local,
            onlink: false,
        };
        assert_eq!(d.hops, BTreeSet::from([vxlan_hop(), hop6.clone()]));
        assert!(d.routes.contains(&PeerRoute {
            table: Table::MAIN,
            dst: "fd00::40/122".parse().unwrap(),
            hop: hop6,
        }));
        assert!(d.routes.contains(&PeerRoute {
            table: Table::MAIN,
            dst: "10.244.0.64/26".parse().unwrap(),
            hop: vxlan_hop(),
        }));
        assert_eq!(plan(&d, &as_actual(&d)), vec![]);
    }

    #[test]
    fn a_routed_ipv6_block_needs_an_ipv6_node_address() {
        let (mut l, mut c) = dual_stack();
        l.networks[0].pools[1].mode = Mode::Routed;
        let d = desired(&l, &c);
        assert!(
            !d.routes.iter().any(|r| r.dst.addr().is_ipv6()),
            "{:?}",
            d.routes
        );
        c.nodes.get_mut("b").unwrap().address6 = Some("2001:db8::2".parse().unwrap());
        let d = desired(&l, &c);
        assert!(d.routes.contains(&PeerRoute {
            table: Table::MAIN,
            dst: "fd00::40/122".parse().unwrap(),
            hop: Hop {
                device: "eth0".into(),
                gateway: "2001:db8::2".parse().unwrap(),
                onlink: false,
            },
        }));
    }

    #[test]
    fn routed_pools_route_via_the_node_address_and_need_no_device() {
        let (l, c) = (local(Mode::Routed), cluster());
        let d = desired(&l, &c);
        assert!(d.links.is_empty() && d.fdb.is_empty() && d.neighbours.is_empty());
        let hop = Hop {
            device: "eth0".into(),
            gateway: "192.168.0.2".parse().unwrap(),
            onlink: false,
        };
        assert_eq!(d.hops, BTreeSet::from([hop.clone()]));
        assert_eq!(
            d.routes,
            BTreeSet::from([PeerRoute {
                table: Table::MAIN,
                dst: "10.244.0.64/26".parse().unwrap(),
                hop
            }])
        );
    }

    fn as_actual(d: &Desired) -> Actual {
        d.as_applied(&Actual::default(), &ids(d), 200)
    }

    #[test]
    fn nothing_to_do_when_the_kernel_matches() {
        let (l, c) = (local(Mode::Vxlan), cluster());
        let d = desired(&l, &c);
        assert_eq!(plan(&d, &as_actual(&d)), vec![]);
    }

    #[test]
    fn an_empty_kernel_gets_everything_device_first_hop_before_route() {
        let (l, c) = (local(Mode::Vxlan), cluster());
        let ops = plan(&desired(&l, &c), &Actual::default());
        assert!(matches!(&ops[0], Op::CreateLink(n, _) if n == "strait.4096"));
        assert_eq!(
            ops[1],
            Op::AddAddress("strait.4096".into(), "10.244.0.0/32".parse().unwrap())
        );
        assert_eq!(ops[2], Op::SetUp("strait.4096".into()));
        assert_eq!(ops[3], Op::AddHop(vxlan_hop()));
        assert!(matches!(ops.last(), Some(Op::SetRoute(_))));
        assert_eq!(ops.len(), 7, "{ops:?}");
    }

    #[test]
    fn each_kind_of_drift_gets_its_repair() {
        let (l, c) = (local(Mode::Vxlan), cluster());
        let d = desired(&l, &c);
        let full = as_actual(&d);
        let route = d.routes.iter().next().unwrap().clone();
        type Damage = Box<dyn Fn(&mut Actual)>;
        let cases: Vec<(&str, Damage, Vec<Op>)> = vec![
            (
                "route deleted",
                Box::new(|a: &mut Actual| a.routes.clear()),
                vec![Op::SetRoute(route.clone())],
            ),
            (
                "nexthop deleted (its routes with it)",
                Box::new(|a: &mut Actual| {
                    a.hops.clear();
                    a.routes.clear();
                }),
                vec![Op::AddHop(vxlan_hop()), Op::SetRoute(route.clone())],
            ),
            (
                "fdb deleted",
                Box::new(|a: &mut Actual| a.fdb.clear()),
                vec![Op::AddFdb(
                    "strait.4096".into(),
                    mac(2),
                    "192.168.0.2".parse().unwrap(),
                )],
            ),
            (
                "neighbour changed",
                Box::new(|a: &mut Actual| {
                    let n = a.neighbours.iter().next().unwrap().clone();
                    a.neighbours = BTreeSet::from([Neigh { mac: mac(9), ..n }]);
                }),
                vec![Op::SetNeighbour(
                    "strait.4096".into(),
                    "10.244.0.64".parse().unwrap(),
                    mac(2),
                )],
            ),
            (
                "device down",
                Box::new(|a: &mut Actual| a.links.get_mut("strait.4096").unwrap().up = false),
                vec![Op::SetUp("strait.4096".into())],
            ),
            (
                "mtu changed",
                Box::new(|a: &mut Actual| a.links.get_mut("strait.4096").unwrap().mtu = 1500),
                vec![Op::SetMtu("strait.4096".into(), 1450)],
            ),
            (
                "a stranger's route",
                Box::new({
                    let route = route.clone();
                    move |a: &mut Actual| {
                        a.routes.insert(PeerRoute {
                            dst: "10.1.0.0/26".parse().unwrap(),
                            ..route.clone()
                        });
                    }
                }),
                vec![Op::DelRoute(Table::MAIN, "10.1.0.0/26".parse().unwrap())],
            ),
            (
                "a route without our nexthop",
                Box::new(|a: &mut Actual| {
                    a.stray_routes
                        .push((Table::MAIN, "10.2.0.0/26".parse().unwrap()))
                }),
                vec![Op::DelRoute(Table::MAIN, "10.2.0.0/26".parse().unwrap())],
            ),
            (
                "a duplicate nexthop",
                Box::new(|a: &mut Actual| a.stray_hops.push(999)),
                vec![Op::DelHop(999)],
            ),
        ];
        for (what, damage, repair) in cases {
            let mut actual = full.clone();
            damage(&mut actual);
            assert_eq!(plan(&d, &actual), repair, "{what}");
        }
    }

    #[test]
    fn a_peer_whose_vtep_moved_gets_a_new_hop_and_its_routes_repointed() {
        let (l, c) = (local(Mode::Vxlan), cluster());
        let before = as_actual(&desired(&l, &c));
        let mut moved = c.clone();
        moved
            .nodes
            .get_mut("b")
            .unwrap()
            .vteps
            .get_mut(&NetId::new("pods"))
            .unwrap()
            .ip = IpAddr::V4(Ipv4Addr::new(10, 244, 0, 65));
        let ops = plan(&desired(&l, &moved), &before);
        assert!(ops.contains(&Op::DelHop(100)), "{ops:?}");
        assert!(ops.iter().any(
            |o| matches!(o, Op::AddHop(h) if h.gateway == IpAddr::V4(Ipv4Addr::new(10, 244, 0, 65)))
        ));
        assert!(ops.iter().any(|o| matches!(o, Op::SetRoute(_))));
        assert!(
            !ops.iter().any(|o| matches!(o, Op::DelRoute(..))),
            "re-pointed, not deleted: {ops:?}"
        );
    }

    #[test]
    fn a_device_with_other_settings_is_recreated_with_all_its_entries() {
        let (l, c) = (local(Mode::Vxlan), cluster());
        let d = desired(&l, &c);
        let mut actual = as_actual(&d);
        let link = actual.links.get_mut("strait.4096").unwrap();
        if let Some(LinkKind::Vxlan { vni, .. }) = &mut link.kind {
            *vni = 7;
        }
        let ops = plan(&d, &actual);
        assert_eq!(ops[0], Op::DeleteLink("strait.4096".into()));
        assert!(matches!(ops[1], Op::CreateLink(..)));
        assert!(ops.iter().any(|o| matches!(o, Op::AddFdb(..))));
        assert!(ops.iter().any(|o| matches!(o, Op::AddHop(..))));
        assert!(ops.iter().any(|o| matches!(o, Op::SetRoute(..))));
        assert!(
            !ops.iter()
                .any(|o| matches!(o, Op::DelFdb(..) | Op::DelRoute(..) | Op::DelHop(..)))
        );
    }

    #[test]
    fn a_departed_peer_is_removed_everywhere() {
        let (l, c) = (local(Mode::Vxlan), cluster());
        let before = as_actual(&desired(&l, &c));
        let mut after = c.clone();
        after.nodes.remove("b");
        let ops = plan(&desired(&l, &after), &before);
        assert_eq!(ops.len(), 4, "{ops:?}");
        assert!(ops.iter().all(|o| matches!(
            o,
            Op::DelFdb(..) | Op::DelNeighbour(..) | Op::DelRoute(..) | Op::DelHop(..)
        )));
    }

    /// Two networks whose pools cover the same range, each with its own routing table.
    fn two_overlapping_networks() -> (LocalNode, ClusterView) {
        let mut l = local(Mode::Vxlan);
        l.networks.push(LocalNetwork {
            id: NetId::new("tenant"),
            vni: 4097,
            mtu: 1450,
            vtep: Some(Vtep {
                ip: IpAddr::V4(Ipv4Addr::new(10, 244, 0, 1)),
                mac: mac(11),
            }),
            vtep_addresses: vec![IpAddr::V4(Ipv4Addr::new(10, 244, 0, 1))],
            table: Table(1001),
            pools: vec![LocalPool {
                name: "tenant".into(),
                cidr: "10.244.0.0/16".parse().unwrap(),
                mode: Mode::Vxlan,
            }],
        });
        let mut c = cluster();
        let b = c.nodes.get_mut("b").unwrap();
        b.vteps.insert(
            NetId::new("tenant"),
            Vtep {
                ip: IpAddr::V4(Ipv4Addr::new(10, 244, 0, 65)),
                mac: mac(12),
            },
        );
        c.blocks
            .insert(block("tenant", "10.244.0.64/26"), "b".to_string());
        (l, c)
    }

    fn tenant_route() -> PeerRoute {
        PeerRoute {
            table: Table(1001),
            dst: "10.244.0.64/26".parse().unwrap(),
            hop: Hop {
                device: "strait.4097".into(),
                gateway: "10.244.0.65".parse().unwrap(),
                onlink: true,
            },
        }
    }

    #[test]
    fn overlapping_networks_route_the_same_range_in_their_own_tables() {
        let (l, c) = two_overlapping_networks();
        let d = desired(&l, &c);
        assert_eq!(
            d.routes,
            BTreeSet::from([
                PeerRoute {
                    table: Table::MAIN,
                    dst: "10.244.0.64/26".parse().unwrap(),
                    hop: vxlan_hop()
                },
                tenant_route(),
            ])
        );
        assert_eq!(d.links.len(), 2);
        // What the tenant's peers send is looked up in its table; the main network needs no rule.
        assert_eq!(
            d.rules,
            BTreeSet::from([Rule::arriving_on(
                Family::V4,
                &"strait.4097".into(),
                Table(1001)
            )])
        );
        assert_eq!(plan(&d, &as_actual(&d)), vec![]);
    }

    #[test]
    fn drift_in_one_table_is_repaired_there_alone() {
        let (l, c) = two_overlapping_networks();
        let d = desired(&l, &c);
        let full = as_actual(&d);

        let mut lost = full.clone();
        lost.routes.remove(&tenant_route());
        assert_eq!(plan(&d, &lost), vec![Op::SetRoute(tenant_route())]);

        // A stranger's route to the same range in the tenant table goes; main's stays.
        let mut extra = full.clone();
        extra.routes.insert(PeerRoute {
            dst: "10.244.0.128/26".parse().unwrap(),
            ..tenant_route()
        });
        assert_eq!(
            plan(&d, &extra),
            vec![Op::DelRoute(
                Table(1001),
                "10.244.0.128/26".parse().unwrap()
            )]
        );

        // A deleted rule comes back; another table's rule on the tenant's device goes.
        let tenant_rule = Rule::arriving_on(Family::V4, &"strait.4097".into(), Table(1001));
        let mut unruled = full.clone();
        unruled.rules.clear();
        assert_eq!(plan(&d, &unruled), vec![Op::AddRule(tenant_rule.clone())]);
        let mut misruled = full.clone();
        let stray = Rule {
            table: Table(1002),
            ..tenant_rule.clone()
        };
        misruled.rules.insert(stray.clone());
        assert_eq!(plan(&d, &misruled), vec![Op::DelRule(stray)]);

        // The tenant network goes: its device, hop, table's routes and rule with it.
        let mut only_pods = l.clone();
        only_pods.networks.pop();
        let ops = plan(&desired(&only_pods, &c), &full);
        assert_eq!(ops[0], Op::DeleteLink("strait.4097".into()), "{ops:?}");
        assert!(ops.contains(&Op::DelRule(tenant_rule)), "{ops:?}");
        assert!(
            !ops.iter()
                .any(|o| matches!(o, Op::DelRoute(Table::MAIN, _) | Op::SetRoute(_))),
            "{ops:?}"
        );
    }

    #[test]
    fn device_names_fit_the_kernel_and_are_recognised() {
        assert_eq!(device_name(16_777_215), "strait.16777215");
        assert!(device_name(16_777_215).len() <= 15);
        assert!(is_device("strait.4096"));
        assert!(!is_device("strait.") && !is_device("strait.x1") && !is_device("eth0"));
    }
}
