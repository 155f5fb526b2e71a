//! Node-to-node networking as pure data: what this node must hold to reach the other nodes'
//! pods ([`desired`]), and the operations that turn what the kernel holds into that ([`plan`]).
//! Everything is keyed by device names so the planning is table-testable without a kernel:
//!
//! - per network with a VXLAN pool, one device `strait.<vni>` (`nolearning`, port 4789, `local` =
//!   this node's address, MTU = underlay − 50) holding this node's VTEP address as a /32;
//! - per remote node and such network: an FDB entry `VTEP_MAC dst NODE_ADDRESS` and a neighbour
//!   `VTEP_IP lladdr VTEP_MAC`, both permanent;
//! - per remote node, a nexthop object (a [`Hop`]): `via VTEP_IP dev strait.<vni> onlink` for
//!   VXLAN pools, `via NODE_ADDRESS dev UNDERLAY` for routed pools;
//! - per remote block, a route through its node's hop, tagged with Strait's protocol.
//!
//! Routes through a shared nexthop object are several times cheaper for the kernel to build than
//! routes that each carry their own gateway, and a peer's routes go with its nexthop.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use strait_netlink::MacAddr;

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

/// The VXLAN device name of a network: `strait.<vni>` (at most 15 characters).
pub fn device_name(vni: u32) -> String {
    format!("strait.{vni}")
}

/// Is `name` one of Strait's VXLAN devices?
pub fn is_device(name: &str) -> bool {
    name.strip_prefix("strait.")
        .is_some_and(|vni| !vni.is_empty() && vni.bytes().all(|b| b.is_ascii_digit()))
}

/// A VXLAN tunnel endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Vtep {
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
}

/// This node, as the reconciler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalNode {
    pub name: String,
    pub address: Ipv4Addr,
    /// The underlay device (holding `address`).
    pub underlay: String,
    pub networks: Vec<LocalNetwork>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalNetwork {
    pub name: String,
    pub vni: u32,
    /// The VXLAN device's MTU.
    pub mtu: u32,
    /// This node's VTEP, when a pool of the network uses VXLAN.
    pub vtep: Option<Vtep>,
    pub pools: Vec<(IpNet, Mode)>,
}

/// Another node, as the cluster store describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub address: IpAddr,
    /// Per network, its VTEP.
    pub vteps: BTreeMap<String, Vtep>,
}

/// What the cluster store says about every node and block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterView {
    pub nodes: BTreeMap<String, Peer>,
    /// Block → the node holding it.
    pub blocks: BTreeMap<IpNet, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSpec {
    pub vni: u32,
    pub mac: MacAddr,
    pub mtu: u32,
    pub local: Ipv4Addr,
    pub underlay: String,
    pub address: IpNet,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fdb {
    pub device: Arc<str>,
    pub mac: MacAddr,
    pub dst: IpAddr,
}

/// A permanent neighbour on one of our devices.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Neigh {
    pub device: Arc<str>,
    pub ip: IpAddr,
    pub mac: MacAddr,
}

/// A route to another node's block.
/// Another node as a next hop: the gateway that leads to it through one of our links.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hop {
    pub device: Arc<str>,
    pub gateway: IpAddr,
    pub onlink: bool,
}

/// A route to another node's block, through that node's hop.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerRoute {
    pub dst: IpNet,
    pub hop: Hop,
}

/// The node-to-node state this node must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    pub devices: BTreeMap<String, DeviceSpec>,
    pub fdb: BTreeSet<Fdb>,
    pub neighbours: BTreeSet<Neigh>,
    pub hops: BTreeSet<Hop>,
    pub routes: BTreeSet<PeerRoute>,
}

/// A device as the kernel holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActualDevice {
    pub vni: u32,
    pub mac: Option<MacAddr>,
    pub mtu: u32,
    pub local: Option<Ipv4Addr>,
    pub port: u16,
    pub underlay: Option<String>,
    pub learning: bool,
    pub up: bool,
    pub addresses: Vec<IpNet>,
}

