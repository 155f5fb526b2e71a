//! This node's place on the underlay: its address (VXLAN's outer source, peers' next hop for
//! routed pools) and the subnet it is on, the device holding it, and that device's MTU.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use strait_netlink::{Netlink, NetlinkError, TABLE_MAIN};

use crate::error::AgentError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Underlay {
    pub address: Ipv4Addr,
    /// The address's subnet on its device.
    pub subnet: IpNet,
    /// The device's first global IPv6 address, with its subnet, if it has one: the next hop of
    /// routed IPv6 pools for peers.
    pub address6: Option<(Ipv6Addr, IpNet)>,
    pub device: String,
    pub mtu: u32,
}

impl Underlay {
    /// The subnets of the node's underlay addresses.
    pub fn subnets(&self) -> Vec<IpNet> {
        std::iter::once(self.subnet)
            .chain(self.address6.map(|(_, subnet)| subnet))
            .collect()
    }
}

/// Neither loopback, unspecified, link-local nor multicast: an address peers can route to.
fn is_global(ip: Ipv6Addr) -> bool {
    !(ip.is_loopback() || ip.is_unspecified() || ip.is_unicast_link_local() || ip.is_multicast())
}

/// Finds the configured address's device, or the address of the default route's device; and
/// that device's IPv6 address: `configured6`, or its first global settled one.
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
    let ((address, subnet), index) = match configured {
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
            found.ok_or(AgentError::NodeAddressNotLocal(address))?
        }
        None => {
            let default = nl
                .routes(false, TABLE_MAIN)
                .map_err(AgentError::Interfaces)?
                .into_iter()
                .find(|r| r.dst.prefix_len() == 0 && r.oif.is_some())
                .ok_or(AgentError::NodeAddressUnknown)?;
            let index = default.oif.expect("checked");
            let address = v4(nl, index)
                .map_err(AgentError::Interfaces)?
                .into_iter()
                .next()
                .ok_or(AgentError::NodeAddressUnknown)?;
            (address, index)
        }
    };
    let link = links
        .into_iter()
        .find(|l| l.index == index)
        .ok_or(AgentError::NodeAddressUnknown)?;
    let global = |addresses: Vec<IpNet>| -> Vec<(Ipv6Addr, IpNet)> {
        addresses
            .into_iter()
            .filter_map(|a| match a.addr() {
                IpAddr::V6(v6) if is_global(v6) => Some((v6, a.trunc())),
                _ => None,
            })
            .collect()
    };
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
    Ok(Underlay {
        address,
        subnet,
        address6,
        device: link.name,
        mtu: link.mtu,
    })
}
