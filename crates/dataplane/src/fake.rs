//! An in-memory kernel for unit tests (the `fake-kernel` feature): namespaces holding links
//! (veth pairs, VXLAN devices), addresses, routes, neighbours, FDB entries and nexthop objects,
//! with the semantics the data plane relies on (a veth's two ends go together; a link takes
//! its objects with it, a nexthop its routes; names, addresses, routes and nexthop ids are
//! unique; a change to a missing link fails with ENODEV, a removal of a missing object with a
//! "not found" error; routes through a nexthop read back with its link and gateway). It can fail the n-th change it is
//! asked for, so a test can stop a multi-step operation at each step in turn, or run something
//! of the test's at that moment. Its nftables ruleset is [`FakeNft`]. The integration tests run everything against the real kernel;
//! this only lets the agent's logic be tested without one.

use std::sync::{Arc, Mutex, MutexGuard};

use ipnet::IpNet;
use libc::{EEXIST, EINVAL, EIO, ENODEV, ENOENT, ESRCH};
use strait_netlink::{
    FdbEntry, Link, MacAddr, Neighbour, NetlinkError, Nexthop, Route, Rule, VxlanSpec,
};
use strait_nft::fake::FakeNft;

use crate::rtnetlink::{Change, Kernel, Rtnetlink};

/// One namespace's objects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Namespace {
    pub links: Vec<Link>,
    /// (link index, address).
    pub addresses: Vec<(u32, IpNet)>,
    pub routes: Vec<Route>,
    pub neighbours: Vec<Neighbour>,
    pub fdb: Vec<FdbEntry>,
    pub nexthops: Vec<Nexthop>,
    /// Rules stay when the link they name goes, as the kernel's do.
    pub rules: Vec<Rule>,
}

impl Namespace {
    /// Nothing in it.
    pub fn is_empty(&self) -> bool {
        *self == Namespace::default()
    }

    fn link(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
    }

    fn has_index(&self, index: u32) -> bool {
        self.links.iter().any(|l| l.index == index)
    }

    /// Removes the link with `index` and everything on it or through it.
    fn remove(&mut self, index: u32) {
        self.links.retain(|l| l.index != index);
        self.addresses.retain(|(i, _)| *i != index);
        self.routes.retain(|r| r.oif != Some(index));
        self.neighbours.retain(|n| n.index != index);
        self.fdb.retain(|f| f.index != index);
        self.nexthops.retain(|n| n.oif != Some(index));
    }

    fn add_link(&mut self, link: Link) -> Result<(), NetlinkError> {
        if self.link(&link.name).is_some() {
            return Err(kernel_error("create link", EEXIST));
        }
        self.links.push(link);
        Ok(())
    }
}

#[derive(Debug, Default)]
struct State {
    /// Namespace 0 is the node's.
    namespaces: Vec<Namespace>,
    /// veth peers: (namespace, index) pairs.
    peers: Vec<((usize, u32), (usize, u32))>,
    next_index: u32,
    /// Changes asked for so far (veth creation, deletion, each batched change).
    changes: usize,
    /// What happens at some changes (counted from 1).
    traps: Vec<(usize, Trap)>,
    nft: FakeNft,
}

/// What happens at a trapped change.
enum Trap {
    Fail,
    Run(Box<dyn FnOnce() + Send>),
}

impl std::fmt::Debug for Trap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Trap::Fail => "Fail",
            Trap::Run(_) => "Run",
        })
    }
}

/// The whole fake kernel; clones share it.
#[derive(Debug, Clone)]
pub struct FakeKernel(Arc<Mutex<State>>);

impl Default for FakeKernel {
    fn default() -> Self {
        FakeKernel(Arc::new(Mutex::new(State {
            namespaces: vec![Namespace::default()],
            next_index: 2,
            ..State::default()
        })))
    }
}

/// A namespace of the fake kernel, as a veth's peer destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FakeNetns(usize);

/// The rtnetlink endpoint of one namespace of the fake kernel.
#[derive(Debug, Clone)]
pub struct FakeNetlink {
    kernel: FakeKernel,
    ns: usize,
}

