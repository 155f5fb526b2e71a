//! Interface addresses.

use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::error::NetlinkError;
use crate::socket::{Netlink, Request};

pub(crate) fn family_of(ip: IpAddr) -> AddressFamily {
    if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

/// Adds `address` (with its prefix length) to link `index`; adding it again is not an error.
/// IPv6 addresses skip duplicate address detection (`nodad`): Strait allocates every address
/// it adds, and DAD would hold each one back for about a second.
pub fn add_address_request(index: u32, address: IpNet) -> Request {
    let mut m = AddressMessage::default();
    m.header.family = family_of(address.addr());
    m.header.prefix_len = address.prefix_len();
    m.header.index = index;
    m.attributes.push(AddressAttribute::Address(address.addr()));
    if address.addr().is_ipv4() {
        m.attributes.push(AddressAttribute::Local(address.addr()));
    } else {
        m.header.flags |= AddressHeaderFlags::Nodad;
        m.attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    Request::route(
        RouteNetlinkMessage::NewAddress(m),
        NLM_F_CREATE | NLM_F_REPLACE,
        format!("add address {address} to link {index}"),
    )
}

impl Netlink {
    /// The addresses on link `index`, with their prefix lengths.
    pub fn addresses(&mut self, index: u32) -> Result<Vec<IpNet>, NetlinkError> {
        Ok(self
            .address_flags(AddressFamily::Unspec)?
            .into_iter()
            .filter(|(i, _, _)| *i == index)
            .map(|(_, a, _)| a)
            .collect())
    }

    /// Every link's IPv6 addresses, by link index, in one dump.
    pub fn all_ipv6_addresses(&mut self) -> Result<Vec<(u32, IpNet)>, NetlinkError> {
        Ok(self
            .address_flags(AddressFamily::Inet6)?
            .into_iter()
            .map(|(i, a, _)| (i, a))
            .collect())
    }

    /// The addresses on link `index` fit to be given to others as the node's: neither
    /// temporary (privacy addresses rotate), deprecated, tentative nor failed duplicate address
    /// detection.
    pub fn settled_addresses(&mut self, index: u32) -> Result<Vec<IpNet>, NetlinkError> {
        // IFA_F_TEMPORARY has IFA_F_SECONDARY's bit.
        let unsettled = AddressFlags::Secondary
            | AddressFlags::Deprecated
            | AddressFlags::Tentative
            | AddressFlags::Dadfailed;
        Ok(self
            .address_flags(AddressFamily::Unspec)?
            .into_iter()
            .filter(|(i, a, flags)| {
                *i == index && (a.addr().is_ipv4() || !flags.intersects(unsettled))
            })
            .map(|(_, a, _)| a)
            .collect())
    }

    /// Every address of `family` (`Unspec`: both) with its link index and flags.
    fn address_flags(
        &mut self,
        family: AddressFamily,
    ) -> Result<Vec<(u32, IpNet, AddressFlags)>, NetlinkError> {
        let mut request = AddressMessage::default();
        request.header.family = family;
        let answers = self.dump(RouteNetlinkMessage::GetAddress(request), || {
            "list addresses".to_string()
        })?;
        Ok(answers
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) => {
                    let mut ip = None;
                    let mut flags = AddressFlags::from_bits_retain(a.header.flags.bits().into());
                    for attr in &a.attributes {
                        match attr {
                            AddressAttribute::Address(a) => ip = Some(*a),
                            AddressAttribute::Flags(f) => flags = *f,
                            _ => {}
                        }
                    }
                    let net = IpNet::new(ip?, a.header.prefix_len).ok()?;
                    Some((a.header.index, net, flags))
                }
                _ => None,
            })
            .collect())
    }
}
