//! The node model: what Strait must hold in this node's kernel ([`Desired`]), what it holds
//! ([`Actual`]), and the operations that turn one into the other ([`plan`]). Pure data, keyed by
//! link name, routing table and address, so that every kind of network adds entries here and
//! none adds a branch to the loop that carries them out.
//!
//! - links, by kind ([`LinkKind`]): today Strait's VXLAN devices (see [`crate::overlay`]);
//! - FDB entries and permanent neighbours on those devices;
//! - nexthop objects ([`Hop`]) and the routes through them to other nodes' blocks ([`PeerRoute`]);
//! - each pod's host side: its addresses routed to its host veth ([`HostRoute`]), and a
//!   permanent neighbour for each, at the pod's MAC;
//! - policy routing rules ([`Rule`]) that send what arrives on a link of a network with a
//!   routing table of its own to that table;
//! - Strait's nftables tables, typed ([`strait_nft::Table`]), one per concern.
//!
//! Every route carries its [`Table`]; both address families live side by side.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use ipnet::IpNet;
use strait_netlink::MacAddr;

use crate::naming::is_host_veth;

/// A network's identity: its name, unique in the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetId(Arc<str>);

impl NetId {
    pub fn new(name: &str) -> NetId {
        NetId(name.into())
    }
}

impl fmt::Display for NetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A routing table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Table(pub u32);

impl Table {
    /// The table the kernel consults for every packet unless a rule says otherwise.
    pub const MAIN: Table = Table(strait_netlink::TABLE_MAIN);
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Table::MAIN => f.write_str("main"),
            Table(n) => write!(f, "{n}"),
        }
    }
}

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const BOTH: [Family; 2] = [Family::V4, Family::V6];

    pub fn of(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

/// What one of Strait's links is, with the settings only that kind has. A kind of network that
/// needs links of its own (macvlan, ipvlan, VLAN for underlay networks) adds a variant here, its
/// creation in `kernel.rs` (`create_link`) and how it reads back (`link_kind`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkKind {
    /// A VXLAN device on port 4789 that learns nothing (its FDB entries are Strait's).
    Vxlan {
        vni: u32,
        /// The outer source address: the node's underlay address of the family VXLAN runs
        /// over.
        local: IpAddr,
        /// The device the outer packets leave through.
        underlay: String,
    },
}

/// One of Strait's links as it must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSpec {
    pub kind: LinkKind,
    pub mac: MacAddr,
    pub mtu: u32,
    /// Its addresses; a VXLAN device's are the VTEP's: its IPv4 address as a /32, its
    /// link-local address as a /64.
    pub addresses: Vec<IpNet>,
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

/// Another node as a next hop: the gateway that leads to it through one of our links.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hop {
    pub device: Arc<str>,
    pub gateway: IpAddr,
    pub onlink: bool,
}

/// A route to another node's block, in `table`, through that node's hop.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerRoute {
    pub table: Table,
    pub dst: IpNet,
    pub hop: Hop,
}

/// A pod's address, routed in `table` to the pod's host veth (`device`), scope link.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostRoute {
    pub table: Table,
    pub dst: IpNet,
    pub device: Arc<str>,
}

/// An address on a pod's host veth: the IPv6 gateway (`fe80::1/64`) of a pod with IPv6.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostAddress {
    pub device: Arc<str>,
    pub address: IpNet,
}

/// A policy routing rule of Strait's: packets of `family` that arrived on `iif` (when set) from
/// `from` (when set) are looked up in `table`, at `priority` (lower first).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rule {
    pub family: Family,
    pub priority: u32,
    pub iif: Option<Arc<str>>,
    pub from: Option<IpNet>,
    pub table: Table,
}

impl Rule {
    /// The priority of the rules that send a network's traffic to its table: after the local
    /// table's (0), before the main table's (32766).
    pub const NETWORK_PRIORITY: u32 = 1000;