fn kernel_error(op: &str, errno: i32) -> NetlinkError {
    NetlinkError::Kernel {
        op: op.to_string(),
        source: std::io::Error::from_raw_os_error(errno),
        detail: None,
    }
}

impl FakeKernel {
    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new, empty namespace (a pod's) and an endpoint inside it.
    pub fn namespace(&self) -> (FakeNetns, FakeNetlink) {
        let mut state = self.state();
        state.namespaces.push(Namespace::default());
        let ns = state.namespaces.len() - 1;
        (
            FakeNetns(ns),
            FakeNetlink {
                kernel: self.clone(),
                ns,
            },
        )
    }

    /// The node's namespace as it is now.
    pub fn node(&self) -> Namespace {
        self.state().namespaces[0].clone()
    }

    /// A namespace as it is now.
    pub fn snapshot(&self, ns: FakeNetns) -> Namespace {
        self.state().namespaces[ns.0].clone()
    }

    /// Makes the `n`-th changes asked for from now on (counted from 1) fail with EIO, and
    /// only them (an empty list stops failing).
    pub fn fail_changes(&self, ns: &[usize]) {
        let mut state = self.state();
        let now = state.changes;
        state.traps = ns.iter().map(|n| (now + n, Trap::Fail)).collect();
    }

    /// Runs `action` just before the `n`-th change asked for from now on (counted from 1),
    /// which then goes ahead.
    pub fn before_change(&self, n: usize, action: impl FnOnce() + Send + 'static) {
        let mut state = self.state();
        let at = state.changes + n;
        state.traps.push((at, Trap::Run(Box::new(action))));
    }

    /// How many changes were asked for so far.
    pub fn changes(&self) -> usize {
        self.state().changes
    }

    /// Changes a namespace by hand, as an administrator would.
    pub fn edit(&self, ns: Option<FakeNetns>, f: impl FnOnce(&mut Namespace)) {
        f(&mut self.state().namespaces[ns.map_or(0, |n| n.0)]);
    }
}

impl State {
    /// Counts a change; fails it, or runs the test's action first, when it is trapped.
    fn count(&mut self, op: &str) -> Result<(), NetlinkError> {
        self.changes += 1;
        let Some(i) = self.traps.iter().position(|(n, _)| *n == self.changes) else {
            return Ok(());
        };
        match self.traps.remove(i).1 {
            Trap::Fail => Err(kernel_error(op, EIO)),
            Trap::Run(action) => {
                action();
                Ok(())
            }
        }
    }

    fn delete(&mut self, ns: usize, index: u32) {
        let peer = self.peers.iter().find_map(|&(a, b)| {
            if a == (ns, index) {
                Some(b)
            } else if b == (ns, index) {
                Some(a)
            } else {
                None
            }
        });
        self.namespaces[ns].remove(index);
        if let Some((peer_ns, peer_index)) = peer {
            self.namespaces[peer_ns].remove(peer_index);
        }
        self.peers
            .retain(|&(a, b)| a != (ns, index) && b != (ns, index));
    }

