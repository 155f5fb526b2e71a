//! This node's place on the underlay: its addresses (VXLAN's outer source, peers' next hop for
//! routed pools), IPv4, IPv6 or both, with the subnets they are on, the device holding them, and
//! that device's MTU.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use strait_dataplane::Rtnetlink;
use strait_netlink::{NetlinkError, TABLE_MAIN};

use crate::error::AgentError;

/// At least one of the two addresses is there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Underlay {
    /// The device's IPv4 address with its subnet, if it has one: the next hop of routed IPv4
    /// pools for peers.
    pub address4: Option<(Ipv4Addr, IpNet)>,
    /// The device's first global IPv6 address, with its subnet, if it has one: the next hop of
    /// routed IPv6 pools for peers.
    pub address6: Option<(Ipv6Addr, IpNet)>,
    pub device: String,
    pub mtu: u32,
}

impl Underlay {
    /// The subnets of the node's underlay addresses.
    pub fn subnets(&self) -> Vec<IpNet> {
        self.address4
            .map(|(_, subnet)| subnet)
            .into_iter()
            .chain(self.address6.map(|(_, subnet)| subnet))
            .collect()
    }

    /// The address the node is known by: its IPv4 one, or on a node without, its IPv6 one.
    pub fn address(&self) -> IpAddr {
        match (self.address4, self.address6) {
            (Some((v4, _)), _) => v4.into(),
            (None, Some((v6, _))) => v6.into(),
            (None, None) => unreachable!("resolve finds at least one address"),
        }
    }
}

/// Neither loopback, unspecified, link-local nor multicast: an address peers can route to.
fn is_global(ip: Ipv6Addr) -> bool {
    !(ip.is_loopback() || ip.is_unspecified() || ip.is_unicast_link_local() || ip.is_multicast())
}

