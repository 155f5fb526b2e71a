//! The kernel as the pod data plane sees it: the rtnetlink operations it needs, typed, behind
//! one trait. [`Netlink`] (a real socket, in the node's or a pod's namespace) implements it; so
//! does an in-memory kernel for unit tests (the `fake-kernel` feature). [`Kernel`] opens the
//! node's endpoint, so that the agent's CNI handling runs unchanged on either.

use std::net::IpAddr;

use ipnet::IpNet;
use strait_netlink::{Link, MacAddr, Neighbour, Netlink, NetlinkError, Route, add_address_request};
use strait_netns::Netns;

/// One change to the kernel, applied in a pipelined batch ([`Rtnetlink::apply`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Sets the link with this index up.
    SetUp(u32),
    /// Adds an address to a link (IPv6 ones without duplicate address detection).
    AddAddress { index: u32, address: IpNet },
    /// Adds or replaces a permanent neighbour entry.
    SetNeighbour {
        index: u32,
        ip: IpAddr,
        mac: MacAddr,
    },
    /// Adds a route; one to the same destination in the same table is refused (EEXIST).
    AddRoute(Route),
}

/// The rtnetlink operations of one network namespace.
pub trait Rtnetlink {
    /// A network namespace a veth's peer can be created in.
    type Namespace;

    fn link_by_name(&mut self, name: &str) -> Result<Option<Link>, NetlinkError>;
    fn links(&mut self) -> Result<Vec<Link>, NetlinkError>;
    /// Creates a veth pair: `name` here, up, and `peer_name` inside `peer_ns`, down; EEXIST if
    /// either name is taken.
    fn add_veth(
        &mut self,
        name: &str,
        peer_name: &str,
        peer_ns: &Self::Namespace,
        mtu: u32,
        peer_mac: Option<MacAddr>,
    ) -> Result<(), NetlinkError>;
    /// Deletes a link by name; one already gone is not an error.
    fn delete_link(&mut self, name: &str) -> Result<(), NetlinkError>;
    /// Deletes the link with this index (that device, not a later one of the same name); one
    /// already gone is not an error.
    fn delete_link_at(&mut self, index: u32) -> Result<(), NetlinkError>;
    fn addresses(&mut self, index: u32) -> Result<Vec<IpNet>, NetlinkError>;
    /// The routes of one family (`ipv6`) in one table.
    fn routes(&mut self, ipv6: bool, table: u32) -> Result<Vec<Route>, NetlinkError>;
    /// The routes of one family in every table.
    fn all_routes(&mut self, ipv6: bool) -> Result<Vec<Route>, NetlinkError>;
    fn neighbours(&mut self, index: u32) -> Result<Vec<Neighbour>, NetlinkError>;
    fn all_neighbours(&mut self) -> Result<Vec<Neighbour>, NetlinkError>;
    /// Applies changes in order, pipelined; one result per change, a failed one does not stop
    /// the others.
    fn apply(&mut self, changes: Vec<Change>) -> Vec<Result<(), NetlinkError>>;

    /// [`Rtnetlink::apply`], answering the first failure.
    fn apply_all(&mut self, changes: Vec<Change>) -> Result<(), NetlinkError> {
        self.apply(changes).into_iter().collect()
    }
}

/// Opens the node's own rtnetlink endpoint, each time one is needed (a socket is not shared
/// between requests).
pub trait Kernel: Clone + Send + Sync + 'static {
    type Rtnl: Rtnetlink<Namespace: Send> + Send + 'static;
    fn host(&self) -> Result<Self::Rtnl, NetlinkError>;
}

/// The node's real kernel.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemKernel;

impl Kernel for SystemKernel {
    type Rtnl = Netlink;
    fn host(&self) -> Result<Netlink, NetlinkError> {
        Netlink::new()
    }
}

impl Rtnetlink for Netlink {
    type Namespace = Netns;

    fn link_by_name(&mut self, name: &str) -> Result<Option<Link>, NetlinkError> {
        Netlink::link_by_name(self, name)
    }
    fn links(&mut self) -> Result<Vec<Link>, NetlinkError> {
        Netlink::links(self)
    }
    fn add_veth(
        &mut self,
        name: &str,
        peer_name: &str,
        peer_ns: &Netns,
        mtu: u32,
        peer_mac: Option<MacAddr>,
    ) -> Result<(), NetlinkError> {
        Netlink::add_veth(self, name, peer_name, peer_ns, mtu, peer_mac)
    }
    fn delete_link(&mut self, name: &str) -> Result<(), NetlinkError> {
        Netlink::delete_link(self, name)
    }
    fn delete_link_at(&mut self, index: u32) -> Result<(), NetlinkError> {
        Netlink::delete_link_at(self, index)
    }
    fn addresses(&mut self, index: u32) -> Result<Vec<IpNet>, NetlinkError> {
        Netlink::addresses(self, index)
    }
    fn routes(&mut self, ipv6: bool, table: u32) -> Result<Vec<Route>, NetlinkError> {
        Netlink::routes(self, ipv6, table)
    }
    fn all_routes(&mut self, ipv6: bool) -> Result<Vec<Route>, NetlinkError> {
        Netlink::all_routes(self, ipv6)
    }
    fn neighbours(&mut self, index: u32) -> Result<Vec<Neighbour>, NetlinkError> {
        Netlink::neighbours(self, index)
    }
    fn all_neighbours(&mut self) -> Result<Vec<Neighbour>, NetlinkError> {
        Netlink::all_neighbours(self)
    }
    fn apply(&mut self, changes: Vec<Change>) -> Vec<Result<(), NetlinkError>> {
        self.batch(
            changes
                .into_iter()
                .map(|change| match change {
                    Change::SetUp(index) => Link::up_request(index),
                    Change::AddAddress { index, address } => add_address_request(index, address),
                    Change::SetNeighbour { index, ip, mac } => {
                        Neighbour::set_request(index, ip, mac)
                    }
                    Change::AddRoute(route) => route.add_request(),
                })
                .collect(),
        )
    }
}