    fn change(&mut self, ns: usize, change: Change) -> Result<(), NetlinkError> {
        self.count(&format!("{change:?}"))?;
        let space = &mut self.namespaces[ns];
        let index = match &change {
            Change::SetUp(index)
            | Change::SetMtu { index, .. }
            | Change::AddAddress { index, .. }
            | Change::SetNeighbour { index, .. }
            | Change::DelNeighbour { index, .. }
            | Change::AddNexthop { oif: index, .. } => Some(*index),
            Change::SetFdb(entry) | Change::DelFdb(entry) => Some(entry.index),
            Change::AddRoute(route) | Change::ReplaceRoute(route) => {
                (route.nexthop.is_none()).then(|| route.oif.unwrap_or(0))
            }
            Change::DelRoute(_)
            | Change::DelNexthop(_)
            | Change::AddRule(_)
            | Change::DelRule(_) => None,
        };
        if index.is_some_and(|i| !space.has_index(i)) {
            return Err(kernel_error("change a link", ENODEV));
        }
        match change {
            Change::SetUp(index) => {
                for l in space.links.iter_mut().filter(|l| l.index == index) {
                    l.up = true;
                }
            }
            Change::SetMtu { index, mtu } => {
                for l in space.links.iter_mut().filter(|l| l.index == index) {
                    l.mtu = mtu;
                }
            }
            Change::AddAddress { index, address } => {
                if !space.addresses.contains(&(index, address)) {
                    space.addresses.push((index, address));
                }
            }
            Change::SetNeighbour { index, ip, mac } => {
                space
                    .neighbours
                    .retain(|n| !(n.index == index && n.ip == ip));
                space.neighbours.push(Neighbour {
                    index,
                    ip,
                    mac: Some(mac),
                    permanent: true,
                });
            }
            Change::DelNeighbour { index, ip } => {
                let before = space.neighbours.len();
                space
                    .neighbours
                    .retain(|n| !(n.index == index && n.ip == ip));
                if space.neighbours.len() == before {
                    return Err(kernel_error("delete neighbour", ENOENT));
                }
            }
            Change::AddRoute(route) => {
                if space.routes.iter().any(|r| same_key(r, &route)) {
                    return Err(kernel_error("add route", EEXIST));
                }
                let route = route_as_read(route, &space.nexthops)?;
                space.routes.push(route);
            }
            Change::ReplaceRoute(route) => {
                let route = route_as_read(route, &space.nexthops)?;
                space.routes.retain(|r| !same_key(r, &route));
                space.routes.push(route);
            }
            Change::DelRoute(route) => {
                let before = space.routes.len();
                let matches = |r: &Route| {
                    same_key(r, &route)
                        && r.protocol == route.protocol
                        && route.oif.is_none_or(|o| r.oif == Some(o))
                        && route.gateway.is_none_or(|g| r.gateway == Some(g))
                        && route.nexthop.is_none_or(|n| r.nexthop == Some(n))
                };
                space.routes.retain(|r| !matches(r));
                if space.routes.len() == before {
                    return Err(kernel_error("delete route", ESRCH));
                }
            }
            Change::AddNexthop {
                id,
                gateway,
                oif,
                onlink,
                protocol,
            } => {
                if space.nexthops.iter().any(|n| n.id == id) {
                    return Err(kernel_error("create nexthop", EEXIST));
                }
                space.nexthops.push(Nexthop {
                    id,
                    gateway: Some(gateway),
                    oif: Some(oif),
                    onlink,
                    protocol,
                    deleted: false,
                });
            }
            Change::DelNexthop(id) => {
                if !space.nexthops.iter().any(|n| n.id == id) {
                    return Err(kernel_error("delete nexthop", ENOENT));
                }
                space.nexthops.retain(|n| n.id != id);
                space.routes.retain(|r| r.nexthop != Some(id));
            }
            Change::SetFdb(entry) => {
                space
                    .fdb
                    .retain(|f| !(f.index == entry.index && f.mac == entry.mac));
                space.fdb.push(entry);
            }
            Change::DelFdb(entry) => {
                let before = space.fdb.len();
                space.fdb.retain(|f| *f != entry);
                if space.fdb.len() == before {
                    return Err(kernel_error("delete fdb entry", ENOENT));
                }
            }
            Change::AddRule(rule) => {
                if space.rules.contains(&rule) {
                    return Err(kernel_error("add rule", EEXIST));
                }
                space.rules.push(rule);
            }
            Change::DelRule(rule) => {
                let Some(at) = space.rules.iter().position(|r| *r == rule) else {
                    return Err(kernel_error("delete rule", ENOENT));
                };
                space.rules.remove(at);
            }
        }
        Ok(())
    }
}

/// Two routes the kernel keeps apart: destination and table.
fn same_key(a: &Route, b: &Route) -> bool {
    a.dst == b.dst && a.table == b.table
}

/// A route as the kernel reports it once added: through a nexthop object, with that object's
/// link and gateway (it must exist).
fn route_as_read(mut route: Route, nexthops: &[Nexthop]) -> Result<Route, NetlinkError> {
    if let Some(id) = route.nexthop {
        let hop = nexthops
            .iter()
            .find(|n| n.id == id)
            .ok_or_else(|| kernel_error("add route", EINVAL))?;
        route.oif = hop.oif;
        route.gateway = hop.gateway;
        route.onlink = hop.onlink;
    }
    Ok(route)
}

/// A MAC address from a link index, unique in the fake kernel.
fn mac_of(index: u32) -> MacAddr {
    let b = index.to_be_bytes();
    MacAddr([0x02, 0xfa, b[0], b[1], b[2], b[3]])
}

impl Kernel for FakeKernel {
    type Rtnl = FakeNetlink;
    type Nft = FakeNft;
    fn host(&self) -> Result<FakeNetlink, NetlinkError> {
        Ok(FakeNetlink {
            kernel: self.clone(),
            ns: 0,
        })
    }
    fn nftables(&self) -> FakeNft {
        self.state().nft.clone()
    }
}

impl FakeNetlink {
    fn read<T>(&self, f: impl FnOnce(&Namespace) -> T) -> Result<T, NetlinkError> {
        Ok(f(&self.kernel.state().namespaces[self.ns]))
    }
}

impl Rtnetlink for FakeNetlink {
    type Namespace = FakeNetns;

