//! Kernel change events, decoded into what they say of the objects Strait owns: which link,
//! neighbour, address, route or nexthop object changed, so that a watcher decides what concerns
//! it without reading netlink messages itself.

use std::net::IpAddr;

use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::LinkAttribute;
use netlink_packet_route::route::RouteAttribute;

use crate::neigh::Neighbour;
use crate::nexthop::Nexthop;
use crate::rule::Rule;

/// A kernel change event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A link added, changed or deleted; its name when the event carries it.
    Link { index: u32, name: Option<String> },
    /// A neighbour or FDB entry on link `index` added, changed or deleted; the neighbour, when
    /// the entry has an IP address.
    Neighbour {
        deleted: bool,
        index: u32,
        neighbour: Option<Neighbour>,
    },
    /// An address on link `index` added or deleted.
    Address {
        deleted: bool,
        index: u32,
        address: Option<IpAddr>,
    },
    /// A route added, changed or deleted: its protocol, and its output link when it has one
    /// (not a route through a nexthop object).
    Route {
        deleted: bool,
        protocol: u8,
        oif: Option<u32>,
    },
    /// A nexthop object added, changed or deleted.
    Nexthop(Nexthop),
    /// A policy routing rule that sends packets to a table added or deleted.
    Rule { deleted: bool, rule: Rule },
}

impl Event {
    /// The event a route netlink message reports, if it is one of these.
    pub(crate) fn from_message(message: RouteNetlinkMessage) -> Option<Event> {
        use RouteNetlinkMessage as M;
        Some(match message {
            M::NewLink(l) | M::DelLink(l) => Event::Link {
                index: l.header.index,
                name: l.attributes.iter().find_map(|a| match a {
                    LinkAttribute::IfName(n) => Some(n.clone()),
                    _ => None,
                }),
            },
            M::NewNeighbour(ref n) | M::DelNeighbour(ref n) => Event::Neighbour {
                deleted: matches!(message, M::DelNeighbour(_)),
                index: n.header.ifindex,
                neighbour: Neighbour::from_message(n),
            },
            M::NewAddress(ref a) | M::DelAddress(ref a) => Event::Address {
                deleted: matches!(message, M::DelAddress(_)),
                index: a.header.index,
                address: a.attributes.iter().find_map(|attr| match attr {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                }),
            },
            M::NewRoute(ref r) | M::DelRoute(ref r) => Event::Route {
                deleted: matches!(message, M::DelRoute(_)),
                protocol: u8::from(r.header.protocol),
                oif: r.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Oif(i) => Some(*i),
                    _ => None,
                }),
            },
            M::NewRule(ref r) | M::DelRule(ref r) => Event::Rule {
                deleted: matches!(message, M::DelRule(_)),
                rule: Rule::from_message(r)?,
            },
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use netlink_packet_route::address::AddressMessage;
    use netlink_packet_route::link::LinkMessage;
    use netlink_packet_route::route::{RouteMessage, RouteProtocol};

    use super::*;

    #[test]
    fn messages_decode_into_what_they_say() {
        let mut link = LinkMessage::default();
        link.header.index = 4;
        link.attributes
            .push(LinkAttribute::IfName("strait.1".into()));
        assert_eq!(
            Event::from_message(RouteNetlinkMessage::DelLink(link)),
            Some(Event::Link {
                index: 4,
                name: Some("strait.1".into())
            })
        );
        let mut address = AddressMessage::default();
        address.header.index = 7;
        address
            .attributes
            .push(AddressAttribute::Address("fe80::1".parse().unwrap()));
        assert_eq!(
            Event::from_message(RouteNetlinkMessage::DelAddress(address)),
            Some(Event::Address {
                deleted: true,
                index: 7,
                address: Some("fe80::1".parse().unwrap())
            })
        );
        let mut route = RouteMessage::default();
        route.header.protocol = RouteProtocol::from(83);
        route.attributes.push(RouteAttribute::Oif(9));
        assert_eq!(
            Event::from_message(RouteNetlinkMessage::NewRoute(route)),
            Some(Event::Route {
                deleted: false,
                protocol: 83,
                oif: Some(9)
            })
        );
        let neighbour = netlink_packet_route::neighbour::NeighbourMessage::default();
        assert_eq!(
            Event::from_message(RouteNetlinkMessage::NewNeighbour(neighbour)),
            Some(Event::Neighbour {
                deleted: false,
                index: 0,
                neighbour: None
            })
        );
    }
}
