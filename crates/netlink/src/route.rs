//! Routes, read and written as one plain struct. Strait tags every route it installs with its own
//! protocol number so that it only ever reads back, and deletes, what it owns.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteProtocol, RouteScope, RouteType,
};

use crate::addr::family_of;
use crate::error::NetlinkError;
use crate::socket::{Netlink, Request};

pub const TABLE_MAIN: u32 = 254;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Universe,
    Link,
    Host,
    Other(u8),
}

impl From<Scope> for RouteScope {
    fn from(s: Scope) -> RouteScope {
        match s {
            Scope::Universe => RouteScope::Universe,
            Scope::Link => RouteScope::Link,
            Scope::Host => RouteScope::Host,
            Scope::Other(n) => RouteScope::from(n),
        }
    }
}

impl From<RouteScope> for Scope {
    fn from(s: RouteScope) -> Scope {
        match s {
            RouteScope::Universe => Scope::Universe,
            RouteScope::Link => Scope::Link,
            RouteScope::Host => Scope::Host,
            other => Scope::Other(other.into()),
        }
    }
}

/// A unicast route.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Route {
    pub dst: IpNet,
    pub gateway: Option<IpAddr>,
    /// Output interface index.
    pub oif: Option<u32>,
    pub table: u32,
    pub protocol: u8,
    pub scope: Scope,
    /// Use the gateway even though no route says it is on the link (VXLAN next hops).
    pub onlink: bool,
    /// Through this nexthop object instead of its own gateway and link (which the kernel still
    /// reports when the route is read back).
    pub nexthop: Option<u32>,
}

impl Route {
    fn to_message(&self) -> RouteMessage {
        let mut m = RouteMessage::default();
        m.header.address_family = family_of(self.dst.addr());
        m.header.destination_prefix_length = self.dst.prefix_len();
        m.header.table = u8::try_from(self.table).unwrap_or(0);
        m.header.protocol = RouteProtocol::from(self.protocol);
        m.header.scope = self.scope.into();
        m.header.kind = RouteType::Unicast;
        m.attributes.push(RouteAttribute::Table(self.table));
        m.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(
                self.dst.network(),
            )));
        if let Some(id) = self.nexthop {
            m.attributes.push(RouteAttribute::NhId(id));
            return m;
        }
        if self.onlink {
            m.header.flags |= RouteFlags::Onlink;
        }
        if let Some(gw) = self.gateway {
            m.attributes
                .push(RouteAttribute::Gateway(RouteAddress::from(gw)));
        }
        if let Some(oif) = self.oif {
            m.attributes.push(RouteAttribute::Oif(oif));
        }
        m
    }

    fn from_message(m: &RouteMessage) -> Option<Route> {
        if m.header.kind != RouteType::Unicast {
            return None;
        }
        let mut table = u32::from(m.header.table);
        let mut dst = None;
        let mut gateway = None;
        let mut oif = None;
        let mut nexthop = None;
        for attr in &m.attributes {
            match attr {
                RouteAttribute::NhId(id) => nexthop = Some(*id),
                RouteAttribute::Table(t) => table = *t,
                RouteAttribute::Destination(a) => dst = ip_of(a),
                RouteAttribute::Gateway(a) => gateway = ip_of(a),
                RouteAttribute::Oif(i) => oif = Some(*i),
                _ => {}
            }
        }
        let dst = dst.unwrap_or(
            if m.header.address_family == family_of(Ipv4Addr::UNSPECIFIED.into()) {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            } else {
                IpAddr::V6(Ipv6Addr::UNSPECIFIED)
            },
        );
        Some(Route {
            dst: IpNet::new(dst, m.header.destination_prefix_length).ok()?,
            gateway,
            oif,
            table,
            protocol: m.header.protocol.into(),
            scope: m.header.scope.into(),
            onlink: m.header.flags.contains(RouteFlags::Onlink),
            nexthop,
        })
    }
}

fn ip_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

impl Route {
    /// Adds the route; fails with EEXIST if one with the same destination is there.
    pub fn add_request(&self) -> Request {
        Request::route(
            RouteNetlinkMessage::NewRoute(self.to_message()),
            NLM_F_CREATE | NLM_F_EXCL,
            format!("add route {self:?}"),
        )
    }

    /// Adds the route or replaces the one with the same destination.
    pub fn replace_request(&self) -> Request {
        Request::route(
            RouteNetlinkMessage::NewRoute(self.to_message()),
            NLM_F_CREATE | NLM_F_REPLACE,
            format!("replace route {self:?}"),
        )
    }

    pub fn delete_request(&self) -> Request {
        let mut m = self.to_message();
        m.header.scope = RouteScope::NoWhere;
        Request::route(
            RouteNetlinkMessage::DelRoute(m),
            0,
            format!("delete route {self:?}"),
        )
    }
}

impl Netlink {
    /// The route the kernel would use to reach `dst` (a FIB lookup), if any.
    pub fn route_to(&mut self, dst: IpAddr) -> Result<Option<Route>, NetlinkError> {
        let mut m = RouteMessage::default();
        m.header.address_family = family_of(dst);
        m.header.destination_prefix_length = if dst.is_ipv4() { 32 } else { 128 };
        m.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(dst)));
        match self.get(RouteNetlinkMessage::GetRoute(m), || {
            format!("look up the route to {dst}")
        }) {
            Ok(Some(RouteNetlinkMessage::NewRoute(r))) => Ok(Route::from_message(&r)),
            Ok(_) => Ok(None),
            Err(e) if matches!(e.errno(), Some(libc::ENETUNREACH | libc::EHOSTUNREACH)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The unicast routes of one address family in `table`.
    pub fn routes(&mut self, ipv6: bool, table: u32) -> Result<Vec<Route>, NetlinkError> {
        let mut routes = self.all_routes(ipv6)?;
        routes.retain(|r| r.table == table);
        Ok(routes)
    }

    /// The unicast routes of one address family, in every table.
    pub fn all_routes(&mut self, ipv6: bool) -> Result<Vec<Route>, NetlinkError> {
        let mut m = RouteMessage::default();
        let any = if ipv6 {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        };
        m.header.address_family = family_of(any);
        let answers = self.dump(RouteNetlinkMessage::GetRoute(m), || {
            "list routes".to_string()
        })?;
        Ok(answers
            .iter()
            .filter_map(|a| match a {
                RouteNetlinkMessage::NewRoute(r) => Route::from_message(r),
                _ => None,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_survives_the_trip_through_a_message() {
        let route = Route {
            dst: "10.244.1.0/26".parse().unwrap(),
            gateway: Some("10.244.1.0".parse().unwrap()),
            oif: Some(7),
            table: 1000,
            protocol: 83,
            scope: Scope::Universe,
            onlink: true,
            nexthop: None,
        };
        assert_eq!(Route::from_message(&route.to_message()), Some(route));
    }

    #[test]
    fn a_default_route_has_an_unspecified_destination() {
        let route = Route {
            dst: "0.0.0.0/0".parse().unwrap(),
            gateway: Some("169.254.1.1".parse().unwrap()),
            oif: Some(2),
            table: TABLE_MAIN,
            protocol: 4,
            scope: Scope::Universe,
            onlink: false,
            nexthop: None,
        };
        let mut m = route.to_message();
        m.attributes
            .retain(|a| !matches!(a, RouteAttribute::Destination(_)));
        assert_eq!(Route::from_message(&m), Some(route));
    }
}