    fn link_by_name(&mut self, name: &str) -> Result<Option<Link>, NetlinkError> {
        self.read(|ns| ns.link(name).cloned())
    }

    fn links(&mut self) -> Result<Vec<Link>, NetlinkError> {
        self.read(|ns| ns.links.clone())
    }

    fn add_veth(
        &mut self,
        name: &str,
        peer_name: &str,
        peer_ns: &FakeNetns,
        mtu: u32,
        peer_mac: Option<MacAddr>,
    ) -> Result<(), NetlinkError> {
        let mut state = self.kernel.state();
        state.count("create veth")?;
        if state.namespaces[self.ns].link(name).is_some()
            || state.namespaces[peer_ns.0].link(peer_name).is_some()
        {
            return Err(kernel_error("create veth", EEXIST));
        }
        let (here, there) = (state.next_index, state.next_index + 1);
        state.next_index += 2;
        let link = |index, name: &str, up, mac| Link {
            index,
            name: name.to_string(),
            mac: Some(mac),
            mtu,
            up,
            kind: Some("veth".into()),
            vxlan: None,
        };
        state.namespaces[self.ns]
            .links
            .push(link(here, name, true, mac_of(here)));
        state.namespaces[peer_ns.0].links.push(link(
            there,
            peer_name,
            false,
            peer_mac.unwrap_or(mac_of(there)),
        ));
        state.peers.push(((self.ns, here), (peer_ns.0, there)));
        Ok(())
    }

    fn add_vxlan(&mut self, spec: &VxlanSpec) -> Result<(), NetlinkError> {
        let mut state = self.kernel.state();
        state.count("create vxlan")?;
        let index = state.next_index;
        state.next_index += 1;
        let space = &mut state.namespaces[self.ns];
        if spec.vxlan.underlay.is_some_and(|u| !space.has_index(u)) {
            return Err(kernel_error("create vxlan", ENODEV));
        }
        space.add_link(Link {
            index,
            name: spec.name.clone(),
            mac: Some(spec.mac),
            mtu: spec.mtu,
            up: false,
            kind: Some("vxlan".into()),
            vxlan: Some(spec.vxlan.clone()),
        })
    }

    fn delete_link(&mut self, name: &str) -> Result<(), NetlinkError> {
        let mut state = self.kernel.state();
        state.count("delete link")?;
        if let Some(index) = state.namespaces[self.ns].link(name).map(|l| l.index) {
            state.delete(self.ns, index);
        }
        Ok(())
    }

    fn delete_link_at(&mut self, index: u32) -> Result<(), NetlinkError> {
        let mut state = self.kernel.state();
        state.count("delete link")?;
        state.delete(self.ns, index);
        Ok(())
    }

