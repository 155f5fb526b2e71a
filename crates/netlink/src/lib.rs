//! Programming the kernel's network objects over rtnetlink, synchronously. A [`Netlink`] is one
//! socket bound to one network namespace; [`Netlink::in_netns`] opens it inside another namespace
//! on a dedicated thread and hands it back, so all work is then done from the caller's thread.

mod addr;
mod error;
mod link;
mod neigh;
mod route;
mod socket;

pub use error::NetlinkError;
pub use link::{Link, MacAddr};
pub use neigh::Neighbour;
pub use route::{Route, Scope, TABLE_MAIN};
pub use socket::Netlink;
