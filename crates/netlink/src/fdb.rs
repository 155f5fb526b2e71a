//! Forwarding-database entries of a VXLAN device: "frames for this MAC go to that underlay
//! address". Strait installs them permanent, one per remote VTEP, so the device never learns or
//! floods.

use std::net::IpAddr;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::error::NetlinkError;
use crate::link::MacAddr;
use crate::socket::{Netlink, Request};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FdbEntry {
    /// The VXLAN device.
    pub index: u32,
    pub mac: MacAddr,
    /// The remote VTEP's underlay address.
    pub dst: IpAddr,
}

impl FdbEntry {
    fn message(&self) -> NeighbourMessage {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Bridge;
        m.header.ifindex = self.index;
        m.header.state = NeighbourState::Permanent;
        m.header.flags = NeighbourFlags::Own;
        m.attributes = vec![
            NeighbourAttribute::LinkLayerAddress(self.mac.0.to_vec()),
            NeighbourAttribute::Destination(NeighbourAddress::from(self.dst)),
        ];
        m
    }

    /// `bridge fdb replace MAC dev DEV dst DST self permanent`
    pub fn replace_request(&self) -> Request {
        Request::route(
            RouteNetlinkMessage::NewNeighbour(self.message()),
            NLM_F_CREATE | NLM_F_REPLACE,
            format!(
                "set fdb {} dst {} on link {}",
                self.mac, self.dst, self.index
            ),
        )
    }

    pub fn delete_request(&self) -> Request {
        Request::route(
            RouteNetlinkMessage::DelNeighbour(self.message()),
            0,
            format!("delete fdb {} on link {}", self.mac, self.index),
        )
    }
}

fn ip_from_bytes(raw: &[u8]) -> Option<IpAddr> {
    match raw.len() {
        4 => <[u8; 4]>::try_from(raw).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(raw).ok().map(IpAddr::from),
        _ => None,
    }
}

impl Netlink {
    /// The FDB entries of link `index` that have a destination.
    pub fn fdb(&mut self, index: u32) -> Result<Vec<FdbEntry>, NetlinkError> {
        let mut all = self.all_fdb()?;
        all.retain(|f| f.index == index);
        Ok(all)
    }

    /// The FDB entries of every link that have a destination (VXLAN ones).
    pub fn all_fdb(&mut self) -> Result<Vec<FdbEntry>, NetlinkError> {
        let mut query = NeighbourMessage::default();
        query.header.family = AddressFamily::Bridge;
        let answers = self.dump(RouteNetlinkMessage::GetNeighbour(query), || {
            "list fdb entries".to_string()
        })?;
        Ok(answers
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewNeighbour(n) => {
                    let mut mac = None;
                    let mut dst = None;
                    for attr in &n.attributes {
                        match attr {
                            NeighbourAttribute::LinkLayerAddress(l) => {
                                mac = l.as_slice().try_into().ok().map(MacAddr)
                            }
                            // Bridge-family entries carry the address as raw bytes.
                            NeighbourAttribute::Destination(NeighbourAddress::Other(raw)) => {
                                dst = ip_from_bytes(raw)
                            }
                            _ => {}
                        }
                    }
                    Some(FdbEntry {
                        index: n.header.ifindex,
                        mac: mac?,
                        dst: dst?,
                    })
                }
                _ => None,
            })
            .collect())
    }
}
