//! Pools: a CIDR, the size of the blocks it is split into, and the address space in which its
//! addresses must be unique.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::addr::{from_u128, size, to_u128};
use crate::error::IpamError;

/// The largest block Strait will track: 2^16 addresses.
const MAX_BLOCK_BITS: u8 = 16;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    pub name: String,
    pub cidr: IpNet,
    /// The prefix length of each block, e.g. 26 for /26 blocks of 64 addresses.
    pub block_prefix: u8,
    /// Where the pool's addresses must be unique: pools of one space never overlap and each of
    /// its blocks is claimed once. `None` is the default space, shared by every network routed
    /// in the node's main table; a network with a routing table of its own has a space of its
    /// own, where ranges of the default space (or of another space) can be used again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space: Option<String>,
}

impl Pool {
    pub fn new(name: &str, cidr: IpNet, block_prefix: u8) -> Result<Pool, IpamError> {
        let invalid = |reason: String| IpamError::InvalidPool {
            pool: name.to_string(),
            reason,
        };
        if cidr != cidr.trunc() {
            return Err(invalid(format!(
                "{cidr} has host bits set; did you mean {}?",
                cidr.trunc()
            )));
        }
        let max = cidr.max_prefix_len();
        if block_prefix < cidr.prefix_len() || block_prefix > max {
            return Err(invalid(format!(
                "block size /{block_prefix} must be between /{} and /{max}",
                cidr.prefix_len()
            )));
        }
        if max - block_prefix > MAX_BLOCK_BITS {
            return Err(invalid(format!(
                "blocks of /{block_prefix} are too large; use /{} or smaller",
                max - MAX_BLOCK_BITS
            )));
        }
        if max - block_prefix < 1 {
            return Err(invalid(format!(
                "blocks of /{block_prefix} hold a single address; use /{} or larger",
                max - 1
            )));
        }
        Ok(Pool {
            name: name.to_string(),
            cidr,
            block_prefix,
            space: None,
        })
    }

    /// The pool in address space `space` rather than the default one. The space's name must be
    /// a valid store name, as it becomes part of its blocks' names.
    pub fn in_space(self, space: &str) -> Result<Pool, IpamError> {
        if let Err(e) = strait_store::validate_name(space) {
            return Err(IpamError::InvalidPool {
                pool: self.name,
                reason: format!("address space: {e}"),
            });
        }
        Ok(Pool {
            space: Some(space.to_string()),
            ..self
        })
    }

    pub fn block_count(&self) -> u128 {
        1u128 << (self.block_prefix - self.cidr.prefix_len())
    }

    /// The `n`th block of the pool.
    pub fn block(&self, n: u128) -> IpNet {
        let block_size = 1u128 << (self.cidr.max_prefix_len() - self.block_prefix);
        let start = to_u128(self.cidr.network()) + n * block_size;
        IpNet::new(from_u128(start, self.cidr.addr()), self.block_prefix)
            .expect("block prefix validated")
    }

    /// Is `block` one of this pool's blocks?
    pub fn holds_block(&self, block: IpNet) -> bool {
        block.prefix_len() == self.block_prefix
            && self.cidr.contains(&block)
            && block == block.trunc()
    }

    /// Do the two pools share an address in one address space?
    pub fn overlaps(&self, other: &Pool) -> bool {
        self.space == other.space
            && (self.cidr.contains(&other.cidr) || other.cidr.contains(&self.cidr))
    }

    /// Addresses a pod can get from one block: all but the block's first.
    pub fn usable_per_block(&self) -> u128 {
        size(self.block(0)) - 1
    }
}

impl Pool {
    /// Refuses pools that share an address in one address space: two networks of a space must
    /// never hand out the same one.
    pub fn check_disjoint<'a>(pools: impl IntoIterator<Item = &'a Pool>) -> Result<(), IpamError> {
        let pools: Vec<&Pool> = pools.into_iter().collect();
        for (i, a) in pools.iter().enumerate() {
            for b in &pools[i + 1..] {
                if a.overlaps(b) {
                    return Err(IpamError::OverlappingPools {
                        a: a.name.clone(),
                        a_cidr: a.cidr,
                        b: b.name.clone(),
                        b_cidr: b.cidr,
                        space: a.space.clone(),
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_tile_the_pool() {
        let p = Pool::new("p", net("10.244.0.0/16"), 26).unwrap();
        assert_eq!(p.block_count(), 1024);
        assert_eq!(p.block(0), net("10.244.0.0/26"));
        assert_eq!(p.block(1), net("10.244.0.64/26"));
        assert_eq!(p.block(1023), net("10.244.255.192/26"));
        assert!(p.holds_block(net("10.244.3.64/26")));
        assert!(!p.holds_block(net("10.244.3.64/27")));
        assert!(!p.holds_block(net("10.245.0.0/26")));
        assert_eq!(p.usable_per_block(), 63);
    }

    #[test]
    fn ipv6_pools_work_the_same_way() {
        let p = Pool::new("v6", net("fd00:10:244::/112"), 122).unwrap();
        assert_eq!(p.block_count(), 1024);
        assert_eq!(p.block(2), net("fd00:10:244::80/122"));
    }

    #[test]
    fn bad_pools_are_refused_with_a_reason() {
        for (cidr, prefix) in [
            ("10.244.0.1/16", 26),
            ("10.244.0.0/16", 8),
            ("10.244.0.0/16", 33),
            ("10.0.0.0/8", 12),
            ("10.244.0.0/16", 32),
            ("fd00::/64", 64),
        ] {
            assert!(
                Pool::new("p", net(cidr), prefix).is_err(),
                "{cidr} /{prefix}"
            );
        }
    }

    #[test]
    fn overlapping_pools_are_named() {
        let a = Pool::new("a", net("10.244.0.0/16"), 26).unwrap();
        let b = Pool::new("b", net("10.244.128.0/17"), 26).unwrap();
        let c = Pool::new("c", net("10.245.0.0/16"), 26).unwrap();
        assert!(Pool::check_disjoint([&a, &c]).is_ok());
        let err = Pool::check_disjoint([&a, &c, &b]).unwrap_err().to_string();
        assert!(err.contains('a') && err.contains('b'), "{err}");
    }

    #[test]
    fn pools_overlap_only_within_one_address_space() {
        let default = Pool::new("a", net("10.244.0.0/16"), 26).unwrap();
        let blue = Pool::new("b", net("10.244.0.0/16"), 26)
            .unwrap()
            .in_space("blue")
            .unwrap();
        let green = Pool::new("g", net("10.244.128.0/17"), 26)
            .unwrap()
            .in_space("green")
            .unwrap();
        assert!(Pool::check_disjoint([&default, &blue, &green]).is_ok());
        let blue_again = Pool::new("b2", net("10.244.64.0/18"), 26)
            .unwrap()
            .in_space("blue")
            .unwrap();
        let err = Pool::check_disjoint([&default, &blue, &green, &blue_again])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "pools b (10.244.0.0/16) and b2 (10.244.64.0/18) overlap in address space blue"
        );
        assert!(matches!(
            Pool::new("x", net("10.0.0.0/16"), 26)
                .unwrap()
                .in_space("Blue_1"),
            Err(IpamError::InvalidPool { .. })
        ));
    }
}
