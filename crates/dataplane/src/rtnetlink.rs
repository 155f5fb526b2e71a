//! The kernel as the data plane sees it: the rtnetlink operations it needs (pods' veth pairs,
//! the node model's devices, entries, routes and rules), typed, behind one trait. [`Netlink`] (a real
//! socket, in the node's or a pod's namespace) implements it; so does an in-memory kernel for
//! unit tests (the `fake-kernel` feature). [`Kernel`] opens the node's endpoint, so that the
//! agent's CNI handling and a reconcile pass run unchanged on either.

use std::net::IpAddr;

use ipnet::IpNet;
use strait_netlink::{
    FdbEntry, Link, MacAddr, Neighbour, Netlink, NetlinkError, Nexthop, Route, Rule, VxlanSpec,
    add_address_request,
};
use strait_netns::Netns;
use strait_nft::{Nft, Nftables};

/// One change to the kernel, applied in a pipelined batch ([`Rtnetlink::apply`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Sets the link with this index up.
    SetUp(u32),
    SetMtu {
        index: u32,
        mtu: u32,
    },
    /// Adds an address to a link, or keeps it when it is there (IPv6 ones without duplicate
    /// address detection).
    AddAddress {
        index: u32,
        address: IpNet,
    },
    /// Adds or replaces a permanent neighbour entry.
    SetNeighbour {
        index: u32,
        ip: IpAddr,
        mac: MacAddr,
    },
    DelNeighbour {
        index: u32,
        ip: IpAddr,
    },
    /// Adds a route; one to the same destination in the same table is refused (EEXIST).
    AddRoute(Route),
    /// Adds a route, or replaces the one to the same destination in the same table.
    ReplaceRoute(Route),
    /// Deletes the route to `dst` in `table` of `protocol`, and of the rest of the route what
    /// it sets (a link, a gateway, a nexthop).
    DelRoute(Route),
    /// Creates a nexthop object; an id already taken is refused (EEXIST), so no one else's is
    /// ever replaced.
    AddNexthop {
        id: u32,
        gateway: IpAddr,
        oif: u32,
        onlink: bool,
        protocol: u8,
    },
    /// Deletes a nexthop object, and with it the routes through it.
    DelNexthop(u32),
    /// Sets a VXLAN device's forwarding entry for a MAC (`bridge fdb replace`).
    SetFdb(FdbEntry),
    DelFdb(FdbEntry),
    /// Adds a policy routing rule; the very same rule already there is refused (EEXIST).
    AddRule(Rule),
    DelRule(Rule),
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
    /// Creates a VXLAN device (down); EOPNOTSUPP on a kernel without VXLAN.
    fn add_vxlan(&mut self, spec: &VxlanSpec) -> Result<(), NetlinkError>;
    fn addresses(&mut self, index: u32) -> Result<Vec<IpNet>, NetlinkError>;
    /// The addresses on link `index` fit to be given to others as the node's (IPv6 ones neither
    /// temporary, deprecated, tentative nor failed).
    fn settled_addresses(&mut self, index: u32) -> Result<Vec<IpNet>, NetlinkError>;
    /// Every IPv6 address of every link, with the link's index.
    fn all_ipv6_addresses(&mut self) -> Result<Vec<(u32, IpNet)>, NetlinkError>;
    /// The routes of one family (`ipv6`) in one table.
    fn routes(&mut self, ipv6: bool, table: u32) -> Result<Vec<Route>, NetlinkError>;
    /// The routes of one family in every table.
    fn all_routes(&mut self, ipv6: bool) -> Result<Vec<Route>, NetlinkError>;
    fn neighbours(&mut self, index: u32) -> Result<Vec<Neighbour>, NetlinkError>;
    fn all_neighbours(&mut self) -> Result<Vec<Neighbour>, NetlinkError>;
    /// The forwarding entries of every VXLAN device.
    fn all_fdb(&mut self) -> Result<Vec<FdbEntry>, NetlinkError>;
    fn nexthops(&mut self) -> Result<Vec<Nexthop>, NetlinkError>;
    /// The rules of one family that send packets to a table.
    fn rules(&mut self, ipv6: bool) -> Result<Vec<Rule>, NetlinkError>;
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
    type Nft: Nftables + Send + 'static;
    fn host(&self) -> Result<Self::Rtnl, NetlinkError>;
    /// The node's nftables ruleset.
    fn nftables(&self) -> Self::Nft;
}

/// The node's real kernel.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemKernel;

impl Kernel for SystemKernel {
    type Rtnl = Netlink;
    type Nft = Nft;
    fn host(&self) -> Result<Netlink, NetlinkError> {
        Netlink::new()
    }
    fn nftables(&self) -> Nft {
        Nft
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
    fn add_vxlan(&mut self, spec: &VxlanSpec) -> Result<(), NetlinkError> {
        Netlink::add_vxlan(self, spec)
    }
    fn addresses(&mut self, index: u32) -> Result<Vec<IpNet>, NetlinkError> {
        Netlink::addresses(self, index)
    }
    fn settled_addresses(&mut self, index: u32) -> Result<Vec<IpNet>, NetlinkError> {
        Netlink::settled_addresses(self, index)
    }
    fn all_ipv6_addresses(&mut self) -> Result<Vec<(u32, IpNet)>, NetlinkError> {
        Netlink::all_ipv6_addresses(self)
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
    fn all_fdb(&mut self) -> Result<Vec<FdbEntry>, NetlinkError> {
        Netlink::all_fdb(self)
    }
    fn nexthops(&mut self) -> Result<Vec<Nexthop>, NetlinkError> {
        Netlink::nexthops(self)
    }
    fn rules(&mut self, ipv6: bool) -> Result<Vec<Rule>, NetlinkError> {
        Netlink::rules(self, ipv6)
    }
    fn apply(&mut self, changes: Vec<Change>) -> Vec<Result<(), NetlinkError>> {
        self.batch(
            changes
                .into_iter()
                .map(|change| match change {
                    Change::SetUp(index) => Link::up_request(index),
                    Change::SetMtu { index, mtu } => Link::mtu_request(index, mtu),
                    Change::AddAddress { index, address } => add_address_request(index, address),
                    Change::SetNeighbour { index, ip, mac } => {
                        Neighbour::set_request(index, ip, mac)
                    }
                    Change::DelNeighbour { index, ip } => Neighbour::delete_request(index, ip),
                    Change::AddRoute(route) => route.add_request(),
                    Change::ReplaceRoute(route) => route.replace_request(),
                    Change::DelRoute(route) => route.delete_request(),
                    Change::AddNexthop {
                        id,
                        gateway,
                        oif,
                        onlink,
                        protocol,
                    } => Nexthop::create_request(id, gateway, oif, onlink, protocol),
                    Change::DelNexthop(id) => Nexthop::delete_request(id),
                    Change::SetFdb(entry) => entry.replace_request(),
                    Change::DelFdb(entry) => entry.delete_request(),
                    Change::AddRule(rule) => rule.add_request(),
                    Change::DelRule(rule) => rule.delete_request(),
                })
                .collect(),
        )
    }
}
