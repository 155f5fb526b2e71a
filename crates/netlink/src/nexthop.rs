//! Nexthop objects (`ip nexthop`): one per peer, shared by the routes to all of that peer's
//! blocks. The kernel builds a route through a shared nexthop several times faster than one with
//! its own gateway, and deleting the nexthop takes its routes with it. netlink-packet-route does
//! not model these messages, so they are written and read here by hand (linux/nexthop.h).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};

use crate::error::NetlinkError;
use crate::socket::{Body, Netlink, Raw, Request};

const RTM_NEWNEXTHOP: u16 = 104;
const RTM_DELNEXTHOP: u16 = 105;
const RTM_GETNEXTHOP: u16 = 106;
const NHA_ID: u16 = 1;
const NHA_OIF: u16 = 5;
const NHA_GATEWAY: u16 = 6;
const RTNH_F_ONLINK: u32 = 4;
const AF_INET: u8 = libc::AF_INET as u8;
const AF_INET6: u8 = libc::AF_INET6 as u8;
/// `struct nhmsg`: family, scope, protocol, reserved, flags.
const NHMSG_LEN: usize = 8;

/// A nexthop object: a gateway through an output link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Nexthop {
    pub id: u32,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
    pub onlink: bool,
    pub protocol: u8,
    /// Set on a deletion event.
    pub deleted: bool,
}

fn nhmsg(family: u8, protocol: u8, flags: u32) -> Vec<u8> {
    let mut out = vec![family, 0, protocol, 0];
    out.extend_from_slice(&flags.to_ne_bytes());
    out
}

fn nla(kind: u16, value: &[u8], out: &mut Vec<u8>) {
    let len = 4 + value.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(out.len() + (4 - len % 4) % 4, 0);
}

fn u32_at(value: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(value.get(..4)?.try_into().ok()?))
}

impl Nexthop {
    /// Creates nexthop `id` = `gateway` through link `oif`; fails if the id is taken, so that
    /// no one else's nexthop is ever replaced.
    pub fn create_request(
        id: u32,
        gateway: IpAddr,
        oif: u32,
        onlink: bool,
        protocol: u8,
    ) -> Request {
        let family = if gateway.is_ipv4() { AF_INET } else { AF_INET6 };
        let mut payload = nhmsg(family, protocol, if onlink { RTNH_F_ONLINK } else { 0 });
        nla(NHA_ID, &id.to_ne_bytes(), &mut payload);
        nla(NHA_OIF, &oif.to_ne_bytes(), &mut payload);
        match gateway {
            IpAddr::V4(v4) => nla(NHA_GATEWAY, &v4.octets(), &mut payload),
            IpAddr::V6(v6) => nla(NHA_GATEWAY, &v6.octets(), &mut payload),
        }
        Request {
            body: Body::Raw {
                message_type: RTM_NEWNEXTHOP,
                payload,
            },
            flags: NLM_F_CREATE | NLM_F_EXCL,
            op: format!("create nexthop {id} via {gateway} dev {oif}"),
        }
    }

    /// Deletes nexthop `id` and with it every route through it.
    pub fn delete_request(id: u32) -> Request {
        let mut payload = nhmsg(0, 0, 0);
        nla(NHA_ID, &id.to_ne_bytes(), &mut payload);
        Request {
            body: Body::Raw {
                message_type: RTM_DELNEXTHOP,
                payload,
            },
            flags: 0,
            op: format!("delete nexthop {id}"),
        }
    }

    fn parse(payload: &[u8], deleted: bool) -> Option<Nexthop> {
        let header = payload.get(..NHMSG_LEN)?;
        let family = header[0];
        let flags = u32_at(&header[4..])?;
        let mut nh = Nexthop {
            id: 0,
            gateway: None,
            oif: None,
            onlink: flags & RTNH_F_ONLINK != 0,
            protocol: header[2],
            deleted,
        };
        let mut attrs = &payload[NHMSG_LEN..];
        while attrs.len() >= 4 {
            let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
            let kind = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff;
            if len < 4 || len > attrs.len() {
                break;
            }
            let value = &attrs[4..len];
            match kind {
                NHA_ID => nh.id = u32_at(value)?,
                NHA_OIF => nh.oif = u32_at(value),
                NHA_GATEWAY => {
                    nh.gateway = match (family, value.len()) {
                        (AF_INET, 4) => {
                            Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(value).ok()?)))
                        }
                        (AF_INET6, 16) => Some(IpAddr::V6(Ipv6Addr::from(
                            <[u8; 16]>::try_from(value).ok()?,
                        ))),
                        _ => None,
                    }
                }
                _ => {}
            }
            attrs = &attrs[((len + 3) & !3).min(attrs.len())..];
        }
        Some(nh)
    }

    /// The nexthop a kernel event is about, if it is one.
    pub(crate) fn event(raw: &Raw) -> Option<Nexthop> {
        match raw.message_type {
            RTM_NEWNEXTHOP => Nexthop::parse(raw.payload(), false),
            RTM_DELNEXTHOP => Nexthop::parse(raw.payload(), true),
            _ => None,
        }
    }
}

impl Netlink {
    /// Every nexthop object in this namespace.
    pub fn nexthops(&mut self) -> Result<Vec<Nexthop>, NetlinkError> {
        let answers = self.dump_raw(RTM_GETNEXTHOP, nhmsg(0, 0, 0), RTM_NEWNEXTHOP, || {
            "list nexthops".to_string()
        })?;
        Ok(answers
            .iter()
            .filter_map(|p| Nexthop::parse(p, false))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_payload_parses_back() {
        let request = Nexthop::create_request(7, "10.1.2.3".parse().unwrap(), 4, true, 83);
        let Body::Raw {
            payload,
            message_type,
        } = request.body
        else {
            panic!("a raw request");
        };
        assert_eq!(message_type, RTM_NEWNEXTHOP);
        let nh = Nexthop::parse(&payload, false).unwrap();
        assert_eq!(
            nh,
            Nexthop {
                id: 7,
                gateway: Some("10.1.2.3".parse().unwrap()),
                oif: Some(4),
                onlink: true,
                protocol: 83,
                deleted: false
            }
        );
    }
}
