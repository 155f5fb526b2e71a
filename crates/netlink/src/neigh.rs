//! Neighbour (ARP/NDP) entries: the permanent ones Strait installs so that no packet waits on
//! address resolution.

use std::net::IpAddr;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};

use crate::addr::family_of;
use crate::error::NetlinkError;
use crate::link::MacAddr;
use crate::socket::{Netlink, Request};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    pub index: u32,
    pub ip: IpAddr,
    pub mac: Option<MacAddr>,
    pub permanent: bool,
}

impl Neighbour {
    /// Installs (or replaces) the permanent entry `ip lladdr mac dev index`.
    pub fn set_request(index: u32, ip: IpAddr, mac: MacAddr) -> Request {
        let mut m = NeighbourMessage::default();
        m.header.family = family_of(ip);
        m.header.ifindex = index;
        m.header.state = NeighbourState::Permanent;
        m.attributes = vec![
            NeighbourAttribute::Destination(NeighbourAddress::from(ip)),
            NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()),
        ];
        Request::route(
            RouteNetlinkMessage::NewNeighbour(m),
            NLM_F_CREATE | NLM_F_REPLACE,
            format!("set neighbour {ip} lladdr {mac} on link {index}"),
        )
    }

    pub fn delete_request(index: u32, ip: IpAddr) -> Request {
        let mut m = NeighbourMessage::default();
        m.header.family = family_of(ip);
        m.header.ifindex = index;
        m.attributes = vec![NeighbourAttribute::Destination(NeighbourAddress::from(ip))];
        Request::route(
            RouteNetlinkMessage::DelNeighbour(m),
            0,
            format!("delete neighbour {ip} on link {index}"),
        )
    }
}

impl Netlink {
    /// The neighbour entries on link `index`.
    pub fn neighbours(&mut self, index: u32) -> Result<Vec<Neighbour>, NetlinkError> {
        let mut all = self.all_neighbours()?;
        all.retain(|n| n.index == index);
        Ok(all)
    }

    /// The IPv4 and IPv6 neighbour entries of every link.
    pub fn all_neighbours(&mut self) -> Result<Vec<Neighbour>, NetlinkError> {
        let answers = self.dump(
            RouteNetlinkMessage::GetNeighbour(NeighbourMessage::default()),
            || "list neighbours".to_string(),
        )?;
        Ok(answers
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewNeighbour(n) => Neighbour::from_message(n),
                _ => None,
            })
            .collect())
    }
}

impl Neighbour {
    /// The entry a neighbour message (an answer or an event) describes.
    pub fn from_message(n: &NeighbourMessage) -> Option<Neighbour> {
        let mut ip = None;
        let mut mac = None;
        for attr in &n.attributes {
            match attr {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                    ip = Some(IpAddr::V4(*a))
                }
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                    ip = Some(IpAddr::V6(*a))
                }
                NeighbourAttribute::LinkLayerAddress(l) => {
                    mac = l.as_slice().try_into().ok().map(MacAddr)
                }
                _ => {}
            }
        }
        Some(Neighbour {
            index: n.header.ifindex,
            ip: ip?,
            mac,
            permanent: n.header.state == NeighbourState::Permanent,
        })
    }
}
