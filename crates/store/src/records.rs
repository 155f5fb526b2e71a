//! The kinds of object kept in the cluster store and the typed records of each.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::StoreError;

/// Every kind of object in the cluster store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Node,
    IpPool,
    IpBlock,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Node, Kind::IpPool, Kind::IpBlock];

    /// The plural used for directories, key prefixes and resource names.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Node => "nodes",
            Kind::IpPool => "ippools",
            Kind::IpBlock => "ipblocks",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Node => "node",
            Kind::IpPool => "IP pool",
            Kind::IpBlock => "IP block",
        })
    }
}

/// A typed record and the kind it is stored as.
pub trait Record: Serialize + DeserializeOwned + Send + Sync {
    const KIND: Kind;
}

/// A node as its peers need to know it: where to send encapsulated or routed traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The node's underlay address: its IPv4 one (VXLAN's outer destination over IPv4, the next
    /// hop of routed IPv4 blocks), or on a node without one, its IPv6 one (as `address6`).
    pub address: IpAddr,
    /// The node's IPv6 underlay address, if it has one: the next hop of routed IPv6 blocks, and
    /// VXLAN's outer destination when VXLAN runs over IPv6.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address6: Option<IpAddr>,
    /// VXLAN runs over the node's IPv6 underlay address (else its IPv4 one).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub vxlan_over_ipv6: bool,
    /// Per network, the node's VXLAN tunnel endpoint.
    #[serde(default)]
    pub networks: BTreeMap<String, Vtep>,
}

/// A VXLAN tunnel endpoint: the inner address peers route through and the device's MAC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vtep {
    pub ip: IpAddr,
    pub mac: String,
}

impl Record for NodeRecord {
    const KIND: Kind = Kind::Node;
}

/// An address pool as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolRecord {
    pub cidr: IpNet,
    pub block_prefix: u8,
    /// The address space, absent for the default one (records written before spaces existed
    /// read as the default space).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space: Option<String>,
}

impl Record for PoolRecord {
    const KIND: Kind = Kind::IpPool;
}

/// A block of a pool and the node that holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRecord {
    pub pool: String,
    pub cidr: IpNet,
    pub node: String,
    /// The pool's address space, absent for the default one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space: Option<String>,
}

impl Record for BlockRecord {
    const KIND: Kind = Kind::IpBlock;
}

/// Object names follow Kubernetes' DNS-subdomain rule so every backend can hold them.
pub fn validate_name(name: &str) -> Result<(), StoreError> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    let reason = if name.is_empty() || name.len() > 253 {
        Some("it must be 1 to 253 characters long")
    } else if !name.chars().all(ok_char) {
        Some("it may hold only lowercase letters, digits, '-' and '.'")
    } else if !name.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !name.ends_with(|c: char| c.is_ascii_alphanumeric())
    {
        Some("it must start and end with a letter or digit")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(r) => Err(StoreError::InvalidName {
            name: name.to_string(),
            reason: r.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_dns_subdomain_rule() {
        for ok in [
            "a",
            "10-244-0-64-26",
            "node-1.example",
            "fd00-10-244--80-122",
        ] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a/b", "a_b", "../x", &"x".repeat(254)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }
}