/// Finds the underlay device: the one holding the configured IPv4 address, else the IPv4
/// default route's if it has an IPv4 address (its first is taken), else the one holding the
/// configured IPv6 address, else the IPv6 default route's (then the node has no IPv4 underlay
/// address). Its IPv6 address is `configured6` or its first global settled one.
pub fn resolve<R: Rtnetlink>(
    nl: &mut R,
    configured: Option<Ipv4Addr>,
    configured6: Option<Ipv6Addr>,
) -> Result<Underlay, AgentError> {
    let links = nl.links().map_err(AgentError::Interfaces)?;
    let v4 = |nl: &mut R, index: u32| -> Result<Vec<(Ipv4Addr, IpNet)>, NetlinkError> {
        Ok(nl
            .addresses(index)?
            .into_iter()
            .filter_map(|a| match a.addr() {
                IpAddr::V4(v4) if !v4.is_loopback() && !v4.is_link_local() => Some((v4, a.trunc())),
                _ => None,
            })
            .collect())
    };
    // A device found through IPv6 may still have IPv4 (on-link only, without a default route).
    let first_v4 = |nl: &mut R, index: u32| -> Result<Option<(Ipv4Addr, IpNet)>, AgentError> {
        Ok(v4(nl, index)
            .map_err(AgentError::Interfaces)?
            .into_iter()
            .next())
    };
    let global = |addresses: Vec<IpNet>| -> Vec<(Ipv6Addr, IpNet)> {
        addresses
            .into_iter()
            .filter_map(|a| match a.addr() {
                IpAddr::V6(v6) if is_global(v6) => Some((v6, a.trunc())),
                _ => None,
            })
            .collect()
    };
    let default_route_device = |nl: &mut R, ipv6: bool| -> Result<Option<u32>, AgentError> {
        Ok(nl
            .routes(ipv6, TABLE_MAIN)
            .map_err(AgentError::Interfaces)?
            .into_iter()
            .find(|r| r.dst.prefix_len() == 0 && r.oif.is_some())
            .and_then(|r| r.oif))
    };
    let (address4, index) = match configured {
        Some(address) => {
            let mut found = None;
            for link in &links {
                if let Some(a) = v4(nl, link.index)
                    .map_err(AgentError::Interfaces)?
                    .into_iter()
                    .find(|a| a.0 == address)
                {
                    found = Some((a, link.index));
                    break;
                }
            }
            let (a, index) = found.ok_or(AgentError::NodeAddressNotLocal(address))?;
            (Some(a), index)
        }
        None => {
            // The IPv4 default route's device, if it has an IPv4 address (a route through an
            // IPv6 next hop says nothing of the node's IPv4 address).
            let mut via_v4 = None;
            if let Some(index) = default_route_device(nl, false)? {
                via_v4 = first_v4(nl, index)?.map(|a| (a, index));
            }
            match (via_v4, configured6) {
                (Some((a, index)), _) => (Some(a), index),
                (None, Some(want)) => {
                    let mut found = None;
                    for link in &links {
                        let addresses = nl.addresses(link.index).map_err(AgentError::Interfaces)?;
                        if global(addresses).iter().any(|(a, _)| *a == want) {
                            found = Some(link.index);
                            break;
                        }
                    }
                    let index = found.ok_or(AgentError::NodeAddress6NotLocal(want))?;
                    (first_v4(nl, index)?, index)
                }
                (None, None) => {
                    let index =
                        default_route_device(nl, true)?.ok_or(AgentError::NodeAddressUnknown)?;
                    (first_v4(nl, index)?, index)
                }
            }
        }
    };
    let link = links
        .into_iter()
        .find(|l| l.index == index)
        .ok_or(AgentError::NodeAddressUnknown)?;
    let address6 = match configured6 {
        // Configured: taken even while still tentative (just after the link came up).
        Some(want) => Some(
            global(nl.addresses(index).map_err(AgentError::Interfaces)?)
                .into_iter()
                .find(|(a, _)| *a == want)
                .ok_or_else(|| AgentError::NodeAddress6NotOnUnderlay(want, link.name.clone()))?,
        ),
        None => global(
            nl.settled_addresses(index)
                .map_err(AgentError::Interfaces)?,
        )
        .into_iter()
        .next(),
    };
    if address4.is_none() && address6.is_none() {
        return Err(AgentError::NoSettledAddress6(link.name));
    }
    Ok(Underlay {
        address4,
        address6,
        device: link.name,
        mtu: link.mtu,
    })
}

#[cfg(test)]
mod tests {
    use strait_dataplane::Kernel;
    use strait_dataplane::fake::FakeKernel;
    use strait_netlink::{Link, Route, Scope};

    use super::*;

    /// A node with `eth0` (index 2) and `eth1` (index 3) holding `addresses` (by link index),
    /// and default routes leaving through the given links (IPv4's, IPv6's).
    fn node(
        addresses: &[(u32, &str)],
        v4_default: Option<u32>,
        v6_default: Option<u32>,
    ) -> FakeKernel {
        let kernel = FakeKernel::default();
        kernel.edit(None, |ns| {
            for (index, name) in [(2, "eth0"), (3, "eth1")] {
                ns.links.push(Link {
                    index,
                    name: name.into(),
                    mac: None,
                    mtu: 1500,
                    up: true,
                    kind: None,
                    vxlan: None,
                });
            }
            ns.addresses
                .extend(addresses.iter().map(|(i, a)| (*i, a.parse().unwrap())));
            for (dst, oif) in [("0.0.0.0/0", v4_default), ("::/0", v6_default)] {
                if let Some(oif) = oif {
                    ns.routes.push(Route {
                        dst: dst.parse().unwrap(),
                        gateway: None,
                        oif: Some(oif),
                        table: TABLE_MAIN,
                        protocol: 3,
                        scope: Scope::Universe,
                        onlink: false,
                        nexthop: None,
                    });
                }
            }
        });
        kernel
    }

    /// The underlay's IPv4 address, IPv6 address and device, or the error's message.
    type Found = Result<(Option<String>, Option<String>, String), String>;

