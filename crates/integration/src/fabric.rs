//! The simulated underlay: a "fabric" namespace holding a bridge, and each node's `eth0` plugged
//! into it, so nodes share one L2 segment (192.168.100.0/24 and fd00:fab::/64), like machines
//! on a switch.

use std::sync::atomic::{AtomicU8, Ordering};

use crate::netns::TestNetns;
use crate::run_ok;

#[derive(Debug)]
pub struct Fabric {
    pub ns: TestNetns,
    next: AtomicU8,
}

/// The underlay prefix every fabric uses.
pub const PREFIX: &str = "192.168.100";
/// Its IPv6 prefix (a /64).
pub const PREFIX6: &str = "fd00:fab:";

/// The bridge's own MAC, set so that it never changes. A bridge left to choose takes the lowest
/// MAC of its ports, so plugging in a node would change it under the neighbour entries of the
/// nodes already there, and they could not reach the fabric's own address (etcd, the API server)
/// until those entries expired.
const BRIDGE_MAC: &str = "02:00:c0:a8:64:fe";

/// The IPv6 address the fabric gives the node it gave IPv4 address `v4`.
pub fn ipv6_of(v4: &str) -> String {
    let n = v4.rsplit('.').next().expect("an IPv4 address");
    format!("{PREFIX6}:{n}")
}

impl Fabric {
    pub fn new() -> Fabric {
        let ns = TestNetns::new("fab");
        ns.ip(&[
            "link", "add", "br0", "address", BRIDGE_MAC, "type", "bridge",
        ]);
        ns.ip(&["link", "set", "br0", "up"]);
        Fabric {
            ns,
            next: AtomicU8::new(1),
        }
    }

    /// Plugs `node` in: its `eth0` gets the next address (and the IPv6 address with the same
    /// number); returns the IPv4 address.
    pub fn attach(&self, node: &TestNetns) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let port = format!("p{n}");
        run_ok(
            "ip",
            &[
                "-n",
                &self.ns.name,
                "link",
                "add",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &node.name,
            ],
        );
        self.ns.ip(&["link", "set", &port, "master", "br0"]);
        self.ns.ip(&["link", "set", &port, "up"]);
        let address = format!("{PREFIX}.{n}");
        node.ip(&["addr", "add", &format!("{address}/24"), "dev", "eth0"]);
        node.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{}/64", ipv6_of(&address)),
            "dev",
            "eth0",
            "nodad",
        ]);
        // The link-local address too is usable at once, like a machine's that has been up for
        // a while: the neighbour solicitations for forwarded packets leave from it.
        node.exec("sysctl", &["-qw", "net.ipv6.conf.eth0.accept_dad=0"]);
        node.ip(&["link", "set", "eth0", "up"]);
        address
    }
}

impl Default for Fabric {
    fn default() -> Self {
        Fabric::new()
    }
}