    fn addresses(&mut self, index: u32) -> Result<Vec<IpNet>, NetlinkError> {
        self.read(|ns| {
            ns.addresses
                .iter()
                .filter(|(i, _)| *i == index)
                .map(|(_, a)| *a)
                .collect()
        })
    }

    /// Every address of the in-memory kernel has settled.
    fn settled_addresses(&mut self, index: u32) -> Result<Vec<IpNet>, NetlinkError> {
        self.addresses(index)
    }

    fn all_ipv6_addresses(&mut self) -> Result<Vec<(u32, IpNet)>, NetlinkError> {
        self.read(|ns| {
            ns.addresses
                .iter()
                .filter(|(_, a)| a.addr().is_ipv6())
                .copied()
                .collect()
        })
    }

    fn all_fdb(&mut self) -> Result<Vec<FdbEntry>, NetlinkError> {
        self.read(|ns| ns.fdb.clone())
    }

    fn nexthops(&mut self) -> Result<Vec<Nexthop>, NetlinkError> {
        self.read(|ns| ns.nexthops.clone())
    }

    fn rules(&mut self, ipv6: bool) -> Result<Vec<Rule>, NetlinkError> {
        self.read(|ns| {
            ns.rules
                .iter()
                .filter(|r| r.ipv6 == ipv6)
                .cloned()
                .collect()
        })
    }

    fn routes(&mut self, ipv6: bool, table: u32) -> Result<Vec<Route>, NetlinkError> {
        Ok(self
            .all_routes(ipv6)?
            .into_iter()
            .filter(|r| r.table == table)
            .collect())
    }

    fn all_routes(&mut self, ipv6: bool) -> Result<Vec<Route>, NetlinkError> {
        self.read(|ns| {
            ns.routes
                .iter()
                .filter(|r| r.dst.addr().is_ipv6() == ipv6)
                .cloned()
                .collect()
        })
    }

    fn neighbours(&mut self, index: u32) -> Result<Vec<Neighbour>, NetlinkError> {
        Ok(self
            .all_neighbours()?
            .into_iter()
            .filter(|n| n.index == index)
            .collect())
    }

    fn all_neighbours(&mut self) -> Result<Vec<Neighbour>, NetlinkError> {
        self.read(|ns| ns.neighbours.clone())
    }

    fn apply(&mut self, changes: Vec<Change>) -> Vec<Result<(), NetlinkError>> {
        let mut state = self.kernel.state();
        changes
            .into_iter()
            .map(|change| state.change(self.ns, change))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_veth_goes_with_its_peer_and_everything_on_both() {
        let kernel = FakeKernel::default();
        let (netns, mut pod) = kernel.namespace();
        let mut host = kernel.host().unwrap();
        host.add_veth("h", "eth0", &netns, 1450, None).unwrap();
        assert!(
            host.add_veth("h", "eth1", &netns, 1450, None)
                .unwrap_err()
                .is_exists()
        );
        let index = pod.link_by_name("eth0").unwrap().unwrap().index;
        let address: IpNet = "10.0.0.5/32".parse().unwrap();
        let results = pod.apply(vec![
            Change::SetUp(index),
            Change::AddAddress { index, address },
            Change::AddAddress { index, address },
            Change::SetUp(999),
        ]);
        assert!(results[..3].iter().all(Result::is_ok));
        assert_eq!(kernel.snapshot(netns).addresses, [(index, address)]);
        assert!(results[3].as_ref().unwrap_err().is_no_device());
        host.delete_link("h").unwrap();
        host.delete_link("h").unwrap();
        assert!(kernel.node().is_empty() && kernel.snapshot(netns).is_empty());
    }

    #[test]
    fn fails_the_change_it_is_told_to() {
        let kernel = FakeKernel::default();
        let (netns, _) = kernel.namespace();
        let mut host = kernel.host().unwrap();
        kernel.fail_changes(&[2]);
        host.delete_link("h").unwrap();
        assert!(host.add_veth("h", "eth0", &netns, 1450, None).is_err());
        host.add_veth("h", "eth0", &netns, 1450, None).unwrap();
        assert_eq!(kernel.changes(), 3);
    }
}
