//! IPAM's errors.

use std::net::IpAddr;

use ipnet::IpNet;

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("pool {pool}: {reason}")]
    InvalidPool { pool: String, reason: String },
    #[error(
        "pools {a} ({a_cidr}) and {b} ({b_cidr}) overlap in {}",
        space_name(space)
    )]
    OverlappingPools {
        a: String,
        a_cidr: IpNet,
        b: String,
        b_cidr: IpNet,
        space: Option<String>,
    },
    #[error(
        "pool {pool} is {theirs} in /{theirs_prefix} blocks in {} in the cluster store, but this node is configured with {ours} in /{ours_prefix} blocks in {}",
        space_name(theirs_space),
        space_name(ours_space)
    )]
    PoolMismatch {
        pool: String,
        ours: IpNet,
        ours_prefix: u8,
        ours_space: Option<String>,
        theirs: IpNet,
        theirs_prefix: u8,
        theirs_space: Option<String>,
    },
    #[error("pool {pool} ({cidr}) has no free block left")]
    PoolExhausted { pool: String, cidr: IpNet },
    #[error("{ip} is already allocated")]
    AlreadyAllocated { ip: IpAddr },
    #[error("block {block} is held by node {node}")]
    BlockHeld { block: IpNet, node: String },
    #[error("{ip} is not in a block this node holds")]
    NotInOwnedBlock { ip: IpAddr },
    #[error("cluster store: {0}")]
    Store(#[from] strait_store::StoreError),
}

/// An address space as people read it.
fn space_name(space: &Option<String>) -> String {
    match space {
        None => "the default address space".into(),
        Some(s) => format!("address space {s}"),
    }
}
