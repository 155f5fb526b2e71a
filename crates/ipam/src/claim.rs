//! IPAM's records in the cluster store: pools are registered once, blocks are claimed by nodes
//! with create-if-absent, so two nodes racing for one block cannot both get it. A block's name
//! is its address space and CIDR, so two spaces can use one range.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;
use strait_store::{BlockRecord, PoolRecord, Store, StoreError, typed};

use crate::error::IpamError;
use crate::pool::Pool;

/// A block's name in the store: its CIDR spelt with dashes (IPv6 fully expanded, so the name
/// always starts with a digit or letter), after its address space and a dot unless the space is
/// the default one (whose blocks keep the names they had before spaces existed).
pub fn block_name(space: Option<&str>, cidr: IpNet) -> String {
    let addr = match cidr.network() {
        IpAddr::V4(v4) => v4.octets().map(|o| o.to_string()).join("-"),
        IpAddr::V6(v6) => v6.segments().map(|s| format!("{s:04x}")).join("-"),
    };
    match space {
        None => format!("{addr}-{}", cidr.prefix_len()),
        Some(space) => format!("{space}.{addr}-{}", cidr.prefix_len()),
    }
}

impl Pool {
    /// The store's name for `block`, one of this pool's.
    pub fn block_name(&self, block: IpNet) -> String {
        block_name(self.space.as_deref(), block)
    }

    /// The record of `block` held by `node`.
    fn block_record(&self, block: IpNet, node: &str) -> BlockRecord {
        BlockRecord {
            pool: self.name.clone(),
            cidr: block,
            node: node.to_string(),
            space: self.space.clone(),
        }
    }

    /// Is the store's block record one of this pool's address space?
    fn shares_space(&self, record: &BlockRecord) -> bool {
        record.space == self.space
    }
}

