//! The kernel as the second ledger of a node's pod addresses: each of Strait's host veths with the
//! addresses it carries (its proto-83 host routes in any table and its permanent neighbours, both
//! families).
//! The agent reads it at start, beside its attachment records, so that a lost or unreadable record
//! never frees the address of a pod that still runs. Reads only; deletes nothing.

use std::collections::BTreeSet;
use std::net::IpAddr;

use strait_netlink::{Link, Neighbour, Route};

use crate::error::DataplaneError;
use crate::naming::{ROUTE_PROTOCOL, is_host_veth};
use crate::rtnetlink::Rtnetlink;

/// One of Strait's host veths as the kernel holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostVeth {
    pub name: String,
    /// Its interface index: this device, not a later one of the same name.
    pub index: u32,
    /// The pod addresses it carries, in order.
    pub addresses: Vec<IpAddr>,
}

/// Every host veth of Strait's on this node, with the addresses it carries.
pub fn host_veths(host: &mut impl Rtnetlink) -> Result<Vec<HostVeth>, DataplaneError> {
    let links = host.links()?;
    let mut routes = host.all_routes(false)?;
    routes.extend(host.all_routes(true)?);
    let neighbours = host.all_neighbours()?;
    Ok(carried(&links, &routes, &neighbours))
}

/// The pure part of [`host_veths`]: a veth carries an address when a host route of Strait's sends
/// that single address to it, or when it has a permanent neighbour entry for it.
fn carried(links: &[Link], routes: &[Route], neighbours: &[Neighbour]) -> Vec<HostVeth> {
    links
        .iter()
        .filter(|l| is_host_veth(&l.name))
        .map(|l| {
            let mut addresses: BTreeSet<IpAddr> = routes
                .iter()
                .filter(|r| {
                    r.protocol == ROUTE_PROTOCOL
                        && r.oif == Some(l.index)
                        && r.dst.prefix_len() == r.dst.max_prefix_len()
                })
                .map(|r| r.dst.addr())
                .collect();
            addresses.extend(
                neighbours
                    .iter()
                    .filter(|n| n.index == l.index && n.permanent)
                    .map(|n| n.ip),
            );
            HostVeth {
                name: l.name.clone(),
                index: l.index,
                addresses: addresses.into_iter().collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use strait_netlink::{Scope, TABLE_MAIN};

    use super::*;

    fn link(index: u32, name: &str) -> Link {
        Link {
            index,
            name: name.into(),
            mac: None,
            mtu: 1450,
            up: true,
            kind: Some("veth".into()),
            vxlan: None,
        }
    }

    fn route(dst: &str, oif: u32, protocol: u8) -> Route {
        Route {
            dst: dst.parse().unwrap(),
            gateway: None,
            oif: Some(oif),
            table: TABLE_MAIN,
            protocol,
            scope: Scope::Link,
            onlink: false,
            nexthop: None,
        }
    }

    fn neighbour(index: u32, ip: &str, permanent: bool) -> Neighbour {
        Neighbour {
            index,
            ip: ip.parse().unwrap(),
            mac: None,
            permanent,
        }
    }

    #[test]
    fn a_veth_carries_its_host_routes_and_permanent_neighbours_and_nothing_else() {
        let links = [
            link(4, "st0123456789ab"),
            link(5, "eth0"),
            link(6, "st00000000000f"),
        ];
        let routes = [
            route("10.244.0.5/32", 4, ROUTE_PROTOCOL),
            route("10.244.0.9/32", 4, 4),              // not ours
            route("10.244.1.0/26", 4, ROUTE_PROTOCOL), // not a pod address
            route("10.244.0.7/32", 5, ROUTE_PROTOCOL), // not a host veth
        ];
        let neighbours = [
            neighbour(4, "10.244.0.5", true),
            neighbour(6, "fd00::5", true), // its route was deleted: the neighbour still tells
            neighbour(6, "10.244.0.8", false),
        ];
        assert_eq!(
            carried(&links, &routes, &neighbours),
            vec![
                HostVeth {
                    name: "st0123456789ab".into(),
                    index: 4,
                    addresses: vec!["10.244.0.5".parse().unwrap()],
                },
                HostVeth {
                    name: "st00000000000f".into(),
                    index: 6,
                    addresses: vec!["fd00::5".parse().unwrap()],
                },
            ]
        );
    }
}
