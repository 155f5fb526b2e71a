//! Policy routing rules (`ip rule`): which routing table a packet is looked up in, chosen by the
//! link it arrived on or its source. Strait tags every rule it installs with its own protocol
//! number, as it does its routes, so that it only ever reads back, and deletes, what it owns.

use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::error::NetlinkError;
use crate::socket::{Netlink, Request};

/// A rule sending packets of one family that arrived on `iif` (when set) from `source` (when
/// set) to `table`, at `priority` (lower first).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rule {
    pub ipv6: bool,
    pub priority: u32,
    pub iif: Option<String>,
    pub source: Option<IpNet>,
    pub table: u32,
    pub protocol: u8,
}

fn family(ipv6: bool) -> AddressFamily {
    if ipv6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    }
}

impl Rule {
    fn to_message(&self) -> RuleMessage {
        let mut m = RuleMessage::default();
        m.header.family = family(self.ipv6);
        m.header.action = RuleAction::ToTable;
        m.header.table = u8::try_from(self.table).unwrap_or(0);
        m.attributes.push(RuleAttribute::Table(self.table));
        m.attributes.push(RuleAttribute::Priority(self.priority));
        m.attributes
            .push(RuleAttribute::Protocol(self.protocol.into()));
        if let Some(iif) = &self.iif {
            m.attributes.push(RuleAttribute::Iifname(iif.clone()));
        }
        if let Some(source) = self.source {
            m.header.src_len = source.prefix_len();
            m.attributes.push(RuleAttribute::Source(source.network()));
        }
        m
    }

    /// The rule a message describes, if it sends packets to a table.
    pub(crate) fn from_message(m: &RuleMessage) -> Option<Rule> {
        if m.header.action != RuleAction::ToTable {
            return None;
        }
        let mut rule = Rule {
            ipv6: m.header.family == AddressFamily::Inet6,
            priority: 0,
            iif: None,
            source: None,
            table: u32::from(m.header.table),
            protocol: 0,
        };
        let mut source: Option<IpAddr> = None;
        for attr in &m.attributes {
            match attr {
                RuleAttribute::Table(t) => rule.table = *t,
                RuleAttribute::Priority(p) => rule.priority = *p,
                RuleAttribute::Protocol(p) => rule.protocol = u8::from(*p),
                RuleAttribute::Iifname(name) => rule.iif = Some(name.clone()),
                RuleAttribute::Source(ip) => source = Some(*ip),
                _ => {}
            }
        }
        rule.source = match source {
            Some(ip) => Some(IpNet::new(ip, m.header.src_len).ok()?),
            None => None,
        };
        Some(rule)
    }

    /// Adds the rule; fails with EEXIST if the very same rule is there.
    pub fn add_request(&self) -> Request {
        Request::route(
            RouteNetlinkMessage::NewRule(self.to_message()),
            NLM_F_CREATE | NLM_F_EXCL,
            format!("add rule {self:?}"),
        )
    }

    /// Deletes the rule that matches this one in every field it sets.
    pub fn delete_request(&self) -> Request {
        Request::route(
            RouteNetlinkMessage::DelRule(self.to_message()),
            0,
            format!("delete rule {self:?}"),
        )
    }
}

impl Netlink {
    /// The rules of one address family that send packets to a table.
    pub fn rules(&mut self, ipv6: bool) -> Result<Vec<Rule>, NetlinkError> {
        let mut m = RuleMessage::default();
        m.header.family = family(ipv6);
        let answers = self.dump(RouteNetlinkMessage::GetRule(m), || "list rules".to_string())?;
        Ok(answers
            .iter()
            .filter_map(|a| match a {
                RouteNetlinkMessage::NewRule(r) => Rule::from_message(r),
                _ => None,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_survives_the_trip_through_a_message() {
        for rule in [
            Rule {
                ipv6: false,
                priority: 1000,
                iif: Some("strait.vxlan.7".into()),
                source: None,
                table: 1001,
                protocol: 83,
            },
            Rule {
                ipv6: true,
                priority: 1001,
                iif: None,
                source: Some("fd00:10::/64".parse().unwrap()),
                table: 300,
                protocol: 83,
            },
        ] {
            assert_eq!(Rule::from_message(&rule.to_message()), Some(rule));
        }
    }

    #[test]
    fn only_rules_to_a_table_are_read() {
        let mut m = RuleMessage::default();
        m.header.action = RuleAction::Unreachable;
        assert_eq!(Rule::from_message(&m), None);
    }
}
