//! IP address management. A [`Pool`] is a CIDR split into equal blocks; a node claims whole blocks
//! from the cluster store ([`claim_block`]) and hands out single addresses from them with an
//! [`Allocator`]. Everything is written over `IpAddr`/`IpNet`, so IPv6 needs no copy.

mod addr;
mod allocator;
mod block;
mod claim;
mod error;
mod pool;

pub use allocator::{Allocator, Usage};
pub use claim::{
    block_name, claim_block, claim_block_of, ensure_pool, has_free_block, node_blocks,
};
pub use error::IpamError;
pub use pool::Pool;