    /// What arrives on `iif` goes to `table`.
    pub fn arriving_on(family: Family, iif: &Arc<str>, table: Table) -> Rule {
        Rule {
            family,
            priority: Rule::NETWORK_PRIORITY,
            iif: Some(Arc::clone(iif)),
            from: None,
            table,
        }
    }

    /// The host veth whose pod's traffic the rule steers, if it is part of a pod's host side.
    fn host_veth(&self) -> Option<&Arc<str>> {
        self.iif.as_ref().filter(|name| is_host_veth(name))
    }
}

/// Everything Strait must hold in this node's kernel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    pub links: BTreeMap<String, LinkSpec>,
    pub fdb: BTreeSet<Fdb>,
    pub neighbours: BTreeSet<Neigh>,
    pub hops: BTreeSet<Hop>,
    pub routes: BTreeSet<PeerRoute>,
    pub host_routes: BTreeSet<HostRoute>,
    /// Permanent neighbours for pods' addresses on their host veths.
    pub host_neighbours: BTreeSet<Neigh>,
    /// Gateway addresses on pods' host veths.
    pub host_addresses: BTreeSet<HostAddress>,
    pub rules: BTreeSet<Rule>,
    /// Strait's nftables tables, one per concern, each replaced whole when it differs
    /// (see [`strait_nft::ensure`]).
    pub nft_tables: Vec<strait_nft::Table>,
}

/// One of Strait's links as the kernel holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActualLink {
    /// What it is, or `None` when it is not a link Strait makes as it stands (a VXLAN device
    /// that learns, on another port, without a source or an underlay): such a link is replaced.
    pub kind: Option<LinkKind>,
    pub mac: Option<MacAddr>,
    pub mtu: u32,
    pub up: bool,
    pub addresses: Vec<IpNet>,
}

/// What the kernel holds of ours: our devices, their permanent entries, our routes that leave
/// through them or the underlay, and the host veths with their routes, in every table and both
/// families.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actual {
    pub links: BTreeMap<String, ActualLink>,
    pub fdb: BTreeSet<Fdb>,
    pub neighbours: BTreeSet<Neigh>,
    /// Our nexthop objects by what they lead to, with their ids.
    pub hops: BTreeMap<Hop, u32>,
    pub routes: BTreeSet<PeerRoute>,
    /// Our nexthop objects that duplicate another (left by an interrupted pass).
    pub stray_hops: Vec<u32>,
    /// Our routes that do not go through one of our nexthop objects.
    pub stray_routes: Vec<(Table, IpNet)>,
    /// The highest nexthop id (of anyone's) in the kernel: new ones are numbered above it.
    pub highest_nexthop_id: u32,
    /// The host veths that exist, with their interface indices. A pod's host side is repaired
    /// only while its veth exists: creating and deleting the veth is the attachment's own work.
    pub host_veths: BTreeMap<Arc<str>, u32>,
    pub host_routes: BTreeSet<HostRoute>,
    /// The permanent neighbours on host veths.
    pub host_neighbours: BTreeSet<Neigh>,
    /// The IPv6 gateway addresses on host veths.
    pub host_addresses: BTreeSet<HostAddress>,
    /// Strait's rules (tagged with its protocol), whatever links they name.
    pub rules: BTreeSet<Rule>,
}