/// Registers `pool` in the store, or checks that the store's pool of that name is the same one
/// and that no other pool of its address space in the store overlaps it.
///
/// A pool refused before registering leaves no record (one would refuse the pool it overlaps
/// on each of that pool's starts). Two overlapping pools registered at the same instant, each
/// before the other was seen, are both refused by the check that follows, and both records stay:
/// taking ours back could pull it from under an agent that registered the same pool meanwhile
/// and already claims blocks from it, while the other pool, no longer seeing it, would hand out
/// the same addresses. Refused on every start until one is deleted is the safe side.
pub async fn ensure_pool(store: &impl Store, pool: &Pool) -> Result<(), IpamError> {
    check_against_store(store, pool).await?;
    let record = PoolRecord {
        cidr: pool.cidr,
        block_prefix: pool.block_prefix,
        space: pool.space.clone(),
    };
    match typed::create(store, &pool.name, &record).await {
        Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    // Another agent may have registered an overlapping pool since the check.
    check_against_store(store, pool).await
}

/// Refuses `pool` if the store holds another definition of it, or a pool of its address space
/// that overlaps it.
async fn check_against_store(store: &impl Store, pool: &Pool) -> Result<(), IpamError> {
    for other in typed::list::<PoolRecord>(store).await? {
        let theirs = Pool {
            name: other.name.clone(),
            cidr: other.value.cidr,
            block_prefix: other.value.block_prefix,
            space: other.value.space,
        };
        if other.name == pool.name {
            if theirs != *pool {
                return Err(IpamError::PoolMismatch {
                    pool: pool.name.clone(),
                    ours: pool.cidr,
                    ours_prefix: pool.block_prefix,
                    ours_space: pool.space.clone(),
                    theirs: theirs.cidr,
                    theirs_prefix: theirs.block_prefix,
                    theirs_space: theirs.space,
                });
            }
        } else {
            Pool::check_disjoint([pool, &theirs])?;
        }
    }
    Ok(())
}

/// The blocks of `pool` that `node` holds.
pub async fn node_blocks(
    store: &impl Store,
    pool: &Pool,
    node: &str,
) -> Result<Vec<IpNet>, IpamError> {
    Ok(typed::list::<BlockRecord>(store)
        .await?
        .into_iter()
        .filter(|b| {
            b.value.pool == pool.name && b.value.node == node && pool.holds_block(b.value.cidr)
        })
        .map(|b| b.value.cidr)
        .collect())
}

/// Claims for `node` the block of `pool` that holds `ip` (for a requested address). Holding it
/// already is fine; another node holding it is [`IpamError::BlockHeld`].
pub async fn claim_block_of(
    store: &impl Store,
    pool: &Pool,
    node: &str,
    ip: IpAddr,
) -> Result<IpNet, IpamError> {
    let cidr = IpNet::new(ip, pool.block_prefix)
        .expect("a pool's block prefix fits its family")
        .trunc();
    let name = pool.block_name(cidr);
    match typed::create(store, &name, &pool.block_record(cidr, node)).await {
        Ok(_) => Ok(cidr),
        Err(StoreError::AlreadyExists { .. }) => {
            match typed::get::<BlockRecord>(store, &name).await? {
                Some(held) if held.value.node == node => Ok(cidr),
                Some(held) => Err(IpamError::BlockHeld {
                    block: cidr,
                    node: held.value.node,
                }),
                None => Err(IpamError::BlockHeld {
                    block: cidr,
                    node: "(just released)".into(),
                }),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Whether `pool` has a block no node holds.
pub async fn has_free_block(store: &impl Store, pool: &Pool) -> Result<bool, IpamError> {
    let held = typed::list::<BlockRecord>(store)
        .await?
        .into_iter()
        .filter(|b| pool.shares_space(&b.value) && pool.holds_block(b.value.cidr))
        .count();
    Ok((held as u128) < pool.block_count())
}

/// Claims the first free block of `pool` for `node`.
pub async fn claim_block(store: &impl Store, pool: &Pool, node: &str) -> Result<IpNet, IpamError> {
    let taken: HashSet<IpNet> = typed::list::<BlockRecord>(store)
        .await?
        .into_iter()
        .filter(|b| pool.shares_space(&b.value))
        .map(|b| b.value.cidr)
        .collect();
    for n in 0..pool.block_count() {
        let cidr = pool.block(n);
        if taken.contains(&cidr) {
            continue;
        }
        let record = pool.block_record(cidr, node);
        match typed::create(store, &pool.block_name(cidr), &record).await {
            Ok(_) => return Ok(cidr),
            // Another node won this one since we listed: try the next.
            Err(StoreError::AlreadyExists { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(IpamError::PoolExhausted {
        pool: pool.name.clone(),
        cidr: pool.cidr,
    })
}

#[cfg(test)]
mod tests {
    use strait_store::{EmbeddedStore, Kind};

    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn store(tag: &str) -> (EmbeddedStore, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("strait-ipam-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        (EmbeddedStore::open(&dir).unwrap(), dir)
    }

    #[test]
    fn block_names_are_store_names() {
        for (space, cidr, name) in [
            (None, "10.244.1.64/26", "10-244-1-64-26"),
            (
                None,
                "fd00:10:244::80/122",
                "fd00-0010-0244-0000-0000-0000-0000-0080-122",
            ),
            (
                None,
                "::/120",
                "0000-0000-0000-0000-0000-0000-0000-0000-120",
            ),
            (Some("blue"), "10.244.1.64/26", "blue.10-244-1-64-26"),
        ] {
            assert_eq!(block_name(space, net(cidr)), name);
            strait_store::validate_name(name).unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn nodes_racing_for_the_last_blocks_never_share_one() {
        let (store, dir) = store("race");
        let pool = Pool::new("p", net("10.9.0.0/24"), 26).unwrap();
        ensure_pool(&store, &pool).await.unwrap();
        let claims = (0..6).map(|i| {
            let (store, pool) = (store.clone(), pool.clone());
            tokio::spawn(async move { claim_block(&store, &pool, &format!("node-{i}")).await })
        });
        let mut won = Vec::new();
        let mut exhausted = 0;
        for c in claims {
            match c.await.unwrap() {
                Ok(block) => won.push(block),
                Err(IpamError::PoolExhausted { .. }) => exhausted += 1,
                Err(e) => panic!("{e}"),
            }
        }
        won.sort();
        won.dedup();
        assert_eq!((won.len(), exhausted), (4, 2));
        assert_eq!(node_blocks(&store, &pool, "node-0").await.unwrap().len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_requested_address_claims_its_own_block_unless_another_node_holds_it() {
        let (store, dir) = store("fixed");
        let pool = Pool::new("p", net("10.9.0.0/24"), 26).unwrap();
        ensure_pool(&store, &pool).await.unwrap();
        let ip = "10.9.0.200".parse().unwrap();
        let block = claim_block_of(&store, &pool, "a", ip).await.unwrap();
        assert_eq!(block, net("10.9.0.192/26"));
        assert_eq!(claim_block_of(&store, &pool, "a", ip).await.unwrap(), block);
        match claim_block_of(&store, &pool, "b", ip).await {
            Err(IpamError::BlockHeld { block: b, node }) => {
                assert_eq!((b, node.as_str()), (block, "a"))
            }
            other => panic!("{other:?}"),
        }
        // The free-block search skips it.
        assert_eq!(
            claim_block(&store, &pool, "b").await.unwrap(),
            net("10.9.0.0/26")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn two_address_spaces_use_one_range_apart() {
        let (store, dir) = store("spaces");
        let default = Pool::new("main", net("10.9.0.0/25"), 26).unwrap();
        let blue = Pool::new("blue", net("10.9.0.0/24"), 26)
            .unwrap()
            .in_space("blue")
            .unwrap();
        let green = Pool::new("green", net("10.9.0.0/25"), 26)
            .unwrap()
            .in_space("green")
            .unwrap();
        for p in [&default, &blue, &green] {
            ensure_pool(&store, p).await.unwrap();
        }
        // A pool overlapping one of a space is refused in that space alone.
        let blue_again = Pool::new("blue-2", net("10.9.0.128/25"), 26)
            .unwrap()
            .in_space("blue")
            .unwrap();
        assert!(matches!(
            ensure_pool(&store, &blue_again).await,
            Err(IpamError::OverlappingPools { space: Some(s), .. }) if s == "blue"
        ));
        // The same block goes to a different node in each space.
        for (p, node) in [(&default, "a"), (&blue, "b"), (&green, "c")] {
            assert_eq!(
                claim_block(&store, p, node).await.unwrap(),
                net("10.9.0.0/26")
            );
        }
        let ip = "10.9.0.70".parse().unwrap();
        assert_eq!(
            claim_block_of(&store, &green, "c", ip).await.unwrap(),
            net("10.9.0.64/26")
        );
        // The default space's second block is still free, and then none is.
        assert!(has_free_block(&store, &default).await.unwrap());
        assert!(matches!(
            claim_block_of(&store, &default, "a", ip).await,
            Ok(b) if b == net("10.9.0.64/26")
        ));
        assert!(!has_free_block(&store, &default).await.unwrap());
        assert!(!has_free_block(&store, &green).await.unwrap());
        assert!(has_free_block(&store, &blue).await.unwrap());
        // Each space's holder holds it there and nowhere else.
        assert_eq!(
            claim_block_of(&store, &blue, "a", ip).await.unwrap(),
            net("10.9.0.64/26")
        );
        match claim_block_of(&store, &green, "a", ip).await {
            Err(IpamError::BlockHeld { node, .. }) => assert_eq!(node, "c"),
            other => panic!("{other:?}"),
        }
        assert_eq!(node_blocks(&store, &green, "c").await.unwrap().len(), 2);
        assert_eq!(node_blocks(&store, &default, "c").await.unwrap(), vec![]);
        // A pool moved to another space is not the pool the store knows.
        let moved = Pool::new("main", net("10.9.0.0/25"), 26)
            .unwrap()
            .in_space("red")
            .unwrap();
        let err = ensure_pool(&store, &moved).await.unwrap_err().to_string();
        assert!(
            err.contains("in the default address space in the cluster store")
                && err.ends_with("in address space red"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn conflicting_pools_are_refused() {
        let (store, dir) = store("conflict");
        let pool = Pool::new("p", net("10.9.0.0/24"), 26).unwrap();
        ensure_pool(&store, &pool).await.unwrap();
        ensure_pool(&store, &pool).await.unwrap();
        let redefined = Pool::new("p", net("10.9.0.0/24"), 27).unwrap();
        assert!(matches!(
            ensure_pool(&store, &redefined).await,
            Err(IpamError::PoolMismatch { .. })
        ));
        let overlapping = Pool::new("q", net("10.9.0.128/25"), 26).unwrap();
        assert!(matches!(
            ensure_pool(&store, &overlapping).await,
            Err(IpamError::OverlappingPools { .. })
        ));
        // Refused, it left no record: the pool it overlaps still starts, and only that one is
        // registered.
        ensure_pool(&store, &pool).await.unwrap();
        let names: Vec<String> = typed::list::<PoolRecord>(&store)
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(names, ["p"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A store in which another agent registers `rival` just before our first pool is
    /// created: after our check, before our record.
    #[derive(Clone)]
    struct RivalRegisters {
        inner: EmbeddedStore,
        rival: (String, serde_json::Value),
    }

    impl Store for RivalRegisters {
        async fn get(
            &self,
            kind: Kind,
            name: &str,
        ) -> Result<Option<strait_store::Versioned<serde_json::Value>>, StoreError> {
            self.inner.get(kind, name).await
        }
        async fn list(
            &self,
            kind: Kind,
        ) -> Result<Vec<strait_store::Versioned<serde_json::Value>>, StoreError> {
            self.inner.list(kind).await
        }
        async fn create(
            &self,
            kind: Kind,
            name: &str,
            value: serde_json::Value,
        ) -> Result<u64, StoreError> {
            if kind == Kind::IpPool {
                let (rival, record) = &self.rival;
                let _ = self.inner.create(kind, rival, record.clone()).await;
            }
            self.inner.create(kind, name, value).await
        }
        async fn update(
            &self,
            kind: Kind,
            name: &str,
            value: serde_json::Value,
            revision: u64,
        ) -> Result<u64, StoreError> {
            self.inner.update(kind, name, value, revision).await
        }
        async fn put_live(
            &self,
            kind: Kind,
            name: &str,
            value: serde_json::Value,
        ) -> Result<u64, StoreError> {
            self.inner.put_live(kind, name, value).await
        }
        async fn watch(&self, kind: Kind) -> Result<strait_store::Watch, StoreError> {
            self.inner.watch(kind).await
        }
        async fn delete(
            &self,
            kind: Kind,
            name: &str,
            revision: Option<u64>,
        ) -> Result<(), StoreError> {
            self.inner.delete(kind, name, revision).await
        }
    }

    #[tokio::test]
    async fn pools_registered_at_one_instant_are_both_refused_and_keep_their_records() {
        let (inner, dir) = store("rival");
        let ours = Pool::new("p", net("10.9.0.0/24"), 26).unwrap();
        let rival = PoolRecord {
            cidr: net("10.9.0.0/25"),
            block_prefix: 27,
            space: None,
        };
        let racing = RivalRegisters {
            inner: inner.clone(),
            rival: ("q".into(), serde_json::to_value(&rival).unwrap()),
        };
        assert!(matches!(
            ensure_pool(&racing, &ours).await,
            Err(IpamError::OverlappingPools { .. })
        ));
        // Our record stays: another agent may have registered the same pool meanwhile and
        // claim blocks from it. Each pool is refused until one of them is deleted.
        let names = |store: EmbeddedStore| async move {
            typed::list::<PoolRecord>(&store)
                .await
                .unwrap()
                .into_iter()
                .map(|p| p.name)
                .collect::<Vec<_>>()
        };
        assert_eq!(names(inner.clone()).await, ["p", "q"]);
        assert!(ensure_pool(&inner, &ours).await.is_err());
        let theirs = Pool::new("q", rival.cidr, rival.block_prefix).unwrap();
        assert!(ensure_pool(&inner, &theirs).await.is_err());
        inner.delete(Kind::IpPool, "q", None).await.unwrap();
        ensure_pool(&inner, &ours).await.unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
