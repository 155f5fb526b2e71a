//! The kinds of object kept in the cluster store and the typed records of each.

use std::fmt;

use ipnet::IpNet;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// Every kind of object in the cluster store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    IpPool,
    IpBlock,
}

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::IpPool, Kind::IpBlock];

    /// The plural used for directories, key prefixes and resource names.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::IpPool => "ippools",
            Kind::IpBlock => "ipblocks",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::IpPool => "IP pool",
            Kind::IpBlock => "IP block",
        })
    }
}

/// A typed record and the kind it is stored as.
pub trait Record: Serialize + DeserializeOwned + Send + Sync {
    const KIND: Kind;
}

/// An address pool as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolRecord {
    pub cidr: IpNet,
    pub block_prefix: u8,
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
}

impl Record for BlockRecord {
    const KIND: Kind = Kind::IpBlock;
}