/// What the kernel holds of ours: our devices, their permanent entries, and our routes that
/// leave through them or the underlay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actual {
    pub devices: BTreeMap<String, ActualDevice>,
    pub fdb: BTreeSet<Fdb>,
    pub neighbours: BTreeSet<Neigh>,
    /// Our nexthop objects by what they lead to, with their ids.
    pub hops: BTreeMap<Hop, u32>,
    pub routes: BTreeSet<PeerRoute>,
    /// Our nexthop objects that duplicate another (left by an interrupted pass).
    pub stray_hops: Vec<u32>,
    /// Our routes that do not go through one of our nexthop objects.
    pub stray_routes: Vec<IpNet>,
    /// The highest nexthop id (of anyone's) in the kernel: new ones are numbered above it.
    pub highest_nexthop_id: u32,
}

impl Desired {
    /// What the kernel holds once a plan towards this state has been applied in full, the
    /// nexthop objects having the ids in `hop_ids`, none above `highest_nexthop_id`.
    pub fn as_applied(&self, hop_ids: &BTreeMap<Hop, u32>, highest_nexthop_id: u32) -> Actual {
        Actual {
            devices: self
                .devices
                .iter()
                .map(|(name, s)| {
                    (
                        name.clone(),
                        ActualDevice {
                            vni: s.vni,
                            mac: Some(s.mac),
                            mtu: s.mtu,
                            local: Some(s.local),
                            port: VXLAN_PORT,
                            underlay: Some(s.underlay.clone()),
                            learning: false,
                            up: true,
                            addresses: vec![s.address],
                        },
                    )
                })
                .collect(),
            fdb: self.fdb.clone(),
            neighbours: self.neighbours.clone(),
            hops: self
                .hops
                .iter()
                .filter_map(|h| Some((h.clone(), *hop_ids.get(h)?)))
                .collect(),
            routes: self.routes.clone(),
            stray_hops: Vec::new(),
            stray_routes: Vec::new(),
            highest_nexthop_id,
        }
    }
}

/// One change to the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    CreateDevice(String, DeviceSpec),
    DeleteDevice(String),
    SetMtu(String, u32),
    SetUp(String),
    AddAddress(String, IpNet),
    AddFdb(Arc<str>, MacAddr, IpAddr),
    DelFdb(Arc<str>, MacAddr, IpAddr),
    SetNeighbour(Arc<str>, IpAddr, MacAddr),
    DelNeighbour(Arc<str>, IpAddr),
    AddHop(Hop),
    /// Deleting a nexthop object also deletes the routes through it.
    DelHop(u32),
    /// Adds the route or points the one to its destination through its hop.
    SetRoute(PeerRoute),
    DelRoute(IpNet),
}

/// The pool mode of `block` in `network`, if the block belongs to one of its pools.
fn mode_of(network: &LocalNetwork, block: IpNet) -> Option<Mode> {
    network
        .pools
        .iter()
        .find(|(pool, _)| pool.contains(&block))
        .map(|(_, mode)| *mode)
}

