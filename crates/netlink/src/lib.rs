//! Programming the kernel's network objects over rtnetlink, synchronously. A [`Netlink`] is one
//! socket bound to one network namespace; [`Netlink::from_socket`] takes one opened inside
//! another namespace (see `Netns::route_socket`), so all work is done from the caller's thread
//! without entering it. Links, addresses, routes, rules, neighbours, FDB entries and nexthop
//! objects are each one plain struct. [`Netlink::batch`] pipelines many changes; a [`Monitor`]
//! receives the kernel's change events.

mod addr;
mod error;
mod event;
mod fdb;
mod link;
mod neigh;
mod nexthop;
mod route;
mod rule;
mod socket;

pub use addr::add_address_request;
pub use error::NetlinkError;
pub use event::Event;
pub use fdb::FdbEntry;
pub use link::{Link, MacAddr, Vxlan, VxlanSpec};
pub use neigh::Neighbour;
pub use nexthop::Nexthop;
pub use route::{Route, Scope, TABLE_MAIN};
pub use rule::Rule;
pub use socket::{BATCH, Body, Monitor, Netlink, Request, groups};
