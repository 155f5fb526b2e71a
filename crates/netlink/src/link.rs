//! Links: look them up, create veth pairs across namespaces and VXLAN devices, bring them up,
//! delete them.

use std::fmt;
use std::net::IpAddr;
use std::os::fd::AsRawFd;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};

use crate::error::NetlinkError;
use crate::socket::{Netlink, Request};
use strait_netns::Netns;

/// An Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl std::str::FromStr for MacAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<MacAddr, String> {
        let bytes: Vec<u8> = s
            .split(':')
            .map(|p| u8::from_str_radix(p, 16))
            .collect::<Result<_, _>>()
            .map_err(|_| format!("{s:?} is not a MAC address"))?;
        bytes
            .try_into()
            .map(MacAddr)
            .map_err(|_| format!("{s:?} is not a MAC address"))
    }
}

/// Written as text (`02:00:00:00:00:01`) wherever it is stored.
impl serde::Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<MacAddr, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// What Strait reads of a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<MacAddr>,
    pub mtu: u32,
    /// Administratively up.
    pub up: bool,
    /// The link type (`veth`, `vxlan`, ...), when it has one.
    pub kind: Option<String>,
    /// A VXLAN link's settings.
    pub vxlan: Option<Vxlan>,
}

/// The VXLAN settings Strait cares about, as set or as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vxlan {
    pub vni: u32,
    /// The outer source address (IPv4 or IPv6: the underlay's family).
    pub local: Option<IpAddr>,
    /// The UDP destination port.
    pub port: u16,
    /// The underlay link's index.
    pub underlay: Option<u32>,
    pub learning: bool,
}

/// A VXLAN device to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanSpec {
    pub name: String,
    pub mac: MacAddr,
    pub mtu: u32,
    pub vxlan: Vxlan,
}

fn vxlan_of(data: &[InfoVxlan]) -> Vxlan {
    let mut v = Vxlan {
        vni: 0,
        local: None,
        port: 0,
        underlay: None,
        learning: true,
    };
    for attr in data {
        match attr {
            InfoVxlan::Id(id) => v.vni = *id,
            InfoVxlan::Local(ip) => v.local = Some(IpAddr::V4(*ip)),
            InfoVxlan::Local6(ip) => v.local = Some(IpAddr::V6(*ip)),
            InfoVxlan::Port(p) => v.port = *p,
            InfoVxlan::Link(l) => v.underlay = Some(*l),
            InfoVxlan::Learning(l) => v.learning = *l,
            _ => {}
        }
    }
    v
}

impl Link {
    /// Brings link `index` up.
    pub fn up_request(index: u32) -> Request {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
        Request::route(
            RouteNetlinkMessage::SetLink(m),
            0,
            format!("set link {index} up"),
        )
    }

    /// Sets link `index`'s MTU.
    pub fn mtu_request(index: u32, mtu: u32) -> Request {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.attributes.push(LinkAttribute::Mtu(mtu));
        Request::route(
            RouteNetlinkMessage::SetLink(m),
            0,
            format!("set link {index} mtu {mtu}"),
        )
    }

    fn from_message(m: &LinkMessage) -> Link {
        let mut link = Link {
            index: m.header.index,
            name: String::new(),
            mac: None,
            mtu: 0,
            up: m.header.flags.contains(LinkFlags::Up),
            kind: None,
            vxlan: None,
        };
        for attr in &m.attributes {
            match attr {
                LinkAttribute::IfName(n) => link.name = n.clone(),
                LinkAttribute::Address(a) => link.mac = a.as_slice().try_into().ok().map(MacAddr),
                LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        match info {
                            LinkInfo::Kind(kind) => link.kind = Some(kind.to_string()),
                            LinkInfo::Data(InfoData::Vxlan(data)) => {
                                link.vxlan = Some(vxlan_of(data))
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }
}

fn links_in(messages: Vec<RouteNetlinkMessage>) -> Vec<Link> {
    messages
        .iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => Some(Link::from_message(l)),
            _ => None,
        })
        .collect()
}

impl Netlink {
    /// The link called `name`, or `None`.
    pub fn link_by_name(&mut self, name: &str) -> Result<Option<Link>, NetlinkError> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.link(m, || format!("look up link {name}"))
    }

    /// The link with interface index `index`, or `None`.
    pub fn link_by_index(&mut self, index: u32) -> Result<Option<Link>, NetlinkError> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        self.link(m, || format!("look up link {index}"))
    }

