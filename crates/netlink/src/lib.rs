//! Programming the kernel's network objects over rtnetlink, synchronously. A [`Netlink`] is one
//! socket bound to one network namespace; [`Netlink::in_netns`] opens it inside another namespace
//! on a dedicated thread and hands it back, so all work is then done from the caller's thread.
//! [`Netlink::batch`] pipelines many changes; a [`Monitor`] receives the kernel's change events.

mod addr;
mod error;
mod fdb;
mod link;
mod neigh;
mod nexthop;
mod route;
mod socket;

pub use addr::add_address_request;
pub use error::NetlinkError;
pub use fdb::FdbEntry;
pub use link::{Link, MacAddr, Vxlan, VxlanSpec};
pub use neigh::Neighbour;
pub use nexthop::Nexthop;
pub use route::{Route, Scope, TABLE_MAIN};
pub use socket::{BATCH, Body, Event, Monitor, Netlink, Request, groups};
