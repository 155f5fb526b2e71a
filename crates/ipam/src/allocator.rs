//! The per-network allocator: hands out single addresses from the blocks this node holds. It is
//! pure in-memory state; the agent persists each allocation before answering and rebuilds this
//! from its records on start. Next-fit: a released address is reused only after the others.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::addr::{from_u128, offset_in, to_u128};
use crate::block::Block;
use crate::error::IpamError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub allocated: u64,
    pub capacity: u64,
}

#[derive(Debug, Default)]
pub struct Allocator {
    blocks: BTreeMap<IpNet, Block>,
    /// Where the next search starts, per family (false: IPv4, true: IPv6).
    cursor: BTreeMap<bool, IpAddr>,
}

impl Allocator {
    pub fn new() -> Allocator {
        Allocator::default()
    }

    /// Starts allocating from `block` (already claimed in the cluster store).
    pub fn add_block(&mut self, block: IpNet) {
        self.blocks
            .entry(block)
            .or_insert_with(|| Block::new(block));
    }

    pub fn blocks(&self) -> impl Iterator<Item = IpNet> + '_ {
        self.blocks.keys().copied()
    }

    /// Allocates an address of the given family, or `None` when every block of it is full (the
    /// caller then claims another block).
    pub fn allocate(&mut self, ipv6: bool) -> Option<IpAddr> {
        self.allocate_within(ipv6, None)
    }

    /// Like [`Allocator::allocate`], from the blocks inside one of `within` only (some pools').
    pub fn allocate_within(&mut self, ipv6: bool, within: Option<&[IpNet]>) -> Option<IpAddr> {
        let family: Vec<IpNet> = self
            .blocks
            .keys()
            .filter(|b| {
                b.addr().is_ipv6() == ipv6
                    && within.is_none_or(|w| w.iter().any(|pool| pool.contains(*b)))
            })
            .copied()
            .collect();
        // (block, first offset to try): the rest of the cursor's block, the blocks after it,
        // those before it, and the cursor's block again from its start.
        let cursor = self.cursor.get(&ipv6).and_then(|ip| {
            let i = family.iter().position(|b| b.contains(ip))?;
            Some((i, offset_in(family[i], *ip)?))
        });
        let attempts: Vec<(IpNet, u128)> = match cursor {
            Some((i, offset)) => std::iter::once((family[i], offset + 1))
                .chain(family[i + 1..].iter().chain(&family[..=i]).map(|b| (*b, 0)))
                .collect(),
            None => family.iter().map(|b| (*b, 0)).collect(),
        };
        for (net, from) in attempts {
            let block = self.blocks.get_mut(&net).expect("listed above");
            if let Some(offset) = block.take_from(from) {
                let ip = from_u128(to_u128(net.network()) + offset, net.addr());
                self.cursor.insert(ipv6, ip);
                return Some(ip);
            }
        }
        None
    }

    /// Marks a specific address taken (restoring records, or a requested fixed address).
    pub fn reserve(&mut self, ip: IpAddr) -> Result<(), IpamError> {
        let (net, block) = self
            .blocks
            .iter_mut()
            .find(|(net, _)| net.contains(&ip))
            .ok_or(IpamError::NotInOwnedBlock { ip })?;
        let offset = offset_in(*net, ip).expect("contained");
        if offset == 0 || !block.take(offset) {
            return Err(IpamError::AlreadyAllocated { ip });
        }
        Ok(())
    }

    /// Frees an address; false if it was not allocated here.
    pub fn release(&mut self, ip: IpAddr) -> bool {
        self.blocks
            .iter_mut()
            .find(|(net, _)| net.contains(&ip))
            .is_some_and(|(net, block)| block.free(offset_in(*net, ip).expect("contained")))
    }

    /// The blocks no address is allocated from.
    pub fn empty_blocks(&self) -> Vec<IpNet> {
        self.blocks
            .iter()
            .filter(|(_, b)| b.allocated() == 0)
            .map(|(net, _)| *net)
            .collect()
    }

    /// Stops allocating from `block` if no address of it is allocated; whether it did.
    pub fn remove_empty(&mut self, block: IpNet) -> bool {
        let empty = self.blocks.get(&block).is_some_and(|b| b.allocated() == 0);
        if empty {
            self.blocks.remove(&block);
        }
        empty
    }

    pub fn usage(&self) -> Usage {
        self.usage_where(|_| true)
    }

    /// The usage of the blocks of one family.
    pub fn usage_of(&self, ipv6: bool) -> Usage {
        self.usage_where(|net| net.addr().is_ipv6() == ipv6)
    }

    fn usage_where(&self, include: impl Fn(&IpNet) -> bool) -> Usage {
        self.blocks
            .iter()
            .filter(|(net, _)| include(net))
            .fold(Usage::default(), |u, (_, b)| Usage {
                allocated: u.allocated + b.allocated(),
                capacity: u.capacity + b.capacity(),
            })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn only_an_empty_block_is_given_up() {
        let mut a = Allocator::new();
        let (b1, b2): (IpNet, IpNet) = (
            "10.0.0.0/30".parse().unwrap(),
            "10.0.0.4/30".parse().unwrap(),
        );
        a.add_block(b1);
        a.add_block(b2);
        a.reserve(ip("10.0.0.5")).unwrap();
        assert_eq!(a.empty_blocks(), vec![b1]);
        assert!(!a.remove_empty(b2));
        assert!(a.remove_empty(b1));
        assert_eq!(a.blocks().collect::<Vec<_>>(), vec![b2]);
        assert_eq!(
            a.allocate(false),
            Some(ip("10.0.0.6")),
            "only from what is left"
        );
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn fills_blocks_in_order_and_reports_when_full() {
        let mut a = Allocator::new();
        a.add_block("10.0.0.0/30".parse().unwrap());
        a.add_block("10.0.0.4/30".parse().unwrap());
        let got: Vec<IpAddr> = std::iter::from_fn(|| a.allocate(false)).collect();
        assert_eq!(
            got,
            [
                "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.5", "10.0.0.6", "10.0.0.7"
            ]
            .map(ip)
        );
        assert_eq!(a.allocate(true), None);
        assert_eq!(
            a.usage(),
            Usage {
                allocated: 6,
                capacity: 6
            }
        );
    }

    #[test]
    fn a_released_address_comes_back_last() {
        let mut a = Allocator::new();
        a.add_block("10.0.0.0/29".parse().unwrap());
        let first = a.allocate(false).unwrap();
        let second = a.allocate(false).unwrap();
        assert!(a.release(first));
        assert!(!a.release(first));
        let mut next: Vec<IpAddr> = std::iter::from_fn(|| a.allocate(false)).collect();
        assert_eq!(next.pop(), Some(first), "reused only after the rest");
        assert!(!next.contains(&second));
    }

    #[test]
    fn allocation_can_keep_to_one_pool() {
        let mut a = Allocator::new();
        a.add_block("10.0.0.0/30".parse().unwrap());
        a.add_block("10.9.0.0/30".parse().unwrap());
        a.add_block("10.8.0.0/30".parse().unwrap());
        let within: [IpNet; 2] = [
            "10.9.0.0/16".parse().unwrap(),
            "10.8.0.0/16".parse().unwrap(),
        ];
        let got: Vec<IpAddr> =
            std::iter::from_fn(|| a.allocate_within(false, Some(&within))).collect();
        assert_eq!(
            got,
            [
                "10.8.0.1", "10.8.0.2", "10.8.0.3", "10.9.0.1", "10.9.0.2", "10.9.0.3"
            ]
            .map(ip)
        );
        assert_eq!(a.allocate(false), Some(ip("10.0.0.1")));
    }

    #[test]
    fn reserve_refuses_doubles_and_foreign_addresses() {
        let mut a = Allocator::new();
        a.add_block("fd00::/126".parse().unwrap());
        a.reserve(ip("fd00::2")).unwrap();
        assert!(matches!(
            a.reserve(ip("fd00::2")),
            Err(IpamError::AlreadyAllocated { .. })
        ));
        assert!(matches!(
            a.reserve(ip("fd00::")),
            Err(IpamError::AlreadyAllocated { .. })
        ));
        assert!(matches!(
            a.reserve(ip("fd00::9")),
            Err(IpamError::NotInOwnedBlock { .. })
        ));
        let rest: HashSet<IpAddr> = std::iter::from_fn(|| a.allocate(true)).collect();
        assert_eq!(rest, HashSet::from([ip("fd00::1"), ip("fd00::3")]));
    }

    #[test]
    fn never_hands_out_an_address_twice_under_churn() {
        let mut a = Allocator::new();
        a.add_block("10.1.0.0/26".parse().unwrap());
        let mut live = HashSet::new();
        let mut seed = 7u64;
        for _ in 0..10_000 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            if seed >> 62 == 0 && !live.is_empty() {
                let victim = *live.iter().next().unwrap();
                assert!(a.release(victim));
                live.remove(&victim);
            } else if let Some(ip) = a.allocate(false) {
                assert!(live.insert(ip), "{ip} handed out twice");
            }
        }
        assert_eq!(a.usage().allocated as usize, live.len());
    }
}
