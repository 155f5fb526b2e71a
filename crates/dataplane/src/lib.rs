//! A pod's network as kernel objects. [`PodPlan`] says what a pod must have (pure data);
//! [`add_pod`] builds it (a failed build leaves its caller the host veth to delete),
//! [`check_pod`] lists every way the kernel differs from it, [`delete_pod`] removes it
//! (repeat-safe). Overlay and routed pods look
//! the same on their node:
//!
//! - in the pod: `IFNAME` with `POD_IP/32`, `169.254.1.1 dev IFNAME scope link`,
//!   `default via 169.254.1.1 dev IFNAME`, and a permanent neighbour for 169.254.1.1 pointing at
//!   the host veth's MAC (so the first packet never waits on ARP); for IPv6, `POD_IP6/128`
//!   (`nodad`), `default via fe80::1 dev IFNAME` and a permanent neighbour for `fe80::1`;
//! - on the host: the veth (named from the attachment, see [`host_veth_name`]) up, without
//!   address for IPv4 and with `fe80::1/64` (`nodad`) when the pod has IPv6,
//!   `POD_IP dev VETH scope link proto strait` for each address, and a permanent neighbour for
//!   each (at the pod interface's MAC, which Strait chooses: [`pod_mac`]).
//!
//! Everything else Strait holds in the node's kernel is one node model ([`model`]): what must be
//! there, from the overlay ([`overlay`]) and the pods' host sides, and one pass that reads what
//! is there, plans the difference and applies it ([`reconcile`]).

mod error;
#[cfg(any(test, feature = "fake-kernel"))]
pub mod fake;
pub mod fault;
mod finding;
mod kernel;
pub mod ledger;
pub mod model;
mod naming;
pub mod overlay;
mod pod;
pub mod reconcile;
mod rtnetlink;

pub use error::DataplaneError;
pub use finding::{End, Finding};
pub use naming::{
    GATEWAY_V4, GATEWAY_V6, HOST_VETH_PREFIX, ROUTE_PROTOCOL, families, gateway_for, gateways,
    host_veth_name, is_host_veth, link_local, pod_mac, vtep_mac,
};
pub use pod::{PodLinks, PodNamespace, PodPlan, add_pod, check_pod, delete_pod, pod_links};
pub use rtnetlink::{Change, Kernel, Rtnetlink, SystemKernel};