    fn resolved(kernel: &FakeKernel, configured: Option<&str>, configured6: Option<&str>) -> Found {
        let mut nl = kernel.host().unwrap();
        let u = resolve(
            &mut nl,
            configured.map(|a| a.parse().unwrap()),
            configured6.map(|a| a.parse().unwrap()),
        )
        .map_err(|e| e.to_string())?;
        assert_eq!(
            u.address(),
            u.address4
                .map(|(a, _)| IpAddr::from(a))
                .or(u.address6.map(|(a, _)| a.into()))
                .unwrap()
        );
        Ok((
            u.address4.map(|(a, _)| a.to_string()),
            u.address6.map(|(a, _)| a.to_string()),
            u.device,
        ))
    }

    fn found(v4: Option<&str>, v6: Option<&str>, device: &str) -> Found {
        Ok((v4.map(String::from), v6.map(String::from), device.into()))
    }

    #[test]
    fn the_underlay_is_found_by_either_family() {
        let dual = [
            (2, "192.168.1.2/24"),
            (2, "fd00:1::2/64"),
            (3, "10.9.0.2/24"),
            (3, "fd00:9::2/64"),
        ];
        let v6_only = [(2, "fe80::2/64"), (2, "fd00:1::2/64"), (3, "fd00:9::2/64")];
        let cases = [
            (
                "the IPv4 default route's device, both its addresses",
                node(&dual, Some(2), Some(3)),
                None,
                None,
                found(Some("192.168.1.2"), Some("fd00:1::2"), "eth0"),
            ),
            (
                "the configured IPv4 address's device",
                node(&dual, Some(2), None),
                Some("10.9.0.2"),
                None,
                found(Some("10.9.0.2"), Some("fd00:9::2"), "eth1"),
            ),
            (
                "an IPv4 default route through a device without IPv4 decides nothing",
                node(&v6_only, Some(2), Some(3)),
                None,
                None,
                found(None, Some("fd00:9::2"), "eth1"),
            ),
            (
                "without IPv4, the configured IPv6 address's device",
                node(&v6_only, None, Some(2)),
                None,
                Some("fd00:9::2"),
                found(None, Some("fd00:9::2"), "eth1"),
            ),
            (
                "without IPv4, the IPv6 default route's device",
                node(&v6_only, None, Some(2)),
                None,
                None,
                found(None, Some("fd00:1::2"), "eth0"),
            ),
            (
                "IPv4 on the link alone: the IPv6 default route's device, with its IPv4 address",
                node(&dual, None, Some(3)),
                None,
                None,
                found(Some("10.9.0.2"), Some("fd00:9::2"), "eth1"),
            ),
            (
                "IPv4 on the link alone: the configured IPv6 address's device, with its IPv4",
                node(&dual, None, None),
                None,
                Some("fd00:1::2"),
                found(Some("192.168.1.2"), Some("fd00:1::2"), "eth0"),
            ),
            (
                "no default route and nothing configured",
                node(&dual, None, None),
                None,
                None,
                Err("cannot tell this node's address".into()),
            ),
            (
                "the IPv6 default route's device has only a link-local address",
                node(&[(2, "fe80::2/64")], None, Some(2)),
                None,
                None,
                Err("no settled global IPv6 address".into()),
            ),
            (
                "a configured IPv4 address no interface holds",
                node(&dual, Some(2), None),
                Some("10.9.0.99"),
                None,
                Err("node_address 10.9.0.99 is not on any interface".into()),
            ),
            (
                "a configured IPv6 address no interface holds",
                node(&v6_only, None, None),
                None,
                Some("fd00:9::99"),
                Err("node_address6 fd00:9::99 is not a global address of any interface".into()),
            ),
        ];
        for (what, kernel, configured, configured6, want) in cases {
            let got = resolved(&kernel, configured, configured6);
            match (&got, &want) {
                (Err(got), Err(want)) => assert!(got.contains(want.as_str()), "{what}: {got}"),
                _ => assert_eq!(got, want, "{what}"),
            }
        }
    }
}
