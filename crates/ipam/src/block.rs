//! One block a node holds: which of its addresses are taken. Offset 0 (the block's network
//! address) is never handed to a pod; it stays free for node-side use.

use ipnet::IpNet;

use crate::addr::size;

#[derive(Debug, Clone)]
pub(crate) struct Block {
    pub cidr: IpNet,
    used: Vec<u64>,
    allocated: u64,
}

impl Block {
    pub fn new(cidr: IpNet) -> Block {
        let slots = size(cidr) as usize;
        let mut block = Block {
            cidr,
            used: vec![0; slots.div_ceil(64)],
            allocated: 0,
        };
        block.set(0);
        block
    }

    fn slots(&self) -> u128 {
        size(self.cidr)
    }

    fn is_set(&self, offset: usize) -> bool {
        self.used[offset / 64] & (1 << (offset % 64)) != 0
    }

    fn set(&mut self, offset: usize) {
        self.used[offset / 64] |= 1 << (offset % 64);
    }

    /// Takes the first free offset at or after `from`, without wrapping.
    pub fn take_from(&mut self, from: u128) -> Option<u128> {
        let found = (from..self.slots()).find(|&o| !self.is_set(o as usize))?;
        self.set(found as usize);
        self.allocated += 1;
        Some(found)
    }

    /// Marks `offset` taken; false if it already was.
    pub fn take(&mut self, offset: u128) -> bool {
        if self.is_set(offset as usize) {
            return false;
        }
        self.set(offset as usize);
        self.allocated += 1;
        true
    }

    /// Frees `offset`; false if it was free (or is the reserved offset 0).
    pub fn free(&mut self, offset: u128) -> bool {
        let o = offset as usize;
        if o == 0 || !self.is_set(o) {
            return false;
        }
        self.used[o / 64] &= !(1 << (o % 64));
        self.allocated -= 1;
        true
    }

    pub fn allocated(&self) -> u64 {
        self.allocated
    }

    pub fn capacity(&self) -> u64 {
        (self.slots() - 1) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_zero_is_never_handed_out() {
        let mut b = Block::new("10.0.0.0/30".parse().unwrap());
        assert_eq!(b.capacity(), 3);
        assert_eq!(b.take_from(0), Some(1));
        assert_eq!(b.take_from(0), Some(2));
        assert_eq!(b.take_from(0), Some(3));
        assert_eq!(b.take_from(0), None);
        assert!(!b.free(0));
        assert!(b.free(2));
        assert!(!b.free(2));
        assert_eq!(b.allocated(), 2);
        assert!(!b.take(1));
        assert!(b.take(2));
    }
}