/// Everything this node must hold, from its own settings and the cluster view.
pub fn desired(local: &LocalNode, cluster: &ClusterView) -> Desired {
    let mut out = Desired::default();
    let underlay: Arc<str> = local.underlay.as_str().into();
    for network in &local.networks {
        let name = device_name(network.vni);
        let device: Arc<str> = name.as_str().into();
        if let Some(vtep) = network.vtep {
            out.devices.insert(
                name.clone(),
                DeviceSpec {
                    vni: network.vni,
                    mac: vtep.mac,
                    mtu: network.mtu,
                    local: local.address,
                    underlay: local.underlay.clone(),
                    address: IpNet::from(IpAddr::V4(vtep.ip)),
                },
            );
            for (name, peer) in &cluster.nodes {
                if *name == local.name {
                    continue;
                }
                if let Some(theirs) = peer.vteps.get(&network.name) {
                    out.fdb.insert(Fdb {
                        device: Arc::clone(&device),
                        mac: theirs.mac,
                        dst: peer.address,
                    });
                    out.neighbours.insert(Neigh {
                        device: Arc::clone(&device),
                        ip: IpAddr::V4(theirs.ip),
                        mac: theirs.mac,
                    });
                }
            }
        }
        for (block, owner) in &cluster.blocks {
            let Some(peer) = cluster.nodes.get(owner).filter(|_| *owner != local.name) else {
                continue;
            };
            let hop = match mode_of(network, *block) {
                Some(Mode::Vxlan) => peer.vteps.get(&network.name).map(|v| Hop {
                    device: Arc::clone(&device),
                    gateway: IpAddr::V4(v.ip),
                    onlink: true,
                }),
                Some(Mode::Routed) => Some(Hop {
                    device: Arc::clone(&underlay),
                    gateway: peer.address,
                    onlink: false,
                }),
                None => None,
            };
            if let Some(hop) = hop {
                out.hops.insert(hop.clone());
                out.routes.insert(PeerRoute { dst: *block, hop });
            }
        }
    }
    out
}

/// The neighbour for `ip` on `device` in a set ordered by (device, ip, mac).
fn neighbour_for<'a>(set: &'a BTreeSet<Neigh>, device: &Arc<str>, ip: IpAddr) -> Option<&'a Neigh> {
    let from = Neigh {
        device: Arc::clone(device),
        ip,
        mac: MacAddr([0; 6]),
    };
    set.range(from..)
        .next()
        .filter(|n| n.device == *device && n.ip == ip)
}

/// Does a set of routes ordered by destination hold one to `dst`?
fn routes_to(set: &BTreeSet<PeerRoute>, dst: IpNet) -> bool {
    let from = PeerRoute {
        dst,
        hop: Hop {
            device: "".into(),
            gateway: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            onlink: false,
        },
    };
    set.range(from..).next().is_some_and(|r| r.dst == dst)
}

fn device_matches(want: &DeviceSpec, have: &ActualDevice) -> bool {
    have.vni == want.vni
        && have.mac == Some(want.mac)
        && have.local == Some(want.local)
        && have.port == VXLAN_PORT
        && have.underlay.as_deref() == Some(want.underlay.as_str())
        && !have.learning
}