impl Desired {
    /// What the kernel holds once a plan from `before` towards this state has been applied in
    /// full, the nexthop objects having the ids in `hop_ids`, none above `highest_nexthop_id`.
    pub fn as_applied(
        &self,
        before: &Actual,
        hop_ids: &BTreeMap<Hop, u32>,
        highest_nexthop_id: u32,
    ) -> Actual {
        Actual {
            links: self
                .links
                .iter()
                .map(|(name, s)| {
                    (
                        name.clone(),
                        ActualLink {
                            kind: Some(s.kind.clone()),
                            mac: Some(s.mac),
                            mtu: s.mtu,
                            up: true,
                            addresses: s.addresses.clone(),
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
            host_veths: before.host_veths.clone(),
            host_routes: self
                .host_routes
                .iter()
                .filter(|r| before.host_veths.contains_key(&r.device))
                .cloned()
                .collect(),
            host_neighbours: self
                .host_neighbours
                .iter()
                .filter(|n| before.host_veths.contains_key(&n.device))
                .cloned()
                .collect(),
            host_addresses: self
                .host_addresses
                .iter()
                .filter(|a| before.host_veths.contains_key(&a.device))
                .cloned()
                .collect(),
            rules: {
                let (removed, added) = rule_changes(self, before);
                before
                    .rules
                    .iter()
                    .filter(|r| !removed.contains(r))
                    .chain(added)
                    .cloned()
                    .collect()
            },
        }
    }
}

/// One change to the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    CreateLink(String, LinkSpec),
    DeleteLink(String),
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
    /// Adds the route or points the one to its destination (in its table) through its hop.
    SetRoute(PeerRoute),
    DelRoute(Table, IpNet),
    /// Adds the route or points the one to its destination (in its table) at its veth.
    SetHostRoute(HostRoute),
    /// Adds the permanent neighbour for a pod's address on its veth, or sets its MAC.
    SetHostNeighbour(Neigh),
    /// Adds the gateway address to a pod's host veth.
    AddHostAddress(HostAddress),
    AddRule(Rule),
    DelRule(Rule),
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

/// Does a set of routes ordered by (table, destination) hold one to `dst` in `table`?
fn routes_to(set: &BTreeSet<PeerRoute>, table: Table, dst: IpNet) -> bool {
    let from = PeerRoute {
        table,
        dst,
        hop: Hop {
            device: "".into(),
            gateway: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            onlink: false,
        },
    };
    set.range(from..)
        .next()
        .is_some_and(|r| r.table == table && r.dst == dst)
}

/// Can the link stay as it is, changing at most its MTU, state and addresses?
fn link_matches(want: &LinkSpec, have: &ActualLink) -> bool {
    have.kind.as_ref() == Some(&want.kind) && have.mac == Some(want.mac)
}

/// The operations that turn `actual` into `desired`: links first, then removals, then
/// additions. A link that must be (re)created takes all of its entries with it.
pub fn plan(desired: &Desired, actual: &Actual) -> Vec<Op> {
    let mut ops = Vec::new();
    // Devices recreated below lose every entry; count them as absent.
    let mut fresh: BTreeSet<&str> = BTreeSet::new();
    for (name, want) in &desired.links {
        match actual.links.get(name) {
            Some(have) if link_matches(want, have) => {
                if have.mtu != want.mtu {
                    ops.push(Op::SetMtu(name.clone(), want.mtu));
                }
                if !have.up {
                    ops.push(Op::SetUp(name.clone()));
                }
                for address in &want.addresses {
                    if !have.addresses.contains(address) {
                        ops.push(Op::AddAddress(name.clone(), *address));
                    }
                }
            }
            existing => {
                if existing.is_some() {
                    ops.push(Op::DeleteLink(name.clone()));
                }
                ops.push(Op::CreateLink(name.clone(), want.clone()));
                for address in &want.addresses {
                    ops.push(Op::AddAddress(name.clone(), *address));
                }
                ops.push(Op::SetUp(name.clone()));
                fresh.insert(name);
            }
        }
    }
    for name in actual.links.keys() {
        if !desired.links.contains_key(name) {
            ops.push(Op::DeleteLink(name.clone()));
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
        if !routes_to(&desired.routes, r.table, r.dst) {
            ops.push(Op::DelRoute(r.table, r.dst));
        }
    }
    ops.extend(
        actual
            .stray_routes
            .iter()
            .map(|(table, dst)| Op::DelRoute(*table, *dst)),
    );
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
    plan_host_sides(desired, actual, &mut ops);
    // A rule names its link rather than pointing at it, so it outlives a recreated device.
    let (removed, added) = rule_changes(desired, actual);
    ops.extend(removed.into_iter().cloned().map(Op::DelRule));
    ops.extend(added.into_iter().cloned().map(Op::AddRule));
    ops
}

/// The rules a pass removes and adds. Strait's rules that nothing wants go, except one on a host
/// veth that exists and that no record claims: what a veth carries beyond its record belongs to
/// recovery, as its routes do (on a veth a record claims, the record says which rules it
/// needs, and any other would steer the pod into another table). A pod's rule is added while
/// its veth exists, and goes with it.
fn rule_changes<'a>(desired: &'a Desired, actual: &'a Actual) -> (Vec<&'a Rule>, Vec<&'a Rule>) {
    let claimed = |veth: &Arc<str>| {
        desired.host_routes.iter().any(|r| r.device == *veth)
            || desired.rules.iter().any(|r| r.iif.as_ref() == Some(veth))
    };
    let removed = actual
        .rules
        .difference(&desired.rules)
        .filter(|r| match r.host_veth() {
            Some(veth) => !actual.host_veths.contains_key(veth) || claimed(veth),
            None => true,
        })
        .collect();
    let added = desired
        .rules
        .difference(&actual.rules)
        .filter(|r| {
            r.host_veth()
                .is_none_or(|veth| actual.host_veths.contains_key(veth))
        })
        .collect();
    (removed, added)
}

/// A pod's host side is repaired, never removed: removing host veths (and everything on them) is
/// the CNI commands' work, and what a veth carries beyond its record belongs to recovery (the pod
/// may still use it). An entry is repaired only while its veth exists, and a route only while no
/// other veth holds one to the same address (two claims are a conflict recovery reports, not
/// one to settle by moving the route).
fn plan_host_sides(desired: &Desired, actual: &Actual, ops: &mut Vec<Op>) {
    let held_elsewhere = |r: &HostRoute| {
        let from = HostRoute {
            device: "".into(),
            ..r.clone()
        };
        actual
            .host_routes
            .range(from..)
            .take_while(|have| have.table == r.table && have.dst == r.dst)
            .any(|have| have.device != r.device)
    };
    for r in desired
        .host_routes
        .difference(&actual.host_routes)
        .filter(|r| actual.host_veths.contains_key(&r.device) && !held_elsewhere(r))
    {
        ops.push(Op::SetHostRoute(r.clone()));
    }
    for n in desired
        .host_neighbours
        .difference(&actual.host_neighbours)
        .filter(|n| actual.host_veths.contains_key(&n.device))
    {
        ops.push(Op::SetHostNeighbour(n.clone()));
    }
    for a in desired
        .host_addresses
        .difference(&actual.host_addresses)
        .filter(|a| actual.host_veths.contains_key(&a.device))
    {
        ops.push(Op::AddHostAddress(a.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_route(table: u32, dst: &str, device: &str) -> HostRoute {
        HostRoute {
            table: Table(table),
            dst: dst.parse().unwrap(),
            device: device.into(),
        }
    }

    fn host_side(routes: &[HostRoute], veths: &[&str]) -> Actual {
        Actual {
            host_veths: veths.iter().map(|v| (Arc::from(*v), 7)).collect(),
            host_routes: routes.iter().cloned().collect(),
            ..Actual::default()
        }
    }

    #[test]
    fn a_pods_host_route_is_repaired_only_while_its_veth_exists() {
        let want = host_route(254, "10.244.0.5/32", "st000000000001");
        let desired = Desired {
            host_routes: BTreeSet::from([want.clone()]),
            ..Desired::default()
        };
        let cases: Vec<(&str, Actual, Vec<Op>)> = vec![
            (
                "intact",
                host_side(std::slice::from_ref(&want), &["st000000000001"]),
                vec![],
            ),
            (
                "route deleted",
                host_side(&[], &["st000000000001"]),
                vec![Op::SetHostRoute(want.clone())],
            ),
            (
                "veth gone (the attachment's own work)",
                host_side(&[], &[]),
                vec![],
            ),
            (
                "an address beyond the record stays (recovery's: the pod may use it)",
                host_side(
                    &[
                        want.clone(),
                        host_route(254, "10.244.0.9/32", "st000000000001"),
                    ],
                    &["st000000000001"],
                ),
                vec![],
            ),
            (
                "another veth routes the address: a conflict, not moved",
                host_side(
                    &[host_route(254, "10.244.0.5/32", "st000000000002")],
                    &["st000000000001", "st000000000002"],
                ),
                vec![],
            ),
            (
                "a veth without a record keeps its routes",
                host_side(
                    &[
                        want.clone(),
                        host_route(254, "10.244.0.7/32", "st000000000002"),
                    ],
                    &["st000000000001", "st000000000002"],
                ),
                vec![],
            ),
        ];
        for (what, actual, ops) in cases {
            assert_eq!(plan(&desired, &actual), ops, "{what}");
        }
    }

    fn neighbour(device: &str, ip: &str, mac: u8) -> Neigh {
        Neigh {
            device: device.into(),
            ip: ip.parse().unwrap(),
            mac: MacAddr([2, 0, 0, 0, 0, mac]),
        }
    }

    #[test]
    fn a_pods_neighbour_is_kept_at_the_mac_strait_gave_the_pod() {
        let want = neighbour("st000000000001", "10.244.0.5", 1);
        let desired = Desired {
            host_neighbours: BTreeSet::from([want.clone()]),
            ..Desired::default()
        };
        let with = |neighbours: &[Neigh], veths: &[&str]| Actual {
            host_veths: veths.iter().map(|v| (Arc::from(*v), 7)).collect(),
            host_neighbours: neighbours.iter().cloned().collect(),
            ..Actual::default()
        };
        let cases: Vec<(&str, Actual, Vec<Op>)> = vec![
            (
                "intact",
                with(std::slice::from_ref(&want), &["st000000000001"]),
                vec![],
            ),
            (
                "deleted",
                with(&[], &["st000000000001"]),
                vec![Op::SetHostNeighbour(want.clone())],
            ),
            (
                "another MAC: set, not deleted first",
                with(
                    &[neighbour("st000000000001", "10.244.0.5", 9)],
                    &["st000000000001"],
                ),
                vec![Op::SetHostNeighbour(want.clone())],
            ),
            ("veth gone", with(&[], &[]), vec![]),
            (
                "an address beyond the record stays",
                with(
                    &[want.clone(), neighbour("st000000000001", "10.244.0.9", 1)],
                    &["st000000000001"],
                ),
                vec![],
            ),
            (
                "a veth whose pod's MAC Strait did not choose keeps its neighbours",
                with(
                    &[want.clone(), neighbour("st000000000002", "10.244.0.7", 7)],
                    &["st000000000001", "st000000000002"],
                ),
                vec![],
            ),
        ];
        for (what, actual, ops) in cases {
            assert_eq!(plan(&desired, &actual), ops, "{what}");
        }
    }

    #[test]
    fn a_pods_ipv6_gateway_address_is_put_back_while_its_veth_exists() {
        let want = HostAddress {
            device: "st000000000001".into(),
            address: "fe80::1/64".parse().unwrap(),
        };
        let desired = Desired {
            host_addresses: BTreeSet::from([want.clone()]),
            ..Desired::default()
        };
        let with = |addresses: &[HostAddress], veths: &[&str]| Actual {
            host_veths: veths.iter().map(|v| (Arc::from(*v), 7)).collect(),
            host_addresses: addresses.iter().cloned().collect(),
            ..Actual::default()
        };
        let cases: Vec<(&str, Actual, Vec<Op>)> = vec![
            (
                "intact",
                with(std::slice::from_ref(&want), &["st000000000001"]),
                vec![],
            ),
            (
                "deleted",
                with(&[], &["st000000000001"]),
                vec![Op::AddHostAddress(want.clone())],
            ),
            ("veth gone", with(&[], &[]), vec![]),
        ];
        for (what, actual, ops) in cases {
            assert_eq!(plan(&desired, &actual), ops, "{what}");
        }
        let after = desired.as_applied(&with(&[], &["st000000000001"]), &BTreeMap::new(), 0);
        assert_eq!(plan(&desired, &after), vec![]);
    }

    #[test]
    fn the_same_address_in_two_tables_is_two_routes() {
        let main = host_route(254, "10.0.0.5/32", "st00000000000a");
        let other = host_route(1001, "10.0.0.5/32", "st00000000000b");
        let desired = Desired {
            host_routes: BTreeSet::from([main.clone(), other.clone()]),
            ..Desired::default()
        };
        let actual = host_side(&[main], &["st00000000000a", "st00000000000b"]);
        assert_eq!(plan(&desired, &actual), vec![Op::SetHostRoute(other)]);
    }

    #[test]
    fn applied_host_routes_are_those_whose_veths_existed() {
        let desired = Desired {
            host_routes: BTreeSet::from([
                host_route(254, "10.0.0.5/32", "st00000000000a"),
                host_route(254, "10.0.0.6/32", "st00000000000b"),
            ]),
            ..Desired::default()
        };
        let before = host_side(&[], &["st00000000000a"]);
        let after = desired.as_applied(&before, &BTreeMap::new(), 0);
        assert_eq!(
            after.host_routes,
            BTreeSet::from([host_route(254, "10.0.0.5/32", "st00000000000a")])
        );
        assert_eq!(plan(&desired, &after), vec![]);
    }

    #[test]
    fn a_pods_rules_follow_its_record_while_its_veth_lives_and_go_with_it() {
        let (a, b) = ("st00000000000a", "st00000000000b");
        let rule =
            |veth: &str, table: u32| Rule::arriving_on(Family::V4, &veth.into(), Table(table));
        // Pod a's record: its address in table 1001, so its rule.
        let desired = Desired {
            host_routes: BTreeSet::from([host_route(1001, "10.0.0.5/32", a)]),
            rules: BTreeSet::from([rule(a, 1001)]),
            ..Desired::default()
        };
        let kernel = |rules: &[Rule], veths: &[&str]| Actual {
            rules: rules.iter().cloned().collect(),
            ..host_side(&[host_route(1001, "10.0.0.5/32", a)], veths)
        };
        type Case<'a> = (&'a str, Actual, Vec<Op>);
        let cases: [Case; 5] = [
            (
                "a stale rule on a claimed veth goes, the record's comes",
                kernel(&[rule(a, 1002)], &[a]),
                vec![Op::DelRule(rule(a, 1002)), Op::AddRule(rule(a, 1001))],
            ),
            (
                "a rule on a veth no record claims is recovery's",
                kernel(&[rule(a, 1001), rule(b, 1003)], &[a, b]),
                vec![],
            ),
            (
                "a rule whose veth has gone goes",
                kernel(&[rule(a, 1001), rule(b, 1003)], &[a]),
                vec![Op::DelRule(rule(b, 1003))],
            ),
            (
                "a recorded rule whose veth has gone stays until its record goes",
                kernel(&[rule(a, 1001)], &[]),
                vec![],
            ),
            (
                "no rule is added for a veth that is not there",
                kernel(&[], &[]),
                vec![],
            ),
        ];
        for (what, actual, ops) in cases {
            assert_eq!(plan(&desired, &actual), ops, "{what}");
            // What the pass predicts is what the next plan starts from.
            let after = desired.as_applied(&actual, &BTreeMap::new(), 0);
            assert_eq!(plan(&desired, &after), vec![], "{what}");
        }
        // The record gone, with its veth: a pass that trusts the last one's result removes it.
        let after = desired.as_applied(&kernel(&[rule(a, 1001)], &[]), &BTreeMap::new(), 0);
        assert_eq!(
            plan(&Desired::default(), &after),
            vec![Op::DelRule(rule(a, 1001))]
        );
    }

    #[test]
    fn tables_read_as_people_write_them() {
        assert_eq!(Table::MAIN.to_string(), "main");
        assert_eq!(Table(1001).to_string(), "1001");
    }
}