    fn link(
        &mut self,
        m: LinkMessage,
        what: impl FnOnce() -> String,
    ) -> Result<Option<Link>, NetlinkError> {
        match self.get(RouteNetlinkMessage::GetLink(m), what) {
            Ok(answer) => Ok(answer.map(|a| links_in(vec![a])).and_then(|mut l| l.pop())),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn links(&mut self) -> Result<Vec<Link>, NetlinkError> {
        let answers = self.dump(RouteNetlinkMessage::GetLink(LinkMessage::default()), || {
            "list links".to_string()
        })?;
        Ok(links_in(answers))
    }

    /// Creates a veth pair: `name` here, up, and `peer_name` directly inside `peer_ns`, down (the
    /// kernel cannot open a peer before the pair is linked), both with `mtu`, the peer with
    /// `peer_mac` when given (else the kernel picks one). Fails with EEXIST if either name is
    /// taken.
    pub fn add_veth(
        &mut self,
        name: &str,
        peer_name: &str,
        peer_ns: &Netns,
        mtu: u32,
        peer_mac: Option<MacAddr>,
    ) -> Result<(), NetlinkError> {
        let mut peer = LinkMessage::default();
        peer.attributes = vec![
            LinkAttribute::IfName(peer_name.to_string()),
            LinkAttribute::Mtu(mtu),
            LinkAttribute::NetNsFd(peer_ns.fd().as_raw_fd()),
        ];
        if let Some(mac) = peer_mac {
            peer.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
        }
        let mut m = LinkMessage::default();
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
        m.attributes = vec![
            LinkAttribute::IfName(name.to_string()),
            LinkAttribute::Mtu(mtu),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Veth),
                LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
            ]),
        ];
        self.ack(
            RouteNetlinkMessage::NewLink(m),
            NLM_F_CREATE | NLM_F_EXCL,
            || {
                format!(
                    "create veth {name} with peer {peer_name} in {}",
                    peer_ns.path().display()
                )
            },
        )
    }

    /// Creates a VXLAN device (down). Fails with EOPNOTSUPP on a kernel without VXLAN.
    pub fn add_vxlan(&mut self, spec: &VxlanSpec) -> Result<(), NetlinkError> {
        let v = &spec.vxlan;
        let mut data = vec![
            InfoVxlan::Id(v.vni),
            InfoVxlan::Port(v.port),
            InfoVxlan::Learning(v.learning),
        ];
        match v.local {
            Some(IpAddr::V4(local)) => data.push(InfoVxlan::Local(local)),
            Some(IpAddr::V6(local)) => data.push(InfoVxlan::Local6(local)),
            None => {}
        }
        if let Some(underlay) = v.underlay {
            data.push(InfoVxlan::Link(underlay));
        }
        let mut m = LinkMessage::default();
        m.attributes = vec![
            LinkAttribute::IfName(spec.name.clone()),
            LinkAttribute::Mtu(spec.mtu),
            LinkAttribute::Address(spec.mac.0.to_vec()),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Vxlan),
                LinkInfo::Data(InfoData::Vxlan(data)),
            ]),
        ];
        self.ack(
            RouteNetlinkMessage::NewLink(m),
            NLM_F_CREATE | NLM_F_EXCL,
            || format!("create vxlan {} (vni {})", spec.name, v.vni),
        )
    }

    pub fn set_link_up(&mut self, index: u32) -> Result<(), NetlinkError> {
        self.send_request(Link::up_request(index))
    }

    /// Deletes the link with interface index `index` (that device, not a later one given the same
    /// name); a link that is already gone is not an error.
    pub fn delete_link_at(&mut self, index: u32) -> Result<(), NetlinkError> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        match self.ack(RouteNetlinkMessage::DelLink(m), 0, || {
            format!("delete link {index}")
        }) {
            Err(e) if e.is_not_found() => Ok(()),
            other => other,
        }
    }

    /// Deletes a link; a link that is already gone is not an error.
    pub fn delete_link(&mut self, name: &str) -> Result<(), NetlinkError> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.ack(RouteNetlinkMessage::DelLink(m), 0, || {
            format!("delete link {name}")
        }) {
            Err(e) if e.is_not_found() => Ok(()),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_addresses_print_and_parse() {
        let mac = MacAddr([0x02, 0xab, 0, 1, 0x10, 0xff]);
        assert_eq!(mac.to_string(), "02:ab:00:01:10:ff");
        assert_eq!("02:ab:00:01:10:ff".parse(), Ok(mac));
        assert!("02:ab".parse::<MacAddr>().is_err());
        assert!("zz:ab:00:01:10:ff".parse::<MacAddr>().is_err());
    }
}
