//! This node's place on the underlay: its addresses (VXLAN's outer source, peers' next hop for
//! routed pools), IPv4, IPv6 or both, with the subnets they are on, the device holding them, and
//! that device's MTU.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use strait_netlink::{Netlink, NetlinkError, TABLE_MAIN};

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
pub fn resolve(
    nl: &mut Netlink,
    configured: Option<Ipv4Addr>,
    configured6: Option<Ipv6Addr>,
) -> Result<Underlay, AgentError> {
    let links = nl.links().map_err(AgentError::Interfaces)?;
    let v4 = |nl: &mut Netlink, index: u32| -> Result<Vec<(Ipv4Addr, IpNet)>, NetlinkError> {
        Ok(nl
            .addresses(index)?
            .into_iter()
            .filter_map(|a| match a.addr() {
                IpAddr::V4(v4) if !v4.is_loopback() && !v4.is_link_local() => Some((v4, a.trunc())),
                _ => None,
            })
            .collect())
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
    let default_route_device = |nl: &mut Netlink, ipv6: bool| -> Result<Option<u32>, AgentError> {
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
                let first = v4(nl, index).map_err(AgentError::Interfaces)?;
                via_v4 = first.into_iter().next().map(|a| (a, index));
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
                    (None, index)
                }
                (None, None) => {
                    let index =
                        default_route_device(nl, true)?.ok_or(AgentError::NodeAddressUnknown)?;
                    (None, index)
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