/// The operations that turn `actual` into `desired`: devices first, then removals, then
/// additions. A device that must be (re)created takes all of its entries with it.
pub fn plan(desired: &Desired, actual: &Actual) -> Vec<Op> {
    let mut ops = Vec::new();
    // Devices recreated below lose every entry; count them as absent.
    let mut fresh: BTreeSet<&str> = BTreeSet::new();
    for (name, want) in &desired.devices {
        match actual.devices.get(name) {
            Some(have) if device_matches(want, have) => {
                if have.mtu != want.mtu {
                    ops.push(Op::SetMtu(name.clone(), want.mtu));
                }
                if !have.up {
                    ops.push(Op::SetUp(name.clone()));
                }
                if !have.addresses.contains(&want.address) {
                    ops.push(Op::AddAddress(name.clone(), want.address));
                }
            }
            existing => {
                if existing.is_some() {
                    ops.push(Op::DeleteDevice(name.clone()));
                }
                ops.push(Op::CreateDevice(name.clone(), want.clone()));
                ops.push(Op::AddAddress(name.clone(), want.address));
                ops.push(Op::SetUp(name.clone()));
                fresh.insert(name);
            }
        }
    }
    for name in actual.devices.keys() {
        if !desired.devices.contains_key(name) {
            ops.push(Op::DeleteDevice(name.clone()));
            fresh.insert(name);
        }
    }
    let live = |device: &str| !fresh.contains(device);

    // Both sides are sorted sets, so the differences below are linear merges, not lookups.
    for f in actual
        .fdb
        .difference(&desired.fdb)
        .filter(|f| live(&f.device))
    {
        ops.push(Op::DelFdb(Arc::clone(&f.device), f.mac, f.dst));
    }
    for n in actual
        .neighbours
        .difference(&desired.neighbours)
        .filter(|n| live(&n.device))
    {
        // A neighbour whose MAC changed is replaced by SetNeighbour below.
        if neighbour_for(&desired.neighbours, &n.device, n.ip).is_none() {
            ops.push(Op::DelNeighbour(Arc::clone(&n.device), n.ip));
        }
    }
    for r in actual
        .routes
        .difference(&desired.routes)
        .filter(|r| live(&r.hop.device))
    {
        // A route whose destination is still wanted is re-pointed by SetRoute below.
        if !routes_to(&desired.routes, r.dst) {
            ops.push(Op::DelRoute(r.dst));
        }
    }
    ops.extend(actual.stray_routes.iter().map(|dst| Op::DelRoute(*dst)));
    for (hop, id) in actual.hops.iter().filter(|(h, _)| live(&h.device)) {
        if !desired.hops.contains(hop) {
            ops.push(Op::DelHop(*id));
        }
    }
    ops.extend(actual.stray_hops.iter().map(|id| Op::DelHop(*id)));

    let recreated = |device: &str| !live(device);
    for hop in &desired.hops {
        if recreated(&hop.device) || !actual.hops.contains_key(hop) {
            ops.push(Op::AddHop(hop.clone()));
        }
    }
    let missing_fdb = desired.fdb.iter().filter(|f| recreated(&f.device));
    let changed_fdb = desired
        .fdb
        .difference(&actual.fdb)
        .filter(|f| live(&f.device));
    for f in missing_fdb.chain(changed_fdb) {
        ops.push(Op::AddFdb(Arc::clone(&f.device), f.mac, f.dst));
    }
    let missing_neighbours = desired.neighbours.iter().filter(|n| recreated(&n.device));
    let changed_neighbours = desired
        .neighbours
        .difference(&actual.neighbours)
        .filter(|n| live(&n.device));
    for n in missing_neighbours.chain(changed_neighbours) {
        ops.push(Op::SetNeighbour(Arc::clone(&n.device), n.ip, n.mac));
    }
    // A route is in `actual` only through one of its hops, so a route through a new hop is in
    // the difference too.
    let missing_routes = desired.routes.iter().filter(|r| recreated(&r.hop.device));
    let changed_routes = desired
        .routes
        .difference(&actual.routes)
        .filter(|r| live(&r.hop.device));
    for r in missing_routes.chain(changed_routes) {
        ops.push(Op::SetRoute(r.clone()));
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, n])
    }

    fn local(mode: Mode) -> LocalNode {
        LocalNode {
            name: "a".into(),
            address: Ipv4Addr::new(192, 168, 0, 1),
            underlay: "eth0".into(),
            networks: vec![LocalNetwork {
                name: "pods".into(),
                vni: 4096,
                mtu: 1450,
                vtep: (mode == Mode::Vxlan).then_some(Vtep {
                    ip: Ipv4Addr::new(10, 244, 0, 0),
                    mac: mac(1),
                }),
                pools: vec![("10.244.0.0/16".parse().unwrap(), mode)],
            }],
        }
    }

    fn cluster() -> ClusterView {
        let node = |i: u8| Peer {
            address: IpAddr::V4(Ipv4Addr::new(192, 168, 0, i)),
            vteps: BTreeMap::from([(
                "pods".to_string(),
                Vtep {
                    ip: Ipv4Addr::new(10, 244, 0, (i - 1) * 64),
                    mac: mac(i),
                },
            )]),
        };
        ClusterView {
            nodes: BTreeMap::from([("a".into(), node(1)), ("b".into(), node(2))]),
            blocks: BTreeMap::from([
                ("10.244.0.0/26".parse().unwrap(), "a".to_string()),
                ("10.244.0.64/26".parse().unwrap(), "b".to_string()),
                // A block of a node that has left: no route.
                ("10.244.0.128/26".parse().unwrap(), "gone".to_string()),
                // A block of another network's pool: not ours to route.
                ("10.99.0.0/26".parse().unwrap(), "b".to_string()),
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
        let dev = &d.devices["strait.4096"];
        assert_eq!((dev.vni, dev.mtu, dev.local), (4096, 1450, l.address));
        assert_eq!(dev.address, "10.244.0.0/32".parse().unwrap());
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
                dst: "10.244.0.64/26".parse().unwrap(),
                hop: vxlan_hop()
            }])
        );
    }

    #[test]
    fn routed_pools_route_via_the_node_address_and_need_no_device() {
        let (l, c) = (local(Mode::Routed), cluster());
        let d = desired(&l, &c);
        assert!(d.devices.is_empty() && d.fdb.is_empty() && d.neighbours.is_empty());
        let hop = Hop {
            device: "eth0".into(),
            gateway: "192.168.0.2".parse().unwrap(),
            onlink: false,
        };
        assert_eq!(d.hops, BTreeSet::from([hop.clone()]));
        assert_eq!(
            d.routes,
            BTreeSet::from([PeerRoute {
                dst: "10.244.0.64/26".parse().unwrap(),
                hop
            }])
        );
    }

    fn as_actual(d: &Desired) -> Actual {
        d.as_applied(&ids(d), 200)
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
        assert!(matches!(&ops[0], Op::CreateDevice(n, _) if n == "strait.4096"));
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
                Box::new(|a: &mut Actual| a.devices.get_mut("strait.4096").unwrap().up = false),
                vec![Op::SetUp("strait.4096".into())],
            ),
            (
                "mtu changed",
                Box::new(|a: &mut Actual| a.devices.get_mut("strait.4096").unwrap().mtu = 1500),
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
                vec![Op::DelRoute("10.1.0.0/26".parse().unwrap())],
            ),
            (
                "a route without our nexthop",
                Box::new(|a: &mut Actual| a.stray_routes.push("10.2.0.0/26".parse().unwrap())),
                vec![Op::DelRoute("10.2.0.0/26".parse().unwrap())],
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
            .get_mut("pods")
            .unwrap()
            .ip = Ipv4Addr::new(10, 244, 0, 65);
        let ops = plan(&desired(&l, &moved), &before);
        assert!(ops.contains(&Op::DelHop(100)), "{ops:?}");
        assert!(ops.iter().any(
            |o| matches!(o, Op::AddHop(h) if h.gateway == IpAddr::V4(Ipv4Addr::new(10, 244, 0, 65)))
        ));
        assert!(ops.iter().any(|o| matches!(o, Op::SetRoute(_))));
        assert!(
            !ops.iter().any(|o| matches!(o, Op::DelRoute(_))),
            "re-pointed, not deleted: {ops:?}"
        );
    }

    #[test]
    fn a_device_with_other_settings_is_recreated_with_all_its_entries() {
        let (l, c) = (local(Mode::Vxlan), cluster());
        let d = desired(&l, &c);
        let mut actual = as_actual(&d);
        actual.devices.get_mut("strait.4096").unwrap().vni = 7;
        let ops = plan(&d, &actual);
        assert_eq!(ops[0], Op::DeleteDevice("strait.4096".into()));
        assert!(matches!(ops[1], Op::CreateDevice(..)));
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

    #[test]
    fn device_names_fit_the_kernel_and_are_recognised() {
        assert_eq!(device_name(16_777_215), "strait.16777215");
        assert!(device_name(16_777_215).len() <= 15);
        assert!(is_device("strait.4096"));
        assert!(!is_device("strait.") && !is_device("strait.x1") && !is_device("eth0"));
    }
}
